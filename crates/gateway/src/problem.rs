//! The one place where errors become HTTP responses:
//! `application/problem+json` (RFC 9457) with a stable `code`.

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};
use switchyard_model::ModelError;
use switchyard_router::StoreError;
use switchyard_router::{InvalidMessage, PluginError, RouterError};

use crate::auth::{Denied, TokenError};
use crate::server::{Body, full};

/// An error answer.
#[derive(Debug)]
pub(crate) struct Problem {
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `invalid_topic`.
    pub code: &'static str,
    pub detail: String,
    /// Extra members, e.g. per-entry errors of a batch.
    pub extra: Option<(&'static str, Value)>,
    /// Methods for the `Allow` header of a 405.
    pub allow: Option<&'static str>,
    /// The `WWW-Authenticate` challenge of a 401 or 403 (its description
    /// is `detail`).
    pub www_authenticate: Option<Challenge>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Problem {
            status,
            code,
            detail: detail.into(),
            extra: None,
            allow: None,
            www_authenticate: None,
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn into_response(self) -> Response<Body> {
        let mut body = json!({
            "type": format!("urn:switchyard:problem:{}", self.code),
            "title": self.status.canonical_reason().unwrap_or("error"),
            "status": self.status.as_u16(),
            "code": self.code,
            "detail": self.detail,
        });
        if let Some((k, v)) = self.extra {
            body[k] = v;
        }
        let mut resp = Response::new(full(body.to_string()));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        // Refusals that a retry soon resolves say when to retry: every
        // `overloaded` (connections, batch bytes, a storage engine behind)
        // as well as `key_in_flight`.
        if let Some(secs) = matches!(self.code, "key_in_flight" | "overloaded").then_some("1") {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
        }
        if let Some(allow) = self.allow {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(challenge) = self
            .www_authenticate
            .and_then(|c| HeaderValue::from_str(&challenge(c, &self.detail)).ok())
        {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        resp
    }
}

/// The realm named in every `WWW-Authenticate` challenge.
const REALM: &str = "switchyard";

/// The error of a `Bearer` challenge (RFC 6750 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// No error: a token is needed.
    Token,
    /// `error="invalid_token"`.
    InvalidToken,
    /// `error="insufficient_scope"`.
    InsufficientScope,
}

/// A `Bearer` challenge with the problem's detail as its description,
/// reduced to characters a quoted string may hold as they are.
fn challenge(c: Challenge, description: &str) -> String {
    let code = match c {
        Challenge::Token => return format!("Bearer realm=\"{REALM}\""),
        Challenge::InvalidToken => "invalid_token",
        Challenge::InsufficientScope => "insufficient_scope",
    };
    let description: String = description
        .chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c == ' ' || c.is_ascii_graphic() => c,
            _ => '?',
        })
        .collect();
    format!("Bearer realm=\"{REALM}\", error=\"{code}\", error_description=\"{description}\"")
}

impl From<TokenError> for Problem {
    fn from(e: TokenError) -> Self {
        let code = match e {
            TokenError::Expired | TokenError::NotYetValid => "token_expired",
            _ => "invalid_token",
        };
        let detail = e.to_string();
        Problem {
            www_authenticate: Some(Challenge::InvalidToken),
            ..Problem::new(StatusCode::UNAUTHORIZED, code, detail)
        }
    }
}

impl From<Denied> for Problem {
    fn from(d: Denied) -> Self {
        match d {
            Denied::NoToken(detail) => Problem {
                www_authenticate: Some(Challenge::Token),
                ..Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
            },
            Denied::Forbidden(detail) => Problem {
                www_authenticate: Some(Challenge::InsufficientScope),
                ..Problem::new(StatusCode::FORBIDDEN, "forbidden", detail)
            },
        }
    }
}

impl From<ModelError> for Problem {
    fn from(e: ModelError) -> Self {
        let code = match e {
            ModelError::InvalidTopic { .. } => "invalid_topic",
            ModelError::InvalidPattern { .. } => "invalid_pattern",
            ModelError::InvalidCursor { .. } => "invalid_cursor",
            ModelError::InvalidMessageId { .. } => "invalid_message_id",
            ModelError::InvalidTime { .. } => "invalid_time",
            _ => "invalid_input",
        };
        Problem::bad_request(code, e.to_string())
    }
}

pub(crate) fn invalid_message(e: &InvalidMessage) -> (StatusCode, &'static str) {
    match e {
        InvalidMessage::PayloadTooLarge { .. } => {
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
        }
        InvalidMessage::ReservedTopic(_) => (StatusCode::BAD_REQUEST, "reserved_topic"),
        InvalidMessage::KeyTooLong { .. } => (StatusCode::BAD_REQUEST, "key_too_long"),
        InvalidMessage::HeadersTooLarge(_) => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
        ),
        InvalidMessage::InvalidHeader(_) => (StatusCode::BAD_REQUEST, "invalid_header"),
        InvalidMessage::InvalidIdempotencyKey(_) => {
            (StatusCode::BAD_REQUEST, "invalid_idempotency_key")
        }
        _ => (StatusCode::BAD_REQUEST, "invalid_message"),
    }
}

impl From<RouterError> for Problem {
    fn from(e: RouterError) -> Self {
        match e {
            RouterError::Invalid(m) => {
                let (status, code) = invalid_message(&m);
                Problem::new(status, code, m.to_string())
            }
            RouterError::InvalidBatch(entries) => {
                let errors: Vec<Value> = entries
                    .iter()
                    .map(|(i, m)| json!({"index": i, "code": invalid_message(m).1, "detail": m.to_string()}))
                    .collect();
                Problem {
                    extra: Some(("errors", Value::Array(errors))),
                    ..Problem::bad_request(
                        "invalid_batch",
                        format!(
                            "{} batch entries are invalid; nothing was stored",
                            entries.len()
                        ),
                    )
                }
            }
            RouterError::Store(StoreError::Poisoned | StoreError::Closed)
            | RouterError::ShuttingDown => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
            RouterError::Store(other) => {
                tracing::error!(error = %other, "store error while serving a request");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "storage_error",
                    other.to_string(),
                )
            }
            RouterError::PluginNotFound(_) => {
                Problem::new(StatusCode::NOT_FOUND, "plugin_not_found", e.to_string())
            }
            RouterError::PluginSetting(_) => {
                Problem::bad_request("invalid_plugin_setting", e.to_string())
            }
            RouterError::PluginConflict(_) => {
                Problem::new(StatusCode::CONFLICT, "plugin_conflict", e.to_string())
            }
            RouterError::GroupNotFound(_) => {
                Problem::new(StatusCode::NOT_FOUND, "group_not_found", e.to_string())
            }
            RouterError::GroupSetting(_) => {
                Problem::bad_request("invalid_group_setting", e.to_string())
            }
            RouterError::Cluster(_) => Problem::bad_request("invalid_body", e.to_string()),
            RouterError::GroupUnavailable(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
            RouterError::GroupConflict(_) => {
                Problem::new(StatusCode::CONFLICT, "group_conflict", e.to_string())
            }
            RouterError::GroupLimit(_) => {
                Problem::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
            }
            RouterError::NotInFlight { ref ids, .. } => Problem {
                extra: Some(("ids", json!(ids))),
                ..Problem::new(StatusCode::CONFLICT, "not_in_flight", e.to_string())
            },
            RouterError::InvalidAcks(_) => Problem::bad_request("invalid_acks", e.to_string()),
            RouterError::NotReplicated {
                copies,
                needed,
                key_checked,
                ..
            } => Problem {
                extra: Some((
                    "copies",
                    if key_checked {
                        json!({"reached": copies, "needed": needed, "stored": true})
                    } else {
                        json!({"reached": copies, "needed": needed, "stored": true, "key_checked": false})
                    },
                )),
                ..Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_replicated",
                    e.to_string(),
                )
            },
            RouterError::KeyInFlight { ref keys } => Problem {
                extra: Some(("keys", json!(keys))),
                ..Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "key_in_flight",
                    e.to_string(),
                )
            },
            RouterError::StaleAck { ref stale, .. } => Problem {
                extra: Some(("stale", json!(stale))),
                ..Problem::new(StatusCode::CONFLICT, "stale_ack", e.to_string())
            },
            RouterError::Plugin(p) => {
                let code = match &p {
                    PluginError::InvalidComponent(_) => "invalid_component",
                    PluginError::NoKnownWorld(_) => "unknown_world",
                    PluginError::WrongHook { .. } => "wrong_hook",
                    PluginError::ConfigRejected(_) => "config_rejected",
                    PluginError::InvalidSetting(_) => "invalid_plugin_setting",
                    PluginError::CompileRefused(_) => "compile_refused",
                    PluginError::OverBudget(_) => {
                        return Problem::new(
                            StatusCode::CONFLICT,
                            "memory_budget_exceeded",
                            p.to_string(),
                        );
                    }
                    PluginError::Call { .. } => "plugin_failed",
                    PluginError::Engine(_) => {
                        tracing::error!(error = %p, "plugin engine error");
                        return Problem::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "plugin_engine",
                            p.to_string(),
                        );
                    }
                };
                let status = if code == "invalid_plugin_setting" {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::UNPROCESSABLE_ENTITY
                };
                Problem::new(status, code, p.to_string())
            }
            other => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                other.to_string(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_a_retry_resolves_carry_retry_after() {
        for (status, code, retry) in [
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded", Some("1")),
            (StatusCode::SERVICE_UNAVAILABLE, "key_in_flight", Some("1")),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None),
            (StatusCode::BAD_REQUEST, "invalid_topic", None),
        ] {
            let resp = Problem::new(status, code, "detail").into_response();
            let got = resp
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap());
            assert_eq!(got, retry, "{code}");
            assert_eq!(
                resp.headers().get(header::CONTENT_TYPE).unwrap(),
                "application/problem+json"
            );
        }
    }
}
