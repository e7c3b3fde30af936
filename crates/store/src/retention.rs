//! Retention: the retention thread finds what the policies remove and
//! hands it to the writer in bounded chunks, so that publishes interleave
//! with trimming and never wait for a whole pass; the writer removes it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use switchyard_model::{NodeId, Timestamp, Topic};
use tokio::sync::mpsc;

use crate::batch::{Durability, Staged, TrimEntry};
use crate::codec::{decode_index, decode_u64s};
use crate::error::Storage;
use crate::keys;
use crate::store::{Shared, Stopper};
use crate::writer::{Command, Writer, now_ms};
use crate::{RetentionPolicy, StoreError};

/// Most messages removed by one trim command.
const TRIM_CHUNK: usize = 1024;
/// Most expired idempotency records removed per pass.
const IDEM_CHUNK: usize = 4096;

pub(crate) fn run(sh: &Arc<Shared>, tx: &mpsc::Sender<Command>, stopper: &Stopper) {
    while !stopper.wait(sh.config.retention_interval) {
        // A poisoned store removes nothing more.
        if sh.poisoned.load(Ordering::SeqCst) {
            continue;
        }
        if let Err(e) = pass(sh, tx, stopper) {
            tracing::warn!(error = %e, "retention pass failed");
        }
    }
}

fn pass(sh: &Arc<Shared>, tx: &mpsc::Sender<Command>, stopper: &Stopper) -> Result<(), StoreError> {
    let streams: Vec<(Topic, NodeId, u64, u64)> = {
        let catalog = sh.catalog.read();
        catalog
            .streams
            .iter()
            .flat_map(|(t, s)| {
                let visible = |o: &NodeId| catalog.visible.get(o).copied().unwrap_or(0);
                s.iter()
                    .filter(|(_, m)| m.count > 0)
                    .map(move |(o, m)| (t.clone(), *o, m.bytes, visible(o)))
            })
            .collect()
    };
    for (topic, origin, bytes, visible) in streams {
        let policy = sh.config.retention_for(&topic);
        if policy == RetentionPolicy::default() {
            continue;
        }
        let mut bytes = bytes;
        // Chunks are planned back to back before the writer applies them, so
        // each chunk starts after the previous one.
        let mut after = 0;
        loop {
            if stopper.wait(std::time::Duration::ZERO) {
                return Ok(());
            }
            let (entries, next_first_ts) = plan(sh, &topic, origin, after, visible, bytes, policy)?;
            let Some(last) = entries.last() else { break };
            after = last.origin_seq;
            let full = entries.len() == TRIM_CHUNK;
            bytes = bytes.saturating_sub(entries.iter().map(|e| e.size).sum::<u64>());
            let cmd = Command::Trim {
                topic: topic.clone(),
                origin,
                entries,
                next_first_ts,
            };
            if tx.blocking_send(cmd).is_err() || !full {
                break;
            }
        }
    }
    expire_idempotency(sh, tx)
}

/// The oldest messages of a stream that the policy removes (at most one chunk).
pub(crate) fn plan(
    sh: &Shared,
    topic: &Topic,
    origin: NodeId,
    after: u64,
    visible: u64,
    mut bytes: u64,
    policy: RetentionPolicy,
) -> Result<(Vec<TrimEntry>, Option<Timestamp>), StoreError> {
    let oldest_kept = policy
        .max_age
        .map(|a| Timestamp::from_millis(now_ms().saturating_sub(a.as_millis() as u64)));
    let mut out = Vec::new();
    let range = keys::index_key(topic, origin, after + 1)..=keys::index_key(topic, origin, visible);
    let mut entries = sh.index.range(range).peekable();
    while let Some(item) = entries.next() {
        let (k, v) = item.into_inner().storage()?;
        let seq = keys::index_key_seq(&k).ok_or(StoreError::Corrupt("index key"))?;
        let iv = decode_index(&v)?;
        let too_old = oldest_kept.is_some_and(|t| iv.timestamp < t);
        // A stream over its size keeps its newest message all the same.
        let too_big = policy.max_bytes.is_some_and(|max| bytes > max) && entries.peek().is_some();
        if !(too_old || too_big) {
            return Ok((out, Some(iv.timestamp)));
        }
        if out.len() == TRIM_CHUNK {
            return Ok((out, Some(iv.timestamp)));
        }
        bytes = bytes.saturating_sub(iv.size);
        out.push(TrimEntry {
            origin_seq: seq,
            stream_seq: iv.stream_seq,
            size: iv.size,
            staged: iv.staged,
        });
    }
    Ok((out, None))
}

fn expire_idempotency(sh: &Shared, tx: &mpsc::Sender<Command>) -> Result<(), StoreError> {
    let now = sh.steady.now_ms();
    let mut expired = Vec::new();
    for item in sh.idem.iter() {
        let (k, v) = item.into_inner().storage()?;
        let [.., expires] = decode_u64s::<5>(&v, "idempotency record")?;
        if expires <= now {
            expired.push(k.to_vec());
            if expired.len() == IDEM_CHUNK {
                break;
            }
        }
    }
    if !expired.is_empty() {
        let _ = tx.blocking_send(Command::ExpireIdem { keys: expired });
    }
    Ok(())
}

impl Writer {
    /// Removes the oldest messages of stream (`topic`, `origin`), as the
    /// retention thread planned them.
    pub(crate) fn trim(
        &mut self,
        topic: &Topic,
        origin: NodeId,
        entries: &[TrimEntry],
        next_first_ts: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let mut staged = Staged::new(&self.shared, "retention trim", Durability::Deferred);
        let removed = staged.trim(topic, origin, entries, next_first_ts);
        if removed == 0 {
            return Ok(());
        }
        let through = staged.stream(topic, origin).trimmed_seq;
        staged.commit()?;
        tracing::debug!(%topic, %origin, removed, through, "retention trimmed stream");
        Ok(())
    }

    /// Removes the idempotency records `keys` that are still expired.
    pub(crate) fn expire_idem(&mut self, keys: Vec<Vec<u8>>) -> Result<(), StoreError> {
        let sh = &*self.shared;
        let now = sh.steady.now_ms();
        let mut staged = Staged::new(sh, "idempotency expiry", Durability::Deferred);
        for k in keys {
            if let Some(v) = sh.idem.get(&k).storage()? {
                let [.., expires] = decode_u64s::<5>(&v, "idempotency record")?;
                if expires <= now {
                    staged.remove(&sh.idem, k);
                }
            }
        }
        staged.commit()
    }
}
