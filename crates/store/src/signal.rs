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

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;

use futures_util::task::AtomicWaker;
use switchyard_model::{Topic, TopicSet};
use tokio::sync::watch;

/// How many shards topic names are spread over.
pub const SHARDS: usize = 256;
const WORDS: usize = SHARDS / 64;

/// The node-wide change signal and one per shard of topic names.
pub(crate) struct Signals {
    all: Signal,
    shards: Box<[Signal]>,
    /// Shards with messages made visible since the last notify, one bit each.
    marked: [AtomicU64; WORDS],
}

/// One change signal, which readers wait on in two ways: a `watch`
/// channel (for the few long-lived tasks that select over it), and
/// [`Changes`], whose reader registers once for its life, not once per
/// wait. A subscription waits after nearly every delivery, and a `watch`
/// wait costs a lock to join the waiter list, another when it is woken
/// and a third when the wait's future is dropped.
struct Signal {
    watch: watch::Sender<u64>,
    waits: Arc<Waits>,
}

impl Signal {
    fn new() -> Signal {
        Signal {
            watch: watch::channel(0).0,
            waits: Arc::default(),
        }
    }

    fn notify(&self) {
        bump(&self.watch);
        self.waits.notify();
    }
}

/// The version of a signal and the wakers of its [`Changes`] readers.
#[derive(Default)]
struct Waits {
    version: AtomicU64,
    /// Set when the store is dropped: every wait ends.
    closed: AtomicBool,
    readers: parking_lot::Mutex<slab::Slab<Arc<AtomicWaker>>>,
}

impl Waits {
    /// Moves the version, then wakes every reader that waits (a reader
    /// that does not holds no waker, and costs an atomic operation).
    fn notify(&self) {
        self.version.fetch_add(1, Ordering::SeqCst);
        let readers = self.readers.lock();
        for (_, waker) in readers.iter() {
            waker.wake();
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.notify();
    }
}

/// The store has been dropped: no change will come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// A reader's view of a change signal ([`crate::Store::changes_for`]): a
/// version seen, and a waker registered with the signal for the reader's
/// life. Like a `watch` receiver without its value.
pub struct Changes {
    waits: Arc<Waits>,
    waker: Arc<AtomicWaker>,
    key: usize,
    seen: u64,
}

impl Changes {
    fn new(waits: &Arc<Waits>) -> Changes {
        let waker = Arc::new(AtomicWaker::new());
        let key = waits.readers.lock().insert(waker.clone());
        Changes {
            seen: waits.version.load(Ordering::SeqCst),
            waits: waits.clone(),
            waker,
            key,
        }
    }

    /// Whether the signal moved since the version last seen.
    pub fn has_changed(&self) -> Result<bool, Closed> {
        if self.waits.closed.load(Ordering::SeqCst) {
            return Err(Closed);
        }
        Ok(self.waits.version.load(Ordering::SeqCst) != self.seen)
    }

    /// Marks the current version seen.
    pub fn mark_seen(&mut self) {
        self.seen = self.waits.version.load(Ordering::SeqCst);
    }

    /// Waits until the signal moves past the version seen, and marks the
    /// new version seen. Cancel-safe.
    pub async fn changed(&mut self) -> Result<(), Closed> {
        poll_fn(|cx| {
            // Registered before the version is read: a notify that moves
            // the version after the read wakes this waker.
            self.waker.register(cx.waker());
            if self.waits.closed.load(Ordering::SeqCst) {
                return Poll::Ready(Err(Closed));
            }
            let now = self.waits.version.load(Ordering::SeqCst);
            if now == self.seen {
                return Poll::Pending;
            }
            self.seen = now;
            // Not waiting any more: a later notify must not wake the task
            // while it does something else.
            drop(self.waker.take());
            Poll::Ready(Ok(()))
        })
        .await
    }
}

impl Drop for Changes {
    fn drop(&mut self) {
        self.waits.readers.lock().try_remove(self.key);
    }
}

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes").field("seen", &self.seen).finish()
    }
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
            all: Signal::new(),
            shards: (0..SHARDS).map(|_| Signal::new()).collect(),
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
        self.all.notify();
        for (w, word) in self.marked.iter().enumerate() {
            let mut bits = word.swap(0, Ordering::Relaxed);
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                self.shards[w * 64 + b].notify();
            }
        }
    }

    /// The node-wide signal: moves whenever messages become visible.
    pub(crate) fn all(&self) -> watch::Receiver<u64> {
        self.all.watch.subscribe()
    }

    /// A reader of the signal that moves at least whenever messages
    /// matching `topics` become visible (see [`Signals::signal_for`]).
    pub(crate) fn for_topics(&self, topics: &TopicSet) -> Changes {
        Changes::new(&self.signal_for(topics).waits)
    }

    /// The signal that moves at least whenever messages matching `topics`
    /// become visible: the shard of the patterns' literal prefixes when
    /// they all fall in one, the node-wide one otherwise.
    fn signal_for(&self, topics: &TopicSet) -> &Signal {
        let mut shards = topics
            .patterns()
            .iter()
            .map(|p| p.literal_prefix().map(shard_of));
        let shard = match shards.next() {
            Some(Some(first)) => shards.all(|s| s == Some(first)).then_some(first),
            _ => None,
        };
        match shard {
            Some(s) => &self.shards[s],
            None => &self.all,
        }
    }
}

impl Drop for Signals {
    /// Ends every wait: no change comes once the store is gone.
    fn drop(&mut self) {
        self.all.waits.close();
        for s in &self.shards {
            s.waits.close();
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
        on_a.mark_seen();
        on_all.mark_unchanged();
        wildcard.mark_seen();
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
        under.mark_seen();
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
        any.mark_seen();
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
        on_a.mark_seen();
        on_b.mark_seen();
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

    /// Counts the wake-ups of a task.
    #[derive(Default)]
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn woken(c: &Arc<Count>) -> usize {
        c.0.load(Ordering::SeqCst)
    }

    #[test]
    fn a_reader_is_woken_by_each_notify_it_waits_for_and_by_no_other() {
        use std::future::Future;
        use std::task::{Context, Waker};

        let s = Signals::new();
        let mut rx = s.for_topics(&set(&["w"]));
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);

        for round in 1..=3 {
            let mut wait = std::pin::pin!(rx.changed());
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            s.mark(&topic("w"));
            s.notify();
            assert_eq!(woken(&count), round);
            assert_eq!(wait.as_mut().poll(&mut cx), Poll::Ready(Ok(())));
        }
        assert!(!rx.has_changed().unwrap());

        // Not waiting: a notify wakes nothing, and the next wait returns at
        // once, without leaving its waker behind.
        s.mark(&topic("w"));
        s.notify();
        assert_eq!(woken(&count), 3);
        assert!(rx.has_changed().unwrap());
        {
            let mut wait = std::pin::pin!(rx.changed());
            assert_eq!(wait.as_mut().poll(&mut cx), Poll::Ready(Ok(())));
        }
        s.mark(&topic("w"));
        s.notify();
        assert_eq!(woken(&count), 3, "a finished wait leaves no waker");

        // The mark seen moves with `mark_seen`.
        assert!(rx.has_changed().unwrap());
        rx.mark_seen();
        assert!(!rx.has_changed().unwrap());
    }

    #[test]
    fn a_dropped_reader_leaves_the_signal_and_closing_ends_waits() {
        use std::future::Future;
        use std::task::{Context, Waker};

        let s = Signals::new();
        let readers = |s: &Signals| s.signal_for(&set(&["r"])).waits.readers.lock().len();
        let a = s.for_topics(&set(&["r"]));
        let mut b = s.for_topics(&set(&["r"]));
        assert_eq!(readers(&s), 2);
        drop(a);
        assert_eq!(readers(&s), 1);

        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let waits = s.signal_for(&set(&["r"])).waits.clone();
        {
            let mut wait = std::pin::pin!(b.changed());
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            drop(s);
            assert_eq!(woken(&count), 1);
            assert_eq!(wait.as_mut().poll(&mut cx), Poll::Ready(Err(Closed)));
        }
        drop(b);
        assert_eq!(waits.readers.lock().len(), 0);
    }
}
