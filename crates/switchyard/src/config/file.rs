//! The config file's shape: every section and field as TOML spells it, all
//! optional. `NodeConfig::build` turns it into validated settings.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The config file. Every section and field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// HTTP listen address.
    pub listen: Option<SocketAddr>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// `pretty` or `json`.
    pub log_format: Option<String>,
    /// Storage settings.
    #[serde(default)]
    pub storage: StorageSection,
    /// Request and connection limits.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Server-Sent Events settings.
    #[serde(default)]
    pub sse: SseSection,
    /// Publish settings.
    #[serde(default)]
    pub publish: PublishSection,
    /// Retention settings.
    #[serde(default)]
    pub retention: RetentionSection,
    /// Cross-origin settings for browser clients.
    #[serde(default)]
    pub cors: CorsSection,
    /// HTTP settings: the host names the node answers to.
    #[serde(default)]
    pub http: HttpSection,
    /// Plugin engine settings and defaults.
    #[serde(default)]
    pub plugins: PluginsSection,
    /// Plugin bindings (`[[plugin]]`), loaded at every start.
    #[serde(default)]
    pub plugin: Vec<PluginBindingSection>,
    /// Cluster membership (gossip).
    #[serde(default)]
    pub cluster: ClusterSection,
    /// Authorization of the client API (JWT keys, anonymous access).
    #[serde(default)]
    pub auth: AuthSection,
    /// TLS on the HTTP listener and between nodes.
    #[serde(default)]
    pub tls: TlsSection,
}

/// `[tls]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain of the listener, the node's certificate
    /// first; with `key_file` the listener speaks TLS only.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the certificate.
    pub key_file: Option<PathBuf>,
    /// PEM CA certificates that peers' certificates must chain to; without
    /// it any peer certificate is taken (the sealed envelope authenticates
    /// peers).
    pub ca_file: Option<PathBuf>,
    /// Seconds between checks of the certificate and key files for changes.
    pub poll_interval_secs: Option<u64>,
}

/// `[auth]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// A file holding the HS256 shared secret (at least 32 bytes; the
    /// whitespace around it is ignored).
    pub hs256_secret_file: Option<PathBuf>,
    /// PEM public keys (RSA, EC P-256/P-384, Ed25519); any may verify.
    #[serde(default)]
    pub public_key_files: Vec<PathBuf>,
    /// What a request without a token may do: none, subscribe or all
    /// (default: none with keys, all without).
    pub anonymous: Option<String>,
    /// Start on a non-loopback address although anonymous clients may
    /// publish and administer (no keys, or `anonymous = "all"`).
    pub allow_anonymous: Option<bool>,
    /// Allowance for clock skew on `exp` and `nbf`, in seconds (default 30).
    pub leeway_secs: Option<u64>,
    /// Refuse tokens without `exp` (default false).
    pub require_exp: Option<bool>,
    /// When set, tokens must carry this `aud`.
    pub audience: Option<String>,
    /// When set, tokens must carry this `iss`.
    pub issuer: Option<String>,
    /// Most verified tokens cached (default 10000).
    pub token_cache: Option<usize>,
}

/// `[cluster]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Cluster name (default `switchyard`).
    pub name: Option<String>,
    /// Cluster key; `SWITCHYARD_CLUSTER_KEY` takes precedence.
    pub key: Option<String>,
    /// UDP gossip listen address; the node joins a cluster only when set.
    pub gossip_listen: Option<SocketAddr>,
    /// Gossip address other nodes use (default: the listen address).
    pub gossip_advertise: Option<SocketAddr>,
    /// HTTP address other nodes and clients use (default: the HTTP listen address).
    pub http_advertise: Option<String>,
    /// Gossip addresses (`host:port`) to join through.
    #[serde(default)]
    pub seeds: Vec<String>,
    /// Time between probes, in ms (default 400).
    pub probe_period_ms: Option<u64>,
    /// Time to answer a probe, in ms (default 150).
    pub probe_rtt_ms: Option<u64>,
    /// Time a suspect has to refute, in ms (default 2500).
    pub suspect_timeout_ms: Option<u64>,
    /// Time between gossip rounds, in ms (default 100).
    pub gossip_interval_ms: Option<u64>,
    /// Members per gossip round (default 3).
    pub gossip_fanout: Option<usize>,
    /// Nodes holding each origin's whole log, the origin included (default 1).
    pub replication_factor: Option<usize>,
    /// Copies a publish waits for by default: local, quorum or all
    /// (default quorum; with a replication factor of 1, the same as local).
    pub acks: Option<String>,
    /// Longest a publish waits for its copies, in ms (default 5000).
    pub ack_timeout_ms: Option<u64>,
}

/// `[plugins]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsSection {
    /// Keep compiled plugins in `<data_dir>/plugin-cache` (default true).
    pub compile_cache: Option<bool>,
    /// Instances the pooling allocator has room for (0: allocate on demand).
    pub pooled_instances: Option<u32>,
    /// Largest memory cap a binding may ask for, in MiB.
    pub max_memory_mb: Option<usize>,
    /// Largest component upload, in bytes.
    pub max_upload_bytes: Option<usize>,
    /// Default fuel per hook call.
    pub fuel: Option<u64>,
    /// Default memory cap per instance, in MiB.
    pub memory_mb: Option<usize>,
    /// Default most instances per binding.
    pub max_instances: Option<usize>,
    /// Default most host calls per hook call.
    pub max_host_calls: Option<u32>,
    /// The most fuel per call a binding may ask for (default 10^9).
    pub max_fuel: Option<u64>,
    /// Memory all plugin instances may take together, in bytes (default
    /// 1 GiB).
    pub memory_budget_bytes: Option<u64>,
    /// Longest a component may take to compile, in ms (default 10000).
    pub compile_timeout_ms: Option<u64>,
    /// Most key-value bytes per binding (default 4 MiB).
    pub kv_max_bytes: Option<u64>,
    /// Log lines a second per binding (default 100).
    pub log_lines_per_sec: Option<u32>,
    /// Log bytes a second per binding (default 65536).
    pub log_bytes_per_sec: Option<u64>,
    /// Threads running plugin calls (default: one per core, at most 8).
    pub threads: Option<usize>,
}

/// One `[[plugin]]` binding.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginBindingSection {
    /// Binding name.
    pub name: String,
    /// Component file (relative paths are taken from the config file's
    /// directory).
    pub file: PathBuf,
    /// `route`, `filter` or `pick`.
    pub hook: String,
    /// Topic patterns (default `[">"]`).
    #[serde(default)]
    pub topics: Vec<String>,
    /// Configuration string for the plugin's `init`.
    #[serde(default)]
    pub config: String,
    /// `drop` (default), `pass` or `dead-letter`.
    pub on_error: Option<String>,
    /// Fuel per hook call.
    pub fuel: Option<u64>,
    /// Memory cap per instance, in MiB.
    pub memory_mb: Option<usize>,
    /// Most instances.
    pub max_instances: Option<usize>,
    /// Most host calls per hook call.
    pub max_host_calls: Option<u32>,
}

/// `[cors]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSection {
    /// Origins allowed to call the API from a browser (`"*"` for any).
    #[serde(default)]
    pub allow_origins: Vec<String>,
}

/// `[http]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Host names (`Host` / `:authority`) the node answers to: `name`,
    /// `name:port`, `*.suffix`, or `"*"` for any. Default: the loopback
    /// names on a loopback listen address, any host otherwise.
    pub allowed_hosts: Option<Vec<String>>,
}

/// `[storage]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// `always`, `interval` or `never`.
    pub fsync: Option<String>,
    /// Sync period for `interval`, in milliseconds.
    pub fsync_interval_ms: Option<u64>,
    /// Size of the in-memory tail of recent messages.
    pub tail_cache_bytes: Option<usize>,
    /// fjall block cache size.
    pub cache_bytes: Option<u64>,
    /// Writer queue capacity (requests).
    pub write_queue: Option<usize>,
    /// Most messages per group commit.
    pub max_commit_messages: Option<usize>,
    /// Most payload bytes per group commit.
    pub max_commit_bytes: Option<usize>,
}

/// `[limits]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest message payload.
    pub max_payload_bytes: Option<usize>,
    /// Largest batch publish body.
    pub max_batch_bytes: Option<usize>,
    /// Most messages per batch publish.
    pub max_batch_messages: Option<usize>,
    /// Most concurrent client connections.
    pub max_connections: Option<usize>,
    /// Most connections from other cluster nodes.
    pub max_peer_connections: Option<usize>,
    /// Most connections from one IP address.
    pub max_connections_per_ip: Option<usize>,
    /// Most concurrent requests (HTTP/2 streams) on one client connection.
    pub max_streams_per_connection: Option<u32>,
    /// Most groups a join without admin rights may bring the node to.
    pub max_groups_without_admin: Option<usize>,
    /// Bytes of batch bodies read, parsed and stored at once.
    pub max_batch_bytes_in_flight: Option<usize>,
    /// Budget of response output handed to connections and not taken yet.
    pub max_pending_output_bytes: Option<usize>,
    /// Time a client connection may leave its output untaken, in seconds.
    pub output_stall_timeout_secs: Option<u64>,
    /// Requests per second one address may make (no limit when unset).
    pub requests_per_sec_per_ip: Option<u32>,
    /// Requests one address may make at once before the rate applies.
    pub request_burst_per_ip: Option<u32>,
    /// Time to send request headers, in seconds.
    pub header_read_timeout_secs: Option<u64>,
    /// Time a client connection may stay open with no request, in seconds.
    pub idle_timeout_secs: Option<u64>,
    /// Time to send a request body, in seconds.
    pub body_read_timeout_secs: Option<u64>,
    /// Interval of HTTP/2 keep-alive pings, in seconds.
    pub h2_keepalive_interval_secs: Option<u64>,
    /// Time to answer an HTTP/2 keep-alive ping, in seconds.
    pub h2_keepalive_timeout_secs: Option<u64>,
    /// Most request headers.
    pub max_request_headers: Option<usize>,
    /// Most messages per pull.
    pub max_pull_limit: Option<usize>,
    /// Longest pull wait, in seconds.
    pub max_pull_wait_secs: Option<u64>,
    /// Most bytes of request line and headers.
    pub max_header_bytes: Option<usize>,
    /// Time in-flight requests get to finish at shutdown, in seconds.
    pub shutdown_grace_secs: Option<u64>,
}

/// `[sse]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SseSection {
    /// Heartbeat comment interval on idle streams, in seconds.
    pub heartbeat_secs: Option<u64>,
    /// `retry:` hint, in milliseconds.
    pub retry_ms: Option<u64>,
    /// Most messages one subscription read (one SSE chunk) holds.
    pub read_limit: Option<usize>,
    /// Most payload bytes one subscription read holds.
    pub read_max_bytes: Option<usize>,
}

/// `[publish]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishSection {
    /// Idempotency-Key window, in seconds.
    pub idempotency_window_secs: Option<u64>,
}

/// `[retention]` and its `[[retention.topics]]` rules.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// Default maximum age, in seconds.
    pub max_age_secs: Option<u64>,
    /// Default maximum bytes per stream.
    pub max_bytes: Option<u64>,
    /// Period of the background pass, in milliseconds.
    pub interval_ms: Option<u64>,
    /// Per-topic rules; the first match wins.
    #[serde(default)]
    pub topics: Vec<RetentionTopic>,
}

/// One `[[retention.topics]]` rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionTopic {
    /// Topic pattern.
    pub pattern: String,
    /// Maximum age, in seconds.
    pub max_age_secs: Option<u64>,
    /// Maximum bytes per stream.
    pub max_bytes: Option<u64>,
}
