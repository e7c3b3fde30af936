//! Why a configuration was refused.

use std::net::SocketAddr;
use std::path::PathBuf;

/// A configuration that cannot be used. Nothing was opened or bound when
/// this is returned: the node refuses to start, and only a changed file,
/// flag or environment variable helps.
///
/// The message names the key (as the config file spells it) and the
/// problem; an underlying I/O or TOML error is the [`source`] and not part
/// of the message, so print the chain (`{:#}` with `anyhow`).
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
    /// A number that must be above zero is zero.
    #[error("{0} must be greater than 0")]
    NotPositive(&'static str),
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
