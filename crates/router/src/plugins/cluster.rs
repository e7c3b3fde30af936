//! Cluster-wide bindings on one node: binding and deleting with
//! `scope=cluster` (a new table entry stamped by this node), merging the
//! entries peers send, applying them (compile, `init`, swap), and what this
//! node runs of each. The exchange with peers is in
//! [`crate::plugins::sync`]; the table itself in [`super::rollout`].

use std::sync::Arc;

use switchyard_cluster::rollout::{Desired, Entry as TableEntry, NodeStatus, Stamp};
use switchyard_model::Timestamp;
use switchyard_plugin_host::{BindingSpec, sha256_hex};

use super::rollout::Applied;
use super::{Entry, PluginInfo, Plugins, Source, check_settings, now_ms, spec_of_desired};
use crate::RouterError;

/// Why an entry waits: its component is not held here yet.
pub const NEED_COMPONENT: &str = "its component is being fetched from a peer";

impl Plugins {
    /// Binds with `scope=cluster`: compiles and initialises here first (a
    /// component this node refuses is refused to the caller, and nothing
    /// reaches the cluster), then records a new table entry, stamped by
    /// this node, durably, and tells the peers.
    pub(super) fn bind_cluster(
        &self,
        settings: BindingSpec,
        component: Option<&[u8]>,
    ) -> Result<PluginInfo, RouterError> {
        let _changing = self.changing.lock();
        let name = settings.name.clone();
        let old = self.snapshot().bindings.get(&name).cloned();
        if let Some(o) = &old
            && o.source != Source::Cluster
        {
            return Err(RouterError::PluginConflict(format!(
                "plugin {name} is bound on this node alone ({}); delete it first to bind it with scope=cluster",
                match o.source {
                    Source::Config => "by the configuration file",
                    _ => "scope=node",
                }
            )));
        }
        let plugin = match (component, &old) {
            (Some(bytes), _) => self.engine.load(bytes).map_err(RouterError::Plugin)?,
            (None, Some(o)) if o.source == Source::Cluster => o.binding.plugin().clone(),
            _ => {
                return Err(RouterError::PluginSetting(format!(
                    "plugin {name} does not exist yet with scope=cluster; upload its component"
                )));
            }
        };
        let last_version = {
            let table = self.table.lock();
            table
                .get(&name)
                .and_then(|(e, _)| e.binding.as_ref().map(|d| d.version))
                .unwrap_or(0)
        };
        let version = last_version.max(old.as_ref().map_or(0, |o| o.version)) + 1;
        let entry = TableEntry {
            name: name.clone(),
            stamp: self.stamp(),
            binding: Some(desired_of(
                &settings,
                &plugin.sha256(),
                plugin.size(),
                version,
            )),
        };
        let info = self.bind_locked(settings, component, Source::Cluster, Some(entry))?;
        self.table_changed.notify_one();
        Ok(info)
    }

    /// Deletes a cluster binding: a tombstone entry, stamped by this node,
    /// durably; then unbinds here and tells the peers.
    pub(super) fn delete_cluster(&self, name: &str, old: &Entry) -> Result<(), RouterError> {
        let entry = TableEntry {
            name: name.to_owned(),
            stamp: self.stamp(),
            binding: None,
        };
        let raw = serde_json::to_vec(&entry).expect("entries serialise");
        self.store.put_plugin_entry(name, &raw, None)?;
        {
            let mut table = self.table.lock();
            table.merge(entry.clone());
            table.set_applied(name, entry.stamp, Applied::Done);
        }
        self.unbind(name, old)?;
        self.forget_old_tombstones();
        self.table_changed.notify_one();
        Ok(())
    }

    /// A new stamp of this node's.
    fn stamp(&self) -> Stamp {
        Stamp {
            time: self.clock.lock().now(now_ms()).0,
            node: self.store.node_id().0,
        }
    }

    /// Loads the table at start and applies it with the components held
    /// here; entries whose component is missing wait for the sync.
    pub(super) fn load_table(&self) -> Result<(), RouterError> {
        let mut entries = Vec::new();
        for (name, raw) in self.store.plugin_entries()? {
            match serde_json::from_slice::<TableEntry>(&raw) {
                Ok(e) if e.name == name => entries.push(e),
                Ok(_) => tracing::error!(plugin = %name, "stored cluster binding names another"),
                Err(e) => {
                    tracing::error!(plugin = %name, error = %e, "stored cluster binding unreadable")
                }
            }
        }
        {
            let mut table = self.table.lock();
            for e in &entries {
                table.merge(e.clone());
            }
            self.clock.lock().observe(Timestamp(table.max_stamp().time));
        }
        for e in &entries {
            let _ = self.apply_entry(e, None);
        }
        Ok(())
    }

    /// Marks the table entry of `name` as shadowed here by a binding made
    /// on this node alone.
    pub(super) fn shadow(&self, name: &str) {
        let mut table = self.table.lock();
        if let Some(stamp) = table
            .get(name)
            .filter(|(e, _)| e.binding.is_some())
            .map(|(e, _)| e.stamp)
        {
            table.set_applied(
                name,
                stamp,
                Applied::Shadowed(shadowed_by(Source::Config).into()),
            );
        }
    }

    fn forget_old_tombstones(&self) {
        let gone = self.table.lock().forget_old_tombstones();
        for name in gone {
            if let Err(e) = self.store.remove_plugin_entry(&name) {
                tracing::warn!(plugin = %name, error = %e, "forgetting a deleted cluster binding failed");
            }
        }
    }

    /// Name and stamp of every table entry (a sync request's digest).
    pub fn table_digest(&self) -> Vec<(String, Stamp)> {
        self.table.lock().digest()
    }

    /// The table entries newer than `digest`'s (a sync answer).
    pub fn table_newer_than(&self, digest: &[(String, Stamp)]) -> Vec<TableEntry> {
        self.table.lock().newer_than(digest)
    }

    /// Whether `digest` holds entries newer than this node's table.
    pub fn table_behind(&self, digest: &[(String, Stamp)]) -> bool {
        self.table.lock().behind(digest)
    }

    /// The table entry of `name` and what this node made of it.
    pub fn table_entry(&self, name: &str) -> Option<(TableEntry, Applied)> {
        self.table.lock().get(name).cloned()
    }

    /// Woken when this node changes the table.
    pub fn table_changed(&self) -> Arc<tokio::sync::Notify> {
        self.table_changed.clone()
    }

    /// Merges entries a peer sent: each newer one is persisted and taken
    /// into the table (applied later, see [`Plugins::to_apply`]). Entries
    /// that do not parse are refused. Returns how many were taken.
    /// Blocking (a durable write per entry taken).
    pub fn merge_entries(&self, entries: Vec<TableEntry>) -> usize {
        let _changing = self.changing.lock();
        let mut taken = 0;
        for e in entries {
            if let Err(why) = check_entry(&e) {
                tracing::warn!(plugin = %e.name, error = %why, "a peer's cluster binding refused");
                continue;
            }
            let newer = self
                .table
                .lock()
                .get(&e.name)
                .is_none_or(|(cur, _)| cur.stamp < e.stamp);
            if !newer {
                continue;
            }
            let raw = serde_json::to_vec(&e).expect("entries serialise");
            if let Err(err) = self.store.put_plugin_entry(&e.name, &raw, None) {
                tracing::warn!(plugin = %e.name, error = %err, "storing a cluster binding failed");
                continue;
            }
            self.clock.lock().observe(Timestamp(e.stamp.time));
            self.table.lock().merge(e);
            taken += 1;
        }
        if taken > 0 {
            self.forget_old_tombstones();
        }
        taken
    }

    /// The table entries this node has yet to apply: new ones, and those
    /// a binding made on this node alone shadowed that is gone now.
    pub fn to_apply(&self) -> Vec<TableEntry> {
        let snap = self.snapshot();
        let table = self.table.lock();
        table
            .iter()
            .filter(|(e, a)| match a {
                Applied::Pending(_) => true,
                Applied::Shadowed(_) => snap
                    .bindings
                    .get(&e.name)
                    .is_none_or(|b| b.source == Source::Cluster),
                Applied::Done | Applied::Refused(_) => false,
            })
            .map(|(e, _)| e.clone())
            .collect()
    }

    /// Applies a table entry here: binds its version (with `fetched`, a
    /// component a peer sent, or the one held here), or unbinds a deleted
    /// binding. What came of it is recorded in the table and returned;
    /// [`NEED_COMPONENT`] when the component is not held here. Blocking
    /// (compiles).
    pub fn apply_entry(&self, entry: &TableEntry, fetched: Option<&[u8]>) -> Applied {
        let _changing = self.changing.lock();
        let current = self.table.lock().get(&entry.name).map(|(e, _)| e.stamp);
        if current != Some(entry.stamp) {
            return Applied::Pending("a newer version arrived".into());
        }
        let old = self.snapshot().bindings.get(&entry.name).cloned();
        let applied = match (&entry.binding, &old) {
            (None, Some(o)) if o.source == Source::Cluster => match self.unbind(&entry.name, o) {
                Ok(()) => Applied::Done,
                Err(e) => Applied::Pending(format!("unbinding failed: {e}")),
            },
            (None, _) => Applied::Done,
            (Some(_), Some(o)) if o.source != Source::Cluster => {
                Applied::Shadowed(shadowed_by(o.source).into())
            }
            (Some(_), Some(o)) if o.stamp == Some(entry.stamp) => Applied::Done,
            (Some(d), _) => self.apply_desired(entry, d, fetched),
        };
        self.table
            .lock()
            .set_applied(&entry.name, entry.stamp, applied.clone());
        if let Applied::Refused(why) = &applied {
            tracing::warn!(plugin = %entry.name, version = entry.binding.as_ref().map_or(0, |d| d.version), error = %why, "cluster binding refused on this node");
        }
        applied
    }

    fn apply_desired(&self, entry: &TableEntry, d: &Desired, fetched: Option<&[u8]>) -> Applied {
        let bytes = match fetched {
            Some(b) if sha256_hex(b) == d.sha256 => b.to_vec(),
            Some(_) => return Applied::Pending("a peer sent a component of another sha256".into()),
            None => match self.store.plugin_component(&d.sha256) {
                Ok(Some(b)) => b,
                Ok(None) => return Applied::Pending(NEED_COMPONENT.into()),
                Err(e) => return Applied::Pending(format!("reading the component failed: {e}")),
            },
        };
        let settings = match spec_of_desired(&entry.name, d) {
            Ok(s) => s,
            Err(e) => return Applied::Refused(e),
        };
        if let Err(e) = check_settings(&settings) {
            return Applied::Refused(e.to_string());
        }
        match self.bind_locked(settings, Some(&bytes), Source::Cluster, Some(entry.clone())) {
            Ok(_) => Applied::Done,
            Err(e @ RouterError::Store(_)) => Applied::Pending(e.to_string()),
            Err(e) => Applied::Refused(e.to_string()),
        }
    }

    /// A component held here, by sha256 (for a peer that lacks it).
    pub fn component_by_sha256(&self, sha256: &str) -> Result<Option<Vec<u8>>, RouterError> {
        Ok(self.store.plugin_component(sha256)?)
    }

    /// What this node runs of the cluster bindings `names` (all when
    /// empty).
    pub fn node_status(&self, names: &[String]) -> Vec<NodeStatus> {
        let snap = self.snapshot();
        let table = self.table.lock();
        table
            .iter()
            .filter(|(e, _)| names.is_empty() || names.contains(&e.name))
            .map(|(e, a)| {
                let running = snap
                    .bindings
                    .get(&e.name)
                    .filter(|b| b.source == Source::Cluster);
                let (state, detail) = match a {
                    Applied::Done if e.binding.is_none() => ("deleted", String::new()),
                    Applied::Done => ("running", String::new()),
                    Applied::Pending(w) => ("pending", w.clone()),
                    Applied::Shadowed(w) => ("shadowed", w.clone()),
                    Applied::Refused(w) => ("refused", w.clone()),
                };
                NodeStatus {
                    name: e.name.clone(),
                    stamp: e.stamp,
                    state: state.into(),
                    sha256: running.map_or_else(String::new, |b| b.binding.plugin().sha256()),
                    version: running.map_or(0, |b| b.version),
                    detail,
                }
            })
            .collect()
    }
}

fn shadowed_by(source: Source) -> &'static str {
    match source {
        Source::Config => "a binding of this name in this node's configuration file runs here",
        _ => "a binding of this name with scope=node runs here",
    }
}

/// A table entry's binding, from settings this node accepted.
fn desired_of(s: &BindingSpec, sha256: &str, size: usize, version: u64) -> Desired {
    Desired {
        hook: s.hook.to_string(),
        topics: s.topics.iter().map(|t| t.to_string()).collect(),
        config: s.config.clone(),
        on_error: s.on_error.to_string(),
        fuel: s.limits.fuel,
        memory_bytes: s.limits.memory_bytes as u64,
        max_instances: s.limits.max_instances as u32,
        max_host_calls: s.limits.max_host_calls,
        sha256: sha256.to_owned(),
        size: size as u64,
        version,
    }
}

/// Checks a peer's entry before it is stored.
fn check_entry(e: &TableEntry) -> Result<(), String> {
    super::validate_name(&e.name).map_err(|e| e.to_string())?;
    if let Some(d) = &e.binding {
        let s = spec_of_desired(&e.name, d)?;
        check_settings(&s).map_err(|e| e.to_string())?;
        if d.sha256.len() != 64 || !d.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("sha256 {:?} is not 64 hex digits", d.sha256));
        }
    }
    Ok(())
}
