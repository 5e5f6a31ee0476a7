"""Server-side dispatch in process, on both implementations and both stores: a request
runs as a local call does (turn, rollback, auto-commit before the response), and a failed
or read-only call on a new id writes nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack

from oaas_sdk import OaasObject, ObjectInvocationRequest, ResponseStatus, codec, oaas
from oaas_sdk.rpc.server import dispatch
from oaas_sdk.runtime import current
from tests.models import Counter


def _req(fn: str, oid: Any, payload: bytes = b"", **options: str) -> ObjectInvocationRequest:
    return ObjectInvocationRequest(cls_id="test.Counter", fn_id=fn, object_id=str(oid),
                                   payload=payload, options=options)


def _stored_count(oid: int) -> int | None:
    stored = current().engine.read(("test.Counter", 0, oid))
    if stored is None:
        return None
    return int(codec.decode(stored.entries["count"], int))


async def test_response_after_commit(sdk: Any) -> None:
    r = await dispatch(_req("increment", 11, b"5"))
    assert r.status == ResponseStatus.OKAY and r.payload == b"5"
    assert _stored_count(11) == 5  # committed before the response was made


async def test_auto_commit_off_keeps_changes_until_commit(sdk: Any) -> None:
    sdk.reconfigure(auto_commit=False)
    r = await dispatch(_req("increment", 12, b"3"))
    assert r.status == ResponseStatus.OKAY and r.payload == b"3"
    assert _stored_count(12) is None
    assert (await dispatch(_req("increment", 12, b"3"))).payload == b"6"  # same live object
    await oaas.commit_all_async()
    assert _stored_count(12) == 6


async def test_failures_and_reads_on_new_ids_write_nothing(sdk: Any) -> None:
    r = await dispatch(_req("fail_after_change", 13, b"4"))
    assert r.status == ResponseStatus.APP_ERROR and r.payload == b"boom"
    assert r.headers["oaas-error-type"] == "RuntimeError"
    r = await dispatch(_req("increment", 14, b'"x"'))
    assert r.status == ResponseStatus.APP_ERROR
    assert (await dispatch(_req("get_count", 15))).payload == b"0"
    await oaas.commit_all_async()
    assert [_stored_count(i) for i in (13, 14, 15)] == [None, None, None]
    assert not Counter.exists(13) and not Counter.exists(15)


async def test_envelope_arguments_and_codec_result(sdk: Any) -> None:
    env = msgpack.packb([[codec.encode(1)], {"c": codec.encode(10)}])
    r = await dispatch(_req("add_many", 16, env, **{"oaas-args": "envelope",
                                                    "oaas-result": "codec"}))
    assert r.status == ResponseStatus.OKAY, r
    assert r.headers["oaas-result"] == "codec" and codec.decode(r.payload) == 13
    assert _stored_count(16) == 13


async def test_turns_hold_across_concurrent_requests(sdk: Any) -> None:
    rs = await asyncio.gather(*(dispatch(_req("slow_increment", 17, b"0.001"))
                                for _ in range(8)))
    assert sorted(int(r.payload or b"0") for r in rs) == list(range(1, 9))
    assert _stored_count(17) == 8


_started: dict[str, asyncio.Event] = {}


@oaas.service("Racer", package="rpcdispatch")
class Racer(OaasObject):
    count: int = 0

    @oaas.method()
    async def fail_later(self) -> None:
        self.count += 100
        _started["fail_later"].set()
        await asyncio.sleep(0.01)
        raise RuntimeError("late failure")

    @oaas.method()
    async def add(self, n: int) -> int:
        self.count += n
        return self.count


def _racer(fn: str, payload: bytes = b"") -> ObjectInvocationRequest:
    return ObjectInvocationRequest(cls_id="rpcdispatch.Racer", fn_id=fn, object_id="19",
                                   payload=payload)


async def test_concurrent_calls_on_a_new_id_keep_the_survivor(sdk: Any) -> None:
    """A failing first call on a new id does not drop the object from under a call that
    waits for its turn: the latter's change is kept (auto_commit off: committed by
    commit_all)."""
    sdk.reconfigure(auto_commit=False)
    _started["fail_later"] = asyncio.Event()
    failing = asyncio.ensure_future(dispatch(_racer("fail_later")))
    await _started["fail_later"].wait()
    waiting = asyncio.ensure_future(dispatch(_racer("add", b"2")))
    r1, r2 = await failing, await waiting
    assert r1.status == ResponseStatus.APP_ERROR and r1.payload == b"late failure"
    assert r2.status == ResponseStatus.OKAY and r2.payload == b"2"
    # the same live object serves the next call (not a second instance from defaults)
    assert (await dispatch(_racer("add", b"3"))).payload == b"5"
    await oaas.commit_all_async()
    stored = current().engine.read(("rpcdispatch.Racer", 0, 19))
    assert stored is not None and codec.decode(stored.entries["count"], int) == 5


class _Done:
    """Stands for the native server's completer of one call."""

    def __init__(self, call_id: int) -> None:
        self.id = call_id
        self.reply: tuple[Any, ...] | None = None
        self.failed: str | None = None

    def __call__(self, *reply: Any) -> None:
        self.reply = reply

    def fail(self, message: str) -> None:
        self.failed = message


async def test_native_entry_answers_inline_or_goes_on_as_a_task(sdk: Any) -> None:
    """The native server's entry: each call is a task; on 3.12+ a call that does not
    suspend is answered before the entry returns (an eager task); one that suspends goes
    on, and is cancelled (its changes rolled back, nothing committed) when the server
    reports its client gone, whether its first step ran or not."""
    import sys
    from types import SimpleNamespace

    from oaas_sdk.rpc.native_server import NativeRpcServer

    srv = NativeRpcServer("127.0.0.1", 0, 1 << 20)
    srv._loop = asyncio.get_running_loop()
    eager = sys.version_info >= (3, 12)

    async def answered(d: _Done) -> None:
        if not eager:  # the task runs on the loop, then its done callback
            for _ in range(100):
                if d.reply is not None and not srv._running:
                    break
                await asyncio.sleep(0)

    d = _Done(1)
    srv._entry(True, "test.Counter", "get_count", "17", 0, b"", {}, d)
    if eager:
        assert d.reply is not None and not srv._running  # answered inline, no task left
    await answered(d)
    assert d.reply is not None and d.reply[:2] == (0, b"0") and not srv._running
    d = _Done(2)
    srv._entry(True, "test.Counter", "slow_increment", "18", 0, b"0.01", {}, d)
    assert d.reply is None and set(srv._running) == {2}  # suspended (or not yet run): a task
    await srv._running[2][0]  # (task, completer)
    await asyncio.sleep(0)  # the task's done callback
    assert d.reply is not None and d.reply[:2] == (0, b"1") and not srv._running
    assert _stored_count(18) == 1  # committed before the answer
    for started in (False, True):  # client gone before / after the task's first step
        d = _Done(3)
        srv._entry(True, "test.Counter", "slow_increment", "18", 0, b"60", {}, d)
        task = srv._running[3][0]
        if started:
            await asyncio.sleep(0)
        srv._native = SimpleNamespace(drain=lambda: [3, 99])  # call 3's client is gone
        srv._drain()
        srv._native = None
        try:
            await task
        except asyncio.CancelledError:
            pass
        await asyncio.sleep(0)  # the task's done callback
        assert task.cancelled() and d.reply is None and d.failed and not srv._running
        d = _Done(4)
        srv._entry(True, "test.Counter", "get_count", "18", 0, b"", {}, d)
        await answered(d)
        assert d.reply is not None and d.reply[:2] == (0, b"1")  # rolled back
        assert _stored_count(18) == 1
        turn = Counter.load(18)._oaas_state.turn
        assert turn is None or not turn.locked  # the call let go of the object's turn
