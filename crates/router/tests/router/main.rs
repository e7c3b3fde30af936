//! The router in process: a real store on a temporary directory, real
//! plugins built from `plugins/`, no HTTP. One test binary; the modules
//! split the tests by concern.
//!
//! The tests use the router's public API only (publish, subscribe, pull,
//! groups, plugins), so they hold whatever the engine's internals become.
//! Tests of timeouts and delays run on tokio's paused clock and take
//! milliseconds.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

mod group_timers;
mod groups;
mod patterns;
mod plugins;
mod publish;
mod pull;
mod resume;
