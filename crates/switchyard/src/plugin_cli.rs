//! `switchyard plugin ...`: push, list and remove plugins on a node, and run
//! a plugin locally without a node (`plugin test`).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_model::{Header, TopicPattern};
use switchyard_plugin_host::{
    Binding, BindingSpec, Candidate, EngineConfig, ErrorPolicy, FilterDecision, Hook, Limits,
    MemoryKv, PluginEngine, PluginMessage, RouteDecision, Stats,
};

use crate::client::Client;

/// Settings of `plugin push`.
pub struct Push<'a> {
    /// Component file.
    pub file: &'a Path,
    /// Binding name.
    pub name: &'a str,
    /// Hook.
    pub hook: Hook,
    /// Topic patterns.
    pub topics: &'a [String],
    /// Plugin configuration.
    pub config: Option<&'a str>,
    /// Error policy (the node's default when not given).
    pub on_error: Option<ErrorPolicy>,
    /// Fuel per call.
    pub fuel: Option<u64>,
    /// Memory cap in MiB.
    pub memory_mb: Option<u64>,
    /// `node` or `cluster` (the node's default when not given).
    pub scope: Option<&'a str>,
}

/// A binding as the node describes it (`GET /v1/plugins` lists these; a
/// push answers one), as far as the command line shows it.
#[derive(Debug, Deserialize)]
pub struct PluginEntry {
    /// Binding name.
    pub name: String,
    /// `route`, `filter` or `pick`.
    pub hook: String,
    /// Topic patterns.
    #[serde(default)]
    pub topics: Vec<String>,
    /// `drop`, `pass` or `dead-letter`.
    pub on_error: String,
    /// Version, counted up by each push of this name.
    pub version: u64,
    /// SHA-256 of the component, in hex.
    pub sha256: String,
    /// Call counters.
    #[serde(default)]
    pub counters: PluginCounters,
}

/// The counters of a [`PluginEntry`].
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PluginCounters {
    /// Hook calls.
    pub calls: u64,
    /// Failed calls.
    pub errors: u64,
    /// Mean time per call, in ns.
    pub mean_ns: u64,
}

/// `GET /v1/plugins`.
#[derive(Debug, Deserialize)]
pub struct PluginList {
    /// Every binding.
    #[serde(default)]
    pub plugins: Vec<PluginEntry>,
}

/// Uploads and binds a plugin; returns the node's description of it.
pub async fn push(client: &Client, p: &Push<'_>) -> anyhow::Result<PluginEntry> {
    let bytes = std::fs::read(p.file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.file.display()))?;
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("hook", p.hook.as_str());
    for t in p.topics {
        q.append_pair("topic", t);
    }
    if let Some(c) = p.config {
        q.append_pair("config", c);
    }
    if let Some(o) = p.on_error {
        q.append_pair("on_error", o.as_str());
    }
    if let Some(f) = p.fuel {
        q.append_pair("fuel", &f.to_string());
    }
    if let Some(m) = p.memory_mb {
        q.append_pair("memory_mb", &m.to_string());
    }
    if let Some(s) = p.scope {
        q.append_pair("scope", s);
    }
    let path = format!("/v1/plugins/{}?{}", p.name, q.finish());
    let answer = client
        .send_json(
            http::Method::PUT,
            &path,
            Bytes::from(bytes),
            "application/wasm",
        )
        .await?;
    Ok(serde_json::from_value(answer)?)
}

/// One line per binding: name, hook, topics, version, counters.
pub fn format_list(list: &PluginList) -> String {
    if list.plugins.is_empty() {
        return "no plugins\n".into();
    }
    let mut out = String::new();
    for p in &list.plugins {
        let c = &p.counters;
        out.push_str(&format!(
            "{}\thook={}\ttopics={}\ton_error={}\tv{}\tsha256={}\tcalls={}\terrors={}\tmean_ns={}\n",
            p.name,
            p.hook,
            p.topics.join(","),
            p.on_error,
            p.version,
            p.sha256.get(..12).unwrap_or("?"),
            c.calls,
            c.errors,
            c.mean_ns,
        ));
    }
    out
}

/// A message as `plugin test --message` takes it: the short form
/// (`topic`, `payload` or `payload_base64`, `key`, `headers`,
/// `timestamp_ms`) or the envelope `GET /v1/messages` and `format=json`
/// events answer (adding `id`, `origin`, `seq`, an RFC 3339 `timestamp`, a
/// null `key` or a `key_base64`, and a group member's `delivery`). Other members are refused, so that a
/// misspelt name is not silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestMessage {
    /// Topic the message was published to.
    pub topic: String,
    /// Payload as text.
    #[serde(default)]
    pub payload: Option<String>,
    /// Payload in standard base64.
    #[serde(default)]
    pub payload_base64: Option<String>,
    /// Key as text (`null`: none).
    #[serde(default)]
    pub key: Option<String>,
    /// Key in standard base64.
    #[serde(default)]
    pub key_base64: Option<String>,
    /// Headers, name to value.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Publish time in ms since the Unix epoch.
    #[serde(default)]
    pub timestamp_ms: Option<u64>,
    /// Publish time in RFC 3339 (the envelope's form).
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Envelope: message id (shown in results, not passed to the hook).
    #[serde(default)]
    pub id: Option<String>,
    /// Envelope: origin node (not passed to the hook).
    #[serde(default)]
    pub origin: Option<String>,
    /// Envelope: stream sequence (not passed to the hook).
    #[serde(default)]
    pub seq: Option<u64>,
    /// Envelope of a consumer group member's event: the delivery count
    /// (not passed to the hook).
    #[serde(default)]
    pub delivery: Option<u64>,
}

/// A [`TestMessage`] decoded into what a hook receives.
#[derive(Debug, PartialEq, Eq)]
pub struct OwnedMessage {
    /// Topic.
    pub topic: String,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Headers in name order.
    pub headers: Vec<Header>,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Publish time in ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// The envelope's id, when given.
    pub id: Option<String>,
}

impl TestMessage {
    /// Decodes payload, key and time; refuses contradicting members.
    pub fn decode(self) -> anyhow::Result<OwnedMessage> {
        let payload = match (self.payload, self.payload_base64) {
            (Some(p), None) => p.into_bytes(),
            (None, Some(b)) => STANDARD
                .decode(b)
                .map_err(|_| anyhow::anyhow!("payload_base64 is not base64"))?,
            (None, None) => Vec::new(),
            (Some(_), Some(_)) => anyhow::bail!("give payload or payload_base64, not both"),
        };
        let key = match (self.key, self.key_base64) {
            (Some(k), None) => Some(k.into_bytes()),
            (None, Some(b)) => Some(
                STANDARD
                    .decode(b)
                    .map_err(|_| anyhow::anyhow!("key_base64 is not base64"))?,
            ),
            (None, None) => None,
            (Some(_), Some(_)) => anyhow::bail!("give key or key_base64, not both"),
        };
        let timestamp_ms = match (self.timestamp_ms, self.timestamp) {
            (Some(ms), None) => ms,
            (None, Some(t)) => switchyard_model::Timestamp::parse_rfc3339(&t)
                .map_err(|e| anyhow::anyhow!("timestamp {t:?}: {e}"))?
                .millis(),
            (None, None) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            (Some(_), Some(_)) => anyhow::bail!("give timestamp or timestamp_ms, not both"),
        };
        Ok(OwnedMessage {
            topic: self.topic,
            key,
            headers: self
                .headers
                .into_iter()
                .map(|(name, value)| Header { name, value })
                .collect(),
            payload,
            timestamp_ms,
            id: self.id,
        })
    }
}

/// Parses `--message`: one JSON message (short form or envelope), or
/// several as JSON lines (NDJSON), each of either form.
pub fn parse_messages(text: &str) -> anyhow::Result<Vec<OwnedMessage>> {
    let raw: Vec<TestMessage> = match serde_json::from_str::<TestMessage>(text) {
        Ok(m) => vec![m],
        Err(_) => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| anyhow::anyhow!("message {}: {e}", i + 1))
            })
            .collect::<anyhow::Result<_>>()?,
    };
    raw.into_iter()
        .enumerate()
        .map(|(i, m)| {
            m.decode()
                .map_err(|e| anyhow::anyhow!("message {}: {e}", i + 1))
        })
        .collect()
}

/// A candidate as `plugin test --candidates` takes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCandidate {
    id: String,
    #[serde(default)]
    inflight: u32,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

/// Text, or the contents of a file for `@path`.
pub fn text_or_file(arg: &str) -> anyhow::Result<String> {
    match arg.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {path}: {e}"))
        }
        None => Ok(arg.to_owned()),
    }
}

/// Parses `--candidates` (required for the pick hook, refused for the
/// others).
pub fn parse_candidates(hook: Hook, arg: Option<&str>) -> anyhow::Result<Vec<Candidate>> {
    Ok(match (hook, arg) {
        (Hook::Pick, Some(c)) => serde_json::from_str::<Vec<TestCandidate>>(&text_or_file(c)?)
            .map_err(|e| anyhow::anyhow!("--candidates: {e}"))?
            .into_iter()
            .map(|c| Candidate {
                id: c.id,
                inflight: c.inflight,
                weight: c.weight,
                labels: c
                    .labels
                    .into_iter()
                    .map(|(name, value)| Header { name, value })
                    .collect(),
            })
            .collect(),
        (Hook::Pick, None) => anyhow::bail!("--candidates is required for the pick hook"),
        (_, Some(_)) => anyhow::bail!("--candidates is only for the pick hook"),
        _ => Vec::new(),
    })
}

/// A plugin engine for local runs: no instance pool, a memory budget that
/// two bindings of the largest memory cap (4 GiB, one instance each) fit
/// in, and no compile time limit.
pub fn local_engine() -> anyhow::Result<PluginEngine> {
    Ok(PluginEngine::new(EngineConfig {
        pooled_instances: 0,
        memory_budget_bytes: 16 << 30,
        // The node's compile limit protects it from uploads; here the author
        // compiles their own component (or the one bound on their node), and
        // one that embeds a language runtime (JavaScript, Python) takes tens
        // of seconds on a small machine.
        compile_timeout: std::time::Duration::MAX,
        ..EngineConfig::default()
    })?)
}

/// Settings of `plugin test`.
pub struct Test<'a> {
    /// Component file.
    pub file: &'a Path,
    /// Hook to run.
    pub hook: Hook,
    /// Plugin configuration.
    pub config: &'a str,
    /// For `pick`: a JSON array of candidates, or `@file`.
    pub candidates: Option<&'a str>,
    /// Fuel per call.
    pub fuel: Option<u64>,
    /// Memory cap in MiB.
    pub memory_mb: Option<u64>,
}

/// One loaded binding that runs a hook locally, message after message (one
/// instance, one in-memory key-value store, as on a node), and keeps the
/// tallies of `--summary`.
pub struct Runner {
    binding: Arc<Binding>,
    hook: Hook,
    candidates: Vec<Candidate>,
    summary: Summary,
}

/// What `--summary` counts.
#[derive(Debug, Default)]
pub struct Summary {
    /// Messages run.
    pub messages: u64,
    /// Calls by decision (`deliver`, `drop`, `reroute`, `replace`; `keep`,
    /// `skip`, `transform`; `pick`, `none`).
    pub decisions: std::collections::BTreeMap<String, u64>,
    /// Route: messages per rerouted topic; pick: picks per member id.
    pub targets: std::collections::BTreeMap<String, u64>,
    /// Failed calls by error kind.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// Time per call, in µs.
    pub micros: Vec<f64>,
}

impl Summary {
    /// Whether any call failed.
    pub fn failed(&self) -> bool {
        !self.errors.is_empty()
    }

    fn record(&mut self, hook: Hook, v: &Value, micros: f64) {
        self.messages += 1;
        self.micros.push(micros);
        if let Some(e) = v.get("error") {
            let kind = e["kind"].as_str().unwrap_or("other").to_owned();
            *self.errors.entry(kind).or_default() += 1;
            return;
        }
        let decision = v["decision"].as_str().unwrap_or("?").to_owned();
        match (hook, decision.as_str()) {
            (Hook::Route, "reroute") => {
                for t in v["topics"].as_array().into_iter().flatten() {
                    let t = t.as_str().unwrap_or("?").to_owned();
                    *self.targets.entry(t).or_default() += 1;
                }
            }
            (Hook::Pick, "pick") => {
                let id = v["id"].as_str().unwrap_or("?").to_owned();
                *self.targets.entry(id).or_default() += 1;
            }
            _ => {}
        }
        *self.decisions.entry(decision).or_default() += 1;
    }

    /// The summary as one JSON object: `messages`, `decisions`,
    /// `reroute_topics` (route) or `picked` (pick), `errors`,
    /// `mean_micros`, `p99_micros`.
    pub fn to_json(&self, hook: Hook) -> Value {
        let mut sorted = self.micros.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let mean = if n == 0 {
            0.0
        } else {
            sorted.iter().sum::<f64>() / n as f64
        };
        let p99 = match n {
            0 => 0.0,
            _ => sorted[(n * 99).div_ceil(100).clamp(1, n) - 1],
        };
        let round = |x: f64| (x * 10.0).round() / 10.0;
        let mut v = json!({
            "messages": self.messages,
            "decisions": self.decisions,
            "errors": self.errors,
            "mean_micros": round(mean),
            "p99_micros": round(p99),
        });
        match hook {
            Hook::Route => v["reroute_topics"] = json!(self.targets),
            Hook::Pick => v["picked"] = json!(self.targets),
            Hook::Filter => {}
        }
        v
    }
}

impl Runner {
    /// Loads the component and binds it as a node would.
    pub fn new(t: &Test<'_>) -> anyhow::Result<Runner> {
        let bytes = std::fs::read(t.file)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", t.file.display()))?;
        let candidates = parse_candidates(t.hook, t.candidates)?;
        let mut limits = Limits::default();
        if let Some(f) = t.fuel {
            limits.fuel = f;
        }
        if let Some(m) = t.memory_mb {
            limits.memory_bytes = (m as usize) << 20;
        }
        Runner::from_bytes(
            &local_engine()?,
            &bytes,
            t.hook,
            t.config,
            candidates,
            limits,
        )
    }

    /// Binds the component `bytes` on `engine` for `hook`, with `config`
    /// and `limits`, as a node would.
    pub fn from_bytes(
        engine: &PluginEngine,
        bytes: &[u8],
        hook: Hook,
        config: &str,
        candidates: Vec<Candidate>,
        limits: Limits,
    ) -> anyhow::Result<Runner> {
        let plugin = engine.load(bytes)?;
        let spec = BindingSpec {
            name: "test".into(),
            hook,
            topics: vec![">".parse::<TopicPattern>().expect("valid pattern")],
            config: config.to_owned(),
            on_error: ErrorPolicy::Drop,
            limits,
        };
        let binding = Binding::new(
            engine,
            plugin,
            spec,
            Arc::new(MemoryKv::default()),
            Arc::new(Stats::default()),
        )?;
        Ok(Runner {
            binding,
            hook,
            candidates,
            summary: Summary::default(),
        })
    }

    /// The sha256 of the component, in hex.
    pub fn sha256(&self) -> String {
        self.binding.plugin().sha256()
    }

    /// Runs the hook on one message; returns its decision as JSON (with
    /// `micros`, and `message` when the message has an id), or
    /// `{"error": {"kind", "detail"}}` for a failed call.
    pub fn run(&mut self, m: &OwnedMessage) -> Value {
        let msg = PluginMessage {
            topic: &m.topic,
            key: m.key.as_deref(),
            headers: &m.headers,
            payload: &m.payload,
            timestamp_ms: m.timestamp_ms,
        };
        let candidates = &self.candidates;
        let start = Instant::now();
        let result = match self.hook {
            Hook::Route => self.binding.route(&msg).map(route_json),
            Hook::Filter => self.binding.filter(&msg).map(filter_json),
            Hook::Pick => self.binding.pick(&msg, candidates).map(|i| match i {
                Some(i) => json!({"decision": "pick", "index": i, "id": candidates[i].id}),
                None => json!({"decision": "none"}),
            }),
        };
        let micros = start.elapsed().as_secs_f64() * 1e6;
        let mut v = match result {
            Ok(v) => v,
            Err(e) => {
                json!({"error": {"kind": e.kind().map(|k| k.as_str()), "detail": e.to_string()}})
            }
        };
        self.summary.record(self.hook, &v, micros);
        v["micros"] = json!((micros * 10.0).round() / 10.0);
        if let Some(id) = &m.id {
            v["message"] = json!(id);
        }
        v
    }

    /// The tallies so far.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// The plugin's own counters (`metrics` import), when it kept any.
    pub fn counters(&self) -> Option<Value> {
        let custom = self.binding.stats().snapshot().custom;
        (!custom.is_empty()).then(|| json!({ "counters": custom }))
    }
}

/// Runs a hook locally on each message of `message` (one JSON message, or
/// several as JSON lines, or `@file` holding either) in order, and returns
/// one JSON line per decision, then the plugin's counters if any. A failed
/// call is reported as `{"error": ...}`; the runner's summary tells whether
/// any did.
pub fn test(runner: &mut Runner, message: &str) -> anyhow::Result<Vec<Value>> {
    let text = text_or_file(message)?;
    let messages = parse_messages(&text)?;
    if messages.is_empty() {
        anyhow::bail!("--message holds no message");
    }
    let mut out: Vec<Value> = messages.iter().map(|m| runner.run(m)).collect();
    out.extend(runner.counters());
    Ok(out)
}

/// Settings of `plugin test --replay`.
pub struct Replay<'a> {
    /// Topic pattern whose stored messages are pulled.
    pub pattern: &'a str,
    /// `earliest`, `latest`, a cursor or an RFC 3339 time.
    pub from: &'a str,
    /// Most messages to run.
    pub limit: u64,
}

/// The most messages one `GET /v1/messages` answers.
const PAGE: u64 = 1000;

/// Pulls the stored messages of a pattern through `GET /v1/messages`, page
/// after page from `from`, and runs the hook on each; `each` receives every
/// result. Stops after `limit` messages or at the first empty page (from
/// `latest`, a page waits up to 5 s for a message to be published).
pub async fn replay(
    client: &Client,
    r: &Replay<'_>,
    runner: &mut Runner,
    mut each: impl FnMut(&Value) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    replay_messages(client, r, |m| each(&runner.run(m))).await
}

/// Pulls the stored messages of a pattern as [`replay`] does and hands
/// each, decoded, to `each` (on a thread that may block).
pub async fn replay_messages(
    client: &Client,
    r: &Replay<'_>,
    mut each: impl FnMut(&OwnedMessage) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let wait = if r.from == "latest" { 5 } else { 0 };
    let mut from = r.from.to_owned();
    let mut left = r.limit;
    while left > 0 {
        let path = format!(
            "/v1/messages?{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair("topic", r.pattern)
                .append_pair("from", &from)
                .append_pair("limit", &left.min(PAGE).to_string())
                .append_pair("wait", &wait.to_string())
                .finish()
        );
        let page = client.get_json(&path).await?;
        let messages = page["messages"].as_array().cloned().unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        let decoded = messages
            .into_iter()
            .map(|v| {
                serde_json::from_value::<TestMessage>(v)
                    .map_err(anyhow::Error::from)
                    .and_then(TestMessage::decode)
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(|e| anyhow::anyhow!("a stored message: {e}"))?;
        left = left.saturating_sub(decoded.len() as u64);
        tokio::task::block_in_place(|| decoded.iter().try_for_each(&mut each))?;
        match page["cursor"].as_str() {
            Some(c) => from = c.to_owned(),
            None => anyhow::bail!("the node's answer has no cursor"),
        }
    }
    Ok(())
}

/// The exit status of `plugin test --against` when the local component
/// decided at least one message differently from the bound one (0: every
/// decision agreed; 1: an error, 2: a refused flag, as for every command).
pub const DIFFER_STATUS: u8 = 3;

/// The error `plugin test --against` ends with when decisions differ; the
/// command exits with [`DIFFER_STATUS`].
#[derive(Debug, thiserror::Error)]
#[error(
    "{differing} of {compared} messages decided differently by the local component and binding {name}"
)]
pub struct Differ {
    /// The binding compared with.
    pub name: String,
    /// Messages run through both.
    pub compared: u64,
    /// Messages decided differently.
    pub differing: u64,
}

/// A binding of a node, as `plugin test --against` runs it: its settings
/// and component.
#[derive(Debug)]
pub struct Bound {
    /// Binding name.
    pub name: String,
    /// Its hook.
    pub hook: Hook,
    /// Its configuration string.
    pub config: String,
    /// Its limits (those a local run uses).
    pub limits: Limits,
    /// Its version.
    pub version: u64,
    /// The component's sha256, in hex.
    pub sha256: String,
    /// The component.
    pub component: Vec<u8>,
}

/// Reads binding `name` of the node: `GET /v1/plugins/{name}` for its
/// settings and `GET /v1/plugins/{name}/component` for its component
/// (read again once when the binding changed between the two).
pub async fn fetch_bound(client: &Client, name: &str) -> anyhow::Result<Bound> {
    for _ in 0..2 {
        let info = client.get_json(&format!("/v1/plugins/{name}")).await?;
        let (sha256, version, component) = fetch_component(client, name).await?;
        if info["sha256"].as_str() != Some(sha256.as_str()) {
            continue;
        }
        let hook: Hook = info["hook"]
            .as_str()
            .unwrap_or("?")
            .parse()
            .map_err(|e| anyhow::anyhow!("binding {name}: {e}"))?;
        let l = &info["limits"];
        let defaults = Limits::default();
        let limits = Limits {
            fuel: l["fuel"].as_u64().unwrap_or(defaults.fuel),
            memory_bytes: l["memory_bytes"]
                .as_u64()
                .map_or(defaults.memory_bytes, |m| m as usize),
            max_host_calls: l["max_host_calls"]
                .as_u64()
                .and_then(|m| u32::try_from(m).ok())
                .unwrap_or(defaults.max_host_calls),
            max_output_bytes: l["max_output_bytes"]
                .as_u64()
                .map_or(defaults.max_output_bytes, |m| m as usize),
            ..defaults
        };
        return Ok(Bound {
            name: name.to_owned(),
            hook,
            config: info["config"].as_str().unwrap_or_default().to_owned(),
            limits,
            version,
            sha256,
            component,
        });
    }
    anyhow::bail!("binding {name} changed while it was read; try again")
}

/// `GET /v1/plugins/{name}/component`: the sha256 the node names, the
/// binding's version, and the bytes.
async fn fetch_component(client: &Client, name: &str) -> anyhow::Result<(String, u64, Vec<u8>)> {
    use http_body_util::BodyExt;
    let req = client
        .request(http::Method::GET, &format!("/v1/plugins/{name}/component"))
        .body(http_body_util::Full::new(Bytes::new()))?;
    let resp = client.send(req).await?;
    let header = |h: &str| {
        resp.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let sha256 = header("switchyard-plugin-sha256")
        .ok_or_else(|| anyhow::anyhow!("the node did not name the component's sha256"))?;
    let version = header("switchyard-plugin-version")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bytes = resp.into_body().collect().await?.to_bytes().to_vec();
    Ok((sha256, version, bytes))
}

/// The part of a hook's result that `--against` compares: the decision
/// without its time and message id; for a failed call, its error kind
/// only (the detail may name code offsets that differ between builds).
pub fn comparable(v: &Value) -> Value {
    match v.get("error") {
        Some(e) => json!({ "error": e["kind"] }),
        None => without_times(v.clone()),
    }
}

/// A result without `micros` and `message`.
fn without_times(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("micros");
        o.remove("message");
    }
    v
}

/// A local component and a bound one run on the same messages, each with
/// its own instance and key-value store.
pub struct Against {
    local: Runner,
    bound: Runner,
    binding: String,
    version: u64,
    compared: u64,
    differing: u64,
    local_errors: u64,
    bound_errors: u64,
}

impl Against {
    /// Compares `local` with `bound`, which runs binding `b`'s component.
    pub fn new(local: Runner, bound: Runner, b: &Bound) -> Against {
        Against {
            local,
            bound,
            binding: b.name.clone(),
            version: b.version,
            compared: 0,
            differing: 0,
            local_errors: 0,
            bound_errors: 0,
        }
    }

    /// Runs both on `m`; when they decide differently, the line that says
    /// so: `{"message", "topic", "local", "bound"}` (the two results
    /// without their times).
    pub fn run(&mut self, m: &OwnedMessage) -> Option<Value> {
        let local = self.local.run(m);
        let bound = self.bound.run(m);
        self.compared += 1;
        self.local_errors += u64::from(local.get("error").is_some());
        self.bound_errors += u64::from(bound.get("error").is_some());
        if comparable(&local) == comparable(&bound) {
            return None;
        }
        self.differing += 1;
        Some(json!({
            "message": m.id,
            "topic": m.topic,
            "local": without_times(local),
            "bound": without_times(bound),
        }))
    }

    /// The summary line: `compared`, `differing`, the binding's name,
    /// version and sha256, the local component's sha256, and the failed
    /// calls of each.
    pub fn summary(&self) -> Value {
        json!({
            "compared": self.compared,
            "differing": self.differing,
            "binding": self.binding,
            "version": self.version,
            "bound_sha256": self.bound.sha256(),
            "local_sha256": self.local.sha256(),
            "local_errors": self.local_errors,
            "bound_errors": self.bound_errors,
        })
    }

    /// `Err(Differ)` when any message was decided differently.
    pub fn verdict(&self) -> Result<(), Differ> {
        if self.differing == 0 {
            return Ok(());
        }
        Err(Differ {
            name: self.binding.clone(),
            compared: self.compared,
            differing: self.differing,
        })
    }
}

fn payload_json(p: &[u8]) -> Value {
    match std::str::from_utf8(p) {
        Ok(s) => json!({ "payload": s }),
        Err(_) => json!({ "payload_base64": STANDARD.encode(p) }),
    }
}

fn headers_json(h: &[Header]) -> Value {
    Value::Array(
        h.iter()
            .map(|h| json!({"name": h.name, "value": h.value}))
            .collect(),
    )
}

fn route_json(d: RouteDecision) -> Value {
    match d {
        RouteDecision::Deliver => json!({"decision": "deliver"}),
        RouteDecision::Drop(reason) => json!({"decision": "drop", "reason": reason}),
        RouteDecision::Reroute(topics) => json!({"decision": "reroute", "topics": topics}),
        RouteDecision::Replace { headers, payload } => {
            let mut v = json!({"decision": "replace"});
            if let Some(h) = headers {
                v["headers"] = headers_json(&h);
            }
            if let Some(p) = payload {
                for (k, x) in payload_json(&p).as_object().expect("object") {
                    v[k] = x.clone();
                }
            }
            v
        }
    }
}

fn filter_json(d: FilterDecision) -> Value {
    match d {
        FilterDecision::Keep => json!({"decision": "keep"}),
        FilterDecision::Skip => json!({"decision": "skip"}),
        FilterDecision::Transform(p) => {
            let mut v = json!({"decision": "transform"});
            for (k, x) in payload_json(&p).as_object().expect("object") {
                v[k] = x.clone();
            }
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_bindings_one_per_line() {
        let list: PluginList = serde_json::from_value(json!({"plugins": [{
            "name": "region", "hook": "route", "topics": ["orders", "jobs.>"], "config": "",
            "on_error": "pass", "sha256": "0123456789abcdef0123", "size": 10, "version": 2,
            "updated_ms": 1, "source": "api", "limits": {"fuel": 1},
            "counters": {"calls": 7, "errors": 1, "time_ns": 700, "mean_ns": 100, "custom": {}}
        }]}))
        .unwrap();
        assert_eq!(
            format_list(&list),
            "region\thook=route\ttopics=orders,jobs.>\ton_error=pass\tv2\tsha256=0123456789ab\tcalls=7\terrors=1\tmean_ns=100\n"
        );
        let none: PluginList = serde_json::from_value(json!({"plugins": []})).unwrap();
        assert_eq!(format_list(&none), "no plugins\n");
    }

    #[test]
    fn parses_the_short_form() {
        let m = parse_messages(
            r#"{"topic": "orders", "payload": "hi", "key": "k", "headers": {"a": "1"}, "timestamp_ms": 5}"#,
        )
        .unwrap();
        assert_eq!(
            m,
            [OwnedMessage {
                topic: "orders".into(),
                key: Some(b"k".to_vec()),
                headers: vec![Header {
                    name: "a".into(),
                    value: "1".into()
                }],
                payload: b"hi".to_vec(),
                timestamp_ms: 5,
                id: None,
            }]
        );
        let m = parse_messages(r#"{"topic": "t", "payload_base64": "AP8="}"#).unwrap();
        assert_eq!(m[0].payload, [0, 255]);
        assert_eq!(m[0].key, None);
        assert!(parse_messages(r#"{"topic": "t", "paylod": "x"}"#).is_err());
        assert!(parse_messages(r#"{"topic": "t", "payload": "x", "payload_base64": ""}"#).is_err());
    }

    #[test]
    fn parses_the_envelope_of_get_messages() {
        let m = parse_messages(
            r#"{"topic":"orders.eu","id":"abf6944292ab4b2e-1","origin":"abf6944292ab4b2e","seq":1,
               "timestamp":"2026-11-26T02:37:50.131Z","key":"cust-42",
               "headers":{"content-type":"application/json","trace":"abc"},"payload":"{\"id\":1}"}"#,
        )
        .unwrap();
        assert_eq!(m.len(), 1);
        let m = &m[0];
        assert_eq!(m.topic, "orders.eu");
        assert_eq!(m.id.as_deref(), Some("abf6944292ab4b2e-1"));
        assert_eq!(m.key.as_deref(), Some(&b"cust-42"[..]));
        assert_eq!(m.payload, br#"{"id":1}"#);
        assert_eq!(m.headers.len(), 2);
        // date -u -d 2026-11-26T02:37:50.131Z +%s%3N
        assert_eq!(m.timestamp_ms, 1_795_660_670_131);
        // A null key, a binary key and payload.
        let m = parse_messages(
            r#"{"topic":"t","id":"a-2","origin":"a","seq":2,"timestamp":"2026-11-26T02:37:50Z",
               "key":null,"headers":{},"payload_base64":"AQI="}"#,
        )
        .unwrap();
        assert_eq!((m[0].key.clone(), m[0].payload.clone()), (None, vec![1, 2]));
        // A group member's event carries its delivery count.
        let m = parse_messages(
            r#"{"topic":"t","id":"a-3","origin":"a","seq":3,"timestamp":"2026-11-26T02:37:50Z",
               "key":"k","headers":{},"payload":"p","delivery":2}"#,
        )
        .unwrap();
        assert_eq!(m[0].payload, b"p");
        let m = parse_messages(r#"{"topic":"t","key_base64":"/w==","headers":{},"payload":""}"#)
            .unwrap();
        assert_eq!(m[0].key.as_deref(), Some(&[255u8][..]));
        assert!(parse_messages(r#"{"topic":"t","timestamp":"yesterday"}"#).is_err());
    }

    #[test]
    fn parses_json_lines_of_both_forms() {
        let text = concat!(
            r#"{"topic": "a", "payload": "1"}"#,
            "\n\n",
            r#"{"topic":"b","id":"x-1","origin":"x","seq":1,"timestamp":"2026-11-26T02:37:50.131Z","key":null,"headers":{},"payload":"2"}"#,
            "\n"
        );
        let m = parse_messages(text).unwrap();
        let topics: Vec<&str> = m.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(topics, ["a", "b"]);
        let err = parse_messages("{\"topic\": \"a\"}\n{\"nope\": 1}\n").unwrap_err();
        assert!(err.to_string().contains("message 2"), "{err}");
    }

    #[test]
    fn against_compares_decisions_without_times_and_failures_by_kind() {
        assert_eq!(
            comparable(&json!({"decision": "keep", "micros": 3.5, "message": "a-1"})),
            json!({"decision": "keep"})
        );
        assert_eq!(
            comparable(&json!({"error": {"kind": "trap", "detail": "at 0x10"}, "micros": 1.0})),
            comparable(&json!({"error": {"kind": "trap", "detail": "at 0x24"}}))
        );
        assert_ne!(
            comparable(&json!({"error": {"kind": "trap", "detail": ""}})),
            comparable(&json!({"error": {"kind": "out-of-fuel", "detail": ""}}))
        );
        assert_ne!(
            comparable(&json!({"decision": "reroute", "topics": ["o.eu"]})),
            comparable(&json!({"decision": "reroute", "topics": ["o.us"]}))
        );
        assert_ne!(
            comparable(&json!({"decision": "transform", "payload": "a"})),
            comparable(&json!({"decision": "transform", "payload_base64": "YQ=="}))
        );
    }

    #[test]
    fn summary_counts_decisions_targets_errors_and_times() {
        let mut s = Summary::default();
        s.record(
            Hook::Route,
            &json!({"decision": "reroute", "topics": ["o.eu"]}),
            1.0,
        );
        s.record(
            Hook::Route,
            &json!({"decision": "reroute", "topics": ["o.eu"]}),
            2.0,
        );
        s.record(Hook::Route, &json!({"decision": "deliver"}), 3.0);
        s.record(
            Hook::Route,
            &json!({"error": {"kind": "trap", "detail": "x"}}),
            100.0,
        );
        let v = s.to_json(Hook::Route);
        assert_eq!(v["messages"], 4);
        assert_eq!(v["decisions"], json!({"reroute": 2, "deliver": 1}));
        assert_eq!(v["reroute_topics"], json!({"o.eu": 2}));
        assert_eq!(v["errors"], json!({"trap": 1}));
        assert_eq!(v["mean_micros"], 26.5);
        assert_eq!(v["p99_micros"], 100.0);
        assert!(s.failed());
    }
}
