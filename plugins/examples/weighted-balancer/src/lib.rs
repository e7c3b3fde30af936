//! Example plugin (`pick`): spreads a consumer group's messages over its
//! members in proportion to their weights, with smooth weighted round-robin.
//!
//! Configuration (JSON, optional; empty means all defaults):
//!
//! ```json
//! {"label": "weight", "max_inflight": 100}
//! ```
//!
//! * `label`: the member label holding the weight (default `weight`; a
//!   member that connected with `weight=3` gets weight 3). A member without
//!   the label, or whose label is not a whole number, gets the weight the
//!   node reports for it (1 unless the member asked for another).
//! * `max_inflight`: skip members with this many unacknowledged messages or
//!   more (default: no limit).
//!
//! The choice is the smooth weighted round-robin of nginx, keyed by member
//! id: each call adds every eligible member's weight to its running score,
//! picks the highest score (the first listed on a tie) and subtracts the
//! total weight from the winner. Over any run of calls the split follows the
//! weights exactly (3:1 gives 3 of every 4 messages to the first member),
//! spread evenly rather than in bursts, whatever the in-flight counts are.
//! Scores belong to the instance: each instance of the binding balances on
//! its own.
//!
//! Returns no choice (the group's default strategy chooses) when there are
//! no members, when every weight is 0, or when every member is at
//! `max_inflight`. Counter: `saturated` (calls where every member with a
//! weight was at `max_inflight`).

use std::collections::HashMap;

use serde::Deserialize;
use switchyard_plugin::{Candidate, Message, Pick, export_pick, metrics};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_label")]
    label: String,
    #[serde(default)]
    max_inflight: Option<u32>,
}

fn default_label() -> String {
    "weight".into()
}

/// The plugin state: the configuration and each member's running score.
#[derive(Debug)]
struct WeightedBalancer {
    label: String,
    max_inflight: Option<u32>,
    scores: HashMap<String, i64>,
}

impl WeightedBalancer {
    fn parse(config: &str) -> Result<Self, String> {
        let c: Config = if config.trim().is_empty() {
            Config {
                label: default_label(),
                max_inflight: None,
            }
        } else {
            serde_json::from_str(config)
                .map_err(|e| format!("invalid weighted-balancer config: {e}"))?
        };
        if c.label.is_empty() {
            return Err("invalid weighted-balancer config: label is empty".into());
        }
        if c.max_inflight == Some(0) {
            return Err(
                "invalid weighted-balancer config: max_inflight 0 would exclude every member"
                    .into(),
            );
        }
        Ok(WeightedBalancer {
            label: c.label,
            max_inflight: c.max_inflight,
            scores: HashMap::new(),
        })
    }

    fn weight(&self, c: &Candidate) -> u32 {
        c.label(&self.label)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(c.weight)
    }

    fn choose(&mut self, candidates: &[Candidate]) -> Option<u32> {
        let mut total: i64 = 0;
        let mut best: Option<(usize, i64)> = None;
        let mut weighted = false;
        for (i, c) in candidates.iter().enumerate() {
            let w = self.weight(c);
            if w == 0 {
                continue;
            }
            weighted = true;
            if self.max_inflight.is_some_and(|max| c.inflight >= max) {
                continue;
            }
            let w = i64::from(w);
            let score = match self.scores.get_mut(c.id.as_str()) {
                Some(s) => {
                    *s += w;
                    *s
                }
                None => {
                    self.scores.insert(c.id.clone(), w);
                    w
                }
            };
            total += w;
            if best.is_none_or(|(_, top)| score > top) {
                best = Some((i, score));
            }
        }
        let Some((i, _)) = best else {
            if weighted {
                metrics::add("saturated", 1);
            }
            return None;
        };
        if let Some(s) = self.scores.get_mut(candidates[i].id.as_str()) {
            *s -= total;
        }
        self.forget_departed(candidates);
        u32::try_from(i).ok()
    }

    /// Drops the scores of members that have left, once they dominate the
    /// table, so that a group with churning ids does not grow it forever.
    fn forget_departed(&mut self, candidates: &[Candidate]) {
        if self.scores.len() > 64 && self.scores.len() > 4 * candidates.len() {
            let present: std::collections::HashSet<&str> =
                candidates.iter().map(|c| c.id.as_str()).collect();
            self.scores.retain(|id, _| present.contains(id.as_str()));
        }
    }
}

impl Pick for WeightedBalancer {
    fn new(config: &str) -> Result<Self, String> {
        WeightedBalancer::parse(config)
    }

    fn pick(&mut self, _msg: Message, candidates: &[Candidate]) -> Option<u32> {
        self.choose(candidates)
    }
}

export_pick!(WeightedBalancer);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_plugin::Header;

    fn cand(id: &str, weight: u32, labels: &[(&str, &str)], inflight: u32) -> Candidate {
        Candidate {
            id: id.into(),
            inflight,
            weight,
            labels: labels.iter().map(|(n, v)| Header::new(*n, *v)).collect(),
        }
    }

    fn counts(b: &mut WeightedBalancer, cands: &[Candidate], n: usize) -> Vec<usize> {
        let mut out = vec![0; cands.len()];
        for _ in 0..n {
            out[b.choose(cands).unwrap() as usize] += 1;
        }
        out
    }

    #[test]
    fn label_weights_split_exactly() {
        let mut b = WeightedBalancer::new("").unwrap();
        let cands = [
            cand("a", 1, &[("weight", "3")], 0),
            cand("b", 1, &[("zone", "eu")], 0),
        ];
        assert_eq!(counts(&mut b, &cands, 400), vec![300, 100]);
        // Smooth: never more than 3 in a row for a.
        let picks: Vec<u32> = (0..8).map(|_| b.choose(&cands).unwrap()).collect();
        assert_eq!(picks, vec![0, 0, 1, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn field_weights_and_varying_inflight() {
        let mut b = WeightedBalancer::new(r#"{"label": "w"}"#).unwrap();
        let mut totals = [0usize; 3];
        for round in 0..600u32 {
            let cands = [
                cand("x", 1, &[], round % 7),
                cand("y", 2, &[("w", "bad")], round % 3),
                cand("z", 3, &[], 0),
            ];
            totals[b.choose(&cands).unwrap() as usize] += 1;
        }
        assert_eq!(totals, [100, 200, 300]);
    }

    #[test]
    fn order_changes_do_not_matter() {
        let mut b = WeightedBalancer::new("").unwrap();
        let a = cand("a", 3, &[], 0);
        let c = cand("c", 1, &[], 0);
        let mut got = HashMap::new();
        for i in 0..400 {
            let list = if i % 2 == 0 {
                vec![a.clone(), c.clone()]
            } else {
                vec![c.clone(), a.clone()]
            };
            let idx = b.choose(&list).unwrap() as usize;
            *got.entry(list[idx].id.clone()).or_insert(0) += 1;
        }
        assert_eq!(got["a"], 300);
        assert_eq!(got["c"], 100);
    }

    #[test]
    fn max_inflight_and_none_cases() {
        let mut b = WeightedBalancer::new(r#"{"max_inflight": 10}"#).unwrap();
        assert_eq!(b.choose(&[]), None);
        assert_eq!(
            b.choose(&[cand("a", 0, &[], 0), cand("b", 0, &[], 0)]),
            None
        );
        assert_eq!(b.choose(&[cand("a", 5, &[("weight", "0")], 0)]), None);
        let busy = [cand("a", 9, &[], 10), cand("b", 1, &[], 3)];
        assert_eq!(counts(&mut b, &busy, 10), vec![0, 10]);
        assert_eq!(
            b.choose(&[cand("a", 1, &[], 10), cand("b", 1, &[], 11)]),
            None
        );
        assert_eq!(switchyard_plugin::testing::metric("saturated"), 1);
    }

    #[test]
    fn departed_members_are_forgotten() {
        let mut b = WeightedBalancer::new("").unwrap();
        for i in 0..1000 {
            b.choose(&[cand(&format!("m{i}"), 1, &[], 0), cand("stay", 1, &[], 0)]);
        }
        assert!(b.scores.len() <= 65, "{}", b.scores.len());
    }

    #[test]
    fn bad_configs() {
        for bad in [
            "x",
            r#"{"label": ""}"#,
            r#"{"max_inflight": 0}"#,
            r#"{"max": 1}"#,
        ] {
            assert!(WeightedBalancer::new(bad).is_err(), "{bad}");
        }
    }
}
