//! Large batches written in slices, so that single publishes do not wait
//! for them.
//!
//! The storage engine commits one batch at a time, holding its journal
//! through the whole write, so a batch of megabytes committed at once
//! holds every other commit for as long as it takes (about 13 ms for
//! 4 MB on a small machine). A batch whose payloads reach
//! [`BULK_BYTES`](crate::BULK_BYTES) is therefore written in two parts:
//!
//! 1. Its payloads go to the `staged` keyspace in slices of about
//!    [`SLICE_BYTES`], one commit each, under a staging id. The first slice
//!    also writes a `b` ++ id marker to `meta`. Nothing is visible yet;
//!    the writer commits small appends between the slices.
//! 2. One commit then writes the batch's `log` records (which name their
//!    payload's `staged` key instead of holding it), its index entries and
//!    stream metadata, and removes the marker: the batch becomes visible
//!    at once, atomically, with dense sequence numbers taken at that
//!    moment.
//!
//! Readers follow a record's key to its payload. Retention removes the
//! payload with the record (the index entry names the key). A crash
//! between the two parts leaves a marker: [`recover`] removes the payloads
//! it names when the store opens.

use bytes::Bytes;
use fjall::{Database, Keyspace, PersistMode};

use crate::append::{Append, Pending};
use crate::batch::{Durability, Staged};
use crate::codec::StagedKey;
use crate::error::Storage;
use crate::store::Shared;
use crate::writer::{BULK_BYTES, Writer};
use crate::{StoreError, keys};

/// About how many payload bytes one slice commits.
pub(crate) const SLICE_BYTES: usize = 256 * 1024;

/// Whether an append request's payloads are staged in slices before the
/// commit that makes it visible.
pub(crate) fn is_staged(batch: &[Append]) -> bool {
    batch.iter().map(|a| a.payload.len()).sum::<usize>() >= BULK_BYTES
}

impl Shared {
    /// The payload stored apart under `k`; `None` once retention removed it.
    pub(crate) fn staged_payload(&self, k: &StagedKey) -> Result<Option<Bytes>, StoreError> {
        Ok(self
            .staged
            .get(k)
            .storage()?
            .map(|v| Bytes::copy_from_slice(&v)))
    }
}

/// Removes the payloads of batches whose staging a crash interrupted (a
/// marker without the commit that removes it) and returns the next
/// staging id. Runs when the store opens, before the writer starts.
pub(crate) fn recover(
    db: &Database,
    meta: &Keyspace,
    staged: &Keyspace,
) -> Result<u64, StoreError> {
    let mut interrupted = Vec::new();
    for item in meta.prefix(b"b") {
        let k = item.key().storage()?;
        let id = k
            .get(1..)
            .and_then(keys::staged_key_id)
            .ok_or(StoreError::Corrupt("staging marker"))?;
        interrupted.push(id);
    }
    let mut next = interrupted.iter().max().map_or(1, |id| id + 1);
    if let Some(last) = staged.last_key_value() {
        let k = last.key().storage()?;
        let id = keys::staged_key_id(&k).ok_or(StoreError::Corrupt("staged key"))?;
        next = next.max(id + 1);
    }
    if interrupted.is_empty() {
        return Ok(next);
    }
    let mut batch = db.batch();
    let mut payloads = 0usize;
    for &id in &interrupted {
        for item in staged.range(keys::staged_key(id, 0)..=keys::staged_key(id, u32::MAX)) {
            batch.remove(staged, item.key().storage()?);
            payloads += 1;
        }
        batch.remove(meta, keys::staging_meta_key(id));
    }
    batch.commit().storage()?;
    db.persist(PersistMode::SyncAll).storage()?;
    tracing::warn!(
        batches = interrupted.len(),
        payloads,
        "removed the payloads of batches whose writing the last run did not finish (never \
         acknowledged)"
    );
    Ok(next)
}

/// A bulk append on its way through the writer.
pub(crate) struct BulkJob {
    pub pending: Pending,
    /// Its staging id and how many of its payloads are staged, once the
    /// first slice is.
    progress: Option<(u64, usize)>,
}

impl BulkJob {
    pub fn new(pending: Pending) -> Self {
        BulkJob {
            pending,
            progress: None,
        }
    }
}

/// What one step of a bulk append left.
pub(crate) enum BulkStep {
    /// More slices to stage: the job goes back to the front of the queue.
    More(BulkJob),
    /// Committed and answered.
    Done,
}

impl Writer {
    /// Takes one step of a bulk append: stages its next slice, or commits
    /// and answers it. A bulk append too small to stage, or met with the
    /// store poisoned, is committed (or refused) at once.
    pub(crate) fn bulk_step(&mut self, mut job: BulkJob) -> BulkStep {
        let poisoned = self
            .shared
            .poisoned
            .load(std::sync::atomic::Ordering::SeqCst);
        if poisoned || !is_staged(&job.pending.0) {
            self.commit_appends(vec![job.pending]);
            return BulkStep::Done;
        }
        let (id, done) = match job.progress {
            Some(p) => p,
            None => {
                let id = self.next_staging;
                self.next_staging += 1;
                (id, 0)
            }
        };
        if done == job.pending.0.len() {
            self.commit_staged(job.pending, id);
            return BulkStep::Done;
        }
        match self.guarded("staging", |w| w.stage_slice(&job.pending.0, id, done)) {
            Ok(upto) => {
                job.progress = Some((id, upto));
                BulkStep::More(job)
            }
            // The store is poisoned now (a staging write failed); the
            // commit refuses the request and releases its keys.
            Err(_) => {
                self.commit_appends(vec![job.pending]);
                BulkStep::Done
            }
        }
    }

    /// Commits the payloads of `batch` from entry `from` on, about
    /// [`SLICE_BYTES`] of them and at least one, under staging id `id`;
    /// returns the index of the first entry not staged.
    fn stage_slice(&mut self, batch: &[Append], id: u64, from: usize) -> Result<usize, StoreError> {
        let sh = &*self.shared;
        let mut staged = Staged::new(sh, "staging", Durability::Deferred);
        if from == 0 {
            staged.insert(&sh.meta, keys::staging_meta_key(id), b"");
        }
        let mut bytes = 0;
        let mut upto = from;
        for a in &batch[from..] {
            if upto > from && bytes >= SLICE_BYTES {
                break;
            }
            staged.insert(
                &sh.staged,
                keys::staged_key(id, entry(upto)),
                &a.payload[..],
            );
            bytes += a.payload.len();
            upto += 1;
        }
        staged.commit()?;
        Ok(upto)
    }
}

/// The entry index of a staged payload. A batch holds far fewer entries
/// than `u32::MAX` (the API caps it at thousands).
pub(crate) fn entry(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

#[cfg(test)]
#[path = "staging_tests.rs"]
mod tests;
