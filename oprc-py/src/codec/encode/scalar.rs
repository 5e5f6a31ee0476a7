//! Encoding of leaf values that need more than one header: str, int (bigint ext 1),
//! bytes-like values (bin, copied once from the buffer).

use crate::codec::*;

impl Codec {
    #[inline]
    pub(crate) fn enc_str(&self, v: &Bound<'_, PyAny>, out: &mut Out<'_>) -> PyResult<()> {
        let py = v.py();
        let mut size: ffi::Py_ssize_t = 0;
        // SAFETY: `v` is exactly a str. PyUnicode_AsUTF8AndSize returns a pointer to its
        // cached UTF-8 form (valid while `v` lives, which outlasts this copy) or NULL with
        // an exception set (lone surrogates).
        let p = unsafe { ffi::PyUnicode_AsUTF8AndSize(v.as_ptr(), &mut size) };
        if p.is_null() {
            let e = PyErr::fetch(py);
            return Err(self.ser_err(py, format!("cannot encode str: {e}")));
        }
        // SAFETY: see above; `size` bytes are readable at `p`.
        let s = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), size as usize) };
        mp::write_str(&mut out.buf, s).map_err(|e| self.derr(py, e))
    }

    #[inline]
    pub(crate) fn enc_int(&self, v: &Bound<'_, PyAny>, out: &mut Out<'_>) -> PyResult<()> {
        let mut overflow: c_int = 0;
        // SAFETY: `v` is exactly an int; with an overflow flag the call cannot fail.
        let n = unsafe { ffi::PyLong_AsLongLongAndOverflow(v.as_ptr(), &mut overflow) };
        if overflow == 0 {
            mp::write_i64(&mut out.buf, n);
            return Ok(());
        }
        if overflow > 0 {
            if let Ok(u) = v.extract::<u64>() {
                mp::write_u64(&mut out.buf, u);
                return Ok(());
            }
        }
        let py = v.py();
        let payload = self.bigint_bytes.bind(py).call1((v,))?;
        let payload = payload.cast::<PyBytes>()?;
        self.ext(py, out, ext::EXT_BIGINT, payload.as_bytes())
    }

    #[inline]
    pub(crate) fn enc_buffer<'py>(
        &self,
        v: &Bound<'py, PyAny>,
        out: &mut Out<'py>,
    ) -> PyResult<()> {
        let py = v.py();
        let buf = PyUntypedBuffer::get(v)
            .map_err(|e| self.ser_err(py, format!("cannot read the buffer: {e}")))?;
        if !buf.is_c_contiguous() {
            return Err(self.ser_err(py, "a memoryview must be C-contiguous"));
        }
        let (ptr, len) = (buf.buf_ptr().cast::<u8>().cast_const(), buf.len_bytes());
        mp::write_bin_header(&mut out.buf, len).map_err(|e| self.derr(py, e))?;
        // The export keeps the memory from being resized or freed until `buf` is released.
        out.bytes(ptr, len, Keep::Buf(buf));
        Ok(())
    }
}
