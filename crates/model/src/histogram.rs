//! A latency histogram that many threads update without a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds: from 50 µs (a publish
/// without sync, a plugin call) to 10 s (a stalled disk). Everything above
/// the last lands in the implicit `+Inf` bucket.
pub const BOUNDS_MICROS: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Durations counted into the fixed buckets of [`BOUNDS_MICROS`]. An
/// observation is two relaxed atomic additions and a search of 17 bounds.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; BOUNDS_MICROS.len() + 1],
    /// Sum of the observations, in nanoseconds.
    sum_ns: AtomicU64,
}

/// A copy of a [`Histogram`].
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// (upper bound in seconds, observations above the previous bound and
    /// at or below this one), with `f64::INFINITY` last. Not cumulative.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of the observations, in seconds.
    pub sum_secs: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&self, d: Duration) {
        let micros = d.as_micros();
        let i = BOUNDS_MICROS
            .iter()
            .position(|&b| micros <= u128::from(b))
            .unwrap_or(BOUNDS_MICROS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The counts so far. Taken bucket by bucket while others may add, so
    /// the count is the sum of the buckets read.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Ordering::Relaxed);
            total += n;
            let bound = BOUNDS_MICROS
                .get(i)
                .map_or(f64::INFINITY, |&us| us as f64 / 1e6);
            buckets.push((bound, n));
        }
        HistogramSnapshot {
            buckets,
            sum_secs: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            count: total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(51));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.buckets[0], (0.00005, 1));
        assert_eq!(s.buckets[1], (0.0001, 1));
        // 3 ms lands in the 5 ms bucket.
        assert_eq!(s.buckets[5].1, 0);
        assert_eq!(s.buckets[6], (0.005, 1));
        assert_eq!(s.buckets[16], (10.0, 0));
        assert_eq!(s.buckets[17], (f64::INFINITY, 1));
        assert!((s.sum_secs - (0.000101 + 0.003 + 60.0)).abs() < 1e-9);
    }

    #[test]
    fn an_empty_histogram_has_every_bucket_at_zero() {
        let s = Histogram::default().snapshot();
        assert_eq!(s.count, 0);
        assert_eq!(s.buckets.len(), BOUNDS_MICROS.len() + 1);
        assert!(s.buckets.iter().all(|&(_, n)| n == 0));
    }
}
