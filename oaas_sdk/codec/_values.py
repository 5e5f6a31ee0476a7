"""What the codec's modules share: value kinds, raw decoded values, errors, hint names.

* Value kinds: the exact type of a value -> one of the ``_K_*`` kinds (cached per type),
  which the encoder and the assignment check dispatch on.
* Raw decoded values: what the Python decoder leaves for the hint to finish (``_Deferred``
  tuple/set payloads, ``_RawRef`` references); the native decoder gives ``_RawRef`` too.
* Errors: the internal exceptions (``_Mismatch`` is a SerializationError, ``_Unsupported``
  a TypeError) and the messages that name a value or a hint.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import sys
import types
import typing
import uuid
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel

from oaas_sdk.errors import SerializationError

from .format import EXT_FROZENSET, EXT_SET, EXT_TUPLE, MAX_DEPTH

_NoneType = type(None)

_SUPPORTED = (
    "int, float, bool, str, bytes, bytearray, memoryview, None, list, tuple, set, "
    "frozenset, dict (str or int keys), datetime, date, time, timedelta, UUID, Decimal, "
    "Enum, pydantic BaseModel, dataclass, numpy.ndarray, OaaS object reference"
)


# --------------------------------------------------------------------------- errors


class _Mismatch(SerializationError):
    """A value (on encode) or a stored value (on decode) does not fit the hint."""


class _Unsupported(TypeError):
    """A value of a type the codec does not store."""


class _UnsupportedHint(TypeError):
    def __init__(self, hint: Any, why: str = "") -> None:
        self.hint = hint
        detail = f": {why}" if why else ""
        super().__init__(
            f"unsupported field type {_qual_name(hint)!r}{detail} (supported: {_SUPPORTED})"
        )


class _TooDeep(SerializationError):
    pass


def _too_deep() -> _TooDeep:
    return _TooDeep(f"containers nest more than {MAX_DEPTH} levels deep")


def _corrupt(msg: str) -> SerializationError:
    return SerializationError(msg)


def _unsupported_value(v: Any) -> _Unsupported:
    return _Unsupported(
        f"cannot store a value of type {type(v).__name__!r} (supported: {_SUPPORTED})"
    )


def _mismatch(v: Any, expected: str) -> Exception:
    """Refusal of `v` for a hint named `expected`: TypeError when no hint could take it."""
    if _kind(type(v)) == _K_UNSUPPORTED and _identity_of(v) is None:
        return _unsupported_value(v)
    return _Mismatch(f"expected {expected}, got a value of type {type(v).__name__!r}")


def _shape_error(raw: Any, expected: str) -> _Mismatch:
    return _Mismatch(f"expected {expected}, found {_describe_raw(raw)}")

# --------------------------------------------------------------------------- value kinds

(
    _K_PLAIN,
    _K_LIST,
    _K_DICT,
    _K_TUPLE,
    _K_SET,
    _K_FROZENSET,
    _K_DATETIME,
    _K_DATE,
    _K_TIME,
    _K_TIMEDELTA,
    _K_UUID,
    _K_DECIMAL,
    _K_ENUM,
    _K_MODEL,
    _K_DATACLASS,
    _K_REF,
    _K_NDARRAY,
    _K_INT,
    _K_FLOAT,
    _K_STR,
    _K_BYTES,
    _K_UNSUPPORTED,
) = range(22)

# MessagePack packs these exact types itself (big ints through the packer's default).
_PLAIN_TYPES = frozenset({_NoneType, bool, int, float, str, bytes, bytearray, memoryview})
_KEY_TYPES = frozenset({str, int})
# Values of these exact types contain nothing that needs checking.
_LEAF_TYPES = _PLAIN_TYPES | {
    _dt.datetime,
    _dt.date,
    _dt.time,
    _dt.timedelta,
    uuid.UUID,
    decimal.Decimal,
}
# Decoded values of these exact types are final under an Any hint (numpy.ndarray is added
# when ext 11 first imports numpy).
_ANY_LEAF: set[type] = {
    _NoneType,
    bool,
    int,
    float,
    str,
    bytes,
    _dt.datetime,
    _dt.date,
    _dt.time,
    _dt.timedelta,
    uuid.UUID,
    decimal.Decimal,
}

_KINDS: dict[type, int] = {
    _NoneType: _K_PLAIN,
    bool: _K_PLAIN,
    int: _K_PLAIN,
    float: _K_PLAIN,
    str: _K_PLAIN,
    bytes: _K_PLAIN,
    bytearray: _K_PLAIN,
    memoryview: _K_PLAIN,
    list: _K_LIST,
    dict: _K_DICT,
    tuple: _K_TUPLE,
    set: _K_SET,
    frozenset: _K_FROZENSET,
    _dt.datetime: _K_DATETIME,
    _dt.date: _K_DATE,
    _dt.time: _K_TIME,
    _dt.timedelta: _K_TIMEDELTA,
    uuid.UUID: _K_UUID,
    decimal.Decimal: _K_DECIMAL,
}
_KINDS_CAP = 4096  # classes made at run time must not pin memory forever

# Subclass checks, most specific first (datetime is a date).
_SUBCLASS_KINDS: tuple[tuple[type, int], ...] = (
    (int, _K_INT),
    (float, _K_FLOAT),
    (str, _K_STR),
    (bytes, _K_BYTES),
    (bytearray, _K_BYTES),
    (list, _K_LIST),
    (dict, _K_DICT),
    (tuple, _K_TUPLE),
    (set, _K_SET),
    (frozenset, _K_FROZENSET),
    (_dt.datetime, _K_DATETIME),
    (_dt.date, _K_DATE),
    (_dt.time, _K_TIME),
    (_dt.timedelta, _K_TIMEDELTA),
    (uuid.UUID, _K_UUID),
    (decimal.Decimal, _K_DECIMAL),
)


def _is_ndarray_type(t: type) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and t is np.ndarray


def _classify(t: type) -> int:
    if hasattr(t, "__oaas_identity__"):
        k = _K_REF
    elif issubclass(t, enum.Enum):
        k = _K_ENUM
    elif issubclass(t, BaseModel):
        k = _K_MODEL
    elif dataclasses.is_dataclass(t):
        k = _K_DATACLASS
    elif _is_ndarray_type(t):
        k = _K_NDARRAY
    else:
        k = _K_UNSUPPORTED
        for base, kind in _SUBCLASS_KINDS:
            if issubclass(t, base):
                k = kind
                break
    if len(_KINDS) < _KINDS_CAP:
        _KINDS[t] = k
    return k


def _kind(t: type) -> int:
    k = _KINDS.get(t)
    return _classify(t) if k is None else k


def _identity_of(v: Any) -> Any:
    try:
        return getattr(v, "__oaas_identity__", None)
    except Exception:
        return None

# --------------------------------------------------------------------------- decoded raw values


class _Deferred:
    """An ext 2/3/4 payload, unpacked when the hint is known (keeps unpacking unnested)."""

    __slots__ = ("code", "data")

    def __init__(self, code: int, data: bytes) -> None:
        self.code = code
        self.data = data


class _RawRef:
    """A decoded ext 12: turned into an object by the hint or the default ref factory."""

    __slots__ = ("cls_id", "partition_id", "object_id")

    def __init__(self, cls_id: str, partition_id: int, object_id: int | str) -> None:
        self.cls_id = cls_id
        self.partition_id = partition_id
        self.object_id = object_id


def _describe_raw(raw: Any) -> str:
    t = type(raw)
    code = _ext_code(raw)
    if code is not None:
        return {EXT_TUPLE: "a tuple", EXT_SET: "a set", EXT_FROZENSET: "a frozenset"}[code]
    if t is _RawRef:
        return "an object reference"
    if raw is None:
        return "nil"
    return f"a value of type {t.__name__!r}"


# The native decoder builds tuples, sets and frozensets itself (with raw elements); the
# Python one defers their payloads. Hint code sees either through _ext_code and
# _fallback._ext_items.
_NATIVE_EXT_CODES: dict[type, int] = {tuple: EXT_TUPLE, set: EXT_SET, frozenset: EXT_FROZENSET}


def _ext_code(raw: Any) -> int | None:
    """The ext code of a raw tuple/set/frozenset (deferred or native), else None."""
    if type(raw) is _Deferred:
        return int(raw.code)
    return _NATIVE_EXT_CODES.get(type(raw))


# --------------------------------------------------------------------------- hint names


def _qual_name(h: Any) -> str:
    if isinstance(h, type) and typing.get_origin(h) is None:
        mod = getattr(h, "__module__", "builtins")
        return h.__qualname__ if mod == "builtins" else f"{mod}.{h.__qualname__}"
    return _hint_name(h)


def _hint_name(h: Any) -> str:
    if h is Any:
        return "Any"
    if h is None or h is _NoneType:
        return "None"
    if h is Ellipsis:
        return "..."
    origin = typing.get_origin(h)
    if origin is None:
        if isinstance(h, type):
            return h.__qualname__
        if isinstance(h, typing.NewType):
            return h.__name__
        return repr(h)
    args = typing.get_args(h)
    if origin is Union or origin is types.UnionType:
        if len(args) == 2 and _NoneType in args:
            other = args[0] if args[1] is _NoneType else args[1]
            return f"Optional[{_hint_name(other)}]"
        return f"Union[{', '.join(_hint_name(a) for a in args)}]"
    if origin is Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is Annotated:
        return _hint_name(args[0])
    base = _hint_name(origin)
    if not args:
        # tuple[()] and bare typing.Tuple both have no args.
        return f"{base}[()]" if origin is tuple and h is not typing.Tuple else base  # noqa: UP006
    return f"{base}[{', '.join(_hint_name(a) for a in args)}]"

