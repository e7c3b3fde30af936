//! Hostile test plugin (`route`): never returns from `route`; it spins on a counter forever.

use core::hint::black_box;
use switchyard_plugin::{Message, Route, RouteDecision, export_route};

/// The plugin state: none.
struct Spin;

impl Route for Spin {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(Spin)
    }

    fn route(&mut self, _msg: Message) -> RouteDecision {
        let mut counter: u64 = 0;
        loop {
            // black_box hides the counter from the optimiser, so the loop
            // can be neither removed nor proven infinite.
            counter = black_box(counter.wrapping_add(1));
        }
    }
}

export_route!(Spin);
