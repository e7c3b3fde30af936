//! Hostile test plugin (`pick`): always returns the out-of-range index `u32::MAX`.

use switchyard_plugin::{Candidate, Message, Pick, export_pick};

/// The plugin state: none.
struct BadPick;

impl Pick for BadPick {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(BadPick)
    }

    fn pick(&mut self, _msg: Message, _candidates: &[Candidate]) -> Option<u32> {
        Some(u32::MAX)
    }
}

export_pick!(BadPick);
