"""In-memory store: a dict of objects; nothing persisted. Used by ``mock_mode=True`` and
``storage="memory"``. :class:`MemoryStore` is the pure-Python store; with the native
implementation the native engine writes into the native one (``oaas_sdk._native.MemoryStore``,
``oprc-py/core/src/store/memory.rs``), which :class:`NativeMemoryStore` gives the same
interface."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from ..errors import ConflictError
from .layout import class_id_bytes, class_prefix_bytes, parse_object_key_bytes
from .records import ObjectKey, StoredObject, WriteRecord, apply_record, conflict

__all__ = ["MemoryStore", "NativeMemoryStore"]


class MemoryStore:
    """Objects kept in process memory, with the same version checks as the durable stores."""

    name = "memory store"

    def __init__(self) -> None:
        self._objects: dict[ObjectKey, StoredObject] = {}
        self._lock = threading.Lock()

    def read(self, key: ObjectKey) -> StoredObject | None:
        with self._lock:
            o = self._objects.get(key)
            if o is None:
                return None
            return StoredObject(o.version, o.created_ms, o.updated_ms, dict(o.entries))

    def write_batch(self, records: list[WriteRecord]) -> list[Exception | None]:
        results: list[Exception | None] = []
        with self._lock:
            for r in records:
                cur = self._objects.get(r.key)
                found = cur.version if cur is not None else 0
                if found != r.expected_version:
                    results.append(conflict(r, found))
                    continue
                new = apply_record(cur, r)
                if new is None:
                    self._objects.pop(r.key, None)
                else:
                    self._objects[r.key] = new
                results.append(None)
        return results

    def scan(self, cls_id: str, partition_id: int | None = None) -> Iterator[ObjectKey]:
        with self._lock:
            keys = [k for k in self._objects if k[0] == cls_id
                    and (partition_id is None or k[1] == partition_id)]
        return iter(keys)

    def classes(self) -> list[str]:
        """Sorted ids of the classes that have stored objects."""
        with self._lock:
            return sorted({k[0] for k in self._objects})

    def close(self) -> None:
        pass


class NativeMemoryStore(MemoryStore):
    """The native memory store (``oaas_sdk._native.MemoryStore``) with
    :class:`MemoryStore`'s interface and behaviour: the store of the native engine on
    ``storage="memory"`` (its ``engine.store``). Handed to another configuration
    (``runtime.configure(config, store=...)``) it stays the store of that runtime's
    engine, the native one when the native implementation is configured (the seam,
    ``oaas_sdk/_backend.py``), as the Python store stays the Python engine's.

    ``native``: the extension module (given by the seam). Entries are kept, and read
    back, in the order first written, as the Python store's dict keeps them; :meth:`scan`
    lists identities in key order (``docs/format.md``).
    """

    def __init__(self, native: Any) -> None:
        # No MemoryStore.__init__: the objects live in the native store, not in a dict.
        #: The native store, shared by every engine this store is given to.
        self.native = native.MemoryStore()
        self._read = self.native.read

    def read(self, key: ObjectKey) -> StoredObject | None:
        found = self._read(*key)
        return None if found is None else StoredObject(*found)

    def write_batch(self, records: list[WriteRecord]) -> list[Exception | None]:
        results = self.native.write_batch(
            [(*r.key, r.expected_version, r.entries, list(r.deletes), r.delete_object,
              r.time_ms) for r in records])
        return [None if m is None else ConflictError(m) for m in results]

    def scan(self, cls_id: str, partition_id: int | None = None) -> Iterator[ObjectKey]:
        keys = self.native.scan(class_prefix_bytes(cls_id, partition_id))
        return iter([parse_object_key_bytes(cls_id, k) for k in keys])

    def classes(self) -> list[str]:
        """Sorted ids of the classes that have stored objects."""
        return sorted({c.decode() for k in self.native.scan(b"")
                       if (c := class_id_bytes(k)) is not None})
