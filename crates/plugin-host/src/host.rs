//! What a plugin instance's store holds, and the host side of the imports.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::{ResourceLimiter, Result};

use crate::bindings::route::switchyard::plugin::{clock, kv, log, metrics, types};
use crate::kv::{KvBackend, MAX_KV_KEY, MAX_KV_KEYS, MAX_KV_VALUE};
use crate::stats::Stats;

/// Longest error log line kept for a failure report.
const LAST_ERROR: usize = 1024;
/// Longest log line taken from a plugin.
const MAX_LOG: usize = 4 * 1024;

/// What the host knows about the binding an instance serves, shared by all
/// of its instances.
pub(crate) struct Shared {
    pub name: Arc<str>,
    pub kv: Arc<dyn KvBackend>,
    /// Counters, and the key-value usage and log rate of the binding
    /// (shared with its other versions and filter variants).
    pub stats: Arc<Stats>,
    /// Most bytes (keys and values) the binding may hold in its store.
    pub kv_max_bytes: u64,
    /// Most log lines and bytes a second the binding may write.
    pub log_lines_per_sec: u32,
    pub log_bytes_per_sec: u64,
}

/// Subtracts `n` without going below zero (the counters are re-read from
/// the store when a binding is built, so a concurrent change may have
/// been counted already).
fn sub(counter: &AtomicU64, n: u64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

/// Caps an instance's memories and tables, and remembers whether it asked
/// for more than allowed (so the failure is reported as a memory limit, not
/// as a plain trap).
pub(crate) struct Limiter {
    pub memory_bytes: usize,
    pub exceeded: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> Result<bool> {
        if desired > self.memory_bytes {
            self.exceeded = true;
            return Err(wasmtime::format_err!(
                "memory limit: the plugin asked for {desired} bytes; the cap is {}",
                self.memory_bytes
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The data of one instance's store.
pub(crate) struct HostState {
    pub shared: Arc<Shared>,
    pub limiter: Limiter,
    /// Host calls made during the current hook call.
    pub host_calls: u32,
    pub max_host_calls: u32,
    pub host_calls_exceeded: bool,
    /// The last error-level log line of the current call (the SDK logs a
    /// panic's message this way before the guest traps).
    pub last_error: Option<String>,
    /// WASI: a context that grants nothing, stdout and stderr to the log.
    pub wasi: crate::wasi::Wasi,
}

impl HostState {
    pub fn new(shared: Arc<Shared>, memory_bytes: usize, max_host_calls: u32) -> Self {
        HostState {
            wasi: crate::wasi::Wasi::new(&shared),
            shared,
            limiter: Limiter {
                memory_bytes,
                exceeded: false,
            },
            host_calls: 0,
            max_host_calls,
            host_calls_exceeded: false,
            last_error: None,
        }
    }

    /// Counts one call from the guest into the host (an import of ours, a
    /// WASI function, or a runtime builtin such as a resource drop or
    /// memory growth: the store's call hook sees them all); fails,
    /// trapping the guest, past the limit.
    pub(crate) fn host_call(&mut self) -> Result<()> {
        self.host_calls += 1;
        if self.host_calls > self.max_host_calls {
            self.host_calls_exceeded = true;
            return Err(wasmtime::format_err!(
                "more than {} host calls in one hook call",
                self.max_host_calls
            ));
        }
        Ok(())
    }
}

impl types::Host for HostState {}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) -> Result<()> {
        let message = truncate(message, MAX_LOG);
        if matches!(level, log::Level::Error) {
            // Kept for the failure report even when the line is dropped.
            self.last_error = Some(truncate(message.clone(), LAST_ERROR));
        }
        let shared = &self.shared;
        if !shared.stats.admit_log(
            shared.log_lines_per_sec,
            shared.log_bytes_per_sec,
            message.len(),
        ) {
            return Ok(());
        }
        let name = match level {
            log::Level::Trace => "trace",
            log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warn => "warn",
            log::Level::Error => "error",
        };
        shared.stats.tail_log(name, &message);
        let plugin = &*shared.name;
        match level {
            log::Level::Trace => tracing::trace!(target: "switchyard::plugin", plugin, "{message}"),
            log::Level::Debug => tracing::debug!(target: "switchyard::plugin", plugin, "{message}"),
            log::Level::Info => tracing::info!(target: "switchyard::plugin", plugin, "{message}"),
            log::Level::Warn => tracing::warn!(target: "switchyard::plugin", plugin, "{message}"),
            log::Level::Error => tracing::error!(target: "switchyard::plugin", plugin, "{message}"),
        }
        Ok(())
    }
}

impl clock::Host for HostState {
    fn now_ms(&mut self) -> Result<u64> {
        Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64))
    }

    fn monotonic_ns(&mut self) -> Result<u64> {
        Ok(crate::wasi::monotonic_ns())
    }
}

impl kv::Host for HostState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>> {
        if key.len() > MAX_KV_KEY {
            return Ok(None);
        }
        match self.shared.kv.get(&self.shared.name, &key) {
            Ok(v) => Ok(v),
            Err(e) => {
                tracing::warn!(plugin = &*self.shared.name, error = %e, "plugin kv read failed");
                Ok(None)
            }
        }
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<Result<(), String>> {
        if key.len() > MAX_KV_KEY {
            return Ok(Err(format!(
                "key of {} bytes; at most {MAX_KV_KEY}",
                key.len()
            )));
        }
        if value.len() > MAX_KV_VALUE {
            return Ok(Err(format!(
                "value of {} bytes; at most {MAX_KV_VALUE}",
                value.len()
            )));
        }
        let shared = &self.shared;
        let stats = &shared.stats;
        let old = match shared.kv.get(&shared.name, &key) {
            Ok(v) => v.map(|v| (key.len() + v.len()) as u64),
            Err(e) => return Ok(Err(e)),
        };
        if old.is_none() && stats.kv_keys.fetch_add(1, Ordering::Relaxed) >= MAX_KV_KEYS as u64 {
            sub(&stats.kv_keys, 1);
            stats.kv_refused();
            return Ok(Err(format!("the binding holds {MAX_KV_KEYS} keys already")));
        }
        let new = (key.len() + value.len()) as u64;
        let grow = new.saturating_sub(old.unwrap_or(0));
        if grow > 0 {
            let before = stats.kv_bytes.fetch_add(grow, Ordering::Relaxed);
            if before.saturating_add(grow) > shared.kv_max_bytes {
                sub(&stats.kv_bytes, grow);
                if old.is_none() {
                    sub(&stats.kv_keys, 1);
                }
                stats.kv_refused();
                return Ok(Err(format!(
                    "the binding's key-value store would hold {} bytes; the limit is {} (delete keys first)",
                    before.saturating_add(grow),
                    shared.kv_max_bytes
                )));
            }
        }
        let r = shared.kv.set(&shared.name, &key, &value);
        match &r {
            Err(_) => {
                sub(&stats.kv_bytes, grow);
                if old.is_none() {
                    sub(&stats.kv_keys, 1);
                }
            }
            Ok(()) => sub(&stats.kv_bytes, old.unwrap_or(0).saturating_sub(new)),
        }
        Ok(r)
    }

    fn delete(&mut self, key: String) -> Result<()> {
        let shared = &self.shared;
        if let Ok(Some(v)) = shared.kv.get(&shared.name, &key)
            && shared.kv.delete(&shared.name, &key).is_ok()
        {
            sub(&shared.stats.kv_keys, 1);
            sub(&shared.stats.kv_bytes, (key.len() + v.len()) as u64);
        }
        Ok(())
    }
}

impl metrics::Host for HostState {
    fn add(&mut self, name: String, delta: u64) -> Result<()> {
        self.shared.stats.add_custom(&name, delta);
        Ok(())
    }
}
