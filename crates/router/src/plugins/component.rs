//! The component a binding runs, as bytes (for `GET
//! /v1/plugins/{name}/component`, which `plugin test --against` uses).

use super::{Plugins, Source, info_of};
use crate::RouterError;
use crate::plugins::PluginInfo;

/// How often a read is tried again when the binding was replaced while
/// its component was read.
const ATTEMPTS: usize = 3;

impl Plugins {
    /// The binding `name` and the bytes of the component it runs (their
    /// sha256 is `info.sha256`). A binding from the configuration file has
    /// its component in that file, not in the store: refused with
    /// [`RouterError::PluginConflict`] unless an API binding stored the
    /// same component. Blocking (reads the store).
    pub fn component(&self, name: &str) -> Result<(PluginInfo, Vec<u8>), RouterError> {
        for _ in 0..ATTEMPTS {
            let Some(entry) = self.snapshot().bindings.get(name).cloned() else {
                return Err(RouterError::PluginNotFound(name.to_owned()));
            };
            let sha = entry.binding.plugin().sha256();
            match self.store.plugin_component(&sha)? {
                Some(bytes) => return Ok((info_of(name, &entry), bytes)),
                None if entry.source == Source::Config => {
                    return Err(RouterError::PluginConflict(format!(
                        "plugin {name} is bound by the configuration file; its component \
                         is the file named there, on the node"
                    )));
                }
                // Replaced (and its component deleted) since the snapshot
                // was read: read the new version.
                None => continue,
            }
        }
        Err(RouterError::PluginConflict(format!(
            "plugin {name} changed while its component was read; try again"
        )))
    }
}
