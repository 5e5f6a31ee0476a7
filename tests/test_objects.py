"""Behaviour of OaasObject: life cycle, fields, commits, identity map, turns, rollback."""

from __future__ import annotations

import asyncio
import gc
import socket
from datetime import UTC, datetime

import pytest

from oaas_sdk import (
    ConflictError,
    OaasObject,
    ObjectNotFound,
    ObjectRef,
    ValidationError,
    oaas,
    ref,
)

from .models import Address, Counter, Profile


async def test_create_commit_load_roundtrip(sdk):
    c = Counter.create(obj_id=1)
    assert c.object_id == 1
    assert c.meta.cls_id == "test.Counter"
    assert c.meta.partition_id == 0
    assert await c.increment(5) == 5
    del c
    gc.collect()
    sdk.reconfigure()  # new runtime: empty identity map and cache
    c2 = Counter.load(1)
    assert c2.count == 5
    assert c2.history == ["+5"]


async def test_fresh_ids_are_distinct_and_string_ids_work(sdk):
    ids = {Counter.create().object_id for _ in range(1000)}
    assert len(ids) == 1000
    assert all(isinstance(i, int) and 0 <= i < 2**64 for i in ids)
    s = Counter.create(obj_id="alice")
    s.count = 3
    await s.commit_async()
    assert Counter.load("alice").count == 3
    with pytest.raises(ValueError, match="object_id"):
        Counter.create(obj_id="Not Valid!")


async def test_load_missing_raises_object_not_found(sdk):
    with pytest.raises(ObjectNotFound) as ei:
        Counter.load(424242)
    assert isinstance(ei.value, KeyError)
    assert "test.Counter" in str(ei.value) and "424242" in str(ei.value)


async def test_identity_map_returns_same_instance(sdk):
    c = Counter.create(obj_id=7)
    await c.commit_async()
    assert Counter.load(7) is c
    sdk.reconfigure()
    a = Counter.load(7)
    assert Counter.load(7) is a


async def test_create_existing_id_is_refused(sdk):
    c = Counter.create(obj_id=8)
    await c.commit_async()
    with pytest.raises(ConflictError, match="already exists"):
        Counter.create(obj_id=8)
    assert Counter.load_or_create(8) is c


async def test_in_place_changes_are_persisted(sdk):
    c = Counter.create(obj_id=9)
    await c.commit_async()
    c.history.append("a")
    c.tags["x"] = 1
    await c.commit_async()
    c.history.append("b")  # after a commit: next read marks the object again
    await oaas.commit_all_async()
    sdk.reconfigure()
    c2 = Counter.load(9)
    assert c2.history == ["a", "b"]
    assert c2.tags == {"x": 1}


async def test_mutable_defaults_are_not_shared(sdk):
    a, b = Counter.create(), Counter.create()
    a.history.append("only a")
    assert b.history == []
    assert Counter.create().tags == {}


async def test_assignment_coerces_and_refuses(sdk):
    c = Counter.create()
    c.count = "12"
    assert c.count == 12 and type(c.count) is int
    with pytest.raises(ValidationError) as ei:
        c.count = "twelve"
    assert isinstance(ei.value, ValueError)
    assert "Counter.count" in str(ei.value)
    assert c.count == 12  # old value kept
    with pytest.raises(TypeError, match="Counter.label"):
        c.label = object()
    assert c.label == ""


async def test_method_rollback_on_exception(sdk):
    c = Counter.create(obj_id=10)
    await c.increment(1)
    with pytest.raises(RuntimeError, match="boom"):
        await c.fail_after_change(100)
    assert c.count == 1
    assert c.history == ["+1"]
    assert c.tags == {}
    sdk.reconfigure()
    c2 = Counter.load(10)
    assert (c2.count, c2.history, c2.tags) == (1, ["+1"], {})


async def test_turns_serialize_calls_on_one_object(sdk):
    c = Counter.create(obj_id=11)
    results = await asyncio.gather(*(c.slow_increment(0.005) for _ in range(5)))
    assert sorted(results) == [1, 2, 3, 4, 5]  # no lost update
    assert c.count == 5


async def test_calls_on_different_objects_run_concurrently(sdk):
    objs = [Counter.create() for _ in range(4)]
    started = asyncio.Event()
    order: list[str] = []

    async def first():
        order.append("a-start")
        started.set()
        await objs[0].slow_increment(0.05)
        order.append("a-end")

    async def second():
        await started.wait()
        await objs[1].increment(1)
        order.append("b-done")

    await asyncio.gather(first(), second())
    assert order.index("b-done") < order.index("a-end")


async def test_reentrant_call_does_not_deadlock(sdk):
    c = Counter.create()
    assert await asyncio.wait_for(c.twice(2), timeout=5) == 4


async def test_sync_method_from_async_and_sync_code(sdk):
    c = Counter.create()
    # a sync method returns its value, in a running loop (here) as in plain sync code
    assert c.sync_bump() == 1
    result = await asyncio.to_thread(c.sync_bump)
    assert result == 2


async def test_stateless_method_and_function(sdk):
    c = Counter.create()
    await c.increment(2)
    assert await c.describe() == "count=2"
    assert await Counter.version() == "1.0"


async def test_accessors(sdk):
    c = Counter.create(obj_id=12)
    assert await c.get_count() == 0
    assert await c.set_count("41") == 41
    assert await c.get_count() == 41
    assert await c.get_history() == []
    sdk.reconfigure()
    assert Counter.load(12).count == 41  # the setter committed


async def test_method_parameters_defaults_and_models(sdk):
    c = Counter.create()
    assert await c.add_many(1) == 6
    assert await c.add_many(1, 1, c=1) == 9
    p = Profile.create(obj_id="bob")
    got = await p.move({"city": "Paris"})  # dict converted to the model
    assert isinstance(got, Address) and got.city == "Paris"
    with pytest.raises(ValidationError, match="amount|a"):
        await c.add_many("x")


async def test_optional_datetime_and_models_roundtrip(sdk):
    p = Profile.create(obj_id="carol")
    born = datetime(1990, 5, 17, 8, 30, tzinfo=UTC)
    p.born = born
    p.address = Address(city="Lyon", zip="69000")
    await p.commit_async()
    sdk.reconfigure()
    q = Profile.load("carol")
    assert q.born == born and isinstance(q.born, datetime)
    assert q.address == Address(city="Lyon", zip="69000")


async def test_references_between_objects(sdk):
    a = Profile.create(obj_id="ann")
    b = Profile.create(obj_id="ben")
    a.best_friend = b
    await oaas.commit_all_async()
    sdk.reconfigure()
    a2 = Profile.load("ann")
    assert isinstance(a2.best_friend, Profile)
    assert a2.best_friend.object_id == "ben"
    r = a2.as_ref()
    assert isinstance(r, ObjectRef) and r == ref("test.Profile", "ann")
    assert await r.rename("Ann") == "Ann"
    assert a2.name == "Ann"


async def test_objectref_calls_methods_and_accessors(sdk):
    c = Counter.create(obj_id=13)
    await c.commit_async()
    r = ref("test.Counter", 13)
    assert await r.increment(3) == 3
    await r.set_count(25)
    assert await r.get_count() == 25
    with pytest.raises(AttributeError):
        r.no_such_method  # noqa: B018


async def test_delete(sdk):
    c = Counter.create(obj_id=14)
    await c.commit_async()
    await c.delete_async()
    with pytest.raises(ObjectNotFound):
        Counter.load(14)
    d = Counter.create(obj_id=15)
    d.commit()
    d.delete()
    with pytest.raises(ObjectNotFound):
        Counter.load(15)


async def test_commit_cost_follows_changed_objects(sdk):
    objs = [Counter.create() for _ in range(50)]
    await oaas.commit_all_async()
    before = oaas.stats()["commits"]
    objs[3].count = 1
    await oaas.commit_all_async()
    oaas.flush()
    assert oaas.stats()["commits"] - before == 1
    assert oaas.stats()["dirty_objects"] == 0


async def test_unchanged_object_commit_writes_nothing(sdk):
    c = Counter.create()
    await c.commit_async()
    n = oaas.stats()["commits"]
    _ = c.history  # read, not changed
    await c.commit_async()
    oaas.flush()
    assert oaas.stats()["commits"] == n


def test_field_name_collision_refused():
    with pytest.raises(TypeError, match="meta"):
        class Bad(OaasObject):  # noqa: F841
            meta: int = 0


def test_unsupported_field_type_refused():
    with pytest.raises(TypeError):
        class Bad2(OaasObject):  # noqa: F841
            sock: socket.socket


def test_private_and_classvar_are_not_fields():
    assert set(Counter._oaas_fields) == {"count", "history", "tags", "label"}


def test_fields_are_inherited():
    class Base(OaasObject):
        a: int = 1

    class Child(Base):
        b: str = "x"

    assert set(Child._oaas_fields) == {"a", "b"}


def test_constructor_is_refused():
    with pytest.raises(TypeError, match="create"):
        Counter()


async def test_stats_report(sdk):
    c = Counter.create()
    await c.increment()
    oaas.flush()
    s = oaas.stats()
    for key in ("cache_hits", "cache_misses", "cache_evictions", "cache_bytes", "commits",
                "entries_written", "bytes_written", "batches", "mean_batch_size",
                "persist_latency_p50_us", "persist_latency_p99_us", "queue_depth",
                "implementation"):
        assert key in s
    assert s["implementation"] == sdk.impl
    assert s["commits"] >= 1 and s["bytes_written"] > 0 and s["batches"] >= 1
