//! The order in which the writer thread commits what waits for it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::MutexGuard;
use switchyard_model::Topic;
use tokio::sync::oneshot;

use super::{BULK_BYTES, BULK_MESSAGES, Command, PRESSURE_POLL, Writer};
use crate::{Append, Appended, Store, StoreConfig, StoreError};

fn topic(s: &str) -> Topic {
    s.parse().expect("valid topic")
}

fn appends(n: usize, t: &str) -> Vec<Append> {
    (0..n)
        .map(|i| Append::new(topic(t), Bytes::from(format!("{t}-{i}"))))
        .collect()
}

/// Polls `cond` until it holds, for at most 10 s. It blocks the calling
/// thread: the tests hold the writer's lock meanwhile, which must not be
/// held across an await.
fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

type Answer = oneshot::Receiver<Result<Vec<Appended>, StoreError>>;

/// Puts an append request in the writer's queue, as [`Store::append`]
/// does, and returns where its answer comes.
fn queue(store: &Store, batch: Vec<Append>) -> Answer {
    let (reply, rx) = oneshot::channel();
    store
        .tx
        .try_send(Command::Append { batch, reply })
        .unwrap_or_else(|_| panic!("the writer's queue has room"));
    rx
}

/// The first origin sequence of an answered append.
async fn first_seq(answer: Answer) -> u64 {
    answer
        .await
        .expect("the writer answers")
        .expect("append stored")[0]
        .id
        .seq
}

/// A store whose writer thread has committed one message (sequence 1).
async fn started(dir: &tempfile::TempDir) -> Store {
    let store = Store::open(StoreConfig::new(dir.path())).expect("store opens");
    store.append(appends(1, "warm")).await.expect("stored");
    store
}

/// Holds the writer's lock and has the writer thread take `first` and
/// wait for the lock; what is queued next waits in the channel.
fn hold_writer(store: &Store, first: Vec<Append>) -> (MutexGuard<'_, Writer>, Answer) {
    let held = store.writer.lock();
    let answer = queue(store, first);
    let room = store.tx.max_capacity();
    until("the writer to take the first append", || {
        store.tx.capacity() == room
    });
    (held, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_append_waiting_behind_bulk_ones_commits_before_them() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = started(&dir).await;

    let (held, first) = hold_writer(&store, appends(1, "first"));
    let bulk_a = queue(&store, appends(BULK_MESSAGES, "bulk"));
    let bulk_b = queue(&store, appends(BULK_MESSAGES * 2, "bulk"));
    let small = queue(&store, appends(2, "small"));
    drop(held);

    // The small append was queued last but is committed right after the
    // first; the bulk ones follow in the order they came, each whole.
    assert_eq!(first_seq(first).await, 2);
    assert_eq!(first_seq(small).await, 3, "the small append goes ahead");
    assert_eq!(first_seq(bulk_a).await, 5);
    assert_eq!(first_seq(bulk_b).await, 5 + BULK_MESSAGES as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_appends_take_turns_with_small_ones() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = started(&dir).await;
    let bulk = BULK_MESSAGES as u64;

    // Two bulk appends between small ones: each commit of the small ones
    // waiting gives one bulk append its turn, so a steady flow of small
    // appends does not hold bulk ones back for good.
    let (held, s1) = hold_writer(&store, appends(1, "s1"));
    let b1 = queue(&store, appends(BULK_MESSAGES, "bulk"));
    let b2 = queue(&store, appends(BULK_MESSAGES, "bulk"));
    let s2 = queue(&store, appends(1, "s2"));
    drop(held);
    // s1 alone; s2 (met while the writer set b1 and b2 aside); b1; then b2.
    assert_eq!(first_seq(s1).await, 2);
    assert_eq!(first_seq(s2).await, 3);
    assert_eq!(first_seq(b1).await, 4);
    assert_eq!(first_seq(b2).await, 4 + bulk);

    // Bytes make an append bulk too: one message of BULK_BYTES.
    let (held, s3) = hold_writer(&store, appends(1, "s3"));
    let big = queue(
        &store,
        vec![Append::new(
            topic("big"),
            Bytes::from(vec![b'x'; BULK_BYTES]),
        )],
    );
    let s4 = queue(&store, appends(1, "s4"));
    drop(held);
    let after = 4 + 2 * bulk;
    assert_eq!(first_seq(s3).await, after);
    assert_eq!(first_seq(s4).await, after + 1);
    assert_eq!(first_seq(big).await, after + 2);
}

#[test]
fn bulk_appends_get_their_share_of_the_time_while_small_ones_come() {
    use super::{BulkShare, SMALL_RECENT};
    let ms = Duration::from_millis;
    let t0 = Instant::now();
    // A quarter of the writer's time: a bulk commit is followed by three
    // times its length without one.
    let mut share = BulkShare::new(25);
    // No small appends: bulk ones follow each other at once.
    assert!(share.bulk_may_go(t0));
    share.bulk_committed(t0, t0 + ms(4));
    assert!(share.bulk_may_go(t0 + ms(4)));

    // Small appends committed: a bulk commit of 4 ms is followed by
    // 12 ms without bulk commits.
    share.small_committed(t0 + ms(10));
    share.bulk_committed(t0 + ms(11), t0 + ms(15));
    let pause = ms(12);
    assert!(!share.bulk_may_go(t0 + ms(15)));
    assert!(!share.bulk_may_go(t0 + ms(15) + pause - ms(1)));
    assert!(share.bulk_may_go(t0 + ms(15) + pause));

    // The writer waits for commands until the share allows a bulk commit.
    assert_eq!(
        share.bulk_waits_until(t0 + ms(15), || false),
        Some(t0 + ms(15) + pause)
    );
    assert_eq!(share.bulk_waits_until(t0 + ms(15) + pause, || false), None);

    // Once small appends stop coming, bulk ones have the writer again.
    let later = t0 + ms(15) + SMALL_RECENT + ms(1);
    share.bulk_committed(later, later + ms(4));
    assert!(share.bulk_may_go(later + ms(4)));
    // Unless the engine is behind: then the writer looks again shortly.
    let now = later + ms(4);
    assert_eq!(
        share.bulk_waits_until(now, || true),
        Some(now + PRESSURE_POLL)
    );
    assert_eq!(share.bulk_waits_until(now, || false), None);
}

#[test]
fn the_writer_takes_a_command_as_soon_as_it_comes() {
    use super::{Received, Waiter};
    let waiter = Waiter::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    // Nothing comes: the wait ends at its deadline.
    let t = Instant::now();
    assert!(matches!(
        waiter.recv_until(&mut rx, t + Duration::from_millis(30)),
        Received::Nothing
    ));
    assert!(t.elapsed() >= Duration::from_millis(30));
    // A command sent from another thread during a long wait ends it.
    let sender = std::thread::spawn({
        let tx = tx.clone();
        move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.blocking_send(Command::Sync).ok();
        }
    });
    let t = Instant::now();
    assert!(matches!(
        waiter.recv_until(&mut rx, t + Duration::from_secs(30)),
        Received::Command(Command::Sync)
    ));
    assert!(t.elapsed() < Duration::from_secs(10));
    sender.join().unwrap();
    // Every sender gone: the wait says so at once.
    drop(tx);
    assert!(matches!(
        waiter.recv_until(&mut rx, Instant::now() + Duration::from_secs(30)),
        Received::Closed
    ));
}

#[test]
fn the_bulk_share_sets_the_pause_after_a_bulk_commit() {
    use super::BulkShare;
    let ms = Duration::from_millis;
    // The default: 5 %, a pause of 19 times the commit.
    assert_eq!(
        BulkShare::new(crate::config::DEFAULT_BULK_SHARE_PERCENT).pause_after(ms(2)),
        ms(38)
    );
    assert_eq!(BulkShare::new(50).pause_after(ms(2)), ms(2));
    // 100 %: bulk commits follow each other; out-of-range values clamp.
    assert_eq!(BulkShare::new(100).pause_after(ms(2)), Duration::ZERO);
    assert_eq!(BulkShare::new(200).pause_after(ms(2)), Duration::ZERO);
    assert_eq!(BulkShare::new(0).pause_after(ms(2)), ms(198));
}
