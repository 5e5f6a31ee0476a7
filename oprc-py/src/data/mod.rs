//! Native data path: state codec, zero-copy buffers and the concurrent entry cache.
//!
//! `msgpack`, `ext` and `cache` hold no Python and are tested with `cargo test`;
//! `py_codec` and `py_cache` are the pyo3 layer that `oaas_sdk.codec` and
//! `oaas_sdk.runtime` use. The byte format is docs/format.md, "State codec".

use pyo3::prelude::*;

pub mod cache;
pub mod ext;
pub mod msgpack;
mod py_cache;
pub(crate) mod py_codec;
mod py_fast;

/// Components this module provides natively, reported by `build_info()`.
pub const COMPONENTS: &[&str] = &["codec", "cache"];

/// Adds the data-path classes (`Codec`, `EntryCache`) to the extension module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<py_codec::Codec>()?;
    m.add_class::<py_codec::Plan>()?;
    m.add_class::<py_codec::DecodePlan>()?;
    m.add_class::<py_codec::Coder>()?;
    m.add_class::<py_cache::PyEntryCache>()?;
    Ok(())
}
