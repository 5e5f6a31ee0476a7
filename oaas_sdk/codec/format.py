"""The codec's wire format: extension type codes, limits and fixed payload layouts.

This module is the one place in Python where the byte format of ``docs/format.md``
("State codec") is written down as constants; the encoder and decoder of
:mod:`oaas_sdk.codec._fallback` and the helpers handed to the native codec
(:mod:`oaas_sdk.codec.bridge`) read them from here. The Rust side states the same values
in ``oprc-py`` (``data/ext.rs``); the fixed vectors of ``tests/`` check both against the
bytes.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import re
import struct
from typing import Any

from oaas_sdk.errors import SerializationError

__all__ = [
    "EXT_BIGINT",
    "EXT_DATE",
    "EXT_DATETIME",
    "EXT_DECIMAL",
    "EXT_FROZENSET",
    "EXT_NDARRAY",
    "EXT_REF",
    "EXT_SET",
    "EXT_TIME",
    "EXT_TIMEDELTA",
    "EXT_TUPLE",
    "EXT_UUID",
    "MAX_DEPTH",
    "ZERO_COPY_MIN",
]

MAX_DEPTH = 100
"""Containers (arrays, maps, tuples, sets, models, dataclasses) nest at most this deep."""

ZERO_COPY_MIN = 4096
"""With ``decode(..., zero_copy=True)`` on the native backend, bin values and ndarray data of
at least this many bytes are returned as read-only views into the input (bytes)."""

# MessagePack extension type codes (docs/format.md, "Extension types").
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

# Ranges: ints outside [_I64_MIN, _U64_MAX] are ext 1; a reference's partition id is a u32
# and its numeric object id a u64; a UTC offset lies strictly within one day.
_I64_MIN = -(1 << 63)
_U64_MAX = (1 << 64) - 1
_U32_MAX = (1 << 32) - 1
_DAY_US = 86_400_000_000

# Fixed payload layouts, big-endian: datetime (ext 5, + _I64 UTC offset in us when aware),
# date (ext 6), time (ext 7, + _I64 offset), timedelta (ext 8: days, seconds, us).
_DT = struct.Struct(">HBBBBBI")
_DATE = struct.Struct(">HBB")
_TIME = struct.Struct(">BBBI")
_TD = struct.Struct(">iii")
_I64 = struct.Struct(">q")

# ndarray (ext 11): dtype kinds and dtype strings allowed, and the most dimensions.
_NP_KINDS = frozenset("biufcmMS")
_DTYPE_RE = re.compile(r"[<>|][biufcmMS][0-9]+(\[[0-9]*[A-Za-z]+\])?")
_MAX_NDIM = 64


def _bigint_bytes(v: int) -> bytes:
    """Ext 1 payload: two's complement, big-endian, minimal length."""
    return v.to_bytes((v if v >= 0 else ~v).bit_length() // 8 + 1, "big", signed=True)


def _td_us(td: _dt.timedelta) -> int:
    """A timedelta (a UTC offset) in whole microseconds."""
    return (td.days * 86_400 + td.seconds) * 1_000_000 + td.microseconds


def _decimal_str(d: decimal.Decimal) -> str:
    """Ext 10 payload text: ``str(d)`` with the exponent always written ``E``."""
    s = str(d)
    # str() follows the thread's context.capitals; the format always uses "E".
    return s.replace("e", "E") if "e" in s else s


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
