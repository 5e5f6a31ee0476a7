"""How the native engine resolves commit futures: the event loop watches the engine's
completion pipe and takes each batch's outcomes on its own thread; loops without
``add_reader`` get them from a dispatcher thread; commits of other loops are handed over
with ``call_soon_threadsafe``; closing resolves whatever is still pending."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from oaas_sdk import ConflictError, native_available
from oaas_sdk.engine import NativeEngine
from oaas_sdk.stores import WriteRecord

pytestmark = pytest.mark.skipif(not native_available(), reason="native extension not built")

ENTRY = {"x": b"\x01"}


def _engine(tmp_path: Path) -> NativeEngine:
    from oaas_sdk import _native

    return NativeEngine(_native, str(tmp_path / "store"), durability="sync",
                        batch_max_delay_ms=0.5)


async def _commit_many(eng: NativeEngine, first: int, n: int) -> list[Any]:
    loop = asyncio.get_running_loop()
    futs = [eng.submit_future(WriteRecord(("t.C", 0, first + i), 0, ENTRY, time_ms=1), loop)
            for i in range(n)]
    return await asyncio.gather(*futs, return_exceptions=True)


def test_the_loop_takes_completions_from_the_pipe(tmp_path: Path) -> None:
    eng = _engine(tmp_path)
    try:
        results = asyncio.run(_commit_many(eng, 0, 50))
        assert results == [None] * 50
        assert eng._dispatcher is None  # no thread in between
        assert eng._notify_fd >= 0
        assert eng.read(("t.C", 0, 49)) is not None
    finally:
        eng.close()


def test_each_commit_gets_its_own_outcome(tmp_path: Path) -> None:
    eng = _engine(tmp_path)

    async def run() -> list[Any]:
        loop = asyncio.get_running_loop()
        await eng.submit_future(WriteRecord(("t.C", 0, 1), 0, ENTRY, time_ms=1), loop)
        futs = [eng.submit_future(WriteRecord(("t.C", 0, 1), 0, ENTRY, time_ms=1), loop),
                eng.submit_future(WriteRecord(("t.C", 0, 2), 0, ENTRY, time_ms=1), loop)]
        return await asyncio.gather(*futs, return_exceptions=True)

    try:
        stale, fresh = asyncio.run(run())
        assert isinstance(stale, ConflictError) and fresh is None
    finally:
        eng.close()


def test_loops_in_two_threads_share_one_engine(tmp_path: Path) -> None:
    eng = _engine(tmp_path)
    out: dict[int, list[Any]] = {}

    def worker(k: int) -> None:
        out[k] = asyncio.run(_commit_many(eng, k * 1000, 200))

    try:
        threads = [threading.Thread(target=worker, args=(k,)) for k in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
        assert out == {1: [None] * 200, 2: [None] * 200}
    finally:
        eng.close()


def test_loop_without_add_reader_uses_the_dispatcher(tmp_path: Path) -> None:
    eng = _engine(tmp_path)

    def no_readers(*args: Any) -> None:
        raise NotImplementedError

    async def run() -> list[Any]:
        loop = asyncio.get_running_loop()
        loop.add_reader = no_readers  # type: ignore[method-assign]  # like Windows' proactor
        return await _commit_many(eng, 0, 20)

    try:
        assert asyncio.run(run()) == [None] * 20
        assert eng._dispatcher is not None
    finally:
        eng.close()


def test_close_resolves_pending_commits(tmp_path: Path) -> None:
    eng = _engine(tmp_path)

    async def run() -> list[Any]:
        loop = asyncio.get_running_loop()
        futs = [eng.submit_future(WriteRecord(("t.C", 0, i), 0, ENTRY, time_ms=1), loop)
                for i in range(30)]
        eng.close()  # writes everything queued; the futures still resolve
        return await asyncio.wait_for(asyncio.gather(*futs), 30)

    assert asyncio.run(run()) == [None] * 30


def test_one_wake_up_per_batch(tmp_path: Path) -> None:
    """The socket is emptied by each take: the loop does not spin on a readable fd."""
    eng = _engine(tmp_path)
    calls = 0
    on_ready = eng._on_ready

    def counting(loop: asyncio.AbstractEventLoop) -> None:
        nonlocal calls
        calls += 1
        on_ready(loop)

    eng._on_ready = counting  # type: ignore[method-assign]

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for v in range(30):  # one commit per batch
            await eng.submit_future(WriteRecord(("t.C", 0, 1), v, ENTRY, time_ms=1), loop)

    try:
        asyncio.run(run())
        assert 30 <= calls <= 40
    finally:
        eng.close()
