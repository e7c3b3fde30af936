//! The one way the store commits a change: a [`Staged`] batch. Every write
//! (local appends, messages of other origins, catch-up fills, retention
//! trims, idempotency expiry, group and plugin state) stages its entries
//! here and commits them with [`Staged::commit`], which updates the stream
//! and origin metadata, commits one fjall batch, syncs as the batch's
//! [`Durability`] asks, logs a slow commit, poisons the store on a failure,
//! and only then updates what readers see (tails, catalog, watermarks).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fjall::{Keyspace, OwnedWriteBatch, PersistMode, UserKey, UserValue};
use switchyard_model::{Message, NodeId, Timestamp, Topic};

use crate::catalog::{OriginMeta, StreamMeta};
use crate::codec::{IndexValue, StagedKey, index_value, message_value};
use crate::error::Storage;
use crate::few::FewMap;
use crate::store::Shared;
use crate::tail::Tail;
use crate::{FsyncMode, StoreError, keys};

/// A commit slower than this is logged and counted (see
/// [`Store::commit_stats`](crate::Store::commit_stats)): it delays every
/// caller waiting in it.
pub const SLOW_COMMIT: Duration = Duration::from_millis(20);

/// Each other origin's tail gets this share of `tail_cache_bytes`.
const REMOTE_TAIL_SHARE: usize = 4;

/// How durable a batch is when [`Staged::commit`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Durability {
    /// As the fsync mode promises publishes: synced to disk with
    /// `fsync = always`, otherwise handed to the operating system (a crash
    /// of the process loses nothing; the interval thread or a later sync
    /// makes it durable).
    Publish,
    /// Synced to disk, file metadata included, whatever the fsync mode:
    /// rare changes an operator expects to survive (plugin bindings, group
    /// creation, hand-over and removal).
    Synced,
    /// Handed to the operating system; durable with the next sync.
    Deferred,
}

/// One message removed by retention.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TrimEntry {
    pub origin_seq: u64,
    pub stream_seq: u64,
    pub size: u64,
    /// Where its payload is stored apart, when it is.
    pub staged: Option<StagedKey>,
}

/// Messages of another origin that become visible once the batch commits.
struct Published {
    origin: NodeId,
    /// The origin's watermark before the batch (where a new tail starts).
    held: u64,
    messages: Vec<Arc<Message>>,
    /// The origin's watermark after the batch.
    through: u64,
}

/// A batch of changes being staged, with the stream and origin metadata
/// they lead to. Nothing is visible to readers or durable before
/// [`Staged::commit`]; dropping a batch discards it.
pub(crate) struct Staged<'a> {
    sh: &'a Shared,
    /// What the batch is, for logs.
    what: &'static str,
    durability: Durability,
    batch: OwnedWriteBatch,
    /// Messages stored by the batch.
    messages: usize,
    /// About how many bytes the batch writes to the journal.
    bytes: u64,
    changes: Changes,
}

/// What readers see change once a batch commits.
#[derive(Default)]
struct Changes {
    /// Each stream (origin, topic) the batch changes, as it is after the
    /// batch.
    streams: FewMap<(NodeId, Topic), StreamMeta>,
    /// Each origin the batch changes, as it is after the batch.
    origins: FewMap<NodeId, OriginMeta>,
    /// Tails that stop answering through an origin sequence: (origin, seq).
    evict: Vec<(NodeId, u64)>,
    published: Option<Published>,
}

impl<'a> Staged<'a> {
    /// An empty batch; `what` names it in logs.
    pub fn new(sh: &'a Shared, what: &'static str, durability: Durability) -> Self {
        Staged {
            sh,
            what,
            durability,
            batch: sh.db.batch(),
            messages: 0,
            bytes: 0,
            changes: Changes::default(),
        }
    }

    /// Stages a raw write of `key` in `ks`.
    pub fn insert(&mut self, ks: &Keyspace, key: impl Into<UserKey>, value: impl Into<UserValue>) {
        let (key, value) = (key.into(), value.into());
        self.bytes += (key.len() + value.len()) as u64;
        self.batch.insert(ks, key, value);
    }

    /// Stages the removal of `key` from `ks`.
    pub fn remove(&mut self, ks: &Keyspace, key: impl Into<UserKey>) {
        self.batch.remove(ks, key);
    }

    /// How many messages the batch stores.
    pub fn messages(&self) -> usize {
        self.messages
    }

    /// Stream (`topic`, `origin`) as it is after what is staged so far.
    pub fn stream(&mut self, topic: &Topic, origin: NodeId) -> &mut StreamMeta {
        let sh = self.sh;
        self.changes
            .streams
            .get_or_insert_with((origin, topic.clone()), || {
                sh.catalog.read().stream(topic, origin)
            })
    }

    /// The streams of `origin` the batch changes so far.
    pub fn staged_topics(&self, origin: NodeId) -> impl Iterator<Item = &Topic> {
        self.changes
            .streams
            .iter()
            .filter(move |((o, _), _)| *o == origin)
            .map(|((_, topic), _)| topic)
    }

    /// Whether the batch changes any stream.
    pub fn has_streams(&self) -> bool {
        !self.changes.streams.is_empty()
    }

    /// `origin` as it is after what is staged so far.
    fn origin(&mut self, origin: NodeId) -> &mut OriginMeta {
        let sh = self.sh;
        self.changes.origins.get_or_insert_with(origin, || {
            sh.catalog
                .read()
                .origins
                .get(&origin)
                .copied()
                .unwrap_or_default()
        })
    }

    /// Stages a message's log record and index entry; a payload already
    /// stored apart under `staged` is referred to, not written again.
    fn put_message(&mut self, m: &Message, size: u64, staged: Option<StagedKey>) {
        let (origin, seq) = (m.id.origin, m.id.seq);
        let sh = self.sh;
        let record = message_value(m, staged.as_ref());
        self.bytes += record.len() as u64;
        self.batch
            .insert(&sh.log, keys::log_key(origin, seq), record);
        let iv = IndexValue {
            stream_seq: m.stream_seq,
            size,
            timestamp: m.timestamp,
            staged,
        };
        self.batch.insert(
            &sh.index,
            keys::index_key_value(&m.topic, origin, seq),
            index_value(&iv),
        );
        self.messages += 1;
    }

    /// Stages `m` as the newest message of its stream (topic, origin), for
    /// a local append (whose stream sequence is the stream's next) as for a
    /// message of another origin. Returns false, staging nothing, when the
    /// stream already holds `m`'s stream sequence. A stream sequence past
    /// the next means this node holds the stream from `m` on: what came
    /// before reads as removed, so a reader positioned before it is told of
    /// a gap instead of passing it silently.
    pub fn push_head(&mut self, m: &Message) -> bool {
        self.push_head_staged(m, None)
    }

    /// [`Staged::push_head`] of a message whose payload is already stored
    /// apart under `staged`, when it is.
    pub fn push_head_staged(&mut self, m: &Message, staged: Option<StagedKey>) -> bool {
        let size = m.size();
        let meta = self.stream(&m.topic, m.id.origin);
        if m.stream_seq <= meta.last_seq {
            return false;
        }
        if m.stream_seq != meta.last_seq + 1 {
            meta.trimmed_seq = m.stream_seq - 1;
            meta.trimmed_origin_seq = m.id.seq.saturating_sub(1);
        }
        meta.last_seq = m.stream_seq;
        meta.last_origin_seq = m.id.seq;
        meta.count += 1;
        meta.bytes += size;
        if meta.count == 1 {
            meta.first_ts = m.timestamp;
        }
        meta.last_ts = m.timestamp;
        let om = self.origin(m.id.origin);
        om.last_seq = om.last_seq.max(m.id.seq);
        om.last_ts = om.last_ts.max(m.timestamp);
        self.put_message(m, size, staged);
        true
    }

    /// Stages `m`, a message of another origin that this node did not
    /// store when it was published, anywhere in its stream. A stream that
    /// held nothing until now reads as removed before `m` until the fill
    /// completes ([`Staged::stream`] lets the caller say otherwise).
    pub fn put_older(&mut self, m: &Message) {
        let size = m.size();
        let meta = self.stream(&m.topic, m.id.origin);
        if meta.count == 0 {
            meta.first_ts = m.timestamp;
            meta.last_ts = m.timestamp;
            meta.trimmed_seq = meta.trimmed_seq.max(m.stream_seq.saturating_sub(1));
            meta.trimmed_origin_seq = meta.trimmed_origin_seq.max(m.id.seq.saturating_sub(1));
        } else {
            meta.first_ts = meta.first_ts.min(m.timestamp);
            meta.last_ts = meta.last_ts.max(m.timestamp);
        }
        meta.last_seq = meta.last_seq.max(m.stream_seq);
        meta.last_origin_seq = meta.last_origin_seq.max(m.id.seq);
        meta.count += 1;
        meta.bytes += size;
        self.put_message(m, size, None);
    }

    /// Stages the removal of the oldest messages of stream (`topic`,
    /// `origin`) by retention; entries the stream no longer holds are
    /// skipped. `next_first_ts` is the timestamp of the first message that
    /// stays, if any. The stream's tail stops answering for the range.
    /// Returns how many messages are removed.
    pub fn trim(
        &mut self,
        topic: &Topic,
        origin: NodeId,
        entries: &[TrimEntry],
        next_first_ts: Option<Timestamp>,
    ) -> usize {
        let sh = self.sh;
        let trimmed = self.stream(topic, origin).trimmed_seq;
        let entries: Vec<&TrimEntry> = entries.iter().filter(|e| e.stream_seq > trimmed).collect();
        let Some(last) = entries.last() else {
            return 0;
        };
        for e in &entries {
            self.batch
                .remove(&sh.log, keys::log_key(origin, e.origin_seq));
            self.batch
                .remove(&sh.index, keys::index_key(topic, origin, e.origin_seq));
            if let Some(k) = e.staged {
                self.batch.remove(&sh.staged, k);
            }
        }
        let meta = self.stream(topic, origin);
        for e in &entries {
            meta.count = meta.count.saturating_sub(1);
            meta.bytes = meta.bytes.saturating_sub(e.size);
        }
        meta.trimmed_seq = last.stream_seq;
        meta.trimmed_origin_seq = last.origin_seq;
        if let Some(ts) = next_first_ts {
            meta.first_ts = ts;
        }
        self.changes.evict.push((origin, last.origin_seq));
        entries.len()
    }

    /// Records that this node holds every message of `origin` (another
    /// origin) it should hold up to `through`, once the batch commits:
    /// `fresh` (the messages of it this batch stores, in origin order) join
    /// the origin's tail, and readers see everything up to `through`.
    pub fn publish(&mut self, origin: NodeId, fresh: Vec<Arc<Message>>, through: u64) {
        let held = self
            .sh
            .catalog
            .read()
            .visible
            .get(&origin)
            .copied()
            .unwrap_or(0);
        let om = self.origin(origin);
        om.last_seq = om.last_seq.max(through);
        self.changes.published = Some(Published {
            origin,
            held,
            messages: fresh,
            through,
        });
    }

    /// The tail of `origin` stops answering for origin sequences up to
    /// `through` once the batch commits (it no longer holds all of them).
    pub fn evict_tail(&mut self, origin: NodeId, through: u64) {
        self.changes.evict.push((origin, through));
    }

    /// Commits the batch: writes the changed stream and origin metadata
    /// with the staged entries as one atomic fjall batch, syncs as the
    /// batch's durability asks, and then updates tails and catalog. Refused
    /// when the store is poisoned; a failed commit or sync poisons it.
    pub fn commit(mut self) -> Result<(), StoreError> {
        let sh = self.sh;
        if sh.poisoned.load(Ordering::SeqCst) {
            return Err(StoreError::Poisoned);
        }
        // An origin's highest removed sequence covers every stream's.
        let mut removed: smallvec::SmallVec<[(NodeId, u64); 2]> = smallvec::SmallVec::new();
        for (&(o, _), m) in self.changes.streams.iter() {
            match removed.iter_mut().find(|(r, _)| *r == o) {
                Some((_, seq)) => *seq = (*seq).max(m.trimmed_origin_seq),
                None => removed.push((o, m.trimmed_origin_seq)),
            }
        }
        for (origin, seq) in removed {
            let om = self.origin(origin);
            om.max_trimmed_seq = om.max_trimmed_seq.max(seq);
        }
        let Staged {
            sh,
            what,
            durability,
            mut batch,
            messages,
            bytes,
            changes,
        } = self;
        for ((origin, topic), meta) in changes.streams.iter() {
            batch.insert(
                &sh.meta,
                keys::stream_meta_key(topic, *origin),
                meta.encode(),
            );
        }
        for (&origin, om) in changes.origins.iter() {
            batch.insert(&sh.meta, keys::origin_meta_key(origin), om.encode());
        }
        let started = Instant::now();
        let committing = sh.committing();
        let written = batch.commit().and_then(|()| match durability {
            Durability::Publish if sh.config.fsync == FsyncMode::Always => {
                sh.db.persist(PersistMode::SyncData)
            }
            Durability::Synced => sh.db.persist(PersistMode::SyncAll),
            Durability::Publish | Durability::Deferred => Ok(()),
        });
        drop(committing);
        let took = started.elapsed();
        sh.commits_done.fetch_add(1, Ordering::Relaxed);
        sh.commit_time.observe(took);
        sh.slowest_commit_us
            .fetch_max(took.as_micros() as u64, Ordering::Relaxed);
        if took > SLOW_COMMIT {
            sh.slow_commits.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                messages,
                what,
                "slow commit"
            );
        }
        if let Err(e) = written {
            sh.poison(what, &e);
            return Err(e).storage();
        }
        sh.unsynced_bytes.fetch_add(bytes, Ordering::Relaxed);
        changes.apply(sh);
        Ok(())
    }
}

impl Changes {
    /// Makes a committed batch visible: tails first, then the catalog and
    /// watermarks under one lock, so a reader never sees a watermark ahead
    /// of the tail or of the stream statistics that account for it.
    fn apply(self, sh: &Shared) {
        for (origin, through) in self.evict {
            if origin == sh.node_id {
                sh.tail.write().evict_through(through);
            } else if let Some(t) = sh.remote_tails.write().get_mut(&origin) {
                t.evict_through(through);
            }
        }
        let visible = self.published.map(|p| {
            sh.signals.mark_all(p.messages.iter().map(|m| &m.topic));
            sh.remote_tails
                .write()
                .entry(p.origin)
                .or_insert_with(|| {
                    Tail::new(p.held, sh.config.tail_cache_bytes / REMOTE_TAIL_SHARE)
                })
                .push(p.messages, p.through);
            (p.origin, p.through)
        });
        if self.streams.is_empty() && self.origins.is_empty() {
            return;
        }
        let mut catalog = sh.catalog.write();
        for ((origin, topic), meta) in self.streams {
            catalog
                .streams
                .entry(topic)
                .or_default()
                .insert(origin, meta);
        }
        catalog.origins.extend(self.origins);
        if let Some((origin, through)) = visible {
            catalog.visible.insert(origin, through);
        }
    }
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
