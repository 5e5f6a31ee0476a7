"""The native entry cache (``oaas_sdk._native.EntryCache``), made with the record type
the Python side reads (:class:`~oaas_sdk.stores.StoredObject`)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..stores import StoredObject

__all__ = ["native_entry_cache"]


def native_entry_cache(native: ModuleType, max_bytes: int, ttl_s: float | None) -> Any:
    """A native entry cache bounded by ``max_bytes`` whose entries expire after ``ttl_s``
    seconds (``None``: never); ``native`` is the extension module (given by the seam)."""
    return native.EntryCache(max_bytes, ttl_s, StoredObject)
