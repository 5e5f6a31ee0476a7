//! The `FieldType.encode` / `decode` methods as C functions (`METH_FASTCALL`): a field's
//! encode or decode is one call into the extension, with no Python frame.

use super::*;

/// A `PyMethodDef` in a static. CPython only ever reads it.
pub(crate) struct MethodDef(pub(crate) std::cell::UnsafeCell<ffi::PyMethodDef>);

// SAFETY: the definitions are constants never written after initialisation; CPython
// reads them (with the GIL held) and keeps pointers to them, which stay valid forever.
unsafe impl Sync for MethodDef {}

impl MethodDef {
    #[inline]
    pub(crate) fn get(&self) -> *mut ffi::PyMethodDef {
        self.0.get()
    }
}

/// Offset of the `FieldType` slot that holds its [`Coder`] (`FieldType._ncoder`), set by
/// `Coder.install`; 0 until then.
pub(crate) static CODER_SLOT: AtomicIsize = AtomicIsize::new(0);
/// The `Coder` type object, set by `Coder.install`.
pub(crate) static CODER_TYPE: AtomicPtr<ffi::PyTypeObject> = AtomicPtr::new(std::ptr::null_mut());

/// The class `Coder.install` made `encode` / `decode` native methods of
/// (`codec.FieldType`), for [`encode_field`].
pub(crate) static FIELD_CLASS: AtomicPtr<ffi::PyTypeObject> = AtomicPtr::new(std::ptr::null_mut());

/// `ft.encode(value)` for Rust callers (the engine's one-call commit), with no method
/// lookup and no argument tuple: exactly what the native `FieldType.encode` does.
/// `None` when `ft` is not exactly an instance of the installed `FieldType` class (the
/// caller then calls its `encode` method).
#[inline]
pub(crate) fn encode_field<'py>(
    ft: &Bound<'py, PyAny>,
    value: &Bound<'py, PyAny>,
) -> Option<PyResult<Bound<'py, PyAny>>> {
    let cls = FIELD_CLASS.load(Ordering::Relaxed);
    if cls.is_null() || ft.get_type_ptr() != cls {
        return None;
    }
    // SAFETY: `ft` is an instance of the installed class (checked above), as the method
    // descriptor would have checked; both references are valid and the GIL is held (a
    // `Bound`). The result is a new reference or NULL with an exception set.
    Some(unsafe {
        let p = field_encode_raw(ft.as_ptr(), value.as_ptr());
        Bound::from_owned_ptr_or_err(ft.py(), p)
    })
}

/// The [`Coder`] in `ft`'s coder slot, borrowed, when it holds one and its codec is the
/// active backend: for the scalar fast paths, which run no Python code (so nothing can
/// replace the slot's value while the reference is used).
///
/// # Safety
/// As [`coder_of`]; the result must not be used after Python code may have run.
#[inline(always)]
pub(crate) unsafe fn active_coder<'a>(ft: *mut ffi::PyObject) -> Option<&'a Coder> {
    // SAFETY: as `slot_coder`; the object is kept alive by `ft`'s slot for as long as no
    // Python code runs (caller), and it is a `Coder` (type checked), a frozen pyclass
    // whose contents `get` borrows.
    unsafe {
        let p = slot_coder(ft)?;
        let py = Python::assume_attached();
        let c: &'a Coder = &*std::ptr::from_ref(
            pyo3::Borrowed::from_ptr(py, p)
                .cast_unchecked::<Coder>()
                .get(),
        );
        c.codec.get().active.load(Ordering::Relaxed).then_some(c)
    }
}

/// The [`Coder`] in `ft`'s coder slot (a new reference), when it holds one.
///
/// # Safety
/// `ft` must be a valid reference to an instance of the class `Coder.install` was given
/// (the method descriptors that call this check that); the GIL must be held.
#[inline(always)]
pub(crate) unsafe fn coder_of<'py>(
    py: Python<'py>,
    ft: *mut ffi::PyObject,
) -> Option<Bound<'py, Coder>> {
    // SAFETY: as `slot_coder`; we take our own reference before any Python code could
    // replace the slot's value, and the type was checked there.
    unsafe {
        let p = slot_coder(ft)?;
        Some(Bound::from_borrowed_ptr(py, p).cast_into_unchecked::<Coder>())
    }
}

/// The object in `ft`'s coder slot, borrowed, when it is a `Coder`.
///
/// # Safety
/// As [`coder_of`].
#[inline(always)]
pub(crate) unsafe fn slot_coder(ft: *mut ffi::PyObject) -> Option<*mut ffi::PyObject> {
    let off = CODER_SLOT.load(Ordering::Relaxed);
    if off <= 0 {
        return None;
    }
    // SAFETY: `off` is the offset of an object slot (a `T_OBJECT_EX` member) of the
    // class `ft` is an instance of (caller): a possibly NULL object pointer. A non-NULL
    // value is a live object owned by `ft`. Its type is checked before anyone casts it.
    unsafe {
        let p = *ft.cast::<u8>().offset(off).cast::<*mut ffi::PyObject>();
        (!p.is_null() && ffi::Py_TYPE(p) == CODER_TYPE.load(Ordering::Relaxed)).then_some(p)
    }
}

/// Hands a call's result to CPython: a new reference, or NULL with the exception set. A
/// panic (caught by the caller) becomes a `SerializationError`.
#[inline]
pub(crate) fn into_raw(
    py: Python<'_>,
    coder: Option<&Coder>,
    r: std::thread::Result<PyResult<*mut ffi::PyObject>>,
) -> *mut ffi::PyObject {
    let r = match r {
        Ok(r) => r,
        Err(_) => match coder.map(|c| catch_unwind(AssertUnwindSafe(|| c.panicked(py)))) {
            Some(Ok(e)) => Err(e),
            _ => {
                // SAFETY: the GIL is held; the strings are static and NUL-terminated.
                unsafe {
                    ffi::PyErr_SetString(
                        ffi::PyExc_SystemError,
                        c"internal error in the native codec".as_ptr(),
                    );
                }
                return std::ptr::null_mut();
            }
        },
    };
    match r {
        Ok(p) => p,
        Err(e) => {
            e.restore(py);
            std::ptr::null_mut()
        }
    }
}

/// `FieldType.encode` once the extension is loaded: a `METH_O` method of the class
/// (`Coder.install`), so that `ft.encode(v)` is CPython's specialised method call with no
/// argument parsing and no pyo3 trampoline. Without a coder for the active codec, the
/// call goes to the type's Python `_encode_slow` (which builds the coder when the native
/// backend is active).
pub(crate) unsafe extern "C" fn field_encode_raw(
    ft: *mut ffi::PyObject,
    arg: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a method with the GIL held; `ft` is an instance of the class
    // (the method descriptor checked it) and `arg` a valid reference. encode_scalar runs
    // no Python code. It cannot panic, but a panic must not unwind into CPython: caught.
    let fast = catch_unwind(|| unsafe { active_coder(ft).and_then(|c| c.encode_scalar(arg)) });
    if let Ok(Some(p)) = fast {
        return p;
    }
    // SAFETY: as above.
    unsafe { field_encode_general(ft, arg) }
}

/// [`field_encode_raw`] for every value but the scalars.
///
/// # Safety
/// As [`field_encode_raw`].
#[inline(never)]
pub(crate) unsafe fn field_encode_general(
    ft: *mut ffi::PyObject,
    arg: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a method with the GIL held (the thread is attached).
    let py = unsafe { Python::assume_attached() };
    // SAFETY: the method descriptor checked that `ft` is an instance of the class.
    let coder = unsafe { coder_of(py, ft) };
    let coder = coder.as_ref().map(Bound::get);
    let r = catch_unwind(AssertUnwindSafe(|| match coder {
        Some(c) if c.codec.get().active.load(Ordering::Relaxed) => {
            // SAFETY: `arg` is a valid borrowed reference; the GIL is held.
            if let Some(p) = unsafe { c.encode_scalar(arg) } {
                return Ok(p);
            }
            // SAFETY: as above.
            let value = unsafe { pyo3::Borrowed::from_ptr(py, arg) };
            c.encode(py, &value).map(Bound::into_ptr)
        }
        _ => {
            // SAFETY: `ft` and `arg` are valid; a new reference or NULL with an exception.
            let p = unsafe {
                ffi::PyObject_CallMethodOneArg(ft, pyo3::intern!(py, "_encode_slow").as_ptr(), arg)
            };
            Ok(p)
        }
    }));
    into_raw(py, coder, r)
}

/// `FieldType.decode` (see [`field_encode_raw`]), a `METH_FASTCALL | METH_KEYWORDS`
/// method: `decode(data)` and `decode(data, zero_copy=<bool>)` are handled here; any other
/// call is passed as it is to the type's Python `_decode_slow`, which parses it.
pub(crate) unsafe extern "C" fn field_decode_raw(
    ft: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    if nargs == 1 && kwnames.is_null() {
        // SAFETY: as in `field_encode_raw`; one positional argument, a valid reference.
        let fast =
            catch_unwind(|| unsafe { active_coder(ft).and_then(|c| c.decode_scalar(*args)) });
        if let Ok(Some(p)) = fast {
            return p;
        }
    }
    // SAFETY: as above.
    unsafe { field_decode_general(ft, args, nargs, kwnames) }
}

/// [`field_decode_raw`] for every input but a lone scalar.
///
/// # Safety
/// As [`field_decode_raw`].
#[inline(never)]
pub(crate) unsafe fn field_decode_general(
    ft: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: as in `field_encode_raw`.
    let py = unsafe { Python::assume_attached() };
    // SAFETY: as in `field_encode_raw`.
    let coder = unsafe { coder_of(py, ft) };
    let coder = coder.as_ref().map(Bound::get);
    let r = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: CPython passes `nargs` positional arguments then one value per name in
        // `kwnames` (a tuple of str, or NULL), all valid borrowed references.
        let zero_copy = unsafe {
            match (nargs, kwnames.is_null()) {
                (1, true) => Some(false),
                (1, false) if ffi::PyTuple_GET_SIZE(kwnames) == 1 => {
                    let name = ffi::PyTuple_GET_ITEM(kwnames, 0);
                    let v = *args.add(1);
                    let is_zc = ffi::Py_TYPE(name) == std::ptr::addr_of_mut!(ffi::PyUnicode_Type)
                        && py_fast::str_utf8(name) == Some(b"zero_copy".as_slice());
                    match (is_zc, v == ffi::Py_True(), v == ffi::Py_False()) {
                        (true, true, _) => Some(true),
                        (true, _, true) => Some(false),
                        _ => None,
                    }
                }
                _ => None,
            }
        };
        match (coder, zero_copy) {
            (Some(c), Some(zc)) if c.codec.get().active.load(Ordering::Relaxed) => {
                // SAFETY: one positional argument, a valid borrowed reference; GIL held.
                let data = unsafe { *args };
                // Scalars and copies only: zero_copy may ask for a view of a bin value.
                if !zc {
                    // SAFETY: as above.
                    if let Some(p) = unsafe { c.decode_scalar(data) } {
                        return Ok(p);
                    }
                }
                // SAFETY: as above.
                let data = unsafe { pyo3::Borrowed::from_ptr(py, data) };
                c.decode(py, &data, zc).map(Bound::into_ptr)
            }
            _ => {
                // The call as it came, to `ft._decode_slow`: [ft, *args, *kwvalues].
                let nkw = if kwnames.is_null() {
                    0
                } else {
                    // SAFETY: kwnames is a tuple.
                    unsafe { ffi::PyTuple_GET_SIZE(kwnames) }
                };
                let mut all = Vec::with_capacity((1 + nargs + nkw) as usize);
                all.push(ft);
                // SAFETY: `args` holds nargs + nkw valid pointers.
                all.extend_from_slice(unsafe {
                    std::slice::from_raw_parts(args, (nargs + nkw) as usize)
                });
                // SAFETY: valid method name, argument array and keyword names; a new
                // reference or NULL with an exception set.
                let p = unsafe {
                    ffi::PyObject_VectorcallMethod(
                        pyo3::intern!(py, "_decode_slow").as_ptr(),
                        all.as_ptr(),
                        (1 + nargs) as usize,
                        kwnames,
                    )
                };
                Ok(p)
            }
        }
    }));
    into_raw(py, coder, r)
}

pub(crate) static FIELD_ENCODE: MethodDef =
    MethodDef(std::cell::UnsafeCell::new(ffi::PyMethodDef {
        ml_name: c"encode".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunction: field_encode_raw,
        },
        ml_flags: ffi::METH_O,
        ml_doc: c"encode(value) -> bytes: see FieldType._encode_slow (native coder).".as_ptr(),
    }));

pub(crate) static FIELD_DECODE: MethodDef =
    MethodDef(std::cell::UnsafeCell::new(ffi::PyMethodDef {
        ml_name: c"decode".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: field_decode_raw,
        },
        ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        ml_doc: c"decode(data, *, zero_copy=False): see FieldType._decode_slow (native coder)."
            .as_ptr(),
    }));

#[pymethods]
impl Coder {
    /// Makes `cls.encode` / `cls.decode` (`codec.FieldType`) the native methods, which
    /// find the type's coder in the object slot `slot` (the member descriptor
    /// `cls._ncoder`) and otherwise call `_encode_slow` / `_decode_slow`.
    #[staticmethod]
    pub(crate) fn install(cls: &Bound<'_, PyType>, slot: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = cls.py();
        // SAFETY: the member descriptor's fields are read only after its exact type is
        // checked; PyDescr_NewMethod gets a static definition and a live type.
        unsafe {
            let d = slot.as_ptr();
            if ffi::Py_TYPE(d) != std::ptr::addr_of_mut!(ffi::PyMemberDescr_Type) {
                return Err(PyTypeError::new_err("slot must be a member descriptor"));
            }
            let d = d.cast::<ffi::PyMemberDescrObject>();
            let m = (*d).d_member;
            if (*d).d_common.d_type != cls.as_ptr().cast::<ffi::PyTypeObject>()
                || m.is_null()
                || (*m).type_code != ffi::Py_T_OBJECT_EX
                || (*m).offset <= 0
            {
                return Err(PyValueError::new_err("slot must be an object slot of cls"));
            }
            let off = (*m).offset;
            let prev = CODER_SLOT.load(Ordering::Relaxed);
            if prev != 0 && prev != off {
                return Err(PyValueError::new_err(
                    "Coder.install: another class is installed",
                ));
            }
            CODER_TYPE.store(
                <Coder as pyo3::PyTypeInfo>::type_object_raw(py),
                Ordering::Relaxed,
            );
            CODER_SLOT.store(off, Ordering::Relaxed);
            let ty = cls.as_ptr().cast::<ffi::PyTypeObject>();
            FIELD_CLASS.store(ty, Ordering::Relaxed);
            for (name, def) in [("encode", &FIELD_ENCODE), ("decode", &FIELD_DECODE)] {
                let descr =
                    Bound::from_owned_ptr_or_err(py, ffi::PyDescr_NewMethod(ty, def.get()))?;
                cls.setattr(name, descr)?;
            }
        }
        Ok(())
    }
}
