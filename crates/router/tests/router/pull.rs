//! The pull API: bounded reads that page through a topic with a cursor.

use std::time::Duration;

use switchyard_router::Start;

use crate::common::{TIMEOUT, open, patterns, publish, strs, text, texts};

#[tokio::test]
async fn pull_pages_through_a_topic_with_limit_and_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    let sent = texts("p", 7);
    publish(&router, "tasks", &strs(&sent)).await;
    publish(&router, "other", &["not mine"]).await;

    let mut start = Start::Earliest;
    let mut pages = Vec::new();
    for _ in 0..3 {
        let b = router
            .pull(patterns(&["tasks"]), &start, 3, Duration::ZERO, None)
            .await
            .unwrap();
        assert!(b.gaps.is_empty());
        pages.push(b.messages.iter().map(|m| text(m)).collect::<Vec<_>>());
        start = Start::After(b.cursor);
    }
    assert_eq!(
        pages,
        [&sent[0..3], &sent[3..6], &sent[6..7]].map(<[String]>::to_vec)
    );

    // Caught up: an empty page that keeps the position.
    let Start::After(end) = start.clone() else {
        unreachable!()
    };
    let b = router
        .pull(patterns(&["tasks"]), &start, 3, Duration::ZERO, None)
        .await
        .unwrap();
    assert!(b.messages.is_empty());
    assert_eq!(b.cursor, end);

    // What is published next is the next page.
    publish(&router, "tasks", &["late"]).await;
    let b = router
        .pull(patterns(&["tasks"]), &start, 3, Duration::ZERO, None)
        .await
        .unwrap();
    assert_eq!(
        b.messages.iter().map(|m| text(m)).collect::<Vec<_>>(),
        ["late"]
    );
}

#[tokio::test]
async fn a_waiting_pull_returns_the_first_message_published() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    publish(&router, "inbox", &["before"]).await;
    let from = Start::After(router.latest());
    let puller = router.clone();
    let waiting = tokio::spawn(async move {
        puller
            .pull(patterns(&["inbox"]), &from, 10, TIMEOUT, None)
            .await
            .unwrap()
    });
    // Let the pull start waiting; it returns the message whether it finds
    // it at once or is woken by it.
    tokio::task::yield_now().await;
    publish(&router, "inbox", &["hello"]).await;
    let b = waiting.await.unwrap();
    assert_eq!(
        b.messages.iter().map(|m| text(m)).collect::<Vec<_>>(),
        ["hello"]
    );
    assert_eq!(b.cursor, router.latest());
}

#[tokio::test(start_paused = true)]
async fn a_pull_with_nothing_to_read_returns_empty_after_its_wait() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    let wait = Duration::from_secs(30);
    let started = tokio::time::Instant::now();
    let real = std::time::Instant::now();
    let b = router
        .pull(patterns(&["quiet"]), &Start::Earliest, 10, wait, None)
        .await
        .unwrap();
    assert!(b.messages.is_empty());
    assert!(started.elapsed() >= wait, "{:?}", started.elapsed());
    assert!(
        real.elapsed() < TIMEOUT,
        "the paused clock moved on its own"
    );
}
