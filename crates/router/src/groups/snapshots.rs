//! Group state carried by replication, so that a group survives the crash
//! of its coordinator.
//!
//! In a cluster with a replication factor above 1, a group's coordinator
//! records the group's whole state (settings, position, messages in
//! flight, counters) as a message of its own origin log, on a `$sys.groups`
//! stream of its own, at most every [`SNAPSHOT_INTERVAL`] while the state
//! changes; a deletion is recorded as a tombstone. Replication copies the
//! origin log, these streams included, to the coordinator's replicas. When
//! a coordinator stops being a live member, the node that coordinates the
//! group next finds no live copy of its state; it takes the latest
//! snapshot each dead coordinator recorded (from its own copy of their
//! logs, and from every live peer's) and resumes from it.
//!
//! A snapshot is never ahead of the coordinator's store: it is taken after
//! a round is persisted. Everything delivered after it lies past its
//! position or in its in-flight set, so resuming from a stale snapshot
//! delivers some messages again but loses none (at-least-once). Each
//! stream keeps [`SNAPSHOT_RETENTION_BYTES`] (its newest snapshot always
//! stays).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchyard_cluster::transport::{GroupSnapshot, GroupState};
use switchyard_model::{Cursor, NodeId, Topic, TopicPattern, TopicSet};
use switchyard_store::{
    Append, ReadQuery, RetentionPolicy, RetentionRule, Store, StoreError, StoredGroup,
};

use super::cluster::{from_wire, owner_score, rank, to_wire};

/// Shortest time between two snapshots of one group.
pub(crate) const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(200);
/// Bytes each coordinator's snapshot stream of a group keeps.
pub(crate) const SNAPSHOT_RETENTION_BYTES: u64 = 1024 * 1024;
/// Pattern of every snapshot stream.
const SNAPSHOT_TOPICS: &str = "$sys.groups.>";

/// The retention rule of the snapshot streams, placed before the
/// operator's rules.
pub(crate) fn retention_rule() -> RetentionRule {
    RetentionRule {
        pattern: SNAPSHOT_TOPICS
            .parse::<TopicPattern>()
            .expect("the snapshot pattern is valid"),
        policy: RetentionPolicy {
            max_age: None,
            max_bytes: Some(SNAPSHOT_RETENTION_BYTES),
        },
    }
}

/// The topic of group `name`'s snapshots: `$sys.groups.` and a 64-bit hash
/// of the name (group names may hold dots and be longer than a token
/// allows). The message key holds the name, so that a hash shared by two
/// names never mixes them up.
pub(crate) fn topic(name: &str) -> Topic {
    format!("$sys.groups.{:016x}", owner_score(0, name))
        .parse()
        .expect("a hex token makes a valid topic")
}

/// A group's incarnation and epoch: of two states the greater is later.
fn version(created_ms: u64, epoch: u64) -> (u64, u64) {
    (created_ms, epoch)
}

/// Records group `name`'s stored state (nothing when none is stored) in
/// this node's origin log.
pub(crate) async fn record(store: &Arc<Store>, name: &str) -> Result<(), StoreError> {
    let (st, n) = (store.clone(), name.to_owned());
    let stored = tokio::task::spawn_blocking(move || st.group(&n))
        .await
        .map_err(|_| StoreError::Closed)??;
    let Some(g) = stored else {
        return Ok(());
    };
    append(store, &g, Some(to_wire(&g))).await
}

/// Records that group `stored.name` (as `stored` was) is deleted.
pub(crate) async fn record_deleted(store: &Store, stored: &StoredGroup) -> Result<(), StoreError> {
    append(store, stored, None).await
}

async fn append(
    store: &Store,
    g: &StoredGroup,
    state: Option<GroupState>,
) -> Result<(), StoreError> {
    let Some((record, _)) = rank(g) else {
        return Ok(());
    };
    let s = GroupSnapshot {
        origin: store.node_id().0,
        name: g.name.clone(),
        created_ms: record.created_ms,
        epoch: record.epoch,
        state,
    };
    let payload = serde_json::to_vec(&s).expect("a snapshot serialises");
    let mut a = Append::new(topic(&s.name), Bytes::from(payload));
    a.key = Some(Bytes::copy_from_slice(s.name.as_bytes()));
    store.append(vec![a]).await.map(|_| ())
}

/// The latest snapshot of group `name` that each coordinator other than
/// this node and the `live` members recorded, as this node holds their
/// logs. Blocking.
pub(crate) fn read_dead(
    store: &Store,
    name: &str,
    live: &[u64],
) -> Result<Vec<GroupSnapshot>, StoreError> {
    let me = store.node_id();
    let pattern: TopicPattern = topic(name).as_str().parse().expect("a topic is a pattern");
    let q = ReadQuery::new(TopicSet::new(vec![pattern]));
    let mut from = Cursor::earliest();
    let mut latest: BTreeMap<NodeId, GroupSnapshot> = BTreeMap::new();
    loop {
        let batch = store.read(&q, &from)?;
        if batch.messages.is_empty() {
            break;
        }
        for m in &batch.messages {
            let origin = m.id.origin;
            if origin == me || live.contains(&origin.0) {
                continue;
            }
            if m.key.as_deref() != Some(name.as_bytes()) {
                continue;
            }
            match serde_json::from_slice::<GroupSnapshot>(&m.payload) {
                Ok(mut s) if s.name == name => {
                    s.origin = origin.0;
                    latest.insert(origin, s);
                }
                _ => {
                    tracing::warn!(group = name, id = %m.id, "an unreadable group snapshot");
                }
            }
        }
        if batch.cursor == from {
            break;
        }
        from = batch.cursor;
    }
    Ok(latest.into_values().collect())
}

/// What a node taking a group over resumes from.
#[derive(Debug)]
pub(crate) enum Choice {
    /// Merge these copies (the live copies, and the snapshots that are not
    /// older than any of them).
    Merge(Vec<StoredGroup>),
    /// The latest record of the group is its deletion.
    Deleted,
}

/// Chooses, from the live `copies` of a group (the local one and those
/// handed over) and `snapshots` of dead coordinators, what to resume from.
/// A snapshot older than the newest live copy is dropped (the group moved
/// on since); the newest record wins when it is a deletion that no live
/// copy is as new as. Pure.
pub(crate) fn choose(mut copies: Vec<StoredGroup>, snapshots: Vec<GroupSnapshot>) -> Choice {
    let newest_copy = copies
        .iter()
        .filter_map(rank)
        .map(|(r, _)| version(r.created_ms, r.epoch))
        .max();
    let kept: Vec<GroupSnapshot> = snapshots
        .into_iter()
        .filter(|s| newest_copy.is_none_or(|c| version(s.created_ms, s.epoch) >= c))
        .collect();
    let newest_tombstone = kept
        .iter()
        .filter(|s| s.state.is_none())
        .map(|s| version(s.created_ms, s.epoch))
        .max();
    let newest_state = kept
        .iter()
        .filter(|s| s.state.is_some())
        .map(|s| version(s.created_ms, s.epoch))
        .max();
    if let Some(t) = newest_tombstone
        && newest_copy.is_none_or(|c| t > c)
        && newest_state.is_none_or(|s| t >= s)
    {
        return Choice::Deleted;
    }
    for s in kept {
        let Some(state) = s.state else { continue };
        match from_wire(&s.name, state) {
            Ok(g) => copies.push(g),
            Err(e) => {
                tracing::warn!(group = %s.name, origin = %NodeId(s.origin), error = %e, "an unusable group snapshot");
            }
        }
    }
    Choice::Merge(copies)
}

#[cfg(test)]
mod tests {
    use switchyard_model::MessageId;

    use super::*;
    use crate::groups::settings::SettingsRecord;

    fn stored(created_ms: u64, epoch: u64, position: u64, inflight: &[u64]) -> StoredGroup {
        let record = SettingsRecord {
            topics: vec!["t.>".into()],
            strategy: "least-inflight".into(),
            ack_timeout_ms: 1000,
            max_deliveries: 5,
            created_ms,
            epoch,
        };
        let mut cursor = Cursor::earliest();
        cursor.advance(NodeId(1), position);
        StoredGroup {
            name: "g".into(),
            settings: serde_json::to_vec(&record).unwrap(),
            cursor,
            counters: Vec::new(),
            inflight: inflight
                .iter()
                .map(|&seq| {
                    (
                        MessageId {
                            origin: NodeId(1),
                            seq,
                        },
                        1,
                    )
                })
                .collect(),
        }
    }

    fn snap(origin: u64, created_ms: u64, epoch: u64, g: Option<StoredGroup>) -> GroupSnapshot {
        GroupSnapshot {
            origin,
            name: "g".into(),
            created_ms,
            epoch,
            state: g.as_ref().map(to_wire),
        }
    }

    fn positions(c: Choice) -> Vec<u64> {
        match c {
            Choice::Merge(gs) => gs.iter().map(|g| g.cursor.get(NodeId(1))).collect(),
            Choice::Deleted => panic!("deleted"),
        }
    }

    #[test]
    fn a_dead_coordinators_snapshot_is_resumed_from() {
        // No live copy: the snapshot is the state.
        let c = choose(vec![], vec![snap(7, 10, 3, Some(stored(10, 3, 40, &[39])))]);
        assert_eq!(positions(c), [40]);
        // A stale live copy (a take-over that was never confirmed) and the
        // newer snapshot: both are merged.
        let c = choose(
            vec![stored(10, 2, 12, &[])],
            vec![snap(7, 10, 3, Some(stored(10, 3, 40, &[39])))],
        );
        assert_eq!(positions(c), [12, 40]);
    }

    #[test]
    fn snapshots_older_than_a_live_copy_are_dropped() {
        let c = choose(
            vec![stored(10, 5, 90, &[])],
            vec![
                snap(7, 10, 3, Some(stored(10, 3, 40, &[39]))),
                snap(8, 10, 5, Some(stored(10, 5, 70, &[69]))),
            ],
        );
        assert_eq!(positions(c), [90, 70]);
    }

    #[test]
    fn a_deletion_wins_only_when_it_is_the_newest_record() {
        assert!(matches!(
            choose(vec![], vec![snap(7, 10, 3, None)]),
            Choice::Deleted
        ));
        // An older state elsewhere does not bring the group back.
        assert!(matches!(
            choose(
                vec![stored(10, 2, 5, &[])],
                vec![
                    snap(7, 10, 3, None),
                    snap(8, 10, 2, Some(stored(10, 2, 9, &[])))
                ]
            ),
            Choice::Deleted
        ));
        // A group created again after the deletion is a new incarnation.
        let c = choose(vec![stored(20, 0, 4, &[])], vec![snap(7, 10, 9, None)]);
        assert_eq!(positions(c), [4]);
        let c = choose(
            vec![],
            vec![
                snap(7, 10, 9, None),
                snap(8, 20, 1, Some(stored(20, 1, 6, &[]))),
            ],
        );
        assert_eq!(positions(c), [6]);
    }

    #[test]
    fn snapshot_topics_are_valid_and_distinct() {
        let a = topic("orders.eu-west_1");
        let b = topic(&"x".repeat(128));
        assert!(a.as_str().starts_with("$sys.groups."));
        assert_ne!(a, b);
        assert_eq!(a, topic("orders.eu-west_1"));
        assert!(retention_rule().pattern.matches(&a));
    }
}
