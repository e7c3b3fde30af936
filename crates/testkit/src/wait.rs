//! Polling a condition until it holds or a deadline passes.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

/// Time between two polls of a condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Calls `probe` until `done` holds for the value it returns, then returns
/// that value. Panics once `timeout` has passed, naming `what` was awaited
/// and the last value observed.
///
/// The deadline is measured on the real clock, so that a test running on
/// tokio's paused clock is still bounded in real time. Between polls it
/// sleeps [`POLL_INTERVAL`] on tokio's clock: on a paused clock that
/// sleep lets the clock move forward (it auto-advances once the runtime is
/// idle), which is how timers under test, such as acknowledgement
/// deadlines, come due while the test polls.
pub async fn poll_until<T, P, Fut, D>(timeout: Duration, what: &str, mut probe: P, mut done: D) -> T
where
    T: Debug,
    P: FnMut() -> Fut,
    Fut: Future<Output = T>,
    D: FnMut(&T) -> bool,
{
    let deadline = Instant::now() + timeout;
    loop {
        let value = probe().await;
        if done(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last observed: {value:#?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls `cond` until it returns true; panics naming `what` once `timeout`
/// has passed. The shorthand of [`poll_until`] for conditions that have
/// no value worth reporting.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    poll_until(timeout, what, cond, |holds| *holds).await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn returns_the_value_that_satisfied_the_condition() {
        let polls = AtomicU32::new(0);
        let n = poll_until(
            Duration::from_secs(5),
            "a third poll",
            || async { polls.fetch_add(1, Ordering::SeqCst) + 1 },
            |n| *n == 3,
        )
        .await;
        assert_eq!(n, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for a value above 10; last observed: 1")]
    async fn names_what_it_awaited_and_the_last_value_on_timeout() {
        poll_until(
            Duration::from_millis(50),
            "a value above 10",
            || async { 1 },
            |n| *n > 10,
        )
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_clock_moves_forward_while_polling() {
        let start = tokio::time::Instant::now();
        wait_until(
            Duration::from_secs(5),
            "a minute on the test clock",
            || async { start.elapsed() >= Duration::from_secs(60) },
        )
        .await;
    }
}
