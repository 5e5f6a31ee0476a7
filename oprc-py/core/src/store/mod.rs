//! Stores: the layout shared with the pure-Python stores ([`layout`]: keys, metadata
//! records, write records; docs/format.md, "Store layout"), the [`Store`] trait the engine
//! writes through, the LMDB store ([`lmdb`]), the Redis store ([`redis`]), the memory store
//! ([`memory`]) and [`AnyStore`], one of them chosen at run time.

use std::fmt;
use std::sync::Arc;

pub mod layout;
pub mod lmdb;
pub mod memory;
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

    /// [`Store::write_batch`] of one record.
    fn write_one(&self, record: &WriteRecord) -> Result<RecordResult, StoreError> {
        let mut results = self.write_batch(&[record])?;
        results
            .pop()
            .ok_or_else(|| StoreError(format!("{}: a write returned no result", self.name())))
    }

    /// Whether a write is applied at once in memory (the memory store): the engine then
    /// writes each commit in the committing thread, with no persister, batch or pending
    /// overlay (see [`crate::batcher::Engine`]).
    fn inline(&self) -> bool {
        false
    }
}

/// One of the native stores, chosen at run time (the bindings' engine is an
/// `Engine<AnyStore>`): LMDB, Redis, or memory (shared with its Python view, which keeps
/// it across engines). A `match` per batch, not per entry.
pub enum AnyStore {
    Lmdb(lmdb::LmdbStore),
    Redis(Box<redis::RedisStore>),
    Memory(Arc<memory::MemoryStore>),
}

impl AnyStore {
    /// The current LMDB map size in bytes (0 for Redis).
    pub fn map_size(&self) -> usize {
        match self {
            AnyStore::Lmdb(s) => s.map_size(),
            AnyStore::Redis(_) | AnyStore::Memory(_) => 0,
        }
    }
}

impl Store for AnyStore {
    fn name(&self) -> &str {
        match self {
            AnyStore::Lmdb(s) => Store::name(s),
            AnyStore::Redis(s) => Store::name(s.as_ref()),
            AnyStore::Memory(s) => Store::name(s.as_ref()),
        }
    }

    fn read(
        &self,
        object_key: &[u8],
        what: &dyn fmt::Display,
    ) -> Result<Option<StoredObject>, StoreError> {
        match self {
            AnyStore::Lmdb(s) => s.read(object_key, what),
            AnyStore::Redis(s) => s.read(object_key, what),
            AnyStore::Memory(s) => s.read(object_key, what),
        }
    }

    fn scan(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        match self {
            AnyStore::Lmdb(s) => s.scan(prefix),
            AnyStore::Redis(s) => s.scan(prefix),
            AnyStore::Memory(s) => s.scan(prefix),
        }
    }

    fn write_batch(&self, records: &[&WriteRecord]) -> Result<Vec<RecordResult>, StoreError> {
        match self {
            AnyStore::Lmdb(s) => s.write_batch(records),
            AnyStore::Redis(s) => s.write_batch(records),
            AnyStore::Memory(s) => s.write_batch(records),
        }
    }

    fn write_one(&self, record: &WriteRecord) -> Result<RecordResult, StoreError> {
        match self {
            AnyStore::Memory(s) => Ok(s.write_one(record)),
            other => other.write_batch(&[record]).and_then(|mut r| {
                r.pop().ok_or_else(|| {
                    StoreError(format!("{}: a write returned no result", other.name()))
                })
            }),
        }
    }

    fn inline(&self) -> bool {
        matches!(self, AnyStore::Memory(_))
    }
}

/// A record for the stores' tests: object `oid` of class `t.C`, partition 0, expecting
/// version `expected`, with `entries`.
#[cfg(test)]
pub(crate) fn test_record(oid: u64, expected: u64, entries: &[(&str, &[u8])]) -> WriteRecord {
    let id = crate::id::Identity {
        cls_id: "t.C".into(),
        partition_id: 0,
        object_id: crate::id::ObjectId::Num(oid),
    };
    let mut r = WriteRecord::new(id, expected, 1000 + expected as i64);
    r.entries = entries.iter().copied().collect();
    r
}
