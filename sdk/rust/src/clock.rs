//! Time as seen by the node.

/// Wall-clock time in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    #[cfg(target_arch = "wasm32")]
    return crate::bindings::lifecycle::switchyard::plugin::clock::now_ms();
    #[cfg(not(target_arch = "wasm32"))]
    return crate::native::now_ms();
}

/// A monotonic clock in nanoseconds, for measuring intervals only; its
/// origin is unspecified.
pub fn monotonic_ns() -> u64 {
    #[cfg(target_arch = "wasm32")]
    return crate::bindings::lifecycle::switchyard::plugin::clock::monotonic_ns();
    #[cfg(not(target_arch = "wasm32"))]
    return crate::native::monotonic_ns();
}
