//! The object's native fast paths (pyo3): `front` (the object's `__setattr__` and
//! `commit_async`), `commit` (the one-call commit: read the object's bookkeeping, encode
//! the dirty fields, build the write record, apply it) and `future` (the awaitable of a
//! durable commit), all reading the object's `ObjectState` through `state` (the slot names
//! shared with oaas_sdk/model/state.py, defined once).

pub(crate) mod commit;
pub(crate) mod create;
pub(crate) mod finalize;
pub(crate) mod front;
pub(crate) mod future;
pub(crate) mod method;
pub(crate) mod state;
