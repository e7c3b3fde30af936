//! What a staged batch decides: stream and origin metadata across the
//! messages it stages, what commits, and when it refuses.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use switchyard_model::{Message, MessageId, NodeId, Timestamp, Topic};

use super::{Durability, Staged, TrimEntry};
use crate::catalog::{OriginMeta, StreamMeta};
use crate::{Store, StoreConfig, StoreError};

const REMOTE: NodeId = NodeId(7);

fn topic(s: &str) -> Topic {
    s.parse().expect("valid topic")
}

fn msg(origin: NodeId, seq: u64, t: &str, stream_seq: u64, ts: u64, payload: &str) -> Message {
    Message {
        id: MessageId { origin, seq },
        topic: topic(t),
        stream_seq,
        timestamp: Timestamp(ts),
        key: None,
        headers: Vec::new(),
        payload: Bytes::from(payload.to_owned()),
    }
}

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(StoreConfig::new(dir.path())).expect("store opens")
}

fn committed_stream(store: &Store, t: &str, origin: NodeId) -> StreamMeta {
    store.shared.catalog.read().stream(&topic(t), origin)
}

fn committed_origin(store: &Store, origin: NodeId) -> OriginMeta {
    store
        .shared
        .catalog
        .read()
        .origins
        .get(&origin)
        .copied()
        .unwrap_or_default()
}

#[test]
fn a_batch_of_local_and_received_messages_keeps_each_stream_and_origin_apart() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = open(&dir);
    let local = store.node_id();
    let sh = &*store.shared;
    let mut staged = Staged::new(sh, "test", Durability::Publish);

    // Local appends take the stream's next sequence.
    for (seq, ts) in [(1, 100), (2, 110)] {
        let next = staged.stream(&topic("a"), local).last_seq + 1;
        assert_eq!(next, seq, "a new local stream counts from 1");
        assert!(staged.push_head(&msg(local, seq, "a", next, ts, "xx")));
    }
    // Another origin's messages of the same topic form their own stream.
    assert!(staged.push_head(&msg(REMOTE, 3, "a", 1, 50, "yyy")));
    assert!(staged.push_head(&msg(REMOTE, 4, "a", 2, 60, "yyy")));
    // A repeated stream sequence is not staged again.
    assert!(!staged.push_head(&msg(REMOTE, 5, "a", 2, 65, "zzz")));
    // A stream first held part way through reads as removed before it.
    assert!(staged.push_head(&msg(REMOTE, 9, "b", 5, 70, "w")));
    assert_eq!(staged.messages(), 5);

    let a_local = *staged.stream(&topic("a"), local);
    assert_eq!(
        (
            a_local.last_seq,
            a_local.last_origin_seq,
            a_local.count,
            a_local.bytes
        ),
        (2, 2, 2, 4)
    );
    assert_eq!(
        (a_local.first_ts, a_local.last_ts),
        (Timestamp(100), Timestamp(110))
    );
    assert_eq!((a_local.trimmed_seq, a_local.trimmed_origin_seq), (0, 0));
    let a_remote = *staged.stream(&topic("a"), REMOTE);
    assert_eq!(
        (
            a_remote.last_seq,
            a_remote.last_origin_seq,
            a_remote.count,
            a_remote.bytes
        ),
        (2, 4, 2, 6)
    );
    assert_eq!(
        (a_remote.first_ts, a_remote.last_ts),
        (Timestamp(50), Timestamp(60))
    );
    let b_remote = *staged.stream(&topic("b"), REMOTE);
    assert_eq!((b_remote.trimmed_seq, b_remote.trimmed_origin_seq), (4, 8));
    assert_eq!((b_remote.last_seq, b_remote.count), (5, 1));

    let fresh = vec![Arc::new(msg(REMOTE, 3, "a", 1, 50, "yyy"))];
    staged.publish(REMOTE, fresh, 12);
    staged.commit().expect("commit");

    // Committed: the catalog holds what was staged, each origin its own.
    assert_eq!(committed_stream(&store, "a", local), a_local);
    assert_eq!(committed_stream(&store, "a", REMOTE), a_remote);
    assert_eq!(committed_stream(&store, "b", REMOTE), b_remote);
    let lo = committed_origin(&store, local);
    assert_eq!(
        (lo.last_seq, lo.last_ts, lo.max_trimmed_seq),
        (2, Timestamp(110), 0)
    );
    let ro = committed_origin(&store, REMOTE);
    // The watermark of the other origin moved to `through`; its highest
    // removed sequence is the one of stream b.
    assert_eq!(
        (ro.last_seq, ro.last_ts, ro.max_trimmed_seq),
        (12, Timestamp(70), 8)
    );
    let visible = store.visible();
    assert_eq!(visible.get(&REMOTE), Some(&12));
    // Local messages become visible through the writer, not the batch.
    assert_eq!(visible.get(&local).copied().unwrap_or(0), 0);

    // The metadata was written with the messages: a reopened store has it.
    store.close();
    drop(store);
    let store = open(&dir);
    assert_eq!(committed_stream(&store, "a", local), a_local);
    assert_eq!(committed_stream(&store, "a", REMOTE), a_remote);
    assert_eq!(committed_stream(&store, "b", REMOTE), b_remote);
    assert_eq!(committed_origin(&store, REMOTE).max_trimmed_seq, 8);
    store.close();
}

#[test]
fn older_messages_widen_a_stream_without_moving_its_origin() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = open(&dir);
    let sh = &*store.shared;
    let mut staged = Staged::new(sh, "test", Durability::Publish);
    staged.put_older(&msg(REMOTE, 20, "a", 8, 300, "x"));
    let first = *staged.stream(&topic("a"), REMOTE);
    // Held from the first filled message on until the fill completes.
    assert_eq!((first.trimmed_seq, first.trimmed_origin_seq), (7, 19));
    staged.put_older(&msg(REMOTE, 12, "a", 5, 200, "yy"));
    staged.put_older(&msg(REMOTE, 25, "a", 9, 400, "z"));
    let meta = *staged.stream(&topic("a"), REMOTE);
    assert_eq!(
        (meta.last_seq, meta.last_origin_seq, meta.count, meta.bytes),
        (9, 25, 3, 4)
    );
    assert_eq!(
        (meta.first_ts, meta.last_ts),
        (Timestamp(200), Timestamp(400))
    );
    // Only the first message of an empty stream sets where it is held from.
    assert_eq!((meta.trimmed_seq, meta.trimmed_origin_seq), (7, 19));
    staged.commit().expect("commit");

    let om = committed_origin(&store, REMOTE);
    assert_eq!(
        om.max_trimmed_seq, 19,
        "the origin accounts for the stream's removed range"
    );
    assert_eq!(
        (om.last_seq, om.last_ts),
        (0, Timestamp(0)),
        "a fill moves no watermark"
    );
    assert_eq!(store.visible().get(&REMOTE), None);
    store.close();
}

#[test]
fn a_trim_removes_only_what_the_stream_still_holds() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = open(&dir);
    let sh = &*store.shared;
    let mut staged = Staged::new(sh, "test", Durability::Publish);
    for i in 1..=4 {
        assert!(staged.push_head(&msg(REMOTE, i, "a", i, i * 10, "abc")));
    }
    staged.publish(REMOTE, Vec::new(), 4);
    staged.commit().expect("commit");

    let entries: Vec<TrimEntry> = (1..=2)
        .map(|i| TrimEntry {
            origin_seq: i,
            stream_seq: i,
            size: 3,
            staged: None,
        })
        .collect();
    let mut staged = Staged::new(sh, "test", Durability::Deferred);
    assert_eq!(
        staged.trim(&topic("a"), REMOTE, &entries, Some(Timestamp(30))),
        2
    );
    staged.commit().expect("commit");
    let meta = committed_stream(&store, "a", REMOTE);
    assert_eq!(
        (meta.count, meta.bytes, meta.first_ts),
        (2, 6, Timestamp(30))
    );
    assert_eq!((meta.trimmed_seq, meta.trimmed_origin_seq), (2, 2));
    assert_eq!(committed_origin(&store, REMOTE).max_trimmed_seq, 2);
    assert_eq!(
        store
            .message(MessageId {
                origin: REMOTE,
                seq: 2
            })
            .expect("read"),
        None
    );
    assert!(
        store
            .message(MessageId {
                origin: REMOTE,
                seq: 3
            })
            .expect("read")
            .is_some()
    );

    // The same entries again: already removed, nothing to do.
    let mut staged = Staged::new(sh, "test", Durability::Deferred);
    assert_eq!(staged.trim(&topic("a"), REMOTE, &entries, None), 0);
    store.close();
}

#[test]
fn a_poisoned_store_commits_nothing() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = open(&dir);
    let sh = &*store.shared;
    sh.poisoned.store(true, Ordering::SeqCst);
    let mut staged = Staged::new(sh, "test", Durability::Publish);
    assert!(staged.push_head(&msg(REMOTE, 1, "a", 1, 10, "x")));
    staged.publish(REMOTE, Vec::new(), 1);
    assert!(matches!(staged.commit(), Err(StoreError::Poisoned)));
    assert_eq!(committed_stream(&store, "a", REMOTE), StreamMeta::default());
    assert_eq!(store.visible().get(&REMOTE), None);
    assert_eq!(
        store
            .message(MessageId {
                origin: REMOTE,
                seq: 1
            })
            .expect("read"),
        None
    );
    store.close();
}
