//! Example plugin (`route`): refuses messages over a per-bucket rate, with a
//! token bucket kept in the binding's key-value store.
//!
//! Configuration (JSON):
//!
//! ```json
//! {"rate": 10.0, "burst": 20, "by": "key"}
//! ```
//!
//! * `rate` (required): tokens added per second, a positive number.
//! * `burst`: the bucket size, at least 1 (default: `rate`, rounded up).
//!   A new bucket starts full.
//! * `by`: what names the bucket. `key` (default) is the message key, with
//!   every message without a key sharing the bucket `""`; `topic` is the
//!   topic; `header:<name>` is the value of that header (`""` when absent).
//!
//! Each message takes one token. A message that finds less than one token is
//! refused with `drop("rate limit exceeded for <bucket>")` and counted in the
//! `limited` counter.
//!
//! The state of a bucket is 16 bytes under the kv key `rl:<bucket>` (a
//! hash-based key when that would pass the store's 256-byte key limit):
//! the tokens left as an `f64` and the time of the last update in
//! milliseconds as a `u64`, both little-endian. Because the store is shared
//! by every instance of the binding and is not transactional, concurrent
//! instances may let a few more messages through than the limit. A bucket
//! whose state cannot be written (the store is full) lets messages through
//! and counts `kv_errors`; the first such error of an instance is logged.

use serde::Deserialize;
use switchyard_plugin::{Message, Route, RouteDecision, clock, export_route, kv, log, metrics};

/// The longest key the store accepts, in bytes.
const MAX_KV_KEY: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    rate: f64,
    #[serde(default)]
    burst: Option<f64>,
    #[serde(default = "default_by")]
    by: String,
}

fn default_by() -> String {
    "key".into()
}

/// What names a message's bucket.
#[derive(Debug, PartialEq)]
enum By {
    Key,
    Topic,
    Header(String),
}

/// The plugin state: the parsed configuration.
#[derive(Debug)]
struct RateLimiter {
    /// Tokens per millisecond.
    per_ms: f64,
    burst: f64,
    by: By,
    logged_kv_error: bool,
}

/// One bucket as stored.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bucket {
    tokens: f64,
    updated_ms: u64,
}

impl Bucket {
    fn encode(self) -> [u8; 16] {
        let mut out = [0; 16];
        out[..8].copy_from_slice(&self.tokens.to_le_bytes());
        out[8..].copy_from_slice(&self.updated_ms.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Bucket> {
        let bytes: &[u8; 16] = bytes.try_into().ok()?;
        let tokens = f64::from_le_bytes(bytes[..8].try_into().ok()?);
        let updated_ms = u64::from_le_bytes(bytes[8..].try_into().ok()?);
        tokens.is_finite().then_some(Bucket { tokens, updated_ms })
    }
}

/// The kv key of `bucket`.
fn kv_key(bucket: &str) -> String {
    let key = format!("rl:{bucket}");
    if key.len() <= MAX_KV_KEY {
        return key;
    }
    // FNV-1a over the whole name, after a readable prefix of it.
    let hash = bucket.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let mut cut = 200;
    while !bucket.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("rlh:{hash:016x}:{}", &bucket[..cut])
}

impl RateLimiter {
    fn parse(config: &str) -> Result<Self, String> {
        if config.trim().is_empty() {
            return Err(
                "rate-limiter needs a configuration such as {\"rate\": 10.0, \"burst\": 20, \"by\": \"key\"}"
                    .into(),
            );
        }
        let c: Config = serde_json::from_str(config)
            .map_err(|e| format!("invalid rate-limiter config: {e}"))?;
        if !(c.rate.is_finite() && c.rate > 0.0) {
            return Err(format!(
                "invalid rate-limiter config: rate must be a positive number of messages per second, not {}",
                c.rate
            ));
        }
        let burst = c.burst.unwrap_or(c.rate.ceil());
        if !(burst.is_finite() && burst >= 1.0) {
            return Err(format!(
                "invalid rate-limiter config: burst must be at least 1, not {burst}"
            ));
        }
        let by = match c.by.as_str() {
            "key" => By::Key,
            "topic" => By::Topic,
            other => match other.strip_prefix("header:") {
                Some(name) if !name.is_empty() => By::Header(name.to_ascii_lowercase()),
                _ => {
                    return Err(format!(
                        "invalid rate-limiter config: by must be \"key\", \"topic\" or \"header:<name>\", not {other:?}"
                    ));
                }
            },
        };
        Ok(RateLimiter {
            per_ms: c.rate / 1000.0,
            burst,
            by,
            logged_kv_error: false,
        })
    }

    fn bucket<'m>(&self, msg: &'m Message) -> &'m str {
        match &self.by {
            By::Key => msg.key.as_deref().unwrap_or(""),
            By::Topic => &msg.topic,
            By::Header(name) => msg.header(name).unwrap_or(""),
        }
    }

    /// Takes a token from `bucket` at time `now`; false if there was none.
    fn take(&mut self, bucket: &str, now: u64) -> bool {
        let key = kv_key(bucket);
        let state = kv::get(&key)
            .as_deref()
            .and_then(Bucket::decode)
            .unwrap_or(Bucket {
                tokens: self.burst,
                updated_ms: now,
            });
        // A clock that went backwards adds nothing.
        let elapsed = now.saturating_sub(state.updated_ms) as f64;
        let tokens = (state.tokens + elapsed * self.per_ms).min(self.burst);
        if tokens < 1.0 {
            // Nothing to write: the stored state yields the same refill later.
            return false;
        }
        let next = Bucket {
            tokens: tokens - 1.0,
            updated_ms: now.max(state.updated_ms),
        };
        if let Err(e) = kv::set(&key, &next.encode()) {
            metrics::add("kv_errors", 1);
            if !self.logged_kv_error {
                self.logged_kv_error = true;
                log::warn(&format!(
                    "rate-limiter cannot store bucket {bucket:?}, letting its messages through: {e}"
                ));
            }
        }
        true
    }
}

impl Route for RateLimiter {
    fn new(config: &str) -> Result<Self, String> {
        RateLimiter::parse(config)
    }

    fn route(&mut self, msg: Message) -> RouteDecision {
        let bucket = self.bucket(&msg);
        if self.take(bucket, clock::now_ms()) {
            RouteDecision::Deliver
        } else {
            metrics::add("limited", 1);
            RouteDecision::Drop(format!("rate limit exceeded for {bucket}"))
        }
    }
}

export_route!(RateLimiter);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_plugin::{Header, testing};

    fn msg(key: Option<&str>, topic: &str, headers: &[(&str, &str)]) -> Message {
        Message {
            topic: topic.into(),
            key: key.map(Into::into),
            headers: headers.iter().map(|(n, v)| Header::new(*n, *v)).collect(),
            ..Default::default()
        }
    }

    fn delivered(p: &mut RateLimiter, m: &Message, n: usize) -> usize {
        (0..n)
            .filter(|_| p.route(m.clone()) == RouteDecision::Deliver)
            .count()
    }

    #[test]
    fn burst_then_rate() {
        testing::set_now_ms(1_000_000);
        let mut p = RateLimiter::new(r#"{"rate": 10.0, "burst": 20}"#).unwrap();
        let m = msg(Some("k1"), "t", &[]);
        assert_eq!(delivered(&mut p, &m, 30), 20);
        assert_eq!(testing::metric("limited"), 10);
        assert_eq!(
            p.route(m.clone()),
            RouteDecision::Drop("rate limit exceeded for k1".into())
        );
        // 10 per second: 550 ms later 5 more tokens.
        testing::advance_ms(550);
        assert_eq!(delivered(&mut p, &m, 10), 5);
        // A long pause refills to the burst, not beyond.
        testing::advance_ms(3_600_000);
        assert_eq!(delivered(&mut p, &m, 30), 20);
        // Another key has its own bucket.
        assert_eq!(delivered(&mut p, &msg(Some("k2"), "t", &[]), 3), 3);
    }

    #[test]
    fn state_is_16_bytes_in_kv() {
        testing::set_now_ms(5_000);
        let mut p = RateLimiter::new(r#"{"rate": 1, "burst": 2}"#).unwrap();
        p.route(msg(None, "t", &[]));
        let raw = kv::get("rl:").unwrap();
        assert_eq!(
            Bucket::decode(&raw),
            Some(Bucket {
                tokens: 1.0,
                updated_ms: 5_000
            })
        );
        // A second instance sees the same bucket.
        let mut q = RateLimiter::new(r#"{"rate": 1, "burst": 2}"#).unwrap();
        assert_eq!(q.route(msg(None, "t", &[])), RouteDecision::Deliver);
        assert_eq!(
            p.route(msg(None, "t", &[])),
            RouteDecision::Drop("rate limit exceeded for ".into())
        );
    }

    #[test]
    fn bucket_sources() {
        testing::set_now_ms(0);
        let mut by_topic = RateLimiter::new(r#"{"rate": 1, "burst": 1, "by": "topic"}"#).unwrap();
        assert_eq!(delivered(&mut by_topic, &msg(Some("a"), "t1", &[]), 1), 1);
        assert_eq!(delivered(&mut by_topic, &msg(Some("b"), "t1", &[]), 1), 0);
        assert_eq!(delivered(&mut by_topic, &msg(Some("b"), "t2", &[]), 1), 1);
        let mut by_header =
            RateLimiter::new(r#"{"rate": 1, "burst": 1, "by": "header:Tenant"}"#).unwrap();
        let acme = msg(None, "x", &[("tenant", "acme")]);
        assert_eq!(delivered(&mut by_header, &acme, 2), 1);
        assert_eq!(
            by_header.route(acme),
            RouteDecision::Drop("rate limit exceeded for acme".into())
        );
        assert_eq!(delivered(&mut by_header, &msg(None, "x", &[]), 1), 1);
    }

    #[test]
    fn long_bucket_names_fit_the_store() {
        let long = "x".repeat(1000);
        let key = kv_key(&long);
        assert!(key.len() <= MAX_KV_KEY);
        assert_ne!(key, kv_key(&format!("{long}y")));
        testing::set_now_ms(0);
        let mut p = RateLimiter::new(r#"{"rate": 1, "burst": 1}"#).unwrap();
        assert_eq!(delivered(&mut p, &msg(Some(&long), "t", &[]), 2), 1);
        assert_eq!(testing::metric("kv_errors"), 0);
    }

    #[test]
    fn bad_configs() {
        for bad in [
            "",
            "{}",
            r#"{"rate": 0}"#,
            r#"{"rate": -1}"#,
            r#"{"rate": 1, "burst": 0.5}"#,
            r#"{"rate": 1, "by": "header:"}"#,
            r#"{"rate": 1, "by": "partition"}"#,
            r#"{"rate": 1, "per": "minute"}"#,
        ] {
            let err = RateLimiter::parse(bad).unwrap_err();
            assert!(err.contains("rate-limiter"), "{bad}: {err}");
        }
    }
}
