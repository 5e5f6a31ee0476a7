"""Cache of encoded entries: committed objects by identity, bounded by bytes, optional TTL.

Loading an object that is no longer in the identity map asks this cache before the store.
Values are the encoded entries (codec bytes) and the version, never live Python objects, so
a cached object decodes to a fresh instance. Eviction is least-recently-used by total bytes.

- ``protocol``: :class:`Cache`, the interface of both caches.
- ``_fallback``: :class:`EntryCache`, the pure-Python cache.
- ``_native``: the native cache's factory (the seam, ``oaas_sdk._backend``, picks one).
"""

from __future__ import annotations

from ._fallback import _ENTRY_OVERHEAD as _ENTRY_OVERHEAD  # cache weights (format vectors)
from ._fallback import _OVERHEAD as _OVERHEAD
from ._fallback import EntryCache
from .protocol import Cache

__all__ = ["EntryCache", "Cache"]
