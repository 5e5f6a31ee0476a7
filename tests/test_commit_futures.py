"""Durable ``commit_async`` futures of objects: resolved on the committer's own loop,
from loops in several threads, from loops without ``add_reader``, after cancellation, and
at close; a failed commit is undone on the object in each case.

On the native engine these futures are made and resolved by the engine itself
(``NativeEngine.commit_object_future``); on the Python engine by ``submit_future``. Both
run here (``lmdb_sdk``: both implementations, the durable store).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from oaas_sdk import ConflictError, runtime
from oaas_sdk.stores import WriteRecord

from .models import Counter


@pytest.fixture
def durable(lmdb_sdk):  # type: ignore[no-untyped-def]
    lmdb_sdk.reconfigure(durability="sync")
    return lmdb_sdk


def _conflict(obj_id: int, version: int) -> None:
    """Another writer commits ``count = 7`` over ``version`` of the object."""
    runtime.current().engine.submit(
        WriteRecord(("test.Counter", 0, obj_id), version, {"count": b"\x07"})).wait()


async def _counters(first: int, n: int) -> list[Counter]:
    objs = [Counter.create(obj_id=first + i) for i in range(n)]
    await asyncio.gather(*(o.commit_async() for o in objs))
    return objs


def test_loops_in_two_threads_commit_objects(durable) -> None:
    failures: list[BaseException] = []

    def worker(first: int) -> None:
        async def run() -> None:
            objs = await _counters(first, 20)
            for rnd in range(1, 6):
                for o in objs:
                    o.count = rnd
                    o.label = f"r{rnd}"
                await asyncio.gather(*(o.commit_async() for o in objs))

        try:
            asyncio.run(run())
        except BaseException as e:  # reported by the main thread
            failures.append(e)

    threads = [threading.Thread(target=worker, args=(k * 100,)) for k in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    durable.reconfigure()
    for first in (100, 200):
        for i in range(20):
            c = Counter.load(first + i)
            assert (c.count, c.label, c._oaas_state.version) == (5, "r5", 6)


def test_loop_without_add_reader_resolves_and_undoes(durable) -> None:
    def no_readers(*args: Any) -> None:
        raise NotImplementedError  # like Windows' proactor loop

    async def run() -> None:
        asyncio.get_running_loop().add_reader = no_readers  # type: ignore[method-assign]
        c, = await _counters(10, 1)
        c.count = 2
        await c.commit_async()
        assert c._oaas_state.version == 2
        _conflict(10, 2)
        c.count = 3
        with pytest.raises(ConflictError, match="test.Counter/0/10"):
            await c.commit_async()
        assert (c._oaas_state.version, c._oaas_state.dirty, c.count) == (2, {"count"}, 3)

    asyncio.run(run())


async def test_cancelled_failed_commit_is_still_undone(durable) -> None:
    c, other = await _counters(20, 2)
    committed = dict(c._oaas_state.committed)
    _conflict(20, 1)
    c.count = 3
    c.label = "mine"
    fut = asyncio.ensure_future(c.commit_async())
    assert c._oaas_state.version == 2  # applied optimistically
    fut.cancel()
    # A later commit resolves after the earlier one's outcome has been handled.
    other.count = 1
    await other.commit_async()
    assert fut.cancelled()
    assert c._oaas_state.version == 1
    assert c._oaas_state.committed == committed
    assert c._oaas_state.dirty == {"count", "label"}
    assert (c.count, c.label) == (3, "mine")


async def test_close_resolves_pending_object_commits(durable) -> None:
    objs = await _counters(30, 10)
    for o in objs:
        o.count = 9
    futs = [o.commit_async() for o in objs]
    runtime.current().engine.close()  # writes everything queued; the futures resolve
    assert await asyncio.wait_for(asyncio.gather(*futs), 30) == [None] * 10
    durable.reconfigure()
    assert [Counter.load(30 + i).count for i in range(10)] == [9] * 10
