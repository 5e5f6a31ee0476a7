"""Values as plain JSON-able data, for tools that read a store without its classes.

:func:`decode_plain` decodes a field's bytes without the type hint that wrote them (the
store inspector, ``python -m oaas_sdk``); :func:`to_plain` turns any value into the same
plain shapes.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import decimal
import enum
import uuid
from typing import Any

import pydantic_core
from pydantic import BaseModel

from oaas_sdk.errors import SerializationError

from ._active import ACTIVE
from ._fallback import _ext_hook, _unpack_items, _unpackb
from ._values import _Deferred, _is_ndarray_type, _RawRef, _too_deep
from .format import EXT_TUPLE, MAX_DEPTH

__all__ = ["decode_plain", "to_plain"]


def decode_plain(data: bytes | bytearray | memoryview) -> Any:
    """Decode a field's bytes without its type hint into plain JSON-able values.

    For tools that read a store without the classes that wrote it (``python -m oaas_sdk``).
    Works on either backend and gives the same result on both. The value is built only
    of ``None``, ``bool``, ``int``, ``float``, ``str``, ``list`` and ``dict`` (str or int
    keys), as :func:`to_plain` describes: tuples, sets and arrays become lists, dates and
    times ISO 8601 strings, ``bytes`` ``{"$bytes": "<base64>"}``, references
    ``{"$ref": "<cls_id>/<partition>/<object id>"}``.

    Raises :class:`SerializationError` for malformed bytes, as :func:`decode` does.
    """
    try:
        nc = ACTIVE.native
        if nc is not None:
            raw = nc.decode(data, None, 0)  # raw tuples, sets and _RawRef (no ref factory)
        else:
            raw = _unpackb(data, raw=False, strict_map_key=False, ext_hook=_ext_hook,
                           use_list=True)
        return _plain(raw, 0)
    except SerializationError:
        raise
    except Exception as e:
        raise SerializationError(f"cannot decode: {e or type(e).__name__}") from e


def to_plain(value: Any) -> Any:
    """A value as plain JSON-able data (``json.dumps`` takes it), for display.

    ``None``/``bool``/``int``/``float``/``str`` stay; ``bytes``-like become
    ``{"$bytes": "<base64>"}``; lists, tuples and numpy arrays lists; sets sorted lists;
    dicts dicts (keys kept: str or int); datetime, date, time, timedelta, UUID and Decimal
    the strings pydantic's JSON mode gives (ISO 8601, canonical text); enums their value;
    pydantic models and dataclasses dicts of their fields; OaaS objects and references
    ``{"$ref": "<cls_id>/<partition>/<object id>"}``. Anything else becomes its ``repr``
    under ``{"$repr": ...}``. Raises :class:`SerializationError` past :data:`MAX_DEPTH`.
    """
    return _plain(value, 0)


_PLAIN_SCALARS = (type(None), bool, int, float, str)


def _plain(v: Any, depth: int) -> Any:
    t = type(v)
    if t in _PLAIN_SCALARS:
        return v
    if depth >= MAX_DEPTH:
        raise _too_deep()
    d = depth + 1
    if t is list or t is tuple:
        return [_plain(x, d) for x in v]
    if t is dict:
        return {(k if type(k) in (str, int) else str(_plain(k, d))): _plain(x, d)
                for k, x in v.items()}
    if t is _Deferred:
        items = [_plain(x, d) for x in _unpack_items(v)]
        return items if v.code == EXT_TUPLE else _sorted_plain(items)
    if t is set or t is frozenset:
        return _sorted_plain([_plain(x, d) for x in v])
    if t is _RawRef:
        return {"$ref": f"{v.cls_id}/{v.partition_id}/{v.object_id}"}
    if isinstance(v, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(v).decode("ascii")}
    if isinstance(v, enum.Enum):
        return _plain(v.value, d)
    for base in (bool, int, float, str):  # subclasses of the scalars
        if isinstance(v, base):
            return base(v)
    ident = getattr(v, "__oaas_identity__", None)
    if isinstance(ident, tuple) and len(ident) == 3:
        return {"$ref": "{}/{}/{}".format(*ident)}
    if isinstance(v, _dt.date | _dt.time | _dt.timedelta | uuid.UUID | decimal.Decimal):
        return pydantic_core.to_jsonable_python(v)
    if isinstance(v, BaseModel):
        return {name: _plain(getattr(v, name), d) for name in type(v).model_fields}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name), d) for f in dataclasses.fields(v)}
    if _is_ndarray_type(t):
        return _plain(v.tolist(), d)
    if t is complex:
        return [v.real, v.imag]
    if isinstance(v, list | tuple):
        return [_plain(x, d) for x in v]
    if isinstance(v, set | frozenset):
        return _sorted_plain([_plain(x, d) for x in v])
    if isinstance(v, dict):
        return {(k if type(k) in (str, int) else str(_plain(k, d))): _plain(x, d)
                for k, x in v.items()}
    return {"$repr": repr(v)}


def _sorted_plain(items: list[Any]) -> list[Any]:
    """Set elements in a stable order (the stored order is not kept by every backend)."""
    try:
        return sorted(items)
    except TypeError:
        return sorted(items, key=lambda x: (type(x).__name__, repr(x)))
