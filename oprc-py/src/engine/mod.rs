//! Native engine: async runtime, write batcher, background persister, LMDB store, mapped
//! state. The pure-Python `oaas_sdk.engine` and `oaas_sdk.stores` define the same behaviour
//! and the on-disk layout (`docs/format.md`); data written by one is read by the other.
//!
//! In data-flow order: `layout` (keys, records) -> `batcher` (tickets, channel, persister)
//! -> `store` (one LMDB transaction per batch). `runtime` is the fork-aware tokio runtime
//! behind Python awaitables, `mapped` the memory-mapped fields, `raw` the benchmark
//! ceiling. `py` (bindings), `front` (the object's `__setattr__` and `commit_async`), `commit`
//! (the object's one-call commit) and `future` (its awaitable) use pyo3; the rest is plain Rust.

pub mod batcher;
mod commit;
mod front;
mod future;
pub mod layout;
pub mod mapped;
mod py;
pub mod raw;
pub mod runtime;
mod state;
pub mod store;

pub use py::register;

/// Components this module provides natively, reported by `build_info()`.
pub const COMPONENTS: &[&str] = &["engine", "lmdb-store", "mapped"];
