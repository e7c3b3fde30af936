//! An incremental Server-Sent Events parser (the client side of the SSE
//! grammar), used by `switchyard subscribe` and by the end-to-end tests.

/// One dispatched event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// The `id:` of this event, or the last id seen before it.
    pub id: Option<String>,
    /// The event type (`message` when the stream gave none, or an empty one).
    pub event: String,
    /// The data lines joined with `\n`.
    pub data: String,
}

/// Most bytes of one line, and of one event's data, that a parser holds:
/// far above any event a node sends (a payload of the largest size a node
/// takes, base64-encoded in a JSON envelope), so that a stream that never
/// ends a line cannot take the client's memory.
pub const MAX_EVENT_BYTES: usize = 64 * 1024 * 1024;

/// Feeds bytes in, takes whole events out. Comments and `retry:` lines are
/// consumed silently. A line or an event over its limit
/// ([`MAX_EVENT_BYTES`] by default) stops the parser: see
/// [`SseParser::error`].
#[derive(Debug)]
pub struct SseParser {
    buf: Vec<u8>,
    /// How far `buf` is known to hold no line end.
    scanned: usize,
    limit: usize,
    error: Option<String>,
    last_id: Option<String>,
    event: Option<String>,
    data: Option<String>,
}

impl Default for SseParser {
    fn default() -> Self {
        SseParser::with_limit(MAX_EVENT_BYTES)
    }
}

impl SseParser {
    /// A parser with no event seen.
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser that holds at most `limit` bytes of one line or of one
    /// event's data.
    pub fn with_limit(limit: usize) -> Self {
        SseParser {
            buf: Vec::new(),
            scanned: 0,
            limit,
            error: None,
            last_id: None,
            event: None,
            data: None,
        }
    }

    /// Why the parser stopped: a line or an event's data over its limit.
    /// It then takes no more input.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The id of the last dispatched event (what `Last-Event-ID` should carry).
    pub fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// Parses `chunk` and returns every event it completes (none once the
    /// parser has stopped, see [`SseParser::error`]).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        if self.error.is_some() {
            return out;
        }
        self.buf.extend_from_slice(chunk);
        let mut start = 0;
        loop {
            let from = start.max(self.scanned);
            let Some(pos) = self.buf[from..]
                .iter()
                .position(|&b| b == b'\n' || b == b'\r')
            else {
                self.scanned = self.buf.len();
                break;
            };
            let end = from + pos;
            // A CR at the very end may be the first half of CR LF: wait for more.
            if self.buf[end] == b'\r' && end + 1 == self.buf.len() {
                self.scanned = end;
                break;
            }
            let line = String::from_utf8_lossy(&self.buf[start..end]).into_owned();
            let skip = if self.buf[end] == b'\r' && self.buf.get(end + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
            start = end + skip;
            self.line(&line, &mut out);
            if self.data.as_ref().is_some_and(|d| d.len() > self.limit) {
                return self.stop("an event's data", out);
            }
        }
        self.buf.drain(..start);
        self.scanned = self.scanned.saturating_sub(start);
        if self.buf.len() > self.limit {
            return self.stop("a line", out);
        }
        out
    }

    /// Stops the parser: `what` went over the limit.
    fn stop(&mut self, what: &str, out: Vec<Event>) -> Vec<Event> {
        self.error = Some(format!("the stream sent {what} over {} bytes", self.limit));
        self.buf = Vec::new();
        self.data = None;
        out
    }

    fn line(&mut self, line: &str, out: &mut Vec<Event>) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(Event {
                    id: self.last_id.clone(),
                    event: self
                        .event
                        .take()
                        .filter(|e| !e.is_empty())
                        .unwrap_or_else(|| "message".into()),
                    data,
                });
            }
            self.event = None;
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "id" => self.last_id = Some(value.to_owned()),
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_split_anywhere() {
        let stream = b"retry: 2000\n: hi\n\nid: A\nevent: message\ndata: one\ndata: two\n\nevent: gap\ndata: {}\r\n\r\nid: B\ndata: x\n\n";
        for split in 0..stream.len() {
            let mut p = SseParser::new();
            let mut ev = p.push(&stream[..split]);
            ev.extend(p.push(&stream[split..]));
            assert_eq!(ev.len(), 3, "split at {split}");
            assert_eq!(
                ev[0],
                Event {
                    id: Some("A".into()),
                    event: "message".into(),
                    data: "one\ntwo".into()
                }
            );
            assert_eq!(ev[1].event, "gap");
            assert_eq!(ev[1].id.as_deref(), Some("A"));
            assert_eq!(ev[2].data, "x");
            assert_eq!(p.last_id(), Some("B"));
        }
    }

    #[test]
    fn a_line_without_end_stops_the_parser_at_its_limit() {
        let mut p = SseParser::with_limit(100);
        assert_eq!(p.push(b"data: ok\n\n").len(), 1);
        for _ in 0..10 {
            assert!(p.push(&[b'x'; 20]).is_empty());
        }
        assert!(p.error().unwrap().contains("a line over 100 bytes"));
        assert!(p.push(b"\n\ndata: more\n\n").is_empty(), "stopped");
    }

    #[test]
    fn an_event_with_too_much_data_stops_the_parser() {
        let mut p = SseParser::with_limit(100);
        for _ in 0..20 {
            p.push(b"data: 0123456789\n");
        }
        assert!(p.error().unwrap().contains("an event's data"));
    }

    #[test]
    fn long_lines_in_small_chunks_are_scanned_once() {
        // Lines split into many chunks parse as whole ones.
        let mut p = SseParser::new();
        let line = format!("data: {}\n\n", "y".repeat(100_000));
        let mut got = Vec::new();
        for c in line.as_bytes().chunks(7) {
            got.extend(p.push(c));
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data.len(), 100_000);
        assert_eq!(p.scanned, 0);
    }

    #[test]
    fn an_empty_event_type_is_message() {
        // Found by the `sse` fuzz target: an `event` line without a value
        // dispatched an event of type "" instead of "message". Its input is
        // a count of split points (0), then the stream.
        let input = include_bytes!("../../../fuzz/regressions/sse/empty-event-type");
        let stream = &input[1..];
        let mut p = SseParser::new();
        let whole = p.push(stream);
        assert_eq!(
            whole,
            vec![Event {
                id: None,
                event: "message".into(),
                data: String::new()
            }]
        );
        let mut p = SseParser::new();
        let bytes: Vec<Event> = stream.iter().flat_map(|b| p.push(&[*b])).collect();
        assert_eq!(bytes, whole);
        assert_eq!(p.push(b"event:\ndata: x\n\n")[0].event, "message");
    }
}
