//! Publishing: the answer's shape, headers and keys, batches, idempotency,
//! envelopes, binary payloads, time starts, heartbeats, retention gaps, and
//! the command-line client.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{BIN, Node, Sse, enc, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_answer_headers_key_and_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let req = node
        .request("POST", "/v1/topics/orders.eu")
        .header("content-type", "application/json")
        .header("switchyard-key", "customer-7")
        .header("switchyard-header-region", "eu-west");
    let (status, _, body) = node.raw(req, r#"{"total":3}"#).await;
    assert_eq!(status, 201);
    let ans: Value = serde_json::from_slice(&body).unwrap();
    for field in ["topic", "id", "origin", "seq", "timestamp"] {
        assert!(ans.get(field).is_some(), "answer has {field}: {ans}");
    }
    assert_eq!(ans["seq"], 1);
    assert!(
        ans["id"]
            .as_str()
            .unwrap()
            .starts_with(ans["origin"].as_str().unwrap())
    );
    let (status, _, _) = node
        .raw(
            node.request("POST", "/v1/topics/orders.eu?key=k2"),
            "line one\nline two",
        )
        .await;
    assert_eq!(status, 201);

    let msgs = node.pull_all("orders.eu").await;
    assert_eq!(msgs[0]["key"], "customer-7");
    assert_eq!(msgs[0]["headers"]["content-type"], "application/json");
    assert_eq!(msgs[0]["headers"]["region"], "eu-west");
    assert_eq!(msgs[0]["payload"], r#"{"total":3}"#);
    assert_eq!(msgs[0]["id"], ans["id"]);
    assert_eq!(msgs[1]["key"], "k2");

    // SSE: raw payloads split into data lines; JSON envelopes on request.
    let mut raw = Sse::connect(&node, "/v1/events?topic=orders.eu&from=earliest", None)
        .await
        .unwrap();
    assert_eq!(
        raw.next(Duration::from_secs(5)).await.unwrap().data,
        r#"{"total":3}"#
    );
    assert_eq!(
        raw.next(Duration::from_secs(5)).await.unwrap().data,
        "line one\nline two"
    );
    assert!(String::from_utf8_lossy(&raw.raw).contains("data: line one\ndata: line two\n"));
    assert!(String::from_utf8_lossy(&raw.raw).starts_with("retry: "));
    let mut js = Sse::connect(
        &node,
        "/v1/events?topic=orders.eu&from=earliest&format=json",
        None,
    )
    .await
    .unwrap();
    let ev = js.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(ev.event, "message");
    let env: Value = serde_json::from_str(&ev.data).unwrap();
    assert_eq!(env["key"], "customer-7");
    assert_eq!(env["seq"], 1);
    assert_eq!(env["topic"], "orders.eu");

    // Binary payloads: base64 in JSON, a `binary` event in raw format.
    node.publish("bin.t", vec![0u8, 159, 146, 150]).await;
    let msgs = node.pull_all("bin.t").await;
    assert_eq!(msgs[0]["payload_base64"], "AJ+Slg==");
    let mut b = Sse::connect(&node, "/v1/events?topic=bin.t&from=earliest", None)
        .await
        .unwrap();
    let ev = b.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (ev.event.as_str(), ev.data.as_str()),
        ("binary", "AJ+Slg==")
    );

    // Topics list counts, bytes and timestamps.
    let topics = node.get_json("/v1/topics").await;
    let t = topics["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == "orders.eu")
        .unwrap()
        .clone();
    assert_eq!(t["messages"], 2);
    assert!(t["bytes"].as_u64().unwrap() > 20);
    assert!(t["first_timestamp"].as_str().unwrap() <= t["last_timestamp"].as_str().unwrap());
    assert_eq!(node.get_json("/healthz").await["status"], "ok");
    assert_eq!(node.get_json("/readyz").await["status"], "ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_idempotency() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let entries = json!([
        {"topic": "b.one", "payload": "1"},
        {"payload": "2", "key": "k", "headers": {"x": "y"}},
        {"topic": "b.two", "payload_base64": "AAE="},
    ]);
    let req = node
        .request("POST", "/v1/batch?topic=b.default")
        .header("content-type", "application/json");
    let (status, _, body) = node.raw(req, serde_json::to_vec(&entries).unwrap()).await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let results = serde_json::from_slice::<Value>(&body).unwrap()["results"]
        .as_array()
        .unwrap()
        .clone();
    let topics: Vec<&str> = results
        .iter()
        .map(|r| r["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics, ["b.one", "b.default", "b.two"]);
    let ndjson = "{\"payload\":\"a\"}\n{\"payload\":\"b\"}\n\n{\"payload\":\"c\"}\n";
    let req = node
        .request("POST", "/v1/batch?topic=b.nd")
        .header("content-type", "application/x-ndjson");
    let (status, _, body) = node.raw(req, ndjson).await;
    assert_eq!(status, 201);
    let seqs: Vec<u64> = serde_json::from_slice::<Value>(&body).unwrap()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    // Without a JSON content type (curl's default form type, which a web
    // page can send without a preflight, or none), nothing is stored.
    for (body, ct) in [
        ("[{\"payload\":\"x\"}]", "application/x-www-form-urlencoded"),
        ("{\"payload\":\"y\"}\n", ""),
    ] {
        let mut req = node.request("POST", "/v1/batch?topic=b.sniff");
        if !ct.is_empty() {
            req = req.header("content-type", ct);
        }
        let (status, _, answer) = node.raw(req, body).await;
        assert_eq!(status, 415, "{}", String::from_utf8_lossy(&answer));
    }
    assert!(node.pull_all("b.sniff").await.is_empty());

    // Idempotency: the retry returns the first answer and stores nothing new.
    let req = || {
        node.request("POST", "/v1/topics/idem.t")
            .header("idempotency-key", "order-42")
    };
    let (s1, h1, b1) = node.raw(req(), "first").await;
    let (s2, h2, b2) = node.raw(req(), "second").await;
    assert_eq!((s1, s2), (201, 201));
    assert!(h1.get("idempotent-replayed").is_none());
    assert_eq!(h2["idempotent-replayed"], "true");
    let (a1, a2): (Value, Value) = (
        serde_json::from_slice(&b1).unwrap(),
        serde_json::from_slice(&b2).unwrap(),
    );
    assert_eq!(a1["id"], a2["id"]);
    assert_eq!(a2["duplicate"], true);
    let stored = node.pull_all("idem.t").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["payload"], "first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_start_heartbeat_and_retention_gap() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[sse]\nheartbeat_secs = 1\n[retention]\ninterval_ms = 50\n[[retention.topics]]\npattern = \"small.>\"\nmax_bytes = 1000\n";
    let node = Node::start_with_config(dir.path(), config, &["--fsync", "never"]);
    node.publish("time.t", "old").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mid = node.publish("time.t", "new").await;
    let from = enc(mid["timestamp"].as_str().unwrap());
    let mut s = Sse::connect(&node, &format!("/v1/events?topic=time.t&from={from}"), None)
        .await
        .unwrap();
    assert_eq!(s.next(Duration::from_secs(5)).await.unwrap().data, "new");
    // An idle stream carries heartbeat comments.
    assert!(s.next(Duration::from_millis(1500)).await.is_none());
    assert!(String::from_utf8_lossy(&s.raw).contains(": heartbeat"));

    // A cursor from before a retention trim gets an explicit gap event.
    node.publish("small.t", "x".repeat(100)).await;
    let mut s = Sse::connect(&node, "/v1/events?topic=small.t&from=earliest", None)
        .await
        .unwrap();
    let first = s.next(Duration::from_secs(5)).await.unwrap();
    drop(s);
    for i in 0..30 {
        node.publish("small.t", format!("{i:0>100}")).await;
    }
    wait_until(
        Duration::from_secs(10),
        "retention to trim small.t",
        || async {
            let t = node.get_json("/v1/topics").await;
            t["topics"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["topic"] == "small.t" && t["bytes"].as_u64().unwrap() <= 1000)
        },
    )
    .await;
    let mut s = Sse::connect(&node, "/v1/events?topic=small.t", first.id.as_deref())
        .await
        .unwrap();
    let gap = s.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(gap.event, "gap", "{gap:?}");
    let g: Value = serde_json::from_str(&gap.data).unwrap();
    assert_eq!(g["topic"], "small.t");
    assert!(g["through_seq"].as_u64().unwrap() >= 2);
    let next = s.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(next.event, "message");
    let remaining = node.pull_all("small.t").await;
    assert_eq!(next.data, remaining[0]["payload"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_client() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    let file = dir.path().join("msg.txt");
    std::fs::write(&file, "from a file").unwrap();
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .args(["--url", &node.url])
            .output()
            .unwrap()
    };
    let out = run(&["publish", "cli.t", "hello", "--key", "k", "--header", "a=b"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ans: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ans["topic"], "cli.t");
    assert!(
        run(&["publish", "cli.t", &format!("@{}", file.display())])
            .status
            .success()
    );
    let out = run(&["subscribe", "cli.>", "--from", "earliest", "--count", "2"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nfrom a file\n");
    let out = run(&[
        "subscribe",
        "cli.t",
        "--from",
        "earliest",
        "--count",
        "1",
        "--format",
        "json",
    ]);
    let env: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (env["key"].as_str(), env["headers"]["a"].as_str()),
        (Some("k"), Some("b"))
    );
    let out = run(&["topics"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("cli.t"));

    // Errors: a bad topic, and a node that is not there.
    let out = run(&["publish", "bad..topic", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid topic"));
    for args in [
        &["publish", "x.y", "z"][..],
        &["subscribe", "x.y"][..],
        &["topics"][..],
    ] {
        let out = Command::new(BIN)
            .args(args)
            .args(["--url", "http://127.0.0.1:9"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("cannot reach the node"),
            "{args:?}"
        );
    }
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--fsync", "sometimes"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_for_allowed_browser_origins() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with_config(
        dir.path(),
        "[cors]\nallow_origins = [\"https://app.example\"]\n",
        &["--fsync", "never"],
    );
    let (status, headers, _) = node
        .raw(
            node.request("POST", "/v1/topics/c.t")
                .header("origin", "https://app.example"),
            "x",
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
    let (_, headers, _) = node
        .raw(
            node.request("GET", "/v1/topics")
                .header("origin", "https://evil.example"),
            "",
        )
        .await;
    assert!(headers.get("access-control-allow-origin").is_none());
    let preflight = node
        .request("OPTIONS", "/v1/topics/c.t")
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,idempotency-key",
        );
    let (status, headers, _) = node.raw(preflight, "").await;
    assert_eq!(status, 204);
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(
        headers["access-control-allow-headers"],
        "content-type,idempotency-key"
    );
    // A bad origin in the config is refused before the node starts.
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg({
            let p = dir.path().join("bad.toml");
            std::fs::write(&p, "[cors]\nallow_origins = [\"app.example/\"]\n").unwrap();
            p
        })
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cors.allow_origins"));
}

/// `/readyz` reports the store's commits: each publish is one (or shares
/// one), and none here is slow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_reports_the_stores_commits() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    let before = node.get_json("/readyz").await;
    assert_eq!(before["status"], "ready", "{before}");
    assert_eq!(before["storage"]["slow_commit_ms"], 20, "{before}");
    for i in 0..5 {
        node.publish("ready.t", format!("m{i}")).await;
    }
    let after = node.get_json("/readyz").await;
    let commits = |v: &Value| v["storage"]["commits"].as_u64().unwrap();
    assert!(commits(&after) >= commits(&before) + 5, "{before} {after}");
    assert!(
        after["storage"]["slowest_commit_ms"].as_f64().unwrap() > 0.0,
        "{after}"
    );
    assert!(
        after["storage"]["slow_commits"].as_u64().is_some(),
        "{after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_parameters_are_percent_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    let (status, _, body) = node
        .raw(node.request("POST", "/v1/topics/orders%2Eeu"), "x")
        .await;
    assert_eq!(status, 201, "{body:?}");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["topic"], "orders.eu");
    assert_eq!(node.pull_all("orders.eu").await.len(), 1);
    // A group's name too.
    let (status, _, body) = node
        .raw(node.request("GET", "/v1/groups/no%2Dsuch"), "")
        .await;
    assert_eq!(status, 404, "{body:?}");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["detail"].as_str().unwrap().contains("no-such"), "{v}");
}
