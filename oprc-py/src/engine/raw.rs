//! The benchmark's ceiling: the same bytes as N commits of M entries, written straight
//! into the store in fsynced batches, with no engine, channel or Python around it.
//! No pyo3.

use std::path::Path;
use std::time::Instant;

use super::layout::{Identity, ObjectId, WriteRecord};
use super::store::{LmdbStore, StoreError, DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE};

/// Write `n_objects` new objects of `n_fields` entries of `value_len` bytes, `batch`
/// objects per transaction, into a store at `path`. Returns elapsed seconds.
pub fn batched_writes(
    path: &Path,
    n_objects: u64,
    n_fields: usize,
    value_len: usize,
    batch: usize,
) -> Result<f64, StoreError> {
    let store = LmdbStore::open(path, DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE)?;
    let records: Vec<WriteRecord> = (0..n_objects)
        .map(|i| {
            let id = Identity {
                cls_id: "bench.Raw".into(),
                partition_id: 0,
                object_id: ObjectId::Num(i),
            };
            let mut r = WriteRecord::new(id, 0, 0);
            r.entries = (0..n_fields)
                .map(|f| (format!("f{f}"), vec![(i % 251) as u8; value_len]))
                .collect();
            r
        })
        .collect();
    let start = Instant::now();
    for chunk in records.chunks(batch) {
        let refs: Vec<&WriteRecord> = chunk.iter().collect();
        for r in store.write_batch(&refs)? {
            r.map_err(StoreError)?;
        }
    }
    Ok(start.elapsed().as_secs_f64())
}
