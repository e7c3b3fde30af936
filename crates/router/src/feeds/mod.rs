//! Cross-node delivery: each node pulls from every live peer the peer's own
//! messages whose topics its subscribers and groups want, and stores them
//! under their origin (the peer), so local readers see them like local
//! messages and cursors stay valid on every node.
//!
//! Interest is the set of patterns of open subscriptions and running
//! groups. A subscription registers its patterns and resolves its start
//! position under the interest gate's write lock; a pull applies a batch
//! under the read lock and only if no pattern was added since the batch
//! was asked for. So a batch asked for with the old patterns never moves
//! this node's watermark for a peer past messages of a new pattern: the
//! next pull asks for them from the watermark on. Removing a pattern moves
//! nothing: a batch that also covers a pattern no longer wanted holds more
//! than needed, never less.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use switchyard_cluster::Cluster;
use switchyard_cluster::transport::{FeedRequest, FeedResponse, WireMessage};
use switchyard_model::{Cursor, NodeId, TopicPattern, TopicSet};
use switchyard_store::{OriginTrim, ReadQuery, Store};
use tokio::sync::{RwLock, watch};

use crate::RouterError;

mod catch_up;
mod check;
mod pull;
pub(crate) use catch_up::{await_peer_heads, catch_up, discover, past_peer_heads};
pub(crate) use pull::Pull;
use pull::{WHOLE_LOG, whole_log};

/// Most messages per feed answer.
pub const FEED_LIMIT: u32 = 1024;
/// Most payload bytes per feed answer (at least one message is sent).
const FEED_BYTES: usize = 4 * 1024 * 1024;
/// Longest a peer waits for new messages before answering.
const FEED_WAIT: Duration = Duration::from_secs(5);
/// Most patterns in one feed request.
const MAX_FEED_PATTERNS: usize = 4096;
/// Longest a `from=latest` start waits for a peer's head.
const HEAD_WAIT: Duration = Duration::from_secs(1);
/// How often a pull waiting for peers' messages looks at the watermarks.
const HELD_POLL: Duration = Duration::from_millis(20);
/// Longest a pull waits for the peers' newest messages (see
/// [`await_peer_heads`]).
pub const PULL_CATCH_UP: Duration = Duration::from_secs(5);
/// Longest a reader waits for older messages from peers before it starts.
pub const CATCH_UP_TIME: Duration = Duration::from_secs(10);

/// How often a peer whose feed answers are refused is warned of in the
/// log, at most.
const REFUSAL_WARN_EVERY: Duration = Duration::from_secs(60);

/// Asks the peer `peer` at `addr` for a feed and checks what the answer
/// claims (see [`check`]) before anything of it is used: an answer that
/// fails is refused as a whole, counted (`refused_feed_answers`) and
/// logged at warn once per peer per [`REFUSAL_WARN_EVERY`].
pub(crate) async fn checked_feed(
    cluster: &Cluster,
    peer: u64,
    addr: &str,
    req: &FeedRequest,
    timeout: Duration,
) -> Result<FeedResponse, String> {
    let resp = cluster
        .client()
        .feed(addr, req, timeout)
        .await
        .map_err(|e| e.to_string())?;
    if let Err(v) = check::check_answer(peer, req, &resp) {
        cluster.stats().http.refused_feed_answer();
        warn_refused(addr, &v);
        return Err(format!("refused the feed answer of {addr}: {v}"));
    }
    Ok(resp)
}

/// Logs a refused feed answer at warn, once per address per interval.
fn warn_refused(addr: &str, why: &check::Violation) {
    static WARNED: std::sync::LazyLock<Mutex<HashMap<String, tokio::time::Instant>>> =
        std::sync::LazyLock::new(Default::default);
    let now = tokio::time::Instant::now();
    let mut warned = WARNED.lock();
    if warned.len() > 1024 {
        warned.retain(|_, t| now.duration_since(*t) < REFUSAL_WARN_EVERY);
    }
    match warned.get(addr) {
        Some(t) if now.duration_since(*t) < REFUSAL_WARN_EVERY => {
            tracing::debug!(peer = %addr, reason = %why, "refused a peer's feed answer");
        }
        _ => {
            warned.insert(addr.to_owned(), now);
            tracing::warn!(peer = %addr, reason = %why, "refused a peer's feed answer; nothing of it is stored (further refusals of this peer's answers are logged at debug for a minute)");
        }
    }
}

/// Origin sequences `(from, to]`.
type Range = (u64, u64);

/// The patterns this node's subscribers and groups want.
pub(crate) struct Interest {
    patterns: Mutex<BTreeMap<String, usize>>,
    version: watch::Sender<u64>,
    /// Write: registering interest and resolving a start. Read: applying a pull.
    pub gate: RwLock<()>,
    /// Per pattern and origin, the lowest origin sequence from which a
    /// catch-up fetched everything of the pattern: with the pulls since
    /// (the pattern has stayed in the interest; the entry goes when the
    /// pattern leaves), the node holds all of it from there on, and a
    /// later catch-up from there or after needs no fetch.
    caught_up: Mutex<HashMap<String, HashMap<NodeId, u64>>>,
    /// Per pattern and origin, a range of origin sequences `(from, to]` of
    /// which a catch-up fetched everything of the pattern, though it could
    /// not fetch on to the watermark (no live node held the rest): readers
    /// may read up to `to`, and a later catch-up goes on from there.
    partial: Mutex<HashMap<String, HashMap<NodeId, Range>>>,
    /// Peers whose pull is up to date: its last answer reached the end of
    /// the peer's log and the pull goes on, so this node's watermark for
    /// the peer trails it by at most one long poll.
    current: Mutex<std::collections::HashSet<NodeId>>,
    /// Origins this node holds whole from a position on (it replicates
    /// them): every message of theirs after it, up to the watermark.
    full: Mutex<HashMap<NodeId, u64>>,
    /// Origins that are not live members but whose whole log a live peer
    /// holds, as the peers' head answers tell: the peer's address and how
    /// far it holds the log. Their logs are pulled through that peer.
    orphans: Mutex<HashMap<NodeId, (String, u64)>>,
    /// Told when an origin enters `orphans`.
    pub(crate) orphans_found: tokio::sync::Notify,
}

fn pattern_names(topics: &TopicSet) -> Vec<String> {
    topics
        .patterns()
        .iter()
        .map(|p| p.as_str().to_owned())
        .collect()
}

/// Keeps patterns in the interest while it lives.
pub(crate) struct InterestGuard {
    interest: Arc<Interest>,
    patterns: Vec<String>,
}

impl Interest {
    pub fn new() -> Arc<Interest> {
        Arc::new(Interest {
            patterns: Mutex::new(BTreeMap::new()),
            version: watch::channel(0).0,
            gate: RwLock::new(()),
            caught_up: Mutex::new(HashMap::new()),
            partial: Mutex::new(HashMap::new()),
            current: Mutex::new(std::collections::HashSet::new()),
            full: Mutex::new(HashMap::new()),
            orphans: Mutex::new(HashMap::new()),
            orphans_found: tokio::sync::Notify::new(),
        })
    }

    /// Records that the live peer at `addr` holds the whole log of
    /// `origin`, which is not a live member, through `through`; the peer
    /// that holds the most is kept.
    fn record_orphan(&self, origin: NodeId, addr: &str, through: u64) {
        let mut orphans = self.orphans.lock();
        let fresh = !orphans.contains_key(&origin);
        let e = orphans
            .entry(origin)
            .or_insert_with(|| (addr.to_owned(), through));
        if through > e.1 {
            *e = (addr.to_owned(), through);
        }
        drop(orphans);
        if fresh {
            self.orphans_found.notify_one();
        }
    }

    /// The origins gone from the membership whose logs live peers hold:
    /// origin, the holding peer's address, how far it holds the log.
    /// Those that are `live` again or whose holder is not are forgotten.
    pub(crate) fn orphans(&self, live: &HashMap<u64, String>) -> Vec<(NodeId, String, u64)> {
        let mut orphans = self.orphans.lock();
        orphans.retain(|o, (addr, _)| !live.contains_key(&o.0) && live.values().any(|a| a == addr));
        orphans
            .iter()
            .map(|(o, (a, t))| (*o, a.clone(), *t))
            .collect()
    }

    /// How far everything of `patterns` from `origin` after `after` is
    /// held, as far as earlier catch-ups tell: `None` when all of it is
    /// (on to the watermark and with the pulls beyond), else the origin
    /// sequence through which it is (`after` when nothing is known).
    fn reach_names(&self, patterns: &[String], origin: NodeId, after: u64) -> Option<u64> {
        let full = self.full.lock().get(&origin).copied();
        if full.is_some_and(|from| from <= after) {
            return None;
        }
        let caught = self.caught_up.lock();
        let partial = self.partial.lock();
        let mut reach: Option<u64> = None;
        for p in patterns {
            let from = match (full, caught.get(p).and_then(|o| o.get(&origin))) {
                (Some(a), Some(&b)) => Some(a.min(b)),
                (a, b) => a.or(b.copied()),
            };
            if from.is_some_and(|from| from <= after) {
                continue;
            }
            let to = match partial.get(p).and_then(|o| o.get(&origin)) {
                Some(&(a, b)) if a <= after && b > after => b,
                _ => return Some(after),
            };
            if from.is_some_and(|from| from <= to) {
                continue;
            }
            reach = Some(reach.map_or(to, |r| r.min(to)));
        }
        reach
    }

    /// Whether everything of `patterns` from `origin` after `after` is
    /// held, as far as earlier catch-ups tell.
    fn held_from(&self, patterns: &[String], origin: NodeId, after: u64) -> bool {
        self.reach_names(patterns, origin, after).is_none()
    }

    /// How far this node holds every message of `topics` from `origin`
    /// after `after`: `None` when it holds all of them, else the origin
    /// sequence through which it does (see [`Interest::reach_names`]).
    pub(crate) fn reach(&self, topics: &TopicSet, origin: NodeId, after: u64) -> Option<u64> {
        self.reach_names(&pattern_names(topics), origin, after)
    }

    /// The limits to read the origins of `behind` up to, for a reader of
    /// `topics` at `cursor` (see [`ReadQuery::hold`]).
    pub(crate) fn hold_limits<'a>(
        &self,
        topics: &TopicSet,
        cursor: &Cursor,
        behind: impl IntoIterator<Item = &'a NodeId>,
    ) -> BTreeMap<NodeId, u64> {
        let patterns = pattern_names(topics);
        behind
            .into_iter()
            .map(|&o| {
                let at = cursor.get(o);
                (o, self.reach_names(&patterns, o, at).unwrap_or(at))
            })
            .collect()
    }

    /// Records that this node holds every message of `origin` after
    /// `after` (its replica pull goes on from there).
    fn record_full(&self, origin: NodeId, after: u64) {
        let mut full = self.full.lock();
        let from = full.entry(origin).or_insert(after);
        *from = (*from).min(after);
    }

    /// This node no longer copies `origin`'s whole log from now on. What
    /// catch-ups of the whole log recorded goes too: the whole-log
    /// patterns are not in the interest, so those records would otherwise
    /// outlive the pull that kept them complete, and a later backfill
    /// would take the log for held while it misses what came meanwhile.
    pub(crate) fn drop_full(&self, origin: NodeId) {
        self.full.lock().remove(&origin);
        let mut caught = self.caught_up.lock();
        let mut partial = self.partial.lock();
        for p in WHOLE_LOG {
            if let Some(o) = caught.get_mut(p) {
                o.remove(&origin);
            }
            if let Some(o) = partial.get_mut(p) {
                o.remove(&origin);
            }
        }
    }

    /// Whether this node holds `origin`'s whole log from some position on.
    pub(crate) fn has_full(&self, origin: NodeId) -> bool {
        self.full.lock().contains_key(&origin)
    }

    /// Takes back the whole-log records the store kept across a restart
    /// (see [`persist_full`]).
    pub(crate) fn restore_full(&self, store: &Store) {
        match store.whole_logs() {
            Ok(records) => {
                for (origin, from) in records {
                    self.record_full(origin, from);
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read the whole-log records"),
        }
    }

    fn set_current(&self, peer: NodeId, current: bool) {
        let mut set = self.current.lock();
        if current {
            set.insert(peer);
        } else {
            set.remove(&peer);
        }
    }

    fn is_current(&self, peer: NodeId) -> bool {
        self.current.lock().contains(&peer)
    }

    /// Whether this node holds every message of `topics` from `origin`
    /// after `after`, as the catch-ups and the pulls since tell.
    pub(crate) fn holds(&self, topics: &TopicSet, origin: NodeId, after: u64) -> bool {
        self.held_from(&pattern_names(topics), origin, after)
    }

    /// The origins (other than `local`) whose messages of `topics` between
    /// `from` and the watermark in `held` this node may not hold: no
    /// catch-up or pull covers that range. Each with the position in it
    /// and the watermark.
    pub(crate) fn not_held(
        &self,
        local: NodeId,
        topics: &TopicSet,
        from: &Cursor,
        held: &BTreeMap<NodeId, u64>,
    ) -> BTreeMap<NodeId, (u64, u64)> {
        held.iter()
            .map(|(&origin, &through)| (origin, (from.get(origin), through)))
            .filter(|&(origin, (after, through))| {
                origin != local && through > after && !self.holds(topics, origin, after)
            })
            .collect()
    }

    /// Records that, from the watermarks `held` on, the pulls bring every
    /// message of `topics` (in the interest now) from each origin.
    pub(crate) fn record_held(&self, topics: &TopicSet, held: &BTreeMap<NodeId, u64>) {
        let patterns = pattern_names(topics);
        for (&origin, &through) in held {
            self.record_caught_up(&patterns, origin, through);
        }
    }

    /// Records a catch-up of `patterns` from `origin` that fetched
    /// everything in `(after, to]` but could not go on to the watermark.
    /// A range that meets the one held is joined to it; otherwise the
    /// later one is kept.
    fn record_partial(&self, patterns: &[String], origin: NodeId, after: u64, to: u64) {
        if to <= after {
            return;
        }
        let mut partial = self.partial.lock();
        for p in patterns {
            let range = partial
                .entry(p.clone())
                .or_default()
                .entry(origin)
                .or_insert((after, to));
            if after <= range.1 && range.0 <= to {
                *range = (range.0.min(after), range.1.max(to));
            } else if to > range.1 {
                *range = (after, to);
            }
        }
    }

    /// Records a complete catch-up of `patterns` from `origin` after `after`.
    fn record_caught_up(&self, patterns: &[String], origin: NodeId, after: u64) {
        let mut caught = self.caught_up.lock();
        for p in patterns {
            let from = caught
                .entry(p.clone())
                .or_default()
                .entry(origin)
                .or_insert(after);
            *from = (*from).min(after);
        }
    }

    /// Adds `topics`; the version moves when a pattern is new.
    pub fn add(self: &Arc<Self>, topics: &TopicSet) -> InterestGuard {
        let patterns: Vec<String> = topics
            .patterns()
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect();
        let mut map = self.patterns.lock();
        let mut new = false;
        for p in &patterns {
            let n = map.entry(p.clone()).or_insert(0);
            new |= *n == 0;
            *n += 1;
        }
        drop(map);
        if new {
            // No pull is current for the new patterns until one asked with
            // them reaches the end of its peer's log.
            self.current.lock().clear();
            self.version.send_modify(|v| *v += 1);
        }
        InterestGuard {
            interest: self.clone(),
            patterns,
        }
    }

    /// The version and the patterns.
    fn snapshot(&self) -> (u64, Vec<String>) {
        let map = self.patterns.lock();
        (*self.version.borrow(), map.keys().cloned().collect())
    }
}

impl Drop for InterestGuard {
    fn drop(&mut self) {
        let mut map = self.interest.patterns.lock();
        let mut gone = Vec::new();
        for p in &self.patterns {
            if let Some(n) = map.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    map.remove(p);
                    gone.push(p);
                }
            }
        }
        drop(map);
        if !gone.is_empty() {
            // No longer pulled: what a catch-up fetched stops being complete.
            let mut caught = self.interest.caught_up.lock();
            let mut partial = self.interest.partial.lock();
            for p in gone {
                caught.remove(p);
                partial.remove(p);
            }
        }
        // The version moves only when a pattern is added: a pull asked for
        // with patterns since removed may still be applied (it holds more
        // than needed, never less), so subscribers leaving neither cancel
        // nor discard pulls. The next pull asks without them.
    }
}

/// Keeps, durably, whether this node holds `origin`'s whole log (and from
/// where), as `interest` says when the write runs, so that a restart does
/// not forget it: a node that held a dead origin's log and forgot it
/// could neither serve that log nor let other nodes copy it. In the
/// background; a failure is logged. Each write records the state at its
/// own time, so writes that run out of order still leave the last state.
pub(crate) fn persist_full(store: &Arc<Store>, interest: &Arc<Interest>, origin: NodeId) {
    let (store, interest) = (store.clone(), interest.clone());
    // One write at a time, so the last one to run reads the last state.
    static WRITING: Mutex<()> = Mutex::new(());
    tokio::task::spawn_blocking(move || {
        let _one = WRITING.lock();
        let from = interest.full.lock().get(&origin).copied();
        if let Err(e) = store.set_whole_log(origin, from) {
            tracing::warn!(%origin, error = %e, "could not record whether this node holds an origin's whole log");
        }
    });
}

/// Answers a peer's feed request from this node's own origin log: up to
/// the limit of matching messages after `after`, waiting up to the
/// request's wait (at most 5 s) when there are none.
pub(crate) async fn answer(
    store: &Arc<Store>,
    interest: &Interest,
    progress: &crate::replication::Progress,
    req: FeedRequest,
) -> Result<FeedResponse, RouterError> {
    if req.patterns.is_empty() || req.patterns.len() > MAX_FEED_PATTERNS {
        return Err(RouterError::Cluster(format!(
            "a feed asks for 1 to {MAX_FEED_PATTERNS} patterns"
        )));
    }
    let patterns = req
        .patterns
        .iter()
        .map(|p| p.parse::<TopicPattern>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RouterError::Cluster(format!("feed pattern: {e}")))?;
    let q = ReadQuery {
        topics: TopicSet::new(patterns),
        limit: req.limit.clamp(1, FEED_LIMIT) as usize,
        max_bytes: FEED_BYTES,
        hold: Default::default(),
    };
    let local = store.node_id();
    if req.origin != 0 && req.origin != local.0 {
        return answer_for(store, interest, &q, NodeId(req.origin), &req).await;
    }
    // A replica's pull of the whole log: it holds this node's log up to
    // where it asks from.
    // It cannot hold more than there is.
    if req.from != 0
        && req.until == 0
        && req.patterns.iter().eq(WHOLE_LOG.iter())
        && req.after <= store.held_through(local)
    {
        progress.record(NodeId(req.from), req.after);
    }
    if req.limit == 0 {
        // Only the head: where this node's own log ends now.
        let head = store.held_through(local);
        let whole = whole_log();
        let held = store
            .visible()
            .into_iter()
            .filter(|&(o, through)| o != local && through > 0 && interest.holds(&whole, o, 0))
            .map(|(o, through)| (o.0, through))
            .collect();
        return Ok(FeedResponse {
            origin: local.0,
            through: head,
            messages: Vec::new(),
            trimmed: Vec::new(),
            head,
            held,
        });
    }
    // A catch-up also learns what this node removed by retention.
    let trimmed: Vec<(String, u64, u64)> = if req.until == 0 {
        Vec::new()
    } else {
        trims(store, &q.topics, local, req.after)
    };
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(u64::from(req.wait_ms)).min(FEED_WAIT);
    let mut changes = store.changes();
    loop {
        changes.borrow_and_update();
        let (mut messages, mut through) = match store.read_origin_cached(&q, local, req.after) {
            Some(read) => read,
            None => {
                let (s, q2, after) = (store.clone(), q.clone(), req.after);
                tokio::task::spawn_blocking(move || s.read_origin(&q2, local, after))
                    .await
                    .map_err(|_| RouterError::ShuttingDown)??
            }
        };
        if req.until != 0 && through > req.until {
            messages.retain(|m| m.id.seq <= req.until);
            through = req.until.max(req.after);
        }
        if !messages.is_empty() || through > req.after {
            return Ok(FeedResponse {
                origin: local.0,
                through,
                messages: wire(&messages),
                trimmed,
                // The writer adds new messages to the tail just before it
                // moves the watermark: a read in between sees further
                // than the watermark, and the head is never short of what
                // was read (the asking node checks it).
                head: store.held_through(local).max(through),
                held: Vec::new(),
            });
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            _ => {
                return Ok(FeedResponse {
                    origin: local.0,
                    through: req.after,
                    messages: Vec::new(),
                    trimmed,
                    head: store.held_through(local),
                    held: Vec::new(),
                });
            }
        }
    }
}

/// Answers a catch-up for another origin's log (that origin is down or
/// unreachable for the asking node): what this node holds of exactly the
/// request's patterns from that origin, after `after`, up to `until`, or
/// up to where it holds all of them when that is short of `until` (an
/// earlier catch-up of its own got only that far). When it holds none of
/// the range (it did not follow the same patterns from there on), it
/// answers no progress (`through` equal to `after`), and the asking node
/// tries another source for the rest.
async fn answer_for(
    store: &Arc<Store>,
    interest: &Interest,
    q: &ReadQuery,
    origin: NodeId,
    req: &FeedRequest,
) -> Result<FeedResponse, RouterError> {
    let head = store.held_through(origin);
    let until = if req.until == 0 {
        head
    } else {
        req.until.min(head)
    };
    let nothing = FeedResponse {
        origin: origin.0,
        through: req.after,
        messages: Vec::new(),
        trimmed: Vec::new(),
        head,
        held: Vec::new(),
    };
    // Up to where this node holds the range: all of it, or part of it
    // when an earlier catch-up of its own got only that far.
    let until = match interest.reach(&q.topics, origin, req.after) {
        None => until,
        Some(reach) => until.min(reach),
    };
    if until <= req.after {
        return Ok(nothing);
    }
    let (s, q2, after) = (store.clone(), q.clone(), req.after);
    let (mut messages, mut through) =
        tokio::task::spawn_blocking(move || s.read_origin(&q2, origin, after))
            .await
            .map_err(|_| RouterError::ShuttingDown)??;
    if through > until {
        messages.retain(|m| m.id.seq <= until);
        through = until;
    }
    let trimmed = trims(store, &q.topics, origin, req.after);
    Ok(FeedResponse {
        origin: origin.0,
        through,
        messages: wire(&messages),
        trimmed,
        head,
        held: Vec::new(),
    })
}

/// What `store` removed by retention of `origin`'s streams of `topics` past
/// `after`, as a feed answer carries it.
fn trims(store: &Store, topics: &TopicSet, origin: NodeId, after: u64) -> Vec<(String, u64, u64)> {
    store
        .trimmed_after(topics, origin, after)
        .into_iter()
        .map(|t| (t.topic.as_str().to_owned(), t.stream_seq, t.origin_seq))
        .collect()
}

/// Messages in their wire form.
fn wire(messages: &[Arc<switchyard_model::Message>]) -> Vec<WireMessage> {
    messages
        .iter()
        .map(|m| WireMessage::from_message(m))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(patterns: &[&str]) -> TopicSet {
        TopicSet::new(patterns.iter().map(|p| p.parse().unwrap()).collect())
    }

    const O: NodeId = NodeId(7);

    #[test]
    fn nothing_known_is_held_nowhere() {
        let i = Interest::new();
        assert_eq!(i.reach(&topics(&["a.>"]), O, 5), Some(5));
        assert!(!i.holds(&topics(&["a.>"]), O, 5));
    }

    #[test]
    fn a_complete_catch_up_holds_from_its_start_on() {
        let i = Interest::new();
        i.record_caught_up(&["a.>".to_owned()], O, 10);
        assert_eq!(i.reach(&topics(&["a.>"]), O, 10), None);
        assert_eq!(i.reach(&topics(&["a.>"]), O, 50), None);
        assert_eq!(i.reach(&topics(&["a.>"]), O, 9), Some(9));
        // Every pattern must be held.
        assert_eq!(i.reach(&topics(&["a.>", "b.>"]), O, 10), Some(10));
    }

    #[test]
    fn a_partial_catch_up_reads_up_to_where_it_got() {
        let i = Interest::new();
        let a = vec!["a.>".to_owned()];
        i.record_partial(&a, O, 0, 12_280);
        assert_eq!(i.reach(&topics(&["a.>"]), O, 0), Some(12_280));
        assert_eq!(i.reach(&topics(&["a.>"]), O, 100), Some(12_280));
        // At its end nothing more is known.
        assert_eq!(i.reach(&topics(&["a.>"]), O, 12_280), Some(12_280));
        // A second part that meets the first joins it.
        i.record_partial(&a, O, 12_280, 12_281);
        assert_eq!(i.reach(&topics(&["a.>"]), O, 0), Some(12_281));
        // A complete catch-up from its end completes the whole range.
        i.record_caught_up(&a, O, 12_281);
        assert_eq!(i.reach(&topics(&["a.>"]), O, 0), None);
    }

    #[test]
    fn partial_ranges_bound_a_reader_by_the_shortest_pattern() {
        let i = Interest::new();
        i.record_partial(&["a.>".to_owned()], O, 0, 30);
        i.record_partial(&["b.>".to_owned()], O, 0, 20);
        assert_eq!(i.reach(&topics(&["a.>", "b.>"]), O, 0), Some(20));
        // A pattern held whole does not bound it.
        i.record_caught_up(&["b.>".to_owned()], O, 0);
        assert_eq!(i.reach(&topics(&["a.>", "b.>"]), O, 0), Some(30));
        // One pattern with nothing known holds the reader where it is.
        assert_eq!(i.reach(&topics(&["a.>", "c.>"]), O, 3), Some(3));
    }

    #[test]
    fn a_later_range_that_does_not_meet_replaces_the_earlier() {
        let i = Interest::new();
        let a = vec!["a.>".to_owned()];
        i.record_partial(&a, O, 0, 10);
        i.record_partial(&a, O, 40, 50);
        assert_eq!(i.reach(&topics(&["a.>"]), O, 5), Some(5));
        assert_eq!(i.reach(&topics(&["a.>"]), O, 45), Some(50));
        // An empty range records nothing.
        i.record_partial(&a, O, 60, 60);
        assert_eq!(i.reach(&topics(&["a.>"]), O, 60), Some(60));
    }

    #[test]
    fn a_whole_log_held_covers_every_pattern() {
        let i = Interest::new();
        i.record_full(O, 100);
        assert_eq!(i.reach(&topics(&["a.>"]), O, 100), None);
        i.record_partial(&["a.>".to_owned()], O, 0, 100);
        assert_eq!(i.reach(&topics(&["a.>"]), O, 0), None);
    }

    /// Found by the long chaos run of seed 103: a node that replicated an
    /// origin, stopped (a membership change), then replicated it again
    /// took its copy for whole from the start, though it missed what the
    /// origin wrote in between, and served it with holes.
    #[test]
    fn dropping_a_whole_log_forgets_its_catch_ups() {
        let i = Interest::new();
        let whole = whole_log();
        let names: Vec<String> = WHOLE_LOG.iter().map(|p| (*p).to_owned()).collect();
        i.record_caught_up(&names, O, 0);
        i.record_full(O, 0);
        assert!(i.holds(&whole, O, 0));
        i.drop_full(O);
        assert!(!i.holds(&whole, O, 0), "a backfill must fetch again");
        assert_eq!(i.reach(&whole, O, 0), Some(0));
    }

    #[test]
    fn hold_limits_follow_the_reach() {
        let i = Interest::new();
        i.record_partial(&["a.>".to_owned()], O, 0, 12);
        let mut cursor = Cursor::earliest();
        cursor.advance(NodeId(8), 4);
        let limits = i.hold_limits(&topics(&["a.>"]), &cursor, [O, NodeId(8)].iter());
        assert_eq!(limits.get(&O), Some(&12));
        assert_eq!(limits.get(&NodeId(8)), Some(&4));
    }

    #[test]
    fn patterns_leaving_the_interest_forget_their_ranges() {
        let i = Interest::new();
        let guard = i.add(&topics(&["a.>"]));
        i.record_partial(&["a.>".to_owned()], O, 0, 12);
        drop(guard);
        assert_eq!(i.reach(&topics(&["a.>"]), O, 0), Some(0));
    }
}
