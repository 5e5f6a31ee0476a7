"""``OaasObject.commit_async`` follows the configured implementation: a native method with
``native="on"`` on an LMDB store (the one-call commit; the Python definition for every
other case), the Python definition with ``native="off"`` or on the memory store (whose
engine is the Python one; which one is installed: tests/test_setattr_impl.py). The
behaviour of commits is tested on both by the rest of the suite; these cover the method
itself."""

from __future__ import annotations

from oaas_sdk import OaasObject, oaas, runtime

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
