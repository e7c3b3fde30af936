//! The router's background work, owned by the router and stopped by
//! [`crate::Router::shutdown`]: while the node is part of a cluster, one
//! task stores membership events on `$sys.cluster` and keeps one pull
//! running per live peer (see [`crate::feeds`]), and one per origin that is
//! gone but whose log a live peer holds (pulled through that peer),
//! starting and stopping pulls as the membership changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use switchyard_cluster::{Cluster, ClusterEvent};
use switchyard_model::{Header, NodeId, Topic};
use switchyard_store::{Append, Store};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};

use crate::feeds::{Interest, Pull};

/// How often the pulls are compared with the live peers even without a
/// membership event (events are dropped when their queue is full).
const RESYNC: Duration = Duration::from_secs(5);
/// Longest the router waits for a background task to stop.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// The background tasks and the signal that stops them.
pub(crate) struct Background {
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Background {
    pub(crate) fn new() -> Background {
        Background {
            stop: watch::channel(false).0,
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Runs `task` until it ends or [`Background::stop`] is called; it gets
    /// a receiver that turns `true` when it should stop.
    pub(crate) fn spawn<F>(&self, task: impl FnOnce(watch::Receiver<bool>) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let handle = tokio::spawn(task(self.stop.subscribe()));
        let mut tasks = self.tasks.lock();
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    /// Asks every task to stop and waits for them (each is aborted after
    /// [`STOP_WAIT`]).
    pub(crate) async fn stop(&self) {
        self.stop.send_replace(true);
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for mut t in tasks {
            if tokio::time::timeout(STOP_WAIT, &mut t).await.is_err() {
                t.abort();
                let _ = t.await;
            }
        }
    }

    /// Asks every task to stop and aborts them, without waiting (for
    /// callers outside the runtime).
    pub(crate) fn abort(&self) {
        self.stop.send_replace(true);
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

/// One pull per live peer.
struct Pulls {
    store: Arc<Store>,
    interest: Arc<Interest>,
    cluster: Cluster,
    set: JoinSet<()>,
    /// Per peer: its address, whether this node replicates it, the task.
    running: HashMap<u64, (String, bool, AbortHandle)>,
    /// Per origin that is gone but whose log a live peer holds: the
    /// peer's address, whether this node replicates the origin, the task
    /// pulling the origin's log through that peer.
    relayed: HashMap<u64, (String, bool, AbortHandle)>,
}

impl Pulls {
    /// Starts a pull for each live peer without one, and stops those of
    /// peers gone or moved to another address.
    fn sync(&mut self) {
        let peers: HashMap<u64, String> = self.cluster.peers().into_iter().collect();
        let me = self.store.node_id().0;
        let mut live: Vec<u64> = peers.keys().copied().collect();
        live.push(me);
        let replicated: HashMap<u64, bool> = peers
            .keys()
            .map(|&n| (n, self.cluster.replicates(me, n, &live)))
            .collect();
        self.running.retain(|node, (addr, replica, task)| {
            let keep = peers.get(node) == Some(addr)
                && replicated.get(node) == Some(replica)
                && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        // A live peer this node does not replicate (any longer, or since
        // before a restart): its log is no longer copied whole from here
        // on. (A peer gone keeps what was copied: it stays complete up to
        // the watermark.)
        for (&node, &replica) in &replicated {
            if !replica && self.interest.has_full(NodeId(node)) {
                self.interest.drop_full(NodeId(node));
                crate::feeds::persist_full(&self.store, &self.interest, NodeId(node));
            }
        }
        for (node, addr) in peers {
            if self.running.contains_key(&node) {
                continue;
            }
            let replica = replicated.get(&node).copied().unwrap_or(false);
            let task = self.spawn(node, &addr, replica, false);
            self.running.insert(node, (addr, replica, task));
        }
        self.sync_relayed(&peers_by_id(&self.cluster), &live);
    }

    /// Starts the pull of `origin`'s log from the node at `addr`.
    fn spawn(&mut self, origin: u64, addr: &str, replica: bool, relayed: bool) -> AbortHandle {
        let pull = Pull {
            store: self.store.clone(),
            interest: self.interest.clone(),
            cluster: self.cluster.clone(),
            peer: NodeId(origin),
            addr: addr.to_owned(),
            replica,
            relayed,
        };
        self.set.spawn(pull.run())
    }

    /// Asks the live peers, in the background, which origins that are
    /// gone they hold (see [`crate::feeds::discover`]).
    fn discover(&mut self) {
        let (interest, cluster) = (self.interest.clone(), self.cluster.clone());
        self.set
            .spawn(async move { crate::feeds::discover(&interest, &cluster).await });
    }

    /// Starts a pull through a holding peer for each origin that is gone
    /// but whose log a live peer holds (as a replica when this node is one
    /// of the origin's replicas among the live members, so that replicas
    /// lost with a node are replaced), and stops those of origins back
    /// alive or whose holder is gone.
    fn sync_relayed(&mut self, peers: &HashMap<u64, String>, live: &[u64]) {
        let me = self.store.node_id().0;
        let orphans: HashMap<u64, (String, bool)> = self
            .interest
            .orphans(peers)
            .into_iter()
            .filter(|(o, _, _)| o.0 != me)
            // A node that holds such a log whole keeps copying it whole:
            // it may be the last holder the others can copy it from.
            .map(|(o, addr, _)| {
                let replica = self.cluster.replicates(me, o.0, live) || self.interest.has_full(o);
                (o.0, (addr, replica))
            })
            .collect();
        self.relayed.retain(|origin, (addr, replica, task)| {
            let keep =
                orphans.get(origin) == Some(&(addr.clone(), *replica)) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (origin, (addr, replica)) in orphans {
            if self.relayed.contains_key(&origin) {
                continue;
            }
            tracing::info!(origin = %NodeId(origin), through = %addr, replica, "pulling the log of an origin that is gone through a node that holds it");
            let task = self.spawn(origin, &addr, replica, true);
            self.relayed.insert(origin, (addr, replica, task));
        }
    }
}

fn peers_by_id(cluster: &Cluster) -> HashMap<u64, String> {
    cluster.peers().into_iter().collect()
}

/// Stores membership events and follows the membership with pulls until
/// `stop` turns `true`.
pub(crate) async fn cluster_task(
    store: Arc<Store>,
    interest: Arc<Interest>,
    cluster: Cluster,
    mut events: mpsc::Receiver<ClusterEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let topic: Topic = match crate::CLUSTER_EVENTS_TOPIC.parse() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "the cluster events topic is invalid");
            return;
        }
    };
    let mut pulls = Pulls {
        store: store.clone(),
        interest,
        cluster,
        set: JoinSet::new(),
        running: HashMap::new(),
        relayed: HashMap::new(),
    };
    if *stop.borrow_and_update() {
        return;
    }
    pulls.sync();
    pulls.discover();
    let mut events_open = true;
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // Only `true` is ever sent; a dropped sender stops too.
            _ = stop.changed() => break,
            e = events.recv(), if events_open => match e {
                Some(e) => {
                    store_event(&store, &topic, &e).await;
                    pulls.sync();
                    pulls.discover();
                }
                None => events_open = false,
            },
            // A pull ends only when aborted; the set is drained here.
            Some(_) = pulls.set.join_next() => {}
            () = pulls.interest.orphans_found.notified() => pulls.sync(),
            _ = resync.tick() => {
                pulls.sync();
                pulls.discover();
            }
        }
    }
    pulls.set.shutdown().await;
}

async fn store_event(store: &Store, topic: &Topic, e: &ClusterEvent) {
    let body = match serde_json::to_vec(e) {
        Ok(b) => b,
        Err(err) => {
            tracing::warn!(error = %err, "encoding a cluster event failed");
            return;
        }
    };
    let mut a = Append::new(topic.clone(), body.into());
    a.headers.push(Header {
        name: "content-type".into(),
        value: "application/json".into(),
    });
    if let Err(err) = store.append(vec![a]).await {
        tracing::warn!(error = %err, "storing a cluster event failed");
    }
}
