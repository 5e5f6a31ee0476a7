"""State stores: where committed entries live.

One interface (:class:`Store`), several implementations chosen by the ``storage`` URL:

- ``memory``: a dict, nothing persisted (what ``mock_mode=True`` uses);
- ``lmdb:<dir>``: the embedded default, an LMDB environment in ``<dir>`` (``./.oaas``);
- ``redis://host:port/db`` (``rediss://`` with TLS) / ``redis+cluster://host:port,...``
  (``rediss+cluster://``): shared stores on Redis or a Redis Cluster (``stores/redis.py``).

The key layout and record formats are in ``docs/format.md`` ("Store layout").
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import ConfigError, ConflictError

__all__ = [
    "ObjectKey",
    "WriteRecord",
    "StoredObject",
    "Store",
    "parse_storage_url",
    "open_store",
    "object_key_bytes",
    "entry_key_bytes",
    "META_FORMAT",
    "pack_meta",
    "unpack_meta",
    "apply_record",
    "lmdb_location",
    "display_url",
]

#: Identity of an object: (cls_id, partition_id, object_id).
ObjectKey = tuple[str, int, "int | str"]

_CLS_ID = re.compile(r"[A-Za-z0-9_.\-]{1,200}")
_STR_ID = re.compile(r"[a-z0-9._:\-]{1,160}")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")

#: Version byte that starts every metadata record.
META_FORMAT = 1
_META = struct.Struct(">BQqq")


def check_identity(cls_id: str, partition_id: int, object_id: int | str) -> None:
    """Raise ``ValueError`` naming the bad part of an identity.

    ``cls_id``: ``[A-Za-z0-9_.-]{1,200}``; ``partition_id``: u32; ``object_id``: u64 or a
    string matching ``[a-z0-9._:-]{1,160}``.
    """
    if not isinstance(cls_id, str) or not _CLS_ID.fullmatch(cls_id):
        raise ValueError(f"invalid cls_id {cls_id!r}: expected [A-Za-z0-9_.-]{{1,200}}")
    if type(partition_id) is not int or not 0 <= partition_id < 2**32:
        raise ValueError(f"invalid partition_id {partition_id!r}: expected an int in [0, 2**32)")
    if isinstance(object_id, bool) or not isinstance(object_id, int | str):
        raise ValueError(f"invalid object_id {object_id!r}: expected an int or a str")
    if isinstance(object_id, int):
        if not 0 <= object_id < 2**64:
            raise ValueError(f"invalid object_id {object_id}: expected an int in [0, 2**64)")
    elif not _STR_ID.fullmatch(object_id):
        raise ValueError(f"invalid object_id {object_id!r}: expected [a-z0-9._:-]{{1,160}}")


def object_key_bytes(key: ObjectKey) -> bytes:
    """LMDB key prefix of one object (see docs/format.md, "Store layout").

    ``cls_id`` UTF-8, 0x00, partition u32 BE, then 0x01 + object id u64 BE for numeric ids
    or 0x02 + UTF-8 for string ids. Keys of one class, and of one object, form a prefix range.
    """
    cls_id, pid, oid = key
    if isinstance(oid, int):
        return b"%s\x00%s\x01%s" % (cls_id.encode(), pid.to_bytes(4, "big"), oid.to_bytes(8, "big"))
    return b"%s\x00%s\x02%s" % (cls_id.encode(), pid.to_bytes(4, "big"), oid.encode())


def entry_key_bytes(obj_key: bytes, field_name: str) -> bytes:
    """LMDB key of one entry: the object's key, 0x00, the field name in UTF-8."""
    return obj_key + b"\x00" + field_name.encode()


def pack_meta(version: int, created_ms: int, updated_ms: int) -> bytes:
    """Metadata record: format u8 (=1), version u64, created and updated times i64 ms, BE."""
    return _META.pack(META_FORMAT, version, created_ms, updated_ms)


def unpack_meta(data: bytes) -> tuple[int, int, int]:
    """Inverse of :func:`pack_meta`: (version, created_ms, updated_ms).

    Raises ``ValueError`` when the record is not 25 bytes of format 1.
    """
    if len(data) != _META.size or data[0] != META_FORMAT:
        raise ValueError(f"bad metadata record ({len(data)} bytes)")
    _, version, created, updated = _META.unpack(data)
    return version, created, updated


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


def parse_storage_url(url: str) -> tuple[str, str]:
    """Split a ``storage`` setting into (kind, location).

    ``"memory"`` -> ("memory", ""); ``"lmdb:./dir"`` or ``"lmdb://./dir"`` -> ("lmdb", "./dir");
    ``"redis://..."`` / ``"rediss://..."`` -> ("redis", url); ``"redis+cluster://..."`` /
    ``"rediss+cluster://..."`` -> ("redis+cluster", url).
    Raises :class:`ConfigError` for anything else.
    """
    if url == "memory":
        return "memory", ""
    if url.startswith("lmdb:"):
        path = url[len("lmdb:"):]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ConfigError(f"storage {url!r}: lmdb needs a directory, e.g. 'lmdb:./.oaas'")
        return "lmdb", path
    if url.startswith("redis://") or url.startswith("rediss://"):
        return "redis", url
    if url.startswith("redis+cluster://") or url.startswith("rediss+cluster://"):
        return "redis+cluster", url
    raise ConfigError(
        f"storage {url!r} not understood: use 'memory', 'lmdb:<dir>', 'redis://host:port/db' "
        "or 'redis+cluster://host:port,...'"
    )


def display_url(url: str) -> str:
    """``url`` as it may be shown (stats, logs): a password in a Redis URL is replaced by
    ``***``; other URLs are returned unchanged."""
    if not url.startswith(("redis://", "rediss://", "redis+cluster://", "rediss+cluster://")):
        return url
    scheme, _, rest = url.partition("://")
    authority, slash, tail = rest.partition("/")
    query = ""
    if not slash:
        authority, q, query = authority.partition("?")
        query = q + query
    creds, at, hosts = authority.rpartition("@")
    if ":" in creds:  # [user]:password (a lone name is a user name, as redis-py reads it)
        creds = creds.partition(":")[0] + ":***"
    return f"{scheme}://{creds}{at}{hosts}{slash}{tail}{query}"


def lmdb_location(location: str) -> tuple[str, dict[str, int]]:
    """Split the location of an ``lmdb:`` URL into (directory, options).

    Options follow ``?``: ``map_size`` (initial LMDB map, bytes) and ``max_map_size``
    (largest the map may grow to, bytes), e.g. ``lmdb:./s?map_size=1048576``. Raises
    :class:`ConfigError` for another option or a value that is not a positive integer.
    """
    path, _, query = location.partition("?")
    opts: dict[str, int] = {}
    for part in filter(None, query.split("&")):
        name, _, value = part.partition("=")
        if name not in ("map_size", "max_map_size") or not value.isdigit() or int(value) <= 0:
            raise ConfigError(f"lmdb option {part!r} not understood: use map_size=<bytes> "
                              "or max_map_size=<bytes>")
        opts[name] = int(value)
    return path, opts


def open_store(url: str, *, sync: bool = True, readonly: bool = False,
               retry_deadline_s: float = 30.0) -> Store:
    """Open the store named by a ``storage`` URL (see :func:`parse_storage_url`).

    ``sync``: fsync every transaction (LMDB). ``readonly``: open for reading only (the
    inspector): nothing is created or written, and another process may have the store
    open for writing (the Redis stores are opened as usual: reading writes nothing).
    ``retry_deadline_s``: how long the Redis stores retry an unreachable server, seconds.
    Raises :class:`StorageError` when the store cannot be opened (with ``readonly``, also
    when there is no LMDB store there) and :class:`ConfigError` for a malformed URL.
    """
    kind, loc = parse_storage_url(url)
    if kind == "memory":
        from .memory import MemoryStore

        return MemoryStore()
    if kind == "lmdb":
        from .lmdb import LmdbStore

        path, opts = lmdb_location(loc)
        return LmdbStore(path, sync=sync, readonly=readonly, **opts)
    from .redis import RedisStore

    return RedisStore(url, cluster=kind == "redis+cluster", retry_deadline_s=retry_deadline_s)
