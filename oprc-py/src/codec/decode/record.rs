//! Decoding by a compiled decode plan ([`DecPlan`]): records rebuilt from their field
//! values, typed containers.

use crate::codec::*;

impl Codec {
    /// Decodes the next value for a plan node (see [`DecPlan`]); `any` is the reference
    /// factory for `Any` subtrees, which are final as decoded.
    pub(crate) fn dec_plan<'py>(
        &self,
        py: Python<'py>,
        r: &mut Reader<'_>,
        depth: usize,
        m: &mut DecodeMode<'py, '_>,
        plan: &DecPlan,
        any: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match plan {
            DecPlan::Any => {
                let saved = m.ref_factory.replace(any.clone());
                let v = self.dec(py, r, depth, m);
                m.ref_factory = saved;
                v
            }
            DecPlan::Python { conv } => {
                let raw = self.dec(py, r, depth, m)?;
                conv.bind(py).call1((raw, depth))
            }
            DecPlan::Exact { types, conv } => {
                let raw = self.dec(py, r, depth, m)?;
                if has_type(types, raw.get_type_ptr()) {
                    Ok(raw)
                } else {
                    conv.bind(py).call1((raw, depth))
                }
            }
            DecPlan::List { elem, conv } => {
                let tok = r.read().map_err(|e| self.derr(py, e))?;
                let Token::Array(n) = tok else {
                    let raw = self.dec_token(py, tok, r, depth, m)?;
                    return conv.bind(py).call1((raw, depth));
                };
                if let DecPlan::Any = **elem {
                    // list[Any]: the whole array is final as decoded.
                    let saved = m.ref_factory.replace(any.clone());
                    let v = self.dec_token(py, tok, r, depth, m);
                    m.ref_factory = saved;
                    return v;
                }
                self.check_depth(py, depth, m)?;
                let len =
                    ffi::Py_ssize_t::try_from(n).map_err(|_| self.ser_err(py, "array too long"))?;
                // SAFETY: as in `dec_list`: a new list of `len` NULL slots, each filled
                // once with a new reference (PyList_SET_ITEM steals it); if we stop early,
                // the list's deallocator skips the NULL slots.
                let list = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyList_New(len))? };
                for i in 0..n {
                    let item = self.dec_plan_raw(py, r, depth + 1, m, elem, any);
                    if item.is_null() {
                        return Err(PyErr::fetch(py));
                    }
                    // SAFETY: i < len; slot i of our new list is still NULL.
                    unsafe { ffi::PyList_SET_ITEM(list.as_ptr(), i as ffi::Py_ssize_t, item) };
                }
                Ok(list)
            }
            DecPlan::Dict {
                keys,
                key_conv,
                val,
                conv,
            } => {
                let tok = r.read().map_err(|e| self.derr(py, e))?;
                let Token::Map(n) = tok else {
                    let raw = self.dec_token(py, tok, r, depth, m)?;
                    return conv.bind(py).call1((raw, depth));
                };
                self.check_depth(py, depth, m)?;
                // SAFETY: the GIL is held; a new dict or NULL with an exception set.
                let d = unsafe { Bound::from_owned_ptr_or_err(py, py_fast::new_dict(n))? }
                    .cast_into::<PyDict>()?;
                for _ in 0..n {
                    // SAFETY: dec_key_raw returns a new reference or NULL with an exception.
                    let key =
                        unsafe { Bound::from_owned_ptr_or_err(py, self.dec_key_raw(py, r, m))? };
                    let key = if has_type(keys, key.get_type_ptr()) {
                        key
                    } else {
                        key_conv.bind(py).call1((key, depth + 1))?
                    };
                    let v = self.dec_plan_raw(py, r, depth + 1, m, val, any);
                    // SAFETY: as above.
                    let v = unsafe { Bound::from_owned_ptr_or_err(py, v)? };
                    // SAFETY: `d` is a dict; key and v are valid references (not stolen).
                    if unsafe { ffi::PyDict_SetItem(d.as_ptr(), key.as_ptr(), v.as_ptr()) } != 0 {
                        return Err(PyErr::fetch(py));
                    }
                }
                Ok(d.into_any())
            }
            DecPlan::Record {
                fields,
                finish,
                model,
                conv,
            } => {
                let start = r.clone();
                match self.dec_record(py, r, depth, m, fields, finish, model.as_ref(), any) {
                    Ok(v) => Ok(v),
                    Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) => {
                        Err(e)
                    }
                    Err(_) => {
                        // Not a plain map of this record (or a field that does not fit):
                        // Python's conv redoes it from the raw value and raises its error.
                        *r = start;
                        let raw = self.dec(py, r, depth, m)?;
                        conv.bind(py).call1((raw, depth))
                    }
                }
            }
        }
    }

    /// The fast path of [`DecPlan::Record`]: a map with distinct str keys whose values fit
    /// their fields; any other input is an error, after which the caller falls back.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dec_record<'py>(
        &self,
        py: Python<'py>,
        r: &mut Reader<'_>,
        depth: usize,
        m: &mut DecodeMode<'py, '_>,
        fields: &[(Box<[u8]>, DecPlan)],
        finish: &Py<PyAny>,
        model: Option<&(Py<PyType>, Py<PyTuple>)>,
        any: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let Token::Map(n) = r.read().map_err(|e| self.derr(py, e))? else {
            return Err(self.ser_err(py, "not a map"));
        };
        self.check_depth(py, depth, m)?;
        // SAFETY: the GIL is held; a new dict or NULL with an exception set.
        let d = unsafe { Bound::from_owned_ptr_or_err(py, py_fast::new_dict(n))? }
            .cast_into::<PyDict>()?;
        for i in 0..n {
            let s = match r.peek() {
                Some(b @ 0xa0..=0xbf) => r.take_after(1, usize::from(b & 0x1f)),
                _ => None,
            };
            let s = match s {
                Some(s) => s,
                None => {
                    let Token::Str(s) = r.read().map_err(|e| self.derr(py, e))? else {
                        return Err(self.ser_err(py, "map key is not str"));
                    };
                    s
                }
            };
            let key = match m.key_cache() {
                // SAFETY: the GIL is held; a new reference or NULL with an exception set.
                Some(c) => unsafe { Bound::from_owned_ptr_or_err(py, c.get_raw(py, s))? },
                None => self.dec_str(py, s)?,
            };
            // Fields usually come in declaration order: look at position i first.
            let node = match fields.get(i) {
                Some((name, node)) if short_eq(name, s) => Some(node),
                _ => fields
                    .iter()
                    .find(|(name, _)| short_eq(name, s))
                    .map(|(_, n)| n),
            };
            let v = self.dec_plan_raw(py, r, depth + 1, m, node.unwrap_or(&DecPlan::Any), any);
            // SAFETY: a new reference or NULL with an exception set.
            let v = unsafe { Bound::from_owned_ptr_or_err(py, v)? };
            // SAFETY: `d` is a dict; key and v are valid references (not stolen).
            if unsafe { ffi::PyDict_SetItem(d.as_ptr(), key.as_ptr(), v.as_ptr()) } != 0 {
                return Err(PyErr::fetch(py));
            }
        }
        if d.len() != n {
            return Err(self.ser_err(py, "duplicate keys"));
        }
        if let Some((cls, by_name)) = model {
            // `model_validate(d, by_name=True)` without its Python frame: the class's
            // current validator (read each time, as model_validate does).
            let validator = cls
                .bind(py)
                .getattr(pyo3::intern!(py, "__pydantic_validator__"))?;
            // SAFETY: [validator, d, True] are valid references and `by_name` the tuple of
            // the one keyword's name: PyObject_VectorcallMethod calls
            // validator.validate_python(d, by_name=True) and returns a new reference or
            // NULL with an exception set.
            return unsafe {
                let args = [validator.as_ptr(), d.as_ptr(), ffi::Py_True()];
                Bound::from_owned_ptr_or_err(
                    py,
                    ffi::PyObject_VectorcallMethod(
                        pyo3::intern!(py, "validate_python").as_ptr(),
                        args.as_ptr(),
                        2,
                        by_name.as_ptr(),
                    ),
                )
            };
        }
        finish.bind(py).call1((d, depth))
    }

    /// [`Self::dec_plan`] returning a new reference or NULL with the exception set, with
    /// `Exact` nodes (the common container element) handled here on raw pointers.
    #[inline(always)]
    pub(crate) fn dec_plan_raw<'py>(
        &self,
        py: Python<'py>,
        r: &mut Reader<'_>,
        depth: usize,
        m: &mut DecodeMode<'py, '_>,
        plan: &DecPlan,
        any: &Bound<'py, PyAny>,
    ) -> *mut ffi::PyObject {
        let v = match plan {
            DecPlan::Exact { types, conv } => {
                let raw = self.dec_raw(py, r, depth, m);
                // SAFETY: `raw` is NULL or a new reference, whose type we read.
                if raw.is_null() || has_type(types, unsafe { ffi::Py_TYPE(raw) }) {
                    return raw;
                }
                // SAFETY: `raw` is a new reference, handed to the Bound.
                let raw = unsafe { Bound::from_owned_ptr(py, raw) };
                conv.bind(py).call1((raw, depth))
            }
            _ => self.dec_plan(py, r, depth, m, plan, any),
        };
        match v {
            Ok(v) => v.into_ptr(),
            Err(e) => {
                e.restore(py);
                std::ptr::null_mut()
            }
        }
    }
}
