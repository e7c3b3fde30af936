//! Switchyard's client-facing HTTP API on hyper: publish, Server-Sent
//! Events, pull, inspect and health.
//!
//! [`serve`] takes a bound listener, a [`Router`] and a shutdown future, so
//! that tests bind `127.0.0.1:0` and control shutdown. Every error becomes an
//! `application/problem+json` response in one place ([`problem`]); nothing a
//! client sends can panic the node. Limits (body sizes, connections, header
//! read time) are fields of [`GatewayConfig`] with documented defaults.
//!
//! What it does not do: store, validate messages (the router does) or talk
//! to other nodes.
#![warn(missing_docs)]

mod cluster;
mod config;
mod cors;
mod envelope;
mod groups;
mod handlers;
mod plugins;
mod problem;
mod query;
mod server;
mod sse;

pub use config::GatewayConfig;
pub use server::serve;
pub use switchyard_router::Router;
