//! Switchyard's engine: the message path without HTTP.
//!
//! The router validates what clients publish, appends it to the store, and
//! delivers it: a [`Subscription`] follows a set of topic patterns from a
//! cursor, reading from the store in bounded batches and waiting for new
//! messages when it has caught up. It holds nothing per message, so a slow
//! subscriber lags in the log instead of growing memory.
//!
//! What it does not do: parse HTTP, format Server-Sent Events, touch fjall
//! directly (that is the store's job) or the network.
#![warn(missing_docs)]

mod background;
mod error;
mod feeds;
mod groups;
mod idempotency;
mod plugins;
mod replication;
mod router;
mod subscription;
mod validate;

pub use error::{InvalidMessage, RouterError};
pub use groups::{
    AckMode, DEFAULT_ACK_TIMEOUT, DEFAULT_MAX_DELIVERIES, DEFAULT_MAX_INFLIGHT,
    DEFAULT_MAX_INFLIGHT_BYTES, DELIVERIES_HEADER, GROUP_HEADER, GroupCounters, GroupDelivery,
    GroupInfo, GroupOptions, GroupStart, Groups, MAX_GROUPS, MAX_INFLIGHT, MAX_INFLIGHT_BYTES,
    MAX_MEMBERS, MAX_SETTLE_IDS, MAX_UNSETTLED, Member, MemberInfo, MemberOptions, Settle, Settled,
    StaleId, Strategy, validate_group_name,
};
pub use plugins::log_topic::{LOG_TOPIC_LINES_PER_SEC, log_topic};
pub use plugins::{
    Applied, ConfiguredBinding, DEFAULT_MAX_COMPONENT, ERROR_HEADER, Filter, MAX_BINDINGS,
    MAX_CONFIG, MAX_FILTER_VARIANTS, MAX_TOMBSTONES, MemberRollout, NEED_COMPONENT, PLUGIN_HEADER,
    PluginInfo, Plugins, PluginsConfig, Reloaded, SYNC_EVERY, Source, rollout, validate_name,
};
pub use replication::{
    Acks, DEFAULT_ACK_TIMEOUT as DEFAULT_PUBLISH_ACK_TIMEOUT, OriginReplicas, ReplicaView,
    ReplicationStatus,
};
pub use router::{
    CLUSTER_EVENTS_TOPIC, PublishRequest, Published, Pulled, Router, RouterConfig, Start,
    Unavailable,
};
pub use subscription::{Delivery, Subscription};
pub use switchyard_cluster::{Cluster, ClusterConfig, ClusterEvent, MemberState, MemberView};
pub use switchyard_plugin_host::{
    BindingSpec, EngineConfig, ErrorPolicy, Hook, LOG_TAIL_CAPACITY, Limits, LogLine, PluginEngine,
    PluginError, StatsSnapshot,
};
pub use switchyard_store::{
    Appended, BULK_BYTES, CommitStats, EngineState, FsyncMode, Gap, RetentionPolicy, RetentionRule,
    SLOW_COMMIT, StoreConfig, StoreError, StreamInfo, TopicInfo,
};
pub use validate::{MAX_IDEMPOTENCY_KEY, validate};
