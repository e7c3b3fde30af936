use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use crate::auth::AuthConfig;
use crate::tls::ServerCert;

/// Default most bytes of a batch publish body (4 MiB).
pub const DEFAULT_MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Default most messages in one batch publish. A batch is committed
/// atomically, and every other publish on the node waits for its commit
/// (a few microseconds per message), so the bound is also the longest
/// such wait.
pub const DEFAULT_MAX_BATCH_MESSAGES: usize = 1_000;
/// Default most concurrent client connections. Each SSE subscriber holds
/// one; the open-files limit of the process must be higher.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default time a client has to send its request headers (slowloris defence).
/// A new connection must also start its first request within it.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a connection may stay open with no request in progress.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time a client has to send a whole request body.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default interval of HTTP/2 keep-alive pings.
pub const DEFAULT_H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// Default time an HTTP/2 keep-alive ping has to be answered.
pub const DEFAULT_H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Default most concurrent requests (HTTP/2 streams) on one client connection.
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 100;
/// Default most connections from one IP address: a tenth of the default
/// `max_connections`, room for a service that holds hundreds of SSE streams
/// or group members from one address.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1024;
/// Default most connections from other nodes of the cluster, counted apart
/// from client connections.
pub const DEFAULT_MAX_PEER_CONNECTIONS: usize = 128;
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
/// Default budget of output handed to connections and not taken yet.
pub const DEFAULT_MAX_PENDING_OUTPUT_BYTES: usize = 256 * 1024 * 1024;
/// Default time a connection may leave its output untaken before it is
/// closed.
pub const DEFAULT_OUTPUT_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Default budget of batch bytes read, parsed and stored at once.
pub const DEFAULT_MAX_BATCH_BYTES_IN_FLIGHT: usize = 32 * 1024 * 1024;
/// Default most groups a join without admin rights may bring a node to.
pub const DEFAULT_MAX_GROUPS_WITHOUT_ADMIN: usize = 64;

/// HTTP API settings. Every limit is documented in `docs/api.md`.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Most bytes of a batch publish body.
    pub max_batch_bytes: usize,
    /// Most messages in one batch publish.
    pub max_batch_messages: usize,
    /// Most concurrent client connections, each HTTP/2 stream beyond the
    /// first open on a connection counting as one more; beyond it requests
    /// are answered `503 overloaded`.
    pub max_connections: usize,
    /// Most connections from other nodes of the cluster (authenticated by
    /// their first request), apart from `max_connections`.
    pub max_peer_connections: usize,
    /// Most connections from one IP address; further ones are closed at accept.
    pub max_connections_per_ip: usize,
    /// Most concurrent requests on one client connection (HTTP/2 streams).
    pub max_streams_per_connection: u32,
    /// Requests per second one IP address may make (a token bucket refilled
    /// at this rate); `None`: no limit. Beyond it: `429` with `Retry-After`.
    pub requests_per_sec_per_ip: Option<u32>,
    /// Requests one IP address may make at once before the rate applies
    /// (the bucket's size); `None`: twice the rate.
    pub request_burst_per_ip: Option<u32>,
    /// Time a client has to send its request headers, and a new connection
    /// to start its first request.
    pub header_read_timeout: Duration,
    /// Time a client connection may stay open with no request in progress.
    pub idle_timeout: Duration,
    /// Time a client has to send a whole request body; `408` after it.
    pub body_read_timeout: Duration,
    /// Interval of HTTP/2 keep-alive pings.
    pub h2_keepalive_interval: Duration,
    /// Time a keep-alive ping has to be answered before the connection is closed.
    pub h2_keepalive_timeout: Duration,
    /// Host names (`Host`, or HTTP/2 `:authority`) the node answers to:
    /// `name` (any port), `name:port`, `*.suffix` or `*`. `None`: the
    /// default of the listen address (loopback names on a loopback
    /// address, any host otherwise).
    pub allowed_hosts: Option<Vec<String>>,
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
    /// Budget of output handed to connections and not taken yet: over it,
    /// event streams read nothing more until connections take their
    /// output, and stalled connections are closed sooner (see
    /// `crate::output`).
    pub max_pending_output_bytes: usize,
    /// Bytes of batch bodies read, parsed and stored at once, node-wide
    /// (at least `max_batch_bytes`): a batch waits for its declared size
    /// until its body deadline, then is answered `503 overloaded`.
    pub max_batch_bytes_in_flight: usize,
    /// A client connection whose output is not taken for this long is
    /// closed (at most 5 s while the pending output is over its budget).
    pub output_stall_timeout: Duration,
    /// Groups a join without admin rights may bring the node to: beyond
    /// it, only a member with admin rights creates a group (joining an
    /// existing one is not limited).
    pub max_groups_without_admin: usize,
    /// Who may do what on the client API (tokens, anonymous access).
    pub auth: AuthConfig,
    /// The listener's certificate: `Some` serves TLS only (no cleartext on
    /// the port), `None` cleartext HTTP.
    pub tls: Option<ServerCert>,
    /// Where a running server reads the settings a reload may change; a
    /// clone kept by the caller changes them ([`Live::apply`]).
    pub live: Live,
}

/// The settings of a running server that a configuration reload changes
/// without a restart: body and batch limits, pull limits, timeouts between
/// requests and of bodies, SSE timing, the group-creation cap and the CORS
/// origins. The connection budgets, the listener, TLS and authorization
/// are fixed at start. Clones share the same settings, so a caller keeps
/// one to change them; two servers in one process each need their own
/// (`GatewayConfig::default()` makes a new one).
#[derive(Clone, Debug, Default)]
pub struct Live(Arc<RwLock<Option<Arc<GatewayConfig>>>>);

impl Live {
    /// Sets the settings the server starts with.
    pub(crate) fn install(&self, config: &GatewayConfig) {
        let mut start = config.clone();
        start.live = Live::default();
        *self.0.write() = Some(Arc::new(start));
    }

    /// The settings in force (`fallback` before the server installed any).
    pub(crate) fn get(&self, fallback: &GatewayConfig) -> Arc<GatewayConfig> {
        match &*self.0.read() {
            Some(c) => c.clone(),
            None => Arc::new(fallback.clone()),
        }
    }

    /// Takes the reloadable settings of `new`; returns the configuration
    /// keys whose values changed (`limits.max_batch_bytes`, ...). Nothing
    /// when no server runs with these settings.
    pub fn apply(&self, new: &GatewayConfig) -> Vec<&'static str> {
        let mut slot = self.0.write();
        let Some(current) = slot.as_ref() else {
            return Vec::new();
        };
        let mut next = GatewayConfig::clone(current);
        let mut changed = Vec::new();
        macro_rules! take {
            ($($field:ident => $key:literal),* $(,)?) => {$(
                if next.$field != new.$field {
                    next.$field = new.$field.clone();
                    changed.push($key);
                }
            )*};
        }
        take! {
            max_batch_bytes => "limits.max_batch_bytes",
            max_batch_messages => "limits.max_batch_messages",
            idle_timeout => "limits.idle_timeout_secs",
            body_read_timeout => "limits.body_read_timeout_secs",
            max_pull_limit => "limits.max_pull_limit",
            max_pull_wait => "limits.max_pull_wait_secs",
            max_groups_without_admin => "limits.max_groups_without_admin",
            heartbeat => "sse.heartbeat_secs",
            retry => "sse.retry_ms",
            cors_origins => "cors.allow_origins",
            max_plugin_bytes => "plugins.max_upload_bytes",
        }
        if !changed.is_empty() {
            *slot = Some(Arc::new(next));
        }
        changed
    }
}

/// The configuration keys [`Live::apply`] changes on a running server.
pub const LIVE_KEYS: [&str; 11] = [
    "limits.max_batch_bytes",
    "limits.max_batch_messages",
    "limits.idle_timeout_secs",
    "limits.body_read_timeout_secs",
    "limits.max_pull_limit",
    "limits.max_pull_wait_secs",
    "limits.max_groups_without_admin",
    "sse.heartbeat_secs",
    "sse.retry_ms",
    "cors.allow_origins",
    "plugins.max_upload_bytes",
];

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_batch_messages: DEFAULT_MAX_BATCH_MESSAGES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_peer_connections: DEFAULT_MAX_PEER_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
            requests_per_sec_per_ip: None,
            request_burst_per_ip: None,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            h2_keepalive_interval: DEFAULT_H2_KEEPALIVE_INTERVAL,
            h2_keepalive_timeout: DEFAULT_H2_KEEPALIVE_TIMEOUT,
            allowed_hosts: None,
            max_request_headers: DEFAULT_MAX_REQUEST_HEADERS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            heartbeat: DEFAULT_HEARTBEAT,
            retry: DEFAULT_RETRY,
            max_pull_limit: DEFAULT_MAX_PULL_LIMIT,
            max_pull_wait: DEFAULT_MAX_PULL_WAIT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            cors_origins: Vec::new(),
            max_plugin_bytes: DEFAULT_MAX_PLUGIN_BYTES,
            max_groups_without_admin: DEFAULT_MAX_GROUPS_WITHOUT_ADMIN,
            max_pending_output_bytes: DEFAULT_MAX_PENDING_OUTPUT_BYTES,
            max_batch_bytes_in_flight: DEFAULT_MAX_BATCH_BYTES_IN_FLIGHT,
            output_stall_timeout: DEFAULT_OUTPUT_STALL_TIMEOUT,
            auth: AuthConfig::default(),
            tls: None,
            live: Live::default(),
        }
    }
}
