//! Store layout shared with the pure-Python store (`docs/format.md`, "Store layout"):
//! object and entry keys, the 25-byte metadata record, and one commit as a write record.
//! No pyo3 here.

use std::fmt;

/// Version byte that starts every metadata record.
pub const META_FORMAT: u8 = 1;
/// Size of a metadata record in bytes.
pub const META_LEN: usize = 25;
/// Key (in `meta`) of the record naming the layout of the environment.
pub const FORMAT_KEY: &[u8] = b"\x00oaas-format";
/// Value of that record for this layout.
pub const FORMAT_VALUE: &[u8] = b"oaas-sdk/1";

/// The object part of an identity: a u64 or a string id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ObjectId {
    Num(u64),
    Str(String),
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectId::Num(n) => write!(f, "{n}"),
            ObjectId::Str(s) => f.write_str(s),
        }
    }
}

/// Identity of an object: (cls_id, partition_id, object_id).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub cls_id: String,
    pub partition_id: u32,
    pub object_id: ObjectId,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.cls_id, self.partition_id, self.object_id
        )
    }
}

impl Identity {
    /// The object key: `cls_id | 0x00 | partition u32 BE | 0x01 | id u64 BE` for numeric
    /// ids, `... | 0x02 | id UTF-8` for string ids.
    pub fn object_key(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.cls_id.len() + 14);
        k.extend_from_slice(self.cls_id.as_bytes());
        k.push(0);
        k.extend_from_slice(&self.partition_id.to_be_bytes());
        match &self.object_id {
            ObjectId::Num(n) => {
                k.push(1);
                k.extend_from_slice(&n.to_be_bytes());
            }
            ObjectId::Str(s) => {
                k.push(2);
                k.extend_from_slice(s.as_bytes());
            }
        }
        k
    }
}

/// Prefix of all entry keys of the object with key `object_key`.
pub fn entry_prefix(object_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(object_key.len() + 1);
    k.extend_from_slice(object_key);
    k.push(0);
    k
}

/// Entry key of field `name`: `object key | 0x00 | name UTF-8`.
pub fn entry_key(object_key: &[u8], name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(object_key.len() + 1 + name.len());
    k.extend_from_slice(object_key);
    k.push(0);
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
    pub fn pack(&self) -> [u8; META_LEN] {
        let mut b = [0u8; META_LEN];
        b[0] = META_FORMAT;
        b[1..9].copy_from_slice(&self.version.to_be_bytes());
        b[9..17].copy_from_slice(&self.created_ms.to_be_bytes());
        b[17..25].copy_from_slice(&self.updated_ms.to_be_bytes());
        b
    }

    /// Inverse of [`Meta::pack`]; `None` when `data` is not a 25-byte record of format 1.
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

/// One commit of one object, as the engine receives it (encoding already done).
///
/// `expected_version` is the version the writer last saw (0: the object must not exist);
/// the store writes `expected_version + 1` or refuses the record with a conflict.
#[derive(Clone, Debug)]
pub struct WriteRecord {
    pub identity: Identity,
    pub object_key: Vec<u8>,
    pub expected_version: u64,
    pub entries: Vec<(String, Vec<u8>)>,
    pub deletes: Vec<String>,
    pub delete_object: bool,
    pub time_ms: i64,
}

impl WriteRecord {
    pub fn new(identity: Identity, expected_version: u64, time_ms: i64) -> WriteRecord {
        let object_key = identity.object_key();
        WriteRecord {
            identity,
            object_key,
            expected_version,
            entries: Vec::new(),
            deletes: Vec::new(),
            delete_object: false,
            time_ms,
        }
    }

    /// Bytes of entry values in this record.
    pub fn nbytes(&self) -> usize {
        self.entries.iter().map(|(_, v)| v.len()).sum()
    }

    /// The message of the conflict refusing this record when the store holds `found`
    /// (worded as the Python store words it).
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
    pub fn apply(&mut self, r: &WriteRecord) {
        self.meta.version += 1;
        self.meta.updated_ms = r.time_ms;
        for (name, value) in &r.entries {
            match self.entries.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = value.clone(),
                None => self.entries.push((name.clone(), value.clone())),
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
