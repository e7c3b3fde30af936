use switchyard_store::StoreError;
use thiserror::Error;

/// Why a message was refused at ingress. Nothing was stored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InvalidMessage {
    /// The payload is larger than the configured limit.
    #[error("payload of {size} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// Payload size.
        size: usize,
        /// Configured limit.
        max: usize,
    },
    /// Topics starting with `$` are written only by the node itself.
    #[error("topic {0:?} is reserved for the system (names starting with '$')")]
    ReservedTopic(String),
    /// The key is longer than the limit.
    #[error("message key of {size} bytes exceeds the limit of {max} bytes")]
    KeyTooLong {
        /// Key size.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// Too many headers, or a header or all headers together too large.
    #[error("headers too large: {0}")]
    HeadersTooLarge(String),
    /// A header name or value is not acceptable.
    #[error("invalid header: {0}")]
    InvalidHeader(String),
    /// The idempotency key is empty, too long or not printable ASCII.
    #[error("invalid idempotency key: {0}")]
    InvalidIdempotencyKey(&'static str),
}

/// Errors of the router.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RouterError {
    /// The input was refused; nothing changed.
    #[error(transparent)]
    Invalid(#[from] InvalidMessage),
    /// A batch holds invalid entries; nothing was stored. Each entry is
    /// (index in the batch, reason).
    #[error("{} of the batch entries are invalid", .0.len())]
    InvalidBatch(Vec<(usize, InvalidMessage)>),
    /// The store failed or refuses writes; see the inner error.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No plugin binding has this name.
    #[error("no plugin named {0:?}")]
    PluginNotFound(String),
    /// A plugin binding setting is not acceptable.
    #[error("{0}")]
    PluginSetting(String),
    /// The change conflicts with how the binding was made.
    #[error("{0}")]
    PluginConflict(String),
    /// The plugin was refused (not a component, wrong world, rejected
    /// configuration) or the engine failed.
    #[error(transparent)]
    Plugin(#[from] switchyard_plugin_host::PluginError),
    /// No consumer group has this name.
    #[error("no group named {0:?}")]
    GroupNotFound(String),
    /// A group or member setting is not acceptable.
    #[error("{0}")]
    GroupSetting(String),
    /// The group stopped after a store failure.
    #[error("{0}")]
    GroupUnavailable(String),
    /// The request conflicts with the group's settings or state.
    #[error("{0}")]
    GroupConflict(String),
    /// The join would create a group beyond what it may create (see
    /// [`crate::GroupOptions::create_limit`]).
    #[error("{0}")]
    GroupLimit(String),
    /// Settle request naming messages the group never delivered; nothing changed.
    #[error("group {group:?} has not delivered {}: they are not in flight", .ids.join(", "))]
    NotInFlight {
        /// The group.
        group: String,
        /// The ids.
        ids: Vec<String>,
    },
    /// Settle request whose every id is no longer the member's to settle.
    /// The stale acknowledgements were counted; nothing else changed.
    #[error(
        "stale {op}: none of the ids is this member's to settle any more (see stale for each id)"
    )]
    StaleAck {
        /// The group.
        group: String,
        /// The operation (ack, nack, progress, term).
        op: &'static str,
        /// Each id with the reason.
        stale: Vec<crate::groups::StaleId>,
    },
    /// The `acks` mode is not one of local, quorum or all.
    #[error("{0}")]
    InvalidAcks(String),
    /// The messages are stored (on this node, or for a repeat answered
    /// with a message only peers hold, on them) and will still replicate,
    /// but did not reach the copies the publish asked for in time.
    #[error(
        "stored, but only {copies} of the {needed} copies acks={acks} asks for are known after {timeout_ms} ms; the message will still replicate (retry with the same Idempotency-Key to learn when)"
    )]
    NotReplicated {
        /// The mode asked for.
        acks: crate::Acks,
        /// Copies reached.
        copies: usize,
        /// Copies needed.
        needed: usize,
        /// How long the publish waited.
        timeout_ms: u64,
        /// False when a message was stored under an idempotency key that
        /// could not be checked with every member (see
        /// [`crate::Published::key_checked`]).
        key_checked: bool,
    },
    /// A publish with the same idempotency key is on its way to another
    /// node's log: storing this one now could store a second copy. A
    /// retry once that publish is decided answers its message.
    #[error(
        "a publish with idempotency key {} is still on its way to another node's log; retry shortly",
        keys.join(", ")
    )]
    KeyInFlight {
        /// The keys in flight elsewhere.
        keys: Vec<String>,
    },
    /// A node-to-node request was refused.
    #[error("{0}")]
    Cluster(String),
    /// A blocking read task failed to run (the runtime is shutting down).
    #[error("the node is shutting down")]
    ShuttingDown,
}
