//! Plugin author tools against a running node: `plugin test --against`
//! compares a local component with the one a node binds (fetched through
//! `GET /v1/plugins/{name}/component`), and plugin log lines are stored on
//! `$sys.plugins.<name>.log`, rate-limited.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{BIN, Node, Sse, enc, guest_wasm};

fn wasm_file(name: &str) -> PathBuf {
    let repo = switchyard_testkit::repo_root();
    switchyard_testkit::build_guest_plugins(repo)
        .expect("guest plugins build")
        .join(format!("{name}.wasm"))
}

/// PUT /v1/plugins/{name}?{query} with a component (none: `""`); panics
/// unless the binding is made.
async fn bind(node: &Node, name: &str, component: &str, query: &str) -> Value {
    let body = if component.is_empty() {
        Vec::new()
    } else {
        guest_wasm(component)
    };
    let (status, v) = node.put_plugin(name, query, body).await;
    assert!(status == 201 || status == 200, "bind {name}: {status} {v}");
    v
}

/// Runs the CLI against `node`; returns the exit status, stdout (as JSON
/// lines) and stderr.
fn cli(node: &Node, args: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .env("SWITCHYARD_URL", &node.url)
        .output()
        .expect("run the CLI");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}\n{stdout}{stderr}")))
        .collect();
    (out.status.code(), lines, stderr)
}

/// The summary line of a comparison without its sha256s.
fn counts(summary: &Value) -> Value {
    json!({
        "compared": summary["compared"],
        "differing": summary["differing"],
        "binding": summary["binding"],
        "version": summary["version"],
        "local_errors": summary["local_errors"],
        "bound_errors": summary["bound_errors"],
    })
}

/// `plugin test --against` runs a local component and a bound one over the
/// messages a node stored and prints where they decide differently, with
/// exit status 3; the same component against itself agrees (0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_test_against_a_binding_prints_the_differences() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    let filter = wasm_file("json_filter");
    let filter = filter.to_str().unwrap();
    let bound = bind(
        &node,
        "big",
        "json_filter",
        &format!(
            "hook=filter&topic=sales&fuel=5000000&config={}",
            enc(r#"{"field": "/amount", "op": "gt", "value": 100}"#)
        ),
    )
    .await;
    let mut ids = Vec::new();
    for p in [
        r#"{"amount":50}"#,
        r#"{"amount":150}"#,
        r#"{"amount":75}"#,
        r#"{"amount":300}"#,
        r#"{"amount":99}"#,
        "not json",
        r#"{"amount":20}"#,
    ] {
        ids.push(node.publish("sales", p).await["id"].clone());
    }

    // The component the binding runs: its bytes, named by their sha256.
    let (status, headers, body) = node
        .raw(node.request("GET", "/v1/plugins/big/component"), "")
        .await;
    assert_eq!(status, 200);
    assert_eq!(body.as_ref(), std::fs::read(filter).unwrap());
    let sha = bound["sha256"].as_str().unwrap();
    assert_eq!(headers["content-type"], "application/wasm");
    assert_eq!(headers["etag"].to_str().unwrap(), format!("\"{sha}\""));
    assert_eq!(headers["switchyard-plugin-sha256"], sha);
    assert_eq!(headers["switchyard-plugin-version"], "1");
    for (method, path, want) in [
        ("GET", "/v1/plugins/nope/component", 404),
        ("POST", "/v1/plugins/big/component", 405),
        ("GET", "/v1/plugins/big/component?x=1", 400),
    ] {
        let (status, _, body) = node.raw(node.request(method, path), "").await;
        assert_eq!(status, want, "{method} {path}");
        let problem: Value = serde_json::from_slice(&body).unwrap();
        assert!(problem["detail"].is_string(), "{problem}");
    }

    // The same component and settings: no difference, exit status 0.
    let replay = ["plugin", "test", filter, "--replay", "sales"];
    let (code, lines, err) = cli(&node, &[&replay[..], &["--against", "big"]].concat());
    assert_eq!(code, Some(0), "{lines:?} {err}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        counts(&lines[0]),
        json!({"compared": 7, "differing": 0, "binding": "big", "version": 1,
               "local_errors": 0, "bound_errors": 0})
    );
    assert_eq!(lines[0]["local_sha256"], sha);
    assert_eq!(lines[0]["bound_sha256"], sha);

    // Another configuration: the messages over 60 but not over 100 differ.
    let other = [
        "--config",
        r#"{"field": "/amount", "op": "gt", "value": 60}"#,
    ];
    let (code, lines, err) = cli(
        &node,
        &[&replay[..], &other, &["--against", "big"]].concat(),
    );
    assert_eq!(code, Some(3), "{lines:?} {err}");
    assert!(err.contains("2 of 7 messages decided differently"), "{err}");
    assert_eq!(
        lines,
        [
            json!({"message": ids[2], "topic": "sales",
                   "local": {"decision": "keep"}, "bound": {"decision": "skip"}}),
            json!({"message": ids[4], "topic": "sales",
                   "local": {"decision": "keep"}, "bound": {"decision": "skip"}}),
            lines[2].clone(),
        ]
    );
    assert_eq!(
        counts(&lines[2]),
        json!({"compared": 7, "differing": 2, "binding": "big", "version": 1,
               "local_errors": 0, "bound_errors": 0})
    );
    // --summary: the last line only; --from and --limit bound the replay.
    let (code, lines, _) = cli(
        &node,
        &[
            &replay[..],
            &other,
            &["--against", "big", "--summary", "--limit", "3"],
        ]
        .concat(),
    );
    assert_eq!(code, Some(3));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        (&lines[0]["compared"], &lines[0]["differing"]),
        (&json!(3), &json!(1))
    );

    // The binding's limits apply to both unless given: with too little
    // fuel both fail alike, which is no difference.
    let (code, lines, err) = cli(
        &node,
        &[&replay[..], &["--against", "big", "--fuel", "10"]].concat(),
    );
    assert_eq!(code, Some(0), "{lines:?} {err}");
    assert_eq!(
        counts(&lines[0]),
        json!({"compared": 7, "differing": 0, "binding": "big", "version": 1,
               "local_errors": 7, "bound_errors": 7})
    );

    // Another component (a new version), on stored route traffic: the
    // bound header-tagger appends a header, the local passthrough does not.
    bind(
        &node,
        "tag",
        "header_tagger",
        &format!(
            "hook=route&topic=jobs&config={}",
            enc(r#"{"name": "x-tag", "value": "v1"}"#)
        ),
    )
    .await;
    // Re-bound with another config: version 2, which --against runs.
    bind(
        &node,
        "tag",
        "",
        &format!("config={}", enc(r#"{"name": "x-tag", "value": "v2"}"#)),
    )
    .await;
    let job = node.publish("jobs", "j1").await;
    let passthrough = wasm_file("passthrough");
    let (code, lines, err) = cli(
        &node,
        &[
            "plugin",
            "test",
            passthrough.to_str().unwrap(),
            "--replay",
            "jobs",
            "--against",
            "tag",
        ],
    );
    assert_eq!(code, Some(3), "{lines:?} {err}");
    assert_eq!(
        lines[0],
        json!({"message": job["id"], "topic": "jobs",
               "local": {"decision": "deliver"},
               "bound": {"decision": "replace",
                         "headers": [{"name": "x-tag", "value": "v2"},
                                     {"name": "x-tag", "value": "v2"}]}}),
        "{lines:?}"
    );
    assert_eq!(
        counts(&lines[1]),
        json!({"compared": 1, "differing": 1, "binding": "tag", "version": 2,
               "local_errors": 0, "bound_errors": 0})
    );
    // The local component with the binding's hook given as a flag, on a
    // message given on the command line.
    let (code, lines, err) = cli(
        &node,
        &[
            "plugin",
            "test",
            passthrough.to_str().unwrap(),
            "--hook",
            "route",
            "--message",
            r#"{"topic": "jobs", "payload": "x"}"#,
            "--against",
            "tag",
        ],
    );
    assert_eq!(code, Some(3), "{lines:?} {err}");
    assert_eq!(
        lines[0]["bound"]["headers"],
        json!([{"name": "x-tag", "value": "v2"}])
    );

    // Errors: an unknown binding, a component without the hook.
    let (code, _, err) = cli(&node, &[&replay[..], &["--against", "nope"]].concat());
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("nope"), "{err}");
    let (code, _, err) = cli(
        &node,
        &[
            "plugin",
            "test",
            passthrough.to_str().unwrap(),
            "--replay",
            "sales",
            "--against",
            "big",
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("the local component"), "{err}");
    // Without --against, --hook is still required.
    let (code, _, err) = cli(&node, &replay);
    assert_eq!(code, Some(2), "{err}");
}

/// A binding from the configuration file has its component in that file:
/// the node does not answer it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_binding_has_no_component_to_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with_config(
        dir.path(),
        &format!(
            "[[plugin]]\nname = \"cfg\"\nfile = \"{}\"\nhook = \"route\"\ntopics = [\"a\"]\n",
            wasm_file("passthrough").display()
        ),
        &["--fsync", "never"],
    );
    let (status, _, body) = node
        .raw(node.request("GET", "/v1/plugins/cfg/component"), "")
        .await;
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, &problem["code"]),
        (409, &json!("plugin_conflict")),
        "{problem}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("configuration file"),
        "{problem}"
    );
}

/// The log lines of a binding are stored on `$sys.plugins.<name>.log` as
/// JSON messages, for any subscriber of that topic, and follow the
/// binding's versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_log_lines_are_published_on_their_topic() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "never"]);
    bind(&node, "printer", "printer", "hook=route&topic=p.%3E").await;
    let mut sse = Sse::connect(
        &node,
        &format!(
            "/v1/events?topic={}&from=earliest",
            enc("$sys.plugins.printer.log")
        ),
        None,
    )
    .await
    .unwrap();
    // The node follows a new binding within 100 ms: until then its lines
    // are not forwarded, so publish until the first arrives.
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        assert!(Instant::now() < deadline, "no log line on the topic");
        node.publish("p.a", "print").await;
        if let Some(ev) = sse.next(Duration::from_secs(1)).await {
            break ev;
        }
    };
    let line = |data: &str| -> Value { serde_json::from_str(data).unwrap() };
    let first = line(&first.data);
    assert_eq!(first["level"], "info", "{first}");
    assert_eq!(first["message"], "printer: to stdout on p.a", "{first}");
    assert_eq!(
        (&first["version"], &first["dropped"]),
        (&json!(1), &json!(0))
    );
    assert!(first["time"].as_str().unwrap().ends_with('Z'), "{first}");
    assert!(first["time_ms"].as_u64().unwrap() > 1_700_000_000_000);
    let second = line(&sse.next(Duration::from_secs(10)).await.unwrap().data);
    assert_eq!(
        (&second["level"], &second["message"]),
        (&json!("warn"), &json!("printer: to stderr on p.a"))
    );
    // Lines of repeated publishes above, if any.
    while sse.next(Duration::from_millis(300)).await.is_some() {}
    // Each call's lines, in order.
    node.publish("p.b", "print").await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let v = line(&sse.next(Duration::from_secs(10)).await.unwrap().data);
        got.push((v["level"].clone(), v["message"].clone()));
    }
    assert_eq!(
        got,
        [
            (json!("info"), json!("printer: to stdout on p.b")),
            (json!("warn"), json!("printer: to stderr on p.b")),
        ]
    );
    // Stored as JSON messages of this node.
    let stored = node.pull_all("$sys.plugins.>").await;
    assert!(stored.len() >= 4, "{stored:?}");
    for m in &stored {
        assert_eq!(m["topic"], "$sys.plugins.printer.log");
        assert_eq!(m["headers"]["content-type"], "application/json");
    }
    // Clients cannot publish there; `>` does not see it.
    let (status, _, _) = node
        .raw(
            node.request(
                "POST",
                &format!("/v1/topics/{}", enc("$sys.plugins.printer.log")),
            ),
            "x",
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        node.pull_all(">")
            .await
            .iter()
            .all(|m| m["topic"] != "$sys.plugins.printer.log")
    );

    // A new version (its init prints a line too): the lines of its calls
    // carry it once the node follows the change (within 100 ms). (Calls
    // spaced out, to stay under the topic's rate limit.)
    bind(&node, "printer", "", "on_error=pass").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut init = 0;
    'calls: loop {
        assert!(Instant::now() < deadline, "no line of version 2");
        tokio::time::sleep(Duration::from_millis(200)).await;
        node.publish("p.c", "print").await;
        let mut version = None;
        loop {
            let v = line(&sse.next(Duration::from_secs(10)).await.unwrap().data);
            match v["message"].as_str().unwrap() {
                "printer: init" => init += 1,
                "printer: to stdout on p.c" => version = Some(v["version"].clone()),
                "printer: to stderr on p.c" if version == Some(json!(2)) => break 'calls,
                "printer: to stderr on p.c" => break,
                other => panic!("unexpected line {other:?}"),
            }
        }
    }
    assert_eq!(init, 1);
}

/// A plugin that floods its log fills its log topic at the rate limit, no
/// faster, and the lines it stores count those dropped; the log topic is
/// not routed through the plugin (no loop), and publishes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_log_topic_is_bounded_by_its_rate_limit() {
    const RATE: u64 = 20; // LOG_TOPIC_LINES_PER_SEC
    let dir = tempfile::tempdir().unwrap();
    // The binding's own log limit lets all 900 lines of each call through.
    let node = Node::start_with_config(
        dir.path(),
        "[plugins]\nlog_lines_per_sec = 1000000\nlog_bytes_per_sec = 10000000000\n",
        &["--fsync", "never"],
    );
    let started = Instant::now();
    // Bound to its log topic too: were log lines routed, each would make
    // 900 more.
    bind(
        &node,
        "flood",
        "log_flooder",
        &format!("hook=route&topic=noisy&topic={}", enc("$sys.>")),
    )
    .await;
    // Past the follow interval: every call's lines reach the forwarder.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls = 10u64;
    for i in 0..calls {
        let t = Instant::now();
        node.publish("noisy", format!("{i}")).await;
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "a publish took {:?}",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The forwarder stores what it admitted; then nothing more comes.
    let count = || async { node.pull_all("$sys.plugins.flood.log").await };
    let mut stored = count().await;
    let settle = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let again = count().await;
        if again.len() == stored.len() || Instant::now() > settle {
            stored = again;
            break;
        }
        stored = again;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let n = stored.len() as u64;
    let bound = RATE + (RATE as f64 * elapsed).ceil() as u64;
    assert!(n >= RATE, "{n} lines stored");
    assert!(
        n <= bound,
        "{n} lines stored in {elapsed:.1} s; at most {bound}"
    );
    let dropped: u64 = stored
        .iter()
        .map(|m| {
            let v: Value = serde_json::from_str(m["payload"].as_str().unwrap()).unwrap();
            assert_eq!(v["level"], "warn");
            assert_eq!(v["message"].as_str().unwrap().len(), 4096);
            v["dropped"].as_u64().unwrap()
        })
        .sum();
    assert!(
        dropped > 0 && n + dropped <= 900 * calls,
        "{n} stored, {dropped} dropped"
    );
    // No loop: the plugin ran once per client publish, and a second later
    // the topic holds the same lines.
    let c = node.get_json("/v1/plugins/flood").await["counters"].clone();
    assert_eq!(c["calls"], calls, "{c}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count().await.len() as u64, n);
    assert_eq!(node.get_json("/healthz").await["status"], "ok");
}
