//! The inputs and outputs of the group state machine ([`super::state`]):
//! the commands it applies, what it asks the coordinator to look up, and
//! what it hands back to deliver, dead-letter and persist. All plain data.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use switchyard_model::{Cursor, Message, MessageId};
use switchyard_plugin_host::Candidate;

use super::types::{GroupCounters, MemberOptions, Settle, Settled};

/// A member's key within its group's coordinator (unique per process).
pub type MemberKey = u64;

/// A change to a group's membership or to the messages it handed out: the
/// inputs of [`GroupState::apply`]. Plain data, so that it can be logged,
/// sent to another node and replayed there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupCommand {
    /// A member joins with its key, its id (what acknowledgements name) and
    /// its options.
    Join {
        /// The member's key.
        key: MemberKey,
        /// The member's id.
        id: String,
        /// Its options.
        options: MemberOptions,
    },
    /// A member leaves: what it held is delivered again at once.
    Leave {
        /// The member's key.
        key: MemberKey,
    },
    /// A member (or, with `member: None`, an operator) settles messages.
    Settle {
        /// The member acting, by id.
        member: Option<String>,
        /// The messages.
        ids: Vec<MessageId>,
        /// What to do with them.
        op: Settle,
    },
}

/// What [`GroupState::apply`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Applied {
    /// The member joined.
    Joined,
    /// The member left (or was not there).
    Left,
    /// The settle request applied to these ids.
    Settled(Settled),
}

/// Chooses a member for a message with a `pick` plugin.
pub trait Picker {
    /// Calls pick plugin `plugin` for `message` with `candidates`: the index
    /// of the chosen candidate, `None` when the plugin declines, or an error
    /// when it failed.
    fn pick(
        &mut self,
        plugin: &str,
        message: &Message,
        candidates: &[Candidate],
    ) -> Result<Option<usize>, String>;
}

/// Where a message due for redelivery was found.
#[derive(Clone, Debug)]
pub enum Lookup {
    /// In the log.
    Found(Arc<Message>),
    /// Not received by this node yet (a message of another origin, of a
    /// group taken over from another node): it waits for the pulls.
    NotHere,
    /// Retention removed it before it was acknowledged.
    Gone,
}

/// A message to copy to the dead-letter topic, with how often it was
/// delivered and why it is dead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The message.
    pub id: MessageId,
    /// Its deliveries.
    pub deliveries: u32,
    /// Why it is dead-lettered.
    pub reason: String,
}

/// What became of a round's dead letters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeadLetterOutcome {
    /// Copies stored in `$dlq.<topic>`.
    pub stored: u64,
    /// Messages whose `$dlq.` topic would be too long: dropped.
    pub dropped: u64,
    /// Messages retention removed before they could be copied.
    pub lost: u64,
}

/// The changes of a round, to persist in one atomic write.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupChanges {
    /// The new position, if it moved.
    pub cursor: Option<Cursor>,
    /// The new counters, if they changed.
    pub counters: Option<GroupCounters>,
    /// Messages now in flight (or delivered again), with their delivery counts.
    pub put: Vec<(MessageId, u32)>,
    /// Messages no longer in flight.
    pub remove: Vec<MessageId>,
}

impl GroupChanges {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.cursor.is_none()
            && self.counters.is_none()
            && self.put.is_empty()
            && self.remove.is_empty()
    }
}

/// One message for a member's connection.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// The member.
    pub member: MemberKey,
    /// The message.
    pub message: Arc<Message>,
    /// Its deliveries, this one included.
    pub delivery: u32,
}
