//! Large batches staged in slices: what readers, retention, idempotency
//! and a crash between the two parts see.

use bytes::Bytes;
use switchyard_model::{Cursor, Topic, TopicPattern, TopicSet};
use tokio::sync::oneshot;

use super::{BulkJob, BulkStep, SLICE_BYTES, is_staged};
use crate::codec::decode_index;
use crate::error::Storage;
use crate::{Append, Appended, ReadQuery, RetentionPolicy, Store, StoreConfig, StoreError, keys};

fn topic(s: &str) -> Topic {
    s.parse().expect("valid topic")
}

/// `n` appends to `t` of 4,000 B each, every payload different.
fn large(n: usize, t: &str) -> Vec<Append> {
    (0..n)
        .map(|i| {
            let mut p = format!("{t}-{i}-").into_bytes();
            p.resize(4000, b'a' + (i % 26) as u8);
            Append::new(topic(t), Bytes::from(p))
        })
        .collect()
}

fn count(ks: &fjall::Keyspace) -> usize {
    ks.iter().count()
}

fn markers(store: &Store) -> usize {
    store.shared.meta.prefix(b"b").count()
}

fn read_all(store: &Store, pattern: &str) -> Vec<Bytes> {
    read_with_gaps(store, pattern, false)
}

/// Every payload of `pattern` from the start; a gap (retention's) is
/// allowed only when `gaps` says so.
fn read_with_gaps(store: &Store, pattern: &str, gaps: bool) -> Vec<Bytes> {
    let p: TopicPattern = pattern.parse().expect("valid pattern");
    let mut q = ReadQuery::new(TopicSet::new(vec![p]));
    q.limit = 100_000;
    q.max_bytes = usize::MAX;
    let mut cursor = Cursor::earliest();
    let mut out = Vec::new();
    loop {
        let batch = store.read(&q, &cursor).expect("read");
        assert!(gaps || batch.gaps.is_empty(), "gaps: {:?}", batch.gaps);
        if batch.messages.is_empty() {
            return out;
        }
        out.extend(batch.messages.iter().map(|m| m.payload.clone()));
        cursor = batch.cursor;
    }
}

type Answer = oneshot::Receiver<Result<Vec<Appended>, StoreError>>;

fn job(batch: Vec<Append>) -> (BulkJob, Answer) {
    let (reply, rx) = oneshot::channel();
    (BulkJob::new((batch, reply)), rx)
}

#[tokio::test]
async fn a_large_batch_reads_back_whole_by_every_path() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let batch = large(300, "big.a");
    assert!(is_staged(&batch));
    let sent: Vec<Bytes> = batch.iter().map(|a| a.payload.clone()).collect();
    let store = Store::open(StoreConfig::new(dir.path())).expect("store opens");
    store.append(large(1, "small")).await.expect("stored");
    let appended = store.append(batch).await.expect("stored");
    let seqs: Vec<u64> = appended.iter().map(|a| a.id.seq).collect();
    assert_eq!(seqs, (2..302).collect::<Vec<_>>(), "dense sequence numbers");
    let ids: Vec<_> = appended.iter().map(|a| a.id).collect();
    assert_eq!(
        count(&store.shared.staged),
        300,
        "every payload stored apart"
    );
    assert_eq!(markers(&store), 0, "the commit removed the staging marker");
    store.close();
    drop(store);

    // Reopened, the tail is empty: every read goes to the log.
    let store = Store::open(StoreConfig::new(dir.path())).expect("store reopens");
    assert_eq!(count(&store.shared.staged), 300, "nothing removed at open");
    assert_eq!(read_all(&store, "big.a"), sent, "read by the topic's index");
    assert_eq!(read_all(&store, "big.>"), sent, "read along the log");
    for (id, payload) in ids.iter().zip(&sent) {
        let m = store.message(*id).expect("read").expect("held");
        assert_eq!(&m.payload, payload);
    }
    let info = store.topics();
    let big = info
        .iter()
        .find(|t| t.topic.as_str() == "big.a")
        .expect("topic");
    assert_eq!(big.messages, 300);
}

#[tokio::test]
async fn retention_removes_the_payloads_with_their_records() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(StoreConfig::new(dir.path())).expect("store opens");
    store.append(large(100, "big.r")).await.expect("stored");
    store.append(large(70, "big.r")).await.expect("stored");
    assert_eq!(count(&store.shared.staged), 170);
    let (t, origin) = (topic("big.r"), store.node_id());
    let policy = RetentionPolicy {
        max_age: None,
        max_bytes: Some(1),
    };
    let visible = store.visible()[&origin];
    let held = store.topics()[0].bytes;
    let (entries, _) =
        crate::retention::plan(&store.shared, &t, origin, 0, visible, held, policy).expect("plan");
    assert_eq!(entries.len(), 169, "all but the newest");
    assert!(entries.iter().all(|e| e.staged.is_some()));
    store
        .writer
        .lock()
        .trim(&t, origin, &entries, None)
        .expect("trimmed");
    assert_eq!(
        count(&store.shared.staged),
        1,
        "the newest message's payload stays"
    );
    let left = read_with_gaps(&store, "big.r", true);
    assert_eq!(left.len(), 1);
    let index: Vec<_> = store
        .shared
        .index
        .iter()
        .map(|kv| decode_index(&kv.value().storage().expect("index value")).expect("index"))
        .collect();
    assert_eq!(index.len(), 1);
    let staged = index[0].staged.expect("stored apart");
    let payload = store.shared.staged_payload(&staged).expect("read");
    assert_eq!(payload.as_ref(), left.first());
}

#[tokio::test]
async fn a_repeated_idempotency_key_stores_one_payload() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(StoreConfig::new(dir.path())).expect("store opens");
    let mut batch = large(100, "big.i");
    batch[10].idempotency_key = Some("k".into());
    batch[60].idempotency_key = Some("k".into());
    let appended = store.append(batch).await.expect("stored");
    assert_eq!(appended.len(), 100);
    assert!(appended[60].duplicate);
    assert_eq!(appended[60].id, appended[10].id);
    assert_eq!(
        count(&store.shared.staged),
        99,
        "the repeat's payload is removed"
    );
    assert_eq!(read_all(&store, "big.i").len(), 99);

    // The same batch again: every entry answered by the first, nothing
    // stored, no payload left behind.
    let mut again = large(1, "big.i");
    again[0].idempotency_key = Some("k".into());
    again.extend(large(99, "big.j"));
    for a in again.iter_mut().skip(1) {
        a.topic = topic("big.i");
        a.idempotency_key = Some("k".into());
    }
    let answered = store.append(again).await.expect("answered");
    assert!(
        answered
            .iter()
            .all(|a| a.duplicate && a.id == appended[10].id)
    );
    assert_eq!(count(&store.shared.staged), 99);
    assert_eq!(markers(&store), 0);
}

#[tokio::test]
async fn small_appends_commit_between_the_slices() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(StoreConfig::new(dir.path())).expect("store opens");
    store.append(large(1, "small")).await.expect("stored");
    let slices = (300 * 4000usize).div_ceil(SLICE_BYTES);
    let (mut bulk, bulk_answer) = job(large(300, "big.s"));
    let (small_reply, small_answer) = oneshot::channel();
    {
        // The writer thread waits on its channel; this drives the writer
        // as its loop would, with a small append between two slices.
        let mut w = store.writer.lock();
        bulk = match w.bulk_step(bulk) {
            BulkStep::More(job) => job,
            BulkStep::Done => panic!("one slice does not finish 1.2 MB"),
        };
        assert_eq!(markers(&store), 1, "the first slice writes the marker");
        assert!(count(&store.shared.staged) > 0);
        assert!(count(&store.shared.staged) < 300);
        w.commit_appends(vec![(large(1, "small"), small_reply)]);
        let mut steps = 1;
        loop {
            steps += 1;
            match w.bulk_step(bulk) {
                BulkStep::More(job) => bulk = job,
                BulkStep::Done => break,
            }
        }
        assert_eq!(steps, slices + 1, "one step per slice and one commit");
    }
    let small = small_answer.await.expect("answered").expect("stored");
    let big = bulk_answer.await.expect("answered").expect("stored");
    assert_eq!(small[0].id.seq, 2, "the small append went first");
    assert_eq!(big[0].id.seq, 3);
    assert_eq!(big[299].id.seq, 302);
    assert_eq!(markers(&store), 0);
    assert_eq!(read_all(&store, "big.s").len(), 300);
}

#[tokio::test]
async fn a_crash_between_the_slices_and_the_commit_leaves_nothing() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(StoreConfig::new(dir.path())).expect("store opens");
    store.append(large(1, "small")).await.expect("stored");
    let (bulk, answer) = job(large(300, "big.c"));
    let staging_id = {
        let mut w = store.writer.lock();
        let id = w.next_staging;
        let BulkStep::More(bulk) = w.bulk_step(bulk) else {
            panic!("one slice does not finish 1.2 MB")
        };
        let BulkStep::More(bulk) = w.bulk_step(bulk) else {
            panic!("two slices do not finish 1.2 MB")
        };
        // The process ends here: the request is never answered.
        drop(bulk);
        id
    };
    assert!(answer.await.is_err(), "never acknowledged");
    let staged_before = count(&store.shared.staged);
    assert!(staged_before > 0);
    store.close();
    drop(store);

    let store = Store::open(StoreConfig::new(dir.path())).expect("store reopens");
    assert_eq!(
        count(&store.shared.staged),
        0,
        "the interrupted batch's payloads are gone"
    );
    assert_eq!(markers(&store), 0);
    assert!(read_all(&store, "big.>").is_empty());
    assert!(
        store.writer.lock().next_staging > staging_id,
        "a staging id is not used twice"
    );
    // The store goes on: a large batch after the recovery is whole.
    let appended = store.append(large(100, "big.c")).await.expect("stored");
    assert_eq!(appended[0].id.seq, 2);
    assert_eq!(read_all(&store, "big.c").len(), 100);
    assert_eq!(count(&store.shared.staged), 100);
}

#[test]
fn staged_keys_order_by_batch_then_entry() {
    let a = keys::staged_key(1, u32::MAX);
    let b = keys::staged_key(2, 0);
    assert!(a < b);
    assert_eq!(keys::staged_key_id(&b), Some(2));
    assert_eq!(keys::staged_key_id(&b[..7]), None);
}
