//! Publishing and subscribing: order, start positions, waking a waiting
//! subscriber, validation, idempotency.

use switchyard_router::{InvalidMessage, RouterError, Start};

use crate::common::{TIMEOUT, collect, msg, open, patterns, payloads, publish, strs, text, texts};

#[tokio::test]
async fn publish_then_subscribe_from_earliest_delivers_everything_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    let sent = texts("m", 5);
    let stored = publish(&router, "orders", &strs(&sent)).await;
    for (i, a) in stored.iter().enumerate() {
        assert_eq!(a.topic.as_str(), "orders");
        assert_eq!(a.stream_seq, i as u64 + 1, "{a:?}");
        assert_eq!(a.id.origin, router.node_id());
        assert!(!a.duplicate);
    }
    assert!(stored.windows(2).all(|w| w[0].id.seq < w[1].id.seq));

    let mut sub = router
        .subscribe(patterns(&["orders"]), &Start::Earliest)
        .await
        .unwrap();
    let got = collect(&mut sub, 5).await;
    assert_eq!(payloads(&got), sent);
    let ids: Vec<_> = got.iter().map(|m| m.id).collect();
    assert_eq!(ids, stored.iter().map(|a| a.id).collect::<Vec<_>>());
    assert!(sub.next_available().await.unwrap().messages.is_empty());
    assert_eq!(sub.cursor(), &router.latest());
}

#[tokio::test]
async fn subscribe_from_latest_sees_only_what_is_published_after() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    publish(&router, "news", &["old-1", "old-2"]).await;
    let mut sub = router
        .subscribe(patterns(&["news"]), &Start::Latest)
        .await
        .unwrap();
    assert!(sub.next_available().await.unwrap().messages.is_empty());
    publish(&router, "news", &["new"]).await;
    let got = collect(&mut sub, 1).await;
    assert_eq!(payloads(&got), ["new"]);
}

#[tokio::test]
async fn a_waiting_subscriber_wakes_when_a_message_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    let mut sub = router
        .subscribe(patterns(&["events"]), &Start::Earliest)
        .await
        .unwrap();
    let waiting = tokio::spawn(async move {
        let d = tokio::time::timeout(TIMEOUT, sub.next())
            .await
            .expect("woken")
            .expect("read");
        d.messages.iter().map(|m| text(m)).collect::<Vec<_>>()
    });
    // The subscriber is parked on the store's change signal by now or
    // soon; either way the publish below must reach it.
    tokio::task::yield_now().await;
    publish(&router, "events", &["ping"]).await;
    assert_eq!(waiting.await.unwrap(), ["ping"]);
}

#[tokio::test]
async fn a_batch_with_an_invalid_entry_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    let too_big = "x".repeat(router.config().max_payload + 1);
    let err = router
        .publish(vec![
            msg("jobs", "fine"),
            msg("jobs", &too_big),
            msg("$sys.fake", "reserved"),
        ])
        .await
        .unwrap_err();
    match err {
        RouterError::InvalidBatch(bad) => {
            let at: Vec<usize> = bad.iter().map(|(i, _)| *i).collect();
            assert_eq!(at, [1, 2], "{bad:?}");
            assert!(matches!(bad[0].1, InvalidMessage::PayloadTooLarge { .. }));
            assert!(matches!(bad[1].1, InvalidMessage::ReservedTopic(_)));
        }
        other => panic!("expected InvalidBatch, got {other:?}"),
    }
    let err = router
        .publish(vec![msg("$sys.fake", "reserved")])
        .await
        .unwrap_err();
    assert!(
        matches!(err, RouterError::Invalid(InvalidMessage::ReservedTopic(_))),
        "{err:?}"
    );
    let mut sub = router
        .subscribe(patterns(&["jobs"]), &Start::Earliest)
        .await
        .unwrap();
    assert!(sub.next_available().await.unwrap().messages.is_empty());
    assert!(router.topics().is_empty(), "{:?}", router.topics());
}

#[tokio::test]
async fn a_repeated_idempotency_key_answers_with_the_first_message() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    let keyed = |payload: &str| {
        let mut m = msg("payments", payload);
        m.idempotency_key = Some("pay-1".into());
        m
    };
    let first = router.publish(vec![keyed("first")]).await.unwrap();
    let again = router.publish(vec![keyed("second")]).await.unwrap();
    let (first, again) = (&first[0].results[0], &again[0].results[0]);
    assert!(!first.duplicate);
    assert!(again.duplicate, "{again:?}");
    assert_eq!(first.id, again.id);
    let mut sub = router
        .subscribe(patterns(&["payments"]), &Start::Earliest)
        .await
        .unwrap();
    let got = collect(&mut sub, 1).await;
    assert_eq!(payloads(&got), ["first"]);
    assert!(sub.next_available().await.unwrap().messages.is_empty());
}
