//! The in-memory catalog of streams and origins, loaded from `meta` at open
//! and kept current by committed batches of the writer thread (its only
//! writer).

use std::collections::BTreeMap;

use switchyard_model::{NodeId, Timestamp, Topic};

use crate::StoreError;
use fjall::UserValue;

use crate::codec::{decode_u64s, u64s_value};

/// Statistics and positions of one stream (topic, origin).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct StreamMeta {
    /// Last stream sequence assigned.
    pub last_seq: u64,
    /// Origin sequence of the last message.
    pub last_origin_seq: u64,
    /// Messages held.
    pub count: u64,
    /// Bytes held (payload + key + headers).
    pub bytes: u64,
    /// Timestamp of the first message held.
    pub first_ts: Timestamp,
    /// Timestamp of the last message.
    pub last_ts: Timestamp,
    /// Stream sequences `1..=trimmed_seq` were removed by retention.
    pub trimmed_seq: u64,
    /// Origin sequence of the last message removed by retention.
    pub trimmed_origin_seq: u64,
}

impl StreamMeta {
    pub fn encode(&self) -> UserValue {
        u64s_value(&[
            self.last_seq,
            self.last_origin_seq,
            self.count,
            self.bytes,
            self.first_ts.0,
            self.last_ts.0,
            self.trimmed_seq,
            self.trimmed_origin_seq,
        ])
    }

    pub fn decode(b: &[u8]) -> Result<Self, StoreError> {
        let [
            last_seq,
            last_origin_seq,
            count,
            bytes,
            first,
            last,
            trimmed_seq,
            trimmed_origin_seq,
        ] = decode_u64s::<8>(b, "stream meta")?;
        Ok(StreamMeta {
            last_seq,
            last_origin_seq,
            count,
            bytes,
            first_ts: Timestamp(first),
            last_ts: Timestamp(last),
            trimmed_seq,
            trimmed_origin_seq,
        })
    }
}

/// What the node holds of one origin's log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct OriginMeta {
    /// Last origin sequence written.
    pub last_seq: u64,
    /// Timestamp of that message.
    pub last_ts: Timestamp,
    /// Highest origin sequence removed by retention in any stream; a reader
    /// positioned at or above it cannot have a gap.
    pub max_trimmed_seq: u64,
}

impl OriginMeta {
    pub fn encode(&self) -> UserValue {
        u64s_value(&[self.last_seq, self.last_ts.0, self.max_trimmed_seq])
    }

    pub fn decode(b: &[u8]) -> Result<Self, StoreError> {
        let [last_seq, last_ts, max_trimmed_seq] = decode_u64s::<3>(b, "origin meta")?;
        Ok(OriginMeta {
            last_seq,
            last_ts: Timestamp(last_ts),
            max_trimmed_seq,
        })
    }
}

/// Shared catalog. Invariant: every message at or below an origin's visible
/// sequence is accounted for in `streams` (the writer updates streams before
/// it makes messages visible).
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    pub streams: BTreeMap<Topic, BTreeMap<NodeId, StreamMeta>>,
    pub origins: BTreeMap<NodeId, OriginMeta>,
    /// Per origin, the last origin sequence readers may see.
    pub visible: BTreeMap<NodeId, u64>,
}

impl Catalog {
    /// Stream (`topic`, `origin`) as committed (empty when unknown).
    pub fn stream(&self, topic: &Topic, origin: NodeId) -> StreamMeta {
        self.streams
            .get(topic)
            .and_then(|s| s.get(&origin))
            .copied()
            .unwrap_or_default()
    }
}

/// One stream of a topic, as `GET /v1/topics` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// The origin node of the stream.
    pub origin: NodeId,
    /// First stream sequence still held (`last_seq + 1` when empty).
    pub first_seq: u64,
    /// Last stream sequence assigned.
    pub last_seq: u64,
    /// Messages held.
    pub messages: u64,
    /// Bytes held.
    pub bytes: u64,
}

/// A topic with its totals over all origins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic.
    pub topic: Topic,
    /// Messages held.
    pub messages: u64,
    /// Bytes held (payload + key + headers).
    pub bytes: u64,
    /// Timestamp of the oldest message held.
    pub first_timestamp: Option<Timestamp>,
    /// Timestamp of the newest message.
    pub last_timestamp: Option<Timestamp>,
    /// Per-origin streams.
    pub streams: Vec<StreamInfo>,
}

impl Catalog {
    pub fn topic_infos(&self) -> Vec<TopicInfo> {
        self.streams
            .iter()
            .map(|(topic, streams)| {
                let held = streams.values().filter(|s| s.count > 0);
                TopicInfo {
                    topic: topic.clone(),
                    messages: streams.values().map(|s| s.count).sum(),
                    bytes: streams.values().map(|s| s.bytes).sum(),
                    first_timestamp: held.clone().map(|s| s.first_ts).min(),
                    last_timestamp: held.map(|s| s.last_ts).max(),
                    streams: streams
                        .iter()
                        .map(|(&origin, s)| StreamInfo {
                            origin,
                            first_seq: s.trimmed_seq + 1,
                            last_seq: s.last_seq,
                            messages: s.count,
                            bytes: s.bytes,
                        })
                        .collect(),
                }
            })
            .collect()
    }
}
