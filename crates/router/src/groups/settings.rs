//! A group's settings: what is persisted, what is in force, and the
//! validation of names and options.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use switchyard_model::TopicSet;

use super::types::{GroupOptions, MemberOptions, Strategy};
use super::{MAX_ACK_TIMEOUT, MAX_INFLIGHT, MAX_INFLIGHT_BYTES, MAX_MAX_DELIVERIES};
use crate::RouterError;

/// A group's settings as persisted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SettingsRecord {
    pub(crate) topics: Vec<String>,
    pub(crate) strategy: String,
    pub(crate) ack_timeout_ms: u64,
    pub(crate) max_deliveries: u32,
    pub(crate) created_ms: u64,
    /// Moves between coordinating nodes: each node that takes the group
    /// over counts one more, so of two copies the later one wins.
    #[serde(default)]
    pub(crate) epoch: u64,
}

/// A group's settings in force.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) topics: TopicSet,
    pub(crate) strategy: Strategy,
    pub(crate) ack_timeout: Duration,
    pub(crate) max_deliveries: u32,
    pub(crate) created_ms: u64,
    pub(crate) epoch: u64,
}

impl Settings {
    pub(crate) fn record(&self) -> SettingsRecord {
        SettingsRecord {
            topics: topic_names(&self.topics),
            strategy: self.strategy.to_string(),
            ack_timeout_ms: self.ack_timeout.as_millis() as u64,
            max_deliveries: self.max_deliveries,
            created_ms: self.created_ms,
            epoch: self.epoch,
        }
    }

    pub(crate) fn from_record(r: &SettingsRecord) -> Result<Settings, String> {
        let topics = r
            .topics
            .iter()
            .map(|t| t.parse().map_err(|e| format!("{e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Settings {
            topics: TopicSet::new(topics),
            strategy: r.strategy.parse().map_err(|e: RouterError| e.to_string())?,
            ack_timeout: Duration::from_millis(r.ack_timeout_ms),
            max_deliveries: r.max_deliveries,
            created_ms: r.created_ms,
            epoch: r.epoch,
        })
    }

    /// Refuses options that differ from these settings.
    pub(crate) fn check(
        &self,
        name: &str,
        topics: &TopicSet,
        o: &GroupOptions,
    ) -> Result<(), RouterError> {
        let conflict = |what: String| {
            RouterError::GroupConflict(format!(
                "group {name:?} exists with {what}; join it with the same settings or none"
            ))
        };
        let (mine, theirs) = (topic_names(&self.topics), topic_names(topics));
        if sorted(mine.clone()) != sorted(theirs) {
            return Err(conflict(format!("topics {}", mine.join(", "))));
        }
        if o.strategy.as_ref().is_some_and(|s| *s != self.strategy) {
            return Err(conflict(format!("strategy {}", self.strategy)));
        }
        if o.ack_timeout.is_some_and(|t| t != self.ack_timeout) {
            return Err(conflict(format!(
                "ack_timeout_ms {}",
                self.ack_timeout.as_millis()
            )));
        }
        if o.max_deliveries.is_some_and(|m| m != self.max_deliveries) {
            return Err(conflict(format!("max_deliveries {}", self.max_deliveries)));
        }
        Ok(())
    }
}

pub(crate) fn topic_names(t: &TopicSet) -> Vec<String> {
    t.patterns().iter().map(|p| p.as_str().to_owned()).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Checks a group name: 1 to 128 characters of `[A-Za-z0-9_.-]`.
pub fn validate_group_name(name: &str) -> Result<(), RouterError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(RouterError::GroupSetting(format!(
            "invalid group name {:?}: use 1 to 128 characters of A-Z, a-z, 0-9, '_', '-', '.'",
            name.chars().take(140).collect::<String>()
        )))
    }
}

pub(crate) fn validate_options(o: &GroupOptions, m: &MemberOptions) -> Result<(), RouterError> {
    let bad = |s: String| Err(RouterError::GroupSetting(s));
    if !(1..=MAX_INFLIGHT).contains(&m.max_inflight) {
        return bad(format!(
            "max_inflight={} is out of range; use 1 to {MAX_INFLIGHT}",
            m.max_inflight
        ));
    }
    if !(1..=MAX_INFLIGHT_BYTES).contains(&m.max_inflight_bytes) {
        return bad(format!(
            "max_inflight_bytes={} is out of range; use 1 to {MAX_INFLIGHT_BYTES}",
            m.max_inflight_bytes
        ));
    }
    if !(1..=10_000).contains(&m.weight) {
        return bad(format!(
            "weight={} is out of range; use 1 to 10000",
            m.weight
        ));
    }
    if m.labels.len() > 16
        || m.labels
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 64 || v.len() > 256)
    {
        return bad(
            "at most 16 labels, each a name of 1 to 64 bytes and a value of at most 256".into(),
        );
    }
    if let Some(t) = o.ack_timeout
        && (t < Duration::from_millis(100) || t > MAX_ACK_TIMEOUT)
    {
        return bad(format!(
            "ack_timeout_ms={} is out of range; use 100 to {}",
            t.as_millis(),
            MAX_ACK_TIMEOUT.as_millis()
        ));
    }
    if let Some(d) = o.max_deliveries
        && !(1..=MAX_MAX_DELIVERIES).contains(&d)
    {
        return bad(format!(
            "max_deliveries={d} is out of range; use 1 to {MAX_MAX_DELIVERIES}"
        ));
    }
    Ok(())
}
