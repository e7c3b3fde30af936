//! The `switchyard` binary's library half: configuration loading and the
//! HTTP client behind the `publish`, `subscribe` and `topics` commands. The
//! binary itself (`main.rs`) only parses flags and wires these together.
#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod plugin_cli;
pub mod sse;
