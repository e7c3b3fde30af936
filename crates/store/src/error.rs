use std::fmt;

use thiserror::Error;

/// Errors from the store. None of them leaves a partial write behind: a
/// batch of appends is committed entirely or not at all.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The storage engine reported an I/O or storage error. Nothing of the
    /// failed operation is visible. When a write or sync failed, the store is
    /// poisoned as well (see [`StoreError::Poisoned`]); a failed read may
    /// succeed when retried if the cause was transient.
    #[error("storage error: {0}")]
    Storage(StorageError),
    /// An earlier write or sync failed, or the writer hit an internal fault;
    /// the store refuses all further writes because it can no longer promise
    /// durability. Reads still work. The node must be restarted (and its disk
    /// checked).
    #[error(
        "the store is poisoned after a failed write or sync, or a fault in its writer; \
         restart the node"
    )]
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

/// An error of the storage engine under the store. Opaque: it says what
/// went wrong (its `Display`), not which engine reported it.
pub struct StorageError(fjall::Error);

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StorageError").field(&self.0).finish()
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0)
    }
}

/// Turns the storage engine's results into the store's (`.storage()?`),
/// without a public conversion from the engine's error type.
pub(crate) trait Storage<T> {
    /// The result with the engine's error wrapped as [`StoreError::Storage`].
    fn storage(self) -> Result<T, StoreError>;
}

impl<T> Storage<T> for Result<T, fjall::Error> {
    fn storage(self) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::Storage(StorageError(e)))
    }
}
