//! The plugins of the repository's `plugins/` workspace, built for tests
//! and benchmarks that need real components.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository's root directory (the parent of `crates/`): found from
/// the directory of the package under test (cargo sets
/// `CARGO_MANIFEST_DIR` when it runs a test), else from the working
/// directory (a harness such as `scripts/chaos.sh` runs from the
/// repository), so that a build of this crate reused from a checkout
/// elsewhere still finds this checkout; else from where this crate was
/// built.
pub fn repo_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let holding_plugins = |dir: PathBuf| {
            dir.ancestors()
                .find(|d| d.join("plugins/Cargo.toml").is_file())
                .map(Path::to_path_buf)
        };
        std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .and_then(holding_plugins)
            .or_else(|| std::env::current_dir().ok().and_then(holding_plugins))
            .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")))
    })
}

/// The component of the guest plugin crate `name` (`passthrough`,
/// `field_router`, ...: the crate name with `_` for `-`), built from this
/// repository's `plugins/` workspace. Panics when the plugins cannot be
/// built or `name` is not one of them.
pub fn guest_plugin(name: &str) -> Vec<u8> {
    let dir = build_guest_plugins(repo_root()).unwrap_or_else(|e| panic!("{e}"));
    let file = dir.join(format!("{name}.wasm"));
    std::fs::read(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()))
}

/// Builds every crate of `<repo>/plugins` for `wasm32-wasip2` in release
/// mode (once per process; cargo skips what is up to date) and returns the
/// directory holding the `.wasm` files. `repo` is the repository root.
pub fn build_guest_plugins(repo: &Path) -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let workspace = repo.join("plugins");
            let target = workspace.join("target");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let out = Command::new(cargo)
                .args([
                    "build",
                    "--release",
                    "--locked",
                    "--target",
                    "wasm32-wasip2",
                ])
                .arg("--manifest-path")
                .arg(workspace.join("Cargo.toml"))
                .arg("--target-dir")
                .arg(&target)
                // Settings of an enclosing cargo run do not apply to guests.
                .env_remove("CARGO_TARGET_DIR")
                .env_remove("CARGO_BUILD_TARGET")
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .output()
                .map_err(|e| format!("cannot run cargo: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "building the guest plugins failed (is the wasm32-wasip2 target installed? \
                     `rustup target add wasm32-wasip2`):\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(target.join("wasm32-wasip2").join("release"))
        })
        .clone()
}
