//! Test plugin (`route`): delivers every message unchanged.
//!
//! Used by the node's tests for plugin chains, hot reload and the cost of a
//! plugin call. It accepts and ignores any configuration.

use switchyard_plugin::{Message, Route, RouteDecision, export_route};

/// The plugin state: none.
struct Passthrough;

impl Route for Passthrough {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(Passthrough)
    }

    fn route(&mut self, _msg: Message) -> RouteDecision {
        RouteDecision::Deliver
    }
}

export_route!(Passthrough);
