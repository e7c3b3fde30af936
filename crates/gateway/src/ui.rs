//! The dashboard at `/ui`: a static page whose script reads the client API
//! (`/v1/topics`, `/v1/events`, `/v1/groups`, `/v1/plugins`,
//! `/v1/cluster`) with the viewer's token. The files are embedded in the
//! binary, so the page works offline and loads nothing from elsewhere; its
//! Content-Security-Policy allows only this node's own scripts, styles and
//! API.

use http::{HeaderValue, Method, Response, StatusCode, header};

use crate::handlers::not_allowed;
use crate::problem::Problem;
use crate::server::{Body, full};

/// The embedded files: path under `/ui`, media type, contents.
const FILES: &[(&str, &str, &str)] = &[
    (
        "/ui",
        "text/html; charset=utf-8",
        include_str!("../ui/index.html"),
    ),
    (
        "/ui/",
        "text/html; charset=utf-8",
        include_str!("../ui/index.html"),
    ),
    (
        "/ui/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/app.js"),
    ),
    (
        "/ui/style.css",
        "text/css; charset=utf-8",
        include_str!("../ui/style.css"),
    ),
];

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Serves `path` (which starts with `/ui`) for a GET or HEAD.
pub(crate) fn serve(path: &str, method: &Method) -> Result<Response<Body>, Problem> {
    if method != Method::GET && method != Method::HEAD {
        return Err(not_allowed("GET, HEAD"));
    }
    let Some((_, media, text)) = FILES.iter().find(|(p, _, _)| *p == path) else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no dashboard file at {path}"),
        ));
    };
    let mut resp = Response::new(full(*text));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}
