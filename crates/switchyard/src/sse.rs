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

/// Feeds bytes in, takes whole events out. Comments and `retry:` lines are
/// consumed silently.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    last_id: Option<String>,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// A parser with no event seen.
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of the last dispatched event (what `Last-Event-ID` should carry).
    pub fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// Parses `chunk` and returns every event it completes.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.buf[start..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
        {
            let end = start + pos;
            // A CR at the very end may be the first half of CR LF: wait for more.
            if self.buf[end] == b'\r' && end + 1 == self.buf.len() {
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
        }
        self.buf.drain(..start);
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
