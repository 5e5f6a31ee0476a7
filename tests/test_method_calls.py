"""How a method call runs, on both implementations: the undo record and rollback (assigned
and in-place changes, fields live before the call, nested calls), the turn (contended,
cancelled, released), the awaitable's coroutine protocol, argument and result conversion,
and accessors. The native runner is ``oprc-py/src/object/method.rs``; the reference is
``oaas_sdk/model/calls.py``."""

from __future__ import annotations

import asyncio
import gc
import inspect

import pytest
from pydantic import BaseModel

from oaas_sdk import ConflictError, Mapped, OaasObject, ValidationError, mapped, oaas, runtime
from oaas_sdk.stores import WriteRecord

from .conftest import stored_entries


class Point(BaseModel):
    x: int
    y: int


@oaas.service("Undo", package="test")
class Undo(OaasObject):
    count: int = 0
    label: str = ""
    items: list[int] = []
    tags: dict[str, int] = {}
    maybe: int | None = None

    @oaas.method()
    async def change_all_then_fail(self, n: int) -> None:
        self.count += n
        self.label = f"changed {n}"
        self.items.append(n)  # in place
        self.tags = {"new": n}  # assigned
        self.maybe = n
        raise RuntimeError("boom")

    @oaas.method()
    async def append(self, n: int) -> int:
        self.items.append(n)
        return len(self.items)

    @oaas.method()
    async def inner_fails(self) -> None:
        self.label = "inner"
        self.items.append(-1)
        raise ValueError("inner")

    @oaas.method()
    async def outer_catches(self) -> str:
        self.count = 7
        try:
            await self.inner_fails()
        except ValueError:
            pass
        return self.label

    @oaas.method()
    async def bad_assignment(self) -> None:
        self.count = 5
        self.label = object()  # type: ignore[assignment]

    @oaas.method()
    async def slow_set(self, value: int, delay: float) -> int:
        self.count = value
        await asyncio.sleep(delay)
        return self.count

    @oaas.method()
    async def waits(self, ev: asyncio.Event) -> None:  # type: ignore[valid-type]
        self.count = -1
        await ev.wait()

    @oaas.method()
    async def point(self, p: Point) -> Point:
        self.count = p.x + p.y
        return {"x": p.y, "y": p.x}  # type: ignore[return-value]

    @oaas.method()
    async def scaled(self, factor: float, *, offset: int = 0) -> float:
        return self.count * factor + offset

    @oaas.method()
    def sync_fail(self, n: int) -> None:
        self.count += n
        self.items.append(n)
        raise KeyError("no")

    @oaas.method()
    def sync_add(self, n: int) -> int:
        self.items.append(n)
        return len(self.items)

    @oaas.method()
    async def calls_sync(self, n: int) -> int:
        size = self.sync_add(n)  # re-entrant: inside this call's turn, committed with it
        assert "items" in self._oaas_state.live
        return size

    @oaas.method(stateless=True)
    async def peek(self) -> int:
        return self.count

    @oaas.getter("count")
    async def get_count(self) -> int: ...

    @oaas.getter("items")
    async def get_items(self) -> list[int]: ...

    @oaas.getter("count")
    def get_count_sync(self) -> int: ...

    @oaas.setter("count")
    async def set_count(self, value: int) -> int: ...

    @oaas.method()
    async def refresh_then_fail(self) -> None:
        self.refresh()
        self.label = "after refresh"
        self.items.append(99)
        raise RuntimeError("after refresh")

    @oaas.method()
    async def refresh_then_keep(self) -> int:
        self.refresh()
        self.label = "after refresh"
        return self.count


@oaas.service("UndoMapped", package="test")
class UndoMapped(OaasObject):
    count: int = 0
    blob: Mapped = mapped(size=16)
    grid: Mapped = mapped(shape=(2, 4), dtype="int32")

    @oaas.method()
    async def scribble_then_fail(self) -> None:
        self.count = 5
        self.blob[:4] = b"XXXX"  # in place, through the view
        self.grid[0, 0] = 99
        raise RuntimeError("scribbled")

    @oaas.method()
    async def assign_then_fail(self) -> None:
        self.blob = bytes(range(16))  # copied into the mapping
        raise RuntimeError("assigned")

    @oaas.method()
    def sync_scribble_then_fail(self) -> None:
        self.blob[8:10] = b"SS"
        raise KeyError("sync")

    @oaas.method()
    async def outer_catches(self) -> bytes:
        self.blob[4:6] = b"AB"
        try:
            await self.scribble_then_fail()
        except RuntimeError:
            pass
        return bytes(self.blob[:6])

    @oaas.method()
    async def scribble(self, data: bytes) -> None:
        self.blob[: len(data)] = data


async def test_failed_call_rolls_back_assigned_and_in_place_changes(sdk):
    o = Undo.create(obj_id=1, items=[1], tags={"a": 1})
    await o.commit_async()
    with pytest.raises(RuntimeError, match="boom"):
        await o.change_all_then_fail(3)
    assert (o.count, o.label, o.items, o.tags, o.maybe) == (0, "", [1], {"a": 1}, None)
    assert not o._oaas_state.dirty
    await o.append(2)  # the next call commits only its own change
    sdk.reconfigure()
    o2 = Undo.load(1)
    assert (o2.count, o2.label, o2.items, o2.tags, o2.maybe) == (0, "", [1, 2], {"a": 1}, None)


async def test_rollback_keeps_changes_made_before_the_call(sdk):
    o = Undo.create(obj_id=2)
    await o.commit_async()
    o.items.append(10)  # read and changed in place, not committed
    o.label = "before"  # assigned, not committed
    with pytest.raises(RuntimeError):
        await o.change_all_then_fail(1)
    assert o.items == [10]
    assert o.label == "before"
    assert "label" in o._oaas_state.dirty
    await o.commit_async()
    assert stored_entries(2, "test.Undo").keys() >= {"items", "label"}
    sdk.reconfigure()
    assert (Undo.load(2).items, Undo.load(2).label) == ([10], "before")


async def test_nested_call_rolls_back_only_its_own_changes(sdk):
    o = Undo.create(obj_id=3, items=[1])
    await o.commit_async()
    assert await o.outer_catches() == ""
    assert (o.count, o.items, o.label) == (7, [1], "")
    sdk.reconfigure()
    assert (Undo.load(3).count, Undo.load(3).items) == (7, [1])


async def test_conversion_error_in_a_call_names_the_field_and_rolls_back(sdk):
    o = Undo.create(obj_id=4)
    await o.commit_async()
    with pytest.raises(TypeError, match="Undo.label"):
        await o.bad_assignment()
    assert (o.count, o.label) == (0, "")


async def test_uncommitted_new_object_rolls_back_and_commits_later(sdk):
    o = Undo.create(obj_id=5)
    with pytest.raises(RuntimeError):
        await o.change_all_then_fail(2)
    assert (o.count, o.items) == (0, [])
    assert await o.append(4) == 1
    sdk.reconfigure()
    assert Undo.load(5).items == [4]


async def test_contended_calls_serialize_and_each_commits(sdk):
    o = Undo.create(obj_id=6)
    await o.commit_async()
    results = await asyncio.gather(o.slow_set(1, 0.01), o.slow_set(2, 0.0), o.slow_set(3, 0.0))
    assert results == [1, 2, 3]
    assert o.count == 3
    assert o._oaas_state.turn.locked is False
    sdk.reconfigure()
    assert Undo.load(6).count == 3


async def test_cancelled_call_rolls_back_and_releases_the_turn(sdk):
    o = Undo.create(obj_id=7, count=1)
    await o.commit_async()
    ev = asyncio.Event()
    task = asyncio.ensure_future(o.waits(ev))
    await asyncio.sleep(0)
    assert o.count == -1  # the body runs, holding the turn
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert o.count == 1
    assert await asyncio.wait_for(o.slow_set(2, 0), timeout=5) == 2


async def test_call_is_a_coroutine_for_tasks(sdk):
    o = Undo.create(obj_id=8)
    task = asyncio.create_task(o.append(1))
    assert await task == 1
    call = o.append(2)
    assert asyncio.iscoroutine(call)
    assert await call == 2
    with pytest.raises(RuntimeError):
        await call  # awaited already, like a coroutine
    never = o.append(3)
    never.close()  # never started: nothing ran
    assert o.items == [1, 2]


async def test_arguments_and_result_are_converted(sdk):
    o = Undo.create(obj_id=9, count=2)
    assert await o.point({"x": 1, "y": "2"}) == Point(x=2, y=1)
    assert o.count == 3
    assert await o.scaled("2", offset="1") == 7.0
    assert await o.scaled(1.5) == 4.5
    with pytest.raises(ValidationError, match="factor"):
        await o.scaled("many")


async def test_stateless_method_takes_no_turn(sdk):
    o = Undo.create(obj_id=10, count=4)
    ev = asyncio.Event()
    task = asyncio.ensure_future(o.waits(ev))
    await asyncio.sleep(0)
    assert await asyncio.wait_for(o.peek(), timeout=5) == -1
    ev.set()
    await task


async def test_getters_and_setter(sdk):
    o = Undo.create(obj_id=11, items=[1, 2])
    assert await o.get_count() == 0
    items = await o.get_items()
    assert items == [1, 2]
    items.append(3)  # a copy: the object is unchanged
    assert o.items == [1, 2]
    assert o.get_count_sync() == 0
    assert await o.set_count("5") == 5
    assert await o.get_count() == 5
    with pytest.raises(ValidationError, match="Undo.count"):
        await o.set_count("five")
    assert o.count == 5
    task = asyncio.ensure_future(o.get_count())
    assert await task == 5
    sdk.reconfigure()
    assert Undo.load(11).count == 5


async def test_dropped_call_rolls_back_and_releases_the_turn(sdk):
    o = Undo.create(obj_id=12, count=1)
    await o.commit_async()
    ev = asyncio.Event()
    call = o.waits(ev)
    call.send(None)  # runs the body until it waits
    assert o.count == -1
    del call
    gc.collect()
    assert o.count == 1
    assert await asyncio.wait_for(o.slow_set(2, 0), timeout=5) == 2


async def test_sync_methods_roll_back_commit_and_respect_the_turn(sdk):
    o = Undo.create(obj_id=13, items=[1])
    await o.commit_async()
    with pytest.raises(KeyError):
        o.sync_fail(2)
    assert (o.count, o.items) == (0, [1])
    assert o.sync_add(2) == 2  # commits before it returns
    assert stored_entries(13, "test.Undo")["items"] != b""
    assert await o.calls_sync(3) == 3
    assert await asyncio.to_thread(o.sync_add, 4) == 4  # no loop in that thread: no turn
    ev = asyncio.Event()
    task = asyncio.ensure_future(o.waits(ev))
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="holds its turn"):
        o.sync_add(5)
    ev.set()
    await task
    sdk.reconfigure()
    o2 = Undo.load(13)
    assert (o2.items, o2.count) == ([1, 2, 3, 4], -1)


async def test_failed_call_rolls_back_mapped_fields(sdk):
    o = UndoMapped.create(obj_id=1)
    o.blob[:4] = b"init"  # before any call: kept
    o.grid[1, 1] = 7
    await o.commit_async()
    with pytest.raises(RuntimeError, match="scribbled"):
        await o.scribble_then_fail()
    assert bytes(o.blob[:4]) == b"init"
    assert (int(o.grid[0, 0]), int(o.grid[1, 1]), o.count) == (0, 7, 0)
    with pytest.raises(RuntimeError, match="assigned"):
        await o.assign_then_fail()
    assert bytes(o.blob) == b"init" + bytes(12)
    with pytest.raises(KeyError):
        o.sync_scribble_then_fail()
    assert bytes(o.blob[8:10]) == bytes(2)
    # Nested: the inner call's changes are undone, the outer call's kept.
    assert await o.outer_catches() == b"initAB"
    assert o.count == 0 and int(o.grid[0, 0]) == 0
    await o.scribble(b"ok")  # a call that returns keeps its changes
    assert bytes(o.blob[:6]) == b"okitAB"
    assert o._oaas_state.undo is None


async def test_failed_call_undoes_a_refresh_in_it(sdk):
    o = Undo.create(obj_id=20, count=1, items=[1])
    await o.commit_async()
    st = o._oaas_state
    committed = dict(st.committed)
    rt = runtime.current()
    rt.engine.submit(WriteRecord(("test.Undo", 0, 20), 1, {"count": b"\x07"})).wait()
    o.label = "mine"  # not committed
    o.items.append(2)  # live, changed in place, not committed
    with pytest.raises(RuntimeError, match="after refresh"):
        await o.refresh_then_fail()
    # As before the call: its values, its uncommitted changes and its version.
    assert (o.count, o.label, o.items) == (1, "mine", [1, 2])
    assert st.version == 1 and st.committed == committed
    assert st.dirty == {"label"} and "items" in st.live
    assert rt.dirty.get(id(o)) is o and rt.touched.get(id(o)) is o
    if not (rt.engine.acks_at_submit and not rt.engine.inline):
        with pytest.raises(ConflictError):  # the other writer's commit is still seen
            await o.commit_async()
    o.refresh()
    assert (o.count, o.label) == (7, "")
    o.label = "x"
    assert await o.refresh_then_keep() == 7  # a call that returns keeps its refresh
    assert o.label == "after refresh"
    sdk.reconfigure()
    assert (Undo.load(20).count, Undo.load(20).label) == (7, "after refresh")


async def test_async_getter_binds_like_a_method(sdk):
    o = Undo.create(obj_id=30, count=4)
    getter = Undo.get_count  # on the class: the getter itself
    assert getter.__name__ == "get_count" and getter._oaas_spec.field_name == "count"
    assert inspect.signature(getter).return_annotation in (int, "int")
    bound = o.get_count  # a bound method, as for a function
    assert bound.__self__ is o
    assert await bound() == 4
    assert await Undo.get_count(o) == 4
    with pytest.raises(TypeError):
        o.get_count(1)
    o.count = 6
    assert await asyncio.gather(o.get_count(), o.get_count()) == [6, 6]


async def test_async_method_and_setter_bind_like_methods(sdk):
    o = Undo.create(obj_id=31)
    method = Undo.scaled  # on the class: the wrapper itself
    assert method.__name__ == "scaled" and method._oaas_spec.name == "scaled"
    assert list(inspect.signature(method).parameters) == ["self", "factor", "offset"]
    o.count = 2
    assert await Undo.scaled(o, 1.5, offset=1) == 4.0  # keywords pass through
    bound = o.scaled
    assert bound.__self__ is o and await bound(2.0) == 4.0
    setter = Undo.set_count
    assert setter._oaas_spec.field_name == "count" and setter._oaas_run_spec.kind == "setter"
    assert await o.set_count(value=9) == 9
    with pytest.raises(TypeError):
        await Undo.scaled()  # no object
    sdk.reconfigure()
    assert Undo.load(31).count == 9


async def test_async_getter_awaitables_are_independent(sdk):
    o = Undo.create(obj_id=32, count=6)
    held = o.get_count()  # not awaited yet
    o.count = 7
    assert await o.get_count() == 7
    assert [await o.get_count() for _ in range(3)] == [7, 7, 7]
    # The native getter reads the field when called, the Python one when awaited; a
    # pending awaitable is never given another call's value.
    assert await held == (6 if sdk.impl == "native" else 7)
    with pytest.raises(RuntimeError):
        await held  # awaited once only
