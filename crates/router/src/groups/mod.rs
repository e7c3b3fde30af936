//! Consumer groups: load-balanced delivery with acknowledgements,
//! redelivery and durable queue semantics.
//!
//! Each group has one coordinator task that owns its whole state: the
//! group's position in the log, the messages in flight (delivered, not yet
//! acknowledged) and those waiting to be delivered again, and the connected
//! members. Everything reaches it as commands on a bounded channel, so the
//! state needs no locks and each change is applied in one place.
//!
//! The coordinator works in rounds: take every waiting command, expire ack
//! deadlines, hand out messages to members with room, then persist what
//! changed in one atomic store write, and only then answer the commands and
//! send the messages. So a member never sees a delivery the store does not
//! know is in flight, and an acknowledgement is answered only once it is
//! written (through to the operating system, or to disk with
//! `fsync = always`). After a crash, whatever was in flight is delivered
//! again; nothing acknowledged is delivered again.
//!
//! Memory is bounded by the members' `max_inflight`: the coordinator reads
//! from the log only as many messages as members have room for, and holds
//! message ids, not messages, for what is in flight.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use switchyard_model::{Cursor, Header, Message, MessageId, TopicSet};
use switchyard_plugin_host::Candidate;
use switchyard_store::{Append, GroupWrite, ReadQuery, Store, StoreError, StoredGroup};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::RouterError;
use crate::feeds::{Interest, InterestGuard};

mod cluster;
use crate::plugins::{Plugins, as_append, dead_letter};

/// Default time a member has to acknowledge a message before it is
/// delivered to another member.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest acknowledgement timeout.
pub const MAX_ACK_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Default deliveries of one message before it is dead-lettered.
pub const DEFAULT_MAX_DELIVERIES: u32 = 5;
/// Most deliveries of one message a group may allow.
pub const MAX_MAX_DELIVERIES: u32 = 1000;
/// Default unacknowledged messages per member.
pub const DEFAULT_MAX_INFLIGHT: u32 = 64;
/// Most unacknowledged messages per member.
pub const MAX_INFLIGHT: u32 = 10_000;
/// Most groups per node.
pub const MAX_GROUPS: usize = 1024;
/// Most members connected to one group.
pub const MAX_MEMBERS: usize = 1024;
/// Most ids in one acknowledgement request.
pub const MAX_SETTLE_IDS: usize = 10_000;
/// Longest nack delay.
pub const MAX_NACK_DELAY: Duration = Duration::from_secs(24 * 3600);
/// Header naming the group on a dead-lettered message.
pub const GROUP_HEADER: &str = "switchyard-group";
/// Header counting the deliveries of a dead-lettered message.
pub const DELIVERIES_HEADER: &str = "switchyard-deliveries";

/// Why a group stopped when the node is shutting down.
const SHUTTING_DOWN: &str = "the node is shutting down";
/// Most messages one group holds unsettled (in flight or waiting for
/// redelivery, delays included); it reads no new messages beyond.
pub const MAX_UNSETTLED: usize = 100_000;
/// Commands queued per group before senders wait.
const COMMAND_QUEUE: usize = 1024;
/// Commands handled per round before the round's work is persisted.
const ROUND_COMMANDS: usize = 512;
/// Most messages read from the log per read.
const READ_LIMIT: usize = 256;
/// Most messages a member takes from its queue at once.
const MEMBER_BATCH: usize = 256;

/// How a group chooses the member for each message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// The member with the fewest unacknowledged messages (ties rotate).
    LeastInflight,
    /// Members in turn, skipping those at their `max_inflight`.
    RoundRobin,
    /// The message key decides (rendezvous hashing over the members), so
    /// one key's messages go to one member, in order, while membership is
    /// unchanged. Messages without a key go to the least loaded member.
    KeyHash,
    /// A `pick` plugin binding chooses; when it declines or fails, the
    /// least loaded member gets the message.
    Plugin(String),
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Strategy::LeastInflight => f.write_str("least-inflight"),
            Strategy::RoundRobin => f.write_str("round-robin"),
            Strategy::KeyHash => f.write_str("key-hash"),
            Strategy::Plugin(p) => write!(f, "plugin:{p}"),
        }
    }
}

impl FromStr for Strategy {
    type Err = RouterError;
    fn from_str(s: &str) -> Result<Self, RouterError> {
        match s {
            "least-inflight" => Ok(Strategy::LeastInflight),
            "round-robin" => Ok(Strategy::RoundRobin),
            "key-hash" => Ok(Strategy::KeyHash),
            p if p.starts_with("plugin:") => {
                let name = &p["plugin:".len()..];
                crate::validate_name(name)
                    .map_err(|e| RouterError::GroupSetting(format!("strategy {s:?}: {e}")))?;
                Ok(Strategy::Plugin(name.to_owned()))
            }
            _ => Err(RouterError::GroupSetting(format!(
                "unknown strategy {s:?}; expected least-inflight, round-robin, key-hash or plugin:<name>"
            ))),
        }
    }
}

/// When a member's messages count as acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// Once handed to the member's connection.
    Auto,
    /// When the member acknowledges them.
    Manual,
}

impl FromStr for AckMode {
    type Err = RouterError;
    fn from_str(s: &str) -> Result<Self, RouterError> {
        match s {
            "auto" => Ok(AckMode::Auto),
            "manual" => Ok(AckMode::Manual),
            _ => Err(RouterError::GroupSetting(format!(
                "ack={s:?}; expected manual or auto"
            ))),
        }
    }
}

/// Where a new group starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GroupStart {
    /// With messages published from now on.
    #[default]
    Latest,
    /// With the oldest message held.
    Earliest,
}

/// Settings of a group, given by the member that creates it. A later
/// member may repeat them; a different value is refused.
#[derive(Clone, Debug, Default)]
pub struct GroupOptions {
    /// Balancing strategy (default least-inflight).
    pub strategy: Option<Strategy>,
    /// Time to acknowledge before redelivery (default 30 s).
    pub ack_timeout: Option<Duration>,
    /// Deliveries before a message is dead-lettered (default 5).
    pub max_deliveries: Option<u32>,
    /// Where the group starts when this join creates it.
    pub start: GroupStart,
}

/// Settings of one member.
#[derive(Clone, Debug)]
pub struct MemberOptions {
    /// When its messages count as acknowledged.
    pub ack: AckMode,
    /// Most unacknowledged messages it holds (1 to [`MAX_INFLIGHT`]).
    pub max_inflight: u32,
    /// Its weight, for pick plugins (1 by default).
    pub weight: u32,
    /// Labels for pick plugins.
    pub labels: Vec<(String, String)>,
}

impl Default for MemberOptions {
    fn default() -> Self {
        MemberOptions {
            ack: AckMode::Manual,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            weight: 1,
            labels: Vec::new(),
        }
    }
}

/// What a member does with messages it was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settle {
    /// Done: never deliver it again.
    Ack,
    /// Not done: deliver it again (to any member) after a delay.
    Nack(Duration),
    /// Still working: restart the ack deadline.
    Progress,
    /// Give up: do not deliver it again; dead-letter it with the reason.
    Term(Option<String>),
}

impl Settle {
    fn name(&self) -> &'static str {
        match self {
            Settle::Ack => "ack",
            Settle::Nack(_) => "nack",
            Settle::Progress => "progress",
            Settle::Term(_) => "term",
        }
    }
}

/// The outcome of a settle request.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Settled {
    /// Ids the request applied to.
    pub applied: Vec<String>,
    /// Ids it did not apply to because they are no longer this member's:
    /// delivered to another member since, or already settled.
    pub stale: Vec<StaleId>,
}

/// One stale id with the reason.
#[derive(Clone, Debug, Serialize)]
pub struct StaleId {
    /// The message id.
    pub id: String,
    /// Why the id was not applied.
    pub reason: &'static str,
}

/// One message handed to a member.
#[derive(Clone, Debug)]
pub struct GroupDelivery {
    /// The message.
    pub message: Arc<Message>,
    /// How many times it was delivered, this time included.
    pub delivery: u32,
}

/// A group's counters since it was created.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupCounters {
    /// Deliveries, redeliveries included.
    pub delivered: u64,
    /// Deliveries of a message that was delivered before.
    pub redelivered: u64,
    /// Messages acknowledged.
    pub acked: u64,
    /// Messages a member asked to have delivered again.
    pub nacked: u64,
    /// Deliveries whose ack deadline passed.
    pub expired: u64,
    /// Messages a member terminated.
    pub terminated: u64,
    /// Messages sent to the dead-letter topic (terminated or delivered too often).
    pub dead_lettered: u64,
    /// Acknowledgements for messages that were no longer the member's.
    pub stale_acks: u64,
    /// Messages that retention removed before they were acknowledged.
    pub lost_to_retention: u64,
    /// Pick plugin calls that failed (the least loaded member got the message).
    pub pick_errors: u64,
    /// Messages to dead-letter whose topic is too long for a `$dlq.` prefix:
    /// they were dropped instead.
    pub dead_letters_dropped: u64,
}

/// One member as reported by [`Groups::info`].
#[derive(Clone, Debug, Serialize)]
pub struct MemberInfo {
    /// Member id (what acknowledgements name).
    pub id: String,
    /// Ack mode.
    pub ack: AckMode,
    /// Its cap of unacknowledged messages.
    pub max_inflight: u32,
    /// Its unacknowledged messages.
    pub inflight: u32,
    /// Messages delivered to it.
    pub delivered: u64,
    /// Messages it acknowledged.
    pub acked: u64,
    /// Its weight.
    pub weight: u32,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// How long it has been connected, in ms.
    pub connected_ms: u64,
}

/// A group as reported by [`Groups::info`].
#[derive(Clone, Debug, Serialize)]
pub struct GroupInfo {
    /// Group name.
    pub name: String,
    /// Topic patterns it follows.
    pub topics: Vec<String>,
    /// Balancing strategy.
    pub strategy: String,
    /// Acknowledgement timeout in ms.
    pub ack_timeout_ms: u64,
    /// Deliveries before dead-lettering.
    pub max_deliveries: u32,
    /// When it was created, in ms since the Unix epoch.
    pub created_ms: u64,
    /// The node that coordinates it.
    pub coordinator: String,
    /// How often it moved from one coordinating node to another.
    pub epoch: u64,
    /// Its position in the log: every message before it was delivered.
    pub position: String,
    /// Connected members.
    pub members: Vec<MemberInfo>,
    /// Messages delivered and not acknowledged.
    pub inflight: u64,
    /// Messages waiting to be delivered again.
    pub pending_redelivery: u64,
    /// Messages in the log after the group's position: not delivered yet.
    pub lag: u64,
    /// Counters since the group was created.
    #[serde(flatten)]
    pub counters: GroupCounters,
}

/// A group's settings as persisted.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SettingsRecord {
    topics: Vec<String>,
    strategy: String,
    ack_timeout_ms: u64,
    max_deliveries: u32,
    created_ms: u64,
    /// Moves between coordinating nodes: each node that takes the group
    /// over counts one more, so of two copies the later one wins.
    #[serde(default)]
    epoch: u64,
}

/// A group's settings in force.
#[derive(Clone, Debug)]
struct Settings {
    topics: TopicSet,
    strategy: Strategy,
    ack_timeout: Duration,
    max_deliveries: u32,
    created_ms: u64,
    epoch: u64,
}

impl Settings {
    fn record(&self) -> SettingsRecord {
        SettingsRecord {
            topics: topic_names(&self.topics),
            strategy: self.strategy.to_string(),
            ack_timeout_ms: self.ack_timeout.as_millis() as u64,
            max_deliveries: self.max_deliveries,
            created_ms: self.created_ms,
            epoch: self.epoch,
        }
    }

    fn from_record(r: &SettingsRecord) -> Result<Settings, String> {
        let topics = r
            .topics
            .iter()
            .map(|t| t.parse().map_err(|e| format!("{e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Settings {
            topics: TopicSet::new(topics),
            strategy: r.strategy.parse().map_err(|e: RouterError| e.to_string())?,
            ack_timeout: Duration::from_millis(r.ack_timeout_ms),
            max_deliveries: r.max_deliveries,
            created_ms: r.created_ms,
            epoch: r.epoch,
        })
    }

    /// Refuses options that differ from these settings.
    fn check(&self, name: &str, topics: &TopicSet, o: &GroupOptions) -> Result<(), RouterError> {
        let conflict = |what: String| {
            RouterError::GroupConflict(format!(
                "group {name:?} exists with {what}; join it with the same settings or none"
            ))
        };
        let (mine, theirs) = (topic_names(&self.topics), topic_names(topics));
        if sorted(mine.clone()) != sorted(theirs) {
            return Err(conflict(format!("topics {}", mine.join(", "))));
        }
        if o.strategy.as_ref().is_some_and(|s| *s != self.strategy) {
            return Err(conflict(format!("strategy {}", self.strategy)));
        }
        if o.ack_timeout.is_some_and(|t| t != self.ack_timeout) {
            return Err(conflict(format!(
                "ack_timeout_ms {}",
                self.ack_timeout.as_millis()
            )));
        }
        if o.max_deliveries.is_some_and(|m| m != self.max_deliveries) {
            return Err(conflict(format!("max_deliveries {}", self.max_deliveries)));
        }
        Ok(())
    }
}

fn topic_names(t: &TopicSet) -> Vec<String> {
    t.patterns().iter().map(|p| p.as_str().to_owned()).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Checks a group name: 1 to 128 characters of `[A-Za-z0-9_.-]`.
pub fn validate_group_name(name: &str) -> Result<(), RouterError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(RouterError::GroupSetting(format!(
            "invalid group name {:?}: use 1 to 128 characters of A-Z, a-z, 0-9, '_', '-', '.'",
            name.chars().take(140).collect::<String>()
        )))
    }
}

fn validate_options(o: &GroupOptions, m: &MemberOptions) -> Result<(), RouterError> {
    let bad = |s: String| Err(RouterError::GroupSetting(s));
    if !(1..=MAX_INFLIGHT).contains(&m.max_inflight) {
        return bad(format!(
            "max_inflight={} is out of range; use 1 to {MAX_INFLIGHT}",
            m.max_inflight
        ));
    }
    if !(1..=10_000).contains(&m.weight) {
        return bad(format!(
            "weight={} is out of range; use 1 to 10000",
            m.weight
        ));
    }
    if m.labels.len() > 16
        || m.labels
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 64 || v.len() > 256)
    {
        return bad(
            "at most 16 labels, each a name of 1 to 64 bytes and a value of at most 256".into(),
        );
    }
    if let Some(t) = o.ack_timeout
        && (t < Duration::from_millis(100) || t > MAX_ACK_TIMEOUT)
    {
        return bad(format!(
            "ack_timeout_ms={} is out of range; use 100 to {}",
            t.as_millis(),
            MAX_ACK_TIMEOUT.as_millis()
        ));
    }
    if let Some(d) = o.max_deliveries
        && !(1..=MAX_MAX_DELIVERIES).contains(&d)
    {
        return bad(format!(
            "max_deliveries={d} is out of range; use 1 to {MAX_MAX_DELIVERIES}"
        ));
    }
    Ok(())
}

/// The consumer groups of a node.
pub struct Groups {
    store: Arc<Store>,
    plugins: Arc<Plugins>,
    /// The node's interest: a running group keeps its patterns in it.
    interest: Arc<Interest>,
    /// Groups whose coordinator runs.
    running: Mutex<HashMap<String, Handle>>,
    /// Persisted groups whose coordinator has not started yet (it starts on
    /// first use).
    dormant: Mutex<HashMap<String, (StoredGroup, Option<InterestGuard>)>>,
    /// Serialises creating, starting and deleting groups.
    admin: tokio::sync::Mutex<()>,
    next_member: Arc<AtomicU64>,
    /// Random per process, so that member ids are never reused after a
    /// restart (an old client's ack must not count as a new member's).
    run: u32,
    /// The cluster, when the node is part of one: each group is then
    /// coordinated by one node (see [`Groups::coordinator`]).
    cluster: std::sync::OnceLock<switchyard_cluster::Cluster>,
    /// Set when the node is leaving the cluster: it coordinates no group.
    leaving: std::sync::atomic::AtomicBool,
}

#[derive(Clone)]
struct Handle {
    commands: mpsc::Sender<Command>,
    leaves: mpsc::UnboundedSender<u64>,
}

enum Command {
    Join {
        topics: TopicSet,
        options: GroupOptions,
        member: MemberOptions,
        tx: mpsc::Sender<GroupDelivery>,
        reply: oneshot::Sender<Result<(u64, String), RouterError>>,
    },
    Settle {
        member: Option<String>,
        ids: Vec<MessageId>,
        op: Settle,
        reply: Option<oneshot::Sender<Result<Settled, RouterError>>>,
    },
    Info {
        reply: oneshot::Sender<(GroupInfo, TopicSet, Cursor)>,
    },
    Delete {
        reply: oneshot::Sender<Result<(), RouterError>>,
    },
    /// Stops the coordinator with its state persisted (another node takes
    /// the group over); members' streams end.
    Release { reply: oneshot::Sender<()> },
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
            running: Mutex::new(HashMap::new()),
            dormant: Mutex::new(dormant),
            admin: tokio::sync::Mutex::new(()),
            next_member: Arc::new(AtomicU64::new(1)),
            run: {
                use std::hash::BuildHasher;
                std::collections::hash_map::RandomState::new().hash_one(now_ms()) as u32
            },
            cluster: std::sync::OnceLock::new(),
            leaving: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn running(&self, name: &str) -> Option<Handle> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// The running coordinator of `name`, started from the store if needed.
    /// Call with the admin lock held.
    fn start(&self, name: &str) -> Result<Option<Handle>, RouterError> {
        if let Some(h) = self.running(name) {
            return Ok(Some(h));
        }
        let Some((stored, guard)) = self
            .dormant
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
        else {
            return Ok(None);
        };
        let record: SettingsRecord = serde_json::from_slice(&stored.settings).map_err(|e| {
            RouterError::GroupSetting(format!("group {name}: stored settings: {e}"))
        })?;
        let settings = Settings::from_record(&record).map_err(|e| {
            RouterError::GroupSetting(format!("group {name}: stored settings: {e}"))
        })?;
        let counters = serde_json::from_slice(&stored.counters).unwrap_or_default();
        Ok(Some(self.spawn(
            name,
            settings,
            stored.cursor,
            counters,
            stored.inflight,
            guard,
        )))
    }

    fn spawn(
        &self,
        name: &str,
        settings: Settings,
        cursor: Cursor,
        counters: GroupCounters,
        inflight: Vec<(MessageId, u32)>,
        interest: Option<InterestGuard>,
    ) -> Handle {
        let interest = interest.unwrap_or_else(|| self.interest.add(&settings.topics));
        let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
        let (leaves, leave_rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        let mut entries = HashMap::with_capacity(inflight.len());
        let mut ready = BTreeSet::new();
        for (id, deliveries) in inflight {
            // Whatever was in flight when the node stopped is delivered again.
            entries.insert(
                id,
                Entry {
                    deliveries,
                    state: State::Waiting { due: now },
                    last_member: None,
                },
            );
            ready.insert(id);
        }
        let actor = Actor {
            name: name.to_owned(),
            settings,
            store: self.store.clone(),
            plugins: self.plugins.clone(),
            changes: self.store.changes(),
            cursor,
            entries,
            timers: BTreeSet::new(),
            ready,
            members: BTreeMap::new(),
            by_id: HashMap::new(),
            node: format!("{}-{:08x}", self.store.node_id(), self.run),
            next_member: self.next_member.clone(),
            turn: 0,
            counters,
            pending: HashMap::new(),
            cursor_dirty: false,
            counters_dirty: false,
            dead: Vec::new(),
            outbox: Vec::new(),
            replies: Vec::new(),
            failed: None,
            deleted: false,
            released: None,
            _interest: interest,
        };
        tokio::spawn(actor.run(rx, leave_rx));
        let handle = Handle { commands, leaves };
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), handle.clone());
        handle
    }

    fn count(&self) -> usize {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).len()
            + self.dormant.lock().unwrap_or_else(|p| p.into_inner()).len()
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
        let handle = {
            let _admin = self.admin.lock().await;
            match self.ensure(name).await? {
                Some(h) => h,
                None => self.create(name, &topics, &options).await?,
            }
        };
        let (tx, rx) = mpsc::channel(member.max_inflight as usize);
        let ack = member.ack;
        let (reply, answer) = oneshot::channel();
        handle
            .commands
            .send(Command::Join {
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
            commands: handle.commands,
            leaves: handle.leaves,
            written: Vec::new(),
        })
    }

    async fn create(
        &self,
        name: &str,
        topics: &TopicSet,
        o: &GroupOptions,
    ) -> Result<Handle, RouterError> {
        if self.count() >= MAX_GROUPS {
            return Err(RouterError::GroupConflict(format!(
                "this node has {MAX_GROUPS} groups already; delete one first"
            )));
        }
        let settings = Settings {
            topics: topics.clone(),
            strategy: o.strategy.clone().unwrap_or(Strategy::LeastInflight),
            ack_timeout: o.ack_timeout.unwrap_or(DEFAULT_ACK_TIMEOUT),
            max_deliveries: o.max_deliveries.unwrap_or(DEFAULT_MAX_DELIVERIES),
            created_ms: now_ms(),
            epoch: 0,
        };
        let interest = self.interest.add(&settings.topics);
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
        Ok(self.spawn(
            name,
            settings,
            cursor,
            GroupCounters::default(),
            Vec::new(),
            Some(interest),
        ))
    }

    async fn handle(&self, name: &str) -> Result<Handle, RouterError> {
        if let Some(h) = self.running(name) {
            return Ok(h);
        }
        let _admin = self.admin.lock().await;
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
            .commands
            .send(Command::Settle {
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
            .commands
            .send(Command::Info { reply })
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
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        names.extend(
            self.dormant
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .cloned(),
        );
        names
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
        let _admin = self.admin.lock().await;
        let handle = self
            .ensure(name)
            .await?
            .ok_or_else(|| RouterError::GroupNotFound(name.to_owned()))?;
        let (reply, answer) = oneshot::channel();
        handle
            .commands
            .send(Command::Delete { reply })
            .await
            .map_err(|_| RouterError::ShuttingDown)?;
        answer.await.map_err(|_| RouterError::ShuttingDown)??;
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        tracing::info!(group = name, "group deleted");
        Ok(())
    }
}

/// A connected member of a group. Dropping it leaves the group.
pub struct Member {
    group: String,
    id: String,
    key: u64,
    ack: AckMode,
    rx: mpsc::Receiver<GroupDelivery>,
    commands: mpsc::Sender<Command>,
    leaves: mpsc::UnboundedSender<u64>,
    /// With `ack=auto`: ids of the last batch, acknowledged once the
    /// connection asks for more (it took the batch).
    written: Vec<MessageId>,
}

impl Member {
    /// The member id that acknowledgements name.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The ack mode.
    pub fn ack(&self) -> AckMode {
        self.ack
    }

    /// Waits for the next messages (up to 256 at once). `None` when the
    /// group was deleted or the node is shutting down. Cancel-safe. With
    /// `ack=auto` the previous batch is acknowledged first.
    pub async fn next(&mut self) -> Option<Vec<GroupDelivery>> {
        if !self.written.is_empty() {
            let cmd = Command::Settle {
                member: Some(self.id.clone()),
                ids: self.written.clone(),
                op: Settle::Ack,
                reply: None,
            };
            self.commands.send(cmd).await.ok()?;
            self.written.clear();
        }
        let first = self.rx.recv().await?;
        let mut out = Vec::with_capacity(8);
        out.push(first);
        while out.len() < MEMBER_BATCH {
            match self.rx.try_recv() {
                Ok(d) => out.push(d),
                Err(_) => break,
            }
        }
        if self.ack == AckMode::Auto {
            self.written = out.iter().map(|d| d.message.id).collect();
        }
        Some(out)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.leaves.send(self.key);
    }
}

/// A member as the coordinator sees it.
struct Slot {
    id: String,
    tx: mpsc::Sender<GroupDelivery>,
    ack: AckMode,
    max_inflight: u32,
    inflight: u32,
    delivered: u64,
    acked: u64,
    weight: u32,
    labels: Vec<(String, String)>,
    joined: Instant,
    /// The round in which it last got a message (rotates ties).
    last_turn: u64,
    /// Rendezvous hash seed for key-hash.
    seed: u64,
}

impl Slot {
    fn has_room(&self) -> bool {
        self.inflight < self.max_inflight
    }
}

/// A message the group delivered and has not seen settled.
struct Entry {
    deliveries: u32,
    state: State,
    /// The member it was delivered to last (while delivered, the same as in `state`).
    last_member: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// With a member until the deadline.
    Delivered { member: u64, deadline: Instant },
    /// Waiting to be delivered again from `due`.
    Waiting { due: Instant },
}

struct Actor {
    name: String,
    settings: Settings,
    store: Arc<Store>,
    plugins: Arc<Plugins>,
    changes: watch::Receiver<u64>,
    /// Every message of the group's topics up to here was delivered.
    cursor: Cursor,
    entries: HashMap<MessageId, Entry>,
    /// Ack deadlines and redelivery delays, by time.
    timers: BTreeSet<(Instant, MessageId)>,
    /// Messages due for redelivery, oldest id first.
    ready: BTreeSet<MessageId>,
    members: BTreeMap<u64, Slot>,
    by_id: HashMap<String, u64>,
    /// Member id prefix: node id and run tag.
    node: String,
    next_member: Arc<AtomicU64>,
    turn: u64,
    counters: GroupCounters,
    /// In-flight changes not yet persisted: `Some(deliveries)` to write,
    /// `None` to remove.
    pending: HashMap<MessageId, Option<u32>>,
    cursor_dirty: bool,
    counters_dirty: bool,
    /// Messages to dead-letter this round, with the reason.
    dead: Vec<(MessageId, u32, String)>,
    /// Deliveries to send once this round is persisted.
    outbox: Vec<(u64, Arc<Message>)>,
    /// Answers to send once this round is persisted.
    replies: Vec<Reply>,
    /// Set when the store refused a write: the group stops delivering.
    failed: Option<String>,
    deleted: bool,
    /// Set when another node takes the group over: answered once the last
    /// round is persisted.
    released: Option<oneshot::Sender<()>>,
    /// Keeps the group's patterns in the node's interest while it runs.
    _interest: InterestGuard,
}

enum Reply {
    Settle(oneshot::Sender<Result<Settled, RouterError>>, Settled),
    Join(
        oneshot::Sender<Result<(u64, String), RouterError>>,
        u64,
        String,
    ),
}

/// The member whose rendezvous hash with `key` is highest.
fn rendezvous(seed: u64, key: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    seed.hash(&mut h);
    key.hash(&mut h);
    h.finish()
}

impl Actor {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut leaves: mpsc::UnboundedReceiver<u64>,
    ) {
        // What was in flight at the last stop counts as delivered once more:
        // messages that reached max_deliveries then are dead-lettered now.
        let max = self.settings.max_deliveries;
        let spent: Vec<(MessageId, u32)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.deliveries >= max)
            .map(|(&id, e)| (id, e.deliveries))
            .collect();
        for (id, n) in spent {
            self.entries.remove(&id);
            self.ready.remove(&id);
            self.dead.push((
                id,
                n,
                format!("delivered {n} times without acknowledgement (last: the node stopped)"),
            ));
        }
        // Deliver what waited (queue semantics, restart) before any command.
        self.round().await;
        loop {
            let next_timer = self.timers.first().map(|t| t.0);
            let can_read = self.failed.is_none() && self.members.values().any(Slot::has_room);
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(c) => self.command(c).await,
                    None => break,
                },
                Some(key) = leaves.recv() => self.leave(key),
                r = self.changes.changed(), if can_read => {
                    if r.is_err() {
                        break;
                    }
                }
                () = sleep_until(next_timer), if next_timer.is_some() => {}
            }
            for _ in 0..ROUND_COMMANDS {
                if self.deleted || self.released.is_some() {
                    break;
                }
                if let Ok(key) = leaves.try_recv() {
                    self.leave(key);
                    continue;
                }
                match commands.try_recv() {
                    Ok(c) => self.command(c).await,
                    Err(_) => break,
                }
            }
            if self.deleted || self.released.is_some() {
                break;
            }
            self.round().await;
        }
        // Persist what the last round changed (a leave, an expiry).
        self.flush().await;
        if let Some(done) = self.released.take() {
            let _ = done.send(());
        }
    }

    /// Expires deadlines, delivers, persists, answers.
    async fn round(&mut self) {
        self.expire(Instant::now());
        self.dispatch().await;
        self.flush().await;
    }

    async fn command(&mut self, c: Command) {
        match c {
            Command::Join {
                topics,
                options,
                member,
                tx,
                reply,
            } => {
                let r = self.join(&topics, &options, member, tx);
                match r {
                    Ok((key, id)) => self.replies.push(Reply::Join(reply, key, id)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Settle {
                member,
                ids,
                op,
                reply,
            } => {
                let r = self.settle(member.as_deref(), ids, &op);
                match (r, reply) {
                    (Ok(s), Some(reply)) => self.replies.push(Reply::Settle(reply, s)),
                    (Err(e), Some(reply)) => {
                        let _ = reply.send(Err(e));
                    }
                    (_, None) => {}
                }
            }
            Command::Info { reply } => {
                let _ = reply.send((
                    self.info(),
                    self.settings.topics.clone(),
                    self.cursor.clone(),
                ));
            }
            Command::Delete { reply } => {
                let _ = reply.send(self.delete().await);
            }
            Command::Release { reply } => {
                tracing::info!(group = %self.name, members = self.members.len(), "group handed to the node that now coordinates it");
                self.released = Some(reply);
            }
        }
    }

    fn join(
        &mut self,
        topics: &TopicSet,
        options: &GroupOptions,
        m: MemberOptions,
        tx: mpsc::Sender<GroupDelivery>,
    ) -> Result<(u64, String), RouterError> {
        if let Some(e) = self.stopped() {
            return Err(e);
        }
        self.settings.check(&self.name, topics, options)?;
        if self.members.len() >= MAX_MEMBERS {
            return Err(RouterError::GroupConflict(format!(
                "group {} has {MAX_MEMBERS} members already",
                self.name
            )));
        }
        let key = self.next_member.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{key}", self.node);
        self.by_id.insert(id.clone(), key);
        self.members.insert(
            key,
            Slot {
                id: id.clone(),
                tx,
                ack: m.ack,
                max_inflight: m.max_inflight,
                inflight: 0,
                delivered: 0,
                acked: 0,
                weight: m.weight,
                labels: m.labels,
                joined: Instant::now(),
                last_turn: 0,
                seed: rendezvous(key, id.as_bytes()),
            },
        );
        tracing::debug!(group = %self.name, member = %id, "member joined");
        Ok((key, id))
    }

    fn leave(&mut self, key: u64) {
        let Some(slot) = self.members.remove(&key) else {
            return;
        };
        self.by_id.remove(&slot.id);
        let now = Instant::now();
        let held: Vec<MessageId> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.state, State::Delivered { member, .. } if member == key))
            .map(|(&id, _)| id)
            .collect();
        tracing::debug!(group = %self.name, member = %slot.id, unacked = held.len(), "member left");
        for id in held {
            self.release(id);
            self.requeue(id, now, "its member disconnected");
        }
    }

    /// Takes a delivered message back from its member (timer and count).
    fn release(&mut self, id: MessageId) {
        let Some(e) = self.entries.get(&id) else {
            return;
        };
        match e.state {
            State::Delivered { member, deadline } => {
                self.timers.remove(&(deadline, id));
                if let Some(s) = self.members.get_mut(&member) {
                    s.inflight = s.inflight.saturating_sub(1);
                }
            }
            State::Waiting { due } => {
                self.timers.remove(&(due, id));
                self.ready.remove(&id);
            }
        }
    }

    /// Queues a released message for redelivery at `due`, or dead-letters
    /// it when it was delivered as often as the group allows.
    fn requeue(&mut self, id: MessageId, due: Instant, why: &str) {
        let max = self.settings.max_deliveries;
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        if e.deliveries >= max {
            let n = e.deliveries;
            self.entries.remove(&id);
            self.dead.push((
                id,
                n,
                format!("delivered {n} times without acknowledgement (last: {why})"),
            ));
            return;
        }
        e.state = State::Waiting { due };
        if due <= Instant::now() {
            self.ready.insert(id);
        } else {
            self.timers.insert((due, id));
        }
    }

    /// Handles every timer that is due.
    fn expire(&mut self, now: Instant) {
        while let Some(&(t, id)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            let Some(e) = self.entries.get(&id) else {
                continue;
            };
            match e.state {
                State::Delivered { member, deadline } if deadline == t => {
                    if let Some(s) = self.members.get_mut(&member) {
                        s.inflight = s.inflight.saturating_sub(1);
                    }
                    self.counters.expired += 1;
                    self.counters_dirty = true;
                    self.requeue(id, now, "the ack timeout passed");
                }
                State::Waiting { due } if due == t => {
                    self.ready.insert(id);
                }
                _ => {}
            }
        }
    }

    fn settle(
        &mut self,
        member: Option<&str>,
        mut ids: Vec<MessageId>,
        op: &Settle,
    ) -> Result<Settled, RouterError> {
        if let Some(e) = self.stopped() {
            return Err(e);
        }
        ids.sort_unstable();
        ids.dedup();
        // A member id that is not connected any more: everything it held was
        // handed on, so only messages waiting for redelivery are its to settle.
        let acting = member.map(|m| self.by_id.get(m).copied());
        let mut held = Vec::new();
        let mut stale = Vec::new();
        let mut unknown = Vec::new();
        for id in ids {
            match self.entries.get(&id).map(|e| e.state) {
                Some(State::Delivered { member: m, .. }) => match acting {
                    Some(a) if a != Some(m) => stale.push(StaleId {
                        id: id.to_string(),
                        reason: "delivered to another member since",
                    }),
                    _ => held.push(id),
                },
                Some(State::Waiting { .. }) if *op == Settle::Progress => stale.push(StaleId {
                    id: id.to_string(),
                    reason: "its ack deadline passed; it waits for redelivery",
                }),
                Some(State::Waiting { .. }) => held.push(id),
                None if id.seq <= self.cursor.get(id.origin) => stale.push(StaleId {
                    id: id.to_string(),
                    reason: "not in flight: already acknowledged or terminated",
                }),
                None => unknown.push(id.to_string()),
            }
        }
        if !unknown.is_empty() {
            return Err(RouterError::NotInFlight {
                group: self.name.clone(),
                ids: unknown,
            });
        }
        if !stale.is_empty() && matches!(op, Settle::Ack | Settle::Term(_)) {
            self.counters.stale_acks += stale.len() as u64;
            self.counters_dirty = true;
        }
        if held.is_empty() {
            return Err(RouterError::StaleAck {
                group: self.name.clone(),
                op: op.name(),
                stale,
            });
        }
        let now = Instant::now();
        for &id in &held {
            let member = match self.entries.get(&id).map(|e| e.state) {
                Some(State::Delivered { member, .. }) => Some(member),
                _ => None,
            };
            match op {
                Settle::Progress => {
                    let deadline = now + self.settings.ack_timeout;
                    if let Some(e) = self.entries.get_mut(&id)
                        && let State::Delivered {
                            member,
                            deadline: old,
                        } = e.state
                    {
                        self.timers.remove(&(old, id));
                        e.state = State::Delivered { member, deadline };
                        self.timers.insert((deadline, id));
                    }
                }
                Settle::Ack => {
                    self.release(id);
                    self.entries.remove(&id);
                    self.pending.insert(id, None);
                    self.counters.acked += 1;
                    if let Some(s) = member.and_then(|m| self.members.get_mut(&m)) {
                        s.acked += 1;
                    }
                }
                Settle::Nack(delay) => {
                    self.release(id);
                    self.counters.nacked += 1;
                    self.requeue(id, now + *delay, "a member asked for redelivery");
                }
                Settle::Term(reason) => {
                    self.release(id);
                    let n = self.entries.remove(&id).map_or(0, |e| e.deliveries);
                    self.counters.terminated += 1;
                    let why = match reason {
                        Some(r) => format!("terminated by a member: {r}"),
                        None => "terminated by a member".to_owned(),
                    };
                    self.dead.push((id, n, why));
                }
            }
        }
        self.counters_dirty = true;
        Ok(Settled {
            applied: held.iter().map(ToString::to_string).collect(),
            stale,
        })
    }

    fn info(&self) -> GroupInfo {
        let now = Instant::now();
        let inflight = self
            .entries
            .values()
            .filter(|e| matches!(e.state, State::Delivered { .. }))
            .count() as u64;
        GroupInfo {
            name: self.name.clone(),
            topics: topic_names(&self.settings.topics),
            strategy: self.settings.strategy.to_string(),
            ack_timeout_ms: self.settings.ack_timeout.as_millis() as u64,
            max_deliveries: self.settings.max_deliveries,
            created_ms: self.settings.created_ms,
            coordinator: self.store.node_id().to_string(),
            epoch: self.settings.epoch,
            position: self.cursor.encode(),
            members: self
                .members
                .values()
                .map(|s| MemberInfo {
                    id: s.id.clone(),
                    ack: s.ack,
                    max_inflight: s.max_inflight,
                    inflight: s.inflight,
                    delivered: s.delivered,
                    acked: s.acked,
                    weight: s.weight,
                    labels: s.labels.iter().cloned().collect(),
                    connected_ms: now.duration_since(s.joined).as_millis() as u64,
                })
                .collect(),
            inflight,
            pending_redelivery: self.entries.len() as u64 - inflight,
            lag: 0,
            counters: self.counters,
        }
    }

    async fn delete(&mut self) -> Result<(), RouterError> {
        if !self.members.is_empty() {
            return Err(RouterError::GroupConflict(format!(
                "group {} has {} connected members; disconnect them first",
                self.name,
                self.members.len()
            )));
        }
        let (store, name) = (self.store.clone(), self.name.clone());
        tokio::task::spawn_blocking(move || store.delete_group(&name))
            .await
            .map_err(|_| RouterError::ShuttingDown)??;
        self.deleted = true;
        self.pending.clear();
        self.cursor_dirty = false;
        self.counters_dirty = false;
        Ok(())
    }

    /// Chooses the member for `m`: `None` when no member may take it now.
    /// A redelivery avoids `avoid` (the member that had it last) when
    /// another member has room, except under key-hash, where the key decides.
    fn choose(&mut self, m: &Message, avoid: Option<u64>) -> Option<u64> {
        let skip = avoid.filter(|a| {
            self.settings.strategy != Strategy::KeyHash
                && self.members.iter().any(|(k, s)| k != a && s.has_room())
        });
        let open = move |k: &u64, s: &Slot| s.has_room() && Some(*k) != skip;
        let least = |members: &BTreeMap<u64, Slot>| {
            members
                .iter()
                .filter(|(k, s)| open(k, s))
                .min_by_key(|(_, s)| (s.inflight, s.last_turn))
                .map(|(&k, _)| k)
        };
        match &self.settings.strategy {
            Strategy::LeastInflight => least(&self.members),
            Strategy::RoundRobin => self
                .members
                .iter()
                .filter(|(k, s)| open(k, s))
                .min_by_key(|(_, s)| s.last_turn)
                .map(|(&k, _)| k),
            Strategy::KeyHash => match &m.key {
                Some(key) => self
                    .members
                    .iter()
                    .max_by_key(|(_, s)| rendezvous(s.seed, key))
                    .filter(|(_, s)| s.has_room())
                    .map(|(&k, _)| k),
                None => least(&self.members),
            },
            Strategy::Plugin(name) => {
                let (keys, candidates): (Vec<u64>, Vec<Candidate>) = self
                    .members
                    .iter()
                    .filter(|(k, s)| open(k, s))
                    .map(|(&k, s)| {
                        (
                            k,
                            Candidate {
                                id: s.id.clone(),
                                inflight: s.inflight,
                                weight: s.weight,
                                labels: s
                                    .labels
                                    .iter()
                                    .map(|(n, v)| Header {
                                        name: n.clone(),
                                        value: v.clone(),
                                    })
                                    .collect(),
                            },
                        )
                    })
                    .unzip();
                if keys.is_empty() {
                    return None;
                }
                match self.plugins.pick(name, m, &candidates) {
                    Ok(Some(i)) => Some(keys[i]),
                    Ok(None) => least(&self.members),
                    Err(e) => {
                        self.counters.pick_errors += 1;
                        tracing::debug!(group = %self.name, error = %e, "pick plugin failed");
                        least(&self.members)
                    }
                }
            }
        }
    }

    /// Hands `m` to member `key`.
    fn deliver(&mut self, key: u64, m: &Arc<Message>) {
        let id = m.id;
        let deadline = Instant::now() + self.settings.ack_timeout;
        let e = self.entries.entry(id).or_insert(Entry {
            deliveries: 0,
            state: State::Waiting { due: deadline },
            last_member: None,
        });
        e.deliveries += 1;
        e.last_member = Some(key);
        e.state = State::Delivered {
            member: key,
            deadline,
        };
        if e.deliveries > 1 {
            self.counters.redelivered += 1;
        }
        self.pending.insert(id, Some(e.deliveries));
        self.timers.insert((deadline, id));
        self.counters.delivered += 1;
        self.counters_dirty = true;
        self.turn += 1;
        if let Some(s) = self.members.get_mut(&key) {
            s.inflight += 1;
            s.delivered += 1;
            s.last_turn = self.turn;
        }
        self.outbox.push((key, m.clone()));
    }

    fn free(&self) -> usize {
        self.members
            .values()
            .map(|s| (s.max_inflight - s.inflight.min(s.max_inflight)) as usize)
            .sum()
    }

    /// Hands out messages while members have room: first those due for
    /// redelivery, then new ones from the log.
    async fn dispatch(&mut self) {
        if self.failed.is_some() || self.members.is_empty() {
            return;
        }
        let local = self.store.node_id();
        // Messages of another origin this node has not received yet (a
        // group taken over from another node): they come with the pulls.
        let mut not_here = Vec::new();
        while self.free() > 0
            && let Some(id) = self.ready.pop_first()
        {
            let m = match self.store.message(id) {
                Ok(Some(m)) => m,
                Ok(None) if id.origin != local && id.seq > self.store.held_through(id.origin) => {
                    not_here.push(id);
                    continue;
                }
                Ok(None) => {
                    // Retention removed it before it was acknowledged.
                    self.entries.remove(&id);
                    self.pending.insert(id, None);
                    self.counters.lost_to_retention += 1;
                    self.counters_dirty = true;
                    continue;
                }
                Err(e) => {
                    self.ready.insert(id);
                    self.fail(e.to_string());
                    break;
                }
            };
            let avoid = self.entries.get(&id).and_then(|e| e.last_member);
            let Some(key) = self.choose(&m, avoid) else {
                self.ready.insert(id);
                break;
            };
            self.deliver(key, &m);
        }
        self.ready.extend(not_here);
        if self.failed.is_some() {
            return;
        }
        if self.settings.strategy == Strategy::KeyHash && !self.ready.is_empty() {
            // A key's earlier messages wait for their member; newer ones must not pass them.
            return;
        }
        loop {
            let free = self
                .free()
                .min(MAX_UNSETTLED.saturating_sub(self.entries.len()));
            if free == 0 {
                return;
            }
            self.changes.borrow_and_update();
            let q = ReadQuery {
                topics: self.settings.topics.clone(),
                limit: free.min(READ_LIMIT),
                max_bytes: 1024 * 1024,
            };
            let batch = match self.store.read_cached(&q, &self.cursor) {
                Some(b) => b,
                None => {
                    let (store, cursor) = (self.store.clone(), self.cursor.clone());
                    match tokio::task::spawn_blocking(move || store.read(&q, &cursor)).await {
                        Ok(Ok(b)) => b,
                        Ok(Err(e)) => {
                            self.fail(e.to_string());
                            return;
                        }
                        Err(_) => return,
                    }
                }
            };
            if !batch.gaps.is_empty() {
                tracing::warn!(group = %self.name, streams = batch.gaps.len(),
                    "retention removed messages before the group delivered them");
            }
            if batch.cursor == self.cursor {
                return;
            }
            let mut position = self.cursor.clone();
            let mut all = true;
            for m in &batch.messages {
                match self.choose(m, None) {
                    Some(key) => {
                        position.advance(m.id.origin, m.id.seq);
                        self.deliver(key, m);
                    }
                    None => {
                        all = false;
                        break;
                    }
                }
            }
            self.cursor = if all { batch.cursor } else { position };
            self.cursor_dirty = true;
            if !all {
                return;
            }
        }
    }

    /// The error for requests once the group stopped.
    fn stopped(&self) -> Option<RouterError> {
        self.failed.as_ref().map(|e| {
            if e == SHUTTING_DOWN {
                RouterError::ShuttingDown
            } else {
                RouterError::GroupUnavailable(format!(
                    "group {} stopped after a store failure: {e}",
                    self.name
                ))
            }
        })
    }

    fn fail(&mut self, e: String) {
        tracing::error!(group = %self.name, error = %e, "group stopped: the store failed");
        self.failed = Some(e);
    }

    /// Dead-letters, persists the round's changes, then answers and sends.
    async fn flush(&mut self) {
        if !self.dead.is_empty() {
            self.dead_letter().await;
        }
        if self.failed.is_none()
            && (!self.pending.is_empty() || self.cursor_dirty || self.counters_dirty)
        {
            let mut w = GroupWrite {
                cursor: self.cursor_dirty.then(|| self.cursor.clone()),
                counters: self
                    .counters_dirty
                    .then(|| serde_json::to_vec(&self.counters).expect("counters serialise")),
                ..GroupWrite::default()
            };
            for (id, v) in self.pending.drain() {
                match v {
                    Some(n) => w.put.push((id, n)),
                    None => w.remove.push(id),
                }
            }
            self.cursor_dirty = false;
            self.counters_dirty = false;
            let (store, name) = (self.store.clone(), self.name.clone());
            match tokio::task::spawn_blocking(move || store.write_group(&name, &w)).await {
                Ok(Ok(())) => {}
                Ok(Err(StoreError::Closed)) => {
                    // The node is shutting down; what this round changed is
                    // redelivered after the restart.
                    tracing::debug!(group = %self.name, "store closed before the group's last write");
                    self.failed = Some(SHUTTING_DOWN.into());
                }
                Ok(Err(e)) => self.fail(e.to_string()),
                Err(_) => self.failed = Some(SHUTTING_DOWN.into()),
            }
        }
        for r in std::mem::take(&mut self.replies) {
            match (r, self.stopped()) {
                (Reply::Settle(tx, s), None) => {
                    let _ = tx.send(Ok(s));
                }
                (Reply::Join(tx, key, id), None) => {
                    let _ = tx.send(Ok((key, id)));
                }
                (Reply::Settle(tx, _), Some(e)) => {
                    let _ = tx.send(Err(e));
                }
                (Reply::Join(tx, _, _), Some(e)) => {
                    let _ = tx.send(Err(e));
                }
            }
        }
        if self.failed.is_some() {
            // Nothing unpersisted may reach a member.
            self.outbox.clear();
            return;
        }
        let now = Instant::now();
        for (key, message) in std::mem::take(&mut self.outbox) {
            let id = message.id;
            let delivery = match self.entries.get(&id) {
                Some(Entry {
                    deliveries,
                    state: State::Delivered { member, .. },
                    ..
                }) if *member == key => *deliveries,
                // Settled or taken back within the same round.
                _ => continue,
            };
            let sent = self
                .members
                .get(&key)
                .is_some_and(|s| s.tx.try_send(GroupDelivery { message, delivery }).is_ok());
            if !sent {
                // The member is gone (its leave is on the way).
                self.release(id);
                self.requeue(id, now, "its member disconnected");
            }
        }
    }

    /// Stores dead-letter copies of this round's dead messages.
    async fn dead_letter(&mut self) {
        let dead = std::mem::take(&mut self.dead);
        let mut copies = Vec::with_capacity(dead.len());
        for (id, n, why) in &dead {
            match self.store.message(*id) {
                Ok(Some(m)) => {
                    let n = n.to_string();
                    match dead_letter(
                        &as_append(&m),
                        why,
                        &[(GROUP_HEADER, &self.name), (DELIVERIES_HEADER, &n)],
                    ) {
                        Some(c) => copies.push(c),
                        // `$dlq.<topic>` would be longer than a topic may be.
                        None => self.counters.dead_letters_dropped += 1,
                    }
                }
                Ok(None) => self.counters.lost_to_retention += 1,
                Err(e) => {
                    tracing::error!(group = %self.name, error = %e, "reading a dead message failed")
                }
            }
        }
        let stored = copies.len() as u64;
        if !copies.is_empty() {
            let copies: Vec<Append> = copies;
            if let Err(e) = self.store.append(copies).await {
                self.fail(format!("storing dead-lettered messages: {e}"));
                return;
            }
        }
        self.counters.dead_lettered += stored;
        self.counters_dirty = true;
        for (id, _, _) in dead {
            self.pending.insert(id, None);
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_round_trip_and_bad_ones_are_refused() {
        for s in [
            "least-inflight",
            "round-robin",
            "key-hash",
            "plugin:weights",
        ] {
            assert_eq!(s.parse::<Strategy>().unwrap().to_string(), s);
        }
        for bad in ["", "random", "plugin:", "plugin:a b", "Least-Inflight"] {
            assert!(
                matches!(bad.parse::<Strategy>(), Err(RouterError::GroupSetting(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn group_names_are_checked() {
        for ok in ["workers", "a", "orders.eu-1_x", &"g".repeat(128)] {
            validate_group_name(ok).unwrap();
        }
        for bad in ["", "a b", "a/b", "é", "a\0b", &"g".repeat(129)] {
            assert!(validate_group_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn options_out_of_range_are_refused() {
        let member = |max_inflight, weight| MemberOptions {
            max_inflight,
            weight,
            ..MemberOptions::default()
        };
        let group = GroupOptions::default();
        validate_options(&group, &member(1, 1)).unwrap();
        validate_options(&group, &member(MAX_INFLIGHT, 10_000)).unwrap();
        assert!(validate_options(&group, &member(0, 1)).is_err());
        assert!(validate_options(&group, &member(MAX_INFLIGHT + 1, 1)).is_err());
        assert!(validate_options(&group, &member(1, 0)).is_err());
        let timeout = |ms| GroupOptions {
            ack_timeout: Some(Duration::from_millis(ms)),
            ..GroupOptions::default()
        };
        assert!(validate_options(&timeout(99), &member(1, 1)).is_err());
        validate_options(&timeout(100), &member(1, 1)).unwrap();
        let deliveries = |n| GroupOptions {
            max_deliveries: Some(n),
            ..GroupOptions::default()
        };
        assert!(validate_options(&deliveries(0), &member(1, 1)).is_err());
        assert!(validate_options(&deliveries(MAX_MAX_DELIVERIES + 1), &member(1, 1)).is_err());
    }

    /// Removing a member moves only that member's keys; the others keep theirs.
    #[test]
    fn rendezvous_moves_only_the_removed_members_keys() {
        let seeds: Vec<u64> = (1..=5).map(|k| rendezvous(k, b"member")).collect();
        let owner = |seeds: &[u64], key: &[u8]| {
            *seeds
                .iter()
                .max_by_key(|&&s| rendezvous(s, key))
                .expect("members")
        };
        let keys: Vec<Vec<u8>> = (0..2000).map(|i| format!("key-{i}").into_bytes()).collect();
        let before: Vec<u64> = keys.iter().map(|k| owner(&seeds, k)).collect();
        let mut counts = HashMap::new();
        for o in &before {
            *counts.entry(*o).or_insert(0) += 1;
        }
        assert!(
            counts.values().all(|&n| n > 300),
            "uneven spread: {counts:?}"
        );
        let removed = seeds[2];
        let rest: Vec<u64> = seeds.iter().copied().filter(|&s| s != removed).collect();
        for (k, b) in keys.iter().zip(&before) {
            let after = owner(&rest, k);
            if *b != removed {
                assert_eq!(after, *b, "a key of a remaining member moved");
            }
        }
    }

    #[test]
    fn settings_survive_their_record() {
        let s = Settings {
            topics: TopicSet::new(vec![
                "orders.>".parse().unwrap(),
                "audit.*".parse().unwrap(),
            ]),
            strategy: Strategy::Plugin("weights".into()),
            ack_timeout: Duration::from_millis(1500),
            max_deliveries: 3,
            created_ms: 42,
            epoch: 7,
        };
        let record = serde_json::to_vec(&s.record()).unwrap();
        let back = Settings::from_record(&serde_json::from_slice(&record).unwrap()).unwrap();
        assert_eq!(topic_names(&back.topics), topic_names(&s.topics));
        assert_eq!(back.strategy, s.strategy);
        assert_eq!(back.ack_timeout, s.ack_timeout);
        assert_eq!(back.max_deliveries, 3);
        assert_eq!(back.epoch, 7);
        let same = GroupOptions {
            strategy: Some(Strategy::Plugin("weights".into())),
            ..GroupOptions::default()
        };
        back.check("g", &s.topics, &same).unwrap();
        let other = GroupOptions {
            strategy: Some(Strategy::KeyHash),
            ..GroupOptions::default()
        };
        assert!(matches!(
            back.check("g", &s.topics, &other),
            Err(RouterError::GroupConflict(_))
        ));
        let fewer = TopicSet::new(vec!["orders.>".parse().unwrap()]);
        assert!(back.check("g", &fewer, &GroupOptions::default()).is_err());
    }
}
