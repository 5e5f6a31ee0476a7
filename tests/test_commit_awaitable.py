"""What ``commit_async()`` returns for a durable commit behaves as an asyncio future
wherever asyncio takes one: ``await``, ``gather``, ``wait_for`` (including its timeout,
which cancels the wait and not the commit), ``shield``, ``ensure_future``, done-callbacks
with their contexts, and the states ``result`` / ``exception`` / ``cancelled`` report.
Every awaitable it returns is also a coroutine, as oaas-sdk2-py's ``async def
commit_async`` is: ``asyncio.run`` and ``asyncio.create_task`` take it.

On the native engine it is the engine's own ``CommitFuture`` (resolved from the loop's
completion reader, its callbacks run there directly); on the Python engine an
``asyncio.Future``. Both run here (``lmdb_sdk``, durability="sync").
"""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from oaas_sdk import ConflictError, runtime
from oaas_sdk.stores import WriteRecord

from .models import Counter


@pytest.fixture
def durable(lmdb_sdk):  # type: ignore[no-untyped-def]
    lmdb_sdk.reconfigure(durability="sync")
    return lmdb_sdk


async def _counter(obj_id: int) -> Counter:
    c = Counter.create(obj_id=obj_id)
    await c.commit_async()
    return c


def _pending(c: Counter, value: int) -> asyncio.Future[None]:
    c.count = value
    fut = c.commit_async()
    assert asyncio.isfuture(fut) and not fut.done()
    return fut  # type: ignore[return-value]


def _conflict(obj_id: int, version: int) -> None:
    runtime.current().engine.submit(
        WriteRecord(("test.Counter", 0, obj_id), version, {"count": b"\x07"})).wait()


def test_future_protocol_states(durable) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        c = await _counter(1)
        fut = _pending(c, 2)
        if durable.impl == "native":  # the engine's own future
            assert type(fut).__name__ == "CommitFuture" and "pending" in repr(fut)
        assert fut.get_loop() is loop
        assert not fut.cancelled()
        with pytest.raises(asyncio.InvalidStateError):
            fut.result()
        with pytest.raises(asyncio.InvalidStateError):
            fut.exception()
        assert await fut is None
        assert fut.done() and not fut.cancelled()
        assert fut.result() is None and fut.exception() is None

    asyncio.run(run())


def test_gather_wait_shield_and_ensure_future(durable) -> None:
    async def run() -> None:
        objs = [await _counter(10 + i) for i in range(4)]
        assert await asyncio.gather(*(_pending(o, 1) for o in objs)) == [None] * 4
        # A coroutine too (as an `async def` commit_async is): asyncio.wait wants tasks.
        done, pending = await asyncio.wait([asyncio.create_task(_pending(o, 2))  # type: ignore[arg-type]
                                            for o in objs])
        assert len(done) == 4 and not pending
        assert await asyncio.shield(_pending(objs[0], 3)) is None
        fut = _pending(objs[1], 4)
        assert asyncio.ensure_future(fut) is fut
        await fut
        assert await asyncio.wait_for(_pending(objs[2], 5), timeout=30) is None

    asyncio.run(run())
    durable.reconfigure(durability="sync")
    assert [Counter.load(10 + i).count for i in range(4)] == [3, 4, 5, 2]


def test_done_callbacks_run_once_in_their_context(durable) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="none")

    async def run() -> None:
        c = await _counter(20)
        fut = _pending(c, 2)
        seen: list[tuple[str, bool]] = []

        def callback(f: asyncio.Future[None]) -> None:
            seen.append((var.get(), f is fut))

        ctx = contextvars.copy_context()
        ctx.run(var.set, "in-context")
        fut.add_done_callback(callback, context=ctx)
        fut.add_done_callback(callback)  # the current context: var unset
        removed = lambda f: seen.append(("removed", True))  # noqa: E731
        fut.add_done_callback(removed)
        assert fut.remove_done_callback(removed) == 1
        await fut
        await asyncio.sleep(0)  # callbacks scheduled with call_soon have run
        assert sorted(seen) == [("in-context", True), ("none", True)]
        late: list[bool] = []
        fut.add_done_callback(lambda f: late.append(f.done()))  # done: call_soon
        assert late == []
        await asyncio.sleep(0)
        assert late == [True]

    asyncio.run(run())


def test_a_raising_callback_goes_to_the_exception_handler(durable) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        reported: list[BaseException | None] = []
        loop.set_exception_handler(lambda lp, ctx: reported.append(ctx.get("exception")))
        c = await _counter(25)
        fut = _pending(c, 2)
        after: list[int] = []

        def bad(f: asyncio.Future[None]) -> None:
            raise ValueError("callback failed")

        fut.add_done_callback(bad)
        fut.add_done_callback(lambda f: after.append(1))
        await fut
        await asyncio.sleep(0)
        assert after == [1]  # the other callbacks still ran
        assert len(reported) == 1 and isinstance(reported[0], ValueError)

    asyncio.run(run())


def test_wait_for_timeout_cancels_the_wait_not_the_commit(durable) -> None:
    async def run() -> None:
        c = await _counter(30)
        fut = _pending(c, 9)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(fut, timeout=0)
        assert fut.cancelled()
        with pytest.raises(asyncio.CancelledError):
            fut.result()
        with pytest.raises(asyncio.CancelledError):
            fut.exception()
        assert fut.cancel() is False  # already done
        c.label = "after"
        await c.commit_async()  # the cancelled wait's commit was queued before this one

    asyncio.run(run())
    durable.reconfigure(durability="sync")
    c = Counter.load(30)
    assert (c.count, c.label) == (9, "after")


def test_cancel_with_a_message(durable) -> None:
    async def run() -> None:
        c = await _counter(35)
        fut = _pending(c, 2)
        assert fut.cancel("stop waiting") is True
        with pytest.raises(asyncio.CancelledError) as info:
            await fut
        assert info.value.args == ("stop waiting",)
        await c.commit_async()  # nothing dirty: done at once

    asyncio.run(run())


def test_a_failed_commit_fails_its_future_and_is_undone(durable) -> None:
    async def run() -> None:
        c = await _counter(40)
        _conflict(40, c._oaas_state.version)
        fut = _pending(c, 5)
        with pytest.raises(ConflictError):
            await fut
        assert isinstance(fut.exception(), ConflictError)
        with pytest.raises(ConflictError):
            fut.result()
        assert c.count == 5 and "count" in c._oaas_state.dirty  # the change is kept, dirty

    asyncio.run(run())


def test_a_task_cancelled_while_waiting_gets_cancelled_error(durable) -> None:
    async def run() -> None:
        c = await _counter(45)
        fut = _pending(c, 3)

        async def waiter() -> None:
            await fut

        task = asyncio.ensure_future(waiter())
        await asyncio.sleep(0)  # the task waits on the future now
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert fut.cancelled()

    asyncio.run(run())
    durable.reconfigure(durability="sync")
    assert Counter.load(45).count == 3  # the commit itself was written


def test_a_callback_raising_system_exit_stops_the_loop(durable) -> None:
    """As a callback run by a ``call_soon`` handle would: the other callbacks run, and the
    exception leaves ``run_until_complete``."""
    after: list[int] = []

    async def run() -> None:
        c = await _counter(50)
        fut = _pending(c, 2)

        def stop(f: asyncio.Future[None]) -> None:
            raise SystemExit(3)

        fut.add_done_callback(stop)
        fut.add_done_callback(lambda f: after.append(1))
        await fut
        await asyncio.sleep(30)  # not reached: the loop stops first

    with pytest.raises(SystemExit):
        asyncio.run(run())
    assert after == [1]


def test_asyncio_run_and_create_task_take_every_commit_awaitable(durable) -> None:
    """New object (general path), assignments (one-call path), nothing to commit, a
    refused value: as with an ``async def commit_async``."""
    c = Counter.create(obj_id=60)
    assert asyncio.run(c.commit_async()) is None  # no loop when called: runs in the loop
    c.count = 2
    assert asyncio.run(c.commit_async()) is None
    assert asyncio.run(c.commit_async()) is None  # nothing dirty

    async def run() -> None:
        c.count = 3
        await asyncio.create_task(c.commit_async())  # type: ignore[arg-type]
        c.tags = {"a": 1}
        await asyncio.create_task(c.commit_async())  # type: ignore[arg-type]
        await asyncio.create_task(c.commit_async())  # type: ignore[arg-type]  # nothing dirty
        c.count = 4
        task = asyncio.create_task(c.commit_async())  # type: ignore[arg-type]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)

    asyncio.run(run())
    object.__setattr__(c, "count", object())  # bypasses conversion: cannot be encoded
    c._oaas_state.dirty.add("count")
    with pytest.raises(TypeError):
        asyncio.run(c.commit_async())
    durable.reconfigure(durability="sync")
    got = Counter.load(60)
    assert (got.count, got.tags) == (4, {"a": 1})


def test_completions_taken_inside_a_task_wake_waiters_through_the_loop(durable) -> None:
    """The native engine runs waiters' wake-ups directly only from a loop callback; taken
    while a task runs (here: this one), they are scheduled, and the waiting task resumes."""
    if durable.impl != "native":
        pytest.skip("the engine's own completion routing")

    async def wait(fut: asyncio.Future[None]) -> str:
        await fut
        return "resumed"

    async def run() -> None:
        c = await _counter(70)
        fut = _pending(c, 2)
        waiter = asyncio.ensure_future(wait(fut))
        await asyncio.sleep(0)  # the waiter task now waits on the future
        eng = runtime.current().engine
        eng._eng.flush()  # written; the completion reader has not run yet
        eng._eng.take_ready(asyncio.get_running_loop())  # inside this task
        assert fut.done()
        await asyncio.sleep(0)  # the waiter's wake-up was scheduled before this resume
        assert waiter.done() and waiter.result() == "resumed"

    # Not asyncio.run: were the waiter stuck, its cancellation at shutdown would hang.
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(run())
    finally:
        loop.close()
