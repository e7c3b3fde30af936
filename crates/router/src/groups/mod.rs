//! Consumer groups: load-balanced delivery with acknowledgements,
//! redelivery and durable queue semantics.
//!
//! Each group has one coordinator task that owns its whole state: the
//! group's position in the log, the messages in flight (delivered, not yet
//! acknowledged) and those waiting to be delivered again, and the connected
//! members. Everything reaches it as commands on a bounded channel, so the
//! state needs no locks and each change is applied in one place.
//!
//! The coordinator works in rounds: take every waiting command, expire ack
//! deadlines, hand out messages to members with room, then persist what
//! changed in one atomic store write, and only then answer the commands and
//! send the messages. So a member never sees a delivery the store does not
//! know is in flight, and an acknowledgement is answered only once it is
//! written (through to the operating system, or to disk with
//! `fsync = always`). After a crash, whatever was in flight is delivered
//! again; nothing acknowledged is delivered again.
//!
//! Memory is bounded by the members' `max_inflight` and
//! `max_inflight_bytes`: the coordinator reads from the log only as many
//! messages as members have room for, and holds message ids, not
//! messages, for what is in flight; a member's connection holds at most
//! what the member has in flight.
//!
//! The module's parts: [`types`] (the public types), [`settings`] (what a
//! group is configured with, and validation), [`state`] (the group logic
//! as a pure state machine, fed commands and the time), [`actor`] (the
//! coordinator task that carries out the state machine's I/O),
//! [`registry`] (the node's groups and the requests that reach them),
//! [`member`] (a connected member), [`cluster`] (one coordinator per
//! group across a cluster: relaying, take-over, hand-over) and
//! [`snapshots`] (group state recorded in the replicated origin log, for
//! failover when a coordinator dies).

use std::time::Duration;

mod actor;
mod cluster;
mod effects;
mod member;
mod registry;
mod settings;
mod snapshots;
mod state;
mod types;

pub use member::Member;
pub use registry::Groups;
pub use settings::validate_group_name;
pub(crate) use snapshots::retention_rule as snapshot_retention_rule;
#[allow(unused_imports)]
pub(crate) use state::{
    Applied, DeadLetter, DeadLetterOutcome, GroupChanges, GroupCommand, GroupState, Lookup,
    MemberKey, Outgoing, Picker,
};
pub use types::{
    AckMode, GroupCounters, GroupDelivery, GroupInfo, GroupOptions, GroupStart, MemberInfo,
    MemberOptions, Settle, Settled, StaleId, Strategy,
};

/// Default time a member has to acknowledge a message before it is
/// delivered to another member.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest acknowledgement timeout.
pub const MAX_ACK_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Default deliveries of one message before it is dead-lettered.
pub const DEFAULT_MAX_DELIVERIES: u32 = 5;
/// Most deliveries of one message a group may allow.
pub const MAX_MAX_DELIVERIES: u32 = 1000;
/// Default unacknowledged messages per member.
pub const DEFAULT_MAX_INFLIGHT: u32 = 64;
/// Most unacknowledged messages per member.
pub const MAX_INFLIGHT: u32 = 10_000;
/// Default bytes of unacknowledged messages per member (see
/// [`MemberOptions::max_inflight_bytes`]).
pub const DEFAULT_MAX_INFLIGHT_BYTES: u64 = 4 * 1024 * 1024;
/// Most bytes of unacknowledged messages per member.
pub const MAX_INFLIGHT_BYTES: u64 = 64 * 1024 * 1024;
/// Most groups per node.
pub const MAX_GROUPS: usize = 1024;
/// Most members connected to one group.
pub const MAX_MEMBERS: usize = 1024;
/// Most ids in one acknowledgement request.
pub const MAX_SETTLE_IDS: usize = 10_000;
/// Longest nack delay.
pub const MAX_NACK_DELAY: Duration = Duration::from_secs(24 * 3600);
/// Header naming the group on a dead-lettered message.
pub const GROUP_HEADER: &str = "switchyard-group";
/// Header counting the deliveries of a dead-lettered message.
pub const DELIVERIES_HEADER: &str = "switchyard-deliveries";

/// Most messages one group holds unsettled (in flight or waiting for
/// redelivery, delays included); it reads no new messages beyond.
pub const MAX_UNSETTLED: usize = 100_000;

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use switchyard_model::TopicSet;

    use super::settings::{Settings, topic_names, validate_options};
    use super::state::rendezvous;
    use super::*;
    use crate::RouterError;

    #[test]
    fn strategies_round_trip_and_bad_ones_are_refused() {
        for s in [
            "least-inflight",
            "round-robin",
            "key-hash",
            "plugin:weights",
        ] {
            assert_eq!(s.parse::<Strategy>().unwrap().to_string(), s);
        }
        for bad in ["", "random", "plugin:", "plugin:a b", "Least-Inflight"] {
            assert!(
                matches!(bad.parse::<Strategy>(), Err(RouterError::GroupSetting(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn group_names_are_checked() {
        for ok in ["workers", "a", "orders.eu-1_x", &"g".repeat(128)] {
            validate_group_name(ok).unwrap();
        }
        for bad in ["", "a b", "a/b", "é", "a\0b", &"g".repeat(129)] {
            assert!(validate_group_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn options_out_of_range_are_refused() {
        let member = |max_inflight, weight| MemberOptions {
            max_inflight,
            weight,
            ..MemberOptions::default()
        };
        let group = GroupOptions::default();
        validate_options(&group, &member(1, 1)).unwrap();
        validate_options(&group, &member(MAX_INFLIGHT, 10_000)).unwrap();
        assert!(validate_options(&group, &member(0, 1)).is_err());
        assert!(validate_options(&group, &member(MAX_INFLIGHT + 1, 1)).is_err());
        assert!(validate_options(&group, &member(1, 0)).is_err());
        let timeout = |ms| GroupOptions {
            ack_timeout: Some(Duration::from_millis(ms)),
            ..GroupOptions::default()
        };
        assert!(validate_options(&timeout(99), &member(1, 1)).is_err());
        validate_options(&timeout(100), &member(1, 1)).unwrap();
        let deliveries = |n| GroupOptions {
            max_deliveries: Some(n),
            ..GroupOptions::default()
        };
        assert!(validate_options(&deliveries(0), &member(1, 1)).is_err());
        assert!(validate_options(&deliveries(MAX_MAX_DELIVERIES + 1), &member(1, 1)).is_err());
    }

    /// Removing a member moves only that member's keys; the others keep theirs.
    #[test]
    fn rendezvous_moves_only_the_removed_members_keys() {
        let seeds: Vec<u64> = (1..=5).map(|k| rendezvous(k, b"member")).collect();
        let owner = |seeds: &[u64], key: &[u8]| {
            *seeds
                .iter()
                .max_by_key(|&&s| rendezvous(s, key))
                .expect("members")
        };
        let keys: Vec<Vec<u8>> = (0..2000).map(|i| format!("key-{i}").into_bytes()).collect();
        let before: Vec<u64> = keys.iter().map(|k| owner(&seeds, k)).collect();
        let mut counts = HashMap::new();
        for o in &before {
            *counts.entry(*o).or_insert(0) += 1;
        }
        assert!(
            counts.values().all(|&n| n > 300),
            "uneven spread: {counts:?}"
        );
        let removed = seeds[2];
        let rest: Vec<u64> = seeds.iter().copied().filter(|&s| s != removed).collect();
        for (k, b) in keys.iter().zip(&before) {
            let after = owner(&rest, k);
            if *b != removed {
                assert_eq!(after, *b, "a key of a remaining member moved");
            }
        }
    }

    #[test]
    fn settings_survive_their_record() {
        let s = Settings {
            topics: TopicSet::new(vec![
                "orders.>".parse().unwrap(),
                "audit.*".parse().unwrap(),
            ]),
            strategy: Strategy::Plugin("weights".into()),
            ack_timeout: Duration::from_millis(1500),
            max_deliveries: 3,
            created_ms: 42,
            epoch: 7,
        };
        let record = serde_json::to_vec(&s.record()).unwrap();
        let back = Settings::from_record(&serde_json::from_slice(&record).unwrap()).unwrap();
        assert_eq!(topic_names(&back.topics), topic_names(&s.topics));
        assert_eq!(back.strategy, s.strategy);
        assert_eq!(back.ack_timeout, s.ack_timeout);
        assert_eq!(back.max_deliveries, 3);
        assert_eq!(back.epoch, 7);
        let same = GroupOptions {
            strategy: Some(Strategy::Plugin("weights".into())),
            ..GroupOptions::default()
        };
        back.check("g", &s.topics, &same).unwrap();
        let other = GroupOptions {
            strategy: Some(Strategy::KeyHash),
            ..GroupOptions::default()
        };
        assert!(matches!(
            back.check("g", &s.topics, &other),
            Err(RouterError::GroupConflict(_))
        ));
        let fewer = TopicSet::new(vec!["orders.>".parse().unwrap()]);
        assert!(back.check("g", &fewer, &GroupOptions::default()).is_err());
    }
}
