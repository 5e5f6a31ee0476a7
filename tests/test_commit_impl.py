"""``OaasObject.commit_async`` and ``OaasObject.commit`` follow the configured
implementation: native methods with ``native="on"`` on the native engine (LMDB, Redis,
memory: the one-call commit; the Python definition for every other case), the Python
definitions with ``native="off"`` or a store given to the runtime (which one is installed:
tests/test_setattr_impl.py). The behaviour of commits is tested on both by the rest of the
suite; these cover the methods themselves."""

from __future__ import annotations

import pytest

from oaas_sdk import ConflictError, OaasObject, oaas, runtime
from oaas_sdk.stores import WriteRecord

from .models import Counter


async def test_clean_object_leaves_the_dirty_registry(sdk) -> None:
    c = Counter.create(obj_id=1)
    await c.commit_async()
    rt = runtime.current()
    rt.dirty[id(c)] = c  # registered with nothing to commit (as after a refused change)
    await c.commit_async()
    assert id(c) not in rt.dirty
    assert c._oaas_state.version == 1


async def test_subclass_commit_async_calls_through(sdk) -> None:
    @oaas.service("Logged", package="test")
    class Logged(OaasObject):
        n: int = 0

        async def commit_async(self) -> None:  # type: ignore[override]
            object.__setattr__(self, "_commits", getattr(self, "_commits", 0) + 1)
            await super().commit_async()

    a = Logged.create(obj_id=2)
    await a.commit_async()
    for v in (1, 2, 3):
        a.n = v
        await a.commit_async()
    assert a._commits == 4 and a._oaas_state.version == 4
    sdk.reconfigure()
    assert Logged.load(2).n == 3


async def test_repeated_commits_of_assignments(sdk) -> None:
    objs = [Counter.create(obj_id=10 + i) for i in range(5)]
    for o in objs:
        await o.commit_async()
    for rnd in range(1, 4):
        for o in objs:
            o.count = rnd
            o.label = f"r{rnd}"
            await o.commit_async()
            assert o._oaas_state.dirty == set() and o._oaas_state.version == rnd + 1
    sdk.reconfigure()
    assert [(Counter.load(10 + i).count, Counter.load(10 + i).label) for i in range(5)] == [
        (3, "r3")] * 5


async def test_native_one_call_commit_needs_no_python_frame(sdk, monkeypatch) -> None:
    """On the native engine, a committed object changed by assignments only is committed
    by the native method alone; new objects go through the Python definition."""
    calls: list[object] = []
    python_def = OaasObject._oaas_py_commit_async

    def counting(self: OaasObject):  # type: ignore[no-untyped-def]
        calls.append(self)
        return python_def(self)

    monkeypatch.setattr(OaasObject, "_oaas_py_commit_async", counting)
    c = Counter.create(obj_id=20)
    await c.commit_async()  # new: the Python definition (native or not)
    for v in range(1, 4):
        c.count = v
        await c.commit_async()
    on_native_engine = runtime.current().engine.commit_object is not None
    assert on_native_engine == (sdk.impl == "native")
    if on_native_engine:
        assert calls == [c]
    else:  # the Python definition is the method itself
        assert calls == []
    assert c._oaas_state.version == 4


def test_native_blocking_commit_needs_no_python_frame(durable_sdk, monkeypatch) -> None:
    """On the native engine, the blocking ``commit()`` of a committed object is the native
    method alone, with either durability (``"sync"``: waited for with the GIL released);
    new objects go through the Python definition."""
    calls: list[object] = []
    python_def = OaasObject._oaas_py_commit

    def counting(self: OaasObject) -> None:
        calls.append(self)
        python_def(self)

    monkeypatch.setattr(OaasObject, "_oaas_py_commit", counting)
    c = Counter.create(obj_id=21)
    c.commit()  # new: the Python definition (native or not)
    for v in range(1, 4):
        c.count = v
        c.commit()
    c.commit()  # nothing changed
    on_native_engine = runtime.current().engine.commit_object is not None
    assert on_native_engine == (durable_sdk.impl == "native")
    assert calls == ([c] if on_native_engine else [])
    assert c._oaas_state.version == 4 and not c._oaas_state.dirty
    durable_sdk.reconfigure()
    assert Counter.load(21).count == 3


def test_blocking_commit_refused_when_written_keeps_the_changes(durable_sdk) -> None:
    c = Counter.create(obj_id=22)
    c.commit()
    rt = runtime.current()
    rt.engine.submit(WriteRecord(("test.Counter", 0, 22), 1, {"count": b"\x07"})).wait()
    committed = dict(c._oaas_state.committed)
    c.count = 3
    if rt.engine.acks_at_submit and not rt.engine.inline:
        # durability="async" on a durable store: acknowledged when queued; the
        # persister finds the conflict later, and the other writer's value stays.
        c.commit()
        rt.flush()
        assert rt.engine.read(("test.Counter", 0, 22)).entries["count"] == b"\x07"
        return
    with pytest.raises(ConflictError, match="test.Counter/0/22"):
        c.commit()
    st = c._oaas_state
    assert (st.version, st.committed, st.dirty, c.count) == (1, committed, {"count"}, 3)
    assert id(c) in rt.dirty
    c.refresh()
    c.count = 4
    c.commit()
    assert c._oaas_state.version == 3
