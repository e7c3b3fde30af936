//! Consumer groups over HTTP: joining over SSE (`/v1/events?group=`),
//! settling messages (`POST /v1/groups/{group}/ack|nack|progress|term`) and
//! inspecting and deleting groups (`/v1/groups[/{group}]`).

use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_cluster::transport::JOIN_WITHOUT_ADMIN;
use switchyard_model::{MessageId, TopicSet};
use switchyard_router::{
    AckMode, GroupOptions, GroupStart, MemberOptions, RouterError, Settle, Strategy,
};

use crate::cluster::Relayed;
use crate::handlers::{json_response, not_allowed, read_body, sse_response};
use crate::problem::Problem;
use crate::query::Query;
use crate::server::{App, Body};
use crate::sse::{self, Format};

/// Query parameters that only mean something when joining a group.
pub(crate) const JOIN_ONLY: &[&str] = &[
    "ack",
    "max_inflight",
    "max_inflight_bytes",
    "strategy",
    "ack_timeout_ms",
    "max_deliveries",
    "weight",
    "label",
];

/// Whether a join may create groups up to the node's whole limit: the
/// member has admin rights, or, for a join a peer relayed, the peer did
/// not mark it as without them.
pub(crate) fn joins_as_admin(req: &Request<Incoming>, access: &crate::auth::Access) -> bool {
    if req.extensions().get::<Relayed>().is_some() {
        !req.headers().contains_key(JOIN_WITHOUT_ADMIN)
    } else {
        access.admin("creating groups").is_ok()
    }
}

/// The client's headers for a join relayed to its coordinator, marked
/// when the member has no admin rights.
pub(crate) fn relayed_join_headers(headers: &http::HeaderMap, admin: bool) -> http::HeaderMap {
    let mut headers = headers.clone();
    headers.remove(JOIN_WITHOUT_ADMIN);
    if !admin {
        headers.insert(JOIN_WITHOUT_ADMIN, HeaderValue::from_static("1"));
    }
    headers
}

/// Largest settle request body.
const MAX_SETTLE_BODY: usize = 1024 * 1024;

fn parse<T: std::str::FromStr<Err = RouterError>>(
    query: &Query,
    name: &str,
) -> Result<Option<T>, Problem> {
    Ok(query.one(name)?.map(str::parse).transpose()?)
}

/// A whole-number group setting; the router checks its range.
fn number(query: &Query, name: &str) -> Result<Option<u64>, Problem> {
    query
        .one(name)?
        .map(|raw| {
            raw.parse::<u64>().map_err(|_| {
                Problem::bad_request(
                    "invalid_group_setting",
                    format!("{name}={raw:?} is not a whole number"),
                )
            })
        })
        .transpose()
}

fn saturate(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `GET /v1/events?group=...`: joins the group and streams its share.
pub(crate) async fn join(
    app: &App,
    group: &str,
    topics: TopicSet,
    format: Format,
    query: &Query,
    admin: bool,
) -> Result<Response<Body>, Problem> {
    for p in ["last_event_id", "lastEventID", "filter", "filter_config"] {
        if query.one(p)?.is_some() {
            return Err(Problem::bad_request(
                "invalid_parameter",
                format!(
                    "{p}= does not apply to a group member (the group keeps its position on the node)"
                ),
            ));
        }
    }
    let start = match query.one("from")? {
        None | Some("latest") => GroupStart::Latest,
        Some("earliest") => GroupStart::Earliest,
        Some(other) => {
            return Err(Problem::bad_request(
                "invalid_parameter",
                format!("from={other:?}; a group starts from earliest or latest"),
            ));
        }
    };
    let options = GroupOptions {
        strategy: parse::<Strategy>(query, "strategy")?,
        ack_timeout: number(query, "ack_timeout_ms")?.map(Duration::from_millis),
        max_deliveries: number(query, "max_deliveries")?.map(saturate),
        start,
        create_limit: (!admin).then_some(app.live().max_groups_without_admin),
    };
    let labels = query
        .all("label")
        .map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| {
                    Problem::bad_request(
                        "invalid_parameter",
                        format!("label={l:?}; expected name:value"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let member = MemberOptions {
        ack: parse::<AckMode>(query, "ack")?.unwrap_or(AckMode::Manual),
        max_inflight: number(query, "max_inflight")?
            .map_or(switchyard_router::DEFAULT_MAX_INFLIGHT, saturate),
        max_inflight_bytes: number(query, "max_inflight_bytes")?
            .unwrap_or(switchyard_router::DEFAULT_MAX_INFLIGHT_BYTES),
        weight: number(query, "weight")?.map_or(1, saturate),
        labels,
    };
    let (max_inflight, max_inflight_bytes) = (member.max_inflight, member.max_inflight_bytes);
    let member = app
        .router
        .groups()
        .join(group, topics, options, member)
        .await?;
    let joined = json!({
        "group": group,
        "member": member.id(),
        "ack": member.ack(),
        "max_inflight": max_inflight,
        "max_inflight_bytes": max_inflight_bytes,
    });
    let prelude = sse::event("joined", &joined.to_string());
    let id = HeaderValue::from_str(member.id()).ok();
    let mut resp = sse_response(app, sse::MemberEvents { member, format }, &prelude);
    let h = resp.headers_mut();
    if let Ok(g) = HeaderValue::from_str(group) {
        h.insert("switchyard-group", g);
    }
    if let Some(id) = id {
        h.insert("switchyard-member", id);
    }
    Ok(resp)
}

/// The groups every live peer coordinates (each peer lists the groups it
/// coordinates). A peer that cannot be reached is left out, with a warning
/// in the log.
async fn peer_groups(app: &App, req: &Request<Incoming>) -> Vec<Value> {
    let Some(cluster) = app.router.cluster() else {
        return Vec::new();
    };
    let mut calls = tokio::task::JoinSet::new();
    for (_, addr) in cluster.peers() {
        let client = cluster.client().clone();
        let headers = req.headers().clone();
        calls.spawn(async move {
            let resp = client
                .forward(
                    &addr,
                    Method::GET,
                    "/v1/groups",
                    &headers,
                    bytes::Bytes::new(),
                    Duration::from_secs(5),
                )
                .await
                .map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("{addr} answered {}", resp.status()));
            }
            let body = tokio::time::timeout(
                Duration::from_secs(5),
                http_body_util::Limited::new(resp.into_body(), 16 * 1024 * 1024).collect(),
            )
            .await
            .map_err(|_| format!("{addr} timed out"))?
            .map_err(|e| e.to_string())?
            .to_bytes();
            let v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            Ok::<_, String>(v["groups"].as_array().cloned().unwrap_or_default())
        });
    }
    let mut out = Vec::new();
    while let Some(r) = calls.join_next().await {
        match r {
            Ok(Ok(groups)) => out.extend(groups),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not list a peer's groups"),
            Err(_) => {}
        }
    }
    out
}

/// Body of a settle request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettleBody {
    ids: Vec<String>,
    member: Option<String>,
    /// A whole number of milliseconds; JSON writes it `1000` or `1000.0`.
    delay_ms: Option<serde_json::Number>,
    reason: Option<String>,
}

/// `n` as a whole number of milliseconds (`1000` and `1000.0` alike).
fn whole_millis(n: &serde_json::Number) -> Result<u64, Problem> {
    n.as_u64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64)
                .map(|f| f as u64)
        })
        .ok_or_else(|| {
            Problem::bad_request(
                "invalid_body",
                format!("delay_ms is {n}; it takes a whole number of milliseconds, 0 or more"),
            )
        })
}

pub(crate) async fn handle(
    app: &App,
    rest: Option<&str>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Problem> {
    let groups = app.router.groups();
    let method = req.method().clone();
    let split = rest.map(|r| r.split_once('/').unwrap_or((r, "")));
    if let Some((name, _)) = split
        && let Some(addr) = crate::cluster::group_elsewhere(app, &req, name)
    {
        let (parts, body) = req.into_parts();
        let body = read_body(body, &parts.headers, MAX_SETTLE_BODY).await?;
        return crate::cluster::relay(app, &addr, parts.method, &parts.uri, &parts.headers, body)
            .await;
    }
    match split {
        None => match method {
            Method::GET => {
                Query::parse(req.uri().query(), &[])?;
                let mut list: Vec<Value> =
                    groups.list().await?.into_iter().map(|g| json!(g)).collect();
                if req.extensions().get::<Relayed>().is_none() {
                    list.extend(peer_groups(app, &req).await);
                    // While a group moves two nodes may list it: keep the
                    // entry of the node this one sees as its coordinator.
                    let preferred = |g: &Value| {
                        let name = g["name"].as_str().unwrap_or("");
                        let coordinator = groups.coordinating(name).0.to_string();
                        g["coordinator"].as_str() != Some(coordinator.as_str())
                    };
                    list.sort_by(|a, b| {
                        (a["name"].as_str(), preferred(a)).cmp(&(b["name"].as_str(), preferred(b)))
                    });
                    list.dedup_by(|b, a| a["name"] == b["name"]);
                }
                Ok(json_response(StatusCode::OK, &json!({ "groups": list })))
            }
            _ => Err(not_allowed("GET")),
        },
        Some((name, "")) => match method {
            Method::GET => {
                Query::parse(req.uri().query(), &[])?;
                let info = groups.info(name).await?;
                Ok(json_response(StatusCode::OK, &json!(info)))
            }
            Method::DELETE => {
                Query::parse(req.uri().query(), &[])?;
                groups.delete(name).await?;
                Ok(json_response(StatusCode::OK, &json!({ "deleted": name })))
            }
            _ => Err(not_allowed("GET, DELETE")),
        },
        Some((name, op @ ("ack" | "nack" | "progress" | "term"))) => match method {
            Method::POST => settle(app, name, op, req).await,
            _ => Err(not_allowed("POST")),
        },
        Some((_, other)) => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no group endpoint {other:?}; use ack, nack, progress or term"),
        )),
    }
}

async fn settle(
    app: &App,
    name: &str,
    op: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, Problem> {
    Query::parse(req.uri().query(), &[])?;
    let (mut parts, body) = req.into_parts();
    let body = crate::cluster::body_of(&mut parts, body, MAX_SETTLE_BODY).await?;
    let b: SettleBody = serde_json::from_slice(&body).map_err(|e| {
        Problem::bad_request(
            "invalid_body",
            format!("expected {{\"ids\": [...], \"member\": ...}}: {e}"),
        )
    })?;
    let extra = match (op, &b.delay_ms, &b.reason) {
        ("nack", _, Some(_)) | ("term", Some(_), _) => true,
        ("ack" | "progress", d, r) => d.is_some() || r.is_some(),
        _ => false,
    };
    if extra {
        return Err(Problem::bad_request(
            "invalid_body",
            format!(
                "{op} does not take that field: delay_ms goes with nack only, reason with term only"
            ),
        ));
    }
    if b.reason.as_ref().is_some_and(|r| r.len() > 1024) {
        return Err(Problem::bad_request(
            "invalid_body",
            "reason is longer than 1024 bytes",
        ));
    }
    let ids = b
        .ids
        .iter()
        .map(|i| i.parse::<MessageId>())
        .collect::<Result<Vec<_>, _>>()?;
    let op = match op {
        "ack" => Settle::Ack,
        "nack" => Settle::Nack(Duration::from_millis(
            b.delay_ms
                .as_ref()
                .map(whole_millis)
                .transpose()?
                .unwrap_or(0),
        )),
        "progress" => Settle::Progress,
        _ => Settle::Term(b.reason),
    };
    let settled = app.router.groups().settle(name, b.member, ids, op).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"group": name, "applied": settled.applied, "stale": settled.stale}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_is_a_whole_number_of_milliseconds() {
        let n = |s: &str| serde_json::from_str::<serde_json::Number>(s).unwrap();
        assert_eq!(whole_millis(&n("1000")).unwrap(), 1000);
        assert_eq!(whole_millis(&n("1000.0")).unwrap(), 1000);
        assert_eq!(whole_millis(&n("1e3")).unwrap(), 1000);
        for bad in ["1000.5", "-1", "-0.5", "1e30"] {
            assert_eq!(
                whole_millis(&n(bad)).unwrap_err().code,
                "invalid_body",
                "{bad}"
            );
        }
    }
}
