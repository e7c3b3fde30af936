//! `GET /metrics`: the node's counters in the Prometheus text exposition
//! format (OpenMetrics 1.0), encoded by `prometheus-client`.
//!
//! Nothing here keeps a second set of numbers: a scrape reads the counters
//! the parts of the node already keep (the store's commits, the groups'
//! and plugins' counters, the gossip layer's), and the few that only the
//! HTTP layer sees (publish requests and their latency, deliveries,
//! subscribers, connections) live in [`Metrics`]. Labels are bounded:
//! endpoints, results and states are fixed sets; groups and plugin
//! bindings are capped per node by their registries; cluster members by
//! the cluster's size. No metric is labelled by topic.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use switchyard_model::histogram::{Histogram, HistogramSnapshot};
use switchyard_router::Published;

use crate::problem::Problem;
use crate::server::{App, Body, full};

/// The endpoints whose publishes are counted.
#[derive(Clone, Copy, Debug)]
pub(crate) enum PublishEndpoint {
    /// `POST /v1/topics/{topic}`.
    Topic = 0,
    /// `POST /v1/batch`.
    Batch = 1,
}

const ENDPOINTS: [&str; 2] = ["topic", "batch"];
const STATUS_CLASSES: [&str; 3] = ["2xx", "4xx", "5xx"];
const MESSAGE_RESULTS: [&str; 3] = ["stored", "duplicate", "dropped"];

/// How a message reached a client.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Via {
    /// An event stream (`GET /v1/events`).
    Stream = 0,
    /// A consumer group member's stream.
    Group = 1,
    /// A pull (`GET /v1/messages`).
    Pull = 2,
}

const VIAS: [&str; 3] = ["stream", "group", "pull"];
const SUBSCRIBER_KINDS: [&str; 2] = ["stream", "group"];

/// The counters only the HTTP layer sees. Updated with relaxed atomic
/// additions on the request paths.
#[derive(Default)]
pub(crate) struct Metrics {
    /// Publish requests by endpoint and status class.
    publish_requests: [[AtomicU64; 3]; 2],
    /// Time from a publish request's arrival to its answer, by endpoint.
    publish_time: [Histogram; 2],
    /// Messages of publishes that were answered, by result.
    published: [AtomicU64; 3],
    /// Messages handed to clients, by way.
    deliveries: [AtomicU64; 3],
    /// Open event streams, by kind.
    subscribers: [AtomicI64; 2],
    /// Sockets accepted and not closed yet.
    connections_open: AtomicI64,
    /// Sockets accepted.
    connections_accepted: AtomicU64,
    /// Sockets closed at once because their address had as many as it may.
    connections_refused_per_ip: AtomicU64,
    /// Requests answered `503 overloaded` for the connection or stream limits.
    overloaded: AtomicU64,
}

impl Metrics {
    /// Counts a publish request answered with `status` after `took`.
    pub(crate) fn publish_answered(&self, ep: PublishEndpoint, status: StatusCode, took: Duration) {
        let class = match status.as_u16() {
            500.. => 2,
            400.. => 1,
            _ => 0,
        };
        self.publish_requests[ep as usize][class].fetch_add(1, Ordering::Relaxed);
        self.publish_time[ep as usize].observe(took);
    }

    /// Counts the messages of answered publishes.
    pub(crate) fn published(&self, results: &[Published]) {
        let (mut stored, mut duplicate, mut dropped) = (0, 0, 0);
        for p in results {
            if p.results.is_empty() {
                dropped += 1;
            }
            for a in &p.results {
                if a.duplicate {
                    duplicate += 1;
                } else {
                    stored += 1;
                }
            }
        }
        for (i, n) in [stored, duplicate, dropped].into_iter().enumerate() {
            if n > 0 {
                self.published[i].fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Counts `n` messages handed to clients.
    pub(crate) fn delivered(&self, via: Via, n: u64) {
        self.deliveries[via as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Counts an event stream for as long as the guard lives.
    pub(crate) fn subscriber(self: &std::sync::Arc<Self>, group: bool) -> SubscriberGuard {
        let kind = usize::from(group);
        self.subscribers[kind].fetch_add(1, Ordering::Relaxed);
        SubscriberGuard {
            metrics: self.clone(),
            kind,
        }
    }

    /// Counts an accepted socket for as long as the guard lives.
    pub(crate) fn connection(self: &std::sync::Arc<Self>) -> ConnectionGuard {
        self.connections_accepted.fetch_add(1, Ordering::Relaxed);
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }

    /// Counts a socket closed at once for its address's limit.
    pub(crate) fn refused_per_ip(&self) {
        self.connections_refused_per_ip
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request answered `503 overloaded`.
    pub(crate) fn overloaded(&self) {
        self.overloaded.fetch_add(1, Ordering::Relaxed);
    }
}

/// An open event stream, counted until dropped.
pub(crate) struct SubscriberGuard {
    metrics: std::sync::Arc<Metrics>,
    kind: usize,
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.metrics.subscribers[self.kind].fetch_sub(1, Ordering::Relaxed);
    }
}

/// An open socket, counted until dropped.
pub(crate) struct ConnectionGuard(std::sync::Arc<Metrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `GET /metrics`.
pub(crate) async fn scrape(app: &std::sync::Arc<App>) -> Result<Response<Body>, Problem> {
    let groups = app.router.groups().list().await?;
    let disk = {
        let app = app.clone();
        tokio::task::spawn_blocking(move || app.router.disk_bytes().ok())
            .await
            .ok()
            .flatten()
    };
    let scrape = Scrape::gather(app, groups, disk);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut text = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut text, &registry).map_err(|_| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the metrics could not be encoded",
        )
    })?;
    let mut resp = Response::new(full(text));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(resp)
}

/// Everything one scrape reports, read before encoding.
#[derive(Debug)]
struct Scrape {
    node: String,
    http: HttpNumbers,
    store: StoreNumbers,
    groups: Vec<switchyard_router::GroupInfo>,
    plugins: Vec<PluginNumbers>,
    /// This node's cluster binding table entries by what this node made
    /// of them ([`TABLE_STATES`]).
    plugin_table: [u64; 5],
    cluster: Option<ClusterNumbers>,
    process: Option<Process>,
    /// Lines the log writer dropped, where it reports them.
    dropped_log_lines: Option<u64>,
}

#[derive(Debug)]
struct HttpNumbers {
    publish_requests: [[u64; 3]; 2],
    publish_time: [HistogramSnapshot; 2],
    published: [u64; 3],
    deliveries: [u64; 3],
    subscribers: [i64; 2],
    connections_open: i64,
    connections_accepted: u64,
    connections_refused_per_ip: u64,
    overloaded: u64,
    pending_output_bytes: u64,
}

#[derive(Debug)]
struct StoreNumbers {
    commits: u64,
    slow_commits: u64,
    commit_times: HistogramSnapshot,
    engine: switchyard_router::EngineState,
    ready: bool,
    topics: u64,
    messages: u64,
    bytes: u64,
    disk_bytes: Option<u64>,
}

#[derive(Debug)]
struct PluginNumbers {
    name: String,
    hook: String,
    version: u64,
    calls: u64,
    failures: Vec<(&'static str, u64)>,
    call_times: HistogramSnapshot,
    instances_created: u64,
    logs_dropped: u64,
}

#[derive(Debug)]
struct ClusterNumbers {
    members: [u64; 4],
    gossip: Vec<(&'static str, u64)>,
    factor: u64,
    under_replicated: u64,
    /// (origin, replica, held through, lag behind this node's head when
    /// the origin is this node).
    replicas: Vec<(String, String, u64, Option<u64>)>,
}

const MEMBER_STATES: [&str; 4] = ["alive", "suspect", "down", "left"];

impl Scrape {
    fn gather(
        app: &App,
        groups: Vec<switchyard_router::GroupInfo>,
        disk_bytes: Option<u64>,
    ) -> Scrape {
        let m = &app.metrics;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let http = HttpNumbers {
            publish_requests: m
                .publish_requests
                .each_ref()
                .map(|r| r.each_ref().map(load)),
            publish_time: m.publish_time.each_ref().map(Histogram::snapshot),
            published: m.published.each_ref().map(load),
            deliveries: m.deliveries.each_ref().map(load),
            subscribers: m
                .subscribers
                .each_ref()
                .map(|c| c.load(Ordering::Relaxed).max(0)),
            connections_open: m.connections_open.load(Ordering::Relaxed).max(0),
            connections_accepted: load(&m.connections_accepted),
            connections_refused_per_ip: load(&m.connections_refused_per_ip),
            overloaded: load(&m.overloaded),
            pending_output_bytes: app.output.pending() as u64,
        };
        let router = &app.router;
        let c = router.commit_stats();
        let topics = router.topics();
        let store = StoreNumbers {
            commits: c.commits,
            slow_commits: c.slow,
            commit_times: router.commit_times(),
            engine: router.engine_state(),
            ready: router.is_ready(),
            topics: topics.len() as u64,
            messages: topics.iter().map(|t| t.messages).sum(),
            bytes: topics.iter().map(|t| t.bytes).sum(),
            disk_bytes,
        };
        let plugins = router
            .plugins()
            .list()
            .into_iter()
            .map(|p| PluginNumbers {
                hook: p.hook.to_string(),
                version: p.version,
                calls: p.stats.calls,
                failures: p.stats.failures.into_iter().collect(),
                call_times: p.call_times,
                instances_created: p.stats.instances_created,
                logs_dropped: p.stats.logs_dropped,
                name: p.name,
            })
            .collect();
        let mut plugin_table = [0; 5];
        for s in router.plugins().node_status(&[]) {
            if let Some(i) = TABLE_STATES.iter().position(|t| *t == s.state) {
                plugin_table[i] += 1;
            }
        }
        let cluster = router.cluster().map(|cl| {
            let mut members = [0; 4];
            for v in cl.members() {
                members[v.state as usize] += 1;
            }
            let me = router.node_id().to_string();
            let head = router.log_head();
            let (mut factor, mut under, mut replicas) = (1, 0, Vec::new());
            if let Some(r) = router.replication_status() {
                factor = r.factor as u64;
                under = r.under_replicated as u64;
                for o in r.origins {
                    for rep in o.replicas {
                        let Some(through) = rep.through else { continue };
                        let lag = (o.origin == me).then(|| head.saturating_sub(through));
                        replicas.push((o.origin.clone(), rep.node, through, lag));
                    }
                }
            }
            ClusterNumbers {
                members,
                gossip: cl.stats().snapshot().into_iter().collect(),
                factor,
                under_replicated: under,
                replicas,
            }
        });
        Scrape {
            node: router.node_id().to_string(),
            http,
            store,
            groups,
            plugins,
            plugin_table,
            cluster,
            process: Process::read(),
            dropped_log_lines: DROPPED_LOG_LINES.get().map(|count| count()),
        }
    }
}

/// Where the process's log writer reports the lines it dropped (see
/// [`report_dropped_log_lines`]). Process-wide, like the log subscriber.
static DROPPED_LOG_LINES: std::sync::OnceLock<Box<dyn Fn() -> u64 + Send + Sync>> =
    std::sync::OnceLock::new();

/// Makes `/metrics` report `switchyard_log_lines_dropped_total` from
/// `count`: the log lines the process's writer dropped because its queue
/// was full. Set once per process, by whoever installs the log writer; a
/// second call is ignored. Without it the metric is not reported.
pub fn report_dropped_log_lines(count: impl Fn() -> u64 + Send + Sync + 'static) {
    let _ = DROPPED_LOG_LINES.set(Box::new(count));
}

/// Writes one unlabelled counter.
fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

/// Writes one unlabelled gauge.
fn gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: N,
) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// Writes one histogram series into a metric (or family member).
fn histogram(mut m: MetricEncoder, h: &HistogramSnapshot) -> std::fmt::Result {
    // The encoder takes per-bucket counts and marks `+Inf` as `f64::MAX`.
    let buckets: Vec<(f64, u64)> = h
        .buckets
        .iter()
        .map(|&(b, n)| (if b.is_finite() { b } else { f64::MAX }, n))
        .collect();
    m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        h.sum_secs, h.count, &buckets, None,
    )
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut e;
        let mut info = e.encode_descriptor(
            "switchyard_node",
            "This node: its id and version.",
            None,
            MetricType::Info,
        )?;
        info.encode_info(&[
            ("node", self.node.as_str()),
            ("version", env!("CARGO_PKG_VERSION")),
        ])?;
        self.encode_http(e)?;
        self.encode_store(e)?;
        self.encode_groups(e)?;
        self.encode_plugins(e)?;
        if let Some(c) = &self.cluster {
            encode_cluster(e, c)?;
        }
        if let Some(n) = self.dropped_log_lines {
            counter(
                e,
                "switchyard_log_lines_dropped",
                "Log lines dropped because the log writer's queue was full.",
                n,
            )?;
        }
        if let Some(p) = &self.process {
            p.encode(e)?;
        }
        Ok(())
    }
}

impl Scrape {
    fn encode_http(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let h = &self.http;
        let mut m = e.encode_descriptor(
            "switchyard_publish_requests",
            "Publish requests answered, by endpoint and status class.",
            None,
            MetricType::Counter,
        )?;
        for (ep, row) in ENDPOINTS.iter().zip(&h.publish_requests) {
            for (class, v) in STATUS_CLASSES.iter().zip(row) {
                ConstCounter::new(*v)
                    .encode(m.encode_family(&[("endpoint", *ep), ("status", *class)])?)?;
            }
        }
        let mut m = e.encode_descriptor(
            "switchyard_publish_duration_seconds",
            "Time from a publish request's arrival to its answer, by endpoint.",
            None,
            MetricType::Histogram,
        )?;
        for (ep, hist) in ENDPOINTS.iter().zip(&h.publish_time) {
            histogram(m.encode_family(&[("endpoint", *ep)])?, hist)?;
        }
        let mut m = e.encode_descriptor(
            "switchyard_published_messages",
            "Messages of answered publishes: stored, duplicate (an idempotency key seen before), or dropped by a route plugin.",
            None,
            MetricType::Counter,
        )?;
        for (r, v) in MESSAGE_RESULTS.iter().zip(&h.published) {
            ConstCounter::new(*v).encode(m.encode_family(&[("result", *r)])?)?;
        }
        let mut m = e.encode_descriptor(
            "switchyard_deliveries",
            "Messages handed to clients: on event streams, to group members, in pulls.",
            None,
            MetricType::Counter,
        )?;
        for (via, v) in VIAS.iter().zip(&h.deliveries) {
            ConstCounter::new(*v).encode(m.encode_family(&[("via", *via)])?)?;
        }
        let mut m = e.encode_descriptor(
            "switchyard_subscribers",
            "Open event streams: subscriptions and group members.",
            None,
            MetricType::Gauge,
        )?;
        for (kind, v) in SUBSCRIBER_KINDS.iter().zip(&h.subscribers) {
            ConstGauge::new(*v).encode(m.encode_family(&[("kind", *kind)])?)?;
        }
        gauge(
            e,
            "switchyard_connections_open",
            "Connections open (clients and peers).",
            h.connections_open,
        )?;
        counter(
            e,
            "switchyard_connections_accepted",
            "Connections accepted.",
            h.connections_accepted,
        )?;
        counter(
            e,
            "switchyard_connections_refused_per_ip",
            "Connections closed at once because their address had limits.max_connections_per_ip open.",
            h.connections_refused_per_ip,
        )?;
        counter(
            e,
            "switchyard_overloaded_requests",
            "Requests answered 503 overloaded for the connection or stream limits.",
            h.overloaded,
        )?;
        gauge(
            e,
            "switchyard_pending_output_bytes",
            "Output handed to connections and not yet taken by them.",
            h.pending_output_bytes,
        )
    }

    fn encode_store(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let s = &self.store;
        counter(
            e,
            "switchyard_store_commits",
            "Store commits (writes, and syncs with fsync = always).",
            s.commits,
        )?;
        counter(
            e,
            "switchyard_store_slow_commits",
            "Store commits that took longer than 20 ms.",
            s.slow_commits,
        )?;
        let m = e.encode_descriptor(
            "switchyard_store_commit_duration_seconds",
            "How long store commits took.",
            None,
            MetricType::Histogram,
        )?;
        histogram(m, &s.commit_times)?;
        gauge(
            e,
            "switchyard_store_ready",
            "1 when the store accepts writes and its disk answers (as /readyz).",
            u64::from(s.ready),
        )?;
        gauge(
            e,
            "switchyard_store_poisoned",
            "1 after a failed write or sync: the store refuses writes until the node restarts.",
            u64::from(s.engine.poisoned),
        )?;
        gauge(
            e,
            "switchyard_store_write_halted",
            "1 while the storage engine holds writes for a flush or compaction.",
            u64::from(s.engine.write_halted),
        )?;
        gauge(
            e,
            "switchyard_store_sealed_memtables",
            "Most sealed memtables waiting for their flush in one keyspace.",
            s.engine.sealed_memtables as u64,
        )?;
        gauge(
            e,
            "switchyard_store_l0_tables",
            "Most level-0 tables waiting for compaction in one keyspace.",
            s.engine.l0_tables as u64,
        )?;
        gauge(
            e,
            "switchyard_store_topics",
            "Topics with messages held.",
            s.topics,
        )?;
        gauge(
            e,
            "switchyard_store_messages",
            "Messages held, all topics and origins.",
            s.messages,
        )?;
        gauge(
            e,
            "switchyard_store_message_bytes",
            "Bytes of messages held (payloads, keys, headers).",
            s.bytes,
        )?;
        if let Some(d) = s.disk_bytes {
            gauge(
                e,
                "switchyard_store_disk_bytes",
                "Bytes the store takes on disk (tables and journal).",
                d,
            )?;
        }
        Ok(())
    }

    fn encode_groups(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        type Field = fn(&switchyard_router::GroupInfo) -> u64;
        let gauges: [(&str, &str, Field); 4] = [
            (
                "switchyard_group_lag_messages",
                "Messages after a group's position: not delivered yet.",
                |g| g.lag,
            ),
            (
                "switchyard_group_inflight_messages",
                "Messages delivered to a group's members and not acknowledged.",
                |g| g.inflight,
            ),
            (
                "switchyard_group_pending_redelivery_messages",
                "Messages waiting to be delivered again.",
                |g| g.pending_redelivery,
            ),
            (
                "switchyard_group_members",
                "Connected members of a group.",
                |g| g.members.len() as u64,
            ),
        ];
        for (name, help, f) in gauges {
            let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for g in &self.groups {
                ConstGauge::new(f(g)).encode(m.encode_family(&[("group", g.name.as_str())])?)?;
            }
        }
        let counters: [(&str, &str, Field); 5] = [
            (
                "switchyard_group_delivered",
                "Deliveries to a group's members, redeliveries included.",
                |g| g.counters.delivered,
            ),
            (
                "switchyard_group_redelivered",
                "Deliveries of a message delivered before.",
                |g| g.counters.redelivered,
            ),
            ("switchyard_group_acked", "Messages acknowledged.", |g| {
                g.counters.acked
            }),
            (
                "switchyard_group_expired",
                "Deliveries whose acknowledgement deadline passed.",
                |g| g.counters.expired,
            ),
            (
                "switchyard_group_dead_lettered",
                "Messages sent to the group's dead-letter topic.",
                |g| g.counters.dead_lettered,
            ),
        ];
        for (name, help, f) in counters {
            let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for g in &self.groups {
                ConstCounter::new(f(g)).encode(m.encode_family(&[("group", g.name.as_str())])?)?;
            }
        }
        Ok(())
    }

    fn encode_plugins(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let mut m = e.encode_descriptor(
            "switchyard_plugin_calls",
            "Hook calls of a plugin binding (all its versions).",
            None,
            MetricType::Counter,
        )?;
        for p in &self.plugins {
            ConstCounter::new(p.calls).encode(
                m.encode_family(&[("plugin", p.name.as_str()), ("hook", p.hook.as_str())])?,
            )?;
        }
        let mut m = e.encode_descriptor(
            "switchyard_plugin_failures",
            "Failed hook calls of a plugin binding, by kind.",
            None,
            MetricType::Counter,
        )?;
        for p in &self.plugins {
            for (kind, v) in &p.failures {
                ConstCounter::new(*v)
                    .encode(m.encode_family(&[("plugin", p.name.as_str()), ("kind", kind)])?)?;
            }
        }
        let mut m = e.encode_descriptor(
            "switchyard_plugin_call_duration_seconds",
            "How long a plugin binding's hook calls took.",
            None,
            MetricType::Histogram,
        )?;
        for p in &self.plugins {
            histogram(
                m.encode_family(&[("plugin", p.name.as_str())])?,
                &p.call_times,
            )?;
        }
        let mut m = e.encode_descriptor(
            "switchyard_plugin_version",
            "The version a binding runs (1 for its first push).",
            None,
            MetricType::Gauge,
        )?;
        for p in &self.plugins {
            ConstGauge::new(p.version).encode(m.encode_family(&[("plugin", p.name.as_str())])?)?;
        }
        let mut m = e.encode_descriptor(
            "switchyard_plugin_instances_created",
            "Instances a binding created (the first ones and every rebuild after a failure).",
            None,
            MetricType::Counter,
        )?;
        for p in &self.plugins {
            ConstCounter::new(p.instances_created)
                .encode(m.encode_family(&[("plugin", p.name.as_str())])?)?;
        }
        let mut m = e.encode_descriptor(
            "switchyard_plugin_logs_dropped",
            "Log lines of a binding dropped by its rate limit.",
            None,
            MetricType::Counter,
        )?;
        for p in &self.plugins {
            ConstCounter::new(p.logs_dropped)
                .encode(m.encode_family(&[("plugin", p.name.as_str())])?)?;
        }
        let mut m = e.encode_descriptor(
            "switchyard_plugin_cluster_bindings",
            "Cluster-wide bindings in this node's table, by what this node made of them: running, pending (its component is being fetched), refused (this node cannot run the version), shadowed (a binding of the same name made on this node alone runs here), deleted.",
            None,
            MetricType::Gauge,
        )?;
        for (state, n) in TABLE_STATES.iter().zip(self.plugin_table) {
            ConstGauge::new(n).encode(m.encode_family(&[("state", *state)])?)?;
        }
        Ok(())
    }
}

/// The states of a cluster binding on a node, as metrics label them.
const TABLE_STATES: [&str; 5] = ["running", "pending", "refused", "shadowed", "deleted"];

fn encode_cluster(e: &mut DescriptorEncoder, c: &ClusterNumbers) -> std::fmt::Result {
    let mut m = e.encode_descriptor(
        "switchyard_cluster_members",
        "Cluster members as this node sees them (itself included), by state.",
        None,
        MetricType::Gauge,
    )?;
    for (state, v) in MEMBER_STATES.iter().zip(c.members) {
        ConstGauge::new(v).encode(m.encode_family(&[("state", *state)])?)?;
    }
    let gossip = |name: &str| {
        c.gossip
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    };
    for (metric, help, what) in [
        (
            "switchyard_gossip_packets",
            "Gossip packets sent (out) and received and accepted (in).",
            "packets",
        ),
        (
            "switchyard_gossip_bytes",
            "Gossip bytes sent (out) and received (in, accepted or not).",
            "bytes",
        ),
    ] {
        let mut m = e.encode_descriptor(metric, help, None, MetricType::Counter)?;
        for dir in ["in", "out"] {
            ConstCounter::new(gossip(&format!("{what}_{dir}")))
                .encode(m.encode_family(&[("direction", dir)])?)?;
        }
    }
    let mut m = e.encode_descriptor(
        "switchyard_cluster_refused",
        "Gossip packets and node-to-node requests and answers refused, by reason (malformed, \
         wrong_cluster, bad_auth, replayed, stale, invalid; http_* for node-to-node HTTP).",
        None,
        MetricType::Counter,
    )?;
    for (what, v) in &c.gossip {
        if let Some(reason) = what.strip_prefix("refused_") {
            ConstCounter::new(*v).encode(m.encode_family(&[("reason", reason)])?)?;
        }
    }
    counter(
        e,
        "switchyard_gossip_events_dropped",
        "Membership events dropped because the node did not take them in time.",
        gossip("events_dropped"),
    )?;
    gauge(
        e,
        "switchyard_replication_factor",
        "Copies of each node's log the cluster keeps (the origin included).",
        c.factor,
    )?;
    gauge(
        e,
        "switchyard_replication_under_replicated_origins",
        "Origins with fewer live replicas than the factor asks for.",
        c.under_replicated,
    )?;
    let mut m = e.encode_descriptor(
        "switchyard_replication_held_through",
        "How far a replica holds an origin's log (origin sequence), where this node knows it.",
        None,
        MetricType::Gauge,
    )?;
    for (origin, replica, through, _) in &c.replicas {
        ConstGauge::new(*through).encode(
            m.encode_family(&[("origin", origin.as_str()), ("replica", replica.as_str())])?,
        )?;
    }
    let mut m = e.encode_descriptor(
        "switchyard_replication_lag_messages",
        "Messages of this node's log a replica does not hold yet.",
        None,
        MetricType::Gauge,
    )?;
    for (_, replica, _, lag) in &c.replicas {
        if let Some(lag) = lag {
            ConstGauge::new(*lag).encode(m.encode_family(&[("replica", replica.as_str())])?)?;
        }
    }
    Ok(())
}

/// The process's resources, read from `/proc/self` (Linux). `None` where
/// `/proc` is not there.
#[derive(Debug)]
struct Process {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    open_fds: u64,
    max_fds: Option<u64>,
    threads: u64,
    start_time_seconds: Option<f64>,
}

impl Process {
    fn read() -> Option<Process> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The fields after the command name, which is in parentheses and
        // may hold spaces: state is field 3, utime 14, stime 15,
        // num_threads 20, starttime 22.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_ascii_whitespace().collect();
        let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let page = rustix::param::page_size() as u64;
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let mut statm = statm
            .split_ascii_whitespace()
            .map(|v| v.parse::<u64>().ok());
        let virtual_pages = statm.next().flatten()?;
        let resident_pages = statm.next().flatten()?;
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
        Some(Process {
            cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
            resident_bytes: resident_pages * page,
            virtual_bytes: virtual_pages * page,
            open_fds: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64),
            max_fds: rustix::process::getrlimit(rustix::process::Resource::Nofile).current,
            threads: field(20)?,
            start_time_seconds: boot
                .zip(field(22))
                .map(|(b, t)| b as f64 + t as f64 / ticks),
        })
    }

    fn encode(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let c = ConstCounter::new(self.cpu_seconds);
        c.encode(e.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds.",
            None,
            c.metric_type(),
        )?)?;
        gauge(
            e,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            self.resident_bytes,
        )?;
        gauge(
            e,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            self.virtual_bytes,
        )?;
        gauge(
            e,
            "process_open_fds",
            "Open file descriptors.",
            self.open_fds,
        )?;
        if let Some(max) = self.max_fds {
            gauge(
                e,
                "process_max_fds",
                "Most open file descriptors allowed.",
                max,
            )?;
        }
        gauge(e, "process_threads", "OS threads.", self.threads)?;
        if let Some(t) = self.start_time_seconds {
            gauge(
                e,
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds.",
                t,
            )?;
        }
        Ok(())
    }
}
