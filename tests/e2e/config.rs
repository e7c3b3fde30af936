//! The configuration from the binary's side: `config show` and `config
//! check`, precedence of flags, variables and the file in a running node,
//! and the refusals of a misspelt variable or a bad value (exit status 2).

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{BIN, Node};

/// Runs the binary with `args` and the variables `env` (and no other
/// `SWITCHYARD_*` variable of the test's own environment).
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SWITCHYARD_") {
            cmd.env_remove(name);
        }
    }
    cmd.args(args).envs(env.iter().copied()).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write_config(dir: &Path, toml: &str) -> String {
    let path = dir.join("node.toml");
    std::fs::write(&path, toml).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn config_show_names_where_each_value_comes_from() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        "[storage]\nfsync = \"never\"\n[limits]\nmax_payload_bytes = 300\nmax_batch_messages = 10\n\
         [cluster]\nkey = \"a cluster key from the file\"\n",
    );
    let env = [
        ("SWITCHYARD_LIMITS_MAX_PAYLOAD_BYTES", "200"),
        (
            "SWITCHYARD_CLUSTER_KEY",
            "a cluster key from the environment",
        ),
        ("SWITCHYARD_FSYNC", "interval"),
    ];
    let out = run(
        &["config", "show", "--config", &file, "--fsync", "always"],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for line in [
        "fsync = \"always\" # --fsync\n".to_owned(),
        "max_payload_bytes = 200 # SWITCHYARD_LIMITS_MAX_PAYLOAD_BYTES\n".to_owned(),
        format!("max_batch_messages = 10 # {file}\n"),
        "max_batch_bytes = 4194304 # default\n".to_owned(),
        "listen = \"127.0.0.1:7070\" # default\n".to_owned(),
        "# key: set, not shown # SWITCHYARD_CLUSTER_KEY\n".to_owned(),
    ] {
        assert!(text.contains(&line), "{line:?} in\n{text}");
    }
    assert!(!text.contains("a cluster key"), "{text}");
    // The output reads as a config file.
    let again = write_config(dir.path(), &text);
    let out = run(&["config", "check", "--config", &again], &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = run(
        &["config", "show", "--format", "json", "--config", &file],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains("a cluster key"));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let payload = &json["limits"]["max_payload_bytes"];
    assert_eq!(payload["value"], 200);
    assert_eq!(payload["source"], "SWITCHYARD_LIMITS_MAX_PAYLOAD_BYTES");
    assert_eq!(json["storage"]["fsync"]["source"], "SWITCHYARD_FSYNC");
    assert_eq!(
        json["limits"]["max_batch_messages"]["source"],
        file.as_str()
    );
    assert_eq!(json["cluster"]["key"]["secret"], true);
    assert_eq!(json["cluster"]["key"]["value"], serde_json::Value::Null);
}

#[test]
fn config_check_and_serve_refuse_with_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let ok = run(&["config", "check"], &[]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_eq!(stdout(&ok).trim(), "configuration is valid");
    for (env, expect) in [
        (
            ("SWITCHYARD_LIMITS_MAX_PAYLOD_BYTES", "5"),
            "SWITCHYARD_LIMITS_MAX_PAYLOD_BYTES names no configuration key \
             (did you mean SWITCHYARD_LIMITS_MAX_PAYLOAD_BYTES?)",
        ),
        (
            ("SWITCHYARD_LIMITS_MAX_PAYLOAD_BYTES", "big"),
            "SWITCHYARD_LIMITS_MAX_PAYLOAD_BYTES (key limits.max_payload_bytes): invalid type: \
             string \"big\", expected an integer greater than 0",
        ),
        (
            ("SWITCHYARD_LIMITS_MAX_HEADER_BYTES", "100"),
            "limits.max_header_bytes must be at least 8192 \
             (from SWITCHYARD_LIMITS_MAX_HEADER_BYTES)",
        ),
    ] {
        for args in [
            &["config", "check"][..],
            &["serve", "--listen", "127.0.0.1:0", "--data-dir", data][..],
        ] {
            let out = run(args, &[env]);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{args:?} {env:?}: {}",
                stderr(&out)
            );
            assert_eq!(stderr(&out).trim(), format!("error: {expect}"), "{args:?}");
        }
    }
    // The refused serve opened nothing.
    assert!(!Path::new(data).exists());
    // A key file that cannot be read: `config show` does not read it,
    // `config check` does.
    let file = write_config(
        dir.path(),
        "[auth]\nhs256_secret_file = \"missing.secret\"\n",
    );
    assert!(
        run(&["config", "show", "--config", &file], &[])
            .status
            .success()
    );
    let out = run(&["config", "check", "--config", &file], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));
    // An unknown key in the file.
    let file = write_config(dir.path(), "[limits]\nmax_paylod_bytes = 5\n");
    let out = run(&["config", "check", "--config", &file], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("max_paylod_bytes"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn a_running_node_takes_flags_over_variables_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("not-this-data");
    let toml = "[limits]\nmax_payload_bytes = 300\nmax_batch_bytes = 300\n";
    let node = Node::start_with_config_env(
        dir.path(),
        toml,
        &[],
        &[
            ("SWITCHYARD_LIMITS_MAX_PAYLOAD_BYTES", Path::new("200")),
            // The harness passes --data-dir: the flag wins.
            ("SWITCHYARD_DATA_DIR", &elsewhere),
        ],
    );
    let publish = |size: usize| node.raw(node.request("POST", "/v1/topics/t"), vec![b'x'; size]);
    assert_eq!(publish(250).await.0, 413);
    assert_eq!(publish(200).await.0, 201);
    assert!(node.data_dir.exists());
    assert!(!elsewhere.exists());
}
