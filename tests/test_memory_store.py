"""The memory store on both implementations: the native engine writes into the native
memory store (``oaas_sdk._native.MemoryStore``, ``oprc-py/core/src/store/memory.rs``) in
the committing thread; the pure-Python engine into :class:`MemoryStore`. Which engine and
store a configuration gets (the seam, ``oaas_sdk/_backend.py``), the store interface of
both stores, and what a commit on memory does at once whatever the durability."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from oaas_sdk import ConflictError, OaasConfig, OaasObject, oaas, runtime
from oaas_sdk.engine import NativeEngine, PythonEngine
from oaas_sdk.stores import WriteRecord
from oaas_sdk.stores.memory import MemoryStore, NativeMemoryStore

from .conftest import IMPLS, Sdk, _need_impl, stored_entries


@oaas.service("MemCounter", package="test")
class MemCounter(OaasObject):
    count: int = 0
    tags: list[str] = []


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    yield
    oaas.configure(OaasConfig(mock_mode=True, native="off"))


@pytest.fixture(params=[(i, d) for i in IMPLS for d in ("sync", "async")],
                ids=[f"{i}-{d}" for i in IMPLS for d in ("sync", "async")])
def mem_sdk(request: pytest.FixtureRequest) -> Sdk:
    """The memory store on each implementation, with each durability."""
    impl, durability = request.param
    _need_impl(impl)
    s = Sdk(impl, "memory", None)
    s.reconfigure(durability=durability)
    return s


def _native_module() -> Any:
    _need_impl("native")
    from oaas_sdk import _backend

    return _backend.native_module("on")


@pytest.mark.parametrize("how", ["storage", "mock_mode"])
def test_native_memory_runs_the_native_engine_over_the_native_store(how: str) -> None:
    _need_impl("native")
    kw: dict[str, Any] = {"storage": "memory"} if how == "storage" else {"mock_mode": True}
    rt = runtime.configure(OaasConfig(native="on", **kw))
    eng = rt.engine
    assert isinstance(eng, NativeEngine)
    assert isinstance(eng.store, NativeMemoryStore) and isinstance(eng.store, MemoryStore)
    assert eng.inline and eng.acks_at_submit and eng.commit_object is not None
    assert eng.store.name == "memory store"
    assert oaas.stats()["implementation"] == "native"


def test_pure_python_memory_runs_the_python_engine() -> None:
    rt = runtime.configure(OaasConfig(native="off", storage="memory"))
    assert isinstance(rt.engine, PythonEngine)
    assert type(rt.engine.store) is MemoryStore


def test_a_python_store_given_to_the_runtime_keeps_the_python_engine() -> None:
    _need_impl("native")
    given = MemoryStore()
    rt = runtime.configure(OaasConfig(native="on", storage="memory"), store=given)
    assert isinstance(rt.engine, PythonEngine) and rt.engine.store is given
    c = MemCounter.create(obj_id=1, count=3)
    c.commit()
    assert given.read(("test.MemCounter", 0, 1)) is not None


def test_the_native_store_outlives_its_engine_into_the_next_configuration() -> None:
    _need_impl("native")
    rt = runtime.configure(OaasConfig(native="on", storage="memory"))
    store = rt.engine.store
    c = MemCounter.create(obj_id=2, count=7, tags=["a"])
    c.commit()
    rt2 = runtime.configure(OaasConfig(native="on", storage="memory"), store=store)
    assert isinstance(rt2.engine, NativeEngine) and rt2.engine.store is store
    again = MemCounter.load(2)
    assert (again.count, again.tags) == (7, ["a"])
    # The pure-Python engine can write into it too (the same Store interface).
    rt3 = runtime.configure(OaasConfig(native="off", storage="memory"), store=store)
    assert isinstance(rt3.engine, PythonEngine) and rt3.engine.store is store
    py = MemCounter.load(2)
    py.count = 8
    py.commit()
    assert store.read(("test.MemCounter", 0, 2)).version == 2  # type: ignore[union-attr]


@pytest.fixture(params=["python", "native"])
def store(request: pytest.FixtureRequest) -> MemoryStore:
    if request.param == "python":
        return MemoryStore()
    return NativeMemoryStore(_native_module())


def _rec(oid: int | str, expected: int, entries: dict[str, bytes] | None = None,
         **kw: Any) -> WriteRecord:
    return WriteRecord(("t.C", 0, oid), expected, entries or {}, time_ms=1000 + expected,
                       **kw)


def test_store_interface_versions_conflicts_and_deletes(store: MemoryStore) -> None:
    res = store.write_batch([_rec(1, 0, {"x": b"1", "y": b"1"}), _rec(1, 1, {"x": b"2"}),
                             _rec(1, 0, {"x": b"bad"}), _rec("s", 0, {"x": b"s"})])
    assert res[0] is None and res[1] is None and res[3] is None
    assert isinstance(res[2], ConflictError)
    assert str(res[2]) == "commit of t.C/0/1 refused: it already exists (version 2)"
    got = store.read(("t.C", 0, 1))
    assert got is not None
    assert (got.version, got.created_ms, got.updated_ms) == (2, 1000, 1001)
    assert list(got.entries.items()) == [("x", b"2"), ("y", b"1")]  # first-written order
    got.entries["x"] = b"changed"  # a copy: the store keeps its own
    assert store.read(("t.C", 0, 1)).entries["x"] == b"2"  # type: ignore[union-attr]
    assert store.write_batch([_rec(1, 2, deletes=("y", "absent"))]) == [None]
    assert store.read(("t.C", 0, 1)).entries == {"x": b"2"}  # type: ignore[union-attr]
    late = store.write_batch([_rec(1, 1, {"x": b"late"})])[0]
    assert str(late) == ("commit of t.C/0/1 refused: another writer committed version 3 "
                         "since this process saw version 1")
    assert store.write_batch([_rec(1, 3, delete_object=True)]) == [None]
    assert store.read(("t.C", 0, 1)) is None
    gone = store.write_batch([_rec(1, 3, {"x": b"x"})])[0]
    assert str(gone).endswith("it was deleted by another writer")
    assert store.write_batch([_rec(1, 0, {"z": b"3"})]) == [None]
    assert store.read(("t.C", 0, 1)).version == 1  # type: ignore[union-attr]


def test_store_interface_scan_and_classes(store: MemoryStore) -> None:
    recs = [WriteRecord((cls_id, pid, oid), 0, {"x": b"v"}) for cls_id, pid, oid in
            [("b.B", 0, 5), ("a.A", 1, 1), ("a.A", 0, 3), ("a.A", 0, "k"), ("a.A", 0, 2)]]
    assert store.write_batch(recs) == [None] * 5
    assert sorted(store.scan("a.A"), key=str) == sorted(
        [("a.A", 1, 1), ("a.A", 0, 3), ("a.A", 0, "k"), ("a.A", 0, 2)], key=str)
    assert sorted(store.scan("a.A", 0), key=str) == sorted(
        [("a.A", 0, 3), ("a.A", 0, "k"), ("a.A", 0, 2)], key=str)
    assert list(store.scan("c.C")) == []
    assert store.classes() == ["a.A", "b.B"]
    store.close()


async def test_a_commit_on_memory_is_written_when_made_whatever_the_durability(
        mem_sdk: Sdk) -> None:
    assert isinstance(runtime.current().engine,
                      NativeEngine if mem_sdk.impl == "native" else PythonEngine)
    c = MemCounter.create(obj_id=3)
    await c.commit_async()
    c.count = 5
    pending = c.commit_async()  # written before it is awaited: no batch to wait for
    assert runtime.current().engine.read(("test.MemCounter", 0, 3)).version == 2  # type: ignore[union-attr]
    await pending
    c.tags.append("x")
    c.commit()
    assert stored_entries(3, "test.MemCounter") == {
        "count": b"\x05", "tags": b"\x91\xa1x"}
    st = oaas.stats()
    assert st["queue_depth"] == 0 and st["pending_bytes"] == 0
    assert st["commits"] == 3 and st["batches"] == 3 and st["mean_batch_size"] == 1.0


async def test_a_refused_commit_on_memory_fails_at_once_and_keeps_the_changes(
        mem_sdk: Sdk) -> None:
    c = MemCounter.create(obj_id=4)
    c.commit()
    rt = runtime.current()
    rt.engine.submit(WriteRecord(("test.MemCounter", 0, 4), 1, {"count": b"\x07"})).wait()
    c.count = 1
    with pytest.raises(ConflictError, match="test.MemCounter/0/4"):
        c.commit()
    assert c._oaas_state.version == 1 and c._oaas_state.dirty == {"count"}
    with pytest.raises(ConflictError, match="test.MemCounter/0/4"):
        await c.commit_async()
    assert c._oaas_state.version == 1 and c._oaas_state.dirty == {"count"}
    assert oaas.stats()["failed_commits"] == 2
    c.refresh()
    assert c.count == 7
    c.count = 9
    await c.commit_async()
    assert stored_entries(4, "test.MemCounter")["count"] == b"\x09"
