//! Named counters shown in the node's plugin listing.
//!
//! They appear next to the binding's own call and error counters. A binding
//! has at most 64 names, each at most 64 bytes.

/// Adds `delta` to the counter `name`, creating it at zero.
pub fn add(name: &str, delta: u64) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::lifecycle::switchyard::plugin::metrics::add(name, delta);
    #[cfg(not(target_arch = "wasm32"))]
    crate::native::metrics_add(name, delta);
}
