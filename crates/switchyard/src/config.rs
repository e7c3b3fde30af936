//! The node configuration: built-in defaults, a TOML file, `SWITCHYARD_*`
//! environment variables and flags, in rising precedence ([`sources`]).
//! [`NodeConfig::build`] validates everything, the addresses the node will
//! announce included, before any socket opens; a refused configuration is
//! a [`ConfigError`] naming the key and where its value came from.
//! `docs/configuration.md` documents every key.

mod error;
mod file;
pub mod sources;

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64};
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
pub use sources::{Layered, Origin};

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

impl LogFormat {
    /// The name the configuration spells it with.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Pretty => "pretty",
            LogFormat::Json => "json",
        }
    }
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

/// Values given on the command line (or by the code that embeds a node);
/// they override the environment and the file. [`sources::FLAGS`] lists
/// the flag of each key.
#[derive(Debug, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--fsync`.
    pub fsync: Option<FsyncMode>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--gossip-listen`.
    pub gossip_listen: Option<SocketAddr>,
    /// `--join` (replaces `cluster.seeds` when given).
    pub join: Vec<String>,
    /// `--cluster-name`.
    pub cluster_name: Option<String>,
    /// `--replication-factor`.
    pub replication_factor: Option<usize>,
    /// The cluster key. No flag sets it, so that the secret never shows in
    /// a process list: the binary reads `SWITCHYARD_CLUSTER_KEY` through
    /// the environment layer; this is for code that embeds a node.
    pub cluster_key: Option<String>,
    /// `--allowed-host` (replaces `http.allowed_hosts` when given).
    pub allowed_hosts: Vec<String>,
    /// `--allow-anonymous`.
    pub allow_anonymous: bool,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
}

/// Everything a node needs, validated.
#[derive(Debug)]
pub struct NodeConfig {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Log output format.
    pub log_format: LogFormat,
    /// The log filter (`tracing` `EnvFilter` directives), checked.
    pub log_filter: String,
    /// Engine and store settings.
    pub router: RouterConfig,
    /// HTTP settings.
    pub gateway: GatewayConfig,
    /// Cluster settings, when the node joins a cluster.
    pub cluster: Option<ClusterConfig>,
    /// The HTTP address announced to the cluster (default: the listen address).
    pub http_advertise: Option<String>,
}

/// A duration of `v` seconds.
fn secs(v: NonZeroU64) -> Duration {
    Duration::from_secs(v.get())
}

/// A duration of `v` milliseconds.
fn ms(v: NonZeroU64) -> Duration {
    Duration::from_millis(v.get())
}

/// A retention policy from its optional limits.
fn policy(max_age_secs: Option<NonZeroU64>, max_bytes: Option<NonZeroU64>) -> RetentionPolicy {
    RetentionPolicy {
        max_age: max_age_secs.map(secs),
        max_bytes: max_bytes.map(NonZeroU64::get),
    }
}

impl NodeConfig {
    /// Layers the file (if any), the process's `SWITCHYARD_*` variables and
    /// the overrides, and validates the result.
    pub fn load(file: Option<&Path>, over: Overrides) -> Result<NodeConfig, ConfigError> {
        let layered = Layered::gather(file, std::env::vars_os(), over)?;
        NodeConfig::from_layered(&layered)
    }

    /// Validates a layered configuration; the refusal of a key's value
    /// names where the value came from.
    pub fn from_layered(layered: &Layered) -> Result<NodeConfig, ConfigError> {
        NodeConfig::validate(layered.config.clone()).map_err(|error| {
            match error.key().map(|key| layered.origin(key)) {
                None | Some(Origin::Default) => error,
                Some(origin) => ConfigError::Sourced {
                    origin: origin.to_string(),
                    error: Box::new(error),
                },
            }
        })
    }

    /// Applies `over` to `fc` and validates the result. The environment is
    /// not read: this is for code that embeds a node, and for tests.
    pub fn build(fc: FileConfig, over: Overrides) -> Result<NodeConfig, ConfigError> {
        NodeConfig::validate(over.apply(fc)?)
    }

    /// Turns the configuration into the components' settings, refusing
    /// values out of range and settings that do not hold together.
    fn validate(fc: FileConfig) -> Result<NodeConfig, ConfigError> {
        let listen = fc.listen;
        let log_format = fc.log_format.parse()?;
        let log_filter = crate::logging::check_filter(&fc.log)
            .map_err(|detail| ConfigError::Invalid { key: "log", detail })?;
        let mut router = RouterConfig::new(fc.data_dir);
        let st = &fc.storage;
        let s = &mut router.store;
        s.fsync = st.fsync.parse().map_err(|detail| ConfigError::Invalid {
            key: "storage.fsync",
            detail,
        })?;
        s.fsync_interval = ms(st.fsync_interval_ms);
        s.tail_cache_bytes = st.tail_cache_bytes;
        s.cache_bytes = st.cache_bytes;
        s.write_queue = st.write_queue.get();
        s.max_commit_bytes = st.max_commit_bytes.get();
        s.max_commit_messages = st.max_commit_messages.get();
        if !(1..=100).contains(&st.bulk_share_percent) {
            return Err(ConfigError::Invalid {
                key: "storage.bulk_share_percent",
                detail: format!(
                    "{} is not a percentage from 1 to 100",
                    st.bulk_share_percent
                ),
            });
        }
        s.bulk_share_percent = st.bulk_share_percent;
        s.idempotency_window = secs(fc.publish.idempotency_window_secs);
        let r = &fc.retention;
        s.retention_default = policy(r.max_age_secs, r.max_bytes);
        s.retention_interval = ms(r.interval_ms);
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
                policy: policy(rule.max_age_secs, rule.max_bytes),
            });
        }
        let l = &fc.limits;
        router.max_payload = l.max_payload_bytes.get();
        router.read_limit = fc.sse.read_limit.get();
        router.read_max_bytes = fc.sse.read_max_bytes.get();
        let mut gateway = GatewayConfig::default();
        let g = &mut gateway;
        g.max_batch_bytes = l.max_batch_bytes.get();
        g.max_batch_messages = l.max_batch_messages.get();
        g.max_connections = l.max_connections.get();
        g.max_peer_connections = l.max_peer_connections.get();
        g.max_connections_per_ip = l.max_connections_per_ip.get();
        g.max_batch_bytes_in_flight = l.max_batch_bytes_in_flight.get();
        g.max_pending_output_bytes = l.max_pending_output_bytes.get();
        g.output_stall_timeout = secs(l.output_stall_timeout_secs);
        if l.max_groups_without_admin > switchyard_router::MAX_GROUPS {
            return Err(ConfigError::Invalid {
                key: "limits.max_groups_without_admin",
                detail: format!(
                    "{} is above the node's limit of {} groups",
                    l.max_groups_without_admin,
                    switchyard_router::MAX_GROUPS
                ),
            });
        }
        g.max_groups_without_admin = l.max_groups_without_admin;
        g.max_streams_per_connection = l.max_streams_per_connection.get();
        if l.request_burst_per_ip.is_some() && l.requests_per_sec_per_ip.is_none() {
            return Err(ConfigError::Invalid {
                key: "limits.request_burst_per_ip",
                detail: "it needs limits.requests_per_sec_per_ip".into(),
            });
        }
        g.requests_per_sec_per_ip = l.requests_per_sec_per_ip.map(NonZeroU32::get);
        g.request_burst_per_ip = l.request_burst_per_ip.map(NonZeroU32::get);
        g.header_read_timeout = secs(l.header_read_timeout_secs);
        g.idle_timeout = secs(l.idle_timeout_secs);
        g.body_read_timeout = secs(l.body_read_timeout_secs);
        g.h2_keepalive_interval = secs(l.h2_keepalive_interval_secs);
        g.h2_keepalive_timeout = secs(l.h2_keepalive_timeout_secs);
        g.max_request_headers = l.max_request_headers.get();
        g.max_pull_limit = l.max_pull_limit.get();
        g.max_pull_wait = Duration::from_secs(l.max_pull_wait_secs);
        // hyper's connection buffer cannot be smaller than 8 KiB.
        if l.max_header_bytes < 8192 {
            return Err(ConfigError::TooSmall {
                key: "limits.max_header_bytes",
                bound: "8192",
            });
        }
        g.max_header_bytes = l.max_header_bytes;
        g.shutdown_grace = Duration::from_secs(l.shutdown_grace_secs);
        g.heartbeat = secs(fc.sse.heartbeat_secs);
        g.retry = Duration::from_millis(fc.sse.retry_ms);
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
        g.cors_origins = fc.cors.allow_origins;
        for host in fc.http.allowed_hosts.iter().flatten() {
            switchyard_gateway::check_allowed_host(host).map_err(|detail| {
                ConfigError::Invalid {
                    key: "http.allowed_hosts",
                    detail,
                }
            })?;
        }
        g.allowed_hosts = fc.http.allowed_hosts;
        let allow_anonymous = fc.auth.allow_anonymous;
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
        router.acks = fc
            .cluster
            .acks
            .parse()
            .map_err(|e: switchyard_router::RouterError| ConfigError::Invalid {
                key: "cluster.acks",
                detail: e.to_string(),
            })?;
        router.ack_timeout = ms(fc.cluster.ack_timeout_ms);
        let mut cluster = cluster(fc.cluster)?;
        let peer_ca = tls(&mut gateway, fc.tls)?;
        if let (Some(cc), Some(_)) = (&mut cluster, &gateway.tls) {
            let peer = switchyard_cluster::transport::peer_tls_config(peer_ca)
                .map_err(|e| ConfigError::Tls(format!("ca_file: {e}")))?;
            cc.peer_tls = Some(std::sync::Arc::new(peer));
        }
        let config = NodeConfig {
            listen,
            log_format,
            log_filter,
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
    config.leeway = Duration::from_secs(a.leeway_secs);
    config.require_exp = a.require_exp;
    config.audience = a.audience;
    config.issuer = a.issuer;
    config.cache_entries = a.token_cache.get();
    Ok(config)
}

/// The `[tls]` section: loads the listener's certificate into `gateway`,
/// and returns the CA certificates peers' certificates must chain to, when
/// given.
fn tls(
    gateway: &mut GatewayConfig,
    t: TlsSection,
) -> Result<Option<Vec<rustls_pki_types::CertificateDer<'static>>>, ConfigError> {
    let (cert, key) = match (t.cert_file, t.key_file) {
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
        poll_interval: secs(t.poll_interval_secs),
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

/// The `[cluster]` section; `None` without a gossip address.
fn cluster(c: ClusterSection) -> Result<Option<ClusterConfig>, ConfigError> {
    let Some(listen) = c.gossip_listen else {
        if !c.seeds.is_empty() {
            return Err(ConfigError::SeedsWithoutGossip);
        }
        return Ok(None);
    };
    let key = c.key.ok_or(ConfigError::NoClusterKey)?;
    let mut cc = ClusterConfig::new(listen, key.into_bytes());
    cc.name = c.name;
    cc.gossip_advertise = c.gossip_advertise;
    cc.seeds = c.seeds;
    cc.probe_period = ms(c.probe_period_ms);
    cc.probe_rtt = ms(c.probe_rtt_ms);
    cc.suspect_timeout = ms(c.suspect_timeout_ms);
    cc.gossip_interval = ms(c.gossip_interval_ms);
    cc.gossip_fanout = c.gossip_fanout;
    cc.replication_factor = c.replication_factor;
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
    p.engine.cache_dir = section
        .compile_cache
        .then(|| router.store.path.join("plugin-cache"));
    gateway.max_plugin_bytes = section.max_upload_bytes.get();
    let e = &mut p.engine;
    e.pooled_instances = section.pooled_instances;
    e.max_memory_bytes = section.max_memory_mb.get() << 20;
    e.max_fuel = section.max_fuel.get();
    e.memory_budget_bytes = section.memory_budget_bytes.get();
    e.compile_timeout = ms(section.compile_timeout_ms);
    e.kv_max_bytes = section.kv_max_bytes.get();
    e.log_lines_per_sec = section.log_lines_per_sec.get();
    e.log_bytes_per_sec = section.log_bytes_per_sec.get();
    if let Some(v) = section.threads {
        e.threads = v.get().min(256);
    }
    let d = &mut p.limits;
    d.max_output_bytes = router.max_payload;
    d.fuel = section.fuel.get();
    d.memory_bytes = section.memory_mb.get() << 20;
    d.max_instances = section.max_instances.get();
    d.max_host_calls = section.max_host_calls.get();
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
                fuel: b.fuel.map_or(defaults.fuel, NonZeroU64::get),
                memory_bytes: b.memory_mb.map_or(defaults.memory_bytes, |v| v.get() << 20),
                max_instances: b.max_instances.map_or(defaults.max_instances, |v| v.get()),
                max_host_calls: b
                    .max_host_calls
                    .map_or(defaults.max_host_calls, |v| v.get()),
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
