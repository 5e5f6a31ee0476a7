"""State codec: the value of one persisted field <-> bytes, driven by the field's type hint.

The bytes are MessagePack (https://github.com/msgpack/msgpack/blob/master/spec.md) with
application extension types 1-12 for the Python types MessagePack lacks (big ints, tuple,
set, frozenset, datetime, date, time, timedelta, UUID, Decimal, numpy arrays and references
to OaaS objects). Every byte is specified in ``docs/format.md``, section "State codec", so
that the native (Rust) codec produces identical output; the fixed vectors of ``tests/``
hold for both.

* :func:`field_type` compiles a type hint once (cached per hint) into a :class:`FieldType` with
  ``coerce`` (called on assignment), ``encode`` (on commit) and ``decode`` (on load).
* The bytes depend only on the value. The hint decides which values ``encode`` accepts
  (a value that the same hint could not decode again is refused) and how ``decode``
  rebuilds models, dataclasses, enums, tuples, sets and references.
* ``decode`` never runs code named by the data (no pickle, no class looked up by name) and
  checks every length read from the data against the bytes present before allocating. It
  raises :class:`~oaas_sdk.errors.SerializationError` and nothing else.

The package, by job: :mod:`.format` (extension codes, limits, payload layouts),
:mod:`.compile` (type hint -> plan), :mod:`.plan` (:class:`FieldType`, the plan node, and
its description for the native codec), :mod:`.nodes` (the node builders per kind of hint),
:mod:`.coerce` (checks and conversion on assignment), :mod:`._fallback` (the pure-Python
encoder and decoder), :mod:`.bridge` (choosing the backend: :func:`set_backend`) and
:mod:`.plain` (values as JSON-able data for tools).
"""

from __future__ import annotations

import sys
from typing import Any

from oaas_sdk.errors import SerializationError

from ._active import ACTIVE
from .bridge import backend, set_backend, set_default_ref_factory
from .compile import _cache as _cache
from .compile import field_type
from .format import (
    EXT_BIGINT as EXT_BIGINT,
)
from .format import (
    EXT_DATE as EXT_DATE,
)
from .format import (
    EXT_DATETIME as EXT_DATETIME,
)
from .format import (
    EXT_DECIMAL as EXT_DECIMAL,
)
from .format import (
    EXT_FROZENSET as EXT_FROZENSET,
)
from .format import (
    EXT_NDARRAY as EXT_NDARRAY,
)
from .format import (
    EXT_REF as EXT_REF,
)
from .format import (
    EXT_SET as EXT_SET,
)
from .format import (
    EXT_TIME as EXT_TIME,
)
from .format import (
    EXT_TIMEDELTA as EXT_TIMEDELTA,
)
from .format import (
    EXT_TUPLE as EXT_TUPLE,
)
from .format import (
    EXT_UUID as EXT_UUID,
)
from .format import (
    MAX_DEPTH,
    ZERO_COPY_MIN,
)
from .plain import decode_plain, to_plain
from .plan import FieldType

__all__ = [
    "MAX_DEPTH",
    "ZERO_COPY_MIN",
    "FieldType",
    "backend",
    "decode",
    "decode_plain",
    "encode",
    "encode_fields",
    "encode_objects",
    "field_type",
    "set_backend",
    "set_default_ref_factory",
    "to_plain",
]

def encode(value: Any, hint: Any = Any) -> bytes:
    """Encode ``value`` for a field of type ``hint`` (default ``Any``).

    Same as ``field_type(hint).encode(value)``; raises what :meth:`FieldType.encode` and
    :func:`field_type` raise.
    """
    return field_type(hint).encode(value)


def decode(
    data: bytes | bytearray | memoryview, hint: Any = Any, *, zero_copy: bool = False
) -> Any:
    """Decode bytes of a field of type ``hint`` (default ``Any``).

    Same as ``field_type(hint).decode(data, zero_copy=zero_copy)``; raises
    :class:`SerializationError` for bad bytes and ``TypeError`` for an unsupported hint.
    """
    return field_type(hint).decode(data, zero_copy=zero_copy)


def _field_error(name: str, e: Exception) -> Exception:
    if isinstance(e, SerializationError):
        return SerializationError(f"{name}: {e}")
    return TypeError(f"{name}: {e}")


def encode_fields(values: dict[str, Any], types: dict[str, FieldType]) -> dict[str, bytes]:
    """Encode the changed fields of one object: ``{field name: bytes}``.

    ``types[name]`` is the field's :class:`FieldType` (a missing name is a ``KeyError``).
    Errors are those of :meth:`FieldType.encode` (``TypeError`` or
    :class:`SerializationError`), with the field name prefixed.
    """
    return encode_objects([(values, types)])[0]


def encode_objects(
    objects: list[tuple[dict[str, Any], dict[str, FieldType]]],
) -> list[dict[str, bytes]]:
    """Encode the changed fields of many objects: one ``{field name: bytes}`` per object.

    Each item is ``(values, types)`` as for :func:`encode_fields`. Errors as
    :func:`encode_fields`.
    """
    # One FieldType.encode per field: on the native backend each is already a single call
    # into the extension, and measured faster than packing the batch into one call (which
    # needs Python lists of values and plans built first).
    out: list[dict[str, bytes]] = []
    for values, fts in objects:
        enc: dict[str, bytes] = {}
        for name, value in values.items():
            try:
                enc[name] = fts[name].encode(value)
            except (SerializationError, TypeError) as e:
                raise _field_error(name, e) from e
        out.append(enc)
    return out



# Every module-level name of the single-module codec (before the split into this package)
# stays reachable as ``oaas_sdk.codec.<name>``: public names are imported above; the
# active state and the private helpers are looked up here, in their new modules.
_PARTS = ("format", "_active", "_values", "_fallback", "coerce", "plan", "nodes", "compile",
          "bridge", "plain")


def __getattr__(name: str) -> Any:
    if name == "_ref_factory":
        return ACTIVE.ref_factory
    if name == "_native_codec":
        return ACTIVE.native
    if not name.startswith("__"):
        for part in _PARTS:
            mod = sys.modules.get(f"{__name__}.{part}")
            if mod is not None and name in mod.__dict__:
                return mod.__dict__[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
