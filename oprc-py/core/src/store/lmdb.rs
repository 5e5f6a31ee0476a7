//! The LMDB store: the environment and layout of `oaas_sdk.stores.lmdb` (`docs/format.md`,
//! "LMDB environment"), through `lmdb-rkv`, over `oprc-py/vendor/lmdb-rkv-sys`, which builds LMDB
//! 0.9.36 ([`lmdb_version`]). That LMDB shares data *and lock* files with the `lmdb` PyPI
//! package (LMDB 0.9.x, lock format 1), so a Python process and a native one can have the
//! same environment open at once. No pyo3.
//!
//! LMDB rules followed here (http://www.lmdb.tech/doc/): one write transaction at a time
//! (the persister is the only writer); `mdb_env_set_mapsize` only while this process has no
//! transaction open, which the `gate` lock enforces (transactions hold it shared, a resize
//! holds it exclusively).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use lmdb::{
    Cursor, Database, DatabaseFlags, Environment, EnvironmentFlags, Transaction, WriteFlags,
};

use super::layout::{entry_prefix, Meta, StoredObject, WriteRecord, FORMAT_KEY, FORMAT_VALUE};
use super::{RecordResult, Store, StoreError};

/// Initial map size in bytes (1 GiB); the map doubles when a write finds it full.
pub const DEFAULT_MAP_SIZE: usize = 1 << 30;
/// The map never grows past this many bytes (1 TiB).
pub const DEFAULT_MAX_MAP_SIZE: usize = 1 << 40;

/// The version of the linked LMDB library, `(major, minor, patch)`, as `mdb_version()`
/// reports it (0.9.x: see `docs/format.md` for why it must stay 0.9).
pub fn lmdb_version() -> (i32, i32, i32) {
    let (mut major, mut minor, mut patch) = (0, 0, 0);
    // SAFETY: mdb_version only writes the three ints through the pointers, which point to
    // live locals, and returns a pointer to a static string that is not used here.
    unsafe { lmdb_sys::mdb_version(&mut major, &mut minor, &mut patch) };
    (major, minor, patch)
}

/// An LMDB environment in a directory, with databases `meta` and `entries`.
pub struct LmdbStore {
    pub name: String,
    path: PathBuf,
    env: Environment,
    meta: Database,
    entries: Database,
    max_map_size: usize,
    gate: RwLock<()>,
}

enum WriteError {
    MapFull,
    Other(lmdb::Error),
}

impl From<lmdb::Error> for WriteError {
    fn from(e: lmdb::Error) -> Self {
        match e {
            lmdb::Error::MapFull => WriteError::MapFull,
            e => WriteError::Other(e),
        }
    }
}

impl LmdbStore {
    /// Open (creating when missing) the environment in directory `path`.
    ///
    /// `map_size` is the initial map in bytes, `max_map_size` the bound of its growth.
    /// Errors name the path: not a directory, cannot be created, not an LMDB environment,
    /// or an environment of another layout.
    pub fn open(
        path: &Path,
        map_size: usize,
        max_map_size: usize,
    ) -> Result<LmdbStore, StoreError> {
        let name = format!("lmdb store at {}", path.display());
        let fail = |why: String| StoreError(format!("{name}: {why}"));
        if path.exists() && !path.is_dir() {
            return Err(fail("the path exists and is not a directory".into()));
        }
        std::fs::create_dir_all(path).map_err(|e| fail(format!("cannot open: {e}")))?;
        let env = Environment::new()
            .set_max_dbs(4)
            .set_map_size(map_size)
            .set_flags(EnvironmentFlags::NO_TLS | EnvironmentFlags::NO_READAHEAD)
            .open(path)
            .map_err(|e| fail(format!("cannot open: {e}")))?;
        let meta = env
            .create_db(Some("meta"), DatabaseFlags::empty())
            .map_err(|e| fail(format!("cannot open: {e}")))?;
        let entries = env
            .create_db(Some("entries"), DatabaseFlags::empty())
            .map_err(|e| fail(format!("cannot open: {e}")))?;
        let store = LmdbStore {
            name: name.clone(),
            path: path.to_path_buf(),
            env,
            meta,
            entries,
            max_map_size,
            gate: RwLock::new(()),
        };
        store.check_format()?;
        Ok(store)
    }

    fn check_format(&self) -> Result<(), StoreError> {
        let fail = |e: lmdb::Error| StoreError(format!("{}: cannot open: {e}", self.name));
        let mut txn = self.env.begin_rw_txn().map_err(fail)?;
        match txn.get(self.meta, &FORMAT_KEY) {
            Ok(v) if v == FORMAT_VALUE => Ok(()),
            Ok(v) => Err(StoreError(format!(
                "{}: unknown layout {:?}, expected {:?}",
                self.name,
                String::from_utf8_lossy(v),
                String::from_utf8_lossy(FORMAT_VALUE)
            ))),
            Err(lmdb::Error::NotFound) => {
                txn.put(self.meta, &FORMAT_KEY, &FORMAT_VALUE, WriteFlags::empty())
                    .map_err(fail)?;
                txn.commit().map_err(fail)
            }
            Err(e) => Err(fail(e)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Current map size in bytes.
    pub fn map_size(&self) -> usize {
        self.env.info().map(|i| i.map_size()).unwrap_or(0)
    }

    /// Take the shared gate and run `f`, adopting a map grown by another process
    /// (`MDB_MAP_RESIZED`) and retrying once when `f` reports it.
    fn with_txn<T>(&self, f: impl Fn() -> Result<T, lmdb::Error>) -> Result<T, lmdb::Error> {
        let res = {
            let _g = self.gate.read().unwrap_or_else(|p| p.into_inner());
            f()
        };
        match res {
            Err(lmdb::Error::MapResized) => {
                self.adopt_map_size()?;
                let _g = self.gate.read().unwrap_or_else(|p| p.into_inner());
                f()
            }
            other => other,
        }
    }

    fn adopt_map_size(&self) -> Result<(), lmdb::Error> {
        let _g = self.gate.write().unwrap_or_else(|p| p.into_inner());
        self.env.set_map_size(0)
    }

    /// The committed object with this object key, or `None`.
    pub fn read(
        &self,
        object_key: &[u8],
        what: &dyn fmt::Display,
    ) -> Result<Option<StoredObject>, StoreError> {
        let res = self.with_txn(|| {
            let txn = self.env.begin_ro_txn()?;
            let raw = match txn.get(self.meta, &object_key) {
                Ok(v) => v.to_vec(),
                Err(lmdb::Error::NotFound) => return Ok(None),
                Err(e) => return Err(e),
            };
            let prefix = entry_prefix(object_key);
            let mut entries = Vec::new();
            let mut cur = txn.open_ro_cursor(self.entries)?;
            for item in cur.iter_from(&prefix) {
                let (k, v) = item?;
                if !k.starts_with(&prefix) {
                    break;
                }
                let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                entries.push((name, v.to_vec()));
            }
            Ok(Some((raw, entries)))
        });
        match res {
            Ok(None) => Ok(None),
            Ok(Some((raw, entries))) => match Meta::unpack(&raw) {
                Some(meta) => Ok(Some(StoredObject { meta, entries })),
                None => Err(StoreError(format!(
                    "{}: metadata of {what} is corrupt: bad metadata record ({} bytes)",
                    self.name,
                    raw.len()
                ))),
            },
            Err(e) => Err(StoreError(format!(
                "{}: read of {what} failed: {e}",
                self.name
            ))),
        }
    }

    /// Object keys of the stored objects whose key starts with `prefix`.
    pub fn scan(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        self.with_txn(|| {
            let txn = self.env.begin_ro_txn()?;
            let mut cur = txn.open_ro_cursor(self.meta)?;
            let mut out = Vec::new();
            for item in cur.iter_from(prefix) {
                let (k, _) = item?;
                if !k.starts_with(prefix) {
                    break;
                }
                out.push(k.to_vec());
            }
            Ok(out)
        })
        .map_err(|e| StoreError(format!("{}: scan failed: {e}", self.name)))
    }

    /// Apply `records` in order in one write transaction (group commit, one fsync).
    ///
    /// Returns one result per record: `Ok` when written, `Err(message)` when its expected
    /// version did not match (that record alone is skipped). Writes to the same entry in the
    /// batch are coalesced: only the last value is put. A full map is doubled (up to
    /// `max_map_size`) and the batch retried; any other failure fails the whole batch and
    /// nothing of it is written.
    pub fn write_batch(&self, records: &[&WriteRecord]) -> Result<Vec<RecordResult>, StoreError> {
        loop {
            let res = {
                let _g = self.gate.read().unwrap_or_else(|p| p.into_inner());
                self.try_write(records)
            };
            match res {
                Ok(results) => return Ok(results),
                Err(WriteError::MapFull) => self.grow()?,
                Err(WriteError::Other(lmdb::Error::MapResized)) => self
                    .adopt_map_size()
                    .map_err(|e| self.write_failed(records.len(), e))?,
                Err(WriteError::Other(e)) => return Err(self.write_failed(records.len(), e)),
            }
        }
    }

    fn write_failed(&self, n: usize, e: lmdb::Error) -> StoreError {
        StoreError(format!("{}: write of {n} commits failed: {e}", self.name))
    }

    fn grow(&self) -> Result<(), StoreError> {
        let _g = self.gate.write().unwrap_or_else(|p| p.into_inner());
        let size = self.map_size();
        let new = size.saturating_mul(2);
        if new > self.max_map_size {
            return Err(StoreError(format!(
                "{}: the map is full at {size} bytes (MDB_MAP_FULL; the limit is {} bytes)",
                self.name, self.max_map_size
            )));
        }
        self.env.set_map_size(new).map_err(|e| {
            StoreError(format!(
                "{}: cannot grow the map to {new} bytes: {e}",
                self.name
            ))
        })
    }

    fn try_write(&self, records: &[&WriteRecord]) -> Result<Vec<RecordResult>, WriteError> {
        let mut txn = self.env.begin_rw_txn()?;
        let mut results = Vec::with_capacity(records.len());
        // object key -> (version, created) after the records seen so far
        let mut versions: HashMap<&[u8], (u64, i64)> = HashMap::new();
        let mut wiped: Vec<&[u8]> = Vec::new();
        let mut metas: BTreeMap<&[u8], Option<Meta>> = BTreeMap::new();
        let mut puts: BTreeMap<Vec<u8>, Option<&[u8]>> = BTreeMap::new();
        for r in records {
            let okey = r.object_key.as_slice();
            let (found, created) = match versions.get(okey) {
                Some(v) => *v,
                None => match txn.get(self.meta, &okey) {
                    Ok(raw) => match Meta::unpack(raw) {
                        Some(m) => (m.version, m.created_ms),
                        None => return Err(WriteError::Other(lmdb::Error::Corrupted)),
                    },
                    Err(lmdb::Error::NotFound) => (0, r.time_ms),
                    Err(e) => return Err(e.into()),
                },
            };
            if found != r.expected_version {
                results.push(Err(r.conflict_message(found)));
                continue;
            }
            if r.delete_object {
                let prefix = entry_prefix(okey);
                let doomed: Vec<Vec<u8>> = puts
                    .range(prefix.clone()..)
                    .map(|(k, _)| k)
                    .take_while(|k| k.starts_with(&prefix))
                    .cloned()
                    .collect();
                for k in doomed {
                    puts.remove(&k);
                }
                wiped.push(okey);
                metas.insert(okey, None);
                versions.insert(okey, (0, r.time_ms));
            } else {
                let created = if found == 0 { r.time_ms } else { created };
                let meta = Meta {
                    version: found + 1,
                    created_ms: created,
                    updated_ms: r.time_ms,
                };
                metas.insert(okey, Some(meta));
                for (name, value) in r.entries.iter() {
                    puts.insert(super::layout::entry_key(okey, name), Some(value));
                }
                for name in &r.deletes {
                    puts.insert(super::layout::entry_key(okey, name), None);
                }
                versions.insert(okey, (found + 1, created));
            }
            results.push(Ok(()));
        }
        for okey in wiped {
            let prefix = entry_prefix(okey);
            let doomed: Vec<Vec<u8>> = {
                let mut cur = txn.open_ro_cursor(self.entries)?;
                let mut keys = Vec::new();
                for item in cur.iter_from(&prefix) {
                    let (k, _) = item?;
                    if !k.starts_with(&prefix) {
                        break;
                    }
                    keys.push(k.to_vec());
                }
                keys
            };
            for k in doomed {
                del(&mut txn, self.entries, &k)?;
            }
        }
        for (okey, meta) in metas {
            match meta {
                Some(m) => txn.put(self.meta, &okey, &m.pack(), WriteFlags::empty())?,
                None => del(&mut txn, self.meta, okey)?,
            }
        }
        for (k, v) in &puts {
            match v {
                Some(v) => txn.put(self.entries, k, v, WriteFlags::empty())?,
                None => del(&mut txn, self.entries, k)?,
            }
        }
        txn.commit()?;
        Ok(results)
    }
}

fn del(txn: &mut lmdb::RwTransaction<'_>, db: Database, key: &[u8]) -> Result<(), lmdb::Error> {
    match txn.del(db, &key, None) {
        Ok(()) | Err(lmdb::Error::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Store for LmdbStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn read(
        &self,
        object_key: &[u8],
        what: &dyn fmt::Display,
    ) -> Result<Option<StoredObject>, StoreError> {
        LmdbStore::read(self, object_key, what)
    }

    fn scan(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        LmdbStore::scan(self, prefix)
    }

    fn write_batch(&self, records: &[&WriteRecord]) -> Result<Vec<RecordResult>, StoreError> {
        LmdbStore::write_batch(self, records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_record as rec;

    #[test]
    fn links_the_vendored_lmdb_0_9() {
        // The library linked is the one whose header the bindings were written for.
        let want = (
            lmdb_sys::MDB_VERSION_MAJOR as i32,
            lmdb_sys::MDB_VERSION_MINOR as i32,
            lmdb_sys::MDB_VERSION_PATCH as i32,
        );
        assert_eq!(lmdb_version(), want);
        let (major, minor, patch) = lmdb_version();
        assert_eq!(
            (major, minor),
            (0, 9),
            "data/lock formats shared with py-lmdb"
        );
        assert!(patch >= 36, "LMDB 0.9.{patch}: the vendored copy is 0.9.36");
    }

    fn open(dir: &Path, map: usize, max: usize) -> LmdbStore {
        match LmdbStore::open(dir, map, max) {
            Ok(s) => s,
            Err(e) => panic!("open failed: {e}"),
        }
    }

    #[test]
    fn batch_checks_versions_per_record_and_coalesces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = open(dir.path(), 1 << 20, 1 << 24);
        let a1 = rec(1, 0, &[("x", b"1"), ("y", b"1")]);
        let a2 = rec(1, 1, &[("x", b"2")]);
        let stale = rec(1, 0, &[("x", b"bad")]);
        let b1 = rec(2, 0, &[("x", b"b")]);
        let res = s.write_batch(&[&a1, &a2, &stale, &b1]).expect("batch");
        assert!(res[0].is_ok() && res[1].is_ok() && res[3].is_ok());
        assert!(res[2].as_ref().err().is_some_and(|m| m.contains("t.C/0/1")));
        let got = s
            .read(&a1.object_key, &"a")
            .expect("read")
            .expect("present");
        assert_eq!(got.meta.version, 2);
        assert_eq!(got.meta.created_ms, 1000);
        assert_eq!(
            got.entries,
            vec![("x".into(), b"2".to_vec()), ("y".into(), b"1".to_vec())]
        );
    }

    #[test]
    fn delete_object_then_recreate_in_one_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = open(dir.path(), 1 << 20, 1 << 24);
        let a1 = rec(1, 0, &[("x", b"1"), ("y", b"1")]);
        s.write_batch(&[&a1]).expect("first");
        let mut del = rec(1, 1, &[]);
        del.delete_object = true;
        let again = rec(1, 0, &[("z", b"3")]);
        let res = s.write_batch(&[&del, &again]).expect("second");
        assert!(res.iter().all(|r| r.is_ok()));
        let got = s
            .read(&a1.object_key, &"a")
            .expect("read")
            .expect("present");
        assert_eq!(got.meta.version, 1);
        assert_eq!(got.entries, vec![("z".into(), b"3".to_vec())]);
        assert_eq!(s.scan(b"t.C\x00").expect("scan").len(), 1);
    }

    #[test]
    fn full_map_grows_then_refuses_past_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = open(dir.path(), 1 << 20, 1 << 23);
        let big = vec![7u8; 3 << 20];
        let r = rec(1, 0, &[("blob", &big)]);
        s.write_batch(&[&r]).expect("grows");
        assert!(s.map_size() > 1 << 20);
        let huge = vec![1u8; 16 << 20];
        let h = rec(2, 0, &[("blob", &huge)]);
        let err = s.write_batch(&[&h]).expect_err("past the limit");
        assert!(err.0.contains("map is full"), "{err}");
        let small = rec(3, 0, &[("x", b"ok")]);
        s.write_batch(&[&small]).expect("a later commit succeeds");
        assert_eq!(
            s.read(&r.object_key, &"r")
                .expect("read")
                .map(|o| o.entries[0].1.len()),
            Some(3 << 20)
        );
    }

    #[test]
    fn refuses_a_file_and_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("file");
        std::fs::write(&f, b"x").expect("write");
        let e = LmdbStore::open(&f, 1 << 20, 1 << 20)
            .err()
            .expect("a file is refused");
        assert!(e.0.contains("not a directory"));
        let g = dir.path().join("garbage");
        std::fs::create_dir(&g).expect("mkdir");
        std::fs::write(g.join("data.mdb"), vec![0xA5u8; 65536]).expect("write");
        let e = LmdbStore::open(&g, 1 << 20, 1 << 20)
            .err()
            .expect("garbage is refused");
        assert!(e.0.starts_with("lmdb store at"), "{e}");
    }
}
