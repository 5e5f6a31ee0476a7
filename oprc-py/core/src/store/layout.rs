//! Store layout shared with the pure-Python store (`docs/format.md`, "Store layout"):
//! object and entry keys, the 25-byte metadata record, and one commit as a write record.
//! No pyo3 here.

use std::sync::OnceLock;

use crossbeam_channel::{Receiver, Sender};

pub use crate::id::{Identity, ObjectId};

/// Version byte that starts every metadata record.
pub const META_FORMAT: u8 = 1;
/// Size of a metadata record in bytes.
pub const META_LEN: usize = 25;
/// Key (in `meta`) of the record naming the layout of the environment.
pub const FORMAT_KEY: &[u8] = b"\x00oaas-format";
/// Value of that record for this layout.
pub const FORMAT_VALUE: &[u8] = b"oaas-sdk/1";
/// Byte between the class id and the partition in an object key, and between the object
/// key and the field name in an entry key.
pub const KEY_SEP: u8 = 0x00;
/// Tag byte of a numeric object id (u64 BE follows) in an object key.
pub const KEY_NUM_ID: u8 = 0x01;
/// Tag byte of a string object id (UTF-8 follows) in an object key.
pub const KEY_STR_ID: u8 = 0x02;

/// The object key of `(cls_id, partition_id, object_id)` (docs/format.md, "Keys"):
/// `cls_id UTF-8 | 0x00 | partition_id u32 BE | 0x01 | object_id u64 BE` for numeric ids,
/// `... | 0x02 | object_id UTF-8` for string ids. The one definition of the key layout in
/// Rust: the store, the batcher, the entry cache and the bindings all build keys here.
#[inline]
pub fn object_key(cls_id: &str, partition_id: u32, object_id: ObjectId<&str>) -> Vec<u8> {
    let id_len = match object_id {
        ObjectId::Num(_) => 8,
        ObjectId::Str(s) => s.len(),
    };
    let mut k = Vec::with_capacity(cls_id.len() + 6 + id_len);
    k.extend_from_slice(cls_id.as_bytes());
    k.push(KEY_SEP);
    k.extend_from_slice(&partition_id.to_be_bytes());
    match object_id {
        ObjectId::Num(n) => {
            k.push(KEY_NUM_ID);
            k.extend_from_slice(&n.to_be_bytes());
        }
        ObjectId::Str(s) => {
            k.push(KEY_STR_ID);
            k.extend_from_slice(s.as_bytes());
        }
    }
    k
}

impl Identity {
    /// This identity's object key ([`object_key`]).
    #[inline]
    pub fn object_key(&self) -> Vec<u8> {
        object_key(&self.cls_id, self.partition_id, self.object_id.as_deref())
    }
}

/// Prefix of all entry keys of the object with key `object_key`.
#[inline]
pub fn entry_prefix(object_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(object_key.len() + 1);
    k.extend_from_slice(object_key);
    k.push(KEY_SEP);
    k
}

/// Entry key of field `name`: `object key | 0x00 | name UTF-8`.
#[inline]
pub fn entry_key(object_key: &[u8], name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(object_key.len() + 1 + name.len());
    k.extend_from_slice(object_key);
    k.push(KEY_SEP);
    k.extend_from_slice(name.as_bytes());
    k
}

/// Metadata of one object: version (1 after the first commit) and times in ms since epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub version: u64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl Meta {
    /// The 25-byte record: format u8 (=1), version u64, created i64, updated i64, all BE.
    #[inline]
    pub fn pack(&self) -> [u8; META_LEN] {
        let mut b = [0u8; META_LEN];
        b[0] = META_FORMAT;
        b[1..9].copy_from_slice(&self.version.to_be_bytes());
        b[9..17].copy_from_slice(&self.created_ms.to_be_bytes());
        b[17..25].copy_from_slice(&self.updated_ms.to_be_bytes());
        b
    }

    /// Inverse of [`Meta::pack`]; `None` when `data` is not a 25-byte record of format 1.
    #[inline]
    pub fn unpack(data: &[u8]) -> Option<Meta> {
        if data.len() != META_LEN || data[0] != META_FORMAT {
            return None;
        }
        let be8 = |r: std::ops::Range<usize>| -> Option<[u8; 8]> { data.get(r)?.try_into().ok() };
        Some(Meta {
            version: u64::from_be_bytes(be8(1..9)?),
            created_ms: i64::from_be_bytes(be8(9..17)?),
            updated_ms: i64::from_be_bytes(be8(17..25)?),
        })
    }
}

/// The entries of a write record, `(field name, value bytes)` in order: names and values
/// back to back in one buffer, so a record costs two allocations instead of two per
/// entry (a record is built on the committing thread and freed on the persister's).
/// The buffer comes from, and goes back to, a small pool ([`buffers`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Entries {
    data: Vec<u8>,
    /// Per entry: start in `data`, name length, value length (the value follows the name).
    spans: Vec<(usize, usize, usize)>,
    value_bytes: usize,
}

/// Entry buffers to reuse: a bounded lock-free queue (a crossbeam channel) that written
/// records' buffers go back to and new records take theirs from. A record's buffer is
/// about the size of its values (just over a KiB for the benchmark's objects), past the
/// allocator's small-object fast path: a fresh one costs mimalloc's generic path on the
/// committing thread and a cross-thread free on the persister's (measured: docs/engine.md).
/// At most [`POOLED_BUFFERS`] buffers of more than [`UNPOOLED_MAX`] and at most
/// [`POOLED_CAPACITY`] bytes are kept.
fn buffers() -> &'static BufferPool {
    static POOL: OnceLock<BufferPool> = OnceLock::new();
    POOL.get_or_init(|| crossbeam_channel::bounded(POOLED_BUFFERS))
}

type BufferPool = (Sender<Vec<u8>>, Receiver<Vec<u8>>);

const POOLED_BUFFERS: usize = 256;
const POOLED_CAPACITY: usize = 16 << 10;
/// Buffers up to this many bytes skip the pool: they are on mimalloc's small-object fast
/// path, cheaper than the pool's channel (a record of one small field, e.g. an int, costs
/// a receive and a send of about 100 instructions each through the pool).
const UNPOOLED_MAX: usize = 512;

impl Clone for Entries {
    fn clone(&self) -> Entries {
        let mut data = Entries::buffer(self.data.len());
        data.extend_from_slice(&self.data);
        Entries {
            data,
            spans: self.spans.clone(),
            value_bytes: self.value_bytes,
        }
    }
}

impl Drop for Entries {
    fn drop(&mut self) {
        let data = std::mem::take(&mut self.data);
        if data.capacity() > UNPOOLED_MAX && data.capacity() <= POOLED_CAPACITY {
            let _ = buffers().0.try_send(data); // the pool is full: freed
        }
    }
}

impl Entries {
    /// Room for `n` entries of `bytes` name and value bytes in all.
    #[inline]
    pub fn with_capacity(n: usize, bytes: usize) -> Entries {
        Entries {
            data: Entries::buffer(bytes),
            spans: Vec::with_capacity(n),
            value_bytes: 0,
        }
    }

    /// An empty buffer of at least `bytes` capacity, from the pool when it has one.
    fn buffer(bytes: usize) -> Vec<u8> {
        if bytes <= UNPOOLED_MAX {
            return Vec::with_capacity(bytes);
        }
        match buffers().1.try_recv() {
            Ok(mut b) => {
                b.clear();
                b.reserve(bytes);
                b
            }
            Err(_) => Vec::with_capacity(bytes),
        }
    }

    #[inline]
    pub fn push(&mut self, name: &str, value: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(name.as_bytes());
        self.data.extend_from_slice(value);
        self.spans.push((start, name.len(), value.len()));
        self.value_bytes += value.len();
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Bytes of the values (names not counted).
    #[inline]
    pub fn value_bytes(&self) -> usize {
        self.value_bytes
    }

    /// The entries in order.
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.spans.iter().map(move |&(start, n, v)| {
            let name = &self.data[start..start + n];
            // SAFETY: `push` copied these bytes from a `&str` (valid UTF-8, and split at
            // its own end, a character boundary); `data` is never changed otherwise.
            let name = unsafe { std::str::from_utf8_unchecked(name) };
            (name, &self.data[start + n..start + n + v])
        })
    }

    /// Owned copies, as a [`StoredObject`] holds them.
    #[inline]
    pub fn to_vec(&self) -> Vec<(String, Vec<u8>)> {
        self.iter()
            .map(|(n, v)| (n.to_owned(), v.to_vec()))
            .collect()
    }
}

impl<'a> FromIterator<(&'a str, &'a [u8])> for Entries {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a [u8])>>(iter: I) -> Entries {
        let mut e = Entries::default();
        for (n, v) in iter {
            e.push(n, v);
        }
        e
    }
}

/// One commit of one object, as the engine receives it (encoding already done).
///
/// `expected_version` is the version the writer last saw (0: the object must not exist);
/// the store writes `expected_version + 1` or refuses the record with a conflict.
#[derive(Clone, Debug)]
pub struct WriteRecord {
    pub identity: Identity,
    pub object_key: Vec<u8>,
    pub expected_version: u64,
    pub entries: Entries,
    pub deletes: Vec<String>,
    pub delete_object: bool,
    pub time_ms: i64,
}

impl WriteRecord {
    #[inline]
    pub fn new(identity: Identity, expected_version: u64, time_ms: i64) -> WriteRecord {
        let object_key = identity.object_key();
        WriteRecord {
            identity,
            object_key,
            expected_version,
            entries: Entries::default(),
            deletes: Vec::new(),
            delete_object: false,
            time_ms,
        }
    }

    /// Bytes of entry values in this record.
    #[inline]
    pub fn nbytes(&self) -> usize {
        self.entries.value_bytes()
    }

    /// The message of the conflict refusing this record when the store holds `found`
    /// (worded as the Python store words it).
    #[inline]
    pub fn conflict_message(&self, found: u64) -> String {
        let why = if self.expected_version == 0 && !self.delete_object {
            format!("it already exists (version {found})")
        } else if found == 0 {
            "it was deleted by another writer".to_string()
        } else {
            format!(
                "another writer committed version {found} since this process saw version {}",
                self.expected_version
            )
        };
        format!("commit of {} refused: {why}", self.identity)
    }
}

/// An object as read from a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    pub meta: Meta,
    pub entries: Vec<(String, Vec<u8>)>,
}

impl StoredObject {
    /// Apply a commit that passed the version check (read-your-writes overlay).
    #[inline]
    pub fn apply(&mut self, r: &WriteRecord) {
        self.meta.version += 1;
        self.meta.updated_ms = r.time_ms;
        for (name, value) in r.entries.iter() {
            match self.entries.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = value.to_vec(),
                None => self.entries.push((name.to_owned(), value.to_vec())),
            }
        }
        self.entries.retain(|(n, _)| !r.deletes.contains(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_key_matches_format_doc_example() {
        let id = Identity {
            cls_id: "test.Counter".into(),
            partition_id: 0,
            object_id: ObjectId::Num(7),
        };
        let hex: String = id.object_key().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "746573742e436f756e7465720000000000010000000000000007");
        let ek = entry_key(&id.object_key(), "count");
        assert!(ek.ends_with(b"\x00count"));
        assert!(ek.starts_with(&entry_prefix(&id.object_key())));
    }

    #[test]
    fn string_ids_use_tag_2() {
        let id = Identity {
            cls_id: "a.B".into(),
            partition_id: 3,
            object_id: ObjectId::Str("alice".into()),
        };
        assert_eq!(
            id.object_key(),
            b"a.B\x00\x00\x00\x00\x03\x02alice".to_vec()
        );
        assert_eq!(id.to_string(), "a.B/3/alice");
    }

    #[test]
    fn meta_round_trips_and_rejects_bad_records() {
        let m = Meta {
            version: 9,
            created_ms: -5,
            updated_ms: 1_700_000_000_000,
        };
        assert_eq!(Meta::unpack(&m.pack()), Some(m));
        assert_eq!(Meta::unpack(&m.pack()[..24]), None);
        let mut bad = m.pack();
        bad[0] = 2;
        assert_eq!(Meta::unpack(&bad), None);
    }

    #[test]
    fn entries_keep_names_values_and_order() {
        let mut e = Entries::with_capacity(3, 8);
        e.push("a", b"1");
        e.push("\u{e9}t\u{e9}", b"");
        e.push("b", &[0u8; 100]);
        assert_eq!(e.len(), 3);
        assert_eq!(e.value_bytes(), 101);
        let got: Vec<(&str, &[u8])> = e.iter().collect();
        assert_eq!(got[0], ("a", &b"1"[..]));
        assert_eq!(got[1], ("\u{e9}t\u{e9}", &b""[..]));
        assert_eq!(got[2], ("b", &[0u8; 100][..]));
        let again: Entries = e.iter().collect();
        assert_eq!(again, e);
        assert_eq!(e.clone(), e);
        drop(again); // its buffer goes to the pool; the next record may get it, emptied
        let next = Entries::with_capacity(1, 4);
        assert!(next.is_empty() && next.iter().next().is_none());
        assert_eq!(e.to_vec()[1], ("\u{e9}t\u{e9}".to_string(), Vec::new()));
        assert!(Entries::default().is_empty());
    }

    #[test]
    fn pooled_and_small_buffers_start_empty() {
        let mut big = Entries::with_capacity(1, 2 * UNPOOLED_MAX);
        big.push("x", &vec![7u8; 2 * UNPOOLED_MAX]);
        drop(big); // pooled: the next large record may get it
        let mut next = Entries::with_capacity(1, UNPOOLED_MAX + 1);
        assert!(next.is_empty() && next.value_bytes() == 0);
        next.push("y", b"2");
        assert_eq!(next.to_vec(), vec![("y".to_string(), b"2".to_vec())]);
        let small = Entries::with_capacity(1, 4); // not pooled
        assert!(small.is_empty() && small.iter().next().is_none());
    }

    #[test]
    fn conflict_messages_name_the_object() {
        let id = Identity {
            cls_id: "t.C".into(),
            partition_id: 0,
            object_id: ObjectId::Num(5),
        };
        let r = WriteRecord::new(id, 2, 0);
        assert_eq!(
            r.conflict_message(3),
            "commit of t.C/0/5 refused: another writer committed version 3 since this \
             process saw version 2"
        );
        assert!(r.conflict_message(0).contains("deleted"));
    }
}
