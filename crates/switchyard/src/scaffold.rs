//! `switchyard plugin new`: writes a ready-to-build Rust plugin crate for
//! one hook (Cargo.toml, src/lib.rs with a working example and a unit test,
//! README.md, .gitignore).

use std::path::{Path, PathBuf};

use switchyard_plugin_host::Hook;

/// Settings of `plugin new`.
pub struct New<'a> {
    /// Directory to create (or an empty existing one).
    pub dir: &'a Path,
    /// Hook the plugin implements.
    pub hook: Hook,
    /// Crate name; the directory's name when not given.
    pub name: Option<&'a str>,
    /// A local copy of the SDK (`sdk/rust` of a checkout) to depend on by
    /// path; the published version `0.1` otherwise.
    pub sdk_path: Option<&'a Path>,
}

/// What [`new`] wrote.
#[derive(Debug)]
pub struct Written {
    /// The crate name.
    pub name: String,
    /// The files, relative to the directory.
    pub files: Vec<PathBuf>,
    /// The component the release build produces, relative to the directory.
    pub component: PathBuf,
}

/// Whether `name` can be a crate name here: 1 to 64 ASCII letters, digits,
/// `-` or `_`, starting with a letter.
fn valid_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Writes the crate; refuses a directory that exists and is not empty, or
/// a path that is not a directory.
pub fn new(n: &New<'_>) -> anyhow::Result<Written> {
    let name = match n.name {
        Some(name) => name.to_owned(),
        None => n
            .dir
            .file_name()
            .and_then(|s| s.to_str())
            .map(str::to_owned)
            .ok_or_else(|| {
                anyhow::anyhow!("{} has no usable name; give --name", n.dir.display())
            })?,
    };
    if !valid_name(&name) {
        anyhow::bail!(
            "{name:?} is not a valid crate name: 1 to 64 ASCII letters, digits, - or _, \
             starting with a letter (give one with --name)"
        );
    }
    let sdk_dep = match n.sdk_path {
        Some(p) => {
            let abs = std::fs::canonicalize(p)
                .map_err(|e| anyhow::anyhow!("--sdk-path {}: {e}", p.display()))?;
            if !abs.join("Cargo.toml").is_file() {
                anyhow::bail!(
                    "--sdk-path {}: no Cargo.toml there (give the sdk/rust directory of a \
                     Switchyard checkout)",
                    p.display()
                );
            }
            let path = abs
                .to_str()
                .ok_or_else(|| anyhow::anyhow!("--sdk-path {}: not UTF-8", p.display()))?;
            format!(
                "# The Switchyard plugin SDK, from a local copy (--sdk-path). To use the\n\
                 # published crate instead: switchyard-plugin-sdk = \"0.1\"\n\
                 switchyard-plugin-sdk = {{ path = {} }}\n",
                toml::Value::String(path.to_owned())
            )
        }
        None => "# The Switchyard plugin SDK, as published. To build against a Switchyard\n\
                 # checkout instead: switchyard-plugin-sdk = { path = \"<checkout>/sdk/rust\" }\n\
                 # (or `switchyard plugin new --sdk-path <checkout>/sdk/rust`).\n\
                 switchyard-plugin-sdk = \"0.1\"\n"
            .to_owned(),
    };
    match std::fs::read_dir(n.dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                anyhow::bail!("{} exists and is not empty", n.dir.display());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("{}: {e}", n.dir.display()),
    }
    let lib_name = name.replace('-', "_");
    let component = PathBuf::from(format!("target/wasm32-wasip2/release/{lib_name}.wasm"));
    let (source, test_example) = match n.hook {
        Hook::Route => (ROUTE_LIB, ROUTE_TRY),
        Hook::Filter => (FILTER_LIB, FILTER_TRY),
        Hook::Pick => (PICK_LIB, PICK_TRY),
    };
    let fill = |t: &str| {
        t.replace("@TRY@", test_example)
            .replace("@NAME@", &name)
            .replace("@HOOK@", n.hook.as_str())
            .replace("@WASM@", &component.display().to_string())
            .replace("@SDK@", &sdk_dep)
    };
    let files: [(&str, String); 4] = [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("src/lib.rs", fill(source)),
        ("README.md", fill(README)),
        (".gitignore", "/target\n".to_owned()),
    ];
    std::fs::create_dir_all(n.dir.join("src"))
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", n.dir.display()))?;
    for (path, text) in &files {
        let full = n.dir.join(path);
        std::fs::write(&full, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", full.display()))?;
    }
    Ok(Written {
        name,
        files: files.iter().map(|(p, _)| PathBuf::from(p)).collect(),
        component,
    })
}

const CARGO_TOML: &str = r#"[package]
name = "@NAME@"
version = "0.1.0"
edition = "2024"
rust-version = "1.95"
publish = false

# A workspace of its own, so that the crate builds wherever it is placed.
[workspace]

[lib]
# Required: a cdylib built for wasm32-wasip2 is a WebAssembly component.
crate-type = ["cdylib"]

[dependencies]
@SDK@
# Small components: a release build is a few tens of KB with these.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"
"#;

const README: &str = r#"# @NAME@

A Switchyard `@HOOK@` plugin, written with the Rust plugin SDK
(`switchyard-plugin-sdk`, imported as `switchyard_plugin`).

Build the component (once: `rustup target add wasm32-wasip2`):

```sh
cargo build --release --target wasm32-wasip2
```

It is `@WASM@`.

Run the unit tests natively (the SDK serves `log`, `clock`, `kv` and
`metrics` in-process; `switchyard_plugin::testing` reads them back):

```sh
cargo test
```

Try the component without a node, or on what a node stored:

```sh
@TRY@
```

Bind it on a node (replaces a binding of the same name atomically; the
default topic pattern `>` applies it to every topic):

```sh
switchyard plugin push @WASM@ \
    --name @NAME@ --hook @HOOK@ --url http://127.0.0.1:7070
```

See docs/plugins.md in the Switchyard repository for the contract, the
sandbox limits and the error policies.
"#;

const ROUTE_TRY: &str = r#"switchyard plugin test @WASM@ --hook route \
    --config orders --message '{"topic": "orders.eu", "payload": "x"}'
switchyard plugin test @WASM@ --hook route \
    --config orders --replay 'orders.>' --summary --url http://127.0.0.1:7070"#;

const FILTER_TRY: &str = r#"switchyard plugin test @WASM@ --hook filter \
    --config urgent --message '{"topic": "alerts", "payload": "urgent: disk full"}'
switchyard plugin test @WASM@ --hook filter \
    --config urgent --replay 'alerts' --summary --url http://127.0.0.1:7070"#;

const PICK_TRY: &str = r#"switchyard plugin test @WASM@ --hook pick --config eu-1 \
    --message '{"topic": "jobs", "payload": "x"}' \
    --candidates '[{"id": "a", "labels": {"zone": "us-1"}}, {"id": "b", "labels": {"zone": "eu-1"}}]'
switchyard plugin test @WASM@ --hook pick --config eu-1 --candidates @members.json \
    --replay 'jobs' --summary --url http://127.0.0.1:7070"#;

const ROUTE_LIB: &str = r#"//! A `route` plugin: refuses messages without a key on the topics whose
//! name starts with the configured prefix (empty: every topic), and
//! delivers the others unchanged.
//!
//! Configuration: the topic prefix, such as `orders`.
//! Counters: `refused`.

use switchyard_plugin::{Message, Route, RouteDecision, export_route, log, metrics};

/// The plugin state, made once per instance from the configuration.
struct Plugin {
    prefix: String,
}

impl Route for Plugin {
    fn new(config: &str) -> Result<Self, String> {
        let prefix = config.trim();
        if prefix.contains(char::is_whitespace) {
            return Err(format!("prefix {prefix:?} contains whitespace"));
        }
        log::info(&format!(
            "requiring keys on topics starting with {prefix:?}"
        ));
        Ok(Plugin {
            prefix: prefix.to_owned(),
        })
    }

    fn route(&mut self, msg: Message) -> RouteDecision {
        if msg.key.is_none() && msg.topic.starts_with(&self.prefix) {
            metrics::add("refused", 1);
            return RouteDecision::drop_with(format!("messages on {} need a key", msg.topic));
        }
        RouteDecision::Deliver
    }
}

export_route!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_plugin::testing;

    #[test]
    fn refuses_keyless_messages_under_the_prefix() {
        testing::reset();
        let mut p = Plugin::new("orders").unwrap();
        let keyless = Message {
            topic: "orders.eu".into(),
            ..Default::default()
        };
        assert!(matches!(p.route(keyless), RouteDecision::Drop(_)));
        let keyed = Message {
            topic: "orders.eu".into(),
            key: Some("customer-7".into()),
            ..Default::default()
        };
        assert_eq!(p.route(keyed), RouteDecision::Deliver);
        let elsewhere = Message {
            topic: "audit".into(),
            ..Default::default()
        };
        assert_eq!(p.route(elsewhere), RouteDecision::Deliver);
        assert_eq!(testing::metric("refused"), 1);
        assert!(Plugin::new("a b").is_err());
    }
}
"#;

const FILTER_LIB: &str = r#"//! A `filter` plugin: writes to the subscriber only the messages whose
//! payload contains the configured word (empty: every message).
//!
//! Configuration: the word, such as `urgent`. A subscriber may give its
//! own with `filter_config`.
//! Counters: `kept`, `skipped`.

use switchyard_plugin::{Filter, FilterDecision, Message, export_filter, metrics};

/// The plugin state, made once per instance from the configuration.
struct Plugin {
    word: String,
}

impl Filter for Plugin {
    fn new(config: &str) -> Result<Self, String> {
        Ok(Plugin {
            word: config.trim().to_owned(),
        })
    }

    fn filter(&mut self, msg: Message) -> FilterDecision {
        let text = msg.payload_str().unwrap_or("");
        if text.contains(self.word.as_str()) {
            metrics::add("kept", 1);
            FilterDecision::Keep
        } else {
            metrics::add("skipped", 1);
            FilterDecision::Skip
        }
    }
}

export_filter!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_plugin::testing;

    fn msg(payload: &str) -> Message {
        Message {
            topic: "alerts".into(),
            payload: payload.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn keeps_messages_with_the_word() {
        testing::reset();
        let mut p = Plugin::new("urgent").unwrap();
        assert_eq!(p.filter(msg("urgent: disk full")), FilterDecision::Keep);
        assert_eq!(p.filter(msg("all quiet")), FilterDecision::Skip);
        assert_eq!(
            (testing::metric("kept"), testing::metric("skipped")),
            (1, 1)
        );
        let mut all = Plugin::new("").unwrap();
        assert_eq!(all.filter(msg("anything")), FilterDecision::Keep);
    }
}
"#;

const PICK_LIB: &str = r#"//! A `pick` plugin: gives a message to the least loaded member whose
//! `zone` label is the configured zone, or lets the node choose (the member
//! with the fewest unacknowledged messages) when none is in that zone.
//!
//! Configuration: the zone, such as `eu-1`.
//! Counters: `in_zone`, `elsewhere`.

use switchyard_plugin::{Candidate, Message, Pick, export_pick, metrics};

/// The plugin state, made once per instance from the configuration.
struct Plugin {
    zone: String,
}

impl Pick for Plugin {
    fn new(config: &str) -> Result<Self, String> {
        let zone = config.trim();
        if zone.is_empty() {
            return Err("the configuration must name a zone".into());
        }
        Ok(Plugin {
            zone: zone.to_owned(),
        })
    }

    fn pick(&mut self, _msg: Message, candidates: &[Candidate]) -> Option<u32> {
        let best = candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.label("zone") == Some(self.zone.as_str()))
            .min_by_key(|(_, c)| c.inflight)
            .map(|(i, _)| i as u32);
        metrics::add(best.map_or("elsewhere", |_| "in_zone"), 1);
        best
    }
}

export_pick!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_plugin::{Header, testing};

    fn member(id: &str, zone: &str, inflight: u32) -> Candidate {
        Candidate {
            id: id.into(),
            inflight,
            weight: 1,
            labels: vec![Header::new("zone", zone)],
        }
    }

    #[test]
    fn prefers_the_least_loaded_member_of_the_zone() {
        testing::reset();
        let mut p = Plugin::new("eu-1").unwrap();
        let members = [
            member("a", "us-1", 0),
            member("b", "eu-1", 5),
            member("c", "eu-1", 2),
        ];
        assert_eq!(p.pick(Message::default(), &members), Some(2));
        assert_eq!(p.pick(Message::default(), &members[..1]), None);
        assert_eq!(
            (testing::metric("in_zone"), testing::metric("elsewhere")),
            (1, 1)
        );
        assert!(Plugin::new("").is_err());
    }
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_crate_for_each_hook_and_refuses_a_non_empty_directory() {
        let tmp = tempfile::tempdir().unwrap();
        for hook in [Hook::Route, Hook::Filter, Hook::Pick] {
            let dir = tmp.path().join(format!("my-{}", hook.as_str()));
            let w = new(&New {
                dir: &dir,
                hook,
                name: None,
                sdk_path: None,
            })
            .unwrap();
            assert_eq!(w.name, format!("my-{}", hook.as_str()));
            assert_eq!(
                w.component,
                PathBuf::from(format!(
                    "target/wasm32-wasip2/release/my_{}.wasm",
                    hook.as_str()
                ))
            );
            let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
            let parsed: toml::Table = cargo.parse().unwrap();
            assert_eq!(parsed["lib"]["crate-type"][0].as_str(), Some("cdylib"));
            assert_eq!(
                parsed["dependencies"]["switchyard-plugin-sdk"].as_str(),
                Some("0.1")
            );
            let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
            let export = format!("export_{}!(Plugin);", hook.as_str());
            assert!(lib.contains(&export), "{lib}");
            assert!(lib.contains("#[test]"), "{lib}");
            let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
            assert!(readme.contains("cargo build --release --target wasm32-wasip2"));
            assert!(readme.contains("switchyard plugin push"));
            for text in [&cargo, &lib, &readme] {
                for placeholder in ["@NAME@", "@HOOK@", "@WASM@", "@TRY@", "@SDK@"] {
                    assert!(!text.contains(placeholder), "{text}");
                }
            }
            // Not twice.
            let err = new(&New {
                dir: &dir,
                hook,
                name: None,
                sdk_path: None,
            })
            .unwrap_err();
            assert!(err.to_string().contains("not empty"), "{err}");
        }
        // An empty directory is fine; a path to the SDK becomes a path
        // dependency; names are checked.
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let sdk = tmp.path().join("sdk");
        std::fs::create_dir(&sdk).unwrap();
        std::fs::write(sdk.join("Cargo.toml"), "").unwrap();
        new(&New {
            dir: &empty,
            hook: Hook::Route,
            name: Some("router_1"),
            sdk_path: Some(&sdk),
        })
        .unwrap();
        let parsed: toml::Table = std::fs::read_to_string(empty.join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(parsed["package"]["name"].as_str(), Some("router_1"));
        let dep = parsed["dependencies"]["switchyard-plugin-sdk"]["path"]
            .as_str()
            .unwrap();
        assert_eq!(Path::new(dep), sdk.canonicalize().unwrap());
        for bad in ["1st", "a.b", "", "a b"] {
            let err = new(&New {
                dir: &tmp.path().join("x"),
                hook: Hook::Route,
                name: Some(bad),
                sdk_path: None,
            })
            .unwrap_err();
            assert!(err.to_string().contains("crate name"), "{bad}: {err}");
        }
        let err = new(&New {
            dir: &tmp.path().join("y"),
            hook: Hook::Route,
            name: None,
            sdk_path: Some(&tmp.path().join("nowhere")),
        })
        .unwrap_err();
        assert!(err.to_string().contains("--sdk-path"), "{err}");
    }
}
