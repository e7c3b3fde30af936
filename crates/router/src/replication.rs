//! Acknowledgement modes: how many copies of a published message must exist
//! before the publish is answered. The origin learns how far each replica
//! holds its log from the replicas' own pulls: a replica asks for the
//! whole log after what it has stored, so each of its feed requests
//! reports its progress, and no extra message is needed.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use parking_lot::Mutex;
use switchyard_cluster::Cluster;
use switchyard_model::NodeId;
use tokio::sync::watch;

use crate::RouterError;

/// Default time a publish waits for its copies.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// How many copies of a message must exist before its publish is answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Acks {
    /// On the accepting node (as durable as its fsync mode).
    Local,
    /// On a majority of the origin and its replicas.
    #[default]
    Quorum,
    /// On the origin and every live replica, and never fewer than
    /// [`Acks::Quorum`] asks for.
    All,
}

impl fmt::Display for Acks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Acks::Local => "local",
            Acks::Quorum => "quorum",
            Acks::All => "all",
        })
    }
}

impl FromStr for Acks {
    type Err = RouterError;
    fn from_str(s: &str) -> Result<Self, RouterError> {
        match s {
            "local" => Ok(Acks::Local),
            "quorum" => Ok(Acks::Quorum),
            "all" => Ok(Acks::All),
            _ => Err(RouterError::InvalidAcks(format!(
                "acks={s:?}; expected local, quorum or all"
            ))),
        }
    }
}

/// How far each replica holds this node's log.
pub(crate) struct Progress {
    through: Mutex<HashMap<NodeId, u64>>,
    changed: watch::Sender<u64>,
}

impl Progress {
    pub(crate) fn new() -> Progress {
        Progress {
            through: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
        }
    }

    /// Node `node` holds this node's log through `through`.
    pub(crate) fn record(&self, node: NodeId, through: u64) {
        let moved = {
            let mut map = self.through.lock();
            let e = map.entry(node).or_insert(0);
            let moved = through > *e;
            *e = (*e).max(through);
            moved
        };
        if moved {
            self.changed.send_modify(|v| *v += 1);
        }
    }

    /// Copies of this node's message `seq` now: this node, and each live
    /// replica that holds it.
    fn copies(&self, cluster: &Cluster, me: NodeId, seq: u64) -> usize {
        let mut live: Vec<u64> = cluster.peers().into_iter().map(|(n, _)| n).collect();
        live.push(me.0);
        let through = self.through.lock();
        1 + live
            .iter()
            .filter(|&&n| n != me.0 && cluster.replicates(n, me.0, &live))
            .filter(|&&n| through.get(&NodeId(n)).is_some_and(|&t| t >= seq))
            .count()
    }

    /// Waits until `acks` is met for this node's messages up to `seq`, at
    /// most `timeout`. Returns the copies reached and whether that is
    /// enough.
    pub(crate) async fn wait(
        &self,
        cluster: &Cluster,
        me: NodeId,
        seq: u64,
        acks: Acks,
        timeout: Duration,
    ) -> (usize, usize, bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.changed.subscribe();
        loop {
            changed.borrow_and_update();
            let needed = needed(cluster, me, acks);
            let copies = self.copies(cluster, me, seq);
            if copies >= needed {
                return (copies, needed, true);
            }
            tokio::select! {
                _ = changed.changed() => {}
                // Membership changes move what is needed.
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                () = tokio::time::sleep_until(deadline) => return (copies, needed, false),
            }
        }
    }
}

/// Replication as one node sees it, for `GET /v1/cluster`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReplicationStatus {
    /// The replication factor (the origin included).
    pub factor: usize,
    /// Every origin among the known members, with its replicas.
    pub origins: Vec<OriginReplicas>,
    /// Origins with fewer live replicas than `factor - 1`.
    pub under_replicated: usize,
}

/// One origin's replicas.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OriginReplicas {
    /// The origin's node id.
    pub origin: String,
    /// Its membership state.
    pub state: switchyard_cluster::MemberState,
    /// The live members that copy its log now.
    pub replicas: Vec<ReplicaView>,
}

/// One replica of an origin.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReplicaView {
    /// The replica's node id.
    pub node: String,
    /// How far it holds the origin's log, where this node knows it: for
    /// this node's own log (from the replica's pulls), and for an origin
    /// this node replicates itself (its own watermark).
    pub through: Option<u64>,
}

impl Progress {
    /// The replication status (see [`ReplicationStatus`]); `held` gives
    /// this node's watermark for an origin.
    pub(crate) fn status(
        &self,
        cluster: &Cluster,
        me: NodeId,
        held: impl Fn(NodeId) -> u64,
    ) -> ReplicationStatus {
        let factor = cluster.replication_factor();
        let members = cluster.members();
        let live: Vec<u64> = members
            .iter()
            .filter(|m| {
                matches!(
                    m.state,
                    switchyard_cluster::MemberState::Alive
                        | switchyard_cluster::MemberState::Suspect
                )
            })
            .filter_map(|m| u64::from_str_radix(&m.id, 16).ok())
            .collect();
        let through = self.through.lock().clone();
        let mut origins = Vec::new();
        let mut under = 0;
        for m in &members {
            if m.state == switchyard_cluster::MemberState::Left {
                continue;
            }
            let Ok(origin) = u64::from_str_radix(&m.id, 16) else {
                continue;
            };
            let replicas: Vec<ReplicaView> = live
                .iter()
                .filter(|&&n| cluster.replicates(n, origin, &live))
                .map(|&n| ReplicaView {
                    node: NodeId(n).to_string(),
                    through: if origin == me.0 {
                        through.get(&NodeId(n)).copied()
                    } else if n == me.0 {
                        Some(held(NodeId(origin)))
                    } else {
                        None
                    },
                })
                .collect();
            if replicas.len() < factor.saturating_sub(1) {
                under += 1;
            }
            origins.push(OriginReplicas {
                origin: m.id.clone(),
                state: m.state,
                replicas,
            });
        }
        ReplicationStatus {
            factor,
            origins,
            under_replicated: under,
        }
    }
}

/// Copies `acks` asks for: a majority of the replication factor, capped by
/// the members known (down ones count, so that a side of a partition does
/// not reach a quorum alone), or the origin and every live replica.
/// Copies `acks` asks for of a message of origin `me`.
pub(crate) fn needed(cluster: &Cluster, me: NodeId, acks: Acks) -> usize {
    let factor = cluster.replication_factor().min(cluster.known_members());
    let quorum = factor / 2 + 1;
    match acks {
        Acks::Local => 1,
        Acks::Quorum => quorum,
        // Every live replica, and never fewer than a quorum: an origin cut
        // off from its replicas sees none live, and would otherwise count
        // its own copy as all.
        Acks::All => {
            let mut live: Vec<u64> = cluster.peers().into_iter().map(|(n, _)| n).collect();
            live.push(me.0);
            let replicas = live
                .iter()
                .filter(|&&n| n != me.0 && cluster.replicates(n, me.0, &live))
                .count();
            (1 + replicas).max(quorum)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        for s in ["local", "quorum", "all"] {
            assert_eq!(s.parse::<Acks>().expect("valid").to_string(), s);
        }
        for bad in ["", "one", "Quorum", "majority"] {
            assert!(bad.parse::<Acks>().is_err(), "{bad:?}");
        }
    }
}
