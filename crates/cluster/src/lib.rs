//! Switchyard's cluster layer: SWIM membership and failure detection with
//! foca over UDP gossip that is sealed with the cluster key, and the
//! node-to-node transport.
//!
//! [`Cluster::start`] binds the gossip socket and starts one task that owns
//! foca, the socket and the timers; the node reads the member list from the
//! handle and membership changes from the channel it returns. Every packet
//! is authenticated and encrypted ([`seal`]); packets that fail are dropped
//! and counted, never trusted.
//!
//! [`transport`] is the client side of the node-to-node requests: their
//! wire types (the feed, group take-over and hand-over), an HTTP/2 client
//! for peers ([`transport::PeerClient`]), which also relays client
//! requests to a peer, and the sealed answer bodies. [`envelope`] seals
//! every node-to-node request and answer with the cluster key and refuses
//! replayed requests.
//!
//! What it does not do: serve HTTP (the gateway serves the node-to-node
//! endpoints), storage, or decide anything about messages.
#![warn(missing_docs)]

mod config;
pub mod envelope;
mod membership;
pub mod rollout;
pub mod seal;
pub mod transport;

pub use config::{ClusterConfig, MAX_PACKET, MIN_KEY_LEN};
pub use membership::{
    Cluster, ClusterError, ClusterEvent, GossipStats, MemberState, MemberView, MembersSeen,
    NodeIdentity,
};
