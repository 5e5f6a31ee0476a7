//! Decoding: a MessagePack token to a Python value (`Codec::dec`, the raw fast path and
//! the general one); each kind of node has its file beside this one.

use crate::codec::*;

mod containers;
mod ext;
mod record;
mod scalar;

impl Codec {
    #[inline]
    pub(crate) fn dec<'py>(
        &self,
        py: Python<'py>,
        r: &mut Reader<'_>,
        depth: usize,
        m: &mut DecodeMode<'py, '_>,
    ) -> PyResult<Bound<'py, PyAny>> {
        // SAFETY: dec_raw returns a new reference or NULL with an exception set.
        unsafe { Bound::from_owned_ptr_or_err(py, self.dec_raw(py, r, depth, m)) }
    }

    /// [`Self::dec`] returning a new reference, or NULL with the Python exception set:
    /// the common scalars (fixint, float 64, nil, bool, str up to 255 bytes) are read
    /// straight from the input; anything else (and every malformed item) goes through
    /// [`Reader::read`] and [`Self::dec_token`]. Not a `PyResult`: the per-element loops
    /// then move no error value around.
    #[inline]
    pub(crate) fn dec_raw<'py>(
        &self,
        py: Python<'py>,
        r: &mut Reader<'_>,
        depth: usize,
        m: &mut DecodeMode<'py, '_>,
    ) -> *mut ffi::PyObject {
        if let Some(b) = r.peek() {
            // SAFETY: the GIL is held (`py`); each constructor returns a new reference
            // or NULL with an exception set; None and the bools get a new reference.
            unsafe {
                match b {
                    0x00..=0x7f => {
                        r.take_after(1, 0);
                        return ffi::PyLong_FromLong(std::os::raw::c_long::from(b));
                    }
                    0xe0..=0xff => {
                        r.take_after(1, 0);
                        return ffi::PyLong_FromLong(std::os::raw::c_long::from(b as i8));
                    }
                    0xa0..=0xbf => {
                        if let Some(s) = r.take_after(1, usize::from(b & 0x1f)) {
                            return self.dec_str_raw(py, s);
                        }
                    }
                    0xd9 => {
                        if let Some(&[n]) = r.clone().take_after(1, 1) {
                            if let Some(s) = r.take_after(2, usize::from(n)) {
                                return self.dec_str_raw(py, s);
                            }
                        }
                    }
                    0xcb => {
                        if let Some(s) = r.take_after(1, 8) {
                            let mut a = [0u8; 8];
                            a.copy_from_slice(s);
                            return ffi::PyFloat_FromDouble(f64::from_bits(u64::from_be_bytes(a)));
                        }
                    }
                    0xc0 => {
                        r.take_after(1, 0);
                        return ffi::Py_NewRef(ffi::Py_None());
                    }
                    0xc2 | 0xc3 => {
                        r.take_after(1, 0);
                        return ffi::PyBool_FromLong(std::os::raw::c_long::from(b == 0xc3));
                    }
                    _ => {}
                }
            }
        }
        self.dec_slow(py, r, depth, m)
    }

    /// [`Self::dec_raw`] for everything but the common scalars.
    #[inline(never)]
    pub(crate) fn dec_slow<'py>(
        &self,
        py: Python<'py>,
        r: &mut Reader<'_>,
        depth: usize,
        m: &mut DecodeMode<'py, '_>,
    ) -> *mut ffi::PyObject {
        let v = r
            .read()
            .map_err(|e| self.derr(py, e))
            .and_then(|tok| self.dec_token(py, tok, r, depth, m));
        match v {
            Ok(v) => v.into_ptr(),
            Err(e) => {
                e.restore(py);
                std::ptr::null_mut()
            }
        }
    }

    #[inline]
    pub(crate) fn check_depth(
        &self,
        py: Python<'_>,
        depth: usize,
        m: &mut DecodeMode<'_, '_>,
    ) -> PyResult<()> {
        if depth >= MAX_DEPTH {
            return Err(self.too_deep(py));
        }
        m.ticks += 1;
        if m.ticks >= 1024 {
            m.ticks = 0;
            py.check_signals()?;
        }
        Ok(())
    }

    pub(crate) fn dec_token<'py>(
        &self,
        py: Python<'py>,
        tok: Token<'_>,
        r: &mut Reader<'_>,
        depth: usize,
        m: &mut DecodeMode<'py, '_>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Ok(match tok {
            Token::Nil => py.None().into_bound(py),
            Token::Bool(b) => pyo3::types::PyBool::new(py, b).to_owned().into_any(),
            // SAFETY: the GIL is held; the constructor returns a new reference or NULL with
            // an exception set, which from_owned_ptr_or_err turns into Err.
            Token::Uint(u) => unsafe {
                Bound::from_owned_ptr_or_err(py, ffi::PyLong_FromUnsignedLongLong(u))?
            },
            // SAFETY: as for Uint.
            Token::Int(i) => unsafe {
                Bound::from_owned_ptr_or_err(py, ffi::PyLong_FromLongLong(i))?
            },
            // SAFETY: as for Uint.
            Token::Float(f) => unsafe {
                Bound::from_owned_ptr_or_err(py, ffi::PyFloat_FromDouble(f))?
            },
            Token::Str(s) => self.dec_str(py, s)?,
            Token::Bin(b) => self.dec_bin(py, b, m)?,
            Token::Array(n) => {
                self.check_depth(py, depth, m)?;
                self.dec_list(py, r, n, depth, m)?
            }
            Token::Map(n) => {
                self.check_depth(py, depth, m)?;
                // SAFETY: the GIL is held; a new dict or NULL with an exception set.
                let d = unsafe { Bound::from_owned_ptr_or_err(py, py_fast::new_dict(n))? };
                for _ in 0..n {
                    // SAFETY: dec_key_raw / dec_raw return a new reference or NULL with an
                    // exception set.
                    let key =
                        unsafe { Bound::from_owned_ptr_or_err(py, self.dec_key_raw(py, r, m))? };
                    // SAFETY: as for the key.
                    let val = unsafe {
                        Bound::from_owned_ptr_or_err(py, self.dec_raw(py, r, depth + 1, m))?
                    };
                    // SAFETY: `d` is a dict; key and val are valid references (not stolen).
                    if unsafe { ffi::PyDict_SetItem(d.as_ptr(), key.as_ptr(), val.as_ptr()) } != 0 {
                        return Err(PyErr::fetch(py));
                    }
                }
                d.into_any()
            }
            Token::Ext(code, payload) => self.dec_ext(py, code, payload, depth, m)?,
        })
    }
}
