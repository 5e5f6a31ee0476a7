"""Compiling a type hint into its plan: :func:`field_type` (cached per hint).

:func:`_fill` dispatches on the kind of hint to the node builders of
:mod:`oaas_sdk.codec.nodes`, compiling child hints first; models and dataclasses are
compiled here, since their fields compile against the same in-progress set (a model may
refer to itself). Compiled types are published to the cache only when complete.
"""

from __future__ import annotations

import dataclasses
import enum
import sys
import threading
import types
import typing
from typing import Annotated, Any, Literal, Union

import pydantic
from pydantic import BaseModel, RootModel

from . import _fallback
from ._fallback import _conv_any
from ._values import (
    _K_DATACLASS,
    _K_MODEL,
    _corrupt,
    _hint_name,
    _Mismatch,
    _mismatch,
    _NoneType,
    _shape_error,
    _too_deep,
    _UnsupportedHint,
)
from .coerce import _convert_record, _pydantic_reason
from .format import MAX_DEPTH
from .nodes import (
    _EXT_SCALAR_HINTS,
    _fill_any,
    _fill_dict,
    _fill_enum,
    _fill_ext_scalar,
    _fill_list,
    _fill_literal,
    _fill_ndarray,
    _fill_ref,
    _fill_scalar,
    _fill_set,
    _fill_tuple,
    _fill_union,
    _fill_wrapper,
)
from .plan import _MODEL_VALIDATE_BY_NAME, FieldType

__all__ = ["field_type"]

_cache: dict[Any, FieldType] = {}
_lock = threading.RLock()


def field_type(hint: Any) -> FieldType:
    """Compile a type hint into a :class:`FieldType` (cached per hint).

    ``Any``, ``object`` and unannotated fields take any supported value. Model and
    dataclass field hints the codec does not know are treated as ``Any`` (their values
    still have to be of supported types).

    Raises:
        TypeError: the hint itself is unsupported (for example ``socket.socket``, a
            forward reference given as a string, or ``dict`` keys other than str/int);
            the message names the hint.
    """
    try:
        ft = _cache.get(hint)
    except TypeError:  # unhashable hint (e.g. Annotated with a list): compiled uncached
        ft = None
    if ft is not None:
        return ft
    with _lock:
        # Compiled types are published only when complete: other threads read _cache
        # without the lock.
        new: dict[Any, FieldType] = {}
        try:
            ft = _compile(hint, new)
        except _UnsupportedHint as e:
            if e.hint is hint:
                raise TypeError(str(e)) from None
            raise TypeError(f"in field type {_hint_name(hint)!r}: {e}") from None
        _cache.update(new)
        return ft


def _compile(hint: Any, new: dict[Any, FieldType]) -> FieldType:
    try:
        ft = _cache.get(hint) or new.get(hint)
        hashable = True
    except TypeError:
        ft, hashable = None, False
    if ft is not None:
        return ft
    ft = FieldType(hint)
    if hashable:
        # Registered before filling so that a model referring to itself finds it.
        new[hint] = ft
    _fill(ft, hint, new)
    return ft


def _compile_lenient(hint: Any, new: dict[Any, FieldType]) -> FieldType:
    mark = len(new)
    try:
        return _compile(hint, new)
    except TypeError:
        for h in list(new)[mark:]:
            del new[h]
        return _compile(Any, new)


_SCALAR_HINTS = (int, float, bool, str, bytes, bytearray, memoryview, _NoneType)


def _fill(ft: FieldType, hint: Any, new: dict[Any, FieldType]) -> None:
    if hint is Any or hint is object:
        _fill_any(ft)
        return
    if hint is None:
        hint = _NoneType
    if hint in _SCALAR_HINTS:
        _fill_scalar(ft, hint)
        return
    if isinstance(hint, type) and hint in _EXT_SCALAR_HINTS:
        _fill_ext_scalar(ft, hint)
        return
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Annotated:
        _fill_wrapper(ft, _compile(args[0], new), annotated=True)
        return
    if isinstance(hint, typing.NewType):
        _fill_wrapper(ft, _compile(hint.__supertype__, new), annotated=False)
        return
    if origin is Union or origin is types.UnionType:
        _fill_union(ft, [_compile(a, new) for a in args])
        return
    if origin is Literal:
        _fill_literal(ft, args)
        return
    if hint is typing.Tuple:  # noqa: UP006 - bare typing.Tuple has args () like tuple[()]
        hint, origin, args = tuple, tuple, ()
    container = origin if origin is not None else hint
    if container in (list, set, frozenset):
        elem = _compile(args[0] if args else Any, new)
        if container is list:
            _fill_list(ft, elem)
        else:
            _fill_set(ft, elem, frozen=container is frozenset)
        return
    if container is dict:
        key = _compile(args[0] if args else Any, new)
        if not (key._pyd is Any or (key._shapes is not None and key._shapes <= {str, int})):
            raise _UnsupportedHint(hint, "dict keys must be str or int")
        _fill_dict(ft, key, _compile(args[1] if args else Any, new))
        return
    if container is tuple:
        if hint is tuple:
            _fill_tuple(ft, _compile(Any, new), None)
        elif len(args) == 2 and args[1] is Ellipsis:
            _fill_tuple(ft, _compile(args[0], new), None)
        else:
            _fill_tuple(ft, None, [_compile(a, new) for a in args])
        return
    nd = sys.modules.get("numpy")
    if nd is not None and (hint is nd.ndarray or origin is nd.ndarray):
        _fill_ndarray(ft)
        return
    if isinstance(hint, type) and origin is None:
        if hasattr(hint, "__oaas_from_identity__") or hasattr(hint, "__oaas_identity__"):
            _fill_ref(ft, hint)
            return
        if issubclass(hint, enum.Enum):
            _fill_enum(ft, hint)
            return
        if issubclass(hint, BaseModel):
            _fill_model(ft, hint, new)
            return
        if dataclasses.is_dataclass(hint):
            _fill_dataclass(ft, hint, new)
            return
    raise _UnsupportedHint(hint)


# --------------------------------------------------------------------------- records


def _record_prep(ft: FieldType, cls: type, fields: list[tuple[str, FieldType]]) -> Any:
    name = ft._name

    def prep(v: Any, depth: int) -> Any:
        if type(v) is not cls:
            if isinstance(v, cls):  # a subclass: encoded with its own fields
                return field_type(type(v))._prep(v, depth)
            raise _mismatch(v, name)
        if depth >= MAX_DEPTH:
            raise _too_deep()
        d = depth + 1
        out = {}
        for fname, node in fields:
            x = getattr(v, fname)
            if type(x) in node._pexact:
                out[fname] = x
            else:
                try:
                    out[fname] = node._prep(x, d)
                except _Mismatch as e:
                    raise _Mismatch(f"{name}.{fname}: {e}") from None
        return out

    return prep


def _record_collect(name: str, fmap: dict[str, FieldType], raw: Any, depth: int) -> dict[str, Any]:
    if type(raw) is not dict:
        raise _shape_error(raw, name)
    if depth >= MAX_DEPTH:
        raise _too_deep()
    d = depth + 1
    data: dict[str, Any] = {}
    for k, x in raw.items():
        if type(k) is not str:
            raise _corrupt(f"{name} map has a key of type {type(k).__name__!r}")
        node = fmap.get(k)
        if node is None:  # a field this class no longer has, or a model's extra
            data[k] = _conv_any(x, d)
        elif type(x) in node._cexact:
            data[k] = x
        else:
            try:
                data[k] = node._conv(x, d)
            except _Mismatch as e:
                raise _Mismatch(f"{name}.{k}: {e}") from None
    return data


def _fill_model(ft: FieldType, cls: type[BaseModel], new: dict[Any, FieldType]) -> None:
    name = ft._name
    fields: list[tuple[str, FieldType]] = []
    fmap: dict[str, FieldType] = {}
    is_root = issubclass(cls, RootModel)
    validate = cls.model_validate

    def finish(data: dict[str, Any], depth: int) -> Any:
        try:
            if is_root:
                if set(data) != {"root"}:
                    raise _Mismatch(f"{name} map must have the single key 'root'")
                return validate(data["root"])
            if _MODEL_VALIDATE_BY_NAME:
                return validate(data, by_name=True)
            return validate({aliases.get(k, k): x for k, x in data.items()})
        except pydantic.ValidationError as e:
            raise _Mismatch(f"stored value is not a valid {name}: {_pydantic_reason(e)}") from None

    def conv(raw: Any, depth: int) -> Any:
        return finish(_record_collect(name, fmap, raw, depth), depth)

    # Everything a Union or a recursive field looks at is set before the fields compile.
    ft._prep, ft._conv = _record_prep(ft, cls, fields), conv
    ft._struct = ("record", cls, fields, finish)
    ft._shapes = frozenset({dict})
    ft._convert = _convert_record
    ft.mutable = True
    ft._record = frozenset(cls.model_fields)
    # Before pydantic 2.11 model_validate cannot be told to take field names.
    aliases: dict[str, str] = {}
    for fname, finfo in cls.model_fields.items():
        ann = finfo.annotation
        node = _compile_lenient(Any if ann is None else ann, new)
        fields.append((fname, node))
        fmap[fname] = node
        alias = finfo.validation_alias if isinstance(finfo.validation_alias, str) else None
        alias = alias or finfo.alias
        if alias and alias != fname:
            aliases[fname] = alias


def _fill_dataclass(ft: FieldType, cls: type, new: dict[Any, FieldType]) -> None:
    name = ft._name
    fields: list[tuple[str, FieldType]] = []
    fmap: dict[str, FieldType] = {}
    dc_fields = dataclasses.fields(cls)
    init_names = frozenset(f.name for f in dc_fields if f.init)

    def finish(data: dict[str, Any], depth: int) -> Any:
        kwargs = {k: x for k, x in data.items() if k in init_names}
        try:
            return cls(**kwargs)
        except Exception as e:
            raise _Mismatch(f"stored value does not rebuild {name}: {e}") from None

    def conv(raw: Any, depth: int) -> Any:
        return finish(_record_collect(name, fmap, raw, depth), depth)

    ft._prep, ft._conv = _record_prep(ft, cls, fields), conv
    ft._struct = ("record", cls, fields, finish)
    ft._shapes = frozenset({dict})
    ft._convert = _convert_record
    ft.mutable = True
    ft._record = frozenset(f.name for f in dc_fields)
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        hints = {}
    for f in dc_fields:
        ann = hints.get(f.name, f.type)
        node = _compile_lenient(Any if isinstance(ann, str) else ann, new)
        fields.append((f.name, node))
        fmap[f.name] = node


def _prep_record_any(v: Any, depth: int) -> Any:
    return field_type(type(v))._prep(v, depth)


# Under an Any hint a model or dataclass value is prepared by its class's own plan.
_fallback._PREP_ANY[_K_MODEL] = _prep_record_any
_fallback._PREP_ANY[_K_DATACLASS] = _prep_record_any
