//! `fsync = always`: after `kill -9` every acknowledged message is there, the
//! sequence continues, and a subscriber resumes with no gap or repeat.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;

use crate::support::{Node, Sse, seq_of, wait_until};

type Acked = Arc<Mutex<BTreeSet<u64>>>;

/// Publishes `{prefix}{i}` to `topic` for i = 0, 1, ... until a publish
/// fails (errors are expected once the node is killed) or `stop` is set,
/// recording each acknowledged origin sequence in `acked`.
fn spawn_publisher(
    node: &Node,
    topic: &'static str,
    prefix: String,
    acked: Acked,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let client = node.client.clone();
    tokio::spawn(async move {
        for i in 0u64.. {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            match client
                .publish(topic, format!("{prefix}{i}").into(), None, &[], None)
                .await
            {
                Ok(v) => {
                    acked.lock().await.insert(seq_of(v["id"].as_str().unwrap()));
                }
                Err(_) => break,
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &["--fsync", "always"]);
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..8)
        .map(|p| {
            spawn_publisher(
                &node,
                "crash.t",
                format!("p{p}-"),
                acked.clone(),
                stop.clone(),
            )
        })
        .collect();
    // A subscriber takes an id while messages flow.
    let mut sse = Sse::connect(&node, "/v1/events?topic=crash.t&from=earliest", None)
        .await
        .unwrap();
    let mut seen_before_kill = Vec::new();
    let mut resume_id = None;
    while seen_before_kill.len() < 200 {
        let ev = sse
            .next(Duration::from_secs(10))
            .await
            .expect("events before the kill");
        seen_before_kill.push(ev.data);
        resume_id = ev.id;
    }
    drop(sse);
    wait_until(
        Duration::from_secs(30),
        "1000 acknowledged publishes",
        || {
            let acked = acked.clone();
            async move { acked.lock().await.len() >= 1000 }
        },
    )
    .await;
    node.kill9();
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        p.await.unwrap();
    }
    let acked = acked.lock().await.clone();

    let node = Node::start(dir.path(), &["--fsync", "always"]);
    let all = node.pull_all("crash.t").await;
    let stored: BTreeSet<u64> = all
        .iter()
        .map(|m| seq_of(m["id"].as_str().unwrap()))
        .collect();
    let lost: Vec<&u64> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    // Sequences are dense and continue without reuse.
    let max = *stored.iter().max().unwrap();
    assert_eq!(
        stored.len() as u64,
        max,
        "origin sequences are dense from 1"
    );
    let next = node.publish("crash.t", "after").await;
    assert_eq!(seq_of(next["id"].as_str().unwrap()), max + 1);
    assert_eq!(
        next["seq"].as_u64().unwrap(),
        max + 1,
        "stream sequence continues too"
    );

    // Resuming from the id taken before the kill: exactly the rest, in order.
    let payloads: Vec<String> = all
        .iter()
        .map(|m| m["payload"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(&payloads[..seen_before_kill.len()], &seen_before_kill[..]);
    let mut sse = Sse::connect(&node, "/v1/events?topic=crash.t", resume_id.as_deref())
        .await
        .unwrap();
    let mut rest = Vec::new();
    while let Some(ev) = sse.next(Duration::from_secs(2)).await {
        rest.push(ev.data);
        if rest.len() == payloads.len() + 1 - seen_before_kill.len() {
            break;
        }
    }
    let mut expected: Vec<String> = payloads[seen_before_kill.len()..].to_vec();
    expected.push("after".into());
    assert_eq!(rest, expected);
}

/// Posts `body` as an NDJSON batch; `None` when the node is gone or
/// refused it.
async fn post_batch(node_url: &str, topic: &str, body: Vec<u8>) -> Option<Vec<u64>> {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("{node_url}/v1/batch?topic={topic}"))
        .header("content-type", "application/x-ndjson")
        .body(Full::new(bytes::Bytes::from(body)))
        .ok()?;
    let resp = client.request(req).await.ok()?;
    if resp.status().as_u16() != 201 {
        return None;
    }
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    v["results"]
        .as_array()?
        .iter()
        .map(|r| r["id"].as_str().map(seq_of))
        .collect()
}

/// Batches large enough to be written in slices before their commit, with
/// single publishes between them: after `kill -9` each batch is there
/// whole or not at all, every acknowledged one whole, and the log's
/// sequences dense.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_large_batches_leaves_each_whole_or_absent() {
    const ENTRIES: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &["--fsync", "always"]);
    let acked_batches: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let acked_singles: Acked = Arc::default();
    let mut tasks = Vec::new();
    for t in 0..3 {
        let (url, acked) = (node.url.clone(), acked_batches.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let tag = format!("b{t}-{n}");
                let mut body = Vec::with_capacity(ENTRIES * 4020);
                for i in 0..ENTRIES {
                    let mut payload = format!("{tag}-{i}-");
                    payload.push_str(&"x".repeat(4000 - payload.len()));
                    body.extend_from_slice(
                        serde_json::json!({ "payload": payload })
                            .to_string()
                            .as_bytes(),
                    );
                    body.push(b'\n');
                }
                match post_batch(&url, "crash.big", body).await {
                    Some(seqs) => {
                        assert_eq!(seqs.len(), ENTRIES);
                        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "dense: {seqs:?}");
                        acked.lock().await.insert(tag);
                    }
                    None => break,
                }
            }
        }));
    }
    tasks.push(spawn_publisher(
        &node,
        "crash.big",
        "single-".into(),
        acked_singles.clone(),
        Arc::default(),
    ));
    wait_until(Duration::from_secs(60), "6 acknowledged batches", || {
        let acked = acked_batches.clone();
        async move { acked.lock().await.len() >= 6 }
    })
    .await;
    node.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let (acked_batches, acked_singles) = (
        acked_batches.lock().await.clone(),
        acked_singles.lock().await.clone(),
    );

    let node = Node::start(dir.path(), &["--fsync", "always"]);
    let all = node.pull_all("crash.big").await;
    let mut per_batch: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    let mut singles = BTreeSet::new();
    let mut seqs = Vec::new();
    for m in &all {
        let seq = seq_of(m["id"].as_str().unwrap());
        seqs.push(seq);
        let payload = m["payload"].as_str().unwrap();
        if payload.starts_with("single-") {
            singles.insert(seq);
            continue;
        }
        let mut parts = payload.splitn(3, '-');
        let (b, n, i) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let i: usize = i.split('-').next().unwrap().parse().unwrap();
        assert_eq!(payload.len(), 4000, "payload of {b}-{n}-{i} whole");
        per_batch.entry(format!("{b}-{n}")).or_default().push(i);
    }
    for (tag, entries) in &per_batch {
        assert_eq!(
            entries,
            &(0..ENTRIES).collect::<Vec<_>>(),
            "batch {tag} is whole and in order"
        );
    }
    for tag in &acked_batches {
        assert!(per_batch.contains_key(tag), "acknowledged batch {tag} lost");
    }
    let lost: Vec<_> = acked_singles.difference(&singles).collect();
    assert!(lost.is_empty(), "acknowledged publishes lost: {lost:?}");
    eprintln!(
        "{} batches acknowledged, {} stored; {} single publishes; an unfinished batch removed \
         at the restart: {}",
        acked_batches.len(),
        per_batch.len(),
        singles.len(),
        node.log().contains("did not finish")
    );
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "origin sequences dense from 1"
    );
    // Nothing of an unfinished batch is left: a new large batch and a
    // single publish continue the sequence.
    let next = node.publish("crash.big", "after").await;
    assert_eq!(seq_of(next["id"].as_str().unwrap()), seqs.len() as u64 + 1);
}
