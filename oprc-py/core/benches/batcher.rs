//! The durable write path with no Python in the loop: the engine's submit and group commit
//! into LMDB, against the store and LMDB alone as baselines, for batches of 1, 16 and 256
//! commits. Each commit rewrites all ten 100-byte fields of one object (a YCSB record), so
//! the store keeps the same size however many iterations run.
//!
//! - `engine_sync/N`: submit N commits to an `Engine` (`durable: true`, a batch closes at N
//!   commits) and wait for every ticket: channel, persister thread, one LMDB transaction
//!   and its fsync, ticket completion.
//! - `store/N`: `LmdbStore::write_batch` of the same N commits (version checks, one
//!   transaction, fsync), no engine.
//! - `lmdb/N`: the same keys and bytes put straight into LMDB (lmdb-rkv) in one transaction:
//!   the floor.
//!
//! Throughput is in commits (objects). Each setup runs in its own temporary directory;
//! fsync cost depends on the file system under `TMPDIR`.
//!
//! Run: `cargo bench --bench batcher` (in `oprc-py/`).

// The allocator of the extension (oprc-py/src/lib.rs), so the figures match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::cell::Cell;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use lmdb::{DatabaseFlags, Environment, EnvironmentFlags, Transaction, WriteFlags};
use oprc_core::batcher::{Engine, EngineConfig, Outcome};
use oprc_core::id::{Identity, ObjectId};
use oprc_core::store::layout::{entry_key, Meta, WriteRecord};
use oprc_core::store::lmdb::{LmdbStore, DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE};

const BATCHES: [usize; 3] = [1, 16, 256];
const FIELDS: usize = 10;
const VALUE_LEN: usize = 100;
const TIME_MS: i64 = 1_700_000_000_000;

/// Commits of objects `0..n`, each expecting `version` and writing every field.
fn commits(n: usize, version: u64) -> Vec<WriteRecord> {
    (0..n as u64)
        .map(|i| {
            let id = Identity {
                cls_id: "bench.Record".into(),
                partition_id: 0,
                object_id: ObjectId::Num(i),
            };
            let mut r = WriteRecord::new(id, version, TIME_MS);
            for f in 0..FIELDS {
                r.entries
                    .push(&format!("field{f}"), &[(i as usize + f) as u8; VALUE_LEN]);
            }
            r
        })
        .collect()
}

fn open_store(dir: &Path) -> LmdbStore {
    LmdbStore::open(dir, DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE).expect("open store")
}

fn write_all(store: &LmdbStore, records: &[WriteRecord]) {
    let refs: Vec<&WriteRecord> = records.iter().collect();
    for r in store.write_batch(&refs).expect("write") {
        r.expect("no conflict");
    }
}

fn bench_engine(c: &mut Criterion) {
    let mut g = c.benchmark_group("batcher/engine_sync");
    for n in BATCHES {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_store(dir.path());
        write_all(&store, &commits(n, 0));
        let cfg = EngineConfig {
            durable: true,
            batch_max_entries: n * FIELDS,
            // Only a safety net: all N commits are queued well within it.
            batch_max_delay: Duration::from_millis(100),
            pending_max_bytes: 0,
        };
        let engine = Engine::start(store, cfg).expect("start engine");
        let version = Cell::new(1u64);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_batched(
                || {
                    let v = version.get();
                    version.set(v + 1);
                    commits(n, v)
                },
                |records| {
                    let tickets: Vec<_> = records
                        .into_iter()
                        .map(|r| engine.submit(r, 0).expect("submit"))
                        .collect();
                    for t in tickets {
                        assert_eq!(t.wait(None), Some(Outcome::Written));
                    }
                },
                BatchSize::PerIteration,
            )
        });
        let (stats, _) = engine.stats();
        eprintln!(
            "batcher/engine_sync/{n}: {} commits in {} batches ({:.1} per batch)",
            stats.commits,
            stats.batches,
            stats.records_in_batches as f64 / stats.batches.max(1) as f64
        );
        engine.close();
    }
    g.finish();
}

fn bench_store(c: &mut Criterion) {
    let mut g = c.benchmark_group("batcher/store");
    for n in BATCHES {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_store(dir.path());
        let mut records = commits(n, 0);
        write_all(&store, &records);
        let mut version = 1u64;
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                for r in &mut records {
                    r.expected_version = version;
                }
                version += 1;
                write_all(&store, &records);
            })
        });
    }
    g.finish();
}

/// (entry key, value) pairs of one object.
type EntryPuts = Vec<(Vec<u8>, Vec<u8>)>;

fn bench_lmdb(c: &mut Criterion) {
    let mut g = c.benchmark_group("batcher/lmdb");
    for n in BATCHES {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = Environment::new()
            .set_max_dbs(4)
            .set_map_size(DEFAULT_MAP_SIZE)
            .set_flags(EnvironmentFlags::NO_TLS | EnvironmentFlags::NO_READAHEAD)
            .open(dir.path())
            .expect("open lmdb");
        let meta = env
            .create_db(Some("meta"), DatabaseFlags::empty())
            .expect("db");
        let entries = env
            .create_db(Some("entries"), DatabaseFlags::empty())
            .expect("db");
        // The keys and values the store writes for the same commits.
        let puts: Vec<(Vec<u8>, EntryPuts)> = commits(n, 0)
            .into_iter()
            .map(|r| {
                let fields = r
                    .entries
                    .iter()
                    .map(|(name, v)| (entry_key(&r.object_key, name), v.to_vec()))
                    .collect();
                (r.object_key, fields)
            })
            .collect();
        let mut version = 1u64;
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                let m = Meta {
                    version,
                    created_ms: TIME_MS,
                    updated_ms: TIME_MS,
                }
                .pack();
                version += 1;
                let mut txn = env.begin_rw_txn().expect("txn");
                for (okey, fields) in &puts {
                    txn.put(meta, okey, &m, WriteFlags::empty()).expect("put");
                    for (k, v) in fields {
                        txn.put(entries, k, v, WriteFlags::empty()).expect("put");
                    }
                }
                txn.commit().expect("commit");
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_engine, bench_store, bench_lmdb
}
criterion_main!(benches);
