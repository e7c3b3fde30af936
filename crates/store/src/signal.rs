//! Change signals: how readers that wait learn that new messages became
//! visible.
//!
//! One node-wide signal moves with every change. Beside it, names are
//! spread over [`SHARDS`] shards by a hash, and each shard has a signal of
//! its own. When messages of topic `a.b.c` become visible, the signals of
//! the shards of `a`, `a.b` and `a.b.c` (each leading run of its tokens)
//! move. A reader waits on the shard of its pattern's tokens before the
//! first wildcard ([`TopicPattern::literal_prefix`]: `a.b.c` for the exact
//! topic, `a` for `a.>` or `a.*.c`), which every topic it matches starts
//! with. So a commit wakes the subscribers of its own topics and of the
//! patterns over them, and about 1/[`SHARDS`] of the others, not every
//! subscriber on the node. A reader whose patterns fall in several shards,
//! or start with a wildcard (`>`, `*.eu`), waits on the node-wide signal.
//!
//! The writer marks the shards of the messages it makes visible
//! ([`Signals::mark`]) and, once the commit is answered, moves the marked
//! shards' signals and the node-wide one ([`Signals::notify`]). Marks are
//! bits in atomics, so marking allocates nothing.
//!
//! [`TopicPattern::literal_prefix`]: switchyard_model::TopicPattern::literal_prefix

use std::sync::atomic::{AtomicU64, Ordering};

use switchyard_model::{Topic, TopicSet};
use tokio::sync::watch;

/// How many shards topic names are spread over.
pub const SHARDS: usize = 256;
const WORDS: usize = SHARDS / 64;

/// The node-wide change signal and one per shard of topic names.
pub(crate) struct Signals {
    all: watch::Sender<u64>,
    shards: Box<[watch::Sender<u64>]>,
    /// Shards with messages made visible since the last notify, one bit each.
    marked: [AtomicU64; WORDS],
}

/// The shard of a name (a topic, or a leading run of a topic's tokens):
/// XXH3 of its bytes, the same in every process.
pub fn shard_of(name: &str) -> usize {
    (xxhash_rust::xxh3::xxh3_64(name.as_bytes()) % SHARDS as u64) as usize
}

/// Moves a signal that someone waits on. One that nobody holds is left as
/// it is (moving it wakes no one and costs a lock per waiter list): a
/// receiver taken later starts from the value then, and its reader reads
/// before it first waits, after the messages were made visible.
fn bump(signal: &watch::Sender<u64>) {
    if signal.receiver_count() > 0 {
        signal.send_modify(|v| *v = v.wrapping_add(1));
    }
}

impl Signals {
    pub(crate) fn new() -> Signals {
        Signals {
            all: watch::channel(0).0,
            shards: (0..SHARDS).map(|_| watch::channel(0).0).collect(),
            marked: Default::default(),
        }
    }

    /// Marks the topics of `messages` ([`Signals::mark`]), each run of
    /// messages of one topic once.
    pub(crate) fn mark_all<'a>(&self, messages: impl IntoIterator<Item = &'a Topic>) {
        let mut last: Option<&Topic> = None;
        for topic in messages {
            if last != Some(topic) {
                self.mark(topic);
                last = Some(topic);
            }
        }
    }

    /// Notes that messages of `topic` became visible; the next
    /// [`Signals::notify`] wakes the readers of the shards of each leading
    /// run of its tokens.
    pub(crate) fn mark(&self, topic: &Topic) {
        let name = topic.as_str();
        for (end, _) in name.match_indices('.') {
            self.mark_shard(shard_of(&name[..end]));
        }
        self.mark_shard(shard_of(name));
    }

    fn mark_shard(&self, s: usize) {
        self.marked[s / 64].fetch_or(1 << (s % 64), Ordering::Relaxed);
    }

    /// Moves the node-wide signal and those of the shards marked since the
    /// last call.
    pub(crate) fn notify(&self) {
        bump(&self.all);
        for (w, word) in self.marked.iter().enumerate() {
            let mut bits = word.swap(0, Ordering::Relaxed);
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                bump(&self.shards[w * 64 + b]);
            }
        }
    }

    /// The node-wide signal: moves whenever messages become visible.
    pub(crate) fn all(&self) -> watch::Receiver<u64> {
        self.all.subscribe()
    }

    /// A signal that moves at least whenever messages matching `topics`
    /// become visible: the shard of the patterns' literal prefixes when
    /// they all fall in one, the node-wide one otherwise.
    pub(crate) fn for_topics(&self, topics: &TopicSet) -> watch::Receiver<u64> {
        let mut shards = topics
            .patterns()
            .iter()
            .map(|p| p.literal_prefix().map(shard_of));
        let shard = match shards.next() {
            Some(Some(first)) => shards.all(|s| s == Some(first)).then_some(first),
            _ => None,
        };
        match shard {
            Some(s) => self.shards[s].subscribe(),
            None => self.all.subscribe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(s: &str) -> Topic {
        s.parse().expect("valid topic")
    }

    fn set(patterns: &[&str]) -> TopicSet {
        TopicSet::new(
            patterns
                .iter()
                .map(|p| p.parse().expect("valid pattern"))
                .collect(),
        )
    }

    /// Two one-token topic names (each marks only its own shard) in
    /// different shards.
    fn two_shards() -> (String, String) {
        let a = "t0".to_owned();
        let b = (1..)
            .map(|i| format!("t{i}"))
            .find(|b| shard_of(b) != shard_of(&a))
            .expect("some name lands elsewhere");
        (a, b)
    }

    #[test]
    fn a_commit_wakes_its_topics_shard_and_the_node_wide_signal_only() {
        let s = Signals::new();
        let (a, b) = two_shards();
        let mut on_a = s.for_topics(&set(&[&a]));
        let on_b = s.for_topics(&set(&[&b]));
        let mut on_all = s.all();
        let mut wildcard = s.for_topics(&set(&[">"]));
        s.mark(&topic(&a));
        s.notify();
        assert!(on_a.has_changed().unwrap());
        assert!(!on_b.has_changed().unwrap());
        assert!(on_all.has_changed().unwrap());
        assert!(wildcard.has_changed().unwrap());
        on_a.mark_unchanged();
        on_all.mark_unchanged();
        wildcard.mark_unchanged();
        // The marks were taken: a notify with nothing marked moves only
        // the node-wide signal.
        s.notify();
        assert!(!on_a.has_changed().unwrap());
        assert!(!on_b.has_changed().unwrap());
        assert!(on_all.has_changed().unwrap());
        assert!(wildcard.has_changed().unwrap());
    }

    #[test]
    fn a_wildcard_pattern_waits_on_the_shard_of_its_literal_prefix() {
        let s = Signals::new();
        // `p.0.>` and `p.1.*` over topics below them.
        let mut under = s.for_topics(&set(&["p.0.>"]));
        let one = s.for_topics(&set(&["p.1.*"]));
        s.mark(&topic("p.0.x.y"));
        s.notify();
        assert!(under.has_changed().unwrap());
        under.mark_unchanged();
        let (p0, p1) = (shard_of("p.0"), shard_of("p.1"));
        // A one-token topic marks only its own shard: one outside both.
        let elsewhere = (0..)
            .map(|i| format!("q{i}"))
            .find(|n| shard_of(n) != p0 && shard_of(n) != p1)
            .unwrap();
        s.mark(&topic(&elsewhere));
        s.notify();
        assert!(!under.has_changed().unwrap());
        assert!(!one.has_changed().unwrap());
        s.mark(&topic("p.1.k"));
        s.notify();
        assert!(one.has_changed().unwrap());
        // A pattern that starts with a wildcard waits on the node-wide one.
        let mut any = s.for_topics(&set(&["*.k"]));
        s.notify();
        assert!(any.has_changed().unwrap());
        any.mark_unchanged();
    }

    #[test]
    fn marking_a_run_of_messages_marks_every_topic_in_it() {
        let s = Signals::new();
        let (a, b) = two_shards();
        let mut on_a = s.for_topics(&set(&[&a]));
        let mut on_b = s.for_topics(&set(&[&b]));
        let (ta, tb) = (topic(&a), topic(&b));
        s.mark_all([&ta, &ta, &tb, &ta]);
        s.notify();
        assert!(on_a.has_changed().unwrap());
        assert!(on_b.has_changed().unwrap());
        on_a.mark_unchanged();
        on_b.mark_unchanged();
        s.mark_all([&tb, &tb]);
        s.notify();
        assert!(!on_a.has_changed().unwrap());
        assert!(on_b.has_changed().unwrap());
    }

    #[test]
    fn topics_in_several_shards_wait_on_the_node_wide_signal() {
        let s = Signals::new();
        let (a, b) = two_shards();
        let both = s.for_topics(&set(&[&a, &b]));
        s.notify();
        assert!(both.has_changed().unwrap());
        // Two patterns for one topic stay on its shard.
        let twice = s.for_topics(&set(&[&a, &a]));
        s.notify();
        assert!(!twice.has_changed().unwrap());
        s.mark(&topic(&a));
        s.notify();
        assert!(twice.has_changed().unwrap());
    }

    #[test]
    fn every_shard_can_be_marked_and_woken() {
        let s = Signals::new();
        let mut names: Vec<Option<String>> = vec![None; SHARDS];
        let mut found = 0;
        for i in 0.. {
            let n = format!("s.{i}");
            let slot = &mut names[shard_of(&n)];
            if slot.is_none() {
                *slot = Some(n);
                found += 1;
                if found == SHARDS {
                    break;
                }
            }
        }
        let names: Vec<String> = names.into_iter().map(|n| n.expect("found")).collect();
        let mut rx: Vec<_> = names.iter().map(|n| s.for_topics(&set(&[n]))).collect();
        for n in &names {
            s.mark(&topic(n));
        }
        s.notify();
        assert!(rx.iter_mut().all(|r| r.has_changed().unwrap()));
    }

    #[test]
    fn dropping_the_signals_ends_every_wait() {
        let s = Signals::new();
        let one = s.for_topics(&set(&["x"]));
        let all = s.all();
        drop(s);
        assert!(one.has_changed().is_err());
        assert!(all.has_changed().is_err());
    }
}
