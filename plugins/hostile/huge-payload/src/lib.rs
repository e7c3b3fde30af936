//! Hostile test plugin (`route`): replaces every payload with N bytes (config `N` or `{"size": N}`, default 100 MiB).

use switchyard_plugin::{Message, Route, RouteDecision, export_route};

const DEFAULT_SIZE: usize = 100 * 1024 * 1024;

/// The plugin state: the payload size to return.
struct HugePayload {
    size: usize,
}

impl Route for HugePayload {
    fn new(config: &str) -> Result<Self, String> {
        let config = config.trim();
        if config.is_empty() {
            return Ok(HugePayload { size: DEFAULT_SIZE });
        }
        if let Ok(size) = config.parse() {
            return Ok(HugePayload { size });
        }
        let value = config
            .strip_prefix('{')
            .and_then(|c| c.strip_suffix('}'))
            .and_then(|c| c.trim().strip_prefix("\"size\""))
            .and_then(|c| c.trim().strip_prefix(':'))
            .and_then(|c| c.trim().parse().ok());
        match value {
            Some(size) => Ok(HugePayload { size }),
            None => Err(format!(
                "huge-payload config must be a byte count such as 104857600 or {{\"size\": 104857600}}, not {config:?}"
            )),
        }
    }

    fn route(&mut self, _msg: Message) -> RouteDecision {
        RouteDecision::replace_payload(vec![b'x'; self.size])
    }
}

export_route!(HugePayload);
