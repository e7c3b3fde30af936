//! Cross-origin resource sharing, so that a web app served from another
//! origin can publish with `fetch` and subscribe with `EventSource`.

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use crate::server::{Body, full};

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

/// Adds the CORS headers of an allowed origin to a response.
pub(crate) fn decorate(resp: &mut Response<Body>, origin: HeaderValue) {
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(header::VARY, HeaderValue::from_static("origin"));
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("idempotent-replayed"),
    );
}

/// Answers an `OPTIONS` preflight: 204 with the allowed methods and the
/// requested headers when the origin is allowed, a bare 204 otherwise (the
/// browser then refuses the real request).
pub(crate) fn preflight(origin: Option<HeaderValue>, headers: &HeaderMap) -> Response<Body> {
    let mut resp = Response::new(full(""));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    if let Some(origin) = origin {
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        if let Some(requested) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
        }
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        decorate(&mut resp, origin);
    }
    resp
}
