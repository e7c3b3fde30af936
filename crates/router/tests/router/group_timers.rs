//! Consumer group timers on tokio's paused clock: acknowledgement
//! deadlines, nack delays, progress and dead-lettering take milliseconds.
//!
//! The paused clock jumps to the next timer whenever the runtime has
//! nothing to run, including while the store works on its own threads, so
//! these tests assert lower bounds only ("not before the deadline") and
//! settle by message id without naming a member: a redelivered message may
//! have moved on again by the time the test settles it.

use std::time::Duration;

use switchyard_router::{
    DELIVERIES_HEADER, ERROR_HEADER, GROUP_HEADER, GroupOptions, GroupStart, MemberOptions, Settle,
    Start,
};
use switchyard_testkit::poll_until;
use tokio::time::Instant;

use crate::common::{
    TIMEOUT, header, ids, join, next, open, patterns, publish, receive, receive_all, settle, text,
    wait_info,
};

fn with_timeout(ack_timeout: Duration) -> GroupOptions {
    GroupOptions {
        ack_timeout: Some(ack_timeout),
        start: GroupStart::Earliest,
        ..GroupOptions::default()
    }
}

/// Acknowledges message ids on behalf of the group, whoever holds them.
async fn ack_ids(
    router: &switchyard_router::Router,
    group: &str,
    ids: Vec<switchyard_model::MessageId>,
) {
    let s = router
        .groups()
        .settle(group, None, ids, Settle::Ack)
        .await
        .expect("ack");
    assert!(s.stale.is_empty(), "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn an_unacknowledged_message_is_delivered_again_after_the_ack_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    let ack_timeout = Duration::from_secs(30);
    let mut a = join(
        &router,
        "slow",
        &["jobs"],
        with_timeout(ack_timeout),
        MemberOptions::default(),
    )
    .await;
    let mut b = join(
        &router,
        "slow",
        &["jobs"],
        GroupOptions::default(),
        MemberOptions::default(),
    )
    .await;
    let real = std::time::Instant::now();
    let published = Instant::now();
    publish(&router, "jobs", &["late"]).await;

    let first = receive_all(&mut [&mut a, &mut b], 1).await;
    let first: Vec<_> = first.into_iter().flatten().collect();
    assert_eq!((first.len(), first[0].delivery), (1, 1), "{first:?}");
    let again = receive_all(&mut [&mut a, &mut b], 1).await;
    let again: Vec<_> = again.into_iter().flatten().collect();
    assert!(
        published.elapsed() >= ack_timeout,
        "redelivered after {:?}",
        published.elapsed()
    );
    assert_eq!(again[0].message.id, first[0].message.id);
    assert_eq!(again[0].delivery, 2, "{again:?}");

    ack_ids(&router, "slow", ids(&again[..1])).await;
    let i = wait_info(&router, "slow", "the message acknowledged", |i| {
        i.inflight == 0 && i.pending_redelivery == 0
    })
    .await;
    assert!(i.counters.expired >= 1, "{i:?}");
    assert!(i.counters.redelivered >= 1, "{i:?}");
    assert_eq!(i.counters.acked, 1, "{i:?}");
    assert!(
        real.elapsed() < TIMEOUT,
        "took {:?} of real time",
        real.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_nack_delay_holds_the_message_back() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    let mut m = join(
        &router,
        "later",
        &["jobs"],
        with_timeout(Duration::from_secs(60)),
        MemberOptions::default(),
    )
    .await;
    publish(&router, "jobs", &["again"]).await;
    let first = next(&mut m).await;
    let delay = Duration::from_secs(10);
    let nacked = Instant::now();
    let s = settle(&router, &m, &first, Settle::Nack(delay))
        .await
        .unwrap();
    assert_eq!(s.applied.len(), 1, "{s:?}");
    let i = crate::common::info(&router, "later").await;
    assert_eq!((i.inflight, i.pending_redelivery), (0, 1), "{i:?}");

    let again = next(&mut m).await;
    assert!(
        nacked.elapsed() >= delay,
        "redelivered after {:?}",
        nacked.elapsed()
    );
    assert_eq!(ids(&again), ids(&first));
    assert_eq!(again[0].delivery, 2);
    ack_ids(&router, "later", ids(&again)).await;
    let i = wait_info(&router, "later", "nothing in flight", |i| i.inflight == 0).await;
    assert_eq!((i.counters.nacked, i.counters.acked), (1, 1), "{i:?}");
}

#[tokio::test(start_paused = true)]
async fn progress_restarts_the_ack_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    let ack_timeout = Duration::from_secs(10);
    let mut m = join(
        &router,
        "busy",
        &["jobs"],
        with_timeout(ack_timeout),
        MemberOptions::default(),
    )
    .await;
    publish(&router, "jobs", &["long job"]).await;
    let first = next(&mut m).await;
    let received = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let s = settle(&router, &m, &first, Settle::Progress).await.unwrap();
    assert_eq!(s.applied.len(), 1, "{s:?}");

    // Without the progress the deadline was at most 10 s after `received`.
    let again = next(&mut m).await;
    assert!(
        received.elapsed() >= Duration::from_secs(6) + ack_timeout,
        "redelivered after {:?}",
        received.elapsed()
    );
    assert_eq!(ids(&again), ids(&first));
    assert_eq!(again[0].delivery, 2);
}

#[tokio::test(start_paused = true)]
async fn a_message_delivered_too_often_is_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    let options = GroupOptions {
        ack_timeout: Some(Duration::from_secs(1)),
        max_deliveries: Some(2),
        start: GroupStart::Earliest,
        ..GroupOptions::default()
    };
    let mut m = join(
        &router,
        "dead",
        &["jobs"],
        options,
        MemberOptions::default(),
    )
    .await;
    publish(&router, "jobs", &["poison"]).await;

    let dlq = poll_until(
        TIMEOUT,
        "a message on $dlq.jobs",
        || async {
            router
                .pull(
                    patterns(&["$dlq.jobs"]),
                    &Start::Earliest,
                    10,
                    Duration::ZERO,
                    None,
                )
                .await
                .expect("pull")
                .messages
        },
        |ms| !ms.is_empty(),
    )
    .await;
    assert_eq!(dlq.len(), 1);
    let d = &dlq[0];
    assert_eq!(text(d), "poison");
    assert_eq!(header(d, GROUP_HEADER), Some("dead"));
    assert_eq!(header(d, DELIVERIES_HEADER), Some("2"));
    assert!(header(d, ERROR_HEADER).is_some(), "{d:?}");

    let got = receive(&mut m, 2).await;
    assert_eq!(got.iter().map(|d| d.delivery).collect::<Vec<_>>(), [1, 2]);
    let i = wait_info(&router, "dead", "nothing left in flight", |i| {
        i.inflight == 0 && i.pending_redelivery == 0
    })
    .await;
    assert_eq!(
        (i.counters.expired, i.counters.dead_lettered),
        (2, 1),
        "{i:?}"
    );
}
