//! The object model's hottest call in Rust: `OaasObject.__setattr__` as a native method of
//! the class. `oaas_sdk/object.py` keeps the Python definition (the reference, and what
//! the pure-Python implementation runs) and installs this one while the native
//! implementation is configured (`object.use_native_setattr`); both do the same steps:
//! convert the value to the field's type unless its exact type passes through, store it
//! with `object.__setattr__`, mark a mutable field live (and unpark it), and mark the field
//! dirty (entering the runtime's dirty registry on the first change since a commit).

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PySet, PyTuple, PyType};

use crate::data::py_codec::MethodDef;

/// `object.__setattr__(obj, name, value)`: the object model's own attributes bypass the
/// class's `__setattr__` (which converts and marks fields dirty).
pub(super) fn set_plain(
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

/// The body of `OaasObject.__setattr__` (see the module comment and object.py).
fn setattr(
    obj: &Bound<'_, PyAny>,
    name: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let py = obj.py();
    let cls = obj.get_type();
    let mut conv = cls.getattr(intern!(py, "_oaas_conv"))?;
    if conv.is_none() {
        conv = cls.call_method0(intern!(py, "_oaas_build_conv"))?;
    }
    let conv = conv.cast_into::<PyDict>()?;
    let Some(field) = conv.get_item(name)? else {
        return set_plain(obj, name, value);
    };
    // (exact types stored as they are, FieldType, mutable)
    let field = field.cast_into::<PyTuple>()?;
    let passthrough = field.get_item(0)?;
    let value = if passthrough.contains(value.get_type())? {
        value.clone()
    } else {
        let kw = PyDict::new(py);
        kw.set_item(intern!(py, "owner"), cls.name()?)?;
        kw.set_item(intern!(py, "field"), name)?;
        field
            .get_item(1)?
            .call_method(intern!(py, "coerce"), (value,), Some(&kw))?
    };
    set_plain(obj, name, &value)?;
    if field.get_item(2)?.is_truthy()? {
        obj.getattr(intern!(py, "_oaas_live"))?
            .cast_into::<PySet>()?
            .add(name)?;
        let parked = obj
            .getattr(intern!(py, "_oaas_parked"))?
            .cast_into::<PyDict>()?;
        if !parked.is_empty() && parked.contains(name)? {
            parked.del_item(name)?;
        }
    }
    let dirty = obj
        .getattr(intern!(py, "_oaas_dirty"))?
        .cast_into::<PySet>()?;
    if dirty.is_empty() {
        // Invariant: an object with dirty fields is in the dirty registry.
        obj.getattr(intern!(py, "_oaas_rt"))?
            .getattr(intern!(py, "dirty"))?
            .cast_into::<PyDict>()?
            .set_item(obj.as_ptr() as usize, obj)?;
    }
    dirty.add(name)
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
    let r = catch_unwind(AssertUnwindSafe(|| -> PyResult<()> {
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
        setattr(&obj, &name, &value)
    }));
    let r = r.unwrap_or_else(|_| {
        Err(pyo3::exceptions::PySystemError::new_err(
            "internal error in the native __setattr__",
        ))
    });
    match r {
        // SAFETY: Py_None is immortal-or-refcounted; we return a new reference.
        Ok(()) => unsafe { ffi::Py_NewRef(ffi::Py_None()) },
        Err(e) => {
            e.restore(py);
            std::ptr::null_mut()
        }
    }
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
/// `object.use_native_setattr` stores it as `cls.__setattr__`.
#[pyfunction]
pub fn object_setattr(cls: &Bound<'_, PyType>) -> PyResult<Py<PyAny>> {
    // SAFETY: `cls` is a live type object; the definition is static. PyDescr_NewMethod
    // returns a new reference or NULL with an exception set.
    unsafe {
        let d = ffi::PyDescr_NewMethod(cls.as_ptr().cast::<ffi::PyTypeObject>(), SETATTR.get());
        Ok(Bound::from_owned_ptr_or_err(cls.py(), d)?.unbind())
    }
}
