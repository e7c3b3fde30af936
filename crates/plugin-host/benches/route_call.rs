//! Cost of one hook call on a reused instance, by payload size: the
//! `route` hook of the passthrough plugin (the host boundary alone) and of
//! the field-router example (which parses the JSON payload).
//!
//! `cargo bench -p switchyard-plugin-host --bench route_call`
//!
//! Prints the median and the 90th percentile of the per-call time over
//! batches of calls (each batch's mean), so that timer overhead is spread.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Instant;

use switchyard_model::Header;
use switchyard_plugin_host::{
    Binding, BindingSpec, EngineConfig, ErrorPolicy, Hook, Limits, MemoryKv, PluginEngine,
    PluginMessage, RouteDecision, Stats,
};
use switchyard_testkit::{build_guest_plugins, repo_root};

const BATCH: usize = 1000;
const BATCHES: usize = 300;

fn payload(size: usize) -> Vec<u8> {
    // A JSON object of the wanted size whose `region` field routes it.
    let head = br#"{"region":"eu","pad":""#;
    let tail = br#""}"#;
    let mut p = head.to_vec();
    p.resize(size - tail.len(), b'x');
    p.extend_from_slice(tail);
    p
}

fn main() {
    let dir = build_guest_plugins(repo_root()).expect("guest plugins build");
    let engine = PluginEngine::new(EngineConfig::default()).expect("engine");
    println!("| plugin | payload | median ns/call | p90 ns/call | calls/s (1 thread) |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (plugin, config) in [
        ("passthrough", ""),
        ("field_router", r#"{"field": "/region"}"#),
    ] {
        let bytes = std::fs::read(dir.join(format!("{plugin}.wasm"))).expect("plugin file");
        let binding = Binding::new(
            &engine,
            engine.load(&bytes).expect("load"),
            BindingSpec {
                name: plugin.into(),
                hook: Hook::Route,
                topics: vec![">".parse().unwrap()],
                config: config.into(),
                on_error: ErrorPolicy::Drop,
                limits: Limits {
                    max_output_bytes: 1 << 20,
                    ..Limits::default()
                },
            },
            Arc::new(MemoryKv::default()),
            Arc::new(Stats::default()),
        )
        .expect("binding");
        let headers = [Header {
            name: "content-type".into(),
            value: "application/json".into(),
        }];
        for size in [100, 1024, 16 * 1024] {
            let body = payload(size);
            let msg = PluginMessage {
                topic: "orders",
                key: Some(b"customer-42"),
                headers: &headers,
                payload: &body,
                timestamp_ms: 1_700_000_000_000,
            };
            // Warm up the instance and the caches.
            for _ in 0..2000 {
                let d = binding.route(&msg).expect("route");
                assert!(matches!(
                    d,
                    RouteDecision::Deliver | RouteDecision::Reroute(_)
                ));
            }
            let mut per_call: Vec<f64> = (0..BATCHES)
                .map(|_| {
                    let start = Instant::now();
                    for _ in 0..BATCH {
                        std::hint::black_box(binding.route(std::hint::black_box(&msg)).unwrap());
                    }
                    start.elapsed().as_nanos() as f64 / BATCH as f64
                })
                .collect();
            per_call.sort_by(f64::total_cmp);
            let median = per_call[BATCHES / 2];
            let p90 = per_call[BATCHES * 9 / 10];
            println!(
                "| {plugin} | {size} B | {median:.0} | {p90:.0} | {:.0} |",
                1e9 / median
            );
        }
    }
}
