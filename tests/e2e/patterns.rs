//! Pattern semantics end to end: `*` is one token, `>` one or more trailing
//! tokens, several patterns combine, reserved topics stay out of wildcards.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::{Node, Sse, enc};

const TOPICS: &[&str] = &[
    "orders",
    "orders.eu",
    "orders.us",
    "orders.eu.created",
    "orders.eu.west.created",
    "ordersx.eu",
    "billing.eu",
    "a.b.c.d",
];

async fn topics_of(node: &Node, query: &str) -> BTreeSet<String> {
    let v = node
        .get_json(&format!("/v1/messages?{query}&from=earliest&limit=1000"))
        .await;
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["topic"].as_str().unwrap().to_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_match_exactly_what_they_should() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    for t in TOPICS {
        node.publish(t, *t).await;
    }
    let q = |p: &str| format!("topic={}", enc(p));
    assert_eq!(
        topics_of(&node, &q("orders.*")).await,
        set(&["orders.eu", "orders.us"])
    );
    assert_eq!(
        topics_of(&node, &q("orders.>")).await,
        set(&[
            "orders.eu",
            "orders.us",
            "orders.eu.created",
            "orders.eu.west.created"
        ])
    );
    assert_eq!(
        topics_of(&node, &q("*.eu")).await,
        set(&["orders.eu", "ordersx.eu", "billing.eu"])
    );
    assert_eq!(
        topics_of(&node, &q("orders.*.created")).await,
        set(&["orders.eu.created"])
    );
    assert_eq!(topics_of(&node, &q("orders")).await, set(&["orders"]));
    assert_eq!(
        topics_of(&node, &q("*.*.>")).await,
        set(&["orders.eu.created", "orders.eu.west.created", "a.b.c.d"])
    );
    assert_eq!(topics_of(&node, &q(">")).await.len(), TOPICS.len());
    let two = format!("{}&{}", q("billing.*"), q("orders.us"));
    assert_eq!(
        topics_of(&node, &two).await,
        set(&["billing.eu", "orders.us"])
    );
    assert!(topics_of(&node, &q("nothing.here")).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_subscription_filters_by_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    let mut sse = Sse::connect(
        &node,
        &format!(
            "/v1/events?topic={}&topic={}",
            enc("orders.*.created"),
            enc("billing.>")
        ),
        None,
    )
    .await
    .unwrap();
    for t in TOPICS {
        node.publish(t, *t).await;
    }
    node.publish("billing.eu.paid", "billing.eu.paid").await;
    let mut got = Vec::new();
    while let Some(ev) = sse.next(Duration::from_millis(700)).await {
        got.push(ev.data);
    }
    assert_eq!(
        got,
        vec!["orders.eu.created", "billing.eu", "billing.eu.paid"]
    );
}
