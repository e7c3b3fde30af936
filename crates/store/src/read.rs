//! Batch reads from a cursor: from the in-memory tail when the cursor is
//! recent, from fjall otherwise. Each call reads a bounded amount and holds
//! nothing afterwards, so a slow reader costs disk reads, never memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use smallvec::SmallVec;
use switchyard_model::{Cursor, Message, NodeId, Topic, TopicSet};

use crate::catalog::Catalog;
use crate::codec::{decode_message, record_topic};
use crate::error::Storage;
use crate::keys;
use crate::store::Shared;
use crate::tail::Tail;
use crate::{Store, StoreError};

/// Default most messages returned by one read.
pub const DEFAULT_READ_LIMIT: usize = 256;
/// Default most payload bytes returned by one read (at least one message is
/// always returned when one is due).
pub const DEFAULT_READ_BYTES: usize = 1024 * 1024;
/// Most log entries one read examines before it returns, so that a sparse
/// pattern over a busy log answers promptly and advances its cursor.
const SCAN_CAP: usize = 8192;
/// Up to this many matching topics are read through the per-topic index and
/// merged; beyond it the origin log is scanned and filtered.
const INDEX_MERGE_MAX_TOPICS: usize = 64;

/// What to read.
#[derive(Clone, Debug)]
pub struct ReadQuery {
    /// Topics (patterns) to read.
    pub topics: TopicSet,
    /// Most messages per read.
    pub limit: usize,
    /// Most payload bytes per read.
    pub max_bytes: usize,
    /// Origins read only up to an origin sequence: the reader's position in
    /// each stops there (a node that does not hold an origin's messages of
    /// these topics past a position must not pass over them). A limit at
    /// or below the reader's position reads nothing of the origin.
    pub hold: BTreeMap<NodeId, u64>,
}

impl ReadQuery {
    /// A query with the default limits.
    pub fn new(topics: TopicSet) -> Self {
        ReadQuery {
            topics,
            limit: DEFAULT_READ_LIMIT,
            max_bytes: DEFAULT_READ_BYTES,
            hold: BTreeMap::new(),
        }
    }

    /// How far the reader may read `origin` when the node holds it through
    /// `held`: `held`, or less when the origin is held back.
    fn reach(&self, origin: NodeId, held: u64) -> u64 {
        self.hold
            .get(&origin)
            .map_or(held, |&limit| limit.min(held))
    }
}

/// Messages of a stream that a cursor asked for but retention removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The stream's topic.
    pub topic: Topic,
    /// The stream's origin.
    pub origin: NodeId,
    /// The reader's position in that origin when the gap was found: messages
    /// of the stream with an origin sequence above it and at or below
    /// `through_origin_seq` are gone.
    pub after_origin_seq: u64,
    /// Origin sequence of the last removed message of the stream.
    pub through_origin_seq: u64,
    /// Stream sequence of the last removed message (stream sequences up to it are gone).
    pub through_stream_seq: u64,
}

/// The result of one read.
#[derive(Clone, Debug, Default)]
pub struct ReadBatch {
    /// Messages in delivery order (per-origin order kept; origins merged by timestamp).
    pub messages: Vec<Arc<Message>>,
    /// The position after this batch: continue from here.
    pub cursor: Cursor,
    /// Removed ranges between the starting cursor and the data, to report
    /// before the messages.
    pub gaps: Vec<Gap>,
    /// Whether the read took everything matching that was visible when it
    /// began: read again from `cursor`, it finds nothing new until the
    /// store's change signal ([`Store::changes`]) moves. `false` when that
    /// is not known (a read from disk, or one cut short by its limits).
    pub complete: bool,
}

/// The origins' contributions to one read: a node's own log and one
/// peer's without an allocation.
type Reads = SmallVec<[OriginRead; 2]>;

/// What one origin contributed to a read.
struct OriginRead {
    origin: NodeId,
    messages: Vec<Arc<Message>>,
    /// Payload bytes of `messages`.
    bytes: usize,
    /// Position when every returned message is delivered.
    end: u64,
    /// Whether the read reached the origin's last visible message.
    complete: bool,
}

impl OriginRead {
    fn new(origin: NodeId, end: u64) -> Self {
        OriginRead {
            origin,
            messages: Vec::new(),
            bytes: 0,
            end,
            complete: false,
        }
    }

    /// Whether the read holds its limit of messages or bytes (it always
    /// takes at least one message).
    fn is_full(&self, q: &ReadQuery) -> bool {
        !self.messages.is_empty() && (self.messages.len() >= q.limit || self.bytes >= q.max_bytes)
    }

    /// Decodes the `log` record of `seq` and adds it. A message whose
    /// payload retention removed since its record was read is skipped: the
    /// gap check after the read reports it.
    fn push(&mut self, sh: &Shared, seq: u64, record: &[u8]) -> Result<(), StoreError> {
        let Some(m) = decode_message(self.origin, seq, record, |k| sh.staged_payload(k))? else {
            return Ok(());
        };
        self.bytes += m.payload.len();
        self.messages.push(Arc::new(m));
        Ok(())
    }
}

impl Store {
    /// Reads from the in-memory tails. `None` when a tail does not cover the
    /// cursor (call [`Store::read`] on a blocking thread instead). Never
    /// blocks on I/O.
    pub fn read_cached(&self, q: &ReadQuery, from: &Cursor) -> Option<ReadBatch> {
        let sh = &*self.shared;
        let local = sh.node_id;
        let mut reads = Reads::new();
        match q.hold.get(&local) {
            None => {
                let tail = sh.tail.read();
                reads.push(read_tail(q, local, from.get(local), &tail, None)?);
            }
            Some(&limit) if limit > from.get(local) => {
                let tail = sh.tail.read();
                reads.push(read_tail(q, local, from.get(local), &tail, Some(limit))?);
            }
            Some(_) => {}
        }
        // Watermarks first, then the tails: a tail is pushed before its
        // watermark moves, so it holds everything up to what was read here.
        let visible: Vec<(NodeId, u64)> = {
            let catalog = sh.catalog.read();
            catalog
                .visible
                .iter()
                .map(|(&o, &v)| (o, q.reach(o, v)))
                .filter(|&(o, v)| o != local && v > from.get(o))
                .collect()
        };
        if !visible.is_empty() {
            let tails = sh.remote_tails.read();
            for (o, v) in visible {
                reads.push(read_tail(q, o, from.get(o), tails.get(&o)?, Some(v))?);
            }
        }
        let mut batch = merge(q, from, reads);
        let catalog = sh.catalog.read();
        batch.gaps = gaps(&catalog, q, from);
        Some(batch)
    }

    /// Reads from fjall. Blocking: call it from a blocking thread.
    pub fn read(&self, q: &ReadQuery, from: &Cursor) -> Result<ReadBatch, StoreError> {
        let sh = &*self.shared;
        // Watermarks first, then the catalog: every message at or below a
        // watermark is already in the catalog.
        let plans: Vec<(NodeId, u64, u64, Option<Vec<Topic>>)> = {
            let catalog = sh.catalog.read();
            catalog
                .visible
                .iter()
                .map(|(&o, &v)| (o, q.reach(o, v)))
                .filter(|&(o, v)| v > from.get(o))
                .map(|(o, v)| {
                    let c = from.get(o);
                    (o, c, v, index_topics(&catalog, q, o, c))
                })
                .collect()
        };
        let mut reads = Reads::with_capacity(plans.len());
        for (origin, after, visible, topics) in plans {
            let read = match topics {
                Some(topics) => self.read_by_index(q, origin, after, visible, &topics)?,
                None => self.read_by_scan(q, origin, after, visible)?,
            };
            reads.push(read);
        }
        let mut batch = merge(q, from, reads);
        let catalog = sh.catalog.read();
        batch.gaps = gaps(&catalog, q, from);
        Ok(batch)
    }

    /// [`Store::read_origin`] from the local origin's in-memory tail:
    /// `None` for another origin or when the tail does not cover `after`.
    /// Never blocks on I/O.
    pub fn read_origin_cached(
        &self,
        q: &ReadQuery,
        origin: NodeId,
        after: u64,
    ) -> Option<(Vec<Arc<Message>>, u64)> {
        if origin != self.shared.node_id {
            return None;
        }
        let tail = self.shared.tail.read();
        read_tail(q, origin, after, &tail, None).map(|r| (r.messages, r.end))
    }

    /// Reads the messages of one origin matching `q` after origin sequence
    /// `after`, in origin order: the messages and the origin sequence up to
    /// which the read looked (continue from there). Served from the local
    /// tail when it covers `after`; otherwise blocking (call it from a
    /// blocking thread).
    pub fn read_origin(
        &self,
        q: &ReadQuery,
        origin: NodeId,
        after: u64,
    ) -> Result<(Vec<Arc<Message>>, u64), StoreError> {
        if let Some(read) = self.read_origin_cached(q, origin, after) {
            return Ok(read);
        }
        let (visible, topics) = {
            let catalog = self.shared.catalog.read();
            let visible = catalog.visible.get(&origin).copied().unwrap_or(0);
            if visible <= after {
                return Ok((Vec::new(), after));
            }
            (visible, index_topics(&catalog, q, origin, after))
        };
        let read = match topics {
            Some(topics) => self.read_by_index(q, origin, after, visible, &topics)?,
            None => self.read_by_scan(q, origin, after, visible)?,
        };
        Ok((read.messages, read.end))
    }

    fn read_by_scan(
        &self,
        q: &ReadQuery,
        origin: NodeId,
        after: u64,
        visible: u64,
    ) -> Result<OriginRead, StoreError> {
        let sh = &*self.shared;
        let mut read = OriginRead::new(origin, visible);
        let range = keys::log_key(origin, after + 1)..=keys::log_key(origin, visible);
        for (scanned, item) in sh.log.range(range).enumerate() {
            let (k, v) = item.into_inner().storage()?;
            let (_, seq) = keys::parse_log_key(&k).ok_or(StoreError::Corrupt("log key"))?;
            if scanned == SCAN_CAP || read.is_full(q) {
                read.end = seq - 1;
                break;
            }
            if q.topics.matches_name(record_topic(&v)?) {
                read.push(sh, seq, &v)?;
            }
        }
        Ok(read)
    }

    fn read_by_index(
        &self,
        q: &ReadQuery,
        origin: NodeId,
        after: u64,
        visible: u64,
        topics: &[Topic],
    ) -> Result<OriginRead, StoreError> {
        let sh = &*self.shared;
        let limit = q.limit.max(1);
        let mut seqs = Vec::new();
        // A topic that yields `limit` entries may hold more: then only the
        // smallest `limit` sequences overall are known to be complete.
        let mut truncated = false;
        for topic in topics {
            let range =
                keys::index_key(topic, origin, after + 1)..=keys::index_key(topic, origin, visible);
            let before = seqs.len();
            for item in sh.index.range(range).take(limit) {
                let k = item.key().storage()?;
                seqs.push(keys::index_key_seq(&k).ok_or(StoreError::Corrupt("index key"))?);
            }
            truncated |= seqs.len() - before == limit;
        }
        seqs.sort_unstable();
        seqs.dedup();
        truncated |= seqs.len() > limit;
        seqs.truncate(limit);
        let end = if truncated {
            seqs.last().copied().unwrap_or(after)
        } else {
            visible
        };
        let mut read = OriginRead::new(origin, end);
        for &seq in &seqs {
            if read.is_full(q) {
                read.end = seq - 1;
                break;
            }
            // Retention may have removed it since the index was read; the gap
            // check after the read reports that.
            if let Some(v) = sh.log.get(keys::log_key(origin, seq)).storage()? {
                read.push(sh, seq, &v)?;
            }
        }
        Ok(read)
    }
}

/// Reads the messages of `origin` matching `q` after `after` from its tail,
/// up to `upto` (every message of a remote origin's tail that is visible),
/// or everything in the tail for the local origin. `None` when the tail
/// does not cover `after`.
fn read_tail(
    q: &ReadQuery,
    origin: NodeId,
    after: u64,
    tail: &Tail,
    upto: Option<u64>,
) -> Option<OriginRead> {
    if !tail.covers(after) {
        return None;
    }
    let mut read = OriginRead::new(origin, after);
    let mut cut = false;
    for (scanned, m) in tail.after(after).enumerate() {
        if upto.is_some_and(|u| m.id.seq > u) {
            break;
        }
        if scanned == SCAN_CAP
            || read.messages.len() >= q.limit.max(1)
            || (!read.messages.is_empty() && read.bytes >= q.max_bytes)
        {
            cut = true;
            break;
        }
        read.end = m.id.seq;
        if q.topics.matches(&m.topic) {
            read.bytes += m.payload.len();
            read.messages.push(m.clone());
        }
    }
    if !cut && let Some(u) = upto {
        // Nothing else of the origin is held up to its watermark.
        read.end = u;
    }
    read.complete = !cut;
    Some(read)
}

/// The topics to read through the index for origin `o` after `c`, or `None`
/// to scan the log. Only topics with messages after `c` are named.
fn index_topics(catalog: &Catalog, q: &ReadQuery, o: NodeId, c: u64) -> Option<Vec<Topic>> {
    let has_new = |t: &Topic| {
        catalog
            .streams
            .get(t)
            .and_then(|s| s.get(&o))
            .is_some_and(|s| s.last_origin_seq > c)
    };
    if let Some(exact) = q.topics.exact_topics() {
        return Some(exact.into_iter().filter(has_new).collect());
    }
    let mut out = Vec::new();
    for t in catalog.streams.keys() {
        if q.topics.matches(t) && has_new(t) {
            if out.len() == INDEX_MERGE_MAX_TOPICS {
                return None;
            }
            out.push(t.clone());
        }
    }
    Some(out)
}

/// Merges per-origin reads by timestamp, keeping each origin's order, and
/// computes the cursor after the merged batch.
fn merge(q: &ReadQuery, from: &Cursor, reads: Reads) -> ReadBatch {
    let mut cursor = from.clone();
    if reads.len() <= 1 {
        let mut batch = ReadBatch {
            cursor,
            complete: true,
            ..Default::default()
        };
        if let Some(r) = reads.into_iter().next() {
            batch.cursor.advance(r.origin, r.end);
            batch.messages = r.messages;
            batch.complete = r.complete;
        }
        return batch;
    }
    let mut all: Vec<Arc<Message>> = Vec::new();
    let mut ends: BTreeMap<NodeId, (u64, usize)> = BTreeMap::new();
    let mut complete = true;
    for r in reads {
        complete &= r.complete;
        ends.insert(r.origin, (r.end, r.messages.len()));
        all.extend(r.messages);
    }
    all.sort_by_key(|m| (m.timestamp, m.id));
    complete &= all.len() <= q.limit;
    all.truncate(q.limit);
    let mut kept: BTreeMap<NodeId, (usize, u64)> = BTreeMap::new();
    for m in &all {
        let e = kept.entry(m.id.origin).or_default();
        e.0 += 1;
        e.1 = m.id.seq;
    }
    for (origin, (end, total)) in ends {
        match kept.get(&origin) {
            Some(&(n, _)) if n == total => cursor.advance(origin, end),
            Some(&(_, last)) => cursor.advance(origin, last),
            None if total == 0 => cursor.advance(origin, end),
            None => {}
        }
    }
    ReadBatch {
        messages: all,
        cursor,
        gaps: Vec::new(),
        complete,
    }
}

/// Streams of the query whose removed range reaches past the cursor.
fn gaps(catalog: &Catalog, q: &ReadQuery, from: &Cursor) -> Vec<Gap> {
    let mut out = Vec::new();
    for (&o, om) in &catalog.origins {
        let c = from.get(o);
        if om.max_trimmed_seq <= c || q.reach(o, u64::MAX) <= c {
            continue;
        }
        for (topic, streams) in &catalog.streams {
            if let Some(s) = streams.get(&o)
                && s.trimmed_origin_seq > c
                && q.topics.matches(topic)
            {
                out.push(Gap {
                    topic: topic.clone(),
                    origin: o,
                    after_origin_seq: c,
                    through_origin_seq: s.trimmed_origin_seq,
                    through_stream_seq: s.trimmed_seq,
                });
            }
        }
    }
    out
}
