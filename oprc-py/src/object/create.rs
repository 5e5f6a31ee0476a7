//! Create and load an object in one native call: the instance (`object.__new__`), its
//! `ObjectMeta` and `ObjectState` (slots written at their offsets, no `__init__` run), its
//! field values (defaults by the class's plan, or the immutable fields decoded from a
//! stored record) and its identity-map entry. `oaas_sdk/model/object.py` (`create`,
//! `load`) keeps the Python reference of every step and calls [`Lifecycle`] when the seam
//! (`oaas_sdk/_backend.py`) installed one.
//!
//! The cyclic garbage collector: of the objects made per live object, only the instance,
//! its `ObjectState` and the identity map's weak reference stay tracked. The `ObjectMeta`
//! (strs and ints) and the `dirty` and `live` sets (field names) can never be part of a
//! reference cycle, so they are untracked (`PyObject_GC_UnTrack`, as CPython untracks
//! dicts and tuples of atomic values) and a collection does not visit them. The weak
//! reference cannot be untracked: a collection moves a weak reference with a callback
//! whose referent is garbage onto a list of callbacks to call, which needs it tracked.

use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};

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
}

impl Lifecycle {
    /// Instance, meta and state of an object of `cls` with `key` (cls_id, partition_id,
    /// object_id): version 0, nothing committed, `live` the names in `live` (or none),
    /// created/updated at `ms`.
    fn blank<'py>(
        &self,
        cls: &Bound<'py, PyType>,
        rt: &Bound<'py, PyAny>,
        key: &Bound<'py, PyTuple>,
        live: Option<&Bound<'py, PyAny>>,
        ms: i64,
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
        let zero = 0i64.into_pyobject(py)?.into_any();
        let ms = ms.into_pyobject(py)?.into_any();
        let none = py.None().into_bound(py);
        // In the order of STATE_FIELDS (oaas_sdk/model/state.py ObjectState.__init__).
        let values = vec![
            meta,
            rt.clone(),
            zero,
            PyDict::new(py).into_any(),
            name_set(py, None)?,
            PyDict::new(py).into_any(),
            name_set(py, live)?,
            none.clone(),
            pyo3::types::PyBool::new(py, false).to_owned().into_any(),
            ms.clone(),
            ms,
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
        let py = cls.py();
        let obj = self.blank(cls, rt, key, Some(live), now_ms())?;
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

    /// The object of `cls` under `key` from a stored record (`stored`: version,
    /// created_ms, updated_ms, entries), as `OaasObject.load`'s Python steps: the
    /// immutable fields decoded by `plan` (`((name, decode, field), ...)`: an entry's
    /// bytes go to `decode`; a missing entry's value is `field.new_default()`), then
    /// registered in `rt.identity`. A failing decode calls the Python
    /// `obj._oaas_decode(name, field, data)`, which raises the error naming the object
    /// and field; nothing is registered then.
    fn load<'py>(
        &self,
        cls: &Bound<'py, PyType>,
        rt: &Bound<'py, PyAny>,
        key: &Bound<'py, PyTuple>,
        stored: &Bound<'py, PyAny>,
        plan: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = cls.py();
        let obj = self.blank(cls, rt, key, None, 0)?;
        let entries = stored
            .getattr(intern!(py, "entries"))?
            .cast_into::<PyDict>()?;
        let mut decoded = Vec::with_capacity(plan.len());
        for step in plan.iter() {
            let step = step.cast_into::<PyTuple>()?;
            let name = step.get_item(0)?;
            let field = step.get_item(2)?;
            let value = match entries.get_item(&name)? {
                None => field.call_method0(intern!(py, "new_default"))?,
                Some(data) => match step.get_item(1)?.call1((&data,)) {
                    Ok(v) => v,
                    Err(_) => {
                        obj.call_method1(intern!(py, "_oaas_decode"), (&name, &field, data))?
                    }
                },
            };
            decoded.push((name, value));
        }
        let state = obj.getattr(intern!(py, STATE_ATTR))?;
        state.setattr(
            intern!(py, "version"),
            stored.getattr(intern!(py, "version"))?,
        )?;
        state.setattr(intern!(py, "committed"), &entries)?;
        state.setattr(
            intern!(py, "created_ms"),
            stored.getattr(intern!(py, "created_ms"))?,
        )?;
        state.setattr(
            intern!(py, "updated_ms"),
            stored.getattr(intern!(py, "updated_ms"))?,
        )?;
        for (name, value) in decoded {
            set_plain(&obj, &name, &value)?;
        }
        self.register(rt, key, &obj)?;
        Ok(obj)
    }
}

/// Add `Lifecycle` to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Lifecycle>()
}
