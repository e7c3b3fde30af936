//! Cluster settings with defaults suited to a LAN.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Shortest cluster key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 16;
/// Largest gossip packet sent or accepted, in bytes (below a typical MTU).
pub const MAX_PACKET: usize = 1400;
/// Largest replication factor.
pub const MAX_REPLICATION_FACTOR: usize = 7;

/// How a node joins and watches its cluster.
///
/// The timing defaults detect a dead node on every peer within 4.5 s (a
/// probe period of 400 ms, 150 ms to answer a probe, indirect probes until
/// the period ends, then 2.5 s of suspicion on each member before it
/// declares the node down; about 3.3 s in all). A node is suspected at the
/// earliest about 0.4 s after it stops answering, so one paused for 2 s
/// (or starved by a saturated CPU for as long) still has about 0.9 s to
/// refute after it resumes: it is suspected at most, never declared down.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Cluster name: nodes of another name are refused (default `switchyard`).
    pub name: String,
    /// The shared secret that seals every gossip packet (at least 16 bytes).
    pub key: Vec<u8>,
    /// UDP address gossip listens on.
    pub gossip_listen: SocketAddr,
    /// Address other nodes reach this node's gossip at (default: the listen
    /// address, which must then not be a wildcard).
    pub gossip_advertise: Option<SocketAddr>,
    /// Gossip addresses (`host:port`) of nodes to join through.
    pub seeds: Vec<String>,
    /// Time between probes of one member.
    pub probe_period: Duration,
    /// Time a probed member has to answer before indirect probes start.
    pub probe_rtt: Duration,
    /// Time a suspected member has to refute before it is declared down.
    pub suspect_timeout: Duration,
    /// Time between gossip rounds.
    pub gossip_interval: Duration,
    /// Members each gossip round reaches.
    pub gossip_fanout: usize,
    /// Time between announcements to the seeds while this node knows no
    /// live member (joining, or cut off).
    pub rejoin_interval: Duration,
    /// Nodes that hold each origin's whole log, the origin included: each
    /// node copies the logs of the origins it is a replica of (chosen by
    /// rendezvous hashing over the live members). 1 copies nothing beyond
    /// what subscribers pull.
    pub replication_factor: usize,
    /// TLS for requests to peers (`https://`); `None`: cleartext HTTP/2.
    /// Every node of a cluster must agree: a node dials its peers the way
    /// it serves (see [`crate::transport::peer_tls_config`]).
    pub peer_tls: Option<Arc<rustls::ClientConfig>>,
}

/// Default nodes that hold each origin's whole log, the origin included.
pub const DEFAULT_REPLICATION_FACTOR: usize = 3;

impl ClusterConfig {
    /// Defaults, listening on `gossip_listen`, with `key`.
    pub fn new(gossip_listen: SocketAddr, key: Vec<u8>) -> Self {
        ClusterConfig {
            name: "switchyard".into(),
            key,
            gossip_listen,
            gossip_advertise: None,
            seeds: Vec::new(),
            probe_period: Duration::from_millis(400),
            probe_rtt: Duration::from_millis(150),
            suspect_timeout: Duration::from_millis(2500),
            gossip_interval: Duration::from_millis(100),
            gossip_fanout: 3,
            rejoin_interval: Duration::from_secs(1),
            replication_factor: DEFAULT_REPLICATION_FACTOR,
            peer_tls: None,
        }
    }

    /// Checks the settings; the message names the problem.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(format!(
                "cluster name {:?}: use 1 to 64 characters of A-Z, a-z, 0-9, '-', '_', '.'",
                self.name
            ));
        }
        if self.key.len() < MIN_KEY_LEN {
            return Err(format!(
                "the cluster key must be at least {MIN_KEY_LEN} bytes (set SWITCHYARD_CLUSTER_KEY or cluster.key)"
            ));
        }
        let ms = |d: Duration| d.as_millis();
        if ms(self.probe_rtt) == 0 || self.probe_rtt >= self.probe_period {
            return Err(format!(
                "probe_rtt ({} ms) must be above 0 and below probe_period ({} ms)",
                ms(self.probe_rtt),
                ms(self.probe_period)
            ));
        }
        if self.suspect_timeout < self.probe_period {
            return Err(format!(
                "suspect_timeout ({} ms) must be at least probe_period ({} ms)",
                ms(self.suspect_timeout),
                ms(self.probe_period)
            ));
        }
        if ms(self.gossip_interval) == 0 || self.gossip_fanout == 0 || self.gossip_fanout > 16 {
            return Err("gossip_interval must be above 0 and gossip_fanout 1 to 16".into());
        }
        if !(1..=MAX_REPLICATION_FACTOR).contains(&self.replication_factor) {
            return Err(format!(
                "replication_factor {}: use 1 to {MAX_REPLICATION_FACTOR}",
                self.replication_factor
            ));
        }
        Ok(())
    }
}
