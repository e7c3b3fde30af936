//! Resuming from a cursor: the messages after it, each once, also after
//! the router was closed and opened again on the same directory.

use switchyard_model::{Cursor, Timestamp};
use switchyard_router::{Router, Start};

use crate::common::{collect, config, open, patterns, payloads, publish, reopen, strs, texts};

/// A router that reads at most three messages at a time, so that a
/// subscription crosses several reads.
fn open_small_reads(dir: &std::path::Path) -> Router {
    let mut c = config(dir);
    c.read_limit = 3;
    Router::open(c).expect("router opens")
}

#[tokio::test]
async fn resuming_after_each_message_delivers_exactly_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let router = open_small_reads(dir.path());
    let sent = texts("r", 10);
    publish(&router, "stream", &strs(&sent)).await;

    // Walk the whole stream batch by batch, noting the cursor after each
    // message as an SSE client would.
    let mut sub = router
        .subscribe(patterns(&["stream"]), &Start::Earliest)
        .await
        .unwrap();
    let mut seen: Vec<(String, Cursor)> = Vec::new();
    while seen.len() < sent.len() {
        let d = sub.next_available().await.unwrap();
        assert!(d.messages.len() <= 3, "read limit: {}", d.messages.len());
        assert!(!d.messages.is_empty(), "stopped after {}", seen.len());
        d.for_each_with_cursor(|m, c| seen.push((crate::common::text(m), c.clone())));
    }
    assert_eq!(seen.iter().map(|s| s.0.clone()).collect::<Vec<_>>(), sent);

    for (i, (_, cursor)) in seen.iter().enumerate() {
        // The cursor survives its text form (the Last-Event-ID header).
        let cursor: Cursor = cursor.encode().parse().expect("cursor parses");
        let mut resumed = router
            .subscribe(patterns(&["stream"]), &Start::After(cursor))
            .await
            .unwrap();
        let rest = sent.len() - i - 1;
        let got = collect(&mut resumed, rest).await;
        assert_eq!(payloads(&got), sent[i + 1..], "resumed after message {i}");
        assert!(resumed.next_available().await.unwrap().messages.is_empty());
    }
}

#[tokio::test]
async fn a_cursor_resumes_across_a_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    let node = router.node_id();
    let before = texts("before", 6);
    publish(&router, "audit", &strs(&before)).await;
    let mut sub = router
        .subscribe(patterns(&["audit"]), &Start::Earliest)
        .await
        .unwrap();
    let got = collect(&mut sub, 6).await;
    // Stop after the fourth message.
    let mut cursor = Cursor::earliest();
    cursor.advance(got[3].id.origin, got[3].id.seq);
    let saved = cursor.encode();
    drop(sub);

    let router = reopen(router, dir.path()).await;
    assert_eq!(router.node_id(), node, "the node keeps its id");
    let after = texts("after", 3);
    publish(&router, "audit", &strs(&after)).await;
    let mut resumed = router
        .subscribe(patterns(&["audit"]), &Start::After(saved.parse().unwrap()))
        .await
        .unwrap();
    let got = collect(&mut resumed, 5).await;
    let want: Vec<String> = before[4..].iter().chain(&after).cloned().collect();
    assert_eq!(payloads(&got), want);
    assert!(resumed.next_available().await.unwrap().messages.is_empty());

    // Everything is still there from the start, numbered on from before.
    let mut all = router
        .subscribe(patterns(&["audit"]), &Start::Earliest)
        .await
        .unwrap();
    let got = collect(&mut all, 9).await;
    assert_eq!(got.len(), 9);
    let seqs: Vec<u64> = got.iter().map(|m| m.stream_seq).collect();
    assert_eq!(seqs, (1..=9).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_subscription_from_a_time_starts_at_the_first_message_at_or_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    let sent = texts("t", 5);
    let stored = publish(&router, "clock", &strs(&sent)).await;
    let third: Timestamp = stored[2].timestamp;
    let mut sub = router
        .subscribe(patterns(&["clock"]), &Start::Time(third))
        .await
        .unwrap();
    let got = collect(&mut sub, 3).await;
    assert_eq!(payloads(&got), sent[2..]);
}
