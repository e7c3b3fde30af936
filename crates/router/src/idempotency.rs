//! Idempotency across a cluster. A message published with an
//! `Idempotency-Key` carries the key to every node that holds a copy (see
//! [`switchyard_model::IDEMPOTENCY_HEADER`]), so a repeat on any of them is
//! answered with the original. A repeat can also reach a node that holds
//! no copy yet: a retry moved to another node after the first one failed,
//! or a node that just returned with an empty disk. So before storing a
//! keyed message whose key it does not know, a node in a replicated
//! cluster asks its live peers (one request each, in parallel, at most
//! [`LOOKUP_TIME`]) whether they hold a message under that key, and if one
//! does, answers with that message instead of storing a second one.
//!
//! An earlier attempt may also still be on its way to a peer's log: held
//! by a disk that does not answer, or queued behind a large commit. The
//! peer then answers that the key is in flight (it holds its keys from
//! before its own lookup until its commit has decided, see
//! [`switchyard_store::Store::hold_keys`]), and the publish is refused with
//! `503 key_in_flight` instead of storing a second copy; a retry once the
//! first attempt is decided gets its message.
//!
//! The lookup cannot reach a member that is partitioned away, paused, or
//! down: an earlier attempt it stored (answered `503`, or not answered)
//! is then unknown here, and a retry stores a second copy. Such a lookup
//! is incomplete, and the publish's answer says so (`key_checked: false`),
//! so a client that cannot accept duplicates retries on the node it tried
//! first. A member gone for longer than the idempotency window cannot
//! hold a copy that the window would still catch, so it does not count.

use std::time::Duration;

use switchyard_cluster::transport::{
    IdempotencyAnswer, IdempotencyFound, IdempotencyLookup, IdempotencyRecord,
    MAX_IDEMPOTENCY_LOOKUP,
};
use switchyard_cluster::{Cluster, MemberState};
use switchyard_model::{MessageId, NodeId, Timestamp, Topic};
use switchyard_store::{Appended, Store};

use crate::{PublishRequest, RouterError};

/// Longest a publish waits for its peers' answers.
const LOOKUP_TIME: Duration = Duration::from_secs(1);

/// Answers a peer's lookup from this node's idempotency records.
pub(crate) fn answer(
    store: &Store,
    req: &IdempotencyLookup,
) -> Result<IdempotencyFound, RouterError> {
    if req.entries.len() > MAX_IDEMPOTENCY_LOOKUP {
        return Err(RouterError::Cluster(format!(
            "an idempotency lookup holds at most {MAX_IDEMPOTENCY_LOOKUP} keys"
        )));
    }
    req.entries
        .iter()
        .map(|(topic, key)| {
            let Ok(topic) = topic.parse::<Topic>() else {
                return Ok(IdempotencyAnswer::Absent);
            };
            // A record whose commit has not decided yet (its sync may still
            // fail) is in flight, not held.
            if store.key_in_flight(&topic, key) {
                return Ok(IdempotencyAnswer::InFlight);
            }
            if let Some(a) = store.idempotent(&topic, key)? {
                return Ok(IdempotencyAnswer::Held(IdempotencyRecord {
                    origin: a.id.origin.0,
                    seq: a.id.seq,
                    stream_seq: a.stream_seq,
                    timestamp: a.timestamp.0,
                }));
            }
            Ok(IdempotencyAnswer::Absent)
        })
        .collect()
}

/// What the peers said about a batch's idempotency keys.
pub(crate) struct Lookup {
    /// For each request: the message a live peer holds under its key, when
    /// this node holds none. `None` for a request without a key, one this
    /// node knows, or one no peer answered for.
    pub(crate) found: Vec<Option<Appended>>,
    /// For each request: how many peers said they hold its message.
    pub(crate) holders: Vec<usize>,
    /// The requests whose key no peer holds, but a peer has a publish
    /// with it on its way to its log: storing them now could store a
    /// second copy.
    pub(crate) in_flight: Vec<usize>,
    /// Whether every member that may hold a copy answered: every live
    /// peer did, and no member went away within the idempotency window.
    /// True when nothing had to be asked.
    pub(crate) complete: bool,
}

/// Whether a member that is not live (down, or gone on purpose) was heard
/// from within `window_ms`, so that it may hold a copy under a key the
/// window still covers.
fn recently_gone(cluster: &Cluster, window_ms: u64) -> bool {
    cluster.members().iter().any(|m| {
        !m.is_self
            && matches!(m.state, MemberState::Down | MemberState::Left)
            && m.last_heard_ms.is_none_or(|ms| ms < window_ms)
    })
}

/// Asks the live peers about the keys of `batch` that this node does not
/// know (see [`Lookup`]).
pub(crate) async fn held_elsewhere(
    store: &Store,
    cluster: &Cluster,
    batch: &[PublishRequest],
) -> Lookup {
    let mut out = vec![None; batch.len()];
    let mut asked: Vec<usize> = Vec::new();
    let mut entries = Vec::new();
    for (i, r) in batch.iter().enumerate() {
        let Some(key) = &r.idempotency_key else {
            continue;
        };
        if matches!(store.idempotent(&r.topic, key), Ok(None)) {
            asked.push(i);
            entries.push((r.topic.as_str().to_owned(), key.clone()));
        }
    }
    let peers = cluster.peers();
    if entries.is_empty() || cluster.replication_factor() < 2 {
        return Lookup {
            holders: vec![0; batch.len()],
            found: out,
            in_flight: Vec::new(),
            complete: true,
        };
    }
    let mut in_flight = vec![false; batch.len()];
    let mut holders = vec![0; batch.len()];
    let window_ms = store.config().idempotency_window.as_millis() as u64;
    // A node that knows no live peer (it has not joined yet, or every
    // other member is gone) cannot have asked the members that may hold
    // a copy.
    let mut complete = !peers.is_empty() && !recently_gone(cluster, window_ms);
    let req = IdempotencyLookup { entries };
    let mut calls = tokio::task::JoinSet::new();
    for (_, addr) in peers {
        let (client, req) = (cluster.client().clone(), req.clone());
        calls.spawn(async move { client.lookup_idempotency(&addr, &req, LOOKUP_TIME).await });
    }
    while let Some(joined) = calls.join_next().await {
        let Ok(Ok(found)) = joined else {
            complete = false;
            continue;
        };
        for (slot, answer) in asked.iter().zip(found) {
            let rec = match answer {
                IdempotencyAnswer::Held(rec) => rec,
                IdempotencyAnswer::InFlight => {
                    in_flight[*slot] = true;
                    continue;
                }
                IdempotencyAnswer::Absent => continue,
            };
            holders[*slot] += 1;
            if out[*slot].is_none() {
                out[*slot] = Some(Appended {
                    id: MessageId {
                        origin: NodeId(rec.origin),
                        seq: rec.seq,
                    },
                    topic: batch[*slot].topic.clone(),
                    stream_seq: rec.stream_seq,
                    timestamp: Timestamp(rec.timestamp),
                    duplicate: true,
                });
            }
        }
    }
    let in_flight = (0..batch.len())
        .filter(|i| in_flight[*i] && out[*i].is_none())
        .collect();
    Lookup {
        found: out,
        holders,
        in_flight,
        complete,
    }
}
