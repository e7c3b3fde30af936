//! `GET /v1/plugins/{name}/component`: the component a binding runs.

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::handlers::not_allowed;
use crate::problem::Problem;
use crate::query::Query;
use crate::server::{App, Body, full};

/// Header that carries the component's sha256 (in hex).
pub(crate) const SHA256_HEADER: &str = "switchyard-plugin-sha256";
/// Header that carries the binding's version.
pub(crate) const VERSION_HEADER: &str = "switchyard-plugin-version";

/// The path's binding name when `path` is `/v1/plugins/{name}/component`
/// (still percent-encoded).
pub(crate) fn binding_of(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/plugins/")?
        .strip_suffix("/component")
        .filter(|name| !name.is_empty() && !name.contains('/'))
}

/// Answers the bytes of the component binding `name` runs
/// (`application/wasm`), with their sha256 as the `ETag` and in
/// `switchyard-plugin-sha256`, and the binding's version in
/// `switchyard-plugin-version`. Admin rights are checked before (as for
/// every `/v1/plugins` path).
pub(crate) async fn get(
    app: &App,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, Problem> {
    if req.method() != Method::GET {
        return Err(not_allowed("GET"));
    }
    Query::parse(req.uri().query(), &[])?;
    let (plugins, n) = (app.router.plugins().clone(), name.to_owned());
    let (info, bytes) = tokio::task::spawn_blocking(move || plugins.component(&n))
        .await
        .map_err(|_| switchyard_router::RouterError::ShuttingDown)??;
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/wasm"),
    );
    // A hex digest and a number: always valid header values.
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", info.sha256)) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&info.sha256) {
        h.insert(SHA256_HEADER, v);
    }
    h.insert(VERSION_HEADER, HeaderValue::from(info.version));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_component_paths_name_a_binding() {
        assert_eq!(binding_of("/v1/plugins/region/component"), Some("region"));
        assert_eq!(binding_of("/v1/plugins/a%2Db/component"), Some("a%2Db"));
        assert_eq!(binding_of("/v1/plugins/component"), None);
        assert_eq!(binding_of("/v1/plugins//component"), None);
        assert_eq!(binding_of("/v1/plugins/a/b/component"), None);
        assert_eq!(binding_of("/v1/plugins/region/logs"), None);
        assert_eq!(binding_of("/v1/plugins/region"), None);
    }
}
