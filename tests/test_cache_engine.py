"""The entry cache (bytes bound, TTL, counters) and the engine (group commit, flush)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from oaas_sdk import StorageError, oaas
from oaas_sdk.cache import EntryCache
from oaas_sdk.engine import PythonEngine
from oaas_sdk.stores import StoredObject, WriteRecord
from oaas_sdk.stores.memory import MemoryStore

from .models import Counter


def obj(n: int) -> StoredObject:
    return StoredObject(1, 0, 0, {"f": b"x" * n})


def test_cache_bounded_by_bytes_evicts_lru():
    c = EntryCache(max_bytes=1000)
    for i in range(10):
        c.put(("c", 0, i), obj(200))
    assert c.nbytes <= 1000
    assert c.evictions > 0
    assert c.get(("c", 0, 9)) is not None  # most recent kept
    assert c.get(("c", 0, 0)) is None  # oldest evicted
    assert (c.hits, c.misses) == (1, 1)


def test_cache_ttl_expires(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("oaas_sdk.cache._fallback.time.monotonic", lambda: now[0])
    c = EntryCache(max_bytes=10_000, ttl_s=5)
    c.put(("c", 0, 1), obj(10))
    now[0] += 4.9
    assert c.get(("c", 0, 1)) is not None
    now[0] += 0.2
    assert c.get(("c", 0, 1)) is None
    assert c.nbytes == 0


def test_cache_oversized_and_disabled():
    c = EntryCache(max_bytes=100)
    c.put(("c", 0, 1), obj(500))
    assert len(c) == 0
    off = EntryCache(max_bytes=0)
    off.put(("c", 0, 1), obj(1))
    assert off.get(("c", 0, 1)) is None


async def test_load_uses_cache_then_store(lmdb_sdk):
    c = Counter.create(obj_id=77)
    await c.commit_async()
    key = ("test.Counter", 0, 77)
    from oaas_sdk import runtime

    rt = runtime.current()
    rt.identity.pop(key)
    del c
    hits = oaas.stats()["cache_hits"]
    Counter.load(77)
    assert oaas.stats()["cache_hits"] == hits + 1


class SlowStore(MemoryStore):
    """A memory store whose batch write waits for a gate, to observe batching."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.batch_sizes: list[int] = []

    def write_batch(self, records):
        self.gate.wait(10)
        self.batch_sizes.append(len(records))
        return super().write_batch(records)


def test_group_commit_batches_concurrent_commits():
    store = SlowStore()
    eng = PythonEngine(store, durability="sync", batch_max_entries=10_000, batch_max_delay_ms=0)
    first = eng.submit(WriteRecord(("c", 0, 0), 0, {"f": b"\x01"}))
    tickets = [eng.submit(WriteRecord(("c", 0, i), 0, {"f": b"\x01"})) for i in range(1, 50)]
    store.gate.set()  # the persister was blocked on the first batch; the rest queued up
    for t in [first, *tickets]:
        t.wait(10)
    assert sum(store.batch_sizes) == 50
    assert len(store.batch_sizes) <= 3  # the 49 queued commits shared one or two batches
    assert eng.stats()["mean_batch_size"] > 10
    eng.close()


def test_batch_closes_at_max_entries():
    store = SlowStore()
    eng = PythonEngine(store, durability="sync", batch_max_entries=5, batch_max_delay_ms=1000)
    tickets = [eng.submit(WriteRecord(("c", 0, i), 0, {"f": b"\x01"})) for i in range(20)]
    store.gate.set()
    for t in tickets:
        t.wait(10)
    assert max(store.batch_sizes) <= 5
    eng.close()


class FailingStore(MemoryStore):
    name = "failing store"

    def write_batch(self, records):
        raise StorageError("failing store: disk on fire")


async def test_failed_batch_fails_every_commit_and_keeps_dirty_state(sdk):
    from oaas_sdk import runtime
    from oaas_sdk.config import OaasConfig

    rt = runtime.configure(OaasConfig(storage="memory", native=sdk.config().native),
                           store=FailingStore())
    rt._inline = False  # exercise the persister thread
    a, b = Counter.create(obj_id=1), Counter.create(obj_id=2)
    a.count, b.count = 5, 6
    results = await asyncio.gather(a.commit_async(), b.commit_async(), return_exceptions=True)
    assert all(isinstance(r, StorageError) for r in results)
    assert (a.count, b.count) == (5, 6)
    assert a._oaas_state.version == 0 and "count" in a._oaas_state.dirty
    assert oaas.stats()["failed_commits"] == 2


def test_closed_engine_refuses():
    eng = PythonEngine(MemoryStore(), inline=True)
    eng.close()
    with pytest.raises(StorageError, match="closed"):
        eng.submit(WriteRecord(("c", 0, 1), 0, {}))


def test_cache_update_keeps_weight_exact():
    c = EntryCache(max_bytes=10_000)
    key = ("c", 0, 1)
    c.update(key, 1, 0, {"a": b"x" * 10})
    c.update(key, 2, 0, {"a": b"y" * 30, "bb": b"z" * 5})
    c.update(key, 3, 0, {}, deletes=("a",))
    got = c.get(key)
    assert got is not None and got.version == 3 and got.entries == {"bb": b"z" * 5}
    assert c.nbytes == EntryCache._weight(got)


# -- commits reach the cache when the object is dropped (OaasObject._oaas_apply) ------------

async def test_dropped_object_puts_its_last_commit_into_the_cache(lmdb_sdk):
    from oaas_sdk import runtime

    c = Counter.create(obj_id=80)
    for n in (1, 2, 3):
        c.count = n
        await c.commit_async()
    key = ("test.Counter", 0, 80)
    rt = runtime.current()
    assert key in rt.cache_stale  # the cache lacks commits of a live instance
    del c
    assert key not in rt.cache_stale
    hits = oaas.stats()["cache_hits"]
    c = Counter.load(80)
    assert oaas.stats()["cache_hits"] == hits + 1
    assert (c.count, c._oaas_state.version) == (3, 3)


async def test_load_reads_through_while_an_instance_with_commits_awaits_its_finalizer(lmdb_sdk):
    """An unreachable object in a cycle leaves the identity map before its finalizer runs;
    a load in between must not see the cache's older record."""
    from oaas_sdk import runtime

    rt = runtime.current()
    key = ("test.Counter", 0, 81)
    c = Counter.create(obj_id=81, count=1)
    await c.commit_async()
    del c  # the cache now holds version 1
    c = Counter.load(81)
    c.count = 2
    await c.commit_async()
    keep = c
    rt.identity.pop(key)  # as the collector does before running finalizers
    del c
    again = Counter.load(81)
    assert (again.count, again._oaas_state.version) == (2, 2)
    again.count = 3
    await again.commit_async()  # no conflict: it saw the latest version
    del keep  # the older instance's finalizer must not put version 2 over version 3
    assert key in rt.cache_stale
    del again
    assert key not in rt.cache_stale
    fresh = Counter.load(81)
    assert (fresh.count, fresh._oaas_state.version) == (3, 3)


def test_native_finalizer_is_every_class_s_finalizer(impl):
    """The native implementation's ``__del__`` is a slot wrapper (a C ``tp_finalize``) on
    ``OaasObject``, inherited by classes made before and after it was installed; the
    Python implementation puts the Python function back."""
    from oaas_sdk import OaasConfig, OaasObject
    from oaas_sdk.model.object import _PY_DEL

    oaas.configure(OaasConfig(mock_mode=True, native="on" if impl == "native" else "off"))

    @oaas.service("LateFin", package="test")
    class Late(OaasObject):
        n: int = 0

    own = OaasObject.__dict__["__del__"]
    if impl == "native":
        assert type(own).__name__ == "wrapper_descriptor" and own is not _PY_DEL
    else:
        assert own is _PY_DEL
    assert Counter.__del__ is own and Late.__del__ is own
    o = Late.create()
    o.__del__()  # never committed: nothing to do, and it does not raise
    assert o.__del__() is None


async def test_finalizer_of_a_subclass_with_its_own_del_and_a_class_made_later(lmdb_sdk):
    """A class defined after the implementation was chosen, and one whose ``__del__``
    calls ``super().__del__()``, hand their committed state to the cache when dropped."""
    from oaas_sdk import OaasObject, runtime

    dropped: list[int] = []

    @oaas.service("FinLate", package="test")
    class Late(OaasObject):
        n: int = 0

        def __del__(self) -> None:
            dropped.append(self.n)
            super().__del__()

    @oaas.service("FinPlain", package="test")
    class Plain(OaasObject):
        n: int = 0

    rt = runtime.current()
    for cls, oid in ((Late, 90), (Plain, 91)):
        o = cls.create(obj_id=oid)
        o.n = 7
        await o.commit_async()
        key = (cls._oaas_cls_id, 0, oid)
        assert key in rt.cache_stale
        del o
        assert key not in rt.cache_stale
        got = rt.cache.get(key)
        assert got is not None and got.version == 1
        hits = oaas.stats()["cache_hits"]
        again = cls.load(oid)
        assert oaas.stats()["cache_hits"] == hits + 1
        assert (again.n, again._oaas_state.version) == (7, 1)
        del again
    assert dropped == [7, 7]  # the committed instance, then the loaded one


async def test_dropped_deleted_object_is_not_cached(lmdb_sdk):
    from oaas_sdk import ObjectNotFound, runtime

    rt = runtime.current()
    c = Counter.create(obj_id=82, count=1)
    await c.commit_async()
    c.count = 2
    await c.commit_async()
    key = ("test.Counter", 0, 82)
    await c.delete_async()
    del c
    assert key not in rt.cache_stale
    assert rt.cache.get(key) is None
    with pytest.raises(ObjectNotFound):
        Counter.load(82)


async def test_cancelled_commit_that_fails_still_undoes(sdk):
    from oaas_sdk import runtime
    from oaas_sdk.config import OaasConfig

    rt = runtime.configure(OaasConfig(storage="memory", native=sdk.config().native),
                           store=FailingStore())
    rt._inline = False  # exercise the persister thread
    a = Counter.create(obj_id=1)
    a.count = 5
    fut = a.commit_async()
    fut.cancel()  # type: ignore[attr-defined]
    oaas.flush()
    await asyncio.sleep(0.05)
    assert a._oaas_state.version == 0 and "count" in a._oaas_state.dirty
    assert a.count == 5


async def test_batch_stops_waiting_once_its_siblings_are_back(lmdb_sdk):
    """Committers in lock-step: each batch closes as soon as all of them are back, not
    batch_max_delay_ms after its first commit (10 rounds x 500 ms would take 5 s)."""
    import time

    lmdb_sdk.reconfigure(batch_max_delay_ms=500)
    objs = [Counter.create(obj_id=100 + i) for i in range(4)]
    await oaas.commit_all_async()

    async def rounds(o: Counter) -> None:
        for n in range(10):
            o.count = n
            await o.commit_async()

    t0 = time.monotonic()
    await asyncio.gather(*(rounds(o) for o in objs))
    assert time.monotonic() - t0 < 2.5
    assert all(o.count == 9 for o in objs)
