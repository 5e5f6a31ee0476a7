//! Invocation of methods on objects in other processes (OaaS `oprc.OprcFunction` protocol).
//!
//! Not yet native: invocations run in-process (see `oaas_sdk.rpc`).

/// Components this module provides natively, reported by `build_info()`.
pub const COMPONENTS: &[&str] = &[];
