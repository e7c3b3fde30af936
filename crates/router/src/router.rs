use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use switchyard_cluster::transport::{FeedRequest, FeedResponse};
use switchyard_cluster::{Cluster, ClusterEvent};
use switchyard_model::{Cursor, Message, NodeId, Timestamp, Topic, TopicSet};
use switchyard_store::{
    Append, Appended, CommitStats, Gap, ReadQuery, Store, StoreConfig, TopicInfo,
};
use tokio::sync::mpsc;

use crate::background::Background;
use crate::feeds::Interest;
use crate::groups::Groups;
use crate::plugins::{Filter, Plugins, PluginsConfig, Routed};
use crate::replication::{Acks, Progress, ReplicationStatus};
use crate::subscription::{Recovery, Subscription};
use crate::{InvalidMessage, RouterError, validate};

/// Default most messages one subscription read returns.
pub const DEFAULT_READ_LIMIT: usize = 256;
/// Default most payload bytes one subscription read returns: a stream
/// reads the log in steps of this size as its connection drains, so a
/// subscriber that does not read holds about this much in the node (and a
/// message larger than it, alone).
pub const DEFAULT_READ_BYTES: usize = 64 * 1024;

/// Most payload bytes one pull answer holds (a pull answers at once; a
/// stream reads in steps of `read_max_bytes` as its connection drains).
pub const PULL_MAX_BYTES: usize = 1024 * 1024;

/// Router settings.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// The store's settings.
    pub store: StoreConfig,
    /// Largest payload accepted, in bytes.
    pub max_payload: usize,
    /// Most messages per subscription read.
    pub read_limit: usize,
    /// Most payload bytes per subscription read.
    pub read_max_bytes: usize,
    /// Plugin engine settings and configured bindings.
    pub plugins: PluginsConfig,
    /// Copies a publish waits for when it does not say (in a cluster with
    /// a replication factor above 1; a single node has one copy).
    pub acks: Acks,
    /// Longest a publish waits for its copies.
    pub ack_timeout: Duration,
}

impl RouterConfig {
    /// Defaults with the store in `path`.
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        RouterConfig {
            store: StoreConfig::new(path),
            max_payload: switchyard_model::limits::DEFAULT_MAX_PAYLOAD,
            read_limit: DEFAULT_READ_LIMIT,
            read_max_bytes: DEFAULT_READ_BYTES,
            plugins: PluginsConfig::default(),
            acks: Acks::default(),
            ack_timeout: crate::replication::DEFAULT_ACK_TIMEOUT,
        }
    }
}

/// One message a client publishes: the store's [`Append`], validated by the
/// router before it reaches the store.
pub type PublishRequest = Append;

/// What became of one published message.
#[derive(Clone, Debug)]
pub struct Published {
    /// The stored messages: one, several when a route plugin rerouted it to
    /// several topics, none when it was dropped.
    pub results: Vec<Appended>,
    /// The topic it was published to, when a route plugin rerouted it.
    pub routed_from: Option<Topic>,
    /// (plugin, reason) when a route plugin dropped it, or a failing
    /// plugin's `drop` policy did.
    pub dropped: Option<(String, String)>,
    /// (plugin, error) when a route plugin failed on it and the binding's
    /// error policy decided what happened.
    pub plugin_error: Option<(String, String)>,
    /// In a replicated cluster, the mode the publish waited for and the
    /// copies of its messages that existed when it was answered.
    pub copies: Option<(Acks, usize)>,
    /// False when the message was stored under an idempotency key that
    /// this node could not check with every member that may hold a copy
    /// (one did not answer, or went away recently): a copy stored there
    /// by an earlier attempt may exist (see the `idempotency` module).
    pub key_checked: bool,
    /// For a repeat answered with a message that only peers hold: how
    /// many of them said so (the copies this node can vouch for).
    pub(crate) held_by_peers: Option<usize>,
}

impl Published {
    fn stored(a: Appended) -> Self {
        Published {
            results: vec![a],
            routed_from: None,
            dropped: None,
            plugin_error: None,
            copies: None,
            key_checked: true,
            held_by_peers: None,
        }
    }
}

/// The answer to a pull.
#[derive(Clone, Debug, Default)]
pub struct Pulled {
    /// Messages in delivery order.
    pub messages: Vec<Arc<Message>>,
    /// The position after them: the next pull's start.
    pub cursor: Cursor,
    /// Ranges retention removed before they could be delivered.
    pub gaps: Vec<Gap>,
    /// Origins whose messages of the pulled topics this node may not hold
    /// and could not fetch (no node that has them was reachable): none of
    /// their messages is in the answer, and `cursor` stays before them.
    pub unavailable: Vec<Unavailable>,
}

/// An origin's messages a pull could not get: see [`Pulled::unavailable`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable {
    /// The origin.
    pub origin: NodeId,
    /// The pull's position in that origin (the cursor stays there).
    pub after_origin_seq: u64,
    /// How far this node knows the origin's log: its messages of the
    /// pulled topics up to here may exist.
    pub through_origin_seq: u64,
}

/// Where a subscription starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// The oldest message still held.
    Earliest,
    /// Only messages published from now on.
    Latest,
    /// Just after a cursor (an SSE `Last-Event-ID`).
    After(Cursor),
    /// The first message at or after a time.
    Time(Timestamp),
}

/// The engine of one node. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    store: Arc<Store>,
    config: Arc<RouterConfig>,
    plugins: Arc<Plugins>,
    groups: Arc<Groups>,
    cluster: Arc<OnceLock<Cluster>>,
    interest: Arc<Interest>,
    background: Arc<Background>,
    /// How far the replicas hold this node's log.
    progress: Arc<Progress>,
    /// Whether [`Router::forward_plugin_logs`] was called.
    log_topics_started: Arc<std::sync::atomic::AtomicBool>,
}

/// Topic of membership events.
pub const CLUSTER_EVENTS_TOPIC: &str = "$sys.cluster";

impl Router {
    /// Opens the store and builds the router. Blocking (recovery reads the
    /// journal).
    pub fn open(config: RouterConfig) -> Result<Router, RouterError> {
        let mut store_config = config.store.clone();
        // Group snapshots keep a bounded history, whatever the operator's
        // rules say.
        store_config
            .retention_rules
            .insert(0, crate::groups::snapshot_retention_rule());
        let store = Arc::new(Store::open(store_config)?);
        let plugins = Arc::new(Plugins::open(
            store.clone(),
            &config.plugins,
            config.max_payload,
        )?);
        let interest = Interest::new();
        interest.restore_full(&store);
        let groups = Arc::new(Groups::open(
            store.clone(),
            plugins.clone(),
            interest.clone(),
        )?);
        Ok(Router {
            store,
            config: Arc::new(config),
            plugins,
            groups,
            cluster: Arc::new(OnceLock::new()),
            interest,
            background: Arc::new(Background::new()),
            progress: Arc::new(Progress::new()),
            log_topics_started: Arc::default(),
        })
    }

    /// The plugin bindings.
    pub fn plugins(&self) -> &Arc<Plugins> {
        &self.plugins
    }

    /// Starts storing every binding's log lines on its topic
    /// `$sys.plugins.<name>.log`, rate-limited (see
    /// [`crate::LOG_TOPIC_LINES_PER_SEC`]), until the router shuts down. A
    /// second call starts nothing more. Needs a Tokio runtime.
    pub fn forward_plugin_logs(&self) {
        if self
            .log_topics_started
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let (plugins, store) = (self.plugins.clone(), self.store.clone());
        self.background
            .spawn(move |stop| crate::plugins::log_topic::run(plugins, store, stop));
    }

    /// Attaches the cluster membership: its changes are published as JSON
    /// events on `$sys.cluster` (`{"event": "joined", "member": {...}}`).
    /// A second call is ignored.
    pub fn attach_cluster(&self, cluster: Cluster, events: mpsc::Receiver<ClusterEvent>) {
        if self.cluster.set(cluster.clone()).is_err() {
            return;
        }
        self.groups.attach_cluster(cluster.clone());
        let groups = self.groups.clone();
        self.background
            .spawn(move |stop| groups.follow_membership(stop));
        let (pulls_tx, pulls) = mpsc::channel(crate::plugins::PULL_QUEUE);
        if self.plugins.pulls.set(pulls_tx).is_ok() {
            let (plugins, cluster) = (self.plugins.clone(), cluster.clone());
            self.background
                .spawn(move |stop| crate::plugins::sync_task(plugins, cluster, pulls, stop));
        }
        let (store, interest) = (self.store.clone(), self.interest.clone());
        self.background.spawn(move |stop| {
            crate::background::cluster_task(store, interest, cluster, events, stop)
        });
    }

    /// Answers a peer's question which idempotency keys this node holds a
    /// message for (node-to-node transport).
    pub fn idempotency_lookup(
        &self,
        req: &switchyard_cluster::transport::IdempotencyLookup,
    ) -> Result<switchyard_cluster::transport::IdempotencyFound, RouterError> {
        crate::idempotency::answer(&self.store, req)
    }

    /// Answers a peer's feed request (node-to-node transport).
    pub async fn feed(&self, req: FeedRequest) -> Result<FeedResponse, RouterError> {
        crate::feeds::answer(&self.store, &self.interest, &self.progress, req).await
    }

    /// The cluster membership, when the node is part of a cluster.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.get()
    }

    /// Before a graceful leave: waits, at most `within`, until every live
    /// replica holds this node's whole log. Returns whether they do (true
    /// at once outside a replicated cluster).
    pub async fn await_replicated(&self, within: Duration) -> bool {
        let Some(cluster) = self.cluster.get() else {
            return true;
        };
        if cluster.replication_factor() < 2 {
            return true;
        }
        let me = self.store.node_id();
        let head = self.store.held_through(me);
        if head == 0 {
            return true;
        }
        let (copies, needed, done) = self
            .progress
            .wait(cluster, me, head, Acks::All, within)
            .await;
        if !done {
            tracing::warn!(
                copies,
                needed,
                "leaving before every replica holds this node's log"
            );
        }
        done
    }

    /// Replication as this node sees it: the factor, each known origin's
    /// replicas and how far they hold its log where this node knows it,
    /// and how many origins lack replicas. `None` outside a cluster.
    pub fn replication_status(&self) -> Option<ReplicationStatus> {
        let cluster = self.cluster.get()?;
        let store = &self.store;
        Some(
            self.progress
                .status(cluster, store.node_id(), |o| store.held_through(o)),
        )
    }

    /// The consumer groups.
    pub fn groups(&self) -> &Arc<Groups> {
        &self.groups
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.store.node_id()
    }

    /// The configuration.
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// Whether the store's engine is behind on its background work, so
    /// that bulk writes should wait (see
    /// [`Store::under_write_pressure`](switchyard_store::Store::under_write_pressure)).
    pub fn under_write_pressure(&self) -> bool {
        self.store.under_write_pressure()
    }

    /// Whether the node accepts publishes (the store is healthy and open)
    /// and its disk answers (no write stalled for
    /// [`switchyard_store::STALLED_AFTER`]).
    pub fn is_ready(&self) -> bool {
        self.store.is_writable() && !self.store.is_stalled()
    }

    /// The store's commits so far: how many, how many were slow, the
    /// slowest (see [`switchyard_store::Store::commit_stats`]).
    pub fn commit_stats(&self) -> CommitStats {
        self.store.commit_stats()
    }

    /// How long the store's commits took.
    pub fn commit_times(&self) -> switchyard_model::histogram::HistogramSnapshot {
        self.store.commit_times()
    }

    /// The storage engine's state (see
    /// [`Store::engine_state`](switchyard_store::Store::engine_state)).
    pub fn engine_state(&self) -> switchyard_store::EngineState {
        self.store.engine_state()
    }

    /// How far this node holds its own log (its last origin sequence).
    pub fn log_head(&self) -> u64 {
        self.store.held_through(self.store.node_id())
    }

    /// Bytes the store takes on disk. May wait behind a sync: call it off
    /// the async workers.
    pub fn disk_bytes(&self) -> Result<u64, RouterError> {
        Ok(self.store.disk_bytes()?)
    }

    /// Validates every message, runs the route plugins that apply, then
    /// appends what they decided atomically and in order. A batch with any
    /// invalid entry is refused entirely ([`RouterError::InvalidBatch`] names
    /// every bad entry); a single message is refused with
    /// [`RouterError::Invalid`]. One [`Published`] per request, in order.
    pub async fn publish(&self, batch: Vec<PublishRequest>) -> Result<Vec<Published>, RouterError> {
        self.publish_with(batch, None).await
    }

    /// [`Router::publish`], waiting for the copies `acks` asks for (the
    /// node's default when `None`). In a cluster with a replication factor
    /// above 1, the answer names the copies reached; when they are too few
    /// after [`RouterConfig::ack_timeout`], the publish fails with
    /// [`RouterError::NotReplicated`] (the messages stay stored and still
    /// replicate).
    pub async fn publish_with(
        &self,
        batch: Vec<PublishRequest>,
        acks: Option<Acks>,
    ) -> Result<Vec<Published>, RouterError> {
        let mut published = self.publish_local(batch).await?;
        let acks = acks.unwrap_or(self.config.acks);
        let Some(cluster) = self.cluster.get() else {
            return Ok(published);
        };
        if cluster.replication_factor() < 2 {
            return Ok(published);
        }
        let me = self.store.node_id();
        let last = published
            .iter()
            .flat_map(|p| &p.results)
            .filter(|a| a.id.origin == me)
            .map(|a| a.id.seq)
            .max();
        let copies = match last {
            Some(seq) if acks != Acks::Local => {
                let timeout = self.config.ack_timeout;
                let (copies, needed, enough) =
                    self.progress.wait(cluster, me, seq, acks, timeout).await;
                if !enough {
                    return Err(RouterError::NotReplicated {
                        acks,
                        copies,
                        needed,
                        timeout_ms: timeout.as_millis() as u64,
                        key_checked: published.iter().all(|p| p.key_checked),
                    });
                }
                copies
            }
            // A retry answered with a message of another origin: held
            // here, the origin and this node have it; found only on peers,
            // the peers that said so do. Fewer than `acks` asks for is not
            // an acknowledgement: this node cannot watch the copies grow,
            // and the holders can (a retry there answers when enough exist).
            _ if published
                .iter()
                .flat_map(|p| &p.results)
                .any(|a| a.id.origin != me) =>
            {
                let copies = published
                    .iter()
                    .filter(|p| p.results.iter().any(|a| a.id.origin != me))
                    .map(|p| p.held_by_peers.unwrap_or(2))
                    .min()
                    .unwrap_or(2);
                let origin = published
                    .iter()
                    .flat_map(|p| &p.results)
                    .map(|a| a.id.origin)
                    .find(|o| *o != me)
                    .unwrap_or(me);
                let needed = crate::replication::needed(cluster, origin, acks);
                if copies < needed {
                    return Err(RouterError::NotReplicated {
                        acks,
                        copies,
                        needed,
                        timeout_ms: 0,
                        key_checked: true,
                    });
                }
                copies
            }
            _ => 1,
        };
        for p in &mut published {
            p.copies = Some((acks, copies));
        }
        Ok(published)
    }

    /// Stores each of `batch` on this node, one [`Published`] each, unless
    /// it repeats a message under the same idempotency key: one this node
    /// holds (the store answers it), or, in a replicated cluster, one a
    /// live peer holds (that message answers it). A key that a peer has on
    /// its way to its log refuses the batch with
    /// [`RouterError::KeyInFlight`]. A keyed message stored new is
    /// `key_checked` only if every member that may hold a copy answered.
    async fn store_once(&self, batch: Vec<Append>) -> Result<Vec<Published>, RouterError> {
        // A repeat of a message that reached another node first. The
        // keys are held as in flight from before the lookup, so that a
        // peer looking for them meanwhile learns of this attempt.
        let keys = batch
            .iter()
            .filter_map(|r| Some((&r.topic, r.idempotency_key.as_deref()?)));
        let _hold = self.cluster.get().map(|_| self.store.hold_keys(keys));
        let (elsewhere, holders, complete) = match self.cluster.get() {
            Some(c) => {
                let l = crate::idempotency::held_elsewhere(&self.store, c, &batch).await;
                if !l.in_flight.is_empty() {
                    let keys = l.in_flight.iter();
                    let keys = keys.filter_map(|i| batch[*i].idempotency_key.clone());
                    return Err(RouterError::KeyInFlight {
                        keys: keys.collect(),
                    });
                }
                (l.found, l.holders, l.complete)
            }
            None => (vec![None; batch.len()], vec![0; batch.len()], true),
        };
        // A keyed message stored new: checked only if the lookup was.
        let keyed: Vec<bool> = batch.iter().map(|r| r.idempotency_key.is_some()).collect();
        let stored = |(a, keyed): (Appended, bool)| {
            let mut p = Published::stored(a);
            p.key_checked = complete || !keyed || p.results.iter().all(|a| a.duplicate);
            p
        };
        if elsewhere.iter().all(Option::is_none) {
            let appended = self.store.append(batch).await?;
            return Ok(appended.into_iter().zip(keyed).map(stored).collect());
        }
        let fresh: Vec<PublishRequest> = batch
            .into_iter()
            .zip(&elsewhere)
            .filter(|(_, e)| e.is_none())
            .map(|(r, _)| r)
            .collect();
        let mut stored_new = if fresh.is_empty() {
            Vec::new()
        } else {
            self.store.append(fresh).await?
        }
        .into_iter();
        Ok(elsewhere
            .into_iter()
            .zip(keyed)
            .zip(holders)
            .filter_map(|((e, k), holders)| match e {
                Some(found) => Some(Published {
                    held_by_peers: Some(holders),
                    ..Published::stored(found)
                }),
                None => stored_new.next().map(|a| stored((a, k))),
            })
            .collect())
    }

    async fn publish_local(
        &self,
        batch: Vec<PublishRequest>,
    ) -> Result<Vec<Published>, RouterError> {
        let bad: Vec<(usize, InvalidMessage)> = batch
            .iter()
            .enumerate()
            .filter_map(|(i, r)| validate(r, self.config.max_payload).err().map(|e| (i, e)))
            .collect();
        if !bad.is_empty() {
            return Err(if batch.len() == 1 {
                RouterError::Invalid(bad.into_iter().next().map(|(_, e)| e).expect("one error"))
            } else {
                RouterError::InvalidBatch(bad)
            });
        }
        if !self.plugins.has_routes() {
            return self.store_once(batch).await;
        }
        let mut routed: Vec<Routed> = Vec::with_capacity(batch.len());
        for r in batch {
            routed.push(self.plugins.route(r).await);
        }
        let appends: Vec<Append> = routed
            .iter()
            .flat_map(|r| r.stored.iter().cloned())
            .collect();
        // Rerouted copies keep the publish's idempotency key, and are
        // checked with the peers under their own topics like any publish.
        let mut stored = if appends.is_empty() {
            Vec::new()
        } else {
            self.store_once(appends).await?
        }
        .into_iter();
        Ok(routed
            .into_iter()
            .map(|r| {
                let each: Vec<Published> = stored.by_ref().take(r.stored.len()).collect();
                Published {
                    key_checked: each.iter().all(|p| p.key_checked),
                    held_by_peers: each.iter().filter_map(|p| p.held_by_peers).min(),
                    results: each.into_iter().flat_map(|p| p.results).collect(),
                    routed_from: r.routed_from,
                    dropped: r.dropped,
                    plugin_error: r.failure,
                    copies: None,
                }
            })
            .collect())
    }

    /// Resolves where a subscription starts into a cursor.
    pub async fn resolve(&self, start: &Start) -> Result<Cursor, RouterError> {
        match start {
            Start::Earliest => Ok(Cursor::earliest()),
            Start::Latest => Ok(self.store.latest()),
            Start::After(c) => Ok(c.clone()),
            Start::Time(ts) => {
                let (store, ts) = (self.store.clone(), *ts);
                tokio::task::spawn_blocking(move || store.cursor_at(ts))
                    .await
                    .map_err(|_| RouterError::ShuttingDown)?
                    .map_err(Into::into)
            }
        }
    }

    /// Follows `topics` from `start`.
    pub async fn subscribe(
        &self,
        topics: TopicSet,
        start: &Start,
    ) -> Result<Subscription, RouterError> {
        // Interest first, then the start: a pull from a peer applied after
        // this cannot skip messages of these patterns (see feeds).
        let interest = self.interest.add(&topics);
        // A time is resolved before the gate: it searches the log on a
        // blocking thread, and a cursor taken from the log is a safe start
        // at any moment (like a `Last-Event-ID`).
        let at_time = match start {
            Start::Time(_) => Some(self.resolve(start).await?),
            _ => None,
        };
        let (cursor, held) = {
            let _gate = self.interest.gate.write().await;
            let cursor = match at_time {
                Some(c) => c,
                None => self.resolve(start).await?,
            };
            (cursor, self.store.visible())
        };
        // From the watermarks on, the pulls bring these topics: batches
        // applied from now on were asked for with them. A live peer this
        // node holds nothing of yet is pulled from its start.
        let mut covered = held.clone();
        if let Some(cluster) = self.cluster.get() {
            for (node, _) in cluster.peers() {
                covered.entry(NodeId(node)).or_insert(0);
            }
        }
        self.interest.record_held(&topics, &covered);
        let mut cursor = cursor;
        if let Some(cluster) = self.cluster.get() {
            if *start == Start::Latest {
                crate::feeds::past_peer_heads(&self.interest, cluster, &topics, &mut cursor).await;
            } else {
                crate::feeds::catch_up(
                    &self.store,
                    &self.interest,
                    cluster,
                    &topics,
                    &cursor,
                    &held,
                )
                .await;
            }
        }
        let query = ReadQuery {
            topics,
            limit: self.config.read_limit,
            max_bytes: self.config.read_max_bytes,
            hold: Default::default(),
        };
        let mut sub = Subscription::new(
            self.store.clone(),
            query,
            cursor,
            *start == Start::Earliest,
            interest,
        );
        if let Some(cluster) = self.cluster.get()
            && *start != Start::Latest
        {
            // An origin whose messages of these topics after the position
            // this node may not hold (the catch-up could not reach a node
            // that has them) is held back: the subscription does not pass
            // over them, and fetches them once the origin is reachable.
            let behind: BTreeMap<NodeId, u64> = self
                .interest
                .not_held(self.store.node_id(), sub.topics(), sub.cursor(), &held)
                .into_iter()
                .map(|(origin, (_, through))| (origin, through))
                .collect();
            if !behind.is_empty() {
                sub.hold_back(
                    behind,
                    Recovery {
                        store: self.store.clone(),
                        interest: self.interest.clone(),
                        cluster: cluster.clone(),
                    },
                );
            }
        }
        Ok(sub)
    }

    /// One bounded read for the pull API: up to `limit` messages after the
    /// start; when there are none, waits up to `wait` for some. A filter
    /// drops or transforms messages as it would for a subscription.
    pub async fn pull(
        &self,
        topics: TopicSet,
        start: &Start,
        limit: usize,
        wait: Duration,
        filter: Option<Filter>,
    ) -> Result<Pulled, RouterError> {
        let mut sub = self.subscribe(topics.clone(), start).await?;
        if let Some(cluster) = self.cluster.get()
            && *start != Start::Latest
        {
            // The subscription caught up with what the pulls had passed;
            // a pull also waits for what they bring after.
            crate::feeds::await_peer_heads(
                &self.store,
                &self.interest,
                cluster,
                &topics,
                crate::feeds::PULL_CATCH_UP,
            )
            .await;
        }
        sub.set_limit(limit);
        sub.set_max_bytes(PULL_MAX_BYTES);
        if let Some(f) = filter {
            sub.set_filter(f);
        }
        let mut d = sub.next_available().await?;
        if d.messages.is_empty()
            && d.gaps.is_empty()
            && !wait.is_zero()
            && let Ok(waited) = tokio::time::timeout(wait, sub.next()).await
        {
            d = waited?;
        }
        Ok(Pulled {
            messages: d.messages,
            cursor: sub.cursor().clone(),
            gaps: d.gaps,
            unavailable: sub.held_back(),
        })
    }

    /// Every topic with its statistics.
    pub fn topics(&self) -> Vec<TopicInfo> {
        self.store.topics()
    }

    /// The cursor after every visible message.
    pub fn latest(&self) -> Cursor {
        self.store.latest()
    }

    /// Stops the background tasks (pulls from peers, cluster events) and
    /// waits for them, then syncs and closes the store on a blocking thread.
    pub async fn shutdown(&self) {
        self.background.stop().await;
        let store = self.store.clone();
        if tokio::task::spawn_blocking(move || store.close())
            .await
            .is_err()
        {
            tracing::warn!("closing the store failed");
        }
    }

    /// Aborts the background tasks without waiting for them, then syncs and
    /// closes the store. Blocking; prefer [`Router::shutdown`].
    pub fn close(&self) {
        self.background.abort();
        self.store.close();
    }
}
