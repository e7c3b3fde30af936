//! Cross-origin resource sharing, so that a web app served from another
//! origin can publish with `fetch` and subscribe with `EventSource`; and
//! the refusal of requests from origins that are not allowed, so that a
//! page elsewhere cannot act on the node through a browser (a form post
//! or a CORS "simple request" reaches the server without a preflight).

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use crate::server::{Body, full};

/// The methods of the API.
const METHODS: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS";

/// The value for `Access-Control-Allow-Origin` when the request's `Origin`
/// is allowed: `*` when any origin is, else the origin itself.
pub(crate) fn allowed_origin(allowed: &[String], headers: &HeaderMap) -> Option<HeaderValue> {
    if allowed.is_empty() {
        return None;
    }
    let origin = headers.get(header::ORIGIN)?;
    if allowed.iter().any(|a| a == "*") {
        return Some(HeaderValue::from_static("*"));
    }
    let text = origin.to_str().ok()?;
    allowed.iter().any(|a| a == text).then(|| origin.clone())
}

/// Whether a request with these headers, naming `host`, may be served: it
/// has no `Origin` (not from a browser page, or a same-origin navigation),
/// its origin is allowed by `[cors] allow_origins`, or it is the node's own
/// origin (`http://` or `https://`, for a node behind a TLS proxy, followed
/// by the request's own host, which [`crate::hosts`] has checked).
pub(crate) fn origin_permitted(
    allowed: &[String],
    headers: &HeaderMap,
    host: Option<&str>,
) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    if allowed.iter().any(|a| a == "*") {
        return true;
    }
    let Ok(text) = origin.to_str() else {
        return false;
    };
    if allowed.iter().any(|a| a == text) {
        return true;
    }
    let own = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"));
    matches!((own, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// Request headers a cross-origin page may send (beyond the CORS-safelisted
/// ones): those the API reads, and message headers (`Switchyard-Header-*`).
const ALLOWED_REQUEST_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "idempotency-key",
    "last-event-id",
    "switchyard-acks",
    "switchyard-key",
];

fn request_header_allowed(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    ALLOWED_REQUEST_HEADERS.contains(&name.as_str()) || name.starts_with("switchyard-header-")
}

/// Adds the CORS headers of an allowed origin to a response. A named
/// origin (not `*`) may send credentials: the `switchyardAuthorization`
/// cookie that carries a token for `EventSource` (with
/// `withCredentials: true`).
pub(crate) fn decorate(resp: &mut Response<Body>, origin: HeaderValue) {
    let h = resp.headers_mut();
    if origin.as_bytes() != b"*" {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(header::VARY, HeaderValue::from_static("origin"));
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(
            "idempotent-replayed, retry-after, switchyard-group, switchyard-member, www-authenticate",
        ),
    );
}

/// Answers an `OPTIONS` preflight: 204 with the API's methods and those of
/// the requested headers the API reads when the origin is allowed, a bare
/// 204 otherwise (the browser then refuses the real request).
pub(crate) fn preflight(
    origin: Option<HeaderValue>,
    headers: &HeaderMap,
    path: &str,
) -> Response<Body> {
    let methods = methods_of(path);
    let mut resp = Response::new(full(""));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(methods));
    if let Some(origin) = origin {
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(methods),
        );
        let granted: Vec<&str> = headers
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty() && request_header_allowed(n))
            .collect();
        if !granted.is_empty()
            && let Ok(v) = HeaderValue::from_str(&granted.join(","))
        {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        decorate(&mut resp, origin);
    }
    resp
}

/// The methods the endpoint at `path` takes, `OPTIONS` included; every
/// method of the API for a path no endpoint serves.
fn methods_of(path: &str) -> &'static str {
    const POST: &str = "POST, OPTIONS";
    const GET: &str = "GET, OPTIONS";
    const GET_HEAD: &str = "GET, HEAD, OPTIONS";
    match path {
        "/v1/batch" => POST,
        "/v1/events" | "/v1/messages" | "/v1/topics" | "/v1/cluster" | "/v1/plugins"
        | "/v1/groups" => GET,
        "/healthz" | "/readyz" | "/metrics" | "/" | "/ui" => GET_HEAD,
        p if p.starts_with("/ui/") => GET_HEAD,
        p if p.len() > "/v1/topics/".len() && p.starts_with("/v1/topics/") => POST,
        p if p.len() > "/v1/plugins/".len() && p.starts_with("/v1/plugins/") => {
            "GET, PUT, DELETE, OPTIONS"
        }
        p if p.len() > "/v1/groups/".len() && p.starts_with("/v1/groups/") => {
            if p["/v1/groups/".len()..].contains('/') {
                POST
            } else {
                "GET, DELETE, OPTIONS"
            }
        }
        _ => METHODS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflight_names_the_methods_of_the_path() {
        let allow =
            |path| preflight(None, &HeaderMap::new(), path).headers()[header::ALLOW].clone();
        assert_eq!(allow("/v1/topics/orders.eu"), "POST, OPTIONS");
        assert_eq!(allow("/v1/events"), "GET, OPTIONS");
        assert_eq!(allow("/v1/groups/workers"), "GET, DELETE, OPTIONS");
        assert_eq!(allow("/v1/groups/workers/ack"), "POST, OPTIONS");
        assert_eq!(allow("/v1/plugins/tag"), "GET, PUT, DELETE, OPTIONS");
        assert_eq!(allow("/metrics"), "GET, HEAD, OPTIONS");
        assert_eq!(allow("/nowhere"), METHODS);
    }

    fn with_origin(origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        h
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://app.example".to_owned()];
        let host = Some("127.0.0.1:7070");
        assert!(origin_permitted(&allowed, &HeaderMap::new(), host));
        assert!(origin_permitted(
            &allowed,
            &with_origin("https://app.example"),
            host
        ));
        assert!(origin_permitted(
            &allowed,
            &with_origin("http://127.0.0.1:7070"),
            host
        ));
        assert!(origin_permitted(
            &[],
            &with_origin("http://127.0.0.1:7070"),
            host
        ));
        assert!(!origin_permitted(
            &allowed,
            &with_origin("http://127.0.0.1:7071"),
            host
        ));
        assert!(!origin_permitted(
            &allowed,
            &with_origin("https://evil.example"),
            host
        ));
        assert!(!origin_permitted(&allowed, &with_origin("null"), host));
        assert!(!origin_permitted(
            &[],
            &with_origin("http://127.0.0.1:7070"),
            None
        ));
        assert!(origin_permitted(
            &["*".to_owned()],
            &with_origin("null"),
            host
        ));
    }

    #[test]
    fn preflight_grants_only_headers_the_api_reads() {
        let mut h = with_origin("https://app.example");
        h.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("content-type, Authorization,x-other,switchyard-header-a"),
        );
        let resp = preflight(
            Some(HeaderValue::from_static("https://app.example")),
            &h,
            "/v1/plugins/x",
        );
        assert_eq!(
            resp.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "content-type,Authorization,switchyard-header-a"
        );
        assert_eq!(
            resp.headers()[header::ACCESS_CONTROL_ALLOW_METHODS],
            "GET, PUT, DELETE, OPTIONS"
        );
        assert_eq!(
            resp.headers()[header::ACCESS_CONTROL_ALLOW_CREDENTIALS],
            "true"
        );
        assert!(
            resp.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS]
                .to_str()
                .unwrap()
                .contains("www-authenticate")
        );
    }

    #[test]
    fn any_origin_gets_no_credentials() {
        let resp = preflight(
            Some(HeaderValue::from_static("*")),
            &with_origin("https://x.example"),
            "/v1/events",
        );
        assert!(
            !resp
                .headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS)
        );
    }
}
