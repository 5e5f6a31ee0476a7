"""Persisted fields: :class:`FieldInfo` (one field of a class: hint, default, codec type),
the lazy descriptor of mutable fields, ``field()`` defaults and type-hint resolution."""

from __future__ import annotations

import sys
import typing
from typing import Any, ClassVar

from .. import codec
from .registry import _CLASSES

if typing.TYPE_CHECKING:
    from .object import OaasObject

__all__ = ["FieldInfo", "field"]

_set = object.__setattr__

class FieldInfo:
    """One persisted field of a class: name, type hint, default, compiled codec type."""

    __slots__ = ("name", "owner", "annotation", "default", "default_factory", "_ftype",
                 "_mutable_default", "_default_bytes", "_mutable")

    def __init__(self, name: str, owner: type, annotation: Any, default: Any,
                 default_factory: Any = None) -> None:
        self.name = name
        self.owner = owner
        self.annotation = annotation
        self.default = default
        self.default_factory = default_factory
        self._ftype: codec.FieldType | None = None
        self._default_bytes: bytes | None = None
        self._mutable: bool | None = None
        self._mutable_default = default is not None and not isinstance(
            default, int | float | str | bytes | bool | frozenset | tuple)

    @property
    def ftype(self) -> codec.FieldType:
        ft = self._ftype
        if ft is None:
            ft = self._ftype = codec.field_type(_resolve_hint(self.owner, self.name,
                                                              self.annotation))
        return ft

    @property
    def mutable(self) -> bool:
        """Whether the field is decoded lazily and tracked for in-place changes: values of
        mutable types, and references to other objects (resolving one loads that object,
        so it waits for the first read; a graph with cycles then loads one object at a
        time)."""
        m = self._mutable
        if m is None:
            ft = self.ftype
            m = self._mutable = ft.mutable or _has_reference(ft.hint)
        return m

    def new_default(self) -> Any:
        """A fresh default value: mutable defaults are copied, never shared (a copy made
        by the codec, so it has the field's exact type and any supported type copies)."""
        if self.default_factory is not None:
            return self.default_factory()
        if self._mutable_default:
            data = self._default_bytes
            if data is None:
                data = self._default_bytes = self.ftype.encode(self.default)
            return self.ftype.decode(data)
        return self.default


def _has_reference(hint: Any, depth: int = 0) -> bool:
    """Whether a (resolved) type hint can hold a reference to an OaaS object."""
    if depth > 20:
        return False
    if isinstance(hint, type) and hasattr(hint, "__oaas_from_identity__"):
        return True
    return any(_has_reference(a, depth + 1) for a in typing.get_args(hint))


def _type_hints(owner: type) -> dict[str, Any]:
    """``typing.get_type_hints`` of a class, with every registered OaaS class name in scope
    so that forward references (``Optional["Profile"]``) resolve wherever Profile lives."""
    localns: dict[str, Any] = {c.__name__: c for c in _CLASSES.values()}
    localns[owner.__name__] = owner
    return typing.get_type_hints(owner, localns=localns)


def _resolve_hint(owner: type, name: str, annotation: Any) -> Any:
    if isinstance(annotation, str | typing.ForwardRef):
        try:
            hints = _type_hints(owner)
        except Exception:
            hints = {}
        if name in hints:
            return hints[name]
        # Another annotation of the class is unresolvable: evaluate this one alone.
        text = annotation if isinstance(annotation, str) else annotation.__forward_arg__
        module = sys.modules.get(owner.__module__)
        globalns = dict(vars(module)) if module is not None else {}
        localns = {c.__name__: c for c in _CLASSES.values()}
        localns.update(vars(owner))
        try:
            return eval(text, globalns, localns)  # an annotation from the class's source
        except Exception as e:
            raise TypeError(f"{owner.__name__}.{name}: cannot resolve the annotation "
                            f"{text!r}: {e}") from None
    return annotation


class _LazyField:
    """Non-data descriptor of a mutable field: runs only when the instance lacks the field
    (never decoded, or parked after a commit). Decodes or unparks the value into the
    instance and marks the object as read since its last commit."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: OaasObject | None, owner: type | None = None) -> Any:
        if obj is None:
            f = owner._oaas_fields[self.name] if owner is not None else None  # type: ignore
            return f.default if f is not None else self
        cls = type(obj)
        if not cls._oaas_ready:
            cls._oaas_finalize()
        name = self.name
        f = cls._oaas_fields[name]
        value = obj._oaas_materialize(name, f)
        _set(obj, name, value)
        st = obj._oaas_state
        st.live.add(name)
        st.rt.touched[id(obj)] = obj
        return value


class _FieldDefault:
    __slots__ = ("default", "default_factory")

    def __init__(self, default: Any, default_factory: Any) -> None:
        self.default = default
        self.default_factory = default_factory


def field(default: Any = None, *, default_factory: Any = None) -> Any:
    """Declare a field default explicitly, e.g. ``tags: list[str] = field(default_factory=list)``.

    Plain defaults (``tags: list[str] = []``) are copied per object too; this is for
    defaults built by a function.
    """
    return _FieldDefault(default, default_factory)


def _is_classvar(hint: Any) -> bool:
    if isinstance(hint, str):
        return hint.startswith(("ClassVar", "typing.ClassVar"))
    return hint is ClassVar or typing.get_origin(hint) is ClassVar
