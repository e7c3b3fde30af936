//! `/v1/cluster` (membership as this node sees it) and the node-to-node
//! endpoints, each signed with the cluster key: the feed
//! (`POST /cluster/v1/feed`), handing a consumer group over
//! (`POST /cluster/v1/groups/take`), and client requests relayed to the
//! node that serves them (`/cluster/v1/forward/v1/...`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};
use switchyard_cluster::transport::{
    self, AUTH_HEADER, CONTENT_TYPE, FEED_PATH, FORWARD_PREFIX, FeedRequest, GROUP_GIVE_PATH,
    GROUP_TAKE_PATH, GroupGive, GroupTake,
};
use switchyard_router::Cluster;

use crate::handlers::{json_response, read_body};
use crate::problem::Problem;
use crate::query::Query;
use crate::server::{App, Body, full};

/// Longest wait for a relayed request's response head.
const RELAY_TIMEOUT: Duration = Duration::from_secs(15);

/// Marks a request a peer relayed here: it is served on this node and
/// never relayed again.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Relayed;

/// Checks a node-to-node request's signature for `path`; counts refusals.
fn authenticate<'a>(app: &'a App, headers: &HeaderMap, path: &str) -> Result<&'a Cluster, Problem> {
    let Some(cluster) = app.router.cluster() else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this node is not part of a cluster",
        ));
    };
    let signed = headers
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or("no signature")
        .and_then(|h| cluster.signer().verify(h, path));
    if let Err(why) = signed {
        cluster.stats().refused_request();
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("node-to-node request refused: {why}"),
        ));
    }
    Ok(cluster)
}

/// Whether a request is a node-to-node request with a valid signature: the
/// server counts its connection as a peer's. Refusals are counted by the
/// handler, not here.
pub(crate) fn is_peer_request<B>(app: &App, req: &Request<B>) -> bool {
    let uri = req.uri();
    if !uri.path().starts_with(crate::handlers::NODE_TO_NODE_PREFIX) {
        return false;
    }
    let Some(cluster) = app.router.cluster() else {
        return false;
    };
    // A relayed request signs its path with the query; the others their path.
    let path = if uri.path().starts_with(FORWARD_PREFIX) {
        path_and_query(uri)
    } else {
        uri.path().to_owned()
    };
    req.headers()
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|h| cluster.signer().verify(h, &path).is_ok())
}

/// A signed node-to-node request's body (at most `max` bytes), decoded;
/// refusals are counted.
async fn signed_body<'a, T: serde::de::DeserializeOwned>(
    app: &'a App,
    req: Request<Incoming>,
    path: &str,
    max: usize,
) -> Result<(&'a Cluster, T), Problem> {
    let cluster = authenticate(app, req.headers(), path)?;
    let (parts, body) = req.into_parts();
    let body = read_body(body, &parts.headers, max).await?;
    let request = transport::decode(&body).map_err(|e| {
        cluster.stats().refused_request();
        Problem::bad_request("invalid_body", e)
    })?;
    Ok((cluster, request))
}

/// A request's path with its query, as signed.
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
    let (cluster, request) =
        signed_body::<FeedRequest>(app, req, FEED_PATH, transport::MAX_REQUEST).await?;
    let answer = app.router.feed(request).await.inspect_err(|e| {
        if matches!(e, switchyard_router::RouterError::Cluster(_)) {
            cluster.stats().refused_request();
        }
    })?;
    Ok(postcard_response(transport::encode(&answer)))
}

/// `POST /cluster/v1/idempotency`: a peer asks which idempotency keys this
/// node holds a message for.
pub(crate) async fn idempotency(
    app: &App,
    req: Request<Incoming>,
) -> Result<Response<Body>, Problem> {
    let (cluster, request) = signed_body::<transport::IdempotencyLookup>(
        app,
        req,
        transport::IDEMPOTENCY_PATH,
        transport::MAX_REQUEST,
    )
    .await?;
    let answer = app
        .router
        .idempotency_lookup(&request)
        .inspect_err(|_| cluster.stats().refused_request())?;
    Ok(postcard_response(transport::encode(&answer)))
}

/// `POST /cluster/v1/groups/take`: the peer that now coordinates a group
/// takes its state from this node.
pub(crate) async fn take(app: &App, req: Request<Incoming>) -> Result<Response<Body>, Problem> {
    let (cluster, request) =
        signed_body::<GroupTake>(app, req, GROUP_TAKE_PATH, transport::MAX_REQUEST).await?;
    let answer = app
        .router
        .groups()
        .surrender(&request.name, request.confirm)
        .await
        .inspect_err(|_| cluster.stats().refused_request())?;
    Ok(postcard_response(transport::encode(&answer)))
}

/// Largest group hand-over body (a group holds at most 100,000 messages
/// in flight, about 20 bytes each on the wire).
const MAX_GIVE: usize = 8 * 1024 * 1024;

/// `POST /cluster/v1/groups/give`: a leaving peer hands over a group this
/// node coordinates next.
pub(crate) async fn give(app: &App, req: Request<Incoming>) -> Result<Response<Body>, Problem> {
    let (cluster, request) = signed_body::<GroupGive>(app, req, GROUP_GIVE_PATH, MAX_GIVE).await?;
    let stored = app
        .router
        .groups()
        .receive(request)
        .await
        .inspect_err(|_| cluster.stats().refused_request())?;
    Ok(postcard_response(transport::encode(&stored)))
}

/// Unwraps a request a peer relayed (`/cluster/v1/forward/v1/...`) into the
/// client's request, marked [`Relayed`].
pub(crate) fn unwrap_relayed(
    app: &App,
    req: Request<Incoming>,
) -> Result<Request<Incoming>, Problem> {
    let signed_path = path_and_query(req.uri());
    authenticate(app, req.headers(), &signed_path)?;
    let target = &signed_path[FORWARD_PREFIX.len()..];
    if !target.starts_with("/v1/") {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no endpoint at {target} to relay to"),
        ));
    }
    let uri: Uri = target.parse().map_err(|_| {
        Problem::bad_request("invalid_parameter", "relayed path is not a valid URI")
    })?;
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    parts.extensions.insert(Relayed);
    Ok(Request::from_parts(parts, body))
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
/// answer back unchanged (an SSE stream included: it ends when either
/// side drops it or this node shuts down).
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
    for h in [header::CONNECTION, header::TRANSFER_ENCODING] {
        parts.headers.remove(h);
    }
    let mut stop = app.shutdown.clone();
    let relay = Relay {
        inner: incoming,
        stop: Box::pin(async move {
            let _ = stop.wait_for(|s| *s).await;
        }),
    };
    Ok(Response::from_parts(parts, relay.boxed_unsync()))
}

/// A peer's response body passed through; a broken peer stream or this
/// node's shutdown ends it.
struct Relay {
    inner: Incoming,
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
                tracing::debug!(error = %e, "relayed stream ended");
                Poll::Ready(None)
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}
