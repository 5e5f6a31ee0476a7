"""What stores hold and receive: identities, commit records and stored objects."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConflictError

__all__ = ["ObjectKey", "StoredObject", "WriteRecord", "apply_record", "conflict"]

#: Identity of an object: (cls_id, partition_id, object_id).
ObjectKey = tuple[str, int, "int | str"]


@dataclass(slots=True)
class WriteRecord:
    """One commit of one object, as handed to the engine.

    ``expected_version`` is the version the writer last saw (0: the object must not exist);
    the store writes ``expected_version + 1`` or refuses with :class:`ConflictError`.
    ``entries`` maps field name to codec bytes; ``deletes`` lists entries to remove;
    ``delete_object`` removes the object and all its entries.
    """

    key: ObjectKey
    expected_version: int
    entries: dict[str, bytes] = field(default_factory=dict)
    deletes: tuple[str, ...] = ()
    delete_object: bool = False
    time_ms: int = 0

    @property
    def new_version(self) -> int:
        return self.expected_version + 1

    def nbytes(self) -> int:
        """Bytes of entry values in this record."""
        return sum(map(len, self.entries.values()))


@dataclass(slots=True)
class StoredObject:
    """An object as read from a store: version, times (ms since epoch) and entries."""

    version: int
    created_ms: int
    updated_ms: int
    entries: dict[str, bytes]


def apply_record(stored: StoredObject | None, r: WriteRecord) -> StoredObject | None:
    """The object after a (version-checked) record: ``None`` once deleted. Mutates and
    returns ``stored`` when it exists."""
    if r.delete_object:
        return None
    if stored is None:
        return StoredObject(1, r.time_ms, r.time_ms, dict(r.entries))
    stored.version += 1
    stored.updated_ms = r.time_ms
    stored.entries.update(r.entries)
    for name in r.deletes:
        stored.entries.pop(name, None)
    return stored


def conflict(record: WriteRecord, found: int) -> ConflictError:
    cls_id, pid, oid = record.key
    if record.expected_version == 0 and not record.delete_object:
        why = f"it already exists (version {found})"
    elif found == 0:
        why = "it was deleted by another writer"
    else:
        why = (f"another writer committed version {found} since this process "
               f"saw version {record.expected_version}")
    return ConflictError(f"commit of {cls_id}/{pid}/{oid} refused: {why}")
