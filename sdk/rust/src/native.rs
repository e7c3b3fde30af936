//! In-process stand-ins for the host imports, used when the SDK is compiled
//! for a target other than `wasm32` (for example by `cargo test` on the
//! developer's machine). State is per thread, so every test starts clean.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::log::Level;

const KV_MAX_KEY: usize = 256;
const KV_MAX_VALUE: usize = 64 * 1024;
const KV_MAX_KEYS: usize = 100_000;

#[derive(Default)]
struct Host {
    kv: BTreeMap<String, Vec<u8>>,
    metrics: BTreeMap<String, u64>,
    logs: Vec<(Level, String)>,
    now_ms: Option<u64>,
    origin: Option<Instant>,
}

thread_local! {
    static HOST: RefCell<Host> = RefCell::new(Host::default());
}

fn with<R>(f: impl FnOnce(&mut Host) -> R) -> R {
    HOST.with(|h| f(&mut h.borrow_mut()))
}

pub(crate) fn log(level: Level, message: &str) {
    eprintln!("[plugin {level:?}] {message}");
    with(|h| h.logs.push((level, message.to_owned())));
}

pub(crate) fn now_ms() -> u64 {
    with(|h| {
        h.now_ms.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        })
    })
}

pub(crate) fn monotonic_ns() -> u64 {
    with(|h| match h.now_ms {
        Some(ms) => ms.saturating_mul(1_000_000),
        None => h
            .origin
            .get_or_insert_with(Instant::now)
            .elapsed()
            .as_nanos() as u64,
    })
}

pub(crate) fn kv_get(key: &str) -> Option<Vec<u8>> {
    with(|h| h.kv.get(key).cloned())
}

pub(crate) fn kv_set(key: &str, value: &[u8]) -> Result<(), String> {
    if key.len() > KV_MAX_KEY {
        return Err(format!(
            "kv key is {} bytes, the limit is {KV_MAX_KEY}",
            key.len()
        ));
    }
    if value.len() > KV_MAX_VALUE {
        return Err(format!(
            "kv value is {} bytes, the limit is {KV_MAX_VALUE}",
            value.len()
        ));
    }
    with(|h| {
        if !h.kv.contains_key(key) && h.kv.len() >= KV_MAX_KEYS {
            return Err(format!("kv store holds {KV_MAX_KEYS} keys, the limit"));
        }
        h.kv.insert(key.to_owned(), value.to_vec());
        Ok(())
    })
}

pub(crate) fn kv_delete(key: &str) {
    with(|h| {
        h.kv.remove(key);
    });
}

pub(crate) fn metrics_add(name: &str, delta: u64) {
    with(|h| {
        let counter = h.metrics.entry(name.to_owned()).or_insert(0);
        *counter = counter.saturating_add(delta);
    });
}

pub mod testing {
    //! Test support for plugin code compiled natively.
    //!
    //! When the SDK is built for a target other than `wasm32`, the host
    //! functions in [`log`](crate::log), [`clock`](crate::clock),
    //! [`kv`](crate::kv) and [`metrics`](crate::metrics) are served in-process:
    //! the key-value store and the counters live in memory, log lines go to
    //! stderr, and the clock is the system clock unless pinned with
    //! [`set_now_ms`]. All of this state is per thread, so each `#[test]` sees a
    //! fresh host. This module does not exist in `wasm32` builds.

    use super::with;
    use crate::log::Level;

    /// Pins [`clock::now_ms`](crate::clock::now_ms) to `ms`;
    /// [`clock::monotonic_ns`](crate::clock::monotonic_ns) then returns
    /// `ms * 1_000_000`.
    pub fn set_now_ms(ms: u64) {
        with(|h| h.now_ms = Some(ms));
    }

    /// Moves a pinned clock forward by `delta_ms`, pinning it to the system
    /// time first if it was not pinned.
    pub fn advance_ms(delta_ms: u64) {
        let now = crate::clock::now_ms();
        with(|h| h.now_ms = Some(now.saturating_add(delta_ms)));
    }

    /// The current value of counter `name` (0 if it was never added to).
    pub fn metric(name: &str) -> u64 {
        with(|h| h.metrics.get(name).copied().unwrap_or(0))
    }

    /// The log lines written so far on this thread.
    pub fn logs() -> Vec<(Level, String)> {
        with(|h| h.logs.clone())
    }

    /// The number of keys in the key-value store.
    pub fn kv_len() -> usize {
        with(|h| h.kv.len())
    }

    /// Clears the key-value store, the counters and the log, and unpins the
    /// clock.
    pub fn reset() {
        with(|h| *h = Default::default());
    }
}

#[cfg(test)]
mod tests {
    use super::testing;
    use crate::{clock, kv, log, metrics};

    #[test]
    fn native_host() {
        testing::set_now_ms(1_000);
        assert_eq!(clock::now_ms(), 1_000);
        assert_eq!(clock::monotonic_ns(), 1_000_000_000);
        testing::advance_ms(5);
        assert_eq!(clock::now_ms(), 1_005);

        assert_eq!(kv::get("a"), None);
        kv::set("a", b"1").unwrap();
        assert_eq!(kv::get("a").as_deref(), Some(&b"1"[..]));
        assert!(kv::set(&"k".repeat(257), b"").is_err());
        assert!(kv::set("big", &vec![0; 64 * 1024 + 1]).is_err());
        kv::delete("a");
        kv::delete("a");
        assert_eq!(testing::kv_len(), 0);

        metrics::add("n", 2);
        metrics::add("n", 3);
        assert_eq!(testing::metric("n"), 5);
        log::warn("careful");
        assert_eq!(
            testing::logs(),
            vec![(log::Level::Warn, "careful".to_owned())]
        );

        testing::reset();
        assert_eq!(testing::metric("n"), 0);
        assert!(testing::logs().is_empty());
    }
}
