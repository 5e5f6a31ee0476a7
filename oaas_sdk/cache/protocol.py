"""The interface both entry caches offer (the pure-Python :class:`EntryCache` and the
native ``oaas_sdk._native.EntryCache``)."""

from __future__ import annotations

from typing import Protocol

from ..stores import ObjectKey, StoredObject

__all__ = ["Cache"]


class Cache(Protocol):
    """Committed objects by identity: ``get`` (``None``: absent or expired), ``put``,
    ``discard``; counters ``hits``, ``misses``, ``evictions``; ``nbytes`` (bytes counted
    against the bound) and ``len()`` (cached objects)."""

    hits: int
    misses: int
    evictions: int

    @property
    def nbytes(self) -> int: ...

    def get(self, key: ObjectKey) -> StoredObject | None: ...

    def put(self, key: ObjectKey, obj: StoredObject) -> None: ...

    def discard(self, key: ObjectKey) -> None: ...

    def __len__(self) -> int: ...
