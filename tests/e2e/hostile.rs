//! Hostile clients: each attack is refused or its connection closed within
//! a bounded time, nothing it sent is stored, and a legitimate publish
//! still succeeds. Timeouts are set to a second or two so that each test
//! takes seconds.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Node, raw_tcp};

fn addr(node: &Node) -> String {
    node.url.trim_start_matches("http://").to_owned()
}

/// A legitimate publish that must still succeed.
async fn legit_publish(node: &Node) {
    let (status, _, body) = node
        .raw(node.request("POST", "/v1/topics/legit.t"), "hello")
        .await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
}

fn code(body: &str) -> String {
    serde_json::from_str::<Value>(body).map_or_else(
        |_| format!("not JSON: {body}"),
        |v| v["code"].as_str().unwrap_or("").to_owned(),
    )
}

/// Waits up to `limit` for the server to close `s` (after whatever it
/// sends); returns how long that took, or panics.
async fn closed_within(s: &mut TcpStream, limit: Duration, what: &str) -> (Duration, Vec<u8>) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + limit).into(), s.read(&mut buf)).await {
            Err(_) => panic!("{what}: still open after {limit:?}"),
            Ok(Ok(0) | Err(_)) => return (start.elapsed(), got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// An HTTP/2 (prior knowledge) connection to `node`.
async fn h2(
    node: &Node,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let stream = TcpStream::connect(addr(node)).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(stream))
        .await
        .unwrap();
    (sender, tokio::spawn(conn))
}

/// Opens `n` event streams on the HTTP/2 connection of `sender`, each
/// answered 200.
async fn open_streams(
    node: &Node,
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    n: usize,
) -> Vec<http::Response<hyper::body::Incoming>> {
    let mut streams = Vec::new();
    for _ in 0..n {
        sender.ready().await.unwrap();
        let resp = sender
            .send_request(h2_request(node, "GET", "/v1/events?topic=s.t", ""))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        streams.push(resp);
    }
    streams
}

fn h2_request(node: &Node, method: &str, path: &str, body: &str) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", node.url))
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// Status and body of an HTTP/2 request.
async fn h2_send(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    req: http::Request<Full<Bytes>>,
) -> (u16, String) {
    sender.ready().await.unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_is_misdirected() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    let port = node.url.rsplit(':').next().unwrap().to_owned();
    // DNS rebinding: the page's own name arrives in Host.
    let req = format!(
        "POST /v1/topics/t HTTP/1.1\r\nhost: evil.example:{port}\r\ncontent-length: 1\r\nconnection: close\r\n\r\nx"
    );
    let (status, head, body) = raw_tcp(&node, req.into_bytes()).await;
    assert_eq!(status, 421, "{head}{body}");
    assert!(head.contains("application/problem+json"), "{head}");
    assert_eq!(code(&body), "misdirected_request");
    // Over HTTP/2 the name is the :authority.
    let (mut sender, _conn) = h2(&node).await;
    let req = http::Request::post(format!("http://evil.example:{port}/v1/topics/t"))
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    let (status, body) = h2_send(&mut sender, req).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (421, "misdirected_request"),
        "{body}"
    );
    // The loopback names the node listens on are served, on any port.
    for host in [
        format!("localhost:{port}"),
        "127.0.0.1".to_owned(),
        format!("[::1]:{port}"),
    ] {
        let req = format!(
            "POST /v1/topics/t HTTP/1.1\r\nhost: {host}\r\ncontent-length: 1\r\nconnection: close\r\n\r\nx"
        );
        let (status, _, body) = raw_tcp(&node, req.into_bytes()).await;
        assert_eq!(status, 201, "{host}: {body}");
    }
    let (status, body) = h2_send(&mut sender, h2_request(&node, "POST", "/v1/topics/t", "y")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        node.pull_all("t").await.len(),
        4,
        "only the allowed hosts stored"
    );

    // A configured list replaces the default.
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        &["--fsync", "never", "--allowed-host", "node.example.com"],
    );
    for (host, want) in [("node.example.com:1", 201), ("localhost", 421)] {
        let req = format!(
            "POST /v1/topics/t HTTP/1.1\r\nhost: {host}\r\ncontent-length: 1\r\nconnection: close\r\n\r\nx"
        );
        let (status, _, body) = raw_tcp(&node, req.into_bytes()).await;
        assert_eq!(status, want, "{host}: {body}");
    }
}

/// A node whose CORS list allows `https://app.example` only.
fn app_origin_node(dir: &std::path::Path) -> Node {
    Node::start_with_config(
        dir,
        "[cors]\nallow_origins = [\"https://app.example\"]\n",
        &["--fsync", "never"],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_origin_is_forbidden() {
    let dir = tempfile::tempdir().unwrap();
    let node = app_origin_node(dir.path());
    // The measured attack: a form post of a JSON body from another origin.
    let (status, _, body) = node
        .raw(
            node.request("POST", "/v1/batch?topic=o.t")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("origin", "https://evil.example"),
            r#"[{"payload":"pwned"}]"#,
        )
        .await;
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(
        (status, code(&body).as_str()),
        (403, "forbidden_origin"),
        "{body}"
    );
    for (method, path) in [
        ("POST", "/v1/topics/o.t"),
        ("PUT", "/v1/plugins/p?hook=route"),
        ("DELETE", "/v1/plugins/p"),
        ("DELETE", "/v1/groups/g"),
        ("POST", "/v1/groups/g/ack"),
        ("GET", "/v1/events?topic=o.t&group=g"),
    ] {
        for origin in ["https://evil.example", "null", "http://127.0.0.1:1"] {
            let (status, _, body) = node
                .raw(node.request(method, path).header("origin", origin), "x")
                .await;
            let body = String::from_utf8_lossy(&body).into_owned();
            assert_eq!(status, 403, "{method} {path} from {origin}: {body}");
            assert_eq!(code(&body), "forbidden_origin");
        }
    }
    // The allowed origin, the node's own origin and no origin are served.
    let own = node.url.clone();
    for origin in [Some("https://app.example"), Some(own.as_str()), None] {
        let mut req = node.request("POST", "/v1/topics/o.t");
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let (status, _, body) = node.raw(req, "ok").await;
        assert_eq!(
            status,
            201,
            "{origin:?}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let stored = node.pull_all("o.t").await;
    assert_eq!(stored.len(), 3);
    assert!(stored.iter().all(|m| m["payload"] == "ok"));
    assert!(
        node.get_json("/v1/groups").await["groups"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_take_only_json_types() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    for ct in [
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let mut req = node.request("POST", "/v1/batch?topic=ct.t");
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let (status, _, body) = node.raw(req, r#"[{"payload":"x"}]"#).await;
        let body = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(
            (status, code(&body).as_str()),
            (415, "unsupported_media_type"),
            "{ct:?}"
        );
    }
    assert!(node.pull_all("ct.t").await.is_empty());
    for (ct, body) in [
        ("Application/JSON; charset=utf-8", "[{\"payload\":\"a\"}]"),
        ("application/x-ndjson", "{\"payload\":\"b\"}\n"),
        ("application/jsonl", "{\"payload\":\"c\"}\n"),
    ] {
        let req = node
            .request("POST", "/v1/batch?topic=ct.t")
            .header("content-type", ct);
        let (status, _, answer) = node.raw(req, body).await;
        assert_eq!(status, 201, "{ct}: {}", String::from_utf8_lossy(&answer));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_names_the_api_methods_and_headers() {
    let dir = tempfile::tempdir().unwrap();
    let node = app_origin_node(dir.path());
    let (status, headers, _) = node
        .raw(
            node.request("OPTIONS", "/v1/plugins/p")
                .header("origin", "https://app.example")
                .header("access-control-request-method", "DELETE")
                .header(
                    "access-control-request-headers",
                    "authorization, last-event-id,switchyard-acks,x-evil",
                ),
            "",
        )
        .await;
    assert_eq!(status, 204);
    // The methods of the plugin endpoint, PUT and DELETE among them.
    assert_eq!(
        headers["access-control-allow-methods"],
        "GET, PUT, DELETE, OPTIONS"
    );
    assert_eq!(
        headers["access-control-allow-headers"],
        "authorization,last-event-id,switchyard-acks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_blocks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    let req = format!(
        "POST /v1/topics/hdr.t HTTP/1.1\r\nhost: {}\r\nx-big: {}\r\ncontent-length: 1\r\nconnection: close\r\n\r\nx",
        addr(&node),
        "a".repeat(70 * 1024)
    );
    let (status, head, _) = raw_tcp(&node, req.into_bytes()).await;
    assert_eq!(status, 431, "{head}");
    assert!(node.pull_all("hdr.t").await.is_empty());
    legit_publish(&node).await;
}

const SHORT_TIMEOUTS: &str = "[limits]\nheader_read_timeout_secs = 1\nidle_timeout_secs = 1\nbody_read_timeout_secs = 1\nh2_keepalive_interval_secs = 1\nh2_keepalive_timeout_secs = 1\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with_config(dir.path(), SHORT_TIMEOUTS, &["--fsync", "never"]);
    let a = addr(&node);
    let bound = Duration::from_secs(5);

    // A socket that sends nothing.
    let mut silent = TcpStream::connect(&a).await.unwrap();
    // Headers a byte at a time (slowloris).
    let mut slow_headers = TcpStream::connect(&a).await.unwrap();
    let head = format!("POST /v1/topics/slow.t HTTP/1.1\r\nhost: {a}\r\nx-slow: ");
    slow_headers.write_all(head.as_bytes()).await.unwrap();
    let drip = tokio::spawn(async move {
        for _ in 0..50 {
            if slow_headers.write_all(b"a").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        slow_headers
    });
    // A body that never completes.
    let mut slow_body = TcpStream::connect(&a).await.unwrap();
    slow_body
        .write_all(
            format!("POST /v1/topics/slow.t HTTP/1.1\r\nhost: {a}\r\ncontent-length: 100\r\n\r\nonly ten b")
                .as_bytes(),
        )
        .await
        .unwrap();
    // A kept-alive connection that goes quiet after one request.
    let mut idle = TcpStream::connect(&a).await.unwrap();
    idle.write_all(format!("GET /healthz HTTP/1.1\r\nhost: {a}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // HTTP/2: the preface alone; and a full handshake without a request.
    let mut preface = TcpStream::connect(&a).await.unwrap();
    preface
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let (_sender, h2_conn) = h2(&node).await;

    legit_publish(&node).await;
    let (t, _) = closed_within(&mut silent, bound, "silent socket").await;
    eprintln!("silent socket closed after {t:?}");
    let (t, answer) = closed_within(&mut slow_body, bound, "slow body").await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    eprintln!("slow body answered 408 and closed after {t:?}");
    let (t, answer) = closed_within(&mut idle, bound, "idle keep-alive").await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    eprintln!("idle keep-alive connection closed after {t:?}");
    let (t, _) = closed_within(&mut preface, bound, "HTTP/2 preface only").await;
    eprintln!("HTTP/2 preface-only connection closed after {t:?}");
    let start = Instant::now();
    tokio::time::timeout(bound, h2_conn)
        .await
        .expect("an idle HTTP/2 connection is closed")
        .unwrap()
        .ok();
    eprintln!("idle HTTP/2 connection closed after {:?}", start.elapsed());
    let mut s = tokio::time::timeout(bound, drip)
        .await
        .expect("slowloris writer stopped")
        .unwrap();
    let (t, _) = closed_within(&mut s, bound, "slowloris").await;
    eprintln!("slowloris closed {t:?} after its writes failed");
    assert!(node.pull_all("slow.t").await.is_empty());
    legit_publish(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_count_against_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with_config(
        dir.path(),
        "[limits]\nmax_connections = 4\nmax_streams_per_connection = 3\n",
        &["--fsync", "never"],
    );
    // Three streams open on one connection: the connection's place and two more.
    let (mut sender, _conn) = h2(&node).await;
    let mut streams = open_streams(&node, &mut sender, 3).await;
    // A fourth waits in the client: the node advertised three.
    sender.ready().await.unwrap();
    let fourth = sender.send_request(h2_request(&node, "GET", "/healthz", ""));
    tokio::pin!(fourth);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut fourth)
            .await
            .is_err(),
        "a fourth stream was served"
    );
    // One place is left: a second connection's first request takes it, and
    // its second concurrent stream finds the budget spent.
    let (mut second, _conn2) = h2(&node).await;
    second.ready().await.unwrap();
    let held = second
        .send_request(h2_request(&node, "GET", "/v1/events?topic=s.t", ""))
        .await
        .unwrap();
    assert_eq!(held.status(), 200);
    let (status, body) = h2_send(
        &mut second,
        h2_request(&node, "POST", "/v1/topics/s.t", "x"),
    )
    .await;
    assert_eq!(
        (status, code(&body).as_str()),
        (503, "overloaded"),
        "{body}"
    );
    // A new connection finds no place: 503, then closed.
    let (status, _, body) = node.raw(node.request("GET", "/healthz"), "").await;
    assert_eq!(
        (status, code(&String::from_utf8_lossy(&body)).as_str()),
        (503, "overloaded")
    );
    // Streams ending give their places back: the fourth goes out (it may
    // still find the budget spent, as the ended stream's place comes back
    // a moment after the client sees it end), and a retry is served.
    drop(streams.pop());
    let resp = tokio::time::timeout(Duration::from_secs(5), &mut fourth)
        .await
        .expect("the fourth stream is sent once one ends")
        .unwrap();
    assert!(
        matches!(resp.status().as_u16(), 200 | 503),
        "{}",
        resp.status()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while h2_send(&mut sender, h2_request(&node, "GET", "/healthz", ""))
        .await
        .0
        != 200
    {
        assert!(Instant::now() < deadline, "no place came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(streams);
    drop(held);
    wait_for_publish(&node).await;
}

/// Retries a legitimate publish until places are free again (streams end
/// asynchronously), within 5 s.
async fn wait_for_publish(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, body) = node
            .raw(node.request("POST", "/v1/topics/legit.t"), "hello")
            .await;
        if status == 201 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "publish still refused: {status} {}",
            String::from_utf8_lossy(&body)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_per_connection_are_bounded_in_a_cluster() {
    // A node in a cluster advertises room for its peers' relayed streams;
    // a client connection is still held to max_streams_per_connection.
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with_config(
        dir.path(),
        &format!(
            "[limits]\nmax_streams_per_connection = 3\n[cluster]\ngossip_listen = \"127.0.0.1:0\"\nkey = \"{}\"\n",
            "k".repeat(32)
        ),
        &["--fsync", "never"],
    );
    let (mut sender, _conn) = h2(&node).await;
    let streams = open_streams(&node, &mut sender, 3).await;
    let (status, body) = h2_send(
        &mut sender,
        h2_request(&node, "POST", "/v1/topics/s.t", "x"),
    )
    .await;
    assert_eq!(
        (status, code(&body).as_str()),
        (503, "too_many_streams"),
        "{body}"
    );
    drop(streams);
    wait_for_publish(&node).await;
    assert_eq!(node.pull_all("s.t").await.len(), 0);
}

/// One HTTP/2 frame: 24-bit length, type, flags, stream id, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK literal header without indexing, new name, no Huffman coding
/// (names and values shorter than 127 bytes).
fn hpack_literal(block: &mut Vec<u8>, name: &str, value: &str) {
    block.push(0);
    block.push(u8::try_from(name.len()).unwrap());
    block.extend_from_slice(name.as_bytes());
    block.push(u8::try_from(value.len()).unwrap());
    block.extend_from_slice(value.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_sent_before_the_settings_ack_are_bounded() {
    // A client that sends its SETTINGS and 150 requests at once, and never
    // acknowledges the node's SETTINGS, still gets at most
    // max_streams_per_connection (100) event streams: the HTTP/2 server
    // refuses the rest (RST_STREAM) from the first frame, without waiting
    // for the acknowledgement.
    const STREAMS: u32 = 150;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    let mut block = Vec::new();
    hpack_literal(&mut block, ":method", "GET");
    hpack_literal(&mut block, ":scheme", "http");
    hpack_literal(&mut block, ":path", "/v1/events?topic=s.t");
    hpack_literal(&mut block, ":authority", &addr(&node));
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(4, 0, 0, &[]));
    for i in 0..STREAMS {
        // HEADERS with END_STREAM | END_HEADERS.
        out.extend(h2_frame(1, 0x5, 2 * i + 1, &block));
    }
    let mut s = TcpStream::connect(addr(&node)).await.unwrap();
    s.write_all(&out).await.unwrap();
    let mut ended = std::collections::HashSet::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let deadline = Instant::now() + Duration::from_secs(10);
    while ended.len() < (STREAMS - 100) as usize {
        let n = match tokio::time::timeout_at(deadline.into(), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            // DATA or HEADERS that end a stream; a reset also closes one.
            if ((kind == 0 || kind == 1) && flags & 1 == 1) || kind == 3 {
                ended.insert(stream);
            }
            buf.drain(..9 + len);
        }
    }
    assert_eq!(
        ended.len(),
        (STREAMS - 100) as usize,
        "streams beyond the default 100 should be refused"
    );
    legit_publish(&node).await;
}

/// Connects to `node` from the loopback address `source`.
async fn connect_from(source: &str, node: &Node) -> std::io::Result<TcpStream> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind(format!("{source}:0").parse().unwrap())?;
    s.connect(addr(node).parse().unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with_config(
        dir.path(),
        "[limits]\nmax_connections_per_ip = 8\n",
        &["--fsync", "never"],
    );
    // One address holds its eight places with idle sockets...
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(connect_from("127.0.0.2", &node).await.unwrap());
    }
    // ...the ninth is closed at once.
    let mut ninth = connect_from("127.0.0.2", &node).await.unwrap();
    let (t, _) = closed_within(&mut ninth, Duration::from_secs(2), "ninth socket").await;
    eprintln!("the ninth socket from one address was closed after {t:?}");
    // Another address is not affected, even while the first reconnects
    // as fast as it can.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        let url = node.url.clone();
        tokio::spawn(async move {
            let target: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
            // Bounded, so that the client's ports in TIME_WAIT do not run out.
            let mut attempts = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && attempts < 3000 {
                let Ok(s) = tokio::net::TcpSocket::new_v4() else {
                    break;
                };
                if s.bind("127.0.0.3:0".parse().unwrap()).is_err() {
                    break;
                }
                if let Ok(c) = s.connect(target).await {
                    attempts += 1;
                    drop(c);
                }
            }
            attempts
        })
    };
    let start = Instant::now();
    for _ in 0..20 {
        let t = Instant::now();
        legit_publish(&node).await;
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "a publish took {:?}",
            t.elapsed()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let attempts = churn.await.unwrap();
    eprintln!(
        "20 publishes in {:?} while another address made {attempts} connections",
        start.elapsed()
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_entries_are_counted_while_reading() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    // NDJSON and a JSON array with one entry too many (the default limit
    // is 1,000).
    let ndjson = "{}\n".repeat(1_001);
    let array = format!("[{}{{}}]", "{},".repeat(1_000));
    for (ct, body) in [
        ("application/x-ndjson", ndjson),
        ("application/json", array),
    ] {
        let req = node
            .request("POST", "/v1/batch?topic=many.t")
            .header("content-type", ct);
        let (status, _, answer) = node.raw(req, body).await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        assert_eq!(
            (status, code(&answer).as_str()),
            (413, "batch_too_large"),
            "{ct}: {answer}"
        );
    }
    // The refusal comes as soon as entry 1,001 arrives: the body declares
    // just under the 4 MiB limit but stops after it, and the answer does
    // not wait for the rest (the body deadline is 30 s).
    let a = addr(&node);
    let mut s = TcpStream::connect(&a).await.unwrap();
    let head = format!(
        "POST /v1/batch?topic=many.t HTTP/1.1\r\nhost: {a}\r\ncontent-type: application/x-ndjson\r\ncontent-length: {}\r\n\r\n",
        4 * 1024 * 1024 - 1
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all("{}\n".repeat(1_001).as_bytes()).await.unwrap();
    let start = Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("answered before the body ended")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("batch_too_large"), "{answer}");
    eprintln!("refused {:?} after entry 1,001", start.elapsed());
    assert!(node.pull_all("many.t").await.is_empty());
    // Exactly the limit is stored.
    let req = node
        .request("POST", "/v1/batch?topic=many.t")
        .header("content-type", "application/x-ndjson");
    let (status, _, answer) = node.raw(req, "{}\n".repeat(1_000)).await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&answer));
}

/// Opens event streams on new connections to `addr` until one is answered
/// 503, keeping those answered 200 in `held`, which never exceeds `max`.
async fn fill_places(addr: &str, held: &mut Vec<TcpStream>, max: usize) {
    loop {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET /v1/events?topic=hold.t HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        match &buf[9..12] {
            b"200" => held.push(s),
            b"503" => return,
            other => panic!("unexpected status {}", String::from_utf8_lossy(other)),
        }
        assert!(
            held.len() <= max,
            "more client connections than max_connections"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_lock_peers_out() {
    let dir = tempfile::tempdir().unwrap();
    let key = "k".repeat(32);
    let config = |limits: &str| format!("{limits}[cluster]\nkey = \"{key}\"\n");
    let args = ["--fsync", "never", "--gossip-listen", "127.0.0.1:0"];
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    let a = Node::start_with_config(
        &dir.path().join("a"),
        &config("[limits]\nmax_connections = 4\n"),
        &args,
    );
    let gossip = crate::cluster::whoami(&a).await.1;
    let addr_a = addr(&a);
    // One message, on a connection that closes (no pooled connection of
    // the test's client keeps a place).
    let (status, _, _) = raw_tcp(
        &a,
        format!(
            "POST /v1/topics/legit.t HTTP/1.1\r\nhost: {addr_a}\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"
        )
        .into_bytes(),
    )
    .await;
    assert_eq!(status, 201);
    // Clients take every client place of node A: each new socket holds an
    // event stream until one is answered 503.
    let mut held = Vec::new();
    fill_places(&addr_a, &mut held, 4).await;
    // A node joining now still reaches A over its own connections: it
    // reads A's message through them.
    std::fs::create_dir_all(dir.path().join("b")).unwrap();
    let mut b_args = args.to_vec();
    b_args.extend(["--join", gossip.as_str()]);
    let b = Node::start_with_config(&dir.path().join("b"), &config(""), &b_args);
    crate::support::wait_until(Duration::from_secs(20), "B reads A's message", || async {
        b.pull_all("legit.t").await.len() == 1
    })
    .await;
    // Clients are still held to their budget on A: places freed since
    // (the test client's own connections close a moment late) are taken
    // again, and then a new client connection is answered 503.
    fill_places(&addr_a, &mut held, 4).await;
    drop(held);
    wait_for_publish(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_rates_per_address_are_limited_when_set() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with_config(
        dir.path(),
        "[limits]\nrequests_per_sec_per_ip = 2\nrequest_burst_per_ip = 4\n",
        &["--fsync", "never"],
    );
    // From 127.0.0.1: the burst passes, then 429 with Retry-After.
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..10 {
        let (status, headers, _) = node.raw(node.request("GET", "/healthz"), "").await;
        if status == 429 {
            retry_after = headers.get("retry-after").cloned();
        }
        statuses.push(status);
    }
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        limited >= 3 && statuses[..4].iter().all(|s| *s == 200),
        "{statuses:?}"
    );
    assert_eq!(retry_after.unwrap(), "1");
    // Another address has its own bucket.
    let a = addr(&node);
    let mut s = connect_from("127.0.0.2", &node).await.unwrap();
    s.write_all(
        format!("POST /v1/topics/legit.t HTTP/1.1\r\nhost: {a}\r\ncontent-length: 1\r\nconnection: close\r\n\r\nx")
            .as_bytes(),
    )
    .await
    .unwrap();
    let (_, answer) = closed_within(&mut s, Duration::from_secs(5), "publish from 127.0.0.2").await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 201"));
    // The bucket refills: 127.0.0.1 is served again within a second or so.
    wait_for_publish(&node).await;
}

/// 200 messages of 64 KiB on `big`: more than the kernel's socket buffers
/// hold for one connection, so a subscriber that does not read stalls
/// the node's output.
async fn publish_big(node: &Node) -> usize {
    let payload = Bytes::from(vec![b'x'; 64 * 1024]);
    for _ in 0..200 {
        node.publish("big", payload.clone()).await;
    }
    200 * 64 * 1024
}

/// An SSE subscription from the start of `big` on a socket with a small
/// receive buffer that the test does not read.
async fn stalled_subscriber(node: &Node) -> TcpStream {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    let mut s = s.connect(addr(node).parse().unwrap()).await.unwrap();
    s.write_all(
        format!(
            "GET /v1/events?topic=big&from=earliest HTTP/1.1\r\nHost: {}\r\n\r\n",
            addr(node)
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    s
}

/// A subscriber that stops reading is disconnected once its output has
/// not been taken for `limits.output_stall_timeout_secs`: what it had not
/// read never arrives, and the connection ends. A reading subscriber gets
/// everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with_config(
        dir.path(),
        "[limits]\noutput_stall_timeout_secs = 2\n",
        &["--fsync", "never"],
    );
    let total = publish_big(&node).await;
    let mut stalled = stalled_subscriber(&node).await;
    // The fault: it reads nothing for twice the timeout.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, got) = closed_within(&mut stalled, Duration::from_secs(20), "a stalled stream").await;
    assert!(
        got.len() < total,
        "closed before all of it: {} of {total} bytes",
        got.len()
    );
    let mut reader =
        crate::support::Sse::connect(&node, "/v1/events?topic=big&from=earliest", None)
            .await
            .unwrap();
    for i in 0..200 {
        let e = reader.next(Duration::from_secs(10)).await;
        assert!(e.is_some(), "message {i} of 200");
    }
    legit_publish(&node).await;
}

/// Over the node's pending-output budget, subscribers that do not read
/// are disconnected within seconds, well before the stall timeout, and a
/// subscriber that reads still gets every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_output_budget_stalled_subscribers_are_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with_config(
        dir.path(),
        "[limits]\nmax_pending_output_bytes = 1048576\n",
        &["--fsync", "never"],
    );
    publish_big(&node).await;
    let mut stalled = Vec::new();
    for _ in 0..40 {
        stalled.push(stalled_subscriber(&node).await);
    }
    let mut reader =
        crate::support::Sse::connect(&node, "/v1/events?topic=big&from=earliest", None)
            .await
            .unwrap();
    for i in 0..200 {
        let e = reader.next(Duration::from_secs(20)).await;
        assert!(e.is_some(), "message {i} of 200");
    }
    // 40 × 64 KiB is over the 1 MiB budget: stalled streams go after 5 s,
    // not 60, until what the others hold fits in the budget.
    // The fault: they read nothing for 8 s.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut ends = tokio::task::JoinSet::new();
    for mut s in stalled {
        ends.spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
            loop {
                match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                    Err(_) => return false,
                    Ok(Ok(0) | Err(_)) => return true,
                    Ok(Ok(_)) => {}
                }
            }
        });
    }
    let closed = ends.join_all().await.into_iter().filter(|&c| c).count();
    // Those holding output when the budget ran out went after 5 s (the
    // ones that then got room go 5 s later); none would before 60 s.
    assert!(
        closed >= 10,
        "only {closed} of 40 stalled streams were closed"
    );
    legit_publish(&node).await;
}

/// Batch bodies share a node-wide budget of bytes in flight: while one
/// batch holds all of it, another waits (here until the first one's body
/// deadline ends it with 408), and single publishes are not held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_bytes_in_flight_are_bounded_node_wide() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with_config(
        dir.path(),
        "[limits]\nmax_batch_bytes = 1048576\nmax_batch_bytes_in_flight = 1048576\nbody_read_timeout_secs = 3\n",
        &["--fsync", "never"],
    );
    // A batch that declares the whole budget and sends its body slowly.
    let mut slow = TcpStream::connect(addr(&node)).await.unwrap();
    slow.write_all(
        format!(
            "POST /v1/batch?topic=b.t HTTP/1.1\r\nhost: {}\r\ncontent-type: application/x-ndjson\r\ncontent-length: 1048576\r\n\r\n{{\"payload\":\"x\"}}\n",
            addr(&node)
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let started = Instant::now();
    // Within the slow batch's 3 s, a single publish goes through at once.
    legit_publish(&node).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    // The second batch starts a second later, so its own deadline comes a
    // second after the slow one's, when the budget is free again.
    tokio::time::sleep_until((started + Duration::from_secs(1)).into()).await;
    let (status, _, body) = node
        .raw(
            node.request("POST", "/v1/batch?topic=b.t")
                .header("content-type", "application/x-ndjson"),
            "{\"payload\":\"y\"}\n",
        )
        .await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "the second batch waited for the first to give the budget back ({:?})",
        started.elapsed()
    );
    let (_, got) = closed_within(&mut slow, Duration::from_secs(10), "the slow batch").await;
    let got = String::from_utf8_lossy(&got).into_owned();
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert_eq!(node.pull_all("b.t").await.len(), 1);
}
