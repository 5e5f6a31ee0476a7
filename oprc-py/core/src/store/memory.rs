//! The memory store: objects kept in process memory, nothing persisted, with the version
//! checks of the durable stores. The native twin of `oaas_sdk.stores.memory.MemoryStore`
//! (same semantics: a record is refused when the stored version is not its expected one,
//! a deleted object is gone with its entries, a new object's creation time is its first
//! commit's). It is an inline store ([`Store::inline`]): the engine applies each commit in
//! the committing thread, so there is no batch to wait for. No pyo3.
//!
//! One `parking_lot::RwLock` over a foldhash `HashMap` keyed by object key: commits are
//! made with the GIL held, so the lock is uncontended and one atomic operation is what a
//! concurrent map would save nothing on; measured against a sharded map (`dashmap`) and
//! `scc` (docs/engine.md, "The memory store").

use std::collections::HashMap;
use std::fmt;

use parking_lot::RwLock;

use super::layout::{Meta, StoredObject, WriteRecord};
use super::{RecordResult, Store, StoreError};

/// One stored object: metadata and entries in the order they were first written (as the
/// Python store's dict keeps them).
struct Stored {
    meta: Meta,
    entries: Vec<(Box<str>, Vec<u8>)>,
}

impl Stored {
    fn new(r: &WriteRecord) -> Stored {
        Stored {
            meta: Meta {
                version: 1,
                created_ms: r.time_ms,
                updated_ms: r.time_ms,
            },
            entries: r
                .entries
                .iter()
                .map(|(n, v)| (Box::from(n), v.to_vec()))
                .collect(),
        }
    }

    /// Apply a record that passed the version check (`apply_record` of the Python store):
    /// values replaced in place (their buffers reused), new names appended, deletes last.
    fn apply(&mut self, r: &WriteRecord) {
        self.meta.version += 1;
        self.meta.updated_ms = r.time_ms;
        for (name, value) in r.entries.iter() {
            match self.entries.iter_mut().find(|(n, _)| &**n == name) {
                Some(slot) => {
                    slot.1.clear();
                    slot.1.extend_from_slice(value);
                }
                None => self.entries.push((Box::from(name), value.to_vec())),
            }
        }
        if !r.deletes.is_empty() {
            self.entries
                .retain(|(n, _)| !r.deletes.iter().any(|d| **d == **n));
        }
    }

    fn to_stored_object(&self) -> StoredObject {
        StoredObject {
            meta: self.meta,
            entries: self
                .entries
                .iter()
                .map(|(n, v)| (n.to_string(), v.clone()))
                .collect(),
        }
    }
}

type Objects = HashMap<Vec<u8>, Stored, foldhash::fast::RandomState>;

/// Objects in process memory by object key ([`super::layout::object_key`]).
pub struct MemoryStore {
    objects: RwLock<Objects>,
}

/// The name of every memory store in messages (as the Python store's).
pub const MEMORY_STORE_NAME: &str = "memory store";

impl Default for MemoryStore {
    fn default() -> MemoryStore {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore {
            objects: RwLock::new(Objects::default()),
        }
    }

    /// Number of stored objects.
    pub fn len(&self) -> usize {
        self.objects.read().len()
    }

    /// Whether no object is stored.
    pub fn is_empty(&self) -> bool {
        self.objects.read().is_empty()
    }

    /// Apply `records` in order: each is version-checked on its own against the state
    /// the earlier ones left (one result per record, `Err(message)` for a refused one,
    /// which is skipped). Never fails as a whole.
    pub fn write(&self, records: &[&WriteRecord]) -> Vec<RecordResult> {
        let mut objects = self.objects.write();
        records.iter().map(|r| apply(&mut objects, r)).collect()
    }

    /// [`MemoryStore::write`] of one record.
    #[inline]
    pub fn write_one(&self, r: &WriteRecord) -> RecordResult {
        apply(&mut self.objects.write(), r)
    }
}

fn apply(objects: &mut Objects, r: &WriteRecord) -> RecordResult {
    let key = r.object_key.as_slice();
    match objects.get_mut(key) {
        Some(cur) => {
            if cur.meta.version != r.expected_version {
                return Err(r.conflict_message(cur.meta.version));
            }
            if r.delete_object {
                objects.remove(key);
            } else {
                cur.apply(r);
            }
        }
        None => {
            if r.expected_version != 0 {
                return Err(r.conflict_message(0));
            }
            if !r.delete_object {
                objects.insert(r.object_key.clone(), Stored::new(r));
            }
        }
    }
    Ok(())
}

impl Store for MemoryStore {
    fn name(&self) -> &str {
        MEMORY_STORE_NAME
    }

    fn read(
        &self,
        object_key: &[u8],
        _what: &dyn fmt::Display,
    ) -> Result<Option<StoredObject>, StoreError> {
        Ok(self
            .objects
            .read()
            .get(object_key)
            .map(Stored::to_stored_object))
    }

    fn scan(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut keys: Vec<Vec<u8>> = self
            .objects
            .read()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        keys.sort_unstable();
        Ok(keys)
    }

    fn write_batch(&self, records: &[&WriteRecord]) -> Result<Vec<RecordResult>, StoreError> {
        Ok(self.write(records))
    }

    fn write_one(&self, record: &WriteRecord) -> Result<RecordResult, StoreError> {
        Ok(MemoryStore::write_one(self, record))
    }

    fn inline(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_record as rec;

    fn read(s: &MemoryStore, r: &WriteRecord) -> Option<StoredObject> {
        s.read(&r.object_key, &"o")
            .expect("a memory read never fails")
    }

    #[test]
    fn batch_checks_versions_per_record_in_order() {
        let s = MemoryStore::new();
        let a1 = rec(1, 0, &[("x", b"1"), ("y", b"1")]);
        let a2 = rec(1, 1, &[("x", b"2"), ("z", b"3")]);
        let stale = rec(1, 0, &[("x", b"bad")]);
        let b1 = rec(2, 0, &[("x", b"b")]);
        let res = s.write_batch(&[&a1, &a2, &stale, &b1]).expect("batch");
        assert!(res[0].is_ok() && res[1].is_ok() && res[3].is_ok());
        assert_eq!(
            res[2].as_ref().err().map(String::as_str),
            Some("commit of t.C/0/1 refused: it already exists (version 2)")
        );
        let got = read(&s, &a1).expect("present");
        assert_eq!(
            got.meta,
            Meta {
                version: 2,
                created_ms: 1000,
                updated_ms: 1001
            }
        );
        // First-written order, as the Python store's dict keeps it.
        assert_eq!(
            got.entries,
            vec![
                ("x".into(), b"2".to_vec()),
                ("y".into(), b"1".to_vec()),
                ("z".into(), b"3".to_vec())
            ]
        );
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn deletes_entries_and_objects_and_words_conflicts_as_python() {
        let s = MemoryStore::new();
        let a1 = rec(1, 0, &[("x", b"1"), ("y", b"1")]);
        let mut a2 = rec(1, 1, &[]);
        a2.deletes = vec!["y".into(), "absent".into()];
        assert!(s.write_one(&a1).is_ok() && s.write_one(&a2).is_ok());
        assert_eq!(read(&s, &a1).expect("present").entries.len(), 1);
        // A writer that saw version 1 after another committed version 2.
        let late = rec(1, 1, &[("x", b"late")]);
        assert_eq!(
            s.write_one(&late).err().as_deref(),
            Some(
                "commit of t.C/0/1 refused: another writer committed version 2 since this \
                 process saw version 1"
            )
        );
        let mut del = rec(1, 2, &[]);
        del.delete_object = true;
        assert!(s.write_one(&del).is_ok());
        assert!(read(&s, &a1).is_none() && s.is_empty());
        assert!(s
            .write_one(&rec(1, 2, &[("x", b"gone")]))
            .is_err_and(|m| m.ends_with("it was deleted by another writer")));
        // Deleting what does not exist is refused unless expected at version 0.
        let mut del0 = rec(9, 0, &[]);
        del0.delete_object = true;
        assert!(s.write_one(&del0).is_ok() && s.is_empty());
        // Recreated: version 1 again, created anew.
        let again = rec(1, 0, &[("z", b"3")]);
        assert!(s.write_one(&again).is_ok());
        let got = read(&s, &again).expect("present");
        assert_eq!((got.meta.version, got.meta.created_ms), (1, 1000));
        assert_eq!(got.entries, vec![("z".into(), b"3".to_vec())]);
    }

    #[test]
    fn scan_lists_object_keys_with_a_prefix_in_key_order() {
        let s = MemoryStore::new();
        for oid in [5u64, 1, 3] {
            assert!(s.write_one(&rec(oid, 0, &[("x", b"v")])).is_ok());
        }
        let mut other = rec(2, 0, &[("x", b"v")]);
        other.identity.cls_id = "u.D".into();
        other.object_key = other.identity.object_key();
        assert!(s.write_one(&other).is_ok());
        let keys = s.scan(b"t.C\x00").expect("scan");
        let want: Vec<Vec<u8>> = [1u64, 3, 5]
            .iter()
            .map(|&o| rec(o, 0, &[]).object_key)
            .collect();
        assert_eq!(keys, want);
        assert_eq!(s.scan(b"").expect("scan").len(), 4);
        assert_eq!(Store::name(&s), "memory store");
    }
}
