//! Hostile test plugin (`route`): panics (traps) on every `route` call, or in `init` when the configuration is `init`.

use switchyard_plugin::{Message, Route, RouteDecision, export_route};

/// The plugin state: none.
struct Trap;

impl Route for Trap {
    fn new(config: &str) -> Result<Self, String> {
        if config.trim() == "init" {
            panic!("trap plugin: panicking in init as configured");
        }
        Ok(Trap)
    }

    fn route(&mut self, msg: Message) -> RouteDecision {
        panic!(
            "trap plugin: panicking on a message for topic {}",
            msg.topic
        );
    }
}

export_route!(Trap);
