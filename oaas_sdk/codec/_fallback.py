"""The pure-Python encoder and decoder (on the ``msgpack`` package).

Encoding is two steps: *preparing* turns a value into a tree that ``msgpack.Packer`` packs
directly (None, bool, int, float, str, bytes, bytearray, memoryview, list, dict and
``ExtType``), checking it on the way; then one pooled packer packs it. Decoding is
``msgpack.unpackb`` with :func:`_ext_hook` for the extension types, then *converting* what
it returned into the final value for the hint. The ``_prep_any`` / ``_conv_any`` pair here
handles ``Any``; the per-hint ones are built by :mod:`oaas_sdk.codec.nodes`. Bytes are
those of ``docs/format.md`` ("State codec"), identical to the native codec's.

While the native backend is active, prepared trees are packed by the native codec
(``ACTIVE.native``), which also writes datetimes, UUIDs and arrays itself.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import struct
import uuid
from collections.abc import Callable
from typing import Any

import msgpack

from oaas_sdk.errors import SerializationError

from . import _values
from . import format as _format
from ._active import ACTIVE
from ._values import (
    _K_BYTES,
    _K_DATE,
    _K_DATETIME,
    _K_DECIMAL,
    _K_DICT,
    _K_ENUM,
    _K_FLOAT,
    _K_FROZENSET,
    _K_INT,
    _K_LIST,
    _K_NDARRAY,
    _K_PLAIN,
    _K_REF,
    _K_SET,
    _K_STR,
    _K_TIME,
    _K_TIMEDELTA,
    _K_TUPLE,
    _K_UUID,
    _classify,
    _corrupt,
    _Deferred,
    _describe_raw,
    _ext_code,
    _identity_of,
    _is_ndarray_type,
    _kind,
    _RawRef,
    _too_deep,
    _unsupported_value,
)
from .format import (
    _DAY_US,
    _I64_MIN,
    _MAX_NDIM,
    _NP_KINDS,
    _U32_MAX,
    _U64_MAX,
    EXT_BIGINT,
    EXT_DATE,
    EXT_DATETIME,
    EXT_DECIMAL,
    EXT_FROZENSET,
    EXT_NDARRAY,
    EXT_REF,
    EXT_SET,
    EXT_TIME,
    EXT_TIMEDELTA,
    EXT_TUPLE,
    EXT_UUID,
    MAX_DEPTH,
    _bigint_bytes,
    _decimal_str,
    _ndarray_dtype_str,
    _td_us,
)

# Bound by assignment, not imported: CPython (3.11+) compiles `name.method(...)` on a name
# bound by an import as a plain attribute load and call (no LOAD_METHOD), which costs
# tens of ns per call on the hot paths below.
_KINDS = _values._KINDS
_PLAIN_TYPES = _values._PLAIN_TYPES
_ANY_LEAF = _values._ANY_LEAF
_KEY_TYPES = _values._KEY_TYPES
_DT = _format._DT
_TIME = _format._TIME
_I64 = _format._I64
_DATE = _format._DATE
_TD = _format._TD
_DTYPE_RE = _format._DTYPE_RE

_ExtType = msgpack.ExtType
_unpackb = msgpack.unpackb


# --------------------------------------------------------------------------- packing

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
    nc = ACTIVE.native
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
        nc = ACTIVE.native
        if nc is not None:
            parts = sorted(nc.encode_many(items))
        else:
            parts = sorted([p.pack(x) for x in items])
        header = p.pack_array_header(len(parts))
    finally:
        _pool.append(p)
    return _ExtType(code, header + b"".join(parts))


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


def _ext_decimal(v: decimal.Decimal) -> Any:
    return _ExtType(EXT_DECIMAL, _decimal_str(v).encode("ascii"))


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
# _PREP_ANY[_K_MODEL] and [_K_DATACLASS] are set by compile.py: a model or dataclass
# value is prepared by its class's compiled FieldType.
_PREP_ANY[_K_REF] = lambda v, d: _ext_ref(v)
_PREP_ANY[_K_NDARRAY] = lambda v, d: _ext_ndarray(v)
_PREP_ANY[_K_INT] = lambda v, d: int.__int__(v)
_PREP_ANY[_K_FLOAT] = lambda v, d: float.__float__(v)
_PREP_ANY[_K_STR] = lambda v, d: str.__str__(v)
_PREP_ANY[_K_BYTES] = lambda v, d: bytes(v)


# --------------------------------------------------------------------------- unpacking


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
        return ACTIVE.ref_factory(raw.cls_id, raw.partition_id, raw.object_id)
    if _is_ndarray_type(t):
        return raw
    raise _corrupt(f"unexpected {_describe_raw(raw)}")


def _conv_key_any(k: Any) -> Any:
    tk = type(k)
    if tk is not str and tk is not int:
        raise _corrupt(f"map key of type {tk.__name__!r} (keys must be str or int)")
    return k

