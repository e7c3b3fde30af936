//! Write [Switchyard](https://example.invalid/switchyard) plugins in plain Rust.
//!
//! A Switchyard plugin is a WebAssembly component that implements one hook of
//! the plugin contract (`switchyard:plugin@0.1.0`, in this crate's
//! `wit/plugin.wit`, a copy of `sdk/wit/plugin.wit` in the repository):
//!
//! | hook | trait | export macro | runs |
//! | --- | --- | --- | --- |
//! | `route` | [`Route`] | [`export_route!`] | on ingress, before a message is stored |
//! | `filter` | [`Filter`] | [`export_filter!`] | on egress, once per subscriber and message |
//! | `pick` | [`Pick`] | [`export_pick!`] | when a consumer group chooses a member |
//!
//! This crate hides the generated bindings: implement the trait for your
//! type, call the matching export macro once, and build the crate for
//! `wasm32-wasip2`. The node creates instances of the component and calls
//! the trait's `new` with the binding's configuration string (empty when none
//! was given) before the first hook call; the value it returns is kept for
//! the life of the instance and every hook call gets `&mut` access to it.
//! Returning `Err` from `new` rejects the configuration: the binding is
//! refused and the operator sees the message.
//!
//! Plugins may call the host through [`log`], [`clock`], [`kv`] and
//! [`metrics`]. They have no filesystem, network, environment or stdio:
//! printing traps (use [`log`]). A panic traps the instance; the SDK sends
//! its message to the node's log first, and the node shows it with the
//! failed call.
//!
//! # Example
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "require-key"
//! version = "0.1.0"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! switchyard-plugin-sdk = "0.1"
//! # or from a checkout: { path = "../switchyard/sdk/rust" }
//!
//! [profile.release]
//! opt-level = "s"
//! lto = true
//! codegen-units = 1
//! strip = true
//! panic = "abort"
//! ```
//!
//! `src/lib.rs`, a `route` plugin that refuses messages without a key on
//! the topics whose name starts with a configured prefix:
//!
//! ```
//! use switchyard_plugin::{Message, Route, RouteDecision, export_route, log, metrics};
//!
//! struct RequireKey {
//!     prefix: String,
//! }
//!
//! impl Route for RequireKey {
//!     fn new(config: &str) -> Result<Self, String> {
//!         // The configuration is the topic prefix; empty means every topic.
//!         if config.contains(char::is_whitespace) {
//!             return Err(format!("prefix {config:?} contains whitespace"));
//!         }
//!         log::info(&format!("requiring keys on topics starting with {config:?}"));
//!         Ok(RequireKey { prefix: config.to_owned() })
//!     }
//!
//!     fn route(&mut self, msg: Message) -> RouteDecision {
//!         if msg.key.is_none() && msg.topic.starts_with(&self.prefix) {
//!             metrics::add("refused", 1);
//!             return RouteDecision::Drop(format!("messages on {} need a key", msg.topic));
//!         }
//!         RouteDecision::Deliver
//!     }
//! }
//!
//! export_route!(RequireKey);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the
//! component is `target/wasm32-wasip2/release/require_key.wasm`.
//!
//! # Testing natively
//!
//! Built for any target other than `wasm32`, the export macros only check
//! that the type implements the trait, and the host functions are served
//! in-process (see `testing`, which exists only in such builds), so plugin
//! logic can be unit-tested with a plain `cargo test`.
//!
//! # Features
//!
//! * `json`: adds `Message::payload_json`, which parses the payload with
//!   `serde_json` (pulls in `serde` and `serde_json`).

#![warn(missing_docs)]

#[allow(missing_docs)]
mod bindings;
pub mod clock;
mod export;
pub mod kv;
pub mod log;
pub mod metrics;
mod types;

#[cfg(not(target_arch = "wasm32"))]
mod native;
#[cfg(not(target_arch = "wasm32"))]
pub use native::testing;

pub use types::{Candidate, FilterDecision, Header, Message, RouteDecision};

/// A `route` plugin: decides, on ingress, what happens to a message before
/// it is stored.
///
/// Export an implementation with [`export_route!`].
pub trait Route {
    /// Creates the plugin state from the binding's configuration string
    /// (empty when none was given). Called once per instance, before any
    /// hook call. An `Err` rejects the configuration with that message.
    fn new(config: &str) -> Result<Self, String>
    where
        Self: Sized;

    /// Decides what happens to `msg`.
    fn route(&mut self, msg: Message) -> RouteDecision;
}

/// A `filter` plugin: decides, on egress, whether and how a message is
/// written to one subscriber.
///
/// Called once per subscriber and message. Export an implementation with
/// [`export_filter!`].
pub trait Filter {
    /// Creates the plugin state from the binding's configuration string
    /// (empty when none was given). Called once per instance, before any
    /// hook call. An `Err` rejects the configuration with that message.
    fn new(config: &str) -> Result<Self, String>
    where
        Self: Sized;

    /// Decides whether `msg` is written to the subscriber, and with which
    /// payload.
    fn filter(&mut self, msg: Message) -> FilterDecision;
}

/// A `pick` plugin: chooses which member of a consumer group receives a
/// message.
///
/// Export an implementation with [`export_pick!`].
pub trait Pick {
    /// Creates the plugin state from the binding's configuration string
    /// (empty when none was given). Called once per instance, before any
    /// hook call. An `Err` rejects the configuration with that message.
    fn new(config: &str) -> Result<Self, String>
    where
        Self: Sized;

    /// Returns the index into `candidates` of the member that receives
    /// `msg`, or `None` to let the group's default strategy choose.
    fn pick(&mut self, msg: Message, candidates: &[Candidate]) -> Option<u32>;
}

#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::{filter, lifecycle, pick, route};
    pub use crate::export::Instance;
    pub use std::string::String;

    pub use crate::bindings::filter::exports::switchyard::plugin::filter::Guest as FilterGuest;
    pub use crate::bindings::lifecycle::exports::switchyard::plugin::lifecycle::Guest as LifecycleGuest;
    pub use crate::bindings::pick::exports::switchyard::plugin::pick::Guest as PickGuest;
    pub use crate::bindings::route::exports::switchyard::plugin::route::Guest as RouteGuest;
    pub use crate::bindings::route::switchyard::plugin::types::RouteDecision as RawRouteDecision;

    /// Converts the SDK's decision into the generated one (moves only).
    #[inline]
    pub fn route_decision(decision: crate::RouteDecision) -> RawRouteDecision {
        use crate::bindings::route::switchyard::plugin::types::Replacement;
        match decision {
            crate::RouteDecision::Deliver => RawRouteDecision::Deliver,
            crate::RouteDecision::Drop(reason) => RawRouteDecision::Drop(reason),
            crate::RouteDecision::Reroute(topics) => RawRouteDecision::Reroute(topics),
            crate::RouteDecision::Replace { headers, payload } => {
                RawRouteDecision::Replace(Replacement { headers, payload })
            }
        }
    }
}
