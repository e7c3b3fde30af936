//! A subscriber that does not read lags in the log: while 50 MiB are
//! published, the node's resident memory grows no more than it does for the
//! same publishes with no subscriber at all, within a small bound.

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::support::{Node, wait_until};

/// Resident memory a stalled subscriber may add, in KiB. It holds one read
/// batch (at most 256 messages or 1 MiB) in the server's write path, beyond
/// what the kernel's socket buffers take (not resident in the process).
const BOUND_KIB: u64 = 8 * 1024;
const TOTAL_BYTES: usize = 50 * 1024 * 1024;
const PAYLOAD: usize = 1024;
const PER_BATCH: usize = 500;

async fn publish_50_mib(node: &Node) {
    let payload = "x".repeat(PAYLOAD);
    let batches = TOTAL_BYTES / (PAYLOAD * PER_BATCH);
    for _ in 0..batches {
        let entries: Vec<_> = (0..PER_BATCH)
            .map(|_| json!({"payload": payload}))
            .collect();
        let (status, _, body) = node
            .raw(
                node.request("POST", "/v1/batch?topic=mem.t")
                    .header("content-type", "application/json"),
                serde_json::to_vec(&entries).unwrap(),
            )
            .await;
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    }
}

/// RSS growth of a fresh node over the 50 MiB publish, with or without a
/// subscriber that never reads.
async fn growth_kib(stalled_subscriber: bool) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    // Warm up so that allocator pools and the runtime are in place.
    node.publish("mem.warm", "x").await;
    let mut stalled = None;
    if stalled_subscriber {
        let addr = node.url.trim_start_matches("http://").to_owned();
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let req = format!(
            "GET /v1/events?topic=mem.t&from=earliest HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        stalled = Some(s); // never read from
    }
    let before = node.rss_kib();
    publish_50_mib(&node).await;
    // Give the stalled stream time to fill every buffer it can.
    let mut last = 0;
    wait_until(Duration::from_secs(10), "memory to settle", || {
        let now = node.rss_kib();
        let settled = now.abs_diff(last) < 256;
        last = now;
        async move { settled }
    })
    .await;
    let after = node.rss_kib();
    drop(stalled);
    after.saturating_sub(before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscriber_does_not_grow_memory() {
    let without = growth_kib(false).await;
    let with = growth_kib(true).await;
    eprintln!(
        "RSS growth over 50 MiB of publishes: {without} KiB without a subscriber, {with} KiB with a stalled one"
    );
    assert!(
        with <= without + BOUND_KIB,
        "a stalled subscriber added {} KiB (bound {BOUND_KIB} KiB)",
        with.saturating_sub(without)
    );
}
