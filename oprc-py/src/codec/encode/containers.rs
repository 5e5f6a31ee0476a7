//! Encoding of containers: list, dict, tuple (ext 2), set and frozenset (ext 3/4, elements
//! sorted by their bytes).

use crate::codec::*;

impl Codec {
    #[inline]
    pub(crate) fn enc_list<'py>(
        &self,
        v: &Bound<'py, PyAny>,
        out: &mut Out<'py>,
        depth: usize,
    ) -> PyResult<()> {
        let py = v.py();
        if depth >= MAX_DEPTH {
            return Err(self.too_deep(py));
        }
        let list = v.cast::<PyList>()?;
        let n = list.len();
        mp::write_array_header(&mut out.buf, n).map_err(|e| self.derr(py, e))?;
        for i in 0..n {
            // A value's own code (a model property reached through a fallback) could shrink
            // the list while we walk it: get_item checks the index.
            let item = list
                .get_item(i)
                .map_err(|_| self.ser_err(py, "list changed size during encoding"))?;
            self.enc(&item, out, depth + 1, true)?;
            Self::tick(out, py)?;
        }
        if list.len() != n {
            return Err(self.ser_err(py, "list changed size during encoding"));
        }
        Ok(())
    }

    pub(crate) fn enc_dict<'py>(
        &self,
        v: &Bound<'py, PyAny>,
        out: &mut Out<'py>,
        depth: usize,
        fallback: bool,
    ) -> PyResult<()> {
        let py = v.py();
        if depth >= MAX_DEPTH {
            return Err(self.too_deep(py));
        }
        let n = v.len()?;
        let mark = out.mark();
        mp::write_map_header(&mut out.buf, n).map_err(|e| self.derr(py, e))?;
        let mut pos: ffi::Py_ssize_t = 0;
        let mut k: *mut ffi::PyObject = std::ptr::null_mut();
        let mut x: *mut ffi::PyObject = std::ptr::null_mut();
        let mut seen = 0usize;
        // SAFETY: `v` is exactly a dict. dict_next (as PyDict_Next) yields borrowed references, which we
        // turn into owned ones at once, so they stay valid even if Python code run below
        // (a fallback) changes the dict; dict_next bounds-checks `pos` against the
        // current table, and a size change is reported as an error after the step.
        while unsafe { py_fast::dict_next(v.as_ptr(), &mut pos, &mut k, &mut x) } {
            // SAFETY: k and x are valid borrowed references returned just now.
            let (key, val) = unsafe {
                (
                    Bound::from_borrowed_ptr(py, k),
                    Bound::from_borrowed_ptr(py, x),
                )
            };
            seen += 1;
            if key.is_exact_instance_of::<PyString>() {
                self.enc_str(&key, out)?;
            } else if key.get_type_ptr() == std::ptr::addr_of_mut!(ffi::PyLong_Type) {
                self.enc_int(&key, out)?;
            } else if fallback {
                // Keys that need converting (enums, str/int subclasses) or refusing:
                // Python prepares the whole dict and checks that keys stay distinct.
                out.reset(mark);
                let prepared = self.prep_any.bind(py).call1((v, depth))?;
                return self.enc(&prepared, out, depth, false);
            } else {
                return Err(self.ser_err(py, "dict keys must be str or int"));
            }
            self.enc(&val, out, depth + 1, true)?;
            if v.len()? != n {
                return Err(self.ser_err(py, "dict changed size during encoding"));
            }
            Self::tick(out, py)?;
        }
        if seen != n {
            return Err(self.ser_err(py, "dict changed size during encoding"));
        }
        Ok(())
    }

    /// Writes an ext header then a payload produced by `body`, which may contain borrowed
    /// pieces: a maximal header is reserved and shrunk once the payload length is known.
    #[inline]
    pub(crate) fn enc_ext_with<'py>(
        &self,
        py: Python<'py>,
        out: &mut Out<'py>,
        code: i8,
        body: impl FnOnce(&mut Out<'py>) -> PyResult<()>,
    ) -> PyResult<()> {
        const RESERVED: usize = 6;
        let start = out.buf.len();
        out.buf.extend_from_slice(&[0; RESERVED]);
        let m = out.mark();
        body(out)?;
        let len = out.len_since(m);
        let mut hdr = Vec::with_capacity(RESERVED);
        mp::write_ext_header(&mut hdr, len, code).map_err(|e| self.derr(py, e))?;
        let shift = RESERVED - hdr.len();
        out.buf.copy_within(start + RESERVED.., start + hdr.len());
        out.buf.truncate(out.buf.len() - shift);
        out.buf[start..start + hdr.len()].copy_from_slice(&hdr);
        for p in &mut out.pieces[m.pieces..] {
            p.at -= shift;
        }
        Ok(())
    }

    #[inline]
    pub(crate) fn enc_tuple<'py>(
        &self,
        v: &Bound<'py, PyAny>,
        out: &mut Out<'py>,
        depth: usize,
    ) -> PyResult<()> {
        let py = v.py();
        if depth >= MAX_DEPTH {
            return Err(self.too_deep(py));
        }
        let tup = v.cast::<PyTuple>()?;
        self.enc_ext_with(py, out, ext::EXT_TUPLE, |out| {
            mp::write_array_header(&mut out.buf, tup.len()).map_err(|e| self.derr(py, e))?;
            for item in tup.iter() {
                self.enc(&item, out, depth + 1, true)?;
            }
            Ok(())
        })
    }

    #[inline]
    pub(crate) fn enc_set<'py>(
        &self,
        v: &Bound<'py, PyAny>,
        out: &mut Out<'py>,
        depth: usize,
        code: i8,
    ) -> PyResult<()> {
        let py = v.py();
        if depth >= MAX_DEPTH {
            return Err(self.too_deep(py));
        }
        // Elements sorted by their encodings (docs/format.md, ext 3): each is encoded alone.
        let mut parts: Vec<Vec<u8>> = Vec::new();
        for item in v.try_iter()? {
            let item = item?;
            let mut sub = Out::new();
            self.enc(&item, &mut sub, depth + 1, true)?;
            parts.push(sub.flatten());
        }
        parts.sort_unstable();
        let mut payload = Vec::with_capacity(parts.iter().map(Vec::len).sum::<usize>() + 5);
        mp::write_array_header(&mut payload, parts.len()).map_err(|e| self.derr(py, e))?;
        for p in &parts {
            payload.extend_from_slice(p);
        }
        self.ext(py, out, code, &payload)
    }
}
