//! `/v1/cluster` (membership as this node sees it) and the node-to-node
//! feed (`POST /cluster/v1/feed`, signed with the cluster key).

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};
use switchyard_cluster::transport::{self, AUTH_HEADER, CONTENT_TYPE, FEED_PATH, FeedRequest};

use crate::handlers::{json_response, read_body};
use crate::problem::Problem;
use crate::query::Query;
use crate::server::{App, Body, full};

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
    let Some(cluster) = app.router.cluster() else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this node is not part of a cluster",
        ));
    };
    let signed = req
        .headers()
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or("no signature")
        .and_then(|h| cluster.signer().verify(h, FEED_PATH));
    if let Err(why) = signed {
        cluster.stats().refused_request();
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("node-to-node request refused: {why}"),
        ));
    }
    let (parts, body) = req.into_parts();
    let body = read_body(body, &parts.headers, transport::MAX_REQUEST).await?;
    let request: FeedRequest = transport::decode(&body).map_err(|e| {
        cluster.stats().refused_request();
        Problem::bad_request("invalid_body", e)
    })?;
    let answer = app.router.feed(request).await.inspect_err(|e| {
        if matches!(e, switchyard_router::RouterError::Cluster(_)) {
            cluster.stats().refused_request();
        }
    })?;
    let mut resp = Response::new(full(transport::encode(&answer)));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(resp)
}
