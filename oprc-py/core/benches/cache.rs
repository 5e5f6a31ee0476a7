//! The moka-backed entry cache (`data::cache::EntryCache`) with no Python in the loop:
//! lookups that hit and that miss, and writes of 10-entry records (a YCSB record: ten
//! 100-byte fields) keyed by object keys of the store layout.
//!
//! - `get_hit` / `get_miss`: one lookup, cycling over 10,000 cached objects (or 10,000 that
//!   are not cached).
//! - `put`: replace a cached object's record (a load from the store fills the cache so).
//! - `update`: merge a commit of one changed field into a cached record (what the cache does
//!   at each commit).
//!
//! Run: `cargo bench --bench cache` (in `oprc-py/`).

// The allocator of the extension (oprc-py/src/lib.rs), so the figures match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use oprc_core::cache::{EntryCache, Record};
use oprc_core::id::{Identity, ObjectId};

const OBJECTS: u64 = 10_000;
const FIELDS: usize = 10;
const VALUE_LEN: usize = 100;

fn key(i: u64) -> Vec<u8> {
    Identity {
        cls_id: "bench.Record".into(),
        partition_id: 0,
        object_id: ObjectId::Num(i),
    }
    .object_key()
}

fn record(i: u64) -> Record {
    Record {
        version: 1,
        created_ms: 1_700_000_000_000,
        updated_ms: 1_700_000_000_000,
        entries: (0..FIELDS)
            .map(|f| {
                let v: Arc<[u8]> = vec![(i as usize + f) as u8; VALUE_LEN].into();
                (format!("field{f}"), v)
            })
            .collect(),
    }
}

fn bench_cache(c: &mut Criterion) {
    // Bound well above the 10,000 records (about 1.1 kB each): nothing is evicted.
    let cache = EntryCache::new(64 << 20, None);
    let keys: Vec<Vec<u8>> = (0..OBJECTS).map(key).collect();
    let absent: Vec<Vec<u8>> = (OBJECTS..2 * OBJECTS).map(key).collect();
    for (i, k) in keys.iter().enumerate() {
        cache.put(k.clone(), record(i as u64));
    }
    assert_eq!(cache.len(), OBJECTS);
    let rec = record(7);
    let changed: Arc<[u8]> = vec![0xab; VALUE_LEN].into();

    let mut g = c.benchmark_group("cache");
    let mut i = 0usize;
    g.bench_function("get_hit", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            cache.get(black_box(&keys[i])).expect("cached")
        })
    });
    g.bench_function("get_miss", |b| {
        b.iter(|| {
            i = (i + 1) % absent.len();
            cache.get(black_box(&absent[i]))
        })
    });
    g.bench_function("put", |b| {
        b.iter_batched(
            || {
                i = (i + 1) % keys.len();
                (keys[i].clone(), rec.clone())
            },
            |(k, r)| cache.put(k, r),
            BatchSize::SmallInput,
        )
    });
    let mut version = 1u64;
    g.bench_function("update", |b| {
        b.iter_batched(
            || {
                i = (i + 1) % keys.len();
                version += 1;
                let entries = vec![("field3".to_string(), Arc::clone(&changed))];
                (keys[i].clone(), version, entries)
            },
            |(k, v, entries)| cache.update(k, v, 1_700_000_000_001, entries, &[]),
            BatchSize::SmallInput,
        )
    });
    g.finish();
    assert_eq!(cache.len(), OBJECTS, "a record was evicted or dropped");
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = bench_cache
}
criterion_main!(benches);
