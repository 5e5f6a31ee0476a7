//! The object model's hottest calls in Rust, as native methods of `OaasObject`:
//! `__setattr__` and `commit_async`. `oaas_sdk/model/object.py` keeps the Python definitions
//! (the reference, and what the pure-Python implementation runs) and installs these while
//! the native implementation is configured (the seam, `oaas_sdk/_backend.py`).
//!
//! `__setattr__` does the same steps as the Python one: convert the value to the field's
//! type unless its exact type passes through, store it with `object.__setattr__`, mark a
//! mutable field live (and unpark it), and mark the field dirty (entering the runtime's
//! dirty registry on the first change since a commit).
//!
//! `commit_async` takes the one-call path of the Python `commit_async` /
//! `_oaas_commit_native` (an object changed by assignments only, on the native engine)
//! with no Python frame, and calls the Python definition for everything else.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};
use pyo3::Borrowed;

use super::commit::Known;
use crate::engine::{Failed, PyEngine};

use super::state::{class_attr, ObjectState};

use crate::codec::MethodDef;

extern "C" {
    /// CPython's lookup of `name` along a type's MRO through the type attribute cache
    /// (`Objects/typeobject.c`, exported by every CPython 3.x): a borrowed reference or
    /// NULL (not found), no exception set. Not in `pyo3-ffi` (a private name).
    fn _PyType_Lookup(ty: *mut ffi::PyTypeObject, name: *mut ffi::PyObject) -> *mut ffi::PyObject;
}

/// `getattr(cls, name)` of a class attribute the object model keeps as a plain value (a
/// tuple, dict, `None`, an awaitable): the value found along the MRO through CPython's
/// type attribute cache, without `type.__getattribute__`'s metatype lookups. Falls back
/// to `getattr` (same result, slower) when the class's metatype is not `type` (it may
/// define the name) or the value is a descriptor (its `__get__` must run), and raises
/// what `getattr` raises when the name is missing.
pub(crate) fn class_value<'py>(
    cls: &Bound<'py, PyType>,
    name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: `cls` and `name` are live, GIL-held objects; reading type pointers and
    // the slot `tp_descr_get` of a live type object; `_PyType_Lookup` returns a borrowed
    // reference (kept alive by the type's MRO dicts) that is made owned at once, before
    // any Python code can run.
    unsafe {
        let meta = ffi::Py_TYPE(cls.as_ptr());
        if meta == &raw mut ffi::PyType_Type {
            let v = _PyType_Lookup(cls.as_ptr().cast(), name.as_ptr());
            if !v.is_null() && (*ffi::Py_TYPE(v)).tp_descr_get.is_none() {
                return Ok(Bound::from_borrowed_ptr(cls.py(), v));
            }
        }
    }
    cls.getattr(name)
}

/// `object.__setattr__(obj, name, value)`: the object model's own attributes bypass the
/// class's `__setattr__` (which converts and marks fields dirty).
pub(crate) fn set_plain(
    obj: &Bound<'_, PyAny>,
    name: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
) -> PyResult<()> {
    // SAFETY: live, GIL-held references for the whole call; not stolen; -1 with an
    // exception set on failure.
    let rc = unsafe { ffi::PyObject_GenericSetAttr(obj.as_ptr(), name.as_ptr(), value.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(PyErr::fetch(obj.py()))
    }
}

/// The body of `OaasObject.__setattr__` (see the module comment and oaas_sdk/model/object.py).
///
/// Per assignment of a field whose value passes through (an `int` to an `int` field) this
/// is two dict lookups (the class's conversion table, the instance's `_oaas_state`), one
/// frozenset lookup, the store and the dirty-set add; the class attribute is read through
/// the type attribute cache ([`class_value`]) and the state's slots with one layout check.
fn setattr(
    obj: &Bound<'_, PyAny>,
    name: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let py = obj.py();
    let cls = obj.get_type();
    let mut conv = class_value(&cls, intern!(py, class_attr::CONV))?;
    if conv.is_none() {
        conv = cls.call_method0(intern!(py, class_attr::BUILD_CONV))?;
    }
    let conv = conv.cast_into::<PyDict>()?;
    // SAFETY: `conv` is a dict and `name` a live object, both held for the call;
    // PyDict_GetItemWithError returns a borrowed reference (made owned at once, before any
    // Python code can run) or NULL, with an exception set only on error (an unhashable
    // name).
    let field = unsafe {
        let f = ffi::PyDict_GetItemWithError(conv.as_ptr(), name.as_ptr());
        if f.is_null() {
            if let Some(e) = PyErr::take(py) {
                return Err(e);
            }
            return set_plain(obj, name, value);
        }
        Bound::from_borrowed_ptr(py, f)
    };
    // (exact types stored as they are, FieldType, mutable, shape, the one exact type)
    let field = field.cast_into::<PyTuple>()?;
    if field.len() < 3 {
        return Err(pyo3::exceptions::PyTypeError::new_err(
            "a conversion entry has at least 3 items",
        ));
    }
    // SAFETY: `field` is a tuple of at least 3 items (checked above), held for the call;
    // PyTuple_GET_ITEM returns borrowed references that live as long as the tuple.
    let item = |i: ffi::Py_ssize_t| unsafe {
        pyo3::Borrowed::from_ptr(py, ffi::PyTuple_GET_ITEM(field.as_ptr(), i))
    };
    // SAFETY: reading the type pointer of a live object.
    let vtype = unsafe { ffi::Py_TYPE(value.as_ptr()) }.cast::<ffi::PyObject>();
    let exact = field.len() >= 5 && item(4).as_ptr() == vtype;
    let value = if exact || passes_through(&item(0), value)? {
        value.clone()
    } else if let Some(copy) = fast_copy(&field, value)? {
        copy
    } else {
        let kw = PyDict::new(py);
        kw.set_item(intern!(py, "owner"), cls.name()?)?;
        kw.set_item(intern!(py, "field"), name)?;
        item(1).call_method(intern!(py, "coerce"), (value,), Some(&kw))?
    };
    let mutable = {
        let m = item(2);
        // SAFETY: comparing an object's address with the static `True` and `False`.
        let (t, f) = unsafe { (ffi::Py_True(), ffi::Py_False()) };
        if m.as_ptr() == t {
            true
        } else if m.as_ptr() == f {
            false
        } else {
            m.is_truthy()?
        }
    };
    let state = ObjectState::of(obj)?;
    let slots = state.setattr_view()?;
    let undo = slots.undo()?;
    if !undo.is_none() {
        // A native method call runs on the object: log the value before its first
        // assignment of this field (see object/method.rs).
        super::method::log_old_value(obj, &state, &undo, name, mutable)?;
    }
    set_plain(obj, name, &value)?;
    if mutable {
        slots.live()?.add(name)?;
        let parked = slots.parked()?;
        if !parked.is_empty() && parked.contains(name)? {
            parked.del_item(name)?;
        }
    }
    let dirty = slots.dirty()?;
    if dirty.is_empty() {
        // Invariant: an object with dirty fields is in the dirty registry (also when a
        // mutable field, just marked live above, is the first change since a commit).
        slots
            .rt()?
            .getattr(intern!(py, "dirty"))?
            .cast_into::<PyDict>()?
            .set_item(obj.as_ptr() as usize, obj)?;
    }
    // SAFETY: `dirty` is a set and `name` a live object, both held for the call; PySet_Add
    // returns -1 with an exception set on failure.
    if unsafe { ffi::PySet_Add(dirty.as_ptr(), name.as_ptr()) } != 0 {
        return Err(PyErr::fetch(py));
    }
    Ok(())
}

/// Whether `value`'s exact type is in `passthrough` (the field's exact types stored as they
/// are, a frozenset as `_oaas_build_conv` makes it): `type(value) in passthrough`, looked up
/// in the frozenset directly (a type hashes by address) rather than through the generic
/// `in` of any other container.
fn passes_through(
    passthrough: &Borrowed<'_, '_, PyAny>,
    value: &Bound<'_, PyAny>,
) -> PyResult<bool> {
    // SAFETY: `passthrough` and `value` are live, GIL-held objects; PySet_Contains takes
    // borrowed references and returns 1, 0, or -1 with an exception set.
    unsafe {
        if ffi::PyFrozenSet_CheckExact(passthrough.as_ptr()) != 0 {
            let ty = ffi::Py_TYPE(value.as_ptr()).cast::<ffi::PyObject>();
            return match ffi::PySet_Contains(passthrough.as_ptr(), ty) {
                -1 => Err(PyErr::fetch(value.py())),
                r => Ok(r == 1),
            };
        }
    }
    passthrough.contains(value.get_type())
}

/// The exact-type fast path of assignment (`oaas_sdk/codec/coerce.py` `fast_shape` /
/// `fast_copy`): `field` is the class's conversion entry `(exact types, FieldType, mutable,
/// shape)`; with a shape `(kind, element types, value types)` and a value of exactly that
/// container whose elements have exactly those types, a copy of it (what pydantic's lax
/// mode returns for it); else `None` (the value goes through `FieldType.coerce`).
fn fast_copy<'py>(
    field: &Bound<'py, PyTuple>,
    value: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = value.py();
    if field.len() < 4 {
        return Ok(None);
    }
    let shape = field.get_item(3)?;
    let Ok(shape) = shape.cast::<PyTuple>() else {
        return Ok(None);
    };
    if shape.len() != 3 {
        return Ok(None);
    }
    let kind = shape.get_item(0)?;
    let kind = kind.cast::<pyo3::types::PyString>()?.to_str()?;
    // The one exact type of a frozenset of one type, else NULL (no fast path).
    let single = |s: Bound<'py, PyAny>| -> *mut ffi::PyObject {
        match s.cast::<pyo3::types::PyFrozenSet>() {
            Ok(fs) if fs.len() == 1 => fs
                .iter()
                .next()
                .map_or(std::ptr::null_mut(), |t| t.as_ptr()),
            _ => std::ptr::null_mut(),
        }
    };
    let etype = single(shape.get_item(1)?);
    if etype.is_null() {
        return Ok(None);
    }
    let vptr = value.as_ptr();
    // SAFETY: every pointer below is read with the GIL held from live objects: `value`
    // (borrowed for the call), its items (borrowed from it, not kept past the loops, and
    // nothing runs Python code in between), and type objects kept alive by the class's
    // conversion table (`shape`), which outlives this call.
    unsafe {
        let is_type = |o: *mut ffi::PyObject, t: *mut ffi::PyObject| ffi::Py_TYPE(o).cast() == t;
        match kind {
            "list" => {
                if ffi::Py_TYPE(vptr) != &raw mut ffi::PyList_Type {
                    return Ok(None);
                }
                let n = ffi::PyList_GET_SIZE(vptr);
                for i in 0..n {
                    if !is_type(ffi::PyList_GET_ITEM(vptr, i), etype) {
                        return Ok(None);
                    }
                }
                let copy = ffi::PyList_GetSlice(vptr, 0, n);
                Bound::from_owned_ptr_or_err(py, copy).map(Some)
            }
            "dict" => {
                let vtype = single(shape.get_item(2)?);
                if vtype.is_null() || ffi::Py_TYPE(vptr) != &raw mut ffi::PyDict_Type {
                    return Ok(None);
                }
                let mut pos: ffi::Py_ssize_t = 0;
                let mut k: *mut ffi::PyObject = std::ptr::null_mut();
                let mut v: *mut ffi::PyObject = std::ptr::null_mut();
                while ffi::PyDict_Next(vptr, &mut pos, &mut k, &mut v) != 0 {
                    if !is_type(k, etype) || !is_type(v, vtype) {
                        return Ok(None);
                    }
                }
                Bound::from_owned_ptr_or_err(py, ffi::PyDict_Copy(vptr)).map(Some)
            }
            "set" => {
                if ffi::Py_TYPE(vptr) != &raw mut ffi::PySet_Type {
                    return Ok(None);
                }
                for x in value.try_iter()? {
                    if !is_type(x?.as_ptr(), etype) {
                        return Ok(None);
                    }
                }
                Bound::from_owned_ptr_or_err(py, ffi::PySet_New(vptr)).map(Some)
            }
            _ => Ok(None),
        }
    }
}

/// The `__setattr__(self, name, value)` method (`METH_FASTCALL`, bound by CPython's
/// method descriptor, which checks that `slf` is an `OaasObject`).
unsafe extern "C" fn setattr_raw(
    slf: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a method with the GIL held (the thread is attached).
    let py = unsafe { Python::assume_attached() };
    method_result(py, "__setattr__", || {
        if nargs != 2 {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "__setattr__ expected 2 arguments, got {nargs}"
            )));
        }
        // SAFETY: `slf` and the `nargs` (2) entries of `args` are valid borrowed
        // references for the duration of the call.
        let (obj, name, value) = unsafe {
            (
                pyo3::Borrowed::from_ptr(py, slf),
                pyo3::Borrowed::from_ptr(py, *args),
                pyo3::Borrowed::from_ptr(py, *args.add(1)),
            )
        };
        setattr(&obj, &name, &value).map(|()| py.None().into_bound(py))
    })
}

static SETATTR: MethodDef = MethodDef(std::cell::UnsafeCell::new(ffi::PyMethodDef {
    ml_name: c"__setattr__".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer {
        PyCFunctionFast: setattr_raw,
    },
    ml_flags: ffi::METH_FASTCALL,
    ml_doc: c"Convert, store and mark a field dirty (native OaasObject.__setattr__).".as_ptr(),
}));

/// A method descriptor of class `cls` (`OaasObject`) running the native `__setattr__`;
/// the seam (`oaas_sdk/_backend.py`) stores it as `cls.__setattr__`.
#[pyfunction]
pub fn object_setattr(cls: &Bound<'_, PyType>) -> PyResult<Py<PyAny>> {
    method_descriptor(cls, &SETATTR)
}

/// A method descriptor of class `cls` running the static method definition `def`.
fn method_descriptor(cls: &Bound<'_, PyType>, def: &'static MethodDef) -> PyResult<Py<PyAny>> {
    // SAFETY: `cls` is a live type object; the definition is static. PyDescr_NewMethod
    // returns a new reference or NULL with an exception set.
    unsafe {
        let d = ffi::PyDescr_NewMethod(cls.as_ptr().cast::<ffi::PyTypeObject>(), def.get());
        Ok(Bound::from_owned_ptr_or_err(cls.py(), d)?.unbind())
    }
}

/// What a native method returns to CPython for `body`'s outcome: the new reference, or
/// NULL with the error set; a panic becomes `SystemError` naming the method `what`.
fn method_result<'py>(
    py: Python<'py>,
    what: &str,
    body: impl FnOnce() -> PyResult<Bound<'py, PyAny>>,
) -> *mut ffi::PyObject {
    let r = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| {
        Err(pyo3::exceptions::PySystemError::new_err(format!(
            "internal error in the native {what}"
        )))
    });
    match r {
        Ok(v) => v.into_ptr(),
        Err(e) => {
            e.restore(py);
            std::ptr::null_mut()
        }
    }
}

/// `asyncio.events._get_running_loop` (C-accelerated): the running loop or `None`.
pub(crate) fn running_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static GET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    GET.get_or_try_init(py, || {
        py.import("asyncio.events")?
            .getattr("_get_running_loop")
            .map(Bound::unbind)
    })?
    .bind(py)
    .call0()
}

/// Whether `event_loop` (the loop the engine last watched, or `None`) is the loop running
/// on this thread. An asyncio `BaseEventLoop` records the thread running it in
/// `_thread_id` (set for the whole of `run_forever`, and a thread runs one loop at a time),
/// which is read here instead of calling `asyncio._get_running_loop`: that one checks the
/// process id with a `getpid()` system call on every call (CPython 3.11, ~0.3 µs). Other
/// loops (no `_thread_id`) are compared with the running loop. A forked child never gets
/// here with its parent's loop: the runtime drops its engine at fork (runtime.py).
fn runs_here(event_loop: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = event_loop.py();
    if event_loop.is_none() {
        return Ok(false);
    }
    match event_loop.getattr_opt(intern!(py, "_thread_id"))? {
        Some(tid) if tid.is_none() => Ok(false),
        Some(tid) => match tid.extract::<std::ffi::c_ulong>() {
            // SAFETY: a plain query of the calling thread's identifier.
            Ok(tid) => Ok(tid == unsafe { ffi::PyThread_get_thread_ident() }),
            Err(_) => Ok(running_loop(py)?.is(event_loop)),
        },
        None => Ok(running_loop(py)?.is(event_loop)),
    }
}

/// The one-call path of `OaasObject.commit_async` (oaas_sdk/model/object.py,
/// `_oaas_commit_native`):
/// `Some(awaitable)` when taken, `None` when the Python definition must run (the object
/// is new, has a mapped field or was deleted; the engine is not
/// native or not open yet; no running loop, or one not yet watched; the class's encoders
/// are not built; the object was never cached; or the commit failed before anything was
/// queued, which the Python definition then reports in its own words).
/// Whether the one-call commit can take `obj` (see [`commit_async_fast`]), and what it
/// read deciding.
enum Ready<'py> {
    /// The Python definition must run.
    Python,
    /// Nothing to commit: the object is out of the dirty registry.
    Clean,
    /// The one call: the runtime's `NativeEngine` adapter, its native engine, the class's
    /// encoders and the bookkeeping read.
    Go(
        Bound<'py, PyAny>,
        Bound<'py, PyEngine>,
        Bound<'py, PyDict>,
        Known<'py>,
    ),
}

/// The last runtime engine adapter (`rt._engine`, oaas_sdk/engine/_native.py
/// `NativeEngine`) seen by [`native_engine`] and its native engine (`adapter._eng`, set
/// once when the adapter is made). Holding the adapter keeps its address from being
/// reused, so a pointer comparison identifies it.
static LAST_ENGINE: std::sync::Mutex<Option<(Py<PyAny>, Py<PyEngine>)>> =
    std::sync::Mutex::new(None);

/// The native engine of the runtime's engine adapter `eng` (`eng._eng`), `None` when it
/// has none (the Python engine): read once per adapter. A re-configured runtime has a
/// new adapter (its object is compared, not the runtime), so it is never answered with
/// a closed engine's handle; a closed engine refuses the commit (`Failed::Retry`), which
/// then takes the Python path.
fn native_engine<'py>(eng: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyEngine>>> {
    let py = eng.py();
    {
        let last = LAST_ENGINE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((adapter, native)) = &*last {
            if adapter.is(eng) {
                return Ok(Some(native.bind(py).clone()));
            }
        }
    }
    let Ok(native) = eng.getattr(intern!(py, "_eng"))?.cast_into::<PyEngine>() else {
        return Ok(None);
    };
    let old = LAST_ENGINE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .replace((eng.clone().unbind(), native.clone().unbind()));
    // Released with the lock not held: dropping the last reference to an adapter may
    // run Python code (a finalizer) that commits again.
    drop(old);
    Ok(Some(native))
}

/// The checks of the one-call commit shared by `commit_async` and `commit`.
fn one_call<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Ready<'py>> {
    let py = obj.py();
    let cls = obj.get_type();
    let state = ObjectState::of(obj)?;
    let rt = state.rt()?;
    let eng = rt.getattr(intern!(py, "_engine"))?;
    if eng.is_none() {
        return Ok(Ready::Python);
    }
    let Some(native) = native_engine(&eng)? else {
        return Ok(Ready::Python);
    };
    let version = state.version()?;
    let stale = state.stale()?;
    if !version.is_truthy()?
        || state.deleted()?
        || class_value(&cls, intern!(py, class_attr::MAPPED))?.is_truthy()?
        || stale.is_none()
    {
        return Ok(Ready::Python);
    }
    let dirty = state.dirty()?;
    if dirty.is_empty() && state.live()?.is_empty() {
        rt.getattr(intern!(py, "dirty"))?
            .cast_into::<PyDict>()?
            .call_method1(intern!(py, "pop"), (obj.as_ptr() as usize, py.None()))?;
        return Ok(Ready::Clean);
    }
    let encoders = class_value(&cls, intern!(py, class_attr::ENCODERS))?;
    let Ok(encoders) = encoders.cast_into::<PyDict>() else {
        return Ok(Ready::Python);
    };
    if encoders.is_empty() {
        return Ok(Ready::Python);
    }
    let known = Known {
        state,
        version: version.extract()?,
        dirty,
        rt,
        stale,
    };
    Ok(Ready::Go(eng, native, encoders, known))
}

fn commit_async_fast<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = obj.py();
    let cls = obj.get_type();
    let (eng, native, encoders, known) = match one_call(obj)? {
        Ready::Python => return Ok(None),
        Ready::Clean => return class_value(&cls, intern!(py, class_attr::DONE)).map(Some),
        Ready::Go(eng, native, encoders, known) => (eng, native, encoders, known),
    };
    let outcome = if native.get().durable() {
        let event_loop = eng.getattr(intern!(py, "_watched"))?;
        if !runs_here(&event_loop)? {
            return Ok(None);
        }
        native
            .get()
            .commit_future(obj, &encoders, &event_loop, Some(known))
            .and_then(|fut| match fut {
                Some(fut) => Ok(fut),
                None => class_value(&cls, intern!(py, class_attr::DONE)).map_err(Failed::Final),
            })
    } else {
        native
            .get()
            .commit_now(obj, &encoders, Some(known))
            .and_then(|()| class_value(&cls, intern!(py, class_attr::DONE)).map_err(Failed::Final))
    };
    match outcome {
        Ok(awaitable) => Ok(Some(awaitable)),
        Err(Failed::Retry(_)) => Ok(None),
        Err(Failed::Final(e)) => cls
            .getattr(intern!(py, class_attr::FAILED))?
            .call1((e.into_value(py),))
            .map(Some),
    }
}

/// The `commit_async(self)` method (`METH_NOARGS`, bound by CPython's method descriptor,
/// which checks that `slf` is an `OaasObject`).
unsafe extern "C" fn commit_async_raw(
    slf: *mut ffi::PyObject,
    _unused: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a method with the GIL held (the thread is attached).
    let py = unsafe { Python::assume_attached() };
    method_result(py, "commit_async", || {
        // SAFETY: `slf` is a valid borrowed reference for the duration of the call.
        let obj = unsafe { pyo3::Borrowed::from_ptr(py, slf) };
        match commit_async_fast(&obj)? {
            Some(awaitable) => Ok(awaitable),
            None => obj
                .get_type()
                .getattr(intern!(py, class_attr::PY_COMMIT_ASYNC))?
                .call1((obj,)),
        }
    })
}

static COMMIT_ASYNC: MethodDef = MethodDef(std::cell::UnsafeCell::new(ffi::PyMethodDef {
    ml_name: c"commit_async".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer {
        PyCFunction: commit_async_raw,
    },
    ml_flags: ffi::METH_NOARGS,
    ml_doc: c"Commit this object's changes; the awaitable resolves when the write is durable \
(durability=\"sync\") or queued (\"async\"). Native OaasObject.commit_async: see the \
Python definition."
        .as_ptr(),
}));

/// The one-call path of the blocking `OaasObject.commit` (oaas_sdk/model/object.py): as
/// [`commit_async_fast`], with no event loop; with `durability="sync"` it waits for the
/// write with the GIL released (`PyEngine::commit_wait`). `Ok(true)` when taken (the
/// commit is done), `Ok(false)` when the Python definition must run; a commit that
/// failed after it was queued raises its error (the object undone).
fn commit_fast(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    let (native, encoders, known) = match one_call(obj)? {
        Ready::Python => return Ok(false),
        Ready::Clean => return Ok(true),
        Ready::Go(_, native, encoders, known) => (native, encoders, known),
    };
    match native.get().commit_wait(obj, &encoders, Some(known)) {
        Ok(()) => Ok(true),
        Err(Failed::Retry(_)) => Ok(false),
        Err(Failed::Final(e)) => Err(e),
    }
}

/// The `commit(self)` method (`METH_NOARGS`, bound by CPython's method descriptor, which
/// checks that `slf` is an `OaasObject`).
unsafe extern "C" fn commit_raw(
    slf: *mut ffi::PyObject,
    _unused: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a method with the GIL held (the thread is attached).
    let py = unsafe { Python::assume_attached() };
    method_result(py, "commit", || {
        // SAFETY: `slf` is a valid borrowed reference for the duration of the call.
        let obj = unsafe { pyo3::Borrowed::from_ptr(py, slf) };
        if commit_fast(&obj)? {
            return Ok(py.None().into_bound(py));
        }
        obj.get_type()
            .getattr(intern!(py, class_attr::PY_COMMIT))?
            .call1((obj,))
    })
}

static COMMIT: MethodDef = MethodDef(std::cell::UnsafeCell::new(ffi::PyMethodDef {
    ml_name: c"commit".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer {
        PyCFunction: commit_raw,
    },
    ml_flags: ffi::METH_NOARGS,
    ml_doc: c"Commit this object's changes and block until the commit resolves. Native \
OaasObject.commit: see the Python definition."
        .as_ptr(),
}));

/// A method descriptor of class `cls` (`OaasObject`) running the native `commit`; the
/// seam (`oaas_sdk/_backend.py`) stores it as `cls.commit` while the engine is the native
/// one. The class provides `_oaas_py_commit` (the Python definition, called for every
/// other case).
#[pyfunction]
pub fn object_commit(cls: &Bound<'_, PyType>) -> PyResult<Py<PyAny>> {
    method_descriptor(cls, &COMMIT)
}

/// A method descriptor of class `cls` (`OaasObject`) running the native `commit_async`;
/// the seam (`oaas_sdk/_backend.py`) stores it as `cls.commit_async`. The class provides
/// `_oaas_py_commit_async` (the Python definition, called for every other case),
/// `_oaas_done` (the awaitable of a commit acknowledged at once) and `_oaas_failed`
/// (error -> failed awaitable).
#[pyfunction]
pub fn object_commit_async(cls: &Bound<'_, PyType>) -> PyResult<Py<PyAny>> {
    method_descriptor(cls, &COMMIT_ASYNC)
}
