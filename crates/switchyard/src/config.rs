//! The node configuration: a TOML file, then environment variables, then
//! flags (flags win). Everything is validated before any socket opens.
//! `docs/configuration.md` documents every option.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use switchyard_cluster::ClusterConfig;
use switchyard_gateway::GatewayConfig;
use switchyard_model::TopicPattern;
use switchyard_router::{
    BindingSpec, ConfiguredBinding, ErrorPolicy, FsyncMode, Limits, RetentionPolicy, RetentionRule,
    RouterConfig,
};

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./switchyard-data";

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
    /// Plugin engine settings and defaults.
    #[serde(default)]
    pub plugins: PluginsSection,
    /// Plugin bindings (`[[plugin]]`), loaded at every start.
    #[serde(default)]
    pub plugin: Vec<PluginBindingSection>,
    /// Cluster membership (gossip).
    #[serde(default)]
    pub cluster: ClusterSection,
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
    /// Time a suspect has to refute, in ms (default 1200).
    pub suspect_timeout_ms: Option<u64>,
    /// Time between gossip rounds, in ms (default 100).
    pub gossip_interval_ms: Option<u64>,
    /// Members per gossip round (default 3).
    pub gossip_fanout: Option<usize>,
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
    /// Most concurrent connections.
    pub max_connections: Option<usize>,
    /// Time to send request headers, in seconds.
    pub header_read_timeout_secs: Option<u64>,
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
    pub log_format: Option<String>,
    /// `--gossip-listen` / `SWITCHYARD_GOSSIP_LISTEN`.
    pub gossip_listen: Option<SocketAddr>,
    /// `--join` / `SWITCHYARD_JOIN` (replaces the file's seeds when given).
    pub join: Vec<String>,
    /// `--cluster-name` / `SWITCHYARD_CLUSTER_NAME`.
    pub cluster_name: Option<String>,
    /// `SWITCHYARD_CLUSTER_KEY` (an environment variable only, so that the
    /// secret never shows in a process list).
    pub cluster_key: Option<String>,
}

/// Everything a node needs, validated.
#[derive(Debug)]
pub struct NodeConfig {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Log output format.
    pub log_json: bool,
    /// Engine and store settings.
    pub router: RouterConfig,
    /// HTTP settings.
    pub gateway: GatewayConfig,
    /// Cluster settings, when the node joins a cluster.
    pub cluster: Option<ClusterConfig>,
    /// The HTTP address announced to the cluster (default: the listen address).
    pub http_advertise: Option<String>,
}

fn positive(name: &str, v: Option<u64>) -> Result<Option<u64>, String> {
    match v {
        Some(0) => Err(format!("{name} must be greater than 0")),
        other => Ok(other),
    }
}

impl NodeConfig {
    /// Reads the file (if any) and applies the overrides.
    pub fn load(file: Option<&Path>, over: Overrides) -> Result<NodeConfig, String> {
        let mut fc: FileConfig = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read config file {}: {e}", p.display()))?;
                toml::from_str(&text).map_err(|e| format!("config file {}: {e}", p.display()))?
            }
            None => FileConfig::default(),
        };
        if let Some(dir) = file.and_then(Path::parent) {
            for b in &mut fc.plugin {
                if b.file.is_relative() {
                    b.file = dir.join(&b.file);
                }
            }
        }
        NodeConfig::build(fc, over)
    }

    /// Builds and validates a config from a parsed file and overrides.
    pub fn build(fc: FileConfig, over: Overrides) -> Result<NodeConfig, String> {
        let listen = over
            .listen
            .or(fc.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default"));
        let data_dir = over
            .data_dir
            .or(fc.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let log_format = over
            .log_format
            .or(fc.log_format)
            .unwrap_or_else(|| "pretty".into());
        let log_json = match log_format.as_str() {
            "pretty" => false,
            "json" => true,
            other => return Err(format!("log_format {other:?}: expected pretty or json")),
        };
        let mut router = RouterConfig::new(data_dir);
        let s = &mut router.store;
        s.fsync = match (over.fsync, fc.storage.fsync) {
            (Some(m), _) => m,
            (None, Some(text)) => text.parse()?,
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
            let pattern: TopicPattern = rule
                .pattern
                .parse()
                .map_err(|e| format!("retention.topics: {e}"))?;
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
            "limits.header_read_timeout_secs",
            l.header_read_timeout_secs,
        )? {
            gateway.header_read_timeout = Duration::from_secs(v);
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
                return Err("limits.max_header_bytes must be at least 8192".into());
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
                return Err(format!(
                    "cors.allow_origins: {origin:?} is not an origin such as https://app.example.com (no path, no trailing slash) or \"*\""
                ));
            }
        }
        gateway.cors_origins = fc.cors.allow_origins;
        plugins(&mut router, &mut gateway, fc.plugins, fc.plugin)?;
        if gateway.max_batch_bytes < router.max_payload {
            return Err("limits.max_batch_bytes must be at least limits.max_payload_bytes".into());
        }
        let http_advertise = fc.cluster.http_advertise.clone();
        let cluster = cluster(
            fc.cluster,
            over.gossip_listen,
            over.join,
            over.cluster_name,
            over.cluster_key,
        )?;
        Ok(NodeConfig {
            listen,
            log_json,
            router,
            gateway,
            cluster,
            http_advertise,
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
) -> Result<Option<ClusterConfig>, String> {
    let Some(listen) = gossip_listen.or(c.gossip_listen) else {
        if !join.is_empty() || !c.seeds.is_empty() {
            return Err("seeds to join were given but no gossip address: set --gossip-listen or cluster.gossip_listen".into());
        }
        return Ok(None);
    };
    let key = key.or(c.key).ok_or(
        "a cluster needs a key: set SWITCHYARD_CLUSTER_KEY (or cluster.key in the config file)",
    )?;
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
    cc.validate()?;
    Ok(Some(cc))
}

/// The `[plugins]` section and the `[[plugin]]` bindings.
fn plugins(
    router: &mut RouterConfig,
    gateway: &mut GatewayConfig,
    section: PluginsSection,
    bindings: Vec<PluginBindingSection>,
) -> Result<(), String> {
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
        let what = format!("[[plugin]] {:?}", b.name);
        switchyard_router::validate_name(&b.name).map_err(|e| format!("{what}: {e}"))?;
        let topics = if b.topics.is_empty() {
            vec![">".to_owned()]
        } else {
            b.topics
        };
        let settings = BindingSpec {
            name: b.name.clone(),
            hook: b.hook.parse().map_err(|e| format!("{what}: {e}"))?,
            topics: topics
                .iter()
                .map(|t| t.parse::<TopicPattern>())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{what}: {e}"))?,
            config: b.config,
            on_error: b
                .on_error
                .as_deref()
                .map_or(Ok(ErrorPolicy::default()), str::parse)
                .map_err(|e| format!("{what}: {e}"))?,
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
            return Err(format!("{what} is bound twice"));
        }
        p.bindings.push(ConfiguredBinding {
            file: b.file,
            settings,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_precedence() {
        let c = NodeConfig::build(FileConfig::default(), Overrides::default()).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.router.store.fsync, FsyncMode::Always);
        let fc: FileConfig = toml::from_str(
            "listen = \"127.0.0.1:9000\"\n[storage]\nfsync = \"never\"\n[[retention.topics]]\npattern = \"logs.>\"\nmax_age_secs = 60\n",
        )
        .unwrap();
        let over = Overrides {
            fsync: Some(FsyncMode::Interval),
            ..Default::default()
        };
        let c = NodeConfig::build(fc, over).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.router.store.fsync, FsyncMode::Interval);
        assert_eq!(c.router.store.retention_rules.len(), 1);
    }

    #[test]
    fn refuses_bad_values() {
        assert!(toml::from_str::<FileConfig>("nonsense = 1").is_err());
        let fc: FileConfig = toml::from_str("[storage]\nfsync = \"sometimes\"").unwrap();
        assert!(
            NodeConfig::build(fc, Overrides::default())
                .unwrap_err()
                .contains("sometimes")
        );
        let fc: FileConfig = toml::from_str("[retention]\nmax_bytes = 0").unwrap();
        assert!(NodeConfig::build(fc, Overrides::default()).is_err());
        let fc: FileConfig = toml::from_str("[[retention.topics]]\npattern = \"a..b\"").unwrap();
        assert!(NodeConfig::build(fc, Overrides::default()).is_err());
    }
}
