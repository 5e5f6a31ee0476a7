"""State codec: the value of one persisted field <-> bytes, driven by the field's type hint.

The bytes are MessagePack (https://github.com/msgpack/msgpack/blob/master/spec.md) with
application extension types 1-12 for the Python types MessagePack lacks (big ints, tuple,
set, frozenset, datetime, date, time, timedelta, UUID, Decimal, numpy arrays and references
to OaaS objects). Every byte is specified in ``docs/format.md``, section "State codec", so
that the native (Rust) codec produces identical output; ``tests/codec_vectors.py`` holds
fixed vectors for both.

* :func:`field_type` compiles a type hint once (cached) into a :class:`FieldType` with
  ``coerce`` (called on assignment), ``encode`` (on commit) and ``decode`` (on load).
* The bytes depend only on the value. The hint decides which values ``encode`` accepts
  (a value that the same hint could not decode again is refused) and how ``decode``
  rebuilds models, dataclasses, enums, tuples, sets and references.
* ``decode`` never runs code named by the data (no pickle, no class looked up by name) and
  checks every length read from the data against the bytes present before allocating. It
  raises :class:`~oaas_sdk.errors.SerializationError` and nothing else.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import decimal
import enum
import inspect
import re
import struct
import sys
import threading
import types
import typing
import uuid
import weakref
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union

import msgpack
import pydantic
import pydantic_core
from pydantic import BaseModel, PlainValidator, RootModel, TypeAdapter

from oaas_sdk.errors import SerializationError, ValidationError

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

MAX_DEPTH = 100
"""Containers (arrays, maps, tuples, sets, models, dataclasses) nest at most this deep."""

ZERO_COPY_MIN = 4096
"""With ``decode(..., zero_copy=True)`` on the native backend, bin values and ndarray data of
at least this many bytes are returned as read-only views into the input (bytes)."""

# The native codec (``oaas_sdk._native.Codec``) while the native backend is active, else
# None: see set_backend(). Read on every encode/decode, so switching is immediate.
_native_codec: Any = None

EXT_BIGINT = 1
EXT_TUPLE = 2
EXT_SET = 3
EXT_FROZENSET = 4
EXT_DATETIME = 5
EXT_DATE = 6
EXT_TIME = 7
EXT_TIMEDELTA = 8
EXT_UUID = 9
EXT_DECIMAL = 10
EXT_NDARRAY = 11
EXT_REF = 12

_I64_MIN = -(1 << 63)
_U64_MAX = (1 << 64) - 1
_U32_MAX = (1 << 32) - 1
_DAY_US = 86_400_000_000
_NoneType = type(None)
_ExtType = msgpack.ExtType
_unpackb = msgpack.unpackb

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


# --------------------------------------------------------------------------- packing

_DT = struct.Struct(">HBBBBBI")
_DATE = struct.Struct(">HBB")
_TIME = struct.Struct(">BBBI")
_TD = struct.Struct(">iii")
_I64 = struct.Struct(">q")


def _bigint_bytes(v: int) -> bytes:
    return v.to_bytes((v if v >= 0 else ~v).bit_length() // 8 + 1, "big", signed=True)


def _pack_default(o: Any) -> Any:
    # Only ints outside the 64-bit range reach here: prepared values hold nothing else
    # that MessagePack cannot pack.
    if type(o) is int:
        return _ExtType(EXT_BIGINT, _bigint_bytes(o))
    raise _unsupported_value(o)


def _new_packer() -> Any:
    return msgpack.Packer(
        use_bin_type=True, strict_types=True, datetime=False, default=_pack_default
    )


# A popped packer belongs to one call only, which keeps packing safe across threads and
# against re-entry (a finalizer that encodes while a pack is running).
_pool: list[Any] = [_new_packer() for _ in range(4)]


def _pack(obj: Any) -> bytes:
    nc = _native_codec
    if nc is not None:
        return nc.encode(obj)
    try:
        p = _pool.pop()
    except IndexError:
        p = _new_packer()
    try:
        return p.pack(obj)
    finally:
        _pool.append(p)


def _pack_set(code: int, items: list[Any]) -> Any:
    # Elements in bytewise order of their encodings, so that equal sets give equal bytes
    # in every process (iteration order depends on the string hash seed).
    try:
        p = _pool.pop()
    except IndexError:
        p = _new_packer()
    try:
        nc = _native_codec
        if nc is not None:
            parts = sorted(nc.encode_many(items))
        else:
            parts = sorted([p.pack(x) for x in items])
        header = p.pack_array_header(len(parts))
    finally:
        _pool.append(p)
    return _ExtType(code, header + b"".join(parts))


def _td_us(td: _dt.timedelta) -> int:
    return (td.days * 86_400 + td.seconds) * 1_000_000 + td.microseconds


def _ext_datetime(v: _dt.datetime) -> Any:
    b = _DT.pack(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond)
    off = v.utcoffset()
    if off is not None:
        b += _I64.pack(_td_us(off))
    return _ExtType(EXT_DATETIME, b)


def _ext_date(v: _dt.date) -> Any:
    return _ExtType(EXT_DATE, _DATE.pack(v.year, v.month, v.day))


def _ext_time(v: _dt.time) -> Any:
    b = _TIME.pack(v.hour, v.minute, v.second, v.microsecond)
    off = v.utcoffset()
    if off is not None:
        b += _I64.pack(_td_us(off))
    return _ExtType(EXT_TIME, b)


def _ext_timedelta(v: _dt.timedelta) -> Any:
    return _ExtType(EXT_TIMEDELTA, _TD.pack(v.days, v.seconds, v.microseconds))


def _ext_uuid(v: uuid.UUID) -> Any:
    return _ExtType(EXT_UUID, v.bytes)


def _decimal_str(d: decimal.Decimal) -> str:
    s = str(d)
    # str() follows the thread's context.capitals; the format always uses "E".
    return s.replace("e", "E") if "e" in s else s


def _ext_decimal(v: decimal.Decimal) -> Any:
    return _ExtType(EXT_DECIMAL, _decimal_str(v).encode("ascii"))


_NP_KINDS = frozenset("biufcmMS")
_DTYPE_RE = re.compile(r"[<>|][biufcmMS][0-9]+(\[[0-9]*[A-Za-z]+\])?")
_MAX_NDIM = 64


def _ext_ndarray(a: Any) -> Any:
    dt = a.dtype
    sb = _ndarray_dtype_str(dt)
    payload = b"".join(
        (
            bytes((len(sb),)),
            sb,
            bytes((a.ndim,)),
            struct.pack(f">{a.ndim}Q", *a.shape),
            a.tobytes(order="C"),
        )
    )
    return _ExtType(EXT_NDARRAY, payload)


def _ext_ref(v: Any, ident: Any = None) -> Any:
    if ident is None:
        ident = _identity_of(v)
    try:
        cls_id, pid, oid = ident
    except Exception:
        raise SerializationError(
            f"__oaas_identity__ of {type(v).__name__!r} must be (cls_id, partition_id, "
            f"object_id), got {ident!r}"
        ) from None
    ok = (
        type(cls_id) is str
        and isinstance(pid, int)
        and not isinstance(pid, bool)
        and 0 <= pid <= _U32_MAX
        and (
            (isinstance(oid, int) and not isinstance(oid, bool) and 0 <= oid <= _U64_MAX)
            or type(oid) is str
        )
    )
    if not ok:
        raise SerializationError(
            f"invalid object identity {ident!r}: expected (str, partition id 0..2**32-1, "
            "object id 0..2**64-1 or str)"
        )
    oid = oid if type(oid) is str else int(oid)
    return _ExtType(EXT_REF, _pack([cls_id, int(pid), oid]))


# --------------------------------------------------------------------------- prepare (Any)
# "Preparing" turns a value into a tree MessagePack packs directly: None, bool, int, float,
# str, bytes, bytearray, memoryview, list, dict and ExtType. It also checks the value.


def _prep_any(v: Any, depth: int) -> Any:
    k = _KINDS.get(type(v))
    if k is None:
        k = _classify(type(v))
    if k == _K_PLAIN:
        return v
    return _PREP_ANY[k](v, depth)


def _prep_list_any(v: Any, depth: int) -> Any:
    if depth >= MAX_DEPTH:
        raise _too_deep()
    if type(v) is not list:
        v = list(v)
    if _PLAIN_TYPES.issuperset(map(type, v)):
        return v
    d = depth + 1
    return [_prep_any(x, d) for x in v]


def _prep_key_any(k: Any) -> Any:
    t = type(k)
    if t is str or t is int:
        return k
    kind = _kind(t)
    if kind == _K_ENUM:
        k = k.value
    elif kind == _K_STR:
        return str.__str__(k)
    elif kind == _K_INT:
        return int.__int__(k)
    if type(k) is str or type(k) is int:
        return k
    raise SerializationError(f"dict keys must be str or int, got a key of type {t.__name__!r}")


def _check_keys_distinct(out: dict[Any, Any], v: Any) -> dict[Any, Any]:
    if len(out) != len(v):
        raise SerializationError("dict keys collide once converted to str or int")
    return out


def _prep_dict_any(v: Any, depth: int) -> Any:
    if depth >= MAX_DEPTH:
        raise _too_deep()
    if _KEY_TYPES.issuperset(map(type, v)) and _PLAIN_TYPES.issuperset(map(type, v.values())):
        return v if type(v) is dict else dict(v)
    d = depth + 1
    out = {_prep_key_any(k): _prep_any(x, d) for k, x in v.items()}
    return _check_keys_distinct(out, v)


def _prep_tuple_any(v: Any, depth: int) -> Any:
    if depth >= MAX_DEPTH:
        raise _too_deep()
    d = depth + 1
    return _ExtType(EXT_TUPLE, _pack([_prep_any(x, d) for x in v]))


def _prep_set_any(v: Any, depth: int) -> Any:
    if depth >= MAX_DEPTH:
        raise _too_deep()
    d = depth + 1
    return _pack_set(EXT_SET, [_prep_any(x, d) for x in v])


def _prep_frozenset_any(v: Any, depth: int) -> Any:
    if depth >= MAX_DEPTH:
        raise _too_deep()
    d = depth + 1
    return _pack_set(EXT_FROZENSET, [_prep_any(x, d) for x in v])


def _prep_unsupported(v: Any, depth: int) -> Any:
    ident = _identity_of(v)
    if ident is None:
        raise _unsupported_value(v)
    return _ext_ref(v, ident)


def _prep_record_any(v: Any, depth: int) -> Any:
    return field_type(type(v))._prep(v, depth)


_PREP_ANY: list[Callable[[Any, int], Any]] = [_prep_unsupported] * 22
_PREP_ANY[_K_LIST] = _prep_list_any
_PREP_ANY[_K_DICT] = _prep_dict_any
_PREP_ANY[_K_TUPLE] = _prep_tuple_any
_PREP_ANY[_K_SET] = _prep_set_any
_PREP_ANY[_K_FROZENSET] = _prep_frozenset_any
_PREP_ANY[_K_DATETIME] = lambda v, d: _ext_datetime(v)
_PREP_ANY[_K_DATE] = lambda v, d: _ext_date(v)
_PREP_ANY[_K_TIME] = lambda v, d: _ext_time(v)
_PREP_ANY[_K_TIMEDELTA] = lambda v, d: _ext_timedelta(v)
_PREP_ANY[_K_UUID] = lambda v, d: _ext_uuid(v)
_PREP_ANY[_K_DECIMAL] = lambda v, d: _ext_decimal(v)
_PREP_ANY[_K_ENUM] = lambda v, d: _prep_any(v.value, d)
_PREP_ANY[_K_MODEL] = _prep_record_any
_PREP_ANY[_K_DATACLASS] = _prep_record_any
_PREP_ANY[_K_REF] = lambda v, d: _ext_ref(v)
_PREP_ANY[_K_NDARRAY] = lambda v, d: _ext_ndarray(v)
_PREP_ANY[_K_INT] = lambda v, d: int.__int__(v)
_PREP_ANY[_K_FLOAT] = lambda v, d: float.__float__(v)
_PREP_ANY[_K_STR] = lambda v, d: str.__str__(v)
_PREP_ANY[_K_BYTES] = lambda v, d: bytes(v)


# --------------------------------------------------------------------------- type check


def _check(v: Any, depth: int) -> None:
    """Raise _Unsupported if `v` holds a value of an unsupported type (on assignment)."""
    k = _KINDS.get(type(v))
    if k is None:
        k = _classify(type(v))
    if k in _CHECK_LEAF_KINDS:
        return
    if k == _K_UNSUPPORTED:
        if _identity_of(v) is None:
            raise _unsupported_value(v)
        return
    if k == _K_ENUM:
        _check(v.value, depth)
        return
    if depth >= MAX_DEPTH:
        raise _too_deep()
    d = depth + 1
    if k == _K_DICT:
        for key, x in v.items():
            tk = type(key)
            if tk is not str and tk is not int:
                kk = _kind(tk)
                if not (
                    kk in (_K_STR, _K_INT) or (kk == _K_ENUM and type(key.value) in (str, int))
                ):
                    raise _Unsupported(
                        f"cannot store a dict key of type {tk.__name__!r} "
                        "(dict keys must be str or int)"
                    )
            if type(x) not in _LEAF_TYPES:
                _check(x, d)
    elif k in (_K_MODEL, _K_DATACLASS):
        for name in _record_names(type(v)):
            _check(getattr(v, name), d)
    else:
        for x in v:
            if type(x) not in _LEAF_TYPES:
                _check(x, d)


_CHECK_LEAF_KINDS = frozenset(
    {
        _K_PLAIN,
        _K_DATETIME,
        _K_DATE,
        _K_TIME,
        _K_TIMEDELTA,
        _K_UUID,
        _K_DECIMAL,
        _K_REF,
        _K_NDARRAY,
        _K_INT,
        _K_FLOAT,
        _K_STR,
        _K_BYTES,
    }
)
_NAMES: dict[type, tuple[str, ...]] = {}


def _record_names(cls: type) -> tuple[str, ...]:
    names = _NAMES.get(cls)
    if names is None:
        if issubclass(cls, BaseModel):
            names = tuple(cls.model_fields)
        else:
            names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
        if len(_NAMES) < _KINDS_CAP:
            _NAMES[cls] = names
    return names


# --------------------------------------------------------------------------- unpacking


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


def _default_ref_factory(cls_id: str, partition_id: int, object_id: int | str) -> Any:
    return (cls_id, partition_id, object_id)


_ref_factory: Callable[[str, int, int | str], Any] = _default_ref_factory


def set_default_ref_factory(fn: Callable[[str, int, int | str], Any]) -> None:
    """Set how a reference (ext 12) decodes where the hint does not say.

    ``fn(cls_id, partition_id, object_id)`` is called for references decoded under an
    ``Any`` hint (or a hint without ``__oaas_from_identity__``); until this is called they
    decode to the tuple ``(cls_id, partition_id, object_id)``. Raises ``TypeError`` if
    ``fn`` is not callable.
    """
    global _ref_factory
    if not callable(fn):
        raise TypeError(f"ref factory must be callable, got {type(fn).__name__!r}")
    _ref_factory = fn
    for nc in _codecs.values():
        nc.set_ref_factory(fn)


def _no_ext(code: int, data: bytes) -> Any:
    raise _corrupt(f"extension type {code} is not allowed inside a reference")


def _dec_bigint(data: bytes) -> int:
    if not data:
        raise _corrupt("ext 1 (int) with an empty payload")
    v = int.from_bytes(data, "big", signed=True)
    if _I64_MIN <= v <= _U64_MAX:
        raise _corrupt("ext 1 (int) holds a value that fits a MessagePack int")
    if len(data) != (v if v >= 0 else ~v).bit_length() // 8 + 1:
        raise _corrupt("ext 1 (int) is not of minimal length")
    return v


_tz_cache: dict[int, _dt.timezone] = {}


def _tz(off_us: int) -> _dt.timezone:
    tz = _tz_cache.get(off_us)
    if tz is None:
        if not -_DAY_US < off_us < _DAY_US:
            raise _corrupt(f"UTC offset {off_us} us is not within one day")
        tz = _dt.timezone(_dt.timedelta(microseconds=off_us))
        if len(_tz_cache) < 512:
            _tz_cache[off_us] = tz
    return tz


def _dec_datetime(data: bytes) -> _dt.datetime:
    n = len(data)
    if n != 11 and n != 19:
        raise _corrupt(f"ext 5 (datetime) payload is {n} bytes, expected 11 or 19")
    y, mo, d, h, mi, s, us = _DT.unpack_from(data)
    tz = _tz(_I64.unpack_from(data, 11)[0]) if n == 19 else None
    return _dt.datetime(y, mo, d, h, mi, s, us, tzinfo=tz)


def _dec_date(data: bytes) -> _dt.date:
    if len(data) != 4:
        raise _corrupt(f"ext 6 (date) payload is {len(data)} bytes, expected 4")
    return _dt.date(*_DATE.unpack(data))


def _dec_time(data: bytes) -> _dt.time:
    n = len(data)
    if n != 7 and n != 15:
        raise _corrupt(f"ext 7 (time) payload is {n} bytes, expected 7 or 15")
    h, mi, s, us = _TIME.unpack_from(data)
    tz = _tz(_I64.unpack_from(data, 7)[0]) if n == 15 else None
    return _dt.time(h, mi, s, us, tzinfo=tz)


def _dec_timedelta(data: bytes) -> _dt.timedelta:
    if len(data) != 12:
        raise _corrupt(f"ext 8 (timedelta) payload is {len(data)} bytes, expected 12")
    days, secs, us = _TD.unpack(data)
    if not (0 <= secs < 86_400 and 0 <= us < 1_000_000):
        raise _corrupt("ext 8 (timedelta) seconds or microseconds out of range")
    return _dt.timedelta(days, secs, us)


def _dec_uuid(data: bytes) -> uuid.UUID:
    if len(data) != 16:
        raise _corrupt(f"ext 9 (UUID) payload is {len(data)} bytes, expected 16")
    return uuid.UUID(bytes=data)


def _dec_decimal(data: bytes) -> decimal.Decimal:
    try:
        s = data.decode("ascii")
        d = decimal.Decimal(s)
    except Exception:
        raise _corrupt("ext 10 (Decimal) payload is not a decimal number") from None
    if _decimal_str(d) != s:
        raise _corrupt(f"ext 10 (Decimal) payload {s!r} is not in canonical form")
    return d


def _dec_ndarray(data: bytes) -> Any:
    try:
        import numpy as np
    except ImportError:
        raise _corrupt("ext 11 (numpy.ndarray) needs numpy, which is not installed") from None
    _ANY_LEAF.add(np.ndarray)
    n = len(data)
    if n < 2:
        raise _corrupt("ext 11 (numpy.ndarray) payload too short")
    pos = 1 + data[0]
    if pos + 1 > n:
        raise _corrupt("ext 11 (numpy.ndarray) dtype runs past the payload")
    dstr = data[1:pos].decode("ascii", "replace")
    if not _DTYPE_RE.fullmatch(dstr):
        raise _corrupt(f"ext 11 (numpy.ndarray) dtype {dstr!r} is not allowed")
    try:
        dt = np.dtype(dstr)
    except Exception:
        raise _corrupt(f"ext 11 (numpy.ndarray) dtype {dstr!r} is not valid") from None
    if dt.str != dstr or dt.kind not in _NP_KINDS or dt.itemsize == 0:
        raise _corrupt(f"ext 11 (numpy.ndarray) dtype {dstr!r} is not allowed")
    ndim = data[pos]
    pos += 1
    if ndim > _MAX_NDIM:
        raise _corrupt(f"ext 11 (numpy.ndarray) has {ndim} dimensions (at most {_MAX_NDIM})")
    end = pos + 8 * ndim
    if end > n:
        raise _corrupt("ext 11 (numpy.ndarray) shape runs past the payload")
    shape = struct.unpack_from(f">{ndim}Q", data, pos)
    count = 1
    for dim in shape:
        if dim > 0x7FFF_FFFF_FFFF_FFFF:
            raise _corrupt("ext 11 (numpy.ndarray) dimension too large")
        count *= dim
    # The size check comes before any allocation: the shape is untrusted.
    if n - end != count * dt.itemsize:
        raise _corrupt(
            f"ext 11 (numpy.ndarray) shape {shape} of {dstr} needs "
            f"{count * dt.itemsize} data bytes, payload has {n - end}"
        )
    if count == 0:
        return np.empty(shape, dt)
    arr = np.frombuffer(bytearray(memoryview(data)[end:]), dtype=dt).reshape(shape)
    if dt.kind == "b" and bool((arr.view(np.uint8) > 1).any()):
        raise _corrupt("ext 11 (numpy.ndarray) bool data holds bytes other than 0 and 1")
    return arr


def _dec_ref(data: bytes) -> _RawRef:
    v = _unpackb(data, raw=False, strict_map_key=False, ext_hook=_no_ext, use_list=True)
    if type(v) is not list or len(v) != 3:
        raise _corrupt("ext 12 (reference) payload is not an array of 3 elements")
    c, p, o = v
    if (
        type(c) is not str
        or type(p) is not int
        or not 0 <= p <= _U32_MAX
        or not ((type(o) is int and 0 <= o <= _U64_MAX) or type(o) is str)
    ):
        raise _corrupt("ext 12 (reference) payload is not [str, u32, u64 or str]")
    return _RawRef(c, p, o)


_EXT_DECODERS: dict[int, Callable[[bytes], Any]] = {
    EXT_BIGINT: _dec_bigint,
    EXT_TUPLE: lambda data: _Deferred(EXT_TUPLE, data),
    EXT_SET: lambda data: _Deferred(EXT_SET, data),
    EXT_FROZENSET: lambda data: _Deferred(EXT_FROZENSET, data),
    EXT_DATETIME: _dec_datetime,
    EXT_DATE: _dec_date,
    EXT_TIME: _dec_time,
    EXT_TIMEDELTA: _dec_timedelta,
    EXT_UUID: _dec_uuid,
    EXT_DECIMAL: _dec_decimal,
    EXT_NDARRAY: _dec_ndarray,
    EXT_REF: _dec_ref,
}


def _ext_hook(code: int, data: bytes) -> Any:
    dec = _EXT_DECODERS.get(code)
    if dec is None:
        raise _corrupt(f"unknown extension type {code}")
    return dec(data)


# The native decoder builds tuples, sets and frozensets itself (with raw elements); the
# Python one defers their payloads. Hint code sees either through these two functions.
_NATIVE_EXT_CODES: dict[type, int] = {tuple: EXT_TUPLE, set: EXT_SET, frozenset: EXT_FROZENSET}


def _ext_code(raw: Any) -> int | None:
    """The ext code of a raw tuple/set/frozenset (deferred or native), else None."""
    if type(raw) is _Deferred:
        return int(raw.code)
    return _NATIVE_EXT_CODES.get(type(raw))


def _ext_items(raw: Any) -> list[Any]:
    if type(raw) is _Deferred:
        return _unpack_items(raw)
    return list(raw)


def _unpack_items(raw: _Deferred) -> list[Any]:
    items = _unpackb(raw.data, raw=False, strict_map_key=False, ext_hook=_ext_hook, use_list=True)
    if type(items) is not list:
        raise _corrupt(f"ext {raw.code} payload is not an array")
    return items


def _build_set(items: list[Any], frozen: bool) -> Any:
    try:
        s = frozenset(items) if frozen else set(items)
    except TypeError:
        raise _corrupt("set element is not hashable") from None
    if len(s) != len(items):
        raise _corrupt("set holds the same element twice")
    return s


# --------------------------------------------------------------------------- convert (Any)
# "Converting" turns what msgpack.unpackb returned into the final value for a hint.


def _conv_any(raw: Any, depth: int) -> Any:
    t = type(raw)
    if t in _ANY_LEAF:
        return raw
    if depth >= MAX_DEPTH:
        raise _too_deep()
    d = depth + 1
    if t is list:
        if _ANY_LEAF.issuperset(map(type, raw)):
            return raw
        return [_conv_any(x, d) for x in raw]
    if t is dict:
        if _KEY_TYPES.issuperset(map(type, raw)) and _ANY_LEAF.issuperset(map(type, raw.values())):
            return raw
        return {_conv_key_any(k): _conv_any(x, d) for k, x in raw.items()}
    code = _ext_code(raw)
    if code is not None:
        if t is not _Deferred and _ANY_LEAF.issuperset(map(type, raw)):
            return raw  # built by the native decoder, nothing left to convert
        items = [_conv_any(x, d) for x in _ext_items(raw)]
        if code == EXT_TUPLE:
            return tuple(items)
        return _build_set(items, code == EXT_FROZENSET)
    if t is _RawRef:
        return _ref_factory(raw.cls_id, raw.partition_id, raw.object_id)
    if _is_ndarray_type(t):
        return raw
    raise _corrupt(f"unexpected {_describe_raw(raw)}")


def _conv_key_any(k: Any) -> Any:
    tk = type(k)
    if tk is not str and tk is not int:
        raise _corrupt(f"map key of type {tk.__name__!r} (keys must be str or int)")
    return k


# --------------------------------------------------------------------------- FieldType


def _where(owner: str, field: str) -> str:
    if owner and field:
        return f"{owner}.{field}"
    return owner or field or "value"


def _pydantic_reason(e: pydantic.ValidationError) -> str:
    parts = []
    for err in e.errors(include_url=False)[:3]:
        loc = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    more = e.error_count() - len(parts)
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


class FieldType:
    """A compiled type hint: converts, encodes and decodes values of one field.

    Get one with :func:`field_type` (cached per hint); do not construct directly.

    Attributes:
        hint: the type hint it was compiled from.
        mutable: True when a value of this type can change in place (list, dict, set,
            bytearray, memoryview, model, dataclass, ndarray, ``Any`` and any container or
            union holding one); the object layer re-encodes such fields at commit.
        passthrough_types: exact types whose values ``coerce`` returns unchanged without
            any check (for ``int``: ``{int}``); a caller may skip ``coerce`` for them.

    ``encode(value) -> bytes`` and ``decode(data, *, zero_copy=False) -> value`` are
    documented at :meth:`_encode_slow` and :meth:`_decode_slow`, which they are without
    the extension; when it is importable they are its methods (``Coder.install``: one
    call into the extension, no Python frame), which use the type's native ``Coder``
    while the native backend is active and hand calls to those two otherwise. Both raise
    the same errors.
    """

    __slots__ = (
        "__weakref__",
        "hint",
        "mutable",
        "passthrough_types",
        "_name",
        "_prep",
        "_conv",
        "_pexact",
        "_cexact",
        "_shapes",
        "_record",
        "_pyd",
        "_convert",
        "_adapter",
        "_any",
        "_struct",
        "_plan",
        "_coder",
        "_ncoder",
    )

    hint: Any
    mutable: bool
    passthrough_types: frozenset[type]

    def __init__(self, hint: Any) -> None:
        self.hint = hint
        self.mutable = True
        self.passthrough_types = frozenset()
        self._name = _hint_name(hint)
        # _prep(value, depth) -> packable tree; values whose exact type is in _pexact
        # are packable as they are.
        self._prep: Callable[[Any, int], Any] = _prep_any
        # _conv(raw, depth) -> value; raw values whose exact type is in _cexact are final.
        self._conv: Callable[[Any, int], Any] = _conv_any
        self._pexact: frozenset[type] | set[type] = frozenset()
        self._cexact: frozenset[type] | set[type] = frozenset()
        # Raw shapes decode accepts (types; ("ext", code) for tuple/set/frozenset);
        # None: any. Used to pick a Union arm.
        self._shapes: frozenset[Any] | None = None
        # Field names of a model/dataclass hint (Union arm choice), else None.
        self._record: frozenset[str] | None = None
        self._pyd: Any = hint  # the hint given to pydantic for coercion
        self._convert: Callable[[FieldType, Any, str], Any] = _convert_pydantic
        self._adapter: TypeAdapter[Any] | None = None
        # True for Any-like hints: the native codec then handles the value entirely.
        self._any = False
        # What the native encoder may check itself (see _plan_desc): ("list", elem),
        # ("dict", key types, val), ("record", cls, fields), ("union",), ("wrapper", inner)
        # or ("exact",); None: only Python's _prep knows.
        self._struct: tuple[Any, ...] | None = None
        self._plan: Any = None  # (native codec, compiled plan) for the active backend
        self._coder: Any = None  # (native codec, its Coder for this type), see _install
        self._ncoder: Any = None  # that Coder, read by the native encode/decode methods

    def __repr__(self) -> str:
        return f"FieldType({self._name})"

    def coerce(self, value: Any, *, owner: str = "", field: str = "") -> Any:
        """Check and convert a value assigned to a field of this type.

        Returns the value to store: ``value`` itself when it already has the field's type,
        else the conversion pydantic's lax mode makes (``"12"`` -> ``12`` for ``int``, a
        dict -> the model). ``owner`` and ``field`` (class and field name) only go into
        error messages.

        Raises:
            TypeError: ``value`` is, or holds, a value of a type the codec cannot store
                (the message names owner.field and the type).
            ValidationError: ``value`` cannot be converted to the field's type (the
                message names owner.field, the value's type and pydantic's reason).
        """
        if type(value) in self.passthrough_types:
            return value
        where = _where(owner, field)
        try:
            _check(value, 0)
        except _Unsupported as e:
            raise TypeError(f"{where}: {e}") from None
        except _TooDeep as e:
            raise ValidationError(f"{where}: {e}") from None
        return self._convert(self, value, where)

    def _encode_slow(self, value: Any) -> bytes:
        """``encode``: a value of this type to its bytes (``docs/format.md``, "State codec").

        Raises:
            TypeError: ``value`` is, or holds, a value of an unsupported type.
            SerializationError: the value cannot be represented (a str with lone
                surrogates, a dict key that is not str or int, a numpy array of dtype
                object, containers nested more than ``MAX_DEPTH`` deep, ...) or does not
                match the hint (so that decoding it again would fail).
        """
        try:
            nc = _native_codec
            if nc is not None:
                self._install(nc)
                if self._any or type(value) in self._pexact:
                    return nc.encode(value)
                plans = self._plan
                if plans is None or plans[0] is not nc:
                    plans = self._native_plans(nc)
                return nc.encode_plan(value, plans[1])
            if type(value) not in self._pexact:
                value = self._prep(value, 0)
            try:
                p = _pool.pop()
            except IndexError:
                p = _new_packer()
            try:
                return p.pack(value)
            finally:
                _pool.append(p)
        except Exception as e:
            raise self._encode_error(e) from (None if isinstance(e, _Mismatch) else e)

    def _install(self, nc: Any) -> None:
        """Give ``encode``/``decode`` the native coder of codec ``nc`` (built once)."""
        c = self._coder
        if c is None or c[0] is not nc:
            _, plan, dplan = self._native_plans(nc)
            coder = nc.coder(
                weakref.ref(self), tuple(self._pexact), self._any, plan, dplan, ZERO_COPY_MIN
            )
            c = self._coder = (nc, coder)
        self._ncoder = c[1]

    def _encode_failed(self, e: BaseException) -> BaseException:
        """What ``encode`` raises for ``e`` (the native coder's errors go through this)."""
        if not isinstance(e, Exception):
            return e
        err = self._encode_error(e)
        if err is not e:
            err.__context__ = e
        err.__cause__ = None if isinstance(e, _Mismatch) else e
        return err

    def _decode_failed(self, e: BaseException) -> BaseException:
        """What ``decode`` raises for ``e`` (the native coder's errors go through this)."""
        if not isinstance(e, Exception):
            return e
        err = SerializationError(f"cannot decode {self._name}: {e}")
        err.__context__ = err.__cause__ = e
        return err

    def _native_plan(self, nc: Any) -> Any:
        """The compiled encode plan for codec ``nc`` (built once per codec)."""
        return self._native_plans(nc)[1]

    def _native_plans(self, nc: Any) -> tuple[Any, Any, Any]:
        cached = self._plan
        if cached is None or cached[0] is not nc:
            cached = self._plan = (
                nc,
                nc.plan(_plan_desc(self, set())),
                nc.decode_plan(_decode_plan_desc(self, set())),
            )
        return cached

    def _encode_error(self, e: Exception) -> Exception:
        if isinstance(e, _Mismatch):
            return SerializationError(f"cannot encode as {self._name}: {e}")
        if isinstance(e, (SerializationError, TypeError)):
            return e
        if isinstance(e, RecursionError):
            return _too_deep()
        return SerializationError(f"cannot encode as {self._name}: {e}")

    def _decode_slow(
        self, data: bytes | bytearray | memoryview, *, zero_copy: bool = False
    ) -> Any:
        """``decode``: bytes produced by ``encode`` for this type -> the value.

        ``data`` is read through the buffer protocol without a copy (any C-contiguous
        buffer). ``zero_copy=True`` (native backend only; the Python backend ignores it):
        bin values and ndarray data of at least :data:`ZERO_COPY_MIN` bytes come back as
        read-only views into ``data`` (a ``memoryview`` for ``bytes``/``memoryview``/``Any``
        hints, a read-only array for ndarrays) instead of copies; they keep ``data`` alive.

        Raises:
            SerializationError: for any malformed, truncated or trailing input, or a value
                that does not fit the hint. No other exception type escapes, and nothing
                named by the data is imported or called.
        """
        try:
            nc = _native_codec
            if nc is not None:
                self._install(nc)
                view_min = ZERO_COPY_MIN if zero_copy else 0
                if self._any:
                    return nc.decode(data, _ref_factory, view_min)
                plans = self._plan
                if plans is None or plans[0] is not nc:
                    plans = self._native_plans(nc)
                return nc.decode_with(data, plans[2], _ref_factory, view_min)
            else:
                raw = _unpackb(
                    data, raw=False, strict_map_key=False, ext_hook=_ext_hook, use_list=True
                )
            if type(raw) in self._cexact:
                return raw
            return self._conv(raw, 0)
        except Exception as e:
            raise SerializationError(f"cannot decode {self._name}: {e}") from e

    # Without the extension these are the methods; ``Coder.install`` (``set_backend``)
    # replaces them with the native ones.
    encode = _encode_slow
    decode = _decode_slow


def _convert_pydantic(ft: FieldType, value: Any, where: str) -> Any:
    adapter = ft._adapter
    if adapter is None:
        adapter = _make_adapter(ft)
        if adapter is None:
            return _convert_by_prep(ft, value, where)
    try:
        return adapter.validate_python(value)
    except pydantic.ValidationError as e:
        raise ValidationError(
            f"{where}: cannot convert a value of type {type(value).__name__!r} to "
            f"{ft._name}: {_pydantic_reason(e)}"
        ) from e


def _make_adapter(ft: FieldType) -> TypeAdapter[Any] | None:
    try:
        ft._adapter = TypeAdapter(ft._pyd)
    except Exception:
        try:
            ft._adapter = TypeAdapter(
                ft._pyd, config=pydantic.ConfigDict(arbitrary_types_allowed=True)
            )
        except Exception:
            return None
    return ft._adapter


def _convert_by_prep(ft: FieldType, value: Any, where: str) -> Any:
    # Only for hints pydantic cannot build a validator for: accept exactly what encode takes.
    try:
        ft._prep(value, 0)
    except (SerializationError, TypeError) as e:
        raise ValidationError(
            f"{where}: cannot convert a value of type {type(value).__name__!r} to {ft._name}: {e}"
        ) from e
    return value


def _convert_any(ft: FieldType, value: Any, where: str) -> Any:
    return value


def _convert_record(ft: FieldType, value: Any, where: str) -> Any:
    if type(value) is ft.hint:
        return value
    return _convert_pydantic(ft, value, where)


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


# --------------------------------------------------------------------------- compiling

_cache: dict[Any, FieldType] = {}
_lock = threading.RLock()
_MODEL_VALIDATE_BY_NAME = "by_name" in inspect.signature(BaseModel.model_validate).parameters


def field_type(hint: Any) -> FieldType:
    """Compile a type hint into a :class:`FieldType` (cached per hint).

    ``Any``, ``object`` and unannotated fields take any supported value. Model and
    dataclass field hints the codec does not know are treated as ``Any`` (their values
    still have to be of supported types).

    Raises:
        TypeError: the hint itself is unsupported (for example ``socket.socket``, a
            forward reference given as a string, or ``dict`` keys other than str/int);
            the message names the hint.
    """
    try:
        ft = _cache.get(hint)
    except TypeError:  # unhashable hint (e.g. Annotated with a list): compiled uncached
        ft = None
    if ft is not None:
        return ft
    with _lock:
        # Compiled types are published only when complete: other threads read _cache
        # without the lock.
        new: dict[Any, FieldType] = {}
        try:
            ft = _compile(hint, new)
        except _UnsupportedHint as e:
            if e.hint is hint:
                raise TypeError(str(e)) from None
            raise TypeError(f"in field type {_hint_name(hint)!r}: {e}") from None
        _cache.update(new)
        return ft


def _compile(hint: Any, new: dict[Any, FieldType]) -> FieldType:
    try:
        ft = _cache.get(hint) or new.get(hint)
        hashable = True
    except TypeError:
        ft, hashable = None, False
    if ft is not None:
        return ft
    ft = FieldType(hint)
    if hashable:
        # Registered before filling so that a model referring to itself finds it.
        new[hint] = ft
    _fill(ft, hint, new)
    return ft


def _compile_lenient(hint: Any, new: dict[Any, FieldType]) -> FieldType:
    mark = len(new)
    try:
        return _compile(hint, new)
    except TypeError:
        for h in list(new)[mark:]:
            del new[h]
        return _compile(Any, new)


_SCALAR_HINTS = (int, float, bool, str, bytes, bytearray, memoryview, _NoneType)
_EXT_SCALAR_HINTS: dict[type, Callable[[Any], Any]] = {
    _dt.datetime: _ext_datetime,
    _dt.date: _ext_date,
    _dt.time: _ext_time,
    _dt.timedelta: _ext_timedelta,
    uuid.UUID: _ext_uuid,
    decimal.Decimal: _ext_decimal,
}


def _fill(ft: FieldType, hint: Any, new: dict[Any, FieldType]) -> None:
    if hint is Any or hint is object:
        _fill_any(ft)
        return
    if hint is None:
        hint = _NoneType
    if hint in _SCALAR_HINTS:
        _fill_scalar(ft, hint)
        return
    if isinstance(hint, type) and hint in _EXT_SCALAR_HINTS:
        _fill_ext_scalar(ft, hint)
        return
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Annotated:
        _fill_wrapper(ft, _compile(args[0], new), annotated=True)
        return
    if isinstance(hint, typing.NewType):
        _fill_wrapper(ft, _compile(hint.__supertype__, new), annotated=False)
        return
    if origin is Union or origin is types.UnionType:
        _fill_union(ft, [_compile(a, new) for a in args])
        return
    if origin is Literal:
        _fill_literal(ft, args)
        return
    if hint is typing.Tuple:  # noqa: UP006 - bare typing.Tuple has args () like tuple[()]
        hint, origin, args = tuple, tuple, ()
    container = origin if origin is not None else hint
    if container in (list, set, frozenset):
        elem = _compile(args[0] if args else Any, new)
        if container is list:
            _fill_list(ft, elem)
        else:
            _fill_set(ft, elem, frozen=container is frozenset)
        return
    if container is dict:
        key = _compile(args[0] if args else Any, new)
        if not (key._pyd is Any or (key._shapes is not None and key._shapes <= {str, int})):
            raise _UnsupportedHint(hint, "dict keys must be str or int")
        _fill_dict(ft, key, _compile(args[1] if args else Any, new))
        return
    if container is tuple:
        if hint is tuple:
            _fill_tuple(ft, _compile(Any, new), None)
        elif len(args) == 2 and args[1] is Ellipsis:
            _fill_tuple(ft, _compile(args[0], new), None)
        else:
            _fill_tuple(ft, None, [_compile(a, new) for a in args])
        return
    nd = sys.modules.get("numpy")
    if nd is not None and (hint is nd.ndarray or origin is nd.ndarray):
        _fill_ndarray(ft)
        return
    if isinstance(hint, type) and origin is None:
        if hasattr(hint, "__oaas_from_identity__") or hasattr(hint, "__oaas_identity__"):
            _fill_ref(ft, hint)
            return
        if issubclass(hint, enum.Enum):
            _fill_enum(ft, hint)
            return
        if issubclass(hint, BaseModel):
            _fill_model(ft, hint, new)
            return
        if dataclasses.is_dataclass(hint):
            _fill_dataclass(ft, hint, new)
            return
    raise _UnsupportedHint(hint)


def _fill_any(ft: FieldType) -> None:
    ft._any = True
    ft._pexact = _PLAIN_TYPES
    ft._cexact = _ANY_LEAF
    ft.passthrough_types = frozenset(_LEAF_TYPES)
    ft._shapes = None
    ft._pyd = Any
    ft._convert = _convert_any


def _fill_scalar(ft: FieldType, t: type) -> None:
    ft.mutable = t is bytearray or t is memoryview
    name = _hint_name(t)
    if t is int:

        def prep(v: Any, depth: int) -> Any:
            if isinstance(v, int) and not isinstance(v, bool):
                return int.__int__(v)
            raise _mismatch(v, name)

        def conv(raw: Any, depth: int) -> Any:
            raise _shape_error(raw, name)

        ft._pexact = ft._cexact = ft._shapes = frozenset({int})
    elif t is float:

        def prep(v: Any, depth: int) -> Any:
            if isinstance(v, float):
                return float.__float__(v)
            if isinstance(v, int) and not isinstance(v, bool):
                return int.__int__(v)
            raise _mismatch(v, name)

        def conv(raw: Any, depth: int) -> Any:
            if type(raw) is int:  # stored before the field became a float
                return float(raw)
            raise _shape_error(raw, name)

        ft._pexact = frozenset({float, int})
        ft._cexact = frozenset({float})
        ft._shapes = frozenset({float, int})
    elif t is str:

        def prep(v: Any, depth: int) -> Any:
            if isinstance(v, str):
                return str.__str__(v)
            raise _mismatch(v, name)

        def conv(raw: Any, depth: int) -> Any:
            raise _shape_error(raw, name)

        ft._pexact = ft._cexact = ft._shapes = frozenset({str})
    elif t is bool or t is _NoneType:

        def prep(v: Any, depth: int) -> Any:
            raise _mismatch(v, name)

        def conv(raw: Any, depth: int) -> Any:
            raise _shape_error(raw, name)

        ft._pexact = ft._cexact = ft._shapes = frozenset({t})
    else:  # bytes, bytearray, memoryview: all encode as bin; decode gives the hint's type
        makers: dict[Any, Callable[[bytes], Any]] = {
            bytes: bytes,
            bytearray: bytearray,
            memoryview: lambda b: memoryview(bytearray(b)),
        }
        make = makers[t]

        def prep(v: Any, depth: int) -> Any:
            if isinstance(v, (bytes, bytearray)):
                return bytes(v)
            raise _mismatch(v, name)

        def conv(raw: Any, depth: int) -> Any:
            if type(raw) is bytes:
                return make(raw)
            if type(raw) is memoryview:  # decode(zero_copy=True): keep the view
                return raw if t is not bytearray else bytearray(raw)
            raise _shape_error(raw, name)

        ft._pexact = frozenset({bytes, bytearray, memoryview})
        ft._cexact = frozenset({bytes}) if t is bytes else frozenset()
        ft._shapes = frozenset({bytes})
        ft._pyd = Annotated[Any, PlainValidator(_bytes_validator(t))]
    ft._prep, ft._conv = prep, conv
    ft.passthrough_types = frozenset({t})
    ft._struct = ("exact",)


def _bytes_validator(t: type) -> Callable[[Any], Any]:
    def validate(v: Any) -> Any:
        if isinstance(v, (bytes, bytearray, memoryview)):
            if t is memoryview:
                return v if isinstance(v, memoryview) else memoryview(v)
            return t(v)
        if isinstance(v, str):
            b = v.encode("utf-8")
            return memoryview(b) if t is memoryview else t(b)
        raise ValueError(f"expected bytes, bytearray, memoryview or str, got {type(v).__name__}")

    return validate


def _fill_ext_scalar(ft: FieldType, t: type) -> None:
    name = _hint_name(t)
    make = _EXT_SCALAR_HINTS[t]
    is_date = t is _dt.date

    def prep(v: Any, depth: int) -> Any:
        if isinstance(v, t) and not (is_date and isinstance(v, _dt.datetime)):
            # The native encoder writes these types itself (subclasses via _prep_any).
            return v if _native_codec is not None else make(v)
        raise _mismatch(v, name)

    def conv(raw: Any, depth: int) -> Any:
        raise _shape_error(raw, name)

    ft.mutable = False
    ft._prep, ft._conv = prep, conv
    ft._cexact = ft._shapes = ft.passthrough_types = frozenset({t})
    ft._struct = ("exact", t)


def _fill_wrapper(ft: FieldType, inner: FieldType, annotated: bool) -> None:
    # Late-bound calls: `inner` may be a model still being compiled.
    ft._prep = lambda v, d: inner._prep(v, d)
    ft._struct = ("wrapper", inner)
    ft._conv = lambda raw, d: inner._conv(raw, d)
    ft._pexact, ft._cexact, ft._shapes = inner._pexact, inner._cexact, inner._shapes
    ft._record = inner._record
    ft.mutable = inner.mutable
    ft._any = inner._any
    hint = ft.hint
    if annotated:
        ft.passthrough_types = frozenset()  # constraints (Field(gt=0), ...) must run
        meta = typing.get_args(hint)[1:]
        ft._pyd = hint if inner._pyd is inner.hint else Annotated[(inner._pyd, *meta)]
        ft._convert = _convert_pydantic
    else:
        ft.passthrough_types = inner.passthrough_types
        ft._pyd = hint if inner._pyd is inner.hint else inner._pyd
        ft._convert = inner._convert


def _fill_union(ft: FieldType, arms: list[FieldType]) -> None:
    if any(a.hint is Any or a.hint is object for a in arms):
        _fill_any(ft)
        return
    name = ft._name
    pexact = frozenset().union(*(a._pexact for a in arms))
    record_arms = [a for a in arms if a._record is not None]

    def prep(v: Any, depth: int) -> Any:
        unsupported: Exception | None = None
        for arm in arms:
            if type(v) in arm._pexact:
                return v
        for arm in arms:
            try:
                return arm._prep(v, depth)
            except _Mismatch:
                continue
            except _Unsupported as e:
                unsupported = e
        if unsupported is not None:
            raise unsupported
        raise _mismatch(v, name)

    def conv(raw: Any, depth: int) -> Any:
        t = type(raw)
        for arm in arms:
            if t in arm._cexact:
                return raw
        code = _ext_code(raw)
        key: Any = ("ext", code) if code is not None else t
        cands = [a for a in arms if a._shapes is None or key in a._shapes]
        if t is dict and record_arms:
            keys = set(raw)
            for arm in record_arms:
                if arm._record == keys:
                    try:
                        return arm._conv(raw, depth)
                    except SerializationError:
                        pass
        for arm in cands:
            try:
                return arm._conv(raw, depth)
            except SerializationError:
                continue
        raise _shape_error(raw, name)

    ft._prep, ft._conv, ft._pexact = prep, conv, pexact
    ft._struct = ("exact",)
    ft._cexact = frozenset().union(*(a._cexact for a in arms))
    ft.passthrough_types = frozenset().union(*(a.passthrough_types for a in arms))
    shapes: frozenset[Any] | None = frozenset()
    for a in arms:
        shapes = None if shapes is None or a._shapes is None else shapes | a._shapes
    ft._shapes = shapes
    ft.mutable = any(a.mutable for a in arms)
    if all(a._pyd is a.hint for a in arms):
        ft._pyd = ft.hint
    else:
        ft._pyd = Union[tuple(a._pyd for a in arms)]  # noqa: UP007 - built at run time


def _shape_of(v: Any) -> Any:
    t = type(v)
    if t is tuple:
        return ("ext", EXT_TUPLE)
    if t is set:
        return ("ext", EXT_SET)
    if t is frozenset:
        return ("ext", EXT_FROZENSET)
    if t in _ANY_LEAF or t is list or t is dict:
        return t
    return None


def _fill_enum(ft: FieldType, cls: type[enum.Enum]) -> None:
    name = ft._name
    shapes: set[Any] = set()
    for member in cls:
        try:
            _check(member.value, 0)
        except (TypeError, SerializationError):
            raise _UnsupportedHint(cls, "an enum value has an unsupported type") from None
        shapes.add(_shape_of(member.value))

    def prep(v: Any, depth: int) -> Any:
        if isinstance(v, cls):
            return _prep_any(v.value, depth)
        raise _mismatch(v, name)

    def conv(raw: Any, depth: int) -> Any:
        value = raw if type(raw) in _ANY_LEAF else _conv_any(raw, depth)
        try:
            return cls(value)
        except Exception:
            raise _Mismatch(f"{value!r} is not a value of {name}") from None

    ft._prep, ft._conv = prep, conv
    ft._shapes = None if None in shapes else frozenset(shapes)
    ft.passthrough_types = frozenset({cls})
    ft.mutable = False


_LITERAL_TYPES = (str, int, bool, bytes, _NoneType)


def _fill_literal(ft: FieldType, values: tuple[Any, ...]) -> None:
    name = ft._name
    by_raw: dict[tuple[type, Any], Any] = {}
    for lv in values:
        enc = lv.value if isinstance(lv, enum.Enum) else lv
        if type(enc) not in _LITERAL_TYPES:
            raise _UnsupportedHint(ft.hint, "Literal values must be str, int, bool, bytes or None")
        by_raw[(type(enc), enc)] = lv

    def prep(v: Any, depth: int) -> Any:
        for lv in values:
            if type(v) is type(lv) and v == lv:
                return _prep_any(v, depth)
        raise _mismatch(v, name)

    def conv(raw: Any, depth: int) -> Any:
        try:
            return by_raw[(type(raw), raw)]
        except (KeyError, TypeError):
            raise _shape_error(raw, name) from None

    ft._prep, ft._conv = prep, conv
    ft._shapes = frozenset(t for t, _ in by_raw)
    ft.mutable = False


def _fill_list(ft: FieldType, elem: FieldType) -> None:
    name = ft._name

    def prep(v: Any, depth: int) -> Any:
        if type(v) is not list:
            if not isinstance(v, list):
                raise _mismatch(v, name)
            v = list(v)
        if depth >= MAX_DEPTH:
            raise _too_deep()
        ex = elem._pexact
        if ex.issuperset(map(type, v)):
            return v
        d, p = depth + 1, elem._prep
        return [x if type(x) in ex else p(x, d) for x in v]

    def conv(raw: Any, depth: int) -> Any:
        if type(raw) is not list:
            raise _shape_error(raw, name)
        if depth >= MAX_DEPTH:
            raise _too_deep()
        ex = elem._cexact
        if ex.issuperset(map(type, raw)):
            return raw
        d, c = depth + 1, elem._conv
        return [x if type(x) in ex else c(x, d) for x in raw]

    ft._prep, ft._conv = prep, conv
    ft._struct = ("list", elem)
    ft._shapes = frozenset({list})
    ft.mutable = True
    ft._pyd = ft.hint if elem._pyd is elem.hint else list[elem._pyd]  # type: ignore[name-defined]


def _fill_dict(ft: FieldType, key: FieldType, val: FieldType) -> None:
    name = ft._name
    any_key = key._pyd is Any
    kprep, kconv = key._prep, key._conv
    # Key types that are final as they are (key hints are never recursive, so their
    # sets are complete here).
    kfast = _KEY_TYPES if any_key else _KEY_TYPES & key._pexact
    kcfast = _KEY_TYPES if any_key else _KEY_TYPES & key._cexact

    def prep_key(k: Any, depth: int) -> Any:
        if any_key:
            return _prep_key_any(k)
        out = kprep(k, depth)
        if type(out) is not str and type(out) is not int:
            raise _mismatch(k, f"a dict key of type {key._name}")
        return out

    def prep(v: Any, depth: int) -> Any:
        if not isinstance(v, dict):
            raise _mismatch(v, name)
        if depth >= MAX_DEPTH:
            raise _too_deep()
        vex = val._pexact
        if kfast.issuperset(map(type, v)) and vex.issuperset(map(type, v.values())):
            return v if type(v) is dict else dict(v)
        d, p = depth + 1, val._prep
        out = {
            (k if type(k) in kfast else prep_key(k, d)): (x if type(x) in vex else p(x, d))
            for k, x in v.items()
        }
        return _check_keys_distinct(out, v)

    def conv_key(k: Any, depth: int) -> Any:
        tk = type(k)
        if tk is not str and tk is not int:
            raise _corrupt(f"map key of type {tk.__name__!r} (keys must be str or int)")
        if tk in kcfast:
            return k
        return kconv(k, depth)

    def conv(raw: Any, depth: int) -> Any:
        if type(raw) is not dict:
            raise _shape_error(raw, name)
        if depth >= MAX_DEPTH:
            raise _too_deep()
        vex = val._cexact
        if kcfast.issuperset(map(type, raw)) and vex.issuperset(map(type, raw.values())):
            return raw
        d, c = depth + 1, val._conv
        return {conv_key(k, d): (x if type(x) in vex else c(x, d)) for k, x in raw.items()}

    ft._prep, ft._conv = prep, conv
    ft._struct = ("dict", kfast, val, kcfast, kconv)
    ft._shapes = frozenset({dict})
    ft.mutable = True
    if key._pyd is key.hint and val._pyd is val.hint:
        ft._pyd = ft.hint
    else:
        ft._pyd = dict[key._pyd, val._pyd]  # type: ignore[name-defined]


def _fill_tuple(ft: FieldType, elem: FieldType | None, elems: list[FieldType] | None) -> None:
    name = ft._name
    shape_key = ("ext", EXT_TUPLE)

    def prep(v: Any, depth: int) -> Any:
        if not isinstance(v, tuple):
            raise _mismatch(v, name)
        if depth >= MAX_DEPTH:
            raise _too_deep()
        d = depth + 1
        if elems is None:
            assert elem is not None
            ex, p = elem._pexact, elem._prep
            items = [x if type(x) in ex else p(x, d) for x in v]
        else:
            if len(v) != len(elems):
                raise _Mismatch(f"expected {name}, got a tuple of {len(v)} elements")
            items = [
                x if type(x) in e._pexact else e._prep(x, d) for e, x in zip(elems, v, strict=True)
            ]
        return _ExtType(EXT_TUPLE, _pack(items))

    def conv(raw: Any, depth: int) -> Any:
        if _ext_code(raw) != EXT_TUPLE:
            raise _shape_error(raw, name)
        if depth >= MAX_DEPTH:
            raise _too_deep()
        items = _ext_items(raw)
        d = depth + 1
        if elems is None:
            assert elem is not None
            ex, c = elem._cexact, elem._conv
            return tuple([x if type(x) in ex else c(x, d) for x in items])
        if len(items) != len(elems):
            raise _Mismatch(f"expected {name}, found a tuple of {len(items)} elements")
        return tuple(
            [
                x if type(x) in e._cexact else e._conv(x, d)
                for e, x in zip(elems, items, strict=True)
            ]
        )

    ft._prep, ft._conv = prep, conv
    ft._shapes = frozenset({shape_key})
    parts = [elem] if elems is None else elems
    assert all(p is not None for p in parts)
    ft.mutable = any(p.mutable for p in parts if p is not None)
    if all(p is not None and p._pyd is p.hint for p in parts):
        ft._pyd = ft.hint
    elif elems is None:
        assert elem is not None
        ft._pyd = tuple[elem._pyd, ...]  # type: ignore[name-defined]
    else:
        ft._pyd = tuple[tuple(e._pyd for e in elems)]  # type: ignore[misc]


def _fill_set(ft: FieldType, elem: FieldType, frozen: bool) -> None:
    name = ft._name
    code = EXT_FROZENSET if frozen else EXT_SET
    base = frozenset if frozen else set

    def prep(v: Any, depth: int) -> Any:
        if not isinstance(v, base):
            raise _mismatch(v, name)
        if depth >= MAX_DEPTH:
            raise _too_deep()
        d, ex, p = depth + 1, elem._pexact, elem._prep
        return _pack_set(code, [x if type(x) in ex else p(x, d) for x in v])

    def conv(raw: Any, depth: int) -> Any:
        if _ext_code(raw) != code:
            raise _shape_error(raw, name)
        if depth >= MAX_DEPTH:
            raise _too_deep()
        d, ex, c = depth + 1, elem._cexact, elem._conv
        return _build_set([x if type(x) in ex else c(x, d) for x in _ext_items(raw)], frozen)

    ft._prep, ft._conv = prep, conv
    ft._shapes = frozenset({("ext", code)})
    ft.mutable = not frozen or elem.mutable
    if elem._pyd is elem.hint:
        ft._pyd = ft.hint
    else:
        ft._pyd = frozenset[elem._pyd] if frozen else set[elem._pyd]  # type: ignore[name-defined]


def _fill_ndarray(ft: FieldType) -> None:
    import numpy as np

    name = ft._name

    def prep(v: Any, depth: int) -> Any:
        if type(v) is np.ndarray:
            # The native encoder reads the array's buffer itself.
            return v if _native_codec is not None else _ext_ndarray(v)
        raise _mismatch(v, name)

    def conv(raw: Any, depth: int) -> Any:
        raise _shape_error(raw, name)

    def validate(v: Any) -> Any:
        if type(v) is np.ndarray:
            return v
        raise ValueError(f"expected a numpy.ndarray, got {type(v).__name__}")

    ft._prep, ft._conv = prep, conv
    ft._struct = ("exact", np.ndarray)
    ft._cexact = ft._shapes = frozenset({np.ndarray})
    ft._pyd = Annotated[Any, PlainValidator(validate)]
    ft.mutable = True


def _identity_given(v: Any) -> tuple[str, int, int | str] | None:
    """The identity an assignment to a reference field gives without an object, as
    oaas-sdk2-py accepts: a tuple ``(cls_id, partition_id, object_id)``, a dict with
    ``cls_id``, ``object_id`` and optionally ``partition_id`` (default 0), or an object
    metadata (``cls_id``, ``partition_id``, ``object_id`` attributes). ``None`` for
    anything else. The identity is checked (``ValueError``) when it is resolved."""
    if type(v) is tuple and len(v) == 3 and type(v[0]) is str:
        return (v[0], v[1], v[2])
    if type(v) is dict and "cls_id" in v and "object_id" in v \
            and set(v) <= {"cls_id", "partition_id", "object_id"}:
        return (v["cls_id"], v.get("partition_id", 0), v["object_id"])
    try:
        cls_id, pid, oid = v.cls_id, v.partition_id, v.object_id
    except AttributeError:
        return None
    return (cls_id, pid, oid) if type(cls_id) is str else None


def _fill_ref(ft: FieldType, cls: type) -> None:
    name = ft._name
    from_identity = getattr(cls, "__oaas_from_identity__", None)

    def prep(v: Any, depth: int) -> Any:
        ident = _identity_of(v)
        if ident is None:
            raise _mismatch(v, f"a reference to {name}")
        return _ext_ref(v, ident)

    def conv(raw: Any, depth: int) -> Any:
        if type(raw) is not _RawRef:
            raise _shape_error(raw, f"a reference to {name}")
        make = from_identity if from_identity is not None else _ref_factory
        return make(raw.cls_id, raw.partition_id, raw.object_id)

    def validate(v: Any) -> Any:
        if isinstance(v, cls):
            return v
        ident = _identity_of(v)
        if ident is None:
            ident = _identity_given(v)
        if ident is not None and from_identity is not None:
            try:
                cls_id, pid, oid = ident
            except Exception:
                raise ValueError(f"invalid __oaas_identity__ {ident!r}") from None
            return from_identity(cls_id, pid, oid)
        raise ValueError(f"expected a reference to {name}, got {type(v).__name__}")

    def convert(ft: FieldType, value: Any, where: str) -> Any:
        try:
            return validate(value)
        except ValueError as e:
            raise ValidationError(
                f"{where}: cannot convert a value of type {type(value).__name__!r} to {name}: {e}"
            ) from e

    ft._prep, ft._conv, ft._convert = prep, conv, convert
    ft._shapes = frozenset({_RawRef})
    ft.passthrough_types = frozenset({cls})
    ft._pyd = Annotated[Any, PlainValidator(validate)]
    ft.mutable = False


def _record_prep(ft: FieldType, cls: type, fields: list[tuple[str, FieldType]]) -> Any:
    name = ft._name

    def prep(v: Any, depth: int) -> Any:
        if type(v) is not cls:
            if isinstance(v, cls):  # a subclass: encoded with its own fields
                return field_type(type(v))._prep(v, depth)
            raise _mismatch(v, name)
        if depth >= MAX_DEPTH:
            raise _too_deep()
        d = depth + 1
        out = {}
        for fname, node in fields:
            x = getattr(v, fname)
            if type(x) in node._pexact:
                out[fname] = x
            else:
                try:
                    out[fname] = node._prep(x, d)
                except _Mismatch as e:
                    raise _Mismatch(f"{name}.{fname}: {e}") from None
        return out

    return prep


def _record_collect(name: str, fmap: dict[str, FieldType], raw: Any, depth: int) -> dict[str, Any]:
    if type(raw) is not dict:
        raise _shape_error(raw, name)
    if depth >= MAX_DEPTH:
        raise _too_deep()
    d = depth + 1
    data: dict[str, Any] = {}
    for k, x in raw.items():
        if type(k) is not str:
            raise _corrupt(f"{name} map has a key of type {type(k).__name__!r}")
        node = fmap.get(k)
        if node is None:  # a field this class no longer has, or a model's extra
            data[k] = _conv_any(x, d)
        elif type(x) in node._cexact:
            data[k] = x
        else:
            try:
                data[k] = node._conv(x, d)
            except _Mismatch as e:
                raise _Mismatch(f"{name}.{k}: {e}") from None
    return data


def _fill_model(ft: FieldType, cls: type[BaseModel], new: dict[Any, FieldType]) -> None:
    name = ft._name
    fields: list[tuple[str, FieldType]] = []
    fmap: dict[str, FieldType] = {}
    is_root = issubclass(cls, RootModel)
    validate = cls.model_validate

    def finish(data: dict[str, Any], depth: int) -> Any:
        try:
            if is_root:
                if set(data) != {"root"}:
                    raise _Mismatch(f"{name} map must have the single key 'root'")
                return validate(data["root"])
            if _MODEL_VALIDATE_BY_NAME:
                return validate(data, by_name=True)
            return validate({aliases.get(k, k): x for k, x in data.items()})
        except pydantic.ValidationError as e:
            raise _Mismatch(f"stored value is not a valid {name}: {_pydantic_reason(e)}") from None

    def conv(raw: Any, depth: int) -> Any:
        return finish(_record_collect(name, fmap, raw, depth), depth)

    # Everything a Union or a recursive field looks at is set before the fields compile.
    ft._prep, ft._conv = _record_prep(ft, cls, fields), conv
    ft._struct = ("record", cls, fields, finish)
    ft._shapes = frozenset({dict})
    ft._convert = _convert_record
    ft.mutable = True
    ft._record = frozenset(cls.model_fields)
    # Before pydantic 2.11 model_validate cannot be told to take field names.
    aliases: dict[str, str] = {}
    for fname, finfo in cls.model_fields.items():
        ann = finfo.annotation
        node = _compile_lenient(Any if ann is None else ann, new)
        fields.append((fname, node))
        fmap[fname] = node
        alias = finfo.validation_alias if isinstance(finfo.validation_alias, str) else None
        alias = alias or finfo.alias
        if alias and alias != fname:
            aliases[fname] = alias


def _fill_dataclass(ft: FieldType, cls: type, new: dict[Any, FieldType]) -> None:
    name = ft._name
    fields: list[tuple[str, FieldType]] = []
    fmap: dict[str, FieldType] = {}
    dc_fields = dataclasses.fields(cls)
    init_names = frozenset(f.name for f in dc_fields if f.init)

    def finish(data: dict[str, Any], depth: int) -> Any:
        kwargs = {k: x for k, x in data.items() if k in init_names}
        try:
            return cls(**kwargs)
        except Exception as e:
            raise _Mismatch(f"stored value does not rebuild {name}: {e}") from None

    def conv(raw: Any, depth: int) -> Any:
        return finish(_record_collect(name, fmap, raw, depth), depth)

    ft._prep, ft._conv = _record_prep(ft, cls, fields), conv
    ft._struct = ("record", cls, fields, finish)
    ft._shapes = frozenset({dict})
    ft._convert = _convert_record
    ft.mutable = True
    ft._record = frozenset(f.name for f in dc_fields)
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        hints = {}
    for f in dc_fields:
        ann = hints.get(f.name, f.type)
        node = _compile_lenient(Any if isinstance(ann, str) else ann, new)
        fields.append((f.name, node))
        fmap[f.name] = node


# --------------------------------------------------------------------------- module API


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
        nc = _native_codec
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


# --------------------------------------------------------------------------- backends


def _ndarray_dtype_str(dt: Any) -> bytes:
    """``dtype.str`` in ASCII for an ext 11 header, or SerializationError (docs/format.md)."""
    s = dt.str
    if (
        dt.kind not in _NP_KINDS
        or dt.hasobject
        or dt.fields is not None
        or dt.subdtype is not None
        or dt.itemsize == 0
        or not _DTYPE_RE.fullmatch(s)
    ):
        raise SerializationError(f"cannot encode a numpy array of dtype {dt!s} ({s})")
    return bytes(s.encode("ascii"))


_np_dtypes: dict[str, Any] = {}


def _native_ndarray(dstr: str, shape: tuple[int, ...], data: Any, itemsize: int) -> Any:
    """Ext 11 value from a header the native decoder checked; ``data`` is a bytearray
    (writable copy), a memoryview (zero-copy view) or None (no elements)."""
    try:
        import numpy as np
    except ImportError:
        raise _corrupt("ext 11 (numpy.ndarray) needs numpy, which is not installed") from None
    _ANY_LEAF.add(np.ndarray)
    dt = _np_dtypes.get(dstr)
    if dt is None:
        try:
            dt = np.dtype(dstr)
        except Exception:
            raise _corrupt(f"ext 11 (numpy.ndarray) dtype {dstr!r} is not valid") from None
        if dt.str != dstr or dt.kind not in _NP_KINDS or dt.itemsize == 0:
            raise _corrupt(f"ext 11 (numpy.ndarray) dtype {dstr!r} is not allowed")
        if len(_np_dtypes) < 256:
            _np_dtypes[dstr] = dt
    if dt.itemsize != itemsize:
        raise _corrupt(f"ext 11 (numpy.ndarray) dtype {dstr!r} is not allowed")
    if data is None:
        return np.empty(shape, dt)
    return np.frombuffer(data, dtype=dt).reshape(shape)


def _int_from_be(data: bytes) -> int:
    return int.from_bytes(data, "big", signed=True)


def _plan_desc(ft: FieldType, active: set[int]) -> tuple[Any, ...]:
    """The encode plan of a hint for the native codec, as nested tuples.

    Nodes: ("any",); ("exact", types, prep); ("list", elem, prep); ("dict", key types,
    val, prep); ("record", cls, ((name, node), ...), by_dict, prep) (by_dict: read the
    values from ``__dict__``, for pydantic models); ("python", prep). A value
    whose exact type a node accepts is encoded natively, exactly as ``_prep`` would pass
    it through; anything else goes to that node's ``_prep`` (so errors are Python's).
    """
    if ft._any:
        return ("any",)
    st = ft._struct
    if st is None or id(ft) in active:  # unknown, or a recursive reference
        return ("python", ft._prep)
    active.add(id(ft))
    try:
        kind = st[0]
        if kind == "wrapper":
            return _plan_desc(st[1], active)
        if kind == "exact":
            return ("exact", tuple(ft._pexact) + st[1:], ft._prep)
        if kind == "list":
            return ("list", _plan_desc(st[1], active), ft._prep)
        if kind == "dict":
            return ("dict", tuple(st[1]), _plan_desc(st[2], active), ft._prep)
        if kind == "record":
            fields = tuple((name, _plan_desc(node, active)) for name, node in st[2])
            by_dict = issubclass(st[1], BaseModel)
            return ("record", st[1], fields, by_dict, ft._prep)
        return ("python", ft._prep)
    finally:
        active.discard(id(ft))


def _decode_plan_desc(ft: FieldType, active: set[int]) -> tuple[Any, ...]:
    """The decode plan of a hint for the native codec, as nested tuples.

    Nodes: ("any",); ("exact", types, conv); ("list", elem, conv); ("dict", key types,
    key conv, val, conv); ("record", ((name, node), ...), finish, model, conv); ("python",
    conv). A record map is decoded field by field into a dict, then ``finish(dict, depth)``
    builds the model or dataclass (any failure: the raw value goes to ``conv`` instead,
    which raises Python's error). ``model``: a pydantic model class whose ``finish`` is
    exactly ``model_validate(dict, by_name=True)`` (see :func:`_fast_model`), else None;
    the native decoder then calls its validator directly. A raw value of a type the node
    accepts is final, exactly as ``FieldType.decode`` and the container ``_conv`` fast
    paths keep it; anything else goes to that node's ``_conv`` (so errors are Python's).
    """
    if ft._any:
        return ("any",)
    st = ft._struct
    if st is None or id(ft) in active:
        return ("python", ft._conv)
    active.add(id(ft))
    try:
        kind = st[0]
        if kind == "wrapper":
            return _decode_plan_desc(st[1], active)
        if kind == "exact":
            return ("exact", tuple(ft._cexact), ft._conv)
        if kind == "list":
            return ("list", _decode_plan_desc(st[1], active), ft._conv)
        if kind == "dict":
            return ("dict", tuple(st[3]), st[4], _decode_plan_desc(st[2], active), ft._conv)
        if kind == "record":
            fields = tuple((name, _decode_plan_desc(node, active)) for name, node in st[2])
            return ("record", fields, st[3], _fast_model(st[1]), ft._conv)
        return ("python", ft._conv)
    finally:
        active.discard(id(ft))


def _fast_model(cls: Any) -> Any:
    """``cls`` when ``_fill_model``'s ``finish`` for it succeeds exactly when
    ``cls.__pydantic_validator__.validate_python(data, by_name=True)`` does, with the same
    result (what ``model_validate(data, by_name=True)`` calls); else None."""
    if (
        _MODEL_VALIDATE_BY_NAME
        and isinstance(cls, type)
        and issubclass(cls, BaseModel)
        and not issubclass(cls, RootModel)
        and inspect.getattr_static(cls, "model_validate")
        is inspect.getattr_static(BaseModel, "model_validate")
    ):
        return cls
    return None


def _native_helpers() -> dict[str, Any]:
    return {
        "datetime": _dt.datetime,
        "date": _dt.date,
        "time": _dt.time,
        "timedelta": _dt.timedelta,
        "UUID": uuid.UUID,
        "Decimal": decimal.Decimal,
        "ExtType": _ExtType,
        "SerializationError": SerializationError,
        "TooDeep": _TooDeep,
        "Mismatch": _Mismatch,
        "prep_any": _prep_any,
        "bigint_bytes": _bigint_bytes,
        "decimal_str": _decimal_str,
        "dtype_str": _ndarray_dtype_str,
        "tz": _tz,
        "dec_decimal": _dec_decimal,
        "make_ndarray": _native_ndarray,
        "raw_ref": _RawRef,
        "int_from_bytes": _int_from_be,
    }


_codecs: dict[int, Any] = {}


def set_backend(native: Any) -> None:
    """Choose the implementation every :class:`FieldType` uses from now on.

    ``native``: the extension module ``oaas_sdk._native`` (bytes are made by its
    ``Codec``), or ``None`` for the pure-Python codec. Both write identical bytes
    (docs/format.md) and raise the same error types. Called by ``Runtime.__init__`` for
    ``native="auto"|"on"|"off"``; switching is safe at any time between calls.
    """
    global _native_codec
    nc = None
    if native is not None:
        nc = _codecs.get(id(native))
        if nc is None:
            nc = _codecs[id(native)] = native.Codec(_native_helpers())
            nc.set_ref_factory(_ref_factory)
            native.Coder.install(FieldType, FieldType.__dict__["_ncoder"])
    for c in _codecs.values():
        c.set_active(c is nc)
    _native_codec = nc


def backend() -> str:
    """``"native"`` or ``"python"``: the implementation encode/decode use now."""
    return "native" if _native_codec is not None else "python"
