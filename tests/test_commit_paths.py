"""Commits of objects changed by assignments only.

On the native engine these go through one native call (``NativeEngine.commit_object``:
encode, queue and apply); elsewhere through ``_oaas_prepare`` / ``submit`` /
``_oaas_apply``. Both must leave the object and the store in the same state, with both
durabilities, including when the commit fails.
"""

from __future__ import annotations

import asyncio
import gc

import pytest

from oaas_sdk import ConflictError, SerializationError, oaas, runtime
from oaas_sdk.stores import WriteRecord

from .conftest import stored_entries as _stored
from .models import Counter


async def test_assignments_commit_and_apply(durable_sdk):
    c = Counter.create(obj_id=1)
    await c.commit_async()
    assert c._oaas_state.version == 1
    c.count = 5
    c.label = "five"
    await c.commit_async()
    assert c._oaas_state.version == 2
    assert not c._oaas_state.dirty
    assert c._oaas_state.updated_ms >= c._oaas_state.created_ms
    stored = _stored(1)
    assert stored["count"] == c._oaas_state.committed["count"] == b"\x05"
    assert stored["label"] == c._oaas_state.committed["label"] == b"\xa4five"
    # a second commit with nothing changed writes nothing
    before = oaas.stats()["commits"]
    await c.commit_async()
    runtime.current().flush()
    assert oaas.stats()["commits"] == before
    durable_sdk.reconfigure()
    c2 = Counter.load(1)
    assert (c2.count, c2.label) == (5, "five")


async def test_only_assigned_fields_are_written(durable_sdk):
    c = Counter.create(obj_id=2)
    c.history.append("kept")
    await c.commit_async()
    runtime.current().flush()
    written = oaas.stats()["entries_written"]
    c.count = 1
    await c.commit_async()
    runtime.current().flush()
    assert oaas.stats()["entries_written"] == written + 1
    durable_sdk.reconfigure()
    assert Counter.load(2).history == ["kept"]


async def test_refused_value_keeps_object_and_store(durable_sdk):
    c = Counter.create(obj_id=3)
    c.label = "ok"
    await c.commit_async()
    committed = dict(c._oaas_state.committed)
    c.count = 9
    c.label = "\ud800"  # a lone surrogate: the codec refuses it at commit
    with pytest.raises(SerializationError, match=r"Counter\.label of test\.Counter/0/3"):
        await c.commit_async()
    assert c._oaas_state.version == 1
    assert c._oaas_state.committed == committed
    assert c._oaas_state.dirty == {"count", "label"}
    assert (c.count, c.label) == (9, "\ud800")
    assert _stored(3)["count"] == b"\x00"  # nothing of the refused commit was queued
    c.label = "fine"
    await c.commit_async()
    durable_sdk.reconfigure()
    c2 = Counter.load(3)
    assert (c2.count, c2.label) == (9, "fine")


async def test_conflict_undoes_the_applied_commit(durable_sdk):
    c = Counter.create(obj_id=4)
    await c.commit_async()
    rt = runtime.current()
    rt.engine.submit(WriteRecord(("test.Counter", 0, 4), 1, {"count": b"\x07"})).wait()
    committed = dict(c._oaas_state.committed)
    c.count = 3
    c.label = "mine"
    if rt.engine.acks_at_submit and not rt.engine.inline:
        # durability="async" on LMDB: acknowledged when queued; the persister finds the
        # conflict later, and the other writer's value stays.
        await c.commit_async()
        rt.flush()
        assert _stored(4)["count"] == b"\x07"
        return
    with pytest.raises(ConflictError, match="test.Counter/0/4"):
        await c.commit_async()
    assert c._oaas_state.version == 1
    assert c._oaas_state.committed == committed
    assert c._oaas_state.dirty == {"count", "label"}
    assert (c.count, c.label) == (3, "mine")
    c.refresh()
    assert c.count == 7
    c.count = 8
    await c.commit_async()
    durable_sdk.reconfigure()
    assert Counter.load(4).count == 8


async def test_dropped_object_is_served_from_the_cache(durable_sdk):
    c = Counter.create(obj_id=5)
    await c.commit_async()
    for i in range(3):
        c.count = i + 10
        await c.commit_async()
    del c
    gc.collect()
    c2 = Counter.load(5)
    assert c2.count == 12 and c2._oaas_state.version == 4
    c2.count = 13
    await c2.commit_async()
    durable_sdk.reconfigure()
    assert Counter.load(5).count == 13


async def test_commit_all_cancelled_keeps_its_commits(lmdb_sdk):
    """``commit_all_async`` cancelled while it waits: the cancellation reaches the caller,
    and the commits, queued already, stand (as with the futures of ``asyncio.gather``)."""
    objs = [Counter.create(obj_id=300 + i) for i in range(50)]
    await oaas.commit_all_async()
    for i, o in enumerate(objs):
        o.count = i + 1
    task = asyncio.create_task(oaas.commit_all_async())
    await asyncio.sleep(0)  # the task queues every commit, then waits for the first
    assert task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    oaas.flush()
    lmdb_sdk.reconfigure()
    assert [Counter.load(300 + i).count for i in range(50)] == list(range(1, 51))


async def test_commit_all_waits_for_every_batch(durable_sdk):
    """Many commits awaited in turn by ``commit_all_async``: it returns when every one is
    written, whatever batches they were written in."""
    objs = [Counter.create(obj_id=400 + i) for i in range(300)]
    await oaas.commit_all_async()
    assert all(o._oaas_state.version == 1 for o in objs)
    for i, o in enumerate(objs):
        o.count = i + 7
    await oaas.commit_all_async()
    assert all(not o._oaas_state.dirty and o._oaas_state.version == 2 for o in objs)
    durable_sdk.reconfigure()
    assert [Counter.load(400 + i).count for i in range(300)] == [i + 7 for i in range(300)]


async def test_commit_all_after_assignments(durable_sdk):
    objs = [Counter.create(obj_id=100 + i) for i in range(20)]
    await oaas.commit_all_async()
    for i, o in enumerate(objs):
        o.count = i * 2
    await oaas.commit_all_async()
    assert all(not o._oaas_state.dirty for o in objs)
    durable_sdk.reconfigure()
    assert [Counter.load(100 + i).count for i in range(20)] == [i * 2 for i in range(20)]
