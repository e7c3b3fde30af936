//! A small key-value store scoped to the plugin binding.
//!
//! The store is persisted by the node. Every instance of the binding sees the
//! same data; it survives restarts and hot reloads and is deleted when the
//! binding is removed. Keys are at most 256 bytes, values at most 64 KiB, and
//! a binding holds at most 100,000 keys.
//!
//! Reads and writes are not transactional across instances: two instances of
//! the same binding may interleave a `get` and a `set` on the same key.

/// The value stored under `key`, if any.
pub fn get(key: &str) -> Option<Vec<u8>> {
    #[cfg(target_arch = "wasm32")]
    return crate::bindings::lifecycle::switchyard::plugin::kv::get(key);
    #[cfg(not(target_arch = "wasm32"))]
    return crate::native::kv_get(key);
}

/// Stores `value` under `key`, replacing any previous value. Fails when a
/// limit is exceeded; the error says which.
pub fn set(key: &str, value: &[u8]) -> Result<(), String> {
    #[cfg(target_arch = "wasm32")]
    return crate::bindings::lifecycle::switchyard::plugin::kv::set(key, value);
    #[cfg(not(target_arch = "wasm32"))]
    return crate::native::kv_set(key, value);
}

/// Removes `key`; removing a missing key is not an error.
pub fn delete(key: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::lifecycle::switchyard::plugin::kv::delete(key);
    #[cfg(not(target_arch = "wasm32"))]
    crate::native::kv_delete(key);
}
