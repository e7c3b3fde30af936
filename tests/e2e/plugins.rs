//! WebAssembly plugins end to end: real components built from `plugins/`,
//! bound over HTTP, the CLI and the config file, changing what the real
//! binary stores and delivers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::support::{BIN, Node, Sse, enc};

fn wasm_dir() -> PathBuf {
    let repo = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    switchyard_testkit::build_guest_plugins(repo).expect("guest plugins build")
}

fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(wasm_dir().join(format!("{name}.wasm"))).expect("plugin file")
}

/// PUT /v1/plugins/{name}?{query} with the component; returns status and JSON.
async fn bind(node: &Node, name: &str, component: &str, query: &str) -> (u16, Value) {
    let body = if component.is_empty() {
        Vec::new()
    } else {
        wasm(component)
    };
    node.put_plugin(name, query, body).await
}

async fn bind_ok(node: &Node, name: &str, component: &str, query: &str) -> Value {
    let (status, v) = bind(node, name, component, query).await;
    assert!(status == 201 || status == 200, "bind {name}: {status} {v}");
    v
}

/// POST one message; returns status and the JSON answer.
async fn post(node: &Node, topic: &str, payload: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = node.request("POST", &format!("/v1/topics/{topic}"));
    if let Some(k) = key {
        req = req.header("switchyard-key", k);
    }
    let (status, _, body) = node.raw(req, payload.to_owned()).await;
    (status, serde_json::from_slice(&body).expect("JSON answer"))
}

fn payloads(msgs: &[Value]) -> Vec<String> {
    msgs.iter()
        .map(|m| m["payload"].as_str().expect("text payload").to_owned())
        .collect()
}

async fn counters(node: &Node, name: &str) -> Value {
    node.get_json(&format!("/v1/plugins/{name}")).await["counters"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_plugins_change_what_subscribers_receive() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);

    // field-router: orders -> orders.<region>
    bind_ok(
        &node,
        "region",
        "field_router",
        &format!(
            "hook=route&topic=orders&config={}",
            enc(r#"{"field": "/region"}"#)
        ),
    )
    .await;
    let (status, v) = post(&node, "orders", r#"{"region":"eu","n":1}"#, None).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["topic"], "orders.eu");
    assert_eq!(v["routed_from"], "orders");
    post(&node, "orders", r#"{"region":"us","n":2}"#, None).await;
    post(&node, "orders", r#"{"n":3}"#, None).await;
    assert_eq!(
        payloads(&node.pull_all("orders.eu").await),
        [r#"{"region":"eu","n":1}"#]
    );
    assert_eq!(
        payloads(&node.pull_all("orders.us").await),
        [r#"{"region":"us","n":2}"#]
    );
    // Without a region the default fallback stores it where it was sent.
    assert_eq!(payloads(&node.pull_all("orders").await), [r#"{"n":3}"#]);

    // redactor: masked before it is stored, so no subscriber ever sees it.
    bind_ok(
        &node,
        "redact",
        "redactor",
        &format!(
            "hook=route&topic=payments.%3E&config={}",
            enc(r#"{"fields": ["/card"], "keep_last": 4}"#)
        ),
    )
    .await;
    post(
        &node,
        "payments.eu",
        r#"{"card":"4111111111111111","amount":5}"#,
        None,
    )
    .await;
    let stored = payloads(&node.pull_all("payments.>").await);
    assert_eq!(stored.len(), 1);
    let v: Value = serde_json::from_str(&stored[0]).unwrap();
    assert_eq!(v, json!({"card": "***1111", "amount": 5}));

    // rate-limiter: 3 per key, then dropped with a reason; state in the kv store.
    bind_ok(
        &node,
        "limit",
        "rate_limiter",
        &format!(
            "hook=route&topic=api&config={}",
            enc(r#"{"rate": 0.001, "burst": 3}"#)
        ),
    )
    .await;
    for i in 0..3 {
        let (status, _) = post(&node, "api", &format!("a{i}"), Some("alice")).await;
        assert_eq!(status, 201);
    }
    let (status, v) = post(&node, "api", "a3", Some("alice")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["dropped"], true);
    assert_eq!(v["plugin"], "limit");
    assert!(v["reason"].as_str().unwrap().contains("rate limit"), "{v}");
    let (status, _) = post(&node, "api", "b0", Some("bob")).await;
    assert_eq!(status, 201);
    assert_eq!(
        payloads(&node.pull_all("api").await),
        ["a0", "a1", "a2", "b0"]
    );
    assert_eq!(counters(&node, "limit").await["custom"]["limited"], 1);

    // json-filter: per subscription, over SSE and pull, with the binding's
    // config or the subscription's own.
    bind_ok(
        &node,
        "big",
        "json_filter",
        &format!(
            "hook=filter&config={}",
            enc(r#"{"field": "/amount", "op": "gt", "value": 100}"#)
        ),
    )
    .await;
    let mut sse = Sse::connect(
        &node,
        "/v1/events?topic=sales&from=earliest&filter=big",
        None,
    )
    .await
    .expect("subscribe");
    let mut plain = Sse::connect(&node, "/v1/events?topic=sales&from=earliest", None)
        .await
        .expect("subscribe");
    for a in [50, 150, 20, 300, 99] {
        post(&node, "sales", &format!(r#"{{"amount":{a}}}"#), None).await;
    }
    let mut got = Vec::new();
    while got.len() < 2 {
        let e = sse
            .next(Duration::from_secs(10))
            .await
            .expect("filtered event");
        got.push(e.data);
    }
    assert_eq!(got, [r#"{"amount":150}"#, r#"{"amount":300}"#]);
    let mut all = Vec::new();
    while all.len() < 5 {
        all.push(
            plain
                .next(Duration::from_secs(10))
                .await
                .expect("event")
                .data,
        );
    }
    assert_eq!(all.len(), 5, "an unfiltered subscriber gets everything");
    let small = node
        .get_json(&format!(
            "/v1/messages?topic=sales&filter=big&filter_config={}",
            enc(r#"{"field": "/amount", "op": "lt", "value": 100}"#)
        ))
        .await;
    assert_eq!(
        payloads(small["messages"].as_array().unwrap()),
        [r#"{"amount":50}"#, r#"{"amount":20}"#, r#"{"amount":99}"#]
    );

    // The listing shows every binding with its hook, patterns, version and counters.
    let list = node.get_json("/v1/plugins").await;
    let names: Vec<&str> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["big", "limit", "redact", "region"]);
    let region = &list["plugins"][3];
    assert_eq!(region["hook"], "route");
    assert_eq!(region["topics"], json!(["orders"]));
    assert_eq!(region["counters"]["calls"], 3);
    assert_eq!(region["sha256"].as_str().unwrap().len(), 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_policies_drop_pass_and_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    bind_ok(
        &node,
        "t-drop",
        "trap",
        "hook=route&topic=p.drop&on_error=drop",
    )
    .await;
    bind_ok(
        &node,
        "t-pass",
        "trap",
        "hook=route&topic=p.pass&on_error=pass",
    )
    .await;
    bind_ok(
        &node,
        "t-dlq",
        "trap",
        "hook=route&topic=p.dlq&on_error=dead-letter",
    )
    .await;

    let (status, v) = post(&node, "p.drop", "one", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["dropped"], true);
    assert!(
        v["plugin_error"]["error"]
            .as_str()
            .unwrap()
            .contains("trap"),
        "{v}"
    );
    assert!(node.pull_all("p.drop").await.is_empty());

    let (status, v) = post(&node, "p.pass", "two", None).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["topic"], "p.pass");
    assert_eq!(v["plugin_error"]["plugin"], "t-pass");
    assert_eq!(payloads(&node.pull_all("p.pass").await), ["two"]);

    let (status, v) = post(&node, "p.dlq", "three", None).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["topic"], "$dlq.p.dlq");
    assert!(node.pull_all("p.dlq").await.is_empty());
    let dlq = node.pull_all("$dlq.>").await;
    assert_eq!(payloads(&dlq), ["three"]);
    assert_eq!(dlq[0]["headers"]["switchyard-plugin"], "t-dlq");
    assert!(
        dlq[0]["headers"]["switchyard-error"]
            .as_str()
            .unwrap()
            .contains("panicked"),
        "{}",
        dlq[0]
    );

    // A filter that runs out of fuel on every call, under each policy.
    for (name, policy) in [
        ("f-drop", "drop"),
        ("f-pass", "pass"),
        ("f-dlq", "dead-letter"),
    ] {
        bind_ok(
            &node,
            name,
            "json_filter",
            &format!(
                "hook=filter&fuel=50&on_error={policy}&config={}",
                enc(r#"{"field": "/a", "op": "exists"}"#)
            ),
        )
        .await;
    }
    post(&node, "events", r#"{"a":1}"#, None).await;
    let count = |v: &Value| v["messages"].as_array().unwrap().len();
    let dropped = node
        .get_json("/v1/messages?topic=events&filter=f-drop")
        .await;
    assert_eq!(count(&dropped), 0);
    let passed = node
        .get_json("/v1/messages?topic=events&filter=f-pass")
        .await;
    assert_eq!(count(&passed), 1);
    let dead = node
        .get_json("/v1/messages?topic=events&filter=f-dlq")
        .await;
    assert_eq!(count(&dead), 0);
    let copies = node.pull_all("$dlq.events").await;
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert!(
        copies[0]["headers"]["switchyard-error"]
            .as_str()
            .unwrap()
            .contains("fuel")
    );
    assert_eq!(
        counters(&node, "f-drop").await["failures"]["out_of_fuel"],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_are_contained_while_the_node_serves() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    bind_ok(&node, "spin", "spin", "hook=route&topic=h.spin").await;
    bind_ok(&node, "memhog", "memhog", "hook=route&topic=h.memhog").await;
    bind_ok(&node, "trap", "trap", "hook=route&topic=h.trap").await;
    bind_ok(&node, "huge", "huge_payload", "hook=route&topic=h.huge").await;
    bind_ok(
        &node,
        "huge-fits",
        "huge_payload",
        "hook=route&topic=h.huge2&memory_mb=64&config=8388608",
    )
    .await;

    // Ordinary traffic runs alongside the hostile calls.
    let url = node.url.clone();
    let normal = tokio::spawn(async move {
        let client = switchyard::client::Client::new(&url).unwrap();
        let mut n = 0;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) || n < 200 {
            client
                .publish("normal", Bytes::from(format!("m{n}")), None, &[], None)
                .await
                .expect("ordinary publish keeps working");
            n += 1;
        }
        n
    });
    for round in 0..3 {
        for (topic, kind) in [
            ("h.spin", "out_of_fuel"),
            ("h.memhog", "memory_limit"),
            ("h.trap", "trap"),
            ("h.huge", "memory_limit"),
            ("h.huge2", "invalid_result"),
        ] {
            let (status, v) = post(&node, topic, "x", None).await;
            assert_eq!(status, 200, "{topic} round {round}: {v}");
            assert_eq!(v["dropped"], true, "{v}");
            assert!(
                v["plugin_error"]["error"].as_str().unwrap().contains(kind),
                "{topic}: {v}"
            );
            let health = node.get_json("/healthz").await;
            assert_eq!(health["status"], "ok");
        }
    }
    let published = normal.await.unwrap();
    assert_eq!(node.pull_all("normal").await.len(), published);
    for (name, kind) in [
        ("spin", "out_of_fuel"),
        ("memhog", "memory_limit"),
        ("trap", "trap"),
        ("huge", "memory_limit"),
        ("huge-fits", "invalid_result"),
    ] {
        let c = counters(&node, name).await;
        assert_eq!(c["errors"], 3, "{name}: {c}");
        assert_eq!(c["failures"][kind], 3, "{name}: {c}");
    }
    for topic in ["h.spin", "h.memhog", "h.trap", "h.huge", "h.huge2"] {
        assert!(node.pull_all(topic).await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_while_publishing_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    let tag = |v: u32| {
        format!(
            "hook=route&topic=hot&config={}",
            enc(&format!(r#"{{"name": "x-version", "value": "{v}"}}"#))
        )
    };
    bind_ok(&node, "tagger", "header_tagger", &tag(0)).await;
    const TASKS: usize = 4;
    const PER_TASK: usize = 2500;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let url = node.url.clone();
        tasks.push(tokio::spawn(async move {
            let client = switchyard::client::Client::new(&url).unwrap();
            for i in 0..PER_TASK {
                let v = client
                    .publish("hot", Bytes::from(format!("{t}-{i}")), None, &[], None)
                    .await
                    .expect("publish during reloads");
                assert_eq!(v["topic"], "hot");
            }
        }));
    }
    // Swap versions while the publishers run: new configs and, every other
    // time, the component pushed again.
    let mut version = 0;
    while !tasks.iter().all(|t| t.is_finished()) && version < 40 {
        version += 1;
        let component = if version % 2 == 0 {
            "header_tagger"
        } else {
            ""
        };
        bind_ok(&node, "tagger", component, &tag(version)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        version >= 3,
        "only {version} reloads happened during the publishing"
    );
    let msgs = node.pull_all("hot").await;
    assert_eq!(msgs.len(), TASKS * PER_TASK);
    let mut seen = std::collections::HashSet::new();
    let mut last_version = [0u32; TASKS];
    for m in &msgs {
        let p = m["payload"].as_str().unwrap();
        assert!(seen.insert(p.to_owned()), "{p} stored twice");
        // Exactly one version tagged each message, once.
        let h = m["headers"]["x-version"].as_str().expect("tagged");
        assert!(!h.contains(','), "tagged twice: {h}");
        let v: u32 = h.parse().unwrap();
        // Per publisher, versions never go back: each swap is atomic.
        let t: usize = p.split('-').next().unwrap().parse().unwrap();
        assert!(
            v >= last_version[t],
            "{p} tagged {v} after {}",
            last_version[t]
        );
        last_version[t] = v;
    }
    let info = node.get_json("/v1/plugins/tagger").await;
    assert_eq!(info["version"], version + 1);
    assert_eq!(info["counters"]["calls"], (TASKS * PER_TASK) as u64);
    assert_eq!(info["counters"]["errors"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_uploads_and_settings_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    let put = |name: &'static str, query: &'static str, body: Vec<u8>| {
        let node = &node;
        async move {
            let (status, _, body) = node
                .raw(
                    node.request("PUT", &format!("/v1/plugins/{name}?{query}")),
                    body,
                )
                .await;
            let v: Value = serde_json::from_slice(&body).expect("problem JSON");
            (
                status,
                v["code"].as_str().unwrap_or("").to_owned(),
                v["detail"].as_str().unwrap_or("").to_owned(),
            )
        }
    };
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "junk",
            "hook=route",
            b"not wasm at all".to_vec(),
            422,
            "invalid_component",
        ),
        (
            "core",
            "hook=route",
            b"\0asm\x01\0\0\0".to_vec(),
            422,
            "invalid_component",
        ),
        (
            "empty",
            "hook=route",
            b"\0asm\x0d\0\x01\0".to_vec(),
            422,
            "unknown_world",
        ),
        (
            "wrong",
            "hook=filter",
            wasm("passthrough"),
            422,
            "wrong_hook",
        ),
        (
            "badcfg",
            "hook=filter&config=%7B%7D",
            wasm("json_filter"),
            422,
            "config_rejected",
        ),
        (
            "initpanic",
            "hook=route&config=init",
            wasm("trap"),
            422,
            "config_rejected",
        ),
        (
            "nohook",
            "topic=a",
            wasm("passthrough"),
            400,
            "missing_parameter",
        ),
        (
            "badhook",
            "hook=egress",
            wasm("passthrough"),
            400,
            "invalid_parameter",
        ),
        (
            "badpolicy",
            "hook=route&on_error=retry",
            wasm("passthrough"),
            400,
            "invalid_parameter",
        ),
        (
            "badtopic",
            "hook=route&topic=a..b",
            wasm("passthrough"),
            400,
            "invalid_pattern",
        ),
        (
            "bad.name",
            "hook=route",
            wasm("passthrough"),
            400,
            "invalid_plugin_setting",
        ),
        (
            "fuel0",
            "hook=route&fuel=0",
            wasm("passthrough"),
            400,
            "invalid_parameter",
        ),
        (
            "nocomponent",
            "hook=route",
            Vec::new(),
            400,
            "invalid_plugin_setting",
        ),
        (
            "unknownparam",
            "hook=route&color=red",
            wasm("passthrough"),
            400,
            "unknown_parameter",
        ),
    ];
    for (name, query, body, want_status, want_code) in cases {
        let (status, code, detail) = put(name, query, body).await;
        assert_eq!(
            (status, code.as_str()),
            (want_status, want_code),
            "{name}: {detail}"
        );
        assert!(!detail.is_empty());
    }
    let list = node.get_json("/v1/plugins").await;
    assert_eq!(list["plugins"], json!([]));
    assert_eq!(list["memory_budget"]["reserved_bytes"], 0, "{list}");
    let (status, _, _) = node
        .raw(node.request("DELETE", "/v1/plugins/nope"), "")
        .await;
    assert_eq!(status, 404);
    let (status, _, body) = node
        .raw(node.request("GET", "/v1/events?topic=a&filter=nope"), "")
        .await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    // A route plugin cannot serve as a filter.
    bind_ok(&node, "pt", "passthrough", "hook=route").await;
    let (status, _, _) = node
        .raw(node.request("GET", "/v1/messages?topic=a&filter=pt"), "")
        .await;
    assert_eq!(status, 400);
    // Publishing still works and nothing was stored by the refused requests.
    assert!(
        node.get_json("/v1/topics").await["topics"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_survive_restarts_and_the_cli_and_config_file_work() {
    let dir = tempfile::tempdir().unwrap();
    let wasm_dir = wasm_dir();
    let cli = run_cli;
    let router = wasm_dir.join("field_router.wasm");
    let router = router.to_str().unwrap();
    {
        let mut node = Node::start(dir.path(), &["--fsync", "always"]);
        let (ok, out, err) = cli(
            &[
                "plugin",
                "push",
                router,
                "--name",
                "region",
                "--hook",
                "route",
                "--topic",
                "orders",
                "--config",
                r#"{"field": "/region"}"#,
                "--on-error",
                "pass",
            ],
            &node.url,
        );
        assert!(ok, "{out} {err}");
        assert!(out.contains("bound region"), "{out}");
        let (ok, out, _) = cli(&["plugin", "list"], &node.url);
        assert!(
            ok && out.contains("region\thook=route\ttopics=orders\ton_error=pass"),
            "{out}"
        );
        node.kill9();
    }
    // Restarted (after kill -9): the binding is back and works.
    let config = format!(
        "[[plugin]]\nname = \"tag\"\nfile = \"{}\"\nhook = \"route\"\ntopics = [\"orders.>\"]\nconfig = '{{\"name\": \"x-tag\", \"value\": \"cfg\"}}'\n",
        wasm_dir.join("header_tagger.wasm").display()
    );
    let node = Node::start_with_config(dir.path(), &config, &["--fsync", "always"]);
    let v = node.publish("orders", r#"{"region":"eu"}"#).await;
    assert_eq!(v["topic"], "orders.eu");
    let stored = node.pull_all("orders.eu").await;
    // A reroute ends the chain: the config-file binding on orders.> does not
    // see the rerouted copy.
    assert_eq!(stored.len(), 1);
    assert!(stored[0]["headers"].get("x-tag").is_none(), "{}", stored[0]);
    node.publish("orders.us", "direct").await;
    let us = node.pull_all("orders.us").await;
    assert_eq!(us[0]["headers"]["x-tag"], "cfg");
    let list = node.get_json("/v1/plugins").await;
    let sources: Vec<(&str, &str)> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["source"].as_str().unwrap()))
        .collect();
    assert_eq!(sources, [("region", "api"), ("tag", "config")]);
    // A config-file binding is changed in the file, not over the API.
    let (status, _, _) = node
        .raw(node.request("DELETE", "/v1/plugins/tag"), "")
        .await;
    assert_eq!(status, 409);
    // `plugin rm` unbinds; the next start does not bring it back.
    let (ok, out, err) = cli(&["plugin", "rm", "region"], &node.url);
    assert!(ok, "{out}{err}");
    let v = node.publish("orders", r#"{"region":"eu"}"#).await;
    assert_eq!(v["topic"], "orders");
    // `plugin test` runs a hook without a node.
    let balancer = wasm_dir.join("weighted_balancer.wasm");
    let messages: String = (0..400)
        .map(|i| format!("{{\"topic\": \"jobs\", \"payload\": \"{i}\"}}\n"))
        .collect();
    let msg_file = dir.path().join("messages.ndjson");
    std::fs::write(&msg_file, messages).unwrap();
    let (ok, out, err) = cli(
        &[
            "plugin",
            "test",
            balancer.to_str().unwrap(),
            "--hook",
            "pick",
            "--message",
            &format!("@{}", msg_file.display()),
            "--candidates",
            r#"[{"id": "a", "labels": {"weight": "3"}}, {"id": "b", "labels": {"weight": "1"}}]"#,
        ],
        "http://127.0.0.1:9",
    );
    assert!(ok, "{err}");
    let picks: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let a = picks.iter().filter(|p| p["id"] == "a").count();
    let b = picks.iter().filter(|p| p["id"] == "b").count();
    assert_eq!((a, b), (300, 100), "{out}");
    let (ok, _, err) = cli(
        &[
            "plugin",
            "test",
            wasm_dir.join("trap.wasm").to_str().unwrap(),
            "--hook",
            "route",
            "--message",
            r#"{"topic": "t"}"#,
        ],
        "http://127.0.0.1:9",
    );
    assert!(!ok);
    assert!(err.contains("failed"), "{err}");
}

/// `/healthz` while a plugin spins through the node's whole fuel maximum on
/// every publish of four concurrent publishers: it answers within a
/// second every time, and so do publishes to other topics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_while_a_spinner_runs_on_every_publish() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    let max_fuel = 1_000_000_000u64;
    bind_ok(
        &node,
        "spinner",
        "spin",
        &format!("hook=route&topic=spin&fuel={max_fuel}&max_instances=4"),
    )
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut publishers = Vec::new();
    for _ in 0..4 {
        let (url, stop) = (node.url.clone(), stop.clone());
        publishers.push(tokio::spawn(async move {
            let client = switchyard::client::Client::new(&url).unwrap();
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = client
                    .publish("spin", Bytes::from_static(b"x"), None, &[], None)
                    .await;
                n += 1;
            }
            n
        }));
    }
    // Let the spinner get going.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut worst = Duration::ZERO;
    let start = Instant::now();
    let mut checks = 0;
    while start.elapsed() < Duration::from_secs(4) {
        let t = Instant::now();
        let health = tokio::time::timeout(Duration::from_secs(1), node.get_json("/healthz"))
            .await
            .expect("/healthz answers within a second while the spinner runs");
        assert_eq!(health["status"], "ok");
        let (status, _) =
            tokio::time::timeout(Duration::from_secs(1), post(&node, "other", "y", None))
                .await
                .expect("a publish to another topic answers within a second");
        assert_eq!(status, 201);
        worst = worst.max(t.elapsed());
        checks += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut spun = 0;
    for p in publishers {
        spun += p.await.unwrap();
    }
    let c = counters(&node, "spinner").await;
    eprintln!("health and publish checks: {checks}, worst {worst:?}; spinner calls: {spun}; {c}");
    assert!(c["failures"]["out_of_fuel"].as_u64().unwrap() >= 4, "{c}");
    // A spinning call runs on a plugin thread, not on the worker that
    // serves the request: many fuel-exhausting calls ran meanwhile.
    assert!(spun >= 4);
}

/// The node-wide plugin limits against hostile components: the fuel cap,
/// the memory budget (returned on unbind and on replace), the key-value
/// byte limit, the log rate limit, and a compile cache that keeps nothing
/// of a rejected component.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_wide_plugin_limits_hold_against_hostile_components() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with_config(
        dir.path(),
        "[plugins]\nmemory_budget_bytes = 268435456\nmax_fuel = 500000000\n",
        &["--fsync", "never"],
    );
    // Fuel over the node's maximum.
    let (status, v) = bind(&node, "f", "passthrough", "hook=route&fuel=500000001").await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("invalid_parameter")),
        "{v}"
    );
    assert!(v["detail"].as_str().unwrap().contains("500000000"), "{v}");

    // The memory budget: 256 MiB. 128 MiB + 64 MiB fit, another 128 MiB
    // does not; unbinding returns it.
    bind_ok(
        &node,
        "big",
        "passthrough",
        "hook=route&topic=b&memory_mb=32&max_instances=4",
    )
    .await;
    bind_ok(
        &node,
        "mid",
        "memhog",
        "hook=route&topic=m&memory_mb=16&max_instances=4",
    )
    .await;
    let (status, v) = bind(
        &node,
        "more",
        "passthrough",
        "hook=route&topic=x&memory_mb=32&max_instances=4",
    )
    .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (409, Some("memory_budget_exceeded")),
        "{v}"
    );
    assert!(
        v["detail"].as_str().unwrap().contains("67108864"),
        "says what is left: {v}"
    );
    let list = node.get_json("/v1/plugins").await;
    assert_eq!(list["memory_budget"]["reserved_bytes"], 192 << 20, "{list}");
    assert_eq!(list["memory_budget"]["total_bytes"], 256 << 20, "{list}");
    // The memory hog still stops at its own cap.
    let (_, v) = post(&node, "m", "x", None).await;
    assert!(
        v["plugin_error"]["error"]
            .as_str()
            .unwrap()
            .contains("memory_limit"),
        "{v}"
    );
    // A replacement may take what the binding it replaces holds.
    bind_ok(&node, "big", "", "memory_mb=48&max_instances=4").await;
    let (status, _) = bind(
        &node,
        "more",
        "passthrough",
        "hook=route&topic=x&memory_mb=4&max_instances=1",
    )
    .await;
    assert_eq!(status, 409);
    let (status, _, _) = node
        .raw(node.request("DELETE", "/v1/plugins/big"), Vec::new())
        .await;
    assert_eq!(status, 200);
    bind_ok(
        &node,
        "more",
        "passthrough",
        "hook=route&topic=x&memory_mb=32&max_instances=4",
    )
    .await;
    let (status, _, _) = node
        .raw(node.request("DELETE", "/v1/plugins/mid"), Vec::new())
        .await;
    assert_eq!(status, 200);

    // Key-value bytes: 63 values of 64 KiB (and 9-byte keys) fit in 4 MiB,
    // the 64th is refused and the plugin sees why.
    bind_ok(
        &node,
        "filler",
        "kv_filler",
        "hook=route&topic=kv&max_instances=1",
    )
    .await;
    for _ in 0..2 {
        let (status, v) = post(&node, "kv", "x", None).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["dropped"], true, "{v}");
        assert!(
            v["reason"]
                .as_str()
                .unwrap()
                .contains("the limit is 4194304"),
            "the plugin's reason carries the host's refusal: {v}"
        );
    }
    let c = counters(&node, "filler").await;
    assert_eq!(c["kv_keys"], 63, "{c}");
    assert_eq!(c["kv_bytes"], 63 * (9 + 65536), "{c}");
    assert_eq!(c["kv_refused"], 2, "{c}");

    // Logs: 900 lines of 4 KiB in one call; 64 KiB a second pass.
    bind_ok(
        &node,
        "flood",
        "log_flooder",
        "hook=route&topic=log&max_instances=1",
    )
    .await;
    let (status, v) = post(&node, "log", "x", None).await;
    assert_eq!(status, 201, "{v}");
    let c = counters(&node, "flood").await;
    let (logs, dropped) = (
        c["logs"].as_u64().unwrap(),
        c["logs_dropped"].as_u64().unwrap(),
    );
    assert_eq!(logs + dropped, 900, "{c}");
    assert!((16..=24).contains(&logs), "{c}");
    let flooded = |log: &str| {
        log.lines()
            .filter(|l| l.contains("xxxxxxxxxxxxxxxx"))
            .count() as u64
    };
    // The node writes its log from a queue: wait for the admitted lines,
    // then for any that should not be there.
    node.log_until(&format!("{logs} flooded lines"), |log| flooded(log) >= logs)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        flooded(&node.log()),
        logs,
        "the node's log holds only the admitted lines"
    );

    // A component whose init fails leaves nothing in the compile cache; the
    // cache holds the bound components only.
    let (status, v) = bind(
        &node,
        "bad",
        "trap",
        "hook=route&topic=t&config=init&max_instances=1",
    )
    .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (422, Some("config_rejected")),
        "{v}"
    );
    let cached = std::fs::read_dir(node.data_dir.join("plugin-cache"))
        .unwrap()
        .count();
    assert_eq!(cached, 3, "passthrough, kv_filler and log_flooder");
}

/// A component that compiles for longer than the node's compile timeout
/// is refused, and nothing of it stays behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_compilation_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with_config(
        dir.path(),
        "[plugins]\ncompile_timeout_ms = 1\n",
        &["--fsync", "never"],
    );
    let (status, v) = bind(&node, "slow", "field_router", "hook=route").await;
    assert_eq!(
        (status, v["code"].as_str()),
        (422, Some("compile_refused")),
        "{v}"
    );
    assert!(v["detail"].as_str().unwrap().contains("longer than"), "{v}");
    let cached = std::fs::read_dir(node.data_dir.join("plugin-cache")).map_or(0, |d| d.count());
    assert_eq!(cached, 0);
    assert_eq!(node.get_json("/v1/plugins").await["plugins"], json!([]));
    assert_eq!(node.get_json("/healthz").await["status"], "ok");
}

/// Runs the CLI with `SWITCHYARD_URL` set; returns success, stdout, stderr.
fn run_cli(args: &[&str], url: &str) -> (bool, String, String) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .env("SWITCHYARD_URL", url)
        .output()
        .expect("run the CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `plugin test --replay` pulls what a node stored, page by page, and runs a
/// local component over it; `--summary` counts the decisions. The envelopes
/// `GET /v1/messages` answers are accepted by `--message` too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_test_replays_stored_messages() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    let router = wasm_dir().join("field_router.wasm");
    let router = router.to_str().unwrap();
    // 1300 messages: regions eu, us and none in turn.
    let entries: Vec<Value> = (0..1300)
        .map(|i| match i % 3 {
            0 => json!({"payload": format!(r#"{{"region":"eu","n":{i}}}"#), "key": "k"}),
            1 => json!({"payload": format!(r#"{{"region":"us","n":{i}}}"#)}),
            _ => json!({"payload": format!(r#"{{"n":{i}}}"#), "headers": {"x": "y"}}),
        })
        .collect();
    crate::support::publish_batch(&node, "orders", &entries).await;
    node.publish("other", r#"{"region":"eu"}"#).await;

    let config = r#"{"field": "/region"}"#;
    let replay = |extra: &[&str]| {
        let mut args = vec![
            "plugin", "test", router, "--hook", "route", "--config", config, "--replay", "orders",
        ];
        args.extend_from_slice(extra);
        run_cli(&args, &node.url)
    };
    // Two pages (1000 + 200), stopped by --limit.
    let (ok, out, err) = replay(&["--limit", "1200", "--summary"]);
    assert!(ok, "{out}{err}");
    let s: Value = serde_json::from_str(&out).expect("one JSON summary");
    assert_eq!(s["messages"], 1200, "{s}");
    assert_eq!(
        s["decisions"],
        json!({"reroute": 800, "deliver": 400}),
        "{s}"
    );
    assert_eq!(
        s["reroute_topics"],
        json!({"orders.eu": 400, "orders.us": 400}),
        "{s}"
    );
    assert_eq!(s["errors"], json!({}), "{s}");
    let (mean, p99) = (
        s["mean_micros"].as_f64().unwrap(),
        s["p99_micros"].as_f64().unwrap(),
    );
    // (The mean may exceed the p99: the first calls, which warm the
    // instance up, are slower by far.)
    assert!(mean > 0.0 && p99 > 0.0, "{s}");
    // The default limit (1000) over everything stored; the end of the
    // stream also stops a replay.
    let (ok, out, err) = replay(&["--summary"]);
    assert!(ok, "{out}{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["messages"],
        1000
    );
    let (ok, out, err) = replay(&["--summary", "--limit", "5000"]);
    assert!(ok, "{out}{err}");
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["messages"], 1300, "{s}");
    assert_eq!(
        s["reroute_topics"],
        json!({"orders.eu": 434, "orders.us": 433}),
        "{s}"
    );

    // Without --summary: one line per message, naming the message; from a
    // cursor, the messages after it.
    let page = node.get_json("/v1/messages?topic=orders&limit=1000").await;
    let page = node
        .get_json(&format!(
            "/v1/messages?topic=orders&limit=298&from={}",
            enc(page["cursor"].as_str().unwrap())
        ))
        .await;
    let cursor = page["cursor"].as_str().unwrap();
    let (ok, out, err) = replay(&["--from", cursor]);
    assert!(ok, "{out}{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Then the plugin's own counters.
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(
        lines[2],
        json!({"counters": {"fallback": 1, "rerouted": 1}}),
        "{out}"
    );
    assert_eq!(lines[0]["decision"], "deliver", "{out}");
    assert_eq!(lines[1]["decision"], "reroute", "{out}");
    assert_eq!(lines[1]["topics"], json!(["orders.eu"]), "{out}");
    let stored = node
        .get_json("/v1/messages?topic=orders&from=earliest&limit=3")
        .await;
    let all = node.pull_all("orders").await;
    assert_eq!(all.len(), 1300);
    assert_eq!(lines[0]["message"], all[1298]["id"], "{out}");
    assert_eq!(lines[1]["message"], all[1299]["id"], "{out}");

    // The envelopes of a pull, saved as JSON lines, are accepted as they are.
    let envelopes: String = stored["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{m}\n"))
        .collect();
    let file = dir.path().join("stored.ndjson");
    std::fs::write(&file, envelopes).unwrap();
    let (ok, out, err) = run_cli(
        &[
            "plugin",
            "test",
            router,
            "--hook",
            "route",
            "--config",
            config,
            "--message",
            &format!("@{}", file.display()),
        ],
        &node.url,
    );
    assert!(ok, "{out}{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&Value> = stored["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["id"])
        .collect();
    assert_eq!(
        lines[..3].iter().map(|l| &l["message"]).collect::<Vec<_>>(),
        ids,
        "{out}"
    );
    assert_eq!(lines[0]["topics"], json!(["orders.eu"]), "{out}");
    assert_eq!(lines[2]["decision"], "deliver", "{out}");

    // A failing component: errors by kind, and a non-zero exit.
    let trap = wasm_dir().join("trap.wasm");
    let (ok, out, err) = run_cli(
        &[
            "plugin",
            "test",
            trap.to_str().unwrap(),
            "--hook",
            "route",
            "--replay",
            "orders",
            "--limit",
            "10",
            "--summary",
        ],
        &node.url,
    );
    assert!(!ok, "{out}");
    assert!(err.contains("failed"), "{err}");
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["messages"], 10, "{s}");
    assert_eq!(
        s["errors"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum::<u64>(),
        10,
        "{s}"
    );
}

/// The SDK crate builds from its own copy of the WIT contract (so that it
/// can be packaged); the copy must be the contract.
#[test]
fn sdk_wit_copy_is_the_contract() {
    let repo = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let names = |dir: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    let contract = repo.join("sdk/wit");
    let copy = repo.join("sdk/rust/wit");
    assert_eq!(
        names(&contract),
        names(&copy),
        "sdk/rust/wit lists other files than sdk/wit"
    );
    for name in names(&contract) {
        assert!(
            std::fs::read(contract.join(&name)).unwrap()
                == std::fs::read(copy.join(&name)).unwrap(),
            "sdk/rust/wit/{name} differs from sdk/wit/{name}: copy the contract into the SDK \
             (cp sdk/wit/{name} sdk/rust/wit/)"
        );
    }
}

/// `plugin new` writes a crate for each hook that builds for wasm32-wasip2
/// against the SDK, passes its own unit test natively, and runs in
/// `plugin test`; it refuses a directory that is not empty.
#[test]
fn plugin_new_scaffolds_a_crate_that_builds_and_runs() {
    let repo = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .canonicalize()
        .unwrap();
    // The example plugins' build compiles the SDK and its dependencies into
    // plugins/target; the scaffolded crates share that directory and the
    // workspace's lock file, so they compile only their own code.
    let built = wasm_dir();
    let target = repo.join("plugins/target");
    let dir = tempfile::tempdir().unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let cargo_in = |crate_dir: &Path, args: &[&str]| {
        let out = std::process::Command::new(&cargo)
            .args(args)
            .arg("--target-dir")
            .arg(&target)
            .current_dir(crate_dir)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .expect("run cargo");
        assert!(
            out.status.success(),
            "cargo {args:?} in {}:\n{}",
            crate_dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let sdk = repo.join("sdk/rust");
    let cases = [
        (
            "route",
            "orders",
            r#"{"topic": "orders.eu", "payload": "x"}"#,
            None,
            json!({"decision": "drop", "reason": "messages on orders.eu need a key"}),
        ),
        (
            "filter",
            "urgent",
            r#"{"topic": "alerts", "payload": "urgent: disk full"}"#,
            None,
            json!({"decision": "keep"}),
        ),
        (
            "pick",
            "eu-1",
            r#"{"topic": "jobs"}"#,
            Some(
                r#"[{"id": "a", "labels": {"zone": "us-1"}}, {"id": "b", "labels": {"zone": "eu-1"}}]"#,
            ),
            json!({"decision": "pick", "index": 1, "id": "b"}),
        ),
    ];
    for (hook, config, message, candidates, expected) in cases {
        let name = format!("scaffolded-{hook}");
        let crate_dir = dir.path().join(&name);
        let (ok, out, err) = run_cli(
            &[
                "plugin",
                "new",
                crate_dir.to_str().unwrap(),
                "--hook",
                hook,
                "--sdk-path",
                sdk.to_str().unwrap(),
            ],
            "http://127.0.0.1:9",
        );
        assert!(ok, "{out}{err}");
        assert!(out.contains(&format!("created {name}")), "{out}");
        std::fs::copy(
            repo.join("plugins/Cargo.lock"),
            crate_dir.join("Cargo.lock"),
        )
        .unwrap();
        cargo_in(
            &crate_dir,
            &["build", "--release", "--target", "wasm32-wasip2"],
        );
        cargo_in(&crate_dir, &["test"]);
        let component = built.join(format!("scaffolded_{hook}.wasm"));
        assert!(component.is_file(), "{}", component.display());
        let mut args = vec![
            "plugin",
            "test",
            component.to_str().unwrap(),
            "--hook",
            hook,
            "--config",
            config,
            "--message",
            message,
        ];
        if let Some(c) = candidates {
            args.extend(["--candidates", c]);
        }
        let (ok, out, err) = run_cli(&args, "http://127.0.0.1:9");
        assert!(ok, "{out}{err}");
        let mut first: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        first.as_object_mut().unwrap().remove("micros");
        assert_eq!(first, expected, "{hook}: {out}");
        // Not over an existing crate.
        let (ok, _, err) = run_cli(
            &["plugin", "new", crate_dir.to_str().unwrap(), "--hook", hook],
            "http://127.0.0.1:9",
        );
        assert!(!ok && err.contains("not empty"), "{err}");
    }
}

/// `cargo package` of the SDK takes the WIT contract along, so the package
/// builds outside a checkout.
#[test]
fn sdk_package_lists_the_wit() {
    let repo = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["package", "--list", "--allow-dirty", "--no-verify"])
        .arg("--manifest-path")
        .arg(repo.join("sdk/rust/Cargo.toml"))
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("run cargo package");
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{list}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<&str> = list.lines().collect();
    for f in [
        "wit/plugin.wit",
        "README.md",
        "src/lib.rs",
        "src/bindings.rs",
    ] {
        assert!(files.contains(&f), "{f} is not in the package: {list}");
    }
}

/// `GET /v1/plugins/{name}/logs` streams a binding's log lines as SSE; a
/// reader that falls behind loses lines and is told how many;
/// `switchyard plugin logs` follows the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_logs_stream_live_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    // Rate limits high enough that each call's 900 lines of 4 KiB all pass.
    let node = Node::start_with_config(
        dir.path(),
        "[plugins]\nlog_lines_per_sec = 1000000\nlog_bytes_per_sec = 10000000000\n",
        &["--fsync", "never"],
    );
    bind_ok(&node, "flood", "log_flooder", "hook=route&topic=noisy").await;
    let (status, _, _) = node
        .raw(node.request("GET", "/v1/plugins/nope/logs"), "")
        .await;
    assert_eq!(status, 404);
    let (status, _, _) = node
        .raw(node.request("POST", "/v1/plugins/flood/logs"), "")
        .await;
    assert_eq!(status, 405);

    // A reader that reads.
    let mut reader = Sse::connect(&node, "/v1/plugins/flood/logs", None)
        .await
        .unwrap();
    // A reader that does not read until the end.
    let mut slow = Sse::connect(&node, "/v1/plugins/flood/logs", None)
        .await
        .unwrap();
    node.publish("noisy", "one").await;
    let ev = reader
        .next(Duration::from_secs(10))
        .await
        .expect("an event");
    assert_eq!(ev.event, "log", "{ev:?}");
    let line: Value = serde_json::from_str(&ev.data).unwrap();
    assert_eq!(line["level"], "warn", "{line}");
    assert_eq!(line["message"].as_str().unwrap(), "x".repeat(4096));
    assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line}");
    assert!(
        line["time_ms"].as_u64().unwrap() > 1_700_000_000_000,
        "{line}"
    );
    // Everything the reader gets is a log line or a count of lost ones:
    // 900 lines in all.
    let (lines, dropped) = count_log_events(&mut reader, 1, 900).await;
    assert_eq!(lines + dropped, 900);

    // 3600 lines (14 MiB) while the slow reader reads nothing: it gets what
    // the connection buffered and the channel held, then a count of the
    // rest; the node keeps nothing more for it.
    for i in 0..4 {
        node.publish("noisy", format!("{i}")).await;
    }
    let (lines, dropped) = count_log_events(&mut slow, 0, 4500).await;
    assert_eq!(lines + dropped, 4500);
    assert!(
        dropped > 0 && lines < 4500,
        "lines {lines}, dropped {dropped}"
    );

    // The CLI: --count lines as JSON, then exits.
    let mut child = std::process::Command::new(BIN)
        .args(["plugin", "logs", "flood", "--json", "--count", "3"])
        .env("SWITCHYARD_URL", &node.url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "plugin logs did not exit");
        node.publish("noisy", "again").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let logs: Vec<&Value> = printed
        .iter()
        .filter(|v| v.get("level").is_some())
        .collect();
    assert_eq!(logs.len(), 3, "{stdout}");
    assert_eq!(logs[0]["level"], "warn", "{stdout}");
    // Unknown binding: the command fails.
    let (ok, _, err) = run_cli(&["plugin", "logs", "nope"], &node.url);
    assert!(!ok, "{err}");
}

/// The node settings for guest-language components: a CPython component
/// is about 18 MB (over the default 16 MiB upload limit), and compiling
/// one takes tens of seconds on a small machine (over the default 10 s
/// compile limit).
const GUEST_LANGUAGE_CONFIG: &str =
    "[plugins]\nmax_upload_bytes = 33554432\ncompile_timeout_ms = 300000\n";

/// The node log filter of these tests: plugin output (stdout at `info`)
/// as well as warnings.
const PLUGIN_LOG: &str = "warn,switchyard::plugin=info";

/// Builds a language's example plugins with its script into `out`. The
/// script installs the pinned toolchain from its package registry when it
/// is missing; a build that cannot get it fails the test, loudly.
fn build_guest_language(script: &str, out: &Path) {
    let repo = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let started = Instant::now();
    let status = std::process::Command::new("bash")
        .arg(repo.join("scripts").join(script))
        .arg(out)
        .status()
        .expect("run the guest build script");
    assert!(
        status.success(),
        "\n\n*** scripts/{script} failed: the guest-language toolchain could not be \
         installed or the examples did not build (see its output above). These \
         tests need the npm registry and PyPI. ***\n"
    );
    eprintln!("scripts/{script}: {:?}", started.elapsed());
}

/// PUT /v1/plugins/{name}?{query} with component bytes; returns status,
/// JSON, and how long the bind (upload, compile, init) took.
async fn bind_component(
    node: &Node,
    name: &str,
    bytes: Vec<u8>,
    query: &str,
) -> (u16, Value, Duration) {
    let started = Instant::now();
    let (status, v) = node.put_plugin(name, query, bytes).await;
    (status, v, started.elapsed())
}

/// Binds the route and filter examples of one language (`route_<suffix>`
/// and `filter_<suffix>` in `dir`) and checks what they do: the route
/// plugin reroutes by a payload field and prints each decision into the
/// binding's log; the filter plugin keeps the matching messages. A second
/// bind of the same component is served from the compile cache.
async fn guest_language_examples_work(dir: &Path, suffix: &str, memory_mb: u32) {
    let data = tempfile::tempdir().unwrap();
    let node = Node::start_with_config_env(
        data.path(),
        GUEST_LANGUAGE_CONFIG,
        &["--fsync", "never"],
        &[("SWITCHYARD_LOG", Path::new(PLUGIN_LOG))],
    );
    let rss_before = node.rss_kib();
    let route = std::fs::read(dir.join(format!("route_{suffix}.wasm"))).unwrap();
    let filter = std::fs::read(dir.join(format!("filter_{suffix}.wasm"))).unwrap();
    let limits = format!("memory_mb={memory_mb}&max_instances=1");

    let (status, v, took) = bind_component(
        &node,
        "router",
        route.clone(),
        &format!(
            "hook=route&topic=orders&{limits}&config={}",
            enc(r#"{"field": "region", "prefix": "orders", "print": true}"#)
        ),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let rss_after = node.rss_kib();
    eprintln!(
        "{suffix}: route component of {} bytes bound in {took:?}; node RSS {} -> {} KiB",
        route.len(),
        rss_before,
        rss_after
    );
    // The compiler ran in a worker process: its working set (300+ MiB for
    // a language runtime) never reached the node, which holds the
    // compiled code, the instance and the upload.
    assert!(
        rss_after.saturating_sub(rss_before) < 150 * 1024,
        "node RSS grew from {rss_before} to {rss_after} KiB binding one component"
    );
    let (status, v) = post(&node, "orders", r#"{"region":"eu","n":1}"#, None).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["topic"], "orders.eu", "{v}");
    let (_, v) = post(&node, "orders", r#"{"region":"us","n":2}"#, None).await;
    assert_eq!(v["topic"], "orders.us", "{v}");
    let (_, v) = post(&node, "orders", r#"{"n":3}"#, None).await;
    assert_eq!(v["topic"], "orders", "{v}");
    let (_, v) = post(&node, "orders", "not json", None).await;
    assert_eq!(v["topic"], "orders", "{v}");
    assert_eq!(
        payloads(&node.pull_all("orders.eu").await),
        [r#"{"region":"eu","n":1}"#]
    );
    // The guest's print() went to the binding's log, marked as stdout.
    let log = node
        .log_with(&["route: orders -> orders.eu", "route: orders -> orders.us"])
        .await;
    assert!(log.contains("stdout"), "{log}");
    assert_eq!(counters(&node, "router").await["logs"], 2);

    // The same component again: its compiled form comes from the cache.
    let (status, v, took) = bind_component(
        &node,
        "router",
        route,
        &format!(
            "hook=route&topic=orders&{limits}&config={}",
            enc(r#"{"field": "region"}"#)
        ),
    )
    .await;
    assert!(status == 200 || status == 201, "{v}");
    eprintln!("{suffix}: the same route component bound again in {took:?}");
    let (_, v) = post(&node, "orders", r#"{"region":"apac"}"#, None).await;
    assert_eq!(v["topic"], "orders.apac", "{v}");

    // A rejected configuration names the problem.
    let (status, v, _) = bind_component(
        &node,
        "keep",
        filter.clone(),
        &format!("hook=filter&{limits}&config={}", enc("[1]")),
    )
    .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (422, Some("config_rejected")),
        "{v}"
    );

    let (status, v, took) = bind_component(
        &node,
        "keep",
        filter,
        &format!(
            "hook=filter&{limits}&config={}",
            enc(r#"{"field": "level", "value": "error"}"#)
        ),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    eprintln!("{suffix}: filter component bound in {took:?}");
    for p in [
        r#"{"level":"info","n":1}"#,
        r#"{"level":"error","n":2}"#,
        "not json",
        r#"{"n":4}"#,
        r#"{"level":"error","n":5}"#,
    ] {
        post(&node, "logs", p, None).await;
    }
    let kept = node.get_json("/v1/messages?topic=logs&filter=keep").await;
    assert_eq!(
        payloads(kept["messages"].as_array().unwrap()),
        [r#"{"level":"error","n":2}"#, r#"{"level":"error","n":5}"#]
    );
    let mut sse = Sse::connect(
        &node,
        "/v1/events?topic=logs&from=earliest&filter=keep",
        None,
    )
    .await
    .expect("subscribe");
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(
            sse.next(Duration::from_secs(30))
                .await
                .expect("filtered event")
                .data,
        );
    }
    assert_eq!(
        got,
        [r#"{"level":"error","n":2}"#, r#"{"level":"error","n":5}"#]
    );
    assert_eq!(node.get_json("/healthz").await["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_plugins_route_and_filter() {
    let out = tempfile::tempdir().unwrap();
    build_guest_language("build-guest-python.sh", out.path());
    guest_language_examples_work(out.path(), "py", 128).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_plugins_route_and_filter() {
    let out = tempfile::tempdir().unwrap();
    build_guest_language("build-guest-js.sh", out.path());
    guest_language_examples_work(out.path(), "js", 128).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_printing_or_exiting_guest_is_contained() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with_env(
        dir.path(),
        &["--fsync", "never"],
        &[("SWITCHYARD_LOG", Path::new(PLUGIN_LOG))],
    );
    bind_ok(
        &node,
        "printer",
        "printer",
        "hook=route&topic=p.%3E&on_error=drop",
    )
    .await;
    let (status, v) = post(&node, "p.a", "print", None).await;
    assert_eq!((status, &v["topic"]), (201, &json!("p.a")), "{v}");
    node.log_with(&["printer: to stdout on p.a", "printer: to stderr on p.a"])
        .await;
    // exit fails the call (the default error policy drops the message),
    // and the next call runs on a new instance.
    let (status, v) = post(&node, "p.a", "exit", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["dropped"], true, "{v}");
    let (status, v) = post(&node, "p.a", "print", None).await;
    assert_eq!(status, 201, "{v}");
    let c = counters(&node, "printer").await;
    assert_eq!(c["failures"]["trap"], 1, "{c}");
    node.log_with(&["the plugin called exit(1)"]).await;
    // The sandbox shows the guest no environment, arguments, files or stdin.
    let (_, v) = post(&node, "p.a", "probe", None).await;
    assert_eq!(
        v["reason"], "env=0 args=0 root=false file=false stdin=Some(0)",
        "{v}"
    );
    assert_eq!(node.get_json("/healthz").await["status"], "ok");
}

/// Reads a plugin log stream until `total` lines are accounted for, as
/// `log` events or counted in `dropped` ones, starting from `lines` read
/// already; returns (lines, dropped).
async fn count_log_events(sse: &mut Sse, mut lines: u64, total: u64) -> (u64, u64) {
    let mut dropped = 0;
    while lines + dropped < total {
        let ev = sse.next(Duration::from_secs(10)).await.expect("an event");
        match ev.event.as_str() {
            "log" => lines += 1,
            "dropped" => {
                let v: Value = serde_json::from_str(&ev.data).unwrap();
                dropped += v["dropped"].as_u64().unwrap();
            }
            other => panic!("unexpected event {other}: {ev:?}"),
        }
    }
    (lines, dropped)
}
