//! SIGHUP reloads the configuration file: its `[[plugin]]` bindings change
//! without a restart, other changes are logged as waiting for one, and a
//! file that does not load changes nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::Node;

fn tagger(wasm_dir: &Path, name: &str, value: &str) -> String {
    format!(
        "[[plugin]]\nname = \"{name}\"\nfile = \"{}\"\nhook = \"route\"\ntopics = [\"orders.>\"]\n\
         config = '{{\"name\": \"x-{name}\", \"value\": \"{value}\"}}'\n",
        wasm_dir.join("header_tagger.wasm").display()
    )
}

/// Publishes to a new topic `orders.r<n>` until the stored copy's
/// headers satisfy `want` (10 s at most); returns them.
async fn published_headers(
    node: &Node,
    want: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    static TOPICS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = TOPICS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let topic = format!("orders.r{n}");
        node.publish(&topic, "x").await;
        let headers = node.pull_all(&topic).await[0]["headers"].clone();
        if want(&headers) || Instant::now() > deadline {
            return headers;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_log(node: &Node, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.log().contains(text) {
        assert!(
            Instant::now() < deadline,
            "no {text:?} in the log:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sighup_rebinds_the_files_plugins_and_names_what_needs_a_restart() {
    let wasm_dir = switchyard_testkit::build_guest_plugins(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../.."
    )))
    .expect("guest plugins build");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    let mut node = Node::start_with_config(
        dir.path(),
        &tagger(&wasm_dir, "tag", "v1"),
        &["--fsync", "never"],
    );
    let h = published_headers(&node, |_| true).await;
    assert_eq!(h["x-tag"], "v1", "{h}");

    // A changed config, a second binding and a limit: the bindings apply,
    // the limit waits for a restart.
    std::fs::write(
        &config,
        format!(
            "[limits]\nmax_payload_bytes = 4096\n{}{}",
            tagger(&wasm_dir, "tag", "v2"),
            tagger(&wasm_dir, "mark", "on")
        ),
    )
    .unwrap();
    node.hangup();
    let h = published_headers(&node, |h| h["x-tag"] == "v2" && h["x-mark"] == "on").await;
    assert_eq!(
        (&h["x-tag"], &h["x-mark"]),
        (&"v2".into(), &"on".into()),
        "{h} {}",
        node.log()
    );
    let plugins = node.get_json("/v1/plugins").await;
    let versions: Vec<(&str, u64)> = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["version"].as_u64().unwrap()))
        .collect();
    assert_eq!(versions, [("mark", 1), ("tag", 2)]);
    wait_log(&node, "limits.max_payload_bytes").await;
    // The running limit stays: a 5,000-byte payload is still accepted.
    let v = node.publish("big", vec![b'x'; 5000]).await;
    assert!(v["id"].is_string(), "{v}");

    // A file that does not load changes nothing.
    std::fs::write(&config, "[limits\n").unwrap();
    node.hangup();
    wait_log(&node, "configuration not reloaded").await;
    let h = published_headers(&node, |_| true).await;
    assert_eq!(
        (&h["x-tag"], &h["x-mark"]),
        (&"v2".into(), &"on".into()),
        "{h}"
    );

    // `switchyard reload` (the pid file in the data directory) does what
    // SIGHUP does; with a file that does not load, it signals nothing.
    let data_dir = node.data_dir.clone();
    let reload = |config: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("reload")
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(&data_dir)
            .output()
            .unwrap()
    };
    let out = reload(&config);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // Removed from the file: unbound; unchanged: left as it was. (The
    // limit stays in the file: a binding's output limit follows
    // `max_payload_bytes`, so removing it would change `mark` too.)
    std::fs::write(
        &config,
        format!(
            "[limits]\nmax_payload_bytes = 4096\n{}",
            tagger(&wasm_dir, "mark", "on")
        ),
    )
    .unwrap();
    let out = reload(&config);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("asked the node"),
        "{out:?}"
    );
    let h = published_headers(&node, |h| h.get("x-tag").is_none()).await;
    assert!(h.get("x-tag").is_none(), "{h}");
    assert_eq!(h["x-mark"], "on", "{h}");
    let plugins = node.get_json("/v1/plugins").await;
    assert_eq!(plugins["plugins"].as_array().unwrap().len(), 1, "{plugins}");
    assert_eq!(plugins["plugins"][0]["version"], 1, "{plugins}");
    // The pid file lives as long as the node.
    let pid_file = node.data_dir.join("switchyard.pid");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        node.pid().to_string()
    );
    assert!(node.terminate(), "the node did not stop on SIGTERM");
    assert!(!pid_file.exists(), "the pid file outlived the node");
    let out = reload(&config);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("switchyard.pid"),
        "{out:?}"
    );
}

#[tokio::test]
async fn sighup_changes_the_log_filter_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    // The file's filter applies: SWITCHYARD_LOG is empty (unset) here.
    let node = Node::start_with_config_env(
        dir.path(),
        "log = \"error\"\n",
        &["--fsync", "never"],
        &[("SWITCHYARD_LOG", Path::new(""))],
    );
    node.publish("t", "x").await;
    std::fs::write(&config, "log = \"warn,switchyard::access=info\"\n").unwrap();
    node.hangup();
    wait_log(&node, "log filter changed").await;
    let before = node.log().matches("switchyard::access").count();
    node.publish("t", "y").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.log().matches("switchyard::access").count() == before {
        assert!(Instant::now() < deadline, "no access line:\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A filter that does not parse is refused with the whole file.
    std::fs::write(&config, "log = \"warn,=[\"\n").unwrap();
    node.hangup();
    wait_log(&node, "configuration not reloaded").await;
}

#[tokio::test]
async fn sighup_applies_limits_that_can_change_and_names_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    let node = Node::start_with_config(dir.path(), "", &["--fsync", "never"]);
    let batch = |n: usize| {
        (0..n)
            .map(|i| format!("{{\"topic\":\"b\",\"payload\":\"{i}\"}}\n"))
            .collect::<String>()
    };
    let post = |body: String| {
        node.raw(
            node.request("POST", "/v1/batch")
                .header("content-type", "application/x-ndjson"),
            body,
        )
    };
    assert_eq!(post(batch(3)).await.0, 201);
    std::fs::write(
        &config,
        "[limits]\nmax_batch_messages = 2\nmax_connections = 500\n",
    )
    .unwrap();
    node.hangup();
    wait_log(&node, "needs_restart=limits.max_connections").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, body) = post(batch(3)).await;
        if status == 413 {
            assert!(String::from_utf8_lossy(&body).contains("batch_too_large"));
            break;
        }
        assert!(Instant::now() < deadline, "the new limit did not apply");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(post(batch(2)).await.0, 201);
    // The summary names only what waits for a restart.
    assert!(
        !node
            .log()
            .contains("needs_restart=limits.max_batch_messages")
    );
}
