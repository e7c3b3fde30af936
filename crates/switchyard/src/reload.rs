//! Reloading a running node's configuration (SIGHUP): what can change
//! without a restart is applied, and everything else that changed in the
//! file is named in the log as waiting for a restart.
//!
//! Applied on a reload:
//! - the configuration file's `[[plugin]]` bindings: new ones are bound,
//!   changed ones (settings or component file) bound again, removed ones
//!   unbound; unchanged ones keep running;
//! - the TLS certificate and key files are read again (the node also
//!   notices changed files by itself within a few seconds);
//! - the log filter (`log`, or `SWITCHYARD_LOG`, which wins over the file);
//! - the limits of [`switchyard_gateway::LIVE_KEYS`]: body, batch and pull
//!   limits, idle and body timeouts, SSE timing, the group-creation cap,
//!   the CORS origins.
//!
//! The rest of the configuration (listen address, limits, storage, auth
//! keys, cluster settings) is fixed at start: a change to it in the file is
//! logged as needing a restart, and the running value stays. Environment
//! variables and flags cannot change while a process runs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use std::sync::Mutex;

use switchyard_router::{Reloaded, Router};

use crate::config::NodeConfig;

/// Loads the configuration again, the way the node loaded it at start; a
/// refusal is the error's text.
pub type Loader = Box<dyn Fn() -> Result<NodeConfig, String> + Send + Sync>;

/// What one reload did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The new configuration was refused; nothing changed.
    pub refused: Option<String>,
    /// What happened to each of the file's plugin bindings.
    pub plugins: Vec<(String, Reloaded)>,
    /// Whether the TLS certificate loaded again (`None` without TLS).
    pub tls: Option<bool>,
    /// Keys of the file that changed and take effect only at a restart.
    pub restart_needed: Vec<String>,
    /// The new log filter, when it changed.
    pub log_filter: Option<String>,
    /// Keys of [`switchyard_gateway::LIVE_KEYS`] whose new values apply.
    pub limits: Vec<&'static str>,
}

/// Reloads a node's configuration on demand.
pub struct Reloader {
    router: Router,
    tls: Option<switchyard_gateway::tls::ServerCert>,
    file: Option<PathBuf>,
    load: Loader,
    /// The file's values as last loaded, by dotted key.
    seen: Mutex<BTreeMap<String, toml::Value>>,
    log: crate::logging::FilterReload,
    /// The log filter in force.
    filter: Mutex<String>,
    /// The running server's reloadable settings.
    live: switchyard_gateway::Live,
}

impl Reloader {
    /// A reloader for the node whose engine is `router`, loaded from
    /// `file` (if any) by `load`, whose log filter is `filter` (replaced
    /// through `log`) and whose server reads its reloadable settings from
    /// `live`.
    pub fn new(
        router: Router,
        tls: Option<switchyard_gateway::tls::ServerCert>,
        file: Option<PathBuf>,
        load: Loader,
        log: crate::logging::FilterReload,
        filter: String,
        live: switchyard_gateway::Live,
    ) -> Reloader {
        let seen = file.as_deref().map(flat_file).unwrap_or_default();
        Reloader {
            router,
            tls,
            file,
            load,
            seen: Mutex::new(seen),
            log,
            filter: Mutex::new(filter),
            live,
        }
    }

    /// Loads the configuration again and applies what can change; logs
    /// what changed and what needs a restart.
    pub async fn reload(&self) -> Outcome {
        tracing::info!(target: "switchyard", "reloading the configuration");
        // The certificate files first: the node reads them itself, and a
        // pair that does not load would also refuse the configuration.
        let tls = match self.tls.clone() {
            Some(cert) => tokio::task::spawn_blocking(move || cert.reload())
                .await
                .ok(),
            None => None,
        };
        let config = match (self.load)() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    target: "switchyard",
                    error = %e,
                    "configuration not reloaded; the running one stays"
                );
                return Outcome {
                    refused: Some(e),
                    tls,
                    ..Outcome::default()
                };
            }
        };
        let mut out = Outcome {
            tls,
            ..Outcome::default()
        };
        {
            let mut current = self.filter.lock().unwrap_or_else(|e| e.into_inner());
            if *current != config.log_filter {
                match self.log.set(&config.log_filter) {
                    // At `warn`, so that it shows under most filters.
                    Ok(()) => {
                        tracing::warn!(
                            target: "switchyard",
                            filter = %config.log_filter,
                            "log filter changed"
                        );
                        current.clone_from(&config.log_filter);
                        out.log_filter = Some(config.log_filter.clone());
                    }
                    Err(error) => tracing::warn!(
                        target: "switchyard",
                        %error,
                        "log filter not changed"
                    ),
                }
            }
        }
        out.limits = self.live.apply(&config.gateway);
        self.router
            .plugins()
            .set_max_component(config.gateway.max_plugin_bytes);
        if !out.limits.is_empty() {
            tracing::info!(
                target: "switchyard",
                keys = %out.limits.join(", "),
                "limits changed"
            );
        }
        let router = self.router.clone();
        let bindings = config.router.plugins.bindings.clone();
        out.plugins =
            tokio::task::spawn_blocking(move || router.plugins().reload_configured(&bindings))
                .await
                .unwrap_or_default();
        for (name, change) in &out.plugins {
            match change {
                Reloaded::Unchanged => {}
                Reloaded::Failed(error) => tracing::warn!(
                    target: "switchyard",
                    plugin = %name,
                    %error,
                    "plugin binding from the configuration file not applied"
                ),
                other => tracing::info!(
                    target: "switchyard",
                    plugin = %name,
                    change = ?other,
                    "plugin binding from the configuration file applied"
                ),
            }
        }
        if let Some(file) = &self.file {
            let now = flat_file(file);
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            out.restart_needed = changed_keys(&seen, &now)
                .into_iter()
                .filter(|k| !applied_on_reload(k))
                .collect();
            *seen = now;
        }
        let changed = out
            .plugins
            .iter()
            .filter(|(_, c)| !matches!(c, Reloaded::Unchanged | Reloaded::Failed(_)))
            .count();
        if out.restart_needed.is_empty() {
            tracing::info!(
                target: "switchyard",
                plugins_changed = changed,
                "configuration reloaded"
            );
        } else {
            tracing::warn!(
                target: "switchyard",
                plugins_changed = changed,
                needs_restart = %out.restart_needed.join(", "),
                "configuration reloaded; some changes take effect only at a restart"
            );
        }
        out
    }
}

/// Whether a changed file key takes effect on a reload.
fn applied_on_reload(key: &str) -> bool {
    key == "log"
        || key == "plugin"
        || key.starts_with("plugin[")
        || key.starts_with("plugin.")
        || switchyard_gateway::LIVE_KEYS.contains(&key)
}

/// The file's values by dotted key (`limits.max_payload_bytes`; arrays of
/// tables as `plugin[0].name`, and `plugin` itself when their number
/// changed). Empty when the file does not read or parse: a reload that
/// loads it refuses it anyway.
fn flat_file(path: &std::path::Path) -> BTreeMap<String, toml::Value> {
    let mut out = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(path) else {
        return out;
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return out;
    };
    flatten("", &toml::Value::Table(table), &mut out);
    out
}

fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, toml::Value>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        toml::Value::Array(items)
            if items.iter().all(toml::Value::is_table) && !items.is_empty() =>
        {
            out.insert(prefix.to_owned(), toml::Value::Integer(items.len() as i64));
            for (i, item) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), item, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.clone());
        }
    }
}

/// Keys added, removed or changed from `old` to `new`, sorted.
fn changed_keys(
    old: &BTreeMap<String, toml::Value>,
    new: &BTreeMap<String, toml::Value>,
) -> Vec<String> {
    let mut keys: Vec<String> = old
        .iter()
        .filter(|(k, v)| new.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .chain(new.keys().filter(|k| !old.contains_key(*k)).cloned())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(text: &str) -> BTreeMap<String, toml::Value> {
        let mut out = BTreeMap::new();
        flatten("", &toml::Value::Table(text.parse().unwrap()), &mut out);
        out
    }

    #[test]
    fn changed_keys_name_every_difference_once() {
        let old = flat(
            "listen = \"127.0.0.1:1\"\n[limits]\nmax_payload_bytes = 10\n\
             [[plugin]]\nname = \"a\"\n",
        );
        let new = flat(
            "listen = \"127.0.0.1:1\"\n[limits]\nmax_payload_bytes = 20\nmax_batch_bytes = 5\n\
             [[plugin]]\nname = \"a\"\n[[plugin]]\nname = \"b\"\n",
        );
        assert_eq!(
            changed_keys(&old, &new),
            [
                "limits.max_batch_bytes",
                "limits.max_payload_bytes",
                "plugin",
                "plugin[1].name"
            ]
        );
        let restart: Vec<_> = changed_keys(&old, &new)
            .into_iter()
            .filter(|k| !applied_on_reload(k))
            .collect();
        // max_batch_bytes applies on a reload; max_payload_bytes does not.
        assert_eq!(restart, ["limits.max_payload_bytes"]);
        assert!(changed_keys(&new, &new).is_empty());
    }

    #[test]
    fn a_removed_key_is_a_change() {
        let old = flat("[store]\nfsync = \"never\"\n");
        let new = flat("");
        assert_eq!(changed_keys(&old, &new), ["store.fsync"]);
    }
}
