use thiserror::Error;

/// Errors from the store. None of them leaves a partial write behind: a
/// batch of appends is committed entirely or not at all.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// fjall reported an I/O or storage error. Nothing of the failed
    /// operation is visible; a retry may help if the cause was transient.
    #[error("storage error: {0}")]
    Storage(#[from] fjall::Error),
    /// An earlier write or sync failed; the store refuses all further writes
    /// because it can no longer promise durability. Reads still work. The
    /// node must be restarted (and its disk checked).
    #[error("the store is poisoned after a failed write or sync; restart the node")]
    Poisoned,
    /// The store is shutting down and takes no more writes.
    #[error("the store is closed")]
    Closed,
    /// A stored record cannot be decoded: the data directory is damaged or was
    /// written by an incompatible version.
    #[error("corrupt record: {0}")]
    Corrupt(&'static str),
    /// The request cannot be applied (for example messages of another
    /// origin out of order); nothing was written.
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    /// The data directory cannot be used (for example its node-id file is
    /// unreadable).
    #[error("data directory: {0}")]
    DataDir(String),
}
