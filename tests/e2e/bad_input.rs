//! Every kind of bad input answers a 4xx problem+json naming the problem and
//! leaves the store unchanged.

use serde_json::{Value, json};

use crate::support::{Node, enc, raw_tcp};

/// Topic statistics and every stored message: what must not change.
async fn snapshot(node: &Node) -> (Value, Vec<Value>) {
    (node.get_json("/v1/topics").await, node.pull_all(">").await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_answers_4xx_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    node.publish("ok.t", "seed").await;
    let before = snapshot(&node).await;

    // A body over the limit: the node may answer before it has read the
    // body, so this one goes over a raw socket.
    let big = 1024 * 1024 + 1;
    let host = node.url.trim_start_matches("http://");
    let mut req = format!("POST /v1/topics/ok.t HTTP/1.1\r\nhost: {host}\r\ncontent-length: {big}\r\nconnection: close\r\n\r\n").into_bytes();
    req.resize(req.len() + big, b'x');
    let (status, head, body) = raw_tcp(&node, req).await;
    assert_eq!(status, 413, "{head}{body}");
    assert!(
        head.contains("application/problem+json") && body.contains("payload_too_large"),
        "{body}"
    );
    let many_headers = (0..65).fold(node.request("POST", "/v1/topics/ok.t"), |r, i| {
        r.header(format!("switchyard-header-h{i}"), "v")
    });
    let cases: Vec<(&str, http::request::Builder, Vec<u8>, u16, &str)> = vec![
        ("invalid topic", node.request("POST", "/v1/topics/a..b"), b"x".to_vec(), 400, "invalid_topic"),
        ("bad topic characters", node.request("POST", "/v1/topics/a%20b"), b"x".to_vec(), 400, "invalid_topic"),
        ("wildcard topic", node.request("POST", "/v1/topics/a.*"), b"x".to_vec(), 400, "invalid_topic"),
        ("reserved topic", node.request("POST", "/v1/topics/$sys.x"), b"x".to_vec(), 400, "reserved_topic"),
        ("reserved topic, encoded", node.request("POST", "/v1/topics/%24sys.x"), b"x".to_vec(), 400, "reserved_topic"),
        ("encoded slash in a topic", node.request("POST", "/v1/topics/a%2Fb"), b"x".to_vec(), 400, "invalid_topic"),
        ("too many headers", many_headers, b"x".to_vec(), 431, "headers_too_large"),
        (
            "header too large",
            node.request("POST", "/v1/topics/ok.t").header("switchyard-header-big", "v".repeat(5000)),
            b"x".to_vec(),
            431,
            "headers_too_large",
        ),
        (
            "key too long",
            node.request("POST", "/v1/topics/ok.t").header("switchyard-key", "k".repeat(1025)),
            b"x".to_vec(),
            400,
            "key_too_long",
        ),
        ("key twice", node.request("POST", "/v1/topics/ok.t?key=a").header("switchyard-key", "b"), b"x".to_vec(), 400, "invalid_key"),
        (
            "bad idempotency key",
            node.request("POST", "/v1/topics/ok.t").header("idempotency-key", "k".repeat(300)),
            b"x".to_vec(),
            400,
            "invalid_idempotency_key",
        ),
        ("unknown publish parameter", node.request("POST", "/v1/topics/ok.t?ttl=5"), b"x".to_vec(), 400, "unknown_parameter"),
        ("malformed cursor", node.request("GET", "/v1/events?topic=ok.t&from=zzzz"), vec![], 400, "invalid_cursor"),
        ("malformed time", node.request("GET", "/v1/events?topic=ok.t&from=2026-13-01T00:00:00Z"), vec![], 400, "invalid_time"),
        (
            "malformed Last-Event-ID",
            node.request("GET", "/v1/events?topic=ok.t").header("last-event-id", "not-a-cursor"),
            vec![],
            400,
            "invalid_cursor",
        ),
        ("malformed last_event_id", node.request("GET", "/v1/events?topic=ok.t&last_event_id=%21%21"), vec![], 400, "invalid_cursor"),
        ("invalid pattern", node.request("GET", &format!("/v1/events?topic={}", enc("a.>.b"))), vec![], 400, "invalid_pattern"),
        ("missing topic", node.request("GET", "/v1/events"), vec![], 400, "missing_topic"),
        ("unknown format", node.request("GET", "/v1/events?topic=ok.t&format=xml"), vec![], 400, "invalid_parameter"),
        ("unknown parameter", node.request("GET", "/v1/events?topic=ok.t&bogus=1"), vec![], 400, "unknown_parameter"),
        ("limit zero", node.request("GET", "/v1/messages?topic=ok.t&limit=0"), vec![], 400, "invalid_parameter"),
        ("wait too long", node.request("GET", "/v1/messages?topic=ok.t&wait=100000"), vec![], 400, "invalid_parameter"),
        ("pull bad cursor", node.request("GET", "/v1/messages?topic=ok.t&from=%25"), vec![], 400, "invalid_cursor"),
        (
            "batch with a bad entry",
            node.request("POST", "/v1/batch").header("content-type", "application/json"),
            serde_json::to_vec(&json!([{"topic": "ok.t", "payload": "a"}, {"topic": "bad..t", "payload": "b"}, {"topic": "ok.t", "nope": 1}])).unwrap(),
            400,
            "invalid_batch",
        ),
        (
            "batch entry as an array",
            node.request("POST", "/v1/batch").header("content-type", "application/json"),
            br#"[{"topic":"ok.t","payload":"a"},["ok.t","x",null,null,{},null]]"#.to_vec(),
            400,
            "invalid_batch",
        ),
        (
            "batch NDJSON line as an array",
            node.request("POST", "/v1/batch?topic=ok.t").header("content-type", "application/x-ndjson"),
            b"{\"payload\":\"a\"}\n[\"ok.t\",\"x\"]\n".to_vec(),
            400,
            "invalid_batch",
        ),
        (
            "batch not JSON",
            node.request("POST", "/v1/batch").header("content-type", "application/json"),
            b"[{".to_vec(),
            400,
            "invalid_batch",
        ),
        (
            "batch NDJSON with a bad line",
            node.request("POST", "/v1/batch?topic=ok.t").header("content-type", "application/x-ndjson"),
            b"{\"payload\":\"a\"}\n{oops\n".to_vec(),
            400,
            "invalid_batch",
        ),
        (
            "batch entry too large",
            node.request("POST", "/v1/batch?topic=ok.t").header("content-type", "application/json"),
            serde_json::to_vec(&json!([{"payload": "a"}, {"payload": "x".repeat(1024 * 1024 + 1)}])).unwrap(),
            400,
            "invalid_batch",
        ),
        ("empty batch", node.request("POST", "/v1/batch?topic=ok.t").header("content-type", "application/json"), b"[]".to_vec(), 400, "invalid_batch"),
        ("batch media type", node.request("POST", "/v1/batch").header("content-type", "text/csv"), b"a,b".to_vec(), 415, "unsupported_media_type"),
        ("wrong method", node.request("DELETE", "/v1/topics/ok.t"), vec![], 405, "method_not_allowed"),
        ("unknown path", node.request("GET", "/v2/nothing"), vec![], 404, "not_found"),
        ("topics parameter", node.request("GET", "/v1/topics?x=1"), vec![], 400, "unknown_parameter"),
        ("health method", node.request("POST", "/healthz"), vec![], 405, "method_not_allowed"),
    ];
    for (what, req, body, status, code) in cases {
        let (got, headers, body) = node.raw(req, body).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(got, status, "{what}: {text}");
        assert_eq!(
            headers["content-type"], "application/problem+json",
            "{what}"
        );
        let v: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("{what}: body is not JSON: {text}"));
        assert_eq!(v["code"], code, "{what}: {text}");
        assert_eq!(v["status"], status, "{what}");
        assert!(
            !v["detail"].as_str().unwrap_or("").is_empty(),
            "{what}: detail names the problem"
        );
        if status == 405 {
            assert!(
                headers.contains_key("allow"),
                "{what}: a 405 names the allowed method"
            );
        }
        if code == "invalid_batch" && v.get("errors").is_some() {
            let idx: Vec<u64> = v["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["index"].as_u64().unwrap())
                .collect();
            assert!(
                !idx.is_empty() && !idx.contains(&0),
                "{what}: names only the bad entries: {idx:?}"
            );
        }
    }
    assert_eq!(snapshot(&node).await, before, "bad input changed the store");
    // The node still serves.
    node.publish("ok.t", "after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_socket_does_not_hurt_the_node() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    let addr = node.url.trim_start_matches("http://").to_owned();
    let garbage: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02\xff\xfe garbage\r\n\r\n".to_vec(),
        format!("GET /v1/events?topic=%ff%fe HTTP/1.1\r\nhost: {addr}\r\n\r\n").into_bytes(),
        format!("POST /v1/topics/a HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 99999999999999999999\r\n\r\n")
            .into_bytes(),
        format!("POST /v1/topics/a HTTP/1.1\r\nhost: {addr}\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n")
            .into_bytes(),
        format!("GET /{} HTTP/1.1\r\nhost: {addr}\r\n\r\n", "a".repeat(100_000)).into_bytes(),
    ];
    for g in garbage {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let _ = s.write_all(&g).await;
        let mut buf = vec![0u8; 4096];
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), s.read(&mut buf)).await;
    }
    assert_eq!(node.get_json("/healthz").await["status"], "ok");
    node.publish("still.ok", "yes").await;
}
