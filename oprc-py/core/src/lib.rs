//! `oprc-core`: the Python-free core of oaas-sdk's native side.
//!
//! No pyo3 anywhere in this crate's dependency tree (.ci/run checks `cargo tree`): every
//! module here is tested with plain `cargo test`, and the bindings crate (`oprc-py`, built
//! into `oaas_sdk._native`) is the only place Python objects are touched. The formats
//! (docs/format.md) are defined once here and checked against the data files in
//! `tests/vectors/` that pytest reads too (`tests/vectors.rs`).
//!
//! In data-flow order:
//! - [`id`]: object identity `(cls_id, partition_id, object_id)`, the one object-id type;
//! - [`codec`]: the state codec's byte format: MessagePack ([`codec::msgpack`]) and the
//!   extension types, their codes and limits ([`codec::ext`]);
//! - [`cache`]: the entry cache (committed records by object key, bounded by weight);
//! - [`store`]: the store layout (keys, metadata records, write records), the [`store::Store`]
//!   trait and its LMDB implementation, and the room of the Redis store;
//! - [`batcher`]: commit tickets, the batcher and the persister (group commit);
//! - [`mapped`]: memory-mapped files behind `Mapped` fields;
//! - [`rpc`]: the room of the RPC layer.
#![deny(clippy::undocumented_unsafe_blocks, unsafe_op_in_unsafe_fn)]

pub mod batcher;
pub mod cache;
pub mod codec;
pub mod id;
pub mod mapped;
pub mod rpc;
pub mod store;

/// Components this crate provides natively, reported by `oaas_sdk._native.build_info()`.
pub const COMPONENTS: &[&str] = &["codec", "cache", "engine", "lmdb-store", "mapped"];
