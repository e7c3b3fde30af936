//! The configuration's shape: every section and key as the TOML file spells
//! it, each with its default. The environment and the flags fill the same
//! shape (see [`super::sources`]), `switchyard config show` prints it, and
//! `NodeConfig::build` turns it into validated settings.
//!
//! A key that must be above zero has a `NonZero` type, so that a zero is
//! refused where it is read, naming the key and its source. A key whose
//! default depends on other settings, or that has none, is an `Option`.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_cluster::ClusterConfig;
use switchyard_gateway::{AuthConfig, GatewayConfig};
use switchyard_router::RouterConfig;

/// A positive default of another crate's settings.
fn nz64(v: u64) -> NonZeroU64 {
    NonZeroU64::new(v).expect("a positive default")
}

/// A positive default of another crate's settings.
fn nzu(v: usize) -> NonZeroUsize {
    NonZeroUsize::new(v).expect("a positive default")
}

/// A positive default of another crate's settings.
fn nz32(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).expect("a positive default")
}

/// A positive default duration in milliseconds.
fn ms(d: Duration) -> NonZeroU64 {
    nz64(d.as_millis() as u64)
}

/// A positive default duration in seconds.
fn secs(d: Duration) -> NonZeroU64 {
    nz64(d.as_secs())
}

/// The whole configuration. Every section and key is optional in the file;
/// `FileConfig::default()` is the configuration of a node given nothing.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// `pretty` or `json`.
    pub log_format: String,
    /// The log filter (`tracing` `EnvFilter` directives).
    pub log: String,
    /// Storage settings.
    pub storage: StorageSection,
    /// Request and connection limits.
    pub limits: LimitsSection,
    /// Server-Sent Events settings.
    pub sse: SseSection,
    /// Publish settings.
    pub publish: PublishSection,
    /// Retention settings.
    pub retention: RetentionSection,
    /// Cross-origin settings for browser clients.
    pub cors: CorsSection,
    /// HTTP settings: the host names the node answers to.
    pub http: HttpSection,
    /// Plugin engine settings and defaults.
    pub plugins: PluginsSection,
    /// Plugin bindings (`[[plugin]]`), loaded at every start.
    pub plugin: Vec<PluginBindingSection>,
    /// Cluster membership (gossip).
    pub cluster: ClusterSection,
    /// Authorization of the client API (JWT keys, anonymous access).
    pub auth: AuthSection,
    /// TLS on the HTTP listener and between nodes.
    pub tls: TlsSection,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            listen: super::DEFAULT_LISTEN.parse().expect("valid default"),
            data_dir: PathBuf::from(super::DEFAULT_DATA_DIR),
            log_format: "pretty".into(),
            log: crate::logging::DEFAULT_FILTER.into(),
            storage: StorageSection::default(),
            limits: LimitsSection::default(),
            sse: SseSection::default(),
            publish: PublishSection::default(),
            retention: RetentionSection::default(),
            cors: CorsSection::default(),
            http: HttpSection::default(),
            plugins: PluginsSection::default(),
            plugin: Vec::new(),
            cluster: ClusterSection::default(),
            auth: AuthSection::default(),
            tls: TlsSection::default(),
        }
    }
}

/// `[storage]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    /// `always`, `interval` or `never`.
    pub fsync: String,
    /// Sync period for `interval`, in milliseconds.
    pub fsync_interval_ms: NonZeroU64,
    /// Size of the in-memory tail of recent messages (0: none).
    pub tail_cache_bytes: usize,
    /// fjall block cache size.
    pub cache_bytes: u64,
    /// Writer queue capacity (requests).
    pub write_queue: NonZeroUsize,
    /// Most messages per group commit.
    pub max_commit_messages: NonZeroUsize,
    /// Most payload bytes per group commit.
    pub max_commit_bytes: NonZeroUsize,
    /// Percent of the writer's time large batches get while single
    /// publishes come (1-100).
    pub bulk_share_percent: u8,
}

impl Default for StorageSection {
    fn default() -> Self {
        let s = RouterConfig::new("").store;
        StorageSection {
            fsync: s.fsync.to_string(),
            fsync_interval_ms: ms(s.fsync_interval),
            tail_cache_bytes: s.tail_cache_bytes,
            cache_bytes: s.cache_bytes,
            write_queue: nzu(s.write_queue),
            max_commit_messages: nzu(s.max_commit_messages),
            max_commit_bytes: nzu(s.max_commit_bytes),
            bulk_share_percent: s.bulk_share_percent,
        }
    }
}

/// `[limits]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest message payload.
    pub max_payload_bytes: NonZeroUsize,
    /// Largest batch publish body.
    pub max_batch_bytes: NonZeroUsize,
    /// Most messages per batch publish.
    pub max_batch_messages: NonZeroUsize,
    /// Most concurrent client connections.
    pub max_connections: NonZeroUsize,
    /// Most connections from other cluster nodes.
    pub max_peer_connections: NonZeroUsize,
    /// Most connections from one IP address.
    pub max_connections_per_ip: NonZeroUsize,
    /// Bytes of batch bodies read, parsed and stored at once.
    pub max_batch_bytes_in_flight: NonZeroUsize,
    /// Budget of response output handed to connections and not taken yet.
    pub max_pending_output_bytes: NonZeroUsize,
    /// Time a client connection may leave its output untaken, in seconds.
    pub output_stall_timeout_secs: NonZeroU64,
    /// Most groups a join without admin rights may bring the node to.
    pub max_groups_without_admin: usize,
    /// Most concurrent requests (HTTP/2 streams) on one client connection.
    pub max_streams_per_connection: NonZeroU32,
    /// Requests per second one address may make (no limit when unset).
    pub requests_per_sec_per_ip: Option<NonZeroU32>,
    /// Requests one address may make at once before the rate applies
    /// (default: twice the rate).
    pub request_burst_per_ip: Option<NonZeroU32>,
    /// Time to send request headers, in seconds.
    pub header_read_timeout_secs: NonZeroU64,
    /// Time a client connection may stay open with no request, in seconds.
    pub idle_timeout_secs: NonZeroU64,
    /// Time to send a request body, in seconds.
    pub body_read_timeout_secs: NonZeroU64,
    /// Interval of HTTP/2 keep-alive pings, in seconds.
    pub h2_keepalive_interval_secs: NonZeroU64,
    /// Time to answer an HTTP/2 keep-alive ping, in seconds.
    pub h2_keepalive_timeout_secs: NonZeroU64,
    /// Most request headers.
    pub max_request_headers: NonZeroUsize,
    /// Most messages per pull.
    pub max_pull_limit: NonZeroUsize,
    /// Longest pull wait, in seconds (0: no long-polling).
    pub max_pull_wait_secs: u64,
    /// Most bytes of request line and headers.
    pub max_header_bytes: usize,
    /// Time in-flight requests get to finish at shutdown, in seconds.
    pub shutdown_grace_secs: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let g = GatewayConfig::default();
        LimitsSection {
            max_payload_bytes: nzu(RouterConfig::new("").max_payload),
            max_batch_bytes: nzu(g.max_batch_bytes),
            max_batch_messages: nzu(g.max_batch_messages),
            max_connections: nzu(g.max_connections),
            max_peer_connections: nzu(g.max_peer_connections),
            max_connections_per_ip: nzu(g.max_connections_per_ip),
            max_batch_bytes_in_flight: nzu(g.max_batch_bytes_in_flight),
            max_pending_output_bytes: nzu(g.max_pending_output_bytes),
            output_stall_timeout_secs: secs(g.output_stall_timeout),
            max_groups_without_admin: g.max_groups_without_admin,
            max_streams_per_connection: nz32(g.max_streams_per_connection),
            requests_per_sec_per_ip: None,
            request_burst_per_ip: None,
            header_read_timeout_secs: secs(g.header_read_timeout),
            idle_timeout_secs: secs(g.idle_timeout),
            body_read_timeout_secs: secs(g.body_read_timeout),
            h2_keepalive_interval_secs: secs(g.h2_keepalive_interval),
            h2_keepalive_timeout_secs: secs(g.h2_keepalive_timeout),
            max_request_headers: nzu(g.max_request_headers),
            max_pull_limit: nzu(g.max_pull_limit),
            max_pull_wait_secs: g.max_pull_wait.as_secs(),
            max_header_bytes: g.max_header_bytes,
            shutdown_grace_secs: g.shutdown_grace.as_secs(),
        }
    }
}

/// `[sse]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SseSection {
    /// Heartbeat comment interval on idle streams, in seconds.
    pub heartbeat_secs: NonZeroU64,
    /// `retry:` hint, in milliseconds.
    pub retry_ms: u64,
    /// Most messages one subscription read (one SSE chunk) holds.
    pub read_limit: NonZeroUsize,
    /// Most payload bytes one subscription read holds.
    pub read_max_bytes: NonZeroUsize,
}

impl Default for SseSection {
    fn default() -> Self {
        let g = GatewayConfig::default();
        let r = RouterConfig::new("");
        SseSection {
            heartbeat_secs: secs(g.heartbeat),
            retry_ms: g.retry.as_millis() as u64,
            read_limit: nzu(r.read_limit),
            read_max_bytes: nzu(r.read_max_bytes),
        }
    }
}

/// `[publish]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublishSection {
    /// Idempotency-Key window, in seconds.
    pub idempotency_window_secs: NonZeroU64,
}

impl Default for PublishSection {
    fn default() -> Self {
        PublishSection {
            idempotency_window_secs: secs(RouterConfig::new("").store.idempotency_window),
        }
    }
}

/// `[retention]` and its `[[retention.topics]]` rules.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSection {
    /// Default maximum age, in seconds.
    pub max_age_secs: Option<NonZeroU64>,
    /// Default maximum bytes per stream.
    pub max_bytes: Option<NonZeroU64>,
    /// Period of the background pass, in milliseconds.
    pub interval_ms: NonZeroU64,
    /// Per-topic rules; the first match wins.
    pub topics: Vec<RetentionTopic>,
}

impl Default for RetentionSection {
    fn default() -> Self {
        RetentionSection {
            max_age_secs: None,
            max_bytes: None,
            interval_ms: ms(RouterConfig::new("").store.retention_interval),
            topics: Vec::new(),
        }
    }
}

/// One `[[retention.topics]]` rule.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionTopic {
    /// Topic pattern.
    pub pattern: String,
    /// Maximum age, in seconds.
    pub max_age_secs: Option<NonZeroU64>,
    /// Maximum bytes per stream.
    pub max_bytes: Option<NonZeroU64>,
}

/// `[cors]`
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsSection {
    /// Origins allowed to call the API from a browser (`"*"` for any).
    pub allow_origins: Vec<String>,
}

/// `[http]`
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Host names (`Host` / `:authority`) the node answers to: `name`,
    /// `name:port`, `*.suffix`, or `"*"` for any. Default: the loopback
    /// names on a loopback listen address, any host otherwise.
    pub allowed_hosts: Option<Vec<String>>,
}

/// `[plugins]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsSection {
    /// Keep compiled plugins in `<data_dir>/plugin-cache`.
    pub compile_cache: bool,
    /// Instances the pooling allocator has room for (0: allocate on demand).
    pub pooled_instances: u32,
    /// Largest memory cap a binding may ask for, in MiB.
    pub max_memory_mb: NonZeroUsize,
    /// Largest component upload, in bytes.
    pub max_upload_bytes: NonZeroUsize,
    /// Default fuel per hook call.
    pub fuel: NonZeroU64,
    /// Default memory cap per instance, in MiB.
    pub memory_mb: NonZeroUsize,
    /// Default most instances per binding.
    pub max_instances: NonZeroUsize,
    /// Default most host calls per hook call.
    pub max_host_calls: NonZeroU32,
    /// The most fuel per call a binding may ask for.
    pub max_fuel: NonZeroU64,
    /// Memory all plugin instances may take together, in bytes.
    pub memory_budget_bytes: NonZeroU64,
    /// Threads running plugin calls (default: one per core, at most 8).
    pub threads: Option<NonZeroUsize>,
    /// Longest a component may take to compile, in ms.
    pub compile_timeout_ms: NonZeroU64,
    /// Most key-value bytes per binding.
    pub kv_max_bytes: NonZeroU64,
    /// Log lines a second per binding.
    pub log_lines_per_sec: NonZeroU32,
    /// Log bytes a second per binding.
    pub log_bytes_per_sec: NonZeroU64,
}

impl Default for PluginsSection {
    fn default() -> Self {
        let p = RouterConfig::new("").plugins;
        let (e, d) = (p.engine, p.limits);
        PluginsSection {
            compile_cache: true,
            pooled_instances: e.pooled_instances,
            max_memory_mb: nzu(e.max_memory_bytes >> 20),
            max_upload_bytes: nzu(GatewayConfig::default().max_plugin_bytes),
            fuel: nz64(d.fuel),
            memory_mb: nzu(d.memory_bytes >> 20),
            max_instances: nzu(d.max_instances),
            max_host_calls: nz32(d.max_host_calls),
            max_fuel: nz64(e.max_fuel),
            memory_budget_bytes: nz64(e.memory_budget_bytes),
            threads: NonZeroUsize::new(e.threads),
            compile_timeout_ms: ms(e.compile_timeout),
            kv_max_bytes: nz64(e.kv_max_bytes),
            log_lines_per_sec: nz32(e.log_lines_per_sec),
            log_bytes_per_sec: nz64(e.log_bytes_per_sec),
        }
    }
}

/// One `[[plugin]]` binding.
#[derive(Clone, Debug, Deserialize, Serialize)]
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
    pub fuel: Option<NonZeroU64>,
    /// Memory cap per instance, in MiB.
    pub memory_mb: Option<NonZeroUsize>,
    /// Most instances.
    pub max_instances: Option<NonZeroUsize>,
    /// Most host calls per hook call.
    pub max_host_calls: Option<NonZeroU32>,
}

/// `[cluster]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// Cluster name.
    pub name: String,
    /// Cluster key (a secret: `switchyard config show` does not print it).
    pub key: Option<String>,
    /// UDP gossip listen address; the node joins a cluster only when set.
    pub gossip_listen: Option<SocketAddr>,
    /// Gossip address other nodes use (default: the listen address).
    pub gossip_advertise: Option<SocketAddr>,
    /// HTTP address other nodes and clients use (default: the HTTP listen address).
    pub http_advertise: Option<String>,
    /// Gossip addresses (`host:port`) to join through.
    pub seeds: Vec<String>,
    /// Time between probes, in ms.
    pub probe_period_ms: NonZeroU64,
    /// Time to answer a probe, in ms.
    pub probe_rtt_ms: NonZeroU64,
    /// Time a suspect has to refute, in ms.
    pub suspect_timeout_ms: NonZeroU64,
    /// Time between gossip rounds, in ms.
    pub gossip_interval_ms: NonZeroU64,
    /// Members per gossip round.
    pub gossip_fanout: usize,
    /// Nodes holding each origin's whole log, the origin included.
    pub replication_factor: usize,
    /// Copies a publish waits for by default: local, quorum or all.
    pub acks: String,
    /// Longest a publish waits for its copies, in ms.
    pub ack_timeout_ms: NonZeroU64,
}

impl Default for ClusterSection {
    fn default() -> Self {
        let c = ClusterConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), Vec::new());
        let r = RouterConfig::new("");
        ClusterSection {
            name: c.name,
            key: None,
            gossip_listen: None,
            gossip_advertise: None,
            http_advertise: None,
            seeds: Vec::new(),
            probe_period_ms: ms(c.probe_period),
            probe_rtt_ms: ms(c.probe_rtt),
            suspect_timeout_ms: ms(c.suspect_timeout),
            gossip_interval_ms: ms(c.gossip_interval),
            gossip_fanout: c.gossip_fanout,
            replication_factor: c.replication_factor,
            acks: r.acks.to_string(),
            ack_timeout_ms: ms(r.ack_timeout),
        }
    }
}

/// `[auth]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// A file holding the HS256 shared secret (at least 32 bytes; the
    /// whitespace around it is ignored).
    pub hs256_secret_file: Option<PathBuf>,
    /// PEM public keys (RSA, EC P-256/P-384, Ed25519); any may verify.
    pub public_key_files: Vec<PathBuf>,
    /// What a request without a token may do: none, subscribe or all
    /// (default: none with keys, all without).
    pub anonymous: Option<String>,
    /// Start on a non-loopback address although anonymous clients may
    /// publish and administer (no keys, or `anonymous = "all"`).
    pub allow_anonymous: bool,
    /// Allowance for clock skew on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// Refuse tokens without `exp`.
    pub require_exp: bool,
    /// When set, tokens must carry this `aud`.
    pub audience: Option<String>,
    /// When set, tokens must carry this `iss`.
    pub issuer: Option<String>,
    /// Most verified tokens cached.
    pub token_cache: NonZeroUsize,
}

impl Default for AuthSection {
    fn default() -> Self {
        let a = AuthConfig::default();
        AuthSection {
            hs256_secret_file: None,
            public_key_files: Vec::new(),
            anonymous: None,
            allow_anonymous: false,
            leeway_secs: a.leeway.as_secs(),
            require_exp: a.require_exp,
            audience: None,
            issuer: None,
            token_cache: nzu(a.cache_entries),
        }
    }
}

/// `[tls]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
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
    pub poll_interval_secs: NonZeroU64,
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection {
            cert_file: None,
            key_file: None,
            ca_file: None,
            poll_interval_secs: secs(switchyard_gateway::tls::DEFAULT_TLS_POLL_INTERVAL),
        }
    }
}
