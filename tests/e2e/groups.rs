//! Consumer groups end to end: members sharing a stream, acknowledgements,
//! redelivery after ack timeouts, disconnects and `kill -9`, per-key order,
//! pick plugins, start positions and lag, nack, term and dead letters,
//! in-flight caps, refused input, and the command-line client.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::support::{BIN, Node, Sse, enc, publish_batch, publish_texts};

type Http = HyperClient<HttpConnector, Full<Bytes>>;

fn http() -> Http {
    HyperClient::builder(hyper_util::rt::TokioExecutor::new()).build(HttpConnector::new())
}

/// Sends `body` as JSON with `method` to `url`; returns the status and the
/// JSON answer (`null` when the answer is not JSON).
async fn send_json(http: &Http, method: &str, url: &str, body: Bytes) -> (u16, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .expect("request");
    let resp = http.request(req).await.expect("request reaches the node");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// One message as a member received it.
#[derive(Clone, Debug)]
pub(crate) struct Delivery {
    /// The message id (the SSE `id:`).
    pub(crate) id: String,
    /// The payload, or the JSON envelope with `format=json`.
    data: String,
}

impl Delivery {
    /// The JSON envelope of a `format=json` member.
    fn envelope(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("envelope of {} is not JSON ({e}): {}", self.id, self.data))
    }
}

pub(crate) fn ids_of(ds: &[Delivery]) -> Vec<String> {
    ds.iter().map(|d| d.id.clone()).collect()
}

/// A connected member of a group: its event stream, its member id and a
/// client to settle its messages with.
pub(crate) struct GroupMember {
    group: String,
    id: String,
    /// The data of the `joined` event.
    joined: Value,
    sse: Sse,
    url: String,
    http: Http,
    /// Set once the stream has ended.
    pub(crate) closed: bool,
}

impl GroupMember {
    /// Joins `group` with the extra query `query` (`topic=...&...`) and
    /// reads the `joined` event.
    pub(crate) async fn join(node: &Node, group: &str, query: &str) -> GroupMember {
        match Self::try_join(node, group, query).await {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`GroupMember::join`], or what came instead of the `joined` event
    /// (an error answer has none).
    pub(crate) async fn try_join(
        node: &Node,
        group: &str,
        query: &str,
    ) -> Result<GroupMember, String> {
        let path = format!("/v1/events?group={}&{query}", enc(group));
        let mut sse = Sse::connect(node, &path, None)
            .await
            .map_err(|e| format!("join {path}: {e}"))?;
        let ev = match sse.next(Duration::from_secs(10)).await {
            Some(ev) if ev.event == "joined" => ev,
            other => return Err(format!("join {path}: first event {other:?}")),
        };
        let joined: Value = serde_json::from_str(&ev.data).expect("joined data is JSON");
        assert_eq!(joined["group"], group, "{joined}");
        let id = joined["member"]
            .as_str()
            .unwrap_or_else(|| panic!("joined event without a member id: {joined}"))
            .to_owned();
        Ok(GroupMember {
            group: group.to_owned(),
            id,
            joined,
            sse,
            url: node.url.clone(),
            http: http(),
            closed: false,
        })
    }

    /// Waits up to `timeout` for the next message, then takes every message
    /// the stream already holds without waiting further. Empty when nothing
    /// came in time or the stream ended (then `closed` is set).
    pub(crate) async fn next_batch(&mut self, timeout: Duration) -> Vec<Delivery> {
        let mut out = Vec::new();
        let start = Instant::now();
        match self.sse.next(timeout).await {
            Some(ev) => self.push(ev, &mut out),
            None => {
                // A timeout returns only once it has passed; sooner means
                // the stream ended.
                if start.elapsed() < timeout {
                    self.closed = true;
                }
                return out;
            }
        }
        // A zero timeout still polls the stream once: it returns whatever
        // already arrived and does not wait.
        while out.len() < 1000 {
            match self.sse.next(Duration::ZERO).await {
                Some(ev) => self.push(ev, &mut out),
                None => break,
            }
        }
        out
    }

    fn push(&self, ev: switchyard::sse::Event, out: &mut Vec<Delivery>) {
        assert_eq!(
            ev.event, "message",
            "member {} of {}: unexpected event {ev:?}",
            self.id, self.group
        );
        out.push(Delivery {
            id: ev.id.expect("a group message has an id"),
            data: ev.data,
        });
    }

    /// Receives until at least `n` messages came; panics after `timeout`.
    pub(crate) async fn recv(&mut self, n: usize, timeout: Duration) -> Vec<Delivery> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero() && !self.closed,
                "member {} of {}: {} of {n} messages received (stream closed: {}): {:?}",
                self.id,
                self.group,
                out.len(),
                self.closed,
                ids_of(&out)
            );
            out.extend(self.next_batch(left).await);
        }
        out
    }

    /// Asserts that no message arrives within `quiet`.
    pub(crate) async fn expect_nothing(&mut self, quiet: Duration, why: &str) {
        let got = self.next_batch(quiet).await;
        assert!(
            got.is_empty(),
            "member {} of {}: {why}, yet it got {:?}",
            self.id,
            self.group,
            ids_of(&got)
        );
    }

    /// POST /v1/groups/{group}/{op} for `ids` as this member, with `extra`
    /// fields (`delay_ms`, `reason`) merged into the body.
    pub(crate) async fn settle(&self, op: &str, ids: &[String], extra: Value) -> (u16, Value) {
        let mut body = json!({"ids": ids, "member": self.id});
        if let Value::Object(fields) = extra {
            body.as_object_mut().unwrap().extend(fields);
        }
        send_json(
            &self.http,
            "POST",
            &format!("{}/v1/groups/{}/{op}", self.url, enc(&self.group)),
            serde_json::to_vec(&body).unwrap().into(),
        )
        .await
    }

    /// Settles `ids` and asserts that every one of them was applied.
    async fn settle_ok(&self, op: &str, ids: &[String], extra: Value) -> Value {
        let (status, v) = self.settle(op, ids, extra).await;
        assert_eq!(status, 200, "{op} by {} of {}: {v}", self.id, self.group);
        assert_eq!(v["group"], self.group.as_str(), "{v}");
        let mut applied: Vec<String> = v["applied"]
            .as_array()
            .unwrap_or_else(|| panic!("{op} answer without applied: {v}"))
            .iter()
            .map(|i| i.as_str().unwrap().to_owned())
            .collect();
        applied.sort();
        let mut want = ids.to_vec();
        want.sort();
        assert_eq!(applied, want, "{op}: {v}");
        assert_eq!(v["stale"], json!([]), "{op}: {v}");
        v
    }

    pub(crate) async fn ack(&self, ids: &[String]) -> Value {
        self.settle_ok("ack", ids, json!({})).await
    }
}

/// Reads `m`'s messages and acknowledges each batch as it arrives (every
/// ack must be applied in full), until `stop` is set and no message came for
/// 100 ms. Returns the member id and everything it received, in order.
pub(crate) fn spawn_acker(
    mut m: GroupMember,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(String, Vec<Delivery>)> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            let batch = m.next_batch(Duration::from_millis(100)).await;
            assert!(!m.closed, "the stream of member {} ended", m.id);
            if batch.is_empty() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                continue;
            }
            m.ack(&ids_of(&batch)).await;
            got.extend(batch);
        }
        (m.id.clone(), got)
    })
}

fn texts(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// GET /v1/groups/{group}.
pub(crate) async fn info(node: &Node, group: &str) -> Value {
    node.get_json(&format!("/v1/groups/{}", enc(group))).await
}

/// Polls the group's info until `cond` holds; panics with the last info
/// after `timeout`. Returns the info that satisfied `cond`.
pub(crate) async fn wait_info(
    node: &Node,
    group: &str,
    what: &str,
    timeout: Duration,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    let what = format!("group {group}: {what}");
    switchyard_testkit::poll_until(timeout, &what, || info(node, group), |v| cond(v)).await
}

/// The info without what changes on its own (members' `connected_ms`).
fn state(info: &Value) -> Value {
    let mut v = info.clone();
    if let Some(members) = v["members"].as_array_mut() {
        for m in members {
            m.as_object_mut().unwrap().remove("connected_ms");
        }
    }
    v
}

/// POST /v1/groups/{group}/{op} with a raw body; returns status and JSON.
async fn settle_raw(node: &Node, group: &str, op: &str, body: impl Into<Bytes>) -> (u16, Value) {
    let req = node
        .request("POST", &format!("/v1/groups/{group}/{op}"))
        .header("content-type", "application/json");
    let (status, _, body) = node.raw(req, body.into()).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A join that must be refused: the status and the problem's `code`. A
/// join that is accepted answers with an endless stream; that shows as 200.
async fn refused_join(node: &Node, query: &str) -> (u16, String) {
    let req = node.request("GET", &format!("/v1/events?{query}"));
    match tokio::time::timeout(Duration::from_secs(5), node.raw(req, "")).await {
        Ok((status, _, body)) => {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            (status, v["code"].as_str().unwrap_or("").to_owned())
        }
        Err(_) => (200, "accepted: an event stream".to_owned()),
    }
}

fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or("")
}

pub(crate) fn counter(info: &Value, name: &str) -> u64 {
    info[name]
        .as_u64()
        .unwrap_or_else(|| panic!("info has no counter {name}: {info}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_members_share_twenty_thousand_messages() {
    const TOTAL: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let m = GroupMember::join(&node, "share", &format!("topic={}", enc("work.>"))).await;
        assert_eq!(m.joined["ack"], "manual", "{}", m.joined);
        assert_eq!(m.joined["max_inflight"], 64, "{}", m.joined);
        tasks.push(spawn_acker(m, stop.clone()));
    }
    let entries: Vec<Value> = (0..TOTAL)
        .map(|i| json!({"topic": format!("work.{}", i % 3), "payload": format!("w{i}")}))
        .collect();
    let published = publish_batch(&node, "work.0", &entries).await;
    let payload_of: HashMap<&str, String> = published
        .iter()
        .zip(&entries)
        .map(|(id, e)| (id.as_str(), e["payload"].as_str().unwrap().to_owned()))
        .collect();
    // Taken while the members are still connected.
    let v = wait_info(
        &node,
        "share",
        "every message acked",
        Duration::from_secs(60),
        |v| v["acked"] == TOTAL as u64,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut per_member = BTreeMap::new();
    let mut times: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        let (member, got) = t.await.unwrap();
        for d in &got {
            *times.entry(d.id.clone()).or_default() += 1;
            assert_eq!(
                Some(&d.data),
                payload_of.get(d.id.as_str()),
                "payload of {}",
                d.id
            );
        }
        per_member.insert(member, got.len());
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        twice.is_empty(),
        "delivered (and acked) more than once: {twice:?}"
    );
    let delivered: BTreeSet<&str> = times.keys().map(String::as_str).collect();
    let published_set: BTreeSet<&str> = published.iter().map(String::as_str).collect();
    assert_eq!(delivered.len(), TOTAL, "per member: {per_member:?}");
    assert!(
        delivered == published_set,
        "delivered ids differ from published ids"
    );
    println!("share: messages per member {per_member:?}");
    for (member, n) in &per_member {
        assert!(
            *n * 100 <= TOTAL * 35,
            "member {member} got {n} of {TOTAL}: {per_member:?}"
        );
    }
    assert_eq!(counter(&v, "acked"), TOTAL as u64, "{v:#}");
    assert_eq!(counter(&v, "delivered"), TOTAL as u64, "{v:#}");
    assert_eq!(counter(&v, "redelivered"), 0, "{v:#}");
    assert_eq!(counter(&v, "inflight"), 0, "{v:#}");
    assert_eq!(counter(&v, "pending_redelivery"), 0, "{v:#}");
    assert_eq!(counter(&v, "lag"), 0, "{v:#}");
    assert_eq!(v["topics"], json!(["work.>"]), "{v:#}");
    assert_eq!(v["strategy"], "least-inflight", "{v:#}");
    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 4, "{v:#}");
    for m in members {
        let n = per_member[m["id"].as_str().unwrap()] as u64;
        assert_eq!(m["acked"], n, "{m}");
        assert_eq!(m["delivered"], n, "{m}");
        assert_eq!(m["inflight"], 0, "{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_and_disconnected_members_are_redelivered() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);

    // A stalled member: it holds its messages and never acknowledges them.
    // When they time out they go to the other member, which has room, not
    // back to the stalled one.
    let query = "topic=stall.t&ack_timeout_ms=1000";
    let mut a = GroupMember::join(&node, "stall", query).await;
    let published_at = Instant::now();
    let published = publish_texts(&node, "stall.t", &texts("s", 10)).await;
    let held = a.recv(10, Duration::from_secs(10)).await;
    assert_eq!(ids_of(&held), published);
    let mut b = GroupMember::join(&node, "stall", query).await;
    let start = Instant::now();
    let mut acked_by_b = BTreeSet::new();
    let mut redelivered_to_a = 0;
    let mut first_to_b = None;
    while acked_by_b.len() < published.len() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "only {} of A's messages reached B: {acked_by_b:?}",
            acked_by_b.len()
        );
        let got = b.next_batch(Duration::from_millis(100)).await;
        if !got.is_empty() {
            first_to_b.get_or_insert_with(|| published_at.elapsed());
            b.ack(&ids_of(&got)).await;
            acked_by_b.extend(ids_of(&got));
        }
        redelivered_to_a += a.next_batch(Duration::ZERO).await.len();
    }
    let first_to_b = first_to_b.unwrap();
    assert!(
        first_to_b >= Duration::from_millis(1000),
        "B got one of A's messages {first_to_b:?} after the publish, before A's ack timeout"
    );
    assert_eq!(
        acked_by_b,
        published.iter().cloned().collect::<BTreeSet<_>>()
    );
    let v = wait_info(
        &node,
        "stall",
        "nothing in flight",
        Duration::from_secs(5),
        |v| v["inflight"] == 0 && v["pending_redelivery"] == 0,
    )
    .await;
    assert_eq!(counter(&v, "acked"), 10, "{v:#}");
    assert_eq!(counter(&v, "expired"), 10, "{v:#}");
    assert_eq!(counter(&v, "redelivered"), 10, "{v:#}");
    assert_eq!(counter(&v, "delivered"), 20, "{v:#}");
    assert_eq!(counter(&v, "dead_lettered"), 0, "{v:#}");
    assert_eq!(
        redelivered_to_a, 0,
        "timed-out messages went back to the stalled member"
    );
    drop((a, b));

    // A member that disconnects: what it held goes to another member at
    // once, long before the 60 s ack timeout.
    let query = "topic=drop.t&ack_timeout_ms=60000&format=json";
    let mut c = GroupMember::join(&node, "drop", &format!("{query}&max_inflight=5")).await;
    let published = publish_texts(&node, "drop.t", &texts("d", 8)).await;
    let taken = c.recv(5, Duration::from_secs(10)).await;
    assert_eq!(
        ids_of(&taken),
        published[..5],
        "C takes 5, its max_inflight"
    );
    let v = info(&node, "drop").await;
    assert_eq!(counter(&v, "lag"), 3, "{v:#}");
    let mut b = GroupMember::join(&node, "drop", query).await;
    let waiting = b.recv(3, Duration::from_secs(10)).await;
    assert_eq!(ids_of(&waiting), published[5..], "B takes what waited");
    b.ack(&ids_of(&waiting)).await;
    let dropped_at = Instant::now();
    drop(c);
    let again = b.recv(5, Duration::from_secs(15)).await;
    let took = dropped_at.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "C's messages reached B after {took:?}"
    );
    let mut got = ids_of(&again);
    got.sort();
    let mut want = published[..5].to_vec();
    want.sort();
    assert_eq!(got, want, "C's messages, each once");
    for d in &again {
        assert_eq!(d.envelope()["delivery"], 2, "{}", d.data);
    }
    b.ack(&ids_of(&again)).await;
    let v = info(&node, "drop").await;
    assert_eq!(counter(&v, "acked"), 8, "{v:#}");
    assert_eq!(counter(&v, "redelivered"), 5, "{v:#}");
    assert_eq!(counter(&v, "expired"), 0, "{v:#}");
    assert_eq!(counter(&v, "inflight"), 0, "{v:#}");
    assert_eq!(counter(&v, "pending_redelivery"), 0, "{v:#}");
    assert_eq!(v["members"].as_array().unwrap().len(), 1, "{v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_redelivers_unacked_but_not_acked() {
    const N: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &["--fsync", "always"]);
    let query = "topic=k9.t&max_inflight=500&format=json";
    let mut m = GroupMember::join(&node, "k9", query).await;
    let published = publish_texts(&node, "k9.t", &texts("k", N)).await;
    let got = m.recv(N, Duration::from_secs(15)).await;
    assert_eq!(ids_of(&got), published);
    // Every other message acknowledged, each ack answered before the kill.
    let (acked, unacked): (Vec<_>, Vec<_>) = published
        .iter()
        .cloned()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let acked: Vec<String> = acked.into_iter().map(|(_, id)| id).collect();
    let unacked: BTreeSet<String> = unacked.into_iter().map(|(_, id)| id).collect();
    for chunk in acked.chunks(25) {
        m.ack(chunk).await;
    }
    node.kill9();
    drop(m);

    let node = Node::start(dir.path(), &["--fsync", "always"]);
    let v = info(&node, "k9").await;
    assert_eq!(counter(&v, "acked"), (N / 2) as u64, "{v:#}");
    let mut m = GroupMember::join(&node, "k9", query).await;
    let again = m.recv(N / 2, Duration::from_secs(15)).await;
    let again_ids: BTreeSet<String> = ids_of(&again).into_iter().collect();
    assert_eq!(again.len(), N / 2, "each unacked message once");
    assert_eq!(again_ids, unacked, "exactly the unacked messages");
    for d in &again {
        let env = d.envelope();
        assert_eq!(env["delivery"], 2, "{}", d.data);
        assert_eq!(env["id"], d.id.as_str(), "{}", d.data);
    }
    m.expect_nothing(Duration::from_millis(500), "every unacked message came")
        .await;
    let v = info(&node, "k9").await;
    assert_eq!(counter(&v, "inflight"), (N / 2) as u64, "{v:#}");
    m.ack(&ids_of(&again)).await;
    let v = info(&node, "k9").await;
    assert_eq!(counter(&v, "acked"), N as u64, "{v:#}");
    assert_eq!(counter(&v, "inflight"), 0, "{v:#}");
    assert_eq!(counter(&v, "pending_redelivery"), 0, "{v:#}");
    assert_eq!(counter(&v, "lag"), 0, "{v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_hash_keeps_per_key_order() {
    const KEYS: usize = 30;
    const PER_KEY: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let m = GroupMember::join(&node, "keyed", "topic=kh.t&strategy=key-hash").await;
        tasks.push(spawn_acker(m, stop.clone()));
    }
    let entries: Vec<Value> = (0..KEYS * PER_KEY)
        .map(|i| {
            let (key, n) = (i % KEYS, i / KEYS);
            json!({"key": format!("k{key}"), "payload": format!("k{key}:{n}")})
        })
        .collect();
    publish_batch(&node, "kh.t", &entries).await;
    let total = (KEYS * PER_KEY) as u64;
    wait_info(
        &node,
        "keyed",
        "every message acked",
        Duration::from_secs(60),
        |v| v["acked"] == total,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    // key -> the member that got it, and the sequence numbers it got in order.
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    let mut seen: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for t in tasks {
        let (member, got) = t.await.unwrap();
        for d in got {
            let (key, n) = d.data.split_once(':').expect("key:n payload");
            let first = owner
                .entry(key.to_owned())
                .or_insert_with(|| member.clone());
            assert_eq!(
                *first, member,
                "key {key} went to two members ({first} and {member})"
            );
            seen.entry(key.to_owned())
                .or_default()
                .push(n.parse().unwrap());
        }
    }
    assert_eq!(seen.len(), KEYS);
    let in_order: Vec<usize> = (0..PER_KEY).collect();
    for (key, ns) in &seen {
        assert_eq!(ns, &in_order, "order of key {key}");
    }
    let members: BTreeSet<&String> = owner.values().collect();
    println!("key-hash: {} keys over {} members", KEYS, members.len());
    let v = info(&node, "keyed").await;
    assert_eq!(v["strategy"], "key-hash", "{v:#}");
    assert_eq!(counter(&v, "redelivered"), 0, "{v:#}");
    assert_eq!(counter(&v, "inflight"), 0, "{v:#}");
}

/// A guest plugin component built from `plugins/`.
fn wasm(name: &str) -> Vec<u8> {
    let repo = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let dir = switchyard_testkit::build_guest_plugins(repo).expect("guest plugins build");
    std::fs::read(dir.join(format!("{name}.wasm"))).expect("plugin file")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pick_plugin_splits_three_to_one() {
    const TOTAL: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    let (status, _, body) = node
        .raw(
            node.request("PUT", "/v1/plugins/balance?hook=pick")
                .header("content-type", "application/wasm"),
            wasm("weighted_balancer"),
        )
        .await;
    assert!(
        status == 201 || status == 200,
        "bind: {status} {}",
        String::from_utf8_lossy(&body)
    );
    // Room for every message, so that no member is ever left out of the
    // plugin's candidates for being at its max_inflight.
    let base = "topic=pick.t&strategy=plugin:balance&max_inflight=10000";
    let heavy = GroupMember::join(&node, "picked", &format!("{base}&weight=3")).await;
    let light = GroupMember::join(&node, "picked", &format!("{base}&weight=1&label=zone:eu")).await;
    let (heavy_id, light_id) = (heavy.id.clone(), light.id.clone());
    let v = info(&node, "picked").await;
    assert_eq!(v["strategy"], "plugin:balance", "{v:#}");
    let weights: BTreeMap<&str, (&Value, &Value)> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap(), (&m["weight"], &m["labels"])))
        .collect();
    assert_eq!(weights[heavy_id.as_str()].0, 3, "{v:#}");
    assert_eq!(weights[light_id.as_str()].0, 1, "{v:#}");
    assert_eq!(
        weights[light_id.as_str()].1,
        &json!({"zone": "eu"}),
        "{v:#}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let tasks = [
        spawn_acker(heavy, stop.clone()),
        spawn_acker(light, stop.clone()),
    ];
    publish_texts(&node, "pick.t", &texts("p", TOTAL)).await;
    let v = wait_info(
        &node,
        "picked",
        "every message acked",
        Duration::from_secs(60),
        |v| v["acked"] == TOTAL as u64,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut counts = BTreeMap::new();
    for t in tasks {
        let (member, got) = t.await.unwrap();
        counts.insert(member, got.len());
    }
    assert_eq!(counts.values().sum::<usize>(), TOTAL, "{counts:?}");
    let share = counts[&heavy_id] as f64 * 100.0 / TOTAL as f64;
    println!("pick: messages per member {counts:?}, weight 3 has {share:.1} %");
    assert!(
        (70.0..=80.0).contains(&share),
        "the weight-3 member got {share:.1} % ({counts:?})"
    );
    assert_eq!(counter(&v, "pick_errors"), 0, "{v:#}");
    assert_eq!(counter(&v, "redelivered"), 0, "{v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_semantics_and_start_positions() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);

    // from=earliest: what was published before the group existed waits.
    let early = publish_texts(&node, "q.early", &texts("e", 10)).await;
    let mut m = GroupMember::join(&node, "early", "topic=q.early&from=earliest").await;
    let got = m.recv(10, Duration::from_secs(10)).await;
    assert_eq!(ids_of(&got), early);
    assert_eq!(
        got.iter().map(|d| d.data.clone()).collect::<Vec<_>>(),
        texts("e", 10)
    );
    m.ack(&ids_of(&got)).await;
    drop(m);

    // from=latest: only what is published after the group was created.
    publish_texts(&node, "q.late", &texts("old", 5)).await;
    let mut m = GroupMember::join(&node, "late", "topic=q.late&from=latest").await;
    let new = publish_texts(&node, "q.late", &texts("new", 3)).await;
    let got = m.recv(3, Duration::from_secs(10)).await;
    assert_eq!(ids_of(&got), new, "only the messages after the join");
    m.ack(&ids_of(&got)).await;
    // from= applies only when the join creates the group: a later member
    // asking for earliest does not rewind it.
    let mut m2 = GroupMember::join(&node, "late", "topic=q.late&from=earliest").await;
    m2.expect_nothing(Duration::from_millis(300), "the group does not rewind")
        .await;
    let v = info(&node, "late").await;
    assert_eq!(counter(&v, "delivered"), 3, "{v:#}");
    assert_eq!(counter(&v, "acked"), 3, "{v:#}");
    assert_eq!(counter(&v, "lag"), 0, "{v:#}");
    drop((m, m2));

    // A group without connected members keeps its place and accumulates lag.
    let m = GroupMember::join(&node, "idle", "topic=q.idle").await;
    drop(m);
    wait_info(
        &node,
        "idle",
        "the member to leave",
        Duration::from_secs(10),
        |v| v["members"].as_array().is_some_and(|m| m.is_empty()),
    )
    .await;
    let waiting = publish_texts(&node, "q.idle", &texts("i", 25)).await;
    let v = wait_info(&node, "idle", "lag 25", Duration::from_secs(10), |v| {
        v["lag"] == 25
    })
    .await;
    assert_eq!(counter(&v, "delivered"), 0, "{v:#}");
    let listed = node.get_json("/v1/groups").await;
    let names: Vec<&str> = listed["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{listed}");
    for g in ["early", "idle", "late"] {
        assert!(names.contains(&g), "{g} listed: {names:?}");
    }
    let mut m = GroupMember::join(&node, "idle", "topic=q.idle").await;
    let got = m.recv(25, Duration::from_secs(10)).await;
    assert_eq!(ids_of(&got), waiting, "the backlog, in order");
    m.ack(&ids_of(&got)).await;
    let v = info(&node, "idle").await;
    assert_eq!(counter(&v, "lag"), 0, "{v:#}");
    assert_eq!(counter(&v, "acked"), 25, "{v:#}");
    assert_eq!(counter(&v, "inflight"), 0, "{v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_term_and_max_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    let mut m = GroupMember::join(&node, "nt", "topic=nt.t&max_deliveries=2&format=json").await;

    // nack with a delay: delivered again once the delay has passed.
    let one = publish_texts(&node, "nt.t", &["one".to_owned()]).await;
    let got = m.recv(1, Duration::from_secs(10)).await;
    assert_eq!(ids_of(&got), one);
    let env = got[0].envelope();
    assert_eq!(env["delivery"], 1, "{env}");
    assert_eq!(env["payload"], "one", "{env}");
    let nacked_at = Instant::now();
    m.settle_ok("nack", &one, json!({"delay_ms": 1000})).await;
    let got = m.recv(1, Duration::from_secs(10)).await;
    let after = nacked_at.elapsed();
    assert_eq!(ids_of(&got), one);
    assert_eq!(got[0].envelope()["delivery"], 2, "{}", got[0].data);
    assert!(
        after >= Duration::from_millis(950) && after < Duration::from_secs(5),
        "redelivered {after:?} after a nack with a 1000 ms delay"
    );
    m.ack(&one).await;

    // term: dead-lettered at once, with the reason.
    let two = publish_texts(&node, "nt.t", &["two".to_owned()]).await;
    let got = m.recv(1, Duration::from_secs(10)).await;
    assert_eq!(ids_of(&got), two);
    m.settle_ok("term", &two, json!({"reason": "cannot parse the order"}))
        .await;
    let dlq = node.pull_all("$dlq.nt.t").await;
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0]["payload"], "two", "{}", dlq[0]);
    assert_eq!(dlq[0]["topic"], "$dlq.nt.t", "{}", dlq[0]);
    assert_eq!(dlq[0]["headers"]["switchyard-group"], "nt", "{}", dlq[0]);
    assert!(
        dlq[0]["headers"]["switchyard-error"]
            .as_str()
            .unwrap_or("")
            .contains("cannot parse the order"),
        "{}",
        dlq[0]
    );

    // Nacked as often as max_deliveries allows: dead-lettered, not delivered
    // a third time.
    let three = publish_texts(&node, "nt.t", &["three".to_owned()]).await;
    for delivery in 1..=2 {
        let got = m.recv(1, Duration::from_secs(10)).await;
        assert_eq!(ids_of(&got), three);
        assert_eq!(got[0].envelope()["delivery"], delivery, "{}", got[0].data);
        m.settle_ok("nack", &three, json!({})).await;
    }
    let four = publish_texts(&node, "nt.t", &["four".to_owned()]).await;
    let got = m.recv(1, Duration::from_secs(10)).await;
    assert_eq!(ids_of(&got), four, "the next message, not a third delivery");
    m.ack(&four).await;
    let dlq = node.pull_all("$dlq.nt.t").await;
    assert_eq!(dlq.len(), 2, "{dlq:?}");
    assert_eq!(dlq[1]["payload"], "three", "{}", dlq[1]);
    assert_eq!(dlq[1]["headers"]["switchyard-group"], "nt", "{}", dlq[1]);
    let why = dlq[1]["headers"]["switchyard-error"].as_str().unwrap_or("");
    assert!(!why.is_empty(), "{}", dlq[1]);
    println!("dead-letter reason after max_deliveries: {why}");
    // The dead-lettered message cannot be settled any more.
    let (status, v) = m.settle("ack", &three, json!({})).await;
    assert_eq!(status, 409, "{v}");

    let v = info(&node, "nt").await;
    assert_eq!(counter(&v, "nacked"), 3, "{v:#}");
    assert_eq!(counter(&v, "terminated"), 1, "{v:#}");
    assert_eq!(counter(&v, "dead_lettered"), 2, "{v:#}");
    assert_eq!(counter(&v, "redelivered"), 2, "{v:#}");
    assert_eq!(counter(&v, "acked"), 2, "{v:#}");
    assert_eq!(counter(&v, "inflight"), 0, "{v:#}");
    assert_eq!(counter(&v, "pending_redelivery"), 0, "{v:#}");
    assert_eq!(v["max_deliveries"], 2, "{v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_inflight_caps_a_member() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    let mut m = GroupMember::join(&node, "capped", "topic=cap.t&max_inflight=3").await;
    assert_eq!(m.joined["max_inflight"], 3, "{}", m.joined);
    let published = publish_texts(&node, "cap.t", &texts("c", 10)).await;
    let got = m.recv(3, Duration::from_secs(10)).await;
    assert_eq!(ids_of(&got), published[..3]);
    m.expect_nothing(Duration::from_millis(300), "it is at max_inflight")
        .await;
    let v = info(&node, "capped").await;
    assert_eq!(counter(&v, "delivered"), 3, "{v:#}");
    assert_eq!(counter(&v, "inflight"), 3, "{v:#}");
    assert_eq!(counter(&v, "lag"), 7, "{v:#}");
    assert_eq!(v["members"][0]["inflight"], 3, "{v:#}");
    assert_eq!(v["members"][0]["max_inflight"], 3, "{v:#}");

    // One ack makes room for exactly one more.
    m.ack(&published[..1]).await;
    let got = m.recv(1, Duration::from_secs(10)).await;
    assert_eq!(ids_of(&got), published[3..4]);
    m.expect_nothing(Duration::from_millis(300), "it is at max_inflight again")
        .await;
    let v = info(&node, "capped").await;
    assert_eq!(counter(&v, "delivered"), 4, "{v:#}");
    assert_eq!(counter(&v, "inflight"), 3, "{v:#}");
    assert_eq!(counter(&v, "lag"), 6, "{v:#}");

    // Acking as it goes, the member drains the rest, three at a time.
    let mut held: Vec<String> = published[1..4].to_vec();
    let mut next = 4;
    while next < published.len() {
        m.ack(&held).await;
        let got = m
            .recv(3.min(published.len() - next), Duration::from_secs(10))
            .await;
        assert!(got.len() <= 3, "more than max_inflight: {:?}", ids_of(&got));
        assert_eq!(ids_of(&got), published[next..next + got.len()]);
        next += got.len();
        held = ids_of(&got);
    }
    m.ack(&held).await;
    let v = info(&node, "capped").await;
    assert_eq!(counter(&v, "acked"), 10, "{v:#}");
    assert_eq!(counter(&v, "lag"), 0, "{v:#}");
}

/// `max_inflight_bytes` bounds what a member holds in bytes: it gets
/// messages while their sizes fit, one at a time when a message alone
/// passes the bound, and an ack makes room for the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_inflight_bytes_caps_a_member_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    // 1,000 payload bytes plus 5 of topic each: two fit in 2,500.
    let mut m = GroupMember::join(&node, "bytes", "topic=byt.t&max_inflight_bytes=2500").await;
    assert_eq!(m.joined["max_inflight_bytes"], 2500, "{}", m.joined);
    let big = "x".repeat(1000);
    let published = publish_texts(&node, "byt.t", &vec![big; 5]).await;
    let got = m.recv(2, Duration::from_secs(10)).await;
    assert_eq!(ids_of(&got), published[..2]);
    m.expect_nothing(Duration::from_millis(300), "it holds its bytes")
        .await;
    let v = info(&node, "bytes").await;
    assert_eq!(v["members"][0]["inflight_bytes"], 2010, "{v:#}");
    assert_eq!(v["members"][0]["max_inflight_bytes"], 2500, "{v:#}");
    m.ack(&published[..1]).await;
    let got = m.recv(1, Duration::from_secs(10)).await;
    assert_eq!(ids_of(&got), published[2..3]);
    // A message larger than the whole bound still goes to a member that
    // holds nothing.
    let mut small = GroupMember::join(&node, "tiny", "topic=tin.t&max_inflight_bytes=10").await;
    let huge = publish_texts(&node, "tin.t", &["y".repeat(5000), "z".to_owned()]).await;
    let got = small.recv(1, Duration::from_secs(10)).await;
    assert_eq!(ids_of(&got), huge[..1]);
    small
        .expect_nothing(Duration::from_millis(300), "one message passes its bound")
        .await;
    small.ack(&huge[..1]).await;
    let got = small.recv(1, Duration::from_secs(10)).await;
    assert_eq!(ids_of(&got), huge[1..]);
    // Out of range: refused.
    for bad in ["0", "67108865", "lots"] {
        let (status, code) = refused_join(
            &node,
            &format!("topic=byt.t&group=bad&max_inflight_bytes={bad}"),
        )
        .await;
        assert_eq!(
            (status, code.as_str()),
            (400, "invalid_group_setting"),
            "{bad}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_bad_input_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);

    // Settling in a group that does not exist.
    let (status, v) =
        settle_raw(&node, "nosuch", "ack", r#"{"ids": ["0000000000000001-1"]}"#).await;
    assert_eq!((status, code(&v)), (404, "group_not_found"), "{v}");
    let (status, _, body) = node.raw(node.request("GET", "/v1/groups/nosuch"), "").await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));

    // The join answers with the group and member headers.
    let resp = http()
        .request(
            http::Request::builder()
                .uri(format!("{}/v1/events?group=bad&topic=bad.t", node.url))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["switchyard-group"], "bad");
    assert!(!resp.headers()["switchyard-member"].is_empty());
    drop(resp);

    let mut m = GroupMember::join(&node, "bad", "topic=bad.t").await;
    // The dropped connection's member leaves asynchronously; publish once
    // `m` is the only member, so that both messages go to it in order.
    wait_info(
        &node,
        "bad",
        "one member left",
        Duration::from_secs(10),
        |v| v["members"].as_array().is_some_and(|a| a.len() == 1),
    )
    .await;
    let published = publish_texts(&node, "bad.t", &texts("b", 2)).await;
    let got = m.recv(2, Duration::from_secs(10)).await;
    assert_eq!(ids_of(&got), published);
    let before = state(&info(&node, "bad").await);
    let origin = published[0].rsplit_once('-').unwrap().0;
    let never = format!("{origin}-99999999");

    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "an id never delivered",
            json!({"ids": [never], "member": m.id}).to_string(),
            409,
            "not_in_flight",
        ),
        (
            "an id never delivered next to one in flight",
            json!({"ids": [published[0], never], "member": m.id}).to_string(),
            409,
            "not_in_flight",
        ),
        ("garbage JSON", "{ids: [".to_owned(), 400, "invalid_body"),
        ("not an object", "[1, 2]".to_owned(), 400, "invalid_body"),
        (
            "a malformed id",
            json!({"ids": ["not-an-id"]}).to_string(),
            400,
            "invalid_message_id",
        ),
        ("no ids", json!({"ids": []}).to_string(), 400, ""),
    ];
    for op in ["ack", "nack", "term", "progress"] {
        for (what, body, want_status, want_code) in &cases {
            let (status, v) = settle_raw(&node, "bad", op, body.clone()).await;
            assert_eq!(status, *want_status, "{op} {what}: {v}");
            if !want_code.is_empty() {
                assert_eq!(code(&v), *want_code, "{op} {what}: {v}");
            }
        }
    }
    assert_eq!(
        state(&info(&node, "bad").await),
        before,
        "refused settles changed the group"
    );

    // Refused joins: nothing is created or changed.
    let joins: Vec<(&str, &str, u16, &str)> = vec![
        (
            "unknown strategy",
            "group=new1&topic=a&strategy=fastest",
            400,
            "invalid_group_setting",
        ),
        (
            "max_inflight 0",
            "group=new1&topic=a&max_inflight=0",
            400,
            "invalid_group_setting",
        ),
        (
            "max_inflight 100000",
            "group=new1&topic=a&max_inflight=100000",
            400,
            "invalid_group_setting",
        ),
        (
            "ack mode",
            "group=new1&topic=a&ack=sometimes",
            400,
            "invalid_group_setting",
        ),
        (
            "ack timeout too short",
            "group=new1&topic=a&ack_timeout_ms=99",
            400,
            "invalid_group_setting",
        ),
        (
            "max_deliveries 0",
            "group=new1&topic=a&max_deliveries=0",
            400,
            "invalid_group_setting",
        ),
        (
            "weight 0",
            "group=new1&topic=a&weight=0",
            400,
            "invalid_group_setting",
        ),
        (
            "no such pick plugin",
            "group=new1&topic=a&strategy=plugin:nosuch",
            404,
            "plugin_not_found",
        ),
        (
            "last_event_id",
            "group=new1&topic=a&last_event_id=0000000000000001-1",
            400,
            "",
        ),
        ("filter", "group=new1&topic=a&filter=f", 400, ""),
        (
            "filter_config",
            "group=new1&topic=a&filter_config=%7B%7D",
            400,
            "",
        ),
        (
            "other topics",
            "group=bad&topic=other.t",
            409,
            "group_conflict",
        ),
        (
            "more topics",
            "group=bad&topic=bad.t&topic=more.t",
            409,
            "group_conflict",
        ),
        (
            "another strategy",
            "group=bad&topic=bad.t&strategy=round-robin",
            409,
            "group_conflict",
        ),
    ];
    for (what, query, want_status, want_code) in joins {
        let (status, got_code) = refused_join(&node, query).await;
        assert_eq!(status, want_status, "{what}: {got_code}");
        if !want_code.is_empty() {
            assert_eq!(got_code, want_code, "{what}");
        }
    }
    let (status, _, _) = node.raw(node.request("GET", "/v1/groups/new1"), "").await;
    assert_eq!(status, 404, "a refused join created the group");
    assert_eq!(
        state(&info(&node, "bad").await),
        before,
        "refused joins changed the group"
    );
    // The same settings, or none, are welcome.
    let same = GroupMember::join(&node, "bad", "topic=bad.t&strategy=least-inflight").await;
    drop(same);

    // A group with a connected member cannot be deleted.
    let (status, _, body) = node.raw(node.request("DELETE", "/v1/groups/bad"), "").await;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!((status, code(&v)), (409, "group_conflict"), "{v}");
    m.ack(&published).await;

    // A stale ack: the message went to another member after the timeout;
    // the first member's late ack is refused, counted, and loses nothing.
    let query = "topic=stale.t&ack_timeout_ms=2000&max_deliveries=20";
    let mut first = GroupMember::join(&node, "stale", query).await;
    let one = publish_texts(&node, "stale.t", &["late".to_owned()]).await;
    assert_eq!(ids_of(&first.recv(1, Duration::from_secs(10)).await), one);
    let mut second = GroupMember::join(&node, "stale", query).await;
    // Once expired the message may go back to the first member, whose copy
    // then times out again; it reaches the second member in the end.
    let got = second.recv(1, Duration::from_secs(20)).await;
    assert_eq!(ids_of(&got), one);
    let (status, v) = first.settle("ack", &one, json!({})).await;
    assert_eq!((status, code(&v)), (409, "stale_ack"), "{v}");
    let v = info(&node, "stale").await;
    assert_eq!(counter(&v, "stale_acks"), 1, "{v:#}");
    assert_eq!(counter(&v, "acked"), 0, "{v:#}");
    assert_eq!(counter(&v, "inflight"), 1, "the message is not lost: {v:#}");
    second.ack(&one).await;
    let v = info(&node, "stale").await;
    assert_eq!(counter(&v, "acked"), 1, "{v:#}");
    assert_eq!(counter(&v, "inflight"), 0, "{v:#}");
    assert!(counter(&v, "expired") >= 1, "{v:#}");
    drop((first, second));

    // ack=auto: delivered messages count as acknowledged without a POST.
    let mut auto = GroupMember::join(&node, "auto", "topic=auto.t&ack=auto").await;
    assert_eq!(auto.joined["ack"], "auto", "{}", auto.joined);
    let published = publish_texts(&node, "auto.t", &texts("a", 5)).await;
    let got = auto.recv(5, Duration::from_secs(10)).await;
    assert_eq!(ids_of(&got), published);
    let v = wait_info(&node, "auto", "5 acked", Duration::from_secs(10), |v| {
        v["acked"] == 5 && v["inflight"] == 0
    })
    .await;
    assert_eq!(v["members"][0]["ack"], "auto", "{v:#}");

    // Deleting a group without members.
    drop(m);
    wait_info(&node, "bad", "no members", Duration::from_secs(10), |v| {
        v["members"].as_array().is_some_and(|m| m.is_empty())
    })
    .await;
    let (status, _, body) = node.raw(node.request("DELETE", "/v1/groups/bad"), "").await;
    assert!(
        status == 200 || status == 204,
        "{status} {}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, _) = node.raw(node.request("GET", "/v1/groups/bad"), "").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_subscribe_with_group_and_groups_list() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    let mut child = Command::new(BIN)
        .args(["subscribe", "orders.>", "--group", "cli-g", "--count", "5"])
        .args(["--url", &node.url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the CLI");
    // The group is created by the CLI's join (from latest): publish only
    // once its member is connected.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _, body) = node.raw(node.request("GET", "/v1/groups/cli-g"), "").await;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status == 200 && v["members"].as_array().is_some_and(|m| m.len() == 1) {
            break;
        }
        if let Some(exit) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "the CLI exited ({exit}) before joining: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            Instant::now() < deadline,
            "the CLI did not join: {status} {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let payloads = texts("order", 5);
    for (i, p) in payloads.iter().enumerate() {
        node.publish(&format!("orders.r{i}"), p.clone()).await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the CLI did not exit after 5 messages; stdout {:?}, stderr {:?}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}: {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().collect::<Vec<_>>(), payloads, "{stdout:?}");
    let v = wait_info(&node, "cli-g", "5 acked", Duration::from_secs(10), |v| {
        v["acked"] == 5
    })
    .await;
    assert_eq!(counter(&v, "redelivered"), 0, "{v:#}");

    let out = Command::new(BIN)
        .args(["groups", "--url", &node.url])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(listing.contains("cli-g"), "{listing}");
}
