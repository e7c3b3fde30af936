//! The node-wide budget for pending output: the bytes of response bodies
//! the node has produced and handed to a connection that has not written
//! them to its socket yet (a chunk is "taken" when the connection lets go
//! of the last of it; a body hands over its next chunk only then).
//!
//! Two rules keep that memory bounded while clients that do not read stay
//! connected:
//!
//! - While the pending output is over the budget, event streams read
//!   nothing more from the log: a stream waits, lagging in the log, until
//!   the total falls below the budget. Other answers are not held back,
//!   nor is a stream whose connection keeps up (see `sse::KEEPS_UP`).
//! - A connection whose output has not been taken for the stall timeout
//!   is closed; while the pending output is over the budget, after at
//!   most [`STALL_UNDER_PRESSURE`]. An event stream closed this way
//!   resumes exactly with `Last-Event-ID`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// How long a connection may leave its output untaken while the pending
/// output is over the budget.
pub(crate) const STALL_UNDER_PRESSURE: Duration = Duration::from_secs(5);

/// The node's pending output and its budget.
pub(crate) struct Output {
    pending: AtomicUsize,
    limit: usize,
    stall: Duration,
    /// Told when the pending output falls to the budget or below.
    freed: Notify,
    /// Connections closed because their output stalled.
    closed: AtomicU64,
}

impl Output {
    /// A budget of `limit` bytes; connections whose output is not taken
    /// for `stall` are closed.
    pub(crate) fn new(limit: usize, stall: Duration) -> Output {
        Output {
            pending: AtomicUsize::new(0),
            limit,
            stall,
            freed: Notify::new(),
            closed: AtomicU64::new(0),
        }
    }

    /// Bytes handed to connections and not taken yet.
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Whether the pending output is over the budget.
    pub(crate) fn is_over(&self) -> bool {
        self.pending() > self.limit
    }

    /// Counts `n` bytes handed to a connection.
    pub(crate) fn add(&self, n: usize) {
        self.pending.fetch_add(n, Ordering::AcqRel);
    }

    /// Counts `n` bytes taken (or dropped with their connection).
    pub(crate) fn take(&self, n: usize) {
        let before = self.pending.fetch_sub(n, Ordering::AcqRel);
        if before > self.limit && before - n <= self.limit {
            self.freed.notify_waiters();
        }
    }

    /// Waits until the pending output is within the budget.
    pub(crate) async fn room(&self) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if !self.is_over() {
                return;
            }
            freed.await;
        }
    }

    /// How long a connection may leave its output untaken now.
    pub(crate) fn stall_limit(&self) -> Duration {
        if self.is_over() {
            self.stall.min(STALL_UNDER_PRESSURE)
        } else {
            self.stall
        }
    }

    /// Counts a connection closed for stalled output.
    pub(crate) fn count_closed(&self) {
        self.closed.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections closed for stalled output since the start.
    #[allow(dead_code)]
    pub(crate) fn closed(&self) -> u64 {
        self.closed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_the_budget_shortens_the_stall_limit() {
        let o = Output::new(100, Duration::from_secs(60));
        assert!(!o.is_over());
        assert_eq!(o.stall_limit(), Duration::from_secs(60));
        o.add(101);
        assert!(o.is_over());
        assert_eq!(o.stall_limit(), STALL_UNDER_PRESSURE);
        o.take(1);
        assert!(!o.is_over(), "at the budget is within it");
        assert_eq!(o.pending(), 100);
    }

    #[tokio::test]
    async fn room_waits_until_output_is_taken() {
        let o = std::sync::Arc::new(Output::new(10, Duration::from_secs(60)));
        o.room().await;
        o.add(50);
        let waiter = tokio::spawn({
            let o = o.clone();
            async move { o.room().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "over the budget, it waits");
        o.take(45);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("freed in time")
            .unwrap();
    }
}
