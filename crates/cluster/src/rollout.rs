//! Wire types of cluster-wide plugin bindings: the binding table every node
//! keeps and exchanges with its peers (anti-entropy), a component fetched
//! by its sha256, and a node's rollout status.
//!
//! The table maps a binding name to its last change, stamped with a hybrid
//! logical clock time and the id of the node that made it; the highest
//! stamp wins everywhere, so concurrent changes on two nodes converge to
//! one. A deletion is a change too (a tombstone), so it wins over older
//! versions that a node returning after a partition still holds.
//!
//! Three requests: a **sync** carries the asking node's digest (name and
//! stamp of every entry it holds) and is answered with the entries the
//! peer holds newer; a **component** request fetches a component by
//! sha256; a **status** request asks which version of each binding a peer
//! runs.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::transport::{PeerClient, TransportError};

/// Path of a binding table sync.
pub const SYNC_PATH: &str = "/cluster/v1/plugins/sync";
/// Path of a component fetch.
pub const COMPONENT_PATH: &str = "/cluster/v1/plugins/component";
/// Path of a rollout status request.
pub const STATUS_PATH: &str = "/cluster/v1/plugins/status";
/// Largest sync or status request body (plaintext): a digest of the most
/// entries a table keeps, with room to spare.
pub const MAX_SYNC_REQUEST: usize = 256 * 1024;

/// The version of a table entry: compared by time, then node id.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Stamp {
    /// Hybrid logical clock time of the change.
    pub time: u64,
    /// The node that made the change.
    pub node: u64,
}

/// A binding's settings and component, as every node applies it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// Hook: `route`, `filter` or `pick`.
    pub hook: String,
    /// Topic patterns.
    pub topics: Vec<String>,
    /// Configuration string given to `init`.
    pub config: String,
    /// Error policy: `drop`, `pass` or `dead-letter`.
    pub on_error: String,
    /// Fuel per call.
    pub fuel: u64,
    /// Memory per instance, in bytes.
    pub memory_bytes: u64,
    /// Most instances.
    pub max_instances: u32,
    /// Most host calls per hook call.
    pub max_host_calls: u32,
    /// The component's sha256, in hex.
    pub sha256: String,
    /// The component's size in bytes.
    pub size: u64,
    /// Counts the binding's versions (shown to users; the stamp orders).
    pub version: u64,
}

/// One entry of the binding table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Binding name.
    pub name: String,
    /// When and where it last changed.
    pub stamp: Stamp,
    /// The binding, or `None` once deleted (a tombstone).
    pub binding: Option<Desired>,
}

/// A sync request: every entry the asking node holds, by name and stamp.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// Name and stamp of each entry.
    pub digest: Vec<(String, Stamp)>,
}

/// The answer to a sync: the entries the answering node holds newer than
/// the digest (or missing from it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncAnswer {
    /// Newer entries.
    pub entries: Vec<Entry>,
}

/// Asks a peer for a component by sha256 (hex).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentRequest {
    /// The component's sha256, in hex.
    pub sha256: String,
}

/// A component's bytes, when the peer holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentAnswer {
    /// The bytes; `None` when the peer does not hold the component.
    pub bytes: Option<Vec<u8>>,
}

/// Asks a peer what it runs of these bindings (all when empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRequest {
    /// Binding names.
    pub names: Vec<String>,
}

/// What a node runs of one cluster binding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Binding name.
    pub name: String,
    /// The table entry's stamp the node holds.
    pub stamp: Stamp,
    /// `running`, `pending`, `refused` or `deleted`.
    pub state: String,
    /// sha256 of the component it runs (empty when none).
    pub sha256: String,
    /// The version it runs (0 when none).
    pub version: u64,
    /// Why it is pending or refused.
    pub detail: String,
}

/// The answer to a status request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusAnswer {
    /// One per binding the node's table holds among those asked for.
    pub bindings: Vec<NodeStatus>,
}

impl PeerClient {
    /// Sends this node's binding table digest to the peer at `addr`; the
    /// answer holds the peer's newer entries.
    pub async fn sync_plugins(
        &self,
        addr: &str,
        req: &SyncRequest,
        timeout: Duration,
    ) -> Result<SyncAnswer, TransportError> {
        self.call(addr, SYNC_PATH, req, timeout).await
    }

    /// Fetches a component by sha256 from the peer at `addr`, accepting
    /// at most `max_bytes` of it. The caller checks the hash.
    pub async fn fetch_component(
        &self,
        addr: &str,
        sha256: &str,
        max_bytes: usize,
        timeout: Duration,
    ) -> Result<ComponentAnswer, TransportError> {
        let req = ComponentRequest {
            sha256: sha256.to_owned(),
        };
        // postcard's length prefix and the option tag.
        self.call_limited(addr, COMPONENT_PATH, &req, timeout, max_bytes + 16)
            .await
    }

    /// Asks the peer at `addr` what it runs of `req`'s bindings.
    pub async fn plugin_status(
        &self,
        addr: &str,
        req: &StatusRequest,
        timeout: Duration,
    ) -> Result<StatusAnswer, TransportError> {
        self.call(addr, STATUS_PATH, req, timeout).await
    }
}
