//! The coordinator task of one group: a thin loop around the
//! [`GroupState`] that owns the group's I/O. It takes requests from a
//! bounded channel, reads messages from the store, calls pick plugins,
//! persists each round's changes in one atomic store write, stores
//! dead-letter copies, and only then answers the requests and sends the
//! round's messages to the members' connections.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use switchyard_model::{Cursor, Message, MessageId, NodeId, TopicSet};
use switchyard_plugin_host::Candidate;
use switchyard_store::{Append, GroupWrite, ReadQuery, Store, StoreError};
use tokio::sync::{mpsc, oneshot, watch};

use super::registry::Behind;
use super::snapshots::{self, SNAPSHOT_INTERVAL};
use super::state::{
    DeadLetter, DeadLetterOutcome, GroupCommand, GroupState, Lookup, MemberKey, Picker,
};
use super::types::{GroupDelivery, GroupInfo, GroupOptions, MemberOptions, Settle, Settled};
use super::{DELIVERIES_HEADER, GROUP_HEADER};
use crate::RouterError;
use crate::feeds::InterestGuard;
use crate::plugins::{Plugins, as_append, dead_letter};
use crate::subscription::{RECOVERY_RETRY, RECOVERY_RETRY_MAX, Recovery};

/// Commands handled per round before the round's work is persisted.
const ROUND_COMMANDS: usize = 512;
/// Most messages read from the log (or looked up for redelivery) at once.
const READ_LIMIT: usize = 256;
/// Most bytes of messages read from the log at once.
const READ_BYTES: usize = 1024 * 1024;

/// A request to a group's coordinator task.
pub(super) enum Request {
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

/// Why a group stopped serving requests.
#[derive(Debug)]
enum Stopped {
    /// The node is shutting down: what the last round changed is delivered
    /// again after the restart.
    ShuttingDown,
    /// The store refused a write or a read.
    StoreFailed(String),
}

enum Reply {
    Settle(oneshot::Sender<Result<Settled, RouterError>>, Settled),
    Join(
        oneshot::Sender<Result<(u64, String), RouterError>>,
        u64,
        String,
    ),
}

/// Calls pick plugins for the state machine.
struct PluginPicker<'a>(&'a Plugins);

impl Picker for PluginPicker<'_> {
    fn pick(
        &mut self,
        plugin: &str,
        message: &Message,
        candidates: &[Candidate],
    ) -> Result<Option<usize>, String> {
        self.0
            .pick(plugin, message, candidates)
            .map_err(|e| e.to_string())
    }
}

/// The current time as the state machine takes it: tokio's clock, so that
/// tests with a paused clock drive the group's timers.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

pub(super) struct Actor {
    state: GroupState,
    store: Arc<Store>,
    plugins: Arc<Plugins>,
    changes: watch::Receiver<u64>,
    /// Each connected member's queue.
    senders: HashMap<MemberKey, mpsc::Sender<GroupDelivery>>,
    /// Member id prefix: node id and run tag.
    node: String,
    next_member: Arc<AtomicU64>,
    replies: Vec<Reply>,
    stopped: Option<Stopped>,
    deleted: bool,
    /// Set when another node takes the group over: answered once the last
    /// round is persisted.
    released: Option<oneshot::Sender<()>>,
    /// Keeps the group's patterns in the node's interest while it runs.
    _interest: InterestGuard,
    /// Origins held back (see [`Actor::hold_back`]).
    behind: Behind,
    /// How far the group reads each origin held back (see
    /// [`ReadQuery::hold`]).
    hold: BTreeMap<NodeId, u64>,
    /// How to fetch what is held back.
    recovery: Option<Recovery>,
    /// Whether the group's state is recorded in the origin log (see
    /// [`super::snapshots`]), and when it next may be, once it changed.
    snapshots: bool,
    snapshot_due: Option<tokio::time::Instant>,
    last_snapshot: Option<tokio::time::Instant>,
}

impl Actor {
    /// A coordinator for `state`.
    pub(super) fn new(
        state: GroupState,
        store: Arc<Store>,
        plugins: Arc<Plugins>,
        node: String,
        next_member: Arc<AtomicU64>,
        interest: InterestGuard,
    ) -> Actor {
        Actor {
            state,
            changes: store.changes(),
            store,
            plugins,
            senders: HashMap::new(),
            node,
            next_member,
            replies: Vec::new(),
            stopped: None,
            deleted: false,
            released: None,
            _interest: interest,
            behind: Behind::new(),
            hold: BTreeMap::new(),
            recovery: None,
            snapshots: false,
            snapshot_due: None,
            last_snapshot: None,
        }
    }

    /// Records the group's state in the node's origin log when it starts
    /// and, at most every [`SNAPSHOT_INTERVAL`], whenever it changed, so
    /// that replication carries it to the node's replicas.
    pub(super) fn record_snapshots(&mut self) {
        self.snapshots = true;
        self.snapshot_due = Some(tokio::time::Instant::now());
    }

    /// A round persisted changes: a snapshot is due.
    fn changed(&mut self) {
        if !self.snapshots || self.snapshot_due.is_some() {
            return;
        }
        let now = tokio::time::Instant::now();
        let earliest = self.last_snapshot.map_or(now, |t| t + SNAPSHOT_INTERVAL);
        self.snapshot_due = Some(earliest.max(now));
    }

    /// Records the group's persisted state in the origin log.
    async fn snapshot(&mut self) {
        self.snapshot_due = None;
        self.last_snapshot = Some(tokio::time::Instant::now());
        if self.stopped.is_some() || self.deleted {
            return;
        }
        if let Err(e) = snapshots::record(&self.store, self.state.name()).await {
            // The next change tries again; meanwhile a failover resumes
            // from an older snapshot (messages delivered again, none lost).
            tracing::warn!(group = %self.state.name(), error = %e, "could not record the group's state in the log");
        }
    }

    /// Holds back the origins of `behind`: the group reads nothing of them
    /// (its position in them stays, and an in-flight message of theirs
    /// that is not here waits) until a catch-up through `recovery`, tried
    /// every second while the origin is a live peer, fetches the range.
    pub(super) fn hold_back(&mut self, behind: Behind, recovery: Recovery) {
        self.behind = behind;
        self.recovery = Some(recovery);
        self.set_hold_limits();
    }

    /// How far the group reads each origin held back: what this node is
    /// known to hold of it from the group's position there (nothing, or up
    /// to where a catch-up got).
    fn set_hold_limits(&mut self) {
        self.hold = match &self.recovery {
            Some(r) => r.interest.hold_limits(
                &self.state.settings().topics,
                self.state.cursor(),
                self.behind.keys(),
            ),
            None => BTreeMap::new(),
        };
    }

    /// Tries the catch-up again for the origins held back (from the origin
    /// when it is a live peer, else from any live peer that holds the
    /// range), and releases those it completed. Returns whether it
    /// released any.
    async fn recover(&mut self) -> bool {
        let Some(r) = &self.recovery else {
            return false;
        };
        if r.cluster.peers().is_empty() {
            return false;
        }
        let before = self.behind.len();
        let mut from = Cursor::earliest();
        let mut until = std::collections::BTreeMap::new();
        for (&origin, &(after, through)) in &self.behind {
            from.advance(origin, after);
            until.insert(origin, through);
        }
        let topics = self.state.settings().topics.clone();
        crate::feeds::catch_up(&r.store, &r.interest, &r.cluster, &topics, &from, &until).await;
        let interest = r.interest.clone();
        let cursor = self.state.cursor();
        self.behind.retain(|&origin, &mut (after, _)| {
            !interest.holds(&topics, origin, after.max(cursor.get(origin)))
        });
        if self.behind.is_empty() {
            tracing::info!(group = %self.state.name(), "group caught up with the origins it held back");
            self.recovery = None;
        }
        self.set_hold_limits();
        self.behind.len() < before
    }

    /// Runs until the group is deleted or released, or the node shuts down.
    /// `leaves` carries the keys of members whose connection ended; it is
    /// unbounded because a member leaves from `Drop`, which cannot wait,
    /// and it holds at most one key per member ever joined, drained before
    /// any other request.
    pub(super) async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut leaves: mpsc::UnboundedReceiver<u64>,
    ) {
        // Deliver what waited (queue semantics, restart) before any request.
        self.round().await;
        // Kept across loops, so that busy rounds do not put the retry off.
        let mut recovery_delay = RECOVERY_RETRY;
        let mut next_recovery = tokio::time::Instant::now() + recovery_delay;
        loop {
            let next_timer = self.state.next_timer();
            let can_read = self.stopped.is_none() && self.state.has_room();
            tokio::select! {
                r = requests.recv() => match r {
                    Some(r) => self.request(r).await,
                    None => break,
                },
                Some(key) = leaves.recv() => self.leave(key),
                r = self.changes.changed(), if can_read => {
                    if r.is_err() {
                        break;
                    }
                }
                () = sleep_until(next_timer), if next_timer.is_some() => {}
                () = sleep_until(self.snapshot_due.map(|t| t.into_std())), if self.snapshot_due.is_some() => {
                    self.snapshot().await;
                    continue;
                }
                () = tokio::time::sleep_until(next_recovery), if !self.behind.is_empty() => {
                    recovery_delay = if self.recover().await {
                        RECOVERY_RETRY
                    } else {
                        (recovery_delay * 2).min(RECOVERY_RETRY_MAX)
                    };
                    next_recovery = tokio::time::Instant::now() + recovery_delay;
                }
            }
            for _ in 0..ROUND_COMMANDS {
                if self.deleted || self.released.is_some() {
                    break;
                }
                if let Ok(key) = leaves.try_recv() {
                    self.leave(key);
                    continue;
                }
                match requests.try_recv() {
                    Ok(r) => self.request(r).await,
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
        let now = now();
        self.state.tick(now);
        self.dispatch(now).await;
        self.flush().await;
    }

    async fn request(&mut self, r: Request) {
        match r {
            Request::Join {
                topics,
                options,
                member,
                tx,
                reply,
            } => match self.join(&topics, &options, member, tx) {
                Ok((key, id)) => self.replies.push(Reply::Join(reply, key, id)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Request::Settle {
                member,
                ids,
                op,
                reply,
            } => {
                let r = match self.stopped_error() {
                    Some(e) => Err(e),
                    None => self
                        .state
                        .apply(GroupCommand::Settle { member, ids, op }, now())
                        .map(|a| match a {
                            super::state::Applied::Settled(s) => s,
                            _ => Settled::default(),
                        }),
                };
                match (r, reply) {
                    (Ok(s), Some(reply)) => self.replies.push(Reply::Settle(reply, s)),
                    (Err(e), Some(reply)) => {
                        let _ = reply.send(Err(e));
                    }
                    (_, None) => {}
                }
            }
            Request::Info { reply } => {
                let mut info = self.state.info(now());
                info.coordinator = self.store.node_id().to_string();
                let _ = reply.send((
                    info,
                    self.state.settings().topics.clone(),
                    self.state.cursor().clone(),
                ));
            }
            Request::Delete { reply } => {
                let _ = reply.send(self.delete().await);
            }
            Request::Release { reply } => {
                tracing::info!(group = %self.state.name(), members = self.state.member_count(), "group handed to the node that now coordinates it");
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
        if let Some(e) = self.stopped_error() {
            return Err(e);
        }
        self.state
            .settings()
            .check(self.state.name(), topics, options)?;
        let key = self.next_member.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{key}", self.node);
        let cmd = GroupCommand::Join {
            key,
            id: id.clone(),
            options: m,
        };
        self.state.apply(cmd, now())?;
        self.senders.insert(key, tx);
        tracing::debug!(group = %self.state.name(), member = %id, "member joined");
        Ok((key, id))
    }

    fn leave(&mut self, key: MemberKey) {
        if self.senders.remove(&key).is_none() {
            return;
        }
        tracing::debug!(group = %self.state.name(), member = ?self.state.member_id(key), "member left");
        // Leaving cannot fail.
        let _ = self.state.apply(GroupCommand::Leave { key }, now());
    }

    async fn delete(&mut self) -> Result<(), RouterError> {
        let members = self.state.member_count();
        if members > 0 {
            return Err(RouterError::GroupConflict(format!(
                "group {} has {members} connected members; disconnect them first",
                self.state.name()
            )));
        }
        let (store, name) = (self.store.clone(), self.state.name().to_owned());
        let stored = tokio::task::spawn_blocking(move || {
            let stored = store.group(&name)?;
            store.delete_group(&name).map(|()| stored)
        })
        .await
        .map_err(|_| RouterError::ShuttingDown)??;
        if self.snapshots
            && let Some(g) = stored
            && let Err(e) = snapshots::record_deleted(&self.store, &g).await
        {
            // Deleted here; a failover to a replica may bring it back.
            tracing::warn!(group = %self.state.name(), error = %e, "could not record the group's deletion in the log");
        }
        self.deleted = true;
        self.state.discard_changes();
        Ok(())
    }

    /// Hands out messages while members have room: first those due for
    /// redelivery, then new ones from the log.
    async fn dispatch(&mut self, now: std::time::Instant) {
        if self.stopped.is_some() || self.state.member_count() == 0 {
            return;
        }
        let plugins = self.plugins.clone();
        // A pick plugin's calls run on the plugin threads (see
        // `Plugins::pick`).
        let mut picker = PluginPicker(&plugins);
        let mut after = None;
        loop {
            let ids = self.state.ready_ids(after, READ_LIMIT);
            let Some(&last) = ids.last() else {
                break;
            };
            after = Some(last);
            let found = match self.lookup(ids).await {
                Ok(f) => f,
                Err(e) => {
                    self.fail(e);
                    return;
                }
            };
            if !self.state.redeliver(found, &mut picker, now) {
                break;
            }
        }
        loop {
            let room = self.state.room();
            if room == 0 {
                return;
            }
            self.changes.borrow_and_update();
            let q = ReadQuery {
                topics: self.state.settings().topics.clone(),
                limit: room.min(READ_LIMIT),
                max_bytes: READ_BYTES,
                hold: self.hold.clone(),
            };
            let cursor = self.state.cursor().clone();
            let batch = match self.store.read_cached(&q, &cursor) {
                Some(b) => b,
                None => {
                    let store = self.store.clone();
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
                tracing::warn!(group = %self.state.name(), streams = batch.gaps.len(),
                    "retention removed messages before the group delivered them");
            }
            if batch.cursor == *self.state.cursor() {
                return;
            }
            if !self
                .state
                .offer(&batch.messages, &batch.cursor, &mut picker, now)
            {
                return;
            }
        }
    }

    /// Looks up messages due for redelivery, in one blocking task.
    async fn lookup(&self, ids: Vec<MessageId>) -> Result<Vec<(MessageId, Lookup)>, String> {
        let store = self.store.clone();
        let behind: Vec<NodeId> = self.behind.keys().copied().collect();
        tokio::task::spawn_blocking(move || {
            let local = store.node_id();
            ids.into_iter()
                .map(|id| match store.message(id) {
                    Ok(Some(m)) => Ok((id, Lookup::Found(m))),
                    // Of an origin held back: it may come with the catch-up.
                    Ok(None) if behind.contains(&id.origin) => Ok((id, Lookup::NotHere)),
                    // A message of another origin this node has not received
                    // yet (a group taken over from another node): it comes
                    // with the pulls.
                    Ok(None) if id.origin != local && id.seq > store.held_through(id.origin) => {
                        Ok((id, Lookup::NotHere))
                    }
                    Ok(None) => Ok((id, Lookup::Gone)),
                    Err(e) => Err(e.to_string()),
                })
                .collect()
        })
        .await
        .map_err(|_| "the node is shutting down".to_owned())?
    }

    /// The error for requests once the group stopped.
    fn stopped_error(&self) -> Option<RouterError> {
        self.stopped.as_ref().map(|s| match s {
            Stopped::ShuttingDown => RouterError::ShuttingDown,
            Stopped::StoreFailed(e) => RouterError::GroupUnavailable(format!(
                "group {} stopped after a store failure: {e}",
                self.state.name()
            )),
        })
    }

    fn fail(&mut self, e: String) {
        tracing::error!(group = %self.state.name(), error = %e, "group stopped: the store failed");
        self.stopped = Some(Stopped::StoreFailed(e));
    }

    /// Dead-letters, persists the round's changes, then answers and sends.
    async fn flush(&mut self) {
        let dead = self.state.take_dead_letters();
        if !dead.is_empty() && self.stopped.is_none() {
            self.dead_letter(dead).await;
        }
        if self.stopped.is_none() {
            let c = self.state.take_changes();
            if !c.is_empty() {
                let w = GroupWrite {
                    cursor: c.cursor,
                    counters: c
                        .counters
                        .map(|c| serde_json::to_vec(&c).expect("counters serialise")),
                    put: c.put,
                    remove: c.remove,
                };
                let (store, name) = (self.store.clone(), self.state.name().to_owned());
                match tokio::task::spawn_blocking(move || store.write_group(&name, &w)).await {
                    Ok(Ok(())) => self.changed(),
                    Ok(Err(StoreError::Closed)) | Err(_) => {
                        tracing::debug!(group = %self.state.name(), "store closed before the group's last write");
                        self.stopped = Some(Stopped::ShuttingDown);
                    }
                    Ok(Err(e)) => self.fail(e.to_string()),
                }
            }
        }
        for r in std::mem::take(&mut self.replies) {
            let stopped = self.stopped_error();
            match r {
                Reply::Settle(tx, s) => {
                    let _ = tx.send(stopped.map_or(Ok(s), Err));
                }
                Reply::Join(tx, key, id) => {
                    let joined = stopped.is_none();
                    if tx.send(stopped.map_or(Ok((key, id)), Err)).is_err() && joined {
                        // The joining request went away before its answer:
                        // no member holds this slot, so nobody would leave it.
                        self.leave(key);
                    }
                }
            }
        }
        if self.stopped.is_some() {
            // Nothing unpersisted may reach a member.
            self.state.drop_deliveries();
            return;
        }
        let now = now();
        for o in self.state.take_deliveries() {
            let id = o.message.id;
            let sent = match self.senders.get(&o.member) {
                Some(tx) => tx.try_send(GroupDelivery {
                    message: o.message,
                    delivery: o.delivery,
                }),
                None => {
                    self.state.undeliverable(o.member, id, now);
                    continue;
                }
            };
            match sent {
                Ok(()) => {}
                // Its queue is full (it cannot be: the queue holds
                // max_inflight): deliver it again.
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.state.undeliverable(o.member, id, now);
                }
                // The member's connection is gone: it leaves (its own leave
                // may be on the way too; a second one changes nothing).
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.state.undeliverable(o.member, id, now);
                    self.leave(o.member);
                }
            }
        }
    }

    /// Stores dead-letter copies of this round's dead messages.
    async fn dead_letter(&mut self, dead: Vec<DeadLetter>) {
        let store = self.store.clone();
        let ids: Vec<MessageId> = dead.iter().map(|d| d.id).collect();
        let Ok(found) = tokio::task::spawn_blocking(move || {
            ids.into_iter()
                .map(|id| store.message(id))
                .collect::<Vec<_>>()
        })
        .await
        else {
            self.stopped = Some(Stopped::ShuttingDown);
            return;
        };
        let name = self.state.name().to_owned();
        let mut outcome = DeadLetterOutcome::default();
        let mut copies: Vec<Append> = Vec::with_capacity(dead.len());
        for (d, m) in dead.iter().zip(found) {
            match m {
                Ok(Some(m)) => {
                    let n = d.deliveries.to_string();
                    match dead_letter(
                        &as_append(&m),
                        &d.reason,
                        &[(GROUP_HEADER, &name), (DELIVERIES_HEADER, &n)],
                    ) {
                        Some(c) => copies.push(c),
                        // `$dlq.<topic>` would be longer than a topic may be.
                        None => outcome.dropped += 1,
                    }
                }
                Ok(None) => outcome.lost += 1,
                Err(e) => {
                    tracing::error!(group = %name, error = %e, "reading a dead message failed");
                }
            }
        }
        outcome.stored = copies.len() as u64;
        if !copies.is_empty()
            && let Err(e) = self.store.append(copies).await
        {
            self.fail(format!("storing dead-lettered messages: {e}"));
            return;
        }
        self.state.dead_letters_stored(outcome);
    }
}

async fn sleep_until(t: Option<std::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}
