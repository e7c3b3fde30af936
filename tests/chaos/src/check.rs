//! The checker: what the clients recorded against what the nodes hold at
//! the end. Pure, so that each rule is tested on hand-made histories.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use crate::workload::{Attempt, Seen};

/// What a run ends with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Publishes acknowledged (every mode).
    pub acked: usize,
    /// Acknowledged messages missing where they must be: a `quorum` or
    /// `all` message missing on a live node, or a `local` one whose origin
    /// kept its disk.
    pub lost: usize,
    /// `acks=local` messages missing because their origin lost its disk.
    pub local_lost_disk: usize,
    /// Payloads stored under two ids (an idempotent retry that stored a
    /// second copy) although every node that stored one had checked the
    /// key with every member.
    pub stored_twice: usize,
    /// Payloads stored under two ids by a node that said it could not
    /// check the key with every member (`key_checked: false`): what the
    /// API allows across a partition, counted apart.
    pub stored_twice_unchecked: usize,
    /// Messages a stream delivered more than once.
    pub stream_repeats: usize,
    /// Messages of the final log a stream never delivered.
    pub stream_gaps: usize,
    /// Messages a stream delivered out of their origin's order.
    pub order_violations: usize,
    /// Messages of the final log the group never acknowledged.
    pub group_missing: usize,
    /// Group acknowledgements beyond the first of each message.
    pub group_redelivered: usize,
    /// Live nodes whose log differs from the others'.
    pub diverged_nodes: usize,
    /// Longest time a `quorum` publisher waited between two
    /// acknowledgements (its node failing, then another taking over).
    pub max_failover: Duration,
    /// Examples of each violation, for the report.
    pub examples: Vec<String>,
}

impl Verdict {
    /// Whether nothing was violated.
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.stored_twice == 0
            && self.stream_repeats == 0
            && self.stream_gaps == 0
            && self.order_violations == 0
            && self.group_missing == 0
            && self.diverged_nodes == 0
    }
}

fn origin_of(id: &str) -> &str {
    id.rsplit_once('-').map_or(id, |(o, _)| o)
}

/// Checks the run. `logs` holds each live node's messages of the clients'
/// topics; `wiped` the origins whose data directory was deleted.
pub fn check(
    published: &[Vec<Attempt>],
    logs: &[Vec<Seen>],
    streams: &[Vec<Seen>],
    group_acked: &[(String, String)],
    wiped: &[String],
) -> Verdict {
    let mut v = Verdict::default();
    let example = |v: &mut Verdict, s: String| {
        if v.examples.len() < 20 {
            v.examples.push(s);
        }
    };
    // The union of the logs, by id.
    let mut union: BTreeMap<&str, &Seen> = BTreeMap::new();
    for log in logs {
        for m in log {
            union.insert(&m.id, m);
        }
    }
    let held: Vec<HashSet<&str>> = logs
        .iter()
        .map(|l| l.iter().map(|m| m.id.as_str()).collect())
        .collect();
    for (i, h) in held.iter().enumerate() {
        if h.len() != union.len() {
            v.diverged_nodes += 1;
            example(
                &mut v,
                format!(
                    "a live node (#{i}) holds {} of the {} messages",
                    h.len(),
                    union.len()
                ),
            );
        }
    }
    // The longest a `quorum` publisher waited between two acknowledgements.
    for attempts in published {
        let times: Vec<Duration> = attempts
            .iter()
            .filter(|a| a.acks == "quorum")
            .filter_map(|a| a.acked_at)
            .collect();
        for w in times.windows(2) {
            v.max_failover = v.max_failover.max(w[1].saturating_sub(w[0]));
        }
    }
    // Acknowledged messages.
    for attempt in published.iter().flatten() {
        let Some(id) = &attempt.acked else { continue };
        v.acked += 1;
        let missing_on = held.iter().filter(|h| !h.contains(id.as_str())).count();
        if missing_on == 0 {
            continue;
        }
        if attempt.acks == "local" && wiped.iter().any(|w| w == origin_of(id)) {
            v.local_lost_disk += 1;
        } else {
            v.lost += 1;
            example(
                &mut v,
                format!(
                    "acknowledged {} ({}, acks={}) missing on {missing_on} live nodes",
                    attempt.payload, id, attempt.acks
                ),
            );
        }
    }
    // One id per payload.
    let mut ids_of: HashMap<&str, HashSet<&str>> = HashMap::new();
    for m in union.values() {
        ids_of.entry(&m.payload).or_default().insert(&m.id);
    }
    let unchecked: HashSet<&str> = published
        .iter()
        .flatten()
        .filter(|a| a.unchecked)
        .map(|a| a.payload.as_str())
        .collect();
    let attempt_of: HashMap<&str, &Attempt> = published
        .iter()
        .flatten()
        .map(|a| (a.payload.as_str(), a))
        .collect();
    for (payload, ids) in &ids_of {
        if ids.len() > 1 {
            if unchecked.contains(payload) {
                v.stored_twice_unchecked += 1;
            } else {
                v.stored_twice += 1;
                let tries = attempt_of
                    .get(payload)
                    .map_or_else(String::new, |a| a.tries_text());
                example(
                    &mut v,
                    format!("{payload} stored as {ids:?}; its tries: {tries}"),
                );
            }
        }
    }
    // Streams: each message once, in origin order, all of the log.
    for (i, s) in streams.iter().enumerate() {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut last: HashMap<&str, u64> = HashMap::new();
        for m in s {
            if !seen.insert(&m.id) {
                v.stream_repeats += 1;
                example(&mut v, format!("stream {i} repeated {}", m.id));
                continue;
            }
            let prev = last.insert(&m.origin, m.seq).unwrap_or(0);
            if m.seq <= prev {
                v.order_violations += 1;
                example(
                    &mut v,
                    format!("stream {i}: {} after seq {prev} of its origin", m.id),
                );
            }
        }
        let gaps = union.keys().filter(|id| !seen.contains(*id)).count();
        if gaps > 0 {
            v.stream_gaps += gaps;
            example(
                &mut v,
                format!("stream {i} misses {gaps} messages of the log"),
            );
        }
    }
    // The group: every message acknowledged at least once.
    let mut acked_by_group: HashMap<&str, usize> = HashMap::new();
    for (id, _) in group_acked {
        *acked_by_group.entry(id).or_insert(0) += 1;
    }
    v.group_redelivered = acked_by_group.values().map(|n| n - 1).sum();
    let missing: Vec<&&str> = union
        .keys()
        .filter(|id| !acked_by_group.contains_key(*id))
        .collect();
    v.group_missing = missing.len();
    if let Some(id) = missing.first() {
        example(
            &mut v,
            format!(
                "the group never acknowledged {id} (and {} more)",
                missing.len() - 1
            ),
        );
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(id: &str, payload: &str) -> Seen {
        let (origin, seq) = id.rsplit_once('-').unwrap();
        Seen {
            id: id.into(),
            payload: payload.into(),
            origin: origin.into(),
            seq: seq.parse().unwrap(),
        }
    }

    fn acked(payload: &str, acks: &'static str, id: &str, at_ms: u64) -> Attempt {
        Attempt {
            payload: payload.into(),
            acks,
            acked: Some(id.into()),
            tries: 1,
            acked_at: Some(Duration::from_millis(at_ms)),
            unchecked: false,
            tries_seen: Vec::new(),
        }
    }

    fn acks_all(log: &[Seen]) -> Vec<(String, String)> {
        log.iter()
            .map(|m| (m.id.clone(), m.payload.clone()))
            .collect()
    }

    #[test]
    fn a_clean_history_passes() {
        let log = vec![
            seen("a-1", "p0-0"),
            seen("b-1", "p1-0"),
            seen("a-2", "p0-1"),
        ];
        let published = vec![vec![
            acked("p0-0", "quorum", "a-1", 100),
            acked("p0-1", "quorum", "a-2", 700),
        ]];
        let v = check(
            &published,
            &[log.clone(), log.clone()],
            std::slice::from_ref(&log),
            &acks_all(&log),
            &[],
        );
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.acked, 2);
        assert_eq!(v.max_failover, Duration::from_millis(600));
    }

    #[test]
    fn each_violation_is_counted() {
        let full = vec![
            seen("a-1", "p0-0"),
            seen("a-2", "p0-1"),
            seen("b-1", "p0-1"),
        ];
        let partial = vec![seen("a-1", "p0-0")];
        let published = vec![vec![
            acked("p0-0", "quorum", "a-1", 0),
            acked("p0-1", "all", "a-2", 0),
            acked("p0-9", "local", "c-1", 0),
            acked("p0-8", "local", "a-9", 0),
        ]];
        let stream = vec![
            seen("a-2", "p0-1"),
            seen("a-1", "p0-0"),
            seen("a-1", "p0-0"),
        ];
        let v = check(
            &published,
            &[full.clone(), partial],
            &[stream],
            &[("a-1".into(), "p0-0".into()), ("a-1".into(), "p0-0".into())],
            &["c".into()],
        );
        // a-2 missing on one node (all), a-9 missing and a kept its disk.
        assert_eq!(v.lost, 2, "{v:?}");
        assert_eq!(v.local_lost_disk, 1);
        assert_eq!(v.diverged_nodes, 1);
        assert_eq!(v.stored_twice, 1);
        assert_eq!(v.stream_repeats, 1);
        assert_eq!(v.order_violations, 1);
        assert_eq!(v.stream_gaps, 1);
        assert_eq!(v.group_missing, 2);
        assert_eq!(v.group_redelivered, 1);
        assert!(!v.ok());
    }

    #[test]
    fn a_second_copy_is_allowed_only_where_the_key_was_not_checked() {
        let log = vec![
            seen("a-1", "p0-0"),
            seen("b-1", "p0-0"),
            seen("b-2", "p0-1"),
        ];
        let mut first = acked("p0-0", "quorum", "b-1", 0);
        first.unchecked = true;
        let published = vec![vec![first, acked("p0-1", "quorum", "b-2", 0)]];
        let v = check(
            &published,
            std::slice::from_ref(&log),
            std::slice::from_ref(&log),
            &acks_all(&log),
            &[],
        );
        assert_eq!((v.stored_twice, v.stored_twice_unchecked), (0, 1), "{v:?}");
        assert!(v.ok(), "{v:?}");
        let published = vec![vec![
            acked("p0-0", "quorum", "b-1", 0),
            acked("p0-1", "quorum", "b-2", 0),
        ]];
        let v = check(
            &published,
            std::slice::from_ref(&log),
            std::slice::from_ref(&log),
            &acks_all(&log),
            &[],
        );
        assert_eq!((v.stored_twice, v.stored_twice_unchecked), (1, 0), "{v:?}");
        assert!(!v.ok());
    }
}
