//! Topic patterns: `*` is one token, `>` one or more at the end, and
//! neither matches a reserved `$` topic in the first position.

use std::time::Duration;

use switchyard_router::{ErrorPolicy, Hook, Start};

use crate::common::{bind, collect, msg, open, patterns, payloads, spec};

/// Publishes one message per topic, the topic as its payload, then reads
/// everything `pattern_list` matches.
async fn matched(pattern_list: &[&str], expected: usize) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    let topics = [
        "a", "a.b", "a.x", "a.b.c", "a.b.c.d", "b.b", "b.b.c", "x.b.c",
    ];
    router
        .publish(topics.iter().map(|t| msg(t, t)).collect())
        .await
        .unwrap();
    let mut sub = router
        .subscribe(patterns(pattern_list), &Start::Earliest)
        .await
        .unwrap();
    let got = payloads(&collect(&mut sub, expected).await);
    assert!(
        sub.next_available().await.unwrap().messages.is_empty(),
        "more than {expected} messages for {pattern_list:?}"
    );
    got
}

#[tokio::test]
async fn star_matches_exactly_one_token() {
    assert_eq!(matched(&["a.*"], 2).await, ["a.b", "a.x"]);
    assert_eq!(matched(&["*.b.c"], 3).await, ["a.b.c", "b.b.c", "x.b.c"]);
    assert_eq!(matched(&["*.*.*.*"], 1).await, ["a.b.c.d"]);
}

#[tokio::test]
async fn greater_than_matches_one_or_more_trailing_tokens() {
    assert_eq!(
        matched(&["a.>"], 4).await,
        ["a.b", "a.x", "a.b.c", "a.b.c.d"]
    );
    assert_eq!(matched(&["a.b.>"], 2).await, ["a.b.c", "a.b.c.d"]);
    assert_eq!(matched(&[">"], 8).await.len(), 8);
}

#[tokio::test]
async fn a_set_of_patterns_delivers_each_matching_message_once() {
    // `a.b.c` matches all three patterns and still arrives once.
    assert_eq!(
        matched(&["a.b.c", "a.*.c", "a.>", "b.b"], 5).await,
        ["a.b", "a.x", "a.b.c", "a.b.c.d", "b.b"]
    );
}

#[tokio::test]
async fn wildcards_do_not_reach_reserved_topics() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    // A route plugin that traps, with the dead-letter policy: what is
    // published on `orders` is stored on the reserved `$dlq.orders`.
    let mut s = spec("trap", Hook::Route, &["orders"], "");
    s.on_error = ErrorPolicy::DeadLetter;
    bind(&router, s, "trap");
    let published = router
        .publish(vec![msg("orders", "doomed"), msg("sys.plain", "plain")])
        .await
        .unwrap();
    assert!(published[0].plugin_error.is_some(), "{published:?}");
    assert_eq!(published[0].results[0].topic.as_str(), "$dlq.orders");

    let pull = |p: &'static [&'static str]| {
        let router = router.clone();
        async move {
            let b = router
                .pull(patterns(p), &Start::Earliest, 100, Duration::ZERO, None)
                .await
                .unwrap();
            payloads(&b.messages)
        }
    };
    assert_eq!(pull(&[">"]).await, ["plain"]);
    assert_eq!(pull(&["*.plain"]).await, ["plain"]);
    assert_eq!(pull(&["*.orders"]).await, Vec::<String>::new());
    assert_eq!(pull(&["$dlq.>"]).await, ["doomed"]);
    assert_eq!(pull(&["$dlq.orders"]).await, ["doomed"]);
}
