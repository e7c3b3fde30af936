//! Messages of other origins: storing what arrives in origin order
//! ([`crate::Store::ingest`]) and older messages fetched to catch up
//! ([`crate::Store::fill`]), with the stream metadata that tells readers
//! where this node's copy of a stream starts.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use switchyard_model::{Message, NodeId, Timestamp, Topic, TopicSet};

use crate::StoreError;
use crate::append::stage_remote_idem;
use crate::batch::{Durability, Staged};
use crate::codec::decode_index;
use crate::error::Storage;
use crate::keys;
use crate::store::Shared;
use crate::writer::{Writer, now_ms};

/// How far past this node's wall clock a peer's message timestamp may move
/// this node's hybrid logical clock.
const OBSERVE_AHEAD_MS: u64 = 60_000;

/// A range of a stream that its origin removed by retention: stream
/// sequences up to `stream_seq`, origin sequences up to `origin_seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginTrim {
    /// The stream's topic.
    pub topic: Topic,
    /// Last removed stream sequence.
    pub stream_seq: u64,
    /// Origin sequence of the last removed message.
    pub origin_seq: u64,
}

impl Writer {
    /// Refuses messages of the local origin, and any write once poisoned.
    fn check_remote(&self, origin: NodeId) -> Result<(), StoreError> {
        if self.shared.poisoned.load(Ordering::SeqCst) {
            return Err(StoreError::Poisoned);
        }
        if origin == self.shared.node_id {
            return Err(StoreError::Invalid("messages of this node's own origin"));
        }
        Ok(())
    }

    /// Stores messages of another origin, in origin order, and moves this
    /// node's watermark for that origin to `through`: every message of the
    /// origin up to `through` that this node should hold is then held.
    /// Messages at or below the current watermark are skipped (a repeat).
    /// Returns how many were stored.
    pub(crate) fn ingest(
        &mut self,
        origin: NodeId,
        messages: Vec<Message>,
        through: u64,
    ) -> Result<usize, StoreError> {
        self.check_remote(origin)?;
        let sh = &*self.shared;
        let held = sh.catalog.read().visible.get(&origin).copied().unwrap_or(0);
        if through <= held {
            return Ok(0);
        }
        let mut last = held;
        for m in &messages {
            if m.id.origin != origin || m.id.seq > through || (m.id.seq > held && m.id.seq <= last)
            {
                return Err(StoreError::Invalid("messages out of origin order"));
            }
            last = last.max(m.id.seq);
        }
        let mut staged = Staged::new(sh, "ingest", Durability::Publish);
        let mut fresh = Vec::new();
        let now = now_ms();
        for m in messages.into_iter().filter(|m| m.id.seq > held) {
            if staged.push_head(&m) {
                stage_remote_idem(sh, &mut staged, &m, now)?;
                // A peer whose wall clock was stepped ahead stamps ahead
                // until its clock catches up; its messages are kept as
                // stamped, but move this node's clock at most
                // `OBSERVE_AHEAD_MS` past its own wall clock.
                self.hlc.observe(
                    m.timestamp
                        .min(Timestamp::from_millis(now.saturating_add(OBSERVE_AHEAD_MS))),
                );
                fresh.push(Arc::new(m));
            }
        }
        let stored = fresh.len();
        staged.publish(origin, fresh, through);
        staged.commit()?;
        Ok(stored)
    }

    /// Stores messages of another origin with origin sequences in
    /// `(after, through]` that this node does not hold although its
    /// watermark for the origin is past them (it did not follow their
    /// topics then). Messages above the watermark are left to
    /// [`Self::ingest`]. With `complete` (the topics fetched and what the
    /// origin removed of them by retention), every message of those topics
    /// in `(after, through]` has now been given: each matching stream then
    /// reads as held from `after` on, except what the origin removed, so a
    /// reader positioned there is told of a gap only for that.
    pub(crate) fn fill(
        &mut self,
        origin: NodeId,
        messages: Vec<Message>,
        after: u64,
        through: u64,
        complete: Option<&(TopicSet, Vec<OriginTrim>)>,
    ) -> Result<usize, StoreError> {
        self.check_remote(origin)?;
        let sh = &*self.shared;
        let held = sh.catalog.read().visible.get(&origin).copied().unwrap_or(0);
        let through = through.min(held);
        let mut staged = Staged::new(sh, "fill", Durability::Publish);
        let now = now_ms();
        for m in &messages {
            if m.id.origin != origin || m.id.seq <= after || m.id.seq > through {
                continue;
            }
            if sh
                .log
                .get(keys::log_key(origin, m.id.seq))
                .storage()?
                .is_some()
            {
                continue;
            }
            staged.put_older(m);
            stage_remote_idem(sh, &mut staged, m, now)?;
        }
        if let Some((topics, trims)) = complete {
            complete_streams(sh, &mut staged, origin, &messages, after, topics, trims)?;
        }
        if !staged.has_streams() {
            return Ok(0);
        }
        let stored = staged.messages();
        // The tail no longer holds everything of this range.
        staged.evict_tail(origin, through);
        staged.commit()?;
        Ok(stored)
    }
}

/// Stages, for every stream of `origin` matching `topics` (and every stream
/// the fill touched or the origin reports trimmed), that it is held from
/// `after` on except what the origin removed by retention (`trims`).
fn complete_streams(
    sh: &Shared,
    staged: &mut Staged<'_>,
    origin: NodeId,
    messages: &[Message],
    after: u64,
    topics: &TopicSet,
    trims: &[OriginTrim],
) -> Result<(), StoreError> {
    let mut streams: Vec<Topic> = sh
        .catalog
        .read()
        .streams
        .iter()
        .filter(|(t, s)| s.contains_key(&origin) && topics.matches(t))
        .map(|(t, _)| t.clone())
        .collect();
    streams.extend(staged.staged_topics(origin).cloned());
    streams.extend(trims.iter().map(|t| t.topic.clone()));
    streams.sort();
    streams.dedup();
    for topic in streams {
        let meta = staged.stream(&topic, origin);
        // What the origin itself removed by retention.
        let (t0, o0) = trims
            .iter()
            .find(|t| t.topic == topic)
            .map_or((0, 0), |t| (t.stream_seq, t.origin_seq));
        if meta.count == 0 && meta.last_seq == 0 {
            // Nothing of it held here: known from the origin's
            // report only, so a reader is told of the removal.
            if o0 > after {
                meta.trimmed_seq = t0;
                meta.trimmed_origin_seq = o0;
                meta.last_seq = t0;
                meta.last_origin_seq = o0;
            }
            continue;
        }
        if meta.trimmed_origin_seq <= after {
            continue;
        }
        // The first message held after `after`, this fill's included.
        let filled = messages
            .iter()
            .filter(|m| m.topic == topic && m.id.seq > after)
            .map(|m| m.stream_seq)
            .min();
        let first = match (first_held(sh, &topic, origin, after)?, filled) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(first) = first {
            meta.trimmed_seq = meta.trimmed_seq.min(first.saturating_sub(1));
        }
        meta.trimmed_origin_seq = meta.trimmed_origin_seq.min(after.max(o0));
    }
    Ok(())
}

/// The stream sequence of the first message of stream (`topic`, `origin`)
/// held with an origin sequence above `after`.
fn first_held(
    sh: &Shared,
    topic: &Topic,
    origin: NodeId,
    after: u64,
) -> Result<Option<u64>, StoreError> {
    let range =
        keys::index_key(topic, origin, after + 1)..=keys::index_key(topic, origin, u64::MAX);
    match sh.index.range(range).next() {
        Some(item) => {
            let (_, v) = item.into_inner().storage()?;
            Ok(Some(decode_index(&v)?.stream_seq))
        }
        None => Ok(None),
    }
}
