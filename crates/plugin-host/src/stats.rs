//! Per-binding counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use crate::error::FailureKind;
use crate::ratelimit::LogLimiter;

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
