"""Every field type of api.md round-trips through a commit and a fresh load with an equal
value of the same type, on both implementations and both stores."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import Enum
from typing import Optional, Union
from uuid import UUID, uuid4

import numpy as np
from pydantic import BaseModel

from oaas_sdk import OaasObject, oaas


class Color(Enum):
    RED = 1
    BLUE = 2


@dataclass
class Pt:
    x: int
    y: int


class M(BaseModel):
    a: int
    b: list[str] = []


@oaas.service("AllTypes", package="test")
class AllTypes(OaasObject):
    i: int = 0
    f: float = 0.0
    b: bool = False
    s: str = ""
    by: bytes = b""
    ba: bytearray = bytearray()
    mv: memoryview = memoryview(b"")
    n: None = None
    lst: list = []
    t: tuple = ()
    st: set = set()
    fs: frozenset = frozenset()
    d: dict = {}
    dk: dict[int, str] = {}
    dt: datetime = datetime(2000, 1, 1)
    dta: Optional[datetime] = None
    da: date = date(2000, 1, 1)
    ti: time = time(0)
    td: timedelta = timedelta(0)
    u: UUID = UUID(int=0)
    de: Decimal = Decimal(0)
    e: Color = Color.RED
    m: Optional[M] = None
    dc: Optional[Pt] = None
    un: Union[int, str] = 0
    nested: dict[str, list[M]] = {}
    arr: Optional[np.ndarray] = None
    other: Optional["AllTypes"] = None  # noqa: UP037 - as users write it


VALUES = dict(
    i=2**70, f=1.5, b=True, s="héllo", by=b"\x00\x01", ba=bytearray(b"ab"),
    mv=memoryview(b"xy"), lst=[1, "a", None, [2]], t=(1, "x"), st={1, 2},
    fs=frozenset({"a"}), d={"k": {"n": [1]}}, dk={1: "a"},
    dt=datetime(2024, 1, 2, 3, 4, 5, 6),
    dta=datetime(2024, 1, 2, tzinfo=timezone(timedelta(hours=5))), da=date(2024, 2, 29),
    ti=time(1, 2, 3, 4), td=timedelta(days=-1, seconds=5), u=uuid4(), de=Decimal("1.10"),
    e=Color.BLUE, m=M(a=1, b=["x"]), dc=Pt(1, 2), un="s", nested={"q": [M(a=2)]},
    arr=np.arange(6, dtype=np.float32).reshape(2, 3),
)


async def test_every_type_roundtrips(sdk):
    a = AllTypes.create(obj_id=1)
    for k, v in VALUES.items():
        setattr(a, k, v)
    a.other = a  # a reference cycle: loads lazily, one object at a time
    await a.commit_async()
    del a
    gc.collect()
    sdk.reconfigure()
    b = AllTypes.load(1)
    for k, v in VALUES.items():
        got = getattr(b, k)
        assert type(got) is type(v), k
        if isinstance(v, np.ndarray):
            assert got.dtype == v.dtype and got.shape == v.shape and (got == v).all()
        else:
            assert got == v, k
    assert b.other is b


async def test_defaults_are_fresh_copies_of_every_mutable_type(sdk):
    x, y = AllTypes.create(), AllTypes.create()
    for name in ("lst", "st", "d", "ba", "mv"):
        assert getattr(x, name) is not getattr(y, name), name
    assert type(x.mv) is memoryview and type(x.ba) is bytearray
