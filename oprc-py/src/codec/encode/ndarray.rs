//! Encoding of numpy arrays (ext 11): header and data straight from the buffer.

use crate::codec::*;

impl Codec {
    /// Ext 11 straight from the array's buffer; `Ok(false)` when the array does not export
    /// a C-contiguous buffer (Python's path then copies it in C order).
    pub(crate) fn enc_ndarray<'py>(
        &self,
        v: &Bound<'py, PyAny>,
        out: &mut Out<'py>,
    ) -> PyResult<bool> {
        let py = v.py();
        let dtype = v.getattr("dtype")?;
        let dstr = self.dtype_bytes(&dtype)?;
        let Ok(buf) = PyUntypedBuffer::get(v) else {
            return Ok(false); // datetime64 / timedelta64 arrays export no buffer
        };
        if !buf.is_c_contiguous() {
            return Ok(false);
        }
        let shape: Vec<u64> = v.getattr("shape")?.extract()?;
        let dstr = dstr.bind(py).as_bytes();
        let len = buf.len_bytes();
        let payload_len = ext::ndarray_header_len(dstr, shape.len()) + len;
        mp::write_ext_header(&mut out.buf, payload_len, ext::EXT_NDARRAY)
            .map_err(|e| self.derr(py, e))?;
        ext::put_ndarray_header(&mut out.buf, dstr, &shape).map_err(|e| self.derr(py, e))?;
        let ptr = buf.buf_ptr().cast::<u8>().cast_const();
        out.bytes(ptr, len, Keep::Buf(buf));
        Ok(true)
    }

    /// The checked `dtype.str` of a dtype (Python's `_ndarray_dtype_str`), cached by dtype.
    pub(crate) fn dtype_bytes(&self, dtype: &Bound<'_, PyAny>) -> PyResult<Py<PyBytes>> {
        let py = dtype.py();
        if let Ok(cache) = self.dtypes.lock() {
            if let Some((_, s)) = cache.iter().find(|(d, _)| d.as_ptr() == dtype.as_ptr()) {
                return Ok(s.clone_ref(py));
            }
        }
        let s = self
            .dtype_str
            .bind(py)
            .call1((dtype,))?
            .cast_into::<PyBytes>()?
            .unbind();
        if let Ok(mut cache) = self.dtypes.lock() {
            if cache.len() < 64 {
                cache.push((dtype.clone().unbind(), s.clone_ref(py)));
            }
        }
        Ok(s)
    }
}
