//! The layering of the sources: the key list against the structs and the
//! documentation, precedence, the variables' names and values, and what
//! `config show` prints.

use super::*;
use crate::config::NodeConfig;

const FILE: &str = "/etc/switchyard/switchyard.toml";

fn layered(file: &str, env: &[(&str, &str)], flags: Overrides) -> Result<Layered, ConfigError> {
    let env = env
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
    Layered::from_parts(Some((Path::new(FILE), file)), env, flags)
}

/// The effective value of `key`.
fn value(l: &Layered, key: &str) -> Option<Value> {
    lookup(&to_table(&l.config).unwrap(), key).cloned()
}

fn toml_value(text: &str) -> Value {
    text.parse().unwrap()
}

/// `name = value` in `[section]`, or at the top level.
fn file_setting(key: &str, value: &str) -> String {
    match key.split_once('.') {
        Some((section, name)) => format!("[{section}]\n{name} = {value}\n"),
        None => format!("{key} = {value}\n"),
    }
}

#[test]
fn every_field_of_the_file_is_a_known_key() {
    let mut known: Vec<&str> = TOP_LEVEL.to_vec();
    known.extend(sections().iter().map(|(s, _)| *s));
    known.push("plugin");
    let mut fields = field_names::<FileConfig>().to_vec();
    fields.sort_unstable();
    known.sort_unstable();
    assert_eq!(fields, known, "a new section must be listed in sections()");
    for (section, keys) in sections() {
        assert!(!keys.is_empty(), "{section}");
    }
    // A section's keys come from its struct.
    assert!(keys().contains(&"limits.max_payload_bytes".to_owned()));
    assert!(keys().contains(&"retention.topics".to_owned()));
}

#[test]
fn variable_names_do_not_collide() {
    let names = env_names();
    let canonical: Vec<String> = keys()
        .iter()
        .filter(|k| !FILE_ONLY.contains(&k.as_str()))
        .map(|k| env_name(k))
        .collect();
    let mut unique = canonical.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), canonical.len(), "two keys share a variable");
    for (alias, key) in ENV_ALIASES {
        assert!(!canonical.contains(&alias.to_owned()), "{alias}");
        assert!(keys().contains(&key.to_owned()), "{alias} -> {key}");
    }
    // The client's variables, the config file's and the log filter are no keys'.
    for other in OTHER_VARS {
        assert!(!names.contains_key(other), "{other}");
    }
    for (flag, key) in FLAGS {
        assert!(keys().contains(&key.to_owned()), "{flag} -> {key}");
    }
    // Every flag of the overrides is listed in FLAGS.
    let every = Overrides {
        listen: Some("127.0.0.1:1".parse().unwrap()),
        data_dir: Some("d".into()),
        fsync: Some(switchyard_router::FsyncMode::Never),
        log_format: Some(crate::config::LogFormat::Json),
        gossip_listen: Some("127.0.0.1:2".parse().unwrap()),
        join: vec!["a:1".into()],
        cluster_name: Some("c".into()),
        replication_factor: Some(2),
        cluster_key: None,
        allowed_hosts: vec!["h".into()],
        allow_anonymous: true,
        tls_cert: Some("c.pem".into()),
        tls_key: Some("k.pem".into()),
    };
    let flags: Vec<(&str, &str)> = every
        .entries()
        .unwrap()
        .into_iter()
        .map(|(flag, key, _)| (flag, key))
        .collect();
    assert_eq!(flags, FLAGS.to_vec());
}

#[test]
fn env_over_file_over_default_in_every_section() {
    // (key, in the file, in the variable, the variable's value as TOML)
    let cases = [
        (
            "listen",
            "\"127.0.0.1:1\"",
            "127.0.0.1:2",
            "\"127.0.0.1:2\"",
        ),
        ("storage.fsync_interval_ms", "10", "20", "20"),
        ("limits.max_payload_bytes", "1000", "2000", "2000"),
        ("sse.heartbeat_secs", "3", "4", "4"),
        ("publish.idempotency_window_secs", "5", "6", "6"),
        ("retention.max_age_secs", "7", "8", "8"),
        (
            "cors.allow_origins",
            "[\"https://a.example\"]",
            "https://b.example, https://c.example",
            "[\"https://b.example\", \"https://c.example\"]",
        ),
        (
            "http.allowed_hosts",
            "[\"a.example\"]",
            "b.example",
            "[\"b.example\"]",
        ),
        ("plugins.compile_cache", "false", "yes", "true"),
        ("cluster.name", "\"edge\"", "123", "\"123\""),
        ("auth.leeway_secs", "11", "12", "12"),
        ("tls.poll_interval_secs", "13", "14", "14"),
    ];
    for (key, in_file, in_env, from_env) in cases {
        let var = env_name(key);
        let file = file_setting(key, in_file);
        let l = layered("", &[], Overrides::default()).unwrap();
        assert_eq!(l.origin(key), &Origin::Default, "{key}");
        let l = layered(&file, &[], Overrides::default()).unwrap();
        assert_eq!(l.origin(key), &Origin::File(FILE.into()), "{key}");
        assert_eq!(value(&l, key), Some(toml_value(in_file)), "{key}");
        let l = layered(&file, &[(&var, in_env)], Overrides::default()).unwrap();
        assert_eq!(l.origin(key), &Origin::Env(var.clone()), "{key}");
        assert_eq!(value(&l, key), Some(toml_value(from_env)), "{key}");
        // Without the file too.
        let l = layered("", &[(&var, in_env)], Overrides::default()).unwrap();
        assert_eq!(value(&l, key), Some(toml_value(from_env)), "{key}");
    }
}

#[test]
fn flags_over_env_over_file() {
    let file = "listen = \"127.0.0.1:1\"\n\
                [storage]\nfsync = \"never\"\n\
                [cluster]\nseeds = [\"f:1\"]\n\
                [http]\nallowed_hosts = [\"f.example\"]\n\
                [tls]\ncert_file = \"f.pem\"\n";
    let env = [
        ("SWITCHYARD_LISTEN", "127.0.0.1:2"),
        ("SWITCHYARD_STORAGE_FSYNC", "interval"),
        ("SWITCHYARD_CLUSTER_SEEDS", "e:1,e:2"),
        ("SWITCHYARD_HTTP_ALLOWED_HOSTS", "e.example"),
        ("SWITCHYARD_AUTH_ALLOW_ANONYMOUS", "false"),
        ("SWITCHYARD_TLS_CERT_FILE", "e.pem"),
    ];
    let l = layered(file, &env, Overrides::default()).unwrap();
    assert_eq!(l.config.listen.port(), 2);
    assert_eq!(l.config.storage.fsync, "interval");
    assert_eq!(l.config.cluster.seeds, ["e:1", "e:2"]);
    assert_eq!(l.config.http.allowed_hosts, Some(vec!["e.example".into()]));
    assert!(!l.config.auth.allow_anonymous);
    // A path from the file is relative to the file; one from a variable is not.
    assert_eq!(l.config.tls.cert_file, Some("e.pem".into()));
    let flags = Overrides {
        listen: Some("127.0.0.1:3".parse().unwrap()),
        fsync: Some(switchyard_router::FsyncMode::Always),
        join: vec!["g:1".into()],
        allowed_hosts: vec!["g.example".into()],
        allow_anonymous: true,
        tls_cert: Some("g.pem".into()),
        ..Default::default()
    };
    let l = layered(file, &env, flags).unwrap();
    assert_eq!(l.config.listen.port(), 3);
    assert_eq!(l.origin("listen"), &Origin::Flag("--listen"));
    assert_eq!(l.config.storage.fsync, "always");
    assert_eq!(l.origin("storage.fsync"), &Origin::Flag("--fsync"));
    assert_eq!(l.config.cluster.seeds, ["g:1"]);
    assert_eq!(l.origin("cluster.seeds"), &Origin::Flag("--join"));
    assert_eq!(l.config.http.allowed_hosts, Some(vec!["g.example".into()]));
    assert!(l.config.auth.allow_anonymous);
    assert_eq!(l.config.tls.cert_file, Some("g.pem".into()));
    let l = layered(file, &[], Overrides::default()).unwrap();
    assert_eq!(l.config.tls.cert_file, Some("/etc/switchyard/f.pem".into()));
}

#[test]
fn older_names_are_aliases() {
    let l = layered(
        "",
        &[
            ("SWITCHYARD_JOIN", "a:1,b:2"),
            ("SWITCHYARD_FSYNC", "never"),
            ("SWITCHYARD_ALLOW_ANONYMOUS", "1"),
            ("SWITCHYARD_TLS_CERT", "c.pem"),
        ],
        Overrides::default(),
    )
    .unwrap();
    assert_eq!(l.config.cluster.seeds, ["a:1", "b:2"]);
    assert_eq!(
        l.origin("cluster.seeds"),
        &Origin::Env("SWITCHYARD_JOIN".into())
    );
    assert_eq!(l.config.storage.fsync, "never");
    assert!(l.config.auth.allow_anonymous);
    assert_eq!(l.config.tls.cert_file, Some("c.pem".into()));
    // Both names: the same value is fine (the rule's name is reported),
    // different ones are refused.
    let same = [
        ("SWITCHYARD_FSYNC", "never"),
        ("SWITCHYARD_STORAGE_FSYNC", "never"),
    ];
    let l = layered("", &same, Overrides::default()).unwrap();
    assert_eq!(
        l.origin("storage.fsync"),
        &Origin::Env("SWITCHYARD_STORAGE_FSYNC".into())
    );
    let e = layered(
        "",
        &[
            ("SWITCHYARD_STORAGE_FSYNC", "never"),
            ("SWITCHYARD_FSYNC", "always"),
        ],
        Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "SWITCHYARD_STORAGE_FSYNC and SWITCHYARD_FSYNC (its older name) are both set, \
         to different values: keep one"
    );
}

#[test]
fn an_empty_value_counts_as_unset() {
    let l = layered(
        "[cluster]\nkey = \"from the file, long enough\"\n",
        &[("SWITCHYARD_CLUSTER_KEY", ""), ("SWITCHYARD_LISTEN", "")],
        Overrides::default(),
    )
    .unwrap();
    assert_eq!(l.origin("cluster.key"), &Origin::File(FILE.into()));
    assert_eq!(l.origin("listen"), &Origin::Default);
}

#[test]
fn a_typo_in_a_variable_is_refused() {
    let e = layered(
        "",
        &[("SWITCHYARD_LIMITS_MAX_PAYLOD_BYTES", "5")],
        Overrides::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&e, ConfigError::UnknownEnv { var, .. } if var == "SWITCHYARD_LIMITS_MAX_PAYLOD_BYTES")
    );
    assert_eq!(
        e.to_string(),
        "SWITCHYARD_LIMITS_MAX_PAYLOD_BYTES names no configuration key \
         (did you mean SWITCHYARD_LIMITS_MAX_PAYLOAD_BYTES?)"
    );
    // A section's prefix with no key near it, and a top-level name one
    // letter away from a key's.
    for var in [
        "SWITCHYARD_CLUSTER_SECRET",
        "SWITCHYARD_LISTN",
        "SWITCHYARD_DATADIR",
    ] {
        let e = layered("", &[(var, "x")], Overrides::default()).unwrap_err();
        assert!(matches!(e, ConfigError::UnknownEnv { .. }), "{var}: {e}");
    }
    // Arrays of tables come only from the file.
    let e = layered("", &[("SWITCHYARD_PLUGIN_FUEL", "5")], Overrides::default()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("SWITCHYARD_PLUGIN_FUEL: plugin is an array of tables"),
        "{e}"
    );
    assert!(e.to_string().contains("SWITCHYARD_PLUGINS_FUEL"), "{e}");
    let e = layered(
        "",
        &[("SWITCHYARD_RETENTION_TOPICS", "x")],
        Overrides::default(),
    )
    .unwrap_err();
    assert!(matches!(e, ConfigError::EnvFileOnly { .. }), "{e}");
    // The binary's other variables, other programs' and other prefixes
    // are left alone.
    let others = [
        ("SWITCHYARD_URL", "http://x"),
        ("SWITCHYARD_TOKEN", "t"),
        ("SWITCHYARD_LOG", "debug"),
        ("SWITCHYARD_CONFIG", "x.toml"),
        ("SWITCHYARD_CA_FILE", "ca.pem"),
        ("SWITCHYARD_BIN", "target/release/switchyard"),
        ("SWITCHYARD_VENV", "/tmp/venv"),
        ("SWITCHYARD_OPS_ARTIFACTS", "/tmp/artifacts"),
        ("SWITCHYARD_CHROMIUM", "/usr/bin/chromium"),
        ("SWITCHYARD_CHROMEDRIVER", "/usr/bin/chromedriver"),
        ("OTHER_LIMITS_MAX_PAYLOAD_BYTES", "x"),
    ];
    assert!(layered("", &others, Overrides::default()).is_ok());
}

#[test]
fn a_bad_value_names_the_variable_and_the_type() {
    for (var, text, expect) in [
        (
            "SWITCHYARD_LIMITS_MAX_PAYLOAD_BYTES",
            "big",
            "SWITCHYARD_LIMITS_MAX_PAYLOAD_BYTES (key limits.max_payload_bytes): invalid type: \
             string \"big\", expected an integer greater than 0",
        ),
        (
            "SWITCHYARD_LIMITS_MAX_PAYLOAD_BYTES",
            "0",
            "SWITCHYARD_LIMITS_MAX_PAYLOAD_BYTES (key limits.max_payload_bytes): invalid value: \
             integer `0`, expected an integer greater than 0",
        ),
        (
            "SWITCHYARD_LIMITS_MAX_PULL_WAIT_SECS",
            "-1",
            "SWITCHYARD_LIMITS_MAX_PULL_WAIT_SECS (key limits.max_pull_wait_secs): invalid value: \
             integer `-1`, expected an integer of 0 or more",
        ),
        (
            "SWITCHYARD_AUTH_REQUIRE_EXP",
            "maybe",
            "SWITCHYARD_AUTH_REQUIRE_EXP (key auth.require_exp): invalid type: string \"maybe\", \
             expected a boolean",
        ),
        (
            "SWITCHYARD_LISTEN",
            "localhost",
            "SWITCHYARD_LISTEN (key listen): invalid socket address syntax",
        ),
    ] {
        let e = layered("", &[(var, text)], Overrides::default()).unwrap_err();
        assert_eq!(e.to_string(), expect);
    }
}

#[test]
fn a_refused_value_names_its_origin() {
    let refuse = |file: &str, env: &[(&str, &str)]| {
        let l = layered(file, env, Overrides::default()).unwrap();
        NodeConfig::from_layered(&l).unwrap_err().to_string()
    };
    assert_eq!(
        refuse("", &[("SWITCHYARD_LIMITS_MAX_HEADER_BYTES", "100")]),
        "limits.max_header_bytes must be at least 8192 (from SWITCHYARD_LIMITS_MAX_HEADER_BYTES)"
    );
    assert_eq!(
        refuse("[limits]\nmax_header_bytes = 100\n", &[]),
        format!("limits.max_header_bytes must be at least 8192 (from {FILE})")
    );
    // A valid configuration from the environment reaches the components.
    let l = layered(
        "",
        &[("SWITCHYARD_LIMITS_MAX_PAYLOAD_BYTES", "2000")],
        Overrides::default(),
    )
    .unwrap();
    assert_eq!(
        NodeConfig::from_layered(&l).unwrap().router.max_payload,
        2000
    );
}

#[test]
fn show_prints_every_key_with_its_origin_and_no_secret() {
    let file = "[limits]\nmax_payload_bytes = 2000\n\
                [cluster]\nkey = \"the file's cluster key\"\n\
                [[retention.topics]]\npattern = \"logs.>\"\nmax_age_secs = 60\n\
                [[plugin]]\nname = \"p\"\nfile = \"p.wasm\"\nhook = \"route\"\n";
    let env = [
        ("SWITCHYARD_CLUSTER_KEY", "the variable's cluster key"),
        ("SWITCHYARD_SSE_HEARTBEAT_SECS", "9"),
    ];
    let flags = Overrides {
        listen: Some("127.0.0.1:9000".parse().unwrap()),
        ..Default::default()
    };
    let l = layered(file, &env, flags).unwrap();
    let text = l.to_toml().unwrap();
    assert!(!text.contains("cluster key"), "{text}");
    assert!(
        text.contains("# key: set, not shown # SWITCHYARD_CLUSTER_KEY\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("max_payload_bytes = 2000 # {FILE}\n")),
        "{text}"
    );
    assert!(
        text.contains("heartbeat_secs = 9 # SWITCHYARD_SSE_HEARTBEAT_SECS\n"),
        "{text}"
    );
    assert!(
        text.contains("listen = \"127.0.0.1:9000\" # --listen\n"),
        "{text}"
    );
    assert!(
        text.contains("max_batch_bytes = 4194304 # default\n"),
        "{text}"
    );
    assert!(
        text.contains("# gossip_listen: not set # default\n"),
        "{text}"
    );
    assert!(text.contains(&format!("[[plugin]] # {FILE}\n")), "{text}");
    // The output is the configuration, as TOML (the secret left out).
    let back: FileConfig = toml::from_str(&text).unwrap();
    let mut expected = to_table(&l.config).unwrap();
    expected["cluster"].as_table_mut().unwrap().remove("key");
    assert_eq!(to_table(&back).unwrap(), expected);
    // Every key is listed.
    for key in keys() {
        let name = key.rsplit('.').next().unwrap();
        assert!(text.contains(name), "{key}");
    }
    let json = l.to_json().unwrap();
    assert!(!json.to_string().contains("cluster key"));
    assert_eq!(json["cluster"]["key"]["secret"], true);
    assert_eq!(json["cluster"]["key"]["source"], "SWITCHYARD_CLUSTER_KEY");
    assert_eq!(json["limits"]["max_payload_bytes"]["value"], 2000);
    assert_eq!(json["limits"]["max_payload_bytes"]["source"], FILE);
    assert_eq!(json["listen"]["source"], "--listen");
    assert_eq!(
        json["cluster"]["gossip_listen"]["value"],
        serde_json::Value::Null
    );
    assert_eq!(json["plugin"]["value"][0]["name"], "p");
}

/// The table of keys in docs/configuration.md, as the code has them.
fn key_table() -> String {
    let mut out = String::from("| key | environment variable | flag |\n|---|---|---|\n");
    for key in keys() {
        let var = if FILE_ONLY.contains(&key.as_str()) {
            "(file only)".to_owned()
        } else {
            let aliases: Vec<String> = ENV_ALIASES
                .iter()
                .filter(|(_, k)| *k == key)
                .map(|(alias, _)| format!("`{alias}`"))
                .collect();
            match aliases.is_empty() {
                true => format!("`{}`", env_name(&key)),
                false => format!("`{}` (also {})", env_name(&key), aliases.join(", ")),
            }
        };
        let flag = FLAGS
            .iter()
            .find(|(_, k)| *k == key)
            .map_or(String::new(), |(flag, _)| format!("`{flag}`"));
        out.push_str(&format!("| `{key}` | {var} | {flag} |\n"));
    }
    out
}

#[test]
fn the_documentation_lists_every_key() {
    let doc = include_str!("../../../../../docs/configuration.md");
    let table = key_table();
    assert!(
        doc.contains(&format!(
            "<!-- keys: generated by the test the_documentation_lists_every_key -->\n{table}"
        )),
        "docs/configuration.md must hold this table, after its marker comment:\n\n{table}"
    );
}
