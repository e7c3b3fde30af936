//! `fsync = always`: after `kill -9` every acknowledged message is there, the
//! sequence continues, and a subscriber resumes with no gap or repeat.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;

use crate::support::{Node, Sse, seq_of, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &["--fsync", "always"]);
    let acked: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut publishers = Vec::new();
    for p in 0..8 {
        let (client, acked, stop) = (node.client.clone(), acked.clone(), stop.clone());
        publishers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Errors are expected once the node is killed.
                match client
                    .publish("crash.t", format!("p{p}-{i}").into(), None, &[], None)
                    .await
                {
                    Ok(v) => {
                        acked.lock().await.insert(seq_of(v["id"].as_str().unwrap()));
                    }
                    Err(_) => break,
                }
                i += 1;
            }
        }));
    }
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
