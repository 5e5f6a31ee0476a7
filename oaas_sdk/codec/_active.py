"""Which codec implementation is active: the one piece of state the backends share.

:func:`oaas_sdk.codec.bridge.set_backend` and :func:`~oaas_sdk.codec.bridge.set_default_ref_factory`
are its only writers; the encoder, the decoder and :class:`~oaas_sdk.codec.plan.FieldType`
read it on every call, so a switch takes effect at once. Hot closures bind ``ACTIVE`` as a
local rather than looking this module up per value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["ACTIVE", "ActiveCodec"]


def _default_ref_factory(cls_id: str, partition_id: int, object_id: int | str) -> Any:
    return (cls_id, partition_id, object_id)


class ActiveCodec:
    """The active implementation.

    Attributes:
        native: the native codec (``oaas_sdk._native.Codec``) while the native backend is
            active, else ``None`` (the pure-Python encoder and decoder).
        ref_factory: ``fn(cls_id, partition_id, object_id)`` building a reference (ext 12)
            decoded where the hint does not say (``set_default_ref_factory``).
    """

    __slots__ = ("native", "ref_factory")

    def __init__(self) -> None:
        self.native: Any = None
        self.ref_factory: Callable[[str, int, int | str], Any] = _default_ref_factory


ACTIVE = ActiveCodec()
