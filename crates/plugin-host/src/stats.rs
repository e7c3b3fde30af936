//! Per-binding counters.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use crate::error::FailureKind;
use crate::ratelimit::LogLimiter;

/// Log lines a follower of a binding's log (`subscribe_logs`) may fall
/// behind by before it loses lines: the channel holds at most this many,
/// each at most 4 KiB.
pub const LOG_TAIL_CAPACITY: usize = 256;

/// One log line of a plugin, as its followers receive it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    /// The line (at most 4 KiB).
    pub message: String,
    /// When it was written, in ms since the Unix epoch.
    pub time_ms: u64,
}

/// Most custom counter names per binding.
pub const MAX_CUSTOM_COUNTERS: usize = 64;
/// Longest custom counter name.
pub const MAX_COUNTER_NAME: usize = 64;

const KINDS: [FailureKind; 6] = [
    FailureKind::Trap,
    FailureKind::OutOfFuel,
    FailureKind::MemoryLimit,
    FailureKind::HostCallLimit,
    FailureKind::InvalidResult,
    FailureKind::Instantiate,
];

/// Counters of one binding, shared by its versions and by the filter
/// variants subscribers create, and with them what the binding's limits
/// count across all of those: its key-value usage and its log rate.
/// Updated lock-free on the hot path (custom counters and the log limiter
/// take a short lock).
#[derive(Default)]
pub struct Stats {
    calls: AtomicU64,
    errors: AtomicU64,
    time_ns: AtomicU64,
    instances_created: AtomicU64,
    by_kind: [AtomicU64; 6],
    custom: Mutex<BTreeMap<String, u64>>,
    /// Keys the binding holds in its key-value store.
    pub(crate) kv_keys: AtomicU64,
    /// Bytes (keys and values) the binding holds in its key-value store.
    pub(crate) kv_bytes: AtomicU64,
    kv_refused: AtomicU64,
    logs: AtomicU64,
    logs_dropped: AtomicU64,
    log_limiter: Mutex<LogLimiter>,
    /// The admitted log lines, for followers; made by the first follower.
    log_tail: OnceLock<tokio::sync::broadcast::Sender<LogLine>>,
    /// How long hook calls took.
    call_time: switchyard_model::histogram::Histogram,
}

/// A copy of a binding's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Hook calls made.
    pub calls: u64,
    /// Calls that failed, of every kind.
    pub errors: u64,
    /// Time spent in hook calls, in nanoseconds.
    pub time_ns: u64,
    /// Instances created (the first ones and every rebuild after a failure).
    pub instances_created: u64,
    /// Failures by kind ([`FailureKind::as_str`] names).
    pub failures: BTreeMap<&'static str, u64>,
    /// Counters the plugin keeps through the `metrics` import.
    pub custom: BTreeMap<String, u64>,
    /// Keys in the binding's key-value store.
    pub kv_keys: u64,
    /// Bytes (keys and values) in the binding's key-value store.
    pub kv_bytes: u64,
    /// Key-value writes refused for the binding's size limits.
    pub kv_refused: u64,
    /// Log lines written.
    pub logs: u64,
    /// Log lines dropped by the rate limit.
    pub logs_dropped: u64,
}

impl Stats {
    pub(crate) fn call(&self, ns: u64) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.time_ns.fetch_add(ns, Ordering::Relaxed);
        self.call_time.observe(std::time::Duration::from_nanos(ns));
    }

    pub(crate) fn failure(&self, kind: FailureKind) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let i = KINDS.iter().position(|k| *k == kind).unwrap_or(0);
        self.by_kind[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn instance_created(&self) {
        self.instances_created.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_custom(&self, name: &str, delta: u64) {
        if name.is_empty() || name.len() > MAX_COUNTER_NAME {
            return;
        }
        let mut custom = self.custom.lock();
        if let Some(v) = custom.get_mut(name) {
            *v = v.saturating_add(delta);
        } else if custom.len() < MAX_CUSTOM_COUNTERS {
            custom.insert(name.to_owned(), delta);
        }
    }

    pub(crate) fn kv_refused(&self) {
        self.kv_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a log line of `len` bytes may be written now; counts it
    /// either way.
    pub(crate) fn admit_log(&self, lines_per_sec: u32, bytes_per_sec: u64, len: usize) -> bool {
        let ok = self
            .log_limiter
            .lock()
            .admit(Instant::now(), lines_per_sec, bytes_per_sec, len);
        if ok {
            self.logs.fetch_add(1, Ordering::Relaxed);
        } else {
            self.logs_dropped.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Hands an admitted log line to the binding's followers, if it has
    /// any (nothing is kept otherwise).
    pub(crate) fn tail_log(&self, level: &'static str, message: &str) {
        if let Some(tx) = self.log_tail.get()
            && tx.receiver_count() > 0
        {
            let time_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let _ = tx.send(LogLine {
                level,
                message: message.to_owned(),
                time_ms,
            });
        }
    }

    /// Follows the binding's log lines (those the rate limit admits), from
    /// now on. A receiver more than [`LOG_TAIL_CAPACITY`] lines behind
    /// loses the oldest and is told how many (`RecvError::Lagged`); the
    /// channel ends when the binding is gone.
    pub fn subscribe_logs(&self) -> tokio::sync::broadcast::Receiver<LogLine> {
        self.log_tail
            .get_or_init(|| tokio::sync::broadcast::channel(LOG_TAIL_CAPACITY).0)
            .subscribe()
    }

    /// Counts a log line dropped before the rate limiter (stdout or
    /// stderr output over its per-call cap).
    pub(crate) fn log_dropped(&self) {
        self.logs_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// How long hook calls took.
    pub fn call_times(&self) -> switchyard_model::histogram::HistogramSnapshot {
        self.call_time.snapshot()
    }

    /// A consistent-enough copy for listing.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            calls: self.calls.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            time_ns: self.time_ns.load(Ordering::Relaxed),
            instances_created: self.instances_created.load(Ordering::Relaxed),
            failures: KINDS
                .iter()
                .zip(&self.by_kind)
                .map(|(k, v)| (k.as_str(), v.load(Ordering::Relaxed)))
                .collect(),
            custom: self.custom.lock().clone(),
            kv_keys: self.kv_keys.load(Ordering::Relaxed),
            kv_bytes: self.kv_bytes.load(Ordering::Relaxed),
            kv_refused: self.kv_refused.load(Ordering::Relaxed),
            logs: self.logs.load(Ordering::Relaxed),
            logs_dropped: self.logs_dropped.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::broadcast::error::TryRecvError;

    #[test]
    fn log_followers_get_admitted_lines_and_lose_the_oldest_when_behind() {
        let stats = Stats::default();
        // No follower: nothing is kept.
        stats.tail_log("info", "before");
        let mut rx = stats.subscribe_logs();
        stats.tail_log("warn", "one");
        let line = rx.try_recv().unwrap();
        assert_eq!((line.level, line.message.as_str()), ("warn", "one"));
        assert!(line.time_ms > 0);
        assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
        for i in 0..LOG_TAIL_CAPACITY + 10 {
            stats.tail_log("info", &i.to_string());
        }
        assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Lagged(10));
        assert_eq!(rx.try_recv().unwrap().message, "10");
        drop(stats);
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, LOG_TAIL_CAPACITY - 1);
        assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Closed);
    }
}
