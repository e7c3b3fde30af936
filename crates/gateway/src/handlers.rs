//! Request routing and the endpoint handlers.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_model::{Cursor, Header, Topic};
use switchyard_router::{Acks, InvalidMessage, PublishRequest, RouterError, Start};

use crate::auth::{self, Access, Anonymous, Denied};
use crate::cluster::Relayed;
use crate::cors;
use crate::envelope::{envelope, gap, published, unavailable};
use crate::problem::{Problem, invalid_message};
use crate::query::{Query, parse_start};
use crate::server::{App, Body, full};
use crate::sse::{self, Format};

/// Request header that carries the message key.
const KEY_HEADER: &str = "switchyard-key";
/// Prefix of request headers stored as message headers (the prefix is removed).
const HEADER_PREFIX: &str = "switchyard-header-";

pub(crate) async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    // Node-to-node requests carry their own signature; a browser cannot
    // make one, and peers name each other by their advertised addresses.
    if !req.uri().path().starts_with(NODE_TO_NODE_PREFIX) {
        let host = request_host(&req);
        let Ok(host) = host else {
            return Problem::bad_request("invalid_header", "the Host header is not visible ASCII")
                .into_response();
        };
        if !app.hosts.allows(host) {
            return Problem::new(
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected_request",
                format!(
                    "this node does not answer to the host {:?}; see [http] allowed_hosts",
                    host.unwrap_or_default()
                ),
            )
            .into_response();
        }
        if req.method() != Method::OPTIONS
            && !cors::origin_permitted(&app.live().cors_origins, req.headers(), host)
        {
            return Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden_origin",
                "requests from this origin are not allowed; see [cors] allow_origins",
            )
            .into_response();
        }
    }
    let origin = cors::allowed_origin(&app.live().cors_origins, req.headers());
    if req.method() == Method::OPTIONS {
        return cors::preflight(origin, req.headers(), req.uri().path());
    }
    let mut resp = route(&app, req).await;
    if let Some(origin) = origin {
        cors::decorate(&mut resp, origin);
    }
    resp
}

/// `/readyz`: whether the store accepts writes, and its commit counts.
fn readiness(app: &App) -> Response<Body> {
    let c = app.router.commit_stats();
    let e = app.router.engine_state();
    let storage = json!({
        "commits": c.commits,
        "slow_commits": c.slow,
        "slow_commit_ms": switchyard_router::SLOW_COMMIT.as_millis() as u64,
        "slowest_commit_ms": c.slowest.as_micros() as f64 / 1000.0,
        "poisoned": e.poisoned,
        "stalled": e.stalled,
        "write_halted": e.write_halted,
        "write_pressure": e.write_pressure,
        "sealed_memtables": e.sealed_memtables,
        "l0_tables": e.l0_tables,
    });
    if app.router.is_ready() {
        json_response(
            StatusCode::OK,
            &json!({"status": "ready", "storage": storage}),
        )
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({
                "status": "not ready",
                "detail": "the store refuses writes, or its disk has not finished a write for 5 s",
                "storage": storage,
            }),
        )
    }
}

/// Paths of node-to-node requests.
pub(crate) const NODE_TO_NODE_PREFIX: &str = "/cluster/v1/";

/// The host a request names: HTTP/2's `:authority` (or an absolute URI),
/// else the `Host` header; `Err` for a header that is not visible ASCII.
fn request_host<B>(req: &Request<B>) -> Result<Option<&str>, ()> {
    if let Some(a) = req.uri().authority() {
        return Ok(Some(a.as_str()));
    }
    req.headers()
        .get(header::HOST)
        .map(|h| h.to_str().map_err(|_| ()))
        .transpose()
}

tokio::task_local! {
    /// When the body of the request being served must have arrived; set
    /// by the server around each request.
    pub(crate) static BODY_DEADLINE: tokio::time::Instant;
}

/// The body deadline of the request being served, if any.
pub(crate) fn body_deadline() -> Option<tokio::time::Instant> {
    BODY_DEADLINE.try_with(|d| *d).ok()
}

/// The 408 of a body that did not arrive in time.
pub(crate) fn body_timed_out() -> Problem {
    Problem::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        "the request body did not arrive in time; see limits.body_read_timeout_secs",
    )
}

/// Routes a request; times and counts publishes (see `/metrics`).
async fn route(app: &Arc<App>, req: Request<Incoming>) -> Response<Body> {
    use crate::metrics::PublishEndpoint;
    let path = req.uri().path();
    let publish = if req.method() != Method::POST {
        None
    } else if path == "/v1/batch" {
        Some(PublishEndpoint::Batch)
    } else if path.starts_with("/v1/topics/") {
        Some(PublishEndpoint::Topic)
    } else {
        None
    };
    let Some(endpoint) = publish else {
        return serve_route(app, req).await;
    };
    let started = std::time::Instant::now();
    let resp = serve_route(app, req).await;
    app.metrics
        .publish_answered(endpoint, resp.status(), started.elapsed());
    resp
}

async fn serve_route(app: &Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let app = app.clone();
    if req
        .uri()
        .path()
        .starts_with(switchyard_cluster::transport::FORWARD_PREFIX)
    {
        return match crate::cluster::unwrap_relayed(&app, req).await {
            // Served here: a relayed request is never relayed again.
            Ok((inner, unwrapped)) => {
                unwrapped.seal(&app, Box::pin(serve_route(&app, inner)).await)
            }
            Err(refused) => refused,
        };
    }
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let access = if path.starts_with("/v1/") || path == "/metrics" {
        match authorize(&app, &req) {
            Ok(a) => a,
            Err(p) => return p.into_response(),
        }
    } else {
        // Health endpoints are open; node-to-node ones check signatures.
        Access::trusted()
    };
    // The handlers off the hot paths (single publishes and event streams)
    // are boxed, so that this future, allocated for every request, stays
    // the size of those two.
    let result = match (path.as_str(), path.strip_prefix("/v1/topics/")) {
        (_, Some(topic)) if !topic.is_empty() => match method {
            Method::POST => publish(&app, &path_param(topic), req, &access).await,
            _ => Err(not_allowed("POST")),
        },
        ("/v1/batch", _) => match method {
            Method::POST => Box::pin(publish_batch(&app, req, &access)).await,
            _ => Err(not_allowed("POST")),
        },
        ("/v1/events", _) => match method {
            Method::GET => events(&app, &req, &access).await,
            _ => Err(not_allowed("GET")),
        },
        ("/v1/messages", _) => match method {
            Method::GET => Box::pin(pull(&app, &req, &access)).await,
            _ => Err(not_allowed("GET")),
        },
        ("/v1/plugins", _) => Box::pin(crate::plugins::handle(&app, None, req)).await,
        (p, _) if let Some(name) = crate::plugin_component::binding_of(p) => {
            Box::pin(crate::plugin_component::get(&app, &path_param(name), req)).await
        }
        (p, _) if p.starts_with("/v1/plugins/") => {
            let name = path_param(&p["/v1/plugins/".len()..]);
            Box::pin(crate::plugins::handle(&app, Some(&name), req)).await
        }
        ("/v1/groups", _) => Box::pin(crate::groups::handle(&app, None, req)).await,
        (p, _) if p.starts_with("/v1/groups/") => {
            let rest = &p["/v1/groups/".len()..];
            // The group's name decoded; what follows it is a fixed word.
            let rest = match rest.split_once('/') {
                Some((name, op)) => format!("{}/{op}", path_param(name)),
                None => path_param(rest).into_owned(),
            };
            Box::pin(crate::groups::handle(&app, Some(&rest), req)).await
        }
        ("/v1/cluster", _) => match method {
            Method::GET => crate::cluster::members(&app, &req),
            _ => Err(not_allowed("GET")),
        },
        (switchyard_cluster::transport::FEED_PATH, _) => match method {
            Method::POST => Box::pin(crate::cluster::feed(&app, req)).await,
            _ => Err(not_allowed("POST")),
        },
        (switchyard_cluster::transport::GROUP_TAKE_PATH, _) => match method {
            Method::POST => Box::pin(crate::cluster::take(&app, req)).await,
            _ => Err(not_allowed("POST")),
        },
        (switchyard_cluster::transport::IDEMPOTENCY_PATH, _) => match method {
            Method::POST => Box::pin(crate::cluster::idempotency(&app, req)).await,
            _ => Err(not_allowed("POST")),
        },
        (switchyard_cluster::transport::GROUP_GIVE_PATH, _) => match method {
            Method::POST => Box::pin(crate::cluster::give(&app, req)).await,
            _ => Err(not_allowed("POST")),
        },
        (switchyard_cluster::rollout::SYNC_PATH, _) => match method {
            Method::POST => Box::pin(crate::cluster::plugin_sync(&app, req)).await,
            _ => Err(not_allowed("POST")),
        },
        (switchyard_cluster::rollout::COMPONENT_PATH, _) => match method {
            Method::POST => Box::pin(crate::cluster::plugin_component(&app, req)).await,
            _ => Err(not_allowed("POST")),
        },
        (switchyard_cluster::rollout::STATUS_PATH, _) => match method {
            Method::POST => Box::pin(crate::cluster::plugin_status(&app, req)).await,
            _ => Err(not_allowed("POST")),
        },
        ("/v1/topics", _) => match method {
            Method::GET => topics(&app, &req),
            _ => Err(not_allowed("GET")),
        },
        ("/healthz" | "/readyz", _) if method != Method::GET && method != Method::HEAD => {
            Err(not_allowed("GET, HEAD"))
        }
        ("/healthz", _) => Ok(json_response(
            StatusCode::OK,
            &json!({"status": "ok", "node": app.router.node_id().to_string()}),
        )),
        ("/readyz", _) => Ok(readiness(&app)),
        ("/metrics", _) => match method {
            Method::GET | Method::HEAD => Box::pin(crate::metrics::scrape(&app)).await,
            _ => Err(not_allowed("GET, HEAD")),
        },
        ("/", _) => match method {
            Method::GET | Method::HEAD => Ok(redirect("/ui/")),
            _ => Err(not_allowed("GET, HEAD")),
        },
        (p, _) if p == "/ui" || p.starts_with("/ui/") => crate::ui::serve(p, &method),
        _ => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no endpoint at {path}"),
        )),
    };
    result.unwrap_or_else(Problem::into_response)
}

/// The access of a client request to `/v1/...`, and the check of the
/// endpoints whose permission does not depend on topics (publishing and
/// subscribing are checked by their handlers, which know the topics).
/// A request a peer relayed here was authorized by that peer.
fn authorize(app: &App, req: &Request<Incoming>) -> Result<Access, Problem> {
    if req.extensions().get::<Relayed>().is_some() {
        return Ok(Access::trusted());
    }
    // A node without keys has nothing to verify a token with: it gives
    // every request its anonymous access.
    let token = if app.auth.accepts_tokens() {
        let cookie = matches!(*req.method(), Method::GET | Method::HEAD);
        auth::token_of(req.headers(), req.uri().query(), cookie).inspect_err(|e| {
            tracing::debug!(error = %e, "token refused");
        })?
    } else {
        None
    };
    let access = match token {
        Some(t) => app.auth.authenticate(&t).inspect_err(|e| {
            tracing::debug!(error = %e, "token refused");
        })?,
        None => app.auth.anonymous(),
    };
    if !access.has_token() && app.auth.anonymous_level() == Anonymous::None {
        return Err(Denied::NoToken("this node needs a token".into()).into());
    }
    let (path, method) = (req.uri().path(), req.method());
    let read = matches!(*method, Method::GET | Method::HEAD);
    if path == "/v1/plugins" || path.starts_with("/v1/plugins/") {
        access.admin("managing plugins")?;
    } else if path == "/v1/cluster" || path.starts_with("/v1/cluster/") {
        if read {
            access.read("cluster membership")?;
        } else {
            access.admin("administering the cluster")?;
        }
    } else if path == "/v1/topics" {
        access.read("the topic list")?;
    } else if path == "/metrics" {
        access.read("the metrics")?;
    } else if path == "/v1/groups" {
        access.read("the group list")?;
    } else if let Some(rest) = path.strip_prefix("/v1/groups/") {
        match (rest.split_once('/'), method) {
            (None, &Method::DELETE) => access.admin("deleting a group")?,
            (None, _) => access.read("a group")?,
            // ack, nack, progress, term: the group's topics are known only
            // to its coordinator, so any subscribe permission will do.
            (Some(_), _) => access.subscribe_any()?,
        }
    }
    Ok(access)
}

/// A path parameter (topic, group or plugin name) with its
/// percent-encoding decoded (`orders%2Eeu` is `orders.eu`). One that does
/// not decode to UTF-8, or decodes to a `/` (which would change what the
/// path names after it was authorized), stays as sent, and its `%` fails
/// the name's check.
fn path_param(raw: &str) -> std::borrow::Cow<'_, str> {
    if !raw.contains('%') {
        return raw.into();
    }
    match percent_encoding::percent_decode_str(raw).decode_utf8() {
        Ok(decoded) if !decoded.contains('/') => decoded,
        _ => raw.into(),
    }
}

/// A 302 to `location` on this node.
fn redirect(location: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::FOUND;
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(location));
    resp
}

pub(crate) fn not_allowed(allow: &'static str) -> Problem {
    Problem {
        allow: Some(allow),
        ..Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this endpoint takes {allow}"),
        )
    }
}

pub(crate) fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    json_text(status, v.to_string())
}

fn json_text(status: StatusCode, text: String) -> Response<Body> {
    let mut resp = Response::new(full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Reads a body up to `max` bytes; 413 beyond, 408 when it has not arrived
/// by the request's body deadline.
pub(crate) async fn read_body(
    body: Incoming,
    headers: &HeaderMap,
    max: usize,
) -> Result<Bytes, Problem> {
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body exceeds the limit of {max} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let collect = Limited::new(body, max).collect();
    let collected = match body_deadline() {
        Some(d) => tokio::time::timeout_at(d, collect)
            .await
            .map_err(|_| body_timed_out())?,
        None => collect.await,
    };
    match collected {
        // Copy into an allocation of exactly the body's size: a chunk of
        // hyper's read buffer would pin the whole buffer for as long as the
        // message stays in the store's in-memory tail.
        Ok(c) => Ok(Bytes::copy_from_slice(&c.to_bytes())),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Err(e) => Err(Problem::bad_request(
            "body_read_failed",
            format!("could not read the request body: {e}"),
        )),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Problem> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| {
            Problem::bad_request(
                "invalid_header",
                format!("header {name} is not visible ASCII"),
            )
        }),
    }
}

/// The acknowledgement mode a publish asks for: `?acks=` or the
/// `Switchyard-Acks` header (not both); `None` for the node's default.
fn acks_of(query: &Query, headers: &http::HeaderMap) -> Result<Option<Acks>, Problem> {
    let given = match (query.one("acks")?, header_str(headers, ACKS_HEADER)?) {
        (Some(_), Some(_)) => {
            return Err(Problem::bad_request(
                "invalid_acks",
                "give acks either as ?acks= or as Switchyard-Acks, not both",
            ));
        }
        (q, h) => q.or(h),
    };
    given
        .map(|a| a.parse::<Acks>().map_err(Problem::from))
        .transpose()
}

/// Header naming a publish's acknowledgement mode.
const ACKS_HEADER: &str = "switchyard-acks";

fn invalid(e: InvalidMessage) -> Problem {
    RouterError::Invalid(e).into()
}

async fn publish(
    app: &App,
    topic: &str,
    req: Request<Incoming>,
    access: &Access,
) -> Result<Response<Body>, Problem> {
    let topic: Topic = topic.parse()?;
    access.publish(&topic)?;
    if topic.is_reserved() {
        return Err(invalid(InvalidMessage::ReservedTopic(topic.to_string())));
    }
    let query = Query::parse(req.uri().query(), &["key", "acks"])?;
    let acks = acks_of(&query, req.headers())?;
    let (parts, body) = req.into_parts();
    let mut headers = Vec::new();
    if let Some(ct) = header_str(&parts.headers, "content-type")? {
        headers.push(Header {
            name: "content-type".into(),
            value: ct.to_owned(),
        });
    }
    for (name, value) in &parts.headers {
        if let Some(user) = name.as_str().strip_prefix(HEADER_PREFIX) {
            let value = value.to_str().map_err(|_| {
                Problem::bad_request(
                    "invalid_header",
                    format!("header {name} is not visible ASCII"),
                )
            })?;
            headers.push(Header {
                name: user.to_owned(),
                value: value.to_owned(),
            });
        }
    }
    let key = match (header_str(&parts.headers, KEY_HEADER)?, query.one("key")?) {
        (Some(_), Some(_)) => {
            return Err(Problem::bad_request(
                "invalid_key",
                "give the key either as Switchyard-Key or as ?key=, not both",
            ));
        }
        (h, q) => h.or(q).map(|k| Bytes::copy_from_slice(k.as_bytes())),
    };
    let idempotency_key = header_str(&parts.headers, "idempotency-key")?.map(str::to_owned);
    let mut request = PublishRequest {
        topic,
        key,
        headers,
        payload: Bytes::new(),
        idempotency_key,
    };
    // Refuse bad metadata before reading the body.
    switchyard_router::validate(&request, usize::MAX).map_err(invalid)?;
    request.payload = read_body(body, &parts.headers, app.router.config().max_payload).await?;
    let results = app.router.publish_with(vec![request], acks).await?;
    app.metrics.published(&results);
    let result = &results[0];
    let status = if result.results.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut resp = json_text(status, published(result));
    if result.results.first().is_some_and(|a| a.duplicate) {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// One entry of a batch publish.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchEntry {
    topic: Option<String>,
    payload: Option<String>,
    payload_base64: Option<String>,
    key: Option<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    idempotency_key: Option<String>,
}

/// One entry from its JSON text. Only an object is an entry: serde would
/// also take the fields in order from an array.
fn batch_entry(text: &str) -> Result<BatchEntry, String> {
    if !text.trim_start().starts_with('{') {
        return Err("an entry is a JSON object".into());
    }
    serde_json::from_str::<BatchEntry>(text).map_err(|e| e.to_string())
}

fn entry_request(
    e: BatchEntry,
    default_topic: Option<&Topic>,
) -> Result<PublishRequest, (&'static str, String)> {
    let topic = match (e.topic, default_topic) {
        (Some(t), _) => t
            .parse::<Topic>()
            .map_err(|err| ("invalid_topic", err.to_string()))?,
        (None, Some(t)) => t.clone(),
        (None, None) => {
            return Err((
                "missing_topic",
                "the entry has no topic and the request no ?topic=".into(),
            ));
        }
    };
    let payload = match (e.payload, e.payload_base64) {
        (Some(p), None) => Bytes::from(p),
        (None, Some(b)) => Bytes::from(
            STANDARD
                .decode(b)
                .map_err(|_| ("invalid_base64", "payload_base64 is not base64".to_owned()))?,
        ),
        (None, None) => Bytes::new(),
        (Some(_), Some(_)) => {
            return Err((
                "invalid_entry",
                "give payload or payload_base64, not both".into(),
            ));
        }
    };
    let headers = e
        .headers
        .into_iter()
        .map(|(name, value)| Header {
            name: name.to_ascii_lowercase(),
            value,
        })
        .collect();
    Ok(PublishRequest {
        topic,
        key: e.key.map(Bytes::from),
        headers,
        payload,
        idempotency_key: e.idempotency_key,
    })
}

/// Batch bodies from this size on are decoded on the bulk threads.
const PARSE_ASIDE_BYTES: usize = 64 * 1024;

/// Decodes and checks every entry of a batch body: the publish requests,
/// or the problem naming each invalid entry (nothing is stored then).
fn batch_requests(
    body: &[u8],
    ndjson: bool,
    max: usize,
    default_topic: Option<&Topic>,
    max_payload: usize,
) -> Result<Vec<PublishRequest>, Problem> {
    let raw: Vec<Result<BatchEntry, String>> = if ndjson {
        let lines = std::str::from_utf8(body)
            .map_err(|_| Problem::bad_request("invalid_batch", "the body is not UTF-8"))?
            .lines()
            .filter(|l| !l.trim().is_empty());
        let mut raw = Vec::new();
        for l in lines {
            if raw.len() == max {
                return Err(crate::batch_body::too_many(max));
            }
            raw.push(batch_entry(l));
        }
        raw
    } else {
        crate::batch_body::json_entries(body, max)?
            .into_iter()
            .map(|v| batch_entry(v.get()))
            .collect()
    };
    if raw.is_empty() {
        return Err(Problem::bad_request("invalid_batch", "the batch is empty"));
    }
    let mut requests = Vec::with_capacity(raw.len());
    let mut errors = Vec::new();
    for (i, entry) in raw.into_iter().enumerate() {
        match entry
            .map_err(|e| ("invalid_entry", e))
            .and_then(|e| entry_request(e, default_topic))
            .and_then(|r| match switchyard_router::validate(&r, max_payload) {
                Ok(()) => Ok(r),
                Err(e) => Err((invalid_message(&e).1, e.to_string())),
            }) {
            Ok(r) => requests.push(r),
            Err((code, detail)) => errors.push(json!({"index": i, "code": code, "detail": detail})),
        }
    }
    if !errors.is_empty() {
        let detail = format!(
            "{} batch entries are invalid; nothing was stored",
            errors.len()
        );
        return Err(Problem {
            extra: Some(("errors", Value::Array(errors))),
            ..Problem::bad_request("invalid_batch", detail)
        });
    }
    Ok(requests)
}

async fn publish_batch(
    app: &App,
    req: Request<Incoming>,
    access: &Access,
) -> Result<Response<Body>, Problem> {
    let query = Query::parse(req.uri().query(), &["topic", "acks"])?;
    let acks = acks_of(&query, req.headers())?;
    let default_topic = query.one("topic")?.map(str::parse::<Topic>).transpose()?;
    // Only JSON types: the CORS-safelisted ones (form, multipart, text)
    // would let any web page post a batch without a preflight.
    let ndjson = match header_str(req.headers(), "content-type")?
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .as_deref()
    {
        Some("application/x-ndjson" | "application/jsonl" | "application/jsonlines") => true,
        Some("application/json") => false,
        other => {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "batch bodies are application/json (an array) or application/x-ndjson, not {}",
                    other.unwrap_or("a body without Content-Type")
                ),
            ));
        }
    };
    let (parts, body) = req.into_parts();
    let live = app.live();
    let max = live.max_batch_messages;
    // The node-wide budget of batch bytes being read, parsed and stored:
    // a batch waits for its declared size (the largest allowed when it
    // declares none) until its body deadline.
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(live.max_batch_bytes)
        .clamp(1, live.max_batch_bytes);
    let wanted = u32::try_from(declared.min(app.batch_budget_bytes)).unwrap_or(u32::MAX);
    let acquire = app.batch_bytes.clone().acquire_many_owned(wanted);
    let _budget = match body_deadline() {
        Some(deadline) => tokio::time::timeout_at(deadline, acquire).await,
        None => Ok(acquire.await),
    }
    .map_err(|_| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the node is reading as many batch bytes as limits.max_batch_bytes_in_flight allows; retry",
        )
    })?
    .map_err(|_| Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the node is shutting down"))?;
    let body =
        crate::batch_body::read(body, &parts.headers, live.max_batch_bytes, max, ndjson).await?;
    // Decoding a large body takes milliseconds of CPU (about 3 ms per MiB
    // here); it runs on the low-priority bulk threads so that it holds no
    // async worker, and under load yields the CPU to the requests that
    // wait on the workers. The batch byte budget bounds how many wait.
    let max_payload = app.router.config().max_payload;
    let requests = if body.len() >= PARSE_ASIDE_BYTES {
        let body = body.clone();
        let default_topic = default_topic.clone();
        app.bulk
            .run(move || batch_requests(&body, ndjson, max, default_topic.as_ref(), max_payload))
            .await
            .ok_or_else(|| {
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "decoding the batch failed",
                )
            })??
    } else {
        batch_requests(&body, ndjson, max, default_topic.as_ref(), max_payload)?
    };
    let mut errors = Vec::new();
    // Every entry's topic must be allowed, or nothing is stored.
    let mut denied = None;
    for (i, r) in requests.iter().enumerate() {
        if let Err(d) = access.publish(&r.topic) {
            let detail = match &d {
                Denied::NoToken(s) | Denied::Forbidden(s) => s.clone(),
            };
            errors.push(json!({"index": i, "code": "forbidden", "detail": detail}));
            denied.get_or_insert(d);
        }
    }
    if let Some(d) = denied {
        let mut p = Problem::from(d);
        p.detail = format!(
            "{} batch entries name topics the request may not publish to; nothing was stored",
            errors.len()
        );
        p.extra = Some(("errors", Value::Array(errors)));
        return Err(p);
    }
    // A large batch waits while the storage engine is behind, so that it
    // does not push the engine into holding every write: single publishes
    // and small batches go on meanwhile. The writer holds bulk appends back
    // on the same condition; waiting here as well keeps the queue to the
    // writer short and answers 503 once the body's deadline has passed.
    if body.len() >= switchyard_router::BULK_BYTES {
        while app.router.under_write_pressure() {
            if body_deadline().is_some_and(|d| tokio::time::Instant::now() >= d) {
                return Err(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "the storage engine is behind on writing; large batches wait for it; retry",
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let results = match app.router.publish_with(requests, acks).await {
        // A batch of one reports its error like a batch.
        Err(RouterError::Invalid(e)) => return Err(RouterError::InvalidBatch(vec![(0, e)]).into()),
        other => other?,
    };
    app.metrics.published(&results);
    let results: Vec<String> = results.iter().map(published).collect();
    Ok(json_text(
        StatusCode::CREATED,
        format!(r#"{{"results":[{}]}}"#, results.join(",")),
    ))
}

/// The subscription's filter plugin from `filter=` and `filter_config=`.
/// A configuration not in use yet runs the plugin's `init` on the plugin
/// threads while this awaits.
async fn filter_of(app: &App, query: &Query) -> Result<Option<switchyard_router::Filter>, Problem> {
    let config = query.one("filter_config")?.map(str::to_owned);
    match query.one("filter")? {
        Some(name) => Ok(Some(app.router.plugins().filter(name, config).await?)),
        None if config.is_some() => Err(Problem::bad_request(
            "invalid_parameter",
            "filter_config= needs filter=",
        )),
        None => Ok(None),
    }
}

pub(crate) fn parse_format(query: &Query) -> Result<Format, Problem> {
    match query.one("format")? {
        None | Some("raw") => Ok(Format::Raw),
        Some("json") => Ok(Format::Json),
        Some(other) => Err(Problem::bad_request(
            "invalid_parameter",
            format!("format={other:?}; expected raw or json"),
        )),
    }
}

async fn events(
    app: &App,
    req: &Request<Incoming>,
    access: &Access,
) -> Result<Response<Body>, Problem> {
    let allowed = [
        &[
            "topic",
            "from",
            "last_event_id",
            "lastEventID",
            "format",
            "filter",
            "filter_config",
            "group",
        ][..],
        crate::groups::JOIN_ONLY,
    ]
    .concat();
    let query = Query::parse(req.uri().query(), &allowed)?;
    let topics = query.topics()?;
    access.subscribe(&topics)?;
    let admin = crate::groups::joins_as_admin(req, access);
    if let Some(group) = query.one("group")?
        && let Some(addr) = crate::cluster::group_elsewhere(app, req, group)
    {
        return crate::cluster::relay(
            app,
            &addr,
            Method::GET,
            req.uri(),
            &crate::groups::relayed_join_headers(req.headers(), admin),
            Bytes::new(),
        )
        .await;
    }
    let format = parse_format(&query)?;
    if let Some(group) = query.one("group")? {
        return crate::groups::join(app, group, topics, format, &query, admin).await;
    }
    for p in crate::groups::JOIN_ONLY {
        if query.one(p)?.is_some() {
            return Err(Problem::bad_request(
                "invalid_parameter",
                format!("{p}= applies only with group="),
            ));
        }
    }
    let filter = filter_of(app, &query).await?;
    // Precedence: the Last-Event-ID header (a reconnecting EventSource), then
    // ?last_event_id= (a first EventSource request cannot set headers; also
    // as Mercure's ?lastEventID=), then ?from=.
    let in_query = match (query.one("last_event_id")?, query.one("lastEventID")?) {
        (Some(_), Some(_)) => {
            return Err(Problem::bad_request(
                "invalid_parameter",
                "last_event_id= and lastEventID= are the same parameter; give one",
            ));
        }
        (a, b) => a.or(b),
    };
    let start =
        if let Some(id) = header_str(req.headers(), "last-event-id")?.filter(|s| !s.is_empty()) {
            Start::After(id.parse::<Cursor>()?)
        } else if let Some(id) = in_query {
            Start::After(id.parse::<Cursor>()?)
        } else {
            query.one("from")?.map_or(Ok(Start::Latest), parse_start)?
        };
    let mut sub = app.router.subscribe(topics, &start).await?;
    if let Some(f) = filter {
        sub.set_filter(f);
    }
    Ok(sse_response(
        app,
        sse::SubscriptionEvents { sub, format },
        "",
    ))
}

/// A `text/event-stream` response following `events`.
pub(crate) fn sse_response(app: &App, events: impl sse::Events, prelude: &str) -> Response<Body> {
    let body = sse::body(
        events,
        prelude,
        app.live().heartbeat,
        app.live().retry,
        app.shutdown.clone(),
        app.output.clone(),
        app.metrics.clone(),
    );
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

async fn pull(
    app: &App,
    req: &Request<Incoming>,
    access: &Access,
) -> Result<Response<Body>, Problem> {
    let query = Query::parse(
        req.uri().query(),
        &["topic", "from", "limit", "wait", "filter", "filter_config"],
    )?;
    let topics = query.topics()?;
    access.subscribe(&topics)?;
    let filter = filter_of(app, &query).await?;
    let start = query
        .one("from")?
        .map_or(Ok(Start::Earliest), parse_start)?;
    let live = app.live();
    let limit = query.number("limit", 100, 1, live.max_pull_limit as u64)?;
    let wait = query.number("wait", 0, 0, live.max_pull_wait.as_secs())?;
    // A long-poll ends when the node shuts down, so that it does not hold the drain.
    let mut shutdown = app.shutdown.clone();
    let batch = tokio::select! {
        batch = app.router.pull(topics, &start, limit as usize, Duration::from_secs(wait), filter) => batch?,
        _ = shutdown.wait_for(|stopping| *stopping) => {
            return Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the node is shutting down"));
        }
    };
    app.metrics
        .delivered(crate::metrics::Via::Pull, batch.messages.len() as u64);
    let messages: Vec<Value> = batch.messages.iter().map(|m| envelope(m)).collect();
    let mut gaps: Vec<Value> = batch.gaps.iter().map(gap).collect();
    gaps.extend(batch.unavailable.iter().map(unavailable));
    Ok(json_response(
        StatusCode::OK,
        &json!({"messages": messages, "cursor": batch.cursor.encode(), "gaps": gaps}),
    ))
}

fn topics(app: &App, req: &Request<Incoming>) -> Result<Response<Body>, Problem> {
    Query::parse(req.uri().query(), &[])?;
    let topics: Vec<Value> = app
        .router
        .topics()
        .iter()
        .map(|t| {
            json!({
                "topic": t.topic.as_str(),
                "messages": t.messages,
                "bytes": t.bytes,
                "first_timestamp": t.first_timestamp.map(|ts| ts.to_rfc3339()),
                "last_timestamp": t.last_timestamp.map(|ts| ts.to_rfc3339()),
                "streams": t.streams.iter().map(|s| json!({
                    "origin": s.origin.to_string(),
                    "first_seq": s.first_seq,
                    "last_seq": s.last_seq,
                    "messages": s.messages,
                    "bytes": s.bytes,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "topics": topics })))
}
