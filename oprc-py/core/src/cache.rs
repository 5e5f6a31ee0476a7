//! The entry cache: committed objects by key, bounded by total bytes, optional TTL.
//!
//! No Python here: records hold Rust bytes, never Python objects, so moka's maintenance
//! (run on whichever thread touches the cache) needs no GIL. Eviction is least recently
//! used (moka's LRU policy) by the summed weight of the records, as in
//! `oaas_sdk/cache/_fallback.py`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;

/// Weight of one record besides its entries (bytes). The weights are those of the
/// pure-Python cache (`oaas_sdk/cache/_fallback.py`, measured there on CPython), so one
/// `cache_max_bytes` holds the same objects in both implementations; checked against
/// `tests/vectors/cache.json` by `tests/vectors.rs` (and by pytest for Python).
pub const OBJECT_OVERHEAD: u64 = 360;
/// Weight of one entry besides its name and value bytes.
pub const ENTRY_OVERHEAD: u64 = 120;

/// The weight of a record of `entries` (name, value) against the bound:
/// [`OBJECT_OVERHEAD`] + the sum of [`ENTRY_OVERHEAD`] + name length + value length.
#[inline]
pub fn weight<'a>(entries: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> u64 {
    OBJECT_OVERHEAD
        + entries
            .into_iter()
            .map(|(k, v)| ENTRY_OVERHEAD + (k.len() + v.len()) as u64)
            .sum::<u64>()
}

/// A committed object: version, times (ms since the epoch) and entries (name, codec bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub version: u64,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub entries: Vec<(String, Arc<[u8]>)>,
}

impl Record {
    /// Weight against the bound ([`weight`]).
    pub fn weight(&self) -> u64 {
        weight(self.entries.iter().map(|(k, v)| (k.as_str(), &v[..])))
    }
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    bytes: AtomicI64,
}

/// Thread-safe cache of [`Record`]s keyed by object key bytes.
pub struct EntryCache {
    max_bytes: u64,
    cache: Option<Cache<Vec<u8>, Arc<Record>>>,
    counters: Arc<Counters>,
}

impl EntryCache {
    /// `max_bytes`: bound on the summed weights (0 disables the cache); `ttl`: how long a
    /// record stays valid after its insertion, `None` for no expiry.
    pub fn new(max_bytes: u64, ttl: Option<Duration>) -> Self {
        let counters = Arc::new(Counters::default());
        let cache = (max_bytes > 0).then(|| {
            let c = Arc::clone(&counters);
            let mut b = Cache::builder()
                .max_capacity(max_bytes)
                .eviction_policy(EvictionPolicy::lru())
                .weigher(|_k: &Vec<u8>, v: &Arc<Record>| {
                    u32::try_from(v.weight()).unwrap_or(u32::MAX)
                })
                .eviction_listener(move |_k, v: Arc<Record>, cause| {
                    c.bytes.fetch_sub(v.weight() as i64, Ordering::Relaxed);
                    if cause == RemovalCause::Size {
                        c.evictions.fetch_add(1, Ordering::Relaxed);
                    }
                });
            if let Some(ttl) = ttl {
                b = b.time_to_live(ttl);
            }
            b.build()
        });
        EntryCache {
            max_bytes,
            cache,
            counters,
        }
    }

    /// The record, counting a hit or a miss (an expired record is a miss).
    pub fn get(&self, key: &[u8]) -> Option<Arc<Record>> {
        let found = self.cache.as_ref().and_then(|c| c.get(key));
        let counter = if found.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// The record without counting (for merging a commit into it).
    pub fn peek(&self, key: &[u8]) -> Option<Arc<Record>> {
        self.cache.as_ref().and_then(|c| c.get(key))
    }

    /// Insert or replace; a record heavier than the whole bound is not kept.
    pub fn put(&self, key: Vec<u8>, rec: Record) {
        let Some(c) = &self.cache else { return };
        let w = rec.weight();
        if w > self.max_bytes || w > u64::from(u32::MAX) {
            c.invalidate(&key);
            return;
        }
        self.counters.bytes.fetch_add(w as i64, Ordering::Relaxed);
        // moka records reads and writes in buffers it applies later; applying them around
        // the insert keeps eviction in exact LRU order and the bound enforced at once, as
        // the Python cache does. Inserts are rare next to lookups (loads and commits).
        c.run_pending_tasks();
        c.insert(key, Arc::new(rec));
        c.run_pending_tasks();
    }

    /// Apply a commit: merge `entries`, drop `deletes`; a missing record is inserted only
    /// when this is the object's first version.
    pub fn update(
        &self,
        key: Vec<u8>,
        version: u64,
        time_ms: i64,
        entries: Vec<(String, Arc<[u8]>)>,
        deletes: &[String],
    ) {
        let rec = match self.peek(&key) {
            None if version != 1 => return,
            None => Record {
                version: 1,
                created_ms: time_ms,
                updated_ms: time_ms,
                entries,
            },
            Some(base) => {
                let mut merged = base.entries.clone();
                for (name, data) in entries {
                    match merged.iter_mut().find(|(n, _)| *n == name) {
                        Some(slot) => slot.1 = data,
                        None => merged.push((name, data)),
                    }
                }
                merged.retain(|(n, _)| !deletes.contains(n));
                Record {
                    version,
                    created_ms: base.created_ms,
                    updated_ms: time_ms,
                    entries: merged,
                }
            }
        };
        self.put(key, rec);
    }

    pub fn discard(&self, key: &[u8]) {
        if let Some(c) = &self.cache {
            c.invalidate(key);
        }
    }

    pub fn clear(&self) {
        if let Some(c) = &self.cache {
            c.invalidate_all();
            c.run_pending_tasks();
        }
    }

    /// Runs moka's pending maintenance so that counts and the byte total are current.
    pub fn sync(&self) {
        if let Some(c) = &self.cache {
            c.run_pending_tasks();
        }
    }

    pub fn nbytes(&self) -> u64 {
        self.sync();
        self.counters.bytes.load(Ordering::Relaxed).max(0) as u64
    }

    pub fn len(&self) -> u64 {
        self.sync();
        self.cache.as_ref().map_or(0, |c| c.entry_count())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn hits(&self) -> u64 {
        self.counters.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.counters.misses.load(Ordering::Relaxed)
    }

    pub fn evictions(&self) -> u64 {
        self.sync();
        self.counters.evictions.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: usize) -> Record {
        Record {
            version: 1,
            created_ms: 5,
            updated_ms: 5,
            entries: vec![("f".into(), vec![0u8; n].into())],
        }
    }

    #[test]
    fn hit_miss_and_weight() {
        let c = EntryCache::new(1 << 20, None);
        assert!(c.get(b"a").is_none());
        c.put(b"a".to_vec(), rec(100));
        assert_eq!(c.get(b"a").unwrap().entries[0].1.len(), 100);
        assert_eq!((c.hits(), c.misses()), (1, 1));
        assert_eq!(c.nbytes(), OBJECT_OVERHEAD + ENTRY_OVERHEAD + 101);
        assert_eq!(c.len(), 1);
        c.discard(b"a");
        assert!(c.get(b"a").is_none());
        assert_eq!(c.nbytes(), 0);
    }

    #[test]
    fn eviction_is_least_recently_used() {
        let c = EntryCache::new(3 * (OBJECT_OVERHEAD + ENTRY_OVERHEAD + 101), None);
        for i in 0..3u8 {
            c.put(vec![i], rec(100));
        }
        assert!(c.get(&[0]).is_some());
        c.put(vec![3], rec(100));
        assert!(c.peek(&[0]).is_some());
        assert!(c.peek(&[1]).is_none());
        assert_eq!(c.evictions(), 1);
    }

    #[test]
    fn bound_evicts_and_counts() {
        let c = EntryCache::new(1000, None);
        for i in 0..50u8 {
            c.put(vec![i], rec(100));
        }
        assert!(c.nbytes() <= 1000, "{}", c.nbytes());
        assert!(c.evictions() > 0);
        c.put(b"big".to_vec(), rec(5000));
        assert!(c.peek(b"big").is_none());
    }

    #[test]
    fn update_merges_and_deletes() {
        let c = EntryCache::new(1 << 20, None);
        c.update(b"k".to_vec(), 2, 9, vec![("x".into(), vec![1].into())], &[]);
        assert!(c.peek(b"k").is_none());
        c.update(b"k".to_vec(), 1, 9, vec![("x".into(), vec![1].into())], &[]);
        c.update(
            b"k".to_vec(),
            2,
            10,
            vec![("y".into(), vec![2].into())],
            &[],
        );
        let r = c.peek(b"k").unwrap();
        assert_eq!(
            (r.version, r.created_ms, r.updated_ms, r.entries.len()),
            (2, 9, 10, 2)
        );
        c.update(b"k".to_vec(), 3, 11, vec![], &["x".to_string()]);
        assert_eq!(c.peek(b"k").unwrap().entries.len(), 1);
    }

    #[test]
    fn ttl_expires() {
        let c = EntryCache::new(1 << 20, Some(Duration::from_millis(1)));
        c.put(b"a".to_vec(), rec(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(c.get(b"a").is_none());
    }

    #[test]
    fn disabled_cache_keeps_nothing() {
        let c = EntryCache::new(0, None);
        c.put(b"a".to_vec(), rec(1));
        assert!(c.get(b"a").is_none());
        assert_eq!(c.len(), 0);
    }
}
