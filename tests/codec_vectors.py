"""Fixed byte vectors for the state codec (docs/format.md, "State codec"), loaded from the
data file ``tests/vectors/codec.json`` that ``cargo test`` reads too.

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

import builtins
import dataclasses
import datetime as dt
import decimal
import enum
import json
import uuid
from decimal import Decimal
from pathlib import Path
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


#: The vectors' data file, shared with `cargo test` (oprc-py/core/tests/vectors.rs).
VECTORS_FILE = Path(__file__).resolve().parent / "vectors" / "codec.json"

#: What the file's ``hint`` and ``value`` expressions may name (its "names" note).
_NAMES: dict[str, Any] = {
    "Any": Any,
    "Optional": Optional,
    "NDARRAY": NDARRAY,
    "datetime": dt,
    "uuid": uuid,
    "decimal": decimal,
    "UUID": uuid.UUID,
    "Decimal": Decimal,
    "Color": Color,
    "Priority": Priority,
    "Point": Point,
    "Shape": Shape,
    "Item": Item,
    "RefStub": RefStub,
}


def _expr(text: str, where: str) -> Any:
    """A Python expression of the data file, over :data:`_NAMES` only."""
    try:
        return eval(text, {"__builtins__": _BUILTINS, **_NAMES})  # noqa: S307 - test data
    except Exception as e:
        raise ValueError(f"{VECTORS_FILE}: {where}: cannot evaluate {text!r}: {e}") from e


_BUILTINS = {n: getattr(builtins, n) for n in (
    "None", "True", "False", "int", "float", "str", "bytes", "bytearray", "memoryview",
    "list", "dict", "tuple", "set", "frozenset", "bool")}


def load_vectors() -> list[tuple[str, Any, Any, str]]:
    """``(name, hint, value, hex_bytes)`` of every vector in :data:`VECTORS_FILE`."""
    doc = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
    return [(v["name"], _expr(v["hint"], f"{v['name']}.hint"),
             _expr(v["value"], f"{v['name']}.value"), v["hex"]) for v in doc["vectors"]]


def format_constants() -> dict[str, Any]:
    """The format constants of the data file: ``ext_codes`` (name -> code) and ``limits``."""
    doc = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
    return {"ext_codes": doc["ext_codes"], "limits": doc["limits"]}


VECTORS: list[tuple[str, Any, Any, str]] = load_vectors()
