use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, shown};
use crate::hlc::Timestamp;
use crate::topic::Topic;

/// Limits that belong to the data model and hold on every node.
pub mod limits {
    /// Longest topic name or pattern, in bytes.
    pub const MAX_TOPIC_LEN: usize = 255;
    /// Default largest payload of one message (1 MiB); configurable per node.
    pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;
    /// Most user headers on one message.
    pub const MAX_HEADERS: usize = 64;
    /// Longest header name, in bytes.
    pub const MAX_HEADER_NAME: usize = 128;
    /// Longest header value, in bytes.
    pub const MAX_HEADER_VALUE: usize = 4096;
    /// Largest sum of all header names and values of one message, in bytes.
    pub const MAX_HEADERS_TOTAL: usize = 16 * 1024;
    /// Longest message key, in bytes.
    pub const MAX_KEY_LEN: usize = 1024;
    /// Most origin entries a cursor may carry (one per origin node).
    pub const MAX_CURSOR_ENTRIES: usize = 4096;
}

/// Name of the header that carries a message's idempotency key. The store
/// adds it to a message published with one, so that every node holding a
/// copy (its origin, a replica) knows the key and answers a retry with the
/// original message; a publisher cannot set a header of this name.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// A node's identity: a random 64-bit number created on first start and kept
/// in the node's data directory. Written as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = hex16(self.0);
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

/// `v` as 16 lowercase hex digits (what `{:016x}` writes, without the
/// formatting machinery: ids are written for every message published and
/// delivered).
fn hex16(v: u64) -> [u8; 16] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl FromStr for NodeId {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        if s.len() != 16 {
            return Err(ModelError::InvalidMessageId { id: shown(s) });
        }
        u64::from_str_radix(s, 16)
            .map(NodeId)
            .map_err(|_| ModelError::InvalidMessageId { id: shown(s) })
    }
}

/// A message id: the origin node and the message's sequence number in that
/// node's origin log. Written as `<origin hex>-<sequence>`, for example
/// `00c0ffee00c0ffee-42`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct MessageId {
    /// The node that accepted the message.
    pub origin: NodeId,
    /// Dense sequence number in the origin's log, from 1.
    pub seq: u64,
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // origin (16 hex digits), '-', seq (up to 20 decimal digits)
        let mut text = [0u8; 37];
        text[..16].copy_from_slice(&hex16(self.origin.0));
        text[16] = b'-';
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut v = self.seq;
        loop {
            at -= 1;
            digits[at] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        let len = 17 + digits.len() - at;
        text[17..len].copy_from_slice(&digits[at..]);
        f.write_str(std::str::from_utf8(&text[..len]).map_err(|_| fmt::Error)?)
    }
}

impl FromStr for MessageId {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        let bad = || ModelError::InvalidMessageId { id: shown(s) };
        let (origin, seq) = s.split_once('-').ok_or_else(bad)?;
        let origin = origin.parse().map_err(|_| bad())?;
        let seq: u64 = seq.parse().map_err(|_| bad())?;
        if seq == 0 {
            return Err(bad());
        }
        Ok(MessageId { origin, seq })
    }
}

/// One message header: a name and a UTF-8 value, kept in the order given.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Header {
    /// Header name (lowercase for headers taken from HTTP).
    pub name: String,
    /// Header value.
    pub value: String,
}

/// A stored message, as the log holds it and subscribers receive it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Message {
    /// Origin node and origin sequence.
    pub id: MessageId,
    /// The topic it was published to.
    pub topic: Topic,
    /// Dense sequence number within its stream (topic, origin), from 1.
    pub stream_seq: u64,
    /// Hybrid logical clock timestamp assigned by the origin.
    pub timestamp: Timestamp,
    /// Optional key (used for partitioning and ordering by consumers).
    pub key: Option<Bytes>,
    /// Headers in publish order.
    pub headers: Vec<Header>,
    /// The payload bytes.
    pub payload: Bytes,
}

impl Message {
    /// The value of the first header called `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Bytes this message accounts for in retention and topic statistics:
    /// payload, key and headers.
    pub fn size(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum();
        (self.payload.len() + self.key.as_ref().map_or(0, |k| k.len()) + headers) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_written_as_the_general_formatter_would() {
        let values = [
            0,
            1,
            9,
            10,
            0xabcdef,
            u64::from(u32::MAX),
            1 << 63,
            u64::MAX - 1,
            u64::MAX,
        ];
        for origin in values {
            let node = NodeId(origin);
            assert_eq!(node.to_string(), format!("{origin:016x}"));
            for seq in values {
                let id = MessageId { origin: node, seq };
                let text = id.to_string();
                assert_eq!(text, format!("{origin:016x}-{seq}"));
                // Sequences start at 1.
                let parsed = text.parse::<MessageId>().ok();
                assert_eq!(parsed, (seq > 0).then_some(id), "{text}");
            }
        }
    }
}
