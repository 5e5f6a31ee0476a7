"""The pure-Python entry cache (:class:`EntryCache`); the native one is
``oaas_sdk._native.EntryCache`` (``oprc-py/src/data/cache.rs``), same behaviour."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from ..stores import ObjectKey, StoredObject

__all__ = ["EntryCache"]

# Python memory counted against the bound besides the entry bytes, measured on CPython
# 3.11 (sys.getsizeof and tracemalloc): per cached object (record, its dict, the LRU node
# and tuple) and per entry (the bytes object's header, the name string, the dict slot).
_OVERHEAD = 360
_ENTRY_OVERHEAD = 120


class EntryCache:
    """LRU cache of :class:`StoredObject` records.

    ``max_bytes``: bound on the summed size of cached entries plus a fixed per-object
    overhead, in bytes (0 disables the cache). ``ttl_s``: seconds an entry stays valid,
    or ``None`` for no expiry. Thread-safe.
    """

    def __init__(self, max_bytes: int, ttl_s: float | None = None) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._items: OrderedDict[ObjectKey, tuple[StoredObject, int, float]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    @staticmethod
    def _weight(obj: StoredObject) -> int:
        return _OVERHEAD + sum(_ENTRY_OVERHEAD + len(k) + len(v)
                               for k, v in obj.entries.items())

    def get(self, key: ObjectKey) -> StoredObject | None:
        """The cached record (a copy of its entry dict), or ``None`` on a miss or expiry."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            obj, weight, expires = item
            if self.ttl_s is not None and time.monotonic() >= expires:
                del self._items[key]
                self._bytes -= weight
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return StoredObject(obj.version, obj.created_ms, obj.updated_ms, dict(obj.entries))

    def put(self, key: ObjectKey, obj: StoredObject) -> None:
        """Insert or replace ``key``; evicts least recently used records beyond the bound."""
        if self.max_bytes <= 0:
            return
        weight = self._weight(obj)
        expires = time.monotonic() + self.ttl_s if self.ttl_s is not None else 0.0
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if weight > self.max_bytes:
                return
            self._items[key] = (obj, weight, expires)
            self._bytes += weight
            while self._bytes > self.max_bytes:
                _, (_, w, _) = self._items.popitem(last=False)
                self._bytes -= w
                self.evictions += 1

    def update(self, key: ObjectKey, version: int, time_ms: int, entries: dict[str, bytes],
               deletes: tuple[str, ...] = ()) -> None:
        """Apply a commit to a cached record (in place, weighing only what changed);
        inserts the record when it is a new object."""
        if self.max_bytes <= 0:
            return
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                obj, weight, expires = item
                old = obj.entries
                for name, data in entries.items():
                    prev = old.get(name)
                    weight += len(data) - (len(prev) if prev is not None
                                           else -len(name) - _ENTRY_OVERHEAD)
                    old[name] = data
                for name in deletes:
                    prev = old.pop(name, None)
                    if prev is not None:
                        weight -= _ENTRY_OVERHEAD + len(name) + len(prev)
                obj.version = version
                obj.updated_ms = time_ms
                self._bytes += weight - item[1]
                self._items[key] = (obj, weight, expires)
                self._items.move_to_end(key)
                while self._bytes > self.max_bytes and self._items:
                    _, (_, w, _) = self._items.popitem(last=False)
                    self._bytes -= w
                    self.evictions += 1
                return
        if version == 1:
            self.put(key, StoredObject(1, time_ms, time_ms, dict(entries)))

    def discard(self, key: ObjectKey) -> None:
        """Forget ``key`` (after a delete, a conflict or a failed write)."""
        with self._lock:
            item = self._items.pop(key, None)
            if item is not None:
                self._bytes -= item[1]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes currently counted against the bound."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)
