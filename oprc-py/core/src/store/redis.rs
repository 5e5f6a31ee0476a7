//! Room of the native Redis store: an implementation of [`super::Store`] over Redis
//! (one hash per object, a hash-tagged key, a version-checked script per commit,
//! pipelined batches: docs/format.md, "Redis").
//!
//! Empty for now: Redis is served by the pure-Python store (`oaas_sdk.stores`).
