"""One test per oaas-sdk2-py 0.3.6 defect listed in api.md; each fails if the defect returns."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Optional

import pytest

from oaas_sdk import ConflictError, OaasObject, codec, oaas
from oaas_sdk.stores import WriteRecord

from .models import Counter


@oaas.service("Journal", package="defects")
class Journal(OaasObject):
    items: list[dict[str, list[int]]] = []
    index: dict[str, dict[str, int]] = {}
    when: Optional[datetime] = None
    stamp: datetime = datetime(2020, 1, 1)


async def test_defect1_in_place_changes_persist(sdk):
    j = Journal.create(obj_id=1)
    await j.commit_async()
    j.items.append({"a": [1]})
    j.index["x"] = {"y": 1}
    await j.commit_async()
    j.items[0]["a"].append(2)  # nested
    j.index["x"]["y"] += 1
    await j.commit_async()
    sdk.reconfigure()
    j2 = Journal.load(1)
    assert j2.items == [{"a": [1, 2]}]
    assert j2.index == {"x": {"y": 2}}


async def test_defect2_mutable_defaults_not_shared(sdk):
    a = Journal.create()
    b = Journal.create()
    a.items.append({"k": [1]})
    a.index["q"] = {}
    assert b.items == [] and b.index == {}
    assert Journal.create().items == []


async def test_defect3_optional_datetime_roundtrips_as_datetime(sdk):
    j = Journal.create(obj_id=3)
    when = datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)
    j.when = when
    await j.commit_async()
    sdk.reconfigure()
    j2 = Journal.load(3)
    assert j2.when == when and isinstance(j2.when, datetime)
    assert j2.stamp == datetime(2020, 1, 1)
    # stored as a typed extension value, not as a bare string
    raw = j2._oaas_state.committed["when"]
    assert raw[0] in (0xC7, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8)  # MessagePack ext family
    assert b"2024" not in raw


async def test_defect4_defaults_and_many_arguments(sdk):
    c = Counter.create()
    assert await c.add_many(1) == 6  # b and c take their defaults
    assert await c.add_many(1, 2, c=10) == 19
    r = c.as_ref()
    assert await r.add_many(0, b=0) == 22  # through a reference too


async def test_defect5_assignment_does_not_write(sdk):
    c = Counter.create(obj_id=5)
    await c.commit_async()
    oaas.flush()
    before = oaas.stats()["commits"]
    for i in range(100):
        c.count = i
    assert oaas.stats()["commits"] == before  # no write per assignment
    await c.commit_async()
    oaas.flush()
    assert oaas.stats()["commits"] == before + 1


async def test_defect6_commit_cost_follows_changed_objects(sdk):
    live = [Counter.create() for _ in range(2000)]
    await oaas.commit_all_async()
    calls = 0
    orig = Counter.commit_async

    def counting(self):
        nonlocal calls
        calls += 1
        return orig(self)

    Counter.commit_async = counting  # type: ignore[method-assign]
    try:
        live[10].count = 1
        live[20].count = 2
        await oaas.commit_all_async()
    finally:
        Counter.commit_async = orig  # type: ignore[method-assign]
    assert calls == 2  # only the changed objects were visited
    assert len(live) == 2000


async def test_defect7_fields_stored_by_name(sdk):
    @oaas.service("Evolving", package="defects")
    class V1(OaasObject):
        a: int = 0
        b: str = ""

    v = V1.create(obj_id=1)
    v.a, v.b = 1, "one"
    await v.commit_async()
    sdk.reconfigure()

    @oaas.service("Evolving", package="defects")
    class V2(OaasObject):  # reordered, one field added
        c: float = 0.5
        b: str = ""
        a: int = 0

    w = V2.load(1)
    assert (w.a, w.b, w.c) == (1, "one", 0.5)


async def test_defect8_second_writer_conflicts(sdk):
    c = Counter.create(obj_id=8)
    await c.commit_async()
    from oaas_sdk import runtime

    # another writer commits version 2 behind this object's back
    runtime.current().engine.submit(
        WriteRecord(("test.Counter", 0, 8), 1, {"count": codec.encode(100, int)})).wait()
    c.count = 1
    with pytest.raises(ConflictError):
        await c.commit_async()
    c.refresh()
    assert c.count == 100


async def test_defect9_no_pickle_and_no_code_on_load(sdk):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    c = Counter.create()
    with pytest.raises(TypeError):
        c.label = Evil()  # not silently pickled
    with pytest.raises(TypeError):
        codec.encode(Evil())
    import pickle

    blob = pickle.dumps({"x": 1})
    from oaas_sdk import SerializationError

    with pytest.raises(SerializationError):
        codec.decode(blob, dict)
    assert json.dumps({"ok": True})  # keep json import honest
    await asyncio.sleep(0)
