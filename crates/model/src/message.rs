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
        write!(f, "{:016x}", self.0)
    }
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
        write!(f, "{}-{}", self.origin, self.seq)
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
