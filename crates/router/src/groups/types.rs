//! The public types of consumer groups: strategies, options, settle
//! operations and their outcomes, counters and the info reported.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_model::Message;

use super::{DEFAULT_MAX_INFLIGHT, DEFAULT_MAX_INFLIGHT_BYTES};
use crate::RouterError;

/// How a group chooses the member for each message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// The member with the fewest unacknowledged messages (ties rotate).
    LeastInflight,
    /// Members in turn, skipping those at their `max_inflight`.
    RoundRobin,
    /// The message key decides (rendezvous hashing over the members), so
    /// one key's messages go to one member, in order, while membership is
    /// unchanged. Messages without a key go to the least loaded member.
    KeyHash,
    /// A `pick` plugin binding chooses; when it declines or fails, the
    /// least loaded member gets the message.
    Plugin(String),
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Strategy::LeastInflight => f.write_str("least-inflight"),
            Strategy::RoundRobin => f.write_str("round-robin"),
            Strategy::KeyHash => f.write_str("key-hash"),
            Strategy::Plugin(p) => write!(f, "plugin:{p}"),
        }
    }
}

impl FromStr for Strategy {
    type Err = RouterError;
    fn from_str(s: &str) -> Result<Self, RouterError> {
        match s {
            "least-inflight" => Ok(Strategy::LeastInflight),
            "round-robin" => Ok(Strategy::RoundRobin),
            "key-hash" => Ok(Strategy::KeyHash),
            p if p.starts_with("plugin:") => {
                let name = &p["plugin:".len()..];
                crate::validate_name(name)
                    .map_err(|e| RouterError::GroupSetting(format!("strategy {s:?}: {e}")))?;
                Ok(Strategy::Plugin(name.to_owned()))
            }
            _ => Err(RouterError::GroupSetting(format!(
                "unknown strategy {s:?}; expected least-inflight, round-robin, key-hash or plugin:<name>"
            ))),
        }
    }
}

/// When a member's messages count as acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// Once handed to the member's connection.
    Auto,
    /// When the member acknowledges them.
    Manual,
}

impl FromStr for AckMode {
    type Err = RouterError;
    fn from_str(s: &str) -> Result<Self, RouterError> {
        match s {
            "auto" => Ok(AckMode::Auto),
            "manual" => Ok(AckMode::Manual),
            _ => Err(RouterError::GroupSetting(format!(
                "ack={s:?}; expected manual or auto"
            ))),
        }
    }
}

/// Where a new group starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GroupStart {
    /// With messages published from now on.
    #[default]
    Latest,
    /// With the oldest message held.
    Earliest,
}

/// Settings of a group, given by the member that creates it. A later
/// member may repeat them; a different value is refused.
#[derive(Clone, Debug, Default)]
pub struct GroupOptions {
    /// Balancing strategy (default least-inflight).
    pub strategy: Option<Strategy>,
    /// Time to acknowledge before redelivery (default 30 s).
    pub ack_timeout: Option<Duration>,
    /// Deliveries before a message is dead-lettered (default 5).
    pub max_deliveries: Option<u32>,
    /// Where the group starts when this join creates it.
    pub start: GroupStart,
    /// When set, this join may create the group only while the node holds
    /// fewer groups than this (joins without admin rights get a lower
    /// limit than the node's [`MAX_GROUPS`](super::MAX_GROUPS)); joining
    /// an existing group is not limited.
    pub create_limit: Option<usize>,
}

/// Settings of one member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberOptions {
    /// When its messages count as acknowledged.
    pub ack: AckMode,
    /// Most unacknowledged messages it holds (1 to [`MAX_INFLIGHT`]).
    pub max_inflight: u32,
    /// Most bytes of unacknowledged messages it holds (1 to
    /// [`MAX_INFLIGHT_BYTES`]; payload, topic and headers counted). A
    /// member with nothing in flight always gets the next message, however
    /// large, so a message over the bound is still delivered.
    #[serde(default = "default_max_inflight_bytes")]
    pub max_inflight_bytes: u64,
    /// Its weight, for pick plugins (1 by default).
    pub weight: u32,
    /// Labels for pick plugins.
    pub labels: Vec<(String, String)>,
}

fn default_max_inflight_bytes() -> u64 {
    DEFAULT_MAX_INFLIGHT_BYTES
}

impl Default for MemberOptions {
    fn default() -> Self {
        MemberOptions {
            ack: AckMode::Manual,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BYTES,
            weight: 1,
            labels: Vec::new(),
        }
    }
}

/// What a member does with messages it was given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Settle {
    /// Done: never deliver it again.
    Ack,
    /// Not done: deliver it again (to any member) after a delay.
    Nack(Duration),
    /// Still working: restart the ack deadline.
    Progress,
    /// Give up: do not deliver it again; dead-letter it with the reason.
    Term(Option<String>),
}

impl Settle {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Settle::Ack => "ack",
            Settle::Nack(_) => "nack",
            Settle::Progress => "progress",
            Settle::Term(_) => "term",
        }
    }
}

/// The outcome of a settle request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Settled {
    /// Ids the request applied to.
    pub applied: Vec<String>,
    /// Ids it did not apply to because they are no longer this member's:
    /// delivered to another member since, or already settled.
    pub stale: Vec<StaleId>,
}

/// One stale id with the reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StaleId {
    /// The message id.
    pub id: String,
    /// Why the id was not applied.
    pub reason: &'static str,
}

/// One message handed to a member.
#[derive(Clone, Debug)]
pub struct GroupDelivery {
    /// The message.
    pub message: Arc<Message>,
    /// How many times it was delivered, this time included.
    pub delivery: u32,
}

/// A group's counters since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupCounters {
    /// Deliveries, redeliveries included.
    pub delivered: u64,
    /// Deliveries of a message that was delivered before.
    pub redelivered: u64,
    /// Messages acknowledged.
    pub acked: u64,
    /// Messages a member asked to have delivered again.
    pub nacked: u64,
    /// Deliveries whose ack deadline passed.
    pub expired: u64,
    /// Messages a member terminated.
    pub terminated: u64,
    /// Messages sent to the dead-letter topic (terminated or delivered too often).
    pub dead_lettered: u64,
    /// Acknowledgements for messages that were no longer the member's.
    pub stale_acks: u64,
    /// Messages that retention removed before they were acknowledged.
    pub lost_to_retention: u64,
    /// Pick plugin calls that failed (the least loaded member got the message).
    pub pick_errors: u64,
    /// Messages to dead-letter whose topic is too long for a `$dlq.` prefix:
    /// they were dropped instead.
    pub dead_letters_dropped: u64,
}

/// One member as reported by [`Groups::info`].
#[derive(Clone, Debug, Serialize)]
pub struct MemberInfo {
    /// Member id (what acknowledgements name).
    pub id: String,
    /// Ack mode.
    pub ack: AckMode,
    /// Its cap of unacknowledged messages.
    pub max_inflight: u32,
    /// Its unacknowledged messages.
    pub inflight: u32,
    /// Its cap of bytes of unacknowledged messages.
    pub max_inflight_bytes: u64,
    /// Bytes of its unacknowledged messages.
    pub inflight_bytes: u64,
    /// Messages delivered to it.
    pub delivered: u64,
    /// Messages it acknowledged.
    pub acked: u64,
    /// Its weight.
    pub weight: u32,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// How long it has been connected, in ms.
    pub connected_ms: u64,
}

/// A group as reported by [`Groups::info`].
#[derive(Clone, Debug, Serialize)]
pub struct GroupInfo {
    /// Group name.
    pub name: String,
    /// Topic patterns it follows.
    pub topics: Vec<String>,
    /// Balancing strategy.
    pub strategy: String,
    /// Acknowledgement timeout in ms.
    pub ack_timeout_ms: u64,
    /// Deliveries before dead-lettering.
    pub max_deliveries: u32,
    /// When it was created, in ms since the Unix epoch.
    pub created_ms: u64,
    /// The node that coordinates it.
    pub coordinator: String,
    /// How often it moved from one coordinating node to another.
    pub epoch: u64,
    /// Its position in the log: every message before it was delivered.
    pub position: String,
    /// Connected members.
    pub members: Vec<MemberInfo>,
    /// Messages delivered and not acknowledged.
    pub inflight: u64,
    /// Messages waiting to be delivered again.
    pub pending_redelivery: u64,
    /// Messages in the log after the group's position: not delivered yet.
    pub lag: u64,
    /// Counters since the group was created.
    #[serde(flatten)]
    pub counters: GroupCounters,
}
