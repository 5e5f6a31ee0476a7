//! Stores: the layout shared with the pure-Python stores ([`layout`]: keys, metadata
//! records, write records; docs/format.md, "Store layout"), the [`Store`] trait the engine
//! writes through, the LMDB store ([`lmdb`]) and the room of the Redis store ([`redis`]).

use std::fmt;

pub mod layout;
pub mod lmdb;
pub mod redis;

use layout::{StoredObject, WriteRecord};

/// A store failure; the message names the store and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

/// Result of one record of a batch: written, or refused by the version check (the
/// conflict's message).
pub type RecordResult = Result<(), String>;

/// What the engine needs of a store: reads by object key, a key scan, and batches of
/// version-checked commits written atomically.
pub trait Store: Send + Sync + 'static {
    /// Name for messages, e.g. `"lmdb store at ./.oaas"`.
    fn name(&self) -> &str;

    /// The object stored under `object_key` (see [`layout::object_key`]), or `None`;
    /// `what` names it in error messages.
    fn read(
        &self,
        object_key: &[u8],
        what: &dyn fmt::Display,
    ) -> Result<Option<StoredObject>, StoreError>;

    /// Object keys of the stored objects starting with `prefix`, in key order.
    fn scan(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError>;

    /// Write `records` in one atomic batch: each record is version-checked on its own
    /// (one result per record, in order); `Err` when the batch as a whole failed.
    fn write_batch(&self, records: &[&WriteRecord]) -> Result<Vec<RecordResult>, StoreError>;
}
