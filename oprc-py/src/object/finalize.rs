//! The native finalizer of OaaS objects: `OaasObject.__del__` (oaas_sdk/model/object.py)
//! without a Python frame per deallocation.
//!
//! The seam (`oaas_sdk/_backend.py`) stores [`object_finalizer`]'s result as
//! `OaasObject.__del__`: a slot wrapper (`PyWrapperDescrObject`) of the `__del__` slot
//! whose wrapped function is [`object_finalize`]. CPython's slot update (`type.__setattr__`
//! on a dunder name, and the slot fix-up of every class made later) sees such a wrapper for
//! `tp_finalize` and stores its C function in the slot of `OaasObject` and of every
//! subclass (a subclass defining its own `__del__` keeps the generic slot, which calls it;
//! its `super().__del__()` reaches this one). Storing the Python function again puts the
//! generic slot back everywhere. So a deallocation calls [`object_finalize`] directly.
//!
//! Same steps as the Python `__del__`: nothing unless the object's state has a stale mark
//! that is not `UNCACHED`; the newest instance (version >= the mark's newest version) that
//! is not deleted puts its committed state into `rt.cache` as a `StoredObject`; then the
//! mark's instance count drops by one and, at zero, the key leaves `rt.cache_stale` (if
//! the mark is still the one there). It never raises (every error is dropped, as the
//! Python one's `except Exception`) and leaves the current exception as it found it.

use std::ffi::{c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyTuple, PyType};

use super::state::{ObjectState, STATE_ATTR};

extern "C" {
    /// A slot wrapper of `ty` for the slot `base` (an entry of CPython's slot table) with
    /// `wrapped` as the slot's function: a new reference or NULL with an exception set.
    /// Public C API of CPython (`Include/cpython/descrobject.h`), not in `pyo3-ffi`.
    fn PyDescr_NewWrapper(
        ty: *mut ffi::PyTypeObject,
        base: *mut ffi::wrapperbase,
        wrapped: *mut c_void,
    ) -> *mut ffi::PyObject;
}

/// What the finalizer needs of the Python side: `UNCACHED` (the stale mark of objects in
/// a runtime without an entry cache) and `StoredObject` (the cache's records). Replaced
/// by every [`object_finalizer`] call (the latest object model's).
struct Binding {
    uncached: Py<PyAny>,
    stored_object: Py<PyAny>,
}

static BINDING: Mutex<Option<Binding>> = Mutex::new(None);

/// The finalizer's steps (see the module comment); errors propagate to the caller, which
/// drops them.
fn finalize(obj: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = obj.py();
    let (uncached, stored_object) = {
        let b = BINDING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match b.as_ref() {
            Some(b) => (b.uncached.clone_ref(py), b.stored_object.clone_ref(py)),
            None => return Ok(()),
        }
    };
    // object.__getattribute__(obj, STATE_ATTR), as the Python `_get`.
    // SAFETY: live references; PyObject_GenericGetAttr returns a new reference or NULL
    // with an exception set.
    let st = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyObject_GenericGetAttr(obj.as_ptr(), intern!(py, STATE_ATTR).as_ptr()),
        )?
    };
    let st = ObjectState::from_state(st);
    let mark = st.stale()?;
    if mark.is_none() || mark.is(uncached.bind(py)) {
        return Ok(());
    }
    let rt = st.rt()?;
    let m = st.meta()?;
    let key = PyTuple::new(
        py,
        [
            m.getattr(intern!(py, "cls_id"))?,
            m.getattr(intern!(py, "partition_id"))?,
            m.getattr(intern!(py, "object_id"))?,
        ],
    )?;
    let put = (|| -> PyResult<()> {
        let [committed, version, created, updated] = st.base()?;
        if !st.deleted()? && version.ge(mark.get_item(1)?)? {
            let rec = stored_object
                .bind(py)
                .call1((version, created, updated, committed))?;
            rt.getattr(intern!(py, "cache"))?
                .call_method1(intern!(py, "put"), (&key, rec))?;
        }
        Ok(())
    })();
    // The Python definition's `finally`: runs whether or not the put failed.
    let count = (|| -> PyResult<()> {
        let n = mark.get_item(0)?.sub(1)?;
        mark.set_item(0, &n)?;
        if n.le(0)? {
            let stale = rt.getattr(intern!(py, "cache_stale"))?;
            if stale.call_method1(intern!(py, "get"), (&key,))?.is(&mark) {
                stale.del_item(&key)?;
            }
        }
        Ok(())
    })();
    put.and(count)
}

/// The `tp_finalize` of `OaasObject` and its subclasses (see the module comment).
///
/// # Safety
/// Called by CPython with the GIL held and `obj` a live object (being finalized).
unsafe extern "C" fn object_finalize(obj: *mut ffi::PyObject) {
    // SAFETY: CPython calls tp_finalize with the GIL held.
    let py = unsafe { Python::assume_attached() };
    let (mut t, mut v, mut tb) = (
        std::ptr::null_mut(),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    );
    // SAFETY: the GIL is held; PyErr_Fetch moves the current exception (if any) into the
    // three owned pointers, PyErr_Restore below moves them back (the contract of
    // tp_finalize: leave the exception state unchanged).
    unsafe { ffi::PyErr_Fetch(&mut t, &mut v, &mut tb) };
    // A panic must not unwind into CPython: it is dropped like an error.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `obj` is live for the duration of the call (caller's contract).
        let obj = unsafe { Bound::from_borrowed_ptr(py, obj) };
        // A finalizer must not raise (e.g. at interpreter exit): errors are dropped.
        drop(finalize(&obj));
    }));
    // SAFETY: the GIL is held; `PyErr_Restore` takes back the references fetched above
    // (and clears any error left by the steps, which there is none of: `finalize`'s
    // errors are `PyErr` values, already taken out of the interpreter).
    unsafe { ffi::PyErr_Restore(t, v, tb) };
}

/// The slot wrapper to store as `cls.__del__` (`cls`: `OaasObject`), running the native
/// finalizer; `uncached` and `stored_object`: `oaas_sdk.model.state.UNCACHED` and
/// `oaas_sdk.stores.StoredObject`. `TypeError` when the interpreter's `__del__` slot
/// wrapper does not have the expected shape.
#[pyfunction]
pub fn object_finalizer<'py>(
    cls: &Bound<'py, PyType>,
    uncached: Py<PyAny>,
    stored_object: Py<PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = cls.py();
    // The slot table's `__del__` entry, read from the slot wrapper of a built-in type
    // whose `tp_finalize` is a C function (generators).
    // SAFETY: `PyGen_Type` is a static, ready type object; only its address is taken.
    let gen = unsafe { Bound::from_borrowed_ptr(py, (&raw mut ffi::PyGen_Type).cast()) };
    let d = gen.getattr(intern!(py, "__del__"))?;
    // SAFETY: reading the type pointer of a live object; `PyWrapperDescr_Type` is a
    // static type object, only its address is taken.
    let is_wrapper = unsafe { ffi::Py_TYPE(d.as_ptr()) == &raw mut ffi::PyWrapperDescr_Type };
    if !is_wrapper {
        return Err(PyTypeError::new_err(
            "generator.__del__ is not a slot wrapper",
        ));
    }
    // SAFETY: `d` is a slot wrapper (checked above): a `PyWrapperDescrObject`, whose
    // `d_base` points into CPython's static slot table.
    let base = unsafe { (*d.as_ptr().cast::<ffi::PyWrapperDescrObject>()).d_base };
    // SAFETY: `base` is a slot table entry; its `name` is a static C string.
    let name = unsafe { CStr::from_ptr((*base).name) };
    if name.to_bytes() != b"__del__" {
        return Err(PyTypeError::new_err("generator.__del__ wraps another slot"));
    }
    *BINDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Binding {
        uncached,
        stored_object,
    });
    // SAFETY: `cls` is a live type object, `base` the `__del__` slot entry (static),
    // `object_finalize` a `destructor` (what the entry's wrapper, `wrap_del`, calls).
    // PyDescr_NewWrapper returns a new reference or NULL with an exception set.
    unsafe {
        let w = PyDescr_NewWrapper(
            cls.as_ptr().cast(),
            base,
            object_finalize as ffi::destructor as *mut c_void,
        );
        Bound::from_owned_ptr_or_err(py, w)
    }
}

/// Add `object_finalizer` to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(object_finalizer, m)?)
}
