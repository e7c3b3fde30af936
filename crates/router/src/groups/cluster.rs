//! Consumer groups across a cluster: one node coordinates each group, and
//! the other nodes forward its members' joins and acknowledgements to it.
//!
//! The coordinator of a group is the live member (this node included) with
//! the highest rendezvous score for the group's name, so every node that
//! sees the same members picks the same one, and a member joining or
//! leaving moves only the groups it wins or held. A group's whole state
//! (settings, position, in-flight messages, counters) is in the
//! coordinator's store. When a node starts coordinating a group it asks
//! every live peer to give the group up: a peer stops its coordinator for
//! the group, if one runs (its members' streams end, and they reconnect
//! through any node), and hands over the persisted state; once the asking
//! node has stored it, it confirms and the peer deletes its copy. Of
//! several copies the one with the highest epoch wins, and the winner's
//! epoch goes up by one. A peer that still sees itself as the
//! coordinator refuses; the asking node retries for a few seconds while
//! the membership views converge, then answers 503.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use std::sync::atomic::Ordering;

use switchyard_cluster::transport::{GroupGive, GroupSnapshot, GroupState, GroupTake, GroupTaken};
use switchyard_model::{Cursor, MessageId, NodeId};
use switchyard_store::StoredGroup;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::actor::Request;
use super::registry::Groups;
use super::settings::{Settings, SettingsRecord, validate_group_name};
use super::snapshots::{self, Choice, choose};
use crate::RouterError;

/// Longest wait for one peer's answer to a take.
const TAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a node keeps asking peers that refuse to give a group up.
const TAKE_PATIENCE: Duration = Duration::from_secs(5);
/// Longest a leaving node spends handing its groups over.
const HAND_OFF_TIME: Duration = Duration::from_secs(10);
/// Pause between rounds of asking.
const TAKE_RETRY: Duration = Duration::from_millis(200);
/// How long takes wait for a peer that the membership sees alive but that
/// answers no take (its node-to-node HTTP is unreachable while its gossip
/// gets through: a wrong `http_advertise`, a firewall, a skewed clock).
/// After that, takes go on without it, so such a peer does not stop every
/// group in the cluster; what it holds may then be delivered again.
pub(crate) const UNANSWERED_LIMIT: Duration = Duration::from_secs(20);
/// How often a node checks that it runs only the groups it coordinates
/// (see [`Groups::follow_membership`]).
const FOLLOW_EVERY: Duration = Duration::from_millis(250);
/// How long this node's view must name another node the coordinator of a
/// group running here before the group is given back, so that a view
/// that changes for a moment moves nothing.
const GIVE_BACK_AFTER: Duration = Duration::from_secs(1);

/// A node's rendezvous score for a group: a fixed, documented mix (FNV-1a
/// of the name, then SplitMix64 with the node id), so that nodes running
/// different builds agree.
pub(crate) fn owner_score(node: u64, group: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in group.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = h ^ node.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub(super) fn to_wire(g: &StoredGroup) -> GroupState {
    GroupState {
        settings: g.settings.clone(),
        cursor: g.cursor.encode(),
        counters: g.counters.clone(),
        inflight: g
            .inflight
            .iter()
            .map(|(id, n)| (id.origin.0, id.seq, *n))
            .collect(),
    }
}

pub(super) fn from_wire(name: &str, s: GroupState) -> Result<StoredGroup, String> {
    Ok(StoredGroup {
        name: name.to_owned(),
        settings: s.settings,
        cursor: s
            .cursor
            .parse::<Cursor>()
            .map_err(|e| format!("position: {e}"))?,
        counters: s.counters,
        inflight: s
            .inflight
            .into_iter()
            .map(|(origin, seq, n)| {
                (
                    MessageId {
                        origin: NodeId(origin),
                        seq,
                    },
                    n,
                )
            })
            .collect(),
    })
}

/// A copy's settings and its rank: epoch, then messages delivered.
pub(super) fn rank(g: &StoredGroup) -> Option<(SettingsRecord, (u64, u64))> {
    let record: SettingsRecord = serde_json::from_slice(&g.settings).ok()?;
    let delivered = serde_json::from_slice::<super::GroupCounters>(&g.counters)
        .map(|c| c.delivered)
        .unwrap_or(0);
    let epoch = record.epoch;
    Some((record, (epoch, delivered)))
}

/// Merges the copies of a group into one: the best-ranked copy's settings
/// and counters, each origin's highest position over all copies, and the
/// messages some copy holds in flight and no copy has settled (with their
/// most deliveries). Copies diverge when two nodes coordinated the group
/// at once (a partition); a copy is stale when a take that was never
/// confirmed left it behind, or when it is a snapshot recorded before its
/// coordinator's last rounds. Whatever one of them delivered and did not
/// see settled
/// stays in flight, to be delivered again, so nothing is dropped. A copy
/// whose position is past a message it does not hold in flight has
/// settled that message (acknowledged or dead-lettered it: a position
/// moves only past messages handed out), so a stale copy's entry for it
/// is dropped instead of delivered again; the third value counts those.
/// `None` when no copy has readable settings.
fn merge(copies: Vec<StoredGroup>) -> Option<(StoredGroup, SettingsRecord, usize)> {
    let mut ranked: Vec<(StoredGroup, SettingsRecord, (u64, u64))> = copies
        .into_iter()
        .filter_map(|g| rank(&g).map(|(record, r)| (g, record, r)))
        .collect();
    let mut position = Cursor::earliest();
    let mut inflight: std::collections::BTreeMap<MessageId, u32> = Default::default();
    for (g, _, _) in &ranked {
        for &(origin, seq) in g.cursor.entries() {
            position.advance(origin, seq);
        }
        for &(id, n) in &g.inflight {
            let e = inflight.entry(id).or_insert(n);
            *e = (*e).max(n);
        }
    }
    let held: Vec<std::collections::HashSet<MessageId>> = ranked
        .iter()
        .map(|(g, _, _)| g.inflight.iter().map(|&(id, _)| id).collect())
        .collect();
    let before = inflight.len();
    inflight.retain(|id, _| {
        !ranked
            .iter()
            .zip(&held)
            .any(|((g, _, _), held)| g.cursor.get(id.origin) >= id.seq && !held.contains(id))
    });
    let best = (0..ranked.len()).max_by_key(|&i| (ranked[i].2, std::cmp::Reverse(i)))?;
    let (mut g, record, _) = ranked.swap_remove(best);
    g.cursor = position;
    let settled = before - inflight.len();
    g.inflight = inflight.into_iter().collect();
    Some((g, record, settled))
}

/// Whether merging `incoming` into `local` would change nothing:
/// `local` ranks at least as high (its settings and counters would win),
/// is at or past `incoming`'s position for every origin, and holds each of
/// `incoming`'s messages in flight with at least as many deliveries or has
/// settled it. A peer's give-back of a copy this node has already taken
/// (the two cross when the peer gives a group back while this node takes
/// it) then leaves the running coordinator alone instead of restarting it.
fn covers(local: &StoredGroup, incoming: &StoredGroup) -> bool {
    let (Some((_, mine)), Some((_, theirs))) = (rank(local), rank(incoming)) else {
        return false;
    };
    mine >= theirs
        && incoming
            .cursor
            .entries()
            .iter()
            .all(|&(origin, seq)| local.cursor.get(origin) >= seq)
        && incoming.inflight.iter().all(|(id, n)| {
            local.cursor.get(id.origin) >= id.seq
                && local
                    .inflight
                    .iter()
                    .find(|(held, _)| held == id)
                    .is_none_or(|(_, m)| m >= n)
        })
}

/// What [`Groups::follow_membership`] carries from one check to the next.
struct Following {
    /// Each running group whose coordinator, by this node's view, is
    /// another node: that node's id, and since when it has been named.
    named: HashMap<String, (u64, Instant)>,
    /// Groups stopped here to be given back whose coordinator did not
    /// store them: they are offered again.
    unsent: std::collections::HashSet<String>,
    /// This node's gossip generation at the last check.
    generation: u64,
    /// Whether this node saw fewer than a majority of the members at the
    /// last check.
    minority: bool,
}

/// Which of the groups running here to give back ([`Groups::give_back`])
/// at `now`: `running` pairs each with the node that coordinates it as
/// this node sees the membership now (id and HTTP address; `None` for
/// this node). A group goes back once the same other node has been named
/// for [`GIVE_BACK_AFTER`] (since when is kept in `named`, updated here).
/// Returns names and addresses.
fn to_give_back(
    named: &mut HashMap<String, (u64, Instant)>,
    running: Vec<(String, Option<(u64, String)>)>,
    now: Instant,
) -> Vec<(String, String)> {
    let mut kept = HashMap::new();
    let mut due = Vec::new();
    for (name, coordinator) in running {
        let Some((node, addr)) = coordinator else {
            continue;
        };
        let since = match named.get(&name) {
            Some(&(n, since)) if n == node => since,
            _ => now,
        };
        if now.duration_since(since) >= GIVE_BACK_AFTER {
            due.push((name, addr));
        } else {
            kept.insert(name, (node, since));
        }
    }
    *named = kept;
    due
}

impl Groups {
    /// Lets the groups follow the cluster's membership.
    pub(crate) fn attach_cluster(&self, cluster: switchyard_cluster::Cluster) {
        let _ = self.cluster.set(cluster);
    }

    /// The HTTP address of the node that coordinates group `name`, when
    /// that is another node; `None` when this node coordinates it (always
    /// so outside a cluster).
    pub fn coordinator(&self, name: &str) -> Option<String> {
        self.coordinating(name).1
    }

    /// The node that coordinates group `name` as this node sees the
    /// membership: its id, and its HTTP address when it is another node.
    pub fn coordinating(&self, name: &str) -> (NodeId, Option<String>) {
        let me = self.store.node_id();
        let Some(cluster) = self.cluster.get() else {
            return (me, None);
        };
        // A node that is leaving coordinates nothing (unless it is alone).
        let mut best = if self.leaving.load(Ordering::SeqCst) {
            None
        } else {
            Some((owner_score(me.0, name), me.0, None))
        };
        for (node, addr) in cluster.peers() {
            let score = (owner_score(node, name), node);
            if best.as_ref().is_none_or(|b| score > (b.0, b.1)) {
                best = Some((score.0, node, Some(addr)));
            }
        }
        best.map_or((me, None), |b| (NodeId(b.1), b.2))
    }

    /// Before this node leaves the cluster: stops every group coordinator
    /// here and hands each group's state to the peer that coordinates it
    /// next. A group that cannot be handed over stays in this node's store.
    pub async fn hand_off(&self) {
        let Some(cluster) = self.cluster.get() else {
            return;
        };
        self.leaving.store(true, Ordering::SeqCst);
        let names = self.names();
        let deadline = tokio::time::Instant::now() + HAND_OFF_TIME;
        for name in names {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(group = %name, "no time left to hand group over; it stays in this node's store");
                continue;
            }
            let Some(addr) = self.coordinator(&name) else {
                continue;
            };
            match self.give(cluster, &name, &addr, false).await {
                Some(true) => {
                    tracing::info!(group = %name, to = %addr, "handed group over before leaving");
                }
                Some(false) => {
                    tracing::warn!(group = %name, to = %addr, "could not hand group over; it stays in this node's store");
                }
                None => {}
            }
        }
    }

    /// Gives back every group whose coordinator runs here while this
    /// node's view of the membership has named another node its
    /// coordinator for [`GIVE_BACK_AFTER`]. A coordinator that was cut off
    /// or paused long enough to be declared down, and a stand-in that took
    /// its groups over meanwhile, would otherwise both go on running a
    /// group once the views agree again: each delivering new messages to
    /// its own members, and the stand-in's members' acks relayed to the
    /// other, which does not know them. A group that could not be given
    /// back is offered again at each check while another node coordinates
    /// it. Called every [`FOLLOW_EVERY`].
    async fn give_back(&self, cluster: &switchyard_cluster::Cluster, follow: &mut Following) {
        if self.leaving.load(Ordering::SeqCst) {
            return;
        }
        let generation = cluster.generation();
        if generation != follow.generation {
            follow.generation = generation;
            self.stop_all("this node was declared down by the cluster and rejoined")
                .await;
        }
        let seen = cluster.members_seen();
        if !seen.majority() {
            if !follow.minority {
                follow.minority = true;
                tracing::warn!(
                    live = seen.live,
                    members = seen.counted,
                    "this node sees fewer than a majority of the cluster's members; it coordinates no consumer group until it sees a majority again"
                );
            }
            self.stop_all("this node sees fewer than a majority of the cluster's members")
                .await;
        } else if follow.minority {
            follow.minority = false;
            tracing::info!(
                live = seen.live,
                members = seen.counted,
                "this node sees a majority of the cluster's members again; it coordinates consumer groups"
            );
        }
        for name in std::mem::take(&mut follow.unsent) {
            // Coordinated here again, or started here since: it goes on
            // from the stored copy.
            let Some(addr) = self.coordinator(&name) else {
                continue;
            };
            if self.running(&name).is_some() {
                continue;
            }
            if !self.offer(cluster, &name, &addr, false).await {
                follow.unsent.insert(name);
            }
        }
        let running: Vec<String> = self.table.lock().running.keys().cloned().collect();
        let seen = running
            .into_iter()
            .map(|name| {
                let (node, addr) = self.coordinating(&name);
                (name, addr.map(|a| (node.0, a)))
            })
            .collect();
        for (name, addr) in to_give_back(&mut follow.named, seen, Instant::now()) {
            if !self.offer(cluster, &name, &addr, true).await {
                follow.unsent.insert(name);
            }
        }
    }

    /// Gives group `name` back to the node at `addr` with [`Groups::give`]
    /// (`first`: a group running here, rather than a copy offered again)
    /// and logs how it went. `false` when that node did not store it.
    async fn offer(
        &self,
        cluster: &switchyard_cluster::Cluster,
        name: &str,
        addr: &str,
        first: bool,
    ) -> bool {
        match self.give(cluster, name, addr, first).await {
            Some(true) => {
                tracing::info!(group = %name, to = %addr, "gave a group back to the node that coordinates it");
                true
            }
            Some(false) if first => {
                tracing::warn!(group = %name, to = %addr, "could not give a group back; it stays in this node's store and is offered again every second");
                false
            }
            Some(false) => {
                tracing::debug!(group = %name, to = %addr, "could not give a group back yet");
                false
            }
            None => true,
        }
    }

    /// Follows the membership until `stop` turns `true`: see
    /// [`Groups::give_back`].
    pub(crate) async fn follow_membership(
        self: std::sync::Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let Some(cluster) = self.cluster.get().cloned() else {
            return;
        };
        let mut follow = Following {
            named: HashMap::new(),
            unsent: std::collections::HashSet::new(),
            generation: cluster.generation(),
            minority: false,
        };
        let mut tick = tokio::time::interval(FOLLOW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Only `true` is ever sent; a dropped sender stops too.
                _ = stop.changed() => break,
                _ = tick.tick() => self.give_back(&cluster, &mut follow).await,
            }
        }
    }

    /// Whether this node may start coordinating a group: always outside a
    /// cluster; in one, only while it sees a majority of the members it
    /// knows ([`switchyard_cluster::Cluster::members_seen`]). During a
    /// partition only the side that holds a majority runs the groups, so
    /// the two sides do not both deliver them and, when the partition
    /// heals, the other side does not deliver again what this side
    /// delivered meanwhile. Coordinators already running on a side that
    /// lost its majority are stopped by [`Groups::give_back`].
    fn may_coordinate(&self) -> Result<(), RouterError> {
        let Some(cluster) = self.cluster.get() else {
            return Ok(());
        };
        let seen = cluster.members_seen();
        if seen.majority() {
            return Ok(());
        }
        Err(RouterError::GroupUnavailable(format!(
            "node {} sees {} of the {} cluster members it knows, not a majority: consumer groups are coordinated only on a side of the cluster that sees a majority; retry through another node",
            self.store.node_id(),
            seen.live,
            seen.counted
        )))
    }

    /// Stops every group coordinator here, keeping each group's state in
    /// the store, not running: after this node was declared down, another
    /// node may have taken its groups over, so none goes on from where it
    /// stood. The next use of a group takes it again ([`Groups::ensure`]),
    /// merging what the other node did meanwhile.
    async fn stop_all(&self, why: &str) {
        let running: Vec<String> = self.table.lock().running.keys().cloned().collect();
        for name in running {
            let _start = self.start_lock(&name).await;
            if self.running(&name).is_none() {
                continue;
            }
            if let Err(e) = self.release(&name).await {
                tracing::warn!(group = %name, error = %e, "could not stop a group");
                continue;
            }
            // Loaded again, not running: the interest in its topics stays.
            if let Err(e) = self.reload(&name).await {
                tracing::warn!(group = %name, error = %e, "could not load a stopped group again");
            }
            tracing::info!(group = %name, why, "stopped a group; its next use takes it again");
        }
    }

    /// Stops group `name`'s coordinator here (persisting its last round)
    /// and hands the group's state to the node at `addr`, which stores it
    /// merged with its own copy; then deletes the copy here. With
    /// `only_running`, a group whose coordinator does not run here is left
    /// alone. `None` when there was nothing to hand over, otherwise whether
    /// the other node stored it; a state it did not store stays in this
    /// node's store, loaded but not running, for a later take.
    ///
    /// The start lock is not held while the other node is asked: that node
    /// may be taking the group from this one at the same time, under its
    /// own start lock, and this node's answer to its take needs this one.
    async fn give(
        &self,
        cluster: &switchyard_cluster::Cluster,
        name: &str,
        addr: &str,
        only_running: bool,
    ) -> Option<bool> {
        let state = {
            let _start = self.start_lock(name).await;
            if only_running && self.running(name).is_none() {
                return None;
            }
            match self.release(name).await {
                Ok(Some(g)) => g,
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(group = %name, error = %e, "could not stop a group to hand it over");
                    return None;
                }
            }
        };
        let req = GroupGive {
            name: name.to_owned(),
            state: to_wire(&state),
        };
        if !matches!(
            cluster.client().give_group(addr, &req, TAKE_TIMEOUT).await,
            Ok(true)
        ) {
            // Kept here, loaded but not running, as at the node's start.
            let _start = self.start_lock(name).await;
            if let Err(e) = self.reload(name).await {
                tracing::warn!(group = %name, error = %e, "could not load a group that was not handed over");
            }
            return Some(false);
        }
        let _start = self.start_lock(name).await;
        if let Err(e) = self.forget_copy(name).await {
            tracing::warn!(group = %name, error = %e, "handed group over, but could not delete the local copy");
        }
        Some(true)
    }

    /// Deletes this node's stored copy of group `name` once another node
    /// has stored it: only that copy, not one loaded or started here since.
    /// Call with the group's start lock held.
    async fn forget_copy(&self, name: &str) -> Result<(), RouterError> {
        if self.table.lock().holds(name) {
            return Ok(());
        }
        let (store, n) = (self.store.clone(), name.to_owned());
        Ok(tokio::task::spawn_blocking(move || store.delete_group(&n))
            .await
            .map_err(|_| RouterError::ShuttingDown)??)
    }

    /// Stops group `name`'s coordinator here, if it runs, and returns the
    /// group's persisted state (still stored). Call with the group's start
    /// lock held.
    async fn release(&self, name: &str) -> Result<Option<StoredGroup>, RouterError> {
        let running = self.table.lock().running.remove(name);
        if let Some(h) = running {
            let (reply, done) = oneshot::channel();
            if h.requests.send(Request::Release { reply }).await.is_ok() {
                let _ = done.await;
            }
        }
        {
            let mut table = self.table.lock();
            table.dormant.remove(name);
            table.behind.remove(name);
        }
        let store = self.store.clone();
        let n = name.to_owned();
        Ok(tokio::task::spawn_blocking(move || store.group(&n))
            .await
            .map_err(|_| RouterError::ShuttingDown)??)
    }

    /// Stores a group handed over by a leaving peer (merged with any copy
    /// here: the best one wins).
    pub async fn receive(&self, give: GroupGive) -> Result<bool, RouterError> {
        validate_group_name(&give.name)?;
        let g = from_wire(&give.name, give.state).map_err(RouterError::Cluster)?;
        let _start = self.start_lock(&give.name).await;
        if self.running(&give.name).is_some() {
            let (store, n) = (self.store.clone(), give.name.clone());
            let local = tokio::task::spawn_blocking(move || store.group(&n))
                .await
                .map_err(|_| RouterError::ShuttingDown)??;
            if local.is_some_and(|local| covers(&local, &g)) {
                tracing::info!(group = %give.name, "a peer gave back a group whose state this node already holds");
                return Ok(true);
            }
        }
        // A coordinator started here meanwhile stops; it restarts from the
        // merged state on next use.
        self.release(&give.name).await?;
        self.adopt(&give.name, vec![g], Vec::new()).await?;
        Ok(true)
    }

    /// The running coordinator of `name`, taking the group over from the
    /// peers first when this node is part of a cluster, and starting it
    /// from the store. `None` when no node holds the group. Call with the
    /// group's start lock held.
    pub(super) async fn ensure(
        &self,
        name: &str,
    ) -> Result<Option<super::registry::Handle>, RouterError> {
        if let Some(h) = self.running(name) {
            return Ok(Some(h));
        }
        if validate_group_name(name).is_err() {
            // No node holds a group of that name: the peers need not be
            // asked (they refuse the name).
            return Ok(None);
        }
        self.may_coordinate()?;
        self.reload(name).await?;
        if self.cluster.get().is_some() {
            self.gather(name).await?;
            self.catch_up(name).await;
        }
        self.start(name)
    }

    /// Loads this node's stored copy of group `name`, if any, as a group
    /// not running, as at the node's start, when the node holds it neither
    /// running nor loaded: a copy released here and kept (handed to a peer
    /// that did not store it or has not confirmed yet, or stopped because
    /// this node was declared down) goes on from where it stood instead of
    /// a new group being created in its place. Call with the group's start
    /// lock held.
    async fn reload(&self, name: &str) -> Result<(), RouterError> {
        if self.table.lock().holds(name) {
            return Ok(());
        }
        let (store, n) = (self.store.clone(), name.to_owned());
        let Some(g) = tokio::task::spawn_blocking(move || store.group(&n))
            .await
            .map_err(|_| RouterError::ShuttingDown)??
        else {
            return Ok(());
        };
        let guard = rank(&g)
            .and_then(|(record, _)| Settings::from_record(&record).ok())
            .map(|s| self.interest.add(&s.topics));
        let mut table = self.table.lock();
        if !table.running.contains_key(name) {
            table.dormant.insert(name.to_owned(), (g, guard));
        }
        Ok(())
    }

    /// Fetches from the peers the older messages a stored group still has
    /// to deliver (after its position, and those in flight) that this node
    /// does not hold. Call with the group's start lock held.
    async fn catch_up(&self, name: &str) {
        let Some(cluster) = self.cluster.get() else {
            return;
        };
        let group = self.table.lock().dormant.get(name).map(|(g, _)| g.clone());
        let Some(g) = group else {
            return;
        };
        let Some((record, _)) = rank(&g) else {
            return;
        };
        let Ok(settings) = Settings::from_record(&record) else {
            return;
        };
        let mut lowest: std::collections::BTreeMap<NodeId, u64> =
            g.cursor.entries().iter().copied().collect();
        for (id, _) in &g.inflight {
            if let Some(l) = lowest.get_mut(&id.origin) {
                *l = (*l).min(id.seq.saturating_sub(1));
            }
        }
        let mut from = Cursor::earliest();
        for (origin, seq) in lowest {
            from.advance(origin, seq);
        }
        // The group's patterns are in the interest (the stored group holds
        // them): the watermarks taken now are where the pulls took over.
        let held = {
            let _gate = self.interest.gate.write().await;
            self.store.visible()
        };
        crate::feeds::catch_up(
            &self.store,
            &self.interest,
            cluster,
            &settings.topics,
            &from,
            &held,
        )
        .await;
        let behind = self
            .interest
            .not_held(self.store.node_id(), &settings.topics, &from, &held);
        let mut table = self.table.lock();
        if behind.is_empty() {
            table.behind.remove(name);
        } else {
            table.behind.insert(name.to_owned(), behind);
        }
    }

    /// Collects the group's state from every live peer, keeping the best
    /// copy (with the local one) as this node's, with its epoch raised.
    ///
    /// Every live peer must answer: one that cannot be reached, or that
    /// refuses while it still coordinates the group, is asked again until
    /// [`TAKE_PATIENCE`] runs out, when the take fails with
    /// `503 unavailable`. Going on without it would resume the group from
    /// an older state than the one that peer may hold (a stand-in's, after
    /// a split) and deliver again what it delivered. A peer declared down
    /// meanwhile is no longer waited for; its recorded state is then read
    /// again, here and from the peers that answered before it was declared
    /// down. What the peers hand over is adopted once, with the recorded
    /// states of coordinators that are gone, so that the epoch this take
    /// raises does not hide a snapshot as new as the copies.
    async fn gather(&self, name: &str) -> Result<(), RouterError> {
        let Some(cluster) = self.cluster.get() else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + TAKE_PATIENCE;
        let mut live: BTreeSet<u64> = cluster.peers().into_iter().map(|(n, _)| n).collect();
        // What coordinators that are gone recorded, should no live copy be
        // as new: this node's copies of their logs, and the peers'.
        let mut own_snapshots = self.dead_snapshots(name, None).await;
        let mut peer_snapshots: BTreeMap<u64, Vec<GroupSnapshot>> = BTreeMap::new();
        // What the peers handed over, with the addresses that confirm it.
        let mut copies: Vec<(String, StoredGroup)> = Vec::new();
        // Peers that answered, and whether they handed a copy over.
        let mut answered: BTreeMap<u64, bool> = BTreeMap::new();
        let outcome = loop {
            if let Some(addr) = self.coordinator(name) {
                break Err(RouterError::GroupUnavailable(format!(
                    "group {name} is coordinated by the node at {addr}; retry there or through any node"
                )));
            }
            let peers = cluster.peers();
            let now_live: BTreeSet<u64> = peers.iter().map(|(n, _)| *n).collect();
            if live.difference(&now_live).next().is_some() {
                // A peer was declared down: what it recorded now counts,
                // and the peers that found nothing before may hold it.
                own_snapshots = self.dead_snapshots(name, None).await;
                answered.retain(|_, gave| *gave);
                peer_snapshots.clear();
            }
            live = now_live;
            // A peer that was declared down starts anew when it is back.
            self.unanswered.lock().retain(|n, _| live.contains(n));
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let wait = TAKE_TIMEOUT.min(left).max(TAKE_RETRY);
            let req = GroupTake {
                name: name.to_owned(),
                confirm: false,
                live: Some(
                    live.iter()
                        .copied()
                        .chain([self.store.node_id().0])
                        .collect(),
                ),
            };
            let mut calls = tokio::task::JoinSet::new();
            for (node, addr) in peers.into_iter().filter(|(n, _)| !answered.contains_key(n)) {
                let (client, req) = (cluster.client().clone(), req.clone());
                calls.spawn(async move {
                    let answer = client.take_group(&addr, &req, wait).await;
                    (node, addr, answer)
                });
            }
            let mut waiting_for = None;
            while let Some(joined) = calls.join_next().await {
                let Ok((node, addr, answer)) = joined else {
                    continue;
                };
                if answer.is_ok() {
                    self.unanswered.lock().remove(&node);
                }
                match answer {
                    Ok(GroupTaken::Absent) => {
                        answered.insert(node, false);
                    }
                    Ok(GroupTaken::State(state)) => match from_wire(name, state) {
                        Ok(g) => {
                            answered.insert(node, true);
                            copies.push((addr, g));
                        }
                        Err(e) => {
                            answered.insert(node, false);
                            tracing::warn!(group = name, peer = %addr, error = %e, "a peer handed over an unusable group state");
                        }
                    },
                    Ok(GroupTaken::Snapshots(found)) => {
                        answered.insert(node, false);
                        peer_snapshots
                            .insert(node, found.into_iter().filter(|s| s.name == name).collect());
                    }
                    Ok(GroupTaken::Refused(why)) => waiting_for = Some(why),
                    Err(e) => {
                        // It may hold a newer copy, or still coordinate
                        // the group: asked again until it answers or is
                        // declared down, for a while.
                        let since = *self
                            .unanswered
                            .lock()
                            .entry(node)
                            .or_insert_with(tokio::time::Instant::now);
                        if since.elapsed() >= UNANSWERED_LIMIT {
                            answered.insert(node, false);
                            tracing::warn!(group = name, peer = %addr, error = %e, "taking a group over without a live peer that has answered no take for 20 s");
                        } else {
                            tracing::debug!(group = name, peer = %addr, error = %e, "could not ask a peer for a group's state");
                            waiting_for = Some(format!("the node at {addr} did not answer: {e}"));
                        }
                    }
                }
            }
            let Some(why) = waiting_for else {
                break Ok(());
            };
            if tokio::time::Instant::now() + TAKE_RETRY >= deadline {
                tracing::warn!(group = name, reason = %why, "gave up taking a group over");
                break Err(RouterError::GroupUnavailable(format!(
                    "group {name} is moving between nodes ({why}); retry shortly"
                )));
            }
            tokio::time::sleep(TAKE_RETRY).await;
        };
        // Whatever was handed over is kept, even when the take failed, and
        // then the peers that handed it over delete their copies.
        let snapshots: Vec<GroupSnapshot> = own_snapshots
            .into_iter()
            .chain(peer_snapshots.into_values().flatten())
            .collect();
        let (givers, states): (Vec<String>, Vec<StoredGroup>) = copies.into_iter().unzip();
        if !states.is_empty() || (outcome.is_ok() && !snapshots.is_empty()) {
            self.adopt(name, states, snapshots).await?;
        }
        let confirm = GroupTake {
            name: name.to_owned(),
            confirm: true,
            live: None,
        };
        let mut confirms = tokio::task::JoinSet::new();
        for addr in givers {
            let (client, req) = (cluster.client().clone(), confirm.clone());
            confirms.spawn(async move {
                if let Err(e) = client.take_group(&addr, &req, TAKE_TIMEOUT).await {
                    // Its copy stays, with a lower epoch than this one.
                    tracing::warn!(peer = %addr, error = %e, "could not confirm a group take-over");
                }
            });
        }
        while confirms.join_next().await.is_some() {}
        outcome
    }

    /// Keeps the best of `copies`, this node's stored copy and the
    /// `snapshots` of coordinators that are gone (see [`choose`]), durably;
    /// deletes this node's copy when the latest record is the group's
    /// deletion.
    async fn adopt(
        &self,
        name: &str,
        mut copies: Vec<StoredGroup>,
        snapshots: Vec<GroupSnapshot>,
    ) -> Result<(), RouterError> {
        let store = self.store.clone();
        let n = name.to_owned();
        if let Some(local) = tokio::task::spawn_blocking(move || store.group(&n))
            .await
            .map_err(|_| RouterError::ShuttingDown)??
        {
            copies.push(local);
        }
        let from_snapshots = snapshots.len();
        let copies = match choose(copies, snapshots) {
            Choice::Merge(copies) => copies,
            Choice::Deleted => {
                tracing::info!(
                    group = name,
                    "the group's latest record, by a coordinator that is gone, is its deletion"
                );
                let (store, n) = (self.store.clone(), name.to_owned());
                tokio::task::spawn_blocking(move || store.delete_group(&n))
                    .await
                    .map_err(|_| RouterError::ShuttingDown)??;
                self.table.lock().dormant.remove(name);
                return Ok(());
            }
        };
        if copies.is_empty() {
            return Ok(());
        }
        if from_snapshots > 0 {
            tracing::info!(
                group = name,
                snapshots = from_snapshots,
                "resuming a group from the state its coordinator recorded before it was gone"
            );
        }
        let total = copies.len();
        let Some((mut g, mut record, settled)) = merge(copies) else {
            tracing::warn!(group = name, "no copy of the group has readable settings");
            return Ok(());
        };
        record.epoch += 1;
        let settings = Settings::from_record(&record)
            .map_err(|e| RouterError::GroupSetting(format!("group {name}: settings: {e}")))?;
        g.settings = serde_json::to_vec(&record).expect("settings serialise");
        let (store, copy) = (self.store.clone(), g.clone());
        tokio::task::spawn_blocking(move || store.put_group(&copy))
            .await
            .map_err(|_| RouterError::ShuttingDown)??;
        tracing::info!(
            group = name,
            epoch = record.epoch,
            inflight = g.inflight.len(),
            copies = total,
            settled_elsewhere = settled,
            "took over group state from a peer"
        );
        let guard = self.interest.add(&settings.topics);
        self.table
            .lock()
            .dormant
            .insert(name.to_owned(), (g, Some(guard)));
        Ok(())
    }

    /// Gives group `name` up to the node that now coordinates it: stops its
    /// coordinator here (persisting its last round) and hands over the
    /// stored state, which stays stored until the taker confirms (then,
    /// with `confirm`, it is deleted). Refused while this node still sees
    /// itself as the coordinator.
    ///
    /// Holding no copy, it answers with the snapshots of the coordinators
    /// that it or the asking node (which sees `live` live) sees gone.
    pub async fn surrender(
        &self,
        name: &str,
        confirm: bool,
        live: Option<&[u64]>,
    ) -> Result<GroupTaken, RouterError> {
        validate_group_name(name)?;
        let _start = self.start_lock(name).await;
        if confirm {
            self.forget_copy(name).await?;
            return Ok(GroupTaken::Absent);
        }
        if self.cluster.get().is_some() && self.coordinator(name).is_none() {
            return Ok(GroupTaken::Refused(format!(
                "node {} still coordinates group {name} as it sees the membership",
                self.store.node_id()
            )));
        }
        let stored = self.release(name).await?;
        Ok(match stored {
            Some(g) => {
                tracing::info!(
                    group = name,
                    inflight = g.inflight.len(),
                    "handed group state to its new coordinator"
                );
                GroupTaken::State(to_wire(&g))
            }
            None => {
                let found = self.dead_snapshots(name, live).await;
                if found.is_empty() {
                    GroupTaken::Absent
                } else {
                    GroupTaken::Snapshots(found)
                }
            }
        })
    }

    /// The latest snapshot of group `name` that each coordinator no longer
    /// a live member recorded, as this node holds their logs. With
    /// `also_live`, a member counts as live only when that list names it
    /// too (another node's view).
    async fn dead_snapshots(&self, name: &str, also_live: Option<&[u64]>) -> Vec<GroupSnapshot> {
        let Some(cluster) = self.cluster.get() else {
            return Vec::new();
        };
        if cluster.replication_factor() < 2 {
            return Vec::new();
        }
        let live: Vec<u64> = cluster
            .peers()
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| also_live.is_none_or(|l| l.contains(n)))
            .collect();
        let (store, n) = (self.store.clone(), name.to_owned());
        match tokio::task::spawn_blocking(move || snapshots::read_dead(&store, &n, &live)).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                tracing::warn!(group = name, error = %e, "could not read the group's snapshots");
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_are_stable_and_spread() {
        // Fixed values: every build must agree on them.
        assert_eq!(owner_score(1, "g"), owner_score(1, "g"));
        let nodes = [11u64, 22, 33];
        let mut wins = [0usize; 3];
        for i in 0..3000 {
            let g = format!("group-{i}");
            let best = (0..3).max_by_key(|&j| owner_score(nodes[j], &g)).unwrap();
            wins[best] += 1;
        }
        for w in wins {
            assert!((800..1200).contains(&w), "{wins:?}");
        }
    }

    fn copy(
        epoch: u64,
        delivered: u64,
        cursor: &[(u64, u64)],
        inflight: &[(u64, u64, u32)],
    ) -> StoredGroup {
        let record = SettingsRecord {
            topics: vec!["t.>".into()],
            strategy: "least-inflight".into(),
            ack_timeout_ms: 1000,
            max_deliveries: 5,
            created_ms: 0,
            epoch,
        };
        let mut c = Cursor::earliest();
        for &(o, s) in cursor {
            c.advance(NodeId(o), s);
        }
        StoredGroup {
            name: "g".into(),
            settings: serde_json::to_vec(&record).unwrap(),
            cursor: c,
            counters: format!("{{\"delivered\":{delivered}}}").into_bytes(),
            inflight: inflight
                .iter()
                .map(|&(o, s, n)| {
                    (
                        MessageId {
                            origin: NodeId(o),
                            seq: s,
                        },
                        n,
                    )
                })
                .collect(),
        }
    }

    /// A copy's in-flight entries as (origin, seq, deliveries).
    fn inflight(g: &StoredGroup) -> Vec<(u64, u64, u32)> {
        g.inflight
            .iter()
            .map(|(id, n)| (id.origin.0, id.seq, *n))
            .collect()
    }

    #[test]
    fn merged_copies_keep_every_unsettled_message_and_the_highest_positions() {
        // Two coordinators during a partition: each delivered and kept in
        // flight messages the other never saw, (1, 18) and (2, 8); both
        // hold (1, 19).
        let a = copy(3, 40, &[(1, 20), (2, 5)], &[(1, 18, 1), (1, 19, 2)]);
        let b = copy(3, 30, &[(1, 12), (2, 9)], &[(1, 19, 3), (2, 8, 1)]);
        let (g, record, _) = merge(vec![b, a]).unwrap();
        // The settings and counters of the better copy (more delivered).
        assert_eq!(record.epoch, 3);
        assert_eq!(g.counters, b"{\"delivered\":40}");
        assert_eq!(g.cursor.get(NodeId(1)), 20);
        assert_eq!(g.cursor.get(NodeId(2)), 9);
        assert_eq!(inflight(&g), [(1, 18, 1), (1, 19, 3), (2, 8, 1)]);
    }

    #[test]
    fn a_message_one_copy_settled_is_not_delivered_again_from_another() {
        // `old`, a copy of an earlier epoch that went on alone for a while,
        // holds (1, 11) and (1, 15) in flight; `new`, whose position is
        // past both, settled (1, 11) and holds (1, 15) again. (1, 30) is
        // past `new`'s position: only `old` delivered it.
        let old = copy(2, 10, &[(1, 30)], &[(1, 11, 1), (1, 15, 1), (1, 30, 1)]);
        let new = copy(3, 50, &[(1, 20), (2, 4)], &[(1, 15, 2), (2, 3, 1)]);
        for copies in [vec![old.clone(), new.clone()], vec![new, old]] {
            let (g, record, settled) = merge(copies).unwrap();
            assert_eq!(record.epoch, 3);
            assert_eq!(settled, 1);
            assert_eq!(g.cursor.get(NodeId(1)), 30);
            assert_eq!(inflight(&g), [(1, 15, 2), (1, 30, 1), (2, 3, 1)]);
        }
    }

    #[test]
    fn the_later_epoch_wins_the_settings_and_unreadable_copies_are_ignored() {
        let old = copy(1, 500, &[(1, 50)], &[]);
        let new = copy(2, 10, &[(1, 30)], &[(1, 29, 1)]);
        let mut junk = copy(9, 900, &[(1, 90)], &[(1, 89, 1)]);
        junk.settings = b"not json".to_vec();
        let (g, record, _) = merge(vec![old, junk, new]).unwrap();
        assert_eq!(record.epoch, 2);
        assert_eq!(g.cursor.get(NodeId(1)), 50);
        // `old` settled (1, 29): its position is past it.
        assert!(g.inflight.is_empty());
        assert!(
            merge(
                vec![copy(1, 1, &[], &[])]
                    .into_iter()
                    .map(|mut c| {
                        c.settings = Vec::new();
                        c
                    })
                    .collect()
            )
            .is_none()
        );
    }

    #[test]
    fn a_group_goes_back_once_the_same_other_node_is_named_for_a_second() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let node = |n: u64| Some((n, format!("127.0.0.1:{n}")));
        let mut named = HashMap::new();
        let mut check = |ms: u64, seen: &[(&str, Option<(u64, String)>)]| {
            let seen = seen
                .iter()
                .map(|(g, c)| ((*g).to_owned(), c.clone()))
                .collect();
            to_give_back(&mut named, seen, at(ms))
        };
        // First sight of another coordinator: nothing moves yet.
        assert!(check(0, &[("a", node(2)), ("b", None), ("c", node(3))]).is_empty());
        assert!(check(999, &[("a", node(2)), ("b", None), ("c", node(3))]).is_empty());
        // a has named node 2 for a second; c's coordinator changed, b is
        // this node's.
        assert_eq!(
            check(1000, &[("a", node(2)), ("b", None), ("c", node(4))]),
            [("a".to_owned(), "127.0.0.1:2".to_owned())]
        );
        // A view back to this node in between starts over.
        assert!(check(1500, &[("c", None)]).is_empty());
        assert!(check(1750, &[("c", node(4))]).is_empty());
        assert!(check(2500, &[("c", node(4))]).is_empty());
        assert_eq!(check(2750, &[("c", node(4))]).len(), 1);
        // A group no longer running is forgotten.
        assert!(check(3000, &[("d", node(5))]).is_empty());
        assert!(check(3500, &[]).is_empty());
        assert!(check(4000, &[("d", node(5))]).is_empty());
        assert_eq!(check(5000, &[("d", node(5))]).len(), 1);
    }

    #[test]
    fn a_copy_covers_another_it_is_at_or_past_in_every_way() {
        let local = copy(3, 50, &[(1, 40), (2, 10)], &[(1, 38, 2), (2, 9, 1)]);
        // Older, behind, its in-flight entries held here or settled here.
        let stale = copy(2, 30, &[(1, 39), (2, 10)], &[(1, 38, 1), (1, 35, 1)]);
        assert!(covers(&local, &stale));
        assert!(covers(&local, &local.clone()));
        // Further along one origin, or an origin this copy never read.
        assert!(!covers(&local, &copy(2, 30, &[(1, 41)], &[])));
        assert!(!covers(&local, &copy(2, 30, &[(3, 1)], &[])));
        // More deliveries of a message held in flight here.
        assert!(!covers(&local, &copy(2, 30, &[(1, 38)], &[(1, 38, 3)])));
        // A higher rank: its settings and counters would win.
        assert!(!covers(&local, &copy(4, 0, &[], &[])));
        assert!(!covers(&local, &copy(3, 51, &[], &[])));
    }

    #[test]
    fn state_survives_the_wire() {
        let g = StoredGroup {
            name: "g".into(),
            settings: b"{}".to_vec(),
            cursor: Cursor::earliest(),
            counters: Vec::new(),
            inflight: vec![(
                MessageId {
                    origin: NodeId(9),
                    seq: 4,
                },
                2,
            )],
        };
        let back = from_wire("g", to_wire(&g)).unwrap();
        assert_eq!(back.inflight, g.inflight);
        assert_eq!(back.cursor, g.cursor);
    }
}
