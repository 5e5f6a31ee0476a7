//! Encoding: the walk over a Python value (`Codec::enc`, the dispatch on its type) and the
//! per-item fast path of containers; each kind of node has its file beside this one.

use crate::codec::*;

mod containers;
mod ndarray;
mod record;
mod scalar;
mod temporal;

impl Codec {
    pub(crate) fn enc<'py>(
        &self,
        v: &Bound<'py, PyAny>,
        out: &mut Out<'py>,
        depth: usize,
        fallback: bool,
    ) -> PyResult<()> {
        let py = v.py();
        let t = v.get_type_ptr().cast::<ffi::PyObject>();
        // SAFETY: reading the address of the interpreter's static type objects.
        let (t_str, t_int, t_float, t_bool, t_none, t_list, t_dict, t_tuple, t_bytes) = unsafe {
            (
                std::ptr::addr_of_mut!(ffi::PyUnicode_Type).cast::<ffi::PyObject>(),
                std::ptr::addr_of_mut!(ffi::PyLong_Type).cast::<ffi::PyObject>(),
                std::ptr::addr_of_mut!(ffi::PyFloat_Type).cast::<ffi::PyObject>(),
                std::ptr::addr_of_mut!(ffi::PyBool_Type).cast::<ffi::PyObject>(),
                ffi::Py_TYPE(ffi::Py_None()).cast::<ffi::PyObject>(),
                std::ptr::addr_of_mut!(ffi::PyList_Type).cast::<ffi::PyObject>(),
                std::ptr::addr_of_mut!(ffi::PyDict_Type).cast::<ffi::PyObject>(),
                std::ptr::addr_of_mut!(ffi::PyTuple_Type).cast::<ffi::PyObject>(),
                std::ptr::addr_of_mut!(ffi::PyBytes_Type).cast::<ffi::PyObject>(),
            )
        };
        if t == t_str {
            return self.enc_str(v, out);
        }
        if t == t_int {
            return self.enc_int(v, out);
        }
        if t == t_float {
            // SAFETY: `v` is exactly a float, for which PyFloat_AsDouble cannot fail.
            mp::write_f64(&mut out.buf, unsafe { ffi::PyFloat_AsDouble(v.as_ptr()) });
            return Ok(());
        }
        if t == t_bool {
            mp::write_bool(&mut out.buf, v.is_truthy()?);
            return Ok(());
        }
        if t == t_none {
            mp::write_nil(&mut out.buf);
            return Ok(());
        }
        if t == t_list {
            return self.enc_list(v, out, depth);
        }
        if t == t_dict {
            return self.enc_dict(v, out, depth, fallback);
        }
        if t == t_bytes {
            // SAFETY: `v` is exactly bytes; its buffer is immutable and lives as long as
            // the `Keep::Obj` reference we store with the piece.
            let (ptr, len) = unsafe {
                (
                    ffi::PyBytes_AsString(v.as_ptr()).cast::<u8>().cast_const(),
                    ffi::PyBytes_Size(v.as_ptr()) as usize,
                )
            };
            mp::write_bin_header(&mut out.buf, len).map_err(|e| self.derr(py, e))?;
            out.bytes(ptr, len, Keep::Obj(v.clone()));
            return Ok(());
        }
        if t == t_tuple {
            return self.enc_tuple(v, out, depth);
        }
        let (t_bytearray, t_memoryview, t_set, t_frozenset) = (
            std::ptr::addr_of_mut!(ffi::PyByteArray_Type).cast::<ffi::PyObject>(),
            std::ptr::addr_of_mut!(ffi::PyMemoryView_Type).cast::<ffi::PyObject>(),
            std::ptr::addr_of_mut!(ffi::PySet_Type).cast::<ffi::PyObject>(),
            std::ptr::addr_of_mut!(ffi::PyFrozenSet_Type).cast::<ffi::PyObject>(),
        );
        if t == t_bytearray || t == t_memoryview {
            return self.enc_buffer(v, out);
        }
        if t == t_set {
            return self.enc_set(v, out, depth, ext::EXT_SET);
        }
        if t == t_frozenset {
            return self.enc_set(v, out, depth, ext::EXT_FROZENSET);
        }
        if t == ptr_of(&self.t_datetime) {
            return self.enc_datetime(v, out);
        }
        if t == ptr_of(&self.t_date) {
            let c = Clock {
                year: v.getattr("year")?.extract()?,
                month: v.getattr("month")?.extract()?,
                day: v.getattr("day")?.extract()?,
                ..Clock::default()
            };
            let mut p = Vec::with_capacity(4);
            ext::put_date(&mut p, &c);
            return self.ext(py, out, ext::EXT_DATE, &p);
        }
        if t == ptr_of(&self.t_time) {
            return self.enc_time(v, out);
        }
        if t == ptr_of(&self.t_timedelta) {
            let d = Delta {
                days: v.getattr("days")?.extract()?,
                seconds: v.getattr("seconds")?.extract()?,
                microseconds: v.getattr("microseconds")?.extract()?,
            };
            let mut p = Vec::with_capacity(12);
            ext::put_timedelta(&mut p, &d);
            return self.ext(py, out, ext::EXT_TIMEDELTA, &p);
        }
        if t == ptr_of(&self.t_uuid) {
            let n: u128 = v.getattr("int")?.extract()?;
            return self.ext(py, out, ext::EXT_UUID, &n.to_be_bytes());
        }
        if t == ptr_of(&self.t_decimal) {
            let s = self.decimal_str.bind(py).call1((v,))?;
            let s = s.cast::<PyString>()?.to_str()?;
            return self.ext(py, out, ext::EXT_DECIMAL, s.as_bytes());
        }
        if t == ptr_of(&self.t_ext) {
            let code: i8 = v.get_item(0)?.extract()?;
            let data = v.get_item(1)?;
            let data = data.cast::<PyBytes>()?;
            let b = data.as_bytes();
            mp::write_ext_header(&mut out.buf, b.len(), code).map_err(|e| self.derr(py, e))?;
            out.bytes(b.as_ptr(), b.len(), Keep::Obj(data.clone().into_any()));
            return Ok(());
        }
        if let Some(nd) = self.ndarray_type(py) {
            if t == nd {
                if self.enc_ndarray(v, out)? {
                    return Ok(());
                }
                // No C-contiguous buffer (0-d, datetime64, strided): Python copies it.
                let prepared = self.prep_any.bind(py).call1((v, depth))?;
                return self.enc(&prepared, out, depth, false);
            }
        }
        if !fallback {
            return Err(PyTypeError::new_err(format!(
                "cannot store a value of type {:?}",
                v.get_type().name()?.to_string()
            )));
        }
        // Enums, models, dataclasses, references, subclasses of the base types and
        // unsupported values: Python prepares them (docs/format.md, "Core types").
        let prepared = self.prep_any.bind(py).call1((v, depth))?;
        self.enc(&prepared, out, depth, false)
    }

    #[inline]
    pub(crate) fn ext(
        &self,
        py: Python<'_>,
        out: &mut Out<'_>,
        code: i8,
        payload: &[u8],
    ) -> PyResult<()> {
        mp::write_ext_header(&mut out.buf, payload.len(), code).map_err(|e| self.derr(py, e))?;
        out.buf.extend_from_slice(payload);
        Ok(())
    }

    #[inline]
    pub(crate) fn tick(out: &mut Out<'_>, py: Python<'_>) -> PyResult<()> {
        out.ticks += 1;
        if out.ticks >= SIGNAL_EVERY {
            out.ticks = 0;
            py.check_signals()?;
        }
        Ok(())
    }

    /// Python's `_prep` for a node, then the result encoded as prepared (no further plan).
    #[inline]
    pub(crate) fn via_prep<'py>(
        &self,
        prep: &Py<PyAny>,
        v: &Bound<'py, PyAny>,
        out: &mut Out<'py>,
        depth: usize,
    ) -> PyResult<()> {
        let prepared = prep.bind(v.py()).call1((v, depth))?;
        self.enc(&prepared, out, depth, false)
    }

    /// Writes an exact str, float, bool, None or 64-bit int without touching its reference
    /// count; `false` (nothing written, no exception set) for any other value and for a
    /// str the general path must refuse (lone surrogates): the hot case of container
    /// elements. Returns a `bool`, not a `PyResult`: the hot loops then move no error
    /// value around.
    ///
    /// # Safety
    /// `p` must be a valid reference that stays alive during the call. The call runs no
    /// Python code and allocates no Python object.
    #[inline(always)]
    pub(crate) unsafe fn enc_leaf(p: *mut ffi::PyObject, out: &mut Out<'_>) -> bool {
        // SAFETY: the caller guarantees `p` is valid; each branch reads a value of exactly
        // the type just checked.
        unsafe {
            let t = ffi::Py_TYPE(p);
            if t == std::ptr::addr_of_mut!(ffi::PyUnicode_Type) {
                let Some(s) = py_fast::str_utf8(p) else {
                    ffi::PyErr_Clear();
                    return false;
                };
                return py_fast::put_str(&mut out.buf, s);
            }
            if t == std::ptr::addr_of_mut!(ffi::PyLong_Type) {
                let Some(n) = py_fast::int_i64(p) else {
                    return false;
                };
                mp::write_i64(&mut out.buf, n);
                return true;
            }
            if t == std::ptr::addr_of_mut!(ffi::PyFloat_Type) {
                let mut b = [0xcb; 9];
                b[1..].copy_from_slice(&ffi::PyFloat_AS_DOUBLE(p).to_bits().to_be_bytes());
                out.buf.extend_from_slice(&b);
                return true;
            }
            if t == std::ptr::addr_of_mut!(ffi::PyBool_Type) {
                mp::write_bool(&mut out.buf, p == ffi::Py_True());
                return true;
            }
            if p == ffi::Py_None() {
                mp::write_nil(&mut out.buf);
                return true;
            }
        }
        false
    }

    /// Encodes one element of a list or dict with its plan node: leaf fast path when the
    /// node takes the element's exact type, else [`Self::enc_node`] on an owned reference.
    ///
    /// # Safety
    /// `p` must be a valid borrowed reference to an item of a container that stays alive
    /// (and unchanged) while the call runs, as [`Self::enc_leaf`] requires.
    #[inline(always)]
    pub(crate) unsafe fn enc_item<'py>(
        &self,
        py: Python<'py>,
        p: *mut ffi::PyObject,
        node: &PlanNode,
        out: &mut Out<'py>,
        depth: usize,
    ) -> PyResult<()> {
        // SAFETY: the caller guarantees `p` is valid; type pointers of live objects are
        // valid; enc_leaf runs no Python code on success, so `p` stays alive meanwhile.
        unsafe {
            let native = match node {
                PlanNode::Any => true,
                PlanNode::Exact { types, .. } => has_type(types, ffi::Py_TYPE(p)),
                _ => false,
            };
            if native && Self::enc_leaf(p, out) {
                return Ok(());
            }
            self.enc_item_slow(py, p, node, out, depth)
        }
    }

    /// [`Self::enc_item`] for values that are not leaves (kept out of the hot loop).
    ///
    /// # Safety
    /// As [`Self::enc_item`].
    #[inline(never)]
    pub(crate) unsafe fn enc_item_slow<'py>(
        &self,
        py: Python<'py>,
        p: *mut ffi::PyObject,
        node: &PlanNode,
        out: &mut Out<'py>,
        depth: usize,
    ) -> PyResult<()> {
        // SAFETY: `p` is valid (caller). The owned reference keeps the item alive while
        // Python code (a fallback) runs.
        let item = unsafe { Bound::from_borrowed_ptr(py, p) };
        self.enc_node(&item, node, out, depth + 1)
    }

    /// `enc_plan` for a container's element, with the common leaf nodes (`Any`, `Exact`
    /// of a matching type) handled here: dispatching through `enc_plan` per element cost
    /// a third of a `list[Any]` encode.
    #[inline]
    pub(crate) fn enc_node<'py>(
        &self,
        v: &Bound<'py, PyAny>,
        plan: &PlanNode,
        out: &mut Out<'py>,
        depth: usize,
    ) -> PyResult<()> {
        match plan {
            PlanNode::Any => self.enc(v, out, depth, true),
            PlanNode::Exact { types, .. } if has_type(types, v.get_type_ptr()) => {
                self.enc(v, out, depth, true)
            }
            _ => self.enc_plan(v, plan, out, depth),
        }
    }

    #[inline]
    pub(crate) fn encode_one<'py>(
        &self,
        py: Python<'py>,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut out = Out::new();
        self.enc(value, &mut out, 0, true)?;
        out.into_pybytes(py)
    }
}
