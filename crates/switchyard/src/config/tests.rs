//! Validation of the configuration: defaults, precedence, and every refusal.

use super::*;

fn build(toml: &str, over: Overrides) -> Result<NodeConfig, ConfigError> {
    let fc = toml::from_str(toml).map_err(|source| ConfigError::Parse {
        path: "test.toml".into(),
        source: Box::new(source),
    })?;
    NodeConfig::build(fc, over)
}

/// Asserts that `e` refuses a zero for `key` (a `NonZero` field).
fn refuses_zero(e: &ConfigError, key: &str) {
    let detail = std::error::Error::source(e).map(|s| s.to_string());
    let detail = detail.unwrap_or_default();
    assert!(
        matches!(e, ConfigError::Parse { .. })
            && detail.contains("expected a nonzero")
            && detail.contains(key),
        "{e}: {detail}"
    );
}

fn cluster_over(gossip: &str) -> Overrides {
    Overrides {
        gossip_listen: Some(gossip.parse().unwrap()),
        cluster_key: Some("k".repeat(32)),
        // Some of these nodes listen beyond loopback.
        allow_anonymous: true,
        ..Default::default()
    }
}

#[test]
fn defaults_and_precedence() {
    let c = NodeConfig::build(FileConfig::default(), Overrides::default()).unwrap();
    assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(c.router.store.fsync, FsyncMode::Always);
    assert_eq!(c.log_format, LogFormat::Pretty);
    let over = Overrides {
        fsync: Some(FsyncMode::Interval),
        log_format: Some(LogFormat::Pretty),
        ..Default::default()
    };
    let c = build(
        "listen = \"127.0.0.1:9000\"\nlog_format = \"json\"\n[storage]\nfsync = \"never\"\n[[retention.topics]]\npattern = \"logs.>\"\nmax_age_secs = 60\n",
        over,
    )
    .unwrap();
    assert_eq!(c.listen.port(), 9000);
    assert_eq!(c.router.store.fsync, FsyncMode::Interval);
    assert_eq!(c.log_format, LogFormat::Pretty);
    assert_eq!(c.router.store.retention_rules.len(), 1);
    assert!(c.cluster.is_none());
    assert_eq!(c.advertised_http(c.listen).unwrap(), None);
}

#[test]
fn refuses_bad_values() {
    assert!(toml::from_str::<FileConfig>("nonsense = 1").is_err());
    let e = build("[storage]\nfsync = \"sometimes\"", Overrides::default()).unwrap_err();
    assert!(
        matches!(&e, ConfigError::Invalid { key: "storage.fsync", detail } if detail.contains("sometimes")),
        "{e}"
    );
    let e = build("[retention]\nmax_bytes = 0", Overrides::default()).unwrap_err();
    refuses_zero(&e, "max_bytes");
    let e = build(
        "[[retention.topics]]\npattern = \"a..b\"",
        Overrides::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::Invalid {
                key: "retention.topics",
                ..
            }
        ),
        "{e}"
    );
    for bad in ["0", "101"] {
        let e = build(
            &format!("[storage]\nbulk_share_percent = {bad}"),
            Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("storage.bulk_share_percent: {bad} is not a percentage from 1 to 100"),
        );
    }
    let c = build("[storage]\nbulk_share_percent = 100", Overrides::default()).unwrap();
    assert_eq!(c.router.store.bulk_share_percent, 100);
    let e = build("log_format = \"xml\"", Overrides::default()).unwrap_err();
    assert_eq!(e.to_string(), "log_format \"xml\": expected pretty or json");
    let e = build("[limits]\nmax_header_bytes = 100", Overrides::default()).unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::TooSmall {
                key: "limits.max_header_bytes",
                ..
            }
        ),
        "{e}"
    );
    let e = build(
        "[limits]\nmax_payload_bytes = 2000000\nmax_batch_bytes = 1000000",
        Overrides::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::TooSmall {
                key: "limits.max_batch_bytes",
                ..
            }
        ),
        "{e}"
    );
    let e = build(
        "[cors]\nallow_origins = [\"app.example/\"]",
        Overrides::default(),
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("cors.allow_origins: "), "{e}");
}

#[test]
fn refuses_bad_plugin_bindings() {
    let binding = |extra: &str| {
        format!("[[plugin]]\nname = \"p\"\nfile = \"p.wasm\"\nhook = \"route\"\n{extra}")
    };
    assert_eq!(
        build(&binding(""), Overrides::default())
            .unwrap()
            .router
            .plugins
            .bindings
            .len(),
        1
    );
    let e = build(&binding("on_error = \"explode\""), Overrides::default()).unwrap_err();
    assert!(
        matches!(&e, ConfigError::Plugin { name, .. } if name == "p"),
        "{e}"
    );
    let e = build(&binding("fuel = 0"), Overrides::default()).unwrap_err();
    refuses_zero(&e, "fuel");
    let twice = format!("{}{}", binding(""), binding(""));
    let e = build(&twice, Overrides::default()).unwrap_err();
    assert!(
        matches!(&e, ConfigError::PluginBoundTwice(n) if n == "p"),
        "{e}"
    );
    let bad_hook = binding("").replace("route", "reroute");
    assert!(matches!(
        build(&bad_hook, Overrides::default()),
        Err(ConfigError::Plugin { .. })
    ));
}

#[test]
fn refuses_bad_cluster_settings() {
    let e = build(
        "[cluster]\nseeds = [\"10.0.0.1:7946\"]",
        Overrides::default(),
    )
    .unwrap_err();
    assert!(matches!(e, ConfigError::SeedsWithoutGossip), "{e}");
    let over = Overrides {
        gossip_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    };
    assert!(matches!(build("", over), Err(ConfigError::NoClusterKey)));
    let over = Overrides {
        cluster_key: Some("short".into()),
        ..cluster_over("127.0.0.1:0")
    };
    assert!(matches!(build("", over), Err(ConfigError::Cluster(_))));
    let c = build("", cluster_over("127.0.0.1:0")).unwrap();
    assert_eq!(
        c.advertised_http(c.listen).unwrap().as_deref(),
        Some(DEFAULT_LISTEN)
    );
}

#[test]
fn the_announced_http_address_is_checked_before_binding() {
    for bad in [
        "http://10.0.0.1:7070",
        "10.0.0.1",
        "10.0.0.1:7070/x",
        "user@10.0.0.1:7070",
        ":7070",
    ] {
        let toml = format!("[cluster]\nhttp_advertise = \"{bad}\"");
        let e = build(&toml, cluster_over("127.0.0.1:0")).unwrap_err();
        assert!(
            matches!(&e, ConfigError::HttpAdvertise { value } if value == bad),
            "{bad}: {e}"
        );
    }
    for good in ["10.0.0.1:7070", "node-1.example:80", "[::1]:7070"] {
        let toml = format!("[cluster]\nhttp_advertise = \"{good}\"");
        let c = build(&toml, cluster_over("127.0.0.1:0")).unwrap();
        assert_eq!(c.advertised_http(c.listen).unwrap().as_deref(), Some(good));
    }
    // A wildcard listen address: the gossip host with the HTTP port...
    let c = build("listen = \"0.0.0.0:7070\"", cluster_over("10.0.0.5:7946")).unwrap();
    let bound = "0.0.0.0:41234".parse().unwrap();
    assert_eq!(
        c.advertised_http(bound).unwrap().as_deref(),
        Some("10.0.0.5:41234")
    );
    // ... and no address at all when gossip listens on a wildcard too.
    let e = build("listen = \"0.0.0.0:0\"", cluster_over("0.0.0.0:0")).unwrap_err();
    assert!(matches!(e, ConfigError::NoHttpAddress { .. }), "{e}");
    assert!(e.to_string().contains("set http_advertise"), "{e}");
    // With an HTTP address, the wildcard gossip address is refused next.
    let toml = "listen = \"0.0.0.0:0\"\n[cluster]\nhttp_advertise = \"10.0.0.5:7070\"";
    let e = build(toml, cluster_over("0.0.0.0:0")).unwrap_err();
    assert!(matches!(e, ConfigError::NoGossipAddress { .. }), "{e}");
    let toml = "listen = \"0.0.0.0:0\"\n[cluster]\nhttp_advertise = \"10.0.0.5:7070\"\ngossip_advertise = \"10.0.0.5:7946\"";
    assert!(build(toml, cluster_over("0.0.0.0:0")).is_ok());
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let e = NodeConfig::load(Some(&missing), Overrides::default()).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = 5").unwrap();
    let e = NodeConfig::load(Some(&bad), Overrides::default()).unwrap_err();
    assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
    assert!(std::error::Error::source(&e).is_some());
}

#[test]
fn http_hardening_settings() {
    let c = build("", Overrides::default()).unwrap();
    assert_eq!(c.gateway.allowed_hosts, None);
    assert_eq!(c.gateway.max_connections_per_ip, 1024);
    assert_eq!(c.gateway.max_streams_per_connection, 100);
    let c = build(
        "[http]\nallowed_hosts = [\"node.example.com\", \"*.svc.example\", \"10.0.0.5:7070\"]\n[limits]\nmax_connections_per_ip = 8\nmax_peer_connections = 16\nmax_streams_per_connection = 10\nidle_timeout_secs = 30\nbody_read_timeout_secs = 5\nh2_keepalive_interval_secs = 7\nh2_keepalive_timeout_secs = 3\n",
        Overrides::default(),
    )
    .unwrap();
    let g = &c.gateway;
    assert_eq!(g.allowed_hosts.as_ref().unwrap().len(), 3);
    assert_eq!(
        (
            g.max_connections_per_ip,
            g.max_peer_connections,
            g.max_streams_per_connection
        ),
        (8, 16, 10)
    );
    assert_eq!(g.idle_timeout, Duration::from_secs(30));
    assert_eq!(g.body_read_timeout, Duration::from_secs(5));
    assert_eq!(g.h2_keepalive_interval, Duration::from_secs(7));
    assert_eq!(g.h2_keepalive_timeout, Duration::from_secs(3));
    assert_eq!(g.requests_per_sec_per_ip, None);
    let c = build(
        "[limits]\nrequests_per_sec_per_ip = 50\nrequest_burst_per_ip = 200\n",
        Overrides::default(),
    )
    .unwrap();
    assert_eq!(
        (
            c.gateway.requests_per_sec_per_ip,
            c.gateway.request_burst_per_ip
        ),
        (Some(50), Some(200))
    );
    // The flag replaces the file's list.
    let over = Overrides {
        allowed_hosts: vec!["*".into()],
        ..Default::default()
    };
    let c = build("[http]\nallowed_hosts = [\"a.example\"]\n", over).unwrap();
    assert_eq!(c.gateway.allowed_hosts, Some(vec!["*".to_owned()]));
    for bad in [
        "[http]\nallowed_hosts = [\"http://a.example\"]\n",
        "[http]\nallowed_hosts = [\"a.example/x\"]\n",
        "[limits]\nmax_connections_per_ip = 0\n",
        "[limits]\nbody_read_timeout_secs = 0\n",
        "[limits]\nmax_streams_per_connection = 0\n",
        "[limits]\nrequests_per_sec_per_ip = 0\n",
        "[limits]\nrequest_burst_per_ip = 5\n",
    ] {
        assert!(build(bad, Overrides::default()).is_err(), "{bad}");
    }
}

/// A config with an `[auth]` section whose key files are written to `dir`.
fn with_keys(dir: &Path, auth: &str) -> String {
    std::fs::write(dir.join("jwt.secret"), format!("{}\n", "s".repeat(40))).unwrap();
    std::fs::write(dir.join("short.secret"), "short").unwrap();
    std::fs::write(dir.join("not-a-key.pem"), "hello").unwrap();
    format!("[auth]\n{auth}\n")
}

/// Loads `toml` from a file in `dir`; a refusal is returned without the
/// origin `load` adds to it (the file).
fn load_in(dir: &Path, toml: &str, over: Overrides) -> Result<NodeConfig, ConfigError> {
    let path = dir.join("node.toml");
    std::fs::write(&path, toml).unwrap();
    NodeConfig::load(Some(&path), over).map_err(|e| match e {
        ConfigError::Sourced { origin, error } => {
            assert_eq!(origin, path.display().to_string());
            *error
        }
        e => e,
    })
}

#[test]
fn auth_defaults_follow_the_keys() {
    // No keys, loopback: anyone may do anything (the quick start).
    let c = build("", Overrides::default()).unwrap();
    assert!(c.gateway.auth.keys.is_empty());
    assert_eq!(c.gateway.auth.anonymous, Anonymous::All);
    // Keys (relative to the file): anonymous none by default.
    let dir = tempfile::tempdir().unwrap();
    let toml = with_keys(dir.path(), "hs256_secret_file = \"jwt.secret\"");
    let c = load_in(dir.path(), &toml, Overrides::default()).unwrap();
    assert_eq!(c.gateway.auth.keys.len(), 1);
    assert_eq!(c.gateway.auth.anonymous, Anonymous::None);
    let toml = with_keys(
        dir.path(),
        "hs256_secret_file = \"jwt.secret\"\nanonymous = \"subscribe\"\nleeway_secs = 5\nrequire_exp = true\naudience = \"a\"\nissuer = \"i\"\ntoken_cache = 7",
    );
    let c = load_in(dir.path(), &toml, Overrides::default()).unwrap();
    let a = &c.gateway.auth;
    assert_eq!(a.anonymous, Anonymous::Subscribe);
    assert_eq!(a.leeway, Duration::from_secs(5));
    assert!(a.require_exp);
    assert_eq!(
        (a.audience.as_deref(), a.issuer.as_deref()),
        (Some("a"), Some("i"))
    );
    assert_eq!(a.cache_entries, 7);
}

#[test]
fn auth_refusals() {
    let dir = tempfile::tempdir().unwrap();
    for (auth, key, needle) in [
        (
            "hs256_secret_file = \"missing\"",
            "auth.hs256_secret_file",
            "cannot read",
        ),
        (
            "hs256_secret_file = \"short.secret\"",
            "auth.hs256_secret_file",
            "at least 32",
        ),
        (
            "public_key_files = [\"not-a-key.pem\"]",
            "auth.public_key_files",
            "not a PEM public key",
        ),
        ("anonymous = \"none\"", "auth.anonymous", "needs keys"),
        (
            "hs256_secret_file = \"jwt.secret\"\nanonymous = \"some\"",
            "auth.anonymous",
            "expected none",
        ),
    ] {
        let toml = with_keys(dir.path(), auth);
        let e = load_in(dir.path(), &toml, Overrides::default()).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { key: k, detail } if *k == key && detail.contains(needle)),
            "{auth}: {e}"
        );
    }
    let toml = with_keys(dir.path(), "token_cache = 0");
    let e = load_in(dir.path(), &toml, Overrides::default()).unwrap_err();
    refuses_zero(&e, "token_cache");
}

#[test]
fn beyond_loopback_needs_keys_or_consent() {
    let dir = tempfile::tempdir().unwrap();
    for listen in ["0.0.0.0:7070", "10.0.0.5:7070", "[::]:7070"] {
        let toml = format!("listen = \"{listen}\"");
        let e = build(&toml, Overrides::default()).unwrap_err();
        assert!(
            matches!(e, ConfigError::AnonymousBeyondLoopback { .. }),
            "{listen}: {e}"
        );
        assert!(e.to_string().contains("--allow-anonymous"), "{e}");
        let consent = Overrides {
            allow_anonymous: true,
            ..Default::default()
        };
        assert!(build(&toml, consent).is_ok(), "{listen}");
        assert!(
            build(
                &format!("{toml}\n[auth]\nallow_anonymous = true"),
                Overrides::default()
            )
            .is_ok()
        );
        // Keys make it fine, unless anonymous access is still "all".
        let toml = format!(
            "listen = \"{listen}\"\n{}",
            with_keys(dir.path(), "hs256_secret_file = \"jwt.secret\"")
        );
        assert!(
            load_in(dir.path(), &toml, Overrides::default()).is_ok(),
            "{listen}"
        );
        let all = format!("{toml}anonymous = \"all\"\n");
        assert!(
            load_in(dir.path(), &all, Overrides::default()).is_err(),
            "{listen}"
        );
    }
    for listen in ["127.0.0.1:7070", "127.0.0.2:7070", "[::1]:7070"] {
        assert!(
            build(&format!("listen = \"{listen}\""), Overrides::default()).is_ok(),
            "{listen}"
        );
    }
}

#[test]
fn tls_files_go_together() {
    for (toml, over, expect) in [
        (
            "[tls]\ncert_file = \"c.pem\"\n",
            Overrides::default(),
            "go together",
        ),
        (
            "",
            Overrides {
                tls_key: Some("k.pem".into()),
                ..Default::default()
            },
            "go together",
        ),
        (
            "[tls]\nca_file = \"ca.pem\"\n",
            Overrides::default(),
            "needs cert_file",
        ),
        (
            "[tls]\ncert_file = \"/nonexistent/c.pem\"\nkey_file = \"/nonexistent/k.pem\"\n",
            Overrides::default(),
            "cannot read /nonexistent/c.pem",
        ),
    ] {
        let e = build(toml, over).unwrap_err();
        assert!(matches!(e, ConfigError::Tls(_)), "{e}");
        assert!(e.to_string().contains(expect), "{e}");
    }
    let c = build("[tls]\npoll_interval_secs = 9\n", Overrides::default()).unwrap();
    assert!(c.gateway.tls.is_none());
    let e = build("[tls]\npoll_interval_secs = 0\n", Overrides::default()).unwrap_err();
    refuses_zero(&e, "poll_interval_secs");
}
