//! `plugin new --lang js|python`: for each hook, the project the CLI writes
//! passes its own test (`node --test`, `python3 -m unittest`), builds into
//! a component with its pinned toolchain, and decides in `plugin test` as
//! the Rust scaffold's example for that hook does.
//!
//! The toolchains are installed as scripts/build-guest-js.sh and
//! scripts/build-guest-python.sh install them, into the same cache
//! directories (`~/.cache/switchyard/guest-js`, `.../guest-python`, or under
//! `SWITCHYARD_GUEST_CACHE`), so the examples' build and these tests share
//! one installation. A toolchain that cannot be installed fails the test.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};
use switchyard::scaffold::{COMPONENTIZE_JS_VERSION, COMPONENTIZE_PY_VERSION};

use crate::support::BIN;

/// Runs the CLI; returns success, stdout, stderr.
fn run_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("SWITCHYARD_URL", "http://127.0.0.1:9")
        .output()
        .expect("run the CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `cmd`; fails the test with its output unless it succeeds. Returns
/// its standard output and standard error, joined.
fn run(cmd: &mut Command, what: &str) -> String {
    let started = Instant::now();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {:?}: {e}", cmd.get_program()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    eprintln!("{what}: {:?}", started.elapsed());
    text
}

/// Fails the test, loudly, when a toolchain cannot be installed.
fn install(cmd: &mut Command, what: &str) {
    eprintln!("installing {what}");
    let status = cmd.status().unwrap_or_else(|e| {
        panic!(
            "\n\n*** cannot install {what}: {:?} does not run ({e}). These tests need \
             Node.js with npm and Python 3 with venv. ***\n",
            cmd.get_program()
        )
    });
    assert!(
        status.success(),
        "\n\n*** installing {what} failed (see its output above). These tests need the \
         npm registry and PyPI. ***\n"
    );
}

/// The build scripts' cache directory.
fn guest_cache() -> PathBuf {
    match std::env::var_os("SWITCHYARD_GUEST_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/switchyard")
        }
    }
}

/// Installs a guest toolchain with its build script (`--install-only`),
/// which takes a lock, so the guest-language tests that run at the same
/// time never install into the same directory at once.
fn install_with(script: &str, what: &str) {
    let repo = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    install(
        Command::new("bash")
            .arg(repo.join("scripts").join(script))
            .arg("--install-only"),
        what,
    );
}

/// componentize-js, installed from the npm registry by
/// scripts/build-guest-js.sh when it is missing; its `node_modules`.
fn componentize_js() -> PathBuf {
    install_with(
        "build-guest-js.sh",
        &format!("@bytecodealliance/componentize-js {COMPONENTIZE_JS_VERSION}"),
    );
    let cache = guest_cache().join(format!(
        "guest-js/componentize-js-{COMPONENTIZE_JS_VERSION}"
    ));
    assert!(
        cache
            .join("node_modules/@bytecodealliance/componentize-js/package.json")
            .is_file(),
        "scripts/build-guest-js.sh did not install into {}",
        cache.display()
    );
    cache.join("node_modules")
}

/// componentize-py, installed from PyPI into a virtual environment by
/// scripts/build-guest-python.sh when it is missing; the environment.
fn componentize_py() -> PathBuf {
    install_with(
        "build-guest-python.sh",
        &format!("componentize-py {COMPONENTIZE_PY_VERSION}"),
    );
    let venv = guest_cache().join(format!("guest-python/venv-{COMPONENTIZE_PY_VERSION}"));
    assert!(
        venv.join("bin/componentize-py").is_file(),
        "scripts/build-guest-python.sh did not install into {}",
        venv.display()
    );
    venv
}

/// One hook's check: the configuration, the messages (JSON lines), the
/// pick candidates, and the output lines of `plugin test` (without the
/// call times).
struct Case {
    hook: &'static str,
    config: &'static str,
    messages: &'static str,
    candidates: Option<&'static str>,
    expected: Vec<Value>,
}

/// The Rust scaffold's examples, as tried in its README and in
/// `plugin_new_scaffolds_a_crate_that_builds_and_runs`, both ways.
fn cases() -> Vec<Case> {
    vec![
        Case {
            hook: "route",
            config: "orders",
            messages: "{\"topic\": \"orders.eu\", \"payload\": \"x\"}\n\
                       {\"topic\": \"orders.eu\", \"key\": \"customer-7\"}",
            candidates: None,
            expected: vec![
                json!({"decision": "drop", "reason": "messages on orders.eu need a key"}),
                json!({"decision": "deliver"}),
                json!({"counters": {"refused": 1}}),
            ],
        },
        Case {
            hook: "filter",
            config: "urgent",
            messages: "{\"topic\": \"alerts\", \"payload\": \"urgent: disk full\"}\n\
                       {\"topic\": \"alerts\", \"payload\": \"all quiet\"}",
            candidates: None,
            expected: vec![
                json!({"decision": "keep"}),
                json!({"decision": "skip"}),
                json!({"counters": {"kept": 1, "skipped": 1}}),
            ],
        },
        Case {
            hook: "pick",
            config: "eu-1",
            messages: r#"{"topic": "jobs"}"#,
            candidates: Some(
                r#"[{"id": "a", "labels": {"zone": "us-1"}}, {"id": "b", "labels": {"zone": "eu-1"}}]"#,
            ),
            expected: vec![
                json!({"decision": "pick", "index": 1, "id": "b"}),
                json!({"counters": {"in_zone": 1}}),
            ],
        },
    ]
}

/// Runs `plugin test` on a component; returns its output lines as JSON,
/// call times removed.
fn plugin_test(component: &Path, case: &Case) -> Vec<Value> {
    let started = Instant::now();
    let mut args = vec![
        "plugin",
        "test",
        component.to_str().unwrap(),
        "--hook",
        case.hook,
        "--config",
        case.config,
        "--message",
        case.messages,
    ];
    if let Some(c) = case.candidates {
        args.extend(["--candidates", c]);
    }
    let (ok, out, err) = run_cli(&args);
    assert!(ok, "plugin test {}:\n{out}{err}", component.display());
    eprintln!(
        "plugin test {}: {:?}",
        component.display(),
        started.elapsed()
    );
    out.lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("micros");
            v
        })
        .collect()
}

/// `plugin new` for one language and hook; checks what it prints and
/// returns the project directory and its component.
fn scaffold(root: &Path, lang: &str, title: &str, next: &str, hook: &str) -> (PathBuf, PathBuf) {
    let name = format!("{lang}-{hook}");
    let dir = root.join(&name);
    let (ok, out, err) = run_cli(&[
        "plugin",
        "new",
        dir.to_str().unwrap(),
        "--hook",
        hook,
        "--lang",
        lang,
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.starts_with(&format!("created {name} ({hook} plugin in {title}) in ")),
        "{out}"
    );
    assert!(
        out.contains(&format!("next: cd {} && {next}\n", dir.display())),
        "{out}"
    );
    let component = PathBuf::from(format!("dist/{name}.wasm"));
    assert!(
        out.contains(&format!("the component: {};", component.display())),
        "{out}"
    );
    assert!(dir.join("wit/plugin.wit").is_file());
    (dir, component)
}

/// Not over an existing project.
fn refuses_again(dir: &Path, lang: &str, hook: &str) {
    let (ok, _, err) = run_cli(&[
        "plugin",
        "new",
        dir.to_str().unwrap(),
        "--hook",
        hook,
        "--lang",
        lang,
    ]);
    assert!(!ok && err.contains("not empty"), "{err}");
}

/// A configuration the example's `init` rejects fails `plugin test`, with
/// the plugin's message: the error result crosses from the guest language.
fn init_rejects(component: &Path) {
    let (ok, out, err) = run_cli(&[
        "plugin",
        "test",
        component.to_str().unwrap(),
        "--hook",
        "pick",
        "--config",
        " ",
        "--message",
        r#"{"topic": "jobs"}"#,
        "--candidates",
        "[]",
    ]);
    assert!(
        !ok && err.contains("the configuration must name a zone"),
        "{out}{err}"
    );
}

/// The number in `marker N` in a test runner's output.
fn count_after(text: &str, marker: &str) -> u64 {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in:\n{text}"));
    text[at + marker.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count after {marker:?} in:\n{text}"))
}

/// What a scaffolded project of `lang` in `dir` built (its `component`,
/// relative to `dir`) decides what `case` expects; a `pick` component's
/// `init` refuses a bad configuration; and `plugin new` will not write over
/// the project.
fn built_project_behaves(dir: &Path, component: &Path, case: &Case, lang: &str) {
    let component = dir.join(component);
    assert!(component.is_file(), "{}", component.display());
    assert_eq!(
        plugin_test(&component, case),
        case.expected,
        "{}",
        case.hook
    );
    if case.hook == "pick" {
        init_rejects(&component);
    }
    refuses_again(dir, lang, case.hook);
}

#[test]
fn plugin_new_javascript_projects_build_pass_their_tests_and_run() {
    let modules = componentize_js();
    let root = tempfile::tempdir().unwrap();
    for case in cases() {
        let hook = case.hook;
        let (dir, component) = scaffold(
            root.path(),
            "js",
            "JavaScript",
            "npm install && npm test && npm run build",
            hook,
        );
        // What `npm install` would put there, from the shared installation.
        std::os::unix::fs::symlink(&modules, dir.join("node_modules")).unwrap();
        let tests = run(
            Command::new("node")
                .args(["--test", "--test-reporter=tap"])
                .current_dir(&dir),
            &format!("node --test ({hook})"),
        );
        assert!(count_after(&tests, "# pass ") >= 1, "{tests}");
        assert_eq!(count_after(&tests, "# fail "), 0, "{tests}");
        run(
            Command::new("npm").args(["run", "build"]).current_dir(&dir),
            &format!("npm run build ({hook})"),
        );
        built_project_behaves(&dir, &component, &case, "js");
    }
    // The SDK path is for Rust crates.
    let dir = root.path().join("with-sdk");
    let (ok, _, err) = run_cli(&[
        "plugin",
        "new",
        dir.to_str().unwrap(),
        "--hook",
        "route",
        "--lang",
        "js",
        "--sdk-path",
        root.path().to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("--sdk-path is for Rust plugins only"),
        "{err}"
    );
    assert!(!dir.exists());
}

#[test]
fn plugin_new_python_projects_build_pass_their_tests_and_run() {
    let venv = componentize_py();
    let root = tempfile::tempdir().unwrap();
    for case in cases() {
        let hook = case.hook;
        let (dir, component) = scaffold(
            root.path(),
            "python",
            "Python",
            "python3 -m unittest && sh build.sh",
            hook,
        );
        let tests = run(
            Command::new("python3")
                .args(["-m", "unittest"])
                .current_dir(&dir)
                .env_remove("PYTHONPATH"),
            &format!("python3 -m unittest ({hook})"),
        );
        assert!(count_after(&tests, "Ran ") >= 1, "{tests}");
        assert!(tests.trim_end().ends_with("OK"), "{tests}");
        run(
            Command::new("sh")
                .arg("build.sh")
                .current_dir(&dir)
                .env("COMPONENTIZE_PY_VENV", OsStr::new(&venv)),
            &format!("sh build.sh ({hook})"),
        );
        built_project_behaves(&dir, &component, &case, "python");
    }
}
