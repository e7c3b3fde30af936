//! The writer thread: the single writer of the store. It owns sequence
//! assignment and the HLC, commits waiting appends as one fjall batch with one
//! sync (group commit), applies retention trims, and makes messages visible.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fjall::PersistMode;
use switchyard_model::{Header, Hlc, Message, MessageId, NodeId, Timestamp, Topic, TopicSet};
use tokio::sync::{mpsc, oneshot};

use crate::catalog::StreamMeta;
use crate::codec::{
    IndexValue, decode_index, decode_u64s, encode_index, encode_message, encode_u64s,
};
use crate::keys;
use crate::store::Shared;
use crate::tail::Tail;
use crate::{FsyncMode, StoreError};

/// One message to append.
#[derive(Clone, Debug)]
pub struct Append {
    /// Destination topic.
    pub topic: Topic,
    /// Optional message key.
    pub key: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// Payload.
    pub payload: Bytes,
    /// When set, an append with the same topic and key within the idempotency
    /// window returns the first result instead of storing a duplicate.
    pub idempotency_key: Option<String>,
}

impl Append {
    /// A message with a payload and nothing else.
    pub fn new(topic: Topic, payload: Bytes) -> Self {
        Append {
            topic,
            key: None,
            headers: Vec::new(),
            payload,
            idempotency_key: None,
        }
    }
}

/// The result of one append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The message id (origin, origin sequence).
    pub id: MessageId,
    /// The topic.
    pub topic: Topic,
    /// Sequence within the stream (topic, origin).
    pub stream_seq: u64,
    /// HLC timestamp.
    pub timestamp: Timestamp,
    /// True when an earlier append with the same idempotency key answered.
    pub duplicate: bool,
}

/// One message removed by retention.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TrimEntry {
    pub origin_seq: u64,
    pub stream_seq: u64,
    pub size: u64,
}

pub(crate) enum Command {
    Append {
        batch: Vec<Append>,
        reply: oneshot::Sender<Result<Vec<Appended>, StoreError>>,
    },
    /// Sync and make pending messages visible ([`FsyncMode::Interval`]).
    Sync,
    /// Remove the oldest messages of a stream. `next_first_ts` is the timestamp
    /// of the first message that stays (if any).
    Trim {
        topic: Topic,
        origin: NodeId,
        entries: Vec<TrimEntry>,
        next_first_ts: Option<Timestamp>,
    },
    /// Remove idempotency records if they are still expired.
    ExpireIdem {
        keys: Vec<Vec<u8>>,
    },
    /// Store messages of another origin (see [`crate::Store::ingest`]).
    Ingest {
        origin: NodeId,
        messages: Vec<Message>,
        through: u64,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    /// Store older messages of another origin (see [`crate::Store::fill`]).
    Fill {
        origin: NodeId,
        messages: Vec<Message>,
        after: u64,
        through: u64,
        complete: Option<(TopicSet, Vec<OriginTrim>)>,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    Shutdown,
}

/// The writer thread: takes commands from the bounded channel and applies
/// them under the writer's lock. Appends that are waiting together are
/// committed together (group commit).
pub(crate) struct WriterLoop {
    pub writer: Arc<Mutex<Writer>>,
    pub rx: mpsc::Receiver<Command>,
}

impl WriterLoop {
    pub fn run(mut self) {
        let config = self
            .writer
            .lock()
            .expect("writer lock")
            .shared
            .config
            .clone();
        let mut carried: Option<Command> = None;
        loop {
            let cmd = match carried.take() {
                Some(c) => c,
                None => match self.rx.blocking_recv() {
                    Some(c) => c,
                    None => break,
                },
            };
            match cmd {
                Command::Append { batch, reply } => {
                    let mut messages = batch.len();
                    let mut bytes: usize = batch.iter().map(|a| a.payload.len()).sum();
                    let mut group: Vec<Pending> = vec![(batch, reply)];
                    // Group commit: take whatever else is already waiting, up to the caps.
                    while messages < config.max_commit_messages && bytes < config.max_commit_bytes {
                        match self.rx.try_recv() {
                            Ok(Command::Append { batch, reply }) => {
                                messages += batch.len();
                                bytes += batch.iter().map(|a| a.payload.len()).sum::<usize>();
                                group.push((batch, reply));
                            }
                            Ok(other) => {
                                carried = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.writer
                        .lock()
                        .expect("writer lock")
                        .commit_appends(group);
                }
                Command::Shutdown => break,
                other => self.writer.lock().expect("writer lock").handle(other),
            }
        }
        self.writer.lock().expect("writer lock").finish();
    }
}

/// A commit slower than this is logged: it delays every publisher waiting in it.
const SLOW_COMMIT: std::time::Duration = std::time::Duration::from_millis(50);

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn idem_record(a: &Appended, expires_ms: u64) -> Vec<u8> {
    encode_u64s(&[
        a.id.origin.0,
        a.id.seq,
        a.stream_seq,
        a.timestamp.0,
        expires_ms,
    ])
}

/// Decodes an idempotency record into its result and expiry.
pub(crate) fn decode_idem(topic: &Topic, b: &[u8]) -> Result<(Appended, u64), StoreError> {
    let [origin, seq, stream_seq, ts, expires] = decode_u64s::<5>(b, "idempotency record")?;
    let appended = Appended {
        id: MessageId {
            origin: NodeId(origin),
            seq,
        },
        topic: topic.clone(),
        stream_seq,
        timestamp: Timestamp(ts),
        duplicate: true,
    };
    Ok((appended, expires))
}

/// The write side of the store: sequence assignment, the HLC, commits,
/// trims. Exactly one holder of its mutex writes at a time: the writer
/// thread, or with `fsync = never` also a publisher committing inline.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    hlc: Hlc,
    next_seq: u64,
    /// Written but not yet synced ([`FsyncMode::Interval`]).
    pending_visible: Vec<Arc<Message>>,
}

type Pending = (
    Vec<Append>,
    oneshot::Sender<Result<Vec<Appended>, StoreError>>,
);

impl Writer {
    pub fn new(shared: Arc<Shared>) -> Self {
        let catalog = shared.catalog.read().expect("catalog lock");
        let origin = catalog
            .origins
            .get(&shared.node_id)
            .copied()
            .unwrap_or_default();
        // Timestamps continue above every origin held, not only this one, so
        // that a node that starts a new origin never goes back in time.
        let last_ts = catalog
            .origins
            .values()
            .map(|o| o.last_ts)
            .max()
            .unwrap_or_default();
        drop(catalog);
        Writer {
            hlc: Hlc::resume(last_ts),
            next_seq: origin.last_seq + 1,
            shared,
            pending_visible: Vec::new(),
        }
    }

    /// Handles a command other than an append.
    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Append { batch, reply } => self.commit_appends(vec![(batch, reply)]),
            Command::Sync => self.sync_pending(),
            Command::Trim {
                topic,
                origin,
                entries,
                next_first_ts,
            } => {
                if let Err(e) = self.trim(&topic, origin, &entries, next_first_ts) {
                    tracing::error!(error = %e, %topic, "retention trim failed");
                }
            }
            Command::ExpireIdem { keys } => {
                if let Err(e) = self.expire_idem(keys) {
                    tracing::warn!(error = %e, "expiring idempotency records failed");
                }
            }
            Command::Ingest {
                origin,
                messages,
                through,
                reply,
            } => {
                let r = self.ingest(origin, messages, through);
                let stored = r.as_ref().is_ok_and(|n| *n > 0);
                self.answer(reply, r);
                if stored {
                    self.notify();
                }
            }
            Command::Fill {
                origin,
                messages,
                after,
                through,
                complete,
                reply,
            } => {
                let r = self.fill(origin, messages, after, through, complete.as_ref());
                self.answer(reply, r);
            }
            Command::Shutdown => {}
        }
    }

    /// Answers a command; a storage failure poisons the store first.
    fn answer<T>(&self, reply: oneshot::Sender<Result<T, StoreError>>, r: Result<T, StoreError>) {
        if let Err(StoreError::Storage(fe)) = &r {
            self.poison(fe);
        }
        let _ = reply.send(r);
    }

    /// Makes everything written visible and durable, and marks the close clean.
    fn finish(&mut self) {
        self.sync_pending();
        let closed = self
            .shared
            .meta
            .insert(keys::RUN_KEY, "clean")
            .and_then(|()| self.shared.db.persist(PersistMode::SyncAll));
        if let Err(e) = closed {
            tracing::error!(error = %e, "final sync failed");
        }
    }

    fn poison(&self, e: &fjall::Error) {
        tracing::error!(error = %e, "write or sync failed: the store refuses further writes");
        self.shared.poisoned.store(true, Ordering::SeqCst);
    }

    /// Commits a group of append requests as one batch and answers each.
    pub(crate) fn commit_appends(&mut self, mut group: Vec<Pending>) {
        if self.shared.poisoned.load(Ordering::SeqCst) {
            for (_, reply) in group {
                let _ = reply.send(Err(StoreError::Poisoned));
            }
            return;
        }
        match self.write_group(&mut group) {
            Ok(results) => {
                for ((_, reply), result) in group.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
                // Subscribers are woken after the publishers: the messages are
                // already visible to any new read, and the publishers' tasks
                // enter the runtime's queue ahead of a crowd of subscribers.
                self.notify();
            }
            Err(e) => {
                if let StoreError::Storage(fe) = &e {
                    self.poison(fe);
                }
                for (_, reply) in group {
                    let _ = reply.send(Err(StoreError::Poisoned));
                }
            }
        }
    }

    /// Writes a group of requests as one batch; returns per-request results.
    /// Takes the messages' contents out of the requests instead of copying them.
    fn write_group(&mut self, group: &mut [Pending]) -> Result<Vec<Vec<Appended>>, StoreError> {
        let sh = &*self.shared;
        let local = sh.node_id;
        let now = now_ms();
        let window = sh.config.idempotency_window.as_millis() as u64;
        let mut fj = sh.db.batch();
        let mut staged: HashMap<Topic, StreamMeta> = HashMap::new();
        let mut seen_idem: HashMap<Vec<u8>, Appended> = HashMap::new();
        let mut results = Vec::with_capacity(group.len());
        let mut fresh: Vec<Arc<Message>> = Vec::new();
        let start_seq = self.next_seq;
        let start_hlc = self.hlc.clone();
        {
            let catalog = sh.catalog.read().expect("catalog lock");
            for (batch, _) in group.iter_mut() {
                let mut out = Vec::with_capacity(batch.len());
                for a in batch.iter_mut() {
                    let idem = a
                        .idempotency_key
                        .as_ref()
                        .map(|k| keys::idem_key(&a.topic, k));
                    if let Some(ik) = &idem {
                        if let Some(prev) = seen_idem.get(ik) {
                            out.push(prev.clone());
                            continue;
                        }
                        if let Some(v) = sh.idem.get(ik)? {
                            let (prev, expires) = decode_idem(&a.topic, &v)?;
                            if expires > now {
                                out.push(prev);
                                continue;
                            }
                        }
                    }
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    let timestamp = self.hlc.now(now);
                    let meta = staged
                        .entry(a.topic.clone())
                        .or_insert_with(|| catalog.stream(&a.topic, local));
                    meta.last_seq += 1;
                    meta.last_origin_seq = seq;
                    meta.count += 1;
                    let msg = Message {
                        id: MessageId { origin: local, seq },
                        topic: a.topic.clone(),
                        stream_seq: meta.last_seq,
                        timestamp,
                        key: a.key.take(),
                        headers: std::mem::take(&mut a.headers),
                        payload: std::mem::take(&mut a.payload),
                    };
                    let size = msg.size();
                    meta.bytes += size;
                    if meta.count == 1 {
                        meta.first_ts = timestamp;
                    }
                    meta.last_ts = timestamp;
                    put_message(&mut fj, sh, &msg, size);
                    let appended = Appended {
                        id: msg.id,
                        topic: a.topic.clone(),
                        stream_seq: msg.stream_seq,
                        timestamp,
                        duplicate: false,
                    };
                    if let Some(ik) = idem {
                        fj.insert(&sh.idem, ik.clone(), idem_record(&appended, now + window));
                        seen_idem.insert(
                            ik,
                            Appended {
                                duplicate: true,
                                ..appended.clone()
                            },
                        );
                    }
                    out.push(appended);
                    fresh.push(Arc::new(msg));
                }
                results.push(out);
            }
        }
        if fresh.is_empty() {
            return Ok(results);
        }
        let mut origin = sh
            .catalog
            .read()
            .expect("catalog lock")
            .origins
            .get(&local)
            .copied()
            .unwrap_or_default();
        origin.last_seq = self.next_seq - 1;
        origin.last_ts = fresh.last().map_or(origin.last_ts, |m| m.timestamp);
        for (topic, meta) in &staged {
            fj.insert(&sh.meta, keys::stream_meta_key(topic, local), meta.encode());
        }
        fj.insert(&sh.meta, keys::origin_meta_key(local), origin.encode());
        let started = std::time::Instant::now();
        let written = fj.commit().and_then(|()| match sh.config.fsync {
            FsyncMode::Always => sh.db.persist(PersistMode::SyncData),
            FsyncMode::Interval | FsyncMode::Never => Ok(()),
        });
        let took = started.elapsed();
        if took > SLOW_COMMIT {
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                messages = fresh.len(),
                "slow commit"
            );
        }
        if let Err(e) = written {
            // Nothing of this group is acknowledged; sequence numbers are not
            // reused because the store refuses all further writes.
            self.next_seq = start_seq;
            self.hlc = start_hlc;
            return Err(e.into());
        }
        sh.catalog
            .write()
            .expect("catalog lock")
            .record(local, staged, origin);
        match sh.config.fsync {
            FsyncMode::Interval => self.pending_visible.extend(fresh),
            FsyncMode::Always | FsyncMode::Never => self.make_visible(fresh),
        }
        Ok(results)
    }

    /// Stores messages of another origin, in origin order, and moves this
    /// node's watermark for that origin to `through`: every message of the
    /// origin up to `through` that this node should hold is then held.
    /// Messages at or below the current watermark are skipped (a repeat).
    /// Returns how many were stored.
    fn ingest(
        &mut self,
        origin: NodeId,
        messages: Vec<Message>,
        through: u64,
    ) -> Result<usize, StoreError> {
        let sh = &*self.shared;
        if self.shared.poisoned.load(Ordering::SeqCst) {
            return Err(StoreError::Poisoned);
        }
        if origin == sh.node_id {
            return Err(StoreError::Invalid("messages of this node's own origin"));
        }
        let (held, mut om) = {
            let catalog = sh.catalog.read().expect("catalog lock");
            (
                catalog.visible.get(&origin).copied().unwrap_or(0),
                catalog.origins.get(&origin).copied().unwrap_or_default(),
            )
        };
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
        let mut fj = sh.db.batch();
        let mut staged: HashMap<Topic, StreamMeta> = HashMap::new();
        let mut stored = 0;
        let mut keep = vec![false; messages.len()];
        {
            let catalog = sh.catalog.read().expect("catalog lock");
            for (i, m) in messages.iter().enumerate().filter(|(_, m)| m.id.seq > held) {
                let meta = staged
                    .entry(m.topic.clone())
                    .or_insert_with(|| catalog.stream(&m.topic, origin));
                if m.stream_seq <= meta.last_seq {
                    continue;
                }
                keep[i] = true;
                if m.stream_seq != meta.last_seq + 1 {
                    // This node holds the stream from here on: what came
                    // before reads as removed, so a reader positioned before
                    // it is told of a gap instead of passing it silently.
                    meta.trimmed_seq = m.stream_seq - 1;
                    meta.trimmed_origin_seq = m.id.seq - 1;
                    om.max_trimmed_seq = om.max_trimmed_seq.max(m.id.seq - 1);
                }
                let size = m.size();
                meta.last_seq = m.stream_seq;
                meta.last_origin_seq = m.id.seq;
                meta.count += 1;
                meta.bytes += size;
                if meta.count == 1 {
                    meta.first_ts = m.timestamp;
                }
                meta.last_ts = m.timestamp;
                put_message(&mut fj, sh, m, size);
                self.hlc.observe(m.timestamp);
                om.last_ts = om.last_ts.max(m.timestamp);
                stored += 1;
            }
        }
        om.last_seq = om.last_seq.max(through);
        for (topic, meta) in &staged {
            fj.insert(
                &sh.meta,
                keys::stream_meta_key(topic, origin),
                meta.encode(),
            );
        }
        fj.insert(&sh.meta, keys::origin_meta_key(origin), om.encode());
        let started = std::time::Instant::now();
        fj.commit()?;
        if sh.config.fsync == FsyncMode::Always {
            sh.db.persist(PersistMode::SyncData)?;
        }
        let took = started.elapsed();
        if took > SLOW_COMMIT {
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                messages = stored,
                %origin,
                "slow commit of received messages"
            );
        }
        // The tail first, then the watermark (as for local messages).
        let fresh = messages
            .into_iter()
            .zip(keep)
            .filter(|(_, k)| *k)
            .map(|(m, _)| Arc::new(m));
        sh.remote_tails
            .write()
            .expect("tail lock")
            .entry(origin)
            .or_insert_with(|| Tail::new(held, sh.config.tail_cache_bytes / REMOTE_TAIL_SHARE))
            .push(fresh, through);
        let mut catalog = sh.catalog.write().expect("catalog lock");
        catalog.record(origin, staged, om);
        catalog.visible.insert(origin, through);
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
    fn fill(
        &mut self,
        origin: NodeId,
        messages: Vec<Message>,
        after: u64,
        through: u64,
        complete: Option<&(TopicSet, Vec<OriginTrim>)>,
    ) -> Result<usize, StoreError> {
        let sh = &*self.shared;
        if sh.poisoned.load(Ordering::SeqCst) {
            return Err(StoreError::Poisoned);
        }
        if origin == sh.node_id {
            return Err(StoreError::Invalid("messages of this node's own origin"));
        }
        let held = {
            let catalog = sh.catalog.read().expect("catalog lock");
            catalog.visible.get(&origin).copied().unwrap_or(0)
        };
        let through = through.min(held);
        let mut fj = sh.db.batch();
        let mut staged: HashMap<Topic, StreamMeta> = HashMap::new();
        let mut stored = 0;
        {
            let catalog = sh.catalog.read().expect("catalog lock");
            for m in &messages {
                if m.id.origin != origin || m.id.seq <= after || m.id.seq > through {
                    continue;
                }
                if sh.log.get(keys::log_key(origin, m.id.seq))?.is_some() {
                    continue;
                }
                let meta = staged
                    .entry(m.topic.clone())
                    .or_insert_with(|| catalog.stream(&m.topic, origin));
                let size = m.size();
                if meta.count == 0 {
                    meta.first_ts = m.timestamp;
                    meta.last_ts = m.timestamp;
                    // Held from here on until the fill completes.
                    meta.trimmed_seq = meta.trimmed_seq.max(m.stream_seq - 1);
                    meta.trimmed_origin_seq = meta.trimmed_origin_seq.max(m.id.seq - 1);
                } else {
                    meta.first_ts = meta.first_ts.min(m.timestamp);
                    meta.last_ts = meta.last_ts.max(m.timestamp);
                }
                meta.last_seq = meta.last_seq.max(m.stream_seq);
                meta.last_origin_seq = meta.last_origin_seq.max(m.id.seq);
                meta.count += 1;
                meta.bytes += size;
                put_message(&mut fj, sh, m, size);
                stored += 1;
            }
        }
        if let Some((topics, trims)) = complete {
            let catalog = sh.catalog.read().expect("catalog lock");
            let mut streams: Vec<Topic> = catalog
                .streams
                .iter()
                .filter(|(t, s)| s.contains_key(&origin) && topics.matches(t))
                .map(|(t, _)| t.clone())
                .collect();
            streams.extend(staged.keys().cloned());
            streams.extend(trims.iter().map(|t| t.topic.clone()));
            streams.sort();
            streams.dedup();
            for topic in streams {
                let meta = staged
                    .entry(topic.clone())
                    .or_insert_with(|| catalog.stream(&topic, origin));
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
                let first = match (fj_first(sh, &topic, origin, after)?, filled) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                if let Some(first) = first {
                    meta.trimmed_seq = meta.trimmed_seq.min(first - 1);
                }
                meta.trimmed_origin_seq = meta.trimmed_origin_seq.min(after.max(o0));
            }
        }
        if staged.is_empty() {
            return Ok(0);
        }
        let mut om = {
            let catalog = sh.catalog.read().expect("catalog lock");
            catalog.origins.get(&origin).copied().unwrap_or_default()
        };
        for (topic, meta) in &staged {
            om.max_trimmed_seq = om.max_trimmed_seq.max(meta.trimmed_origin_seq);
            fj.insert(
                &sh.meta,
                keys::stream_meta_key(topic, origin),
                meta.encode(),
            );
        }
        fj.insert(&sh.meta, keys::origin_meta_key(origin), om.encode());
        fj.commit()?;
        if sh.config.fsync == FsyncMode::Always {
            sh.db.persist(PersistMode::SyncData)?;
        }
        // The tail no longer holds everything of this range.
        if let Some(t) = sh.remote_tails.write().expect("tail lock").get_mut(&origin) {
            t.evict_through(through);
        }
        let mut catalog = sh.catalog.write().expect("catalog lock");
        catalog.record(origin, staged, om);
        Ok(stored)
    }

    /// Wakes readers waiting for new messages.
    fn notify(&self) {
        self.shared.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Makes messages visible: tail first, then the watermark. Readers that
    /// wait are woken separately ([`Writer::notify`]).
    fn make_visible(&self, fresh: Vec<Arc<Message>>) {
        let Some(last) = fresh.last().map(|m| m.id.seq) else {
            return;
        };
        let sh = &*self.shared;
        sh.tail.write().expect("tail lock").push(fresh, last);
        sh.catalog
            .write()
            .expect("catalog lock")
            .visible
            .insert(sh.node_id, last);
    }

    fn sync_pending(&mut self) {
        if self.pending_visible.is_empty() {
            return;
        }
        match self.shared.db.persist(PersistMode::SyncData) {
            Ok(()) => {
                let fresh = std::mem::take(&mut self.pending_visible);
                self.make_visible(fresh);
                self.notify();
            }
            Err(e) => self.poison(&e),
        }
    }

    fn trim(
        &mut self,
        topic: &Topic,
        origin: NodeId,
        entries: &[TrimEntry],
        next_first_ts: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let sh = &*self.shared;
        let mut meta = sh
            .catalog
            .read()
            .expect("catalog lock")
            .stream(topic, origin);
        let entries: Vec<&TrimEntry> = entries
            .iter()
            .filter(|e| e.stream_seq > meta.trimmed_seq)
            .collect();
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let mut fj = sh.db.batch();
        for e in &entries {
            fj.remove(&sh.log, keys::log_key(origin, e.origin_seq));
            fj.remove(&sh.index, keys::index_key(topic, origin, e.origin_seq));
            meta.count = meta.count.saturating_sub(1);
            meta.bytes = meta.bytes.saturating_sub(e.size);
        }
        meta.trimmed_seq = last.stream_seq;
        meta.trimmed_origin_seq = last.origin_seq;
        if let Some(ts) = next_first_ts {
            meta.first_ts = ts;
        }
        let mut om = sh
            .catalog
            .read()
            .expect("catalog lock")
            .origins
            .get(&origin)
            .copied()
            .unwrap_or_default();
        om.max_trimmed_seq = om.max_trimmed_seq.max(last.origin_seq);
        fj.insert(
            &sh.meta,
            keys::stream_meta_key(topic, origin),
            meta.encode(),
        );
        fj.insert(&sh.meta, keys::origin_meta_key(origin), om.encode());
        if let Err(e) = fj.commit() {
            self.poison(&e);
            return Err(e.into());
        }
        if origin == sh.node_id {
            sh.tail
                .write()
                .expect("tail lock")
                .evict_through(last.origin_seq);
        } else if let Some(t) = sh.remote_tails.write().expect("tail lock").get_mut(&origin) {
            t.evict_through(last.origin_seq);
        }
        let mut catalog = sh.catalog.write().expect("catalog lock");
        catalog
            .streams
            .entry(topic.clone())
            .or_default()
            .insert(origin, meta);
        catalog.origins.insert(origin, om);
        tracing::debug!(%topic, %origin, removed = entries.len(), through = last.stream_seq, "retention trimmed stream");
        Ok(())
    }

    fn expire_idem(&mut self, keys: Vec<Vec<u8>>) -> Result<(), StoreError> {
        let sh = &*self.shared;
        let now = now_ms();
        let mut fj = sh.db.batch();
        for k in keys {
            if let Some(v) = sh.idem.get(&k)? {
                let [.., expires] = decode_u64s::<5>(&v, "idempotency record")?;
                if expires <= now {
                    fj.remove(&sh.idem, k);
                }
            }
        }
        fj.commit()?;
        Ok(())
    }
}

/// Stages a message's log record and index entry (`size` is its
/// [`Message::size`]).
fn put_message(fj: &mut fjall::OwnedWriteBatch, sh: &Shared, m: &Message, size: u64) {
    let (origin, seq) = (m.id.origin, m.id.seq);
    fj.insert(&sh.log, keys::log_key(origin, seq), encode_message(m));
    let iv = IndexValue {
        stream_seq: m.stream_seq,
        size,
        timestamp: m.timestamp,
    };
    fj.insert(
        &sh.index,
        keys::index_key(&m.topic, origin, seq),
        encode_index(&iv),
    );
}

/// Each other origin's tail gets this share of `tail_cache_bytes`.
const REMOTE_TAIL_SHARE: usize = 4;

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

/// The stream sequence of the first message of stream (`topic`, `origin`)
/// held with an origin sequence above `after`.
fn fj_first(
    sh: &Shared,
    topic: &Topic,
    origin: NodeId,
    after: u64,
) -> Result<Option<u64>, StoreError> {
    let range =
        keys::index_key(topic, origin, after + 1)..=keys::index_key(topic, origin, u64::MAX);
    match sh.index.range(range).next() {
        Some(item) => {
            let (_, v) = item.into_inner()?;
            Ok(Some(decode_index(&v)?.stream_seq))
        }
        None => Ok(None),
    }
}
