//! `/v1/plugins`: bind, list and unbind WebAssembly plugins.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use serde_json::{Value, json};
use switchyard_model::TopicPattern;
use switchyard_router::{BindingSpec, ErrorPolicy, Hook, Limits, PluginInfo, Source};

use crate::handlers::{json_response, not_allowed, read_body};
use crate::problem::Problem;
use crate::query::Query;
use crate::server::{App, Body, Out};

/// Query parameters of `PUT /v1/plugins/{name}`.
const PUT_PARAMS: &[&str] = &[
    "hook",
    "topic",
    "config",
    "on_error",
    "fuel",
    "memory_mb",
    "max_instances",
    "max_host_calls",
    "scope",
];

pub(crate) async fn handle(
    app: &App,
    name: Option<&str>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Problem> {
    if let Some(binding) = name.and_then(|n| n.strip_suffix("/logs"))
        && !binding.contains('/')
    {
        return logs(app, binding, req);
    }
    match (name, req.method().clone()) {
        (None, Method::GET) => {
            Query::parse(req.uri().query(), &[])?;
            let plugins = app.router.plugins();
            let list: Vec<Value> = plugins.list().iter().map(info_json).collect();
            let (used, total) = plugins.engine().memory_budget();
            let (slots_used, slots) = plugins.engine().instance_slots();
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "plugins": list,
                    "memory_budget": {
                        "reserved_bytes": used,
                        "total_bytes": total,
                        "reserved_instances": slots_used,
                        "pooled_instances": slots,
                    },
                }),
            ))
        }
        (None, _) => Err(not_allowed("GET")),
        (Some(name), Method::GET) => {
            Query::parse(req.uri().query(), &[])?;
            Ok(json_response(StatusCode::OK, &one(app, name).await?))
        }
        (Some(name), Method::PUT) => put(app, name, req).await,
        (Some(name), Method::DELETE) => {
            Query::parse(req.uri().query(), &[])?;
            let (plugins, n) = (app.router.plugins().clone(), name.to_owned());
            tokio::task::spawn_blocking(move || plugins.remove(&n))
                .await
                .map_err(|_| switchyard_router::RouterError::ShuttingDown)??;
            Ok(json_response(StatusCode::OK, &json!({ "deleted": name })))
        }
        (Some(_), _) => Err(not_allowed("GET, PUT, DELETE")),
    }
}

/// `GET /v1/plugins/{name}/logs`: the binding's log lines as they are
/// written (those its log rate limit admits), as SSE `log` events whose
/// data is `{"level", "message", "time", "time_ms"}`. A reader that falls
/// more than [`switchyard_router::LOG_TAIL_CAPACITY`] lines behind loses
/// the oldest and receives a `dropped` event `{"dropped": n}`; nothing
/// else is kept for it. The stream ends when the binding is removed.
fn logs(app: &App, name: &str, req: Request<Incoming>) -> Result<Response<Body>, Problem> {
    if req.method() != Method::GET {
        return Err(not_allowed("GET"));
    }
    Query::parse(req.uri().query(), &[])?;
    let rx = app
        .router
        .plugins()
        .subscribe_logs(name)
        .ok_or_else(|| switchyard_router::RouterError::PluginNotFound(name.to_owned()))?;
    struct State {
        rx: tokio::sync::broadcast::Receiver<switchyard_router::LogLine>,
        shutdown: tokio::sync::watch::Receiver<bool>,
        heartbeat: std::time::Duration,
        prelude: Option<Bytes>,
    }
    let state = State {
        rx,
        shutdown: app.shutdown.clone(),
        heartbeat: app.live().heartbeat,
        prelude: Some(Bytes::from(format!(
            "retry: {}\n: connected\n\n",
            app.live().retry.as_millis()
        ))),
    };
    let events = futures_util::stream::unfold(state, |mut st| async move {
        use tokio::sync::broadcast::error::RecvError;
        if let Some(p) = st.prelude.take() {
            return Some((Ok::<_, Infallible>(Frame::data(Out::from(p))), st));
        }
        if *st.shutdown.borrow() {
            return None;
        }
        let chunk = tokio::select! {
            line = st.rx.recv() => match line {
                Ok(l) => {
                    let data = json!({
                        "level": l.level,
                        "message": l.message,
                        "time": switchyard_model::Timestamp::from_millis(l.time_ms).to_rfc3339(),
                        "time_ms": l.time_ms,
                    });
                    Bytes::from(crate::sse::event("log", &data.to_string()))
                }
                Err(RecvError::Lagged(n)) => Bytes::from(crate::sse::event(
                    "dropped",
                    &json!({ "dropped": n }).to_string(),
                )),
                Err(RecvError::Closed) => return None,
            },
            () = tokio::time::sleep(st.heartbeat) => Bytes::from_static(b": heartbeat\n\n"),
            _ = st.shutdown.changed() => return None,
        };
        Some((Ok(Frame::data(Out::from(chunk))), st))
    });
    let mut resp = Response::new(StreamBody::new(events).boxed_unsync());
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    h.insert("x-accel-buffering", http::HeaderValue::from_static("no"));
    Ok(resp)
}

fn parse<T: std::str::FromStr>(raw: &str, what: &str) -> Result<T, Problem>
where
    T::Err: std::fmt::Display,
{
    raw.parse::<T>()
        .map_err(|e| Problem::bad_request("invalid_parameter", format!("{what}={raw:?}: {e}")))
}

/// `GET /v1/plugins/{name}`: the binding as this node runs it; for a
/// cluster binding also the table's version and what every live member
/// runs of it (`rollout`). A cluster binding this node does not run (it
/// refused it, or a binding made here alone shadows it) is shown from the
/// table.
async fn one(app: &App, name: &str) -> Result<Value, Problem> {
    let plugins = app.router.plugins();
    let table = plugins
        .table_entry(name)
        .filter(|(e, _)| e.binding.is_some());
    let mut v = match (plugins.info(name), &table) {
        (Some(info), _) => info_json(&info),
        (None, Some((e, _))) => table_json(e),
        (None, None) => {
            return Err(switchyard_router::RouterError::PluginNotFound(name.to_owned()).into());
        }
    };
    if let (Some(cluster), Some((entry, _))) = (app.router.cluster(), &table) {
        let members = switchyard_router::rollout(plugins, cluster, name).await;
        v["cluster"] = json!({
            "version": entry.binding.as_ref().map_or(0, |d| d.version),
            "sha256": entry.binding.as_ref().map_or("", |d| d.sha256.as_str()),
            "stamp": stamp_json(entry.stamp),
        });
        v["rollout"] = members
            .iter()
            .map(|m| rollout_json(m, entry.stamp))
            .collect();
    }
    Ok(v)
}

fn stamp_json(s: switchyard_cluster::rollout::Stamp) -> Value {
    json!({
        "time": switchyard_model::Timestamp(s.time).to_rfc3339(),
        "hlc": s.time,
        "node": switchyard_model::NodeId(s.node).to_string(),
    })
}

/// One member's line of a rollout: `state` is `running`, `pending`,
/// `refused`, `shadowed`, `deleted`, `unknown` (its table has no entry
/// yet) or `unreachable`; `current` tells whether it runs the table's
/// version this node holds.
fn rollout_json(
    m: &switchyard_router::MemberRollout,
    want: switchyard_cluster::rollout::Stamp,
) -> Value {
    let mut v = json!({
        "node": m.node,
        "http_addr": m.http_addr,
        "self": m.is_self,
    });
    match &m.status {
        Ok(Some(s)) => {
            v["state"] = json!(s.state);
            v["version"] = json!(s.version);
            v["sha256"] = json!(s.sha256);
            v["stamp"] = stamp_json(s.stamp);
            v["current"] = json!(s.stamp == want && s.state == "running");
            if !s.detail.is_empty() {
                v["detail"] = json!(s.detail);
            }
        }
        Ok(None) => {
            v["state"] = json!("unknown");
            v["current"] = json!(false);
        }
        Err(e) => {
            v["state"] = json!("unreachable");
            v["current"] = json!(false);
            v["detail"] = json!(e);
        }
    }
    v
}

/// A cluster binding this node does not run, as its table holds it.
fn table_json(e: &switchyard_cluster::rollout::Entry) -> Value {
    let d = e.binding.as_ref();
    json!({
        "name": e.name,
        "hook": d.map(|d| d.hook.as_str()),
        "topics": d.map(|d| &d.topics),
        "config": d.map(|d| d.config.as_str()),
        "on_error": d.map(|d| d.on_error.as_str()),
        "sha256": d.map(|d| d.sha256.as_str()),
        "size": d.map(|d| d.size),
        "version": d.map(|d| d.version),
        "source": "cluster",
        "scope": "cluster",
        "running_here": false,
    })
}

async fn put(app: &App, name: &str, req: Request<Incoming>) -> Result<Response<Body>, Problem> {
    switchyard_router::validate_name(name)?;
    let query = Query::parse(req.uri().query(), PUT_PARAMS)?;
    let plugins = app.router.plugins().clone();
    let existing = plugins.info(name);
    let in_cluster = app.router.cluster().is_some();
    let source = match (query.one("scope")?, &existing) {
        (Some("node"), _) => Source::Api,
        (Some("cluster"), _) if in_cluster => Source::Cluster,
        (Some("cluster"), _) => {
            return Err(Problem::bad_request(
                "invalid_parameter",
                "scope=cluster: this node is not part of a cluster",
            ));
        }
        (Some(other), _) => {
            return Err(Problem::bad_request(
                "invalid_parameter",
                format!("scope={other:?}: use node or cluster"),
            ));
        }
        (None, Some(e)) if e.source == Source::Cluster => Source::Cluster,
        (None, Some(_)) => Source::Api,
        (None, None) if in_cluster => Source::Cluster,
        (None, None) => Source::Api,
    };
    let hook: Hook = match (query.one("hook")?, &existing) {
        (Some(h), _) => parse(h, "hook")?,
        (None, Some(e)) => e.hook,
        (None, None) => {
            return Err(Problem::bad_request(
                "missing_parameter",
                "hook= is required: route, filter or pick",
            ));
        }
    };
    let mut topics: Vec<TopicPattern> = Vec::new();
    for t in query.all("topic") {
        topics.push(t.parse()?);
    }
    if topics.is_empty() {
        topics = match &existing {
            Some(e) => e.topics.iter().filter_map(|t| t.parse().ok()).collect(),
            None => vec![">".parse().expect("valid pattern")],
        };
    }
    let config = match (query.one("config")?, &existing) {
        (Some(c), _) => c.to_owned(),
        (None, Some(e)) => e.config.clone(),
        (None, None) => String::new(),
    };
    let on_error: ErrorPolicy = match (query.one("on_error")?, &existing) {
        (Some(p), _) => parse(p, "on_error")?,
        (None, Some(e)) => e.on_error,
        (None, None) => ErrorPolicy::default(),
    };
    let base = existing
        .as_ref()
        .map_or_else(|| plugins.default_limits(), |e| e.limits);
    let limits = Limits {
        fuel: query.number("fuel", base.fuel, 1, plugins.engine().config().max_fuel)?,
        memory_bytes: query.number("memory_mb", (base.memory_bytes >> 20) as u64, 1, 4096)?
            as usize
            * 1024
            * 1024,
        max_instances: query.number("max_instances", base.max_instances as u64, 1, 64)? as usize,
        max_host_calls: query.number("max_host_calls", base.max_host_calls as u64, 1, 1_000_000)?
            as u32,
        ..base
    };
    let (parts, body) = req.into_parts();
    let bytes = read_body(body, &parts.headers, app.live().max_plugin_bytes).await?;
    let component = (!bytes.is_empty()).then_some(bytes);
    let settings = BindingSpec {
        name: name.to_owned(),
        hook,
        topics,
        config,
        on_error,
        limits,
    };
    let created = existing.is_none();
    let info =
        tokio::task::spawn_blocking(move || plugins.bind(settings, component.as_deref(), source))
            .await
            .map_err(|_| switchyard_router::RouterError::ShuttingDown)??;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(status, &info_json(&info)))
}

/// The JSON of one binding, as `GET /v1/plugins` lists it.
pub(crate) fn info_json(p: &PluginInfo) -> Value {
    let s = &p.stats;
    json!({
        "name": p.name,
        "hook": p.hook.as_str(),
        "topics": p.topics,
        "config": p.config,
        "on_error": p.on_error.as_str(),
        "sha256": p.sha256,
        "size": p.size,
        "version": p.version,
        "updated_ms": p.updated_ms,
        "source": p.source.as_str(),
        "scope": match p.source { Source::Cluster => "cluster", Source::Api | Source::Config => "node" },
        "running_here": true,
        "stamp": p.stamp.map(stamp_json),
        "limits": {
            "fuel": p.limits.fuel,
            "memory_bytes": p.limits.memory_bytes,
            "max_instances": p.limits.max_instances,
            "max_host_calls": p.limits.max_host_calls,
            "max_output_bytes": p.limits.max_output_bytes,
        },
        "counters": {
            "calls": s.calls,
            "errors": s.errors,
            "time_ns": s.time_ns,
            "mean_ns": s.time_ns.checked_div(s.calls).unwrap_or(0),
            "instances_created": s.instances_created,
            "failures": s.failures,
            "custom": s.custom,
            "kv_keys": s.kv_keys,
            "kv_bytes": s.kv_bytes,
            "kv_refused": s.kv_refused,
            "logs": s.logs,
            "logs_dropped": s.logs_dropped,
        },
    })
}
