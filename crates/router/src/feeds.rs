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
    /// Peers whose pull is up to date: its last answer reached the end of
    /// the peer's log and the pull goes on, so this node's watermark for
    /// the peer trails it by at most one long poll.
    current: Mutex<std::collections::HashSet<NodeId>>,
    /// Origins this node holds whole from a position on (it replicates
    /// them): every message of theirs after it, up to the watermark.
    full: Mutex<HashMap<NodeId, u64>>,
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
            current: Mutex::new(std::collections::HashSet::new()),
            full: Mutex::new(HashMap::new()),
        })
    }

    /// Whether everything of `patterns` from `origin` after `after` is
    /// held, as far as earlier catch-ups tell.
    fn held_from(&self, patterns: &[String], origin: NodeId, after: u64) -> bool {
        if self
            .full
            .lock()
            .get(&origin)
            .is_some_and(|&from| from <= after)
        {
            return true;
        }
        let caught = self.caught_up.lock();
        patterns.iter().all(|p| {
            caught
                .get(p)
                .and_then(|o| o.get(&origin))
                .is_some_and(|&from| from <= after)
        })
    }

    /// Records that this node holds every message of `origin` after
    /// `after` (its replica pull goes on from there).
    fn record_full(&self, origin: NodeId, after: u64) {
        let mut full = self.full.lock();
        let from = full.entry(origin).or_insert(after);
        *from = (*from).min(after);
    }

    /// This node no longer copies `origin`'s whole log from now on.
    pub(crate) fn drop_full(&self, origin: NodeId) {
        self.full.lock().remove(&origin);
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
            for p in gone {
                caught.remove(p);
            }
        }
        // The version moves only when a pattern is added: a pull asked for
        // with patterns since removed may still be applied (it holds more
        // than needed, never less), so subscribers leaving neither cancel
        // nor discard pulls. The next pull asks without them.
    }
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
    if req.from != 0 && req.until == 0 && req.patterns.iter().eq(WHOLE_LOG.iter()) {
        progress.record(NodeId(req.from), req.after);
    }
    if req.limit == 0 {
        // Only the head: where this node's own log ends now.
        let head = store.held_through(local);
        return Ok(FeedResponse {
            origin: local.0,
            through: head,
            messages: Vec::new(),
            trimmed: Vec::new(),
            head,
        });
    }
    // A catch-up also learns what this node removed by retention.
    let trimmed: Vec<(String, u64, u64)> = if req.until == 0 {
        Vec::new()
    } else {
        store
            .trimmed_after(&q.topics, local, req.after)
            .into_iter()
            .map(|t| (t.topic.as_str().to_owned(), t.stream_seq, t.origin_seq))
            .collect()
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
                messages: messages
                    .iter()
                    .map(|m| WireMessage::from_message(m))
                    .collect(),
                trimmed,
                head: store.held_through(local),
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
                });
            }
        }
    }
}

/// Answers a catch-up for another origin's log (that origin is down or
/// unreachable for the asking node): what this node holds of exactly the
/// request's patterns from that origin, after `after`, up to `until`. When
/// this node does not hold that range completely (it did not follow the
/// same patterns from there on), it answers no progress (`through` equal to
/// `after`), and the asking node tries another source.
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
    };
    if until <= req.after || !interest.holds(&q.topics, origin, req.after) {
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
    let trimmed = store
        .trimmed_after(&q.topics, origin, req.after)
        .into_iter()
        .map(|t| (t.topic.as_str().to_owned(), t.stream_seq, t.origin_seq))
        .collect();
    Ok(FeedResponse {
        origin: origin.0,
        through,
        messages: messages
            .iter()
            .map(|m| WireMessage::from_message(m))
            .collect(),
        trimmed,
        head,
    })
}

/// Fetches the messages of `topics` with origin sequences after `from` up
/// to `held` (this node's watermarks when the topics entered its interest)
/// that this node does not hold because it did not follow those topics
/// then, so a reader starting at `from` misses none of them. Later messages
/// come through the pulls. Each origin's range comes from the origin when
/// it is a live peer; otherwise from any live peer that holds it (a peer
/// answers for another origin only what it holds of exactly these
/// patterns). Bounded by [`CATCH_UP_TIME`]; a range no node gives in time
/// is not recorded as held, so readers hold that origin back. The caller
/// keeps `topics` in the interest throughout (it holds their
/// [`InterestGuard`]); a range an earlier catch-up of the same patterns
/// already fetched is not fetched again.
pub(crate) async fn catch_up(
    store: &Arc<Store>,
    interest: &Arc<Interest>,
    cluster: &Cluster,
    topics: &TopicSet,
    from: &Cursor,
    held: &BTreeMap<NodeId, u64>,
) {
    let deadline = tokio::time::Instant::now() + CATCH_UP_TIME;
    let patterns = pattern_names(topics);
    let local = store.node_id();
    let peers = cluster.peers();
    let mut fetches = tokio::task::JoinSet::new();
    for (&origin, &until) in held {
        let after = from.get(origin);
        if origin == local || after >= until || interest.held_from(&patterns, origin, after) {
            continue;
        }
        // The origin itself, or else every live peer in turn.
        let sources: Vec<(String, bool)> = match peers.iter().find(|(n, _)| *n == origin.0) {
            Some((_, addr)) => vec![(addr.clone(), false)],
            None => peers.iter().map(|(_, a)| (a.clone(), true)).collect(),
        };
        if sources.is_empty() {
            continue;
        }
        let fetch = Fetch {
            store: store.clone(),
            client: cluster.client().clone(),
            topics: topics.clone(),
            patterns: patterns.clone(),
            origin,
            after,
            until,
            deadline,
        };
        fetches.spawn(fetch.run(sources));
    }
    while let Some(r) = fetches.join_next().await {
        match r {
            Ok(Ok((origin, after, n))) => {
                interest.record_caught_up(&patterns, origin, after);
                if n > 0 {
                    tracing::debug!(%origin, messages = n, "caught up with older messages of another origin");
                }
            }
            Err(_) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "catching up with another origin's older messages failed")
            }
        }
    }
}

/// One origin's range of a catch-up.
struct Fetch {
    store: Arc<Store>,
    client: switchyard_cluster::transport::PeerClient,
    topics: TopicSet,
    patterns: Vec<String>,
    origin: NodeId,
    after: u64,
    until: u64,
    deadline: tokio::time::Instant,
}

impl Fetch {
    /// Fetches the range from `sources` in turn (address, and whether it is
    /// another node than the origin), going on from where the last one
    /// stopped; the origin, the first message and the count stored, or why
    /// no source gave all of it.
    async fn run(self, sources: Vec<(String, bool)>) -> Result<(NodeId, u64, usize), String> {
        let mut pos = self.after;
        let mut stored = 0;
        // What was removed by retention, as the first answer (from
        // `after`) reports it.
        let mut trims: Option<Vec<OriginTrim>> = None;
        let mut last_error = String::from("no source");
        for (addr, relayed) in sources {
            while pos < self.until {
                match self.step(&addr, relayed, pos, &mut trims).await {
                    Ok((through, n)) => {
                        stored += n;
                        pos = through;
                    }
                    Err(e) => {
                        last_error = e;
                        break;
                    }
                }
            }
            if pos >= self.until {
                return Ok((self.origin, self.after, stored));
            }
        }
        Err(format!(
            "origin {} from {pos} to {}: {last_error}",
            self.origin, self.until
        ))
    }

    /// One request to `addr`: the position reached and the messages stored.
    async fn step(
        &self,
        addr: &str,
        relayed: bool,
        pos: u64,
        trims: &mut Option<Vec<OriginTrim>>,
    ) -> Result<(u64, usize), String> {
        let req = FeedRequest {
            patterns: self.patterns.clone(),
            after: pos,
            until: self.until,
            limit: FEED_LIMIT,
            wait_ms: 0,
            origin: if relayed { self.origin.0 } else { 0 },
            from: 0,
        };
        let left = self
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        let resp = self
            .client
            .feed(addr, &req, left)
            .await
            .map_err(|e| e.to_string())?;
        if resp.origin != self.origin.0 || resp.through <= pos {
            return Err(format!("{addr} does not hold the range"));
        }
        let mut messages = Vec::with_capacity(resp.messages.len());
        for m in resp.messages {
            messages.push(
                m.into_message(self.origin)
                    .ok_or_else(|| "a message with an invalid topic".to_owned())?,
            );
        }
        let trims = trims.get_or_insert_with(|| {
            resp.trimmed
                .iter()
                .filter_map(|(t, stream_seq, origin_seq)| {
                    Some(OriginTrim {
                        topic: t.parse().ok()?,
                        stream_seq: *stream_seq,
                        origin_seq: *origin_seq,
                    })
                })
                .collect()
        });
        let through = resp.through.min(self.until);
        let complete = (through >= self.until).then(|| (self.topics.clone(), trims.clone()));
        let n = self
            .store
            .fill(self.origin, messages, self.after, through, complete)
            .await
            .map_err(|e| e.to_string())?;
        Ok((through, n))
    }
}

/// Moves `cursor` (a `from=latest` start) past what each live peer has
/// published so far, asking the peers for the heads of their logs (a feed
/// request with limit 0). Without it, a node that followed none of a
/// peer's topics for a while would still hold that peer's older messages
/// as new: its watermark for the peer stands where its interest ended. A
/// peer that does not answer within [`HEAD_WAIT`] is left as it is. A peer
/// whose pull is current (see `Interest::current`) is not asked: the
/// watermark for it already is its head, less one long poll at most.
pub(crate) async fn past_peer_heads(
    interest: &Interest,
    cluster: &Cluster,
    topics: &TopicSet,
    cursor: &mut Cursor,
) {
    for (node, head) in peer_heads(cluster, topics, |peer| interest.is_current(peer)).await {
        cursor.advance(node, head);
    }
}

/// Waits, at most `within`, until this node holds every live peer's
/// messages of `topics` up to the peer's head as it is now: the pulls,
/// which follow `topics` once they are in the interest, have passed it. A
/// pull answers from what the node holds; without this wait it would miss
/// a peer's messages that the pulls have not brought yet, where a stream
/// would simply deliver them a moment later. A peer that does not tell
/// its head within [`HEAD_WAIT`], or whose messages do not arrive in time,
/// is left out (its messages come with a later pull).
pub(crate) async fn await_peer_heads(
    store: &Store,
    interest: &Interest,
    cluster: &Cluster,
    topics: &TopicSet,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    // A peer whose pull is current needs no wait: this node's watermark
    // for it trails its head by one long poll at most.
    let heads = peer_heads(cluster, topics, |peer| interest.is_current(peer)).await;
    let mut changes = store.changes();
    loop {
        let behind: Vec<NodeId> = heads
            .iter()
            .filter(|(node, head)| store.held_through(*node) < *head)
            .map(|(node, _)| *node)
            .collect();
        if behind.is_empty() {
            return;
        }
        changes.borrow_and_update();
        tokio::select! {
            _ = changes.changed() => {}
            // The watermark also moves without new messages of interest.
            () = tokio::time::sleep(HELD_POLL) => {}
            () = tokio::time::sleep_until(deadline) => {
                tracing::debug!(peers = ?behind, "a pull answers without peers' newest messages");
                return;
            }
        }
    }
}

/// The heads of the live peers' logs (a feed request with limit 0 each,
/// in parallel), except those `skip` names. A peer that does not answer
/// within [`HEAD_WAIT`] is left out.
async fn peer_heads(
    cluster: &Cluster,
    topics: &TopicSet,
    skip: impl Fn(NodeId) -> bool,
) -> Vec<(NodeId, u64)> {
    let patterns: Vec<String> = topics
        .patterns()
        .iter()
        .map(|p| p.as_str().to_owned())
        .collect();
    let mut asks = tokio::task::JoinSet::new();
    for (node, addr) in cluster.peers() {
        if skip(NodeId(node)) {
            continue;
        }
        let req = FeedRequest {
            patterns: patterns.clone(),
            after: 0,
            until: 0,
            limit: 0,
            wait_ms: 0,
            origin: 0,
            from: 0,
        };
        let client = cluster.client().clone();
        asks.spawn(async move {
            let r = client.feed(&addr, &req, HEAD_WAIT).await;
            (node, r)
        });
    }
    let mut heads = Vec::new();
    while let Some(r) = asks.join_next().await {
        match r {
            Ok((node, Ok(resp))) if resp.origin == node => heads.push((NodeId(node), resp.through)),
            Ok((node, Ok(_))) => {
                tracing::warn!(peer = %NodeId(node), "a peer answered for another origin")
            }
            Ok((node, Err(e))) => {
                tracing::debug!(peer = %NodeId(node), error = %e, "no head from a peer")
            }
            Err(_) => {}
        }
    }
    heads
}

/// The pull loop for one peer.
pub(crate) struct Pull {
    pub(crate) store: Arc<Store>,
    pub(crate) interest: Arc<Interest>,
    pub(crate) cluster: Cluster,
    pub(crate) peer: NodeId,
    pub(crate) addr: String,
    /// This node replicates the peer: it copies the peer's whole log, not
    /// only the topics of the interest.
    pub(crate) replica: bool,
}

/// The patterns of a whole log: every topic, the system's included.
const WHOLE_LOG: [&str; 3] = [">", "$sys.>", "$dlq.>"];

fn whole_log() -> TopicSet {
    TopicSet::new(
        WHOLE_LOG
            .iter()
            .filter_map(|p| p.parse::<TopicPattern>().ok())
            .collect(),
    )
}

impl Pull {
    /// Pulls from the peer until the task is aborted. A replica first
    /// copies the peer's log up to where it holds it (a catch-up of the
    /// whole log), then pulls the whole log from there on.
    pub(crate) async fn run(self) {
        if self.replica {
            self.backfill().await;
        }
        self.interest.set_current(self.peer, false);
        let mut version = self.interest.version.subscribe();
        let mut backoff = Duration::from_millis(100);
        loop {
            let (ver, mut patterns) = self.interest.snapshot();
            version.borrow_and_update();
            if self.replica {
                patterns = WHOLE_LOG.iter().map(|p| (*p).to_owned()).collect();
            }
            if patterns.is_empty() {
                self.interest.set_current(self.peer, false);
                if version.changed().await.is_err() {
                    return;
                }
                continue;
            }
            let req = FeedRequest {
                patterns,
                after: self.store.held_through(self.peer),
                until: 0,
                limit: FEED_LIMIT,
                wait_ms: FEED_WAIT.as_millis() as u32,
                origin: 0,
                from: self.store.node_id().0,
            };
            let answer = tokio::select! {
                r = self.cluster.client().feed(&self.addr, &req, FEED_WAIT * 2) => r,
                _ = version.changed() => continue,
            };
            let failure = match answer {
                Ok(resp) => {
                    let caught_up = resp.through >= resp.head;
                    match self.apply(ver, resp).await {
                        Ok(applied) => {
                            // A batch asked for with other patterns says
                            // nothing about the patterns followed now.
                            self.interest.set_current(self.peer, applied && caught_up);
                            backoff = Duration::from_millis(100);
                            continue;
                        }
                        Err(e) => e,
                    }
                }
                Err(e) => e.to_string(),
            };
            self.interest.set_current(self.peer, false);
            tracing::debug!(peer = %self.peer, addr = %self.addr, error = %failure, "pull failed; retrying");
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = version.changed() => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Copies the peer's whole log up to this node's watermark for it
    /// (taken under the gate, so no narrower batch lands after it), from
    /// the peer, or, when it is unreachable, from any peer that holds it;
    /// retried with backoff until it is complete. Then this node holds the
    /// peer's whole log from its start.
    async fn backfill(&self) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let through = {
                let _gate = self.interest.gate.write().await;
                self.store.held_through(self.peer)
            };
            let all = whole_log();
            if through > 0 {
                let held = BTreeMap::from([(self.peer, through)]);
                catch_up(
                    &self.store,
                    &self.interest,
                    &self.cluster,
                    &all,
                    &Cursor::earliest(),
                    &held,
                )
                .await;
            }
            if through == 0 || self.interest.holds(&all, self.peer, 0) {
                self.interest.record_full(self.peer, 0);
                tracing::debug!(peer = %self.peer, through, "replicating a peer's whole log");
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Stores a batch; `false` when it was asked for with other patterns
    /// than those followed now (it is asked for again).
    async fn apply(&self, ver: u64, resp: FeedResponse) -> Result<bool, String> {
        if resp.origin != self.peer.0 {
            return Err(format!("answered for origin {:016x}", resp.origin));
        }
        let mut messages = Vec::with_capacity(resp.messages.len());
        for m in resp.messages {
            messages.push(
                m.into_message(self.peer)
                    .ok_or_else(|| "a message with an invalid topic".to_owned())?,
            );
        }
        let _gate = self.interest.gate.read().await;
        // A replica's batch covers the whole log, whatever the interest.
        if !self.replica && *self.interest.version.borrow() != ver {
            // Asked for with other patterns: ask again.
            return Ok(false);
        }
        self.store
            .ingest(self.peer, messages, resp.through)
            .await
            .map(|_| true)
            .map_err(|e| e.to_string())
    }
}
