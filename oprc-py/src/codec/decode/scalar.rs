//! Decoding of leaves: str (with the key cache for short map keys), bin (bytes or
//! zero-copy views), big ints (ext 1).

use crate::codec::*;

impl Codec {
    /// A str value (new reference, or NULL with the error [`Self::dec_str`] raises set).
    #[inline(always)]
    pub(crate) fn dec_str_raw(&self, py: Python<'_>, s: &[u8]) -> *mut ffi::PyObject {
        // SAFETY: the GIL is held (`py`).
        let o = unsafe { py_fast::new_str(s) };
        if o.is_null() {
            let e = PyErr::fetch(py);
            self.ser_err(py, format!("str is not valid UTF-8: {e}"))
                .restore(py);
        }
        o
    }

    #[inline]
    pub(crate) fn dec_str<'py>(&self, py: Python<'py>, s: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        decode_utf8(py, s).map_err(|e| self.ser_err(py, format!("str is not valid UTF-8: {e}")))
    }

    #[inline]
    pub(crate) fn dec_bin<'py>(
        &self,
        py: Python<'py>,
        b: &[u8],
        m: &mut DecodeMode<'py, '_>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if m.view_min > 0 && b.len() >= m.view_min {
            if let Some(v) = self.view_of(py, b, m)? {
                return Ok(v);
            }
        }
        Ok(PyBytes::new(py, b).into_any())
    }

    /// A read-only memoryview slice of the decoded input covering `b` (which lies inside it).
    #[inline]
    pub(crate) fn view_of<'py>(
        &self,
        py: Python<'py>,
        b: &[u8],
        m: &mut DecodeMode<'py, '_>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(src) = m.source.clone() else {
            return Ok(None);
        };
        if m.view_of.is_none() {
            // SAFETY: `src` is a live object supporting the buffer protocol (we decoded
            // from its buffer); PyMemoryView_FromObject returns a new reference or NULL.
            let mv = unsafe {
                Bound::from_owned_ptr_or_err(py, ffi::PyMemoryView_FromObject(src.as_ptr()))?
            };
            m.view_of = Some(
                mv.call_method0("toreadonly")?
                    .call_method1("cast", ("B",))?,
            );
        }
        let Some(mv) = &m.view_of else {
            return Ok(None);
        };
        let base = m.base;
        let start = b.as_ptr() as usize - base;
        let slice = pyo3::types::PySlice::new(py, start as isize, (start + b.len()) as isize, 1);
        Ok(Some(mv.get_item(slice)?))
    }

    #[inline]
    pub(crate) fn dec_bigint<'py>(&self, py: Python<'py>, p: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        ext::check_bigint(p).map_err(|e| self.derr(py, e))?;
        self.int_from_bytes.bind(py).call1((PyBytes::new(py, p),))
    }
}

/// A Python str from UTF-8 bytes, validated once (ASCII copied as is, the rest by
/// CPython's decoder: [`py_fast::new_str`]).
#[inline]
pub(crate) fn decode_utf8<'py>(py: Python<'py>, s: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: the GIL is held (`py`); new_str returns a new reference or NULL with an
    // exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, py_fast::new_str(s)) }
}
