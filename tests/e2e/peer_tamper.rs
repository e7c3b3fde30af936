//! Node-to-node traffic through a proxy that tampers with it. Node B
//! advertises the proxy's address as its HTTP address, so node A's pulls
//! of B's log go through the proxy, an HTTP/2 proxy of this test's own
//! that can flip a byte of a feed answer, answer with an earlier answer,
//! or send a request it forwarded a second time. Each tampering must be
//! refused and counted, nothing of it stored on A, and replication must
//! resume, every message once, when the proxy stops tampering.
//!
//! What a proxy cannot do any more (rewrite `through`, a stream sequence
//! or a timestamp inside a sealed answer) is what the puller's checks
//! guard against when a peer itself lies: those are unit tests of the
//! checking function (`crates/router/src/feeds/check.rs`).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::Value;

use crate::cluster::whoami;
use crate::support::*;

const KEY: &str = "an end-to-end cluster key";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Passes everything unchanged.
    Pass,
    /// Flips one byte in the middle of each feed answer.
    FlipAnswer,
    /// Answers each feed request with the first feed answer seen.
    ReplayAnswer,
    /// Forwards each feed request, then sends it to B once more.
    ReplayRequest,
}

struct State {
    mode: Mutex<Mode>,
    upstream: Mutex<Option<String>>,
    /// The first feed answer passed unchanged.
    earlier: Mutex<Option<Bytes>>,
    /// Answers the proxy changed.
    tampered: AtomicU64,
    /// Repeated requests B refused with 401.
    replays_refused: AtomicU64,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
}

/// The proxy: its address and state. Its task ends with the test's runtime.
struct Proxy {
    addr: String,
    state: Arc<State>,
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(State {
            mode: Mutex::new(Mode::Pass),
            upstream: Mutex::new(None),
            earlier: Mutex::new(None),
            tampered: AtomicU64::new(0),
            replays_refused: AtomicU64::new(0),
            client: hyper_util::client::legacy::Client::builder(
                hyper_util::rt::TokioExecutor::new(),
            )
            .http2_only(true)
            .build(hyper_util::client::legacy::connect::HttpConnector::new()),
        });
        let s = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(proxy(&s, req).await) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                });
            }
        });
        Proxy { addr, state }
    }

    fn set(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }
}

async fn send(
    s: &State,
    parts: &http::request::Parts,
    body: Bytes,
) -> Option<(http::StatusCode, http::HeaderMap, Bytes)> {
    let upstream = s.upstream.lock().unwrap().clone()?;
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = http::Request::builder()
        .method(parts.method.clone())
        .uri(format!("http://{upstream}{path}"));
    for (name, value) in &parts.headers {
        req = req.header(name, value);
    }
    let resp = s
        .client
        .request(req.body(Full::new(body)).unwrap())
        .await
        .ok()?;
    let (p, b) = resp.into_parts();
    let b = b.collect().await.ok()?.to_bytes();
    Some((p.status, p.headers, b))
}

async fn proxy(s: &State, req: http::Request<Incoming>) -> http::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let Some((status, headers, mut answer)) = send(s, &parts, body.clone()).await else {
        let mut r = http::Response::new(Full::new(Bytes::new()));
        *r.status_mut() = http::StatusCode::BAD_GATEWAY;
        return r;
    };
    let mode = *s.mode.lock().unwrap();
    if parts.uri.path() == "/cluster/v1/feed" && status == http::StatusCode::OK {
        match mode {
            Mode::Pass => {
                s.earlier.lock().unwrap().get_or_insert(answer.clone());
            }
            Mode::FlipAnswer => {
                let mut flipped = answer.to_vec();
                let at = flipped.len() / 2;
                flipped[at] ^= 0x01;
                answer = Bytes::from(flipped);
                s.tampered.fetch_add(1, Ordering::Relaxed);
            }
            Mode::ReplayAnswer => {
                if let Some(earlier) = s.earlier.lock().unwrap().clone() {
                    answer = earlier;
                    s.tampered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Mode::ReplayRequest => {
                if let Some((again, _, _)) = send(s, &parts, body).await
                    && again == http::StatusCode::UNAUTHORIZED
                {
                    s.replays_refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    let mut r = http::Response::new(Full::new(answer));
    *r.status_mut() = status;
    for (name, value) in &headers {
        if name != http::header::CONTENT_LENGTH {
            r.headers_mut().append(name, value.clone());
        }
    }
    r
}

async fn counter(node: &Node, name: &str) -> u64 {
    node.get_json("/v1/cluster").await["gossip"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name}"))
}

/// Messages of `topic` from origin `origin` that `node` holds.
async fn held(node: &Node, topic: &str, origin: &str) -> u64 {
    let v = node.get_json("/v1/topics").await;
    v["topics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["topic"] == topic)
        .flat_map(|t| t["streams"].as_array().unwrap().iter())
        .filter(|s| s["origin"] == origin)
        .map(|s| s["messages"].as_u64().unwrap())
        .sum()
}

/// Every payload of `topic` that `node` holds, in order.
async fn payloads(node: &Node, topic: &str) -> Vec<String> {
    node.pull_all(topic)
        .await
        .iter()
        .map(|m: &Value| m["payload"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_node_to_node_traffic_is_refused_and_replication_resumes() {
    let proxy = Proxy::start().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = format!("[cluster]\nkey = \"{KEY}\"\n");
    let a_dir = dir.path().join("a");
    std::fs::create_dir_all(&a_dir).unwrap();
    let a = Node::start_with_config(
        &a_dir,
        &toml,
        &["--fsync", "never", "--gossip-listen", "127.0.0.1:0"],
    );
    let seed = whoami(&a).await.1;
    let b_dir = dir.path().join("b");
    std::fs::create_dir_all(&b_dir).unwrap();
    let b = Node::start_with_config(
        &b_dir,
        &format!("{toml}http_advertise = \"{}\"\n", proxy.addr),
        &[
            "--fsync",
            "never",
            "--gossip-listen",
            "127.0.0.1:0",
            "--join",
            &seed,
        ],
    );
    *proxy.state.upstream.lock().unwrap() = Some(b.url.trim_start_matches("http://").to_owned());
    let b_id = whoami(&b).await.0;
    let topic = "tamper.t";
    let mut published = Vec::new();
    let mut publish = async |n: usize| {
        for _ in 0..n {
            let text = format!("m{}", published.len());
            // acks=local: while A's pulls fail, B holds the only copy.
            let req = b.request("POST", &format!("/v1/topics/{topic}?acks=local"));
            let (status, _, answer) = b.raw(req, text.clone()).await;
            assert!(
                (200..300).contains(&status),
                "{status}: {}",
                String::from_utf8_lossy(&answer)
            );
            published.push(text);
        }
        published.len() as u64
    };
    let total = publish(5).await;
    wait_until(
        Duration::from_secs(20),
        "A holds B's first messages",
        || async { held(&a, topic, &b_id).await == total },
    )
    .await;
    assert!(proxy.state.earlier.lock().unwrap().is_some());

    for mode in [Mode::FlipAnswer, Mode::ReplayAnswer] {
        let refused = counter(&a, "refused_http_answers").await;
        let tampered = proxy.state.tampered.load(Ordering::Relaxed);
        let before = held(&a, topic, &b_id).await;
        proxy.set(mode);
        let total = publish(3).await;
        wait_until(
            Duration::from_secs(20),
            &format!("{mode:?}: A refuses answers"),
            || async { counter(&a, "refused_http_answers").await >= refused + 2 },
        )
        .await;
        // Tampered answers were refused (those A still waited for), and
        // nothing of them stored: checked while the proxy still tampers,
        // since an answer passed after it stops may store them at once.
        let now_held = held(&a, topic, &b_id).await;
        let now_refused = counter(&a, "refused_http_answers").await - refused;
        let now_tampered = proxy.state.tampered.load(Ordering::Relaxed) - tampered;
        proxy.set(Mode::Pass);
        assert!(
            (2..=now_tampered).contains(&now_refused),
            "{mode:?}: {now_refused} refused of {now_tampered} tampered"
        );
        assert_eq!(now_held, before, "{mode:?}: nothing stored");
        wait_until(
            Duration::from_secs(20),
            &format!("{mode:?}: replication resumes"),
            || async { held(&a, topic, &b_id).await == total },
        )
        .await;
    }

    // Requests sent twice: B refuses the repeat, A's pulls go on.
    let replayed = counter(&b, "refused_http_replayed").await;
    proxy.set(Mode::ReplayRequest);
    let total = publish(3).await;
    wait_until(
        Duration::from_secs(20),
        "B refuses repeated requests",
        || async { proxy.state.replays_refused.load(Ordering::Relaxed) >= 2 },
    )
    .await;
    wait_until(Duration::from_secs(20), "A holds B's messages", || async {
        held(&a, topic, &b_id).await == total
    })
    .await;
    proxy.set(Mode::Pass);
    assert!(counter(&b, "refused_http_replayed").await >= replayed + 2);

    // Every message once, in order, on A as on B; and the puller refused
    // no answer for its values (the envelope stopped every tampering).
    assert_eq!(payloads(&a, topic).await, published);
    assert_eq!(payloads(&b, topic).await, published);
    assert_eq!(counter(&a, "refused_feed_answers").await, 0);
}
