//! The clients: publishers (one per `acks` mode and more, every message
//! with its own idempotency key, retried until acknowledged), fan-out
//! SSE subscribers that resume with `Last-Event-ID` after every disconnect
//! and move between nodes, and consumer group members that acknowledge by
//! hand. Each records what it saw for the checker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use switchyard::client::{Client, ClientError};
use switchyard::sse::SseParser;
use tokio::sync::Mutex;

use crate::schedule::Rng;

/// The consumer group (on `chaos.>`, the topics the publishers use:
/// `chaos.p<publisher>`).
pub const GROUP: &str = "chaos";

/// One message a publisher tried to publish.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub payload: String,
    pub acks: &'static str,
    /// The id the node answered (once acknowledged in its mode).
    pub acked: Option<String>,
    /// Requests sent for it (retries included).
    pub tries: u32,
    /// When it was acknowledged, from the start of the run.
    pub acked_at: Option<Duration>,
    /// Whether a node said it stored it under a key it could not check
    /// with every member (`key_checked: false`, in a 2xx answer or a
    /// `503 not_replicated`): a second copy is then possible.
    pub unchecked: bool,
    /// What each try got, for the log of a violation: runs of the same
    /// outcome on the same node are one entry.
    pub tries_seen: Vec<Try>,
}

/// A run of tries of one message that got the same outcome from one node.
#[derive(Clone, Debug, PartialEq)]
pub struct Try {
    /// The node's index.
    pub node: usize,
    /// `201 <id>`, `<status> <code>`, with ` key_checked=false` when the
    /// answer said so, or `no answer`.
    pub outcome: String,
    /// How many tries in a row.
    pub count: u32,
    /// Seconds since the run started, of the first and the last.
    pub first: f64,
    pub last: f64,
}

impl Attempt {
    /// Records a try's outcome from node `node` at `at` seconds.
    pub fn saw(&mut self, node: usize, outcome: String, at: f64) {
        self.tries += 1;
        if let Some(t) = self.tries_seen.last_mut()
            && t.node == node
            && t.outcome == outcome
        {
            t.count += 1;
            t.last = at;
            return;
        }
        self.tries_seen.push(Try {
            node,
            outcome,
            count: 1,
            first: at,
            last: at,
        });
    }

    /// The tries, for a log line: `n0 no answer x3 (12.1-13.0 s); n1 201 ...`.
    pub fn tries_text(&self) -> String {
        let runs: Vec<String> = self
            .tries_seen
            .iter()
            .map(|t| {
                if t.count == 1 {
                    format!("n{} {} ({:.1} s)", t.node, t.outcome, t.first)
                } else {
                    format!(
                        "n{} {} x{} ({:.1}-{:.1} s)",
                        t.node, t.outcome, t.count, t.first, t.last
                    )
                }
            })
            .collect();
        runs.join("; ")
    }
}

/// A message as a reader saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub id: String,
    pub payload: String,
    pub origin: String,
    /// The origin sequence.
    pub seq: u64,
}

impl Seen {
    fn from_json(v: &Value) -> Option<Seen> {
        let id = v["id"].as_str()?;
        // `seq` in the JSON is the stream sequence; the origin sequence is
        // the id's.
        let seq = id.rsplit_once('-')?.1.parse().ok()?;
        Some(Seen {
            id: id.to_owned(),
            payload: v["payload"].as_str()?.to_owned(),
            origin: v["origin"].as_str()?.to_owned(),
            seq,
        })
    }
}

/// What every client saw.
#[derive(Default)]
pub struct Records {
    pub published: Vec<Vec<Attempt>>,
    /// Per subscriber, in order of arrival.
    pub streams: Vec<Vec<Seen>>,
    /// Per subscriber: how often it resumed.
    pub resumes: Vec<u32>,
    /// Group deliveries handled (their ack applied, or sent without an
    /// answer): message id, payload.
    pub group_acked: Vec<(String, String)>,
    /// Deliveries whose ack got no answer.
    pub group_unconfirmed: usize,
    /// Every group delivery a member received, acked or not, in order of
    /// arrival per member: a message received more than once was
    /// delivered again.
    pub group_received: Vec<Received>,
}

/// One group delivery as a member received it.
#[derive(Clone, Debug)]
pub struct Received {
    /// Message id.
    pub id: String,
    /// Seconds since the run started.
    pub at: f64,
    /// The member (index) and the node (index) it joined through.
    pub member: usize,
    pub node: usize,
}

impl Records {
    /// Group deliveries beyond the first of each message: what members
    /// received again, whether or not their acks were applied (an ack
    /// relayed to a coordinator that did not deliver the message is not).
    pub fn group_received_again(&self) -> usize {
        let mut seen = std::collections::HashSet::new();
        self.group_received
            .iter()
            .filter(|r| !seen.insert(r.id.as_str()))
            .count()
    }

    /// Where and when group deliveries were received again, for the log:
    /// the deliveries beyond the first counted per second of the run and
    /// per pair of (member @ node) that received the first and the repeat,
    /// each line `<second>s <count>: m<i>@n<j> -> m<k>@n<l> <count>, ...`.
    pub fn group_repeats_by_second(&self) -> Vec<String> {
        use std::collections::{BTreeMap, HashMap};
        let mut first: HashMap<&str, (usize, usize)> = HashMap::new();
        let mut by_second: BTreeMap<u64, BTreeMap<String, usize>> = BTreeMap::new();
        for r in &self.group_received {
            match first.get(r.id.as_str()) {
                None => {
                    first.insert(r.id.as_str(), (r.member, r.node));
                }
                Some(&(m, n)) => {
                    let pair = format!("m{m}@n{n} -> m{}@n{}", r.member, r.node);
                    *by_second
                        .entry(r.at as u64)
                        .or_default()
                        .entry(pair)
                        .or_default() += 1;
                }
            }
        }
        by_second
            .into_iter()
            .map(|(second, pairs)| {
                let total: usize = pairs.values().sum();
                let pairs: Vec<String> =
                    pairs.into_iter().map(|(p, c)| format!("{p} {c}")).collect();
                format!("{second}s {total}: {}", pairs.join(", "))
            })
            .collect()
    }
}

pub type Shared = Arc<Mutex<Records>>;

/// What the subscribers and group members share: where the nodes are,
/// where to record, and when to stop.
pub struct Readers {
    pub targets: Arc<Targets>,
    pub records: Shared,
    pub done: Arc<AtomicBool>,
    /// When the run started.
    pub started: tokio::time::Instant,
}

/// The node URLs.
pub struct Targets {
    pub urls: Vec<String>,
}

fn client(url: &str) -> Client {
    Client::new(url).expect("node URLs are valid")
}

/// Publishes `chaos.p<index>` messages with `acks` to node `home` (moving
/// to the next node when it stays unreachable for 15 s), each with an
/// idempotency key equal to its payload, until `stop`; a message is retried
/// with its key until it is acknowledged (the last one may stay
/// unacknowledged at the stop).
pub async fn publisher(
    index: usize,
    acks: &'static str,
    targets: Arc<Targets>,
    records: Shared,
    stop: Arc<AtomicBool>,
    started: tokio::time::Instant,
) {
    let mut node = index % targets.urls.len();
    let topic = format!("chaos.p{index}");
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let payload = format!("p{index}-{n}");
        n += 1;
        let slot = {
            let mut r = records.lock().await;
            r.published[index].push(Attempt {
                payload: payload.clone(),
                acks,
                acked: None,
                tries: 0,
                acked_at: None,
                unchecked: false,
                tries_seen: Vec::new(),
            });
            r.published[index].len() - 1
        };
        let mut failing_since: Option<tokio::time::Instant> = None;
        loop {
            let c = client(&targets.urls[node]);
            let req = c
                .request(
                    http::Method::POST,
                    &format!("/v1/topics/{topic}?acks={acks}"),
                )
                .header("idempotency-key", &payload)
                .body(Full::new(Bytes::from(payload.clone())))
                .expect("a valid request");
            let answer = tokio::time::timeout(Duration::from_secs(10), c.send(req)).await;
            let mut status = None;
            let body = match answer {
                Ok(Ok(resp)) => {
                    let ok = resp.status().is_success();
                    status = Some(resp.status().as_u16());
                    resp.into_body()
                        .collect()
                        .await
                        .ok()
                        .and_then(|b| serde_json::from_slice::<Value>(&b.to_bytes()).ok())
                        .map(|v| (ok, v))
                }
                _ => None,
            };
            let unchecked = body.as_ref().is_some_and(|(_, v)| {
                v["key_checked"] == false || v["copies"]["key_checked"] == false
            });
            let outcome = match (&body, status) {
                (Some((_, v)), Some(code)) => format!(
                    "{code} {}{}",
                    v["id"].as_str().or(v["code"].as_str()).unwrap_or("?"),
                    if unchecked { " key_checked=false" } else { "" }
                ),
                (None, Some(code)) => format!("{code} (no JSON)"),
                _ => "no answer".to_owned(),
            };
            {
                let mut r = records.lock().await;
                let a = &mut r.published[index][slot];
                a.saw(node, outcome, started.elapsed().as_secs_f64());
                a.unchecked |= unchecked;
            }
            let ok = body
                .filter(|(ok, _)| *ok)
                .and_then(|(_, v)| v["id"].as_str().map(str::to_owned));
            if let Some(id) = ok {
                let mut r = records.lock().await;
                r.published[index][slot].acked = Some(id);
                r.published[index][slot].acked_at = Some(started.elapsed());
                break;
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
            // A refusal (503 not_replicated, a full disk) or an unreachable
            // node: try again, on the same node while it may come back.
            let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() > Duration::from_secs(15) {
                node = (node + 1) % targets.urls.len();
                failing_since = None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads one SSE stream until it ends, `idle` passes without a byte, or
/// `until` passes; hands each event to `on_event`.
async fn read_stream(
    resp: hyper::Response<hyper::body::Incoming>,
    parser: &mut SseParser,
    idle: Duration,
    until: tokio::time::Instant,
    mut on_event: impl FnMut(switchyard::sse::Event),
) {
    let mut body = resp.into_body();
    loop {
        let next = tokio::select! {
            f = tokio::time::timeout(idle, body.frame()) => f,
            () = tokio::time::sleep_until(until) => return,
        };
        match next {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    for e in parser.push(&data) {
                        on_event(e);
                    }
                }
            }
            _ => return,
        }
    }
}

fn get(c: &Client, path: &str, last_id: Option<&str>) -> http::Request<Full<Bytes>> {
    let mut req = c
        .request(http::Method::GET, path)
        .header("accept", "text/event-stream");
    if let Some(id) = last_id {
        req = req.header("last-event-id", id);
    }
    req.body(Full::new(Bytes::new())).expect("a valid request")
}

/// A fan-out subscriber of `chaos.>` from the start of the log: it
/// reconnects to a random node after every 3-15 s of reading and after
/// every failure, resuming from the last event id, until `stop` and then
/// `done`.
pub async fn subscriber(index: usize, seed: u64, ctx: Arc<Readers>) {
    let Readers {
        targets,
        records,
        done,
        ..
    } = &*ctx;
    let mut rng = Rng::new(seed);
    let path = format!("/v1/events?topic={}&from=earliest&format=json", "chaos.%3E");
    let mut last_id: Option<String> = None;
    let mut node = index % targets.urls.len();
    let mut first = true;
    while !done.load(Ordering::Relaxed) {
        if !first {
            records.lock().await.resumes[index] += 1;
        }
        first = false;
        let c = client(&targets.urls[node]);
        let connected = tokio::time::timeout(
            Duration::from_secs(5),
            c.send(get(&c, &path, last_id.as_deref())),
        )
        .await;
        if let Ok(Ok(resp)) = connected {
            let mut parser = SseParser::new();
            let until = tokio::time::Instant::now() + Duration::from_millis(rng.range(3000, 15000));
            let mut got = Vec::new();
            read_stream(resp, &mut parser, Duration::from_secs(10), until, |e| {
                if e.event == "message"
                    && let Some(s) = serde_json::from_str::<Value>(&e.data)
                        .ok()
                        .as_ref()
                        .and_then(Seen::from_json)
                {
                    got.push(s);
                }
            })
            .await;
            if let Some(id) = parser.last_id() {
                last_id = Some(id.to_owned());
            }
            records.lock().await.streams[index].extend(got);
        } else {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        node = rng.below(targets.urls.len());
    }
}

/// A member of the group [`GROUP`] on `chaos.>` (manual acks, a 5 s ack
/// timeout, at most 1000 deliveries): acknowledges everything it gets,
/// and joins again through a random node whenever its stream ends or its
/// acknowledgements fail, until `done`.
pub async fn member(index: usize, seed: u64, ctx: Arc<Readers>) {
    let Readers {
        targets,
        records,
        done,
        started,
    } = &*ctx;
    let mut rng = Rng::new(seed);
    let path = format!(
        "/v1/events?group={GROUP}&topic=chaos.%3E&from=earliest&ack_timeout_ms=5000&max_deliveries=1000&max_inflight=64&format=json"
    );
    let mut node = index % targets.urls.len();
    let mut received: Vec<Received> = Vec::new();
    while !done.load(Ordering::Relaxed) {
        if !received.is_empty() {
            records.lock().await.group_received.append(&mut received);
        }
        let c = client(&targets.urls[node]);
        let connected =
            tokio::time::timeout(Duration::from_secs(5), c.send(get(&c, &path, None))).await;
        if let Ok(Ok(resp)) = connected {
            let mut parser = SseParser::new();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Seen>();
            let until = tokio::time::Instant::now() + Duration::from_secs(3600);
            let reader = read_stream(resp, &mut parser, Duration::from_secs(10), until, |e| {
                if e.event == "message"
                    && let Some(s) = serde_json::from_str::<Value>(&e.data)
                        .ok()
                        .as_ref()
                        .and_then(Seen::from_json)
                {
                    let _ = tx.send(s);
                }
            });
            tokio::pin!(reader);
            // Acknowledge as messages arrive, while the stream is read.
            let mut pending: Vec<Seen> = Vec::new();
            loop {
                tokio::select! {
                    () = &mut reader => break,
                    Some(s) = rx.recv() => {
                        pending.push(s);
                        while let Ok(s) = rx.try_recv() {
                            pending.push(s);
                        }
                        let at = started.elapsed().as_secs_f64();
                        received.extend(pending.iter().map(|s| Received {
                            id: s.id.clone(),
                            at,
                            member: index,
                            node,
                        }));
                    }
                }
                if done.load(Ordering::Relaxed) {
                    break;
                }
                let ids: Vec<&str> = pending.iter().map(|s| s.id.as_str()).collect();
                let body = serde_json::json!({ "ids": ids });
                let acked = tokio::time::timeout(
                    Duration::from_secs(5),
                    c.send_json(
                        http::Method::POST,
                        &format!("/v1/groups/{GROUP}/ack"),
                        Bytes::from(body.to_string()),
                        "application/json",
                    ),
                )
                .await;
                // A message counts as handled once its ack was applied,
                // or once its ack got no answer or a 5xx (the coordinator
                // died or its store failed, after applying it or before:
                // a write whose fsync failed may still be on disk after a
                // restart; if not, the message is delivered again after
                // the ack timeout, and counted again). An ack the node
                // refused (a 4xx, or the id missing from `applied`) does
                // not count: the message must come again.
                let (applied, ambiguous): (Vec<String>, bool) = match &acked {
                    Ok(Ok(v)) => (
                        v["applied"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(Value::as_str)
                                    .map(str::to_owned)
                                    .collect()
                            })
                            .unwrap_or_default(),
                        false,
                    ),
                    Ok(Err(ClientError::Api { status, .. })) if !status.is_server_error() => {
                        (Vec::new(), false)
                    }
                    Ok(Err(_)) | Err(_) => (Vec::new(), true),
                };
                let mut r = records.lock().await;
                r.group_received.append(&mut received);
                for s in pending.drain(..) {
                    if applied.contains(&s.id) {
                        r.group_acked.push((s.id, s.payload));
                    } else if ambiguous {
                        r.group_unconfirmed += 1;
                        r.group_acked.push((s.id, s.payload));
                    }
                }
                drop(r);
                if !matches!(acked, Ok(Ok(_))) {
                    break;
                }
            }
        } else {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        node = rng.below(targets.urls.len());
    }
    records.lock().await.group_received.append(&mut received);
}

/// Every message of `chaos.>` that the node at `url` holds, read with
/// pulls from the start; `None` when the node does not answer.
pub async fn pull_all(url: &str) -> Option<Vec<Seen>> {
    let c = client(url);
    let mut from = "earliest".to_owned();
    let mut out = Vec::new();
    loop {
        let path = format!("/v1/messages?topic=chaos.%3E&from={from}&limit=1000");
        let v = tokio::time::timeout(Duration::from_secs(15), c.get_json(&path))
            .await
            .ok()?
            .ok()?;
        let msgs = v["messages"].as_array()?;
        if msgs.is_empty() {
            return Some(out);
        }
        out.extend(msgs.iter().filter_map(Seen::from_json));
        from = v["cursor"].as_str()?.to_owned();
    }
}

/// The node's `GET /v1/cluster`, its topics, and the first page of a pull
/// of `chaos.>` from the start (with its gaps), as pretty JSON.
pub async fn describe(url: &str) -> String {
    let c = client(url);
    let mut out = serde_json::Map::new();
    for (name, path) in [
        ("cluster", "/v1/cluster"),
        ("topics", "/v1/topics"),
        ("pull", "/v1/messages?topic=chaos.%3E&from=earliest&limit=1"),
        ("group", &format!("/v1/groups/{GROUP}")),
    ] {
        let v = match tokio::time::timeout(Duration::from_secs(10), c.get_json(path)).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => Value::String(e.to_string()),
            Err(_) => Value::String("no answer in 10 s".into()),
        };
        out.insert(name.into(), v);
    }
    serde_json::to_string_pretty(&Value::Object(out)).unwrap_or_default()
}

/// How many `down` events the node at `url` recorded on `$sys.cluster`.
pub async fn down_events(url: &str) -> usize {
    let c = client(url);
    let mut from = "earliest".to_owned();
    let mut downs = 0;
    loop {
        let path = format!("/v1/messages?topic=%24sys.cluster&from={from}&limit=1000");
        let Ok(Ok(v)) = tokio::time::timeout(Duration::from_secs(15), c.get_json(&path)).await
        else {
            return downs;
        };
        let Some(msgs) = v["messages"].as_array() else {
            return downs;
        };
        if msgs.is_empty() {
            return downs;
        }
        downs += msgs
            .iter()
            .filter(|m| {
                m["payload"]
                    .as_str()
                    .and_then(|p| serde_json::from_str::<Value>(p).ok())
                    .is_some_and(|e| e["event"] == "down")
            })
            .count();
        let Some(next) = v["cursor"].as_str() else {
            return downs;
        };
        from = next.to_owned();
    }
}

/// Node ids by URL (`GET /v1/cluster`'s `self` member).
pub async fn node_id(url: &str) -> Option<String> {
    let v = tokio::time::timeout(Duration::from_secs(3), client(url).get_json("/v1/cluster"))
        .await
        .ok()?
        .ok()?;
    v["members"]
        .as_array()?
        .iter()
        .find(|m| m["self"] == true)
        .and_then(|m| m["id"].as_str().map(str::to_owned))
}

/// Names of the cluster-wide plugin bindings the binder changes.
pub const BINDINGS: [&str; 3] = ["chaos-bind-0", "chaos-bind-1", "chaos-bind-2"];

/// Changes cluster-wide plugin bindings on random nodes through the run
/// (until `stop`): every 1-3 s a `PUT` with a new configuration (three
/// times in four) or a `DELETE` of one of [`BINDINGS`], on a route hook
/// for topics no client uses, so the messages are not touched. Returns how
/// many changes a node accepted. At the end every node must hold the same
/// version of each (see [`bindings`]).
pub async fn binder(
    seed: u64,
    targets: Arc<Targets>,
    component: Bytes,
    stop: Arc<AtomicBool>,
) -> usize {
    let mut rng = Rng::new(seed);
    let mut accepted = 0;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.range(1000, 3000))).await;
        let node = rng.below(targets.urls.len());
        let name = BINDINGS[rng.below(BINDINGS.len())];
        let c = client(&targets.urls[node]);
        n += 1;
        let (method, path, body) = if rng.below(4) == 0 {
            (
                http::Method::DELETE,
                format!("/v1/plugins/{name}"),
                Bytes::new(),
            )
        } else {
            (
                http::Method::PUT,
                format!("/v1/plugins/{name}?hook=route&topic=chaos-plugins.%3E&config=v{n}"),
                component.clone(),
            )
        };
        let Ok(req) = c
            .request(method, &path)
            .header("content-type", "application/wasm")
            .body(Full::new(body))
        else {
            continue;
        };
        if let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(10), c.send(req)).await
            && resp.status().is_success()
        {
            accepted += 1;
        }
    }
    accepted
}

/// What the node at `url` runs of each of [`BINDINGS`]: its sha256,
/// configuration and stamp, or `null` when it has none; `None` when the
/// node does not answer.
pub async fn bindings(url: &str) -> Option<Vec<Value>> {
    let c = client(url);
    let mut out = Vec::new();
    for name in BINDINGS {
        let path = format!("/v1/plugins/{name}");
        let req = c
            .request(http::Method::GET, &path)
            .body(Full::new(Bytes::new()))
            .ok()?;
        match tokio::time::timeout(Duration::from_secs(15), c.send(req)).await {
            Ok(Ok(resp)) => {
                let body = resp.into_body().collect().await.ok()?.to_bytes();
                let v: Value = serde_json::from_slice(&body).ok()?;
                out.push(serde_json::json!({
                    "running_here": v["running_here"],
                    "sha256": v["sha256"],
                    "config": v["config"],
                    "stamp": v["stamp"],
                }));
            }
            Ok(Err(ClientError::Api { status, .. })) if status == http::StatusCode::NOT_FOUND => {
                out.push(Value::Null);
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn got(id: &str, at: f64, member: usize, node: usize) -> Received {
        Received {
            id: id.to_owned(),
            at,
            member,
            node,
        }
    }

    #[test]
    fn tries_with_the_same_outcome_on_one_node_are_one_run() {
        let mut a = Attempt {
            payload: "p0-1".into(),
            acks: "quorum",
            acked: None,
            tries: 0,
            acked_at: None,
            unchecked: false,
            tries_seen: Vec::new(),
        };
        a.saw(0, "no answer".into(), 1.0);
        a.saw(0, "no answer".into(), 1.3);
        a.saw(1, "no answer".into(), 16.5);
        a.saw(1, "201 ab-7".into(), 16.7);
        assert_eq!(a.tries, 4);
        assert_eq!(
            a.tries_text(),
            "n0 no answer x2 (1.0-1.3 s); n1 no answer (16.5 s); n1 201 ab-7 (16.7 s)"
        );
    }

    #[test]
    fn repeats_are_counted_by_second_and_by_who_received_them() {
        let r = Records {
            group_received: vec![
                got("a-1", 1.2, 0, 1),
                got("a-2", 1.3, 0, 1),
                got("a-1", 4.9, 2, 3),
                got("a-2", 4.95, 2, 3),
                got("a-1", 7.0, 0, 0),
                got("a-3", 7.1, 1, 0),
            ],
            ..Records::default()
        };
        assert_eq!(r.group_received_again(), 3);
        assert_eq!(
            r.group_repeats_by_second(),
            vec![
                "4s 2: m0@n1 -> m2@n3 2".to_owned(),
                "7s 1: m0@n1 -> m0@n0 1".to_owned(),
            ]
        );
    }
}
