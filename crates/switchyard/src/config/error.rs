//! Why a configuration was refused.

use std::net::SocketAddr;
use std::path::PathBuf;

/// A configuration that cannot be used. Nothing was opened or bound when
/// this is returned: the node refuses to start (exit status 2), and only a
/// changed file, flag or environment variable helps.
///
/// The message names the key (as the config file spells it), where its
/// value came from, and the problem; an underlying I/O or TOML error is the
/// [`source`] and not part of the message, so print the chain (`{:#}` with
/// `anyhow`).
///
/// [`source`]: std::error::Error::source
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has an unknown or mistyped key.
    #[error("config file {}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error, with line and column.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// An environment variable's value does not fit its key.
    #[error("{var} (key {key}): {detail}")]
    Env {
        /// The variable.
        var: String,
        /// The key it sets.
        key: String,
        /// What is wrong with the value, and the type expected.
        detail: String,
    },
    /// A `SWITCHYARD_*` variable that looks like a configuration key (it
    /// starts with a section's name, or is one letter away from a key's
    /// variable) but names none: most likely a typo, which would otherwise
    /// leave the setting at its default unnoticed.
    #[error("{var} names no configuration key{hint}")]
    UnknownEnv {
        /// The variable.
        var: String,
        /// ` (did you mean ...?)`, or empty.
        hint: String,
    },
    /// A variable names an array of tables, which only the file can hold.
    #[error("{var}: {key} is an array of tables, which only the config file can set{hint}")]
    EnvFileOnly {
        /// The variable.
        var: String,
        /// The key, such as `plugin` or `retention.topics`.
        key: String,
        /// ` (did you mean ...?)`, or empty.
        hint: String,
    },
    /// A key's variable and its older name are both set, to different values.
    #[error("{canonical} and {alias} (its older name) are both set, to different values: keep one")]
    EnvTwice {
        /// The variable named by the rule.
        canonical: String,
        /// The older name.
        alias: String,
    },
    /// A `SWITCHYARD_*` variable whose value is not UTF-8.
    #[error("{0}: the value is not UTF-8")]
    EnvNotUnicode(String),
    /// A refusal of a value that came from somewhere other than the defaults.
    #[error("{error} (from {origin})")]
    Sourced {
        /// Where the refused value came from: a file, a variable or a flag.
        origin: String,
        /// The refusal.
        error: Box<ConfigError>,
    },
    /// A value is below its lower bound (a number, or another key).
    #[error("{key} must be at least {bound}")]
    TooSmall {
        /// The key.
        key: &'static str,
        /// The bound: a number or the key it must not be below.
        bound: &'static str,
    },
    /// `log_format` is neither `pretty` nor `json`.
    #[error("log_format {0:?}: expected pretty or json")]
    LogFormat(String),
    /// A value that does not parse (an fsync mode, a topic pattern, an origin).
    #[error("{key}: {detail}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// A `[[plugin]]` binding has a bad name, hook, topic or error policy.
    #[error("[[plugin]] {name:?}: {detail}")]
    Plugin {
        /// The binding name.
        name: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Two `[[plugin]]` bindings have the same name.
    #[error("[[plugin]] {0:?} is bound twice")]
    PluginBoundTwice(String),
    /// Seeds to join were given to a node without a gossip address.
    #[error(
        "seeds to join were given but no gossip address: set --gossip-listen or cluster.gossip_listen"
    )]
    SeedsWithoutGossip,
    /// A cluster node without a cluster key.
    #[error(
        "a cluster needs a key: set SWITCHYARD_CLUSTER_KEY (or cluster.key in the config file)"
    )]
    NoClusterKey,
    /// The cluster settings do not hold together (name, key length, timings).
    #[error("{0}")]
    Cluster(String),
    /// `cluster.http_advertise` is not a `host:port`.
    #[error("cluster.http_advertise {value:?}: expected host:port (no scheme, no path)")]
    HttpAdvertise {
        /// The configured value.
        value: String,
    },
    /// The node listens on a wildcard address and has no other address to
    /// announce to its peers.
    #[error(
        "the node listens on {listen}, which peers cannot connect to: set http_advertise under \
         [cluster] to the host:port peers reach this node at"
    )]
    NoHttpAddress {
        /// The HTTP listen address.
        listen: SocketAddr,
    },
    /// The node would listen beyond loopback with anonymous clients allowed
    /// to publish and administer.
    #[error(
        "the node listens on {listen}, beyond loopback, and without keys every client may \
         publish and administer: configure [auth] (hs256_secret_file or public_key_files; \
         see docs/security.md) or, on a trusted network, pass --allow-anonymous \
         (auth.allow_anonymous = true)"
    )]
    AnonymousBeyondLoopback {
        /// The HTTP listen address.
        listen: SocketAddr,
    },
    /// The TLS certificate, key or CA file cannot be used.
    #[error("[tls]: {0}")]
    Tls(String),
    /// Gossip listens on a wildcard address and no `gossip_advertise` is set.
    #[error(
        "gossip listens on {listen}, which other nodes cannot reach; set cluster.gossip_advertise"
    )]
    NoGossipAddress {
        /// The gossip listen address.
        listen: SocketAddr,
    },
}

impl ConfigError {
    /// The key this refusal is about, when it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::TooSmall { key, .. } | ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::LogFormat(_) => Some("log_format"),
            ConfigError::HttpAdvertise { .. } => Some("cluster.http_advertise"),
            ConfigError::NoGossipAddress { .. } => Some("cluster.gossip_listen"),
            _ => None,
        }
    }
}
