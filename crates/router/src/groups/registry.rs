//! The consumer groups of a node: which run, which wait in the store, and
//! the requests that reach them.
//!
//! Two kinds of locks guard the registry. The table (running and dormant
//! groups, and the group limit) sits behind one short lock that is never
//! held across an await. Everything that starts, creates, moves or deletes
//! one group (which may wait seconds for peers) holds that group's start
//! lock, so one slow take-over never stalls another group.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use parking_lot::Mutex;
use switchyard_model::{Cursor, MessageId, NodeId, TopicSet};
use switchyard_store::{Store, StoredGroup};
use tokio::sync::{mpsc, oneshot};

use super::actor::{Actor, Request};
use super::member::Member;
use super::settings::{Settings, SettingsRecord, now_ms, validate_group_name, validate_options};
use super::state::GroupState;
use super::types::{
    GroupCounters, GroupInfo, GroupOptions, GroupStart, MemberOptions, Settle, Settled, Strategy,
};
use super::{
    DEFAULT_ACK_TIMEOUT, DEFAULT_MAX_DELIVERIES, MAX_GROUPS, MAX_NACK_DELAY, MAX_SETTLE_IDS,
};
use crate::RouterError;
use crate::feeds::{Interest, InterestGuard};
use crate::plugins::Plugins;
use crate::subscription::Recovery;

/// The time as group state machines take it (tokio's clock, which tests
/// may pause).
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Requests queued per group before senders wait.
const REQUEST_QUEUE: usize = 1024;

/// The way into a running group's coordinator task.
#[derive(Clone)]
pub(super) struct Handle {
    pub(super) requests: mpsc::Sender<Request>,
    pub(super) leaves: mpsc::UnboundedSender<u64>,
}

/// Origins whose messages of a group's topics the node may not hold, with
/// the position the group must not pass in each and the node's watermark:
/// the group's coordinator reads nothing of them until a catch-up fetches
/// that range.
pub(super) type Behind = BTreeMap<NodeId, (u64, u64)>;

/// The groups held here.
#[derive(Default)]
pub(super) struct Table {
    /// Groups whose coordinator runs.
    pub(super) running: HashMap<String, Handle>,
    /// Persisted groups whose coordinator has not started yet (it starts on
    /// first use).
    pub(super) dormant: HashMap<String, (StoredGroup, Option<InterestGuard>)>,
    /// For dormant groups a catch-up could not complete: the origins to
    /// hold back when the group starts (see [`Behind`]).
    pub(super) behind: HashMap<String, Behind>,
    /// Groups being created: counted against the limit until they run.
    creating: usize,
}

impl Table {
    fn count(&self) -> usize {
        self.running.len() + self.dormant.len() + self.creating
    }

    /// Whether group `name` runs here or is loaded, not running.
    pub(super) fn holds(&self, name: &str) -> bool {
        self.running.contains_key(name) || self.dormant.contains_key(name)
    }
}

/// The consumer groups of a node.
pub struct Groups {
    pub(super) store: Arc<Store>,
    pub(super) plugins: Arc<Plugins>,
    /// The node's interest: a running group keeps its patterns in it.
    pub(super) interest: Arc<Interest>,
    pub(super) table: Mutex<Table>,
    /// One lock per group name in use, held while the group is created,
    /// started, taken over, handed over or deleted.
    starts: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    next_member: Arc<AtomicU64>,
    /// Random per process, so that member ids are never reused after a
    /// restart (an old client's ack must not count as a new member's).
    run: u32,
    /// The cluster, when the node is part of one: each group is then
    /// coordinated by one node (see [`Groups::coordinator`]).
    pub(super) cluster: std::sync::OnceLock<switchyard_cluster::Cluster>,
    /// Set when the node is leaving the cluster: it coordinates no group.
    pub(super) leaving: AtomicBool,
    /// Live peers that did not answer a take, each since when (cleared by
    /// an answer): see [`super::cluster::UNANSWERED_LIMIT`].
    pub(super) unanswered: Mutex<HashMap<u64, tokio::time::Instant>>,
}

/// A group's start lock, held; the lock's entry goes when nobody holds or
/// waits for it.
pub(super) struct StartGuard<'a> {
    groups: &'a Groups,
    name: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for StartGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut starts = self.groups.starts.lock();
        if starts
            .get(&self.name)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            starts.remove(&self.name);
        }
    }
}

impl Groups {
    pub(crate) fn open(
        store: Arc<Store>,
        plugins: Arc<Plugins>,
        interest: Arc<Interest>,
    ) -> Result<Groups, RouterError> {
        // A stored group keeps its patterns in the node's interest from the
        // start, before its coordinator runs, so that messages of other
        // origins for it are pulled meanwhile.
        let dormant = store
            .groups()?
            .into_iter()
            .map(|g| {
                let guard = serde_json::from_slice::<SettingsRecord>(&g.settings)
                    .ok()
                    .and_then(|r| Settings::from_record(&r).ok())
                    .map(|s| interest.add(&s.topics));
                (g.name.clone(), (g, guard))
            })
            .collect();
        Ok(Groups {
            store,
            plugins,
            interest,
            table: Mutex::new(Table {
                dormant,
                ..Table::default()
            }),
            starts: Mutex::new(HashMap::new()),
            next_member: Arc::new(AtomicU64::new(1)),
            run: {
                use std::hash::BuildHasher;
                std::collections::hash_map::RandomState::new().hash_one(now_ms()) as u32
            },
            cluster: std::sync::OnceLock::new(),
            leaving: AtomicBool::new(false),
            unanswered: Mutex::new(HashMap::new()),
        })
    }

    /// Takes group `name`'s start lock.
    pub(super) async fn start_lock(&self, name: &str) -> StartGuard<'_> {
        let lock = self
            .starts
            .lock()
            .entry(name.to_owned())
            .or_default()
            .clone();
        StartGuard {
            groups: self,
            name: name.to_owned(),
            guard: Some(lock.lock_owned().await),
        }
    }

    pub(super) fn running(&self, name: &str) -> Option<Handle> {
        self.table.lock().running.get(name).cloned()
    }

    /// The running coordinator of `name`, started from the store if needed.
    /// Call with the group's start lock held.
    pub(super) fn start(&self, name: &str) -> Result<Option<Handle>, RouterError> {
        if let Some(h) = self.running(name) {
            return Ok(Some(h));
        }
        let Some((stored, guard)) = self.table.lock().dormant.remove(name) else {
            return Ok(None);
        };
        let record: SettingsRecord = serde_json::from_slice(&stored.settings).map_err(|e| {
            RouterError::GroupSetting(format!("group {name}: stored settings: {e}"))
        })?;
        let settings = Settings::from_record(&record).map_err(|e| {
            RouterError::GroupSetting(format!("group {name}: stored settings: {e}"))
        })?;
        let counters = serde_json::from_slice(&stored.counters).unwrap_or_default();
        let behind = self.table.lock().behind.remove(name).unwrap_or_default();
        let state = GroupState::restore(
            name,
            settings,
            stored.cursor,
            counters,
            stored.inflight,
            now(),
        );
        let handle = self.spawn(state, guard, behind);
        self.table
            .lock()
            .running
            .insert(name.to_owned(), handle.clone());
        Ok(Some(handle))
    }

    /// Starts a coordinator task for `state`.
    fn spawn(&self, state: GroupState, interest: Option<InterestGuard>, behind: Behind) -> Handle {
        let name = state.name().to_owned();
        let interest = interest.unwrap_or_else(|| self.interest.add(&state.settings().topics));
        let (requests, rx) = mpsc::channel(REQUEST_QUEUE);
        let (leaves, leave_rx) = mpsc::unbounded_channel();
        let mut actor = Actor::new(
            state,
            self.store.clone(),
            self.plugins.clone(),
            format!("{}-{:08x}", self.store.node_id(), self.run),
            self.next_member.clone(),
            interest,
        );
        if self
            .cluster
            .get()
            .is_some_and(|c| c.replication_factor() >= 2)
        {
            actor.record_snapshots();
        }
        if let Some(cluster) = self.cluster.get()
            && !behind.is_empty()
        {
            tracing::info!(
                group = name,
                origins = behind.len(),
                "group holds back origins it could not catch up with"
            );
            actor.hold_back(
                behind,
                Recovery {
                    store: self.store.clone(),
                    interest: self.interest.clone(),
                    cluster: cluster.clone(),
                },
            );
        }
        tokio::spawn(actor.run(rx, leave_rx));
        Handle { requests, leaves }
    }

    /// Joins `name` as a new member, creating the group (durably) if it does
    /// not exist. The member receives its share of the group's messages
    /// until it is dropped; then whatever it had not acknowledged is
    /// delivered to other members at once.
    pub async fn join(
        &self,
        name: &str,
        topics: TopicSet,
        options: GroupOptions,
        member: MemberOptions,
    ) -> Result<Member, RouterError> {
        validate_group_name(name)?;
        validate_options(&options, &member)?;
        if let Some(Strategy::Plugin(p)) = &options.strategy {
            self.plugins.check_pick(p)?;
        }
        let handle = match self.running(name) {
            Some(h) => h,
            None => {
                let _start = self.start_lock(name).await;
                match self.ensure(name).await? {
                    Some(h) => h,
                    None => self.create(name, &topics, &options).await?,
                }
            }
        };
        let (tx, rx) = mpsc::channel(member.max_inflight as usize);
        let ack = member.ack;
        let (reply, answer) = oneshot::channel();
        handle
            .requests
            .send(Request::Join {
                topics,
                options,
                member,
                tx,
                reply,
            })
            .await
            .map_err(|_| RouterError::ShuttingDown)?;
        let (key, id) = answer.await.map_err(|_| RouterError::ShuttingDown)??;
        Ok(Member {
            group: name.to_owned(),
            id,
            key,
            ack,
            rx,
            commands: handle.requests,
            leaves: handle.leaves,
            written: Vec::new(),
        })
    }

    /// Creates group `name` and starts it. Call with its start lock held.
    async fn create(
        &self,
        name: &str,
        topics: &TopicSet,
        o: &GroupOptions,
    ) -> Result<Handle, RouterError> {
        {
            let mut table = self.table.lock();
            if table.count() >= MAX_GROUPS {
                return Err(RouterError::GroupConflict(format!(
                    "this node has {MAX_GROUPS} groups already; delete one first"
                )));
            }
            if let Some(limit) = o.create_limit
                && table.count() >= limit
            {
                return Err(RouterError::GroupLimit(format!(
                    "this node holds {limit} groups, the most a member without admin rights may create; \
                     join an existing group, or create this one with an admin token"
                )));
            }
            table.creating += 1;
        }
        let created = self.create_reserved(name, topics, o).await;
        let mut table = self.table.lock();
        table.creating -= 1;
        let handle = created?;
        table.running.insert(name.to_owned(), handle.clone());
        Ok(handle)
    }

    async fn create_reserved(
        &self,
        name: &str,
        topics: &TopicSet,
        o: &GroupOptions,
    ) -> Result<Handle, RouterError> {
        let settings = Settings {
            topics: topics.clone(),
            strategy: o.strategy.clone().unwrap_or(Strategy::LeastInflight),
            ack_timeout: o.ack_timeout.unwrap_or(DEFAULT_ACK_TIMEOUT),
            max_deliveries: o.max_deliveries.unwrap_or(DEFAULT_MAX_DELIVERIES),
            created_ms: now_ms(),
            epoch: 0,
        };
        let interest = self.interest.add(&settings.topics);
        let mut behind = Behind::new();
        let cursor = match o.start {
            GroupStart::Latest => {
                let mut cursor = {
                    let _gate = self.interest.gate.write().await;
                    self.store.latest()
                };
                if let Some(cluster) = self.cluster.get() {
                    crate::feeds::past_peer_heads(&self.interest, cluster, topics, &mut cursor)
                        .await;
                }
                cursor
            }
            GroupStart::Earliest => {
                let held = {
                    let _gate = self.interest.gate.write().await;
                    self.store.visible()
                };
                let cursor = Cursor::earliest();
                if let Some(cluster) = self.cluster.get() {
                    crate::feeds::catch_up(
                        &self.store,
                        &self.interest,
                        cluster,
                        topics,
                        &cursor,
                        &held,
                    )
                    .await;
                    behind = self
                        .interest
                        .not_held(self.store.node_id(), topics, &cursor, &held);
                }
                cursor
            }
        };
        let record = serde_json::to_vec(&settings.record()).expect("settings serialise");
        let (store, n, c) = (self.store.clone(), name.to_owned(), cursor.clone());
        tokio::task::spawn_blocking(move || store.create_group(&n, &record, &c))
            .await
            .map_err(|_| RouterError::ShuttingDown)??;
        tracing::info!(group = name, strategy = %settings.strategy, "group created");
        let state = GroupState::restore(
            name,
            settings,
            cursor,
            GroupCounters::default(),
            Vec::new(),
            now(),
        );
        Ok(self.spawn(state, Some(interest), behind))
    }

    async fn handle(&self, name: &str) -> Result<Handle, RouterError> {
        if let Some(h) = self.running(name) {
            return Ok(h);
        }
        let _start = self.start_lock(name).await;
        self.ensure(name)
            .await?
            .ok_or_else(|| RouterError::GroupNotFound(name.to_owned()))
    }

    /// Acknowledges (or nacks, extends, terminates) messages of group
    /// `name`. `member`, when given, is the member acting: ids delivered to
    /// another member since are stale and left alone. Ids the group never
    /// delivered are refused and nothing changes.
    pub async fn settle(
        &self,
        name: &str,
        member: Option<String>,
        ids: Vec<MessageId>,
        op: Settle,
    ) -> Result<Settled, RouterError> {
        if ids.is_empty() || ids.len() > MAX_SETTLE_IDS {
            return Err(RouterError::GroupSetting(format!(
                "give 1 to {MAX_SETTLE_IDS} ids"
            )));
        }
        if let Settle::Nack(d) = op
            && d > MAX_NACK_DELAY
        {
            return Err(RouterError::GroupSetting(format!(
                "delay_ms={} is out of range; at most {}",
                d.as_millis(),
                MAX_NACK_DELAY.as_millis()
            )));
        }
        let handle = self.handle(name).await?;
        let (reply, answer) = oneshot::channel();
        handle
            .requests
            .send(Request::Settle {
                member,
                ids,
                op,
                reply: Some(reply),
            })
            .await
            .map_err(|_| RouterError::GroupNotFound(name.to_owned()))?;
        answer
            .await
            .map_err(|_| RouterError::GroupNotFound(name.to_owned()))?
    }

    /// A group's settings, members, counters and lag.
    pub async fn info(&self, name: &str) -> Result<GroupInfo, RouterError> {
        let handle = self.handle(name).await?;
        let (reply, answer) = oneshot::channel();
        handle
            .requests
            .send(Request::Info { reply })
            .await
            .map_err(|_| RouterError::GroupNotFound(name.to_owned()))?;
        let (mut info, topics, cursor) = answer
            .await
            .map_err(|_| RouterError::GroupNotFound(name.to_owned()))?;
        let store = self.store.clone();
        info.lag = tokio::task::spawn_blocking(move || store.count_after(&topics, &cursor))
            .await
            .map_err(|_| RouterError::ShuttingDown)??;
        Ok(info)
    }

    /// The names of the groups held here, running or not.
    pub(super) fn names(&self) -> Vec<String> {
        let table = self.table.lock();
        table
            .running
            .keys()
            .chain(table.dormant.keys())
            .cloned()
            .collect()
    }

    /// Every group this node coordinates, by name.
    pub async fn list(&self) -> Result<Vec<GroupInfo>, RouterError> {
        let mut names = self.names();
        // A copy left here for a group another node coordinates is taken
        // over by that node when it starts the group; it is not listed.
        names.retain(|n| self.coordinator(n).is_none());
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            match self.info(&n).await {
                Ok(i) => out.push(i),
                Err(RouterError::GroupNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Deletes a group and its state. Refused while members are connected.
    pub async fn delete(&self, name: &str) -> Result<(), RouterError> {
        let _start = self.start_lock(name).await;
        let handle = self
            .ensure(name)
            .await?
            .ok_or_else(|| RouterError::GroupNotFound(name.to_owned()))?;
        let (reply, answer) = oneshot::channel();
        handle
            .requests
            .send(Request::Delete { reply })
            .await
            .map_err(|_| RouterError::ShuttingDown)?;
        answer.await.map_err(|_| RouterError::ShuttingDown)??;
        self.table.lock().running.remove(name);
        tracing::info!(group = name, "group deleted");
        Ok(())
    }
}
