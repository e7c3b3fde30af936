//! The node configuration: a TOML file, then environment variables, then
//! flags (flags win). [`NodeConfig::build`] validates everything, the
//! addresses the node will announce included, before any socket opens; a
//! refused configuration is a [`ConfigError`] naming the key.
//! `docs/configuration.md` documents every option.

mod error;
mod file;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use switchyard_cluster::ClusterConfig;
use switchyard_gateway::{Anonymous, AuthConfig, GatewayConfig, VerifyKey};
use switchyard_model::TopicPattern;
use switchyard_router::{
    BindingSpec, ConfiguredBinding, ErrorPolicy, FsyncMode, Limits, RetentionPolicy, RetentionRule,
    RouterConfig,
};

pub use error::ConfigError;
pub use file::{
    AuthSection, ClusterSection, CorsSection, FileConfig, HttpSection, LimitsSection,
    PluginBindingSection, PluginsSection, PublishSection, RetentionSection, RetentionTopic,
    SseSection, StorageSection, TlsSection,
};

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./switchyard-data";

/// How the node writes its log to standard error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<LogFormat, ConfigError> {
        match s {
            "pretty" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            other => Err(ConfigError::LogFormat(other.to_owned())),
        }
    }
}

/// Values given on the command line or in the environment; they override the file.
#[derive(Debug, Default)]
pub struct Overrides {
    /// `--listen` / `SWITCHYARD_LISTEN`.
    pub listen: Option<SocketAddr>,
    /// `--data-dir` / `SWITCHYARD_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--fsync` / `SWITCHYARD_FSYNC`.
    pub fsync: Option<FsyncMode>,
    /// `--log-format` / `SWITCHYARD_LOG_FORMAT`.
    pub log_format: Option<LogFormat>,
    /// `--gossip-listen` / `SWITCHYARD_GOSSIP_LISTEN`.
    pub gossip_listen: Option<SocketAddr>,
    /// `--join` / `SWITCHYARD_JOIN` (replaces the file's seeds when given).
    pub join: Vec<String>,
    /// `--cluster-name` / `SWITCHYARD_CLUSTER_NAME`.
    pub cluster_name: Option<String>,
    /// `--replication-factor` / `SWITCHYARD_REPLICATION_FACTOR`.
    pub replication_factor: Option<usize>,
    /// `SWITCHYARD_CLUSTER_KEY` (an environment variable only, so that the
    /// secret never shows in a process list).
    pub cluster_key: Option<String>,
    /// `--allowed-host` / `SWITCHYARD_ALLOWED_HOSTS` (replaces the file's
    /// `http.allowed_hosts` when given).
    pub allowed_hosts: Vec<String>,
    /// `--allow-anonymous` / `SWITCHYARD_ALLOW_ANONYMOUS`.
    pub allow_anonymous: bool,
    /// `--tls-cert` / `SWITCHYARD_TLS_CERT`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key` / `SWITCHYARD_TLS_KEY`.
    pub tls_key: Option<PathBuf>,
}

/// Everything a node needs, validated.
#[derive(Debug)]
pub struct NodeConfig {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Log output format.
    pub log_format: LogFormat,
    /// Engine and store settings.
    pub router: RouterConfig,
    /// HTTP settings.
    pub gateway: GatewayConfig,
    /// Cluster settings, when the node joins a cluster.
    pub cluster: Option<ClusterConfig>,
    /// The HTTP address announced to the cluster (default: the listen address).
    pub http_advertise: Option<String>,
}

/// `v`, refused when it is zero.
fn positive(name: &'static str, v: Option<u64>) -> Result<Option<u64>, ConfigError> {
    match v {
        Some(0) => Err(ConfigError::NotPositive(name)),
        other => Ok(other),
    }
}

impl NodeConfig {
    /// Reads the file (if any) and applies the overrides.
    pub fn load(file: Option<&Path>, over: Overrides) -> Result<NodeConfig, ConfigError> {
        let mut fc: FileConfig = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: p.to_owned(),
                    source: Box::new(source),
                })?
            }
            None => FileConfig::default(),
        };
        if let Some(dir) = file.and_then(Path::parent) {
            for b in &mut fc.plugin {
                if b.file.is_relative() {
                    b.file = dir.join(&b.file);
                }
            }
            let a = &mut fc.auth;
            let t = &mut fc.tls;
            for f in a
                .hs256_secret_file
                .iter_mut()
                .chain(&mut a.public_key_files)
                .chain(&mut t.cert_file)
                .chain(&mut t.key_file)
                .chain(&mut t.ca_file)
            {
                if f.is_relative() {
                    *f = dir.join(&*f);
                }
            }
        }
        NodeConfig::build(fc, over)
    }

    /// Builds and validates a config from a parsed file and overrides.
    pub fn build(fc: FileConfig, over: Overrides) -> Result<NodeConfig, ConfigError> {
        let listen = over
            .listen
            .or(fc.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default"));
        let data_dir = over
            .data_dir
            .or(fc.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let log_format = match (over.log_format, fc.log_format) {
            (Some(f), _) => f,
            (None, Some(text)) => text.parse()?,
            (None, None) => LogFormat::default(),
        };
        let mut router = RouterConfig::new(data_dir);
        let s = &mut router.store;
        s.fsync = match (over.fsync, fc.storage.fsync) {
            (Some(m), _) => m,
            (None, Some(text)) => text.parse().map_err(|detail| ConfigError::Invalid {
                key: "storage.fsync",
                detail,
            })?,
            (None, None) => FsyncMode::Always,
        };
        if let Some(ms) = positive("storage.fsync_interval_ms", fc.storage.fsync_interval_ms)? {
            s.fsync_interval = Duration::from_millis(ms);
        }
        if let Some(v) = fc.storage.tail_cache_bytes {
            s.tail_cache_bytes = v;
        }
        if let Some(v) = fc.storage.cache_bytes {
            s.cache_bytes = v;
        }
        if let Some(v) = positive(
            "storage.write_queue",
            fc.storage.write_queue.map(|v| v as u64),
        )? {
            s.write_queue = v as usize;
        }
        if let Some(v) = positive(
            "storage.max_commit_bytes",
            fc.storage.max_commit_bytes.map(|v| v as u64),
        )? {
            s.max_commit_bytes = v as usize;
        }
        if let Some(v) = positive(
            "storage.max_commit_messages",
            fc.storage.max_commit_messages.map(|v| v as u64),
        )? {
            s.max_commit_messages = v as usize;
        }
        if let Some(secs) = positive(
            "publish.idempotency_window_secs",
            fc.publish.idempotency_window_secs,
        )? {
            s.idempotency_window = Duration::from_secs(secs);
        }
        let r = &fc.retention;
        s.retention_default = RetentionPolicy {
            max_age: positive("retention.max_age_secs", r.max_age_secs)?.map(Duration::from_secs),
            max_bytes: positive("retention.max_bytes", r.max_bytes)?,
        };
        if let Some(ms) = positive("retention.interval_ms", r.interval_ms)? {
            s.retention_interval = Duration::from_millis(ms);
        }
        for rule in &r.topics {
            let pattern =
                rule.pattern
                    .parse::<TopicPattern>()
                    .map_err(|e| ConfigError::Invalid {
                        key: "retention.topics",
                        detail: e.to_string(),
                    })?;
            s.retention_rules.push(RetentionRule {
                pattern,
                policy: RetentionPolicy {
                    max_age: positive("retention.topics.max_age_secs", rule.max_age_secs)?
                        .map(Duration::from_secs),
                    max_bytes: positive("retention.topics.max_bytes", rule.max_bytes)?,
                },
            });
        }
        let l = &fc.limits;
        if let Some(v) = positive(
            "limits.max_payload_bytes",
            l.max_payload_bytes.map(|v| v as u64),
        )? {
            router.max_payload = v as usize;
        }
        let mut gateway = GatewayConfig::default();
        if let Some(v) = positive(
            "limits.max_batch_bytes",
            l.max_batch_bytes.map(|v| v as u64),
        )? {
            gateway.max_batch_bytes = v as usize;
        }
        if let Some(v) = positive(
            "limits.max_batch_messages",
            l.max_batch_messages.map(|v| v as u64),
        )? {
            gateway.max_batch_messages = v as usize;
        }
        if let Some(v) = positive(
            "limits.max_connections",
            l.max_connections.map(|v| v as u64),
        )? {
            gateway.max_connections = v as usize;
        }
        if let Some(v) = positive(
            "limits.max_peer_connections",
            l.max_peer_connections.map(|v| v as u64),
        )? {
            gateway.max_peer_connections = v as usize;
        }
        if let Some(v) = positive(
            "limits.max_connections_per_ip",
            l.max_connections_per_ip.map(|v| v as u64),
        )? {
            gateway.max_connections_per_ip = v as usize;
        }
        if let Some(v) = positive(
            "limits.max_batch_bytes_in_flight",
            l.max_batch_bytes_in_flight.map(|v| v as u64),
        )? {
            gateway.max_batch_bytes_in_flight = v as usize;
        }
        if let Some(v) = positive(
            "limits.max_pending_output_bytes",
            l.max_pending_output_bytes.map(|v| v as u64),
        )? {
            gateway.max_pending_output_bytes = v as usize;
        }
        if let Some(v) = positive(
            "limits.output_stall_timeout_secs",
            l.output_stall_timeout_secs,
        )? {
            gateway.output_stall_timeout = Duration::from_secs(v);
        }
        if let Some(v) = l.max_groups_without_admin {
            if v > switchyard_router::MAX_GROUPS {
                return Err(ConfigError::Invalid {
                    key: "limits.max_groups_without_admin",
                    detail: format!(
                        "{v} is above the node's limit of {} groups",
                        switchyard_router::MAX_GROUPS
                    ),
                });
            }
            gateway.max_groups_without_admin = v;
        }
        if let Some(v) = positive(
            "limits.max_streams_per_connection",
            l.max_streams_per_connection.map(u64::from),
        )? {
            gateway.max_streams_per_connection = v as u32;
        }
        if let Some(v) = positive(
            "limits.requests_per_sec_per_ip",
            l.requests_per_sec_per_ip.map(u64::from),
        )? {
            gateway.requests_per_sec_per_ip = Some(v as u32);
        }
        if let Some(v) = positive(
            "limits.request_burst_per_ip",
            l.request_burst_per_ip.map(u64::from),
        )? {
            if l.requests_per_sec_per_ip.is_none() {
                return Err(ConfigError::Invalid {
                    key: "limits.request_burst_per_ip",
                    detail: "it needs limits.requests_per_sec_per_ip".into(),
                });
            }
            gateway.request_burst_per_ip = Some(v as u32);
        }
        if let Some(v) = positive(
            "limits.header_read_timeout_secs",
            l.header_read_timeout_secs,
        )? {
            gateway.header_read_timeout = Duration::from_secs(v);
        }
        if let Some(v) = positive("limits.idle_timeout_secs", l.idle_timeout_secs)? {
            gateway.idle_timeout = Duration::from_secs(v);
        }
        if let Some(v) = positive("limits.body_read_timeout_secs", l.body_read_timeout_secs)? {
            gateway.body_read_timeout = Duration::from_secs(v);
        }
        if let Some(v) = positive(
            "limits.h2_keepalive_interval_secs",
            l.h2_keepalive_interval_secs,
        )? {
            gateway.h2_keepalive_interval = Duration::from_secs(v);
        }
        if let Some(v) = positive(
            "limits.h2_keepalive_timeout_secs",
            l.h2_keepalive_timeout_secs,
        )? {
            gateway.h2_keepalive_timeout = Duration::from_secs(v);
        }
        if let Some(v) = positive(
            "limits.max_request_headers",
            l.max_request_headers.map(|v| v as u64),
        )? {
            gateway.max_request_headers = v as usize;
        }
        if let Some(v) = positive("limits.max_pull_limit", l.max_pull_limit.map(|v| v as u64))? {
            gateway.max_pull_limit = v as usize;
        }
        if let Some(v) = l.max_pull_wait_secs {
            gateway.max_pull_wait = Duration::from_secs(v);
        }
        if let Some(v) = l.max_header_bytes {
            // hyper's connection buffer cannot be smaller than 8 KiB.
            if v < 8192 {
                return Err(ConfigError::TooSmall {
                    key: "limits.max_header_bytes",
                    bound: "8192",
                });
            }
            gateway.max_header_bytes = v;
        }
        if let Some(v) = l.shutdown_grace_secs {
            gateway.shutdown_grace = Duration::from_secs(v);
        }
        if let Some(v) = positive("sse.read_limit", fc.sse.read_limit.map(|v| v as u64))? {
            router.read_limit = v as usize;
        }
        if let Some(v) = positive(
            "sse.read_max_bytes",
            fc.sse.read_max_bytes.map(|v| v as u64),
        )? {
            router.read_max_bytes = v as usize;
        }
        if let Some(v) = positive("sse.heartbeat_secs", fc.sse.heartbeat_secs)? {
            gateway.heartbeat = Duration::from_secs(v);
        }
        if let Some(v) = fc.sse.retry_ms {
            gateway.retry = Duration::from_millis(v);
        }
        for origin in &fc.cors.allow_origins {
            let ok = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin.ends_with('/')
                    && http::HeaderValue::from_str(origin).is_ok());
            if !ok {
                return Err(ConfigError::Invalid {
                    key: "cors.allow_origins",
                    detail: format!(
                        "{origin:?} is not an origin such as https://app.example.com (no path, no trailing slash) or \"*\""
                    ),
                });
            }
        }
        gateway.cors_origins = fc.cors.allow_origins;
        let allowed_hosts = if over.allowed_hosts.is_empty() {
            fc.http.allowed_hosts
        } else {
            Some(over.allowed_hosts)
        };
        for host in allowed_hosts.iter().flatten() {
            switchyard_gateway::check_allowed_host(host).map_err(|detail| {
                ConfigError::Invalid {
                    key: "http.allowed_hosts",
                    detail,
                }
            })?;
        }
        gateway.allowed_hosts = allowed_hosts;
        let allow_anonymous = over.allow_anonymous || fc.auth.allow_anonymous == Some(true);
        gateway.auth = auth(fc.auth)?;
        plugins(&mut router, &mut gateway, fc.plugins, fc.plugin)?;
        if gateway.max_batch_bytes < router.max_payload {
            return Err(ConfigError::TooSmall {
                key: "limits.max_batch_bytes",
                bound: "limits.max_payload_bytes",
            });
        }
        let http_advertise = fc.cluster.http_advertise.clone();
        if let Some(h) = &http_advertise {
            check_host_port(h)?;
        }
        if let Some(a) = &fc.cluster.acks {
            router.acks = a.parse().map_err(|e: switchyard_router::RouterError| {
                ConfigError::Cluster(format!("cluster.acks: {e}"))
            })?;
        }
        if let Some(v) = positive("cluster.ack_timeout_ms", fc.cluster.ack_timeout_ms)? {
            router.ack_timeout = Duration::from_millis(v);
        }
        let mut cluster = cluster(
            fc.cluster,
            over.gossip_listen,
            over.join,
            over.cluster_name,
            over.cluster_key,
            over.replication_factor,
        )?;
        let peer_ca = tls(&mut gateway, fc.tls, over.tls_cert, over.tls_key)?;
        if let (Some(cc), Some(_)) = (&mut cluster, &gateway.tls) {
            let peer = switchyard_cluster::transport::peer_tls_config(peer_ca)
                .map_err(|e| ConfigError::Tls(format!("ca_file: {e}")))?;
            cc.peer_tls = Some(std::sync::Arc::new(peer));
        }
        let config = NodeConfig {
            listen,
            log_format,
            router,
            gateway,
            cluster,
            http_advertise,
        };
        // The addresses the node announces depend only on the configured
        // ones (a port 0 is filled in later): a node that would have none to
        // announce is refused here, before it binds anything.
        config.advertised_http(listen)?;
        if let Some(cc) = &config.cluster {
            let gossip = cc.gossip_advertise.unwrap_or(cc.gossip_listen);
            if gossip.ip().is_unspecified() {
                return Err(ConfigError::NoGossipAddress {
                    listen: cc.gossip_listen,
                });
            }
        }
        // Open to anyone who can reach the address: fine on loopback,
        // a decision to make explicitly anywhere else.
        let auth = &config.gateway.auth;
        let open = auth.keys.is_empty() || auth.anonymous == Anonymous::All;
        if open && !listen.ip().is_loopback() && !allow_anonymous {
            return Err(ConfigError::AnonymousBeyondLoopback { listen });
        }
        Ok(config)
    }

    /// The HTTP address this node announces to its cluster when its
    /// listener is bound to `bound`: `None` outside a cluster;
    /// `cluster.http_advertise` when set; else `bound`, or, when `bound` is
    /// a wildcard address, the host of the gossip address
    /// (`gossip_advertise`, else `gossip_listen`) with `bound`'s port.
    /// [`NodeConfig::build`] has checked this with the listen address, so
    /// it fails only for a listener bound elsewhere.
    pub fn advertised_http(&self, bound: SocketAddr) -> Result<Option<String>, ConfigError> {
        let Some(cc) = &self.cluster else {
            return Ok(None);
        };
        if let Some(h) = &self.http_advertise {
            return Ok(Some(h.clone()));
        }
        if !bound.ip().is_unspecified() {
            return Ok(Some(bound.to_string()));
        }
        match cc.gossip_advertise.unwrap_or(cc.gossip_listen).ip() {
            ip if !ip.is_unspecified() => Ok(Some(SocketAddr::new(ip, bound.port()).to_string())),
            _ => Err(ConfigError::NoHttpAddress { listen: bound }),
        }
    }
}

/// The `[auth]` section: reads the key files and settles the anonymous
/// access (none with keys, all without, unless set).
fn auth(a: AuthSection) -> Result<AuthConfig, ConfigError> {
    let mut config = AuthConfig::default();
    let read = |key: &'static str, path: &Path| {
        std::fs::read(path).map_err(|e| ConfigError::Invalid {
            key,
            detail: format!("cannot read {}: {e}", path.display()),
        })
    };
    if let Some(path) = &a.hs256_secret_file {
        let bytes = read("auth.hs256_secret_file", path)?;
        let secret = bytes.trim_ascii();
        let key = VerifyKey::secret(secret, path.display().to_string()).map_err(|detail| {
            ConfigError::Invalid {
                key: "auth.hs256_secret_file",
                detail,
            }
        })?;
        config.keys.push(key);
    }
    for path in &a.public_key_files {
        let bytes = read("auth.public_key_files", path)?;
        let key = VerifyKey::public_pem(&bytes, path.display().to_string()).map_err(|detail| {
            ConfigError::Invalid {
                key: "auth.public_key_files",
                detail,
            }
        })?;
        config.keys.push(key);
    }
    config.anonymous = match a.anonymous.as_deref() {
        Some(text) => text.parse().map_err(|detail| ConfigError::Invalid {
            key: "auth.anonymous",
            detail,
        })?,
        None if config.keys.is_empty() => Anonymous::All,
        None => Anonymous::None,
    };
    if config.keys.is_empty() && config.anonymous == Anonymous::None {
        return Err(ConfigError::Invalid {
            key: "auth.anonymous",
            detail: "\"none\" needs keys (hs256_secret_file or public_key_files): \
                     without them no request could ever be allowed"
                .into(),
        });
    }
    if let Some(v) = a.leeway_secs {
        config.leeway = Duration::from_secs(v);
    }
    if let Some(v) = a.require_exp {
        config.require_exp = v;
    }
    config.audience = a.audience;
    config.issuer = a.issuer;
    if let Some(v) = positive("auth.token_cache", a.token_cache.map(|v| v as u64))? {
        config.cache_entries = v as usize;
    }
    Ok(config)
}

/// The `[tls]` section with its overrides: loads the listener's
/// certificate into `gateway`, and returns the CA certificates peers'
/// certificates must chain to, when given.
fn tls(
    gateway: &mut GatewayConfig,
    t: TlsSection,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<Vec<rustls_pki_types::CertificateDer<'static>>>, ConfigError> {
    let poll_interval = positive("tls.poll_interval_secs", t.poll_interval_secs)?.map_or(
        switchyard_gateway::tls::DEFAULT_TLS_POLL_INTERVAL,
        Duration::from_secs,
    );
    let (cert, key) = match (cert.or(t.cert_file), key.or(t.key_file)) {
        (Some(c), Some(k)) => (c, k),
        (None, None) => {
            if t.ca_file.is_some() {
                return Err(ConfigError::Tls(
                    "ca_file is for TLS between nodes: it needs cert_file and key_file".into(),
                ));
            }
            return Ok(None);
        }
        _ => {
            return Err(ConfigError::Tls(
                "cert_file (--tls-cert) and key_file (--tls-key) go together".into(),
            ));
        }
    };
    let settings = switchyard_gateway::tls::TlsSettings {
        cert_file: cert,
        key_file: key,
        poll_interval,
    };
    gateway.tls =
        Some(switchyard_gateway::tls::ServerCert::load(settings).map_err(ConfigError::Tls)?);
    t.ca_file
        .map(|path| {
            switchyard_gateway::tls::read_certs(&path)
                .map_err(|e| ConfigError::Tls(format!("ca_file: {e}")))
        })
        .transpose()
}

/// Refuses an announced HTTP address that is not `host:port`: peers put
/// `http://` (or `https://`) in front of it.
fn check_host_port(value: &str) -> Result<(), ConfigError> {
    let ok = value
        .parse::<http::uri::Authority>()
        .is_ok_and(|a| a.port_u16().is_some() && !a.host().is_empty() && !value.contains('@'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::HttpAdvertise {
            value: value.to_owned(),
        })
    }
}

/// The `[cluster]` section with its overrides; `None` without a gossip address.
fn cluster(
    c: ClusterSection,
    gossip_listen: Option<SocketAddr>,
    join: Vec<String>,
    name: Option<String>,
    key: Option<String>,
    replication_factor: Option<usize>,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let Some(listen) = gossip_listen.or(c.gossip_listen) else {
        if !join.is_empty() || !c.seeds.is_empty() {
            return Err(ConfigError::SeedsWithoutGossip);
        }
        return Ok(None);
    };
    let key = key.or(c.key).ok_or(ConfigError::NoClusterKey)?;
    let mut cc = ClusterConfig::new(listen, key.into_bytes());
    if let Some(n) = name.or(c.name) {
        cc.name = n;
    }
    cc.gossip_advertise = c.gossip_advertise;
    cc.seeds = if join.is_empty() { c.seeds } else { join };
    let ms = Duration::from_millis;
    if let Some(v) = positive("cluster.probe_period_ms", c.probe_period_ms)? {
        cc.probe_period = ms(v);
    }
    if let Some(v) = positive("cluster.probe_rtt_ms", c.probe_rtt_ms)? {
        cc.probe_rtt = ms(v);
    }
    if let Some(v) = positive("cluster.suspect_timeout_ms", c.suspect_timeout_ms)? {
        cc.suspect_timeout = ms(v);
    }
    if let Some(v) = positive("cluster.gossip_interval_ms", c.gossip_interval_ms)? {
        cc.gossip_interval = ms(v);
    }
    if let Some(v) = c.gossip_fanout {
        cc.gossip_fanout = v;
    }
    if let Some(v) = replication_factor.or(c.replication_factor) {
        cc.replication_factor = v;
    }
    cc.validate().map_err(ConfigError::Cluster)?;
    Ok(Some(cc))
}

/// The `[plugins]` section and the `[[plugin]]` bindings.
fn plugins(
    router: &mut RouterConfig,
    gateway: &mut GatewayConfig,
    section: PluginsSection,
    bindings: Vec<PluginBindingSection>,
) -> Result<(), ConfigError> {
    let p = &mut router.plugins;
    if section.compile_cache == Some(false) {
        p.engine.cache_dir = None;
    } else {
        p.engine.cache_dir = Some(router.store.path.join("plugin-cache"));
    }
    if let Some(v) = section.pooled_instances {
        p.engine.pooled_instances = v;
    }
    if let Some(v) = positive(
        "plugins.max_memory_mb",
        section.max_memory_mb.map(|v| v as u64),
    )? {
        p.engine.max_memory_bytes = (v as usize) << 20;
    }
    if let Some(v) = positive(
        "plugins.max_upload_bytes",
        section.max_upload_bytes.map(|v| v as u64),
    )? {
        gateway.max_plugin_bytes = v as usize;
    }
    let e = &mut p.engine;
    if let Some(v) = positive("plugins.max_fuel", section.max_fuel)? {
        e.max_fuel = v;
    }
    if let Some(v) = positive("plugins.memory_budget_bytes", section.memory_budget_bytes)? {
        e.memory_budget_bytes = v;
    }
    if let Some(v) = positive("plugins.compile_timeout_ms", section.compile_timeout_ms)? {
        e.compile_timeout = std::time::Duration::from_millis(v);
    }
    if let Some(v) = positive("plugins.kv_max_bytes", section.kv_max_bytes)? {
        e.kv_max_bytes = v;
    }
    if let Some(v) = positive(
        "plugins.log_lines_per_sec",
        section.log_lines_per_sec.map(u64::from),
    )? {
        e.log_lines_per_sec = v.min(u64::from(u32::MAX)) as u32;
    }
    if let Some(v) = positive("plugins.log_bytes_per_sec", section.log_bytes_per_sec)? {
        e.log_bytes_per_sec = v;
    }
    if let Some(v) = positive("plugins.threads", section.threads.map(|v| v as u64))? {
        e.threads = v.min(256) as usize;
    }
    let d = &mut p.limits;
    d.max_output_bytes = router.max_payload;
    if let Some(v) = positive("plugins.fuel", section.fuel)? {
        d.fuel = v;
    }
    if let Some(v) = positive("plugins.memory_mb", section.memory_mb.map(|v| v as u64))? {
        d.memory_bytes = (v as usize) << 20;
    }
    if let Some(v) = positive(
        "plugins.max_instances",
        section.max_instances.map(|v| v as u64),
    )? {
        d.max_instances = v as usize;
    }
    if let Some(v) = positive(
        "plugins.max_host_calls",
        section.max_host_calls.map(u64::from),
    )? {
        d.max_host_calls = v as u32;
    }
    let defaults = *d;
    for b in bindings {
        let invalid = |detail: &dyn std::fmt::Display| ConfigError::Plugin {
            name: b.name.clone(),
            detail: detail.to_string(),
        };
        switchyard_router::validate_name(&b.name).map_err(|e| invalid(&e))?;
        let topics = if b.topics.is_empty() {
            vec![">".to_owned()]
        } else {
            b.topics
        };
        let settings = BindingSpec {
            name: b.name.clone(),
            hook: b.hook.parse().map_err(|e| invalid(&e))?,
            topics: topics
                .iter()
                .map(|t| t.parse::<TopicPattern>())
                .collect::<Result<_, _>>()
                .map_err(|e| invalid(&e))?,
            config: b.config,
            on_error: b
                .on_error
                .as_deref()
                .map_or(Ok(ErrorPolicy::default()), str::parse)
                .map_err(|e| invalid(&e))?,
            limits: Limits {
                fuel: positive("plugin.fuel", b.fuel)?.unwrap_or(defaults.fuel),
                memory_bytes: positive("plugin.memory_mb", b.memory_mb.map(|v| v as u64))?
                    .map_or(defaults.memory_bytes, |v| (v as usize) << 20),
                max_instances: positive("plugin.max_instances", b.max_instances.map(|v| v as u64))?
                    .map_or(defaults.max_instances, |v| v as usize),
                max_host_calls: positive("plugin.max_host_calls", b.max_host_calls.map(u64::from))?
                    .map_or(defaults.max_host_calls, |v| v as u32),
                ..defaults
            },
        };
        if p.bindings.iter().any(|c| c.settings.name == b.name) {
            return Err(ConfigError::PluginBoundTwice(b.name));
        }
        p.bindings.push(ConfiguredBinding {
            file: b.file,
            settings,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
