use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};
use switchyard_model::{Cursor, Message, NodeId, Timestamp, Topic, TopicSet};
use tokio::sync::{mpsc, oneshot, watch};

use crate::catalog::{Catalog, OriginMeta, StreamMeta, TopicInfo};
use crate::error::Storage;
use crate::replica::OriginTrim;
use crate::tail::Tail;
use crate::writer::{Command, Writer, WriterLoop};
use crate::{Append, Appended, FsyncMode, StoreConfig, StoreError, keys};

/// State shared by the store handle, the writer thread, the retention thread
/// and readers.
pub(crate) struct Shared {
    pub db: Database,
    /// `log`: (origin, origin seq) -> message record.
    pub log: Keyspace,
    /// `index`: (topic, origin, origin seq) -> stream seq, size, timestamp.
    pub index: Keyspace,
    /// `meta`: node id, stream statistics, origin high-water marks.
    pub meta: Keyspace,
    /// `idem`: (topic, idempotency key) -> first result and expiry.
    pub idem: Keyspace,
    /// `staged`: (staging id, entry) -> payload of a large batch's entry,
    /// written in slices before the batch's records (see
    /// [`crate::staging`]).
    pub staged: Keyspace,
    /// `plugins`: plugin binding records and components.
    pub plugins: Keyspace,
    /// `plugin_kv`: plugin key-value data.
    pub plugin_kv: Keyspace,
    /// `groups`: consumer group settings, positions and in-flight sets.
    pub groups: Keyspace,
    pub node_id: NodeId,
    pub config: StoreConfig,
    /// Streams, origins and visible watermarks. Written only by the writer thread.
    pub catalog: RwLock<Catalog>,
    /// Recent visible messages of the local origin. Written only by the writer thread.
    pub tail: RwLock<Tail>,
    /// Recent messages received from each other origin, once any arrived
    /// since the store opened. Written only by the writer thread.
    pub remote_tails: RwLock<std::collections::HashMap<NodeId, Tail>>,
    /// Moved whenever new messages become visible (node-wide, and per
    /// shard of topic names).
    pub signals: crate::signal::Signals,
    /// Set after a failed write or sync, or a panic in the writer: no
    /// further writes are accepted.
    pub poisoned: AtomicBool,
    /// Commits (writes and syncs to the storage engine) in progress.
    pub commits: AtomicUsize,
    /// When a commit last finished, or began with none in progress
    /// (milliseconds since the Unix epoch): with commits in progress, how
    /// long the disk has made no progress.
    pub progress_ms: AtomicU64,
    /// Idempotency keys on their way to the log (see
    /// [`Store::hold_keys`]).
    pub keys_in_flight: crate::append::KeysInFlight,
    /// The clock of idempotency windows.
    pub steady: crate::writer::Steady,
    /// About how many bytes were committed since the writeback thread last
    /// started writing the store's files back.
    pub unsynced_bytes: AtomicU64,
    /// Commits finished since the store opened.
    pub commits_done: AtomicU64,
    /// Of those, the ones slower than [`SLOW_COMMIT`](crate::SLOW_COMMIT).
    pub slow_commits: AtomicU64,
    /// The slowest commit since the store opened, in microseconds.
    pub slowest_commit_us: AtomicU64,
    /// How long commits took.
    pub commit_time: switchyard_model::histogram::Histogram,
}

/// Counts of the store's commits (see [`Store::commit_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Commits finished since the store opened.
    pub commits: u64,
    /// Commits that took longer than [`SLOW_COMMIT`](crate::SLOW_COMMIT).
    pub slow: u64,
    /// The slowest commit's duration.
    pub slowest: std::time::Duration,
}

/// The storage engine's state as [`Store::engine_state`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineState {
    /// A write or sync failed (in a commit, or in one of the engine's
    /// background threads): the store refuses every write.
    pub poisoned: bool,
    /// A write or sync has been in progress for more than
    /// [`STALLED_AFTER`] (see [`Store::is_stalled`]).
    pub stalled: bool,
    /// The engine is behind on flushes or compactions
    /// ([`Store::under_write_pressure`]).
    pub write_pressure: bool,
    /// The engine holds every write until a flush or compaction finishes:
    /// a keyspace has [`HALT_SEALED_MEMTABLES`] sealed memtables or
    /// [`HALT_L0_TABLES`] level-0 tables.
    pub write_halted: bool,
    /// The most sealed memtables waiting for their flush in one keyspace.
    pub sealed_memtables: usize,
    /// The most level-0 tables waiting for compaction in one keyspace.
    pub l0_tables: usize,
}

/// Sealed memtables in one keyspace at which fjall holds writes.
pub const HALT_SEALED_MEMTABLES: usize = 4;
/// Level-0 tables in one keyspace at which fjall holds writes.
pub const HALT_L0_TABLES: usize = 20;

/// Counts a commit in progress for as long as it lives (see
/// [`Shared::committing`]).
pub(crate) struct Committing<'a>(&'a Shared);

impl Drop for Committing<'_> {
    fn drop(&mut self) {
        self.0
            .progress_ms
            .store(crate::writer::now_ms(), Ordering::SeqCst);
        self.0.commits.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    /// See [`Store::under_write_pressure`].
    pub(crate) fn under_write_pressure(&self) -> bool {
        [&self.log, &self.index, &self.staged]
            .iter()
            .any(|ks| ks.sealed_memtable_count() >= 2 || ks.l0_table_count() >= 12)
    }

    /// Marks a write or sync to the storage engine in progress until the
    /// guard drops, so that a disk that stops answering shows
    /// ([`Store::is_stalled`]).
    pub fn committing(&self) -> Committing<'_> {
        if self.commits.fetch_add(1, Ordering::SeqCst) == 0 {
            self.progress_ms
                .store(crate::writer::now_ms(), Ordering::SeqCst);
        }
        Committing(self)
    }

    /// Makes the store refuse all further writes after `what` failed with
    /// `error`. Logged once, when the store becomes poisoned.
    pub fn poison(&self, what: &str, error: &dyn std::fmt::Display) {
        if !self.poisoned.swap(true, Ordering::SeqCst) {
            tracing::error!(%error, what, "the store is poisoned and refuses further writes");
        } else {
            tracing::warn!(%error, what, "failure on an already poisoned store");
        }
    }
}

/// Wakes background threads early when the store closes.
pub(crate) struct Stopper {
    stopped: Mutex<bool>,
    cv: Condvar,
}

impl Stopper {
    /// Waits up to `d`; returns true when the store is closing.
    pub fn wait(&self, d: Duration) -> bool {
        let mut stopped = self.stopped.lock();
        self.cv.wait_while_for(&mut stopped, |s| !*s, d);
        *stopped
    }

    fn stop(&self) {
        *self.stopped.lock() = true;
        self.cv.notify_all();
    }
}

/// A handle to an open store. Share it behind an `Arc`; [`Store::close`]
/// (or dropping the last handle) syncs and stops the background threads.
pub struct Store {
    pub(crate) shared: Arc<Shared>,
    pub(crate) tx: mpsc::Sender<Command>,
    stopper: Arc<Stopper>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
    /// The write side, shared by the writer thread, inline publishers and
    /// inline ingests.
    pub(crate) writer: Arc<Mutex<Writer>>,
    /// Appends and ingests in progress.
    in_flight: AtomicUsize,
}

/// Counts an append or ingest in progress for as long as it lives.
struct InFlight<'a> {
    counter: &'a AtomicUsize,
    /// No other append or ingest was in progress when this one started.
    alone: bool,
}

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        let before = counter.fetch_add(1, Ordering::SeqCst);
        InFlight {
            counter,
            alone: before == 0,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::SeqCst);
    }
}

fn open_keyspace(db: &Database, name: &str) -> Result<Keyspace, StoreError> {
    db.keyspace(name, KeyspaceCreateOptions::default).storage()
}

fn load_catalog(meta: &Keyspace) -> Result<Catalog, StoreError> {
    let mut catalog = Catalog::default();
    for item in meta.prefix(b"s") {
        let (k, v) = item.into_inner().storage()?;
        let bad = || StoreError::Corrupt("stream meta key");
        let body = k
            .get(1..k.len().checked_sub(9).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        let topic: Topic = std::str::from_utf8(body)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(bad)?;
        let origin = NodeId(u64::from_be_bytes(
            k[k.len() - 8..].try_into().map_err(|_| bad())?,
        ));
        catalog
            .streams
            .entry(topic)
            .or_default()
            .insert(origin, StreamMeta::decode(&v)?);
    }
    for item in meta.prefix(b"o") {
        let (k, v) = item.into_inner().storage()?;
        let origin: [u8; 8] = k
            .get(1..)
            .and_then(|b| b.try_into().ok())
            .ok_or(StoreError::Corrupt("origin key"))?;
        let om = OriginMeta::decode(&v)?;
        catalog
            .visible
            .insert(NodeId(u64::from_be_bytes(origin)), om.last_seq);
        catalog
            .origins
            .insert(NodeId(u64::from_be_bytes(origin)), om);
    }
    Ok(catalog)
}

fn load_node_id(db: &Database, meta: &Keyspace) -> Result<NodeId, StoreError> {
    if let Some(v) = meta.get(keys::NODE_ID_KEY).storage()? {
        let b: [u8; 8] = (*v)
            .try_into()
            .map_err(|_| StoreError::Corrupt("node id"))?;
        return Ok(NodeId(u64::from_be_bytes(b)));
    }
    new_node_id(db, meta)
}

/// The machine's current boot, from the kernel (or the configured override).
fn current_boot_id(config: &StoreConfig) -> String {
    config.boot_id.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    })
}

/// Whether the previous run may have lost acknowledged messages: it did not
/// close cleanly, did not sync every publish, and the machine restarted since
/// (a crash of the process alone loses nothing the OS already holds).
fn previous_run_may_have_lost(marker: Option<&[u8]>, boot: &str) -> bool {
    let Some(marker) = marker else { return false };
    let text = String::from_utf8_lossy(marker);
    let mut parts = text.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("running"), Some(mode), previous_boot) => {
            mode != "always" && (boot.is_empty() || previous_boot != Some(boot))
        }
        _ => false,
    }
}

/// Creates and stores a fresh random node id.
fn new_node_id(db: &Database, meta: &Keyspace) -> Result<NodeId, StoreError> {
    let id = loop {
        let id = getrandom::u64()
            .map_err(|e| StoreError::DataDir(format!("no randomness for a node id: {e}")))?;
        if id != 0 {
            break id;
        }
    };
    meta.insert(keys::NODE_ID_KEY, id.to_be_bytes()).storage()?;
    db.persist(PersistMode::SyncAll).storage()?;
    Ok(NodeId(id))
}

impl Store {
    /// Opens (or creates) the store in `config.path`, recovering after a crash,
    /// and starts the writer and retention threads. Blocking.
    pub fn open(config: StoreConfig) -> Result<Store, StoreError> {
        std::fs::create_dir_all(&config.path).map_err(|e| {
            StoreError::DataDir(format!("cannot create {}: {e}", config.path.display()))
        })?;
        let db = match Database::builder(&config.path)
            .cache_size(config.cache_bytes)
            .open()
        {
            Ok(db) => db,
            // A journal record whose checksum does not match, or a table
            // the engine cannot read back: never served.
            Err(e @ (fjall::Error::JournalRecovery(_) | fjall::Error::Unrecoverable)) => {
                return Err(StoreError::DataDir(format!(
                    "{} is damaged ({e:?}): a record does not match its checksum, so the node \
                     will not serve it. In a cluster, move the directory away and start the \
                     node with an empty one: it joins as a new origin, and the copies of its \
                     old log on its replicas stay readable",
                    config.path.display()
                )));
            }
            Err(e) => return Err(e).storage(),
        };
        let log = open_keyspace(&db, "log")?;
        let index = open_keyspace(&db, "index")?;
        let meta = open_keyspace(&db, "meta")?;
        let idem = open_keyspace(&db, "idem")?;
        let plugins = open_keyspace(&db, "plugins")?;
        let plugin_kv = open_keyspace(&db, "plugin_kv")?;
        let groups = open_keyspace(&db, "groups")?;
        // Large payloads only: kept in blob files apart from the keys, so
        // that compactions move keys and not megabytes of payloads.
        let staged = db
            .keyspace("staged", || {
                KeyspaceCreateOptions::default().with_kv_separation(Some(
                    fjall::KvSeparationOptions::default().compression(fjall::CompressionType::None),
                ))
            })
            .storage()?;
        let next_staging = crate::staging::recover(&db, &meta, &staged)?;
        let boot = current_boot_id(&config);
        let marker = meta.get(keys::RUN_KEY).storage()?;
        let node_id = if previous_run_may_have_lost(marker.as_deref(), &boot) {
            // Messages acknowledged after the last sync may be gone, and their
            // sequence numbers would be handed out again. Continuing as a new
            // origin keeps every id and cursor unambiguous; what survived stays
            // readable under the old origin.
            let old = load_node_id(&db, &meta)?;
            let new = new_node_id(&db, &meta)?;
            tracing::warn!(old_origin = %old, new_origin = %new,
                "the previous run did not sync every publish and ended with the machine; recent \
                 acknowledged messages may be lost, so this node continues as a new origin");
            new
        } else {
            load_node_id(&db, &meta)?
        };
        meta.insert(keys::RUN_KEY, format!("running {} {boot}", config.fsync))
            .storage()?;
        db.persist(PersistMode::SyncAll).storage()?;
        let catalog = load_catalog(&meta)?;
        let next_seq = catalog.origins.get(&node_id).map_or(0, |o| o.last_seq) + 1;
        tracing::info!(node = %node_id, path = %config.path.display(), next_seq, topics = catalog.streams.len(), "store opened");
        let newest = catalog.origins.values().map(|o| o.last_ts).max();
        let steady = crate::writer::Steady::start(newest.unwrap_or_default());
        let shared = Arc::new(Shared {
            tail: RwLock::new(Tail::new(next_seq - 1, config.tail_cache_bytes)),
            remote_tails: RwLock::new(std::collections::HashMap::new()),
            catalog: RwLock::new(catalog),
            db,
            log,
            index,
            meta,
            idem,
            staged,
            plugins,
            plugin_kv,
            groups,
            node_id,
            signals: crate::signal::Signals::new(),
            poisoned: AtomicBool::new(false),
            commits: AtomicUsize::new(0),
            progress_ms: AtomicU64::new(0),
            keys_in_flight: Default::default(),
            unsynced_bytes: AtomicU64::new(0),
            commits_done: AtomicU64::new(0),
            slow_commits: AtomicU64::new(0),
            slowest_commit_us: AtomicU64::new(0),
            commit_time: Default::default(),
            steady,
            config,
        });
        let (tx, rx) = mpsc::channel(shared.config.write_queue.max(1));
        let stopper = Arc::new(Stopper {
            stopped: Mutex::new(false),
            cv: Condvar::new(),
        });
        let mut threads = Vec::new();
        let writer = Arc::new(Mutex::new(Writer::new(shared.clone(), next_staging)));
        let writer_loop = WriterLoop {
            writer: writer.clone(),
            rx,
        };
        threads.push(spawn("switchyard-writer", move || writer_loop.run())?);
        if shared.config.fsync == FsyncMode::Interval {
            let (tx, stopper, every) = (tx.clone(), stopper.clone(), shared.config.fsync_interval);
            threads.push(spawn("switchyard-sync", move || {
                while !stopper.wait(every) {
                    if tx.blocking_send(Command::Sync).is_err() {
                        break;
                    }
                }
            })?);
        }
        if shared.config.fsync != FsyncMode::Always {
            let (stopper, sh) = (stopper.clone(), shared.clone());
            threads.push(spawn("switchyard-writeback", move || {
                journal_writeback(&sh, &stopper)
            })?);
        }
        {
            let (stopper, sh) = (stopper.clone(), shared.clone());
            threads.push(spawn("switchyard-health", move || {
                watch_engine(&sh, &stopper)
            })?);
        }
        {
            let (tx, stopper, sh) = (tx.clone(), stopper.clone(), shared.clone());
            threads.push(spawn("switchyard-retention", move || {
                crate::retention::run(&sh, &tx, &stopper)
            })?);
        }
        Ok(Store {
            shared,
            tx,
            stopper,
            threads: Mutex::new(threads),
            closed: AtomicBool::new(false),
            writer,
            in_flight: AtomicUsize::new(0),
        })
    }

    /// Records that this node holds every message of `origin` after
    /// origin sequence `from` up to its watermark (it replicates the
    /// origin's whole log), or, with `None`, that it no longer does.
    /// Durable, so that the record outlives a restart. Blocking.
    pub fn set_whole_log(&self, origin: NodeId, from: Option<u64>) -> Result<(), StoreError> {
        self.check_writable()?;
        let sh = &*self.shared;
        let mut batch =
            crate::batch::Staged::new(sh, "whole-log record", crate::batch::Durability::Synced);
        match from {
            Some(from) => batch.insert(
                &sh.meta,
                keys::whole_log_key(origin),
                from.to_be_bytes().to_vec(),
            ),
            None => batch.remove(&sh.meta, keys::whole_log_key(origin)),
        }
        batch.commit()
    }

    /// The origins whose whole log this node recorded holding (see
    /// [`Store::set_whole_log`]), each with the sequence it holds it from.
    /// Blocking.
    pub fn whole_logs(&self) -> Result<Vec<(NodeId, u64)>, StoreError> {
        let mut out = Vec::new();
        for item in self.shared.meta.prefix(b"w") {
            let (k, v) = item.into_inner().storage()?;
            let (Some(origin), Ok(from)) = (
                k.get(1..9).and_then(|b| <[u8; 8]>::try_from(b).ok()),
                <[u8; 8]>::try_from(&v[..]),
            ) else {
                return Err(StoreError::Corrupt("whole-log record"));
            };
            out.push((NodeId(u64::from_be_bytes(origin)), u64::from_be_bytes(from)));
        }
        Ok(out)
    }

    /// This node's id (created on first open, kept in the data directory).
    pub fn node_id(&self) -> NodeId {
        self.shared.node_id
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.shared.config
    }

    /// Whether the store still accepts writes (false after a failed write or
    /// sync, including one in a background thread of the storage engine,
    /// noticed within half a second; or once closed).
    pub fn is_writable(&self) -> bool {
        !self.shared.poisoned.load(Ordering::SeqCst) && !self.closed.load(Ordering::SeqCst)
    }

    /// Whether a write or sync to disk has been in progress for more than
    /// [`STALLED_AFTER`] without any finishing: the disk stopped answering
    /// (a hung device or network filesystem). Publishes wait for it, so the
    /// node should not be sent more of them; it clears by itself once the
    /// disk answers again.
    pub fn is_stalled(&self) -> bool {
        let sh = &*self.shared;
        sh.commits.load(Ordering::SeqCst) > 0
            && crate::writer::now_ms().saturating_sub(sh.progress_ms.load(Ordering::SeqCst))
                > STALLED_AFTER.as_millis() as u64
    }

    /// How many commits (writes, and syncs with `fsync = always`, of
    /// appends, received messages, group and plugin state) finished since
    /// the store opened, how many took longer than
    /// [`SLOW_COMMIT`](crate::SLOW_COMMIT), and the slowest one.
    pub fn commit_stats(&self) -> CommitStats {
        let sh = &*self.shared;
        CommitStats {
            commits: sh.commits_done.load(Ordering::Relaxed),
            slow: sh.slow_commits.load(Ordering::Relaxed),
            slowest: std::time::Duration::from_micros(sh.slowest_commit_us.load(Ordering::Relaxed)),
        }
    }

    /// How long the store's commits took (see [`Store::commit_stats`]).
    pub fn commit_times(&self) -> switchyard_model::histogram::HistogramSnapshot {
        self.shared.commit_time.snapshot()
    }

    /// The storage engine's state: poisoned, stalled, behind on its
    /// background work or holding writes. Cheap: reads counters only.
    pub fn engine_state(&self) -> EngineState {
        let sh = &*self.shared;
        let (mut sealed, mut l0) = (0, 0);
        for ks in [&sh.log, &sh.index, &sh.meta, &sh.staged] {
            sealed = ks.sealed_memtable_count().max(sealed);
            l0 = ks.l0_table_count().max(l0);
        }
        EngineState {
            poisoned: sh.poisoned.load(Ordering::SeqCst),
            stalled: self.is_stalled(),
            write_pressure: sh.under_write_pressure(),
            write_halted: sealed >= HALT_SEALED_MEMTABLES || l0 >= HALT_L0_TABLES,
            sealed_memtables: sealed,
            l0_tables: l0,
        }
    }

    /// Bytes the store takes on disk: its tables and its journal. Takes
    /// the engine's journal lock, so it may wait behind a sync: call it
    /// off the async workers.
    pub fn disk_bytes(&self) -> Result<u64, StoreError> {
        self.shared.db.disk_space().storage()
    }

    /// Whether the storage engine is behind on its background work on the
    /// log: memtables sealed and waiting for their flush, or level-0
    /// tables waiting for compaction. A little further on, the engine
    /// holds every write (at 4 sealed memtables, or 20 level-0 tables), so
    /// bulk writers wait while this holds and leave the room to single
    /// publishes.
    pub fn under_write_pressure(&self) -> bool {
        self.shared.under_write_pressure()
    }

    /// Appends messages atomically: all of them are stored or none. Resolves
    /// once they are as durable as the fsync mode promises. Waits for room in
    /// the writer queue (backpressure).
    pub async fn append(&self, batch: Vec<Append>) -> Result<Vec<Appended>, StoreError> {
        if self.shared.poisoned.load(Ordering::SeqCst) {
            return Err(StoreError::Poisoned);
        }
        if self.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // The writer releases the keys once its commit has decided
        // ([`crate::writer::Writer::commit_appends`]), also when this
        // request is gone by then.
        let keys = crate::append::idem_keys(&batch);
        self.shared.keys_in_flight.add(&keys);
        let (reply, rx) = oneshot::channel();
        // A lone publisher commits itself ([`Store::inline_writer`]).
        let in_flight = InFlight::enter(&self.in_flight);
        if let Some(mut writer) = self.inline_writer(&in_flight, crate::writer::is_bulk(&batch)) {
            writer.commit_appends(vec![(batch, reply)]);
        } else {
            let sent = self.tx.send(Command::Append { batch, reply }).await;
            if sent.is_err() {
                self.shared.keys_in_flight.release(&keys);
                return Err(StoreError::Closed);
            }
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Stores messages of another origin `origin` (received from it or from
    /// a replica), in origin order, and records that this node holds every
    /// message of that origin it should hold up to `through`: readers see
    /// them, and the origin's entry of [`Store::latest`] moves to `through`.
    /// Messages at or below the current watermark are skipped, so a repeated
    /// batch changes nothing. A stream first held part way through reads as
    /// trimmed before that point. Returns how many messages were stored.
    pub async fn ingest(
        &self,
        origin: NodeId,
        messages: Vec<Message>,
        through: u64,
    ) -> Result<usize, StoreError> {
        // Committed here when it can be, as a lone publish is
        // ([`Store::inline_writer`]): a node that follows a peer takes most
        // of its answers one or a few messages at a time.
        if self.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        let in_flight = InFlight::enter(&self.in_flight);
        let bulk = crate::writer::is_bulk_size(
            messages.len(),
            messages.iter().map(|m| m.payload.len()).sum(),
        );
        let (reply, rx) = oneshot::channel();
        let command = Command::Ingest {
            origin,
            messages,
            through,
            reply,
        };
        let left = match self.inline_writer(&in_flight, bulk) {
            Some(mut writer) => {
                writer.handle(command);
                None
            }
            None => Some(command),
        };
        if let Some(command) = left {
            self.tx
                .send(command)
                .await
                .map_err(|_| StoreError::Closed)?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// The writer, for a write its caller may commit itself instead of
    /// handing it to the writer thread and waiting for its answer (two
    /// thread wake-ups): with `fsync = never` a commit is memory work plus
    /// one buffered write, so a write that is not bulk (which would hold an
    /// async worker for milliseconds), met no other write in flight and
    /// finds the writer free is committed by its caller. A lone publisher's
    /// round trip is about a third shorter. Under concurrency writes go
    /// through the thread, whose group commits are larger and cheaper per
    /// message than many small inline ones (measured).
    fn inline_writer(
        &self,
        in_flight: &InFlight<'_>,
        bulk: bool,
    ) -> Option<MutexGuard<'_, Writer>> {
        if self.shared.config.fsync == FsyncMode::Never && in_flight.alone && !bulk {
            self.writer.try_lock()
        } else {
            None
        }
    }

    /// Sends the writer thread a command and waits for its answer.
    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(command(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Stores older messages of another origin that this node does not hold
    /// (it did not follow their topics when they were published), fetched
    /// from the origin: those with origin sequences in `(after, through]`
    /// at or below this node's watermark for the origin. Messages already
    /// held are skipped. Pass `complete` (the topics fetched, and the
    /// ranges of them the origin removed by retention) with the last
    /// part of a fetch: every message of those topics in the range has then
    /// been given, and their streams read as held from `after` on. Returns
    /// how many messages were stored.
    pub async fn fill(
        &self,
        origin: NodeId,
        messages: Vec<Message>,
        after: u64,
        through: u64,
        complete: Option<(TopicSet, Vec<OriginTrim>)>,
    ) -> Result<usize, StoreError> {
        self.ask(|reply| Command::Fill {
            origin,
            messages,
            after,
            through,
            complete,
            reply,
        })
        .await
    }

    /// The streams of `origin` matching `topics` whose removed range (by
    /// retention, or not held) reaches past origin sequence `after`.
    pub fn trimmed_after(&self, topics: &TopicSet, origin: NodeId, after: u64) -> Vec<OriginTrim> {
        let catalog = self.shared.catalog.read();
        catalog
            .streams
            .iter()
            .filter(|(t, _)| topics.matches(t))
            .filter_map(|(t, s)| {
                let m = s.get(&origin)?;
                (m.trimmed_origin_seq > after).then(|| OriginTrim {
                    topic: t.clone(),
                    stream_seq: m.trimmed_seq,
                    origin_seq: m.trimmed_origin_seq,
                })
            })
            .collect()
    }

    /// The highest origin sequence of `origin` this node holds through
    /// (0 when it holds nothing of it).
    pub fn held_through(&self, origin: NodeId) -> u64 {
        self.shared
            .catalog
            .read()
            .visible
            .get(&origin)
            .copied()
            .unwrap_or(0)
    }

    /// A receiver that changes whenever new messages become visible.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.signals.all()
    }

    /// A receiver that changes at least whenever messages matching
    /// `topics` become visible, and seldom otherwise when `topics` names
    /// exact topics: see [`crate::signal`]. A reader that follows `topics`
    /// waits on it instead of [`Store::changes`], so that a commit does not
    /// wake every reader of the node.
    pub fn changes_for(&self, topics: &TopicSet) -> crate::Changes {
        self.shared.signals.for_topics(topics)
    }

    /// The cursor just after every visible message (`from=latest`).
    pub fn latest(&self) -> Cursor {
        let catalog = self.shared.catalog.read();
        let mut c = Cursor::earliest();
        for (&o, &seq) in &catalog.visible {
            c.advance(o, seq);
        }
        c
    }

    /// The cursor just before the first message at or after `ts` in every
    /// origin (`from=<time>`). Blocking: binary search over the log.
    pub fn cursor_at(&self, ts: Timestamp) -> Result<Cursor, StoreError> {
        let visible = self.shared.catalog.read().visible.clone();
        let mut c = Cursor::earliest();
        for (o, v) in visible {
            let (mut lo, mut hi) = (1u64, v + 1);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                let first = self
                    .shared
                    .log
                    .range(keys::log_key(o, mid)..=keys::log_key(o, v))
                    .next();
                match first {
                    None => hi = mid,
                    Some(g) => {
                        let (k, val) = g.into_inner().storage()?;
                        let (_, seq) =
                            keys::parse_log_key(&k).ok_or(StoreError::Corrupt("log key"))?;
                        if crate::codec::record_timestamp(&val)? >= ts {
                            hi = mid;
                        } else {
                            lo = seq + 1;
                        }
                    }
                }
            }
            c.advance(o, lo - 1);
        }
        Ok(c)
    }

    /// Every topic with its message count, bytes and first/last timestamps.
    pub fn topics(&self) -> Vec<TopicInfo> {
        self.shared.catalog.read().topic_infos()
    }

    /// Per origin, the last visible origin sequence.
    pub fn visible(&self) -> BTreeMap<NodeId, u64> {
        self.shared.catalog.read().visible.clone()
    }

    /// Stops taking writes, syncs everything written, and joins the
    /// background threads. Blocking; idempotent.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.stopper.stop();
        let handles = std::mem::take(&mut *self.threads.lock());
        let tx = self.tx.clone();
        // A plain thread, so that close may be called from async code too.
        let closer = std::thread::spawn(move || {
            let _ = tx.blocking_send(Command::Shutdown);
            for h in handles {
                let _ = h.join();
            }
        });
        let _ = closer.join();
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// A disk that has finished no write or sync for this long while one is in
/// progress counts as stalled ([`Store::is_stalled`]). Well above a slow
/// but working sync (tens to hundreds of milliseconds under load).
pub const STALLED_AFTER: Duration = Duration::from_secs(5);

/// How often the storage engine is asked whether it still takes writes.
const ENGINE_CHECK_PERIOD: Duration = Duration::from_millis(500);

/// Poisons the store when the storage engine stops taking writes on its
/// own: a memtable flush or a compaction that fails (a full disk, an I/O
/// error) ends fjall's background worker and makes fjall refuse every
/// later write, without any write of the store failing yet. Without this
/// check the store would look writable (and the node ready) until the next
/// publish met the refusal. Asking is a buffered-journal persist, which
/// fjall refuses once poisoned; it does no I/O when the journal buffer is
/// empty, as it is between commits. A separate thread, because the call
/// takes the journal lock and may wait behind a slow sync.
fn watch_engine(sh: &Shared, stopper: &Stopper) {
    while !stopper.wait(ENGINE_CHECK_PERIOD) {
        if sh.poisoned.load(Ordering::SeqCst) {
            continue;
        }
        if let Err(e) = sh.db.persist(PersistMode::Buffer) {
            sh.poison("storage engine", &e);
        }
    }
}

/// How often the journal writeback thread looks at what was committed.
const WRITEBACK_TICK: Duration = Duration::from_millis(10);
/// The journal is written back once this much was committed since the
/// last writeback, and otherwise every [`WRITEBACK_PERIOD`] if anything was.
const WRITEBACK_BYTES: u64 = 1024 * 1024;
const WRITEBACK_PERIOD: Duration = Duration::from_millis(250);
/// How often the writeback thread lists the data directory again for the
/// files being written.
const WRITEBACK_RESCAN: Duration = Duration::from_millis(250);
/// A file modified this recently is one being written.
const WRITEBACK_RECENT: Duration = Duration::from_secs(2);
/// How deep the writeback thread looks into the data directory.
const WRITEBACK_DEPTH: u32 = 4;

/// Starts the writeback of the storage engine's recent writes in the
/// background, without holding fjall's journal lock. fjall syncs the
/// journal under that lock at every memtable flush, and every commit waits
/// for that sync: with `fsync = never` or `interval`, tens of MiB of dirty
/// journal would pile up by then, and the sync took 50-300 ms (measured: a
/// 64 MiB sync on this kind of disk takes ~40 ms, more under load).
/// Written back every MiB committed (and at least every 250 ms), the sync
/// under the lock finds little to write.
///
/// fjall has no public handle on its journal file, so this starts the
/// writeback of every file in the data directory modified in the last
/// [`WRITEBACK_RECENT`], whatever its name: the journal and the tables
/// fjall's threads are writing (`sync_file_range(2)` with
/// `SYNC_FILE_RANGE_WRITE`). It neither waits for the writes nor commits
/// the filesystem's journal. `syncfs(2)`, used before, did both, for the
/// whole filesystem: under a bulk load it stalled this node's commits and
/// those of every other process writing to the same filesystem (measured:
/// an unattacked node's publish p99 20 ms while another took 90 MB/s of
/// batches, 5 ms with this).
fn journal_writeback(sh: &Shared, stopper: &Stopper) {
    let mut files = Writeback::new(sh.config.path.clone());
    let mut last = std::time::Instant::now();
    while !stopper.wait(WRITEBACK_TICK) {
        let pending = sh.unsynced_bytes.load(Ordering::Relaxed);
        if pending < WRITEBACK_BYTES && (pending == 0 || last.elapsed() < WRITEBACK_PERIOD) {
            continue;
        }
        sh.unsynced_bytes.fetch_sub(pending, Ordering::Relaxed);
        last = std::time::Instant::now();
        files.write_back(last);
    }
}

/// The files of a data directory being written, found by listing it now
/// and then, and written back on demand.
struct Writeback {
    dir: PathBuf,
    hot: Vec<std::fs::File>,
    listed: Option<std::time::Instant>,
}

impl Writeback {
    fn new(dir: PathBuf) -> Writeback {
        Writeback {
            dir,
            hot: Vec::new(),
            listed: None,
        }
    }

    /// Starts the writeback of the files being written, listing the
    /// directory again first when the last listing is
    /// [`WRITEBACK_RESCAN`] old.
    fn write_back(&mut self, now: std::time::Instant) {
        if self
            .listed
            .is_none_or(|t| now.saturating_duration_since(t) >= WRITEBACK_RESCAN)
        {
            self.listed = Some(now);
            let mut found = Vec::new();
            recent_files(&self.dir, WRITEBACK_DEPTH, SystemTime::now(), &mut found);
            // Files deleted since (a sealed journal, a compacted table) are
            // let go here; until then their descriptors keep them.
            self.hot = found
                .into_iter()
                .filter_map(|p| std::fs::File::open(p).ok())
                .collect();
        }
        for f in &self.hot {
            start_writeback(f);
        }
    }
}

/// Appends to `found` the regular files under `dir` (at most `depth`
/// levels down) modified within [`WRITEBACK_RECENT`] of `now`.
fn recent_files(dir: &Path, depth: u32, now: SystemTime, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if meta.is_dir() {
            if depth > 0 {
                recent_files(&entry.path(), depth - 1, now, found);
            }
        } else if meta.is_file()
            && meta
                .modified()
                .is_ok_and(|m| now.duration_since(m).unwrap_or_default() < WRITEBACK_RECENT)
        {
            found.push(entry.path());
        }
    }
}

/// Starts writing `f`'s dirty pages to disk and returns at once
/// (`sync_file_range(2)`, `SYNC_FILE_RANGE_WRITE`, the whole file). A
/// failure is ignored: this only shortens a later sync.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn start_writeback(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range takes a descriptor number and three integers
    // and touches no memory of this process; `f` keeps the descriptor open
    // for the duration of the call.
    let _ = unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_f: &std::fs::File) {}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| StoreError::DataDir(format!("cannot start thread {name}: {e}")))
}

#[cfg(test)]
mod writeback_tests {
    use super::*;

    fn write(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[test]
    fn the_writeback_takes_the_files_being_written_only() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = [dir.path().join("j"), dir.path().join("k/1/tables/2")];
        let old = dir.path().join("k/1/tables/1");
        let too_deep = dir.path().join("a/b/c/d/e/f");
        for p in fresh.iter().chain([&old, &too_deep]) {
            write(p);
        }
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
        let mut found = Vec::new();
        recent_files(dir.path(), WRITEBACK_DEPTH, SystemTime::now(), &mut found);
        found.sort();
        assert_eq!(found, fresh);

        // The directory is listed again only every WRITEBACK_RESCAN.
        let mut files = Writeback::new(dir.path().to_path_buf());
        let t = std::time::Instant::now();
        files.write_back(t);
        assert_eq!(files.hot.len(), 2);
        write(&dir.path().join("k/2/new"));
        files.write_back(t + WRITEBACK_RESCAN / 2);
        assert_eq!(files.hot.len(), 2);
        files.write_back(t + WRITEBACK_RESCAN);
        assert_eq!(files.hot.len(), 3);
    }
}
