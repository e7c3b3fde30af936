//! Load generator for consumer groups, built on the crate's own HTTP client
//! and SSE parser. Each invocation runs one case against a running node and
//! prints one JSON line with the result (progress goes to stderr);
//! `bench/groups.sh` runs the cases in rounds and makes the table.
//!
//! ```text
//! group_bench prepare --topic T --messages N [--size B]
//! group_bench drain   --topic T --messages N --members K [--max-inflight F] [--coalesce]
//! group_bench live    --members K (0: publishers alone) [--publishers P] [--duration S] [--size B]
//! group_bench latency [--members K] [--rate R] [--duration S] [--size B]
//! ```
//!
//! Common options: `--url` (default `http://127.0.0.1:7072`), `--pid` (the
//! node's process id, to report its CPU time), `--group` and `--topic`
//! (default: fresh names).
//!
//! A member reads its SSE stream on one connection and acknowledges on
//! another: every chunk the stream yields becomes one `POST
//! /v1/groups/{g}/ack` with the ids it carried (with `--coalesce`, the ids
//! of every chunk that arrived while the previous acknowledgement was out).
//! The stream is read by its own task, so a pending acknowledgement does
//! not delay when a message is seen. The harness checks that every message
//! was acknowledged exactly once, from the ack answers and from the group's
//! own counters.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use switchyard::client::Client;
use switchyard::sse::SseParser;
use tokio::sync::{Notify, mpsc, watch};

/// Command-line options: `--name value` pairs and bare `--flag`s.
struct Args {
    mode: String,
    opts: HashMap<String, String>,
}

impl Args {
    fn parse() -> Result<Args> {
        let mut it = std::env::args().skip(1).peekable();
        let mode = it
            .next()
            .context("usage: group_bench prepare|drain|live|latency [--option value]...")?;
        let mut opts = HashMap::new();
        while let Some(a) = it.next() {
            let Some(name) = a.strip_prefix("--") else {
                bail!("unexpected argument {a:?}");
            };
            let value = match it.peek() {
                Some(v) if !v.starts_with("--") => it.next().unwrap_or_default(),
                _ => "true".to_owned(),
            };
            opts.insert(name.to_owned(), value);
        }
        Ok(Args { mode, opts })
    }

    fn s(&self, name: &str, default: &str) -> String {
        self.opts
            .get(name)
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    }

    fn n<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T> {
        match self.opts.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| anyhow::anyhow!("--{name} {v:?} is not a number")),
        }
    }

    fn flag(&self, name: &str) -> bool {
        self.opts.contains_key(name)
    }
}

/// Microseconds on a monotonic clock shared by every task of the process.
fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// A payload of `size` bytes starting with the sequence number and the send
/// time (`now_us`).
fn payload(seq: u64, sent_us: u64, size: usize) -> String {
    let mut p = format!("{seq} {sent_us} ");
    while p.len() < size {
        p.push('x');
    }
    p
}

/// The sequence number and send time of a payload made by [`payload`].
fn stamp(data: &str) -> Option<(u64, u64)> {
    let mut it = data.split(' ');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// CPU seconds (user + system) of a process, from `/proc/<pid>/stat`.
#[allow(unsafe_code)]
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// Busy CPU seconds of the whole machine, from `/proc/stat`.
#[allow(unsafe_code)]
fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: user, nice, system and
    // steal. Interrupts are left out: on loopback they are mostly the
    // benchmark's own traffic, which no process is charged for.
    let busy = f.get(..8).map(|f| f[0] + f[1] + f[2] + f[7])?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(busy / hz)
}

/// CPU time of the node (`--pid`), of this process and of everything else
/// on the machine over one case.
struct Cpu {
    pid: Option<String>,
    node: Option<f64>,
    own: Option<f64>,
    machine: Option<f64>,
}

impl Cpu {
    fn start(args: &Args) -> Cpu {
        let pid = args.opts.get("pid").cloned();
        Cpu {
            node: pid.as_deref().and_then(cpu_seconds),
            own: cpu_seconds("self"),
            machine: machine_busy_seconds(),
            pid,
        }
    }

    /// `{"node_cpu_s", "bench_cpu_s", "other_cpu_s"}` since [`Cpu::start`]:
    /// `other_cpu_s` is what the rest of the machine used meanwhile.
    fn stop(&self) -> Value {
        let node = match (&self.pid, self.node) {
            (Some(p), Some(a)) => cpu_seconds(p).map(|b| b - a),
            _ => None,
        };
        let own = self.own.and_then(|a| cpu_seconds("self").map(|b| b - a));
        let machine = self
            .machine
            .and_then(|a| machine_busy_seconds().map(|b| b - a));
        let other = match (machine, node, own) {
            (Some(m), Some(n), Some(o)) => Some((m - n - o).max(0.0)),
            _ => None,
        };
        json!({"node_cpu_s": node, "bench_cpu_s": own, "other_cpu_s": other})
    }
}

/// Latency percentiles in milliseconds of samples in microseconds.
fn percentiles(mut v: Vec<u64>) -> Value {
    if v.is_empty() {
        return json!({"n": 0});
    }
    v.sort_unstable();
    let p = |q: f64| {
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[i] as f64 / 1000.0
    };
    json!({"n": v.len(), "p50": p(0.50), "p90": p(0.90), "p99": p(0.99), "max": p(1.0)})
}

fn unique_name(prefix: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{prefix}-{}-{}", t.as_secs() % 100_000, t.subsec_micros())
}

fn query(pairs: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    q.finish()
}

/// Opens an SSE stream.
async fn open_stream(client: &Client, path: &str) -> Result<hyper::body::Incoming> {
    let req = client
        .request(http::Method::GET, path)
        .header("accept", "text/event-stream")
        .body(Full::new(Bytes::new()))?;
    Ok(client.send(req).await?.into_body())
}

/// What all members of one case share.
struct Shared {
    /// Ids the node said were applied, over all members.
    applied: AtomicU64,
    /// `applied` at which `done` is notified.
    target: AtomicU64,
    done: Notify,
    /// Members that have read their `joined` event.
    joined: AtomicUsize,
    stop: watch::Receiver<bool>,
}

/// What one member saw.
#[derive(Default)]
struct MemberReport {
    /// Ids received, redeliveries included.
    received: Vec<String>,
    /// Ids the ack answers listed as applied.
    applied: Vec<String>,
    /// Ids the ack answers listed as stale.
    stale: u64,
    /// Acknowledgement requests and chunks read.
    acks: u64,
    chunks: u64,
    /// Publish → receipt latencies (µs) and sequence numbers, when stamped.
    latencies: Vec<u64>,
    seqs: Vec<u64>,
}

/// One group member: joins, reads its stream on one connection and acks on
/// another until `stop`.
async fn member(
    url: String,
    group: String,
    topic: String,
    from: &'static str,
    max_inflight: u32,
    coalesce: bool,
    shared: Arc<Shared>,
) -> Result<MemberReport> {
    let client = Client::new(&url)?;
    let inflight = max_inflight.to_string();
    let path = format!(
        "/v1/events?{}",
        query(&[
            ("group", &group),
            ("topic", &topic),
            ("from", from),
            ("ack", "manual"),
            ("max_inflight", &inflight),
        ])
    );
    let mut body = open_stream(&client, &path).await.context("joining")?;
    let mut parser = SseParser::new();
    let mut report = MemberReport::default();
    let (tx, rx) = mpsc::unbounded_channel::<Vec<String>>();
    let mut rx = Some(rx);
    let mut acker = None;
    let mut stop = shared.stop.clone();
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Some(frame) = frame else {
            bail!("the member's stream ended");
        };
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        let at = now_us();
        let mut ids = Vec::new();
        for event in parser.push(&data) {
            if event.event == "joined" {
                let v: Value = serde_json::from_str(&event.data)?;
                let id = v["member"].as_str().context("joined without member")?;
                acker = Some(tokio::spawn(ack_loop(
                    url.clone(),
                    format!("/v1/groups/{group}/ack"),
                    id.to_owned(),
                    rx.take().context("joined twice")?,
                    coalesce,
                    shared.clone(),
                )));
                shared.joined.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            if event.event != "message" {
                continue;
            }
            let id = event.id.context("a message without an id")?;
            if let Some((seq, sent)) = stamp(&event.data) {
                if sent > 0 {
                    report.latencies.push(at.saturating_sub(sent));
                }
                report.seqs.push(seq);
            }
            report.received.push(id.clone());
            ids.push(id);
        }
        if !ids.is_empty() {
            report.chunks += 1;
            let _ = tx.send(ids);
        }
    }
    drop(tx);
    if let Some(a) = acker {
        let (applied, stale, acks) = a.await??;
        report.applied = applied;
        report.stale = stale;
        report.acks = acks;
    }
    Ok(report)
}

/// Acknowledges each batch of ids from `rx` in one request on its own
/// connection; returns the applied ids, the count of stale ones and the
/// number of requests.
async fn ack_loop(
    url: String,
    path: String,
    member: String,
    mut rx: mpsc::UnboundedReceiver<Vec<String>>,
    coalesce: bool,
    shared: Arc<Shared>,
) -> Result<(Vec<String>, u64, u64)> {
    let client = Client::new(&url)?;
    let (mut applied, mut stale, mut requests) = (Vec::new(), 0u64, 0u64);
    while let Some(mut ids) = rx.recv().await {
        if coalesce {
            while let Ok(more) = rx.try_recv() {
                ids.extend(more);
            }
        }
        let body = json!({"ids": ids, "member": member}).to_string();
        let v = client
            .send_json(
                http::Method::POST,
                &path,
                Bytes::from(body),
                "application/json",
            )
            .await
            .context("acknowledging")?;
        requests += 1;
        let ok = v["applied"].as_array().map_or(0, Vec::len);
        stale += v["stale"].as_array().map_or(0, Vec::len) as u64;
        applied.extend(
            v["applied"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i.as_str().map(str::to_owned)),
        );
        let total = shared.applied.fetch_add(ok as u64, Ordering::SeqCst) + ok as u64;
        if total >= shared.target.load(Ordering::SeqCst) {
            shared.done.notify_one();
        }
    }
    Ok((applied, stale, requests))
}

/// Members of one case, started together.
struct Members {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<Result<MemberReport>>>,
}

impl Members {
    #[allow(clippy::too_many_arguments)]
    fn start(
        url: &str,
        group: &str,
        topic: &str,
        from: &'static str,
        count: usize,
        max_inflight: u32,
        coalesce: bool,
        target: u64,
    ) -> Members {
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            applied: AtomicU64::new(0),
            target: AtomicU64::new(target),
            done: Notify::new(),
            joined: AtomicUsize::new(0),
            stop: stop_rx,
        });
        let tasks = (0..count)
            .map(|_| {
                tokio::spawn(member(
                    url.to_owned(),
                    group.to_owned(),
                    topic.to_owned(),
                    from,
                    max_inflight,
                    coalesce,
                    shared.clone(),
                ))
            })
            .collect();
        Members {
            shared,
            stop,
            tasks,
        }
    }

    async fn wait_joined(&self, count: usize) -> Result<()> {
        let t = Instant::now();
        while self.shared.joined.load(Ordering::SeqCst) < count {
            if t.elapsed() > Duration::from_secs(10) {
                bail!("members did not join within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    /// Waits until `target` ids were applied, up to `limit`; true if reached.
    async fn wait_applied(&self, target: u64, limit: Duration) -> bool {
        self.shared.target.store(target, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + limit;
        while self.shared.applied.load(Ordering::SeqCst) < target {
            if tokio::time::timeout_at(deadline, self.shared.done.notified())
                .await
                .is_err()
            {
                return self.shared.applied.load(Ordering::SeqCst) >= target;
            }
        }
        true
    }

    async fn finish(self) -> Result<Vec<MemberReport>> {
        let _ = self.stop.send(true);
        let mut out = Vec::new();
        for t in self.tasks {
            out.push(t.await??);
        }
        Ok(out)
    }
}

/// Exactly-once check over the members' reports and the group's counters.
fn verify(reports: &[MemberReport], expected: u64, info: &Value) -> Value {
    let applied: Vec<&String> = reports.iter().flat_map(|r| &r.applied).collect();
    let unique: HashSet<&String> = applied.iter().copied().collect();
    let received: u64 = reports.iter().map(|r| r.received.len() as u64).sum();
    let stale: u64 = reports.iter().map(|r| r.stale).sum();
    let c = |k: &str| info[k].as_u64().unwrap_or(u64::MAX);
    let ok = applied.len() as u64 == expected
        && unique.len() as u64 == expected
        && stale == 0
        && c("acked") == expected
        && c("inflight") == 0
        && c("lag") == 0
        && c("pending_redelivery") == 0;
    json!({
        "exactly_once": ok,
        "expected": expected,
        "acked_ids": applied.len(),
        "unique_acked_ids": unique.len(),
        "received": received,
        "stale": stale,
        "group_acked": info["acked"],
        "group_delivered": info["delivered"],
        "group_redelivered": info["redelivered"],
        "group_inflight": info["inflight"],
        "group_lag": info["lag"],
    })
}

/// Deletes a group once its members are gone (best effort).
async fn delete_group(client: &Client, group: &str) {
    for _ in 0..50 {
        let req = client
            .request(http::Method::DELETE, &format!("/v1/groups/{group}"))
            .body(Full::new(Bytes::new()))
            .expect("valid request");
        if client.send(req).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes `messages` payloads of `size` bytes to `topic` in batches.
async fn prepare(args: &Args) -> Result<Value> {
    let url = args.s("url", "http://127.0.0.1:7072");
    let topic = args.s("topic", "bench.backlog");
    let messages: u64 = args.n("messages", 100_000)?;
    let size: usize = args.n("size", 256)?;
    let batch: u64 = args.n("batch", 1000)?;
    let client = Client::new(&url)?;
    let t = Instant::now();
    let mut seq = 0;
    while seq < messages {
        let n = batch.min(messages - seq);
        let entries: Vec<Value> = (seq..seq + n)
            .map(|s| json!({"payload": payload(s, 0, size)}))
            .collect();
        let v = client
            .send_json(
                http::Method::POST,
                &format!("/v1/batch?{}", query(&[("topic", &topic)])),
                Bytes::from(serde_json::to_vec(&entries)?),
                "application/json",
            )
            .await
            .context("publishing a batch")?;
        let stored = v["results"].as_array().map_or(0, Vec::len) as u64;
        if stored != n {
            bail!("a batch of {n} stored {stored}: {v}");
        }
        seq += n;
    }
    let secs = t.elapsed().as_secs_f64();
    Ok(
        json!({"mode": "prepare", "topic": topic, "messages": messages, "size": size,
        "secs": secs, "per_s": messages as f64 / secs}),
    )
}

/// Members join a fresh group at the start of a backlog and acknowledge all of it.
async fn drain(args: &Args) -> Result<Value> {
    let url = args.s("url", "http://127.0.0.1:7072");
    let topic = args.s("topic", "bench.backlog");
    let group = args.s("group", &unique_name("drain"));
    let messages: u64 = args.n("messages", 100_000)?;
    let count: usize = args.n("members", 1)?;
    let max_inflight: u32 = args.n("max-inflight", 64)?;
    let coalesce = args.flag("coalesce");
    let client = Client::new(&url)?;
    let cpu = Cpu::start(args);
    let t = Instant::now();
    let members = Members::start(
        &url,
        &group,
        &topic,
        "earliest",
        count,
        max_inflight,
        coalesce,
        messages,
    );
    let reached = members
        .wait_applied(messages, Duration::from_secs(args.n("timeout", 120)?))
        .await;
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu.stop();
    let info = client.get_json(&format!("/v1/groups/{group}")).await?;
    let reports = members.finish().await?;
    let check = verify(&reports, messages, &info);
    delete_group(&client, &group).await;
    if !reached {
        eprintln!("drain: timed out with {check}");
    }
    let acks: u64 = reports.iter().map(|r| r.acks).sum();
    let chunks: u64 = reports.iter().map(|r| r.chunks).sum();
    Ok(json!({
        "mode": "drain", "members": count, "max_inflight": max_inflight, "coalesce": coalesce,
        "messages": messages, "secs": secs, "acked_per_s": messages as f64 / secs,
        "ack_requests": acks, "chunks": chunks,
        "ids_per_ack": messages as f64 / acks.max(1) as f64,
        "cpu": cpu, "check": check,
    }))
}

/// Closed-loop publishers on `publishers` connections until `deadline`;
/// returns the number published.
fn spawn_publishers(
    url: &str,
    topic: &str,
    publishers: usize,
    size: usize,
    deadline: Instant,
) -> Result<Vec<tokio::task::JoinHandle<Result<u64>>>> {
    let next = Arc::new(AtomicU64::new(0));
    let mut out = Vec::new();
    for _ in 0..publishers {
        let client = Client::new(url)?;
        let (topic, next) = (topic.to_owned(), next.clone());
        out.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < deadline {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                let body = Bytes::from(payload(seq, 0, size));
                client.publish(&topic, body, None, &[], None).await?;
                n += 1;
            }
            Ok(n)
        }));
    }
    Ok(out)
}

/// Publishers publish for `duration` while members consume.
async fn live(args: &Args) -> Result<Value> {
    let url = args.s("url", "http://127.0.0.1:7072");
    let topic = args.s("topic", &unique_name("bench.live"));
    let group = args.s("group", &unique_name("live"));
    let count: usize = args.n("members", 1)?;
    let max_inflight: u32 = args.n("max-inflight", 64)?;
    let publishers: usize = args.n("publishers", 4)?;
    let size: usize = args.n("size", 256)?;
    let duration = Duration::from_secs_f64(args.n("duration", 10.0)?);
    let coalesce = args.flag("coalesce");
    let client = Client::new(&url)?;
    let members = Members::start(
        &url,
        &group,
        &topic,
        "earliest",
        count,
        max_inflight,
        coalesce,
        u64::MAX,
    );
    members.wait_joined(count).await?;
    let cpu = Cpu::start(args);
    let t = Instant::now();
    let pubs = spawn_publishers(&url, &topic, publishers, size, t + duration)?;
    let mut published = 0;
    for p in pubs {
        published += p.await??;
    }
    let secs = t.elapsed().as_secs_f64();
    let acked_in_window = members.shared.applied.load(Ordering::SeqCst);
    let cpu = cpu.stop();
    if count == 0 {
        // The baseline: publishers alone.
        members.finish().await?;
        return Ok(json!({
            "mode": "live", "members": 0, "publishers": publishers, "secs": secs,
            "published": published, "publish_per_s": published as f64 / secs, "cpu": cpu,
        }));
    }
    let reached = members
        .wait_applied(published, Duration::from_secs(60))
        .await;
    let tail = t.elapsed().as_secs_f64() - secs;
    let info = client.get_json(&format!("/v1/groups/{group}")).await?;
    let reports = members.finish().await?;
    let check = verify(&reports, published, &info);
    delete_group(&client, &group).await;
    if !reached {
        eprintln!("live: the members did not catch up: {check}");
    }
    let acks: u64 = reports.iter().map(|r| r.acks).sum();
    Ok(json!({
        "mode": "live", "members": count, "max_inflight": max_inflight, "coalesce": coalesce,
        "publishers": publishers, "secs": secs,
        "published": published, "publish_per_s": published as f64 / secs,
        "acked_in_window": acked_in_window, "acked_per_s": acked_in_window as f64 / secs,
        "backlog_at_end": published - acked_in_window.min(published), "catch_up_s": tail,
        "ack_requests": acks, "ids_per_ack": published as f64 / acks.max(1) as f64,
        "cpu": cpu, "check": check,
    }))
}

/// One fan-out subscriber: records the latency and sequence number of
/// every message until `stop`.
async fn fanout(
    url: String,
    topic: String,
    ready: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
) -> Result<(Vec<u64>, Vec<u64>)> {
    let client = Client::new(&url)?;
    let path = format!(
        "/v1/events?{}",
        query(&[("topic", &topic), ("from", "latest")])
    );
    let mut body = open_stream(&client, &path).await?;
    ready.fetch_add(1, Ordering::SeqCst);
    let mut parser = SseParser::new();
    let (mut lat, mut seqs) = (Vec::new(), Vec::new());
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Some(frame) = frame else {
            bail!("the fan-out stream ended");
        };
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        let at = now_us();
        for event in parser.push(&data) {
            if event.event != "message" {
                continue;
            }
            if let Some((seq, sent)) = stamp(&event.data) {
                lat.push(at.saturating_sub(sent));
                seqs.push(seq);
            }
        }
    }
    Ok((lat, seqs))
}

/// How many of `0..total` appear in `seqs`, and how many entries repeat.
fn coverage(seqs: &[u64], total: u64) -> (u64, u64) {
    let unique: HashSet<u64> = seqs.iter().copied().filter(|s| *s < total).collect();
    (unique.len() as u64, seqs.len() as u64 - unique.len() as u64)
}

/// An open-loop publisher on one connection; one fan-out subscriber and one
/// group (of `members`) on the same topic, at the same time.
async fn latency(args: &Args) -> Result<Value> {
    let url = args.s("url", "http://127.0.0.1:7072");
    let topic = args.s("topic", &unique_name("bench.lat"));
    let group = args.s("group", &unique_name("lat"));
    let count: usize = args.n("members", 1)?;
    let max_inflight: u32 = args.n("max-inflight", 64)?;
    let rate: f64 = args.n("rate", 1000.0)?;
    let duration: f64 = args.n("duration", 10.0)?;
    let size: usize = args.n("size", 256)?;
    let client = Client::new(&url)?;
    let ready = Arc::new(AtomicUsize::new(0));
    let (stop, stop_rx) = watch::channel(false);
    let sub = tokio::spawn(fanout(
        url.clone(),
        topic.clone(),
        ready.clone(),
        stop_rx.clone(),
    ));
    let members = Members::start(
        &url,
        &group,
        &topic,
        "latest",
        count,
        max_inflight,
        false,
        u64::MAX,
    );
    members.wait_joined(count).await?;
    while ready.load(Ordering::SeqCst) < 1 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let total = (rate * duration).round() as u64;
    let cpu = Cpu::start(args);
    let window = Instant::now();
    let publisher = Client::new(&url)?;
    let mut rtts = Vec::with_capacity(total as usize);
    let t0 = tokio::time::Instant::now();
    let mut errors = 0u64;
    for seq in 0..total {
        tokio::time::sleep_until(t0 + Duration::from_secs_f64(seq as f64 / rate)).await;
        let sent = now_us();
        let body = Bytes::from(payload(seq, sent, size));
        match publisher.publish(&topic, body, None, &[], None).await {
            Ok(_) => rtts.push(now_us() - sent),
            Err(e) => {
                errors += 1;
                if errors < 5 {
                    eprintln!("publish: {e}");
                }
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let published = total - errors;
    let reached = members
        .wait_applied(published, Duration::from_secs(10))
        .await;
    let cpu = cpu.stop();
    let window = window.elapsed().as_secs_f64();
    // Give the fan-out subscriber the same chance to finish.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let info = client.get_json(&format!("/v1/groups/{group}")).await?;
    let reports = members.finish().await?;
    let _ = stop.send(true);
    let (fan_lat, fan_seqs) = sub.await??;
    let check = verify(&reports, published, &info);
    delete_group(&client, &group).await;
    if !reached {
        eprintln!("latency: the group did not get everything: {check}");
    }
    let group_lat: Vec<u64> = reports.iter().flat_map(|r| r.latencies.clone()).collect();
    let group_seqs: Vec<u64> = reports.iter().flat_map(|r| r.seqs.clone()).collect();
    let (fan_got, fan_dup) = coverage(&fan_seqs, total);
    let (group_got, group_dup) = coverage(&group_seqs, total);
    Ok(json!({
        "mode": "latency", "members": count, "rate": rate, "duration": duration, "secs": window,
        "published": published, "achieved_per_s": published as f64 / secs,
        "publish_rtt": percentiles(rtts),
        "fanout": percentiles(fan_lat), "fanout_received": fan_got, "fanout_duplicates": fan_dup,
        "group": percentiles(group_lat), "group_received": group_got,
        "group_duplicates": group_dup,
        "cpu": cpu, "check": check,
    }))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse()?;
    now_us();
    let result = match args.mode.as_str() {
        "prepare" => prepare(&args).await?,
        "drain" => drain(&args).await?,
        "live" => live(&args).await?,
        "latency" => latency(&args).await?,
        other => bail!("unknown mode {other:?}; expected prepare, drain, live or latency"),
    };
    println!("{result}");
    Ok(())
}
