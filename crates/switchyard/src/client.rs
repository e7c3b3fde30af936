//! A small HTTP client for the node's API, used by the command-line client
//! commands. Errors say whether the node was unreachable or answered an error.
//!
//! `https://` URLs are verified against the CA certificates of a file
//! (`--ca-file`) or else the operating system's trust store; ALPN offers
//! HTTP/2 and HTTP/1.1.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not an `http://host:port` or `https://host:port` URL.
    #[error("invalid node URL {0:?}: expected http://host:port or https://host:port")]
    BadUrl(String),
    /// The CA file (or the system's trust store) cannot be used.
    #[error("{0}")]
    Trust(String),
    /// The token holds characters a header cannot carry.
    #[error("the token is not a valid header value (a JWT is base64url text with dots)")]
    BadToken,
    /// No connection could be made, or it broke.
    #[error("cannot reach the node at {url}: {detail}")]
    Unreachable {
        /// The node URL.
        url: String,
        /// The underlying error.
        detail: String,
    },
    /// The node answered with an error status.
    #[error("the node answered {status}: {detail}")]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The problem's `detail` (or the raw body).
        detail: String,
    },
}

/// A client for one node.
#[derive(Clone)]
pub struct Client {
    base: String,
    /// `Authorization` header value sent with every request.
    authorization: Option<http::HeaderValue>,
    http: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Client {
    /// A client for the node at `url` (for example `http://127.0.0.1:7070`);
    /// an `https://` node's certificate must chain to the system's trust store.
    pub fn new(url: &str) -> Result<Client, ClientError> {
        Client::with_ca_file(url, None)
    }

    /// A client for the node at `url` whose certificate, for an `https://`
    /// URL, must chain to a certificate of the PEM file `ca` when given,
    /// else to the system's trust store.
    pub fn with_ca_file(url: &str, ca: Option<&Path>) -> Result<Client, ClientError> {
        let base = url.trim_end_matches('/').to_owned();
        let https = base.starts_with("https://");
        if !(https || base.starts_with("http://")) || base.parse::<http::Uri>().is_err() {
            return Err(ClientError::BadUrl(url.to_owned()));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.enforce_http(false);
        // The trust store is read only for an https URL.
        let tls = if https {
            tls_config(ca)?
        } else {
            rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| ClientError::Trust(e.to_string()))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(connector);
        let http = HyperClient::builder(TokioExecutor::new()).build(connector);
        Ok(Client {
            base,
            authorization: None,
            http,
        })
    }

    /// The same client sending `token`, when given, as a Bearer token
    /// with every request.
    pub fn with_token(mut self, token: Option<String>) -> Result<Client, ClientError> {
        self.authorization = token
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .map(|t| {
                let mut v = http::HeaderValue::from_str(&format!("Bearer {t}"))
                    .map_err(|_| ClientError::BadToken)?;
                v.set_sensitive(true);
                Ok(v)
            })
            .transpose()?;
        Ok(self)
    }

    /// The node URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Sends a request and returns the response if its status is a success.
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| ClientError::Unreachable {
                url: self.base.clone(),
                detail: error_chain(&e),
            })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        Err(ClientError::Api { status, detail })
    }

    /// A request builder for `path` (which starts with `/`).
    pub fn request(&self, method: http::Method, path: &str) -> http::request::Builder {
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        match &self.authorization {
            Some(v) => req.header(header::AUTHORIZATION, v.clone()),
            None => req,
        }
    }

    /// GETs `path` and parses the JSON answer.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        let req = self
            .request(http::Method::GET, path)
            .body(Full::new(Bytes::new()))
            .expect("valid request");
        let resp = self.send(req).await?;
        self.json_body(resp).await
    }

    /// Sends `body` with `method` to `path` and parses the JSON answer.
    pub async fn send_json(
        &self,
        method: http::Method,
        path: &str,
        body: Bytes,
        content_type: &str,
    ) -> Result<serde_json::Value, ClientError> {
        let req = self
            .request(method, path)
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .map_err(|e| ClientError::Api {
                status: StatusCode::BAD_REQUEST,
                detail: format!("cannot build the request: {e}"),
            })?;
        let resp = self.send(req).await?;
        self.json_body(resp).await
    }

    /// Reads a successful answer's JSON body.
    async fn json_body(
        &self,
        resp: hyper::Response<Incoming>,
    ) -> Result<serde_json::Value, ClientError> {
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: self.base.clone(),
                detail: e.to_string(),
            })?;
        serde_json::from_slice(&body.to_bytes()).map_err(|e| ClientError::Api {
            status,
            detail: format!("the answer is not JSON: {e}"),
        })
    }

    /// Publishes one message; returns the node's JSON answer.
    pub async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        key: Option<&str>,
        headers: &[(String, String)],
        content_type: Option<&str>,
    ) -> Result<serde_json::Value, ClientError> {
        let mut req = self.request(http::Method::POST, &format!("/v1/topics/{topic}"));
        if let Some(k) = key {
            req = req.header("switchyard-key", k);
        }
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        for (name, value) in headers {
            req = req.header(format!("switchyard-header-{name}"), value);
        }
        let req = req.body(Full::new(payload)).map_err(|e| ClientError::Api {
            status: StatusCode::BAD_REQUEST,
            detail: format!("cannot build the request: {e}"),
        })?;
        let resp = self.send(req).await?;
        self.json_body(resp).await
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    switchyard_gateway::tls::provider()
}

/// The TLS settings of an https URL: the CA certificates of `ca`, or the
/// system's trust store.
fn tls_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs = switchyard_gateway::tls::read_certs(path).map_err(ClientError::Trust)?;
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    ClientError::Trust(format!(
                        "{}: not a usable CA certificate: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(ClientError::Trust(
                    "no CA certificates in the system's trust store: pass --ca-file \
                     (or SWITCHYARD_CA_FILE)"
                        .into(),
                ));
            }
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Trust(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
