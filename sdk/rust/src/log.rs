//! Leveled logging into the node's log output.
//!
//! Messages are truncated to 4 KiB by the node and tagged with the binding
//! name. Use `format!` to build a message from values:
//!
//! ```
//! use switchyard_plugin::log;
//!
//! let bucket = "eu";
//! log::warn(&format!("bucket {bucket} is over its limit"));
//! ```

/// The severity of a log message, from least to most severe.
pub use crate::bindings::lifecycle::switchyard::plugin::log::Level;

/// Writes `message` to the node's log at `level`.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::lifecycle::switchyard::plugin::log::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    crate::native::log(level, message);
}

/// Writes `message` at level `trace`.
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Writes `message` at level `debug`.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Writes `message` at level `info`.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Writes `message` at level `warn`.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Writes `message` at level `error`.
pub fn error(message: &str) {
    log(Level::Error, message);
}
