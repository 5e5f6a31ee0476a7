"""Fixed byte vectors for the state codec (docs/format.md, "State codec").

``VECTORS`` is a list of ``(name, hint, value, hex_bytes)``: encoding ``value`` for a field
of type ``hint`` must give exactly ``hex_bytes``, and decoding those bytes with ``hint``
must give a value equal to ``value`` and of the same type. The hex strings were worked out
by hand from the MessagePack specification
(https://github.com/msgpack/msgpack/blob/master/spec.md) and docs/format.md; they are the
reference for every implementation (Python fallback and native).

numpy arrays are given as plain data so that this file imports without numpy: the hint is
``NDARRAY`` and the value is ``{"dtype": <dtype.str>, "shape": [...], "data": nested list}``;
build the array with ``numpy.array(data, dtype=dtype).reshape(shape)``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Any, Optional

from pydantic import BaseModel

NDARRAY = "numpy.ndarray"


class Color(enum.StrEnum):
    RED = "red"
    GREEN = "green"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 3


class Point(BaseModel):
    x: int
    y: float


class Shape(BaseModel):
    name: str
    origin: Point
    tags: list[str] = []


@dataclasses.dataclass
class Item:
    sku: str
    qty: int


class RefStub:
    """Stands in for ObjectRef / OaasObject: has an identity, rebuilt from one."""

    def __init__(self, cls_id: str, partition_id: int, object_id: int | str) -> None:
        self.__oaas_identity__ = (cls_id, partition_id, object_id)

    @classmethod
    def __oaas_from_identity__(
        cls, cls_id: str, partition_id: int, object_id: int | str
    ) -> RefStub:
        return cls(cls_id, partition_id, object_id)

    def __eq__(self, other: object) -> bool:
        return type(other) is RefStub and other.__oaas_identity__ == self.__oaas_identity__

    def __hash__(self) -> int:
        return hash(self.__oaas_identity__)

    def __repr__(self) -> str:
        return f"RefStub{self.__oaas_identity__!r}"


_PLUS_1H = dt.timezone(dt.timedelta(hours=1))
_MINUS_5H = dt.timezone(dt.timedelta(hours=-5))
_PLUS_530 = dt.timezone(dt.timedelta(hours=5, minutes=30))

# "Counter" in "example.Counter": 15 bytes -> fixstr 0xaf.
_COUNTER = "af" + "6578616d706c652e436f756e746572"

VECTORS: list[tuple[str, Any, Any, str]] = [
    # nil, bool
    ("nil", None, None, "c0"),
    ("true", bool, True, "c3"),
    ("false", bool, False, "c2"),
    # int: the smallest MessagePack form; non-negative values use the uint family
    ("int_zero", int, 0, "00"),
    ("int_positive_fixint_max", int, 127, "7f"),
    ("int_negative_fixint_min", int, -32, "e0"),
    ("int_minus_one", int, -1, "ff"),
    ("uint8_min", int, 128, "cc80"),
    ("uint8_max", int, 255, "ccff"),
    ("uint16_min", int, 256, "cd0100"),
    ("uint16_max", int, 65535, "cdffff"),
    ("uint32_min", int, 65536, "ce00010000"),
    ("uint32_max", int, 2**32 - 1, "ceffffffff"),
    ("uint64_min", int, 2**32, "cf0000000100000000"),
    ("uint64_max", int, 2**64 - 1, "cfffffffffffffffff"),
    ("int8", int, -33, "d0df"),
    ("int8_min", int, -128, "d080"),
    ("int16", int, -129, "d1ff7f"),
    ("int16_min", int, -32768, "d18000"),
    ("int32", int, -32769, "d2ffff7fff"),
    ("int32_min", int, -(2**31), "d280000000"),
    ("int64", int, -(2**31) - 1, "d3ffffffff7fffffff"),
    ("int64_min", int, -(2**63), "d38000000000000000"),
    # ext 1: two's complement, big-endian, minimal length
    ("bigint_2_pow_64", int, 2**64, "c7090101" + "00" * 8),
    ("bigint_below_int64", int, -(2**63) - 1, "c70901ff7fffffffffffffff"),
    ("bigint_minus_2_pow_64", int, -(2**64), "c70901ff" + "00" * 8),
    ("bigint_2_pow_100", int, 2**100, "c70d0110" + "00" * 12),
    ("bigint_fixext16", int, 2**119, "d8010080" + "00" * 14),
    ("bigint_in_any", Any, 2**127, "c711010080" + "00" * 15),
    # float: always float 64
    ("float_1_5", float, 1.5, "cb3ff8000000000000"),
    ("float_0_1", float, 0.1, "cb3fb999999999999a"),
    ("float_negative_zero", float, -0.0, "cb8000000000000000"),
    ("float_infinity", float, float("inf"), "cb7ff0000000000000"),
    ("float_integral_in_any", Any, 2.0, "cb4000000000000000"),
    # str: UTF-8, fixstr / str 8 / str 16
    ("str_empty", str, "", "a0"),
    ("str_fixstr_31", str, "a" * 31, "bf" + "61" * 31),
    ("str8_32", str, "a" * 32, "d920" + "61" * 32),
    ("str16_300", str, "a" * 300, "da012c" + "61" * 300),
    ("str_utf8", str, "é€", "a5c3a9e282ac"),
    # bytes-like: bin family; decoded to the hint's type
    ("bin_empty", bytes, b"", "c400"),
    ("bin8", bytes, b"\x00\xff", "c40200ff"),
    ("bin16_256", bytes, b"\x01" * 256, "c50100" + "01" * 256),
    ("bytearray", bytearray, bytearray(b"abc"), "c403616263"),
    ("memoryview", memoryview, memoryview(b"xy"), "c4027879"),
    # list, dict
    ("list_empty", list, [], "90"),
    ("list_mixed", list, [1, "a", None], "9301a161c0"),
    ("list_nested", list[list[int]], [[1], []], "92910190"),
    ("array16", list[int], list(range(16)), "dc0010" + "".join(f"{i:02x}" for i in range(16))),
    ("dict_empty", dict, {}, "80"),
    ("dict_str_keys", dict[str, Any], {"a": 1, "b": [True]}, "82a16101a16291c3"),
    ("dict_int_keys", dict[int, str], {1: "x", -1: "y"}, "8201a178ffa179"),
    (
        "map16",
        dict[str, int],
        {str(i): i for i in range(16)},
        "de0010"
        + "".join(f"a1{0x30 + i:02x}{i:02x}" for i in range(10))
        + "".join(f"a231{0x30 + i:02x}{10 + i:02x}" for i in range(6)),
    ),
    # ext 2 tuple: payload is a complete array
    ("tuple_empty", tuple, (), "d40290"),
    ("tuple_pair", tuple[int, str], (1, "a"), "d6029201a161"),
    ("tuple_homogeneous", tuple[int, ...], (1, 2, 3), "d60293010203"),
    ("tuple_ext8", tuple, (1, 2, 3, 4, 5), "c70602950102030405"),
    ("list_of_tuples", list[tuple[int, str]], [(1, "a"), (2, "b")], "92d6029201a161d6029202a162"),
    # ext 3/4 set, frozenset: elements sorted by their encoded bytes
    ("set_empty", set, set(), "d40390"),
    ("set_int", set[int], {3, 1, 2}, "d60393010203"),
    ("set_sorted_by_encoding", set[int], {-1, 1, 300}, "c706039301cd012cff"),
    ("set_str", set[str], {"b", "c", "a"}, "c7070393a161a162a163"),
    ("frozenset_int", frozenset[int], frozenset({2, 1}), "c70304920102"),
    (
        "set_uuid",
        set[uuid.UUID],
        {uuid.UUID(int=1), uuid.UUID(int=0)},
        "c7250392" + "d809" + "00" * 16 + "d809" + "00" * 15 + "01",
    ),
    # ext 5 datetime: 11 bytes naive, 19 bytes aware
    (
        "datetime_naive",
        dt.datetime,
        dt.datetime(2024, 1, 2, 3, 4, 5, 6),
        "c70b0507e8010203040500000006",
    ),
    (
        "datetime_aware_plus_1h",
        dt.datetime,
        dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=_PLUS_1H),
        "c7130507e80102030405" + "00000000" + "00000000d693a400",
    ),
    (
        "datetime_aware_utc",
        dt.datetime,
        dt.datetime(2000, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
        "c7130507d00c1f173b3b000f423f" + "00" * 8,
    ),
    (
        "datetime_aware_minus_5h",
        dt.datetime,
        dt.datetime(1970, 1, 1, tzinfo=_MINUS_5H),
        "c7130507b2010100000000000000" + "fffffffbcf1dcc00",
    ),
    # ext 6 date, ext 7 time, ext 8 timedelta
    ("date", dt.date, dt.date(2024, 2, 29), "d60607e8021d"),
    ("time_naive", dt.time, dt.time(12, 34, 56, 789000), "c707070c2238000c0a08"),
    (
        "time_aware_plus_5_30",
        dt.time,
        dt.time(1, 2, 3, tzinfo=_PLUS_530),
        "c70f07010203" + "00000000" + "000000049c2c0600",
    ),
    (
        "timedelta_negative",
        dt.timedelta,
        dt.timedelta(days=-1, seconds=3600, microseconds=5),
        "c70c08ffffffff00000e1000000005",
    ),
    ("timedelta_zero", dt.timedelta, dt.timedelta(0), "c70c08" + "00" * 12),
    # ext 9 UUID, ext 10 Decimal
    (
        "uuid",
        uuid.UUID,
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "d80912345678123456781234567812345678",
    ),
    ("decimal", Decimal, Decimal("1.10"), "d60a312e3130"),
    ("decimal_exponent", Decimal, Decimal("1E+3"), "d60a31452b33"),
    ("decimal_nan", Decimal, Decimal("NaN"), "c7030a4e614e"),
    ("decimal_snan", Decimal, Decimal("sNaN"), "d60a734e614e"),
    ("decimal_negative_infinity", Decimal, Decimal("-Infinity"), "c7090a2d496e66696e697479"),
    # Enum: the member's value
    ("enum_str", Color, Color.RED, "a3726564"),
    ("enum_int", Priority, Priority.HIGH, "03"),
    # pydantic model and dataclass: map of field name -> value, in declaration order
    (
        "model_nested",
        Shape,
        Shape(name="sq", origin=Point(x=1, y=2.5), tags=["a"]),
        "83a46e616d65a27371a66f726967696e82a17801a179cb4004000000000000a47461677391a161",
    ),
    ("dataclass", Item, Item(sku="ab", qty=2), "82a3736b75a26162a371747902"),
    # Optional / nested generics
    (
        "optional_datetime_set",
        Optional[dt.datetime],  # noqa: UP045 - the typing form is what users write
        dt.datetime(2024, 1, 2, 3, 4, 5, 6),
        "c70b0507e8010203040500000006",
    ),
    ("optional_datetime_none", Optional[dt.datetime], None, "c0"),  # noqa: UP045
    (
        "dict_str_list_model",
        dict[str, list[Point]],
        {"p": [Point(x=1, y=0.5)]},
        "81a1709182a17801a179cb3fe0000000000000",
    ),
    ("any_tuple_and_set", Any, {"t": (1, 2), "s": {1}}, "82a174c70302920102a173d5039101"),
    # ext 11 numpy.ndarray
    (
        "ndarray_int32",
        NDARRAY,
        {"dtype": "<i4", "shape": [2], "data": [1, 2]},
        "c7150b033c69340100000000000000020100000002000000",
    ),
    (
        "ndarray_float64_2d",
        NDARRAY,
        {"dtype": "<f8", "shape": [1, 1], "data": [[1.0]]},
        "c71d0b033c663802" + "0000000000000001" * 2 + "000000000000f03f",
    ),
    (
        "ndarray_uint8_0d",
        NDARRAY,
        {"dtype": "|u1", "shape": [], "data": 7},
        "c7060b037c75310007",
    ),
    (
        "ndarray_bool_fixext16",
        NDARRAY,
        {"dtype": "|b1", "shape": [3], "data": [True, False, True]},
        "d80b037c623101" + "0000000000000003" + "010001",
    ),
    # ext 12 reference to an OaaS object
    (
        "ref_int_object_id",
        RefStub,
        RefStub("example.Counter", 0, 42),
        "c7130c93" + _COUNTER + "002a",
    ),
    (
        "ref_str_object_id",
        RefStub,
        RefStub("example.Counter", 1, "alice"),
        "c7180c93" + _COUNTER + "01a5616c696365",
    ),
]
