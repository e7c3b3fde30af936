//! `switchyard plugin new`: writes a ready-to-build plugin project for one
//! hook. In Rust (the default): a crate with Cargo.toml, src/lib.rs with a
//! working example and a unit test, README.md, .gitignore. In JavaScript or
//! Python: the example's component module, its decisions in a module of
//! their own with a test that runs without the component runtime, a build
//! script for componentize-js or componentize-py, a copy of the WIT
//! contract, README.md, .gitignore.

use std::path::{Path, PathBuf};

use switchyard_plugin_host::Hook;

/// The language of a new plugin project.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// A crate using the Rust SDK.
    Rust,
    /// A JavaScript module built with componentize-js.
    Js,
    /// A Python module built with componentize-py.
    Python,
}

impl Lang {
    /// The language's name in prose.
    pub fn title(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Js => "JavaScript",
            Lang::Python => "Python",
        }
    }
}

/// Settings of `plugin new`.
pub struct New<'a> {
    /// Directory to create (or an empty existing one).
    pub dir: &'a Path,
    /// Hook the plugin implements.
    pub hook: Hook,
    /// Language of the project.
    pub lang: Lang,
    /// Project name (the crate's, the npm package's, the component file's);
    /// the directory's name when not given.
    pub name: Option<&'a str>,
    /// Rust only: a local copy of the SDK (`sdk/rust` of a checkout) to
    /// depend on by path; the published version `0.1` otherwise.
    pub sdk_path: Option<&'a Path>,
}

/// What [`new`] wrote.
#[derive(Debug)]
pub struct Written {
    /// The project name.
    pub name: String,
    /// The files, relative to the directory.
    pub files: Vec<PathBuf>,
    /// The component the build produces, relative to the directory.
    pub component: PathBuf,
    /// The shell commands, run in the directory, that test the project and
    /// build the component.
    pub next: &'static str,
}

/// The componentize-js version JavaScript projects pin (as
/// scripts/build-guest-js.sh does for the examples).
pub const COMPONENTIZE_JS_VERSION: &str = "0.23.0";

/// The componentize-py version Python projects pin (as
/// scripts/build-guest-python.sh does for the examples).
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

/// The WIT contract (sdk/wit), copied into JavaScript and Python projects:
/// their build tools read it.
const WIT: &[(&str, &str)] = &[(
    "wit/plugin.wit",
    include_str!("../../../sdk/wit/plugin.wit"),
)];

/// Whether `name` can be a project name here: 1 to 64 ASCII letters,
/// digits, `-` or `_`, starting with a letter.
fn valid_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What a language writes: the files (path relative to the directory,
/// text), the component and the next commands.
struct Project {
    files: Vec<(&'static str, String)>,
    component: PathBuf,
    next: &'static str,
}

/// Replaces each placeholder by its value, in order.
fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    vars.iter()
        .fold(template.to_owned(), |t, (k, v)| t.replace(k, v))
}

/// Writes the project; refuses a directory that exists and is not empty,
/// or a path that is not a directory.
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
        let what = match n.lang {
            Lang::Rust => "crate",
            Lang::Js | Lang::Python => "project",
        };
        anyhow::bail!(
            "{name:?} is not a valid {what} name: 1 to 64 ASCII letters, digits, - or _, \
             starting with a letter (give one with --name)"
        );
    }
    let project = match n.lang {
        Lang::Rust => rust(&name, n.hook, n.sdk_path)?,
        Lang::Js | Lang::Python if n.sdk_path.is_some() => anyhow::bail!(
            "--sdk-path is for Rust plugins only: a {} project carries its own copy of the \
             WIT contract",
            n.lang.title()
        ),
        Lang::Js => js(&name, n.hook),
        Lang::Python => python(&name, n.hook),
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
    std::fs::create_dir_all(n.dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", n.dir.display()))?;
    for (path, text) in &project.files {
        let full = n.dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&full, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", full.display()))?;
        if path.ends_with(".sh") {
            make_executable(&full)?;
        }
    }
    Ok(Written {
        name,
        files: project
            .files
            .iter()
            .map(|(p, _)| PathBuf::from(p))
            .collect(),
        component: project.component,
        next: project.next,
    })
}

/// Adds the execute bits to a written script.
#[cfg(unix)]
fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut perm = std::fs::metadata(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        .permissions();
    perm.set_mode(perm.mode() | 0o111);
    std::fs::set_permissions(path, perm).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_: &Path) -> anyhow::Result<()> {
    Ok(())
}

/// The `plugin test` commands of the README for a hook (`@WASM@` is the
/// component).
fn try_commands(hook: Hook) -> &'static str {
    match hook {
        Hook::Route => ROUTE_TRY,
        Hook::Filter => FILTER_TRY,
        Hook::Pick => PICK_TRY,
    }
}

/// A Rust crate on the SDK.
fn rust(name: &str, hook: Hook, sdk_path: Option<&Path>) -> anyhow::Result<Project> {
    let sdk_dep = match sdk_path {
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
    let lib_name = name.replace('-', "_");
    let component = PathBuf::from(format!("target/wasm32-wasip2/release/{lib_name}.wasm"));
    let source = match hook {
        Hook::Route => ROUTE_LIB,
        Hook::Filter => FILTER_LIB,
        Hook::Pick => PICK_LIB,
    };
    let wasm = component.display().to_string();
    let vars = [
        ("@TRY@", try_commands(hook)),
        ("@NAME@", name),
        ("@HOOK@", hook.as_str()),
        ("@WASM@", &wasm),
        ("@SDK@", &sdk_dep),
    ];
    Ok(Project {
        files: vec![
            ("Cargo.toml", fill(CARGO_TOML, &vars)),
            ("src/lib.rs", fill(source, &vars)),
            ("README.md", fill(README, &vars)),
            (".gitignore", "/target\n".to_owned()),
        ],
        component,
        next: "cargo test && cargo build --release --target wasm32-wasip2",
    })
}

/// The placeholders of the JavaScript and Python templates.
fn guest_vars<'a>(
    name: &'a str,
    package: &'a str,
    hook: Hook,
    wasm: &'a str,
    world: &'a str,
) -> [(&'a str, &'a str); 9] {
    [
        ("@TRY@", try_commands(hook)),
        ("@NAME@", name),
        ("@PACKAGE@", package),
        ("@HOOK@", hook.as_str()),
        ("@WORLD@", world),
        (
            "@CLASS@",
            match hook {
                Hook::Route => "Route",
                Hook::Filter => "Filter",
                Hook::Pick => "Pick",
            },
        ),
        ("@WASM@", wasm),
        ("@COMPONENTIZE_JS@", COMPONENTIZE_JS_VERSION),
        ("@COMPONENTIZE_PY@", COMPONENTIZE_PY_VERSION),
    ]
}

/// A JavaScript project for componentize-js.
fn js(name: &str, hook: Hook) -> Project {
    let (app, logic, test) = match hook {
        Hook::Route => (
            include_str!("../templates/js/route/app.js"),
            include_str!("../templates/js/route/logic.js"),
            include_str!("../templates/js/route/logic.test.js"),
        ),
        Hook::Filter => (
            include_str!("../templates/js/filter/app.js"),
            include_str!("../templates/js/filter/logic.js"),
            include_str!("../templates/js/filter/logic.test.js"),
        ),
        Hook::Pick => (
            include_str!("../templates/js/pick/app.js"),
            include_str!("../templates/js/pick/logic.js"),
            include_str!("../templates/js/pick/logic.test.js"),
        ),
    };
    let component = PathBuf::from(format!("dist/{name}.wasm"));
    let wasm = component.display().to_string();
    let world = format!("{}-plugin", hook.as_str());
    // npm package names are lowercase.
    let package = name.to_ascii_lowercase();
    let vars = guest_vars(name, &package, hook, &wasm, &world);
    let mut files = vec![
        (
            "package.json",
            fill(include_str!("../templates/js/package.json"), &vars),
        ),
        (
            "build.mjs",
            fill(include_str!("../templates/js/build.mjs"), &vars),
        ),
        ("app.js", app.to_owned()),
        ("logic.js", logic.to_owned()),
        ("logic.test.js", test.to_owned()),
    ];
    files.extend(WIT.iter().map(|(p, t)| (*p, (*t).to_owned())));
    files.push((
        "README.md",
        fill(include_str!("../templates/js/README.md"), &vars),
    ));
    files.push((".gitignore", "/node_modules\n/dist\n".to_owned()));
    Project {
        files,
        component,
        next: "npm install && npm test && npm run build",
    }
}

/// A Python project for componentize-py.
fn python(name: &str, hook: Hook) -> Project {
    let (app, logic, test) = match hook {
        Hook::Route => (
            include_str!("../templates/python/route/app.py"),
            include_str!("../templates/python/route/logic.py"),
            include_str!("../templates/python/route/test_logic.py"),
        ),
        Hook::Filter => (
            include_str!("../templates/python/filter/app.py"),
            include_str!("../templates/python/filter/logic.py"),
            include_str!("../templates/python/filter/test_logic.py"),
        ),
        Hook::Pick => (
            include_str!("../templates/python/pick/app.py"),
            include_str!("../templates/python/pick/logic.py"),
            include_str!("../templates/python/pick/test_logic.py"),
        ),
    };
    let component = PathBuf::from(format!("dist/{name}.wasm"));
    let wasm = component.display().to_string();
    let world = format!("{}-plugin", hook.as_str());
    let vars = guest_vars(name, name, hook, &wasm, &world);
    let mut files = vec![
        ("app.py", app.to_owned()),
        ("logic.py", logic.to_owned()),
        ("test_logic.py", test.to_owned()),
        (
            "build.sh",
            fill(include_str!("../templates/python/build.sh"), &vars),
        ),
    ];
    files.extend(WIT.iter().map(|(p, t)| (*p, (*t).to_owned())));
    files.push((
        "README.md",
        fill(include_str!("../templates/python/README.md"), &vars),
    ));
    files.push((".gitignore", "/.venv\n/dist\n__pycache__/\n".to_owned()));
    Project {
        files,
        component,
        next: "python3 -m unittest && sh build.sh",
    }
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
                lang: Lang::Rust,
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
                lang: Lang::Rust,
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
            lang: Lang::Rust,
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
                lang: Lang::Rust,
                name: Some(bad),
                sdk_path: None,
            })
            .unwrap_err();
            assert!(err.to_string().contains("crate name"), "{bad}: {err}");
        }
        let err = new(&New {
            dir: &tmp.path().join("y"),
            hook: Hook::Route,
            lang: Lang::Rust,
            name: None,
            sdk_path: Some(&tmp.path().join("nowhere")),
        })
        .unwrap_err();
        assert!(err.to_string().contains("--sdk-path"), "{err}");
    }

    /// The files of a JavaScript or Python project, in the order written.
    fn guest_files(lang: Lang) -> Vec<PathBuf> {
        let names: &[&str] = match lang {
            Lang::Js => &[
                "package.json",
                "build.mjs",
                "app.js",
                "logic.js",
                "logic.test.js",
                "wit/plugin.wit",
                "README.md",
                ".gitignore",
            ],
            Lang::Python => &[
                "app.py",
                "logic.py",
                "test_logic.py",
                "build.sh",
                "wit/plugin.wit",
                "README.md",
                ".gitignore",
            ],
            Lang::Rust => unreachable!(),
        };
        names.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn writes_a_javascript_or_python_project_for_each_hook() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        let contract = std::fs::read_to_string(repo.join("sdk/wit/plugin.wit")).unwrap();
        for lang in [Lang::Js, Lang::Python] {
            for hook in [Hook::Route, Hook::Filter, Hook::Pick] {
                let name = format!("My-{}", hook.as_str());
                let dir = tmp.path().join(format!("{lang:?}-{}", hook.as_str()));
                let w = new(&New {
                    dir: &dir,
                    hook,
                    lang,
                    name: Some(&name),
                    sdk_path: None,
                })
                .unwrap();
                assert_eq!(w.name, name);
                assert_eq!(w.files, guest_files(lang));
                assert_eq!(w.component, PathBuf::from(format!("dist/{name}.wasm")));
                // Exactly these files, each filled in.
                let mut on_disk = Vec::new();
                let mut stack = vec![dir.clone()];
                while let Some(d) = stack.pop() {
                    for e in std::fs::read_dir(d).unwrap() {
                        let path = e.unwrap().path();
                        if path.is_dir() {
                            stack.push(path);
                        } else {
                            on_disk.push(path.strip_prefix(&dir).unwrap().to_owned());
                        }
                    }
                }
                on_disk.sort();
                let mut listed = w.files.clone();
                listed.sort();
                assert_eq!(on_disk, listed);
                for f in &w.files {
                    let text = std::fs::read_to_string(dir.join(f)).unwrap();
                    for placeholder in [
                        "@NAME@",
                        "@PACKAGE@",
                        "@HOOK@",
                        "@WORLD@",
                        "@CLASS@",
                        "@WASM@",
                        "@TRY@",
                        "@COMPONENTIZE_JS@",
                        "@COMPONENTIZE_PY@",
                    ] {
                        assert!(!text.contains(placeholder), "{}: {text}", f.display());
                    }
                }
                // The contract, as the node knows it.
                assert_eq!(
                    std::fs::read_to_string(dir.join("wit/plugin.wit")).unwrap(),
                    contract
                );
                let world = format!("{}-plugin", hook.as_str());
                let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
                let wasm = format!("dist/{name}.wasm");
                assert!(
                    readme.contains(&format!(
                        "switchyard plugin test {wasm} --hook {}",
                        hook.as_str()
                    )),
                    "{readme}"
                );
                assert!(readme.contains("switchyard plugin push"), "{readme}");
                match lang {
                    Lang::Js => {
                        let package: serde_json::Value = serde_json::from_str(
                            &std::fs::read_to_string(dir.join("package.json")).unwrap(),
                        )
                        .unwrap();
                        assert_eq!(package["name"], name.to_ascii_lowercase());
                        assert_eq!(package["type"], "module");
                        assert_eq!(package["scripts"]["test"], "node --test");
                        assert_eq!(package["scripts"]["build"], "node build.mjs");
                        assert_eq!(
                            package["devDependencies"]["@bytecodealliance/componentize-js"],
                            COMPONENTIZE_JS_VERSION
                        );
                        let build = std::fs::read_to_string(dir.join("build.mjs")).unwrap();
                        assert!(build.contains(&format!("worldName: '{world}'")), "{build}");
                        assert!(build.contains("disableFeatures: ['http', 'fetch-event']"));
                        assert!(build.contains(&format!("here('{wasm}')")), "{build}");
                        let app = std::fs::read_to_string(dir.join("app.js")).unwrap();
                        assert!(app.contains(&format!("export const {} = {{", hook.as_str())));
                        assert!(app.contains("from './logic.js'"), "{app}");
                        // The test imports the logic, not the component.
                        let test = std::fs::read_to_string(dir.join("logic.test.js")).unwrap();
                        assert!(test.contains("from './logic.js'") && !test.contains("app.js"));
                        assert!(
                            !std::fs::read_to_string(dir.join("logic.js"))
                                .unwrap()
                                .contains("switchyard:plugin")
                        );
                    }
                    Lang::Python => {
                        let build = std::fs::read_to_string(dir.join("build.sh")).unwrap();
                        assert!(
                            build.contains(&format!("VERSION={COMPONENTIZE_PY_VERSION}\n")),
                            "{build}"
                        );
                        assert!(
                            build.contains(&format!("-w {world} componentize -p . app -o {wasm}")),
                            "{build}"
                        );
                        #[cfg(unix)]
                        {
                            use std::os::unix::fs::PermissionsExt;
                            let mode = std::fs::metadata(dir.join("build.sh"))
                                .unwrap()
                                .permissions()
                                .mode();
                            assert_eq!(mode & 0o111, 0o111, "{mode:o}");
                        }
                        let app = std::fs::read_to_string(dir.join("app.py")).unwrap();
                        let class = format!(
                            "{}{}",
                            hook.as_str()[..1].to_uppercase(),
                            &hook.as_str()[1..]
                        );
                        assert!(
                            app.contains(&format!("class {class}(exports.{class}):")),
                            "{app}"
                        );
                        assert!(app.contains("import logic"), "{app}");
                        let logic = std::fs::read_to_string(dir.join("logic.py")).unwrap();
                        assert!(!logic.contains("wit_world") && !logic.contains("componentize_py"));
                        let test = std::fs::read_to_string(dir.join("test_logic.py")).unwrap();
                        assert!(test.contains("import logic") && !test.contains("import app"));
                    }
                    Lang::Rust => unreachable!(),
                }
                // Not twice.
                let err = new(&New {
                    dir: &dir,
                    hook,
                    lang,
                    name: Some(&name),
                    sdk_path: None,
                })
                .unwrap_err();
                assert!(err.to_string().contains("not empty"), "{err}");
            }
            // No SDK path, and names are checked.
            let err = new(&New {
                dir: &tmp.path().join("with-sdk"),
                hook: Hook::Route,
                lang,
                name: None,
                sdk_path: Some(tmp.path()),
            })
            .unwrap_err();
            assert!(err.to_string().contains("--sdk-path is for Rust"), "{err}");
            assert!(!tmp.path().join("with-sdk").exists());
            let err = new(&New {
                dir: &tmp.path().join("x"),
                hook: Hook::Route,
                lang,
                name: Some("a.b"),
                sdk_path: None,
            })
            .unwrap_err();
            assert!(err.to_string().contains("project name"), "{err}");
        }
    }

    /// The projects pin the toolchain versions the repository's build
    /// scripts install for the examples.
    #[test]
    fn pinned_toolchains_are_the_build_scripts_ones() {
        let repo = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        for (script, version) in [
            ("build-guest-js.sh", COMPONENTIZE_JS_VERSION),
            ("build-guest-python.sh", COMPONENTIZE_PY_VERSION),
        ] {
            let text = std::fs::read_to_string(repo.join("scripts").join(script)).unwrap();
            assert!(
                text.lines().any(|l| l == format!("VERSION={version}")),
                "scripts/{script} pins another version than {version}"
            );
        }
    }

    /// The embedded copy of the contract lists every file of sdk/wit.
    #[test]
    fn the_embedded_wit_is_all_of_sdk_wit() {
        let repo = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        let mut on_disk: Vec<String> = std::fs::read_dir(repo.join("sdk/wit"))
            .unwrap()
            .map(|e| format!("wit/{}", e.unwrap().file_name().into_string().unwrap()))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = WIT.iter().map(|(p, _)| (*p).to_owned()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk, "add the file to WIT in scaffold.rs");
    }
}
