//! Create and load an object in one native call: the instance (`object.__new__`), its
//! `ObjectMeta` and `ObjectState` (slots written at their offsets, no `__init__` run), its
//! field values (defaults by the class's plan, or the immutable fields decoded from a
//! stored record) and its identity-map entry. `oaas_sdk/model/object.py` (`create`,
//! `load`) keeps the Python reference of every step and calls [`Lifecycle`] when the seam
//! (`oaas_sdk/_backend.py`) installed one. With it, `OaasObject.create` is
//! `Lifecycle.create_entry` (the whole create, fresh ids included, without a Python
//! frame) and a cold `OaasObject.load` is one `Lifecycle.load_cold` call (the record from
//! the cache or straight from the native store, decoded onto the instance).
//!
//! The cyclic garbage collector: of the objects made per live object, only the instance,
//! its `ObjectState` and the identity map's weak reference stay tracked. The `ObjectMeta`
//! (strs and ints) and the `dirty` and `live` sets (field names) can never be part of a
//! reference cycle, so they are untracked (`PyObject_GC_UnTrack`, as CPython untracks
//! dicts and tuples of atomic values) and a collection does not visit them. The weak
//! reference cannot be untracked: a collection moves a weak reference with a callback
//! whose referent is garbage onto a list of callbacks to call, which needs it tracked.

use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyString, PyTuple, PyType};

use super::state::{STATE_ATTR, STATE_FIELDS};

/// Plan kinds of a field's default (built by `OaasObject._oaas_build_plan`).
mod kind {
    /// Shared as it is (immutable).
    pub const SHARE: i64 = 0;
    /// A list of scalars: a shallow copy.
    pub const LIST: i64 = 1;
    /// A dict of scalars: a shallow copy.
    pub const DICT: i64 = 2;
    /// A set of scalars: a shallow copy.
    pub const SET: i64 = 3;
    /// Anything else: call the value (`FieldInfo.new_default`).
    pub const CALL: i64 = 4;
}

/// The slot names of `ObjectMeta` (oaas_sdk/model/registry.py), in key order.
const META_FIELDS: [&str; 3] = ["cls_id", "partition_id", "object_id"];

/// The byte offset of each of `names`, slots of `ty` (member descriptors of type
/// `T_OBJECT_EX`); `TypeError` when one is not.
fn member_offsets<const N: usize>(
    ty: &Bound<'_, PyType>,
    names: &[&str],
) -> PyResult<[ffi::Py_ssize_t; N]> {
    let mut offsets = [0; N];
    for (i, name) in names.iter().enumerate().take(N) {
        let d = ty.getattr(*name)?;
        // SAFETY: `d` is a live object; `PyMemberDescr_Type` is a static type object, only
        // its address is taken.
        let is_member = unsafe { ffi::Py_TYPE(d.as_ptr()) == &raw mut ffi::PyMemberDescr_Type };
        if !is_member {
            return Err(PyTypeError::new_err(format!(
                "{}.{name} is not a slot",
                ty.name()?
            )));
        }
        // SAFETY: `d` is a member descriptor (checked above): `PyMemberDescrObject`, whose
        // `d_member` points to the type's `PyMemberDef`, alive as long as the type (which
        // the `Lifecycle` holds).
        let def = unsafe { &*(*d.as_ptr().cast::<ffi::PyMemberDescrObject>()).d_member };
        if def.type_code != ffi::Py_T_OBJECT_EX {
            return Err(PyTypeError::new_err(format!(
                "{}.{name} is not an object slot",
                ty.name()?
            )));
        }
        offsets[i] = def.offset;
    }
    Ok(offsets)
}

/// A new instance of `ty` with every slot at `offsets` set from `values` (each a new
/// reference, moved into the instance); `untrack`: stop the collector tracking it.
///
/// # Safety
/// `offsets` must be the `T_OBJECT_EX` member offsets of `ty` (from [`member_offsets`]).
unsafe fn alloc_with_slots<'py>(
    py: Python<'py>,
    ty: &Py<PyType>,
    offsets: &[ffi::Py_ssize_t],
    values: Vec<Bound<'py, PyAny>>,
    untrack: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let tp = ty.as_ptr().cast::<ffi::PyTypeObject>();
    // SAFETY: `tp` is a live heap type; `tp_alloc` returns a new, zeroed instance (slots
    // NULL) or NULL with an exception set.
    let obj = unsafe {
        let alloc = (*tp).tp_alloc.unwrap_or(ffi::PyType_GenericAlloc);
        Bound::from_owned_ptr_or_err(py, alloc(tp, 0))?
    };
    for (off, v) in offsets.iter().zip(values) {
        // SAFETY: `off` is the offset of an object slot of this exact type (caller's
        // contract), NULL in a fresh instance; the reference of `v` moves into the slot.
        unsafe {
            *obj.as_ptr()
                .cast::<u8>()
                .offset(*off)
                .cast::<*mut ffi::PyObject>() = v.into_ptr();
        }
    }
    if untrack {
        // SAFETY: a live GC object; untracking is allowed at any time (see module comment
        // for why it cannot be part of a cycle).
        unsafe { ffi::PyObject_GC_UnTrack(obj.as_ptr().cast()) };
    }
    Ok(obj)
}

fn untracked<'py>(o: Bound<'py, PyAny>) -> Bound<'py, PyAny> {
    // SAFETY: a live object; PyObject_GC_UnTrack ignores untracked objects and is only
    // called on sets of field names here (never in a cycle).
    unsafe {
        if ffi::PyObject_IS_GC(o.as_ptr()) != 0 {
            ffi::PyObject_GC_UnTrack(o.as_ptr().cast());
        }
    }
    o
}

/// `set(items)` (a new set; `items` None: empty), untracked.
fn name_set<'py>(
    py: Python<'py>,
    items: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let arg = items.map_or(std::ptr::null_mut(), Bound::as_ptr);
    // SAFETY: `arg` is NULL or a live iterable; PySet_New returns a new reference or NULL.
    let s = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PySet_New(arg))? };
    Ok(untracked(s))
}

/// A new reference returned by the C API (NULL: the exception set).
///
/// # Safety
/// `p` is NULL or a new (owned) reference.
unsafe fn owned(py: Python<'_>, p: *mut ffi::PyObject) -> PyResult<Bound<'_, PyAny>> {
    // SAFETY: the caller's contract.
    unsafe { Bound::from_owned_ptr_or_err(py, p) }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `object.__setattr__(obj, name, value)`.
fn set_plain(
    obj: &Bound<'_, PyAny>,
    name: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
) -> PyResult<()> {
    super::front::set_plain(obj, name, value)
}

/// Fresh object ids: the layout of `oaas_sdk/model/registry.py` `new_object_id` (41 bits of
/// milliseconds since 2020, 12 bits of node, 10 bits of a sequence starting at a random
/// value below 512 in each millisecond; a used-up millisecond or a clock stepping back
/// borrows the next one). The node is the Python generator's node with its lowest bit
/// flipped (the seam's choice), so the two generators of one process never make the same
/// id; the seam seeds it again in a forked child.
struct IdState {
    node: u64,
    rng: u64,
    last_ms: i64,
    seq: u64,
}

const ID_EPOCH_MS: i64 = 1_577_836_800_000; // 2020-01-01T00:00:00Z
const ID_NODE_BITS: u32 = 12;
const ID_SEQ_BITS: u32 = 10;
const ID_SEQ_MASK: u64 = (1 << ID_SEQ_BITS) - 1;
const ID_MS_MASK: i64 = (1 << 41) - 1;

impl IdState {
    /// The next value of a splitmix64 generator (the sequence's random starts).
    fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A random sequence start below 512.
    fn seq_start(&mut self) -> u64 {
        self.random() >> (64 - (ID_SEQ_BITS - 1))
    }

    fn next(&mut self, now_ms: i64) -> u64 {
        let mut ms = now_ms - ID_EPOCH_MS;
        let seq;
        if ms <= self.last_ms {
            ms = self.last_ms;
            let next = self.seq + 1;
            if next > ID_SEQ_MASK {
                ms += 1; // this millisecond is used up: borrow the next
                seq = self.seq_start();
            } else {
                seq = next;
            }
        } else {
            seq = self.seq_start();
        }
        self.last_ms = ms;
        self.seq = seq;
        // `ms & ID_MS_MASK` is in [0, 2**41): the cast keeps its value.
        (((ms & ID_MS_MASK) as u64) << (ID_NODE_BITS + ID_SEQ_BITS))
            | (self.node << ID_SEQ_BITS)
            | seq
    }
}

/// What the native `create` entry and `load_cold` need of the Python side (given once by
/// the seam, `Lifecycle.bind`).
struct Binding {
    /// `oaas_sdk.runtime` (its `_current`: the active runtime or None).
    runtime: Py<PyAny>,
    /// The Python definition of `create` (a function taking `cls` first): every case
    /// the native entry does not take goes there.
    py_create: Py<PyAny>,
    /// `StoredObject` (records put in the cache) and `ObjectNotFound`.
    stored_object: Py<PyAny>,
    not_found: Py<PyAny>,
    /// The native engine's adapter and its two store types whose `read` is one native
    /// call returning `(version, created_ms, updated_ms, entries)` or None.
    native_engine: Py<PyAny>,
    memory_store: Py<PyAny>,
    store_view: Py<PyAny>,
    /// `memory_store.read` (the function).
    memory_read: Py<PyAny>,
}

/// A stored record's parts: version, created_ms, updated_ms, entries (`{field: bytes}`).
type Parts<'py> = (
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Bound<'py, PyDict>,
);

/// Whether `ob` is an int (not a bool) in `[0, limit)`.
fn int_below(ob: &Bound<'_, PyAny>, limit: u128) -> bool {
    if !ob.is_exact_instance_of::<PyInt>() {
        return false;
    }
    ob.extract::<u128>().is_ok_and(|v| v < limit)
}

/// `ob.__dict__.get(name)`: an attribute set on the instance (a method replaced there).
fn instance_attr<'py>(
    ob: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    match ob.getattr(intern!(ob.py(), "__dict__")) {
        Ok(d) => match d.cast_into::<PyDict>() {
            Ok(d) => d.get_item(name),
            Err(_) => Ok(None),
        },
        Err(_) => Ok(None),
    }
}

/// The native create and load of OaaS objects (one per extension module, made by the seam
/// with the classes it fills in: `Lifecycle(ObjectState, ObjectMeta, KeyedRef)`).
#[pyclass(frozen, module = "oaas_sdk._native")]
pub struct Lifecycle {
    state_ty: Py<PyType>,
    state_off: [ffi::Py_ssize_t; STATE_FIELDS.len()],
    meta_ty: Py<PyType>,
    meta_off: [ffi::Py_ssize_t; 3],
    keyed_ref: Py<PyType>,
    key_off: [ffi::Py_ssize_t; 1],
    weak_dict: Py<PyType>,
    binding: OnceLock<Binding>,
    ids: Mutex<IdState>,
}

impl Lifecycle {
    /// Instance, meta and state of an object of `cls` with `key` (cls_id, partition_id,
    /// object_id), `live` the names in `live` (or none): from a stored record's parts
    /// (version, times, entries as `committed`), or, without one, version 0, nothing
    /// committed, created and updated at `now` (ms since the epoch).
    fn blank<'py>(
        &self,
        cls: &Bound<'py, PyType>,
        rt: &Bound<'py, PyAny>,
        key: &Bound<'py, PyTuple>,
        live: Option<&Bound<'py, PyAny>>,
        stored: Option<Parts<'py>>,
        now: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = cls.py();
        if key.len() != 3 {
            return Err(PyTypeError::new_err(
                "an object key is (cls_id, partition_id, object_id)",
            ));
        }
        // SAFETY: the offsets are ObjectMeta's slots (checked in `new`, same type object).
        let meta = unsafe {
            alloc_with_slots(
                py,
                &self.meta_ty,
                &self.meta_off,
                vec![key.get_item(0)?, key.get_item(1)?, key.get_item(2)?],
                true,
            )?
        };
        let (version, created, updated, committed) = match stored {
            Some((v, c, u, e)) => (v, c, u, e),
            None => {
                let ms = now.into_pyobject(py)?.into_any();
                (
                    0i64.into_pyobject(py)?.into_any(),
                    ms.clone(),
                    ms,
                    PyDict::new(py),
                )
            }
        };
        let none = py.None().into_bound(py);
        // In the order of STATE_FIELDS (oaas_sdk/model/state.py ObjectState.__init__).
        let values = vec![
            meta,
            rt.clone(),
            version,
            committed.into_any(),
            name_set(py, None)?,
            PyDict::new(py).into_any(),
            name_set(py, live)?,
            none.clone(),
            pyo3::types::PyBool::new(py, false).to_owned().into_any(),
            created,
            updated,
            none.clone(),
            none.clone(),
            none,
        ];
        // SAFETY: the offsets are ObjectState's slots (checked in `new`, same type object).
        let state =
            unsafe { alloc_with_slots(py, &self.state_ty, &self.state_off, values, false)? };
        // object.__new__(cls)
        // SAFETY: `cls` is a live type; object's tp_new with an empty argument tuple and no
        // keywords returns a new reference or NULL with an exception set.
        let obj = unsafe {
            let args = PyTuple::empty(py);
            let new = ffi::PyBaseObject_Type
                .tp_new
                .ok_or_else(|| PyTypeError::new_err("object has no tp_new"))?;
            Bound::from_owned_ptr_or_err(
                py,
                new(cls.as_ptr().cast(), args.as_ptr(), std::ptr::null_mut()),
            )?
        };
        set_plain(&obj, intern!(py, STATE_ATTR), &state)?;
        Ok(obj)
    }

    /// Put `obj` into `rt.identity` under `key`: a `WeakValueDictionary`'s entry made
    /// directly (what its `__setitem__` does: a `KeyedRef` with the map's removal
    /// callback, without the Python frames of `KeyedRef.__new__` / `__init__`); any other
    /// mapping: `identity[key] = obj`.
    fn register<'py>(
        &self,
        rt: &Bound<'py, PyAny>,
        key: &Bound<'py, PyTuple>,
        obj: &Bound<'py, PyAny>,
    ) -> PyResult<()> {
        let py = rt.py();
        let ident = rt.getattr(intern!(py, "identity"))?;
        if !ident.get_type().is(self.weak_dict.bind(py))
            || ident
                .getattr(intern!(py, "_pending_removals"))?
                .is_truthy()?
        {
            return ident.set_item(key, obj);
        }
        let cb = ident.getattr(intern!(py, "_remove"))?;
        let args = PyTuple::new(py, [obj.clone(), cb])?;
        let tp = self.keyed_ref.as_ptr().cast::<ffi::PyTypeObject>();
        // SAFETY: weakref.ref's tp_new (what KeyedRef.__new__ calls) with a KeyedRef
        // subtype and (referent, callback): a new reference or NULL with an exception set.
        let wr = unsafe {
            let new = ffi::_PyWeakref_RefType
                .tp_new
                .ok_or_else(|| PyTypeError::new_err("weakref.ref has no tp_new"))?;
            Bound::from_owned_ptr_or_err(py, new(tp, args.as_ptr(), std::ptr::null_mut()))?
        };
        // SAFETY: `wr` is an instance of exactly KeyedRef, whose slot `key` is at
        // `key_off[0]` (checked in `new`) and NULL in a fresh instance.
        unsafe {
            *wr.as_ptr()
                .cast::<u8>()
                .offset(self.key_off[0])
                .cast::<*mut ffi::PyObject>() = key.clone().into_any().into_ptr();
        }
        ident
            .getattr(intern!(py, "data"))?
            .cast_into::<PyDict>()?
            .set_item(key, wr)
    }
}

impl Lifecycle {
    /// A fresh object id made at `ms` (ms since the epoch).
    fn next_id(&self, ms: i64) -> u64 {
        self.ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .next(ms)
    }

    fn binding(&self) -> PyResult<&Binding> {
        self.binding
            .get()
            .ok_or_else(|| PyRuntimeError::new_err("Lifecycle: not bound (see Lifecycle.bind)"))
    }

    /// `create` with the creation time `now` (ms since the epoch) given.
    #[allow(clippy::too_many_arguments)]
    fn create_at<'py>(
        &self,
        cls: &Bound<'py, PyType>,
        rt: &Bound<'py, PyAny>,
        key: &Bound<'py, PyTuple>,
        plan: &Bound<'py, PyTuple>,
        live: &Bound<'py, PyAny>,
        values: Option<&Bound<'py, PyDict>>,
        now: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = cls.py();
        let obj = self.blank(cls, rt, key, Some(live), None, now)?;
        for step in plan.iter() {
            let step = step.cast_into::<PyTuple>()?;
            let name = step.get_item(0)?;
            let k: i64 = step.get_item(1)?.extract()?;
            let v = step.get_item(2)?;
            let value = match k {
                kind::SHARE => v,
                // SAFETY: `v` is a live object; PyList_GetSlice (a list, else an error),
                // PyDict_Copy (a dict, else an error) and PySet_New (any iterable) return a
                // new reference or NULL with an exception set.
                kind::LIST => unsafe {
                    owned(py, ffi::PyList_GetSlice(v.as_ptr(), 0, ffi::PY_SSIZE_T_MAX))?
                },
                // SAFETY: as above.
                kind::DICT => unsafe { owned(py, ffi::PyDict_Copy(v.as_ptr()))? },
                // SAFETY: as above.
                kind::SET => unsafe { owned(py, ffi::PySet_New(v.as_ptr()))? },
                kind::CALL => v.call0()?,
                _ => {
                    return Err(PyTypeError::new_err(format!(
                        "unknown default plan kind {k}"
                    )))
                }
            };
            set_plain(&obj, &name, &value)?;
        }
        if let Some(values) = values {
            for (name, value) in values.iter() {
                obj.setattr(name.cast_into::<PyString>()?, value)?;
            }
        }
        self.register(rt, key, &obj)?;
        rt.getattr(intern!(py, "dirty"))?
            .cast_into::<PyDict>()?
            .set_item(obj.as_ptr() as usize, &obj)?;
        Ok(obj)
    }

    /// `rt.identity.get(key)`: for a `WeakValueDictionary` with no pending removals its
    /// entry read directly (what its `get` does), else the mapping's `get`.
    fn identity_get<'py>(
        &self,
        rt: &Bound<'py, PyAny>,
        key: &Bound<'py, PyTuple>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = rt.py();
        let ident = rt.getattr(intern!(py, "identity"))?;
        if !ident.get_type().is(self.weak_dict.bind(py))
            || ident
                .getattr(intern!(py, "_pending_removals"))?
                .is_truthy()?
        {
            let o = ident.call_method1(intern!(py, "get"), (key,))?;
            return Ok((!o.is_none()).then_some(o));
        }
        let data = ident.getattr(intern!(py, "data"))?.cast_into::<PyDict>()?;
        let Some(wr) = data.get_item(key)? else {
            return Ok(None);
        };
        let o = wr.call0()?;
        Ok((!o.is_none()).then_some(o))
    }

    /// `rt.engine.read(key)` as parts: the native store's read called directly when the
    /// engine is the native adapter and neither its `read` nor its store's is replaced
    /// on the instance; else the engine's `read` (a `StoredObject` or None).
    fn read_stored<'py>(
        &self,
        b: &Binding,
        rt: &Bound<'py, PyAny>,
        key: &Bound<'py, PyTuple>,
    ) -> PyResult<Option<Parts<'py>>> {
        let py = rt.py();
        // `rt.engine` is a property returning `rt._engine` once opened: read the slot
        // (no Python frame) unless the engine is still to be opened.
        let engine = match rt.getattr(intern!(py, "_engine")) {
            Ok(e) if !e.is_none() => e,
            _ => rt.getattr(intern!(py, "engine"))?,
        };
        let read = intern!(py, "read");
        let mut raw = None;
        if engine.get_type().is(b.native_engine.bind(py)) {
            let store = engine.getattr(intern!(py, "store"))?;
            let ty = store.get_type();
            // The adapter binds a memory store's `read` as its own (nothing is pending):
            // that one is not a replacement.
            let own = match instance_attr(&engine, read)? {
                None => true,
                Some(r) => {
                    ty.is(b.memory_store.bind(py))
                        && r.getattr(intern!(py, "__self__"))
                            .is_ok_and(|s| s.is(&store))
                        && r.getattr(intern!(py, "__func__"))
                            .is_ok_and(|f| f.is(b.memory_read.bind(py)))
                }
            };
            // A store whose shape is not the expected one is read through `engine.read`.
            if own && instance_attr(&store, read)?.is_none() {
                if ty.is(b.memory_store.bind(py)) {
                    raw = store.getattr(intern!(py, "_read")).ok();
                } else if ty.is(b.store_view.bind(py)) {
                    raw = store
                        .getattr(intern!(py, "_native"))
                        .and_then(|n| n.getattr(read))
                        .ok();
                }
            }
        }
        if let Some(f) = raw {
            let found = f.call1(key)?;
            if found.is_none() {
                return Ok(None);
            }
            let t = found.cast_into::<PyTuple>()?;
            return Ok(Some((
                t.get_item(0)?,
                t.get_item(1)?,
                t.get_item(2)?,
                t.get_item(3)?.cast_into::<PyDict>()?,
            )));
        }
        let stored = engine.call_method1(read, (key,))?;
        if stored.is_none() {
            return Ok(None);
        }
        Ok(Some((
            stored.getattr(intern!(py, "version"))?,
            stored.getattr(intern!(py, "created_ms"))?,
            stored.getattr(intern!(py, "updated_ms"))?,
            stored
                .getattr(intern!(py, "entries"))?
                .cast_into::<PyDict>()?,
        )))
    }

    /// The instance from a stored record's parts: its immutable fields decoded by `plan`
    /// (`((name, decode, field), ...)`: an entry's bytes go to `decode`; a missing
    /// entry's value is `field.new_default()`; a failing decode calls the Python
    /// `obj._oaas_decode(name, field, data)`, which raises the error naming the object
    /// and field), registered in `rt.identity` (nothing registered on an error).
    fn load_parts<'py>(
        &self,
        cls: &Bound<'py, PyType>,
        rt: &Bound<'py, PyAny>,
        key: &Bound<'py, PyTuple>,
        parts: Parts<'py>,
        plan: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = cls.py();
        let entries = parts.3.clone();
        let obj = self.blank(cls, rt, key, None, Some(parts), 0)?;
        for step in plan.iter() {
            let step = step.cast_into::<PyTuple>()?;
            let name = step.get_item(0)?;
            let value = match entries.get_item(&name)? {
                None => step.get_item(2)?.call_method0(intern!(py, "new_default"))?,
                Some(data) => match step.get_item(1)?.call1((&data,)) {
                    Ok(v) => v,
                    Err(_) => obj.call_method1(
                        intern!(py, "_oaas_decode"),
                        (&name, step.get_item(2)?, data),
                    )?,
                },
            };
            set_plain(&obj, &name, &value)?;
        }
        self.register(rt, key, &obj)?;
        Ok(obj)
    }
}

/// `cls.__dict__.get(name)`: the class's own attribute, not an inherited one.
fn own_attr<'py>(
    cls: &Bound<'py, PyType>,
    name: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    // SAFETY: `cls` is a live type object; `tp_dict` is its attribute dict (set once the
    // type is ready, which a class object reachable from Python is), borrowed.
    let d = unsafe { (*cls.as_ptr().cast::<ffi::PyTypeObject>()).tp_dict };
    if d.is_null() {
        return Ok(None);
    }
    // SAFETY: `d` is a live dict (the type's), borrowed for the duration of this call.
    let d = unsafe { Bound::from_borrowed_ptr(cls.py(), d) }.cast_into::<PyDict>()?;
    d.get_item(name)
}

#[pymethods]
impl Lifecycle {
    /// `Lifecycle(ObjectState, ObjectMeta, KeyedRef, WeakValueDictionary)`; `TypeError`
    /// when a slot the native layer writes is not a plain object slot.
    #[new]
    fn new(
        state_ty: &Bound<'_, PyType>,
        meta_ty: &Bound<'_, PyType>,
        keyed_ref: &Bound<'_, PyType>,
        weak_dict: &Bound<'_, PyType>,
    ) -> PyResult<Self> {
        Ok(Lifecycle {
            state_off: member_offsets(state_ty, STATE_FIELDS)?,
            state_ty: state_ty.clone().unbind(),
            meta_off: member_offsets(meta_ty, &META_FIELDS)?,
            meta_ty: meta_ty.clone().unbind(),
            key_off: member_offsets(keyed_ref, &["key"])?,
            keyed_ref: keyed_ref.clone().unbind(),
            weak_dict: weak_dict.clone().unbind(),
            binding: OnceLock::new(),
            ids: Mutex::new(IdState {
                node: 0,
                rng: u64::try_from(now_ms()).unwrap_or(0),
                last_ms: -1,
                seq: 0,
            }),
        })
    }

    /// A new object of `cls` under `key`, as `OaasObject.create`'s Python steps: defaults
    /// by `plan` (`((name, kind, value), ...)`, see `OaasObject._oaas_build_plan`), the
    /// mutable fields `live`, `values` assigned (`setattr`, converted), then registered
    /// in `rt.identity` and `rt.dirty`. Errors of an assignment propagate and leave nothing
    /// registered.
    #[pyo3(signature = (cls, rt, key, plan, live, values=None))]
    fn create<'py>(
        &self,
        cls: &Bound<'py, PyType>,
        rt: &Bound<'py, PyAny>,
        key: &Bound<'py, PyTuple>,
        plan: &Bound<'py, PyTuple>,
        live: &Bound<'py, PyAny>,
        values: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.create_at(cls, rt, key, plan, live, values, now_ms())
    }

    /// Give the native entries what they need of the Python side (once, by the seam):
    /// the runtime module, the Python `create` function, `StoredObject`,
    /// `ObjectNotFound`, the native engine's adapter and its two native store types,
    /// and the id generator's node (12 bits) and seed. `RuntimeError` when bound twice.
    #[allow(clippy::too_many_arguments)]
    fn bind(
        &self,
        py: Python<'_>,
        runtime: Py<PyAny>,
        py_create: Py<PyAny>,
        stored_object: Py<PyAny>,
        not_found: Py<PyAny>,
        native_engine: Py<PyAny>,
        memory_store: Py<PyAny>,
        store_view: Py<PyAny>,
        node: u64,
        seed: u64,
    ) -> PyResult<()> {
        self.seed_ids(node, seed);
        let memory_read = memory_store.getattr(py, intern!(py, "read"))?;
        self.binding
            .set(Binding {
                runtime,
                py_create,
                stored_object,
                not_found,
                native_engine,
                memory_store,
                store_view,
                memory_read,
            })
            .map_err(|_| PyRuntimeError::new_err("Lifecycle.bind: already bound"))
    }

    /// Seed the id generator (node: 12 bits; again in a forked child).
    fn seed_ids(&self, node: u64, seed: u64) {
        let mut st = self
            .ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *st = IdState {
            node: node & ((1 << ID_NODE_BITS) - 1),
            rng: seed,
            last_ms: -1,
            seq: 0,
        };
    }

    /// A fresh object id (see `oaas_sdk.model.registry.new_object_id` for the layout).
    fn new_object_id(&self) -> u64 {
        self.next_id(now_ms())
    }

    // `OaasObject.create` in one native call (the seam installs it as the classmethod):
    // the Python definition's steps for a fresh id or an int id with an int partition
    // and known field names; every other case (no runtime yet, a class not finalized,
    // a str id, a conflict, an error to raise) calls the Python definition, which
    // raises what it raises. The doc comment is the Python definition's docstring, the
    // one users read in `help(Cls.create)`.
    /// Create a new object of this class (not yet committed).
    ///
    /// ``obj_id``: a u64 or a string ``[a-z0-9._:-]{1,160}``; a fresh time-ordered 63-bit
    /// id when omitted. ``partition_id``: u32, default the configured partition.
    /// ``local`` is accepted for oaas-sdk2-py compatibility. ``values`` set fields (each
    /// converted like an assignment). Raises ``ValueError`` for a malformed id,
    /// :class:`ConflictError` when an object with ``obj_id`` already exists (use
    /// :meth:`load` or :meth:`load_or_create`), ``TypeError``/:class:`ValidationError` for
    /// a bad field value.
    #[pyo3(signature = (cls, obj_id=None, local=None, *, partition_id=None, **values))]
    fn create_entry<'py>(
        &self,
        cls: &Bound<'py, PyType>,
        obj_id: Option<Bound<'py, PyAny>>,
        local: Option<Bound<'py, PyAny>>,
        partition_id: Option<Bound<'py, PyAny>>,
        values: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = cls.py();
        let b = self.binding()?;
        let fallback = || {
            let kw = match &values {
                Some(v) => v.copy()?,
                None => PyDict::new(py),
            };
            kw.set_item(intern!(py, "partition_id"), &partition_id)?;
            b.py_create.bind(py).call((cls, &obj_id, &local), Some(&kw))
        };
        let rt = b.runtime.bind(py).getattr(intern!(py, "_current"))?;
        if rt.is_none() || !cls.getattr(intern!(py, "_oaas_ready"))?.is_truthy()? {
            return fallback();
        }
        let Some(plan) = own_attr(cls, intern!(py, "_oaas_plan"))? else {
            return fallback();
        };
        let Ok(plan) = plan.cast_into::<PyTuple>() else {
            return fallback();
        };
        if let Some(v) = &values {
            let fields = cls.getattr(intern!(py, "_oaas_fields"))?;
            for name in v.keys() {
                if !fields.contains(name)? {
                    return fallback();
                }
            }
        }
        let pid = match &partition_id {
            Some(p) => p.clone(),
            None => rt
                .getattr(intern!(py, "config"))?
                .getattr(intern!(py, "oprc_partition_default"))?,
        };
        if !int_below(&pid, 1 << 32) {
            return fallback();
        }
        let cls_id = cls.getattr(intern!(py, "_oaas_cls_id"))?;
        // One clock read: the fresh id's milliseconds and the creation time.
        let now = now_ms();
        let key = match &obj_id {
            None => PyTuple::new(
                py,
                [cls_id, pid, self.next_id(now).into_pyobject(py)?.into_any()],
            )?,
            Some(oid) => {
                if !int_below(oid, 1 << 64) {
                    return fallback();
                }
                let key = PyTuple::new(py, [cls_id, pid, oid.clone()])?;
                if self.identity_get(&rt, &key)?.is_some()
                    || self.read_stored(b, &rt, &key)?.is_some()
                {
                    return fallback(); // the Python definition raises ConflictError
                }
                key
            }
        };
        let values = values.filter(|v| !v.is_empty());
        self.create_at(
            cls,
            &rt,
            &key,
            &plan.get_item(0)?.cast_into::<PyTuple>()?,
            &plan.get_item(1)?,
            values.as_ref(),
            now,
        )
    }

    /// The cold part of `OaasObject.load` (no live instance under `key`), as the Python
    /// definition's steps: the record from the entry cache (unless `rt.cache_stale`
    /// holds `key`) or from the engine (the native store's read called directly when
    /// the engine is the native one and neither its `read` nor its store's is replaced
    /// on the instance: no `StoredObject`), put into the cache when it is enabled, then
    /// decoded onto a new instance by `plan` (as `load`) and registered. Raises
    /// `ObjectNotFound` (`"<cls_id>/<partition>/<id> not found (<store name>)"`) when
    /// there is no such object, `StorageError` when the store fails.
    fn load_cold<'py>(
        &self,
        cls: &Bound<'py, PyType>,
        rt: &Bound<'py, PyAny>,
        key: &Bound<'py, PyTuple>,
        plan: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = cls.py();
        let b = self.binding()?;
        // While an instance with commits the cache lacks is alive (or awaiting its
        // finalizer), the cache is stale for its key: read through the engine.
        let mut parts = None;
        if !rt.getattr(intern!(py, "cache_stale"))?.contains(key)? {
            let cached = rt
                .getattr(intern!(py, "cache"))?
                .call_method1(intern!(py, "get"), (key,))?;
            if !cached.is_none() {
                parts = Some((
                    cached.getattr(intern!(py, "version"))?,
                    cached.getattr(intern!(py, "created_ms"))?,
                    cached.getattr(intern!(py, "updated_ms"))?,
                    cached
                        .getattr(intern!(py, "entries"))?
                        .cast_into::<PyDict>()?,
                ));
            }
        }
        let parts = match parts {
            Some(p) => p,
            None => {
                let Some(p) = self.read_stored(b, rt, key)? else {
                    let store = rt
                        .getattr(intern!(py, "engine"))?
                        .getattr(intern!(py, "store"))?
                        .getattr(intern!(py, "name"))?;
                    let msg = format!(
                        "{}/{}/{} not found ({store})",
                        key.get_item(0)?,
                        key.get_item(1)?,
                        key.get_item(2)?
                    );
                    return Err(PyErr::from_value(b.not_found.bind(py).call1((msg,))?));
                };
                if rt.getattr(intern!(py, "cache_enabled"))?.is_truthy()? {
                    let rec = b
                        .stored_object
                        .bind(py)
                        .call1((&p.0, &p.1, &p.2, p.3.copy()?))?;
                    rt.getattr(intern!(py, "cache"))?
                        .call_method1(intern!(py, "put"), (key, rec))?;
                }
                p
            }
        };
        self.load_parts(cls, rt, key, parts, plan)
    }
}

/// Add `Lifecycle` to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Lifecycle>()
}
