"""Plan nodes by type: how each kind of hint encodes, decodes and coerces its values.

One builder per kind of hint, in the manner of orjson's ``serialize/per_type/``: each
``_fill_<kind>(ft, ...)`` gives a fresh :class:`~oaas_sdk.codec.plan.FieldType` its
``_prep`` / ``_conv`` closures (the Python encoder's and decoder's step for this node),
the exact types that skip them, its coercion and what the native codec may do itself.
Child nodes (list elements, dict values, Union arms, ...) arrive compiled; models and
dataclasses, which compile their own fields, are in :mod:`oaas_sdk.codec.compile`.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import enum
import typing
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Union

from pydantic import PlainValidator

from oaas_sdk.errors import SerializationError, ValidationError

from ._active import ACTIVE
from ._fallback import (
    _build_set,
    _check_keys_distinct,
    _conv_any,
    _ext_date,
    _ext_datetime,
    _ext_decimal,
    _ext_items,
    _ext_ndarray,
    _ext_ref,
    _ext_time,
    _ext_timedelta,
    _ext_uuid,
    _ExtType,
    _pack,
    _pack_set,
    _prep_any,
    _prep_key_any,
)
from ._values import (
    _ANY_LEAF,
    _KEY_TYPES,
    _LEAF_TYPES,
    _PLAIN_TYPES,
    _corrupt,
    _ext_code,
    _hint_name,
    _identity_of,
    _Mismatch,
    _mismatch,
    _NoneType,
    _RawRef,
    _shape_error,
    _too_deep,
    _Unsupported,
    _UnsupportedHint,
)
from .coerce import _bytes_validator, _check, _convert_any, _convert_pydantic, _identity_given
from .format import EXT_FROZENSET, EXT_SET, EXT_TUPLE, MAX_DEPTH
from .plan import FieldType

_EXT_SCALAR_HINTS: dict[type, Callable[[Any], Any]] = {
    _dt.datetime: _ext_datetime,
    _dt.date: _ext_date,
    _dt.time: _ext_time,
    _dt.timedelta: _ext_timedelta,
    uuid.UUID: _ext_uuid,
    decimal.Decimal: _ext_decimal,
}


def _fill_any(ft: FieldType) -> None:
    ft._any = True
    ft._pexact = _PLAIN_TYPES
    ft._cexact = _ANY_LEAF
    ft.passthrough_types = frozenset(_LEAF_TYPES)
    ft._shapes = None
    ft._pyd = Any
    ft._convert = _convert_any


def _fill_scalar(ft: FieldType, t: type) -> None:
    ft.mutable = t is bytearray or t is memoryview
    name = _hint_name(t)
    if t is int:

        def prep(v: Any, depth: int) -> Any:
            if isinstance(v, int) and not isinstance(v, bool):
                return int.__int__(v)
            raise _mismatch(v, name)

        def conv(raw: Any, depth: int) -> Any:
            raise _shape_error(raw, name)

        ft._pexact = ft._cexact = ft._shapes = frozenset({int})
    elif t is float:

        def prep(v: Any, depth: int) -> Any:
            if isinstance(v, float):
                return float.__float__(v)
            if isinstance(v, int) and not isinstance(v, bool):
                return int.__int__(v)
            raise _mismatch(v, name)

        def conv(raw: Any, depth: int) -> Any:
            if type(raw) is int:  # stored before the field became a float
                return float(raw)
            raise _shape_error(raw, name)

        ft._pexact = frozenset({float, int})
        ft._cexact = frozenset({float})
        ft._shapes = frozenset({float, int})
    elif t is str:

        def prep(v: Any, depth: int) -> Any:
            if isinstance(v, str):
                return str.__str__(v)
            raise _mismatch(v, name)

        def conv(raw: Any, depth: int) -> Any:
            raise _shape_error(raw, name)

        ft._pexact = ft._cexact = ft._shapes = frozenset({str})
    elif t is bool or t is _NoneType:

        def prep(v: Any, depth: int) -> Any:
            raise _mismatch(v, name)

        def conv(raw: Any, depth: int) -> Any:
            raise _shape_error(raw, name)

        ft._pexact = ft._cexact = ft._shapes = frozenset({t})
    else:  # bytes, bytearray, memoryview: all encode as bin; decode gives the hint's type
        makers: dict[Any, Callable[[bytes], Any]] = {
            bytes: bytes,
            bytearray: bytearray,
            memoryview: lambda b: memoryview(bytearray(b)),
        }
        make = makers[t]

        def prep(v: Any, depth: int) -> Any:
            if isinstance(v, (bytes, bytearray)):
                return bytes(v)
            raise _mismatch(v, name)

        def conv(raw: Any, depth: int) -> Any:
            if type(raw) is bytes:
                return make(raw)
            if type(raw) is memoryview:  # decode(zero_copy=True): keep the view
                return raw if t is not bytearray else bytearray(raw)
            raise _shape_error(raw, name)

        ft._pexact = frozenset({bytes, bytearray, memoryview})
        ft._cexact = frozenset({bytes}) if t is bytes else frozenset()
        ft._shapes = frozenset({bytes})
        ft._pyd = Annotated[Any, PlainValidator(_bytes_validator(t))]
    ft._prep, ft._conv = prep, conv
    ft.passthrough_types = frozenset({t})
    ft._struct = ("exact",)


def _fill_ext_scalar(ft: FieldType, t: type) -> None:
    name = _hint_name(t)
    make = _EXT_SCALAR_HINTS[t]
    is_date = t is _dt.date
    active = ACTIVE

    def prep(v: Any, depth: int) -> Any:
        if isinstance(v, t) and not (is_date and isinstance(v, _dt.datetime)):
            # The native encoder writes these types itself (subclasses via _prep_any).
            return v if active.native is not None else make(v)
        raise _mismatch(v, name)

    def conv(raw: Any, depth: int) -> Any:
        raise _shape_error(raw, name)

    ft.mutable = False
    ft._prep, ft._conv = prep, conv
    ft._cexact = ft._shapes = ft.passthrough_types = frozenset({t})
    ft._struct = ("exact", t)


def _fill_wrapper(ft: FieldType, inner: FieldType, annotated: bool) -> None:
    # Late-bound calls: `inner` may be a model still being compiled.
    ft._prep = lambda v, d: inner._prep(v, d)
    ft._struct = ("wrapper", inner)
    ft._conv = lambda raw, d: inner._conv(raw, d)
    ft._pexact, ft._cexact, ft._shapes = inner._pexact, inner._cexact, inner._shapes
    ft._record = inner._record
    ft.mutable = inner.mutable
    ft._any = inner._any
    hint = ft.hint
    if annotated:
        ft.passthrough_types = frozenset()  # constraints (Field(gt=0), ...) must run
        meta = typing.get_args(hint)[1:]
        ft._pyd = hint if inner._pyd is inner.hint else Annotated[(inner._pyd, *meta)]
        ft._convert = _convert_pydantic
    else:
        ft.passthrough_types = inner.passthrough_types
        ft._pyd = hint if inner._pyd is inner.hint else inner._pyd
        ft._convert = inner._convert


def _fill_union(ft: FieldType, arms: list[FieldType]) -> None:
    if any(a.hint is Any or a.hint is object for a in arms):
        _fill_any(ft)
        return
    name = ft._name
    pexact = frozenset().union(*(a._pexact for a in arms))
    record_arms = [a for a in arms if a._record is not None]

    def prep(v: Any, depth: int) -> Any:
        unsupported: Exception | None = None
        for arm in arms:
            if type(v) in arm._pexact:
                return v
        for arm in arms:
            try:
                return arm._prep(v, depth)
            except _Mismatch:
                continue
            except _Unsupported as e:
                unsupported = e
        if unsupported is not None:
            raise unsupported
        raise _mismatch(v, name)

    def conv(raw: Any, depth: int) -> Any:
        t = type(raw)
        for arm in arms:
            if t in arm._cexact:
                return raw
        code = _ext_code(raw)
        key: Any = ("ext", code) if code is not None else t
        cands = [a for a in arms if a._shapes is None or key in a._shapes]
        if t is dict and record_arms:
            keys = set(raw)
            for arm in record_arms:
                if arm._record == keys:
                    try:
                        return arm._conv(raw, depth)
                    except SerializationError:
                        pass
        for arm in cands:
            try:
                return arm._conv(raw, depth)
            except SerializationError:
                continue
        raise _shape_error(raw, name)

    ft._prep, ft._conv, ft._pexact = prep, conv, pexact
    ft._struct = ("exact",)
    ft._cexact = frozenset().union(*(a._cexact for a in arms))
    ft.passthrough_types = frozenset().union(*(a.passthrough_types for a in arms))
    shapes: frozenset[Any] | None = frozenset()
    for a in arms:
        shapes = None if shapes is None or a._shapes is None else shapes | a._shapes
    ft._shapes = shapes
    ft.mutable = any(a.mutable for a in arms)
    if all(a._pyd is a.hint for a in arms):
        ft._pyd = ft.hint
    else:
        ft._pyd = Union[tuple(a._pyd for a in arms)]  # noqa: UP007 - built at run time


def _shape_of(v: Any) -> Any:
    t = type(v)
    if t is tuple:
        return ("ext", EXT_TUPLE)
    if t is set:
        return ("ext", EXT_SET)
    if t is frozenset:
        return ("ext", EXT_FROZENSET)
    if t in _ANY_LEAF or t is list or t is dict:
        return t
    return None


def _fill_enum(ft: FieldType, cls: type[enum.Enum]) -> None:
    name = ft._name
    shapes: set[Any] = set()
    for member in cls:
        try:
            _check(member.value, 0)
        except (TypeError, SerializationError):
            raise _UnsupportedHint(cls, "an enum value has an unsupported type") from None
        shapes.add(_shape_of(member.value))

    def prep(v: Any, depth: int) -> Any:
        if isinstance(v, cls):
            return _prep_any(v.value, depth)
        raise _mismatch(v, name)

    def conv(raw: Any, depth: int) -> Any:
        value = raw if type(raw) in _ANY_LEAF else _conv_any(raw, depth)
        try:
            return cls(value)
        except Exception:
            raise _Mismatch(f"{value!r} is not a value of {name}") from None

    ft._prep, ft._conv = prep, conv
    ft._shapes = None if None in shapes else frozenset(shapes)
    ft.passthrough_types = frozenset({cls})
    ft.mutable = False


_LITERAL_TYPES = (str, int, bool, bytes, _NoneType)


def _fill_literal(ft: FieldType, values: tuple[Any, ...]) -> None:
    name = ft._name
    by_raw: dict[tuple[type, Any], Any] = {}
    for lv in values:
        enc = lv.value if isinstance(lv, enum.Enum) else lv
        if type(enc) not in _LITERAL_TYPES:
            raise _UnsupportedHint(ft.hint, "Literal values must be str, int, bool, bytes or None")
        by_raw[(type(enc), enc)] = lv

    def prep(v: Any, depth: int) -> Any:
        for lv in values:
            if type(v) is type(lv) and v == lv:
                return _prep_any(v, depth)
        raise _mismatch(v, name)

    def conv(raw: Any, depth: int) -> Any:
        try:
            return by_raw[(type(raw), raw)]
        except (KeyError, TypeError):
            raise _shape_error(raw, name) from None

    ft._prep, ft._conv = prep, conv
    ft._shapes = frozenset(t for t, _ in by_raw)
    ft.mutable = False


def _fill_list(ft: FieldType, elem: FieldType) -> None:
    name = ft._name

    def prep(v: Any, depth: int) -> Any:
        if type(v) is not list:
            if not isinstance(v, list):
                raise _mismatch(v, name)
            v = list(v)
        if depth >= MAX_DEPTH:
            raise _too_deep()
        ex = elem._pexact
        if ex.issuperset(map(type, v)):
            return v
        d, p = depth + 1, elem._prep
        return [x if type(x) in ex else p(x, d) for x in v]

    def conv(raw: Any, depth: int) -> Any:
        if type(raw) is not list:
            raise _shape_error(raw, name)
        if depth >= MAX_DEPTH:
            raise _too_deep()
        ex = elem._cexact
        if ex.issuperset(map(type, raw)):
            return raw
        d, c = depth + 1, elem._conv
        return [x if type(x) in ex else c(x, d) for x in raw]

    ft._prep, ft._conv = prep, conv
    ft._struct = ("list", elem)
    ft._shapes = frozenset({list})
    ft.mutable = True
    ft._pyd = ft.hint if elem._pyd is elem.hint else list[elem._pyd]  # type: ignore[name-defined]


def _fill_dict(ft: FieldType, key: FieldType, val: FieldType) -> None:
    name = ft._name
    any_key = key._pyd is Any
    kprep, kconv = key._prep, key._conv
    # Key types that are final as they are (key hints are never recursive, so their
    # sets are complete here).
    kfast = _KEY_TYPES if any_key else _KEY_TYPES & key._pexact
    kcfast = _KEY_TYPES if any_key else _KEY_TYPES & key._cexact

    def prep_key(k: Any, depth: int) -> Any:
        if any_key:
            return _prep_key_any(k)
        out = kprep(k, depth)
        if type(out) is not str and type(out) is not int:
            raise _mismatch(k, f"a dict key of type {key._name}")
        return out

    def prep(v: Any, depth: int) -> Any:
        if not isinstance(v, dict):
            raise _mismatch(v, name)
        if depth >= MAX_DEPTH:
            raise _too_deep()
        vex = val._pexact
        if kfast.issuperset(map(type, v)) and vex.issuperset(map(type, v.values())):
            return v if type(v) is dict else dict(v)
        d, p = depth + 1, val._prep
        out = {
            (k if type(k) in kfast else prep_key(k, d)): (x if type(x) in vex else p(x, d))
            for k, x in v.items()
        }
        return _check_keys_distinct(out, v)

    def conv_key(k: Any, depth: int) -> Any:
        tk = type(k)
        if tk is not str and tk is not int:
            raise _corrupt(f"map key of type {tk.__name__!r} (keys must be str or int)")
        if tk in kcfast:
            return k
        return kconv(k, depth)

    def conv(raw: Any, depth: int) -> Any:
        if type(raw) is not dict:
            raise _shape_error(raw, name)
        if depth >= MAX_DEPTH:
            raise _too_deep()
        vex = val._cexact
        if kcfast.issuperset(map(type, raw)) and vex.issuperset(map(type, raw.values())):
            return raw
        d, c = depth + 1, val._conv
        return {conv_key(k, d): (x if type(x) in vex else c(x, d)) for k, x in raw.items()}

    ft._prep, ft._conv = prep, conv
    ft._struct = ("dict", kfast, val, kcfast, kconv)
    ft._shapes = frozenset({dict})
    ft.mutable = True
    if key._pyd is key.hint and val._pyd is val.hint:
        ft._pyd = ft.hint
    else:
        ft._pyd = dict[key._pyd, val._pyd]  # type: ignore[name-defined]


def _fill_tuple(ft: FieldType, elem: FieldType | None, elems: list[FieldType] | None) -> None:
    name = ft._name
    shape_key = ("ext", EXT_TUPLE)

    def prep(v: Any, depth: int) -> Any:
        if not isinstance(v, tuple):
            raise _mismatch(v, name)
        if depth >= MAX_DEPTH:
            raise _too_deep()
        d = depth + 1
        if elems is None:
            assert elem is not None
            ex, p = elem._pexact, elem._prep
            items = [x if type(x) in ex else p(x, d) for x in v]
        else:
            if len(v) != len(elems):
                raise _Mismatch(f"expected {name}, got a tuple of {len(v)} elements")
            items = [
                x if type(x) in e._pexact else e._prep(x, d) for e, x in zip(elems, v, strict=True)
            ]
        return _ExtType(EXT_TUPLE, _pack(items))

    def conv(raw: Any, depth: int) -> Any:
        if _ext_code(raw) != EXT_TUPLE:
            raise _shape_error(raw, name)
        if depth >= MAX_DEPTH:
            raise _too_deep()
        items = _ext_items(raw)
        d = depth + 1
        if elems is None:
            assert elem is not None
            ex, c = elem._cexact, elem._conv
            return tuple([x if type(x) in ex else c(x, d) for x in items])
        if len(items) != len(elems):
            raise _Mismatch(f"expected {name}, found a tuple of {len(items)} elements")
        return tuple(
            [
                x if type(x) in e._cexact else e._conv(x, d)
                for e, x in zip(elems, items, strict=True)
            ]
        )

    ft._prep, ft._conv = prep, conv
    ft._shapes = frozenset({shape_key})
    parts = [elem] if elems is None else elems
    assert all(p is not None for p in parts)
    ft.mutable = any(p.mutable for p in parts if p is not None)
    if all(p is not None and p._pyd is p.hint for p in parts):
        ft._pyd = ft.hint
    elif elems is None:
        assert elem is not None
        ft._pyd = tuple[elem._pyd, ...]  # type: ignore[name-defined]
    else:
        ft._pyd = tuple[tuple(e._pyd for e in elems)]  # type: ignore[misc]


def _fill_set(ft: FieldType, elem: FieldType, frozen: bool) -> None:
    name = ft._name
    code = EXT_FROZENSET if frozen else EXT_SET
    base = frozenset if frozen else set

    def prep(v: Any, depth: int) -> Any:
        if not isinstance(v, base):
            raise _mismatch(v, name)
        if depth >= MAX_DEPTH:
            raise _too_deep()
        d, ex, p = depth + 1, elem._pexact, elem._prep
        return _pack_set(code, [x if type(x) in ex else p(x, d) for x in v])

    def conv(raw: Any, depth: int) -> Any:
        if _ext_code(raw) != code:
            raise _shape_error(raw, name)
        if depth >= MAX_DEPTH:
            raise _too_deep()
        d, ex, c = depth + 1, elem._cexact, elem._conv
        return _build_set([x if type(x) in ex else c(x, d) for x in _ext_items(raw)], frozen)

    ft._prep, ft._conv = prep, conv
    ft._shapes = frozenset({("ext", code)})
    ft.mutable = not frozen or elem.mutable
    if elem._pyd is elem.hint:
        ft._pyd = ft.hint
    else:
        ft._pyd = frozenset[elem._pyd] if frozen else set[elem._pyd]  # type: ignore[name-defined]


def _fill_ndarray(ft: FieldType) -> None:
    import numpy as np

    name = ft._name
    active = ACTIVE

    def prep(v: Any, depth: int) -> Any:
        if type(v) is np.ndarray:
            # The native encoder reads the array's buffer itself.
            return v if active.native is not None else _ext_ndarray(v)
        raise _mismatch(v, name)

    def conv(raw: Any, depth: int) -> Any:
        raise _shape_error(raw, name)

    def validate(v: Any) -> Any:
        if type(v) is np.ndarray:
            return v
        raise ValueError(f"expected a numpy.ndarray, got {type(v).__name__}")

    ft._prep, ft._conv = prep, conv
    ft._struct = ("exact", np.ndarray)
    ft._cexact = ft._shapes = frozenset({np.ndarray})
    ft._pyd = Annotated[Any, PlainValidator(validate)]
    ft.mutable = True


def _fill_ref(ft: FieldType, cls: type) -> None:
    name = ft._name
    from_identity = getattr(cls, "__oaas_from_identity__", None)
    active = ACTIVE

    def prep(v: Any, depth: int) -> Any:
        ident = _identity_of(v)
        if ident is None:
            raise _mismatch(v, f"a reference to {name}")
        return _ext_ref(v, ident)

    def conv(raw: Any, depth: int) -> Any:
        if type(raw) is not _RawRef:
            raise _shape_error(raw, f"a reference to {name}")
        make = from_identity if from_identity is not None else active.ref_factory
        return make(raw.cls_id, raw.partition_id, raw.object_id)

    def validate(v: Any) -> Any:
        if isinstance(v, cls):
            return v
        ident = _identity_of(v)
        if ident is None:
            ident = _identity_given(v)
        if ident is not None and from_identity is not None:
            try:
                cls_id, pid, oid = ident
            except Exception:
                raise ValueError(f"invalid __oaas_identity__ {ident!r}") from None
            return from_identity(cls_id, pid, oid)
        raise ValueError(f"expected a reference to {name}, got {type(v).__name__}")

    def convert(ft: FieldType, value: Any, where: str) -> Any:
        try:
            return validate(value)
        except ValueError as e:
            raise ValidationError(
                f"{where}: cannot convert a value of type {type(value).__name__!r} to {name}: {e}"
            ) from e

    ft._prep, ft._conv, ft._convert = prep, conv, convert
    ft._shapes = frozenset({_RawRef})
    ft.passthrough_types = frozenset({cls})
    ft._pyd = Annotated[Any, PlainValidator(validate)]
    ft.mutable = False
