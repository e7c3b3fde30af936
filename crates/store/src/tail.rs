//! In-memory tails of recent messages, bounded in bytes, so that
//! subscribers that keep up are served without touching fjall: one for the
//! local origin log, and one per other origin for the messages this node
//! received from it.

use std::collections::VecDeque;
use std::sync::Arc;

use switchyard_model::Message;

/// Every message this node holds of one origin with an origin sequence in
/// `(lo, hi]`, in origin order. For the local origin that is every message
/// of the range; for another origin, those of the topics this node follows.
#[derive(Debug)]
pub(crate) struct Tail {
    entries: VecDeque<Arc<Message>>,
    /// Messages at or below `lo` are not in the tail.
    lo: u64,
    /// The tail is complete up to here (the origin's watermark when last pushed).
    hi: u64,
    bytes: usize,
    cap_bytes: usize,
}

/// Bookkeeping bytes counted per cached message beyond its own size.
const OVERHEAD: usize = 128;

impl Tail {
    /// An empty tail that holds everything after `lo`.
    pub fn new(lo: u64, cap_bytes: usize) -> Self {
        Tail {
            entries: VecDeque::new(),
            lo,
            hi: lo,
            bytes: 0,
            cap_bytes,
        }
    }

    /// Appends messages that just became visible (in origin order, after
    /// everything held) and records that the tail is complete up to `hi`.
    pub fn push(&mut self, msgs: impl IntoIterator<Item = Arc<Message>>, hi: u64) {
        for m in msgs {
            debug_assert!(m.id.seq > self.hi.max(self.last_seq()));
            self.bytes += m.size() as usize + OVERHEAD;
            self.entries.push_back(m);
        }
        self.hi = self.hi.max(hi);
        while self.bytes > self.cap_bytes {
            match self.entries.pop_front() {
                Some(m) => {
                    self.bytes -= m.size() as usize + OVERHEAD;
                    self.lo = m.id.seq;
                }
                None => {
                    self.lo = self.hi;
                    break;
                }
            }
        }
    }

    fn last_seq(&self) -> u64 {
        self.entries.back().map_or(0, |m| m.id.seq)
    }

    /// Drops every cached message at or below `seq`, so the tail no longer
    /// answers for that range (retention removed messages of it, or older
    /// messages were stored into it).
    pub fn evict_through(&mut self, seq: u64) {
        while self.entries.front().is_some_and(|m| m.id.seq <= seq) {
            if let Some(m) = self.entries.pop_front() {
                self.bytes -= m.size() as usize + OVERHEAD;
            }
        }
        self.lo = self.lo.max(seq);
        self.hi = self.hi.max(self.lo);
    }

    /// Whether the tail holds every message after `after` (up to where it
    /// was last pushed).
    pub fn covers(&self, after: u64) -> bool {
        after >= self.lo
    }

    /// Cached messages after origin sequence `after`, in order.
    pub fn after(&self, after: u64) -> impl Iterator<Item = &Arc<Message>> {
        let skip = self.entries.partition_point(|m| m.id.seq <= after);
        self.entries.iter().skip(skip)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use switchyard_model::{MessageId, NodeId, Timestamp};

    use super::*;

    fn msg(seq: u64) -> Arc<Message> {
        Arc::new(Message {
            id: MessageId {
                origin: NodeId(1),
                seq,
            },
            topic: "t".parse().unwrap(),
            stream_seq: seq,
            timestamp: Timestamp(seq),
            key: None,
            headers: Vec::new(),
            payload: Bytes::from(vec![0u8; 100]),
        })
    }

    fn seqs<'a>(it: impl Iterator<Item = &'a Arc<Message>>) -> Vec<u64> {
        it.map(|m| m.id.seq).collect()
    }

    #[test]
    fn a_sparse_tail_covers_its_range_and_evicts_from_the_front() {
        let mut t = Tail::new(10, 10_000);
        assert!(t.covers(10) && !t.covers(9));
        t.push([msg(12), msg(15)], 20);
        assert_eq!(t.hi, 20);
        assert_eq!(seqs(t.after(10)), [12, 15]);
        assert_eq!(seqs(t.after(12)), [15]);
        assert_eq!(seqs(t.after(16)), Vec::<u64>::new());
        t.evict_through(13);
        assert!(!t.covers(12) && t.covers(13));
        assert_eq!(seqs(t.after(13)), [15]);
        // Over the cap, the oldest go and the covered range shrinks.
        let mut small = Tail::new(0, 2 * (100 + 128 + 64));
        small.push((1..=5).map(msg), 5);
        assert!(!small.covers(0));
        let first = small.after(0).next().unwrap().id.seq;
        assert!(small.covers(first - 1) && !small.covers(first - 2));
    }
}
