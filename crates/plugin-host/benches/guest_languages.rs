//! What a route plugin costs by guest language: component size, compile
//! (bind) time, loading from the compile cache, instantiation (a binding's
//! first instance with `init` run), process memory per binding, and the
//! per-call cost at a 1 KiB JSON payload.
//!
//! ```text
//! scripts/build-guest-python.sh && scripts/build-guest-js.sh
//! cargo bench -p switchyard-plugin-host --bench guest_languages -- \
//!     rust=plugins/target/wasm32-wasip2/release/field_router.wasm \
//!     python=plugins/python/target/route_py.wasm \
//!     javascript=plugins/js/target/route_js.wasm
//! ```
//!
//! Without arguments it measures the Rust field-router alone. With
//! `GUEST_BENCH_CACHE=DIR`, the compile cache is kept in DIR: run twice,
//! the second run measures a binding whose component comes compiled from
//! the cache. Paths are
//! relative to the repository root. Run the languages one by one for
//! memory figures that do not overlap (RSS is the whole process's).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed benchmark

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_plugin_host::{
    Binding, BindingSpec, EngineConfig, ErrorPolicy, Hook, Limits, MemoryKv, PluginEngine,
    PluginMessage, RouteDecision, Stats,
};
use switchyard_testkit::{build_guest_plugins, repo_root};

const BATCH: usize = 100;
const BATCHES: usize = 50;

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4
}

fn payload() -> Vec<u8> {
    let head = br#"{"region":"eu","pad":""#;
    let tail = br#""}"#;
    let mut p = head.to_vec();
    p.resize(1024 - tail.len(), b'x');
    p.extend_from_slice(tail);
    p
}

fn bind(
    engine: &PluginEngine,
    bytes: &[u8],
    config: &str,
    memory_mb: usize,
) -> Result<(Arc<Binding>, Duration), switchyard_plugin_host::PluginError> {
    let plugin = engine.load(bytes).expect("load");
    let start = Instant::now();
    let binding = Binding::new(
        engine,
        plugin,
        BindingSpec {
            name: "bench".into(),
            hook: Hook::Route,
            topics: vec![">".parse().unwrap()],
            config: config.into(),
            on_error: ErrorPolicy::Drop,
            limits: Limits {
                memory_bytes: memory_mb << 20,
                max_instances: 1,
                max_output_bytes: 1 << 20,
                ..Limits::default()
            },
        },
        Arc::new(MemoryKv::default()),
        Arc::new(Stats::default()),
    )?;
    Ok((binding, start.elapsed()))
}

fn main() {
    let mut args: Vec<(String, std::path::PathBuf)> = std::env::args()
        .skip(1)
        .filter_map(|a| {
            let (name, path) = a.split_once('=')?;
            Some((name.to_owned(), repo_root().join(path)))
        })
        .collect();
    if args.is_empty() {
        let dir = build_guest_plugins(repo_root()).expect("guest plugins build");
        args.push(("rust".into(), dir.join("field_router.wasm")));
    }
    println!(
        "| language | component bytes | compile ms | cached load ms | instantiate+init ms | RSS delta MiB | min memory_mb | median µs/call (1 KiB) | p90 µs/call |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, path) in args {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // The Rust field-router takes a JSON pointer; the guest-language
        // examples a field name.
        let config = if name == "rust" {
            r#"{"field": "/region"}"#
        } else {
            r#"{"field": "region"}"#
        };
        // GUEST_BENCH_CACHE keeps the compile cache across runs: a second
        // run then measures a node that loads the component compiled (its
        // "compile" column is the cached load, and its RSS delta leaves out
        // the compiler's memory).
        let cache = tempfile::tempdir().unwrap();
        let cache_dir = std::env::var_os("GUEST_BENCH_CACHE")
            .map_or_else(|| cache.path().to_owned(), std::path::PathBuf::from);
        let settings = EngineConfig {
            cache_dir: Some(cache_dir),
            compile_timeout: Duration::from_secs(600),
            ..EngineConfig::default()
        };
        let rss0 = rss_kib();
        let engine = PluginEngine::new(settings.clone()).expect("engine");
        let start = Instant::now();
        drop(engine.load(&bytes).expect("compile"));
        let compile = start.elapsed();
        let (binding, instantiate) = bind(&engine, &bytes, config, 128).expect("binding");
        let body = payload();
        let msg = PluginMessage {
            topic: "orders",
            key: Some(b"customer-42"),
            headers: &[],
            payload: &body,
            timestamp_ms: 1_700_000_000_000,
        };
        for _ in 0..200 {
            let d = binding.route(&msg).expect("route");
            assert!(matches!(d, RouteDecision::Reroute(_)), "{d:?}");
        }
        let rss = rss_kib().saturating_sub(rss0);
        let mut per_call: Vec<f64> = (0..BATCHES)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..BATCH {
                    std::hint::black_box(binding.route(std::hint::black_box(&msg)).unwrap());
                }
                start.elapsed().as_nanos() as f64 / BATCH as f64 / 1000.0
            })
            .collect();
        per_call.sort_by(f64::total_cmp);
        // The smallest memory cap (of a few) an instance starts under.
        let min_memory = [16, 32, 48, 64, 96, 128]
            .into_iter()
            .find(|&mb| bind(&engine, &bytes, config, mb).is_ok())
            .unwrap_or(128);
        drop(binding);
        // A second engine (a restart) loads the artifact the binding cached.
        let again = PluginEngine::new(settings).expect("engine");
        let start = Instant::now();
        drop(again.load(&bytes).expect("cached load"));
        let cached = start.elapsed();
        println!(
            "| {name} | {} | {:.0} | {:.1} | {:.1} | {:.0} | {min_memory} | {:.1} | {:.1} |",
            bytes.len(),
            compile.as_secs_f64() * 1e3,
            cached.as_secs_f64() * 1e3,
            instantiate.as_secs_f64() * 1e3,
            rss as f64 / 1024.0,
            per_call[BATCHES / 2],
            per_call[BATCHES * 9 / 10],
        );
    }
}
