//! Hostile test plugin (`route`): writes 64 KiB values under new keys in
//! `route` until the host refuses a write, then drops the message with the
//! host's refusal as the reason.

use switchyard_plugin::{Message, Route, RouteDecision, export_route, kv};

const VALUE: usize = 64 * 1024;

/// The plugin state: the next key to write (kept across calls).
struct KvFiller {
    next: u64,
}

impl Route for KvFiller {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(KvFiller { next: 0 })
    }

    fn route(&mut self, _msg: Message) -> RouteDecision {
        let value = vec![0x5Au8; VALUE];
        // At most 500 writes a call: well under the host-call limit, and
        // 31 MiB, far over the default key-value limit.
        for _ in 0..500 {
            let key = format!("k{:08}", self.next);
            if let Err(e) = kv::set(&key, &value) {
                return RouteDecision::drop_with(format!("refused: {e}"));
            }
            self.next += 1;
        }
        RouteDecision::Deliver
    }
}

export_route!(KvFiller);
