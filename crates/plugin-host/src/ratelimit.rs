//! Rate limits of plugin logging: a token bucket per binding for lines
//! and one for bytes. Pure: time is passed in, so tests feed it by hand.

use std::time::Instant;

/// A token bucket: `rate` tokens a second, at most `rate` (one second's
/// worth) saved up. Starts full.
#[derive(Debug, Default)]
pub(crate) struct TokenBucket {
    tokens: f64,
    /// When `tokens` was last brought up to date (`None`: never; full).
    last: Option<Instant>,
}

impl TokenBucket {
    /// Takes `n` tokens at `now` if there are that many; else takes none.
    #[cfg(test)]
    pub fn take(&mut self, now: Instant, rate: f64, n: f64) -> bool {
        self.refill(now, rate);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    fn refill(&mut self, now: Instant, rate: f64) {
        self.tokens = match self.last {
            None => rate,
            Some(last) => {
                let dt = now.saturating_duration_since(last).as_secs_f64();
                (self.tokens + dt * rate).min(rate)
            }
        };
        self.last = Some(now.max(self.last.unwrap_or(now)));
    }
}

/// The two buckets of one binding's log.
#[derive(Debug, Default)]
pub(crate) struct LogLimiter {
    lines: TokenBucket,
    bytes: TokenBucket,
}

impl LogLimiter {
    /// Whether a line of `len` bytes may be logged at `now`, at most
    /// `lines_per_sec` lines and `bytes_per_sec` bytes a second (with one
    /// second's worth of burst). A refused line takes no tokens.
    pub fn admit(
        &mut self,
        now: Instant,
        lines_per_sec: u32,
        bytes_per_sec: u64,
        len: usize,
    ) -> bool {
        let (lr, br) = (f64::from(lines_per_sec), bytes_per_sec as f64);
        // A line longer than a second's bytes could never pass; it passes
        // when the byte bucket is full and empties it.
        let cost = (len as f64).min(br);
        self.lines.refill(now, lr);
        self.bytes.refill(now, br);
        if self.lines.tokens >= 1.0 && self.bytes.tokens >= cost {
            self.lines.tokens -= 1.0;
            self.bytes.tokens -= cost;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_allows_a_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::default();
        for _ in 0..10 {
            assert!(b.take(t0, 10.0, 1.0));
        }
        assert!(!b.take(t0, 10.0, 1.0));
        // 100 ms later one token is back, not two.
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.take(t1, 10.0, 1.0));
        assert!(!b.take(t1, 10.0, 1.0));
        // Idle for long, the bucket holds one second's worth, no more.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..10 {
            assert!(b.take(t2, 10.0, 1.0));
        }
        assert!(!b.take(t2, 10.0, 1.0));
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::default();
        assert!(b.take(t0, 1.0, 1.0));
        assert!(!b.take(t0 - Duration::from_secs(5), 1.0, 1.0));
        assert!(!b.take(t0, 1.0, 1.0));
        assert!(b.take(t0 + Duration::from_secs(1), 1.0, 1.0));
    }

    #[test]
    fn logs_are_limited_by_lines_and_by_bytes() {
        let t0 = Instant::now();
        let mut l = LogLimiter::default();
        // 10 lines/s, 1000 bytes/s: short lines stop at the line bucket.
        let admitted = (0..50).filter(|_| l.admit(t0, 10, 1000, 1)).count();
        assert_eq!(admitted, 10);
        // Half a second later: 5 lines are back, and the bytes are full
        // again; 300-byte lines stop at the byte bucket.
        let t1 = t0 + Duration::from_millis(500);
        let admitted = (0..50).filter(|_| l.admit(t1, 10, 1000, 300)).count();
        assert_eq!(admitted, 3);
        // A refused line took nothing: two lines and 100 bytes are left.
        assert!(l.admit(t1, 10, 1000, 100));
        assert!(!l.admit(t1, 10, 1000, 1));
        // A line longer than a second's bytes passes once the bucket is full.
        let t2 = t1 + Duration::from_secs(5);
        assert!(l.admit(t2, 10, 1000, 5000));
        assert!(!l.admit(t2, 10, 1000, 10));
    }
}
