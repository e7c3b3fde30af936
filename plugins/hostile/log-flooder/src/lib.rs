//! Hostile test plugin (`route`): writes 900 log lines of 4 KiB in every
//! `route` call (under the default host-call limit), then delivers.

use switchyard_plugin::{Message, Route, RouteDecision, export_route, log};

/// The plugin state: the line to write.
struct LogFlooder {
    line: String,
}

impl Route for LogFlooder {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(LogFlooder {
            line: "x".repeat(4096),
        })
    }

    fn route(&mut self, _msg: Message) -> RouteDecision {
        for _ in 0..900 {
            log::warn(&self.line);
        }
        RouteDecision::Deliver
    }
}

export_route!(LogFlooder);
