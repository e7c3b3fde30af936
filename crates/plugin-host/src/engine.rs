//! The wasmtime engine, the linker with the host imports, and compiled
//! plugins.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings::{filter, pick, route};
use crate::host::HostState;
use crate::{Hook, PluginError};

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
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cache_dir: None,
            max_memory_bytes: 256 * 1024 * 1024,
            pooled_instances: 128,
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
        let engine = match Engine::new(&wasmtime_config(&config, config.pooled_instances > 0)) {
            Ok(e) => e,
            Err(e) if config.pooled_instances > 0 => {
                tracing::warn!(error = %e, "pooling allocator unavailable; allocating plugin instances on demand");
                Engine::new(&wasmtime_config(&config, false))
                    .map_err(|e| PluginError::Engine(format!("{e:#}")))?
            }
            Err(e) => return Err(PluginError::Engine(format!("{e:#}"))),
        };
        let mut linker = Linker::new(&engine);
        route::RoutePlugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
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
        Ok(PluginEngine {
            engine,
            linker,
            config,
            compat,
            compiled: Mutex::new(HashMap::new()),
        })
    }

    /// Validates and compiles a component, or returns the already compiled
    /// one with the same sha256. Blocking: compiling takes tens of
    /// milliseconds (a cached artifact loads in well under one).
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<Plugin>, PluginError> {
        let sha256: [u8; 32] = Sha256::digest(bytes).into();
        let mut compiled = self.compiled.lock();
        if let Some(p) = compiled.get(&sha256).and_then(Weak::upgrade) {
            return Ok(p);
        }
        let component = self.compile(bytes, &sha256)?;
        let plugin = Arc::new(self.inspect(component, sha256, bytes.len())?);
        compiled.retain(|_, w| w.strong_count() > 0);
        compiled.insert(sha256, Arc::downgrade(&plugin));
        Ok(plugin)
    }

    fn compile(&self, bytes: &[u8], sha256: &[u8; 32]) -> Result<Component, PluginError> {
        let cached = self
            .config
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{}-{}.cwasm", hex(sha256), self.compat)));
        if let Some(path) = &cached
            && path.exists()
        {
            // SAFETY: the file was written by `Component::serialize` of an
            // engine with the same settings (its name carries the engine's
            // compatibility hash) into the node's own data directory.
            #[allow(unsafe_code)]
            match unsafe { Component::deserialize_file(&self.engine, path) } {
                Ok(c) => return Ok(c),
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
        let component = Component::new(&self.engine, bytes).map_err(|e| {
            PluginError::InvalidComponent(crate::binding::one_line(&format!("{e:#}")))
        })?;
        if let Some(path) = cached
            && let Ok(artifact) = component.serialize()
        {
            let tmp = path.with_extension("tmp");
            if std::fs::write(&tmp, &artifact)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .is_err()
            {
                tracing::warn!(path = %path.display(), "could not cache a compiled plugin");
                let _ = std::fs::remove_file(&tmp);
            }
        }
        Ok(component)
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

/// A validated, compiled component.
pub struct Plugin {
    sha256: [u8; 32],
    size: usize,
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
