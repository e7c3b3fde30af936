//! The exchange of the cluster binding table between nodes (anti-entropy,
//! with no coordinator):
//!
//! - when this node changes the table (a `PUT` or `DELETE` with
//!   `scope=cluster`), it sends its digest to every live peer; a peer that
//!   sees from the digest that it is behind pulls from this node at once;
//! - every [`SYNC_EVERY`] it syncs with one more live peer, in turn, so a
//!   node that joined late, missed a push or returns after a partition
//!   converges within a few rounds;
//! - after each exchange it applies what it has yet to apply, fetching a
//!   component it lacks by sha256 from the peer that sent the entry (then
//!   any other live peer), verifying the hash before it compiles it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use switchyard_cluster::Cluster;
use switchyard_cluster::rollout::{
    Entry as TableEntry, NodeStatus, StatusRequest, SyncAnswer, SyncRequest,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::Plugins;
use super::cluster::NEED_COMPONENT;
use super::rollout::Applied;

/// How often a node syncs its table with one more peer.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);
/// Longest wait for a sync or status answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a component.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Peers waiting to be pulled from (a sync showed they hold news); more
/// are dropped, the periodic sync covers them.
pub(crate) const PULL_QUEUE: usize = 64;

impl Plugins {
    /// Answers a peer's sync: the entries this node holds newer than its
    /// digest. When the digest shows the peer holds newer entries, this
    /// node pulls from it soon.
    pub fn answer_sync(&self, sender: u64, req: &SyncRequest) -> SyncAnswer {
        if self.table_behind(&req.digest)
            && let Some(tx) = self.pulls.get()
        {
            let _ = tx.try_send(sender);
        }
        SyncAnswer {
            entries: self.table_newer_than(&req.digest),
        }
    }

    /// Largest component this node fetches from a peer (set from
    /// `plugins.max_upload_bytes`).
    pub fn set_max_component(&self, bytes: usize) {
        self.max_component.store(bytes, Ordering::Relaxed);
    }
}

/// Runs the exchange until `stop` turns `true`.
pub(crate) async fn sync_task(
    plugins: Arc<Plugins>,
    cluster: Cluster,
    mut pulls: mpsc::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let changed = plugins.table_changed();
    let mut tick = tokio::time::interval(SYNC_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut turn = 0usize;
    let sync = Sync { plugins, cluster };
    if *stop.borrow_and_update() {
        return;
    }
    loop {
        tokio::select! {
            // Only `true` is ever sent; a dropped sender stops too.
            _ = stop.changed() => break,
            () = changed.notified() => sync.with_all().await,
            Some(node) = pulls.recv() => {
                let peer = sync.cluster.peers().into_iter().find(|(id, _)| *id == node);
                if let Some((id, addr)) = peer {
                    sync.with(id, &addr).await;
                }
            }
            _ = tick.tick() => {
                let mut peers = sync.cluster.peers();
                peers.sort();
                if let Some((id, addr)) = peers.get(turn % peers.len().max(1)).cloned() {
                    sync.with(id, &addr).await;
                } else {
                    sync.apply(None).await;
                }
                turn = turn.wrapping_add(1);
            }
        }
    }
}

struct Sync {
    plugins: Arc<Plugins>,
    cluster: Cluster,
}

impl Sync {
    /// Sends this node's digest to every live peer at once (each that is
    /// behind pulls back), takes their newer entries, and applies.
    async fn with_all(&self) {
        let digest = SyncRequest {
            digest: self.plugins.table_digest(),
        };
        let mut set = JoinSet::new();
        for (id, addr) in self.cluster.peers() {
            let (client, digest) = (self.cluster.client().clone(), digest.clone());
            set.spawn(async move {
                let answer = client.sync_plugins(&addr, &digest, CALL_TIMEOUT).await;
                (id, addr, answer)
            });
        }
        let mut got = Vec::new();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((_, _, Ok(answer))) => got.extend(answer.entries),
                Ok((id, _, Err(e))) => {
                    tracing::debug!(peer = %switchyard_model::NodeId(id), error = %e, "plugin table sync failed")
                }
                Err(_) => {}
            }
        }
        self.merge(got).await;
        self.apply(None).await;
    }

    /// Syncs with one peer and applies.
    async fn with(&self, id: u64, addr: &str) {
        let digest = SyncRequest {
            digest: self.plugins.table_digest(),
        };
        match self
            .cluster
            .client()
            .sync_plugins(addr, &digest, CALL_TIMEOUT)
            .await
        {
            Ok(answer) => self.merge(answer.entries).await,
            Err(e) => {
                tracing::debug!(peer = %switchyard_model::NodeId(id), error = %e, "plugin table sync failed")
            }
        }
        self.apply(Some(addr)).await;
    }

    async fn merge(&self, entries: Vec<TableEntry>) {
        if entries.is_empty() {
            return;
        }
        let plugins = self.plugins.clone();
        let _ = tokio::task::spawn_blocking(move || plugins.merge_entries(entries)).await;
    }

    /// Applies what is yet to apply; a component not held here is fetched
    /// from `first` (the peer just synced with), then the other live peers.
    async fn apply(&self, first: Option<&str>) {
        for entry in self.plugins.to_apply() {
            let outcome = self.apply_one(&entry, None).await;
            if !matches!(&outcome, Some(Applied::Pending(w)) if w == NEED_COMPONENT) {
                continue;
            }
            let Some(sha) = entry.binding.as_ref().map(|d| d.sha256.clone()) else {
                continue;
            };
            let mut peers: Vec<String> = self.cluster.peers().into_iter().map(|(_, a)| a).collect();
            if let Some(f) = first {
                peers.retain(|a| a != f);
                peers.insert(0, f.to_owned());
            }
            let max = self.plugins.max_component.load(Ordering::Relaxed);
            for addr in peers {
                match self
                    .cluster
                    .client()
                    .fetch_component(&addr, &sha, max, FETCH_TIMEOUT)
                    .await
                {
                    Ok(answer) => {
                        if let Some(bytes) = answer.bytes {
                            let outcome = self.apply_one(&entry, Some(bytes)).await;
                            if !matches!(outcome, Some(Applied::Pending(_))) {
                                break;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(peer = %addr, sha256 = %sha, error = %e, "fetching a plugin component failed")
                    }
                }
            }
        }
    }

    async fn apply_one(&self, entry: &TableEntry, bytes: Option<Vec<u8>>) -> Option<Applied> {
        let (plugins, entry) = (self.plugins.clone(), entry.clone());
        tokio::task::spawn_blocking(move || plugins.apply_entry(&entry, bytes.as_deref()))
            .await
            .ok()
    }
}

/// What one member runs of a cluster binding, for the rollout view.
#[derive(Clone, Debug)]
pub struct MemberRollout {
    /// Node id (16 hex digits).
    pub node: String,
    /// Its HTTP address.
    pub http_addr: String,
    /// Whether it is this node.
    pub is_self: bool,
    /// What it runs; `None` when its table has no entry of that name yet.
    pub status: Result<Option<NodeStatus>, String>,
}

/// What every live member runs of binding `name`: this node's own status
/// and each live peer's answer (or why it gave none).
pub async fn rollout(plugins: &Plugins, cluster: &Cluster, name: &str) -> Vec<MemberRollout> {
    let names = vec![name.to_owned()];
    let mut out = vec![MemberRollout {
        node: switchyard_model::NodeId(cluster.local_id()).to_string(),
        http_addr: cluster.http_addr().to_owned(),
        is_self: true,
        status: Ok(plugins.node_status(&names).into_iter().next()),
    }];
    let mut set = JoinSet::new();
    for (id, addr) in cluster.peers() {
        let client = cluster.client().clone();
        let req = StatusRequest {
            names: names.clone(),
        };
        set.spawn(async move {
            let answer = client.plugin_status(&addr, &req, CALL_TIMEOUT).await;
            (id, addr, answer)
        });
    }
    let mut peers = Vec::new();
    while let Some(joined) = set.join_next().await {
        if let Ok((id, addr, answer)) = joined {
            peers.push(MemberRollout {
                node: switchyard_model::NodeId(id).to_string(),
                http_addr: addr,
                is_self: false,
                status: answer
                    .map(|a| a.bindings.into_iter().find(|s| s.name == name))
                    .map_err(|e| e.to_string()),
            });
        }
    }
    peers.sort_by(|a, b| a.node.cmp(&b.node));
    out.extend(peers);
    out
}
