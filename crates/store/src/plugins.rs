//! Persistence for plugin bindings, their components and their key-value
//! data. The store keeps these as opaque bytes; the router gives them meaning.
//!
//! Keyspace `plugins`: `b` + binding name -> binding record;
//! `t` + binding name -> cluster binding table entry;
//! `c` + sha256 (hex) -> component bytes.
//! Keyspace `plugin_kv`: binding name + 0x00 + key -> value.

use crate::batch::{Durability, Staged};
use crate::error::Storage;
use crate::{Store, StoreError};

fn binding_key(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(b'b');
    k.extend_from_slice(name.as_bytes());
    k
}

fn table_key(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(b't');
    k.extend_from_slice(name.as_bytes());
    k
}

fn component_key(sha256: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + sha256.len());
    k.push(b'c');
    k.extend_from_slice(sha256.as_bytes());
    k
}

fn kv_key(scope: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(scope.len() + 1 + key.len());
    k.extend_from_slice(scope.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

fn kv_prefix(scope: &str) -> Vec<u8> {
    let mut k = scope.as_bytes().to_vec();
    k.push(0);
    k
}

impl Store {
    /// Stores a binding record and its component, durably (synced before
    /// returning). Replaces an earlier record of the same name.
    pub fn put_plugin(
        &self,
        name: &str,
        record: &[u8],
        sha256: &str,
        component: &[u8],
    ) -> Result<(), StoreError> {
        let sh = &*self.shared;
        let mut batch = Staged::new(sh, "plugin binding", Durability::Synced);
        batch.insert(&sh.plugins, component_key(sha256), component);
        batch.insert(&sh.plugins, binding_key(name), record);
        batch.commit()
    }

    /// Removes a binding record and its key-value data, and the component
    /// `sha256` when `drop_component` says no other binding uses it. Durable.
    pub fn remove_plugin(
        &self,
        name: &str,
        drop_component: Option<&str>,
    ) -> Result<(), StoreError> {
        let sh = &*self.shared;
        let mut batch = Staged::new(sh, "plugin removal", Durability::Synced);
        batch.remove(&sh.plugins, binding_key(name));
        if let Some(sha) = drop_component {
            batch.remove(&sh.plugins, component_key(sha));
        }
        for item in sh.plugin_kv.prefix(kv_prefix(name)) {
            batch.remove(&sh.plugin_kv, item.key().storage()?);
        }
        batch.commit()
    }

    /// Stores a cluster binding table entry and, when given, a component
    /// (sha256 in hex, bytes), durably. Replaces an earlier entry of the
    /// same name.
    pub fn put_plugin_entry(
        &self,
        name: &str,
        entry: &[u8],
        component: Option<(&str, &[u8])>,
    ) -> Result<(), StoreError> {
        let sh = &*self.shared;
        let mut batch = Staged::new(sh, "plugin table entry", Durability::Synced);
        if let Some((sha256, bytes)) = component {
            batch.insert(&sh.plugins, component_key(sha256), bytes);
        }
        batch.insert(&sh.plugins, table_key(name), entry);
        batch.commit()
    }

    /// Forgets a cluster binding table entry.
    pub fn remove_plugin_entry(&self, name: &str) -> Result<(), StoreError> {
        let sh = &*self.shared;
        let mut batch = Staged::new(sh, "plugin table entry removal", Durability::Deferred);
        batch.remove(&sh.plugins, table_key(name));
        batch.commit()
    }

    /// Every stored cluster binding table entry, by name.
    pub fn plugin_entries(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.shared.plugins.prefix(b"t") {
            let (k, v) = item.into_inner().storage()?;
            let name = std::str::from_utf8(&k[1..])
                .map_err(|_| StoreError::Corrupt("plugin table key"))?;
            out.push((name.to_owned(), v.to_vec()));
        }
        Ok(out)
    }

    /// Removes a component no binding uses any more.
    pub fn remove_component(&self, sha256: &str) -> Result<(), StoreError> {
        let sh = &*self.shared;
        let mut batch = Staged::new(sh, "plugin component removal", Durability::Deferred);
        batch.remove(&sh.plugins, component_key(sha256));
        batch.commit()
    }

    /// Every stored binding record, by name.
    pub fn plugins(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.shared.plugins.prefix(b"b") {
            let (k, v) = item.into_inner().storage()?;
            let name = std::str::from_utf8(&k[1..])
                .map_err(|_| StoreError::Corrupt("plugin binding key"))?;
            out.push((name.to_owned(), v.to_vec()));
        }
        Ok(out)
    }

    /// The stored component with this sha256.
    pub fn plugin_component(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .shared
            .plugins
            .get(component_key(sha256))
            .storage()?
            .map(|v| v.to_vec()))
    }

    /// A plugin key-value entry.
    pub fn kv_get(&self, scope: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .shared
            .plugin_kv
            .get(kv_key(scope, key))
            .storage()?
            .map(|v| v.to_vec()))
    }

    /// Sets a plugin key-value entry. Durable as publishes are under the
    /// node's fsync mode (it is written with the next journal sync).
    pub fn kv_set(&self, scope: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let sh = &*self.shared;
        let mut batch = Staged::new(sh, "plugin key-value", Durability::Deferred);
        batch.insert(&sh.plugin_kv, kv_key(scope, key), value);
        batch.commit()
    }

    /// Removes a plugin key-value entry.
    pub fn kv_delete(&self, scope: &str, key: &str) -> Result<(), StoreError> {
        let sh = &*self.shared;
        let mut batch = Staged::new(sh, "plugin key-value", Durability::Deferred);
        batch.remove(&sh.plugin_kv, kv_key(scope, key));
        batch.commit()
    }

    /// How many key-value entries `scope` holds.
    pub fn kv_count(&self, scope: &str) -> Result<usize, StoreError> {
        Ok(self.kv_usage(scope)?.0 as usize)
    }

    /// How many key-value entries `scope` holds, and their bytes (keys as
    /// the plugin named them, and values).
    pub fn kv_usage(&self, scope: &str) -> Result<(u64, u64), StoreError> {
        let prefix = kv_prefix(scope);
        let (mut n, mut bytes) = (0u64, 0u64);
        for item in self.shared.plugin_kv.prefix(&prefix) {
            let (k, v) = item.into_inner().storage()?;
            n += 1;
            bytes += (k.len().saturating_sub(prefix.len()) + v.len()) as u64;
        }
        Ok((n, bytes))
    }

    /// Removes every key-value entry of `scope`.
    pub fn kv_clear(&self, scope: &str) -> Result<(), StoreError> {
        let sh = &*self.shared;
        let mut batch = Staged::new(sh, "plugin key-value", Durability::Deferred);
        for item in sh.plugin_kv.prefix(kv_prefix(scope)) {
            batch.remove(&sh.plugin_kv, item.key().storage()?);
        }
        batch.commit()
    }
}
