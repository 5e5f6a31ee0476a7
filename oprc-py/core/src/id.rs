//! Object identity: `(cls_id, partition_id, object_id)`, in that order everywhere in Rust
//! (docs/format.md, "Keys"). [`ObjectId`] is the one object-id type: owned
//! (`ObjectId<String>`, the default) in identities and records, borrowed
//! (`ObjectId<&str>`) where an id is read out of bytes (ext 12 references) or built into a
//! key without copying.

use std::fmt;

/// The object part of an identity: a u64 or a string id. `S` is `String` (owned) or
/// `&str` (borrowed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectId<S = String> {
    Num(u64),
    Str(S),
}

impl<S: AsRef<str>> ObjectId<S> {
    /// The borrowed form of this id.
    #[inline]
    pub fn as_deref(&self) -> ObjectId<&str> {
        match self {
            ObjectId::Num(n) => ObjectId::Num(*n),
            ObjectId::Str(s) => ObjectId::Str(s.as_ref()),
        }
    }

    /// An owned copy of this id.
    pub fn to_owned_id(&self) -> ObjectId {
        match self {
            ObjectId::Num(n) => ObjectId::Num(*n),
            ObjectId::Str(s) => ObjectId::Str(s.as_ref().to_owned()),
        }
    }
}

impl<S: AsRef<str>> fmt::Display for ObjectId<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectId::Num(n) => write!(f, "{n}"),
            ObjectId::Str(s) => f.write_str(s.as_ref()),
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

impl Identity {
    /// An identity from its parts, in key order.
    pub fn new(cls_id: impl Into<String>, partition_id: u32, object_id: ObjectId) -> Identity {
        Identity {
            cls_id: cls_id.into(),
            partition_id,
            object_id,
        }
    }
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
