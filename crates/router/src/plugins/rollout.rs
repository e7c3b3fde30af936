//! The cluster binding table: a last-writer-wins map from binding name to
//! its latest change, ordered by [`Stamp`] (hybrid logical clock time, then
//! node id), so every node that has seen the same changes holds the same
//! table whatever the order it saw them in. Pure: no I/O and no clock; the
//! caller supplies stamps.

use std::collections::BTreeMap;

use switchyard_cluster::rollout::{Entry, Stamp};

/// Most deleted bindings the table remembers. The oldest are forgotten
/// beyond it: a node that was away through that many deletions may bring
/// a deleted binding back (it is listed again, and can be deleted again).
pub const MAX_TOMBSTONES: usize = 1024;

/// What this node runs of one table entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The entry's version runs here (or, for a tombstone, nothing does).
    Done,
    /// Not applied yet: its component is being fetched, or no live peer
    /// holds it.
    Pending(String),
    /// A binding of the same name made on this node alone (API with
    /// `scope=node`, or the configuration file) takes precedence here.
    Shadowed(String),
    /// This node refused the version (it does not compile, `init` failed,
    /// it does not fit the node's limits). Tried again only for a newer
    /// version.
    Refused(String),
}

/// The table, with what this node made of each entry.
#[derive(Debug, Default)]
pub struct Table {
    entries: BTreeMap<String, (Entry, Applied)>,
}

impl Table {
    /// The entry of `name`, with what this node made of it.
    pub fn get(&self, name: &str) -> Option<&(Entry, Applied)> {
        self.entries.get(name)
    }

    /// Every entry, by name.
    pub fn iter(&self) -> impl Iterator<Item = &(Entry, Applied)> {
        self.entries.values()
    }

    /// Takes `entry` when it is newer than what the table holds for its
    /// name (it is then not applied yet); returns whether it did.
    pub fn merge(&mut self, entry: Entry) -> bool {
        if self
            .entries
            .get(&entry.name)
            .is_some_and(|(cur, _)| cur.stamp >= entry.stamp)
        {
            return false;
        }
        let applied = Applied::Pending("not applied yet".into());
        self.entries.insert(entry.name.clone(), (entry, applied));
        true
    }

    /// Records what this node made of the entry of `name` at `stamp`;
    /// ignored when the table moved on to a newer one meanwhile.
    pub fn set_applied(&mut self, name: &str, stamp: Stamp, applied: Applied) {
        if let Some((e, a)) = self.entries.get_mut(name)
            && e.stamp == stamp
        {
            *a = applied;
        }
    }

    /// Name and stamp of every entry.
    pub fn digest(&self) -> Vec<(String, Stamp)> {
        self.entries
            .values()
            .map(|(e, _)| (e.name.clone(), e.stamp))
            .collect()
    }

    /// The entries newer than `digest`'s, or missing from it.
    pub fn newer_than(&self, digest: &[(String, Stamp)]) -> Vec<Entry> {
        let theirs: BTreeMap<&str, Stamp> = digest.iter().map(|(n, s)| (n.as_str(), *s)).collect();
        self.entries
            .values()
            .filter(|(e, _)| theirs.get(e.name.as_str()).is_none_or(|s| *s < e.stamp))
            .map(|(e, _)| e.clone())
            .collect()
    }

    /// Whether `digest` holds an entry newer than this table's (or one it
    /// lacks): then its sender has changes to pull.
    pub fn behind(&self, digest: &[(String, Stamp)]) -> bool {
        digest.iter().any(|(n, s)| {
            self.entries
                .get(n.as_str())
                .is_none_or(|(e, _)| e.stamp < *s)
        })
    }

    /// The highest stamp in the table (a clock resumes past it).
    pub fn max_stamp(&self) -> Stamp {
        self.entries
            .values()
            .map(|(e, _)| e.stamp)
            .max()
            .unwrap_or_default()
    }

    /// Forgets the oldest tombstones beyond [`MAX_TOMBSTONES`]; returns
    /// their names.
    pub fn forget_old_tombstones(&mut self) -> Vec<String> {
        let mut dead: Vec<(Stamp, String)> = self
            .entries
            .values()
            .filter(|(e, _)| e.binding.is_none())
            .map(|(e, _)| (e.stamp, e.name.clone()))
            .collect();
        if dead.len() <= MAX_TOMBSTONES {
            return Vec::new();
        }
        dead.sort();
        let excess = dead.len() - MAX_TOMBSTONES;
        let gone: Vec<String> = dead.into_iter().take(excess).map(|(_, n)| n).collect();
        for n in &gone {
            self.entries.remove(n);
        }
        gone
    }

    /// Whether an entry refers to component `sha256`.
    pub fn uses_component(&self, sha256: &str) -> bool {
        self.entries
            .values()
            .any(|(e, _)| e.binding.as_ref().is_some_and(|b| b.sha256 == sha256))
    }
}

#[cfg(test)]
mod tests {
    use switchyard_cluster::rollout::Desired;

    use super::*;

    fn desired(sha: &str, version: u64) -> Desired {
        Desired {
            hook: "route".into(),
            topics: vec![">".into()],
            config: String::new(),
            on_error: "pass".into(),
            fuel: 1,
            memory_bytes: 1 << 20,
            max_instances: 1,
            max_host_calls: 1,
            sha256: sha.into(),
            size: 1,
            version,
        }
    }

    fn entry(name: &str, time: u64, node: u64, sha: Option<&str>) -> Entry {
        Entry {
            name: name.into(),
            stamp: Stamp { time, node },
            binding: sha.map(|s| desired(s, 1)),
        }
    }

    #[test]
    fn the_highest_stamp_wins_in_any_order() {
        let changes = [
            entry("p", 10, 1, Some("a")),
            entry("p", 12, 2, Some("b")),
            // Same time, higher node id: wins the tie.
            entry("p", 12, 3, Some("c")),
            entry("q", 5, 1, Some("d")),
            entry("q", 7, 2, None),
        ];
        let mut orders = vec![changes.to_vec()];
        let mut rev = changes.to_vec();
        rev.reverse();
        orders.push(rev);
        orders.push(vec![
            changes[2].clone(),
            changes[4].clone(),
            changes[0].clone(),
            changes[3].clone(),
            changes[1].clone(),
        ]);
        let tables: Vec<Vec<(String, Stamp)>> = orders
            .into_iter()
            .map(|order| {
                let mut t = Table::default();
                for e in order {
                    t.merge(e);
                }
                t.digest()
            })
            .collect();
        assert!(tables.windows(2).all(|w| w[0] == w[1]));
        let mut t = Table::default();
        for e in changes {
            t.merge(e);
        }
        let p = &t.get("p").unwrap().0;
        assert_eq!(p.binding.as_ref().unwrap().sha256, "c");
        assert!(t.get("q").unwrap().0.binding.is_none());
        assert_eq!(t.max_stamp(), Stamp { time: 12, node: 3 });
    }

    #[test]
    fn an_older_or_equal_entry_changes_nothing() {
        let mut t = Table::default();
        assert!(t.merge(entry("p", 10, 2, Some("a"))));
        t.set_applied("p", Stamp { time: 10, node: 2 }, Applied::Done);
        assert!(!t.merge(entry("p", 10, 2, Some("other"))));
        assert!(!t.merge(entry("p", 10, 1, Some("older"))));
        assert!(!t.merge(entry("p", 9, 9, None)));
        let (e, a) = t.get("p").unwrap();
        assert_eq!(e.binding.as_ref().unwrap().sha256, "a");
        assert_eq!(a, &Applied::Done);
    }

    #[test]
    fn a_stale_applied_result_is_ignored() {
        let mut t = Table::default();
        t.merge(entry("p", 10, 1, Some("a")));
        t.merge(entry("p", 11, 1, Some("b")));
        t.set_applied("p", Stamp { time: 10, node: 1 }, Applied::Done);
        assert!(matches!(t.get("p").unwrap().1, Applied::Pending(_)));
    }

    #[test]
    fn digests_tell_who_is_behind_and_what_to_send() {
        let mut a = Table::default();
        let mut b = Table::default();
        a.merge(entry("p", 10, 1, Some("a")));
        a.merge(entry("q", 3, 1, Some("q")));
        b.merge(entry("p", 11, 2, Some("b")));
        b.merge(entry("r", 1, 2, None));
        // Each side lacks something of the other's.
        assert!(a.behind(&b.digest()) && b.behind(&a.digest()));
        let to_a = b.newer_than(&a.digest());
        let to_b = a.newer_than(&b.digest());
        assert_eq!(
            to_a.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["p", "r"]
        );
        assert_eq!(
            to_b.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["q"]
        );
        for e in to_a {
            a.merge(e);
        }
        for e in to_b {
            b.merge(e);
        }
        assert_eq!(a.digest(), b.digest());
        assert!(!a.behind(&b.digest()) && !b.behind(&a.digest()));
        assert!(a.newer_than(&b.digest()).is_empty());
    }

    #[test]
    fn only_the_newest_tombstones_are_kept() {
        let mut t = Table::default();
        for i in 0..(MAX_TOMBSTONES as u64 + 3) {
            t.merge(entry(&format!("dead{i}"), 100 + i, 1, None));
        }
        t.merge(entry("alive", 1, 1, Some("x")));
        let gone = t.forget_old_tombstones();
        assert_eq!(gone, ["dead0", "dead1", "dead2"]);
        assert_eq!(t.digest().len(), MAX_TOMBSTONES + 1);
        assert!(t.get("alive").is_some());
        assert!(t.uses_component("x") && !t.uses_component("y"));
        assert!(t.forget_old_tombstones().is_empty());
    }
}
