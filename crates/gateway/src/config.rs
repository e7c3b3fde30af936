use std::time::Duration;

use crate::auth::AuthConfig;

/// Default most bytes of a batch publish body (16 MiB).
pub const DEFAULT_MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Default most messages in one batch publish.
pub const DEFAULT_MAX_BATCH_MESSAGES: usize = 10_000;
/// Default most concurrent client connections. Each SSE subscriber holds
/// one; the open-files limit of the process must be higher.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default time a client has to send its request headers (slowloris defence).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default most request headers.
pub const DEFAULT_MAX_REQUEST_HEADERS: usize = 100;
/// Default most bytes of request line and headers together (64 KiB).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Default interval of SSE heartbeat comments on an idle stream.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// Default `retry:` hint sent to SSE clients.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(2);
/// Default most messages one pull returns.
pub const DEFAULT_MAX_PULL_LIMIT: usize = 1000;
/// Default longest pull long-poll.
pub const DEFAULT_MAX_PULL_WAIT: Duration = Duration::from_secs(60);
/// Default time in-flight requests get to finish on shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Default largest plugin component upload.
pub const DEFAULT_MAX_PLUGIN_BYTES: usize = 16 * 1024 * 1024;

/// HTTP API settings. Every limit is documented in `docs/api.md`.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Most bytes of a batch publish body.
    pub max_batch_bytes: usize,
    /// Most messages in one batch publish.
    pub max_batch_messages: usize,
    /// Most concurrent connections; further clients wait in the accept queue.
    pub max_connections: usize,
    /// Time a client has to send its request headers.
    pub header_read_timeout: Duration,
    /// Most request headers.
    pub max_request_headers: usize,
    /// Most bytes of request line and headers.
    pub max_header_bytes: usize,
    /// Interval of heartbeat comments on an idle SSE stream.
    pub heartbeat: Duration,
    /// `retry:` hint sent at the start of every SSE stream.
    pub retry: Duration,
    /// Most messages one pull returns.
    pub max_pull_limit: usize,
    /// Longest pull long-poll.
    pub max_pull_wait: Duration,
    /// Time in-flight requests get to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Browser origins allowed to call the API from other origins (CORS),
    /// e.g. `https://app.example.com`; `*` allows any. Empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// Largest plugin component accepted by `PUT /v1/plugins/{name}`.
    pub max_plugin_bytes: usize,
    /// Who may do what on the client API (tokens, anonymous access).
    pub auth: AuthConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_batch_messages: DEFAULT_MAX_BATCH_MESSAGES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_request_headers: DEFAULT_MAX_REQUEST_HEADERS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            heartbeat: DEFAULT_HEARTBEAT,
            retry: DEFAULT_RETRY,
            max_pull_limit: DEFAULT_MAX_PULL_LIMIT,
            max_pull_wait: DEFAULT_MAX_PULL_WAIT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            cors_origins: Vec::new(),
            max_plugin_bytes: DEFAULT_MAX_PLUGIN_BYTES,
            auth: AuthConfig::default(),
        }
    }
}
