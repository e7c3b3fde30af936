//! The plugin key-value store: a backend trait the node implements on its
//! store, and an in-memory backend for tests and `switchyard plugin test`.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;

/// Longest key, in bytes.
pub const MAX_KV_KEY: usize = 256;
/// Largest value, in bytes.
pub const MAX_KV_VALUE: usize = 64 * 1024;
/// Most keys per binding.
pub const MAX_KV_KEYS: usize = 100_000;
/// Default of the most bytes (keys and values) per binding: see
/// `EngineConfig::kv_max_bytes`.
pub const DEFAULT_KV_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Where plugin key-value data lives. Each binding has its own `scope` (the
/// binding name); scopes never see each other's keys. Errors are strings
/// because the plugin sees them as such.
pub trait KvBackend: Send + Sync {
    /// The value under `key`.
    fn get(&self, scope: &str, key: &str) -> Result<Option<Vec<u8>>, String>;
    /// Stores `value` under `key`.
    fn set(&self, scope: &str, key: &str, value: &[u8]) -> Result<(), String>;
    /// Removes `key`.
    fn delete(&self, scope: &str, key: &str) -> Result<(), String>;
    /// How many keys `scope` holds, and their bytes (keys and values).
    fn usage(&self, scope: &str) -> Result<(u64, u64), String>;
    /// Removes every key of `scope`.
    fn clear(&self, scope: &str) -> Result<(), String>;
}

/// A [`KvBackend`] in memory: for tests and local plugin runs.
#[derive(Default)]
pub struct MemoryKv {
    scopes: Mutex<HashMap<String, BTreeMap<String, Vec<u8>>>>,
}

impl MemoryKv {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, BTreeMap<String, Vec<u8>>>) -> R) -> R {
        let mut guard = self.scopes.lock();
        f(&mut guard)
    }
}

impl KvBackend for MemoryKv {
    fn get(&self, scope: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.with(|s| s.get(scope).and_then(|m| m.get(key).cloned())))
    }

    fn set(&self, scope: &str, key: &str, value: &[u8]) -> Result<(), String> {
        self.with(|s| {
            s.entry(scope.to_owned())
                .or_default()
                .insert(key.to_owned(), value.to_vec())
        });
        Ok(())
    }

    fn delete(&self, scope: &str, key: &str) -> Result<(), String> {
        self.with(|s| s.get_mut(scope).map(|m| m.remove(key)));
        Ok(())
    }

    fn usage(&self, scope: &str) -> Result<(u64, u64), String> {
        Ok(self.with(|s| {
            s.get(scope).map_or((0, 0), |m| {
                let bytes = m.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
                (m.len() as u64, bytes)
            })
        }))
    }

    fn clear(&self, scope: &str) -> Result<(), String> {
        self.with(|s| s.remove(scope));
        Ok(())
    }
}
