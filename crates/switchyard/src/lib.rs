//! The `switchyard` binary's library half. The binary (`main.rs`) parses
//! the command line ([`args`]) and hands over:
//!
//! - `serve` loads and validates the configuration ([`config`]) before any
//!   socket opens, then runs a node ([`node`]: store, engine, cluster and
//!   HTTP API, stopped by a shutdown future);
//! - every other command is a client of a node's HTTP API ([`commands`],
//!   built on [`client`] and the SSE parser [`sse`]), or runs a plugin
//!   locally ([`plugin_cli`]), or writes a new plugin project ([`scaffold`]).
#![warn(missing_docs)]

pub mod args;
pub mod client;
pub mod commands;
pub mod config;
pub mod logging;
pub mod node;
pub mod plugin_cli;
pub mod reload;
pub mod scaffold;
pub mod sse;
