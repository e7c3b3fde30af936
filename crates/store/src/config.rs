use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use switchyard_model::{Topic, TopicPattern};

/// When appended messages are synced to disk, and therefore when a publish is
/// acknowledged and when subscribers may see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FsyncMode {
    /// Acknowledge and deliver only after `fdatasync`; concurrent appends share
    /// one sync (group commit). Survives power loss. The default.
    #[default]
    Always,
    /// Acknowledge after the write reaches the OS; sync every
    /// [`StoreConfig::fsync_interval`] and deliver to subscribers after that
    /// sync. Power loss may lose up to one interval of acknowledged messages,
    /// but never a message a subscriber has seen.
    Interval,
    /// Acknowledge and deliver after the write reaches the OS; the OS decides
    /// when to sync. Survives a crash of the process, not of the machine.
    Never,
}

impl FromStr for FsyncMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncMode::Always),
            "interval" => Ok(FsyncMode::Interval),
            "never" => Ok(FsyncMode::Never),
            other => Err(format!(
                "unknown fsync mode {other:?}; expected always, interval or never"
            )),
        }
    }
}

impl std::fmt::Display for FsyncMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FsyncMode::Always => "always",
            FsyncMode::Interval => "interval",
            FsyncMode::Never => "never",
        })
    }
}

/// How long and how much of a topic is kept. `None` means unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RetentionPolicy {
    /// Messages older than this are removed.
    pub max_age: Option<Duration>,
    /// The oldest messages are removed while a stream holds more than this
    /// many bytes (its newest message always stays).
    pub max_bytes: Option<u64>,
}

/// A retention policy for the topics that match a pattern.
#[derive(Clone, Debug)]
pub struct RetentionRule {
    /// Topics this rule applies to.
    pub pattern: TopicPattern,
    /// The policy for them.
    pub policy: RetentionPolicy,
}

/// Default capacity of the writer's request queue (requests, not messages).
/// Publishers wait for room when it is full: this is the store's backpressure.
pub const DEFAULT_WRITE_QUEUE: usize = 1024;
/// Default most messages committed in one group commit.
pub const DEFAULT_MAX_COMMIT_MESSAGES: usize = 4096;
/// Default most payload bytes committed in one group commit.
pub const DEFAULT_MAX_COMMIT_BYTES: usize = 16 * 1024 * 1024;
/// Default size of the in-memory tail of recent messages that serves
/// subscribers that keep up without a disk read.
pub const DEFAULT_TAIL_CACHE_BYTES: usize = 16 * 1024 * 1024;
/// Default sync period for [`FsyncMode::Interval`].
pub const DEFAULT_FSYNC_INTERVAL: Duration = Duration::from_millis(50);
/// Default window in which a repeated `Idempotency-Key` returns the first result.
pub const DEFAULT_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(120);
/// Default period of the background retention pass.
pub const DEFAULT_RETENTION_INTERVAL: Duration = Duration::from_secs(5);
/// Default fjall block cache size.
pub const DEFAULT_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// Default [`StoreConfig::bulk_share_percent`]: while single publishes
/// come, a bulk append's commit is followed by 19 times its length without
/// one. Measured under eight clients posting 16 MB batches, a publisher
/// next to them saw a p99 of 7.5-13 ms with a 25 % share and 3.7-3.8 ms
/// with 5 % (baseline 1.0-1.3 ms); the batches went in at 55 MB/s instead
/// of 190 MB/s, and at full speed whenever no single publish came for
/// 100 ms (docs/BENCHMARKS.md).
pub const DEFAULT_BULK_SHARE_PERCENT: u8 = 5;

/// Everything the store needs to open.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The data directory (created if missing).
    pub path: PathBuf,
    /// Durability mode.
    pub fsync: FsyncMode,
    /// Sync period for [`FsyncMode::Interval`].
    pub fsync_interval: Duration,
    /// Capacity of the writer queue.
    pub write_queue: usize,
    /// Most messages per group commit.
    pub max_commit_messages: usize,
    /// Most payload bytes per group commit.
    pub max_commit_bytes: usize,
    /// Percent of the writer's time bulk appends (large batches) get while
    /// single publishes come (1-100; 100 lets them alternate freely).
    pub bulk_share_percent: u8,
    /// Size of the in-memory tail of recent messages.
    pub tail_cache_bytes: usize,
    /// fjall block cache size.
    pub cache_bytes: u64,
    /// Retention for topics no rule matches.
    pub retention_default: RetentionPolicy,
    /// Per-topic retention; the first matching rule wins.
    pub retention_rules: Vec<RetentionRule>,
    /// Period of the background retention pass.
    pub retention_interval: Duration,
    /// Window of idempotency keys.
    pub idempotency_window: Duration,
    /// Identifies the machine's current boot, to tell a crash of the process
    /// (the OS still holds every write) from a crash of the machine. `None`
    /// reads `/proc/sys/kernel/random/boot_id`; tests set it to simulate a
    /// machine restart.
    pub boot_id: Option<String>,
}

impl StoreConfig {
    /// Defaults for a store at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StoreConfig {
            path: path.into(),
            fsync: FsyncMode::default(),
            fsync_interval: DEFAULT_FSYNC_INTERVAL,
            write_queue: DEFAULT_WRITE_QUEUE,
            max_commit_messages: DEFAULT_MAX_COMMIT_MESSAGES,
            max_commit_bytes: DEFAULT_MAX_COMMIT_BYTES,
            bulk_share_percent: DEFAULT_BULK_SHARE_PERCENT,
            tail_cache_bytes: DEFAULT_TAIL_CACHE_BYTES,
            cache_bytes: DEFAULT_CACHE_BYTES,
            retention_default: RetentionPolicy::default(),
            retention_rules: Vec::new(),
            retention_interval: DEFAULT_RETENTION_INTERVAL,
            idempotency_window: DEFAULT_IDEMPOTENCY_WINDOW,
            boot_id: None,
        }
    }

    /// The retention policy for `topic`.
    pub fn retention_for(&self, topic: &Topic) -> RetentionPolicy {
        self.retention_rules
            .iter()
            .find(|r| r.pattern.matches(topic))
            .map_or(self.retention_default, |r| r.policy)
    }
}
