//! `oaas_sdk._native`: the native core of oaas-sdk.
//!
//! The Python package `oaas_sdk` decides what is public; users never import this module
//! directly. Each submodule mirrors a Python component (`data` ~ codec/cache,
//! `engine` ~ engine/stores, `rpc` ~ rpc) and keeps its pure-Rust logic free of pyo3 so it
//! is tested with `cargo test`; the `#[pyfunction]` layer here stays thin.

use pyo3::prelude::*;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod data;
pub mod engine;
pub mod rpc;

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

/// Return a dict describing the native build: version, profile and component list.
#[pyfunction]
fn build_info(py: Python<'_>) -> PyResult<Bound<'_, pyo3::types::PyDict>> {
    let d = pyo3::types::PyDict::new(py);
    d.set_item("version", VERSION)?;
    d.set_item("profile", build_profile())?;
    d.set_item(
        "components",
        data::COMPONENTS
            .iter()
            .chain(engine::COMPONENTS)
            .chain(rpc::COMPONENTS)
            .collect::<Vec<_>>(),
    )?;
    Ok(d)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", VERSION)?;
    m.add_function(wrap_pyfunction!(py_build_profile, m)?)?;
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    engine::register(m)?;
    data::register(m)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
