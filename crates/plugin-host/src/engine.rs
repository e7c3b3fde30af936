//! The wasmtime engine, the linker with the host imports, and compiled
//! plugins.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings::{filter, pick, route};
use crate::budget::MemoryBudget;
use crate::executor::Executor;
use crate::host::HostState;
use crate::{Hook, PluginError};

/// Compilations that may run at once. A compile worker past the timeout
/// is killed; a compilation on a thread (no worker configured) counts
/// until it ends, since wasmtime cannot interrupt one.
pub const MAX_COMPILES: usize = 2;

/// Engine settings, shared by every plugin of a node.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Where compiled artifacts are kept across restarts (`None`: memory only).
    pub cache_dir: Option<PathBuf>,
    /// The largest memory cap a binding may ask for (default 256 MiB).
    pub max_memory_bytes: usize,
    /// Use wasmtime's pooling allocator with room for this many live
    /// instances (0: allocate on demand). Pooling makes the rebuild after a
    /// failed call about a third cheaper; reserved address space grows with
    /// the count, memory does not.
    pub pooled_instances: u32,
    /// The most fuel per call a binding may ask for (default 10^9, about
    /// 150 ms of a tight loop on one core). `init` gets at most this much.
    pub max_fuel: u64,
    /// Memory all plugin instances of the node may take together (default
    /// 1 GiB). A binding reserves `memory_bytes × max_instances` of it.
    pub memory_budget_bytes: u64,
    /// Longest a component may take to compile (default 10 s).
    pub compile_timeout: Duration,
    /// Most bytes (keys and values) one binding may keep in its key-value
    /// store (default 4 MiB).
    pub kv_max_bytes: u64,
    /// Log lines a second one binding may write (default 100; a second's
    /// worth may come at once). Lines beyond are dropped and counted.
    pub log_lines_per_sec: u32,
    /// Log bytes a second one binding may write (default 64 KiB).
    pub log_bytes_per_sec: u64,
    /// Threads that run plugin calls (0, the default: one per core, at
    /// most 8).
    pub threads: usize,
    /// Compile in a process of its own (see [`compile_worker`]): the
    /// compiler's working set, hundreds of MiB for a guest language's
    /// runtime, stays out of this process, and a compilation past the
    /// timeout is killed. `None` (the default) compiles on a thread here.
    pub compile_worker: Option<CompileWorker>,
}

/// The command that runs [`compile_worker`]: a program and its first
/// arguments; the worker's settings are appended (`--max-memory-bytes N
/// --pooled-instances N --output FILE`).
#[derive(Clone, Debug)]
pub struct CompileWorker {
    /// The program (usually the node's own executable).
    pub program: PathBuf,
    /// Arguments before the settings (the hidden subcommand's name).
    pub args: Vec<String>,
}

/// Most bytes of a compile worker's error output kept.
const MAX_WORKER_ERROR: u64 = 16 * 1024;

/// Exit status of a compile worker whose component did not compile.
pub const WORKER_INVALID_COMPONENT: i32 = 3;

/// Compiles one component for a node (the other end of
/// [`EngineConfig::compile_worker`]): reads the component from `input`
/// and writes the artifact to the file `output`, compiled by an engine with the
/// node's settings (`max_memory_bytes`, `pooled_instances`: 0 when the node
/// allocates instances on demand). An error names what failed; a component
/// that does not compile is [`WORKER_INVALID_COMPONENT`].
pub fn compile_worker(
    max_memory_bytes: usize,
    pooled_instances: u32,
    mut input: impl std::io::Read,
    output: &std::path::Path,
) -> Result<(), (i32, String)> {
    let config = EngineConfig {
        max_memory_bytes,
        pooled_instances,
        ..EngineConfig::default()
    };
    let engine = Engine::new(&wasmtime_config(&config, pooled_instances > 0))
        .map_err(|e| (1, format!("engine: {e:#}")))?;
    let mut bytes = Vec::new();
    input
        .read_to_end(&mut bytes)
        .map_err(|e| (1, format!("reading the component: {e}")))?;
    let artifact = engine.precompile_component(&bytes).map_err(|e| {
        (
            WORKER_INVALID_COMPONENT,
            crate::binding::one_line(&format!("{e:#}")),
        )
    })?;
    std::fs::write(output, &artifact).map_err(|e| {
        (
            1,
            format!("writing the artifact to {}: {e}", output.display()),
        )
    })
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cache_dir: None,
            max_memory_bytes: 256 * 1024 * 1024,
            pooled_instances: 128,
            max_fuel: 1_000_000_000,
            memory_budget_bytes: 1024 * 1024 * 1024,
            compile_timeout: Duration::from_secs(10),
            kv_max_bytes: crate::kv::DEFAULT_KV_MAX_BYTES,
            log_lines_per_sec: 100,
            log_bytes_per_sec: 64 * 1024,
            threads: 0,
            compile_worker: None,
        }
    }
}

/// Compiles and validates plugins. One per node; cheap to share behind an
/// `Arc`.
pub struct PluginEngine {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) config: EngineConfig,
    /// Identifies the engine settings in cached artifact names: an artifact
    /// compiled with other settings is never loaded.
    compat: String,
    compiled: Mutex<HashMap<[u8; 32], Weak<Plugin>>>,
    /// Compilations running (see [`MAX_COMPILES`]).
    compiling: Arc<AtomicUsize>,
    /// Whether instances come from the pooling allocator.
    pooled: bool,
    pub(crate) exec: Arc<Executor>,
    pub(crate) budget: Arc<MemoryBudget>,
}

/// Counts a running compilation until dropped.
struct CompileSlot(Arc<AtomicUsize>);

impl Drop for CompileSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn wasmtime_config(config: &EngineConfig, pooling: bool) -> Config {
    let mut c = Config::new();
    c.consume_fuel(true);
    c.concurrency_support(false);
    c.parallel_compilation(true);
    if pooling {
        let n = config.pooled_instances;
        let mut p = PoolingAllocationConfig::default();
        p.total_component_instances(n)
            .total_core_instances(n.saturating_mul(8))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            .max_memory_size(config.max_memory_bytes);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    c
}

impl PluginEngine {
    /// Builds the engine. Falls back from the pooling allocator to on-demand
    /// allocation when the address space cannot be reserved.
    pub fn new(config: EngineConfig) -> Result<PluginEngine, PluginError> {
        let (engine, pooled) = match Engine::new(&wasmtime_config(
            &config,
            config.pooled_instances > 0,
        )) {
            Ok(e) => (e, config.pooled_instances > 0),
            Err(e) if config.pooled_instances > 0 => {
                tracing::warn!(error = %e, "pooling allocator unavailable; allocating plugin instances on demand");
                let e = Engine::new(&wasmtime_config(&config, false))
                    .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
                (e, false)
            }
            Err(e) => return Err(PluginError::Engine(format!("{e:#}"))),
        };
        let mut linker = Linker::new(&engine);
        route::RoutePlugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        crate::wasi::add_to_linker(&mut linker)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        env!("CARGO_PKG_VERSION").hash(&mut h);
        let compat = format!("{:016x}", h.finish());
        if let Some(dir) = &config.cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                PluginError::Engine(format!("cache directory {}: {e}", dir.display()))
            })?;
        }
        let threads = match config.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get().min(8)),
            n => n,
        };
        let exec = Arc::new(Executor::new(threads)?);
        // With the pooling allocator, its slots bound the instances too.
        let slots = if pooled {
            u64::from(config.pooled_instances)
        } else {
            u64::MAX
        };
        let budget = MemoryBudget::new(config.memory_budget_bytes, slots);
        Ok(PluginEngine {
            engine,
            linker,
            config,
            compat,
            compiled: Mutex::new(HashMap::new()),
            compiling: Arc::new(AtomicUsize::new(0)),
            pooled,
            exec,
            budget,
        })
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// How many threads run plugin calls.
    pub fn threads(&self) -> usize {
        self.exec.threads()
    }

    /// Bytes of the memory budget reserved by bindings now, and the
    /// budget's size.
    pub fn memory_budget(&self) -> (u64, u64) {
        (self.budget.used(), self.budget.total())
    }

    /// Instance slots reserved by bindings now, and how many the pooling
    /// allocator has (`None`: instances are allocated on demand, and only
    /// the memory budget bounds them).
    pub fn instance_slots(&self) -> (u64, Option<u64>) {
        let total = self.budget.slots();
        (
            self.budget.used_slots(),
            (total != u64::MAX).then_some(total),
        )
    }

    /// Runs `f` (plugin work: building a binding, which runs `init`) on
    /// the plugin threads, and awaits its result without blocking the
    /// caller's thread.
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, PluginError> {
        self.exec.run(f).await
    }

    /// Validates and compiles a component, or returns the already compiled
    /// one with the same sha256. Blocking: compiling takes tens of
    /// milliseconds (a cached artifact loads in well under one), and at
    /// most the compile timeout.
    ///
    /// Nothing is written to the compile cache here: a binding writes its
    /// plugin's artifact once it is accepted (see [`Binding::new`]), so a
    /// rejected component never reaches the disk.
    ///
    /// [`Binding::new`]: crate::Binding::new
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<Plugin>, PluginError> {
        let sha256: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(p) = self.compiled.lock().get(&sha256).and_then(Weak::upgrade) {
            return Ok(p);
        }
        let (component, artifact) = self.compile(bytes, &sha256)?;
        let mut plugin = self.inspect(component, sha256, bytes.len())?;
        plugin.artifact = Mutex::new(artifact);
        let plugin = Arc::new(plugin);
        let mut compiled = self.compiled.lock();
        if let Some(p) = compiled.get(&sha256).and_then(Weak::upgrade) {
            // Compiled at the same time by another caller.
            return Ok(p);
        }
        compiled.retain(|_, w| w.strong_count() > 0);
        compiled.insert(sha256, Arc::downgrade(&plugin));
        Ok(plugin)
    }

    fn cache_path(&self, sha256: &[u8; 32]) -> Option<PathBuf> {
        self.config
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{}-{}.cwasm", hex(sha256), self.compat)))
    }

    /// Writes the compiled artifact of an accepted plugin to the compile
    /// cache, if there is one and it is not there yet.
    pub(crate) fn persist(&self, plugin: &Plugin) {
        let Some(path) = self.cache_path(&plugin.sha256) else {
            return;
        };
        if path.exists() {
            return;
        }
        // A worker's artifact file moves into the cache as it is.
        if let Some(mut file) = plugin.artifact.lock().take()
            && let Some(tmp) = file.0.take()
        {
            if std::fs::rename(&tmp, &path).is_ok() {
                return;
            }
            let _ = std::fs::remove_file(&tmp);
        }
        let Ok(artifact) = plugin.component.serialize() else {
            return;
        };
        let tmp = path.with_extension("tmp");
        if std::fs::write(&tmp, &artifact)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .is_err()
        {
            tracing::warn!(path = %path.display(), "could not cache a compiled plugin");
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// Removes from the compile cache every artifact but those of the
    /// plugins with these sha256s (in hex) compiled by this engine's
    /// settings: artifacts of unbound plugins, of older engine settings,
    /// and unfinished writes. Returns how many files were removed.
    pub fn prune_cache(&self, keep: &[String]) -> usize {
        let Some(dir) = &self.config.cache_dir else {
            return 0;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let kept = keep
                .iter()
                .any(|sha| name == format!("{sha}-{}.cwasm", self.compat));
            // Files a worker of this process is writing stay.
            let ours = (name.ends_with(".cwasm") || name.ends_with(".tmp"))
                && !name.starts_with(&worker_file_prefix());
            if ours && !kept && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    fn compile(
        &self,
        bytes: &[u8],
        sha256: &[u8; 32],
    ) -> Result<(Component, Option<ArtifactFile>), PluginError> {
        let cached = self.cache_path(sha256);
        if let Some(path) = &cached
            && path.exists()
        {
            // SAFETY: the file was written by `Component::serialize` of an
            // engine with the same settings (its name carries the engine's
            // compatibility hash) into the node's own data directory.
            #[allow(unsafe_code)]
            match unsafe { Component::deserialize_file(&self.engine, path) } {
                Ok(c) => return Ok((c, None)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compiled plugin");
                }
            }
        }
        if wasmparser_is_core_module(bytes) {
            return Err(PluginError::InvalidComponent(
                "this is a core WebAssembly module, not a component; build the plugin with `cargo build --target wasm32-wasip2` (see docs/plugins.md)".into(),
            ));
        }
        self.compile_bounded(bytes)
    }

    /// Compiles on a thread of its own and waits at most the compile
    /// timeout. wasmtime cannot interrupt a compilation, so one that takes
    /// longer is refused and left to finish on its thread, its result
    /// thrown away; at most [`MAX_COMPILES`] run at once (counting those),
    /// and the component's size is bounded by the upload limit, so the
    /// work a client can leave behind is bounded too.
    fn compile_bounded(
        &self,
        bytes: &[u8],
    ) -> Result<(Component, Option<ArtifactFile>), PluginError> {
        let timeout = self.config.compile_timeout;
        if self.compiling.fetch_add(1, Ordering::SeqCst) >= MAX_COMPILES {
            self.compiling.fetch_sub(1, Ordering::SeqCst);
            return Err(PluginError::CompileRefused(format!(
                "{MAX_COMPILES} compilations are running already; try again later"
            )));
        }
        let slot = CompileSlot(self.compiling.clone());
        if let Some(worker) = &self.config.compile_worker {
            match self.compile_in_worker(worker, bytes) {
                // The worker could not run (or its artifact does not fit
                // this engine, after an upgrade of the executable on
                // disk): compile here.
                Err(PluginError::Engine(e)) => {
                    tracing::warn!(error = %e, "compile worker failed; compiling in the node");
                }
                done => return done.map(|(c, f)| (c, Some(f))),
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let engine = self.engine.clone();
        let bytes = bytes.to_vec();
        std::thread::Builder::new()
            .name("plugin-compile".into())
            .spawn(move || {
                let _slot = slot;
                let _ = tx.send(Component::new(&engine, &bytes));
            })
            .map_err(|e| PluginError::Engine(format!("cannot start a compiler thread: {e}")))?;
        match rx.recv_timeout(timeout) {
            Ok(r) => r.map(|c| (c, None)).map_err(|e| {
                PluginError::InvalidComponent(crate::binding::one_line(&format!("{e:#}")))
            }),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                Err(PluginError::CompileRefused(format!(
                    "compiling took longer than the node's limit of {} ms; \
                     make the component smaller or simpler",
                    timeout.as_millis()
                )))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                Err(PluginError::Engine("the compiler thread failed".into()))
            }
        }
    }

    /// Compiles in a worker process: the component goes to its stdin, the
    /// artifact comes back in a file (in the compile cache directory, or
    /// the system's temporary one), which is mapped here, not read into
    /// the heap, and removed. Past the compile timeout the worker is
    /// killed.
    fn compile_in_worker(
        &self,
        worker: &CompileWorker,
        bytes: &[u8],
    ) -> Result<(Component, ArtifactFile), PluginError> {
        use std::io::{Read, Write};
        use std::process::{Command, Stdio};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let engine_err = |what: &str, e: &dyn std::fmt::Display| {
            PluginError::Engine(format!(
                "compile worker {}: {what}: {e}",
                worker.program.display()
            ))
        };
        let pooled = if self.pooled {
            self.config.pooled_instances
        } else {
            0
        };
        let dir = self
            .config
            .cache_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let path = dir.join(format!(
            "{}{}.tmp",
            worker_file_prefix(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let output = ArtifactFile(Some(path.clone()));
        let mut child = Command::new(&worker.program)
            .args(&worker.args)
            .arg("--max-memory-bytes")
            .arg(self.config.max_memory_bytes.to_string())
            .arg("--pooled-instances")
            .arg(pooled.to_string())
            .arg("--output")
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| engine_err("cannot start", &e))?;
        let (Some(mut stdin), Some(stderr)) = (child.stdin.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(engine_err("pipes", &"not opened"));
        };
        let input = bytes.to_vec();
        let writer = std::thread::Builder::new()
            .name("plugin-compile-in".into())
            .spawn(move || {
                let _ = stdin.write_all(&input);
            })
            .map_err(|e| engine_err("thread", &e))?;
        // The worker's error output, read to its end: the end comes when
        // the worker exits (or is killed).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("plugin-compile-err".into())
            .spawn(move || {
                let mut text = String::new();
                let _ = stderr.take(MAX_WORKER_ERROR).read_to_string(&mut text);
                let _ = tx.send(text);
            })
            .map_err(|e| engine_err("thread", &e))?;
        let Ok(message) = rx.recv_timeout(self.config.compile_timeout) else {
            let _ = child.kill();
            let _ = child.wait();
            let _ = writer.join();
            return Err(PluginError::CompileRefused(format!(
                "compiling took longer than the node's limit of {} ms; \
                 make the component smaller or simpler",
                self.config.compile_timeout.as_millis()
            )));
        };
        let status = child.wait().map_err(|e| engine_err("wait", &e))?;
        let _ = writer.join();
        let message = message.trim();
        match status.code() {
            Some(0) => {}
            Some(WORKER_INVALID_COMPONENT) => {
                return Err(PluginError::InvalidComponent(message.to_owned()));
            }
            _ => return Err(engine_err(&format!("exited with {status}"), &message)),
        }
        // SAFETY: the file was written by `Engine::precompile_component` in
        // a worker process of this node's own executable, with this
        // engine's settings (`deserialize_file` checks that they match),
        // into a directory of the node's, under a name nothing else uses.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize_file(&self.engine, &path) };
        match component {
            Ok(c) => Ok((c, output)),
            Err(e) => Err(engine_err("artifact", &format!("{e:#}"))),
        }
    }

    fn inspect(
        &self,
        component: Component,
        sha256: [u8; 32],
        size: usize,
    ) -> Result<Plugin, PluginError> {
        let exports: Vec<String> = component
            .component_type()
            .exports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let linker = crate::wasi::link(&self.linker, &self.engine, &component)
            .map_err(|e| PluginError::NoKnownWorld(crate::binding::one_line(&format!("{e:#}"))))?;
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            PluginError::NoKnownWorld(format!(
                "{} (a plugin may import only switchyard:plugin interfaces and WASI 0.2 interfaces)",
                crate::binding::one_line(&format!("{e:#}"))
            ))
        })?;
        let route = route::RoutePluginPre::new(pre.clone()).ok();
        let filter = filter::FilterPluginPre::new(pre.clone()).ok();
        let pick = pick::PickPluginPre::new(pre).ok();
        if route.is_none() && filter.is_none() && pick.is_none() {
            return Err(PluginError::NoKnownWorld(if exports.is_empty() {
                "it exports nothing".into()
            } else {
                format!("it exports {}", exports.join(", "))
            }));
        }
        Ok(Plugin {
            sha256,
            size,
            component,
            artifact: Mutex::new(None),
            route,
            filter,
            pick,
        })
    }
}

/// A core module starts with the magic and version 1; a component has the
/// same magic and a different version/layer word.
fn wasmparser_is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 of a component's bytes, in hex: the name a component goes
/// by (see [`Plugin::sha256`]).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// A compiled artifact a compile worker wrote: removed when dropped,
/// unless it moved into the compile cache.
struct ArtifactFile(Option<PathBuf>);

impl Drop for ArtifactFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// How the names of this process's worker artifact files begin.
fn worker_file_prefix() -> String {
    format!("compiling-{}-", std::process::id())
}

/// A validated, compiled component.
pub struct Plugin {
    sha256: [u8; 32],
    size: usize,
    component: Component,
    /// The worker's artifact file, until it moves into the compile cache.
    artifact: Mutex<Option<ArtifactFile>>,
    pub(crate) route: Option<route::RoutePluginPre<HostState>>,
    pub(crate) filter: Option<filter::FilterPluginPre<HostState>>,
    pub(crate) pick: Option<pick::PickPluginPre<HostState>>,
}

impl Plugin {
    /// The sha256 of the component bytes, in hex: the plugin's version.
    pub fn sha256(&self) -> String {
        hex(&self.sha256)
    }

    /// Size of the component in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The hooks the component implements.
    pub fn hooks(&self) -> Vec<Hook> {
        let mut h = Vec::new();
        if self.route.is_some() {
            h.push(Hook::Route);
        }
        if self.filter.is_some() {
            h.push(Hook::Filter);
        }
        if self.pick.is_some() {
            h.push(Hook::Pick);
        }
        h
    }
}
