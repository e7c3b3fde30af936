//! Consumer groups on the real clock: balancing, acknowledgements,
//! redelivery, members leaving, settings, persistence.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use switchyard_model::MessageId;
use switchyard_router::{
    AckMode, GroupOptions, GroupStart, MemberOptions, RouterError, Settle, Strategy,
};
use switchyard_testkit::poll_until;

use crate::common::{
    TIMEOUT, ack, delivered, from_earliest, idle, ids, info, join, join_earliest, keyed, next,
    open, publish, receive, receive_all, reopen, settle, strs, texts, wait_info,
};

#[tokio::test]
async fn each_message_goes_to_exactly_one_member() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    let mut a = join_earliest(&router, "workers", &["work"]).await;
    let mut b = join_earliest(&router, "workers", &["work"]).await;
    assert_ne!(a.id(), b.id());
    let sent = texts("w", 20);
    let stored = publish(&router, "work", &strs(&sent)).await;

    let got = receive_all(&mut [&mut a, &mut b], 20).await;
    let all: Vec<MessageId> = got.iter().flat_map(|ds| ids(ds)).collect();
    assert_eq!(all.len(), 20, "no message twice: {got:?}");
    let unique: BTreeSet<MessageId> = all.iter().copied().collect();
    let published: BTreeSet<MessageId> = stored.iter().map(|a| a.id).collect();
    assert_eq!(unique, published);
    assert!(
        got.iter().all(|ds| !ds.is_empty()),
        "both members share the work"
    );
    assert!(got.iter().flatten().all(|d| d.delivery == 1));

    ack(&router, &a, &got[0]).await;
    ack(&router, &b, &got[1]).await;
    let i = info(&router, "workers").await;
    assert_eq!(i.inflight, 0, "{i:?}");
    assert_eq!(i.lag, 0, "{i:?}");
    assert_eq!(i.counters.delivered, 20, "{i:?}");
    assert_eq!(i.counters.acked, 20, "{i:?}");
    assert_eq!(i.counters.redelivered, 0, "{i:?}");
    let per_member: BTreeMap<&str, u64> =
        i.members.iter().map(|m| (m.id.as_str(), m.acked)).collect();
    assert_eq!(per_member[a.id()], got[0].len() as u64);
    assert_eq!(per_member[b.id()], got[1].len() as u64);
}

#[tokio::test]
async fn a_nacked_message_is_delivered_again_and_an_ack_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    let mut m = join_earliest(&router, "retry", &["jobs"]).await;
    publish(&router, "jobs", &["job"]).await;
    let first = next(&mut m).await;
    assert_eq!((first.len(), first[0].delivery), (1, 1));

    let s = settle(&router, &m, &first, Settle::Nack(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(s.applied, [first[0].message.id.to_string()]);
    let again = next(&mut m).await;
    assert_eq!(ids(&again), ids(&first));
    assert_eq!(again[0].delivery, 2);

    ack(&router, &m, &again).await;
    // A second ack finds nothing in flight: stale, and counted.
    let err = settle(&router, &m, &again, Settle::Ack).await.unwrap_err();
    assert!(matches!(err, RouterError::StaleAck { .. }), "{err:?}");
    let i = info(&router, "retry").await;
    assert_eq!(i.inflight, 0, "{i:?}");
    assert_eq!(i.pending_redelivery, 0, "{i:?}");
    assert_eq!(i.counters.nacked, 1, "{i:?}");
    assert_eq!(i.counters.redelivered, 1, "{i:?}");
    assert_eq!(i.counters.acked, 1, "{i:?}");
    assert_eq!(i.counters.stale_acks, 1, "{i:?}");
    assert!(idle(&mut m));
}

#[tokio::test]
async fn settling_an_id_the_group_never_delivered_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    let mut m = join_earliest(&router, "strict", &["jobs"]).await;
    let stored = publish(&router, "jobs", &["one", "two"]).await;
    let got = receive(&mut m, 2).await;
    let never = MessageId {
        origin: router.node_id(),
        seq: stored[1].id.seq + 100,
    };
    let err = router
        .groups()
        .settle(
            "strict",
            Some(m.id().into()),
            vec![got[0].message.id, never],
            Settle::Ack,
        )
        .await
        .unwrap_err();
    match err {
        RouterError::NotInFlight { ids, .. } => assert_eq!(ids, [never.to_string()]),
        other => panic!("expected NotInFlight, got {other:?}"),
    }
    // Nothing changed: the valid id of the refused request is still in flight.
    let i = info(&router, "strict").await;
    assert_eq!((i.inflight, i.counters.acked), (2, 0), "{i:?}");
    let err = router
        .groups()
        .settle("nope", None, vec![never], Settle::Ack)
        .await
        .unwrap_err();
    assert!(matches!(err, RouterError::GroupNotFound(_)), "{err:?}");
}

#[tokio::test]
async fn a_member_that_leaves_hands_its_unacked_messages_to_another() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    let mut a = join_earliest(&router, "handoff", &["jobs"]).await;
    publish(&router, "jobs", &["j0", "j1", "j2"]).await;
    let held = receive(&mut a, 3).await;
    ack(&router, &a, &held[..1]).await;

    let mut b = join(
        &router,
        "handoff",
        &["jobs"],
        GroupOptions::default(),
        MemberOptions::default(),
    )
    .await;
    assert!(idle(&mut b), "nothing for b while a holds everything");
    let a_id = a.id().to_owned();
    drop(a);

    let moved = receive(&mut b, 2).await;
    assert_eq!(delivered(&moved), ["j1", "j2"]);
    assert!(moved.iter().all(|d| d.delivery == 2), "{moved:?}");
    // The member that left can no longer settle what moved on.
    let err = router
        .groups()
        .settle("handoff", Some(a_id), ids(&moved), Settle::Ack)
        .await
        .unwrap_err();
    assert!(matches!(err, RouterError::StaleAck { .. }), "{err:?}");
    ack(&router, &b, &moved).await;
    let i = info(&router, "handoff").await;
    assert_eq!(i.members.len(), 1, "{i:?}");
    assert_eq!((i.inflight, i.counters.acked), (0, 3), "{i:?}");
}

#[tokio::test]
async fn a_member_holds_at_most_its_max_inflight() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    let small = MemberOptions {
        max_inflight: 2,
        ..MemberOptions::default()
    };
    let mut m = join(&router, "narrow", &["jobs"], from_earliest(), small).await;
    let sent = texts("n", 5);
    publish(&router, "jobs", &strs(&sent)).await;
    let mut got = Vec::new();
    while got.len() < sent.len() {
        let expect = (sent.len() - got.len()).min(2);
        let batch = receive(&mut m, expect).await;
        assert_eq!(batch.len(), expect, "{batch:?}");
        assert!(idle(&mut m), "more than max_inflight handed out");
        assert_eq!(info(&router, "narrow").await.inflight, expect as u64);
        ack(&router, &m, &batch).await;
        got.extend(batch);
    }
    assert_eq!(delivered(&got), sent);
}

#[tokio::test]
async fn a_new_group_starts_at_latest_unless_asked_for_earliest() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    publish(&router, "feed", &["before-1", "before-2"]).await;
    let mut late = join(
        &router,
        "late",
        &["feed"],
        GroupOptions::default(),
        MemberOptions::default(),
    )
    .await;
    let mut early = join_earliest(&router, "early", &["feed"]).await;
    publish(&router, "feed", &["after"]).await;
    assert_eq!(delivered(&receive(&mut late, 1).await), ["after"]);
    assert_eq!(
        delivered(&receive(&mut early, 3).await),
        ["before-1", "before-2", "after"]
    );
    assert!(idle(&mut late));
}

#[tokio::test]
async fn key_hash_sends_each_key_to_one_member_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    let options = GroupOptions {
        strategy: Some(Strategy::KeyHash),
        start: GroupStart::Earliest,
        ..GroupOptions::default()
    };
    let mut a = join(
        &router,
        "keyed",
        &["k"],
        options.clone(),
        MemberOptions::default(),
    )
    .await;
    let mut b = join(&router, "keyed", &["k"], options, MemberOptions::default()).await;
    let batch = (0..30)
        .map(|i| keyed("k", &format!("key{}", i % 3), &format!("key{}-{i}", i % 3)))
        .collect();
    router.publish(batch).await.unwrap();
    let got = receive_all(&mut [&mut a, &mut b], 30).await;
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    for (member, ds) in got.iter().enumerate() {
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        for d in ds {
            let key = String::from_utf8(d.message.key.clone().unwrap().to_vec()).unwrap();
            assert_eq!(*owner.entry(key.clone()).or_insert(member), member, "{key}");
            let seq = d.message.id.seq;
            assert!(
                last.insert(key, seq).is_none_or(|prev| prev < seq),
                "in order"
            );
        }
    }
    assert_eq!(owner.len(), 3);
    assert_eq!(info(&router, "keyed").await.strategy, "key-hash");
}

#[tokio::test]
async fn auto_ack_acknowledges_a_batch_when_the_member_asks_for_more() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    let auto = MemberOptions {
        ack: AckMode::Auto,
        ..MemberOptions::default()
    };
    let mut m = join(&router, "auto", &["jobs"], from_earliest(), auto).await;
    assert_eq!(m.ack(), AckMode::Auto);
    let sent = texts("a", 4);
    publish(&router, "jobs", &strs(&sent)).await;
    let got = receive(&mut m, 4).await;
    assert_eq!(delivered(&got), sent);
    // Asking for more acknowledges what was taken.
    assert!(idle(&mut m));
    let i = wait_info(&router, "auto", "the batch acknowledged", |i| {
        i.counters.acked == 4
    })
    .await;
    assert_eq!(i.inflight, 0, "{i:?}");
}

#[tokio::test]
async fn settings_conflicts_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    let options = GroupOptions {
        strategy: Some(Strategy::RoundRobin),
        ack_timeout: Some(Duration::from_secs(10)),
        max_deliveries: Some(3),
        start: GroupStart::Latest,
        create_limit: None,
    };
    let a = join(&router, "set", &["s.>"], options, MemberOptions::default()).await;
    let groups = router.groups();
    let other_strategy = GroupOptions {
        strategy: Some(Strategy::KeyHash),
        ..GroupOptions::default()
    };
    for (topics, o) in [
        (&["s.>"][..], other_strategy),
        (&["t.>"][..], GroupOptions::default()),
    ] {
        let err = groups
            .join(
                "set",
                crate::common::patterns(topics),
                o,
                MemberOptions::default(),
            )
            .await
            .err()
            .expect("refused");
        assert!(matches!(err, RouterError::GroupConflict(_)), "{err:?}");
    }
    let b = join(
        &router,
        "set",
        &["s.>"],
        GroupOptions::default(),
        MemberOptions::default(),
    )
    .await;
    let i = info(&router, "set").await;
    assert_eq!(i.strategy, "round-robin");
    assert_eq!(i.ack_timeout_ms, 10_000);
    assert_eq!(i.max_deliveries, 3);
    assert_eq!(i.topics, ["s.>"]);
    assert_eq!(i.members.len(), 2);

    let err = groups.delete("set").await.unwrap_err();
    assert!(matches!(err, RouterError::GroupConflict(_)), "{err:?}");
    drop((a, b));
    poll_until(
        TIMEOUT,
        "the group deleted once its members left",
        || groups.delete("set"),
        Result::is_ok,
    )
    .await
    .unwrap();
    let err = groups.info("set").await.unwrap_err();
    assert!(matches!(err, RouterError::GroupNotFound(_)), "{err:?}");
    assert!(groups.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn group_state_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    let options = GroupOptions {
        strategy: Some(Strategy::RoundRobin),
        ack_timeout: Some(Duration::from_secs(7)),
        start: GroupStart::Earliest,
        ..GroupOptions::default()
    };
    let mut a = join(
        &router,
        "durable",
        &["jobs"],
        options,
        MemberOptions::default(),
    )
    .await;
    let sent = texts("d", 5);
    publish(&router, "jobs", &strs(&sent)).await;
    let got = receive(&mut a, 5).await;
    ack(&router, &a, &got[..2]).await;
    drop(a);

    let router = reopen(router, dir.path()).await;
    let listed = router.groups().list().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let i = &listed[0];
    assert_eq!(i.name, "durable");
    assert_eq!(i.strategy, "round-robin");
    assert_eq!(i.ack_timeout_ms, 7_000);
    assert_eq!(i.counters.acked, 2, "{i:?}");

    // The unacknowledged three come back; the acknowledged two do not.
    let mut b = join(
        &router,
        "durable",
        &["jobs"],
        GroupOptions::default(),
        MemberOptions::default(),
    )
    .await;
    let again = receive(&mut b, 3).await;
    assert_eq!(delivered(&again), sent[2..]);
    assert!(again.iter().all(|d| d.delivery >= 2), "{again:?}");
    ack(&router, &b, &again).await;
    // And the group goes on from its position.
    publish(&router, "jobs", &["new"]).await;
    let fresh = receive(&mut b, 1).await;
    assert_eq!(delivered(&fresh), ["new"]);
    assert_eq!(fresh[0].delivery, 1);
    ack(&router, &b, &fresh).await;
    let i = info(&router, "durable").await;
    assert_eq!((i.inflight, i.lag, i.counters.acked), (0, 0, 6), "{i:?}");
}

/// A join whose caller goes away before the answer leaves no member
/// behind: nothing would ever leave that slot, which would count against
/// the member limit and refuse every delete.
#[tokio::test]
async fn a_join_abandoned_before_its_answer_leaves_no_member() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    let first = join(
        &router,
        "abandoned",
        &["jobs"],
        GroupOptions::default(),
        MemberOptions::default(),
    )
    .await;
    drop(first);
    wait_info(&router, "abandoned", "the first member gone", |i| {
        i.members.is_empty()
    })
    .await;
    {
        let joining = router.groups().join(
            "abandoned",
            crate::common::patterns(&["jobs"]),
            GroupOptions::default(),
            MemberOptions::default(),
        );
        tokio::pin!(joining);
        // One poll sends the request to the running group; on this
        // single-threaded runtime its coordinator cannot answer yet.
        tokio::select! {
            biased;
            _ = &mut joining => panic!("the join was answered within one poll"),
            () = std::future::ready(()) => {}
        }
    }
    wait_info(&router, "abandoned", "no member left", |i| {
        i.members.is_empty()
    })
    .await;
    router.groups().delete("abandoned").await.unwrap();
}
