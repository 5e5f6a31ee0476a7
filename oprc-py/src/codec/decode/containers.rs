//! Decoding of arrays and maps (keys through the key cache).

use crate::codec::*;

impl Codec {
    #[inline]
    pub(crate) fn dec_list<'py>(
        &self,
        py: Python<'py>,
        r: &mut Reader<'_>,
        n: usize,
        depth: usize,
        m: &mut DecodeMode<'py, '_>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let len = ffi::Py_ssize_t::try_from(n).map_err(|_| self.ser_err(py, "array too long"))?;
        // SAFETY: PyList_New returns a new list of `len` NULL slots (or NULL with an
        // exception). Every slot below is filled once with an owned reference, which
        // PyList_SetItem steals; if we stop early, the list's deallocator skips NULLs.
        let list = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyList_New(len))? };
        for i in 0..n {
            let item = self.dec_raw(py, r, depth + 1, m);
            if item.is_null() {
                return Err(PyErr::fetch(py));
            }
            // SAFETY: i < len, `list` is a new list nobody else sees whose slot i is
            // still NULL; PyList_SET_ITEM steals the new reference `item`.
            unsafe { ffi::PyList_SET_ITEM(list.as_ptr(), i as ffi::Py_ssize_t, item) };
        }
        Ok(list)
    }

    #[inline]
    pub(crate) fn dec_items<'py>(
        &self,
        py: Python<'py>,
        code: i8,
        payload: &[u8],
        depth: usize,
        m: &mut DecodeMode<'py, '_>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        self.check_depth(py, depth, m)?;
        let mut sub = Reader::new(payload);
        let n = match sub.read().map_err(|e| self.derr(py, e))? {
            Token::Array(n) => n,
            _ => return Err(self.ser_err(py, format!("ext {code} payload is not an array"))),
        };
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.dec(py, &mut sub, depth + 1, m)?);
        }
        if !sub.is_done() {
            return Err(self.ser_err(py, format!("ext {code} payload has bytes after the array")));
        }
        Ok(items)
    }

    /// [`Self::dec_key`] returning a new reference or NULL with the exception set; fixstr
    /// keys go straight to the key cache.
    #[inline(always)]
    pub(crate) fn dec_key_raw<'py>(
        &self,
        py: Python<'py>,
        r: &mut Reader<'_>,
        m: &mut DecodeMode<'py, '_>,
    ) -> *mut ffi::PyObject {
        if let Some(b @ 0xa0..=0xbf) = r.peek() {
            if let Some(s) = r.take_after(1, usize::from(b & 0x1f)) {
                return match m.key_cache() {
                    Some(c) => {
                        let o = c.get_raw(py, s);
                        if o.is_null() {
                            let e = PyErr::fetch(py);
                            self.ser_err(py, format!("map key: {e}")).restore(py);
                        }
                        o
                    }
                    None => self.dec_str_raw(py, s),
                };
            }
        }
        match self.dec_key(py, r, m) {
            Ok(v) => v.into_ptr(),
            Err(e) => {
                e.restore(py);
                std::ptr::null_mut()
            }
        }
    }

    #[inline]
    pub(crate) fn dec_key<'py>(
        &self,
        py: Python<'py>,
        r: &mut Reader<'_>,
        m: &mut DecodeMode<'py, '_>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Ok(match r.read().map_err(|e| self.derr(py, e))? {
            Token::Str(s) => match m.key_cache() {
                Some(c) => c
                    .get(py, s)
                    .map_err(|e| self.ser_err(py, format!("map key: {e}")))?,
                None => self.dec_str(py, s)?,
            },
            Token::Uint(u) => u.into_pyobject(py)?.into_any(),
            Token::Int(i) => i.into_pyobject(py)?.into_any(),
            Token::Ext(ext::EXT_BIGINT, p) => self.dec_bigint(py, p)?,
            _ => return Err(self.ser_err(py, "map key is not str or int")),
        })
    }
}
