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

use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PySet, PyString, PyTuple, PyType};

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
    pub const UNDO: &str = "undo";
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
    name::UNDO,
];

/// The position of each slot in [`STATE_FIELDS`] (and in `__slots__`).
mod idx {
    pub const META: usize = 0;
    pub const RT: usize = 1;
    pub const VERSION: usize = 2;
    pub const COMMITTED: usize = 3;
    pub const DIRTY: usize = 4;
    pub const PARKED: usize = 5;
    pub const LIVE: usize = 6;
    pub const TURN: usize = 7;
    pub const DELETED: usize = 8;
    pub const CREATED_MS: usize = 9;
    pub const UPDATED_MS: usize = 10;
    pub const STALE: usize = 11;
    pub const UNDO: usize = 13;
}

/// Where the slots live in an `ObjectState` instance: the type they were read from
/// (compared by pointer before every direct read) and each slot's byte offset, from its
/// member descriptor. Reading a slot at its offset skips the attribute lookup and the
/// descriptor call of `getattr` (the object model's hot paths read 3-6 slots per call).
struct Layout {
    ty: Py<PyType>,
    offsets: [ffi::Py_ssize_t; STATE_FIELDS.len()],
}

/// The layout of the first `ObjectState` type seen (`None`: its slots are not plain
/// object members, so every read goes through `getattr`).
static LAYOUT: PyOnceLock<Option<Layout>> = PyOnceLock::new();

fn layout_of(ty: &Bound<'_, PyType>) -> PyResult<Option<Layout>> {
    let mut offsets = [0; STATE_FIELDS.len()];
    for (i, name) in STATE_FIELDS.iter().enumerate() {
        let d = ty.getattr(*name)?;
        // SAFETY: `d` is a live object; `PyMemberDescr_Type` is a static type object, only
        // its address is taken.
        let is_member = unsafe { ffi::Py_TYPE(d.as_ptr()) == &raw mut ffi::PyMemberDescr_Type };
        if !is_member {
            return Ok(None);
        }
        // SAFETY: `d` is a member descriptor (checked above), so it has the layout of
        // `PyMemberDescrObject` (CPython >= 3.11, as this crate requires), whose `d_member`
        // points to the type's `PyMemberDef`, alive as long as the type (held in `Layout`).
        let def = unsafe { &*(*d.as_ptr().cast::<ffi::PyMemberDescrObject>()).d_member };
        if def.type_code != ffi::Py_T_OBJECT_EX {
            return Ok(None);
        }
        offsets[i] = def.offset;
    }
    Ok(Some(Layout {
        ty: ty.clone().unbind(),
        offsets,
    }))
}

/// Attributes and methods of the class `OaasObject` the native layer uses (also defined
/// once here, exported as `_native.OBJECT_CLASS_ATTRS` and checked against
/// `oaas_sdk.model.state.CLASS_ATTRS`, which the test also finds on the class).
pub mod class_attr {
    /// `{field name: (exact types stored as they are (a frozenset), FieldType, mutable,
    /// fast shape, the one exact type or None)}` or `None`.
    pub const CONV: &str = "_oaas_conv";
    /// Classmethod building [`CONV`].
    pub const BUILD_CONV: &str = "_oaas_build_conv";
    /// Names of the class's memory-mapped fields (a tuple).
    pub const MAPPED: &str = "_oaas_mapped";
    /// `{field name: FieldType}` for the one-call commit, or `None` until built.
    pub const ENCODERS: &str = "_oaas_encoders";
    /// The awaitable of a commit acknowledged at once.
    pub const DONE: &str = "_oaas_done";
    /// error -> failed awaitable.
    pub const FAILED: &str = "_oaas_failed";
    /// The Python definition of `commit_async` (every case but the one-call commit).
    pub const PY_COMMIT_ASYNC: &str = "_oaas_py_commit_async";
    /// The Python definition of `commit` (every case but the one-call commit).
    pub const PY_COMMIT: &str = "_oaas_py_commit";
    /// Method: the object's key `(cls_id, partition_id, object_id)`.
    pub const KEY: &str = "_oaas_key";
    /// Method: undo a failed commit of some fields.
    pub const UNDO_ENTRIES: &str = "_oaas_undo_entries";
}

/// Every name in [`class_attr`].
pub const CLASS_ATTRS: &[&str] = &[
    class_attr::CONV,
    class_attr::BUILD_CONV,
    class_attr::MAPPED,
    class_attr::ENCODERS,
    class_attr::DONE,
    class_attr::FAILED,
    class_attr::PY_COMMIT_ASYNC,
    class_attr::KEY,
    class_attr::UNDO_ENTRIES,
    class_attr::PY_COMMIT,
];

/// The attribute an encoding error gets, naming the field whose value failed.
pub const ERROR_FIELD_ATTR: &str = "_oaas_field";

/// An object's `ObjectState`, read once per operation; typed accessors of its slots.
/// Errors: `AttributeError` when the object has no state (not made by create/load) or a
/// slot is unset, `TypeError` when a slot holds the wrong type.
pub(crate) struct ObjectState<'py>(Bound<'py, PyAny>);

impl<'py> ObjectState<'py> {
    /// The state of `obj` (`obj._oaas_state`).
    pub fn of(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        obj.getattr(intern!(obj.py(), STATE_ATTR)).map(ObjectState)
    }

    /// The slot layout, when this state's type is exactly the one it was read from (its
    /// slots can be read at their offsets); `None`: read them through `getattr`.
    fn layout(&self) -> PyResult<Option<&'static Layout>> {
        #[cfg(not(Py_GIL_DISABLED))]
        {
            let py = self.0.py();
            let layout = LAYOUT.get_or_try_init(py, || layout_of(&self.0.get_type()))?;
            if let Some(l) = layout {
                // SAFETY: reading the type pointer of a live object.
                let same = unsafe { ffi::Py_TYPE(self.0.as_ptr()) } == l.ty.as_ptr().cast();
                if same {
                    return Ok(Some(l));
                }
            }
        }
        Ok(None)
    }

    /// Slot `i` of [`STATE_FIELDS`] (named `slot`): read at its offset when `layout` (from
    /// [`ObjectState::layout`] of this state) is known, else (or when unset) through
    /// `getattr`.
    fn read(
        &self,
        layout: Option<&Layout>,
        i: usize,
        slot: &Bound<'py, PyString>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Some(l) = layout {
            // SAFETY: `layout` is `Some` only when the object is an instance of exactly the
            // type the offsets were read from (checked by `layout()`), so at `offsets[i]`
            // it holds slot `i`: a `PyObject*` owned by the object, or NULL when unset.
            // With the GIL held (no free-threaded build: `layout()` is always `None`
            // there) nobody changes it during this read; the new reference is taken
            // before the GIL can be released.
            let p = unsafe {
                *self
                    .0
                    .as_ptr()
                    .cast::<u8>()
                    .offset(l.offsets[i])
                    .cast::<*mut ffi::PyObject>()
            };
            if !p.is_null() {
                // SAFETY: `p` is a live object (held by the slot).
                return Ok(unsafe { Bound::from_borrowed_ptr(self.0.py(), p) });
            }
        }
        self.0.getattr(slot)
    }

    /// Slot `i` of [`STATE_FIELDS`] (named `slot`), see [`ObjectState::read`].
    fn get(&self, i: usize, slot: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
        self.read(self.layout()?, i, slot)
    }

    /// The slots a field assignment reads, with one layout check (see [`SetattrView`]).
    pub fn setattr_view(&self) -> PyResult<SetattrView<'_, 'py>> {
        Ok(SetattrView {
            st: self,
            layout: self.layout()?,
        })
    }

    /// The state object itself (read by the caller).
    pub fn from_state(st: Bound<'py, PyAny>) -> Self {
        ObjectState(st)
    }

    pub fn py(&self) -> Python<'py> {
        self.0.py()
    }

    /// Set slot `i` of [`STATE_FIELDS`] (named `slot`): written at its offset when the
    /// object's type is the one the layout was read from, else through `setattr`.
    fn set(
        &self,
        i: usize,
        slot: &Bound<'py, PyString>,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<()> {
        #[cfg(not(Py_GIL_DISABLED))]
        {
            let py = self.0.py();
            let layout = LAYOUT.get_or_try_init(py, || layout_of(&self.0.get_type()))?;
            if let Some(l) = layout {
                // SAFETY: reading the type pointer of a live object.
                let same = unsafe { ffi::Py_TYPE(self.0.as_ptr()) } == l.ty.as_ptr().cast();
                if same {
                    // SAFETY: as in `read`: at `offsets[i]` the instance holds slot `i`, a
                    // `PyObject*` it owns (or NULL). The new value's reference is handed
                    // to the slot before the old one's is released (which may run code
                    // that sees the slot already set, as `setattr` would leave it).
                    unsafe {
                        let p = self
                            .0
                            .as_ptr()
                            .cast::<u8>()
                            .offset(l.offsets[i])
                            .cast::<*mut ffi::PyObject>();
                        let old = *p;
                        *p = value.clone().into_ptr();
                        ffi::Py_XDECREF(old);
                    }
                    return Ok(());
                }
            }
        }
        self.0.setattr(slot, value)
    }

    /// `meta`: the `ObjectMeta` (cls_id, partition_id, object_id).
    pub fn meta(&self) -> PyResult<Bound<'py, PyAny>> {
        self.get(idx::META, intern!(self.0.py(), name::META))
    }

    /// `rt`: the object's `Runtime`.
    pub fn rt(&self) -> PyResult<Bound<'py, PyAny>> {
        self.get(idx::RT, intern!(self.0.py(), name::RT))
    }

    /// `version`: the committed version (an int; 0: never committed).
    pub fn version(&self) -> PyResult<Bound<'py, PyAny>> {
        self.get(idx::VERSION, intern!(self.0.py(), name::VERSION))
    }

    pub fn set_version(&self, version: u64) -> PyResult<()> {
        let py = self.0.py();
        let v = version.into_pyobject(py)?.into_any();
        self.set(idx::VERSION, intern!(py, name::VERSION), &v)
    }

    /// `updated_ms`: ms since the Unix epoch of the last commit (0: not yet known).
    pub fn updated_ms(&self) -> PyResult<Bound<'py, PyAny>> {
        self.get(idx::UPDATED_MS, intern!(self.0.py(), name::UPDATED_MS))
    }

    pub fn set_updated_ms(&self, ms: i64) -> PyResult<()> {
        let py = self.0.py();
        let v = ms.into_pyobject(py)?.into_any();
        self.set(idx::UPDATED_MS, intern!(py, name::UPDATED_MS), &v)
    }

    /// `committed`: field name -> committed bytes.
    pub fn committed(&self) -> PyResult<Bound<'py, PyDict>> {
        Ok(self
            .get(idx::COMMITTED, intern!(self.0.py(), name::COMMITTED))?
            .cast_into::<PyDict>()?)
    }

    /// The committed state a `refresh()` replaces: `(committed, version, created_ms,
    /// updated_ms)`.
    pub fn base(&self) -> PyResult<[Bound<'py, PyAny>; 4]> {
        let py = self.0.py();
        Ok([
            self.get(idx::COMMITTED, intern!(py, name::COMMITTED))?,
            self.get(idx::VERSION, intern!(py, name::VERSION))?,
            self.get(idx::CREATED_MS, intern!(py, name::CREATED_MS))?,
            self.get(idx::UPDATED_MS, intern!(py, name::UPDATED_MS))?,
        ])
    }

    /// Put back a committed state read by [`ObjectState::base`].
    pub fn set_base(&self, base: &[Bound<'py, PyAny>; 4]) -> PyResult<()> {
        let py = self.0.py();
        self.set(idx::COMMITTED, intern!(py, name::COMMITTED), &base[0])?;
        self.set(idx::VERSION, intern!(py, name::VERSION), &base[1])?;
        self.set(idx::CREATED_MS, intern!(py, name::CREATED_MS), &base[2])?;
        self.set(idx::UPDATED_MS, intern!(py, name::UPDATED_MS), &base[3])
    }

    /// `dirty`: names of the fields assigned since the last commit.
    pub fn dirty(&self) -> PyResult<Bound<'py, PySet>> {
        Ok(self
            .get(idx::DIRTY, intern!(self.0.py(), name::DIRTY))?
            .cast_into::<PySet>()?)
    }

    /// `parked`: mutable field name -> value kept out of the instance after a commit.
    pub fn parked(&self) -> PyResult<Bound<'py, PyDict>> {
        Ok(self
            .get(idx::PARKED, intern!(self.0.py(), name::PARKED))?
            .cast_into::<PyDict>()?)
    }

    /// `live`: names of the mutable fields decoded into the instance since the last commit.
    pub fn live(&self) -> PyResult<Bound<'py, PySet>> {
        Ok(self
            .get(idx::LIVE, intern!(self.0.py(), name::LIVE))?
            .cast_into::<PySet>()?)
    }

    /// `deleted`: whether the object was deleted.
    pub fn deleted(&self) -> PyResult<bool> {
        self.get(idx::DELETED, intern!(self.0.py(), name::DELETED))?
            .is_truthy()
    }

    /// `stale`: the object's mark in `rt.cache_stale` (a list), or `None` before its first
    /// commit.
    pub fn stale(&self) -> PyResult<Bound<'py, PyAny>> {
        self.get(idx::STALE, intern!(self.0.py(), name::STALE))
    }

    /// `turn`: the object's turn (`oaas_sdk.model.calls.Turn`) or `None`.
    pub fn turn(&self) -> PyResult<Bound<'py, PyAny>> {
        self.get(idx::TURN, intern!(self.0.py(), name::TURN))
    }

    pub fn set_turn(&self, turn: &Bound<'py, PyAny>) -> PyResult<()> {
        self.set(idx::TURN, intern!(self.0.py(), name::TURN), turn)
    }

    /// `undo`: the undo log of the native method call running on the object (a dict), or
    /// `None`; also `None` when the slot is unset (a state made before the slot existed).
    pub fn undo(&self) -> PyResult<Bound<'py, PyAny>> {
        let py = self.0.py();
        match self.get(idx::UNDO, intern!(py, name::UNDO)) {
            Ok(v) => Ok(v),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(py) => {
                Ok(py.None().into_bound(py))
            }
            Err(e) => Err(e),
        }
    }

    pub fn set_undo(&self, undo: &Bound<'py, PyAny>) -> PyResult<()> {
        self.set(idx::UNDO, intern!(self.0.py(), name::UNDO), undo)
    }
}

/// An [`ObjectState`] whose layout was checked once: the slots `__setattr__` reads (front.rs),
/// with the same results and errors as the accessors of the same names.
pub(crate) struct SetattrView<'a, 'py> {
    st: &'a ObjectState<'py>,
    layout: Option<&'static Layout>,
}

impl<'py> SetattrView<'_, 'py> {
    /// `undo`, as [`ObjectState::undo`] (`None` when unset).
    pub fn undo(&self) -> PyResult<Bound<'py, PyAny>> {
        let py = self.st.py();
        match self
            .st
            .read(self.layout, idx::UNDO, intern!(py, name::UNDO))
        {
            Ok(v) => Ok(v),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(py) => {
                Ok(py.None().into_bound(py))
            }
            Err(e) => Err(e),
        }
    }

    /// `dirty`, as [`ObjectState::dirty`].
    pub fn dirty(&self) -> PyResult<Bound<'py, PySet>> {
        let py = self.st.py();
        Ok(self
            .st
            .read(self.layout, idx::DIRTY, intern!(py, name::DIRTY))?
            .cast_into::<PySet>()?)
    }

    /// `live`, as [`ObjectState::live`].
    pub fn live(&self) -> PyResult<Bound<'py, PySet>> {
        let py = self.st.py();
        Ok(self
            .st
            .read(self.layout, idx::LIVE, intern!(py, name::LIVE))?
            .cast_into::<PySet>()?)
    }

    /// `parked`, as [`ObjectState::parked`].
    pub fn parked(&self) -> PyResult<Bound<'py, PyDict>> {
        let py = self.st.py();
        Ok(self
            .st
            .read(self.layout, idx::PARKED, intern!(py, name::PARKED))?
            .cast_into::<PyDict>()?)
    }

    /// `rt`, as [`ObjectState::rt`].
    pub fn rt(&self) -> PyResult<Bound<'py, PyAny>> {
        self.st
            .read(self.layout, idx::RT, intern!(self.st.py(), name::RT))
    }
}

/// Add `OBJECT_STATE_ATTR`, `OBJECT_STATE_FIELDS`, `OBJECT_CLASS_ATTRS` (tuples of str)
/// and `OBJECT_ERROR_FIELD_ATTR` to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("OBJECT_STATE_ATTR", STATE_ATTR)?;
    m.add("OBJECT_STATE_FIELDS", PyTuple::new(m.py(), STATE_FIELDS)?)?;
    m.add("OBJECT_CLASS_ATTRS", PyTuple::new(m.py(), CLASS_ATTRS)?)?;
    m.add("OBJECT_ERROR_FIELD_ATTR", ERROR_FIELD_ATTR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_are_unique_identifiers() {
        let mut seen = std::collections::HashSet::new();
        for n in STATE_FIELDS.iter().chain(CLASS_ATTRS) {
            assert!(seen.insert(*n), "duplicate slot {n}");
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        }
        for n in CLASS_ATTRS {
            assert!(n.starts_with("_oaas_"));
        }
        assert!(STATE_ATTR.starts_with("_oaas_"));
        assert_eq!(STATE_FIELDS[idx::META], name::META);
        assert_eq!(STATE_FIELDS[idx::RT], name::RT);
        assert_eq!(STATE_FIELDS[idx::VERSION], name::VERSION);
        assert_eq!(STATE_FIELDS[idx::COMMITTED], name::COMMITTED);
        assert_eq!(STATE_FIELDS[idx::DIRTY], name::DIRTY);
        assert_eq!(STATE_FIELDS[idx::PARKED], name::PARKED);
        assert_eq!(STATE_FIELDS[idx::LIVE], name::LIVE);
        assert_eq!(STATE_FIELDS[idx::DELETED], name::DELETED);
        assert_eq!(STATE_FIELDS[idx::STALE], name::STALE);
        assert_eq!(STATE_FIELDS[idx::TURN], name::TURN);
        assert_eq!(STATE_FIELDS[idx::UNDO], name::UNDO);
    }
}
