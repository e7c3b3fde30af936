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

/// A message as `plugin test --message` takes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestMessage {
    topic: String,
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    payload_base64: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    timestamp_ms: Option<u64>,
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
fn text_or_file(arg: &str) -> anyhow::Result<String> {
    match arg.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {path}: {e}"))
        }
        None => Ok(arg.to_owned()),
    }
}

/// Settings of `plugin test`.
pub struct Test<'a> {
    /// Component file.
    pub file: &'a Path,
    /// Hook to run.
    pub hook: Hook,
    /// Plugin configuration.
    pub config: &'a str,
    /// One JSON message, several as JSON lines, or `@file` holding either.
    pub message: &'a str,
    /// For `pick`: a JSON array of candidates, or `@file`.
    pub candidates: Option<&'a str>,
    /// Fuel per call.
    pub fuel: Option<u64>,
    /// Memory cap in MiB.
    pub memory_mb: Option<u64>,
}

/// Runs a hook locally on each given message in order (one instance, one
/// in-memory key-value store, as on a node) and returns one JSON line per
/// decision. A failed call is reported as `{"error": ...}` and makes the
/// result an error after the remaining messages ran.
pub fn test(t: &Test<'_>) -> anyhow::Result<(Vec<Value>, bool)> {
    let hook = t.hook;
    let bytes = std::fs::read(t.file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", t.file.display()))?;
    let engine = PluginEngine::new(EngineConfig {
        pooled_instances: 0,
        ..EngineConfig::default()
    })?;
    let plugin = engine.load(&bytes)?;
    let mut limits = Limits::default();
    if let Some(f) = t.fuel {
        limits.fuel = f;
    }
    if let Some(m) = t.memory_mb {
        limits.memory_bytes = (m as usize) << 20;
    }
    let spec = BindingSpec {
        name: "test".into(),
        hook,
        topics: vec![">".parse::<TopicPattern>().expect("valid pattern")],
        config: t.config.to_owned(),
        on_error: ErrorPolicy::Drop,
        limits,
    };
    let binding = Binding::new(
        &engine,
        plugin,
        spec,
        Arc::new(MemoryKv::default()),
        Arc::new(Stats::default()),
    )?;
    let text = text_or_file(t.message)?;
    let messages: Vec<TestMessage> = match serde_json::from_str::<TestMessage>(&text) {
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
    if messages.is_empty() {
        anyhow::bail!("--message holds no message");
    }
    let candidates: Vec<Candidate> = match (hook, t.candidates) {
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
    };
    let mut out = Vec::new();
    let mut failed = false;
    for m in messages {
        let payload = match (m.payload, m.payload_base64) {
            (Some(p), None) => p.into_bytes(),
            (None, Some(b)) => STANDARD
                .decode(b)
                .map_err(|_| anyhow::anyhow!("payload_base64 is not base64"))?,
            (None, None) => Vec::new(),
            (Some(_), Some(_)) => anyhow::bail!("give payload or payload_base64, not both"),
        };
        let headers: Vec<Header> = m
            .headers
            .into_iter()
            .map(|(name, value)| Header { name, value })
            .collect();
        let msg = PluginMessage {
            topic: &m.topic,
            key: m.key.as_deref().map(str::as_bytes),
            headers: &headers,
            payload: &payload,
            timestamp_ms: m.timestamp_ms.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64)
            }),
        };
        let start = Instant::now();
        let result = match hook {
            Hook::Route => binding.route(&msg).map(route_json),
            Hook::Filter => binding.filter(&msg).map(filter_json),
            Hook::Pick => binding.pick(&msg, &candidates).map(|i| match i {
                Some(i) => json!({"decision": "pick", "index": i, "id": candidates[i].id}),
                None => json!({"decision": "none"}),
            }),
        };
        let micros = start.elapsed().as_secs_f64() * 1e6;
        let mut v = match result {
            Ok(v) => v,
            Err(e) => {
                failed = true;
                json!({"error": {"kind": e.kind().map(|k| k.as_str()), "detail": e.to_string()}})
            }
        };
        v["micros"] = json!((micros * 10.0).round() / 10.0);
        out.push(v);
    }
    let custom = binding.stats().snapshot().custom;
    if !custom.is_empty() {
        out.push(json!({ "counters": custom }));
    }
    Ok((out, failed))
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
}
