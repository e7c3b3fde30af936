//! Shared helpers of the end-to-end tests: start the real binary on a free
//! port with its own data directory, talk HTTP to it, read SSE streams, and
//! poll for conditions with a deadline.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::Value;
use switchyard::client::{Client, ClientError};
use switchyard::sse::{Event, SseParser};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// A running node: a child process with its own data directory.
pub struct Node {
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    pub client: Client,
}

impl Node {
    /// Starts `switchyard serve` on 127.0.0.1:0 with `dir/data`, plus `args`.
    pub fn start(dir: &Path, args: &[&str]) -> Node {
        Node::start_with_env(dir, args, &[])
    }

    /// [`Node::start`] with extra environment variables for the process
    /// (for example `LD_PRELOAD` for fault injection).
    pub fn start_with_env(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> Node {
        let data_dir = dir.join("data");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("node.log"))
            .expect("log file");
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .args(args)
            // `E2E_NODE_LOG` (a `SWITCHYARD_LOG` filter) says what the
            // nodes write to their `node.log`.
            .env(
                "SWITCHYARD_LOG",
                std::env::var("E2E_NODE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start switchyard");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("node did not report its address in time");
        let url = line
            .trim()
            .strip_prefix("switchyard listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        // An https node's client trusts the CA in `dir/ca.pem`.
        let ca = dir.join("ca.pem");
        let client =
            Client::with_ca_file(&url, ca.exists().then_some(ca.as_path())).expect("client");
        Node {
            child,
            url,
            data_dir,
            client,
        }
    }

    /// Starts a node with a config file written from `toml`.
    pub fn start_with_config(dir: &Path, toml: &str, args: &[&str]) -> Node {
        Node::start_with_config_env(dir, toml, args, &[])
    }

    /// [`Node::start_with_config`] with extra environment variables.
    pub fn start_with_config_env(
        dir: &Path,
        toml: &str,
        args: &[&str],
        env: &[(&str, &Path)],
    ) -> Node {
        let path = dir.join("switchyard.toml");
        std::fs::write(&path, toml).expect("write config");
        let mut all = vec!["--config", path.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        Node::start_with_env(dir, &all, env)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGHUP, as `systemctl reload` sends it.
    #[allow(unsafe_code)]
    pub fn hangup(&self) {
        // SAFETY: kill(2) on the pid of a child process this test started.
        let r = unsafe { libc::kill(self.pid() as i32, libc::SIGHUP) };
        assert_eq!(r, 0);
    }

    /// SIGTERM, then waits (up to 30 s) for the process to exit; returns
    /// whether it did.
    #[allow(unsafe_code)]
    pub fn terminate(&mut self) -> bool {
        // SAFETY: kill(2) on the pid of a child process this test started.
        let r = unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        assert_eq!(r, 0);
        self.wait_exit(Duration::from_secs(30))
    }

    /// The node's log so far (`dir/node.log`, at `E2E_NODE_LOG`, default
    /// `warn`).
    pub fn log(&self) -> String {
        let dir = self.data_dir.parent().expect("data dir in the test dir");
        std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
    }

    /// The node's log once it holds every one of `lines` (the node writes
    /// its log from a queue, a moment after the event); fails the test
    /// after 10 s.
    pub async fn log_with(&self, lines: &[&str]) -> String {
        self.log_until(&format!("one of {lines:?}"), |log| {
            lines.iter().all(|l| log.contains(l))
        })
        .await
    }

    /// The node's log once `done` holds for it; fails the test after 10 s,
    /// naming `what` the log still lacks.
    pub async fn log_until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if done(&log) {
                return log;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the log lacks {what}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, as `kill -9` does.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the process to exit (after a signal);
    /// returns whether it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Resident memory of the node process in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Publishes one text message; panics unless it answers 201.
    pub async fn publish(&self, topic: &str, payload: impl Into<Bytes>) -> Value {
        self.client
            .publish(topic, payload.into(), None, &[], None)
            .await
            .expect("publish")
    }

    /// Sends a request and returns status, headers and body.
    pub async fn raw(
        &self,
        req: http::request::Builder,
        body: impl Into<Bytes>,
    ) -> (u16, http::HeaderMap, Bytes) {
        let req = req.body(Full::new(body.into())).expect("request");
        let resp = self.client_raw(req).await;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, headers, body)
    }

    async fn client_raw(&self, req: http::Request<Full<Bytes>>) -> hyper::Response<Incoming> {
        // Use a fresh hyper client that does not turn error statuses into errors.
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(hyper_util::client::legacy::connect::HttpConnector::new());
        client.request(req).await.expect("request reaches the node")
    }

    /// `PUT /v1/plugins/{name}?{query}` with `component` as
    /// `application/wasm`; the status and the JSON answer (`null` when it
    /// is not JSON).
    pub async fn put_plugin(&self, name: &str, query: &str, component: Vec<u8>) -> (u16, Value) {
        let (status, _, body) = self
            .raw(
                self.request("PUT", &format!("/v1/plugins/{name}?{query}"))
                    .header("content-type", "application/wasm"),
                component,
            )
            .await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    pub fn request(&self, method: &str, path: &str) -> http::request::Builder {
        http::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.url, path))
    }

    pub async fn get_json(&self, path: &str) -> Value {
        self.client.get_json(path).await.expect("GET")
    }

    /// Every message of `pattern` from the start, through the pull API.
    pub async fn pull_all(&self, pattern: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut from = "earliest".to_owned();
        loop {
            let v = self
                .get_json(&format!(
                    "/v1/messages?topic={}&from={from}&limit=1000",
                    enc(pattern)
                ))
                .await;
            let msgs = v["messages"].as_array().expect("messages").clone();
            from = v["cursor"].as_str().expect("cursor").to_owned();
            if msgs.is_empty() {
                return out;
            }
            out.extend(msgs);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// An open SSE stream.
pub struct Sse {
    body: Incoming,
    parser: SseParser,
    pending: VecDeque<Event>,
    /// Comments seen (heartbeats).
    pub raw: Vec<u8>,
}

impl Sse {
    /// GETs `path` with an optional Last-Event-ID.
    pub async fn connect(
        node: &Node,
        path: &str,
        last_id: Option<&str>,
    ) -> Result<Sse, ClientError> {
        let mut req = node
            .client
            .request(http::Method::GET, path)
            .header("accept", "text/event-stream");
        if let Some(id) = last_id {
            req = req.header("last-event-id", id);
        }
        let resp = node
            .client
            .send(req.body(Full::new(Bytes::new())).expect("request"))
            .await?;
        Ok(Sse {
            body: resp.into_body(),
            parser: SseParser::new(),
            pending: VecDeque::new(),
            raw: Vec::new(),
        })
    }

    /// The next event, or `None` when the stream ends or `timeout` passes.
    pub async fn next(&mut self, timeout: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .ok()??
                .ok()?;
            if let Ok(data) = frame.into_data() {
                self.raw.extend_from_slice(&data);
                self.pending.extend(self.parser.push(&data));
            }
        }
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub use switchyard_testkit::wait_until;

/// A small deterministic generator (xorshift64*), so that "random" cut
/// points are reproducible from the seed printed by a failing test.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// The origin sequence of a message id `<origin>-<seq>`.
pub fn seq_of(id: &str) -> u64 {
    id.rsplit_once('-')
        .and_then(|(_, s)| s.parse().ok())
        .expect("message id")
}

/// Sends raw HTTP/1.1 bytes and returns the status and the body of the
/// answer. The request is written from a separate task whose write errors
/// are ignored: a server may answer (413) and close before reading a large
/// body, which a request-then-response client would see as a broken pipe.
pub async fn raw_tcp(node: &Node, request: Vec<u8>) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = node.url.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        wr
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut answer)).await;
    drop(writer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// Publishes `entries` (batch entries: `payload`, optional `key`, `topic`)
/// in batches of 1000 to `topic`; returns the message ids in order.
pub async fn publish_batch(node: &Node, topic: &str, entries: &[Value]) -> Vec<String> {
    let mut ids = Vec::with_capacity(entries.len());
    for chunk in entries.chunks(1000) {
        let req = node
            .request("POST", &format!("/v1/batch?topic={}", enc(topic)))
            .header("content-type", "application/json");
        let (status, _, body) = node.raw(req, serde_json::to_vec(chunk).unwrap()).await;
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
        let v: Value = serde_json::from_slice(&body).unwrap();
        ids.extend(
            v["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().expect("result id").to_owned()),
        );
    }
    assert_eq!(ids.len(), entries.len());
    ids
}

/// Publishes the text payloads `payloads` to `topic`; returns their ids.
pub async fn publish_texts(node: &Node, topic: &str, payloads: &[String]) -> Vec<String> {
    let entries: Vec<Value> = payloads
        .iter()
        .map(|p| serde_json::json!({"payload": p}))
        .collect();
    publish_batch(node, topic, &entries).await
}

/// The component of the repository's guest plugin crate `name` (`_` for
/// `-`), built from `plugins/`.
pub fn guest_wasm(name: &str) -> Vec<u8> {
    let repo = switchyard_testkit::repo_root();
    let dir = switchyard_testkit::build_guest_plugins(repo).expect("guest plugins build");
    std::fs::read(dir.join(format!("{name}.wasm"))).expect("plugin file")
}
