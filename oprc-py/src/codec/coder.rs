//! `Coder`: the native `encode` / `decode` of one compiled field type.

use super::*;

/// The native `encode` and `decode` of one compiled field type: `codec.FieldType` stores
/// these bound methods as its own `encode` / `decode`, so a call is one call into the
/// extension with no Python frame. The exact-type check, the plan and the error wrapping
/// are those of `FieldType._encode_slow` / `_decode_slow`, which this hands the call to
/// while its codec is not the active backend.
#[pyclass(frozen, module = "oaas_sdk._native", name = "Coder")]
pub struct Coder {
    pub(crate) codec: Py<Codec>,
    /// A weak reference to the `FieldType` (it holds this coder's bound methods).
    pub(crate) owner: Py<PyAny>,
    /// Exact types encoded as under `Any` (`FieldType._pexact`).
    pub(crate) exact: Vec<Py<PyType>>,
    pub(crate) any: bool,
    pub(crate) plan: Py<Plan>,
    pub(crate) decode_plan: Py<DecodePlan>,
    /// `codec.ZERO_COPY_MIN`: the view threshold of `decode(..., zero_copy=True)`.
    pub(crate) view_min: usize,
    /// Exact scalar types (`T_*` bits) encoded as under `Any` (the plan or `exact` keeps
    /// them unchanged): written without the plan.
    pub(crate) enc_fast: u8,
    /// Exact scalar types the decode plan keeps as decoded.
    pub(crate) dec_fast: u8,
}

impl Coder {
    pub(crate) fn owner<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let ft = self.owner.bind(py).call0()?;
        if ft.is_none() {
            return Err(PyValueError::new_err(
                "the field type of this coder is gone",
            ));
        }
        Ok(ft)
    }

    /// The exception the field type raises for `e` (`FieldType._encode_failed` /
    /// `_decode_failed`), so both backends raise the same errors.
    pub(crate) fn failed(&self, py: Python<'_>, wrap: &Bound<'_, PyString>, e: PyErr) -> PyErr {
        let Ok(ft) = self.owner(py) else {
            return e;
        };
        match ft.call_method1(wrap, (e.value(py),)) {
            Ok(err) => PyErr::from_value(err),
            Err(other) => other,
        }
    }
}

/// Exact scalar types a [`Coder`] encodes or decodes without its plan (bit masks).
pub(crate) const T_STR: u8 = 1;
pub(crate) const T_INT: u8 = 2;
pub(crate) const T_FLOAT: u8 = 4;
pub(crate) const T_BOOL: u8 = 8;
pub(crate) const T_NONE: u8 = 16;
pub(crate) const T_BYTES: u8 = 32;

/// The scalar bit of an exact type, 0 for any other type.
#[inline(always)]
pub(crate) fn scalar_bit(t: *mut ffi::PyTypeObject) -> u8 {
    // SAFETY: reading the addresses of the interpreter's static type objects and of None.
    unsafe {
        if t == std::ptr::addr_of_mut!(ffi::PyUnicode_Type) {
            T_STR
        } else if t == std::ptr::addr_of_mut!(ffi::PyLong_Type) {
            T_INT
        } else if t == std::ptr::addr_of_mut!(ffi::PyFloat_Type) {
            T_FLOAT
        } else if t == std::ptr::addr_of_mut!(ffi::PyBool_Type) {
            T_BOOL
        } else if t == ffi::Py_TYPE(ffi::Py_None()) {
            T_NONE
        } else if t == std::ptr::addr_of_mut!(ffi::PyBytes_Type) {
            T_BYTES
        } else {
            0
        }
    }
}

/// The scalar types in `types`.
#[inline]
pub(crate) fn scalar_bits(types: &[Py<PyType>]) -> u8 {
    types.iter().fold(0, |m, t| {
        m | scalar_bit(t.as_ptr().cast::<ffi::PyTypeObject>())
    })
}

impl Coder {
    /// The whole encoding of an exact str, int (64-bit), float, bool or None that this
    /// coder writes as under `Any`, built straight into its `bytes` object. `None` (no
    /// exception set) for any other value, left to the general path, which also raises
    /// the errors (lone surrogates).
    ///
    /// # Safety
    /// `v` must be a valid reference; the GIL must be held.
    #[inline(always)]
    pub(crate) unsafe fn encode_scalar(&self, v: *mut ffi::PyObject) -> Option<*mut ffi::PyObject> {
        // SAFETY: `v` is valid (caller); each branch reads a value of exactly the type
        // just checked; the GIL is held for the allocations. A new bytes object of
        // `1 + len` bytes (or 9 for a float) is filled completely (header byte, then the
        // str's bytes or the float's 8) before anyone else sees it.
        unsafe {
            let bit = scalar_bit(ffi::Py_TYPE(v)) & self.enc_fast;
            let mut h = mp::Small::default();
            match bit {
                0 => return None,
                T_STR => {
                    let Some(s) = py_fast::str_utf8(v) else {
                        ffi::PyErr_Clear();
                        return None;
                    };
                    if s.len() <= 31 {
                        // fixstr: one header byte (as write_str_header writes it).
                        let o = ffi::PyBytes_FromStringAndSize(
                            std::ptr::null(),
                            1 + s.len() as ffi::Py_ssize_t,
                        );
                        if !o.is_null() {
                            let dst = ffi::PyBytes_AS_STRING(o).cast::<u8>().cast_mut();
                            *dst = 0xa0 | s.len() as u8;
                            py_fast::copy_short(s.as_ptr(), dst.add(1), s.len());
                        }
                        return Some(o);
                    }
                    mp::write_str_header(&mut h, s.len()).ok()?;
                    let n = h.len;
                    return Some(py_fast::new_bytes_with(n + s.len(), |dst| {
                        dst[..n].copy_from_slice(h.as_slice());
                        let rest = &mut dst[n..];
                        // SAFETY: `rest` and `s` have the same length and do not overlap
                        // (a new bytes object and the str's storage).
                        py_fast::copy_short(s.as_ptr(), rest.as_mut_ptr(), s.len());
                    }));
                }
                T_INT => {
                    let n = py_fast::int_i64(v)?;
                    if (0..0x80).contains(&n) {
                        // positive fixint: CPython's cached one-byte bytes object.
                        return Some(ffi::PyBytes_FromStringAndSize([n as u8].as_ptr().cast(), 1));
                    }
                    mp::write_i64(&mut h, n)
                }
                T_BYTES => {
                    // bin header and the bytes, as `Codec::enc` writes them.
                    let b = py_fast::bytes_of(v);
                    mp::write_bin_header(&mut h, b.len()).ok()?;
                    let n = h.len;
                    return Some(py_fast::new_bytes_with(n + b.len(), |dst| {
                        dst[..n].copy_from_slice(h.as_slice());
                        dst[n..].copy_from_slice(b);
                    }));
                }
                T_FLOAT => {
                    // float 64 (as `mp::write_f64`), written straight into the new bytes.
                    let o = ffi::PyBytes_FromStringAndSize(std::ptr::null(), 9);
                    if !o.is_null() {
                        let dst = ffi::PyBytes_AS_STRING(o).cast::<u8>().cast_mut();
                        *dst = 0xcb;
                        let bits = ffi::PyFloat_AS_DOUBLE(v).to_bits().to_be_bytes();
                        std::ptr::copy_nonoverlapping(bits.as_ptr(), dst.add(1), 8);
                    }
                    return Some(o);
                }
                T_BOOL => mp::write_bool(&mut h, v == ffi::Py_True()),
                _ => mp::write_nil(&mut h),
            }
            Some(ffi::PyBytes_FromStringAndSize(
                h.buf.as_ptr().cast(),
                h.len as ffi::Py_ssize_t,
            ))
        }
    }

    /// The value of `data` when it is exact `bytes` holding one scalar this coder keeps
    /// as decoded, for a call without `zero_copy=True` (a bin value is copied). `None` (no exception set) otherwise: the general path decodes it and
    /// raises the errors (invalid UTF-8).
    ///
    /// # Safety
    /// `data` must be a valid reference; the GIL must be held.
    #[inline(always)]
    pub(crate) unsafe fn decode_scalar(
        &self,
        data: *mut ffi::PyObject,
    ) -> Option<*mut ffi::PyObject> {
        if self.dec_fast == 0 {
            return None;
        }
        // SAFETY: `data` is valid (caller) and, once checked, exactly bytes; the
        // constructors return a new reference or NULL with an exception set.
        unsafe {
            if ffi::Py_TYPE(data) != std::ptr::addr_of_mut!(ffi::PyBytes_Type) {
                return None;
            }
            let b = py_fast::bytes_of(data);
            let tok = match (b.first().copied()?, b.len()) {
                (x @ (0x00..=0x7f | 0xe0..=0xff), 1) => Token::Int(i64::from(x as i8)),
                (x @ 0xa0..=0xbf, n) if n == 1 + usize::from(x & 0x1f) => Token::Str(&b[1..]),
                (0xcb, 9) => Token::Float(f64::from_bits(u64::from_be_bytes(load(b, 1)))),
                _ => {
                    let mut r = Reader::new(b);
                    let tok = r.read().ok()?;
                    if !r.is_done() {
                        return None;
                    }
                    tok
                }
            };
            let ok = |bit: u8| self.dec_fast & bit != 0;
            Some(match tok {
                Token::Nil if ok(T_NONE) => ffi::Py_NewRef(ffi::Py_None()),
                Token::Bool(b) if ok(T_BOOL) => ffi::PyBool_FromLong(b.into()),
                Token::Uint(u) if ok(T_INT) => ffi::PyLong_FromUnsignedLongLong(u),
                Token::Int(i) if ok(T_INT) => ffi::PyLong_FromLongLong(i),
                Token::Float(f) if ok(T_FLOAT) => ffi::PyFloat_FromDouble(f),
                Token::Bin(b) if ok(T_BYTES) => {
                    ffi::PyBytes_FromStringAndSize(b.as_ptr().cast(), b.len() as ffi::Py_ssize_t)
                }
                Token::Str(s) if ok(T_STR) => {
                    let o = py_fast::new_str(s);
                    if o.is_null() {
                        ffi::PyErr_Clear();
                        return None;
                    }
                    o
                }
                _ => return None,
            })
        }
    }

    /// `FieldType.encode` on the native backend, once the codec is known to be active
    /// and the value is not one [`Self::encode_scalar`] writes: errors as the Python one.
    #[inline]
    pub(crate) fn encode<'py>(
        &self,
        py: Python<'py>,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let codec = self.codec.get();
        let r = guarded(codec, py, || {
            let mut out = Out::new();
            if self.any || has_type(&self.exact, value.get_type_ptr()) {
                codec.enc(value, &mut out, 0, true)?;
            } else {
                codec.enc_plan(value, &self.plan.get().root, &mut out, 0)?;
            }
            out.into_pybytes(py)
        });
        r.map(Bound::into_any)
            .map_err(|e| self.failed(py, pyo3::intern!(py, "_encode_failed"), e))
    }

    /// `FieldType.decode` on the native backend, once the codec is known to be active
    /// and the input is not one [`Self::decode_scalar`] reads: errors as the Python one.
    #[inline]
    pub(crate) fn decode<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        zero_copy: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let codec = self.codec.get();
        let view_min = if zero_copy { self.view_min } else { 0 };
        let plan = self.decode_plan.get();
        let factory = if self.any || plan.needs_factory {
            codec
                .ref_factory
                .lock()
                .ok()
                .and_then(|f| f.as_ref().map(|f| f.bind(py).clone()))
        } else {
            None
        };
        let r = guarded(codec, py, || {
            if self.any {
                codec.decode_inner(py, data, factory, view_min, None)
            } else {
                let any = factory.unwrap_or_else(|| py.None().into_bound(py));
                codec.decode_inner(py, data, None, view_min, Some((&plan.root, &any)))
            }
        });
        r.map_err(|e| self.failed(py, pyo3::intern!(py, "_decode_failed"), e))
    }

    /// The error for a panic that escaped everything else (a bug): a `SerializationError`.
    pub(crate) fn panicked(&self, py: Python<'_>) -> PyErr {
        self.codec
            .get()
            .ser_err(py, "internal error in the native codec")
    }
}
