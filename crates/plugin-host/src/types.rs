//! The host's view of hooks, decisions and binding settings.

use std::fmt;
use std::str::FromStr;

use switchyard_model::{Header, TopicPattern};

use crate::PluginError;

/// Most topics one `reroute` may name.
pub const MAX_REROUTE_TOPICS: usize = 16;

/// The three places a plugin can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    /// Ingress, before a message is stored.
    Route,
    /// Egress, per subscription, before a message is written to it.
    Filter,
    /// Choosing a consumer group member.
    Pick,
}

impl Hook {
    /// The hook's name as the API and CLI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Route => "route",
            Hook::Filter => "filter",
            Hook::Pick => "pick",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Hook {
    type Err = PluginError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "route" => Ok(Hook::Route),
            "filter" => Ok(Hook::Filter),
            "pick" => Ok(Hook::Pick),
            other => Err(PluginError::InvalidSetting(format!(
                "hook {other:?}; expected route, filter or pick"
            ))),
        }
    }
}

/// What happens to a message when its plugin call fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ErrorPolicy {
    /// The message is not stored (route) or not written to the subscriber
    /// (filter).
    #[default]
    Drop,
    /// The message goes on as if the plugin had not been there.
    Pass,
    /// The message is stored on `$dlq.<its topic>` with the error in the
    /// `switchyard-error` header instead (route), or skipped and copied
    /// there (filter).
    DeadLetter,
}

impl ErrorPolicy {
    /// The policy's name as the API and CLI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorPolicy::Drop => "drop",
            ErrorPolicy::Pass => "pass",
            ErrorPolicy::DeadLetter => "dead-letter",
        }
    }
}

impl fmt::Display for ErrorPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorPolicy {
    type Err = PluginError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "drop" => Ok(ErrorPolicy::Drop),
            "pass" => Ok(ErrorPolicy::Pass),
            "dead-letter" => Ok(ErrorPolicy::DeadLetter),
            other => Err(PluginError::InvalidSetting(format!(
                "on_error {other:?}; expected drop, pass or dead-letter"
            ))),
        }
    }
}

/// Sandbox limits of one binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Fuel per hook call: roughly the number of WebAssembly instructions
    /// it may execute. The default, 50 million, is about 8 ms of a tight
    /// loop on a 2 GHz x86-64 core; a typical hook call uses a few thousand.
    pub fuel: u64,
    /// Largest linear memory of one instance, in bytes (default 16 MiB).
    pub memory_bytes: usize,
    /// Most instances kept for the binding; calls beyond wait (default 4).
    /// A binding reserves `memory_bytes × max_instances` of the node's
    /// plugin memory budget; on a node, calls run on the plugin threads,
    /// so more instances than threads are never in use at once.
    pub max_instances: usize,
    /// Most calls into the host per hook call (default 1000): imports (kv,
    /// log, clock, metrics), WASI functions and runtime builtins.
    pub max_host_calls: u32,
    /// Largest payload a plugin may return, in bytes (default 1 MiB, the
    /// node's default payload limit).
    pub max_output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 50_000_000,
            memory_bytes: 16 * 1024 * 1024,
            max_instances: 4,
            max_host_calls: 1000,
            max_output_bytes: switchyard_model::limits::DEFAULT_MAX_PAYLOAD,
        }
    }
}

/// What binds a plugin to a hook.
#[derive(Clone, Debug, PartialEq)]
pub struct BindingSpec {
    /// The binding's name: unique per node, also the key-value scope.
    pub name: String,
    /// The hook it serves.
    pub hook: Hook,
    /// The topics it applies to.
    pub topics: Vec<TopicPattern>,
    /// Passed to the plugin's `init`.
    pub config: String,
    /// What a failure means for the message.
    pub on_error: ErrorPolicy,
    /// Sandbox limits.
    pub limits: Limits,
}

impl BindingSpec {
    /// Whether the binding applies to messages on `topic`.
    pub fn applies_to(&self, topic: &str) -> bool {
        self.topics.iter().any(|p| p.matches_name(topic))
    }
}

/// A message as handed to a plugin, borrowed from the caller.
#[derive(Clone, Copy, Debug)]
pub struct PluginMessage<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Key bytes (passed to the plugin as UTF-8, invalid sequences replaced).
    pub key: Option<&'a [u8]>,
    /// Headers.
    pub headers: &'a [Header],
    /// Payload.
    pub payload: &'a [u8],
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

/// A `route` answer, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteDecision {
    /// Store as published.
    Deliver,
    /// Do not store; the reason goes back to the publisher.
    Drop(String),
    /// Store on these topics instead (1 to [`MAX_REROUTE_TOPICS`] valid,
    /// non-reserved topic names, without repeats).
    Reroute(Vec<String>),
    /// Store with these parts replaced.
    Replace {
        /// New headers, if replaced.
        headers: Option<Vec<Header>>,
        /// New payload, if replaced.
        payload: Option<Vec<u8>>,
    },
}

/// A `filter` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilterDecision {
    /// Write unchanged.
    Keep,
    /// Do not write to this subscriber.
    Skip,
    /// Write with this payload.
    Transform(Vec<u8>),
}

/// A member a `pick` plugin may choose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Member id.
    pub id: String,
    /// Unacknowledged messages.
    pub inflight: u32,
    /// Weight.
    pub weight: u32,
    /// Labels as name/value pairs.
    pub labels: Vec<Header>,
}
