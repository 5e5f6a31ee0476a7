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
