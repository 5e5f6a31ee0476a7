"""The store interface: what every store (memory, LMDB, Redis) provides."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from .records import ObjectKey, StoredObject, WriteRecord

__all__ = ["Store"]


class Store(Protocol):
    """What every store provides. Methods are called from one thread at a time."""

    #: Human-readable name used in error messages, e.g. ``"lmdb store at ./.oaas"``.
    name: str

    def read(self, key: ObjectKey) -> StoredObject | None:
        """The committed object, or ``None`` when it does not exist."""
        ...

    def write_batch(self, records: list[WriteRecord]) -> list[Exception | None]:
        """Apply ``records`` in order, in one transaction (group commit).

        Returns one result per record: ``None`` when written, a :class:`ConflictError`
        when its ``expected_version`` did not match (that record alone is skipped).
        Raises :class:`StorageError` when the transaction failed; then nothing was written.
        """
        ...

    def scan(self, cls_id: str, partition_id: int | None = None) -> Iterable[ObjectKey]:
        """Identities of the stored objects of a class (optionally one partition)."""
        ...

    def classes(self) -> list[str]:
        """Sorted ids of the classes that have stored objects."""
        ...

    def close(self) -> None:
        """Release the store's resources; further calls are errors."""
        ...
