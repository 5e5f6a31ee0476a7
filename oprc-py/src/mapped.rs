//! Python binding of the memory-mapped files behind `Mapped` fields
//! (`oprc_core::mapped::MappedFile`): `oaas_sdk._native.MappedFile`.

use std::path::PathBuf;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use oprc_core::mapped::{MapError, MappedFile};

pyo3::import_exception!(oaas_sdk.errors, StorageError);

/// A file mapped into memory (memmap2), writable, exposed through the buffer protocol.
///
/// `MappedFile(path, size)` creates the file when missing and sizes it to `size` bytes
/// (an existing file of another size is refused with `ValueError`). `memoryview(m)` and
/// `numpy.frombuffer(m, ...)` are zero-copy views of the mapping; `flush()` writes dirty
/// pages to disk (msync) with the GIL released. Raises `StorageError` when the file cannot
/// be created, sized or mapped.
#[pyclass(name = "MappedFile", module = "oaas_sdk._native")]
pub struct PyMappedFile {
    file: Option<MappedFile>,
    exports: usize,
}

impl PyMappedFile {
    fn get(&self) -> PyResult<&MappedFile> {
        self.file
            .as_ref()
            .ok_or_else(|| PyValueError::new_err("the mapped file is closed"))
    }
}

#[pymethods]
impl PyMappedFile {
    #[new]
    fn new(py: Python<'_>, path: PathBuf, size: usize) -> PyResult<Self> {
        let file = py
            .detach(move || MappedFile::open(&path, size))
            .map_err(|e| match e {
                MapError::SizeMismatch(m) => PyValueError::new_err(m),
                MapError::Io(m) => StorageError::new_err(m),
            })?;
        Ok(PyMappedFile {
            file: Some(file),
            exports: 0,
        })
    }

    /// Size of the mapping in bytes.
    fn __len__(&self) -> PyResult<usize> {
        Ok(self.get()?.len())
    }

    /// Write dirty pages of the mapping to the file and wait for the disk (msync).
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.get()?;
        py.detach(|| f.flush()).map_err(StorageError::new_err)
    }

    /// Unmap. Refused with `BufferError` while views of the mapping exist.
    fn close(&mut self) -> PyResult<()> {
        if self.exports > 0 {
            return Err(pyo3::exceptions::PyBufferError::new_err(
                "cannot close a mapped file while views of it exist",
            ));
        }
        self.file = None;
        Ok(())
    }

    /// Buffer protocol: a writable, contiguous, byte-format view of the whole mapping.
    ///
    /// # Safety
    /// Called by CPython with a valid `view` pointer, per the buffer protocol.
    unsafe fn __getbuffer__(
        mut slf: PyRefMut<'_, Self>,
        view: *mut pyo3::ffi::Py_buffer,
        flags: std::os::raw::c_int,
    ) -> PyResult<()> {
        let (ptr, len) = {
            let f = slf.get()?;
            (f.as_ptr(), f.len())
        };
        let obj = slf.as_ptr();
        // SAFETY: `view` is valid per the buffer protocol; `ptr..ptr+len` is a live,
        // writable mapping owned by this object, which stays mapped while `exports > 0`
        // (close() refuses then, and the buffer holds a reference to this object).
        unsafe {
            let rc = pyo3::ffi::PyBuffer_FillInfo(view, obj, ptr.cast(), len as isize, 0, flags);
            if rc != 0 {
                return Err(PyErr::fetch(slf.py()));
            }
        }
        slf.exports += 1;
        Ok(())
    }

    /// # Safety
    /// Called by CPython when a view obtained from `__getbuffer__` is released.
    unsafe fn __releasebuffer__(mut slf: PyRefMut<'_, Self>, _view: *mut pyo3::ffi::Py_buffer) {
        slf.exports = slf.exports.saturating_sub(1);
    }
}

/// Register `MappedFile` on the extension module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyMappedFile>()
}
