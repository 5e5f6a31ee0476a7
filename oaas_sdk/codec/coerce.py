"""Coercion on assignment: checking a value and converting it to a field's type.

:meth:`FieldType.coerce <oaas_sdk.codec.plan.FieldType.coerce>` runs :func:`_check` (the
value holds only types the codec stores, nested at most ``MAX_DEPTH`` deep) and then the
node's converter: pydantic's lax mode through a cached ``TypeAdapter`` (``"12"`` -> ``12``
for ``int``, a dict -> the model), or one of the converters here for hints pydantic does
not cover.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pydantic
from pydantic import BaseModel, TypeAdapter

from oaas_sdk.errors import SerializationError, ValidationError

from . import _values
from ._values import (
    _K_BYTES,
    _K_DATACLASS,
    _K_DATE,
    _K_DATETIME,
    _K_DECIMAL,
    _K_DICT,
    _K_ENUM,
    _K_FLOAT,
    _K_INT,
    _K_MODEL,
    _K_NDARRAY,
    _K_PLAIN,
    _K_REF,
    _K_STR,
    _K_TIME,
    _K_TIMEDELTA,
    _K_UNSUPPORTED,
    _K_UUID,
    _KINDS_CAP,
    _LEAF_TYPES,
    _classify,
    _identity_of,
    _kind,
    _too_deep,
    _Unsupported,
    _unsupported_value,
)
from .format import MAX_DEPTH

# Bound by assignment, not imported: CPython (3.11+) compiles `name.method(...)` on a name
# bound by an import as a plain attribute load and call (no LOAD_METHOD), which costs
# tens of ns per call on the hot paths below.
_KINDS = _values._KINDS

if TYPE_CHECKING:
    from .plan import FieldType


def _where(owner: str, field: str) -> str:
    if owner and field:
        return f"{owner}.{field}"
    return owner or field or "value"


# Element types a container's exact-type fast path accepts (see fast_shape).
_FAST_ELEMS = (int, float, str, bool, bytes)


def fast_shape(hint: Any) -> tuple[Any, ...] | None:
    """The exact-type fast path of assignment to a field of type ``hint``: for a list,
    set or dict of one simple type (int, float, str, bool, bytes; ``Optional`` of those
    containers too, ``None`` itself passes already), ``(kind, element types, value
    types)`` with ``kind`` ``"list"``, ``"set"`` or ``"dict"`` (``value types`` only for
    dicts, ``element types`` are then the key types); else ``None``.

    A value of exactly that container type whose elements all have exactly those types is
    what pydantic's lax mode returns unchanged but copied; :func:`fast_copy` makes that
    copy without calling pydantic (the native ``__setattr__`` does the same)."""
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        arms = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(arms) != 1:
            return None
        return fast_shape(arms[0])
    args = typing.get_args(hint)
    if origin in (list, set) and len(args) == 1 and args[0] in _FAST_ELEMS:
        return ("list" if origin is list else "set", frozenset({args[0]}), None)
    if (origin is dict and len(args) == 2 and args[0] in (str, int)
            and args[1] in _FAST_ELEMS):
        return ("dict", frozenset({args[0]}), frozenset({args[1]}))
    return None


def fast_copy(value: Any, shape: tuple[Any, ...]) -> Any:
    """``value`` copied when it passes ``shape`` (see :func:`fast_shape`), else ``None``."""
    kind, etypes, vtypes = shape
    t = type(value)
    if kind == "dict":
        if t is not dict:
            return None
        for k, v in value.items():
            if type(k) not in etypes or type(v) not in vtypes:
                return None
        return value.copy()
    if t is not (list if kind == "list" else set):
        return None
    for x in value:
        if type(x) not in etypes:
            return None
    return value.copy()


def _pydantic_reason(e: pydantic.ValidationError) -> str:
    parts = []
    for err in e.errors(include_url=False)[:3]:
        loc = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    more = e.error_count() - len(parts)
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def _check(v: Any, depth: int) -> None:
    """Raise _Unsupported if `v` holds a value of an unsupported type (on assignment)."""
    k = _KINDS.get(type(v))
    if k is None:
        k = _classify(type(v))
    if k in _CHECK_LEAF_KINDS:
        return
    if k == _K_UNSUPPORTED:
        if _identity_of(v) is None:
            raise _unsupported_value(v)
        return
    if k == _K_ENUM:
        _check(v.value, depth)
        return
    if depth >= MAX_DEPTH:
        raise _too_deep()
    d = depth + 1
    if k == _K_DICT:
        for key, x in v.items():
            tk = type(key)
            if tk is not str and tk is not int:
                kk = _kind(tk)
                if not (
                    kk in (_K_STR, _K_INT) or (kk == _K_ENUM and type(key.value) in (str, int))
                ):
                    raise _Unsupported(
                        f"cannot store a dict key of type {tk.__name__!r} "
                        "(dict keys must be str or int)"
                    )
            if type(x) not in _LEAF_TYPES:
                _check(x, d)
    elif k in (_K_MODEL, _K_DATACLASS):
        for name in _record_names(type(v)):
            _check(getattr(v, name), d)
    else:
        for x in v:
            if type(x) not in _LEAF_TYPES:
                _check(x, d)


_CHECK_LEAF_KINDS = frozenset(
    {
        _K_PLAIN,
        _K_DATETIME,
        _K_DATE,
        _K_TIME,
        _K_TIMEDELTA,
        _K_UUID,
        _K_DECIMAL,
        _K_REF,
        _K_NDARRAY,
        _K_INT,
        _K_FLOAT,
        _K_STR,
        _K_BYTES,
    }
)
_NAMES: dict[type, tuple[str, ...]] = {}


def _record_names(cls: type) -> tuple[str, ...]:
    names = _NAMES.get(cls)
    if names is None:
        if issubclass(cls, BaseModel):
            names = tuple(cls.model_fields)
        else:
            names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
        if len(_NAMES) < _KINDS_CAP:
            _NAMES[cls] = names
    return names



def _convert_pydantic(ft: FieldType, value: Any, where: str) -> Any:
    adapter = ft._adapter
    if adapter is None:
        adapter = _make_adapter(ft)
        if adapter is None:
            return _convert_by_prep(ft, value, where)
    try:
        return adapter.validate_python(value)
    except pydantic.ValidationError as e:
        raise ValidationError(
            f"{where}: cannot convert a value of type {type(value).__name__!r} to "
            f"{ft._name}: {_pydantic_reason(e)}"
        ) from e


def _make_adapter(ft: FieldType) -> TypeAdapter[Any] | None:
    try:
        ft._adapter = TypeAdapter(ft._pyd)
    except Exception:
        try:
            ft._adapter = TypeAdapter(
                ft._pyd, config=pydantic.ConfigDict(arbitrary_types_allowed=True)
            )
        except Exception:
            return None
    return ft._adapter


def _convert_by_prep(ft: FieldType, value: Any, where: str) -> Any:
    # Only for hints pydantic cannot build a validator for: accept exactly what encode takes.
    try:
        ft._prep(value, 0)
    except (SerializationError, TypeError) as e:
        raise ValidationError(
            f"{where}: cannot convert a value of type {type(value).__name__!r} to {ft._name}: {e}"
        ) from e
    return value


def _convert_any(ft: FieldType, value: Any, where: str) -> Any:
    return value


def _convert_record(ft: FieldType, value: Any, where: str) -> Any:
    if type(value) is ft.hint:
        return value
    return _convert_pydantic(ft, value, where)


def _bytes_validator(t: type) -> Callable[[Any], Any]:
    def validate(v: Any) -> Any:
        if isinstance(v, (bytes, bytearray, memoryview)):
            if t is memoryview:
                return v if isinstance(v, memoryview) else memoryview(v)
            return t(v)
        if isinstance(v, str):
            b = v.encode("utf-8")
            return memoryview(b) if t is memoryview else t(b)
        raise ValueError(f"expected bytes, bytearray, memoryview or str, got {type(v).__name__}")

    return validate


def _identity_given(v: Any) -> tuple[str, int, int | str] | None:
    """The identity an assignment to a reference field gives without an object, as
    oaas-sdk2-py accepts: a tuple ``(cls_id, partition_id, object_id)``, a dict with
    ``cls_id``, ``object_id`` and optionally ``partition_id`` (default 0), or an object
    metadata (``cls_id``, ``partition_id``, ``object_id`` attributes). ``None`` for
    anything else. The identity is checked (``ValueError``) when it is resolved."""
    if type(v) is tuple and len(v) == 3 and type(v[0]) is str:
        return (v[0], v[1], v[2])
    if type(v) is dict and "cls_id" in v and "object_id" in v \
            and set(v) <= {"cls_id", "partition_id", "object_id"}:
        return (v["cls_id"], v.get("partition_id", 0), v["object_id"])
    try:
        cls_id, pid, oid = v.cls_id, v.partition_id, v.object_id
    except AttributeError:
        return None
    return (cls_id, pid, oid) if type(cls_id) is str else None
