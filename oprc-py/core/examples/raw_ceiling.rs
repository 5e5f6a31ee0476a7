//! The persistence benchmark's ceiling (`benchmarks/persistence.py`, "raw"): the same bytes
//! as N commits of M entries, written straight into an LMDB store in fsynced batches, with
//! no engine, channel or Python around it.
//!
//! `cargo run --release -p oprc-core --example raw_ceiling -- PATH N_COMMITS N_FIELDS
//! VALUE_LEN BATCH [REWRITE]` prints the elapsed seconds of the timed writes.
//! `REWRITE` absent: each commit creates a new object (appends to the key space);
//! `REWRITE=k`: the workload of `k` committers each rewriting its own object (what the
//! benchmark's durable commits do): commit `c` rewrites object `c % k`, with the version
//! check of a real commit; the `k` objects are created first, untimed.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use oprc_core::id::{Identity, ObjectId};
use oprc_core::store::layout::WriteRecord;
use oprc_core::store::lmdb::{LmdbStore, DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE};
use oprc_core::store::StoreError;

// The allocator of the extension (oprc-py/src/lib.rs), as the engine runs with it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Write `n_commits` commits of `n_fields` entries of `value_len` bytes each straight into
/// a store at `path`, `batch` commits per fsynced transaction. Returns elapsed seconds.
fn batched_writes(
    path: &Path,
    n_commits: u64,
    n_fields: usize,
    value_len: usize,
    batch: usize,
    rewrite: Option<u64>,
) -> Result<f64, StoreError> {
    let store = LmdbStore::open(path, DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE)?;
    let record = |oid: u64, expected: u64, fill: u8| {
        let id = Identity::new("bench.Raw", 0, ObjectId::Num(oid));
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

const USAGE: &str = "usage: raw_ceiling PATH N_COMMITS N_FIELDS VALUE_LEN BATCH [REWRITE]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !(5..=6).contains(&args.len()) {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let num = |i: usize| -> Result<u64, String> {
        args[i].parse().map_err(|_| {
            format!(
                "argument {} ({:?}) is not a number\n{USAGE}",
                i + 1,
                args[i]
            )
        })
    };
    let parsed = (|| -> Result<_, String> {
        Ok((
            num(1)?,
            num(2)? as usize,
            num(3)? as usize,
            num(4)? as usize,
            if args.len() == 6 { Some(num(5)?) } else { None },
        ))
    })();
    let (n, fields, len, batch, rewrite) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match batched_writes(Path::new(&args[0]), n, fields, len, batch.max(1), rewrite) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("raw_ceiling: {e}");
            ExitCode::FAILURE
        }
    }
}
