//! Switchyard's HTTP server on hyper: the client API (publish, Server-Sent
//! Events, pull, topics, plugins, consumer groups, cluster membership,
//! health) and the node-to-node endpoints of a cluster (the feed, group
//! take-over and hand-over, relayed requests).
//!
//! [`serve`] takes a bound listener, a [`Router`] and a shutdown future, so
//! that tests bind `127.0.0.1:0` and control shutdown. Every error answer
//! this node produces is a `Problem`, turned into an
//! `application/problem+json` response with a stable `code` in one place
//! (the `problem` module); the errors of the router and the model are
//! mapped to a status and code there too, while a handler builds the
//! `Problem` for what it checks itself (query parameters, headers, body
//! limits, methods, signatures). Nothing a client sends can panic the node.
//! Limits (body sizes, connections, streams, timeouts) are fields of
//! [`GatewayConfig`] with documented defaults. Requests naming a host the
//! node does not answer to, and requests from browser origins that are not
//! allowed, are refused before any handler runs (see `docs/security.md`).
//!
//! In a cluster it also talks to other nodes: it relays a client's request
//! for a consumer group that another node coordinates to that node (with
//! the cluster's `PeerClient`) and streams the answer back, and asks the
//! live peers for their groups to list them.
//!
//! Client requests are authorized with JSON Web Tokens whose claims list
//! the topic patterns a client may publish to and subscribe to ([`auth`]);
//! requests without a token get the node's anonymous access.
//!
//! With a certificate configured ([`tls`]) the listener speaks TLS only,
//! with ALPN choosing HTTP/2 or HTTP/1.1; the certificate is replaced
//! while the node runs.
//!
//! What it does not do: store, or validate messages (the router does).
#![warn(missing_docs)]

pub mod auth;
mod batch_body;
mod bulk;
mod cluster;
mod config;
mod cors;
mod envelope;
mod groups;
mod handlers;
mod hosts;
mod metrics;
mod output;
mod plugin_component;
mod plugins;
mod problem;
mod query;
mod server;
mod sse;
pub mod tls;
mod ui;

pub use auth::{Anonymous, AuthConfig, Authorizer, Scope, VerifyKey};
pub use config::{GatewayConfig, LIVE_KEYS, Live};
pub use hosts::check_allowed_host;
pub use metrics::report_dropped_log_lines;
pub use server::serve;
pub use switchyard_router::Router;
