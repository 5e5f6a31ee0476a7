//! The benchmark's ceiling: the same bytes as N commits of M entries, written straight
//! into the store in fsynced batches, with no engine, channel or Python around it.
//! No pyo3.

use std::path::Path;
use std::time::Instant;

use super::layout::{Identity, ObjectId, WriteRecord};
use super::store::{LmdbStore, StoreError, DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE};

/// Write `n_commits` commits of `n_fields` entries of `value_len` bytes each straight into
/// a store at `path`, `batch` commits per fsynced transaction. Returns elapsed seconds.
///
/// `rewrite: None`: each commit creates a new object (appends to the key space).
/// `rewrite: Some(k)`: the workload of `k` committers each rewriting its own object (what
/// the persistence benchmark's durable commits do): commit `c` rewrites object `c % k`,
/// with the version check of a real commit; the `k` objects are created first, untimed.
pub fn batched_writes(
    path: &Path,
    n_commits: u64,
    n_fields: usize,
    value_len: usize,
    batch: usize,
    rewrite: Option<u64>,
) -> Result<f64, StoreError> {
    let store = LmdbStore::open(path, DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE)?;
    let record = |oid: u64, expected: u64, fill: u8| {
        let id = Identity {
            cls_id: "bench.Raw".into(),
            partition_id: 0,
            object_id: ObjectId::Num(oid),
        };
        let mut r = WriteRecord::new(id, expected, 0);
        let value = vec![fill; value_len];
        for f in 0..n_fields {
            r.entries.push(&format!("f{f}"), &value);
        }
        r
    };
    let write = |records: &[WriteRecord]| -> Result<(), StoreError> {
        for chunk in records.chunks(batch.max(1)) {
            let refs: Vec<&WriteRecord> = chunk.iter().collect();
            for r in store.write_batch(&refs)? {
                r.map_err(StoreError)?;
            }
        }
        Ok(())
    };
    let records: Vec<WriteRecord> = match rewrite {
        None => (0..n_commits)
            .map(|i| record(i, 0, (i % 251) as u8))
            .collect(),
        Some(k) => {
            let k = k.max(1);
            write(&(0..k).map(|i| record(i, 0, 0)).collect::<Vec<_>>())?;
            (0..n_commits)
                .map(|c| record(c % k, 1 + c / k, (c % 251) as u8))
                .collect()
        }
    };
    let start = Instant::now();
    write(&records)?;
    Ok(start.elapsed().as_secs_f64())
}
