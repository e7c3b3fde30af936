//! Plugin bindings of a node: which plugins run where, persisted in the
//! store, swapped atomically on change, and applied to messages with each
//! binding's error policy.
//!
//! This file holds the bindings themselves (configuration, persistence,
//! reloads); [`calls`] runs them on messages.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use switchyard_cluster::rollout::{Desired, Entry as TableEntry, Stamp};
use switchyard_model::Hlc;
use switchyard_plugin_host::{
    Binding, BindingSpec, EngineConfig, ErrorPolicy, Hook, KvBackend, Limits, PluginEngine,
    PluginError, Stats, StatsSnapshot,
};
use switchyard_store::Store;

use crate::RouterError;

mod calls;
mod cluster;
mod component;
pub(crate) mod log_topic;
mod rollout;
mod sync;
pub use calls::Filter;
pub(crate) use calls::{Filtered, Routed, as_append, dead_letter};
pub use cluster::NEED_COMPONENT;
pub use rollout::{Applied, MAX_TOMBSTONES};
pub use sync::{MemberRollout, SYNC_EVERY, rollout};
pub(crate) use sync::{PULL_QUEUE, sync_task};

/// Header that carries a plugin failure on a dead-lettered message.
pub const ERROR_HEADER: &str = "switchyard-error";
/// Header that names the plugin on a dead-lettered message.
pub const PLUGIN_HEADER: &str = "switchyard-plugin";
/// Most bindings per node.
pub const MAX_BINDINGS: usize = 64;
/// Longest binding configuration string.
pub const MAX_CONFIG: usize = 64 * 1024;
/// Largest component fetched from a peer unless the node sets another
/// bound (`plugins.max_upload_bytes`).
pub const DEFAULT_MAX_COMPONENT: usize = 16 * 1024 * 1024;
/// Most filter configurations given by subscribers (`filter_config=`) in
/// use at once on a node: each has its own instances.
pub const MAX_FILTER_VARIANTS: usize = 64;

/// Node-wide plugin settings.
#[derive(Clone, Debug, Default)]
pub struct PluginsConfig {
    /// Engine settings (the compile cache directory defaults to
    /// `<data>/plugin-cache`).
    pub engine: EngineConfig,
    /// Defaults for bindings that do not set their own limits.
    pub limits: Limits,
    /// Bindings from the configuration file.
    pub bindings: Vec<ConfiguredBinding>,
}

/// A binding from the configuration file. It is loaded at every start and
/// not persisted: the file stays the source of truth.
#[derive(Clone, Debug)]
pub struct ConfiguredBinding {
    /// The component file.
    pub file: PathBuf,
    /// Everything else.
    pub settings: BindingSpec,
}

/// What a reload of the configuration file did to one of its bindings
/// (see [`Plugins::reload_configured`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// Newly listed: bound.
    Bound,
    /// Its settings or component changed: bound again (a new version).
    Rebound,
    /// Unchanged: left running.
    Unchanged,
    /// No longer listed: unbound.
    Removed,
    /// Refused; a running version, if any, goes on.
    Failed(String),
}

/// Where a binding came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The HTTP API with `scope=node`: this node alone (persisted in the
    /// store).
    Api,
    /// The configuration file (this node alone).
    Config,
    /// The cluster binding table: bound on every node (`scope=cluster`).
    Cluster,
}

impl Source {
    /// `api`, `config` or `cluster`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Config => "config",
            Source::Cluster => "cluster",
        }
    }
}

/// The persisted form of a binding.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    name: String,
    hook: String,
    topics: Vec<String>,
    config: String,
    on_error: String,
    fuel: u64,
    memory_bytes: usize,
    max_instances: usize,
    max_host_calls: u32,
    sha256: String,
    version: u64,
    updated_ms: u64,
}

/// A binding as the API lists it.
#[derive(Clone, Debug)]
pub struct PluginInfo {
    /// Binding name.
    pub name: String,
    /// Hook.
    pub hook: Hook,
    /// Topic patterns.
    pub topics: Vec<String>,
    /// Configuration string.
    pub config: String,
    /// Error policy.
    pub on_error: ErrorPolicy,
    /// Limits.
    pub limits: Limits,
    /// sha256 of the component, in hex.
    pub sha256: String,
    /// Component size in bytes.
    pub size: usize,
    /// Counts the binding's versions (1 for the first push).
    pub version: u64,
    /// When this version was bound, in ms since the Unix epoch.
    pub updated_ms: u64,
    /// API, configuration file or cluster table.
    pub source: Source,
    /// The cluster table's stamp of this version (cluster bindings).
    pub stamp: Option<Stamp>,
    /// Counters since the node started (kept across versions).
    pub stats: StatsSnapshot,
    /// How long its hook calls took since the node started.
    pub call_times: switchyard_model::histogram::HistogramSnapshot,
}

pub(crate) struct Entry {
    binding: Arc<Binding>,
    source: Source,
    version: u64,
    updated_ms: u64,
    /// The cluster table entry it runs (cluster bindings).
    stamp: Option<Stamp>,
}

/// An immutable set of bindings; replaced as a whole on every change.
#[derive(Default)]
struct Snapshot {
    generation: u64,
    bindings: BTreeMap<String, Arc<Entry>>,
    /// The route bindings, in name order.
    routes: Vec<Arc<Binding>>,
}

/// The key-value backend on the node's store.
struct StoreKv(Arc<Store>);

impl KvBackend for StoreKv {
    fn get(&self, scope: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.0.kv_get(scope, key).map_err(|e| e.to_string())
    }
    fn set(&self, scope: &str, key: &str, value: &[u8]) -> Result<(), String> {
        self.0.kv_set(scope, key, value).map_err(|e| e.to_string())
    }
    fn delete(&self, scope: &str, key: &str) -> Result<(), String> {
        self.0.kv_delete(scope, key).map_err(|e| e.to_string())
    }
    fn usage(&self, scope: &str) -> Result<(u64, u64), String> {
        self.0.kv_usage(scope).map_err(|e| e.to_string())
    }
    fn clear(&self, scope: &str) -> Result<(), String> {
        self.0.kv_clear(scope).map_err(|e| e.to_string())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Checks a binding's name and configuration size.
fn check_settings(settings: &BindingSpec) -> Result<(), RouterError> {
    validate_name(&settings.name)?;
    if settings.config.len() > MAX_CONFIG {
        return Err(RouterError::PluginSetting(format!(
            "config of {} bytes; at most {MAX_CONFIG}",
            settings.config.len()
        )));
    }
    Ok(())
}

/// The `scope=` a binding of this source has.
fn scope_of(source: Source) -> &'static str {
    match source {
        Source::Cluster => "cluster",
        Source::Api | Source::Config => "node",
    }
}

/// Checks a binding name.
pub fn validate_name(name: &str) -> Result<(), RouterError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(RouterError::PluginSetting(format!(
            "plugin name {name:?}: use 1 to 64 of A-Z, a-z, 0-9, '-' and '_'"
        )));
    }
    Ok(())
}

/// The plugin bindings of a node.
pub struct Plugins {
    engine: Arc<PluginEngine>,
    store: Arc<Store>,
    kv: Arc<dyn KvBackend>,
    defaults: Limits,
    current: RwLock<Arc<Snapshot>>,
    /// Serialises changes (compile, persist, swap).
    changing: Mutex<()>,
    /// Filter bindings with a per-subscription configuration, by
    /// (name, binding version, config).
    variants: Mutex<BTreeMap<(String, u64, String), std::sync::Weak<Binding>>>,
    max_payload: usize,
    /// The cluster binding table (see [`rollout`]).
    table: Mutex<rollout::Table>,
    /// Stamps this node's changes to the table.
    clock: Mutex<Hlc>,
    /// Woken when this node changed the table (the sync tells its peers).
    table_changed: Arc<tokio::sync::Notify>,
    /// Peers a sync showed to hold newer entries (set when the node
    /// joins a cluster).
    pub(crate) pulls: std::sync::OnceLock<tokio::sync::mpsc::Sender<u64>>,
    /// Largest component fetched from a peer.
    max_component: std::sync::atomic::AtomicUsize,
}

impl Plugins {
    pub(crate) fn open(
        store: Arc<Store>,
        config: &PluginsConfig,
        max_payload: usize,
    ) -> Result<Plugins, RouterError> {
        let mut engine_config = config.engine.clone();
        if engine_config.cache_dir.is_none() {
            engine_config.cache_dir = Some(store.config().path.join("plugin-cache"));
        }
        let engine = Arc::new(PluginEngine::new(engine_config).map_err(RouterError::Plugin)?);
        let plugins = Plugins {
            engine,
            kv: Arc::new(StoreKv(store.clone())),
            store,
            defaults: config.limits,
            current: RwLock::new(Arc::new(Snapshot::default())),
            changing: Mutex::new(()),
            variants: Mutex::new(BTreeMap::new()),
            max_payload,
            table: Mutex::new(rollout::Table::default()),
            clock: Mutex::new(Hlc::default()),
            table_changed: Arc::new(tokio::sync::Notify::new()),
            pulls: std::sync::OnceLock::new(),
            max_component: std::sync::atomic::AtomicUsize::new(DEFAULT_MAX_COMPONENT),
        };
        plugins.load_persisted()?;
        for c in &config.bindings {
            let bytes = std::fs::read(&c.file).map_err(|e| {
                RouterError::PluginSetting(format!(
                    "plugin {}: cannot read {}: {e}",
                    c.settings.name,
                    c.file.display()
                ))
            })?;
            plugins
                .bind(c.settings.clone(), Some(&bytes), Source::Config)
                .map_err(|e| match e {
                    RouterError::Plugin(p) => RouterError::PluginSetting(format!(
                        "plugin {} ({}): {p}",
                        c.settings.name,
                        c.file.display()
                    )),
                    other => other,
                })?;
        }
        plugins.load_table()?;
        plugins.prune_cache();
        Ok(plugins)
    }

    /// Removes compiled artifacts no binding uses from the compile cache:
    /// those of unbound plugins and of engine settings no longer in use.
    fn prune_cache(&self) {
        let keep: Vec<String> = self
            .snapshot()
            .bindings
            .values()
            .map(|e| e.binding.plugin().sha256())
            .collect();
        let removed = self.engine.prune_cache(&keep);
        if removed > 0 {
            tracing::debug!(removed, "unused compiled plugins removed from the cache");
        }
    }

    fn load_persisted(&self) -> Result<(), RouterError> {
        for (name, raw) in self.store.plugins()? {
            let loaded = serde_json::from_slice::<Record>(&raw)
                .map_err(|e| format!("unreadable record: {e}"))
                .and_then(|r| {
                    let settings = settings_of(&r)?;
                    let bytes = self
                        .store
                        .plugin_component(&r.sha256)
                        .map_err(|e| e.to_string())?
                        .ok_or("its component is missing")?;
                    let plugin = self.engine.load(&bytes).map_err(|e| e.to_string())?;
                    let binding = Binding::new(
                        &self.engine,
                        plugin,
                        settings,
                        self.kv.clone(),
                        Arc::new(Stats::default()),
                    )
                    .map_err(|e| e.to_string())?;
                    Ok((r, binding))
                });
            match loaded {
                Ok((r, binding)) => self.install(
                    name,
                    Some(Entry {
                        binding,
                        source: Source::Api,
                        version: r.version,
                        updated_ms: r.updated_ms,
                        stamp: None,
                    }),
                ),
                // A binding that no longer loads must not keep the node down.
                Err(e) => {
                    tracing::error!(plugin = %name, error = %e, "stored plugin binding not loaded")
                }
            }
        }
        Ok(())
    }

    /// Replaces (or with `None` removes) one binding in a new snapshot.
    fn install(&self, name: String, entry: Option<Entry>) {
        let mut cur = self.current.write();
        let mut bindings = cur.bindings.clone();
        match entry {
            Some(e) => bindings.insert(name, Arc::new(e)),
            None => bindings.remove(&name),
        };
        let routes = bindings
            .values()
            .filter(|e| e.binding.spec().hook == Hook::Route)
            .map(|e| e.binding.clone())
            .collect();
        *cur = Arc::new(Snapshot {
            generation: cur.generation + 1,
            bindings,
            routes,
        });
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.current.read().clone()
    }

    /// Binds (or re-binds) a plugin: validates and compiles the component
    /// (`None` keeps the binding's current component), runs `init` with the
    /// configuration, persists an API binding durably, then swaps it in.
    /// Calls that started on an earlier version finish on it. Blocking.
    pub fn bind(
        &self,
        settings: BindingSpec,
        component: Option<&[u8]>,
        source: Source,
    ) -> Result<PluginInfo, RouterError> {
        check_settings(&settings)?;
        if source == Source::Cluster {
            return self.bind_cluster(settings, component);
        }
        let _changing = self.changing.lock();
        self.bind_locked(settings, component, source, None)
    }

    /// Binds (or re-binds) a plugin with the caller holding `changing`. A
    /// cluster binding (`cluster` given) is persisted as its table entry,
    /// which the table takes (a newer entry of this node's, or one a peer
    /// sent that it merged already).
    fn bind_locked(
        &self,
        settings: BindingSpec,
        component: Option<&[u8]>,
        source: Source,
        cluster: Option<TableEntry>,
    ) -> Result<PluginInfo, RouterError> {
        let old = self.snapshot().bindings.get(&settings.name).cloned();
        if let Some(o) = &old
            && o.source == Source::Config
            && source != Source::Config
        {
            return Err(RouterError::PluginConflict(format!(
                "plugin {} is bound by the configuration file; change it there",
                settings.name
            )));
        }
        if let Some(o) = &old
            && (o.source == Source::Cluster) != (source == Source::Cluster)
            && source != Source::Config
        {
            return Err(RouterError::PluginConflict(format!(
                "plugin {} is bound with scope={} here; delete it first to bind it with scope={}",
                settings.name,
                scope_of(o.source),
                scope_of(source)
            )));
        }
        if old.is_none() && self.snapshot().bindings.len() >= MAX_BINDINGS {
            return Err(RouterError::PluginSetting(format!(
                "the node holds {MAX_BINDINGS} plugin bindings already"
            )));
        }
        let plugin = match (component, &old) {
            (Some(bytes), _) => self.engine.load(bytes).map_err(RouterError::Plugin)?,
            (None, Some(o)) => o.binding.plugin().clone(),
            (None, None) => {
                return Err(RouterError::PluginSetting(format!(
                    "plugin {} does not exist yet; upload its component",
                    settings.name
                )));
            }
        };
        let stats = old
            .as_ref()
            .map_or_else(|| Arc::new(Stats::default()), |o| o.binding.stats().clone());
        let binding = Binding::new_replacing(
            &self.engine,
            plugin.clone(),
            settings.clone(),
            self.kv.clone(),
            stats,
            old.as_ref().map(|o| &*o.binding),
        )
        .map_err(RouterError::Plugin)?;
        let version = match &cluster {
            Some(TableEntry {
                binding: Some(d), ..
            }) => d.version,
            _ => old.as_ref().map_or(1, |o| o.version + 1),
        };
        let updated_ms = now_ms();
        let stamp = cluster.as_ref().map(|e| e.stamp);
        // What is stored with the binding: the upload, or the component
        // the store already holds under its sha256.
        let component_bytes = || -> Result<Vec<u8>, RouterError> {
            match component {
                Some(b) => Ok(b.to_vec()),
                None => self
                    .store
                    .plugin_component(&plugin.sha256())?
                    .ok_or_else(|| RouterError::PluginSetting("stored component missing".into())),
            }
        };
        if let Some(entry) = &cluster {
            let bytes = component_bytes()?;
            let raw = serde_json::to_vec(entry).expect("entries serialise");
            self.store
                .put_plugin_entry(&settings.name, &raw, Some((&plugin.sha256(), &bytes)))?;
            let mut table = self.table.lock();
            table.merge(entry.clone());
            table.set_applied(&settings.name, entry.stamp, Applied::Done);
        }
        if source == Source::Api {
            let record = record_of(&settings, &plugin.sha256(), version, updated_ms);
            let bytes = component_bytes()?;
            let raw = serde_json::to_vec(&record).expect("records serialise");
            self.store
                .put_plugin(&settings.name, &raw, &plugin.sha256(), &bytes)?;
        }
        let old_sha = old.as_ref().map(|o| o.binding.plugin().sha256());
        if let Some(o) = &old {
            // The new version took over its share of the memory budget.
            o.binding.release_budget();
        }
        self.install(
            settings.name.clone(),
            Some(Entry {
                binding,
                source,
                version,
                updated_ms,
                stamp,
            }),
        );
        if let Some(sha) = old_sha
            && sha != plugin.sha256()
            && source != Source::Config
            && !self.uses_component(&sha)
        {
            // The old component is no longer referenced.
            let _ = self.store.remove_component(&sha);
        }
        self.prune_cache();
        tracing::info!(plugin = %settings.name, hook = %settings.hook, sha256 = %plugin.sha256(), version, "plugin bound");
        Ok(self.info(&settings.name).expect("just installed"))
    }

    /// Whether a stored binding or a cluster table entry refers to
    /// component `sha`.
    fn uses_component(&self, sha: &str) -> bool {
        self.snapshot()
            .bindings
            .values()
            .any(|e| e.source != Source::Config && e.binding.plugin().sha256() == sha)
            || self.table.lock().uses_component(sha)
    }

    /// Unbinds a plugin and deletes its key-value data. Blocking.
    pub fn remove(&self, name: &str) -> Result<(), RouterError> {
        let _changing = self.changing.lock();
        let Some(old) = self.snapshot().bindings.get(name).cloned() else {
            return Err(RouterError::PluginNotFound(name.to_owned()));
        };
        match old.source {
            Source::Config => Err(RouterError::PluginConflict(format!(
                "plugin {name} is bound by the configuration file; remove it there"
            ))),
            Source::Api => self.unbind(name, &old),
            Source::Cluster => self.delete_cluster(name, &old),
        }
    }

    /// Makes the configuration file's bindings what `bindings` lists (a
    /// reload of the file): binds the new ones, binds again those whose
    /// settings or component file changed, leaves the others running
    /// (their counters, instances and key-value data stay), and unbinds
    /// the ones no longer listed. A binding that fails keeps its current
    /// version, if any; API bindings are never touched. Blocking.
    pub fn reload_configured(&self, bindings: &[ConfiguredBinding]) -> Vec<(String, Reloaded)> {
        let current = self.snapshot();
        let mut out = Vec::new();
        for c in bindings {
            let name = c.settings.name.clone();
            let old = current.bindings.get(&name);
            if old.is_some_and(|o| o.source == Source::Api) {
                out.push((
                    name,
                    Reloaded::Failed(
                        "a binding of that name was made through the API; delete it first".into(),
                    ),
                ));
                continue;
            }
            // A cluster binding of that name steps aside on this node.
            let bytes = match std::fs::read(&c.file) {
                Ok(b) => b,
                Err(e) => {
                    let why = format!("cannot read {}: {e}", c.file.display());
                    out.push((name, Reloaded::Failed(why)));
                    continue;
                }
            };
            if let Some(o) = old
                && o.source == Source::Config
                && o.binding.spec() == &c.settings
                && self
                    .engine
                    .load(&bytes)
                    .is_ok_and(|p| p.sha256() == o.binding.plugin().sha256())
            {
                out.push((name, Reloaded::Unchanged));
                continue;
            }
            let change = match self.bind(c.settings.clone(), Some(&bytes), Source::Config) {
                Ok(_) => {
                    self.shadow(&name);
                    if old.is_some_and(|o| o.source == Source::Config) {
                        Reloaded::Rebound
                    } else {
                        Reloaded::Bound
                    }
                }
                Err(e) => Reloaded::Failed(e.to_string()),
            };
            out.push((name, change));
        }
        for (name, e) in &current.bindings {
            if e.source != Source::Config || bindings.iter().any(|c| &c.settings.name == name) {
                continue;
            }
            let _changing = self.changing.lock();
            let change = match self.unbind(name, e) {
                Ok(()) => Reloaded::Removed,
                Err(e) => Reloaded::Failed(e.to_string()),
            };
            out.push((name.clone(), change));
        }
        out
    }

    /// Takes `old`, the binding `name`, out of service and deletes its
    /// key-value data. The caller holds `changing`.
    fn unbind(&self, name: &str, old: &Entry) -> Result<(), RouterError> {
        self.install(name.to_owned(), None);
        old.binding.release_budget();
        let sha = old.binding.plugin().sha256();
        let drop_component = (!self.uses_component(&sha)).then_some(sha.as_str());
        self.store.remove_plugin(name, drop_component)?;
        self.prune_cache();
        tracing::info!(plugin = %name, "plugin unbound");
        Ok(())
    }

    /// Every binding, by name.
    pub fn list(&self) -> Vec<PluginInfo> {
        let snap = self.snapshot();
        snap.bindings.iter().map(|(n, e)| info_of(n, e)).collect()
    }

    /// One binding.
    pub fn info(&self, name: &str) -> Option<PluginInfo> {
        self.snapshot().bindings.get(name).map(|e| info_of(name, e))
    }

    /// Follows the log lines of binding `name` from now on (see
    /// [`switchyard_plugin_host::Stats::subscribe_logs`]); `None` when there
    /// is no such binding.
    pub fn subscribe_logs(
        &self,
        name: &str,
    ) -> Option<tokio::sync::broadcast::Receiver<switchyard_plugin_host::LogLine>> {
        self.snapshot()
            .bindings
            .get(name)
            .map(|e| e.binding.stats().subscribe_logs())
    }

    /// Limits of a binding that sets none.
    pub fn default_limits(&self) -> Limits {
        self.defaults
    }

    /// The plugin engine (for local tools).
    pub fn engine(&self) -> &PluginEngine {
        &self.engine
    }
}

fn record_of(s: &BindingSpec, sha256: &str, version: u64, updated_ms: u64) -> Record {
    Record {
        name: s.name.clone(),
        hook: s.hook.to_string(),
        topics: s.topics.iter().map(|t| t.to_string()).collect(),
        config: s.config.clone(),
        on_error: s.on_error.to_string(),
        fuel: s.limits.fuel,
        memory_bytes: s.limits.memory_bytes,
        max_instances: s.limits.max_instances,
        max_host_calls: s.limits.max_host_calls,
        sha256: sha256.to_owned(),
        version,
        updated_ms,
    }
}

fn settings_of(r: &Record) -> Result<BindingSpec, String> {
    Ok(BindingSpec {
        name: r.name.clone(),
        hook: r.hook.parse().map_err(|e: PluginError| e.to_string())?,
        topics: r
            .topics
            .iter()
            .map(|t| t.parse().map_err(|e| format!("{e}")))
            .collect::<Result<_, _>>()?,
        config: r.config.clone(),
        on_error: r.on_error.parse().map_err(|e: PluginError| e.to_string())?,
        limits: Limits {
            fuel: r.fuel,
            memory_bytes: r.memory_bytes,
            max_instances: r.max_instances,
            max_host_calls: r.max_host_calls,
            ..Limits::default()
        },
    })
}

/// The settings of a cluster table entry's binding.
fn spec_of_desired(name: &str, d: &Desired) -> Result<BindingSpec, String> {
    settings_of(&Record {
        name: name.to_owned(),
        hook: d.hook.clone(),
        topics: d.topics.clone(),
        config: d.config.clone(),
        on_error: d.on_error.clone(),
        fuel: d.fuel,
        memory_bytes: usize::try_from(d.memory_bytes).map_err(|e| e.to_string())?,
        max_instances: d.max_instances as usize,
        max_host_calls: d.max_host_calls,
        sha256: d.sha256.clone(),
        version: d.version,
        updated_ms: 0,
    })
}

fn info_of(name: &str, e: &Entry) -> PluginInfo {
    let spec = e.binding.spec();
    PluginInfo {
        name: name.to_owned(),
        hook: spec.hook,
        topics: spec.topics.iter().map(|t| t.to_string()).collect(),
        config: spec.config.clone(),
        on_error: spec.on_error,
        limits: spec.limits,
        sha256: e.binding.plugin().sha256(),
        size: e.binding.plugin().size(),
        version: e.version,
        updated_ms: e.updated_ms,
        source: e.source,
        stamp: e.stamp,
        stats: e.binding.stats().snapshot(),
        call_times: e.binding.stats().call_times(),
    }
}
