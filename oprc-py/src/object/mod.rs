//! The object's native fast paths (pyo3): `front` (the object's `__setattr__` and
//! `commit_async`), `commit` (the one-call commit: read the object's bookkeeping, encode
//! the dirty fields, build the write record, apply it) and `future` (the awaitable of a
//! durable commit).

pub(crate) mod commit;
pub(crate) mod front;
pub(crate) mod future;
