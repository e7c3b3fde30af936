//! A subscriber whose connection is cut at random points and that resumes
//! with its last event id receives every message exactly once, in order.

use std::time::Duration;

use crate::support::{Node, Rng, Sse, seq_of};

const MESSAGES: usize = 10_000;

/// Message `i`'s payload: short, and every 50th one 6 KiB on one line, so
/// that events whose payload goes out as a part of its own (without a
/// copy) are cut and resumed too.
fn payload(i: usize) -> String {
    if i % 50 == 7 {
        format!("m-{i}-{}", "x".repeat(6 * 1024))
    } else {
        format!("m-{i}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_random_cuts_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    let seed = 0x5eed_0001;
    let mut rng = Rng::new(seed);

    // The subscriber starts before the first publish, from `latest`.
    let path = "/v1/events?topic=resume.t";
    let mut sse = Sse::connect(&node, path, None).await.unwrap();

    let publisher = {
        let node_url = node.url.clone();
        tokio::spawn(async move {
            let client = switchyard::client::Client::new(&node_url).unwrap();
            let mut acked = Vec::with_capacity(MESSAGES);
            for i in 0..MESSAGES {
                let payload = payload(i);
                let v = client
                    .publish("resume.t", payload.clone().into(), None, &[], None)
                    .await
                    .unwrap();
                acked.push((seq_of(v["id"].as_str().unwrap()), payload));
            }
            acked
        })
    };

    let mut received: Vec<String> = Vec::with_capacity(MESSAGES);
    let mut last_id: Option<String> = None;
    let mut cuts = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while received.len() < MESSAGES {
        assert!(
            std::time::Instant::now() < deadline,
            "seed {seed:#x}: only {} of {MESSAGES} received",
            received.len()
        );
        // Read a random number of events, then cut the connection, dropping
        // whatever else the server already sent.
        let budget = 1 + rng.below(2500);
        let mut n = 0;
        while n < budget && received.len() < MESSAGES {
            match sse.next(Duration::from_secs(10)).await {
                Some(ev) if ev.event == "message" => {
                    received.push(ev.data);
                    last_id = ev.id;
                    n += 1;
                }
                Some(other) => panic!("seed {seed:#x}: unexpected event {other:?}"),
                None => break,
            }
        }
        if received.len() < MESSAGES {
            cuts += 1;
            drop(sse);
            sse = Sse::connect(&node, path, last_id.as_deref()).await.unwrap();
        }
    }
    let mut acked = publisher.await.unwrap();
    acked.sort();
    let expected: Vec<String> = acked.into_iter().map(|(_, p)| p).collect();
    assert!(
        cuts >= 3,
        "seed {seed:#x}: the test must cut the connection several times (cut {cuts})"
    );
    assert_eq!(received.len(), expected.len(), "seed {seed:#x}");
    let first_diff = received.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(
        first_diff, None,
        "seed {seed:#x}: first difference at index {first_diff:?}"
    );
    // Nothing more arrives after the last message.
    assert!(sse.next(Duration::from_millis(300)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_precedence_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &[]);
    for i in 0..5 {
        node.publish("p.t", format!("{i}")).await;
    }
    let mut sse = Sse::connect(&node, "/v1/events?topic=p.t&from=earliest", None)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        let ev = sse.next(Duration::from_secs(5)).await.unwrap();
        assert_eq!(ev.data, i.to_string());
        ids.push(ev.id.unwrap());
    }
    drop(sse);

    // The query parameter works for a first EventSource request...
    let mut s = Sse::connect(
        &node,
        &format!("/v1/events?topic=p.t&last_event_id={}", ids[2]),
        None,
    )
    .await
    .unwrap();
    assert_eq!(s.next(Duration::from_secs(5)).await.unwrap().data, "3");
    // ...also under Mercure's name, but not under both names at once...
    let mut s = Sse::connect(
        &node,
        &format!("/v1/events?topic=p.t&lastEventID={}", ids[1]),
        None,
    )
    .await
    .unwrap();
    assert_eq!(s.next(Duration::from_secs(5)).await.unwrap().data, "2");
    let both = format!(
        "/v1/events?topic=p.t&lastEventID={}&last_event_id={}",
        ids[1], ids[1]
    );
    let (status, _, body) = node.raw(node.request("GET", &both), "").await;
    assert_eq!(status, 400, "{body:?}");
    // ...and the header wins over both the parameter and `from`.
    let path = format!(
        "/v1/events?topic=p.t&from=earliest&last_event_id={}",
        ids[0]
    );
    let mut s = Sse::connect(&node, &path, Some(&ids[3])).await.unwrap();
    assert_eq!(s.next(Duration::from_secs(5)).await.unwrap().data, "4");
    drop(s);

    // The cursor stays valid across a restart of the node.
    node.kill9();
    let node = Node::start(dir.path(), &[]);
    node.publish("p.t", "5").await;
    let mut s = Sse::connect(&node, "/v1/events?topic=p.t", Some(&ids[1]))
        .await
        .unwrap();
    for want in ["2", "3", "4", "5"] {
        assert_eq!(s.next(Duration::from_secs(5)).await.unwrap().data, want);
    }
    assert!(s.next(Duration::from_millis(300)).await.is_none());
}
