//! `/v1/cluster` (membership as this node sees it) and the node-to-node
//! endpoints, every request and answer sealed with the cluster key (see
//! `switchyard_cluster::envelope`): the feed (`POST /cluster/v1/feed`),
//! handing a consumer group over (`POST /cluster/v1/groups/take`,
//! `/give`), idempotency lookups, and client requests relayed to the node
//! that serves them (`/cluster/v1/forward/v1/...`).
//!
//! A request that does not open (no or another version's auth header, a
//! seal that does not verify, a replay, a clock too far off) is refused
//! with `401` and a body that names only the reason, and counted; nothing
//! of it is read further. Everything answered to a request that opened,
//! errors included, is sealed for that request.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};
use switchyard_cluster::envelope::{AnswerHead, Refusal, RequestId, Target};
use switchyard_cluster::rollout;
use switchyard_cluster::transport::{
    self, AUTH_HEADER, CONTENT_TYPE, FORWARD_PREFIX, FeedRequest, ForwardedRequest, GroupGive,
    GroupTake, OpenedBody, SealedBody,
};
use switchyard_router::Cluster;

use crate::handlers::{json_response, read_body};
use crate::problem::Problem;
use crate::query::Query;
use crate::server::{App, Body, boxed, full, into_bytes};

/// Longest wait for a relayed request's response head.
const RELAY_TIMEOUT: Duration = Duration::from_secs(15);

/// Marks a request a peer relayed here: it is served on this node and
/// never relayed again.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Relayed;

/// The body of a request a peer relayed here, opened: the handlers that
/// take a body in a relayed request read it from here (the request's own
/// body was the sealed one, already read).
#[derive(Clone, Debug)]
pub(crate) struct RelayedBody(pub(crate) Bytes);

/// Sealing this bound on top of a request's plaintext limit: the tag.
const SEAL_TAG: usize = 16;

/// The refusal of a node-to-node request that did not open: `401`, naming
/// only the reason.
fn refusal(why: Refusal) -> Problem {
    let detail = match why {
        Refusal::BadAuth => format!(
            "node-to-node request refused: bad_auth (no or another version's {AUTH_HEADER} header; this node speaks cluster transport v{})",
            switchyard_cluster::envelope::PROTOCOL_VERSION
        ),
        other => format!("node-to-node request refused: {}", other.name()),
    };
    Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
}

fn cluster_of(app: &App) -> Result<&Cluster, Problem> {
    app.router.cluster().ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this node is not part of a cluster",
        )
    })
}

/// Whether a request is a node-to-node request from a live member: its
/// auth header parses as this protocol's, names a live peer, and the
/// connection comes from that peer's advertised HTTP address (its IP).
/// The server counts such a connection as a peer's. Only the sealed body
/// proves the sender (the handler opens it); the address check keeps a
/// client elsewhere from taking the peers' connection budget with a
/// forged header. Refusals are counted by the handler, not here.
pub(crate) fn is_peer_request<B>(app: &App, req: &Request<B>, from: std::net::IpAddr) -> bool {
    if !req
        .uri()
        .path()
        .starts_with(crate::handlers::NODE_TO_NODE_PREFIX)
    {
        return false;
    }
    let Some(cluster) = app.router.cluster() else {
        return false;
    };
    let Some(id) = req
        .headers()
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| switchyard_cluster::envelope::RequestId::parse(h).ok())
    else {
        return false;
    };
    cluster.peers().iter().any(|(node, addr)| {
        *node == id.node
            && addr
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|a| a.ip() == from)
    })
}

/// Opens a sealed node-to-node request (a plaintext of at most `max`
/// bytes): its id, parts and plaintext. Refusals are counted.
async fn open_request(
    app: &App,
    req: Request<Incoming>,
    max: usize,
) -> Result<(&Cluster, RequestId, Parts, Bytes), Problem> {
    let cluster = cluster_of(app)?;
    let envelope = cluster.envelope();
    let header = req.headers().get(AUTH_HEADER).and_then(|v| v.to_str().ok());
    let id = envelope.precheck(header).map_err(refusal)?;
    let (parts, body) = req.into_parts();
    let sealed = read_body(body, &parts.headers, max + SEAL_TAG).await?;
    let plain = open_sealed(cluster, &id, &parts, &sealed)?;
    Ok((cluster, id, parts, Bytes::from(plain)))
}

/// Opens the sealed body of a request with header `id` and `parts`, as
/// sent to this node (refusals are counted).
fn open_sealed(
    cluster: &Cluster,
    id: &RequestId,
    parts: &Parts,
    sealed: &[u8],
) -> Result<Vec<u8>, Problem> {
    let path = path_and_query(&parts.uri);
    let target = Target {
        method: parts.method.as_str(),
        to: cluster.http_addr(),
        path: &path,
    };
    cluster
        .envelope()
        .open_request(id, target, sealed)
        .map_err(refusal)
}

/// Serves one sealed node-to-node call: opens the request, decodes its
/// body as `Q`, runs `serve` with the sender's node id and the request,
/// and seals what it answers (an error too).
async fn sealed_call<Q, A, F, Fut>(
    app: &App,
    req: Request<Incoming>,
    max: usize,
    serve: F,
) -> Result<Response<Body>, Problem>
where
    Q: serde::de::DeserializeOwned,
    A: serde::Serialize,
    F: FnOnce(u64, Q) -> Fut,
    Fut: Future<Output = Result<A, Problem>>,
{
    sealed_call_with(app, req, max, |b| transport::decode::<Q>(b), serve).await
}

/// [`sealed_call`] with the request body decoded by `decode` (a request
/// that earlier versions sent in another form).
async fn sealed_call_with<Q, A, D, F, Fut>(
    app: &App,
    req: Request<Incoming>,
    max: usize,
    decode: D,
    serve: F,
) -> Result<Response<Body>, Problem>
where
    A: serde::Serialize,
    D: FnOnce(&[u8]) -> Result<Q, String>,
    F: FnOnce(u64, Q) -> Fut,
    Fut: Future<Output = Result<A, Problem>>,
{
    let (cluster, id, _, body) = open_request(app, req, max).await?;
    let answer = match decode(&body) {
        Ok(request) => serve(id.node, request).await,
        Err(e) => Err(Problem::bad_request("invalid_body", e)),
    };
    match answer {
        // One buffer: prefix, head and body in one write.
        Ok(a) => {
            let head = AnswerHead {
                status: StatusCode::OK.as_u16(),
                headers: Vec::new(),
            };
            let sealed =
                transport::seal_whole(cluster.envelope(), &id, &head, &transport::encode(&a));
            Ok(postcard_response(sealed))
        }
        Err(p) => {
            cluster.stats().refused_request();
            Ok(seal_response(cluster, &id, p.into_response()))
        }
    }
}

/// Seals `resp` (status, headers and body, streamed frame by frame) as the
/// answer to request `id`: the response on the wire is `200` with the
/// transport's content type.
fn seal_response(cluster: &Cluster, id: &RequestId, resp: Response<Body>) -> Response<Body> {
    let (parts, body) = resp.into_parts();
    let head = AnswerHead {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .filter(|(name, _)| {
                !matches!(
                    *name,
                    &header::CONNECTION | &header::TRANSFER_ENCODING | &header::CONTENT_LENGTH
                )
            })
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect(),
    };
    let sealed = SealedBody::new(cluster.envelope(), id, &head, into_bytes(body));
    let mut out = Response::new(boxed(sealed));
    out.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    out
}

/// A request's path with its query, as sealed.
fn path_and_query(uri: &Uri) -> String {
    uri.path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned())
}

fn postcard_response(bytes: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(full(bytes));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}

/// `GET /v1/cluster`: the members as this node sees them. A node outside
/// any cluster lists itself alone.
pub(crate) fn members(app: &App, req: &Request<Incoming>) -> Result<Response<Body>, Problem> {
    Query::parse(req.uri().query(), &[])?;
    let node = app.router.node_id().to_string();
    let v = match app.router.cluster() {
        Some(c) => json!({
            "cluster": c.name(),
            "node": node,
            "members": c.members(),
            "gossip": c.stats().snapshot(),
            "replication": app.router.replication_status(),
        }),
        None => json!({
            "cluster": Value::Null,
            "node": node,
            "members": [{"id": node, "state": "alive", "self": true}],
        }),
    };
    Ok(json_response(StatusCode::OK, &v))
}

/// `POST /cluster/v1/feed`: a peer pulls this node's messages.
pub(crate) async fn feed(app: &App, req: Request<Incoming>) -> Result<Response<Body>, Problem> {
    sealed_call(
        app,
        req,
        transport::MAX_REQUEST,
        |sender, request: FeedRequest| async move {
            // A replica's pull tells how far it holds this node's log: only
            // for itself.
            if request.from != 0 && request.from != sender {
                return Err(Problem::bad_request(
                    "invalid_body",
                    "a feed request's from names another node than its sender",
                ));
            }
            Ok(app.router.feed(request).await?)
        },
    )
    .await
}

/// `POST /cluster/v1/idempotency`: a peer asks which idempotency keys this
/// node holds a message for.
pub(crate) async fn idempotency(
    app: &App,
    req: Request<Incoming>,
) -> Result<Response<Body>, Problem> {
    sealed_call(
        app,
        req,
        transport::MAX_REQUEST,
        |_, request: transport::IdempotencyLookup| async move {
            Ok(app.router.idempotency_lookup(&request)?)
        },
    )
    .await
}

/// `POST /cluster/v1/groups/take`: the peer that now coordinates a group
/// takes its state from this node.
pub(crate) async fn take(app: &App, req: Request<Incoming>) -> Result<Response<Body>, Problem> {
    sealed_call_with(
        app,
        req,
        transport::MAX_REQUEST,
        GroupTake::decode,
        |_, request: GroupTake| async move {
            Ok(app
                .router
                .groups()
                .surrender(&request.name, request.confirm, request.live.as_deref())
                .await?)
        },
    )
    .await
}

/// Largest group hand-over body (a group holds at most 100,000 messages
/// in flight, about 20 bytes each on the wire).
const MAX_GIVE: usize = 8 * 1024 * 1024;

/// `POST /cluster/v1/groups/give`: a leaving peer hands over a group this
/// node coordinates next.
pub(crate) async fn give(app: &App, req: Request<Incoming>) -> Result<Response<Body>, Problem> {
    sealed_call(app, req, MAX_GIVE, |_, request: GroupGive| async move {
        Ok(app.router.groups().receive(request).await?)
    })
    .await
}

/// `POST /cluster/v1/plugins/sync`: a peer sends its binding table digest
/// and takes this node's newer entries.
pub(crate) async fn plugin_sync(
    app: &App,
    req: Request<Incoming>,
) -> Result<Response<Body>, Problem> {
    sealed_call(
        app,
        req,
        rollout::MAX_SYNC_REQUEST,
        |sender, request: rollout::SyncRequest| async move {
            Ok(app.router.plugins().answer_sync(sender, &request))
        },
    )
    .await
}

/// `POST /cluster/v1/plugins/status`: what this node runs of some cluster
/// bindings.
pub(crate) async fn plugin_status(
    app: &App,
    req: Request<Incoming>,
) -> Result<Response<Body>, Problem> {
    sealed_call(
        app,
        req,
        rollout::MAX_SYNC_REQUEST,
        |_, request: rollout::StatusRequest| async move {
            Ok(rollout::StatusAnswer {
                bindings: app.router.plugins().node_status(&request.names),
            })
        },
    )
    .await
}

/// Frames of a component answer: the sealed answer is sent in frames of
/// this size, below the largest frame an opener accepts.
const COMPONENT_CHUNK: usize = 1024 * 1024;

/// `POST /cluster/v1/plugins/component`: a peer fetches a component by
/// sha256 (`bytes` is `None` when this node does not hold it).
pub(crate) async fn plugin_component(
    app: &App,
    req: Request<Incoming>,
) -> Result<Response<Body>, Problem> {
    let (cluster, id, _, body) = open_request(app, req, transport::MAX_REQUEST).await?;
    let answer = match transport::decode::<rollout::ComponentRequest>(&body) {
        Ok(request) => {
            let plugins = app.router.plugins().clone();
            tokio::task::spawn_blocking(move || plugins.component_by_sha256(&request.sha256))
                .await
                .map_err(|_| switchyard_router::RouterError::ShuttingDown)
                .and_then(|r| r)
                .map_err(Problem::from)
        }
        Err(e) => Err(Problem::bad_request("invalid_body", e)),
    };
    match answer {
        Ok(bytes) => {
            let encoded = Bytes::from(transport::encode(&rollout::ComponentAnswer { bytes }));
            let frames: Vec<Result<Frame<Bytes>, Infallible>> = (0..encoded.len())
                .step_by(COMPONENT_CHUNK)
                .map(|at| {
                    let end = (at + COMPONENT_CHUNK).min(encoded.len());
                    Ok(Frame::data(encoded.slice(at..end)))
                })
                .collect();
            let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
            Ok(seal_response(cluster, &id, Response::new(boxed(body))))
        }
        Err(p) => {
            cluster.stats().refused_request();
            Ok(seal_response(cluster, &id, p.into_response()))
        }
    }
}

/// A request a peer relayed, opened: serve the inner request with
/// [`Unwrapped::seal`] around its answer.
pub(crate) struct Unwrapped {
    id: RequestId,
}

impl Unwrapped {
    /// Seals the answer to the relayed request.
    pub(crate) fn seal(&self, app: &App, resp: Response<Body>) -> Response<Body> {
        match app.router.cluster() {
            Some(cluster) => seal_response(cluster, &self.id, resp),
            None => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "this node left the cluster",
            )
            .into_response(),
        }
    }
}

/// Opens a request a peer relayed (`/cluster/v1/forward/v1/...`) into the
/// client's request, marked [`Relayed`], with the client's headers and
/// body (a [`RelayedBody`]) as sealed. A refusal is the response to send.
pub(crate) async fn unwrap_relayed(
    app: &App,
    req: Request<Incoming>,
) -> Result<(Request<Incoming>, Unwrapped), Response<Body>> {
    let (mut req, id, forwarded) = open_relayed(app, req)
        .await
        .map_err(Problem::into_response)?;
    let unwrapped = Unwrapped { id };
    let target = path_and_query(req.uri())[FORWARD_PREFIX.len()..].to_owned();
    let inner = if !target.starts_with("/v1/") {
        Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no endpoint at {target} to relay to"),
        ))
    } else if !forwarded.body.is_empty() && !target.starts_with("/v1/groups/") {
        // Only group requests take a relayed body (see [`RelayedBody`]).
        Err(Problem::bad_request(
            "invalid_body",
            "a relayed request with a body must be a group request",
        ))
    } else {
        target.parse::<Uri>().map_err(|_| {
            Problem::bad_request("invalid_parameter", "relayed path is not a valid URI")
        })
    };
    let uri = match inner {
        Ok(uri) => uri,
        Err(p) => return Err(unwrapped.seal(app, p.into_response())),
    };
    *req.uri_mut() = uri;
    let headers = req.headers_mut();
    headers.remove(AUTH_HEADER);
    headers.remove(header::CONTENT_TYPE);
    headers.remove(header::CONTENT_LENGTH);
    for (name, value) in forwarded.headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) {
            headers.append(name, value);
        }
    }
    req.extensions_mut().insert(Relayed);
    if !forwarded.body.is_empty() {
        req.extensions_mut()
            .insert(RelayedBody(Bytes::from(forwarded.body)));
    }
    Ok((req, unwrapped))
}

/// Reads and opens a relayed request's sealed body, keeping the request
/// (its body read to the end) for the parts.
async fn open_relayed(
    app: &App,
    req: Request<Incoming>,
) -> Result<(Request<Incoming>, RequestId, ForwardedRequest), Problem> {
    let cluster = cluster_of(app)?;
    let envelope = cluster.envelope();
    let header = req.headers().get(AUTH_HEADER).and_then(|v| v.to_str().ok());
    let id = envelope.precheck(header).map_err(refusal)?;
    let (parts, mut body) = req.into_parts();
    let max = transport::MAX_FORWARD + SEAL_TAG;
    if parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > max as u64)
    {
        return Err(too_large(max));
    }
    let mut sealed = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Problem::bad_request("invalid_body", e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if sealed.len() + data.len() > max {
                return Err(too_large(max));
            }
            sealed.extend_from_slice(&data);
        }
    }
    let plain = open_sealed(cluster, &id, &parts, &sealed)?;
    let forwarded = transport::decode::<ForwardedRequest>(&plain).map_err(|e| {
        cluster.stats().refused_request();
        Problem::bad_request("invalid_body", e)
    })?;
    Ok((Request::from_parts(parts, body), id, forwarded))
}

fn too_large(max: usize) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the body exceeds the limit of {max} bytes"),
    )
}

/// A request's body: the opened one when a peer relayed the request,
/// else read from the request (at most `max` bytes).
pub(crate) async fn body_of(
    parts: &mut Parts,
    body: Incoming,
    max: usize,
) -> Result<Bytes, Problem> {
    match parts.extensions.remove::<RelayedBody>() {
        Some(RelayedBody(b)) if b.len() > max => Err(too_large(max)),
        Some(RelayedBody(b)) => Ok(b),
        None => read_body(body, &parts.headers, max).await,
    }
}

/// The HTTP address of the node that coordinates group `name`, when the
/// request is to be relayed there: not when this node coordinates it, and
/// never for a request a peer relayed here.
pub(crate) fn group_elsewhere(app: &App, req: &Request<Incoming>, name: &str) -> Option<String> {
    if req.extensions().get::<Relayed>().is_some() {
        return None;
    }
    app.router.groups().coordinator(name)
}

/// Relays a client request to the peer at `addr` and streams the peer's
/// answer back, opened frame by frame (an SSE stream included: it ends
/// when either side drops it or this node shuts down). A frame of the
/// peer's answer that does not open, or an answer cut short, ends the
/// stream there (counted in `refused_http_answers`).
pub(crate) async fn relay(
    app: &App,
    addr: &str,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response<Body>, Problem> {
    let Some(cluster) = app.router.cluster() else {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this node left the cluster",
        ));
    };
    let target = path_and_query(uri);
    let resp = cluster
        .client()
        .forward(addr, method, &target, headers, body, RELAY_TIMEOUT)
        .await
        .map_err(|e| {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("the node that serves this request could not be reached: {e}"),
            )
        })?;
    let (mut parts, incoming) = resp.into_parts();
    for h in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::CONTENT_LENGTH,
    ] {
        parts.headers.remove(h);
    }
    let mut stop = app.shutdown.clone();
    let relay = Relay {
        inner: incoming,
        stop: Box::pin(async move {
            let _ = stop.wait_for(|s| *s).await;
        }),
    };
    Ok(Response::from_parts(parts, boxed(relay)))
}

/// A peer's response body passed through; a broken peer stream or this
/// node's shutdown ends it.
struct Relay {
    inner: OpenedBody,
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl HttpBody for Relay {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(e))) => {
                tracing::debug!(error = %e, "relayed answer ended");
                Poll::Ready(None)
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
