"""The store layout: identities, keys and metadata records, defined once in Python.

``docs/format.md`` ("Store layout") specifies these bytes; the native engine
(``oprc-py``) writes the same ones, and the fixed vectors of ``tests/`` check both.

* Identity: ``(cls_id, partition_id, object_id)`` (:data:`~oaas_sdk.stores.records.ObjectKey`),
  checked by :func:`check_identity`.
* LMDB: named database :data:`META_DB` holds one metadata record (:func:`pack_meta`) per
  object under :func:`object_key_bytes`, plus the layout record :data:`FORMAT_KEY` ->
  :data:`FORMAT_VALUE`; named database :data:`ENTRIES_DB` holds one entry per field under
  :func:`entry_key_bytes`.
* Redis: one hash per object under :func:`redis_object_key`, whose fields are the entry
  names plus :data:`REDIS_META_FIELDS`.
"""

from __future__ import annotations

import re
import struct

from .records import ObjectKey

__all__ = [
    "DEFAULT_REDIS_PREFIX",
    "ENTRIES_DB",
    "FIRST_OBJECT_KEY",
    "FORMAT_KEY",
    "FORMAT_VALUE",
    "META_DB",
    "META_FORMAT",
    "REDIS_META_FIELDS",
    "after_class_bytes",
    "check_identity",
    "class_id_bytes",
    "class_prefix_bytes",
    "entries_prefix_bytes",
    "entry_key_bytes",
    "object_key_bytes",
    "pack_meta",
    "parse_object_key_bytes",
    "parse_redis_object_key",
    "redis_object_key",
    "redis_scan_pattern",
    "unpack_meta",
]

# --------------------------------------------------------------------------- identity

_CLS_ID = re.compile(r"[A-Za-z0-9_.\-]{1,200}")
_STR_ID = re.compile(r"[a-z0-9._:\-]{1,160}")


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


# --------------------------------------------------------------------------- LMDB

#: Named LMDB database of the metadata records (and the layout record).
META_DB = b"meta"
#: Named LMDB database of the entries.
ENTRIES_DB = b"entries"
#: Key (in ``meta``) of the record that names the layout version of the environment.
FORMAT_KEY = b"\x00oaas-format"
#: Value of the layout record.
FORMAT_VALUE = b"oaas-sdk/1"
#: Version byte that starts every metadata record.
META_FORMAT = 1
_META = struct.Struct(">BQqq")


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


def entries_prefix_bytes(obj_key: bytes) -> bytes:
    """Prefix of the LMDB keys of all entries of one object (its key + 0x00)."""
    return obj_key + b"\x00"


def class_prefix_bytes(cls_id: str, partition_id: int | None = None) -> bytes:
    """Prefix of the LMDB object keys of one class (``cls_id`` UTF-8 + 0x00), or of one
    partition of it (+ partition u32 BE)."""
    prefix = cls_id.encode() + b"\x00"
    if partition_id is not None:
        prefix += partition_id.to_bytes(4, "big")
    return prefix


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


#: Smallest possible object key: the layout record (0x00 ...) sorts before it, every
#: object key (``cls_id`` is never empty and holds no 0x00) at or after it.
FIRST_OBJECT_KEY = b"\x01"


def class_id_bytes(k: bytes) -> bytes | None:
    """The ``cls_id`` (UTF-8) an LMDB ``meta`` key starts with; ``None`` for a key that is
    not an object key."""
    cls_id, sep, _ = k.partition(b"\x00")
    return cls_id if sep else None


def after_class_bytes(cls_id: bytes) -> bytes:
    """A key that sorts after every object key of class ``cls_id`` (UTF-8) and before those
    of any class that sorts after it: ``cls_id`` + 0x01."""
    return cls_id + b"\x01"


def parse_object_key_bytes(cls_id: str, k: bytes) -> ObjectKey:
    """Inverse of :func:`object_key_bytes` for a key known to start with ``cls_id`` + 0x00."""
    rest = k[len(cls_id) + 1:]
    pid = int.from_bytes(rest[:4], "big")
    tag, body = rest[4], rest[5:]
    return (cls_id, pid, int.from_bytes(body, "big") if tag == 1 else body.decode())


# --------------------------------------------------------------------------- Redis

#: First part of every Redis key a store writes (``?prefix=`` in the URL changes it).
DEFAULT_REDIS_PREFIX = "oaas"
#: Fields of an object's hash besides its entries: version, created and updated times (ms,
#: decimal) and the token of the last commit.
REDIS_META_FIELDS = (b"@version", b"@created", b"@updated", b"@commit")


def redis_object_key(prefix: str, key: ObjectKey) -> bytes:
    """The Redis key of one object's hash: ``<prefix>:{<cls_id>/<pid>/n:<u64>}`` for a
    numeric id, ``...s:<id>}`` for a string id. ASCII; the braces are the hash tag."""
    cls_id, pid, oid = key
    kind = "n" if isinstance(oid, int) else "s"
    return f"{prefix}:{{{cls_id}/{pid}/{kind}:{oid}}}".encode()


def parse_redis_object_key(prefix: str, raw: bytes) -> ObjectKey | None:
    """Inverse of :func:`redis_object_key`; ``None`` for a key of another shape."""
    text = raw.decode("ascii", "replace")
    head = prefix + ":{"
    if not text.startswith(head) or not text.endswith("}"):
        return None
    parts = text[len(head):-1].split("/", 2)
    if len(parts) != 3 or not parts[1].isdigit() or parts[2][:2] not in ("n:", "s:"):
        return None
    cls_id, pid, rest = parts
    oid: int | str = rest[2:]
    if rest[0] == "n":
        if not rest[2:].isdigit():
            return None
        oid = int(rest[2:])
    return (cls_id, int(pid), oid)


def redis_scan_pattern(prefix: str, cls_id: str | None, partition_id: int | None = None) -> str:
    """SCAN ``MATCH`` pattern for the object keys of one class (one partition when given),
    or of every class when ``cls_id`` is None. Keys it matches are still parsed with
    :func:`parse_redis_object_key` (a glob cannot say everything the layout does)."""
    if cls_id is None:
        return f"{_glob_escape(prefix)}:{{*"
    pattern = f"{prefix}:{{{_glob_escape(cls_id)}/"
    return pattern + ("*" if partition_id is None else f"{partition_id}/*")


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
