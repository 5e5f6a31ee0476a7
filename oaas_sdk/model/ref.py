"""References to objects by identity: :class:`ObjectRef` and :func:`ref`.

An ``ObjectRef`` holds only (cls_id, partition_id, object_id). Calling a method on it
(``await r.increment(1)``) invokes that method of the object wherever it lives: over the
OaaS gRPC protocol (:mod:`oaas_sdk.rpc.client`) when ``OaasConfig.routes`` maps its class
to another process (or the class is not registered here and a ``"*"`` route exists), else
in this process through the identity map or the store. References are valid field values
(stored as codec extension 12).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import codec
from ..errors import ObjectNotFound
from ..stores import check_identity
from .methods import invoke

__all__ = ["ObjectRef", "ref"]


class ObjectRef:
    """Identity of an object plus proxy calls to its methods and accessors.

    Equal and hashed by identity. ``await r.resolve()`` gives the live object. Attribute
    access returns an async callable for each method, accessor and function of the class;
    other names raise ``AttributeError``.
    """

    __slots__ = ("cls_id", "partition_id", "object_id")
    cls_id: str
    partition_id: int
    object_id: int | str

    def __init__(self, cls_id: str, object_id: int | str, partition_id: int = 0) -> None:
        check_identity(cls_id, partition_id, object_id)
        object.__setattr__(self, "cls_id", cls_id)
        object.__setattr__(self, "partition_id", partition_id)
        object.__setattr__(self, "object_id", object_id)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ObjectRef is immutable")

    @property
    def __oaas_identity__(self) -> tuple[str, int, int | str]:
        return (self.cls_id, self.partition_id, self.object_id)

    @classmethod
    def _of(cls, cls_id: str, partition_id: int, object_id: int | str) -> ObjectRef:
        """The reference to ``(cls_id, partition_id, object_id)``: the ids in the order of
        every key (the constructor keeps oaas-sdk2-py's ``(cls_id, object_id,
        partition_id)``). Internal: a private name, so that no method of the class is
        shadowed on references. Raises ``ValueError`` for a malformed identity."""
        return cls(cls_id, object_id, partition_id)

    @classmethod
    def __oaas_from_identity__(cls, cls_id: str, partition_id: int,
                               object_id: int | str) -> ObjectRef:
        return cls(cls_id, object_id, partition_id)

    @property
    def meta(self) -> Any:
        """The identity as an :class:`~oaas_sdk.object.ObjectMeta`."""
        from .registry import ObjectMeta

        return ObjectMeta(self.cls_id, self.partition_id, self.object_id)

    def __eq__(self, other: object) -> bool:
        ident = getattr(other, "__oaas_identity__", None)
        return ident is not None and ident == self.__oaas_identity__

    def __hash__(self) -> int:
        return hash(self.__oaas_identity__)

    def __repr__(self) -> str:
        return f"ObjectRef({self.cls_id!r}, {self.object_id!r}, partition_id={self.partition_id})"

    def __str__(self) -> str:
        return f"{self.cls_id}/{self.partition_id}/{self.object_id}"

    def _class(self) -> type:
        from .registry import class_by_id

        cls = class_by_id(self.cls_id)
        if cls is None:
            raise ObjectNotFound(f"no class {self.cls_id!r} is registered in this process "
                                 f"and OaasConfig.routes has no route for it")
        return cls

    def resolve_sync(self) -> Any:
        """The live object (loaded when needed). Raises :class:`ObjectNotFound`."""
        return self._class().load(self.object_id, self.partition_id)  # type: ignore[attr-defined]

    async def resolve(self) -> Any:
        """The live object (loaded when needed). Raises :class:`ObjectNotFound`."""
        return self.resolve_sync()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("__"):
            raise AttributeError(name)
        from ..runtime import current
        from .registry import class_by_id

        local = class_by_id(self.cls_id)
        route = current().config.route_for(self.cls_id, served_here=local is not None)
        if route is not None:  # served by another process: call over the OaaS protocol
            from ..rpc.client import remote_method

            return remote_method(route, self.cls_id, self.object_id, self.partition_id,
                                 local, name)
        cls = self._class()
        specs = getattr(cls, "_oaas_methods", {})
        spec = next((s for s in specs.values() if s.attr_name == name or s.name == name), None)
        if spec is None:
            raise AttributeError(f"{self.cls_id} has no method or accessor {name!r}")

        async def call(*args: Any, **kwargs: Any) -> Any:
            # invoke(): a sync method or setter waits for the object's turn
            target = cls if spec.kind == "function" else self.resolve_sync()
            return await invoke(target, spec, args, kwargs)

        call.__name__ = name
        return call


def ref(cls_id: str, object_id: int | str, partition_id: int = 0) -> ObjectRef:
    """An :class:`ObjectRef` to ``cls_id`` (``"<package>.<Name>"``) / ``object_id``.

    Raises ``ValueError`` for a malformed identity.
    """
    return ObjectRef(cls_id, object_id, partition_id)


codec.set_default_ref_factory(ObjectRef._of)
