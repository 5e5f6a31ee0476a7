//! Native engine: async runtime, write batcher, background persister, stores, mapped state.
//!
//! Not yet native: the pure-Python `oaas_sdk.engine` and `oaas_sdk.stores` define the
//! behaviour and the on-disk layout (`docs/format.md`) this module will reproduce.

/// Components this module provides natively, reported by `build_info()`.
pub const COMPONENTS: &[&str] = &[];
