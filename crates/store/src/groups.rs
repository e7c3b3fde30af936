//! Persistence for consumer groups: each group's settings, its position in
//! the log, its counters, and the messages it has delivered but not yet seen
//! acknowledged (with how often each was delivered). The store keeps the
//! settings and counters as opaque bytes; the router gives them meaning.
//!
//! Keyspace `groups`, keyed by group name (which never holds a zero byte):
//! `c` + name -> settings; `p` + name -> position (an encoded cursor);
//! `n` + name -> counters; `f` + name + 0 + origin + origin seq -> delivery
//! count, one per message in flight.

use std::sync::Arc;

use switchyard_model::{Cursor, Message, MessageId, NodeId, TopicSet, varint};

use crate::batch::{Durability, Staged};
use crate::codec::{decode_index, decode_message};
use crate::error::Storage;
use crate::{Store, StoreError, keys};

fn key(tag: u8, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(tag);
    k.extend_from_slice(name.as_bytes());
    k
}

fn inflight_prefix(name: &str) -> Vec<u8> {
    let mut k = key(b'f', name);
    k.push(0);
    k
}

fn inflight_key(name: &str, id: MessageId) -> Vec<u8> {
    let mut k = inflight_prefix(name);
    k.extend_from_slice(&id.origin.0.to_be_bytes());
    k.extend_from_slice(&id.seq.to_be_bytes());
    k
}

/// A group as persisted.
#[derive(Clone, Debug)]
pub struct StoredGroup {
    /// The group's name.
    pub name: String,
    /// Its settings, as the router encoded them.
    pub settings: Vec<u8>,
    /// Everything up to this position was delivered (and is acknowledged
    /// unless it is in `inflight`).
    pub cursor: Cursor,
    /// Its counters, as the router encoded them (empty when never written).
    pub counters: Vec<u8>,
    /// Messages delivered and not yet acknowledged, with their delivery counts.
    pub inflight: Vec<(MessageId, u32)>,
}

/// One atomic change to a group's state.
#[derive(Debug, Default)]
pub struct GroupWrite {
    /// The new position, if it moved.
    pub cursor: Option<Cursor>,
    /// The new counters, if they changed.
    pub counters: Option<Vec<u8>>,
    /// Messages now in flight (or delivered again), with their delivery counts.
    pub put: Vec<(MessageId, u32)>,
    /// Messages no longer in flight (acknowledged, dead-lettered or gone).
    pub remove: Vec<MessageId>,
}

impl GroupWrite {
    /// Whether the write changes nothing.
    pub fn is_empty(&self) -> bool {
        self.cursor.is_none()
            && self.counters.is_none()
            && self.put.is_empty()
            && self.remove.is_empty()
    }
}

impl Store {
    /// Creates a group with its settings and starting position, durably.
    pub fn create_group(
        &self,
        name: &str,
        settings: &[u8],
        cursor: &Cursor,
    ) -> Result<(), StoreError> {
        self.check_writable()?;
        let sh = &*self.shared;
        let mut batch = Staged::new(sh, "group creation", Durability::Synced);
        batch.insert(&sh.groups, key(b'c', name), settings);
        batch.insert(&sh.groups, key(b'p', name), cursor.encode().as_bytes());
        batch.commit()
    }

    /// Every persisted group with its whole state. Blocking.
    pub fn groups(&self) -> Result<Vec<StoredGroup>, StoreError> {
        let sh = &*self.shared;
        let mut out = Vec::new();
        for item in sh.groups.prefix(b"c") {
            let (k, v) = item.into_inner().storage()?;
            let name = std::str::from_utf8(&k[1..])
                .map_err(|_| StoreError::Corrupt("group name"))?
                .to_owned();
            out.push(self.load_group(name, v.to_vec())?);
        }
        Ok(out)
    }

    /// One persisted group with its whole state, `None` when there is no
    /// such group. Blocking.
    pub fn group(&self, name: &str) -> Result<Option<StoredGroup>, StoreError> {
        match self.shared.groups.get(key(b'c', name)).storage()? {
            Some(settings) => Ok(Some(self.load_group(name.to_owned(), settings.to_vec())?)),
            None => Ok(None),
        }
    }

    fn load_group(&self, name: String, settings: Vec<u8>) -> Result<StoredGroup, StoreError> {
        let sh = &*self.shared;
        let cursor = match sh.groups.get(key(b'p', &name)).storage()? {
            Some(p) => std::str::from_utf8(&p)
                .ok()
                .and_then(|s| s.parse::<Cursor>().ok())
                .ok_or(StoreError::Corrupt("group position"))?,
            None => Cursor::earliest(),
        };
        let counters = sh
            .groups
            .get(key(b'n', &name))
            .storage()?
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let prefix = inflight_prefix(&name);
        let mut inflight = Vec::new();
        for item in sh.groups.prefix(&prefix) {
            let (k, v) = item.into_inner().storage()?;
            let rest = &k[prefix.len()..];
            let bad = || StoreError::Corrupt("group in-flight key");
            let origin = u64::from_be_bytes(
                rest.get(..8)
                    .ok_or_else(bad)?
                    .try_into()
                    .map_err(|_| bad())?,
            );
            let seq = u64::from_be_bytes(
                rest.get(8..16)
                    .ok_or_else(bad)?
                    .try_into()
                    .map_err(|_| bad())?,
            );
            let mut b: &[u8] = &v;
            let deliveries =
                varint::get(&mut b).ok_or(StoreError::Corrupt("group delivery count"))?;
            inflight.push((
                MessageId {
                    origin: NodeId(origin),
                    seq,
                },
                deliveries.min(u32::MAX as u64) as u32,
            ));
        }
        Ok(StoredGroup {
            name,
            settings,
            cursor,
            counters,
            inflight,
        })
    }

    /// Replaces a group's whole state with `g` (received from the node that
    /// coordinated it before), durably. Blocking.
    pub fn put_group(&self, g: &StoredGroup) -> Result<(), StoreError> {
        self.check_writable()?;
        let sh = &*self.shared;
        let mut batch = Staged::new(sh, "group hand-over", Durability::Synced);
        self.remove_group(&mut batch, &g.name)?;
        batch.insert(&sh.groups, key(b'c', &g.name), g.settings.as_slice());
        batch.insert(&sh.groups, key(b'p', &g.name), g.cursor.encode().as_bytes());
        if !g.counters.is_empty() {
            batch.insert(&sh.groups, key(b'n', &g.name), g.counters.as_slice());
        }
        for &(id, n) in &g.inflight {
            let mut v = Vec::with_capacity(5);
            varint::put(&mut v, n as u64);
            batch.insert(&sh.groups, inflight_key(&g.name, id), v);
        }
        batch.commit()
    }

    fn remove_group(&self, batch: &mut Staged<'_>, name: &str) -> Result<(), StoreError> {
        let sh = &*self.shared;
        batch.remove(&sh.groups, key(b'c', name));
        batch.remove(&sh.groups, key(b'p', name));
        batch.remove(&sh.groups, key(b'n', name));
        for item in sh.groups.prefix(inflight_prefix(name)) {
            batch.remove(&sh.groups, item.key().storage()?);
        }
        Ok(())
    }

    /// Applies one change to a group atomically. Written through to the
    /// operating system before it returns (a crash of the process loses
    /// nothing); synced to disk as well when `fsync = always`. Blocking.
    pub fn write_group(&self, name: &str, w: &GroupWrite) -> Result<(), StoreError> {
        if w.is_empty() {
            return Ok(());
        }
        self.check_writable()?;
        let sh = &*self.shared;
        let mut batch = Staged::new(sh, "group state", Durability::Publish);
        if let Some(c) = &w.cursor {
            batch.insert(&sh.groups, key(b'p', name), c.encode().as_bytes());
        }
        if let Some(c) = &w.counters {
            batch.insert(&sh.groups, key(b'n', name), c.as_slice());
        }
        for &(id, n) in &w.put {
            let mut v = Vec::with_capacity(5);
            varint::put(&mut v, n as u64);
            batch.insert(&sh.groups, inflight_key(name, id), v);
        }
        for &id in &w.remove {
            batch.remove(&sh.groups, inflight_key(name, id));
        }
        batch.commit()
    }

    /// Removes a group and all its state, durably. Blocking.
    pub fn delete_group(&self, name: &str) -> Result<(), StoreError> {
        self.check_writable()?;
        let sh = &*self.shared;
        let mut batch = Staged::new(sh, "group removal", Durability::Synced);
        self.remove_group(&mut batch, name)?;
        batch.commit()
    }

    /// One message by id, from the in-memory tail or the log. `None` when
    /// it is not held (never stored here, or removed by retention).
    pub fn message(&self, id: MessageId) -> Result<Option<Arc<Message>>, StoreError> {
        let sh = &*self.shared;
        if id.seq == 0 {
            return Ok(None);
        }
        if id.origin == sh.node_id {
            let tail = sh.tail.read();
            if tail.covers(id.seq - 1)
                && let Some(m) = tail.after(id.seq - 1).next()
                && m.id == id
            {
                return Ok(Some(m.clone()));
            }
        } else if let Some(tail) = sh.remote_tails.read().get(&id.origin)
            && tail.covers(id.seq - 1)
            && let Some(m) = tail.after(id.seq - 1).next()
            && m.id == id
        {
            return Ok(Some(m.clone()));
        }
        let visible = sh.catalog.read().visible.get(&id.origin).copied();
        if visible.is_none_or(|v| id.seq > v) {
            return Ok(None);
        }
        match sh.log.get(keys::log_key(id.origin, id.seq)).storage()? {
            Some(v) => {
                Ok(decode_message(id.origin, id.seq, &v, |k| sh.staged_payload(k))?.map(Arc::new))
            }
            None => Ok(None),
        }
    }

    /// How many held messages of `topics` lie after `cursor`: one index
    /// seek per stream. Blocking.
    pub fn count_after(&self, topics: &TopicSet, cursor: &Cursor) -> Result<u64, StoreError> {
        let sh = &*self.shared;
        let streams: Vec<_> = {
            let catalog = sh.catalog.read();
            catalog
                .streams
                .iter()
                .filter(|(t, _)| topics.matches(t))
                .flat_map(|(t, s)| s.iter().map(move |(&o, m)| (t.clone(), o, *m)))
                .filter(|(_, o, m)| m.last_origin_seq > cursor.get(*o))
                .collect()
        };
        let mut total = 0;
        for (topic, origin, meta) in streams {
            let range = keys::index_key(&topic, origin, cursor.get(origin) + 1)
                ..=keys::index_key(&topic, origin, meta.last_origin_seq);
            if let Some(first) = sh.index.range(range).next() {
                let v = decode_index(&first.value().storage()?)?;
                total += meta.last_seq.saturating_sub(v.stream_seq) + 1;
            }
        }
        Ok(total)
    }

    pub(crate) fn check_writable(&self) -> Result<(), StoreError> {
        if self
            .shared
            .poisoned
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(StoreError::Poisoned);
        }
        if !self.is_writable() {
            return Err(StoreError::Closed);
        }
        Ok(())
    }
}
