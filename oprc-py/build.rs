//! Build script: the `Py_*` cfgs of the Python the extension is built for (pyo3's
//! `Py_3_12`, `Py_GIL_DISABLED`, ...), so version-specific code (`data/py_fast.rs`) can be
//! compiled only where its CPython layout holds.

fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
