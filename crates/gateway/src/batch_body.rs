//! Reading a batch publish body with its entries counted as the bytes
//! arrive: a body with more entries than allowed is refused as soon as the
//! first entry too many begins, before the rest is read and before any
//! entry is parsed. A body of 16 MiB of `{}` lines is 5.6 million entries;
//! parsed whole before the count, eight of them at once took 1.7 GB.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::de::{DeserializeSeed, Error as _, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::handlers::body_deadline;
use crate::problem::Problem;

/// Counts the entries of a batch body fed to it in pieces: non-blank lines
/// of NDJSON, or elements of a top-level JSON array (found by tracking
/// strings and nesting, without parsing).
#[derive(Debug, Default)]
pub(crate) struct EntryCounter {
    ndjson: bool,
    /// Entries begun so far.
    pub count: usize,
    // NDJSON: the current line has a non-blank byte.
    line_started: bool,
    // JSON: nesting depth, inside a string, after a backslash in one,
    // and whether the next non-blank byte at depth 1 begins an element.
    depth: u32,
    in_string: bool,
    escaped: bool,
    expect_element: bool,
    top_is_array: bool,
}

impl EntryCounter {
    pub fn new(ndjson: bool) -> Self {
        EntryCounter {
            ndjson,
            ..EntryCounter::default()
        }
    }

    /// Counts the entries `chunk` begins. The bytes inside a started
    /// NDJSON line, and inside a JSON string, are skipped with `memchr`
    /// (a batch is mostly payload text), not looked at one by one.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.ndjson {
            let mut rest = chunk;
            while !rest.is_empty() {
                if self.line_started {
                    match memchr::memchr(b'\n', rest) {
                        Some(i) => {
                            self.line_started = false;
                            rest = &rest[i + 1..];
                        }
                        None => return,
                    }
                } else {
                    match rest.iter().position(|b| !b.is_ascii_whitespace()) {
                        Some(i) => {
                            self.line_started = true;
                            self.count += 1;
                            rest = &rest[i..];
                        }
                        None => return,
                    }
                }
            }
            return;
        }
        let mut i = 0;
        while i < chunk.len() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                    i += 1;
                    continue;
                }
                match memchr::memchr2(b'"', b'\\', &chunk[i..]) {
                    Some(j) => {
                        if chunk[i + j] == b'"' {
                            self.in_string = false;
                        } else {
                            self.escaped = true;
                        }
                        i += j + 1;
                        continue;
                    }
                    None => return,
                }
            }
            let b = chunk[i];
            i += 1;
            if b.is_ascii_whitespace() {
                continue;
            }
            if self.depth == 1 && self.top_is_array {
                if b == b',' {
                    self.expect_element = true;
                    continue;
                }
                if self.expect_element && b != b']' {
                    self.expect_element = false;
                    self.count += 1;
                }
            }
            match b {
                b'"' => self.in_string = true,
                b'[' | b'{' => {
                    if self.depth == 0 {
                        self.top_is_array = b == b'[';
                        self.expect_element = self.top_is_array;
                    }
                    self.depth += 1;
                }
                b']' | b'}' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
        }
    }
}

/// The 413 of a batch with more than `max` entries.
pub(crate) fn too_many(max: usize) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "batch_too_large",
        format!("more than {max} messages; a batch holds at most {max}"),
    )
}

/// Reads a batch body of at most `max_bytes` within the request's body
/// deadline, refusing it (`413 batch_too_large`) once entry `max_entries + 1`
/// begins and (`413 payload_too_large`) once it outgrows `max_bytes`.
pub(crate) async fn read(
    mut body: Incoming,
    headers: &HeaderMap,
    max_bytes: usize,
    max_entries: usize,
    ndjson: bool,
) -> Result<Bytes, Problem> {
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body exceeds the limit of {max_bytes} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_bytes as u64) {
        return Err(too_large());
    }
    let deadline = body_deadline();
    let mut buf = BytesMut::with_capacity(declared.map_or(8192, |n| n as usize));
    let mut counter = EntryCounter::new(ndjson);
    loop {
        let next = body.frame();
        let frame = match deadline {
            Some(d) => tokio::time::timeout_at(d, next)
                .await
                .map_err(|_| crate::handlers::body_timed_out())?,
            None => next.await,
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| {
            Problem::bad_request(
                "body_read_failed",
                format!("could not read the request body: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > max_bytes {
            return Err(too_large());
        }
        counter.feed(&data);
        if counter.count > max_entries {
            return Err(too_many(max_entries));
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// The elements of a JSON array, unparsed, refused beyond `max`.
struct BoundedArray {
    max: usize,
}

/// The message of the error that stops [`BoundedArray`].
const TOO_MANY: &str = "switchyard: too many batch entries";

impl<'de> DeserializeSeed<'de> for BoundedArray {
    type Value = Vec<&'de RawValue>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for BoundedArray {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of batch entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element::<&'de RawValue>()? {
            if out.len() == self.max {
                return Err(A::Error::custom(TOO_MANY));
            }
            out.push(v);
        }
        Ok(out)
    }
}

/// The entries of a JSON array body, each unparsed; at most `max` of them.
pub(crate) fn json_entries(body: &[u8], max: usize) -> Result<Vec<&RawValue>, Problem> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let entries = BoundedArray { max }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| {
            if e.to_string().starts_with(TOO_MANY) {
                too_many(max)
            } else {
                Problem::bad_request(
                    "invalid_batch",
                    format!("the body is not a JSON array: {e}"),
                )
            }
        })?;
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(ndjson: bool, body: &str) -> usize {
        let mut whole = EntryCounter::new(ndjson);
        whole.feed(body.as_bytes());
        // Fed a byte at a time, the count is the same.
        let mut bytes = EntryCounter::new(ndjson);
        for b in body.as_bytes() {
            bytes.feed(std::slice::from_ref(b));
        }
        assert_eq!(whole.count, bytes.count, "{body}");
        whole.count
    }

    #[test]
    fn counts_ndjson_lines() {
        assert_eq!(count(true, ""), 0);
        assert_eq!(count(true, "{}\n{}\n\n  \n{}"), 3);
        assert_eq!(count(true, "{\"a\":\"x\\ny\"}\r\n{}\r\n"), 2);
    }

    #[test]
    fn counts_array_elements() {
        assert_eq!(count(false, "[]"), 0);
        assert_eq!(count(false, " [ ] "), 0);
        assert_eq!(count(false, "[{}]"), 1);
        assert_eq!(count(false, "[{}, {} ,{}]"), 3);
        assert_eq!(
            count(
                false,
                r#"[{"payload":"a,b]}[{","headers":{"x":"\"],"}}, [1,2,[3]], "s", 4, null]"#
            ),
            5
        );
        assert_eq!(count(false, "{\"a\":[1,2]}"), 0);
    }

    #[test]
    fn counts_alike_however_the_body_is_cut() {
        // Strings with escapes, blank lines and CRLF, cut at every point.
        let bodies = [
            (true, "{\"payload\":\"a\\\"b\"}\n\n  {}\r\n\t{\"x\":1}\n"),
            (false, r#" [ {"p":"a\"],[{"}, "x\\", [1,{"y":"]"}], 3 ] "#),
        ];
        for (ndjson, body) in bodies {
            let whole = count(ndjson, body);
            for cut in 0..=body.len() {
                let mut c = EntryCounter::new(ndjson);
                c.feed(&body.as_bytes()[..cut]);
                c.feed(&body.as_bytes()[cut..]);
                assert_eq!(c.count, whole, "{body:?} cut at {cut}");
            }
        }
        assert_eq!(count(true, bodies[0].1), 3);
        assert_eq!(count(false, bodies[1].1), 4);
    }

    #[test]
    fn json_entries_are_bounded() {
        assert_eq!(json_entries(b"[{},{}]", 2).unwrap().len(), 2);
        let e = json_entries(b"[{},{},{}]", 2).unwrap_err();
        assert_eq!(e.code, "batch_too_large");
        let e = json_entries(b"[{},", 2).unwrap_err();
        assert_eq!(e.code, "invalid_batch");
        let e = json_entries(b"[{}] x", 2).unwrap_err();
        assert_eq!(e.code, "invalid_batch");
    }
}
