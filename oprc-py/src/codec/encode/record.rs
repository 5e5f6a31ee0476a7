//! Encoding by a compiled plan ([`PlanNode`]): records (pydantic models, dataclasses),
//! enums, typed containers and the type checks the plan carries.

use crate::codec::*;

impl Codec {
    pub(crate) fn enc_plan<'py>(
        &self,
        v: &Bound<'py, PyAny>,
        plan: &PlanNode,
        out: &mut Out<'py>,
        depth: usize,
    ) -> PyResult<()> {
        let py = v.py();
        let t = v.get_type_ptr();
        match plan {
            PlanNode::Any => self.enc(v, out, depth, true),
            PlanNode::Python { prep } => self.via_prep(prep, v, out, depth),
            PlanNode::Exact { types, prep } => {
                if has_type(types, t) {
                    self.enc(v, out, depth, true)
                } else {
                    self.via_prep(prep, v, out, depth)
                }
            }
            PlanNode::List { elem, prep } => {
                if t != std::ptr::addr_of_mut!(ffi::PyList_Type) {
                    return self.via_prep(prep, v, out, depth);
                }
                if depth >= MAX_DEPTH {
                    return Err(self.too_deep(py));
                }
                let list = v.cast::<PyList>()?;
                let n = list.len();
                mp::write_array_header(&mut out.buf, n).map_err(|e| self.derr(py, e))?;
                out.buf.reserve(n.saturating_mul(2).min(1 << 16));
                for i in 0..n {
                    // SAFETY: `list` is exactly a list; `i` is checked against its current
                    // size (a fallback's Python code may shrink it), so the slot holds a
                    // valid borrowed reference.
                    let p = unsafe {
                        let l = list.as_ptr();
                        if i as ffi::Py_ssize_t >= ffi::PyList_GET_SIZE(l) {
                            return Err(self.ser_err(py, "list changed size during encoding"));
                        }
                        ffi::PyList_GET_ITEM(l, i as ffi::Py_ssize_t)
                    };
                    // SAFETY: `p` is a live item of `list`, borrowed for this call only.
                    unsafe { self.enc_item(py, p, elem, out, depth) }?;
                    Self::tick(out, py)?;
                }
                if list.len() != n {
                    return Err(self.ser_err(py, "list changed size during encoding"));
                }
                Ok(())
            }
            PlanNode::Dict { keys, val, prep } => {
                if t != std::ptr::addr_of_mut!(ffi::PyDict_Type) {
                    return self.via_prep(prep, v, out, depth);
                }
                if depth >= MAX_DEPTH {
                    return Err(self.too_deep(py));
                }
                let d = v.cast::<PyDict>()?;
                let n = d.len();
                let mark = out.mark();
                mp::write_map_header(&mut out.buf, n).map_err(|e| self.derr(py, e))?;
                let mut seen = 0;
                let mut pos: ffi::Py_ssize_t = 0;
                let mut k: *mut ffi::PyObject = std::ptr::null_mut();
                let mut x: *mut ffi::PyObject = std::ptr::null_mut();
                // SAFETY: as in `enc_dict`: borrowed references from dict_next, made
                // owned at once; a size change is reported after the step.
                while unsafe { py_fast::dict_next(v.as_ptr(), &mut pos, &mut k, &mut x) } {
                    seen += 1;
                    // SAFETY: k is a valid borrowed reference returned just now.
                    let kt = unsafe { ffi::Py_TYPE(k) };
                    if !has_type(keys, kt) {
                        // A key Python would have to convert: the whole dict goes to _prep.
                        out.reset(mark);
                        return self.via_prep(prep, v, out, depth);
                    }
                    // SAFETY: k is an exact str or int held by the dict, which no code
                    // changes while enc_leaf runs (see enc_leaf).
                    // SAFETY: as above.
                    if !unsafe { Self::enc_leaf(k, out) } {
                        // A big int or a str with lone surrogates (which enc_str refuses).
                        // SAFETY: k is a valid borrowed reference, made owned.
                        let k = unsafe { Bound::from_borrowed_ptr(py, k) };
                        if k.is_exact_instance_of::<PyString>() {
                            self.enc_str(&k, out)?;
                        } else {
                            self.enc_int(&k, out)?;
                        }
                    }
                    // SAFETY: `x` is a live value of `d`, borrowed for this call only.
                    unsafe { self.enc_item(py, x, val, out, depth) }?;
                    // SAFETY: `d` is exactly a dict.
                    if unsafe { py_fast::dict_len(d.as_ptr()) } != n {
                        return Err(self.ser_err(py, "dict changed size during encoding"));
                    }
                    Self::tick(out, py)?;
                }
                if seen != n {
                    return Err(self.ser_err(py, "dict changed size during encoding"));
                }
                Ok(())
            }
            PlanNode::Record {
                cls,
                fields,
                by_dict,
                prep,
            } => {
                if t != cls.as_ptr().cast::<ffi::PyTypeObject>() || depth >= MAX_DEPTH {
                    return self.via_prep(prep, v, out, depth);
                }
                let dict = if *by_dict {
                    // SAFETY: `v` is valid; instance_dict returns a borrowed dict (or
                    // NULL), of which we take our own reference at once.
                    let d = unsafe { py_fast::instance_dict(v.as_ptr()) };
                    let d = if d.is_null() {
                        v.getattr(pyo3::intern!(py, "__dict__")).ok()
                    } else {
                        // SAFETY: as above.
                        Some(unsafe { Bound::from_borrowed_ptr(py, d) })
                    };
                    d.and_then(|d| d.cast_into_exact::<PyDict>().ok())
                } else {
                    None
                };
                let mark = out.mark();
                mp::write_map_header(&mut out.buf, fields.len()).map_err(|e| self.derr(py, e))?;
                // Pydantic keeps __dict__ in field order: the i-th entry is usually field
                // i, which saves the lookup; a key that is not the field's name ends that.
                let mut pos: Option<ffi::Py_ssize_t> = Some(0);
                for (name, enc_name, node) in fields {
                    let name = name.bind(py);
                    let p = match &dict {
                        // SAFETY: `d` is a dict we hold and `name` a str; both lookups give
                        // a borrowed reference (or NULL), used below while `d` holds it.
                        Some(d) => unsafe {
                            let mut p = std::ptr::null_mut();
                            if let Some(at) = pos.as_mut() {
                                let mut k = std::ptr::null_mut();
                                if ffi::PyDict_Next(d.as_ptr(), at, &mut k, &mut p) == 0
                                    || !same_str(k, name.as_ptr())
                                {
                                    p = std::ptr::null_mut();
                                    pos = None;
                                }
                            }
                            if p.is_null() {
                                p = ffi::PyDict_GetItemWithError(d.as_ptr(), name.as_ptr());
                                if p.is_null() {
                                    ffi::PyErr_Clear();
                                }
                            }
                            p
                        },
                        None => std::ptr::null_mut(),
                    };
                    // A field missing from __dict__ reads as Python's getattr does.
                    let x = if p.is_null() {
                        Some(v.getattr(name)?)
                    } else {
                        None
                    };
                    match enc_name {
                        Some(b) => py_fast::put_bytes(&mut out.buf, b),
                        None => self.enc_str(name.as_any(), out)?,
                    }
                    let r = match &x {
                        Some(x) => self.enc_node(x, node, out, depth + 1),
                        // SAFETY: `p` is a value of `dict`, which we hold; enc_item takes
                        // its own reference before any Python code runs.
                        None => unsafe { self.enc_item(py, p, node, out, depth) },
                    };
                    if let Err(e) = r {
                        if e.is_instance(py, self.mismatch.bind(py)) {
                            // Python names the field in the message: let it redo the record.
                            out.reset(mark);
                            return self.via_prep(prep, v, out, depth);
                        }
                        return Err(e);
                    }
                }
                Ok(())
            }
        }
    }
}
