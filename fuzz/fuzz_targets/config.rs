//! Configuration parsing (crates/switchyard/src/config*.rs).
//!
//! Input: the text of a config file. Parsing and validating it (as
//! `switchyard serve --config` does, without overrides) returns a
//! configuration or an error that names the problem; it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::config::{FileConfig, NodeConfig, Overrides};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let fc: FileConfig = match toml::from_str(text) {
        Ok(fc) => fc,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    match NodeConfig::build(fc, Overrides::default()) {
        Ok(config) => {
            let _ = format!("{config:?}");
            assert!(config.gateway.max_batch_bytes >= config.router.max_payload);
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
        }
    }
});
