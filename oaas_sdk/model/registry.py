"""The class registry (``cls_id`` -> class), object identities (:class:`ObjectMeta`) and
fresh object ids (:func:`new_object_id`)."""

from __future__ import annotations

import dataclasses
import os
import random
import threading
import time
import typing

if typing.TYPE_CHECKING:
    from .object import OaasObject

__all__ = ["ObjectMeta", "class_by_id", "registered_classes", "new_object_id"]

_CLASSES: dict[str, type[OaasObject]] = {}


def class_by_id(cls_id: str) -> type[OaasObject] | None:
    """The registered class with this ``cls_id`` (``"<package>.<Name>"``), if any."""
    return _CLASSES.get(cls_id)


def registered_classes() -> dict[str, type[OaasObject]]:
    """A copy of the class registry: ``cls_id`` -> class."""
    return dict(_CLASSES)


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectMeta:
    """Identity of an object: class id (``"<package>.<Name>"``), partition id (u32) and
    object id (u64 or string)."""

    cls_id: str
    partition_id: int
    object_id: int | str

    @property
    def obj_id(self) -> int | str:
        """Alias of ``object_id``."""
        return self.object_id


_EPOCH_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z
_ID_NODE_BITS = 12
_ID_SEQ_BITS = 10
_ID_SEQ_MASK = (1 << _ID_SEQ_BITS) - 1
_ID_MS_MASK = (1 << 41) - 1


class _IdState:
    """What :func:`new_object_id` keeps per process; drawn again in a forked child."""

    def __init__(self) -> None:
        self.node = int.from_bytes(os.urandom(2), "big") >> (16 - _ID_NODE_BITS)
        self.rng = random.Random(os.urandom(16))
        self.last_ms = -1
        self.seq = 0  # sequence of the last id, in last_ms
        self.lock = threading.Lock()


_ids = _IdState()
# Called after the ids are drawn again in a forked child (the native generator's seam).
_reseed_hooks: list[typing.Callable[[], None]] = []


def _reseed_ids() -> None:
    global _ids
    _ids = _IdState()
    for hook in _reseed_hooks:
        hook()


if hasattr(os, "register_at_fork"):  # a child must not repeat its parent's ids
    os.register_at_fork(after_in_child=_reseed_ids)


def new_object_id() -> int:
    """A fresh 63-bit object id, time-ordered: 41 bits of milliseconds since 2020, 12 bits
    of a node id drawn at random per process (again in a forked child), 10 bits of a
    sequence that starts at a random value below 512 in each millisecond.

    Unique and increasing within a process (when a millisecond's sequence is used up, or
    the clock steps back, the next millisecond is borrowed). Two processes, on one machine
    or on several, collide only when they drew the same node id (1 in 4096) and made ids
    in the same millisecond whose sequence values met.
    """
    ms = (_time_ns() // 1_000_000) - _EPOCH_MS
    st = _ids
    with st.lock:
        if ms <= st.last_ms:
            ms = st.last_ms
            seq = st.seq + 1
            if seq > _ID_SEQ_MASK:  # this millisecond is used up: borrow the next
                ms += 1
                seq = st.rng.getrandbits(_ID_SEQ_BITS - 1)
        else:
            seq = st.rng.getrandbits(_ID_SEQ_BITS - 1)
        st.last_ms = ms
        st.seq = seq
    return ((ms & _ID_MS_MASK) << (_ID_NODE_BITS + _ID_SEQ_BITS)) | (
        st.node << _ID_SEQ_BITS) | seq


_time_ns = time.time_ns


def _now_ms() -> int:
    return _time_ns() // 1_000_000
