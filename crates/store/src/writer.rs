//! The writer thread: the single writer of the store's logs. It owns
//! sequence assignment and the HLC, commits waiting appends as one batch
//! with one sync (group commit), stores messages of other origins, applies
//! retention trims, and makes messages visible. Every change it makes goes
//! through [`crate::batch::Staged`].
//!
//! A panic in the writer is caught: it poisons the store, the request in
//! progress is answered [`StoreError::Poisoned`], and the thread lives on to
//! refuse later writes with that error (readers are not affected).

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use fjall::PersistMode;
use parking_lot::Mutex;
use switchyard_model::{Hlc, Message, NodeId, Timestamp, Topic, TopicSet};
use tokio::sync::{mpsc, oneshot};

use crate::append::Pending;
use crate::batch::TrimEntry;
use crate::replica::OriginTrim;
use crate::staging::{BulkJob, BulkStep};
use crate::store::Shared;
use crate::{Append, Appended, FsyncMode, StoreError, keys};

pub(crate) enum Command {
    Append {
        batch: Vec<Append>,
        reply: oneshot::Sender<Result<Vec<Appended>, StoreError>>,
    },
    /// Sync and make pending messages visible ([`FsyncMode::Interval`]).
    Sync,
    /// Remove the oldest messages of a stream. `next_first_ts` is the timestamp
    /// of the first message that stays (if any).
    Trim {
        topic: Topic,
        origin: NodeId,
        entries: Vec<TrimEntry>,
        next_first_ts: Option<Timestamp>,
    },
    /// Remove idempotency records if they are still expired.
    ExpireIdem {
        keys: Vec<Vec<u8>>,
    },
    /// Store messages of another origin (see [`crate::Store::ingest`]).
    Ingest {
        origin: NodeId,
        messages: Vec<Message>,
        through: u64,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    /// Store older messages of another origin (see [`crate::Store::fill`]).
    Fill {
        origin: NodeId,
        messages: Vec<Message>,
        after: u64,
        through: u64,
        complete: Option<(TopicSet, Vec<OriginTrim>)>,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    Shutdown,
}

/// An append is bulk from this many messages on: it is committed alone,
/// after the small appends waiting with it.
pub(crate) const BULK_MESSAGES: usize = 64;
/// An append is bulk from this many payload bytes on. Batch requests this
/// large also wait at the API while the engine is behind.
pub const BULK_BYTES: usize = 256 * 1024;
/// How often a writer holding bulk appends back looks again whether the
/// engine has caught up, when nothing else waits.
const PRESSURE_POLL: std::time::Duration = std::time::Duration::from_millis(1);
/// While the engine is behind, the writer waits this long before each
/// commit of small appends.
const PRESSURE_PACE: std::time::Duration = std::time::Duration::from_millis(2);
/// Small appends committed this recently make bulk ones take their share.
const SMALL_RECENT: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether an append request is bulk: a commit of its own that would hold
/// small appends waiting behind it (a commit costs a few microseconds per
/// message, so 1,000 messages hold the writer for milliseconds).
pub(crate) fn is_bulk(batch: &[Append]) -> bool {
    is_bulk_size(
        batch.len(),
        batch.iter().map(|a| a.payload.len()).sum::<usize>(),
    )
}

/// Whether `messages` messages of `bytes` payload bytes in all make a bulk
/// write ([`is_bulk`]).
pub(crate) fn is_bulk_size(messages: usize, bytes: usize) -> bool {
    messages >= BULK_MESSAGES || bytes >= BULK_BYTES
}

/// The writer thread: takes commands from the bounded channel and applies
/// them under the writer's lock. Small appends that are waiting together
/// are committed together (group commit) and ahead of bulk ones, which are
/// committed one at a time, taking turns with the small ones: a single
/// publish waits for at most one bulk commit, however many are queued, and
/// bulk appends are not starved by a steady flow of small ones.
pub(crate) struct WriterLoop {
    pub writer: Arc<Mutex<Writer>>,
    pub rx: mpsc::Receiver<Command>,
}

/// How much of the writer's time bulk appends get: all of it while no
/// small appends come, and about `percent` % while they do (after a bulk
/// commit, the next waits (100 - percent) / percent times as long as it
/// took), so that a bulk load slows down instead of holding up single
/// publishes, and still goes on.
#[derive(Debug)]
struct BulkShare {
    /// Percent of the writer's time bulk appends get while small ones come
    /// (1-100).
    percent: u32,
    /// When the next bulk commit may start.
    after: Option<Instant>,
    /// When small appends were last committed.
    last_small: Option<Instant>,
}

impl BulkShare {
    /// A share of `percent` % (clamped to 1-100).
    fn new(percent: u8) -> Self {
        BulkShare {
            percent: u32::from(percent.clamp(1, 100)),
            after: None,
            last_small: None,
        }
    }

    /// How long bulk appends wait after a bulk commit that took `took`,
    /// while small appends come.
    fn pause_after(&self, took: std::time::Duration) -> std::time::Duration {
        took * (100 - self.percent) / self.percent
    }

    fn small_committed(&mut self, now: Instant) {
        self.last_small = Some(now);
    }

    fn bulk_committed(&mut self, started: Instant, now: Instant) {
        let small_recent = self
            .last_small
            .is_some_and(|t| now.saturating_duration_since(t) < SMALL_RECENT);
        self.after =
            small_recent.then(|| now + self.pause_after(now.saturating_duration_since(started)));
    }

    fn bulk_may_go(&self, now: Instant) -> bool {
        self.after.is_none_or(|t| now >= t)
    }

    /// Until when bulk appends wait, or `None` when one may go now: until
    /// their share allows, and while the engine is behind (`pressure`),
    /// [`PRESSURE_POLL`] at a time.
    fn bulk_waits_until(&self, now: Instant, pressure: impl FnOnce() -> bool) -> Option<Instant> {
        if !self.bulk_may_go(now) {
            return self.after;
        }
        pressure().then(|| now + PRESSURE_POLL)
    }
}

/// What [`Waiter::recv_until`] got.
enum Received {
    Command(Command),
    /// The time ran out first.
    Nothing,
    /// Every sender is gone.
    Closed,
}

/// Waits for the writer's next command with a deadline, so that a small
/// append that comes while bulk appends wait their turn is taken at once
/// instead of after a sleep. The channel is tokio's, so the wait runs on a
/// runtime of the writer thread's own with only a timer.
struct Waiter(Option<tokio::runtime::Runtime>);

impl Waiter {
    fn new() -> Waiter {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build();
        if let Err(e) = &rt {
            tracing::warn!(error = %e, "the writer polls for commands while bulk appends wait");
        }
        Waiter(rt.ok())
    }

    fn recv_until(&self, rx: &mut mpsc::Receiver<Command>, until: Instant) -> Received {
        let received = match &self.0 {
            Some(rt) => {
                rt.block_on(async { tokio::time::timeout_at(until.into(), rx.recv()).await.ok() })
            }
            None => match rx.try_recv() {
                Ok(c) => Some(Some(c)),
                Err(mpsc::error::TryRecvError::Disconnected) => Some(None),
                Err(mpsc::error::TryRecvError::Empty) => {
                    std::thread::sleep(
                        until
                            .saturating_duration_since(Instant::now())
                            .min(PRESSURE_POLL),
                    );
                    None
                }
            },
        };
        match received {
            Some(Some(c)) => Received::Command(c),
            Some(None) => Received::Closed,
            None => Received::Nothing,
        }
    }
}

/// What the writer does next.
enum Next {
    Command(Command),
    Bulk(BulkJob),
}

impl WriterLoop {
    pub fn run(mut self) {
        let shared = self.writer.lock().shared.clone();
        let mut carried: Option<Command> = None;
        let mut bulk: VecDeque<BulkJob> = VecDeque::new();
        // A bulk append goes next (after a group of small ones).
        let mut bulk_turn = false;
        let mut share = BulkShare::new(shared.config.bulk_share_percent);
        let waiter = Waiter::new();
        loop {
            let next = if let Some(c) = carried.take() {
                Next::Command(c)
            } else if bulk.is_empty() {
                match self.rx.blocking_recv() {
                    Some(c) => Next::Command(c),
                    None => break,
                }
            } else if let Some(until) =
                share.bulk_waits_until(Instant::now(), || shared.under_write_pressure())
            {
                // Bulk appends wait: for their share of the writer's time,
                // or while the engine is behind on flushing and compacting,
                // so that it never holds every write (which it does a
                // little further on, 100 ms at a time). Small appends go
                // on meanwhile, taken as soon as they come.
                match waiter.recv_until(&mut self.rx, until) {
                    Received::Command(c) => Next::Command(c),
                    Received::Nothing => continue,
                    Received::Closed => Next::Bulk(bulk.pop_front().expect("bulk is not empty")),
                }
            } else if bulk_turn {
                Next::Bulk(bulk.pop_front().expect("bulk is not empty"))
            } else {
                match self.rx.try_recv() {
                    Ok(c) => Next::Command(c),
                    Err(_) => Next::Bulk(bulk.pop_front().expect("bulk is not empty")),
                }
            };
            bulk_turn = false;
            if matches!(next, Next::Command(Command::Shutdown)) {
                break;
            }
            // The writer answers a panic in a request itself; this catches
            // one anywhere else, so the thread goes on refusing writes.
            let step = catch_unwind(AssertUnwindSafe(|| match next {
                Next::Command(cmd) => {
                    bulk_turn = self.step(cmd, &shared, &mut carried, &mut bulk);
                    if bulk_turn {
                        share.small_committed(Instant::now());
                    }
                }
                Next::Bulk(job) => {
                    let started = Instant::now();
                    let step = self.writer.lock().bulk_step(job);
                    if let BulkStep::More(job) = step {
                        bulk.push_front(job);
                    }
                    share.bulk_committed(started, Instant::now());
                }
            }));
            if let Err(panic) = step {
                shared.poison("writer", &PanicMessage(&panic));
            }
        }
        // Bulk appends already taken are answered before the close.
        for job in bulk {
            let one = catch_unwind(AssertUnwindSafe(|| {
                let mut step = BulkStep::More(job);
                while let BulkStep::More(job) = step {
                    step = self.writer.lock().bulk_step(job);
                }
            }));
            if let Err(panic) = one {
                shared.poison("writer", &PanicMessage(&panic));
            }
        }
        let finished = catch_unwind(AssertUnwindSafe(|| self.writer.lock().finish()));
        if let Err(panic) = finished {
            shared.poison("close", &PanicMessage(&panic));
        }
    }

    /// Applies one command. A small append takes the other small appends
    /// already waiting, up to the commit caps, into the same commit; bulk
    /// appends met on the way are set aside in `bulk`. A command that is
    /// not an append ends the group and is `carried` over. Returns whether
    /// small appends were committed (a bulk append's turn comes next).
    fn step(
        &mut self,
        cmd: Command,
        shared: &crate::store::Shared,
        carried: &mut Option<Command>,
        bulk: &mut VecDeque<BulkJob>,
    ) -> bool {
        let config = &shared.config;
        let Command::Append { batch, reply } = cmd else {
            self.writer.lock().handle(cmd);
            return false;
        };
        if is_bulk(&batch) {
            bulk.push_back(BulkJob::new((batch, reply)));
            return false;
        }
        if shared.under_write_pressure() {
            // The engine is behind on flushing: commit less often, in
            // larger groups, and leave its threads the processor, before
            // it holds every write 100 ms at a time.
            std::thread::sleep(PRESSURE_PACE);
        }
        let mut messages = batch.len();
        let mut bytes: usize = batch.iter().map(|a| a.payload.len()).sum();
        let mut group: Vec<Pending> = vec![(batch, reply)];
        while messages < config.max_commit_messages && bytes < config.max_commit_bytes {
            match self.rx.try_recv() {
                Ok(Command::Append { batch, reply }) if is_bulk(&batch) => {
                    bulk.push_back(BulkJob::new((batch, reply)));
                }
                Ok(Command::Append { batch, reply }) => {
                    messages += batch.len();
                    bytes += batch.iter().map(|a| a.payload.len()).sum::<usize>();
                    group.push((batch, reply));
                }
                Ok(other) => {
                    *carried = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        self.writer.lock().commit_appends(group);
        true
    }
}

/// A caught panic's message, for the log.
struct PanicMessage<'a>(&'a (dyn std::any::Any + Send));

impl std::fmt::Display for PanicMessage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self
            .0
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| self.0.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        write!(f, "panic: {text}")
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The clock idempotency windows run on: milliseconds on the Unix epoch's
/// scale, read from the wall clock once when the store opens and advanced
/// by the monotonic clock since, so that a step of the wall clock does not
/// move a window (a step of +5 min made retries within the 2-minute window
/// store duplicates). It starts no later than the newest message the store
/// holds, so neither does a restart while the wall clock stands ahead:
/// time the node is down does not count.
#[derive(Debug)]
pub(crate) struct Steady {
    anchor_ms: u64,
    at: std::time::Instant,
}

impl Steady {
    /// Starts at the wall clock, or at `newest` (the newest timestamp the
    /// store holds) when that is earlier.
    pub(crate) fn start(newest: Timestamp) -> Steady {
        let wall = now_ms();
        let newest = newest.millis();
        Steady {
            anchor_ms: if newest > 0 { wall.min(newest) } else { wall },
            at: std::time::Instant::now(),
        }
    }

    /// Now, on this clock.
    pub(crate) fn now_ms(&self) -> u64 {
        self.anchor_ms + self.at.elapsed().as_millis() as u64
    }
}

/// The write side of the store: sequence assignment, the HLC, commits,
/// trims. Exactly one holder of its mutex writes at a time: the writer
/// thread, or with `fsync = never` also a publisher committing inline.
pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    /// The clock that stamps local messages; it observes other origins'.
    pub(crate) hlc: Hlc,
    /// The origin sequence of the next local message.
    pub(crate) next_seq: u64,
    /// Written but not yet synced ([`FsyncMode::Interval`]).
    pub(crate) pending_visible: Vec<Arc<Message>>,
    /// The staging id of the next large batch (see [`crate::staging`]).
    pub(crate) next_staging: u64,
}

impl Writer {
    pub fn new(shared: Arc<Shared>, next_staging: u64) -> Self {
        let catalog = shared.catalog.read();
        let origin = catalog
            .origins
            .get(&shared.node_id)
            .copied()
            .unwrap_or_default();
        // Timestamps continue above every origin held, not only this one, so
        // that a node that starts a new origin never goes back in time.
        let last_ts = catalog
            .origins
            .values()
            .map(|o| o.last_ts)
            .max()
            .unwrap_or_default();
        drop(catalog);
        Writer {
            hlc: Hlc::resume(last_ts),
            next_seq: origin.last_seq + 1,
            shared,
            pending_visible: Vec::new(),
            next_staging,
        }
    }

    /// Runs one request. A storage error poisons the store (the store can
    /// no longer promise what it wrote); so does a panic, which is caught
    /// and answered [`StoreError::Poisoned`].
    pub(crate) fn guarded<T>(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&mut Writer) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match catch_unwind(AssertUnwindSafe(|| f(self))) {
            Ok(Err(StoreError::Storage(e))) => {
                self.shared.poison(what, &e);
                Err(StoreError::Storage(e))
            }
            Ok(r) => r,
            Err(panic) => {
                self.shared.poison(what, &PanicMessage(&panic));
                Err(StoreError::Poisoned)
            }
        }
    }

    /// Handles a command other than an append.
    pub(crate) fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Append { batch, reply } => self.commit_appends(vec![(batch, reply)]),
            Command::Sync => {
                // A panic here has poisoned the store; nothing to answer.
                let _ = self.guarded("sync", |w| {
                    w.sync_pending();
                    Ok(())
                });
            }
            Command::Trim {
                topic,
                origin,
                entries,
                next_first_ts,
            } => {
                let r = self.guarded("retention trim", |w| {
                    w.trim(&topic, origin, &entries, next_first_ts)
                });
                if let Err(e) = r {
                    tracing::error!(error = %e, %topic, "retention trim failed");
                }
            }
            Command::ExpireIdem { keys } => {
                if let Err(e) = self.guarded("idempotency expiry", |w| w.expire_idem(keys)) {
                    tracing::warn!(error = %e, "expiring idempotency records failed");
                }
            }
            Command::Ingest {
                origin,
                messages,
                through,
                reply,
            } => {
                let r = self.guarded("ingest", |w| w.ingest(origin, messages, through));
                let stored = r.as_ref().is_ok_and(|n| *n > 0);
                let _ = reply.send(r);
                if stored {
                    self.notify();
                }
            }
            Command::Fill {
                origin,
                messages,
                after,
                through,
                complete,
                reply,
            } => {
                let r = self.guarded("fill", |w| {
                    w.fill(origin, messages, after, through, complete.as_ref())
                });
                let _ = reply.send(r);
            }
            Command::Shutdown => {}
        }
    }

    /// Makes everything written visible and durable, and marks the close clean.
    fn finish(&mut self) {
        self.sync_pending();
        let closed = self
            .shared
            .meta
            .insert(keys::RUN_KEY, "clean")
            .and_then(|()| self.shared.db.persist(PersistMode::SyncAll));
        if let Err(e) = closed {
            tracing::error!(error = %e, "final sync failed");
        }
    }

    /// Commits a group of append requests as one batch and answers each.
    /// The idempotency keys of the group are released once the commit has
    /// decided: stored, or refused without a write. After a failed commit
    /// they stay held (see [`crate::append::KeysInFlight`]).
    pub(crate) fn commit_appends(&mut self, group: Vec<Pending>) {
        self.commit_group(group, None);
    }

    /// Commits a bulk append whose payloads are staged under staging id
    /// `id` (see [`crate::staging`]) and answers it.
    pub(crate) fn commit_staged(&mut self, pending: Pending, id: u64) {
        self.commit_group(vec![pending], Some(id));
    }

    fn commit_group(&mut self, mut group: Vec<Pending>, staging: Option<u64>) {
        let keys: Vec<Vec<u8>> = group
            .iter()
            .flat_map(|(batch, _)| crate::append::idem_keys(batch))
            .collect();
        if self.shared.poisoned.load(Ordering::SeqCst) {
            self.shared.keys_in_flight.release(&keys);
            for (_, reply) in group {
                let _ = reply.send(Err(StoreError::Poisoned));
            }
            return;
        }
        match self.guarded("publish", |w| w.write_group(&mut group, staging)) {
            Ok(results) => {
                self.shared.keys_in_flight.release(&keys);
                for ((_, reply), result) in group.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
                // Subscribers are woken after the publishers: the messages are
                // already visible to any new read, and the publishers' tasks
                // enter the runtime's queue ahead of a crowd of subscribers.
                self.notify();
            }
            Err(_) => {
                // A failure before anything was written does not poison.
                if !self.shared.poisoned.load(Ordering::SeqCst) {
                    self.shared.keys_in_flight.release(&keys);
                }
                for (_, reply) in group {
                    let _ = reply.send(Err(StoreError::Poisoned));
                }
            }
        }
    }

    /// Wakes readers waiting for new messages: those of every topic whose
    /// messages became visible since the last call, and those waiting on
    /// the node-wide signal.
    pub(crate) fn notify(&self) {
        self.shared.signals.notify();
    }

    /// Makes local messages visible: tail first, then the watermark.
    /// Readers that wait are woken separately ([`Writer::notify`]).
    pub(crate) fn make_visible(&self, fresh: Vec<Arc<Message>>) {
        let Some(last) = fresh.last().map(|m| m.id.seq) else {
            return;
        };
        let sh = &*self.shared;
        sh.signals.mark_all(fresh.iter().map(|m| &m.topic));
        sh.tail.write().push(fresh, last);
        sh.catalog.write().visible.insert(sh.node_id, last);
    }

    /// Syncs and makes the messages written since the last sync visible
    /// ([`FsyncMode::Interval`]). A failed sync poisons the store.
    fn sync_pending(&mut self) {
        if self.pending_visible.is_empty() {
            return;
        }
        let committing = self.shared.committing();
        let synced = self.shared.db.persist(PersistMode::SyncData);
        drop(committing);
        match synced {
            Ok(()) => {
                let fresh = std::mem::take(&mut self.pending_visible);
                self.make_visible(fresh);
                self.notify();
            }
            Err(e) => self.shared.poison("sync", &e),
        }
    }

    /// Makes freshly committed local messages visible as the fsync mode
    /// says: now, or with the next interval sync.
    pub(crate) fn committed(&mut self, fresh: Vec<Arc<Message>>) {
        match self.shared.config.fsync {
            FsyncMode::Interval => self.pending_visible.extend(fresh),
            FsyncMode::Always | FsyncMode::Never => self.make_visible(fresh),
        }
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
