//! The encoder's output: a scratch buffer plus pieces (large byte values copied once from
//! their Python buffers), turned into one `bytes` object at the end.

use super::*;

/// Byte values at least this long are not copied into the encoder's scratch buffer: they
/// are copied once, straight from the Python buffer into the result.
pub(crate) const PIECE_MIN: usize = 2048;
/// Interrupt checks (`PyErr_CheckSignals`) every this many container elements.
pub(crate) const SIGNAL_EVERY: u32 = 1 << 16;
/// Initial capacity of the encoder's scratch buffer, and the largest one kept for reuse.
pub(crate) const SCRATCH_MIN: usize = 256;
pub(crate) const SCRATCH_KEEP: usize = 1 << 16;

thread_local! {
    /// The encoder's scratch buffer, reused across calls on one thread so that encoding a
    /// small value allocates only its result. An encode that starts while another runs
    /// (a fallback's Python code encoding) finds it empty and grows its own.
    pub(crate) static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

pub(crate) struct Piece<'py> {
    pub(crate) at: usize,
    pub(crate) ptr: *const u8,
    pub(crate) len: usize,
    pub(crate) _keep: Keep<'py>,
}

#[allow(dead_code)] // held only to keep the memory alive
pub(crate) enum Keep<'py> {
    Obj(Bound<'py, PyAny>),
    Buf(PyUntypedBuffer),
}

/// Encoder output: a scratch buffer plus large borrowed byte ranges spliced in at offsets.
pub(crate) struct Out<'py> {
    pub(crate) buf: Vec<u8>,
    pub(crate) pieces: Vec<Piece<'py>>,
    pub(crate) borrowed: usize,
    pub(crate) ticks: u32,
}

#[derive(Clone, Copy)]
pub(crate) struct Mark {
    pub(crate) buf: usize,
    pub(crate) pieces: usize,
    pub(crate) borrowed: usize,
}

impl<'py> Out<'py> {
    #[inline]
    pub(crate) fn new() -> Self {
        let mut buf = SCRATCH.try_with(Cell::take).unwrap_or_default();
        buf.clear();
        buf.reserve(SCRATCH_MIN);
        Out {
            buf,
            pieces: Vec::new(),
            borrowed: 0,
            ticks: 0,
        }
    }

    #[inline]
    pub(crate) fn mark(&self) -> Mark {
        Mark {
            buf: self.buf.len(),
            pieces: self.pieces.len(),
            borrowed: self.borrowed,
        }
    }

    #[inline]
    pub(crate) fn len_since(&self, m: Mark) -> usize {
        self.buf.len() - m.buf + self.borrowed - m.borrowed
    }

    #[inline]
    pub(crate) fn reset(&mut self, m: Mark) {
        self.buf.truncate(m.buf);
        self.pieces.truncate(m.pieces);
        self.borrowed = m.borrowed;
    }

    /// Appends `len` bytes at `ptr`, borrowing them when large. The caller guarantees that
    /// `keep` keeps the memory alive and unmoved.
    #[inline]
    pub(crate) fn bytes(&mut self, ptr: *const u8, len: usize, keep: Keep<'py>) {
        if len >= PIECE_MIN {
            self.pieces.push(Piece {
                at: self.buf.len(),
                ptr,
                len,
                _keep: keep,
            });
            self.borrowed += len;
        } else if len > 0 {
            // SAFETY: `ptr` points at `len` readable bytes kept alive by `keep` (a bytes
            // object or an exported buffer), which lives until the end of this call.
            self.buf
                .extend_from_slice(unsafe { std::slice::from_raw_parts(ptr, len) });
        }
    }

    #[inline]
    pub(crate) fn flatten(mut self) -> Vec<u8> {
        if self.pieces.is_empty() {
            return std::mem::take(&mut self.buf);
        }
        let mut v = Vec::with_capacity(self.buf.len() + self.borrowed);
        let mut from = 0;
        for p in &self.pieces {
            v.extend_from_slice(&self.buf[from..p.at]);
            // SAFETY: see `bytes`: the piece's memory is alive while `self` is.
            v.extend_from_slice(unsafe { std::slice::from_raw_parts(p.ptr, p.len) });
            from = p.at;
        }
        v.extend_from_slice(&self.buf[from..]);
        v
    }

    #[inline]
    pub(crate) fn into_pybytes(self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        if self.pieces.is_empty() {
            return Ok(PyBytes::new(py, &self.buf));
        }
        let total = self.buf.len() + self.borrowed;
        let len = ffi::Py_ssize_t::try_from(total)
            .map_err(|_| PyValueError::new_err("result too large"))?;
        // SAFETY: PyBytes_FromStringAndSize(NULL, n) returns a new bytes object with n
        // uninitialised bytes (or NULL with an exception set, which from_owned_ptr_or_err
        // turns into Err). Nothing else can see the object before we return it, and the
        // loop below writes every one of its `total` bytes exactly once: the scratch
        // segments between pieces and each piece, whose memory is kept alive by `self`.
        // Skipping PyBytes::new_with avoids zero-filling a buffer we overwrite entirely.
        unsafe {
            let obj = Bound::from_owned_ptr_or_err(
                py,
                ffi::PyBytes_FromStringAndSize(std::ptr::null(), len),
            )?;
            let dst = ffi::PyBytes_AsString(obj.as_ptr()).cast::<u8>();
            let mut w = 0usize;
            let mut from = 0usize;
            for p in &self.pieces {
                let seg = &self.buf[from..p.at];
                std::ptr::copy_nonoverlapping(seg.as_ptr(), dst.add(w), seg.len());
                w += seg.len();
                std::ptr::copy_nonoverlapping(p.ptr, dst.add(w), p.len);
                w += p.len;
                from = p.at;
            }
            let seg = &self.buf[from..];
            std::ptr::copy_nonoverlapping(seg.as_ptr(), dst.add(w), seg.len());
            debug_assert_eq!(w + seg.len(), total);
            Ok(obj.cast_into_unchecked())
        }
    }
}

impl Drop for Out<'_> {
    fn drop(&mut self) {
        if self.buf.capacity() <= SCRATCH_KEEP {
            let buf = std::mem::take(&mut self.buf);
            let _ = SCRATCH.try_with(|c| c.set(buf));
        }
    }
}
