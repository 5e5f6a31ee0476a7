//! Native data path: state codec, zero-copy buffers and the concurrent entry cache.
//!
//! Not yet native: the pure-Python `oaas_sdk.codec` and `oaas_sdk.cache` define the
//! behaviour and the byte format (`docs/format.md`) this module will reproduce.

/// Components this module provides natively, reported by `build_info()`.
pub const COMPONENTS: &[&str] = &[];
