//! Cluster membership between real node processes on 127.0.0.1: joining,
//! authenticated gossip, failure detection, pauses and graceful leave.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_model::Timestamp;

use crate::support::*;

pub(crate) const KEY: &str = "an end-to-end cluster key";
/// The documented failure detection time with the default timing.
const DETECTION: Duration = Duration::from_millis(4500);

/// Starts a node that gossips on `gossip` and joins through `seeds`.
/// Restarts node 0 of an unreplicated cluster in `dir` on its data and its
/// gossip address, joining through `seed`.
fn back_unreplicated(dir: &Path, gossip: &str, seed: &str) -> Node {
    member_with(
        &dir.join("n0"),
        KEY,
        gossip,
        &[seed.to_owned()],
        UNREPLICATED,
    )
}

/// Arguments of a node that copies no origin's whole log: what it holds of
/// another origin is what its readers pulled.
const UNREPLICATED: &[&str] = &["--replication-factor", "1"];

fn member(dir: &Path, key: &str, gossip: &str, seeds: &[String]) -> Node {
    member_with(dir, key, gossip, seeds, &[])
}

/// [`member`] with extra command-line arguments.
fn member_with(dir: &Path, key: &str, gossip: &str, seeds: &[String], extra: &[&str]) -> Node {
    member_env(dir, key, gossip, seeds, "never", extra, &[])
}

/// A member with cluster key `key`, its data and log under `dir`, gossip
/// on `gossip`, joining through `seeds`, with fsync mode `fsync`, extra
/// arguments and environment variables.
pub(crate) fn member_env(
    dir: &Path,
    key: &str,
    gossip: &str,
    seeds: &[String],
    fsync: &str,
    extra: &[&str],
    env: &[(&str, &Path)],
) -> Node {
    std::fs::create_dir_all(dir).unwrap();
    let toml = format!("[cluster]\nkey = \"{key}\"\n");
    let mut args = vec!["--fsync", fsync, "--gossip-listen", gossip];
    args.extend_from_slice(extra);
    for s in seeds {
        args.push("--join");
        args.push(s);
    }
    Node::start_with_config_env(dir, &toml, &args, env)
}

async fn cluster_view(node: &Node) -> Value {
    node.get_json("/v1/cluster").await
}

/// This node's id and gossip address.
pub(crate) async fn whoami(node: &Node) -> (String, String) {
    let v = cluster_view(node).await;
    let me = &v["members"][0];
    assert_eq!(me["self"], true, "{v:#}");
    (
        me["id"].as_str().unwrap().to_owned(),
        me["gossip_addr"].as_str().unwrap().to_owned(),
    )
}

/// Member id -> (state, generation) as `node` sees them.
async fn states(node: &Node) -> HashMap<String, (String, u64)> {
    cluster_view(node).await["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                (
                    m["state"].as_str().unwrap().to_owned(),
                    m["generation"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

async fn state_of(node: &Node, id: &str) -> Option<String> {
    states(node).await.remove(id).map(|(s, _)| s)
}

/// Waits (at most 20 s) until `node` sees member `id` in `state`.
pub(crate) async fn wait_state(node: &Node, id: &str, state: &str) {
    wait_until(
        Duration::from_secs(20),
        &format!("member {id} {state}"),
        || async { state_of(node, id).await.as_deref() == Some(state) },
    )
    .await;
}

/// Starts `n` nodes under `dir`, the first one the seed of the others,
/// and waits until every node sees every other alive.
pub(crate) async fn start_cluster(dir: &Path, n: usize) -> (Vec<Node>, Vec<(String, String)>) {
    start_cluster_with(dir, n, &[]).await
}

/// [`start_cluster`] with extra command-line arguments for every node.
async fn start_cluster_with(
    dir: &Path,
    n: usize,
    extra: &[&str],
) -> (Vec<Node>, Vec<(String, String)>) {
    let seed_node = member_with(&dir.join("n0"), KEY, "127.0.0.1:0", &[], extra);
    let seed = whoami(&seed_node).await.1;
    let mut nodes = vec![seed_node];
    for i in 1..n {
        nodes.push(member_with(
            &dir.join(format!("n{i}")),
            KEY,
            "127.0.0.1:0",
            std::slice::from_ref(&seed),
            extra,
        ));
    }
    let mut ids = Vec::new();
    for node in &nodes {
        ids.push(whoami(node).await);
    }
    for node in &nodes {
        let want: Vec<String> = ids.iter().map(|(id, _)| id.clone()).collect();
        wait_until(Duration::from_secs(20), "every member alive", || async {
            let s = states(node).await;
            want.iter()
                .all(|id| s.get(id).is_some_and(|(st, _)| st == "alive"))
        })
        .await;
    }
    (nodes, ids)
}

#[allow(unsafe_code)]
fn signal(node: &Node, sig: i32) {
    // SAFETY: kill(2) on the pid of a child process this test started.
    let r = unsafe { libc::kill(node.pid() as i32, sig) };
    assert_eq!(r, 0, "kill({}, {sig})", node.pid());
}

/// Every `$sys.cluster` event a node recorded, as (event, member id).
async fn cluster_events(node: &Node) -> Vec<(String, String)> {
    timed_cluster_events(node)
        .await
        .into_iter()
        .map(|(e, id, _)| (e, id))
        .collect()
}

/// Every `$sys.cluster` event with the time the node recorded it (ms since
/// the Unix epoch).
async fn timed_cluster_events(node: &Node) -> Vec<(String, String, u64)> {
    node.pull_all("$sys.cluster")
        .await
        .iter()
        .map(|m| {
            let e: Value = serde_json::from_str(m["payload"].as_str().unwrap()).unwrap();
            let at = Timestamp::parse_rfc3339(m["timestamp"].as_str().unwrap()).unwrap();
            (
                e["event"].as_str().unwrap().to_owned(),
                e["member"]["id"].as_str().unwrap().to_owned(),
                at.millis(),
            )
        })
        .collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The timing tests run one at a time: one of them saturates the cores on
/// purpose, which would distort the other's measurements.
static TIMING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_see_each_other_and_a_graceful_leave() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, ids) = start_cluster(dir.path(), 3).await;
    // Addresses as the members announce them, and when each was last heard
    // from directly (a member learnt of through gossip is heard from once
    // probes reach it).
    wait_until(
        Duration::from_secs(10),
        "every member heard from",
        || async {
            let v = cluster_view(&nodes[1]).await;
            v["members"].as_array().unwrap()[1..]
                .iter()
                .all(|m| m["last_heard_ms"].as_u64().is_some())
        },
    )
    .await;
    let v = cluster_view(&nodes[1]).await;
    assert_eq!(v["cluster"], "switchyard");
    for (i, (id, gossip)) in ids.iter().enumerate() {
        let m = v["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} missing in {v:#}"));
        assert_eq!(m["gossip_addr"], gossip.as_str());
        assert_eq!(
            format!("http://{}", m["http_addr"].as_str().unwrap()),
            nodes[i].url
        );
        if i != 1 {
            assert!(m["last_heard_ms"].as_u64().unwrap() < 5000, "{m}");
        }
    }
    // The CLI shows the same members.
    let out = Command::new(BIN)
        .args(["cluster", "members", "--url", &nodes[2].url])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for (id, _) in &ids {
        assert!(text.contains(id.as_str()), "{text}");
    }
    // SIGTERM: a graceful shutdown leaves the cluster.
    let left = ids[2].0.clone();
    signal(&nodes[2], libc::SIGTERM);
    for node in &nodes[..2] {
        wait_state(node, &left, "left").await;
    }
    nodes[2].kill9();
    // Membership changes are events a subscriber can read.
    wait_until(Duration::from_secs(10), "join and leave events", || async {
        let events = cluster_events(&nodes[0]).await;
        events.contains(&("joined".into(), ids[1].0.clone()))
            && events.contains(&("left".into(), left.clone()))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_and_garbage_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = member(&dir.path().join("a"), KEY, "127.0.0.1:0", &[]);
    let (a_id, seed) = whoami(&a).await;
    let intruder = member(
        &dir.path().join("x"),
        "another key, not the cluster's",
        "127.0.0.1:0",
        std::slice::from_ref(&seed),
    );
    let (x_id, _) = whoami(&intruder).await;
    wait_until(Duration::from_secs(10), "bad_auth counted", || async {
        cluster_view(&a).await["gossip"]["refused_bad_auth"]
            .as_u64()
            .unwrap()
            > 2
    })
    .await;
    assert_eq!(state_of(&a, &x_id).await, None);
    assert_eq!(state_of(&intruder, &a_id).await, None);
    // Random, truncated and oversized datagrams change nothing.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = Rng::new(7);
    for i in 0..300 {
        let len = match i % 3 {
            0 => rng.below(64) as usize,
            1 => rng.below(1400) as usize,
            _ => 1500 + rng.below(8000) as usize,
        };
        let mut junk: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
        if i % 5 == 0 && junk.len() > 4 {
            junk[..4].copy_from_slice(b"SYG1");
        }
        sock.send_to(&junk, &seed).unwrap();
    }
    wait_until(Duration::from_secs(10), "junk counted", || async {
        let g = &cluster_view(&a).await["gossip"];
        let refused: u64 = [
            "refused_malformed",
            "refused_bad_auth",
            "refused_wrong_cluster",
        ]
        .iter()
        .map(|k| g[k].as_u64().unwrap())
        .sum();
        refused >= 300
    })
    .await;
    let v = cluster_view(&a).await;
    assert_eq!(v["members"].as_array().unwrap().len(), 1, "{v:#}");
    let (status, _, _) = a.raw(a.request("GET", "/healthz"), "").await;
    assert_eq!(status, 200);
}

/// Kill -9 one of five nodes, ten times: every other node marks it down
/// within the documented detection time. The killed node restarts with its
/// data directory on the same gossip address and rejoins before the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_is_detected_by_every_member_in_time() {
    let _serial = TIMING.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, ids) = start_cluster(dir.path(), 5).await;
    let mut worst = Vec::new();
    for run in 0..10 {
        let victim = 1 + run % 4;
        let (victim_id, victim_gossip) = ids[victim].clone();
        let killed_ms = now_ms();
        nodes[victim].kill9();
        let killed = Instant::now();
        let mut seen = std::collections::HashSet::new();
        while seen.len() < 4 {
            assert!(
                killed.elapsed() < Duration::from_secs(15),
                "run {run}: not every member marked the node down: {seen:?}"
            );
            for (i, node) in nodes.iter().enumerate() {
                if i != victim
                    && !seen.contains(&i)
                    && state_of(node, &victim_id).await.as_deref() == Some("down")
                {
                    seen.insert(i);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // When each member recorded the down event (not when the polling
        // above noticed it).
        let mut detected = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            if i == victim {
                continue;
            }
            let at = timed_cluster_events(node)
                .await
                .into_iter()
                .filter(|(e, id, at)| e == "down" && *id == victim_id && *at >= killed_ms)
                .map(|(_, _, at)| at)
                .min()
                .unwrap_or_else(|| panic!("run {run}: no down event on member {i}"));
            detected.push(Duration::from_millis(at - killed_ms));
        }
        let slowest = *detected.iter().max().unwrap();
        worst.push(slowest);
        // Back with its data directory and gossip address: the same node id.
        nodes[victim] = member(
            &dir.path().join(format!("n{victim}")),
            KEY,
            &victim_gossip,
            std::slice::from_ref(&ids[0].1),
        );
        assert_eq!(whoami(&nodes[victim]).await.0, victim_id);
        for node in &nodes {
            wait_state(node, &victim_id, "alive").await;
        }
    }
    let mut sorted = worst.clone();
    sorted.sort();
    println!(
        "kill -9 detection on every peer over 10 runs: median {:?}, max {:?}, all {worst:?}",
        sorted[4], sorted[9]
    );
    assert!(
        sorted[9] <= DETECTION,
        "a member was marked down only after {:?}: {worst:?}",
        sorted[9]
    );
}

/// Busy loops on every core for `d`.
fn load_cores(n: usize) -> Vec<Child> {
    (0..n)
        .map(|_| {
            Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .unwrap()
        })
        .collect()
}

/// Polls every node for `d` and fails if any marks a member down.
async fn nobody_down_for(nodes: &[Node], d: Duration, what: &str) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        for node in nodes {
            let s = states(node).await;
            assert!(
                s.values().all(|(st, _)| st != "down"),
                "{what}: a member was declared down: {s:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pauses_and_load_do_not_declare_members_down_but_a_long_pause_does() {
    let _serial = TIMING.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (nodes, ids) = start_cluster(dir.path(), 3).await;
    // A 2 s pause, three times.
    for _ in 0..3 {
        signal(&nodes[2], libc::SIGSTOP);
        tokio::time::sleep(Duration::from_secs(2)).await;
        signal(&nodes[2], libc::SIGCONT);
        nobody_down_for(&nodes, Duration::from_secs(2), "after a 2 s pause").await;
    }
    // Both cores saturated (twice as many busy loops as cores) for 6 s.
    let mut hogs = load_cores(4);
    nobody_down_for(&nodes, Duration::from_secs(6), "under CPU load").await;
    for h in &mut hogs {
        let _ = h.kill();
        let _ = h.wait();
    }
    nobody_down_for(&nodes, Duration::from_secs(1), "after CPU load").await;
    for node in &nodes {
        let events = cluster_events(node).await;
        assert!(
            !events.iter().any(|(e, _)| e == "down"),
            "a down event was recorded: {events:?}"
        );
    }
    // A 10 s pause: declared down, then back within 2 s of SIGCONT as the
    // same node with a new generation.
    let (paused, _) = ids[2].clone();
    let before = states(&nodes[0]).await[&paused].1;
    signal(&nodes[2], libc::SIGSTOP);
    for node in &nodes[..2] {
        wait_state(node, &paused, "down").await;
    }
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(Duration::from_secs(3))).await;
    signal(&nodes[2], libc::SIGCONT);
    let resumed = Instant::now();
    for node in &nodes[..2] {
        wait_until(Duration::from_secs(10), "the node rejoined", || async {
            states(node)
                .await
                .get(&paused)
                .is_some_and(|(s, g)| s == "alive" && *g > before)
        })
        .await;
    }
    let took = resumed.elapsed();
    println!("rejoined {took:?} after SIGCONT");
    assert!(took < Duration::from_secs(2), "rejoin took {took:?}");
}

/// One message event of a stream in JSON format.
struct Read {
    payload: String,
    origin: String,
    /// The message id.
    id: Option<String>,
    /// The event id (a cursor to resume from).
    event_id: Option<String>,
}

/// Reads `n` message events from `sse` (JSON format).
async fn read_events(sse: &mut Sse, n: usize, within: Duration) -> Vec<Read> {
    let deadline = Instant::now() + within;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {} of {n} messages arrived",
            out.len()
        );
        let Some(e) = sse.next(left).await else {
            panic!("the stream ended after {} of {n} messages", out.len());
        };
        if e.event != "message" {
            continue;
        }
        let v: Value = serde_json::from_str(&e.data).unwrap();
        out.push(Read {
            payload: v["payload"].as_str().unwrap().to_owned(),
            origin: v["origin"].as_str().unwrap().to_owned(),
            id: v["id"].as_str().map(str::to_owned),
            event_id: e.id,
        });
    }
    out
}

/// Reads `n` message events from `sse` (JSON format): (payload, origin,
/// event id).
async fn read_messages(
    sse: &mut Sse,
    n: usize,
    within: Duration,
) -> Vec<(String, String, Option<String>)> {
    read_events(sse, n, within)
        .await
        .into_iter()
        .map(|r| (r.payload, r.origin, r.event_id))
        .collect()
}

/// Checks that each origin's messages arrived in publish order: payloads
/// are `<node>-<index>` with the index counting up per publishing node.
fn assert_origin_order(got: &[(String, String, Option<String>)]) {
    let mut last: HashMap<&str, i64> = HashMap::new();
    for (payload, origin, _) in got {
        let (_, i) = payload.rsplit_once('-').unwrap();
        let i: i64 = i.parse().unwrap();
        let prev = last.insert(origin.as_str(), i).unwrap_or(-1);
        assert!(i > prev, "origin {origin}: {payload} after index {prev}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_on_any_node_reach_subscribers_on_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, _) = start_cluster(dir.path(), 3).await;
    let mut subs = Vec::new();
    for node in &nodes {
        subs.push(
            Sse::connect(node, "/v1/events?topic=spread.%3E&format=json", None)
                .await
                .unwrap(),
        );
    }
    // 5,000 messages, spread over the three nodes in batches.
    let per_node = [1667usize, 1667, 1666];
    let mut want = std::collections::BTreeSet::new();
    for round in 0..10 {
        for (n, node) in nodes.iter().enumerate() {
            let chunk = per_node[n] / 10 + usize::from(round < per_node[n] % 10);
            let start = (0..round)
                .map(|r| per_node[n] / 10 + usize::from(r < per_node[n] % 10))
                .sum::<usize>();
            let payloads: Vec<String> = (start..start + chunk)
                .map(|i| format!("n{n}-{i}"))
                .collect();
            want.extend(payloads.iter().cloned());
            publish_texts(node, "spread.t", &payloads).await;
        }
    }
    assert_eq!(want.len(), 5000);
    for (i, sse) in subs.iter_mut().enumerate() {
        let got = read_messages(sse, 5000, Duration::from_secs(60)).await;
        let payloads: std::collections::BTreeSet<String> =
            got.iter().map(|g| g.0.clone()).collect();
        assert_eq!(payloads.len(), 5000, "node {i}: duplicates");
        assert_eq!(payloads, want, "node {i}");
        assert_origin_order(&got);
    }
}

/// A subscriber hops from node to node with its Last-Event-ID while all
/// three nodes publish: together its connections see every message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_moving_between_nodes_misses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, _) = start_cluster(dir.path(), 3).await;
    // Subscribers that stay put keep the topic in every node's interest.
    let mut holders = Vec::new();
    for node in &nodes {
        holders.push(
            Sse::connect(node, "/v1/events?topic=move.t", None)
                .await
                .unwrap(),
        );
    }
    let first = Sse::connect(&nodes[0], "/v1/events?topic=move.t&format=json", None)
        .await
        .unwrap();
    let total = 1500usize;
    let publishers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(n, node)| {
            let client = node.client.clone();
            tokio::spawn(async move {
                for i in 0..total / 3 {
                    client
                        .publish("move.t", format!("n{n}-{i}").into(), None, &[], None)
                        .await
                        .expect("publish");
                    if i % 50 == 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();
    let mut got = Vec::new();
    let mut sse = first;
    let mut hop = 0;
    while got.len() < total {
        let batch = read_messages(
            &mut sse,
            150.min(total - got.len()),
            Duration::from_secs(60),
        )
        .await;
        let last = batch.last().and_then(|b| b.2.clone()).expect("event id");
        got.extend(batch);
        hop += 1;
        let next = &nodes[hop % 3];
        sse = Sse::connect(next, "/v1/events?topic=move.t&format=json", Some(&last))
            .await
            .unwrap();
    }
    for p in publishers {
        p.await.unwrap();
    }
    let payloads: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    let unique: std::collections::BTreeSet<&str> = payloads.iter().copied().collect();
    assert_eq!(
        unique.len(),
        payloads.len(),
        "a message was delivered twice"
    );
    assert_eq!(unique.len(), total, "messages were missed");
    assert_origin_order(&got);
    assert!(hop >= 5, "only {hop} hops");
    drop(holders);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_with_members_on_three_nodes_acks_each_message_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use serde_json::json;

    use crate::groups::{GroupMember, counter, info, spawn_acker, wait_info};

    const PER_NODE: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    let (nodes, ids) = start_cluster(dir.path(), 3).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for _ in 0..2 {
            let m = GroupMember::join(node, "spread", &format!("topic={}", enc("jobs.>"))).await;
            tasks.push((i, spawn_acker(m, stop.clone())));
        }
    }
    // Every node names the same coordinator, and it is one of the members.
    let coordinator = info(&nodes[0], "spread").await["coordinator"]
        .as_str()
        .expect("info names the coordinator")
        .to_owned();
    assert!(
        ids.iter().any(|(id, _)| *id == coordinator),
        "{coordinator}"
    );
    for node in &nodes {
        let v = info(node, "spread").await;
        assert_eq!(v["coordinator"], coordinator.as_str(), "{v:#}");
        assert_eq!(v["members"].as_array().unwrap().len(), 6, "{v:#}");
    }
    // Publishes spread over the three nodes, in interleaved batches.
    let mut published = Vec::new();
    for round in 0..PER_NODE / 100 {
        for (i, node) in nodes.iter().enumerate() {
            let entries: Vec<Value> = (0..100)
                .map(|j| json!({"topic": format!("jobs.n{i}"), "payload": format!("{i}-{round}-{j}")}))
                .collect();
            published.extend(publish_batch(node, "jobs.x", &entries).await);
        }
    }
    let total = published.len() as u64;
    let v = wait_info(
        &nodes[1],
        "spread",
        "every message acked",
        Duration::from_secs(60),
        |v| v["acked"] == total,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut times: HashMap<String, usize> = HashMap::new();
    let mut per_node = [0usize; 3];
    for (i, t) in tasks {
        let (_, got) = t.await.unwrap();
        per_node[i] += got.len();
        for d in got {
            *times.entry(d.id).or_default() += 1;
        }
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "acked more than once: {twice:?}");
    let mut want = published.clone();
    want.sort();
    let mut got: Vec<String> = times.into_keys().collect();
    got.sort();
    assert_eq!(got.len(), want.len(), "per node {per_node:?}");
    assert!(got == want, "delivered ids differ from published ids");
    println!("spread: messages acked through each node {per_node:?}");
    for n in per_node {
        assert!(n > 0, "a node's members got nothing: {per_node:?}");
    }
    assert_eq!(counter(&v, "delivered"), total, "{v:#}");
    assert_eq!(counter(&v, "redelivered"), 0, "{v:#}");
    assert_eq!(counter(&v, "inflight"), 0, "{v:#}");
    // The group is listed once, by every node.
    for node in &nodes {
        let list = node.get_json("/v1/groups").await;
        let names: Vec<&str> = list["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["spread"], "{list:#}");
    }
    // A member that disconnects from a relaying node is gone at the
    // coordinator too: its messages go to another member at once, long
    // before the 30 s ack timeout.
    let relaying: Vec<usize> = (0..3).filter(|i| ids[*i].0 != coordinator).collect();
    let query = format!("topic={}", enc("jobs.>"));
    let mut first = GroupMember::join(&nodes[relaying[0]], "spread", &query).await;
    let late = publish_texts(&nodes[relaying[1]], "jobs.late", &texts_of("late", 5)).await;
    let got = first.recv(5, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 5);
    let mut second = GroupMember::join(&nodes[relaying[1]], "spread", &query).await;
    let started = Instant::now();
    drop(first);
    let again = second.recv(5, Duration::from_secs(10)).await;
    println!(
        "spread: redelivered after a relayed disconnect in {:?}",
        started.elapsed()
    );
    let mut again: Vec<String> = again.into_iter().map(|d| d.id).collect();
    again.sort();
    let mut late = late;
    late.sort();
    assert_eq!(again, late);
    second.ack(&again).await;
    // Relayed requests must be signed.
    for (path, body) in [
        ("/cluster/v1/forward/v1/groups/spread/ack", r#"{"ids": []}"#),
        ("/cluster/v1/groups/take", "junk"),
    ] {
        let (status, _, _) = nodes[0]
            .raw(nodes[0].request("POST", path), body.as_bytes().to_vec())
            .await;
        assert_eq!(status, 401, "{path}");
    }
}

fn texts_of(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Reads events from `sse` until `n` messages came: the message payloads
/// (JSON format) and any other events (`gap`). The SSE ids of the messages
/// go to `ids`.
async fn messages_and_others(
    sse: &mut Sse,
    n: usize,
    within: Duration,
    ids: &mut Vec<String>,
) -> (Vec<String>, Vec<String>) {
    let deadline = Instant::now() + within;
    let (mut messages, mut others) = (Vec::new(), Vec::new());
    while messages.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {} of {n} messages arrived; other events {others:?}",
            messages.len()
        );
        let Some(e) = sse.next(left).await else {
            panic!("the stream ended after {} of {n} messages", messages.len());
        };
        if e.event == "message" {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            messages.push(v["payload"].as_str().unwrap().to_owned());
            ids.extend(e.id);
        } else {
            others.push(format!("{}: {}", e.event, e.data));
        }
    }
    (messages, others)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_pattern_catches_up_with_older_messages_from_their_origin() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, _) = start_cluster(dir.path(), 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    // B follows another topic, so its watermark for A moves past what A
    // publishes on `history.a` while nobody on B wants it.
    let mut other = Sse::connect(b, "/v1/events?topic=other&format=json", None)
        .await
        .unwrap();
    let texts: Vec<String> = (0..300).map(|i| format!("h-{i}")).collect();
    publish_texts(a, "history.a", &texts).await;
    let mut ids = Vec::new();
    publish_texts(a, "other", &["marker".to_owned()]).await;
    let (got, _) =
        messages_and_others(&mut other, 1, Duration::from_secs(10), &mut Vec::new()).await;
    assert_eq!(got, ["marker"]);
    // From the start: every older message, in order, and no gap.
    let mut sse = Sse::connect(
        b,
        "/v1/events?topic=history.a&from=earliest&format=json",
        None,
    )
    .await
    .unwrap();
    let (got, others) = messages_and_others(&mut sse, 300, Duration::from_secs(20), &mut ids).await;
    assert_eq!(got, texts);
    assert!(others.is_empty(), "{others:?}");
    // And new ones follow live.
    publish_texts(a, "history.a", &["live-0".to_owned()]).await;
    let (got, _) = messages_and_others(&mut sse, 1, Duration::from_secs(10), &mut Vec::new()).await;
    assert_eq!(got, ["live-0"]);
    // A resume on a wider pattern from the 100th message: exactly what
    // followed it, none twice.
    publish_texts(a, "history.b", &["b-0".to_owned()]).await;
    let mut resumed = Sse::connect(b, "/v1/events?topic=history.*&format=json", Some(&ids[99]))
        .await
        .unwrap();
    let (got, others) =
        messages_and_others(&mut resumed, 202, Duration::from_secs(20), &mut Vec::new()).await;
    let mut want: Vec<String> = texts[100..].to_vec();
    want.push("live-0".into());
    want.push("b-0".into());
    assert_eq!(got, want);
    assert!(others.is_empty(), "{others:?}");
    // The catalog of B now lists the streams with A as their origin.
    let topics = b.get_json("/v1/topics").await;
    assert!(topics.to_string().contains("history.a"), "{topics:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_that_leaves_hands_its_group_over() {
    use crate::groups::{GroupMember, counter, info};

    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, ids) = start_cluster(dir.path(), 3).await;
    let query = format!("topic={}&max_inflight=500", enc("tasks.>"));
    let first = GroupMember::join(&nodes[0], "handover", &query).await;
    let coordinator = info(&nodes[0], "handover").await["coordinator"]
        .as_str()
        .unwrap()
        .to_owned();
    let leaving = ids.iter().position(|(id, _)| *id == coordinator).unwrap();
    // The member and the publisher are on the other two nodes.
    let stay: Vec<usize> = (0..3).filter(|i| *i != leaving).collect();
    drop(first);
    let mut m = GroupMember::join(&nodes[stay[0]], "handover", &query).await;
    let texts: Vec<String> = (0..100).map(|i| format!("t-{i}")).collect();
    publish_texts(&nodes[stay[1]], "tasks.x", &texts).await;
    let got = m.recv(100, Duration::from_secs(20)).await;
    let ids_got: Vec<String> = got.iter().map(|d| d.id.clone()).collect();
    m.ack(&ids_got[..50]).await;
    // A graceful shutdown of the coordinator hands the group over.
    signal(&nodes[leaving], libc::SIGTERM);
    for i in &stay {
        wait_state(&nodes[*i], &coordinator, "left").await;
    }
    nodes[leaving].kill9();
    // The member's stream ended with the old coordinator; it joins again
    // and gets exactly the unacknowledged half, then new messages.
    let mut m = GroupMember::join(&nodes[stay[0]], "handover", &query).await;
    let again = m.recv(50, Duration::from_secs(20)).await;
    let mut again_ids: Vec<String> = again.iter().map(|d| d.id.clone()).collect();
    again_ids.sort();
    let mut want = ids_got[50..].to_vec();
    want.sort();
    assert_eq!(again_ids, want);
    m.ack(&again_ids).await;
    publish_texts(&nodes[stay[1]], "tasks.x", &["after".to_owned()]).await;
    let after = m.recv(1, Duration::from_secs(10)).await;
    m.ack(&[after[0].id.clone()]).await;
    m.expect_nothing(Duration::from_millis(300), "everything was acked")
        .await;
    let v = info(&nodes[stay[1]], "handover").await;
    assert_ne!(v["coordinator"], coordinator.as_str(), "{v:#}");
    assert!(v["epoch"].as_u64().unwrap() >= 1, "{v:#}");
    assert_eq!(counter(&v, "acked"), 101, "{v:#}");
    assert_eq!(counter(&v, "inflight"), 0, "{v:#}");
    assert_eq!(v["members"].as_array().unwrap().len(), 1, "{v:#}");
    let epoch = v["epoch"].as_u64().unwrap();
    // The old coordinator comes back with its data directory: it wins the
    // group again and takes it, with its state, from the interim one.
    nodes[leaving] = member(
        &dir.path().join(format!("n{leaving}")),
        KEY,
        "127.0.0.1:0",
        std::slice::from_ref(&ids[stay[0]].1),
    );
    for i in &stay {
        wait_state(&nodes[*i], &coordinator, "alive").await;
    }
    let v = info(&nodes[stay[1]], "handover").await;
    assert_eq!(v["coordinator"], coordinator.as_str(), "{v:#}");
    assert!(v["epoch"].as_u64().unwrap() > epoch, "{v:#}");
    assert_eq!(counter(&v, "acked"), 101, "{v:#}");
    // The member's stream ended with the interim coordinator; it joins
    // again and goes on.
    let gone = m.next_batch(Duration::from_secs(10)).await;
    assert!(gone.is_empty() && m.closed, "{gone:?}");
    let mut m = GroupMember::join(&nodes[stay[0]], "handover", &query).await;
    publish_texts(&nodes[stay[1]], "tasks.x", &["back".to_owned()]).await;
    let back = m.recv(1, Duration::from_secs(10)).await;
    m.ack(&[back[0].id.clone()]).await;
    let v = info(&nodes[stay[0]], "handover").await;
    assert_eq!(counter(&v, "acked"), 102, "{v:#}");
    assert_eq!(counter(&v, "inflight"), 0, "{v:#}");
}

/// A sealed node-to-node request from a node `0x5eed` that holds the
/// key: the request builder (auth header set), the sealed body and its id.
pub(crate) fn sealed_request(
    envelope: &switchyard_cluster::envelope::Envelope,
    node: &Node,
    to: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> (
    http::request::Builder,
    Vec<u8>,
    switchyard_cluster::envelope::RequestId,
) {
    let (id, sealed) = envelope.seal_request(
        switchyard_cluster::envelope::Target { method, to, path },
        body,
    );
    let req = node
        .request(method, path)
        .header("switchyard-cluster-auth", id.header());
    (req, sealed, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_junk_between_nodes_is_refused_and_counted() {
    use switchyard_cluster::envelope::{Envelope, RequestId};

    let dir = tempfile::tempdir().unwrap();
    let node = member(&dir.path().join("n0"), KEY, "127.0.0.1:0", &[]);
    let view = cluster_view(&node).await;
    let to = view["members"][0]["http_addr"].as_str().unwrap().to_owned();
    let name = view["cluster"].as_str().unwrap().to_owned();
    let counters = || async {
        let v = cluster_view(&node).await;
        [
            "refused_requests",
            "refused_http_bad_auth",
            "refused_http_tampered",
            "refused_http_replayed",
            "refused_http_stale",
        ]
        .map(|c| v["gossip"][c].as_u64().unwrap())
    };
    let envelope = Envelope::new(KEY.as_bytes(), &name, 0x5eed, Default::default());
    let opens = |id: &RequestId, body: &[u8]| envelope.answer_opener(id).whole(body);
    let mut junk: Vec<u8> = (0..300u32).map(|i| (i * 7919 % 251) as u8).collect();
    // An overlong length prefix: no request type decodes from it.
    junk[..10].fill(0xff);
    let mut expected = counters().await;
    for path in [
        "/cluster/v1/feed",
        "/cluster/v1/groups/take",
        "/cluster/v1/groups/give",
        "/cluster/v1/idempotency",
    ] {
        // Sealed, but not a valid body: a sealed 400.
        for body in [&b""[..], &b"\xff\xff\xff\xff"[..], &junk[..]] {
            let (req, sealed, id) = sealed_request(&envelope, &node, &to, "POST", path, body);
            let (status, _, answer) = node.raw(req, sealed).await;
            assert_eq!(status, 200, "{path}");
            let (head, text) = opens(&id, &answer).unwrap();
            assert_eq!(
                head.status,
                400,
                "{path}: {}",
                String::from_utf8_lossy(&text)
            );
            expected[0] += 1;
        }
        // Sealed for another path, another node, with a flipped byte, with
        // another key, replayed, from a clock far off, with no or an old
        // header: 401, nothing read.
        let (_, sealed, id) =
            sealed_request(&envelope, &node, &to, "POST", "/cluster/v1/other", &junk);
        let req = node
            .request("POST", path)
            .header("switchyard-cluster-auth", id.header());
        assert_eq!(node.raw(req, sealed).await.0, 401, "{path}");
        let (req, sealed, _) = sealed_request(&envelope, &node, "127.0.0.1:1", "POST", path, &junk);
        assert_eq!(node.raw(req, sealed).await.0, 401, "{path}");
        let (req, mut sealed, _) = sealed_request(&envelope, &node, &to, "POST", path, &junk);
        sealed[7] ^= 0x10;
        assert_eq!(node.raw(req, sealed).await.0, 401, "{path}");
        let other = Envelope::new(b"another cluster key!", &name, 0x5eed, Default::default());
        let (req, sealed, _) = sealed_request(&other, &node, &to, "POST", path, &junk);
        assert_eq!(node.raw(req, sealed).await.0, 401, "{path}");
        expected[2] += 4;
        let (req, sealed, id) = sealed_request(&envelope, &node, &to, "POST", path, &junk);
        assert_eq!(node.raw(req, sealed.clone()).await.0, 200, "{path}");
        expected[0] += 1;
        let again = node
            .request("POST", path)
            .header("switchyard-cluster-auth", id.header());
        let (status, _, text) = node.raw(again, sealed).await;
        assert_eq!(status, 401, "{path}");
        assert!(String::from_utf8_lossy(&text).contains("replayed"));
        expected[3] += 1;
        let old = RequestId {
            ms: id.ms - 60_000,
            counter: id.counter + 1_000_000,
            ..id
        };
        let req = node
            .request("POST", path)
            .header("switchyard-cluster-auth", old.header());
        assert_eq!(node.raw(req, junk.clone()).await.0, 401, "{path}");
        expected[4] += 1;
        for header in [
            None,
            Some(format!("{:016x}.{}.{}", 0x5eed, id.ms, "00".repeat(32))),
        ] {
            let mut req = node.request("POST", path);
            if let Some(h) = header {
                req = req.header("switchyard-cluster-auth", h);
            }
            let (status, _, text) = node.raw(req, junk.clone()).await;
            assert_eq!(status, 401, "{path}");
            assert!(String::from_utf8_lossy(&text).contains("v2"), "{path}");
            expected[1] += 1;
        }
    }
    // A relay may only reach the client API, and its seal covers the query.
    let (req, sealed, id) = sealed_request(
        &envelope,
        &node,
        &to,
        "GET",
        "/cluster/v1/forward/cluster/v1/feed",
        &[0, 0],
    );
    let (status, _, answer) = node.raw(req, sealed).await;
    assert_eq!(status, 200);
    assert_eq!(opens(&id, &answer).unwrap().0.status, 404);
    let (_, sealed, id) = sealed_request(
        &envelope,
        &node,
        &to,
        "GET",
        "/cluster/v1/forward/v1/groups?x=1",
        &[0, 0],
    );
    let req = node
        .request("GET", "/cluster/v1/forward/v1/groups?x=2")
        .header("switchyard-cluster-auth", id.header());
    assert_eq!(node.raw(req, sealed).await.0, 401);
    expected[2] += 1;
    // An oversized hand-over is refused before it is read.
    let path = "/cluster/v1/groups/give";
    let (_, _, id) = sealed_request(&envelope, &node, &to, "POST", path, b"");
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nswitchyard-cluster-auth: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        id.header(),
        9 * 1024 * 1024
    )
    .into_bytes();
    request.extend(vec![0u8; 9 * 1024 * 1024]);
    let (status, _, _) = raw_tcp(&node, request).await;
    assert_eq!(status, 413);
    assert_eq!(counters().await, expected);
    // A properly sealed relayed request is served, its answer sealed.
    let (req, sealed, id) = sealed_request(
        &envelope,
        &node,
        &to,
        "GET",
        "/cluster/v1/forward/v1/groups",
        &[0, 0],
    );
    let (status, _, answer) = node.raw(req, sealed).await;
    assert_eq!(status, 200);
    let (head, body) = opens(&id, &answer).unwrap();
    assert_eq!(head.status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["groups"].is_array(), "{v}");
    assert_eq!(node.get_json("/healthz").await["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_on_a_node_new_to_a_topic_starts_after_what_was_published() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, _) = start_cluster(dir.path(), 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    // Nothing on B follows anything of A while A publishes.
    publish_texts(a, "quiet.t", &texts_of("old", 50)).await;
    let mut sse = Sse::connect(b, "/v1/events?topic=quiet.t&format=json", None)
        .await
        .unwrap();
    publish_texts(a, "quiet.t", &["fresh".to_owned()]).await;
    let (got, others) =
        messages_and_others(&mut sse, 1, Duration::from_secs(10), &mut Vec::new()).await;
    assert_eq!(got, ["fresh"]);
    assert!(others.is_empty(), "{others:?}");
    let more = sse.next(Duration::from_millis(300)).await;
    assert!(more.is_none(), "{more:?}");
}

#[test]
fn a_wildcard_listen_address_needs_an_advertised_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--gossip-listen", "0.0.0.0:0"])
        .env("SWITCHYARD_CLUSTER_KEY", KEY)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("set http_advertise"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_members_relayed_through_one_node() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::groups::{GroupMember, counter, info, spawn_acker, wait_info};

    const MEMBERS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let (nodes, ids) = start_cluster(dir.path(), 2).await;
    let query = format!("topic={}&max_inflight=4", enc("wide.>"));
    // A group the first node coordinates, joined through the second.
    let mut name = String::new();
    for i in 0.. {
        name = format!("wide-{i}");
        let first = GroupMember::join(&nodes[1], &name, &query).await;
        let v = info(&nodes[1], &name).await;
        drop(first);
        if v["coordinator"] == ids[0].0.as_str() {
            break;
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..MEMBERS {
        let m = GroupMember::join(&nodes[1], &name, &query).await;
        tasks.push(spawn_acker(m, stop.clone()));
    }
    let v = wait_info(
        &nodes[0],
        &name,
        "every member joined",
        Duration::from_secs(20),
        |v| v["members"].as_array().is_some_and(|m| m.len() == MEMBERS),
    )
    .await;
    assert_eq!(v["coordinator"], ids[0].0.as_str());
    publish_texts(&nodes[1], "wide.x", &texts_of("w", 1000)).await;
    wait_info(
        &nodes[1],
        &name,
        "every message acked",
        Duration::from_secs(60),
        |v| v["acked"] == 1000,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap().1.len();
    }
    assert_eq!(total, 1000);
    let v = info(&nodes[0], &name).await;
    assert_eq!(counter(&v, "redelivered"), 0, "{v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_reports_what_the_origin_removed() {
    let dir = tempfile::tempdir().unwrap();
    let a_dir = dir.path().join("a");
    std::fs::create_dir_all(&a_dir).unwrap();
    let toml = format!(
        "[cluster]\nkey = \"{KEY}\"\nreplication_factor = 1\n[retention]\ninterval_ms = 100\n\
         [[retention.topics]]\npattern = \"short.>\"\nmax_bytes = 2000\n"
    );
    let a = Node::start_with_config(
        &a_dir,
        &toml,
        &["--fsync", "never", "--gossip-listen", "127.0.0.1:0"],
    );
    let seed = whoami(&a).await.1;
    let b = member_with(
        &dir.path().join("b"),
        KEY,
        "127.0.0.1:0",
        &[seed],
        UNREPLICATED,
    );
    let a_id = whoami(&a).await.0;
    wait_state(&b, &a_id, "alive").await;
    let mut other = Sse::connect(&b, "/v1/events?topic=other&format=json", None)
        .await
        .unwrap();
    let texts: Vec<String> = (0..100).map(|i| format!("{i:0>100}")).collect();
    // A cursor after the 5th message, taken on A before retention removes it.
    publish_texts(&a, "short.t", &texts[..10]).await;
    let mut on_a = Sse::connect(
        &a,
        "/v1/events?topic=short.t&from=earliest&format=json",
        None,
    )
    .await
    .unwrap();
    let mut ids = Vec::new();
    messages_and_others(&mut on_a, 5, Duration::from_secs(10), &mut ids).await;
    drop(on_a);
    publish_texts(&a, "short.t", &texts[10..]).await;
    // A removes the oldest by retention.
    let count = || async {
        let v = a.get_json("/v1/topics").await;
        v["topics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["topic"] == "short.t")
            .and_then(|t| t["messages"].as_u64())
            .unwrap_or(100)
    };
    wait_until(Duration::from_secs(10), "retention on a", || async {
        count().await < 100
    })
    .await;
    let left = count().await;
    publish_texts(&a, "other", &["marker".to_owned()]).await;
    messages_and_others(&mut other, 1, Duration::from_secs(10), &mut Vec::new()).await;
    let mut sse = Sse::connect(&b, "/v1/events?topic=short.t&format=json", Some(&ids[4]))
        .await
        .unwrap();
    let (got, others) = messages_and_others(
        &mut sse,
        left as usize,
        Duration::from_secs(20),
        &mut Vec::new(),
    )
    .await;
    assert_eq!(got, texts[100 - left as usize..]);
    assert_eq!(others.len(), 1, "{others:?}");
    assert!(others[0].starts_with("gap"), "{others:?}");
    assert!(
        others[0].contains(&format!("{}", 100 - left)),
        "the gap ends at stream seq {}: {others:?}",
        100 - left
    );
}

/// A pull from the start on one node answers every node's messages, like a
/// stream from the same point: it waits for the peers' messages that the
/// node's pulls have not brought yet instead of answering without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_from_the_start_returns_every_nodes_messages() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, _) = start_cluster(dir.path(), 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let from_a = texts_of("a", 50);
    let from_b = texts_of("b", 3);
    publish_texts(a, "ha.x", &from_a).await;
    publish_texts(b, "ha.y", &from_b).await;
    for _ in 0..3 {
        let v = b
            .get_json("/v1/messages?topic=ha.%3E&from=earliest&limit=100")
            .await;
        let got: Vec<(String, String)> = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["topic"].as_str().unwrap().to_owned(),
                    m["payload"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let of = |topic: &str| -> Vec<String> {
            got.iter()
                .filter(|(t, _)| t == topic)
                .map(|(_, p)| p.clone())
                .collect()
        };
        assert_eq!(of("ha.x"), from_a, "{v:#}");
        assert_eq!(of("ha.y"), from_b, "{v:#}");
        assert_eq!(v["gaps"], serde_json::json!([]), "{v:#}");
    }
}

/// Neither a pull nor a stream passes messages this node does not hold:
/// with their origin unreachable, a pull answers an `unavailable` gap and a
/// cursor that stays before them, a stream waits; once the origin is back,
/// the stream delivers them and the same cursor pulls them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_never_passes_messages_of_an_unreachable_origin() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, ids) = start_cluster_with(dir.path(), 2, UNREPLICATED).await;
    let jobs = texts_of("job", 100);
    let _follow = past_unfollowed(&nodes, "jobs", &jobs).await;
    let (a_id, a_gossip) = ids[0].clone();
    let generation = states(&nodes[1]).await[&a_id].1;
    nodes[0].kill9();
    let v = nodes[1]
        .get_json("/v1/messages?topic=jobs&from=earliest")
        .await;
    assert_eq!(v["messages"], serde_json::json!([]), "{v:#}");
    let gaps = v["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{v:#}");
    assert_eq!(gaps[0]["reason"], "unavailable", "{v:#}");
    assert_eq!(gaps[0]["origin"], a_id.as_str(), "{v:#}");
    assert_eq!(gaps[0]["after_origin_seq"], 0, "{v:#}");
    // A's log also holds its `$sys.cluster` events.
    assert!(
        gaps[0]["through_origin_seq"].as_u64().unwrap() >= 101,
        "{v:#}"
    );
    let cursor = v["cursor"].as_str().unwrap().to_owned();
    // A stream from the same point waits instead of passing over them.
    let mut sse = Sse::connect(
        &nodes[1],
        "/v1/events?topic=jobs&from=earliest&format=json",
        None,
    )
    .await
    .unwrap();
    let early = sse.next(Duration::from_millis(500)).await;
    assert!(early.is_none(), "{early:?}");
    // A comes back with its data: the stream delivers all 100, and the
    // pull's cursor now gives them too.
    nodes[0] = back_unreplicated(dir.path(), &a_gossip, &ids[1].1);
    back_alive(&nodes[1], &a_id, generation).await;
    let (got, others) =
        messages_and_others(&mut sse, 100, Duration::from_secs(20), &mut Vec::new()).await;
    assert_eq!(got, jobs);
    assert!(others.is_empty(), "{others:?}");
    let v = nodes[1]
        .get_json(&format!("/v1/messages?topic=jobs&from={cursor}&limit=1000"))
        .await;
    let got = payloads(&v);
    assert_eq!(got, jobs, "{v:#}");
    assert_eq!(v["gaps"], serde_json::json!([]), "{v:#}");
}

/// A group created from the start while the origin of older messages is
/// down does not pass over them: it delivers them once the origin is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_waits_for_messages_of_an_unreachable_origin() {
    use crate::groups::GroupMember;
    let dir = tempfile::tempdir().unwrap();
    // Three nodes: the two left after A dies are a majority, and a node
    // coordinates groups only where it sees one.
    let (mut nodes, ids) = start_cluster_with(dir.path(), 3, UNREPLICATED).await;
    let _follow = past_unfollowed(&nodes, "work", &texts_of("w", 100)).await;
    let (a_id, a_gossip) = ids[0].clone();
    let generation = states(&nodes[1]).await[&a_id].1;
    nodes[0].kill9();
    // B or C coordinates the group once they see A down; neither holds
    // A's `work` messages.
    wait_state(&nodes[1], &a_id, "down").await;
    wait_state(&nodes[2], &a_id, "down").await;
    let mut m = GroupMember::join(
        &nodes[1],
        "waits",
        "topic=work&from=earliest&max_inflight=200",
    )
    .await;
    m.expect_nothing(Duration::from_millis(500), "A's messages are not here")
        .await;
    nodes[0] = back_unreplicated(dir.path(), &a_gossip, &ids[1].1);
    back_alive(&nodes[1], &a_id, generation).await;
    let got = m.recv(100, Duration::from_secs(20)).await;
    let seqs: Vec<u64> = got
        .iter()
        .map(|d| {
            let (origin, seq) = d.id.rsplit_once('-').unwrap();
            assert_eq!(origin, a_id, "{d:?}");
            seq.parse().unwrap()
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    m.ack(&got.iter().map(|d| d.id.clone()).collect::<Vec<_>>())
        .await;
}

/// Streams on B following `jobs` from the start and on C following only
/// `u` from now: C's watermark for A moves past A's `jobs` messages that
/// only B holds.
async fn jobs_on_b_and_u_on_c(nodes: &[Node]) -> (Sse, Sse) {
    let on_b = Sse::connect(
        &nodes[1],
        "/v1/events?topic=jobs&from=earliest&format=json",
        None,
    )
    .await
    .unwrap();
    let on_c = Sse::connect(&nodes[2], "/v1/events?topic=u&format=json", None)
        .await
        .unwrap();
    (on_b, on_c)
}

/// With their origin down, a node fetches older messages from a peer that
/// holds them (it followed the same topics), and only from such a peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_messages_of_a_dead_origin_come_from_a_peer_that_holds_them() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, ids) = start_cluster_with(dir.path(), 3, UNREPLICATED).await;
    // B follows `jobs` from the start of A's log; C follows only `u`, so
    // its watermark for A moves past A's `jobs` and `other` messages.
    let (mut on_b, mut on_c) = jobs_on_b_and_u_on_c(&nodes).await;
    let mut jobs = texts_of("job", 100);
    publish_texts(&nodes[0], "jobs", &jobs).await;
    publish_texts(&nodes[0], "other", &texts_of("o", 5)).await;
    publish_texts(&nodes[0], "u", &["marker".to_owned()]).await;
    jobs.push("last".to_owned());
    publish_texts(&nodes[0], "jobs", &jobs[100..]).await;
    let (got, _) =
        messages_and_others(&mut on_b, 101, Duration::from_secs(10), &mut Vec::new()).await;
    assert_eq!(got, jobs);
    let (got, _) =
        messages_and_others(&mut on_c, 1, Duration::from_secs(10), &mut Vec::new()).await;
    assert_eq!(got, ["marker"]);
    // C's watermark for A must pass `last` before A dies, and B must hold
    // A's log as far as C knows it (a peer gives only up to where it
    // holds the log): a second `u` message that both B and C receive.
    // Without it, A could die after B got `last` and before A's answer
    // moving C's watermark past it reached C; C would then not know of
    // `last` at all.
    let mut u_on_b = Sse::connect(&nodes[1], "/v1/events?topic=u&format=json", None)
        .await
        .unwrap();
    publish_texts(&nodes[0], "u", &["marker2".to_owned()]).await;
    for sse in [&mut u_on_b, &mut on_c] {
        let (got, _) = messages_and_others(sse, 1, Duration::from_secs(10), &mut Vec::new()).await;
        assert_eq!(got, ["marker2"]);
    }
    let a_id = ids[0].0.clone();
    nodes[0].kill9();
    for node in &nodes[1..] {
        wait_state(node, &a_id, "down").await;
    }
    // C gets A's `jobs` from B.
    let v = nodes[2]
        .get_json("/v1/messages?topic=jobs&from=earliest&limit=1000")
        .await;
    let got = payloads(&v);
    assert_eq!(got, jobs, "{v:#}");
    assert_eq!(v["gaps"], serde_json::json!([]), "{v:#}");
    // Nobody alive followed `other`: unavailable, not an empty answer.
    let v = nodes[2]
        .get_json("/v1/messages?topic=other&from=earliest")
        .await;
    assert_eq!(v["messages"], serde_json::json!([]), "{v:#}");
    assert_eq!(v["gaps"][0]["reason"], "unavailable", "{v:#}");
    assert_eq!(v["gaps"][0]["origin"], a_id.as_str(), "{v:#}");
}

/// A dead origin's last messages reached no live node that follows their
/// topic, though another node's watermark for the origin passed them:
/// readers there get every message a live node could give, in order, and
/// an `unavailable` gap for only the part nobody holds (not the whole
/// origin held back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_that_gets_part_of_a_range_delivers_that_part() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, ids) = start_cluster_with(dir.path(), 3, UNREPLICATED).await;
    let (mut on_b, mut on_c) = jobs_on_b_and_u_on_c(&nodes).await;
    let jobs = texts_of("job", 100);
    publish_texts(&nodes[0], "jobs", &jobs).await;
    let (got, _) =
        messages_and_others(&mut on_b, 100, Duration::from_secs(10), &mut Vec::new()).await;
    assert_eq!(got, jobs);
    // B stops for longer than a pull waits (5 s): A answers B's waiting
    // pull empty, and B asks nothing more. So A's last `jobs` messages
    // reach nobody who follows them, but C's pull of `u` moves its
    // watermark for A past them.
    signal(&nodes[1], libc::SIGSTOP);
    tokio::time::sleep(Duration::from_millis(6500)).await;
    publish_texts(&nodes[0], "jobs", &texts_of("unheld", 2)).await;
    publish_texts(&nodes[0], "u", &["marker".to_owned()]).await;
    let (got, _) =
        messages_and_others(&mut on_c, 1, Duration::from_secs(10), &mut Vec::new()).await;
    assert_eq!(got, ["marker"]);
    let a_id = ids[0].0.clone();
    nodes[0].kill9();
    signal(&nodes[1], libc::SIGCONT);
    for node in &nodes[1..] {
        wait_state(node, &a_id, "down").await;
    }
    wait_state(&nodes[2], &ids[1].0, "alive").await;
    // C gets from B the part B holds, and is told of the rest.
    let v = nodes[2]
        .get_json("/v1/messages?topic=jobs&from=earliest&limit=1000")
        .await;
    assert_eq!(payloads(&v), jobs, "{v:#}");
    let gaps = v["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{v:#}");
    assert_eq!(gaps[0]["reason"], "unavailable", "{v:#}");
    assert_eq!(gaps[0]["origin"], a_id.as_str(), "{v:#}");
    let after = gaps[0]["after_origin_seq"].as_u64().unwrap();
    assert!(
        after >= 100 && after < gaps[0]["through_origin_seq"].as_u64().unwrap(),
        "{v:#}"
    );
    // A stream from the start delivers the same part.
    let mut from_start = Sse::connect(
        &nodes[2],
        "/v1/events?topic=jobs&from=earliest&format=json",
        None,
    )
    .await
    .unwrap();
    let (got, others) = messages_and_others(
        &mut from_start,
        100,
        Duration::from_secs(10),
        &mut Vec::new(),
    )
    .await;
    assert_eq!(got, jobs, "{others:?}");
}

/// With `replication_factor = 3` on three nodes, every node copies every
/// other node's whole log, followed or not: after the origin is killed
/// and its data directory deleted, both survivors answer all of its
/// messages from the start, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_keep_a_dead_origins_log() {
    let factor = 3;
    let dir = tempfile::tempdir().unwrap();
    let replicated = |d: &Path, seeds: &[String]| {
        configured(d, &format!("replication_factor = {factor}\n"), seeds)
    };
    let a = replicated(&dir.path().join("a"), &[]);
    let (a_id, seed) = whoami(&a).await;
    let b = replicated(&dir.path().join("b"), std::slice::from_ref(&seed));
    let c = replicated(&dir.path().join("c"), std::slice::from_ref(&seed));
    let mut nodes = [a, b, c];
    for node in &nodes[1..] {
        wait_state(node, &a_id, "alive").await;
    }
    // Nobody follows these topics.
    let texts = texts_of("r", 200);
    publish_texts(&nodes[0], "r.x", &texts[..150]).await;
    publish_texts(&nodes[0], "r.y", &texts[150..]).await;
    // The nodes that hold A's whole log: the replicas the ids chose.
    let deadline = Instant::now() + Duration::from_secs(20);
    let holders = loop {
        let mut holders = Vec::new();
        for (i, node) in nodes.iter().enumerate().skip(1) {
            if holds_log(node).await {
                holders.push(i);
            }
        }
        if holders.len() >= factor - 1 || Instant::now() >= deadline {
            break holders;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(holders.len(), factor - 1, "replicas of A: {holders:?}");
    // A reports its replicas and how far they hold its log.
    let head = v_seq(
        &nodes[0]
            .get_json("/v1/messages?topic=r.y&from=earliest&limit=100")
            .await,
    );
    wait_until(Duration::from_secs(20), "A's replicas reported", || async {
        let r = &cluster_view(&nodes[0]).await["replication"];
        let mine = r["origins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["origin"] == a_id.as_str())
            .cloned()
            .unwrap_or_default();
        r["factor"] == 3
            && r["under_replicated"] == 0
            && mine["replicas"].as_array().is_some_and(|rs| {
                rs.len() == 2 && rs.iter().all(|x| x["through"].as_u64() >= Some(head))
            })
    })
    .await;
    nodes[0].kill9();
    std::fs::remove_dir_all(dir.path().join("a")).unwrap();
    for node in &nodes[1..] {
        let v = node
            .get_json("/v1/messages?topic=r.%3E&from=earliest&limit=1000")
            .await;
        let got = payloads(&v);
        assert_eq!(got, texts, "{v:#}");
        assert_eq!(v["gaps"], serde_json::json!([]), "{v:#}");
    }
    // Two live members cannot give every origin two replicas.
    wait_until(
        Duration::from_secs(20),
        "under-replication reported",
        || async {
            cluster_view(&nodes[1]).await["replication"]["under_replicated"]
                .as_u64()
                .is_some_and(|n| n > 0)
        },
    )
    .await;
}

/// The origin sequence of the last message of a pull's answer.
fn v_seq(v: &Value) -> u64 {
    v["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["id"].as_str())
        .and_then(|id| id.rsplit_once('-'))
        .and_then(|(_, seq)| seq.parse().ok())
        .unwrap_or(0)
}

/// Whether `node` holds A's 150 `r.x` and 50 `r.y` messages.
async fn holds_log(node: &Node) -> bool {
    let topics = node.get_json("/v1/topics").await;
    let count = |t: &str| {
        topics["topics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["topic"] == t)
            .map_or(0, |v| v["messages"].as_u64().unwrap())
    };
    count("r.x") == 150 && count("r.y") == 50
}

/// Acknowledgement modes on three replicated nodes: `quorum` and `all`
/// answer once the replicas hold the message; with both replicas paused, a
/// `quorum` publish answers `503 not_replicated` (the message stays stored)
/// while `local` goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_wait_for_the_copies_their_acks_ask_for() {
    let dir = tempfile::tempdir().unwrap();
    let start = |d: &Path, seeds: &[String]| {
        configured(d, "replication_factor = 3\nack_timeout_ms = 800\n", seeds)
    };
    let a = start(&dir.path().join("a"), &[]);
    let seed = whoami(&a).await.1;
    let b = start(&dir.path().join("b"), std::slice::from_ref(&seed));
    let c = start(&dir.path().join("c"), std::slice::from_ref(&seed));
    let ids = [whoami(&b).await.0, whoami(&c).await.0];
    for id in &ids {
        wait_state(&a, id, "alive").await;
    }
    let a = &a;
    let post = |path: &str, body: &'static str| {
        let req = a.request("POST", path);
        async move { a.raw(req, body).await }
    };
    // The replicas copy A's log as it is published.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _, body) = post("/v1/topics/q.a?acks=all", "x").await;
        if status == 201 {
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["acks"], "all", "{v:#}");
            assert_eq!(v["copies"], 3, "{v:#}");
            break;
        }
        assert!(Instant::now() < deadline, "acks=all never met");
    }
    let (status, _, body) = post("/v1/topics/q.a?acks=quorum", "y").await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["copies"].as_u64().unwrap() >= 2, "{v:#}");
    let (status, _, body) = post("/v1/topics/q.a?acks=some", "z").await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("invalid_acks"));
    // Both replicas paused: no quorum.
    signal(&b, libc::SIGSTOP);
    signal(&c, libc::SIGSTOP);
    let keyed = |node: &Node| {
        node.request("POST", "/v1/topics/q.a?acks=quorum")
            .header("idempotency-key", "lonely-1")
    };
    let (status, _, body) = a.raw(keyed(a), "lonely").await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("not_replicated"), "{text}");
    let (status, _, _) = post("/v1/topics/q.a?acks=local", "local").await;
    assert_eq!(status, 201);
    // Once A declares both down, it has no live replica left: acks=all
    // still asks for a quorum, never fewer copies than acks=quorum (the
    // long chaos run of seed 105 lost 85 messages acknowledged with all by
    // an isolated origin whose disk was then lost).
    for id in &ids {
        wait_state(a, id, "down").await;
    }
    let (status, _, body) = post("/v1/topics/q.a?acks=all", "alone").await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("not_replicated"), "{text}");
    // The message that missed its quorum was stored all the same.
    let v = a
        .get_json("/v1/messages?topic=q.a&from=earliest&limit=100")
        .await;
    let lonely = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["payload"] == "lonely")
        .unwrap_or_else(|| panic!("{v:#}"))["id"]
        .clone();
    signal(&b, libc::SIGCONT);
    signal(&c, libc::SIGCONT);
    // Once a replica holds it, a retry there with the same key answers the
    // original message and stores no second copy; so does one on A.
    for node in [&b, &c] {
        wait_until(Duration::from_secs(20), "the replica holds it", || async {
            let v = node
                .get_json("/v1/messages?topic=q.a&from=earliest&limit=100")
                .await;
            payloads(&v).contains(&"lonely")
        })
        .await;
    }
    for node in [&b, &c, a] {
        let (status, headers, body) = node.raw(keyed(node), "lonely").await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 201, "{text}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["id"], lonely, "{v:#}");
        assert_eq!(v["duplicate"], true, "{v:#}");
        assert_eq!(headers["idempotent-replayed"], "true");
    }
    for node in [a, &b, &c] {
        let v = node
            .get_json("/v1/messages?topic=q.a&from=earliest&limit=100")
            .await;
        let n = payloads(&v).iter().filter(|p| **p == "lonely").count();
        assert_eq!(n, 1, "{v:#}");
    }
}

/// The payloads of a pull's answer.
fn payloads(v: &Value) -> Vec<&str> {
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["payload"].as_str().unwrap())
        .collect()
}

/// Waits until `node` sees `id` alive with a generation above `generation`
/// (the node came back).
async fn back_alive(node: &Node, id: &str, generation: u64) {
    wait_until(
        Duration::from_secs(15),
        "the node back and alive",
        || async {
            states(node)
                .await
                .get(id)
                .is_some_and(|(state, g)| state == "alive" && *g > generation)
        },
    )
    .await;
}

/// Starts a node on a free gossip port joining through `seeds`, with
/// `cluster` appended to its `[cluster]` section.
fn configured(dir: &Path, cluster: &str, seeds: &[String]) -> Node {
    std::fs::create_dir_all(dir).unwrap();
    let toml = format!("[cluster]\nkey = \"{KEY}\"\n{cluster}");
    let mut args = vec!["--fsync", "never", "--gossip-listen", "127.0.0.1:0"];
    for s in seeds {
        args.push("--join");
        args.push(s);
    }
    Node::start_with_config(dir, &toml, &args)
}

/// Node 1 follows only `u` while node 0 publishes `texts` on `topic`, then
/// a marker on `u`: once node 1 has the marker, its watermark for node 0
/// lies past those messages, which it does not hold. The stream returned
/// keeps `u` followed.
async fn past_unfollowed(nodes: &[Node], topic: &str, texts: &[String]) -> Sse {
    let mut follow = Sse::connect(&nodes[1], "/v1/events?topic=u&format=json", None)
        .await
        .unwrap();
    publish_texts(&nodes[0], topic, texts).await;
    publish_texts(&nodes[0], "u", &["marker".to_owned()]).await;
    let (got, _) =
        messages_and_others(&mut follow, 1, Duration::from_secs(10), &mut Vec::new()).await;
    assert_eq!(got, ["marker"]);
    follow
}

/// A group whose coordinator is killed (kill -9) resumes on another node
/// from the state the coordinator recorded in its replicated log: the
/// messages it had in flight are delivered again, those acknowledged are
/// not, none is lost, and the counters go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_resumes_after_its_coordinator_is_killed() {
    use crate::groups::{GroupMember, counter, info};

    let dir = tempfile::tempdir().unwrap();
    let start = |d: &Path, seeds: &[String]| configured(d, "replication_factor = 3\n", seeds);
    let a = start(&dir.path().join("a"), &[]);
    let seed = whoami(&a).await.1;
    let b = start(&dir.path().join("b"), std::slice::from_ref(&seed));
    let c = start(&dir.path().join("c"), std::slice::from_ref(&seed));
    let mut nodes = [a, b, c];
    let mut ids = Vec::new();
    for node in &nodes {
        ids.push(whoami(node).await.0);
    }
    for (i, node) in nodes.iter().enumerate() {
        for (j, id) in ids.iter().enumerate() {
            if i != j {
                wait_state(node, id, "alive").await;
            }
        }
    }
    let query = format!("topic={}&max_inflight=1000", enc("work.>"));
    let probe = GroupMember::join(&nodes[0], "failover", &query).await;
    let coordinator = info(&nodes[0], "failover").await["coordinator"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(probe);
    let dead = ids.iter().position(|id| *id == coordinator).unwrap();
    let stay: Vec<usize> = (0..3).filter(|i| *i != dead).collect();
    let mut m = GroupMember::join(&nodes[stay[0]], "failover", &query).await;
    publish_texts(&nodes[stay[1]], "work.x", &texts_of("w", 300)).await;
    let got: Vec<String> = m
        .recv(300, Duration::from_secs(20))
        .await
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(got.len(), 300);
    m.ack(&got[..150]).await;
    // Both survivors hold the coordinator's record of the group with the
    // other 150 in flight.
    for i in &stay {
        wait_until(
            Duration::from_secs(20),
            "the group's state replicated",
            || async {
                nodes[*i]
                    .pull_all("$sys.groups.>")
                    .await
                    .last()
                    .and_then(|m| serde_json::from_str::<Value>(m["payload"].as_str()?).ok())
                    .is_some_and(|s| {
                        s["name"] == "failover"
                            && s["state"]["inflight"].as_array().map(Vec::len) == Some(150)
                    })
            },
        )
        .await;
    }
    let killed = Instant::now();
    nodes[dead].kill9();
    drop(m);
    for i in &stay {
        wait_state(&nodes[*i], &coordinator, "down").await;
    }
    // A member joins again through either survivor and gets exactly the
    // messages that were in flight.
    let mut m = GroupMember::join(&nodes[stay[1]], "failover", &query).await;
    let again = m.recv(150, Duration::from_secs(20)).await;
    println!(
        "failover: in-flight messages delivered again {:?} after the kill",
        killed.elapsed()
    );
    let mut again: Vec<String> = again.into_iter().map(|d| d.id).collect();
    again.sort();
    let mut want = got[150..].to_vec();
    want.sort();
    let repeats = again.iter().filter(|id| got[..150].contains(id)).count();
    println!("failover: acknowledged messages delivered again: {repeats}");
    assert_eq!(again, want);
    m.ack(&again).await;
    let after = publish_texts(&nodes[stay[0]], "work.y", &texts_of("after", 20)).await;
    let mut late: Vec<String> = m
        .recv(20, Duration::from_secs(10))
        .await
        .into_iter()
        .map(|d| d.id)
        .collect();
    m.ack(&late).await;
    late.sort();
    let mut after = after;
    after.sort();
    assert_eq!(late, after);
    m.expect_nothing(Duration::from_millis(300), "everything was acked")
        .await;
    let v = info(&nodes[stay[0]], "failover").await;
    assert_ne!(v["coordinator"], coordinator.as_str(), "{v:#}");
    assert_eq!(counter(&v, "acked"), 320, "{v:#}");
    assert_eq!(counter(&v, "inflight"), 0, "{v:#}");
}

/// Starts three nodes and creates group `group` (joined with `query`)
/// through the first; returns the nodes, the id of the group's
/// coordinator and its index.
async fn three_nodes_and_a_group(
    dir: &Path,
    group: &str,
    query: &str,
) -> (Vec<Node>, String, usize) {
    use crate::groups::{GroupMember, info};

    let (nodes, ids) = start_cluster(dir, 3).await;
    let probe = GroupMember::join(&nodes[0], group, query).await;
    let coordinator = info(&nodes[0], group).await["coordinator"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(probe);
    let x = ids.iter().position(|(id, _)| *id == coordinator).unwrap();
    (nodes, coordinator, x)
}

/// Publishes `n` texts `prefix-...` to `topic` through `node`, has member
/// `m` receive exactly them and acknowledges them; returns their ids.
async fn published_and_acked(
    m: &mut crate::groups::GroupMember,
    node: &Node,
    topic: &str,
    prefix: &str,
    n: usize,
) -> Vec<String> {
    let ids = publish_texts(node, topic, &texts_of(prefix, n)).await;
    let got = crate::groups::ids_of(&m.recv(n, Duration::from_secs(10)).await);
    assert_eq!(sorted(&got), sorted(&ids));
    m.ack(&got).await;
    ids
}

fn sorted(ids: &[String]) -> Vec<String> {
    let mut v = ids.to_vec();
    v.sort();
    v
}

/// Pauses the coordinator of `group` (node `x`, id `coordinator`) until
/// the others see it down, has a member join through another node, which
/// makes that node a stand-in, and publishes 10 messages to `topic`, which
/// the member receives and acknowledges (with none but the `before`
/// messages besides). Returns the member, the
/// stand-in's id and the messages' ids. The stand-in may start from an
/// older record of the group than the coordinator's last round (or from
/// none): then it delivers earlier messages again too (at least once).
async fn stood_in_for(
    nodes: &[Node],
    coordinator: &str,
    x: usize,
    group: &str,
    query: &str,
    topic: &str,
    before: &[String],
) -> (crate::groups::GroupMember, String, Vec<String>) {
    use crate::groups::{GroupMember, ids_of, info};

    let others: Vec<usize> = (0..nodes.len()).filter(|i| *i != x).collect();
    signal(&nodes[x], libc::SIGSTOP);
    for i in &others {
        wait_state(&nodes[*i], coordinator, "down").await;
    }
    let mut m2 = GroupMember::join(&nodes[others[0]], group, query).await;
    let stand_in = info(&nodes[others[0]], group).await["coordinator"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(stand_in, coordinator);
    let during = publish_texts(&nodes[others[1]], topic, &texts_of("during", 10)).await;
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !during.iter().all(|id| got.contains(id)) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero() && !m2.closed,
            "the stand-in delivered {got:?}"
        );
        let batch = ids_of(&m2.next_batch(left).await);
        if !batch.is_empty() {
            m2.ack(&batch).await;
            got.extend(batch);
        }
    }
    assert!(
        got.iter()
            .all(|id| during.contains(id) || before.contains(id)),
        "{got:?}"
    );
    (m2, stand_in, during)
}

/// A coordinator paused long enough to be declared down comes back to
/// find a stand-in running its group. It stops the group when it learns it
/// was declared down, and the stand-in, once it has seen the coordinator
/// alive again for a second, gives the group back (its state merged into
/// the coordinator's copy), so the two do not go on side by side: each
/// delivering new messages to its own members, and the stand-in's members'
/// acks relayed to a coordinator that does not know them. After the move
/// every new message is delivered once and every ack is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stand_in_gives_a_group_back_to_its_returning_coordinator() {
    use crate::groups::{GroupMember, ids_of, info};

    let dir = tempfile::tempdir().unwrap();
    let query = format!("topic={}&max_inflight=1000", enc("split.>"));
    let (nodes, coordinator, x) = three_nodes_and_a_group(dir.path(), "split", &query).await;
    let others: Vec<usize> = (0..3).filter(|i| *i != x).collect();
    let mut m1 = GroupMember::join(&nodes[x], "split", &query).await;
    let before = published_and_acked(&mut m1, &nodes[others[1]], "split.a", "before", 10).await;

    let (mut m2, _, during) =
        stood_in_for(&nodes, &coordinator, x, "split", &query, "split.b", &before).await;

    signal(&nodes[x], libc::SIGCONT);
    for i in &others {
        wait_state(&nodes[*i], &coordinator, "alive").await;
    }
    // The coordinator, on learning that it was declared down, stops the
    // group; the stand-in gives it back: both streams end. Until the
    // coordinator learns it (a gossip round trip after it resumes), it may
    // deliver what the stand-in delivered meanwhile once more.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut again = Vec::new();
    for m in [&mut m1, &mut m2] {
        while !m.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the group did not move back: a member's stream goes on"
            );
            again.extend(ids_of(&m.next_batch(left).await));
        }
    }
    println!("split: delivered again while the coordinator came back: {again:?}");
    assert!(
        again.iter().all(|id| during.contains(id)),
        "nothing else was published: {again:?}"
    );
    let mut members = [
        GroupMember::join(&nodes[x], "split", &query).await,
        GroupMember::join(&nodes[others[0]], "split", &query).await,
    ];
    let after = publish_texts(&nodes[others[1]], "split.c", &texts_of("after", 100)).await;
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < after.len() {
        assert!(
            Instant::now() < deadline,
            "{} of {} messages delivered",
            seen.len(),
            after.len()
        );
        for m in &mut members {
            let got = ids_of(&m.next_batch(Duration::from_millis(50)).await);
            assert!(!m.closed, "a member's stream ended");
            if !got.is_empty() {
                m.ack(&got).await;
                seen.extend(got);
            }
        }
    }
    for m in &mut members {
        m.expect_nothing(Duration::from_millis(500), "every message was acked")
            .await;
    }
    let mut unique = sorted(&seen);
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "a message was delivered twice");
    assert_eq!(unique, sorted(&after));
    let v = info(&nodes[others[0]], "split").await;
    assert_eq!(v["coordinator"], coordinator.as_str(), "{v:#}");
}

/// The latest state of group `name` that `node` holds as recorded by
/// coordinator `by` (`$sys.groups`): messages in flight and acknowledged.
async fn recorded_state(node: &Node, name: &str, by: &str) -> Option<(usize, u64)> {
    let records = node.pull_all("$sys.groups.>").await;
    let s = records
        .iter()
        .filter_map(|m| serde_json::from_str::<Value>(m["payload"].as_str()?).ok())
        .rfind(|s| {
            s["name"] == name
                && s["origin"].as_u64().map(|o| format!("{o:016x}")).as_deref() == Some(by)
        })?;
    let state = &s["state"];
    let counters: Vec<u8> = state["counters"]
        .as_array()?
        .iter()
        .filter_map(|b| u8::try_from(b.as_u64()?).ok())
        .collect();
    let counters: Value = serde_json::from_slice(&counters).ok()?;
    Some((
        state["inflight"].as_array()?.len(),
        counters["acked"].as_u64()?,
    ))
}

/// A coordinator that comes back while the stand-in that ran its group
/// meanwhile cannot be reached (paused in turn) does not resume the group
/// from its own older copy: its take waits for the stand-in, refusing
/// joins meanwhile, until the stand-in is declared down, and then goes on
/// from the state the stand-in recorded. What the stand-in's member
/// acknowledged is not delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_coordinator_waits_for_a_stand_in_it_cannot_reach() {
    use crate::groups::{GroupMember, counter, ids_of, info};

    let dir = tempfile::tempdir().unwrap();
    let query = format!("topic={}&max_inflight=1000", enc("back.>"));
    let (nodes, coordinator, x) = three_nodes_and_a_group(dir.path(), "back", &query).await;
    let mut m1 = GroupMember::join(&nodes[x], "back", &query).await;
    let before = published_and_acked(&mut m1, &nodes[(x + 1) % 3], "back.a", "before", 10).await;
    let mut ids = Vec::new();
    for node in &nodes {
        ids.push(whoami(node).await.0);
    }
    let (m2, stand_in, during) =
        stood_in_for(&nodes, &coordinator, x, "back", &query, "back.b", &before).await;
    let s = ids.iter().position(|id| *id == stand_in).unwrap();
    let c = 3 - x - s;
    // The third node holds the stand-in's record of the group after the
    // acks.
    let acked = counter(&info(&nodes[s], "back").await, "acked");
    wait_until(
        Duration::from_secs(20),
        "the stand-in's state recorded",
        || async { recorded_state(&nodes[c], "back", &stand_in).await == Some((0, acked)) },
    )
    .await;

    signal(&nodes[s], libc::SIGSTOP);
    signal(&nodes[x], libc::SIGCONT);
    drop(m2);
    // The coordinator stops the group on learning that it was declared
    // down. Until then it may deliver the stand-in's messages once more.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut again = Vec::new();
    while !m1.closed {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the group did not stop");
        again.extend(ids_of(&m1.next_batch(left).await));
    }
    assert!(again.iter().all(|id| during.contains(id)), "{again:?}");
    // Joins through it are refused while the stand-in cannot be reached
    // and is not yet declared down.
    let mut refused = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut m3 = loop {
        match GroupMember::try_join(&nodes[x], "back", &query).await {
            Ok(m) => break m,
            Err(e) => {
                assert!(Instant::now() < deadline, "no join succeeded: {refused:?}");
                refused.push(e);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    println!("back: joins refused before the stand-in was declared down: {refused:?}");
    let after = publish_texts(&nodes[c], "back.c", &texts_of("after", 10)).await;
    let got = ids_of(&m3.recv(10, Duration::from_secs(10)).await);
    assert_eq!(
        sorted(&got),
        sorted(&after),
        "only the new messages: the stand-in's acknowledged ones are not delivered again"
    );
    m3.ack(&got).await;
    m3.expect_nothing(Duration::from_millis(500), "every message was acked")
        .await;
    let v = info(&nodes[x], "back").await;
    assert_eq!(v["coordinator"], coordinator.as_str(), "{v:#}");
    assert_eq!(counter(&v, "acked"), acked + 10, "{v:#}");
    signal(&nodes[s], libc::SIGCONT);
}

/// A peer that the membership sees alive but that answers no node-to-node
/// request (it advertises an HTTP address nothing listens on) holds group
/// takes up for a while, since it may hold a newer state of the group, but
/// not for good: joins are answered `503` at first and go through within
/// the 20 s takes wait for such a peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_answers_no_take_holds_groups_up_for_a_while_only() {
    use crate::groups::{GroupMember, ids_of};

    let dir = tempfile::tempdir().unwrap();
    let a = configured(&dir.path().join("a"), "", &[]);
    let seed = whoami(&a).await.1;
    let b = configured(&dir.path().join("b"), "", std::slice::from_ref(&seed));
    let c = configured(
        &dir.path().join("c"),
        "http_advertise = \"127.0.0.1:9\"\n",
        std::slice::from_ref(&seed),
    );
    let nodes = [a, b, c];
    let mut ids = Vec::new();
    for node in &nodes {
        ids.push(whoami(node).await.0);
    }
    for node in &nodes[..2] {
        for id in &ids {
            wait_state(node, id, "alive").await;
        }
    }
    // A group that node a or b coordinates: its take waits for c.
    let started = Instant::now();
    let mut chosen = None;
    for i in 0..20 {
        let name = format!("held{i}");
        let query = format!("topic={}&max_inflight=100", enc(&format!("{name}.>")));
        let path = format!("/v1/events?group={name}&{query}");
        let (status, _, body) = nodes[0].raw(nodes[0].request("GET", &path), "").await;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert_eq!(status, 503, "{v}");
        if v["detail"]
            .as_str()
            .is_some_and(|d| d.contains("did not answer"))
        {
            chosen = Some((name, query));
            break;
        }
    }
    let (name, query) = chosen.expect("a group that node a or b coordinates");
    let mut refused = 1;
    let mut m = loop {
        match GroupMember::try_join(&nodes[0], &name, &query).await {
            Ok(m) => break m,
            Err(e) => {
                refused += 1;
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "joins are still refused: {e}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    println!(
        "held: the group was joined {:?} after the first refusal, {refused} refusals",
        started.elapsed()
    );
    assert!(
        nodes[0].log().contains("without a live peer")
            || nodes[1].log().contains("without a live peer"),
        "the node that took the group over logs that it went on without c"
    );
    let topic = format!("{name}.x");
    let sent = publish_texts(&nodes[1], &topic, &texts_of("m", 5)).await;
    let got = ids_of(&m.recv(5, Duration::from_secs(10)).await);
    assert_eq!(sorted(&got), sorted(&sent));
}

/// A coordinator declared down (paused until the others see it down)
/// whose group no other node took meanwhile stops the group when it
/// learns it, and the group's next use there goes on from its stored
/// state: what was acknowledged is not delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_declared_down_goes_on_from_its_groups_state() {
    use crate::groups::{GroupMember, counter, ids_of, info};

    let dir = tempfile::tempdir().unwrap();
    let query = format!("topic={}&max_inflight=1000&from=earliest", enc("kept.>"));
    let (nodes, coordinator, x) = three_nodes_and_a_group(dir.path(), "kept", &query).await;
    let other = (x + 1) % 3;
    let mut m = GroupMember::join(&nodes[x], "kept", &query).await;
    published_and_acked(&mut m, &nodes[other], "kept.a", "before", 20).await;

    signal(&nodes[x], libc::SIGSTOP);
    wait_state(&nodes[other], &coordinator, "down").await;
    signal(&nodes[x], libc::SIGCONT);
    wait_state(&nodes[other], &coordinator, "alive").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !m.closed {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the group did not stop");
        let got = ids_of(&m.next_batch(left).await);
        assert!(got.is_empty(), "nothing new was published: {got:?}");
    }
    let mut m = GroupMember::join(&nodes[x], "kept", &query).await;
    published_and_acked(&mut m, &nodes[other], "kept.b", "after", 20).await;
    m.expect_nothing(Duration::from_millis(500), "every message was acked")
        .await;
    let v = info(&nodes[x], "kept").await;
    assert_eq!(counter(&v, "acked"), 40, "{v:#}");
}

/// A node that sees fewer than a majority of the members coordinates no
/// group: cut off from both others (they are paused until it declares
/// them down), the coordinator stops its group, and a join through it is
/// answered `503 unavailable`, naming the majority, while it publishes on
/// with `acks=local`. Once the others are back, the group goes on from
/// its state and delivers what was published meanwhile, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_majority_coordinates_no_group() {
    use crate::groups::{GroupMember, counter, ids_of, info};

    let dir = tempfile::tempdir().unwrap();
    let query = format!("topic={}&max_inflight=1000&from=earliest", enc("side.>"));
    let (nodes, coordinator, x) = three_nodes_and_a_group(dir.path(), "side", &query).await;
    let others: Vec<usize> = (0..3).filter(|i| *i != x).collect();
    let mut m = GroupMember::join(&nodes[x], "side", &query).await;
    published_and_acked(&mut m, &nodes[x], "side.a", "before", 10).await;

    let mut other_ids = Vec::new();
    for i in &others {
        other_ids.push(whoami(&nodes[*i]).await.0);
        signal(&nodes[*i], libc::SIGSTOP);
    }
    for id in &other_ids {
        wait_state(&nodes[x], id, "down").await;
    }
    // The running coordinator stops: the member's stream ends.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !m.closed {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the group did not stop on the minority side"
        );
        let got = ids_of(&m.next_batch(left).await);
        assert!(got.is_empty(), "nothing new was published: {got:?}");
    }
    let path = format!("/v1/events?group=side&{query}");
    let (status, _, body) = nodes[x].raw(nodes[x].request("GET", &path), "").await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["code"], "unavailable", "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("not a majority"),
        "{v}"
    );
    // Publishing goes on where it does not ask for copies.
    let mut during = Vec::new();
    for t in texts_of("during", 5) {
        let req = nodes[x]
            .request("POST", "/v1/topics/side.b?acks=local")
            .header("content-type", "text/plain");
        let (status, _, body) = nodes[x].raw(req, t).await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 201, "{v}");
        during.push(v["id"].as_str().unwrap().to_owned());
    }
    assert!(
        nodes[x].log().contains("fewer than a majority"),
        "the node logs why it stopped its groups"
    );

    for i in &others {
        signal(&nodes[*i], libc::SIGCONT);
    }
    for id in &other_ids {
        wait_state(&nodes[x], id, "alive").await;
    }
    // Joins may be refused while the nodes' views converge.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut m = loop {
        let (status, _, _) = nodes[x]
            .raw(nodes[x].request("GET", "/v1/groups/side"), "")
            .await;
        if status == 200 {
            break GroupMember::join(&nodes[x], "side", &query).await;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not come back: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let got = ids_of(&m.recv(5, Duration::from_secs(10)).await);
    assert_eq!(sorted(&got), sorted(&during));
    m.ack(&got).await;
    m.expect_nothing(Duration::from_millis(500), "every message was acked")
        .await;
    let v = info(&nodes[x], "side").await;
    assert_eq!(counter(&v, "acked"), 15, "{v:#}");
    assert_eq!(v["coordinator"], coordinator.as_str(), "{v:#}");
}

/// The first reproduction again with the default replication: B, which
/// follows only `u`, holds A's whole log as A's replica, so once A is dead
/// B's pull from the start returns all of A's `jobs` messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replication_a_dead_origins_messages_are_pulled_from_its_replica() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, ids) = start_cluster(dir.path(), 2).await;
    let jobs = texts_of("job", 100);
    // `acks=quorum` by default: each publish is answered once B holds it.
    let _follow = past_unfollowed(&nodes, "jobs", &jobs).await;
    nodes[0].kill9();
    wait_state(&nodes[1], &ids[0].0, "down").await;
    let v = nodes[1]
        .get_json("/v1/messages?topic=jobs&from=earliest&limit=1000")
        .await;
    assert_eq!(payloads(&v), jobs, "{v:#}");
    assert_eq!(v["gaps"], serde_json::json!([]), "{v:#}");
    // With A down, B alone cannot give a publish a quorum of two copies:
    // `quorum` answers 503, `local` is stored.
    let (status, _, body) = nodes[1]
        .raw(nodes[1].request("POST", "/v1/topics/jobs"), "alone")
        .await;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = nodes[1]
        .raw(
            nodes[1].request("POST", "/v1/topics/jobs?acks=local"),
            "alone-local",
        )
        .await;
    assert_eq!(status, 201);
}

/// Reads `n` messages from `sse` (JSON format) as (payload, origin,
/// message id), and the event id of the last one (to resume from).
async fn stream_ids(
    sse: &mut Sse,
    n: usize,
    within: Duration,
) -> (Vec<(String, String, Option<String>)>, Option<String>) {
    let read = read_events(sse, n, within).await;
    let last = read.last().and_then(|r| r.event_id.clone());
    let got = read
        .into_iter()
        .map(|r| (r.payload, r.origin, r.id))
        .collect();
    (got, last)
}

/// Pull every message of `pattern` from `node`: (payload, origin, id).
async fn pulled(node: &Node, pattern: &str) -> Vec<(String, String, Option<String>)> {
    node.pull_all(pattern)
        .await
        .iter()
        .map(|m| {
            (
                m["payload"].as_str().unwrap().to_owned(),
                m["origin"].as_str().unwrap().to_owned(),
                m["id"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// Checks that `got` holds exactly the messages `published` (ids), in
/// per-origin order.
fn assert_all_once(got: &[(String, String, Option<String>)], published: &[String], what: &str) {
    assert_origin_order(got);
    let mut ids: Vec<&str> = got.iter().filter_map(|(_, _, id)| id.as_deref()).collect();
    ids.sort_unstable();
    let mut want: Vec<&str> = published.iter().map(String::as_str).collect();
    want.sort_unstable();
    let missing = want
        .iter()
        .filter(|id| ids.binary_search(id).is_err())
        .count();
    assert_eq!(
        missing, 0,
        "{what}: {missing} acknowledged messages missing"
    );
    assert_eq!(ids.len(), want.len(), "{what}: repeats or strangers");
}

/// Three nodes with the default replication (3 copies, `acks=quorum`):
/// 5,010 messages published across them, then one node is killed and its
/// data directory deleted. Both survivors hold every acknowledged message,
/// in per-origin order; the node returns empty as a new origin, and reads
/// the old origin's log from the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_messages_survive_a_node_killed_with_its_disk() {
    use serde_json::json;

    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, ids) = start_cluster(dir.path(), 3).await;
    let mut published = Vec::new();
    for round in 0..10 {
        for (i, node) in nodes.iter().enumerate() {
            let entries: Vec<Value> = (0..167)
                .map(|j| json!({"topic": format!("d.n{i}"), "payload": format!("{i}-{}", round * 167 + j)}))
                .collect();
            published.extend(publish_batch(node, "d.x", &entries).await);
        }
    }
    assert_eq!(published.len(), 5010);
    nodes[0].kill9();
    std::fs::remove_dir_all(dir.path().join("n0")).unwrap();
    for node in &nodes[1..] {
        let got = pulled(node, "d.>").await;
        assert_all_once(&got, &published, "a survivor");
    }
    // The node returns with an empty directory: a new origin.
    nodes[0] = member(
        &dir.path().join("n0"),
        KEY,
        "127.0.0.1:0",
        std::slice::from_ref(&ids[1].1),
    );
    let (new_id, _) = whoami(&nodes[0]).await;
    assert_ne!(new_id, ids[0].0);
    for node in &nodes[1..] {
        wait_state(node, &new_id, "alive").await;
    }
    // It learns of the old origin from the others' gossip, and once it too
    // sees that one down, reads its log through a node that holds it.
    wait_state(&nodes[0], &ids[0].0, "down").await;
    published.extend(publish_texts(&nodes[0], "d.new", &["new-0".to_owned()]).await);
    for (i, node) in nodes.iter().enumerate() {
        let got = pulled(node, "d.>").await;
        assert_all_once(&got, &published, &format!("node {i}"));
    }
}

/// Failover of a stream: B's subscriber follows A's topic, but B is paused
/// while A publishes (acknowledged with `acks=quorum` by C), and A is
/// killed before B resumes. B's subscriber receives every one of those
/// messages, from C, within 3 s of A's death.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_gets_a_dead_origins_last_messages_from_a_replica() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, _) = start_cluster(dir.path(), 3).await;
    let mut sse = Sse::connect(&nodes[1], "/v1/events?topic=f&format=json", None)
        .await
        .unwrap();
    let warm = publish_texts(&nodes[0], "f", &["0-0".to_owned()]).await;
    assert_eq!(
        read_messages(&mut sse, 1, Duration::from_secs(10))
            .await
            .len(),
        warm.len()
    );
    signal(&nodes[1], libc::SIGSTOP);
    // A answers B's waiting pull with the first batch (it may sit in B's
    // socket); the second needs a pull B cannot make before A is dead.
    let texts: Vec<String> = (1..=110).map(|i| format!("0-{i}")).collect();
    publish_texts(&nodes[0], "f", &texts[..10]).await;
    publish_texts(&nodes[0], "f", &texts[10..]).await;
    let killed = Instant::now();
    nodes[0].kill9();
    signal(&nodes[1], libc::SIGCONT);
    let got = read_messages(&mut sse, 110, Duration::from_secs(20)).await;
    let took = killed.elapsed();
    println!("failover: a stream had the dead origin's last messages {took:?} after the kill");
    assert_origin_order(&got);
    let payloads: Vec<&str> = got.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(payloads, texts);
    assert!(took < Duration::from_secs(3), "failover took {took:?}");
}

/// An origin paused (SIGSTOP) for 10 s while the others go on publishing
/// with `acks=quorum`: nothing is lost, and streams on every node, one of
/// them resumed with `Last-Event-ID` halfway, get every message once, in
/// per-origin order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_origin_loses_nothing_and_resumed_streams_repeat_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, _) = start_cluster(dir.path(), 3).await;
    let path = "/v1/events?topic=p.%3E&from=earliest&format=json";
    let mut on_b = Sse::connect(&nodes[1], path, None).await.unwrap();
    let mut on_c = Sse::connect(&nodes[2], path, None).await.unwrap();
    let mut next = [0usize; 3];
    let mut published = Vec::new();
    let mut publish = async |node: usize, n: usize, published: &mut Vec<String>| {
        let texts: Vec<String> = (0..n)
            .map(|k| format!("{node}-{}", next[node] + k))
            .collect();
        next[node] += n;
        let body: Vec<Value> = texts
            .iter()
            .map(|t| serde_json::json!({"topic": format!("p.n{node}"), "payload": t}))
            .collect();
        // `acks=quorum`, the default in a cluster.
        published.extend(publish_batch(&nodes[node], "p.x", &body).await);
    };
    publish(0, 50, &mut published).await;
    signal(&nodes[0], libc::SIGSTOP);
    let paused = Instant::now();
    let mut rounds = 0;
    while paused.elapsed() < Duration::from_secs(10) {
        publish(1 + rounds % 2, 10, &mut published).await;
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&nodes[0], libc::SIGCONT);
    publish(0, 50, &mut published).await;
    publish(1, 10, &mut published).await;
    let total = published.len();
    // B's stream is resumed halfway from the last id it saw.
    let (first, last_id) = stream_ids(&mut on_b, total / 2, Duration::from_secs(30)).await;
    drop(on_b);
    let mut on_b = Sse::connect(&nodes[1], path, last_id.as_deref())
        .await
        .unwrap();
    let (rest, _) = stream_ids(&mut on_b, total - first.len(), Duration::from_secs(30)).await;
    let got_b: Vec<_> = first.into_iter().chain(rest).collect();
    let (got_c, _) = stream_ids(&mut on_c, total, Duration::from_secs(30)).await;
    let mut on_a = Sse::connect(&nodes[0], path, None).await.unwrap();
    let (got_a, _) = stream_ids(&mut on_a, total, Duration::from_secs(30)).await;
    for (name, got) in [("A", &got_a), ("B", &got_b), ("C", &got_c)] {
        assert_all_once(got, &published, name);
    }
    for sse in [&mut on_a, &mut on_b, &mut on_c] {
        let extra = sse.next(Duration::from_millis(300)).await;
        assert!(
            extra.as_ref().is_none_or(|e| e.event != "message"),
            "a repeat: {extra:?}"
        );
    }
}

/// The replicas of `origin`'s log as `node` sees them.
async fn replicas_of(node: &Node, origin: &str) -> Vec<String> {
    let r = &cluster_view(node).await["replication"];
    r["origins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["origin"] == origin)
        .and_then(|o| o["replicas"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|x| x["node"].as_str().map(str::to_owned))
        .collect()
}

/// Three nodes with a replication factor of 2; returns them, their ids,
/// the index of the node that is not a replica of the first node's log
/// (it holds no copy of the first node's messages unless it follows
/// them), and the ids of that log's replicas.
async fn with_an_outsider(dir: &Path) -> (Vec<Node>, Vec<(String, String)>, usize, Vec<String>) {
    let (nodes, ids) = start_cluster_with(dir, 3, &["--replication-factor", "2"]).await;
    let a_id = &ids[0].0;
    // Every node names the same single replica of A's log (a view taken
    // while the membership still converges may name another node).
    wait_until(Duration::from_secs(20), "A's replica agreed on", || async {
        let mut seen = Vec::new();
        for node in &nodes {
            seen.push(replicas_of(node, a_id).await);
        }
        seen[0].len() == 1 && seen.iter().all(|r| *r == seen[0])
    })
    .await;
    let replicas = replicas_of(&nodes[0], a_id).await;
    let outsider = (1..3).find(|i| !replicas.contains(&ids[*i].0)).unwrap();
    (nodes, ids, outsider, replicas)
}

/// A repeat of an idempotent publish that reaches a node holding no copy of
/// the original (not one of its origin's replicas) is answered with the
/// original: the node asks its peers before storing. It acknowledges only
/// the copies the peers vouch for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_on_a_node_without_a_copy_finds_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, ids, outsider, replicas) = with_an_outsider(dir.path()).await;
    let outsider = &nodes[outsider];
    let keyed = |node: &Node| {
        node.request("POST", "/v1/topics/idem.x")
            .header("idempotency-key", "order-7")
    };
    let (status, _, body) = nodes[0].raw(keyed(&nodes[0]), "first").await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let first: Value = serde_json::from_slice(&body).unwrap();
    let (status, headers, body) = outsider.raw(keyed(outsider), "again").await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let again: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(again["id"], first["id"], "{again:#}");
    assert_eq!(again["duplicate"], true, "{again:#}");
    assert_eq!(headers["idempotent-replayed"], "true");
    // With A's replica paused, only A vouches for the original: one copy
    // is not the quorum of two, so the repeat is no acknowledgement (and
    // stores nothing, below).
    let replica = (1..3).find(|i| replicas.contains(&ids[*i].0)).unwrap();
    signal(&nodes[replica], libc::SIGSTOP);
    let (status, _, body) = outsider.raw(keyed(outsider), "again").await;
    signal(&nodes[replica], libc::SIGCONT);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 503, "{v:#}");
    assert_eq!(v["code"], "not_replicated", "{v:#}");
    assert_eq!(v["copies"]["reached"], 1, "{v:#}");
    for node in &nodes {
        let v = node
            .get_json("/v1/messages?topic=idem.x&from=earliest")
            .await;
        assert_eq!(payloads(&v), ["first"], "{v:#}");
    }
}

/// The same with a route plugin bound (a binding changes how publishes are
/// stored): the node that holds no copy answers a repeat with the original,
/// rerouted message instead of storing a second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_elsewhere_is_found_while_a_route_plugin_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, _, outsider, _) = with_an_outsider(dir.path()).await;
    let config = enc(r#"{"field": "/region"}"#);
    let query = format!("hook=route&topic=orders&config={config}");
    let (status, v) = nodes[0]
        .put_plugin("region", &query, guest_wasm("field_router"))
        .await;
    assert_eq!(status, 201, "{v}");
    let keyed = |node: &Node| {
        node.request("POST", "/v1/topics/orders")
            .header("idempotency-key", "order-9")
    };
    let body = r#"{"region":"eu"}"#;
    // Every node runs the binding once a publish there is rerouted.
    for (i, node) in nodes.iter().enumerate().filter(|(i, _)| *i != outsider) {
        wait_until(Duration::from_secs(10), "the binding runs", || async {
            let req = node.request("POST", "/v1/topics/orders");
            let (_, _, answer) = node.raw(req, format!(r#"{{"region":"n{i}"}}"#)).await;
            serde_json::from_slice::<Value>(&answer).is_ok_and(|v| {
                v["topic"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("orders.n"))
            })
        })
        .await;
    }
    let (status, _, answer) = nodes[0].raw(keyed(&nodes[0]), body).await;
    let first: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["topic"], "orders.eu", "{first}");
    let o = &nodes[outsider];
    wait_until(
        Duration::from_secs(10),
        "the binding runs there",
        || async {
            let req = o.request("POST", "/v1/topics/orders");
            let (_, _, answer) = o.raw(req, r#"{"region":"probe"}"#).await;
            serde_json::from_slice::<Value>(&answer).is_ok_and(|v| v["topic"] == "orders.probe")
        },
    )
    .await;
    let (status, headers, answer) = o.raw(keyed(o), body).await;
    let again: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["id"], first["id"], "the original answers: {again:#}");
    assert_eq!(again["duplicate"], true, "{again:#}");
    assert_eq!(headers["idempotent-replayed"], "true");
    let v = nodes[0]
        .get_json("/v1/messages?topic=orders.eu&from=earliest")
        .await;
    assert_eq!(payloads(&v), [body], "{v:#}");
    let v = o
        .get_json("/v1/messages?topic=orders.eu&from=earliest")
        .await;
    assert_eq!(payloads(&v), [body], "one copy: {v:#}");
}

/// A keyed publish says when its key could not be checked with every
/// member that may hold a copy: a member that does not answer (paused),
/// one that went down within the idempotency window, or any member at
/// all when the node knows no live peer. A retry that
/// moved there from a node it cannot reach may then store a second copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_publish_says_when_a_member_could_not_be_asked() {
    let _serial = TIMING.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, ids) = start_cluster(dir.path(), 3).await;
    let publish = |node: &Node, key: &str| {
        node.request("POST", "/v1/topics/idem.k?acks=local")
            .header("idempotency-key", key)
    };
    let answer = |(status, _, body): (u16, http::HeaderMap, bytes::Bytes)| {
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice::<Value>(&body).unwrap()
    };
    let all_there = answer(nodes[0].raw(publish(&nodes[0], "k-1"), "1").await);
    assert!(all_there.get("key_checked").is_none(), "{all_there}");
    // A paused member does not answer the lookup.
    signal(&nodes[2], libc::SIGSTOP);
    let paused = answer(nodes[0].raw(publish(&nodes[0], "k-2"), "2").await);
    signal(&nodes[2], libc::SIGCONT);
    assert_eq!(paused["key_checked"], false, "{paused}");
    // A repeat it already holds is an answer, not a new copy.
    signal(&nodes[2], libc::SIGSTOP);
    let repeat = answer(nodes[0].raw(publish(&nodes[0], "k-2"), "2").await);
    signal(&nodes[2], libc::SIGCONT);
    assert_eq!(repeat["duplicate"], true, "{repeat}");
    assert!(repeat.get("key_checked").is_none(), "{repeat}");
    // A member down within the window may hold a copy; so may one that
    // left on purpose.
    nodes[2].kill9();
    wait_state(&nodes[0], &ids[2].0, "down").await;
    let down = answer(nodes[0].raw(publish(&nodes[0], "k-3"), "3").await);
    assert_eq!(down["key_checked"], false, "{down}");
    // Without a key there is nothing to check.
    let plain = answer(
        nodes[0]
            .raw(
                nodes[0].request("POST", "/v1/topics/idem.k?acks=local"),
                "4",
            )
            .await,
    );
    assert!(plain.get("key_checked").is_none(), "{plain}");
    // A member that knows no live peer (one that has not joined yet, here
    // one started without seeds) cannot have asked anyone.
    let lone = member(&dir.path().join("lone"), KEY, "127.0.0.1:0", &[]);
    let alone = answer(lone.raw(publish(&lone, "k-5"), "5").await);
    assert_eq!(alone["key_checked"], false, "{alone}");
}

/// A replica remembers across a restart that it holds an origin's whole
/// log: once the origin and the other replica are gone, it still serves
/// the origin's messages, although no live peer could vouch for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_still_serves_a_dead_origins_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, ids) = start_cluster(dir.path(), 3).await;
    let texts = texts_of("w", 50);
    // acks=quorum and then acks=all: both replicas hold every message.
    publish_texts(&nodes[0], "whole.x", &texts).await;
    let (status, _, body) = nodes[0]
        .raw(
            nodes[0].request("POST", "/v1/topics/whole.y?acks=all"),
            "last",
        )
        .await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    nodes[0].kill9();
    // B restarts on its directory, then C is gone too.
    nodes[1].kill9();
    nodes[1] = member(
        &dir.path().join("n1"),
        KEY,
        "127.0.0.1:0",
        std::slice::from_ref(&ids[2].1),
    );
    wait_state(&nodes[1], &ids[2].0, "alive").await;
    nodes[2].kill9();
    wait_state(&nodes[1], &ids[2].0, "down").await;
    let v = nodes[1]
        .get_json("/v1/messages?topic=whole.x&from=earliest&limit=100")
        .await;
    assert_eq!(payloads(&v), texts, "{v:#}");
    assert_eq!(v["gaps"], serde_json::json!([]), "{v:#}");
}

/// The limit on groups created without admin rights holds for joins a
/// node relays to the group's coordinator too: the relaying node marks
/// them, and a client cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_joins_without_admin_rights_are_limited_too() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[cluster]\nkey = \"{KEY}\"\n[auth]\n{}\nanonymous = \"subscribe\"\n\
         [limits]\nmax_groups_without_admin = 0\n",
        crate::auth::secret_config()
    );
    let start = |d: &Path, seeds: &[String]| {
        std::fs::create_dir_all(d).unwrap();
        let mut args = vec!["--fsync", "never", "--gossip-listen", "127.0.0.1:0"];
        for s in seeds {
            args.extend(["--join", s.as_str()]);
        }
        Node::start_with_config(d, &toml, &args)
    };
    let a = start(&dir.path().join("a"), &[]);
    let (a_id, seed) = whoami(&a).await;
    let b = start(&dir.path().join("b"), std::slice::from_ref(&seed));
    let (b_id, _) = whoami(&b).await;
    wait_state(&b, &a_id, "alive").await;
    wait_state(&a, &b_id, "alive").await;
    // Which node coordinates a group follows from the node ids, which are
    // random: with 8 groups, all of them fell to B in about one run in 256.
    let names: Vec<String> = (0..24).map(|i| format!("g{i}")).collect();
    let join = |g: &str| format!("/v1/events?topic=jobs&group={g}");
    for g in &names {
        let status = crate::auth::status_of(
            b.request("GET", &join(g))
                .header("switchyard-join-without-admin", "0"),
        )
        .await;
        assert_eq!(status, 403, "{g}");
    }
    let admin = crate::auth::hs_token(&[], &[">"], true);
    let mut relayed = 0;
    for g in &names {
        let req = b
            .request("GET", &join(g))
            .header("authorization", format!("Bearer {admin}"));
        assert_eq!(crate::auth::status_of(req).await, 200, "{g}");
        let v = b.get_json(&format!("/v1/groups/{g}")).await;
        if v["coordinator"] == a_id.as_str() {
            relayed += 1;
        }
    }
    assert!(relayed > 0, "some of the groups are coordinated by A");
}

/// A graceful leave waits until the replicas hold the leaving node's whole
/// log: A's replicas are paused while A stores messages with `acks=local`
/// and is told to stop; A is still there when they resume, and once it has
/// gone (and its data directory with it) both of them serve every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_waits_until_its_replicas_hold_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, _) = start_cluster(dir.path(), 3).await;
    let warm = publish_texts(&nodes[0], "gl", &["gl-0".to_owned()]).await;
    for node in &nodes[1..] {
        signal(node, libc::SIGSTOP);
    }
    let mut published = warm;
    for chunk in 0..4 {
        let entries: Vec<Value> = (0..50)
            .map(|i| serde_json::json!({"payload": format!("gl-{}", 1 + chunk * 50 + i)}))
            .collect();
        let req = nodes[0]
            .request("POST", "/v1/batch?topic=gl&acks=local")
            .header("content-type", "application/json");
        let (status, _, body) = nodes[0]
            .raw(req, serde_json::to_vec(&entries).unwrap())
            .await;
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["results"][0]["copies"], 1, "{v:#}");
        published.extend(
            v["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned()),
        );
    }
    signal(&nodes[0], libc::SIGTERM);
    // Shorter than the suspect timeout, so A still counts them as live
    // replicas it must wait for.
    assert!(
        !nodes[0].wait_exit(Duration::from_millis(1000)),
        "A left while its replicas lacked its last messages"
    );
    for node in &nodes[1..] {
        signal(node, libc::SIGCONT);
    }
    assert!(nodes[0].wait_exit(Duration::from_secs(15)), "A never left");
    std::fs::remove_dir_all(dir.path().join("n0")).unwrap();
    for (i, node) in nodes.iter().enumerate().skip(1) {
        let got = pulled(node, "gl").await;
        assert_all_once(&got, &published, &format!("replica {i}"));
    }
}

/// A value of `/metrics`: the sample line that starts with `series`
/// (name and labels, as the node writes them).
async fn metric(node: &Node, series: &str) -> Option<f64> {
    let (status, _, body) = node.raw(node.request("GET", "/metrics"), "").await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body.to_vec()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_show_the_members_and_how_far_each_replica_holds_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, ids) = start_cluster(dir.path(), 3).await;
    let (a, b) = (&nodes[0], &ids[1].0);
    assert_eq!(
        metric(a, r#"switchyard_cluster_members{state="alive"}"#).await,
        Some(3.0)
    );
    assert_eq!(metric(a, "switchyard_replication_factor").await, Some(3.0));
    for i in 0..20 {
        a.publish("m.t", format!("{i}")).await;
    }
    let lag_of_b = format!(r#"switchyard_replication_lag_messages{{replica="{b}"}}"#);
    wait_until(Duration::from_secs(10), "B holds A's log", || async {
        metric(a, &lag_of_b).await == Some(0.0)
    })
    .await;
    let held = format!(
        r#"switchyard_replication_held_through{{origin="{}",replica="{b}"}}"#,
        ids[0].0
    );
    // A's log holds the 20 messages and its `$sys.cluster` events.
    assert!(metric(a, &held).await.is_some_and(|h| h >= 20.0));
    // A paused replica falls behind by what A stores meanwhile (a quorum
    // still answers: A and C).
    signal(&nodes[1], libc::SIGSTOP);
    for i in 0..7 {
        a.publish("m.t", format!("late {i}")).await;
    }
    // (At least: a `$sys.cluster` event about B may join them.)
    assert!(metric(a, &lag_of_b).await.is_some_and(|l| l >= 7.0));
    signal(&nodes[1], libc::SIGCONT);
    wait_until(Duration::from_secs(10), "B catches up", || async {
        metric(a, &lag_of_b).await == Some(0.0)
    })
    .await;
    let stored = metric(a, r#"switchyard_published_messages_total{result="stored"}"#).await;
    assert_eq!(stored, Some(27.0));
}
