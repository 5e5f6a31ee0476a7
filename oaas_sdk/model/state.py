"""``ObjectState``: the SDK's bookkeeping of one live object, and the contract with Rust.

Every OaaS object holds one :class:`ObjectState` in the instance attribute
:data:`STATE_ATTR` (``_oaas_state``); field *values* stay plain instance attributes (reads
at plain attribute speed). The native layer (``oprc-py/src/engine/state.rs``) reads and
writes the same slots by the names in :data:`STATE_FIELDS`; ``tests/test_object_state.py``
checks that both lists agree, so renaming a slot fails a test rather than a commit at run
time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..runtime import Runtime
    from .registry import ObjectMeta

__all__ = ["ObjectState", "STATE_ATTR", "STATE_FIELDS", "CLASS_ATTRS", "ERROR_FIELD_ATTR",
           "UNCACHED", "state_of"]

#: The instance attribute holding an object's :class:`ObjectState`.
STATE_ATTR = "_oaas_state"

#: The stale mark of objects whose runtime has no entry cache (the memory store).
UNCACHED: list[int] = [0, 0]


class ObjectState:
    """What the SDK keeps about one live object (one per instance, never shared).

    - ``meta``: identity (:class:`~oaas_sdk.ObjectMeta`: cls_id, partition_id, object_id).
    - ``rt``: the :class:`~oaas_sdk.runtime.Runtime` the object lives in.
    - ``version``: committed version known here (int, 0: never committed).
    - ``committed``: field name -> committed bytes (the entries of ``version``).
    - ``dirty``: names of fields assigned since the last commit.
    - ``parked``: mutable field name -> decoded value, kept out of the instance after a
      commit so that the next read marks the object again.
    - ``live``: names of mutable fields decoded into the instance since the last commit.
    - ``turn``: the object's turn (``oaas_sdk.model.calls.Turn``) once a call took it.
    - ``deleted``: whether the object was deleted.
    - ``created_ms`` / ``updated_ms``: ms since the Unix epoch (0: not yet known).
    - ``stale``: this object's mark in ``rt.cache_stale`` once committed (a two-int list:
      instances alive, newest version), :data:`UNCACHED` without an entry cache, ``None``
      before the first commit.
    - ``maps``: open mapped fields, name -> (file handle, view); ``None`` until one opens.
    - ``undo``: while a native method call runs on the object, its undo log (field name ->
      value before the call's first assignment, or the native layer's "not in the instance"
      marker), written by the native ``__setattr__``; ``None`` otherwise (the Python
      implementation snapshots instead, see ``model/calls.py``).
    """

    __slots__ = ("meta", "rt", "version", "committed", "dirty", "parked", "live", "turn",
                 "deleted", "created_ms", "updated_ms", "stale", "maps", "undo")

    meta: ObjectMeta
    rt: Runtime
    version: int
    committed: dict[str, bytes]
    dirty: set[str]
    parked: dict[str, Any]
    live: set[str]
    turn: Any
    deleted: bool
    created_ms: int
    updated_ms: int
    stale: list[int] | None
    maps: dict[str, tuple[Any, Any]] | None
    undo: dict[str, Any] | None

    def __init__(self, meta: ObjectMeta, rt: Runtime) -> None:
        self.meta = meta
        self.rt = rt
        self.version = 0
        self.committed = {}
        self.dirty = set()
        self.parked = {}
        self.live = set()
        self.turn = None
        self.deleted = False
        self.created_ms = 0
        self.updated_ms = 0
        self.stale = None
        self.maps = None
        self.undo = None

    def __repr__(self) -> str:
        m = self.meta
        return (f"<ObjectState {m.cls_id}/{m.partition_id}/{m.object_id} v{self.version} "
                f"dirty={sorted(self.dirty)} live={sorted(self.live)}"
                f"{' deleted' if self.deleted else ''}>")


#: The slot names, in order: what Rust's ``state.rs`` names too.
STATE_FIELDS: tuple[str, ...] = ObjectState.__slots__

#: Attributes and methods of ``OaasObject`` (the class) the native layer uses: Rust's
#: ``state.rs`` (``class_attr``) names the same, in this order.
CLASS_ATTRS: tuple[str, ...] = (
    "_oaas_conv", "_oaas_build_conv", "_oaas_mapped", "_oaas_encoders", "_oaas_done",
    "_oaas_failed", "_oaas_py_commit_async", "_oaas_key", "_oaas_undo_entries",
    "_oaas_py_commit")

#: The attribute an encoding error gets, naming the field whose value failed.
ERROR_FIELD_ATTR = "_oaas_field"


def state_of(obj: Any) -> ObjectState:
    """The :class:`ObjectState` of an OaaS object (``AttributeError`` when ``obj`` was not
    made by ``create``/``load``)."""
    st: ObjectState = object.__getattribute__(obj, STATE_ATTR)
    return st
