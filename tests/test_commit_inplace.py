"""Commits of committed objects whose mutable fields changed in place (or were only read).

On the native engine (LMDB) these take the one native call of ``commit_async``
(``NativeEngine.commit_object``: encode the assigned and the live fields, keep a live
field only when its bytes changed, queue, apply, park the live fields); elsewhere
``_oaas_prepare`` / ``submit`` / ``_oaas_apply`` / ``_oaas_settle``. Both must leave the
object and the store in the same state, with both durabilities, including on failure.
"""

from __future__ import annotations

from typing import Any

import pytest

from oaas_sdk import ConflictError, OaasObject, SerializationError, oaas, runtime
from oaas_sdk.stores import WriteRecord

from .conftest import stored_entries as _stored
from .models import Counter


def _native_engine() -> bool:
    return runtime.current().engine.commit_object is not None


@pytest.fixture
def prepares(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Objects that went through the Python ``_oaas_prepare`` (the general path)."""
    seen: list[Any] = []
    original = OaasObject._oaas_prepare

    def spy(self: OaasObject) -> Any:
        seen.append(self)
        return original(self)

    monkeypatch.setattr(OaasObject, "_oaas_prepare", spy)
    return seen


async def test_in_place_changes_are_committed_and_parked(durable_sdk, prepares):
    c = Counter.create(obj_id=1)
    await c.commit_async()
    await c.commit_async()  # the loop is watched from now on
    prepares.clear()
    runtime.current().flush()
    written = oaas.stats()["entries_written"]
    c.history.append("a")
    c.tags["x"] = 1
    c.label  # noqa: B018 - an immutable field: never part of an in-place commit
    await c.commit_async()
    st = c._oaas_state
    assert st.version == 2
    assert not st.dirty and not st.live
    assert set(st.parked) == {"history", "tags"}
    assert "history" not in vars(c) and "tags" not in vars(c)
    stored = _stored(1)
    assert stored["history"] == st.committed["history"] == b"\x91\xa1a"
    assert stored["tags"] == st.committed["tags"] == b"\x81\xa1x\x01"
    assert oaas.stats()["entries_written"] == written + 2
    if _native_engine():
        assert prepares == []  # the one native call, no Python prepare
    # the next read marks the object again, and the next change is committed
    c.history.append("b")
    assert c._oaas_state.live == {"history"}
    await c.commit_async()
    assert c._oaas_state.version == 3 and not c._oaas_state.live
    durable_sdk.reconfigure()
    c2 = Counter.load(1)
    assert (c2.history, c2.tags) == (["a", "b"], {"x": 1})


async def test_read_but_unchanged_writes_nothing(durable_sdk, prepares):
    c = Counter.create(obj_id=2, history=["k"])
    await c.commit_async()
    await c.commit_async()
    prepares.clear()
    runtime.current().flush()
    before = oaas.stats()["commits"]
    assert c.history == ["k"] and c.tags == {}
    assert c._oaas_state.live == {"history", "tags"}
    await c.commit_async()
    runtime.current().flush()
    assert oaas.stats()["commits"] == before
    st = c._oaas_state
    assert st.version == 1 and not st.live and not st.dirty
    assert set(st.parked) == {"history", "tags"}
    assert id(c) not in runtime.current().dirty
    if _native_engine():
        assert prepares == []


async def test_assignment_and_in_place_change_in_one_commit(durable_sdk):
    c = Counter.create(obj_id=3)
    await c.commit_async()
    c.count = 4
    c.tags["y"] = 2
    c.history  # noqa: B018 - read, unchanged: not written
    runtime.current().flush()
    written = oaas.stats()["entries_written"]
    await c.commit_async()
    runtime.current().flush()
    assert oaas.stats()["entries_written"] == written + 2
    assert _stored(3)["count"] == b"\x04"
    durable_sdk.reconfigure()
    c2 = Counter.load(3)
    assert (c2.count, c2.tags, c2.history) == (4, {"y": 2}, [])


async def test_refused_in_place_value_keeps_object_and_store(durable_sdk):
    c = Counter.create(obj_id=4, history=["ok"])
    await c.commit_async()
    await c.commit_async()
    committed = dict(c._oaas_state.committed)
    c.count = 1
    c.history.append("\ud800")  # a lone surrogate: the codec refuses it at commit
    with pytest.raises(SerializationError, match=r"Counter\.history of test\.Counter/0/4"):
        await c.commit_async()
    st = c._oaas_state
    assert st.version == 1
    assert st.committed == committed
    assert st.dirty == {"count"}
    assert "history" in st.live
    assert c.history == ["ok", "\ud800"] and c.count == 1
    assert _stored(4)["history"] == committed["history"]  # nothing queued
    c.history[-1] = "fine"
    await c.commit_async()
    durable_sdk.reconfigure()
    c2 = Counter.load(4)
    assert (c2.count, c2.history) == (1, ["ok", "fine"])


async def test_conflict_undoes_an_in_place_commit(durable_sdk):
    c = Counter.create(obj_id=5)
    await c.commit_async()
    await c.commit_async()
    rt = runtime.current()
    rt.engine.submit(WriteRecord(("test.Counter", 0, 5), 1, {"count": b"\x07"})).wait()
    committed = dict(c._oaas_state.committed)
    c.history.append("mine")
    if rt.engine.acks_at_submit and not rt.engine.inline:
        # durability="async" on LMDB: acknowledged once queued; the persister finds the
        # conflict later and the other writer's state stays.
        await c.commit_async()
        rt.flush()
        assert _stored(5)["count"] == b"\x07"
        return
    with pytest.raises(ConflictError, match="test.Counter/0/5"):
        await c.commit_async()
    st = c._oaas_state
    assert st.version == 1
    assert st.committed == committed
    assert "history" in st.dirty  # the change is kept, to commit again
    assert c.history == ["mine"]
    c.refresh()
    assert (c.count, c.history) == (7, [])
    c.history.append("again")
    await c.commit_async()
    durable_sdk.reconfigure()
    c2 = Counter.load(5)
    assert (c2.count, c2.history) == (7, ["again"])


async def test_commit_all_after_in_place_changes(durable_sdk):
    objs = [Counter.create(obj_id=100 + i) for i in range(30)]
    await oaas.commit_all_async()
    await oaas.commit_all_async()
    for i, o in enumerate(objs):
        o.history.append(str(i))
        o.tags[str(i)] = i
        if i % 3 == 0:
            o.count = i
    await oaas.commit_all_async()
    rt = runtime.current()
    assert all(not o._oaas_state.dirty and not o._oaas_state.live for o in objs)
    assert not rt.dirty and not list(rt.touched.keys())
    durable_sdk.reconfigure()
    got = [Counter.load(100 + i) for i in range(30)]
    assert [(o.history, o.tags, o.count) for o in got] == [
        ([str(i)], {str(i): i}, i if i % 3 == 0 else 0) for i in range(30)]


async def test_new_object_writes_every_field(durable_sdk, prepares):
    warm = Counter.create(obj_id=20)
    await warm.commit_async()  # the loop is watched from now on
    prepares.clear()
    c = Counter.create(obj_id=21, count=2, history=["h"])
    c.tags["t"] = 1
    await c.commit_async()
    st = c._oaas_state
    assert st.version == 1
    assert not st.dirty and not st.live
    assert set(st.parked) == {"history", "tags"}
    assert id(c) not in runtime.current().dirty
    stored = _stored(21)
    assert set(stored) == {"count", "history", "tags", "label"}
    assert stored == st.committed
    if _native_engine():
        assert prepares == []
    c.count = 3
    await c.commit_async()
    durable_sdk.reconfigure()
    c2 = Counter.load(21)
    assert (c2.count, c2.history, c2.tags, c2.label) == (3, ["h"], {"t": 1}, "")


async def test_refused_value_of_a_new_object_queues_nothing(durable_sdk):
    c = Counter.create(obj_id=22)
    c.history.append("\ud800")
    with pytest.raises(SerializationError, match=r"Counter\.history of test\.Counter/0/22"):
        await c.commit_async()
    st = c._oaas_state
    assert st.version == 0 and st.committed == {}
    assert id(c) in runtime.current().dirty
    rt = runtime.current()
    rt.flush()
    assert rt.engine.read(("test.Counter", 0, 22)) is None
    c.history[0] = "ok"
    await c.commit_async()
    durable_sdk.reconfigure()
    assert Counter.load(22).history == ["ok"]


async def test_conflict_undoes_a_new_object(durable_sdk):
    c = Counter.create(obj_id=23, count=1)
    rt = runtime.current()
    rt.engine.submit(WriteRecord(("test.Counter", 0, 23), 0, {"count": b"\x07"})).wait()
    if rt.engine.acks_at_submit and not rt.engine.inline:
        await c.commit_async()
        rt.flush()
        assert _stored(23)["count"] == b"\x07"
        return
    with pytest.raises(ConflictError, match="test.Counter/0/23"):
        await c.commit_async()
    st = c._oaas_state
    assert st.version == 0 and st.committed == {}
    assert {"count", "history", "tags", "label"} <= st.dirty
    assert c.count == 1
    assert id(c) in rt.dirty


def test_blocking_commit_of_in_place_changes(durable_sdk, prepares):
    c = Counter.create(obj_id=30, history=["a"])
    c.commit()
    prepares.clear()
    c.history.append("b")
    c.count = 2
    c.commit()
    st = c._oaas_state
    assert st.version == 2 and not st.dirty and not st.live
    rt = runtime.current()
    if rt.engine.commit_object is not None and rt.engine.acks_at_submit:
        assert prepares == []  # durability="async" on the native engine: the one call
    c.history.append("\ud800")
    with pytest.raises(SerializationError, match=r"Counter\.history of test\.Counter/0/30"):
        c.commit()
    assert st.version == 2 and "history" in st.live
    c.history[-1] = "c"
    c.commit()
    durable_sdk.reconfigure()
    c2 = Counter.load(30)
    assert (c2.count, c2.history) == (2, ["a", "b", "c"])


async def test_commit_all_reports_a_refused_object_and_commits_the_rest(durable_sdk):
    objs = [Counter.create(obj_id=200 + i) for i in range(5)]
    await oaas.commit_all_async()
    for i, o in enumerate(objs):
        o.count = i + 1
    objs[2].label = "\ud800"  # refused at commit
    objs[3].history.append("\ud800")  # refused at commit (an in-place change)
    with pytest.raises(SerializationError, match=r"Counter\.label of test\.Counter/0/202"):
        await oaas.commit_all_async()
    assert [o._oaas_state.version for o in objs] == [2, 2, 1, 1, 2]
    assert objs[2]._oaas_state.dirty == {"count", "label"}
    assert "history" in objs[3]._oaas_state.live
    objs[2].label = "ok"
    objs[3].history[0] = "ok"
    await oaas.commit_all_async()  # the refused objects stayed candidates
    assert [o._oaas_state.version for o in objs] == [2, 2, 2, 2, 2]
    durable_sdk.reconfigure()
    got = [Counter.load(200 + i) for i in range(5)]
    assert [(o.count, o.label, o.history) for o in got] == [
        (1, "", []), (2, "", []), (3, "ok", []), (4, "", ["ok"]), (5, "", [])]
