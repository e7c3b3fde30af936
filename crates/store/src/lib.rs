//! Switchyard's durable log, on fjall.
//!
//! The store keeps every node's **origin log** (messages numbered densely per
//! origin node), an index per **stream** (topic, origin) with its own dense
//! sequence, per-stream statistics, idempotency records and the node id. It is
//! the only crate that touches fjall.
//!
//! Writes go through one writer thread fed by a bounded channel: it batches
//! whatever requests are waiting into one fjall batch and one `fdatasync`
//! (group commit), so durable throughput grows with concurrency instead of
//! being capped by the disk's sync rate. Messages become visible to readers
//! only once they are as durable as the configured [`FsyncMode`] promises, so
//! a crash never takes back a message a subscriber has seen.
//!
//! Reads are batch reads from a [`Cursor`]: a bounded number of messages per
//! call, served from an in-memory tail of recent messages when the cursor is
//! recent and from disk otherwise. Nothing is kept per reader, so a slow
//! reader costs disk reads, never memory.
//!
//! What it does not do: HTTP, subscriptions, waiting (callers wait on
//! [`Store::changes`], or on [`Store::changes_for`] the topics they read),
//! replication.
//!
//! Locks: the store, like the other crates of the node, uses `parking_lot`
//! locks, which are not poisoned by a panic, so one thread's panic never
//! turns every later `lock()` into another panic, and no code goes on with
//! a poisoned guard pretending nothing happened. What a panic leaves behind
//! is handled where it can happen instead: the writer thread catches a
//! panic in its work, marks the store poisoned and answers
//! [`StoreError::Poisoned`], so later writes fail with that error while
//! readers, whose state the writer only changes after a commit, keep
//! working. A failed commit or sync poisons the store the same way.
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchyard_store::StoreError> {
//! use switchyard_store::{Append, ReadQuery, Store, StoreConfig};
//! use switchyard_model::{Cursor, TopicSet};
//! let store = Store::open(StoreConfig::new("/tmp/switchyard-demo"))?;
//! let appended = store
//!     .append(vec![Append::new("orders.eu".parse().unwrap(), "hello".into())])
//!     .await?;
//! let query = ReadQuery::new(TopicSet::new(vec!["orders.>".parse().unwrap()]));
//! let batch = store.read(&query, &Cursor::earliest())?;
//! assert_eq!(batch.messages[0].id, appended[0].id);
//! store.close();
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod append;
mod batch;
mod catalog;
mod codec;
mod config;
mod error;
mod few;
mod groups;
mod keys;
mod plugins;
mod read;
mod replica;
mod retention;
mod signal;
mod staging;
mod store;
mod tail;
mod writer;

pub use append::{Append, Appended, KeyHold};
pub use batch::SLOW_COMMIT;
pub use catalog::{StreamInfo, TopicInfo};
pub use config::{FsyncMode, RetentionPolicy, RetentionRule, StoreConfig};
pub use error::{StorageError, StoreError};
pub use groups::{GroupWrite, StoredGroup};
pub use read::{Gap, ReadBatch, ReadQuery};
pub use replica::OriginTrim;
pub use signal::{Changes, Closed, SHARDS, shard_of};
pub use store::{
    CommitStats, EngineState, HALT_L0_TABLES, HALT_SEALED_MEMTABLES, STALLED_AFTER, Store,
};
pub use writer::BULK_BYTES;
