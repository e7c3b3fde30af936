//! Hostile test plugin (`route`): allocates and writes 1 MiB blocks in `route` until memory runs out.

use core::hint::black_box;
use switchyard_plugin::{Message, Route, RouteDecision, export_route};

const BLOCK: usize = 1 << 20;

/// The plugin state: the blocks allocated so far (kept across calls).
struct Memhog {
    blocks: Vec<Vec<u8>>,
}

impl Route for Memhog {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(Memhog { blocks: Vec::new() })
    }

    fn route(&mut self, _msg: Message) -> RouteDecision {
        loop {
            let mut block = Vec::with_capacity(BLOCK);
            // Write every byte so each page is really touched.
            block.resize(BLOCK, 0xA5u8);
            for page in block.chunks_mut(4096) {
                page[0] = black_box(page[0]).wrapping_add(1);
            }
            self.blocks.push(black_box(block));
        }
    }
}

export_route!(Memhog);
