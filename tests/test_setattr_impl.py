"""``OaasObject.__setattr__`` follows the configured implementation: the native method
with ``native="on"``, the Python definition with ``native="off"``; both convert, refuse
and mark fields dirty the same way (the rest of the suite runs every behaviour on both)."""

from __future__ import annotations

import types

import pytest

from oaas_sdk import OaasObject, ValidationError, oaas

from .models import Counter


@pytest.mark.parametrize("method", ["__setattr__", "commit_async", "commit"])
def test_implementation_follows_configuration(sdk, method: str) -> None:
    """The native methods are installed with ``native="on"`` (``commit_async`` and
    ``commit`` on the native engine, which runs every store of these tests: LMDB, Redis,
    memory). Else the Python definitions."""
    impl = OaasObject.__dict__[method]
    if sdk.impl == "native":
        assert not isinstance(impl, types.FunctionType)  # a method descriptor
    else:
        assert isinstance(impl, types.FunctionType)


async def test_assignments_convert_refuse_and_mark_dirty(sdk) -> None:
    c = Counter.create(obj_id=1)
    await c.commit_async()
    c.count = "12"  # converted as pydantic's lax mode does
    assert c.count == 12 and c._oaas_state.dirty == {"count"}
    with pytest.raises(ValidationError, match=r"Counter\.count"):
        c.count = "twelve"
    assert c.count == 12  # unchanged
    c.history = ["a"]  # a mutable field: live from now on
    assert "history" in c._oaas_state.live
    c._scratch = 5  # not a field: a plain attribute
    assert c._scratch == 5 and "_scratch" not in c._oaas_state.dirty
    await c.commit_async()
    sdk.reconfigure()
    c2 = Counter.load(1)
    assert (c2.count, c2.history) == (12, ["a"])


def test_subclass_setattr_calls_through(sdk) -> None:
    @oaas.service("Audited", package="test")
    class Audited(OaasObject):
        n: int = 0

        def __setattr__(self, name: str, value: object) -> None:
            super().__setattr__(name, value)
            if name == "n":
                object.__setattr__(self, "_last", value)

    a = Audited.create(obj_id=2)
    a.n = "3"
    assert a.n == 3 and a._last == "3" and "n" in a._oaas_state.dirty
    with pytest.raises(TypeError):
        OaasObject.__setattr__(a, "n")  # type: ignore[call-arg]


async def test_first_change_after_commit_enters_the_dirty_registry(sdk) -> None:
    """Assigning a field after a commit, a mutable one included (it becomes live in the
    same step), puts the object in the dirty registry, so ``commit_all`` commits it. The
    native ``__setattr__`` used to skip the registry for a mutable field (it saw the
    field it had just marked live)."""
    c = Counter.create(obj_id=3)
    await c.commit_async()
    rt = c._oaas_state.rt
    rt.dirty.pop(id(c), None)
    c.history = ["a"]
    assert id(c) in rt.dirty and c._oaas_state.dirty == {"history"}
    oaas.commit_all()
    assert not c._oaas_state.dirty
    c.count = 7  # an immutable field, the same invariant
    assert id(c) in rt.dirty
    oaas.commit_all()
    sdk.reconfigure()
    c2 = Counter.load(3)
    assert (c2.count, c2.history) == (7, ["a"])


def test_conversion_entry_names_the_one_exact_type(sdk) -> None:
    """``_oaas_conv``'s last item is the field's only exact type (the native fast path
    compares it by address), or None when there are several or none; an int field still
    converts a bool as pydantic does, and a subclass of the exact type is converted too."""
    conv = Counter._oaas_conv or Counter._oaas_build_conv()
    assert conv["count"][4] is int and conv["label"][4] is str
    assert conv["history"][4] is None  # a list field passes nothing through as it is
    c = Counter.create(obj_id=4)

    class MyInt(int):
        pass

    c.count = MyInt(5)
    assert type(c.count) is int and c.count == 5
    c.count = True
    assert type(c.count) is int and c.count == 1
