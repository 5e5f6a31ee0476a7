//! The contract between the object model and the native layer: an OaaS object holds its
//! bookkeeping in one `ObjectState` (oaas_sdk/model/state.py, a `__slots__` class) in the
//! instance attribute [`STATE_ATTR`]; field values stay plain instance attributes.
//!
//! The slot names are defined here once ([`name`], listed in [`STATE_FIELDS`]) and
//! exported as `_native.OBJECT_STATE_ATTR` / `_native.OBJECT_STATE_FIELDS`;
//! tests/test_object_state.py checks them against `ObjectState.__slots__`, so a renamed
//! slot fails a test instead of a commit at run time. The native `__setattr__` and
//! `commit_async` (`front`) and the one-call commit (`commit`) read the state only through
//! [`ObjectState`].

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PySet, PyTuple};

/// The instance attribute holding an object's `ObjectState`.
pub const STATE_ATTR: &str = "_oaas_state";

/// The slot names of `ObjectState` (see oaas_sdk/model/state.py for what each holds).
pub mod name {
    pub const META: &str = "meta";
    pub const RT: &str = "rt";
    pub const VERSION: &str = "version";
    pub const COMMITTED: &str = "committed";
    pub const DIRTY: &str = "dirty";
    pub const PARKED: &str = "parked";
    pub const LIVE: &str = "live";
    pub const TURN: &str = "turn";
    pub const DELETED: &str = "deleted";
    pub const CREATED_MS: &str = "created_ms";
    pub const UPDATED_MS: &str = "updated_ms";
    pub const STALE: &str = "stale";
    pub const MAPS: &str = "maps";
}

/// Every slot of `ObjectState`, in the order of its `__slots__`.
pub const STATE_FIELDS: &[&str] = &[
    name::META,
    name::RT,
    name::VERSION,
    name::COMMITTED,
    name::DIRTY,
    name::PARKED,
    name::LIVE,
    name::TURN,
    name::DELETED,
    name::CREATED_MS,
    name::UPDATED_MS,
    name::STALE,
    name::MAPS,
];

/// An object's `ObjectState`, read once per operation; typed accessors of its slots.
/// Errors: `AttributeError` when the object has no state (not made by create/load) or a
/// slot is unset, `TypeError` when a slot holds the wrong type.
pub(super) struct ObjectState<'py>(Bound<'py, PyAny>);

impl<'py> ObjectState<'py> {
    /// The state of `obj` (`obj._oaas_state`).
    pub fn of(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        obj.getattr(intern!(obj.py(), STATE_ATTR)).map(ObjectState)
    }

    fn get(&self, slot: &Bound<'py, pyo3::types::PyString>) -> PyResult<Bound<'py, PyAny>> {
        self.0.getattr(slot)
    }

    /// `meta`: the `ObjectMeta` (cls_id, partition_id, object_id).
    pub fn meta(&self) -> PyResult<Bound<'py, PyAny>> {
        self.get(intern!(self.0.py(), name::META))
    }

    /// `rt`: the object's `Runtime`.
    pub fn rt(&self) -> PyResult<Bound<'py, PyAny>> {
        self.get(intern!(self.0.py(), name::RT))
    }

    /// `version`: the committed version (an int; 0: never committed).
    pub fn version(&self) -> PyResult<Bound<'py, PyAny>> {
        self.get(intern!(self.0.py(), name::VERSION))
    }

    pub fn set_version(&self, version: u64) -> PyResult<()> {
        self.0.setattr(intern!(self.0.py(), name::VERSION), version)
    }

    pub fn set_updated_ms(&self, ms: i64) -> PyResult<()> {
        self.0.setattr(intern!(self.0.py(), name::UPDATED_MS), ms)
    }

    /// `committed`: field name -> committed bytes.
    pub fn committed(&self) -> PyResult<Bound<'py, PyDict>> {
        Ok(self
            .get(intern!(self.0.py(), name::COMMITTED))?
            .cast_into::<PyDict>()?)
    }

    /// `dirty`: names of the fields assigned since the last commit.
    pub fn dirty(&self) -> PyResult<Bound<'py, PySet>> {
        Ok(self
            .get(intern!(self.0.py(), name::DIRTY))?
            .cast_into::<PySet>()?)
    }

    /// `parked`: mutable field name -> value kept out of the instance after a commit.
    pub fn parked(&self) -> PyResult<Bound<'py, PyDict>> {
        Ok(self
            .get(intern!(self.0.py(), name::PARKED))?
            .cast_into::<PyDict>()?)
    }

    /// `live`: names of the mutable fields decoded into the instance since the last commit.
    pub fn live(&self) -> PyResult<Bound<'py, PySet>> {
        Ok(self
            .get(intern!(self.0.py(), name::LIVE))?
            .cast_into::<PySet>()?)
    }

    /// `deleted`: whether the object was deleted.
    pub fn deleted(&self) -> PyResult<bool> {
        self.get(intern!(self.0.py(), name::DELETED))?.is_truthy()
    }

    /// `stale`: the object's mark in `rt.cache_stale` (a list), or `None` before its first
    /// commit.
    pub fn stale(&self) -> PyResult<Bound<'py, PyAny>> {
        self.get(intern!(self.0.py(), name::STALE))
    }
}

/// Add `OBJECT_STATE_ATTR` and `OBJECT_STATE_FIELDS` (a tuple of str) to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("OBJECT_STATE_ATTR", STATE_ATTR)?;
    m.add("OBJECT_STATE_FIELDS", PyTuple::new(m.py(), STATE_FIELDS)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_are_unique_identifiers() {
        let mut seen = std::collections::HashSet::new();
        for n in STATE_FIELDS {
            assert!(seen.insert(*n), "duplicate slot {n}");
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        }
        assert!(STATE_ATTR.starts_with("_oaas_"));
    }
}
