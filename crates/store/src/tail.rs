//! The in-memory tail of the local origin log: the most recent visible
//! messages, bounded in bytes, so that subscribers that keep up are served
//! without touching fjall.

use std::collections::VecDeque;
use std::sync::Arc;

use switchyard_model::Message;

/// Contiguous messages of the local origin, `first_seq ..= last_seq`.
#[derive(Debug)]
pub(crate) struct Tail {
    entries: VecDeque<Arc<Message>>,
    /// Origin sequence of `entries[0]`; when empty, the next expected sequence.
    first_seq: u64,
    bytes: usize,
    cap_bytes: usize,
}

/// Bookkeeping bytes counted per cached message beyond its own size.
const OVERHEAD: usize = 128;

impl Tail {
    pub fn new(next_seq: u64, cap_bytes: usize) -> Self {
        Tail {
            entries: VecDeque::new(),
            first_seq: next_seq,
            bytes: 0,
            cap_bytes,
        }
    }

    /// Appends messages that just became visible (in origin order, contiguous).
    pub fn push(&mut self, msgs: impl IntoIterator<Item = Arc<Message>>) {
        for m in msgs {
            if self.entries.is_empty() {
                self.first_seq = m.id.seq;
            }
            debug_assert_eq!(m.id.seq, self.first_seq + self.entries.len() as u64);
            self.bytes += m.size() as usize + OVERHEAD;
            self.entries.push_back(m);
        }
        while self.bytes > self.cap_bytes {
            match self.entries.pop_front() {
                Some(m) => {
                    self.bytes -= m.size() as usize + OVERHEAD;
                    self.first_seq += 1;
                }
                None => break,
            }
        }
    }

    /// Drops every cached message at or below `seq` (after retention removed
    /// some of them, so the tail never serves a removed message).
    pub fn evict_through(&mut self, seq: u64) {
        while self.first_seq <= seq {
            match self.entries.pop_front() {
                Some(m) => {
                    self.bytes -= m.size() as usize + OVERHEAD;
                    self.first_seq += 1;
                }
                None => break,
            }
        }
    }

    /// Whether the tail holds every message after `after` (up to its end).
    pub fn covers(&self, after: u64) -> bool {
        after + 1 >= self.first_seq
    }

    /// Cached messages after origin sequence `after`, in order.
    pub fn after(&self, after: u64) -> impl Iterator<Item = &Arc<Message>> {
        let skip = (after + 1).saturating_sub(self.first_seq) as usize;
        self.entries.iter().skip(skip)
    }
}
