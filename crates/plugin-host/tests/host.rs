//! The host against real components built from the repository's `plugins/`
//! workspace: every example plugin, every hostile one, and the engine's
//! validation and compile cache.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Arc;

use switchyard_model::Header;
use switchyard_plugin_host::{
    Binding, BindingSpec, Candidate, EngineConfig, ErrorPolicy, FailureKind, FilterDecision, Hook,
    KvBackend, Limits, MemoryKv, PluginEngine, PluginError, PluginMessage, RouteDecision, Stats,
};
use switchyard_testkit::guest_plugin as wasm;

fn engine() -> PluginEngine {
    PluginEngine::new(EngineConfig::default()).expect("engine")
}

fn spec(name: &str, hook: Hook, config: &str) -> BindingSpec {
    BindingSpec {
        name: name.into(),
        hook,
        topics: vec![">".parse().unwrap()],
        config: config.into(),
        on_error: ErrorPolicy::Drop,
        limits: Limits::default(),
    }
}

fn bind_with(
    engine: &PluginEngine,
    plugin: &str,
    spec: BindingSpec,
    kv: Arc<dyn KvBackend>,
) -> Result<Arc<Binding>, PluginError> {
    let p = engine.load(&wasm(plugin))?;
    Binding::new(engine, p, spec, kv, Arc::new(Stats::default()))
}

fn bind(engine: &PluginEngine, plugin: &str, hook: Hook, config: &str) -> Arc<Binding> {
    bind_with(
        engine,
        plugin,
        spec(plugin, hook, config),
        Arc::new(MemoryKv::default()),
    )
    .expect("binding")
}

fn msg<'a>(topic: &'a str, payload: &'a [u8], headers: &'a [Header]) -> PluginMessage<'a> {
    PluginMessage {
        topic,
        key: None,
        headers,
        payload,
        timestamp_ms: 1_700_000_000_000,
    }
}

#[test]
fn garbage_and_core_modules_are_refused_with_reasons() {
    let e = engine();
    match e.load(b"definitely not wasm") {
        Err(PluginError::InvalidComponent(m)) => assert!(!m.is_empty()),
        other => panic!("{:?}", other.err()),
    }
    // The smallest core module: magic and version 1.
    match e.load(b"\0asm\x01\0\0\0") {
        Err(PluginError::InvalidComponent(m)) => {
            assert!(m.contains("core WebAssembly module"), "{m}")
        }
        other => panic!("{:?}", other.err()),
    }
    // An empty component (magic, component version and layer) exports nothing.
    match e.load(b"\0asm\x0d\0\x01\0") {
        Err(PluginError::NoKnownWorld(m)) => assert!(m.contains("exports nothing"), "{m}"),
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn hooks_are_detected_and_a_wrong_hook_is_refused() {
    let e = engine();
    assert_eq!(
        e.load(&wasm("passthrough")).unwrap().hooks(),
        vec![Hook::Route]
    );
    assert_eq!(
        e.load(&wasm("json_filter")).unwrap().hooks(),
        vec![Hook::Filter]
    );
    assert_eq!(
        e.load(&wasm("weighted_balancer")).unwrap().hooks(),
        vec![Hook::Pick]
    );
    let err = bind_with(
        &e,
        "passthrough",
        spec("p", Hook::Filter, ""),
        Arc::new(MemoryKv::default()),
    )
    .err()
    .expect("wrong hook");
    assert!(
        matches!(
            err,
            PluginError::WrongHook {
                wanted: "filter",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_rejected_configuration_names_the_problem() {
    let e = engine();
    let err = bind_with(
        &e,
        "json_filter",
        spec("f", Hook::Filter, "{\"op\": \"gt\"}"),
        Arc::new(MemoryKv::default()),
    )
    .err()
    .expect("rejected");
    match err {
        PluginError::ConfigRejected(m) => assert!(m.contains("field"), "{m}"),
        other => panic!("{other}"),
    }
}

#[test]
fn compiled_components_are_cached_on_disk_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        cache_dir: Some(dir.path().to_owned()),
        ..EngineConfig::default()
    };
    let bytes = wasm("passthrough");
    let cached = || -> Vec<String> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    };
    let sha = {
        let e = PluginEngine::new(config.clone()).unwrap();
        let p = e.load(&bytes).unwrap();
        // The same bytes give the same compiled plugin.
        assert!(Arc::ptr_eq(&p, &e.load(&bytes).unwrap()));
        // Nothing reaches the disk before a binding accepts the plugin.
        assert!(cached().is_empty());
        // A component whose `init` fails leaves nothing behind either.
        let trap = e.load(&wasm("trap")).unwrap();
        let refused = Binding::new(
            &e,
            trap,
            spec("t", Hook::Route, "init"),
            Arc::new(MemoryKv::default()),
            Arc::new(Stats::default()),
        );
        assert!(refused.is_err());
        assert!(cached().is_empty());
        Binding::new(
            &e,
            p.clone(),
            spec("p", Hook::Route, ""),
            Arc::new(MemoryKv::default()),
            Arc::new(Stats::default()),
        )
        .unwrap();
        p.sha256()
    };
    let cached = cached();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(cached[0].starts_with(&sha) && cached[0].ends_with(".cwasm"));
    // A new engine loads the artifact and it works.
    let e = PluginEngine::new(config).unwrap();
    let b = Binding::new(
        &e,
        e.load(&bytes).unwrap(),
        spec("p", Hook::Route, ""),
        Arc::new(MemoryKv::default()),
        Arc::new(Stats::default()),
    )
    .unwrap();
    assert_eq!(
        b.route(&msg("t", b"x", &[])).unwrap(),
        RouteDecision::Deliver
    );
}

#[test]
fn passthrough_counts_calls_and_reuses_instances() {
    let e = engine();
    let b = bind(&e, "passthrough", Hook::Route, "");
    for _ in 0..1000 {
        assert_eq!(
            b.route(&msg("t", b"hello", &[])).unwrap(),
            RouteDecision::Deliver
        );
    }
    let s = b.stats().snapshot();
    assert_eq!(s.calls, 1000);
    assert_eq!(s.errors, 0);
    assert_eq!(s.instances_created, 1, "one thread, one instance");
    assert!(s.time_ns > 0);
}

#[test]
fn field_router_reroutes_by_payload_field_and_header() {
    let e = engine();
    let b = bind(&e, "field_router", Hook::Route, r#"{"field": "/region"}"#);
    assert_eq!(
        b.route(&msg("orders", br#"{"region":"eu","n":1}"#, &[]))
            .unwrap(),
        RouteDecision::Reroute(vec!["orders.eu".into()])
    );
    // Missing field: the default fallback delivers.
    assert_eq!(
        b.route(&msg("orders", b"{}", &[])).unwrap(),
        RouteDecision::Deliver
    );
    // A value that is not a topic token is not used.
    assert_eq!(
        b.route(&msg("orders", br#"{"region":"e.u"}"#, &[]))
            .unwrap(),
        RouteDecision::Deliver
    );
    let h = bind(
        &e,
        "field_router",
        Hook::Route,
        r#"{"header": "region", "prefix": "shipments", "fallback": "drop", "lowercase": true}"#,
    );
    let headers = [Header {
        name: "region".into(),
        value: "US".into(),
    }];
    assert_eq!(
        h.route(&msg("orders", b"x", &headers)).unwrap(),
        RouteDecision::Reroute(vec!["shipments.us".into()])
    );
    assert!(matches!(
        h.route(&msg("orders", b"x", &[])).unwrap(),
        RouteDecision::Drop(_)
    ));
}

#[test]
fn json_filter_keeps_only_matching_messages() {
    let e = engine();
    let b = bind(
        &e,
        "json_filter",
        Hook::Filter,
        r#"{"field": "/amount", "op": "gt", "value": 100}"#,
    );
    assert_eq!(
        b.filter(&msg("t", br#"{"amount": 150}"#, &[])).unwrap(),
        FilterDecision::Keep
    );
    assert_eq!(
        b.filter(&msg("t", br#"{"amount": 50}"#, &[])).unwrap(),
        FilterDecision::Skip
    );
    assert_eq!(
        b.filter(&msg("t", b"not json", &[])).unwrap(),
        FilterDecision::Skip
    );
    let s = b.stats().snapshot();
    assert_eq!(s.custom.get("matched"), Some(&1));
    assert_eq!(s.custom.get("not_json"), Some(&1));
}

#[test]
fn redactor_masks_configured_fields() {
    let e = engine();
    let b = bind(
        &e,
        "redactor",
        Hook::Route,
        r#"{"fields": ["/card/number", "/email"], "keep_last": 4}"#,
    );
    let d = b
        .route(&msg(
            "pay",
            br#"{"card":{"number":"4111111111111111"},"email":"a@b.example","n":1}"#,
            &[],
        ))
        .unwrap();
    let RouteDecision::Replace {
        headers: None,
        payload: Some(p),
    } = d
    else {
        panic!("{d:?}")
    };
    let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
    assert_eq!(v["card"]["number"], "***1111");
    assert_eq!(v["n"], 1);
    assert_ne!(v["email"], "a@b.example");
    // Nothing to mask: delivered unchanged.
    assert_eq!(
        b.route(&msg("pay", br#"{"n":1}"#, &[])).unwrap(),
        RouteDecision::Deliver
    );
}

#[test]
fn weighted_balancer_splits_three_to_one() {
    let e = engine();
    let b = bind(&e, "weighted_balancer", Hook::Pick, "");
    let label = |w: &str| {
        vec![Header {
            name: "weight".into(),
            value: w.into(),
        }]
    };
    let cands = [
        Candidate {
            id: "a".into(),
            inflight: 0,
            weight: 1,
            labels: label("3"),
        },
        Candidate {
            id: "b".into(),
            inflight: 5,
            weight: 1,
            labels: label("1"),
        },
    ];
    let mut counts = [0usize; 2];
    for _ in 0..10_000 {
        counts[b.pick(&msg("jobs", b"x", &[]), &cands).unwrap().unwrap()] += 1;
    }
    let share = counts[0] as f64 / 10_000.0;
    assert!((share - 0.75).abs() < 0.05, "{counts:?}");
    assert_eq!(b.pick(&msg("jobs", b"x", &[]), &[]).unwrap(), None);
}

#[test]
fn rate_limiter_keeps_state_in_the_kv_store() {
    let e = engine();
    let kv: Arc<dyn KvBackend> = Arc::new(MemoryKv::default());
    let b = bind_with(
        &e,
        "rate_limiter",
        spec(
            "rl",
            Hook::Route,
            r#"{"rate": 0.001, "burst": 5, "by": "key"}"#,
        ),
        kv.clone(),
    )
    .unwrap();
    let m = |key: &'static [u8]| PluginMessage {
        key: Some(key),
        ..msg("t", b"x", &[])
    };
    for _ in 0..5 {
        assert_eq!(b.route(&m(b"alice")).unwrap(), RouteDecision::Deliver);
    }
    assert!(
        matches!(b.route(&m(b"alice")).unwrap(), RouteDecision::Drop(r) if r.contains("alice"))
    );
    // Another key has its own bucket.
    assert_eq!(b.route(&m(b"bob")).unwrap(), RouteDecision::Deliver);
    assert_eq!(kv.usage("rl").unwrap().0, 2);
    // A new binding over the same store (a reload) sees the same state.
    let b2 = bind_with(
        &e,
        "rate_limiter",
        spec(
            "rl",
            Hook::Route,
            r#"{"rate": 0.001, "burst": 5, "by": "key"}"#,
        ),
        kv,
    )
    .unwrap();
    assert!(matches!(
        b2.route(&m(b"alice")).unwrap(),
        RouteDecision::Drop(_)
    ));
    assert_eq!(b.stats().snapshot().custom.get("limited"), Some(&1));
}

fn expect_failure(r: Result<impl std::fmt::Debug, PluginError>, kind: FailureKind) -> String {
    match r {
        Err(PluginError::Call { kind: k, detail }) if k == kind => detail,
        other => panic!("expected {kind}, got {other:?}"),
    }
}

#[test]
fn an_endless_loop_runs_out_of_fuel_and_the_binding_recovers() {
    let e = engine();
    let b = bind(&e, "spin", Hook::Route, "");
    let ok = bind(&e, "passthrough", Hook::Route, "");
    for _ in 0..3 {
        expect_failure(b.route(&msg("t", b"x", &[])), FailureKind::OutOfFuel);
        assert_eq!(
            ok.route(&msg("t", b"x", &[])).unwrap(),
            RouteDecision::Deliver
        );
    }
    let s = b.stats().snapshot();
    assert_eq!((s.calls, s.errors), (3, 3));
    assert_eq!(s.failures["out_of_fuel"], 3);
    // Each failure discarded its instance: the first and two rebuilds.
    assert_eq!(s.instances_created, 3);
}

#[test]
fn a_memory_hog_hits_its_cap() {
    let e = engine();
    let b = bind(&e, "memhog", Hook::Route, "");
    expect_failure(b.route(&msg("t", b"x", &[])), FailureKind::MemoryLimit);
    expect_failure(b.route(&msg("t", b"x", &[])), FailureKind::MemoryLimit);
    assert_eq!(b.stats().snapshot().failures["memory_limit"], 2);
}

#[test]
fn a_trap_is_contained_and_reports_the_panic_message() {
    let e = engine();
    let b = bind(&e, "trap", Hook::Route, "");
    let detail = expect_failure(b.route(&msg("t", b"x", &[])), FailureKind::Trap);
    assert!(detail.contains("panicked"), "{detail}");
    // The next call gets a fresh instance and fails the same way.
    expect_failure(b.route(&msg("t", b"x", &[])), FailureKind::Trap);
    // A trap in init is a rejected binding, not a crash.
    let err = bind_with(
        &e,
        "trap",
        spec("t", Hook::Route, "init"),
        Arc::new(MemoryKv::default()),
    )
    .err()
    .unwrap();
    assert!(matches!(err, PluginError::ConfigRejected(_)), "{err}");
}

#[test]
fn an_out_of_range_pick_is_an_invalid_result() {
    let e = engine();
    let b = bind(&e, "bad_pick", Hook::Pick, "");
    let c = Candidate {
        id: "a".into(),
        inflight: 0,
        weight: 1,
        labels: vec![],
    };
    let d = expect_failure(
        b.pick(&msg("t", b"x", &[]), &[c]),
        FailureKind::InvalidResult,
    );
    assert!(d.contains("4294967295"), "{d}");
}

#[test]
fn a_huge_payload_is_stopped_by_memory_or_by_the_output_limit() {
    let e = engine();
    // 100 MiB does not fit the default 32 MiB instance.
    let b = bind(&e, "huge_payload", Hook::Route, "");
    expect_failure(b.route(&msg("t", b"x", &[])), FailureKind::MemoryLimit);
    // With room in memory, the output limit refuses it.
    let mut s = spec("h", Hook::Route, "8388608");
    s.limits.memory_bytes = 64 * 1024 * 1024;
    let b = bind_with(&e, "huge_payload", s, Arc::new(MemoryKv::default())).unwrap();
    let d = expect_failure(b.route(&msg("t", b"x", &[])), FailureKind::InvalidResult);
    assert!(d.contains("8388608"), "{d}");
}

#[test]
fn calls_from_many_threads_share_a_bounded_pool() {
    let e = engine();
    let mut s = spec("tagger", Hook::Route, r#"{"name": "x-tag", "value": "v"}"#);
    s.limits.max_instances = 2;
    let b = bind_with(&e, "header_tagger", s, Arc::new(MemoryKv::default())).unwrap();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..200 {
                    let d = b.route(&msg("t", b"x", &[])).unwrap();
                    assert!(
                        matches!(d, RouteDecision::Replace { headers: Some(h), .. } if h.len() == 1)
                    );
                }
            });
        }
    });
    let s = b.stats().snapshot();
    assert_eq!(s.calls, 800);
    assert!(s.instances_created <= 2, "{s:?}");
}

#[test]
fn unused_artifacts_are_pruned_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let e = PluginEngine::new(EngineConfig {
        cache_dir: Some(dir.path().to_owned()),
        ..EngineConfig::default()
    })
    .unwrap();
    let a = bind_with(
        &e,
        "passthrough",
        spec("a", Hook::Route, ""),
        Arc::new(MemoryKv::default()),
    )
    .unwrap();
    let b = bind_with(
        &e,
        "header_tagger",
        spec("b", Hook::Route, r#"{"name": "x", "value": "v"}"#),
        Arc::new(MemoryKv::default()),
    )
    .unwrap();
    std::fs::write(dir.path().join("leftover.tmp"), b"x").unwrap();
    let count = || std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(count(), 3);
    assert_eq!(e.prune_cache(&[a.plugin().sha256()]), 2);
    assert_eq!(count(), 1);
    drop(b);
}

#[test]
fn fuel_beyond_the_node_maximum_is_refused() {
    let e = PluginEngine::new(EngineConfig {
        max_fuel: 100_000_000,
        ..EngineConfig::default()
    })
    .unwrap();
    let mut s = spec("p", Hook::Route, "");
    s.limits.fuel = 100_000_001;
    match bind_with(&e, "passthrough", s.clone(), Arc::new(MemoryKv::default())) {
        Err(PluginError::InvalidSetting(m)) => assert!(m.contains("100000000"), "{m}"),
        other => panic!("{:?}", other.err()),
    }
    s.limits.fuel = 100_000_000;
    bind_with(&e, "passthrough", s, Arc::new(MemoryKv::default())).unwrap();
}

#[test]
fn bindings_share_the_node_memory_budget() {
    const MIB: usize = 1024 * 1024;
    let e = PluginEngine::new(EngineConfig {
        memory_budget_bytes: 64 * MIB as u64,
        ..EngineConfig::default()
    })
    .unwrap();
    let with = |name: &str, mib: usize, instances: usize| {
        let mut s = spec(name, Hook::Route, "");
        s.limits.memory_bytes = mib * MIB;
        s.limits.max_instances = instances;
        s
    };
    let kv: Arc<dyn KvBackend> = Arc::new(MemoryKv::default());
    let a = bind_with(&e, "passthrough", with("a", 16, 2), kv.clone()).unwrap();
    assert_eq!(a.budget_bytes(), 32 * MIB as u64);
    let b = bind_with(&e, "passthrough", with("b", 8, 3), kv.clone()).unwrap();
    assert_eq!(e.memory_budget(), (56 * MIB as u64, 64 * MIB as u64));
    match bind_with(&e, "passthrough", with("c", 16, 1), kv.clone()) {
        Err(PluginError::OverBudget(m)) => {
            assert!(m.contains(&(8 * MIB).to_string()), "says what is left: {m}")
        }
        other => panic!("{:?}", other.err()),
    }
    // A replacement may reuse what the binding it replaces holds.
    let plugin = a.plugin().clone();
    let a2 = Binding::new_replacing(
        &e,
        plugin,
        with("a", 20, 2),
        kv.clone(),
        a.stats().clone(),
        Some(&a),
    )
    .unwrap();
    a.release_budget();
    assert_eq!(e.memory_budget().0, 64 * MIB as u64);
    drop(a);
    // Unbinding returns the budget.
    drop((a2, b));
    assert_eq!(e.memory_budget().0, 0);
    bind_with(&e, "passthrough", with("c", 16, 4), kv).unwrap();
}

#[test]
fn bindings_share_the_pooled_instance_slots() {
    let e = PluginEngine::new(EngineConfig {
        pooled_instances: 6,
        ..EngineConfig::default()
    })
    .unwrap();
    assert_eq!(e.instance_slots(), (0, Some(6)));
    let with = |name: &str, instances: usize| {
        let mut s = spec(name, Hook::Route, "");
        s.limits.max_instances = instances;
        s
    };
    let kv: Arc<dyn KvBackend> = Arc::new(MemoryKv::default());
    let a = bind_with(&e, "passthrough", with("a", 4), kv.clone()).unwrap();
    assert_eq!(e.instance_slots(), (4, Some(6)));
    // Memory is left, pool slots are not: refused before any instance is
    // made, with what is left.
    match bind_with(&e, "passthrough", with("b", 3), kv.clone()) {
        Err(PluginError::OverBudget(m)) => {
            assert!(m.contains("2 of the node's 6 pooled instance slots"), "{m}")
        }
        other => panic!("{:?}", other.err()),
    }
    let b = bind_with(&e, "passthrough", with("b", 2), kv.clone()).unwrap();
    for binding in [&a, &b] {
        binding.route(&msg("slots.t", b"x", &[])).unwrap();
    }
    drop((a, b));
    assert_eq!(e.instance_slots(), (0, Some(6)));
    // Without pooling, only memory bounds the instances.
    let e = PluginEngine::new(EngineConfig {
        pooled_instances: 0,
        ..EngineConfig::default()
    })
    .unwrap();
    assert_eq!(e.instance_slots(), (0, None));
}

#[test]
fn kv_writes_stop_at_the_binding_byte_limit() {
    let e = PluginEngine::new(EngineConfig {
        kv_max_bytes: 1024 * 1024,
        ..EngineConfig::default()
    })
    .unwrap();
    let kv: Arc<dyn KvBackend> = Arc::new(MemoryKv::default());
    let b = bind_with(&e, "kv_filler", spec("fill", Hook::Route, ""), kv.clone()).unwrap();
    for _ in 0..2 {
        match b.route(&msg("t", b"x", &[])).unwrap() {
            RouteDecision::Drop(reason) => {
                assert!(reason.contains("the limit is 1048576"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
    let s = b.stats().snapshot();
    // 15 entries of a 9-byte key and a 64 KiB value fit in 1 MiB; a 16th does not.
    assert_eq!((s.kv_keys, s.kv_bytes), (15, 15 * (9 + 65536)));
    assert_eq!(s.kv_refused, 2);
    assert_eq!(kv.usage("fill").unwrap(), (15, 15 * (9 + 65536)));
    // A new version of the binding counts from what the store holds.
    let again = Binding::new(
        &e,
        b.plugin().clone(),
        spec("fill", Hook::Route, ""),
        kv,
        b.stats().clone(),
    )
    .unwrap();
    assert!(matches!(
        again.route(&msg("t", b"x", &[])).unwrap(),
        RouteDecision::Drop(_)
    ));
    assert_eq!(again.stats().snapshot().kv_bytes, 15 * (9 + 65536));
}

#[test]
fn plugin_logs_are_rate_limited_and_drops_counted() {
    let e = PluginEngine::new(EngineConfig {
        log_lines_per_sec: 100,
        log_bytes_per_sec: 64 * 1024,
        ..EngineConfig::default()
    })
    .unwrap();
    let b = bind(&e, "log_flooder", Hook::Route, "");
    assert_eq!(
        b.route(&msg("t", b"x", &[])).unwrap(),
        RouteDecision::Deliver
    );
    let s = b.stats().snapshot();
    assert_eq!(s.logs + s.logs_dropped, 900);
    // 64 KiB a second is 16 lines of 4 KiB (and a few more if the call
    // took a while).
    assert!((16..=24).contains(&s.logs), "{s:?}");
}

#[test]
fn a_compilation_past_the_timeout_is_refused() {
    let e = PluginEngine::new(EngineConfig {
        compile_timeout: std::time::Duration::from_millis(1),
        ..EngineConfig::default()
    })
    .unwrap();
    match e.load(&wasm("passthrough")) {
        Err(PluginError::CompileRefused(m)) => assert!(m.contains("longer than"), "{m}"),
        other => panic!("{:?}", other.err()),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn async_calls_run_off_the_callers_thread() {
    let e = PluginEngine::new(EngineConfig {
        threads: 2,
        ..EngineConfig::default()
    })
    .unwrap();
    let mut s = spec("spin", Hook::Route, "");
    s.limits.fuel = e.config().max_fuel;
    s.limits.max_instances = 4;
    let b = bind_with(&e, "spin", s, Arc::new(MemoryKv::default())).unwrap();
    // Eight calls that each spin through a billion fuel (two at a time on
    // the two plugin threads), while this single-threaded runtime keeps
    // ticking every 10 ms.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let b = b.clone();
        set.spawn(async move { b.route_async(&msg("t", b"x", &[])).await });
    }
    let calls = set.join_all();
    let ticks = async {
        let mut worst = std::time::Duration::ZERO;
        for _ in 0..20 {
            let t = std::time::Instant::now();
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            worst = worst.max(t.elapsed());
        }
        worst
    };
    let (results, worst) = tokio::join!(calls, ticks);
    for r in results {
        expect_failure(r, FailureKind::OutOfFuel);
    }
    assert!(
        worst < std::time::Duration::from_millis(100),
        "a 10 ms sleep took {worst:?}"
    );
}

#[test]
fn stdout_and_stderr_go_to_the_binding_log() {
    // Read from the binding's followers and counters, not from a captured
    // subscriber: tracing caches a callsite's interest process-wide, and a
    // test thread's scoped subscriber can miss events while other tests run.
    let e = engine();
    let b = bind(&e, "printer", Hook::Route, "");
    let mut follow = b.stats().subscribe_logs();
    assert_eq!(
        b.route(&msg("t.a", b"print", &[])).unwrap(),
        RouteDecision::Deliver
    );
    let mut lines = Vec::new();
    while let Ok(line) = follow.try_recv() {
        lines.push((line.level, line.message));
    }
    assert_eq!(
        lines,
        [
            ("info", "printer: to stdout on t.a".to_owned()),
            ("warn", "printer: to stderr on t.a".to_owned()),
        ]
    );
    // The `init` line before them was logged and counted too.
    let s = b.stats().snapshot();
    assert_eq!((s.logs, s.logs_dropped), (3, 0), "{s:?}");
}

#[test]
fn output_past_the_per_call_cap_is_dropped_and_counted() {
    let e = engine();
    let b = bind(&e, "printer", Hook::Route, "");
    for _ in 0..2 {
        assert_eq!(
            b.route(&msg("t", b"flood", &[])).unwrap(),
            RouteDecision::Deliver
        );
    }
    let s = b.stats().snapshot();
    // 1 MiB without line breaks a call: 16 KiB kept, cut into 4 KiB lines
    // (the rate limiter admits 64 KiB a second), the rest one dropped line.
    assert_eq!(s.logs, 1 + 2 * 4, "{s:?}");
    assert_eq!(s.logs_dropped, 2, "{s:?}");
}

#[test]
fn exit_is_contained_as_a_trap_and_the_instance_rebuilt() {
    let e = engine();
    let b = bind(&e, "printer", Hook::Route, "");
    let detail = expect_failure(b.route(&msg("t", b"exit", &[])), FailureKind::Trap);
    // WASI 0.2 has `exit(result)`: any non-zero status arrives as 1.
    assert!(detail.contains("the plugin called exit(1)"), "{detail}");
    assert!(detail.contains("printer: exiting"), "{detail}");
    assert_eq!(
        b.route(&msg("t", b"print", &[])).unwrap(),
        RouteDecision::Deliver
    );
    let s = b.stats().snapshot();
    assert_eq!(s.instances_created, 2, "{s:?}");
}

#[test]
fn wasi_calls_count_against_the_host_call_limit() {
    let e = engine();
    let b = bind(&e, "printer", Hook::Route, "");
    // A million clock reads cost little fuel, but each is a host call.
    let detail = expect_failure(
        b.route(&msg("t", b"clock", &[])),
        FailureKind::HostCallLimit,
    );
    assert!(detail.contains("more than 1000 host calls"), "{detail}");
    // The instance is rebuilt; a call within the limit goes through.
    assert_eq!(
        b.route(&msg("t", b"print", &[])).unwrap(),
        RouteDecision::Deliver
    );
}

#[test]
fn the_wasi_context_grants_nothing() {
    let e = engine();
    let b = bind(&e, "printer", Hook::Route, "");
    assert_eq!(
        b.route(&msg("t", b"probe", &[])).unwrap(),
        RouteDecision::Drop("env=0 args=0 root=false file=false stdin=Some(0)".into())
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_printing_guest_called_on_a_runtime_thread_does_not_panic() {
    // wasmtime-wasi's blocking write enters a Tokio runtime; on this
    // thread one is running already.
    let e = engine();
    let b = bind(&e, "printer", Hook::Route, "");
    assert_eq!(
        b.route(&msg("t", b"print", &[])).unwrap(),
        RouteDecision::Deliver
    );
    assert_eq!(b.stats().snapshot().logs, 3);
}
