//! `oaas_sdk._native`: the pyo3 bindings of oaas-sdk's native core.
//!
//! The Python package `oaas_sdk` decides what is public; users never import this module
//! directly. The logic without Python lives in the `oprc-core` crate (codec format, cache,
//! store layout and LMDB store, batcher, mapped files; tested with `cargo test`); this
//! crate converts between Python objects and it:
//! - `ffi`: CPython fast paths (version-specific C API) used by the codec;
//! - `codec`: `Codec`, `Plan`, `DecodePlan`, `Coder`: Python values <-> codec bytes;
//! - `cache`: `EntryCache` over `oprc_core::cache`;
//! - `engine`: `Engine`, `Ticket`, `FailureLog` over `oprc_core::batcher`, and the
//!   completions of commits (one token map);
//! - `mapped`: `MappedFile` over `oprc_core::mapped`;
//! - `object`: the object's native fast paths (`__setattr__`, the one-call commit, the
//!   commit future).
#![deny(clippy::undocumented_unsafe_blocks, unsafe_op_in_unsafe_fn)]

use pyo3::prelude::*;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Index of `mi_option_purge_delay` in the `mi_option_t` enum of the mimalloc bundled by
/// libmimalloc-sys 0.1.49 (`c_src/mimalloc/v3/include/mimalloc.h`; pinned in Cargo.toml).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long (ms) freed allocator pages stay mapped before they are returned to the OS.
///
/// Commits are allocated on the committing thread and freed on the persister's, so
/// pages empty and refill all the time; with mimalloc's default (1 s, and its arena
/// multiplier) they were purged and faulted back in (each fault zeroing a transparent
/// huge page) on the committing thread (docs/engine.md, "The queue").
/// 10 s keeps a busy process's pages and still returns an idle process's memory.
pub const PURGE_DELAY_MS: i64 = 10_000;

/// Set the allocator's purge delay to [`PURGE_DELAY_MS`] unless the user chose one with
/// the `MIMALLOC_PURGE_DELAY` environment variable (mimalloc's own; it wins).
fn configure_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set writes one word of mimalloc's option table; called once
        // at module load, which CPython runs with the GIL held (no concurrent setter in
        // this extension), and readers only see the old or the new value.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS as _) };
    }
}

/// The allocator's purge delay now in force (ms; -1 = never purge).
#[allow(clippy::useless_conversion)] // c_long is i32 on Windows
pub fn purge_delay_ms() -> i64 {
    // SAFETY: reads one word of mimalloc's option table (initialised at process load).
    i64::from(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) })
}

mod cache;
pub(crate) mod codec;
mod engine;
pub(crate) mod ffi;
mod mapped;
mod memory;
mod object;
mod rpc;

/// The crate version, as in `Cargo.toml`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `"release"` or `"debug"`: the Cargo profile this extension was compiled with.
pub fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// Return the Cargo build profile of the extension (`"release"` or `"debug"`).
#[pyfunction(name = "build_profile")]
fn py_build_profile() -> &'static str {
    build_profile()
}

/// Return a dict describing the native build: version, profile, component list,
/// allocator (`{"name": "mimalloc", "purge_delay_ms": int}`, -1 = never purge) and the
/// linked LMDB's version (`"lmdb": "0.9.36"`).
#[pyfunction]
fn build_info(py: Python<'_>) -> PyResult<Bound<'_, pyo3::types::PyDict>> {
    let d = pyo3::types::PyDict::new(py);
    d.set_item("version", VERSION)?;
    d.set_item("profile", build_profile())?;
    let alloc = pyo3::types::PyDict::new(py);
    alloc.set_item("name", "mimalloc")?;
    alloc.set_item("purge_delay_ms", purge_delay_ms())?;
    d.set_item("allocator", alloc)?;
    let (major, minor, patch) = oprc_core::store::lmdb::lmdb_version();
    d.set_item("lmdb", format!("{major}.{minor}.{patch}"))?;
    d.set_item(
        "components",
        oprc_core::COMPONENTS
            .iter()
            .chain(rpc::COMPONENTS)
            .collect::<Vec<_>>(),
    )?;
    Ok(d)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    configure_allocator();
    m.add("__version__", VERSION)?;
    m.add_function(wrap_pyfunction!(py_build_profile, m)?)?;
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    engine::register(m)?;
    mapped::register(m)?;
    object::create::register(m)?;
    object::finalize::register(m)?;
    memory::register(m)?;
    m.add_class::<codec::Codec>()?;
    m.add_class::<codec::Plan>()?;
    m.add_class::<codec::DecodePlan>()?;
    m.add_class::<codec::Coder>()?;
    m.add_class::<cache::PyEntryCache>()?;
    rpc::register(m)?;
    object::method::register(m)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_delay_index_names_that_option() {
        // mimalloc v3's default purge delay is 1000 ms; a wrong index reads another option.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(purge_delay_ms(), 1000);
        }
    }

    #[test]
    fn profile_matches_debug_assertions() {
        let p = build_profile();
        assert_eq!(p == "debug", cfg!(debug_assertions));
    }

    #[test]
    fn version_is_semver() {
        assert_eq!(VERSION.split('.').count(), 3);
    }
}
