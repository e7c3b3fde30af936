use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use switchyard_cluster::Cluster;
use switchyard_model::{Cursor, Message, NodeId, Topic, TopicSet};
use switchyard_store::{Gap, ReadBatch, ReadQuery, Store};

use crate::RouterError;
use crate::Unavailable;
use crate::feeds::{Interest, InterestGuard};
use crate::plugins::{Filter, Filtered};

/// What a subscription delivers next: removed ranges first, then messages.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Ranges that retention removed before they could be delivered.
    pub gaps: Vec<Gap>,
    /// Messages in delivery order.
    pub messages: Vec<Arc<Message>>,
    /// The position before this delivery.
    pub start: Cursor,
    /// The position after the whole delivery.
    pub cursor: Cursor,
    /// Messages the subscription's filter skipped in this delivery. A
    /// delivery may hold only skipped messages: the position still moved.
    pub skipped: usize,
}

impl Delivery {
    /// Calls `f` with each message and the cursor just after it, for SSE
    /// `id:` lines: the start advanced message by message, and the
    /// delivery's end cursor for the last one (it may be further ahead,
    /// past messages that did not match). No copy of the cursor per message.
    pub fn for_each_with_cursor(&self, mut f: impl FnMut(&Arc<Message>, &Cursor)) {
        let Some((last, rest)) = self.messages.split_last() else {
            return;
        };
        if !rest.is_empty() {
            let mut c = self.start.clone();
            for m in rest {
                c.advance(m.id.origin, m.id.seq);
                f(m, &c);
            }
        }
        f(last, &self.cursor);
    }
}

/// How often a subscription holding back an origin tries to fetch its
/// messages again.
pub(crate) const RECOVERY_RETRY: Duration = Duration::from_secs(1);
/// Longest pause between two tries (see [`RECOVERY_RETRY`]).
pub(crate) const RECOVERY_RETRY_MAX: Duration = Duration::from_secs(30);

/// What a subscription needs to fetch the messages it holds back.
pub(crate) struct Recovery {
    pub(crate) store: Arc<Store>,
    pub(crate) interest: Arc<Interest>,
    pub(crate) cluster: Cluster,
}

/// A position in the log that follows a set of patterns. It holds a cursor
/// and a change receiver, nothing per message: memory does not grow with lag.
pub struct Subscription {
    store: Arc<Store>,
    query: ReadQuery,
    cursor: Cursor,
    changes: switchyard_store::Changes,
    /// Gaps already reported, so that each is reported once.
    reported: HashSet<(Topic, NodeId, u64)>,
    /// Started from `earliest`: a removed range before anything was read
    /// from an origin is not a gap.
    from_earliest: bool,
    /// The egress filter plugin, if any.
    filter: Option<Filter>,
    /// Origins held back (see [`Subscription::hold_back`]), with how far
    /// this node knew each one's log.
    behind: BTreeMap<NodeId, u64>,
    /// How to fetch what is held back.
    /// Boxed: it holds a cluster handle (with its HTTP client), hundreds
    /// of bytes that most subscriptions never need.
    recovery: Option<Box<Recovery>>,
    /// When to try fetching it next.
    next_recovery: Option<tokio::time::Instant>,
    /// The pause before the next try.
    recovery_delay: Duration,
    /// The last read took everything visible when it began (see
    /// [`switchyard_store::ReadBatch::complete`]): until the store's change
    /// signal moves, another read would find nothing, so [`Subscription::next`]
    /// waits without one.
    caught_up: bool,
    /// Keeps the patterns in the node's interest (cross-node delivery).
    _interest: InterestGuard,
}

impl Subscription {
    pub(crate) fn new(
        store: Arc<Store>,
        query: ReadQuery,
        cursor: Cursor,
        from_earliest: bool,
        interest: InterestGuard,
    ) -> Self {
        // Woken by commits of its own topics, not by every commit of the node
        // (see `Store::changes_for`).
        let changes = store.changes_for(&query.topics);
        Subscription {
            store,
            query,
            cursor,
            changes,
            reported: HashSet::new(),
            from_earliest,
            filter: None,
            behind: BTreeMap::new(),
            recovery: None,
            next_recovery: None,
            recovery_delay: RECOVERY_RETRY,
            caught_up: false,
            _interest: interest,
        }
    }

    /// Passes every message through `filter` before it is delivered.
    pub fn set_filter(&mut self, filter: Filter) {
        self.filter = Some(filter);
    }

    /// Runs the filter over a read batch: kept and transformed messages
    /// stay, skipped ones are counted, dead-letter copies are stored.
    async fn filter(
        &mut self,
        messages: Vec<Arc<Message>>,
    ) -> Result<(Vec<Arc<Message>>, usize), RouterError> {
        let Some(filter) = self.filter.as_mut() else {
            return Ok((messages, 0));
        };
        let mut kept = Vec::with_capacity(messages.len());
        let mut skipped = 0;
        let mut dead = Vec::new();
        for m in messages {
            match filter.apply(m).await? {
                Filtered::Keep(m) => kept.push(m),
                Filtered::Skip => skipped += 1,
                Filtered::DeadLetter(a) => {
                    skipped += 1;
                    dead.push(a);
                }
            }
        }
        if !dead.is_empty()
            && let Err(e) = self.store.append(dead).await
        {
            tracing::error!(error = %e, "storing dead-lettered messages failed");
        }
        Ok((kept, skipped))
    }

    /// The position after everything delivered (or passed over) so far.
    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// The topics followed.
    pub fn topics(&self) -> &TopicSet {
        &self.query.topics
    }

    /// Holds back the origins of `behind` (origin and how far this node
    /// knows its log): the subscription reads of each only what this node
    /// is known to hold (nothing, or up to where a catch-up got), and its
    /// position in them stops there, until a catch-up through `recovery`
    /// fetches the rest.
    pub(crate) fn hold_back(&mut self, behind: BTreeMap<NodeId, u64>, recovery: Recovery) {
        self.query.hold =
            recovery
                .interest
                .hold_limits(&self.query.topics, &self.cursor, behind.keys());
        self.behind = behind;
        self.recovery = Some(Box::new(recovery));
        self.caught_up = false;
    }

    /// The origins held back now, with the range of each not held.
    pub fn held_back(&self) -> Vec<Unavailable> {
        self.behind
            .iter()
            .map(|(&origin, &through)| Unavailable {
                origin,
                after_origin_seq: self
                    .query
                    .hold
                    .get(&origin)
                    .copied()
                    .unwrap_or(0)
                    .max(self.cursor.get(origin)),
                through_origin_seq: through,
            })
            .collect()
    }

    /// Tries the catch-up again for the origins held back (from the origin
    /// when it is a live peer, else from any live peer that holds the
    /// range), and releases those it completed. The next try comes after
    /// twice the delay while nothing is released (at most
    /// [`RECOVERY_RETRY_MAX`]), after [`RECOVERY_RETRY`] once something is.
    async fn recover(&mut self) {
        let Some(r) = &self.recovery else {
            return;
        };
        let before = self.behind.len();
        if r.cluster.peers().is_empty() {
            self.recovery_delay = (self.recovery_delay * 2).min(RECOVERY_RETRY_MAX);
            return;
        }
        let due = self.behind.clone();
        let topics = self.query.topics.clone();
        crate::feeds::catch_up(
            &r.store,
            &r.interest,
            &r.cluster,
            &topics,
            &self.cursor,
            &due,
        )
        .await;
        let (interest, cursor) = (&r.interest, &self.cursor);
        self.behind
            .retain(|&o, _| !interest.holds(&topics, o, cursor.get(o)));
        self.query.hold = interest.hold_limits(&topics, cursor, self.behind.keys());
        self.recovery_delay = if self.behind.len() < before {
            RECOVERY_RETRY
        } else {
            (self.recovery_delay * 2).min(RECOVERY_RETRY_MAX)
        };
        if self.behind.is_empty() {
            self.recovery = None;
        }
    }

    pub(crate) fn set_limit(&mut self, limit: usize) {
        self.query.limit = limit.max(1);
    }

    /// Sets the most payload bytes one read returns (at least one message).
    pub(crate) fn set_max_bytes(&mut self, max_bytes: usize) {
        self.query.max_bytes = max_bytes.max(1);
    }

    async fn read(&self) -> Result<ReadBatch, RouterError> {
        if let Some(b) = self.store.read_cached(&self.query, &self.cursor) {
            return Ok(b);
        }
        let (store, query, cursor) = (self.store.clone(), self.query.clone(), self.cursor.clone());
        tokio::task::spawn_blocking(move || store.read(&query, &cursor))
            .await
            .map_err(|_| RouterError::ShuttingDown)?
            .map_err(Into::into)
    }

    /// Reads what is available now without waiting: messages, gaps, or an
    /// empty delivery when the subscription has caught up.
    pub async fn next_available(&mut self) -> Result<Delivery, RouterError> {
        loop {
            // Mark the current version seen before reading, so that anything
            // that becomes visible during the read wakes a later wait.
            self.changes.mark_seen();
            let batch = self.read().await?;
            self.caught_up = batch.complete;
            let gaps: Vec<Gap> = batch
                .gaps
                .into_iter()
                .filter(|g| !(self.from_earliest && g.after_origin_seq == 0))
                .filter(|g| {
                    self.reported
                        .insert((g.topic.clone(), g.origin, g.through_origin_seq))
                })
                .collect();
            let advanced = batch.cursor != self.cursor;
            let (messages, skipped) = if self.filter.is_some() {
                // Boxed: a plugin call's future is large, and without
                // the box every subscription's waiting future would hold
                // room for it.
                Box::pin(self.filter(batch.messages)).await?
            } else {
                (batch.messages, 0)
            };
            let start = std::mem::replace(&mut self.cursor, batch.cursor.clone());
            if !messages.is_empty() || !gaps.is_empty() || !advanced || skipped > 0 {
                return Ok(Delivery {
                    gaps,
                    messages,
                    start,
                    cursor: batch.cursor,
                    skipped,
                });
            }
            // Passed over messages that do not match; there may be more.
        }
    }

    /// Waits for the next messages (or gaps) and returns them. Cancel-safe:
    /// if the future is dropped, nothing is lost and the position is unchanged.
    pub async fn next(&mut self) -> Result<Delivery, RouterError> {
        loop {
            // After a read that took everything, and with nothing new since
            // it began, a read would find nothing: wait at once.
            let nothing_new = self.caught_up
                && self.behind.is_empty()
                && matches!(self.changes.has_changed(), Ok(false));
            if !nothing_new {
                let d = self.next_available().await?;
                if !d.messages.is_empty() || !d.gaps.is_empty() || d.skipped > 0 {
                    return Ok(d);
                }
            }
            // Whatever ends the wait below, the next turn reads.
            self.caught_up = false;
            if self.behind.is_empty() {
                if self.changes.changed().await.is_err() {
                    return Err(RouterError::ShuttingDown);
                }
                continue;
            }
            // A deadline kept across loops, so that a busy log (other
            // topics waking the wait) does not put the retry off forever.
            let delay = self.recovery_delay;
            let due = *self
                .next_recovery
                .get_or_insert_with(|| tokio::time::Instant::now() + delay);
            tokio::select! {
                r = self.changes.changed() => {
                    if r.is_err() {
                        return Err(RouterError::ShuttingDown);
                    }
                }
                () = tokio::time::sleep_until(due) => {
                    self.next_recovery = None;
                    // Boxed for the same reason as the filter's step: a
                    // catch-up from peers is a large future, and rare.
                    Box::pin(self.recover()).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every SSE subscriber holds a subscription and the future of its
    /// wait for the whole connection: their sizes are memory per idle
    /// subscriber. Rare parts (a peer catch-up, a filter plugin's call) are
    /// boxed so that they do not set these sizes; with them inline the
    /// two took 1,144 and 1,232 bytes.
    #[test]
    fn a_subscription_and_its_wait_stay_small() {
        assert!(
            std::mem::size_of::<Subscription>() <= 448,
            "Subscription is {} bytes",
            std::mem::size_of::<Subscription>()
        );
        fn size_of_future<F: std::future::Future>(_: &F) -> usize {
            std::mem::size_of::<F>()
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let _enter = rt.enter();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Arc::new(
            Store::open(switchyard_store::StoreConfig::new(dir.path())).expect("the store opens"),
        );
        let topics = TopicSet::new(vec!["a".parse().expect("a pattern")]);
        let interest = crate::feeds::Interest::new();
        let mut sub = Subscription::new(
            store.clone(),
            ReadQuery::new(topics.clone()),
            Cursor::earliest(),
            true,
            interest.add(&topics),
        );
        let wait = sub.next();
        assert!(
            size_of_future(&wait) <= 320,
            "Subscription::next is {} bytes",
            size_of_future(&wait)
        );
    }
}
