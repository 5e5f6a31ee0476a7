"""In-memory store: a dict of objects; nothing persisted. Used by ``mock_mode=True``."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from .records import ObjectKey, StoredObject, WriteRecord, apply_record, conflict

__all__ = ["MemoryStore"]


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
