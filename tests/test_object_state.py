"""The object-state contract: one ``ObjectState`` per instance, whose slot names Python
(``oaas_sdk/model/state.py``) and Rust (``oprc-py/src/engine/state.rs``) define alike."""

from __future__ import annotations

import sys

import pytest

from oaas_sdk import OaasObject
from oaas_sdk.model.state import (
    CLASS_ATTRS,
    ERROR_FIELD_ATTR,
    STATE_ATTR,
    STATE_FIELDS,
    ObjectState,
    state_of,
)

from .conftest import _need_impl
from .models import Counter


def test_rust_and_python_name_the_same_slots() -> None:
    _need_impl("native")
    from oaas_sdk import _native

    assert _native.OBJECT_STATE_ATTR == STATE_ATTR
    assert tuple(_native.OBJECT_STATE_FIELDS) == STATE_FIELDS
    assert STATE_FIELDS == ObjectState.__slots__
    assert tuple(_native.OBJECT_CLASS_ATTRS) == CLASS_ATTRS
    assert _native.OBJECT_ERROR_FIELD_ATTR == ERROR_FIELD_ATTR


def test_the_class_has_what_the_native_layer_reads() -> None:
    for name in CLASS_ATTRS:
        assert hasattr(OaasObject, name), name


async def test_one_state_per_object_holds_the_bookkeeping(sdk) -> None:
    a = Counter.create(obj_id=1, count=2)
    b = Counter.create(obj_id=2)
    st = state_of(a)
    assert isinstance(st, ObjectState) and st is not state_of(b)
    assert (st.meta.object_id, st.version, st.dirty, st.deleted) == (1, 0, {"count"}, False)
    assert st.created_ms == st.updated_ms > 0
    await a.commit_async()
    assert (st.version, st.dirty, st.committed["count"]) == (1, set(), b"\x02")
    a.count = 3
    assert st.dirty == {"count"}
    await a.commit_async()  # on LMDB with native="on": the one-call native commit
    assert (st.version, st.dirty, st.committed["count"]) == (2, set(), b"\x03")
    assert state_of(a) is st  # the same record for the object's whole life
    # No other bookkeeping on the instance: fields and the state only.
    names = {n for n in vars(a) if n.startswith("_oaas")}
    assert names == {STATE_ATTR}


def test_an_object_not_made_by_create_or_load_has_no_state() -> None:
    obj = object.__new__(Counter)
    with pytest.raises(AttributeError):
        state_of(obj)
    assert "uninitialised" in repr(obj)


def test_old_module_paths_are_the_model_modules() -> None:
    import oaas_sdk
    import oaas_sdk.mapped
    import oaas_sdk.methods
    import oaas_sdk.object
    import oaas_sdk.ref
    from oaas_sdk import model
    from oaas_sdk.model import mapped, methods, object, ref

    assert model is not None
    assert (oaas_sdk.object, oaas_sdk.methods) == (object, methods)
    assert (sys.modules["oaas_sdk.mapped"], sys.modules["oaas_sdk.ref"]) == (mapped, ref)
    # Importing the old paths leaves the package's functions of the same names alone.
    assert callable(oaas_sdk.mapped) and oaas_sdk.mapped is mapped.mapped
    assert oaas_sdk.ref is ref.ref


async def test_a_state_of_a_subclass_is_read_the_same(sdk) -> None:
    """The native layer reads ``ObjectState`` slots at their offsets; a state of another
    type (a subclass) goes through ``getattr`` and behaves the same."""

    class Sub(ObjectState):
        __slots__ = ("extra",)

    a = Counter.create(obj_id=1)
    await a.commit_async()
    st = state_of(a)
    sub = Sub(st.meta, st.rt)
    for n in STATE_FIELDS:
        setattr(sub, n, getattr(st, n))
    object.__setattr__(a, STATE_ATTR, sub)
    a.count = 7
    assert sub.dirty == {"count"}
    await a.commit_async()
    assert (sub.version, sub.dirty, sub.committed["count"]) == (2, set(), b"\x07")
