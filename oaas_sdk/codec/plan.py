"""The typed plan of a field: :class:`FieldType`, one node per compiled type hint.

A node holds what the hint means for each job: ``_prep`` / ``_pexact`` (encode),
``_conv`` / ``_cexact`` (decode), ``_convert`` / ``passthrough_types`` (coerce on
assignment), ``_shapes`` / ``_record`` (choosing a Union arm) and ``_struct`` (what the
native codec may check itself). :mod:`oaas_sdk.codec.compile` builds the nodes (with the
per-type builders of :mod:`oaas_sdk.codec.nodes`); :func:`_plan_desc` and
:func:`_decode_plan_desc` describe a node tree to the native codec, which compiles it once
per codec into its own plan.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, RootModel, TypeAdapter

from oaas_sdk.errors import SerializationError, ValidationError

from . import _fallback
from ._active import ACTIVE
from ._fallback import _conv_any, _ext_hook, _new_packer, _prep_any, _unpackb
from ._values import _hint_name, _Mismatch, _too_deep, _TooDeep, _Unsupported
from .coerce import _check, _convert_pydantic, _where, fast_copy, fast_shape
from .format import ZERO_COPY_MIN

# Bound by assignment, not imported: CPython (3.11+) compiles `name.method(...)` on a name
# bound by an import as a plain attribute load and call (no LOAD_METHOD), which costs
# tens of ns per call on the hot paths below.
_pool = _fallback._pool

__all__ = ["FieldType"]

# pydantic 2.11+: model_validate(data, by_name=True) takes field names whatever the aliases.
_MODEL_VALIDATE_BY_NAME = "by_name" in inspect.signature(BaseModel.model_validate).parameters


class FieldType:
    """A compiled type hint: converts, encodes and decodes values of one field.

    Get one with :func:`~oaas_sdk.codec.field_type` (cached per hint); do not construct
    directly.

    Attributes:
        hint: the type hint it was compiled from.
        mutable: True when a value of this type can change in place (list, dict, set,
            bytearray, memoryview, model, dataclass, ndarray, ``Any`` and any container or
            union holding one); the object layer re-encodes such fields at commit.
        passthrough_types: exact types whose values ``coerce`` returns unchanged without
            any check (for ``int``: ``{int}``); a caller may skip ``coerce`` for them.

    ``encode(value) -> bytes`` and ``decode(data, *, zero_copy=False) -> value`` are
    documented at :meth:`_encode_slow` and :meth:`_decode_slow`, which they are without
    the extension; when it is importable they are its methods (``Coder.install``: one
    call into the extension, no Python frame), which use the type's native ``Coder``
    while the native backend is active and hand calls to those two otherwise. Both raise
    the same errors.
    """

    __slots__ = (
        "__weakref__",
        "hint",
        "mutable",
        "passthrough_types",
        "_name",
        "_prep",
        "_conv",
        "_pexact",
        "_cexact",
        "_shapes",
        "_record",
        "_pyd",
        "_convert",
        "_adapter",
        "_any",
        "_struct",
        "_plan",
        "_coder",
        "_ncoder",
        "_fast",
    )

    hint: Any
    mutable: bool
    passthrough_types: frozenset[type]

    def __init__(self, hint: Any) -> None:
        self.hint = hint
        self.mutable = True
        self.passthrough_types = frozenset()
        self._name = _hint_name(hint)
        # _prep(value, depth) -> packable tree; values whose exact type is in _pexact
        # are packable as they are.
        self._prep: Callable[[Any, int], Any] = _prep_any
        # _conv(raw, depth) -> value; raw values whose exact type is in _cexact are final.
        self._conv: Callable[[Any, int], Any] = _conv_any
        self._pexact: frozenset[type] | set[type] = frozenset()
        self._cexact: frozenset[type] | set[type] = frozenset()
        # Raw shapes decode accepts (types; ("ext", code) for tuple/set/frozenset);
        # None: any. Used to pick a Union arm.
        self._shapes: frozenset[Any] | None = None
        # Field names of a model/dataclass hint (Union arm choice), else None.
        self._record: frozenset[str] | None = None
        self._pyd: Any = hint  # the hint given to pydantic for coercion
        self._convert: Callable[[FieldType, Any, str], Any] = _convert_pydantic
        self._adapter: TypeAdapter[Any] | None = None
        # True for Any-like hints: the native codec then handles the value entirely.
        self._any = False
        # What the native encoder may check itself (see _plan_desc): ("list", elem),
        # ("dict", key types, val), ("record", cls, fields), ("union",), ("wrapper", inner)
        # or ("exact",); None: only Python's _prep knows.
        self._struct: tuple[Any, ...] | None = None
        self._plan: Any = None  # (native codec, compiled plan) for the active backend
        self._coder: Any = None  # (native codec, its Coder for this type), see _install
        self._ncoder: Any = None  # that Coder, read by the native encode/decode methods
        self._fast: Any = None  # coerce.fast_shape(hint) or False, once computed

    def __repr__(self) -> str:
        return f"FieldType({self._name})"

    @property
    def fast_shape(self) -> tuple[Any, ...] | None:
        """The exact-type fast path of ``coerce`` (:func:`~oaas_sdk.codec.coerce.fast_shape`)
        for this type, or ``None``."""
        fast = self._fast
        if fast is None:
            fast = self._fast = fast_shape(self.hint) or False
        return fast or None

    def coerce(self, value: Any, *, owner: str = "", field: str = "") -> Any:
        """Check and convert a value assigned to a field of this type.

        Returns the value to store: ``value`` itself when it already has the field's type,
        else the conversion pydantic's lax mode makes (``"12"`` -> ``12`` for ``int``, a
        dict -> the model). ``owner`` and ``field`` (class and field name) only go into
        error messages.

        Raises:
            TypeError: ``value`` is, or holds, a value of a type the codec cannot store
                (the message names owner.field and the type).
            ValidationError: ``value`` cannot be converted to the field's type (the
                message names owner.field, the value's type and pydantic's reason).
        """
        if type(value) in self.passthrough_types:
            return value
        shape = self.fast_shape
        if shape is not None:
            out = fast_copy(value, shape)
            if out is not None:
                return out
        where = _where(owner, field)
        try:
            _check(value, 0)
        except _Unsupported as e:
            raise TypeError(f"{where}: {e}") from None
        except _TooDeep as e:
            raise ValidationError(f"{where}: {e}") from None
        return self._convert(self, value, where)

    def _encode_slow(self, value: Any) -> bytes:
        """``encode``: a value of this type to its bytes (``docs/format.md``, "State codec").

        Raises:
            TypeError: ``value`` is, or holds, a value of an unsupported type.
            SerializationError: the value cannot be represented (a str with lone
                surrogates, a dict key that is not str or int, a numpy array of dtype
                object, containers nested more than ``MAX_DEPTH`` deep, ...) or does not
                match the hint (so that decoding it again would fail).
        """
        try:
            nc = ACTIVE.native
            if nc is not None:
                self._install(nc)
                if self._any or type(value) in self._pexact:
                    return nc.encode(value)
                plans = self._plan
                if plans is None or plans[0] is not nc:
                    plans = self._native_plans(nc)
                return nc.encode_plan(value, plans[1])
            if type(value) not in self._pexact:
                value = self._prep(value, 0)
            try:
                p = _pool.pop()
            except IndexError:
                p = _new_packer()
            try:
                return p.pack(value)
            finally:
                _pool.append(p)
        except Exception as e:
            raise self._encode_error(e) from (None if isinstance(e, _Mismatch) else e)

    def _install(self, nc: Any) -> None:
        """Give ``encode``/``decode`` the native coder of codec ``nc`` (built once)."""
        c = self._coder
        if c is None or c[0] is not nc:
            _, plan, dplan = self._native_plans(nc)
            coder = nc.coder(
                weakref.ref(self), tuple(self._pexact), self._any, plan, dplan, ZERO_COPY_MIN
            )
            c = self._coder = (nc, coder)
        self._ncoder = c[1]

    def _encode_failed(self, e: BaseException) -> BaseException:
        """What ``encode`` raises for ``e`` (the native coder's errors go through this)."""
        if not isinstance(e, Exception):
            return e
        err = self._encode_error(e)
        if err is not e:
            err.__context__ = e
        err.__cause__ = None if isinstance(e, _Mismatch) else e
        return err

    def _decode_failed(self, e: BaseException) -> BaseException:
        """What ``decode`` raises for ``e`` (the native coder's errors go through this)."""
        if not isinstance(e, Exception):
            return e
        err = SerializationError(f"cannot decode {self._name}: {e}")
        err.__context__ = err.__cause__ = e
        return err

    def _native_plan(self, nc: Any) -> Any:
        """The compiled encode plan for codec ``nc`` (built once per codec)."""
        return self._native_plans(nc)[1]

    def _native_plans(self, nc: Any) -> tuple[Any, Any, Any]:
        cached = self._plan
        if cached is None or cached[0] is not nc:
            cached = self._plan = (
                nc,
                nc.plan(_plan_desc(self, set())),
                nc.decode_plan(_decode_plan_desc(self, set())),
            )
        return cached

    def _encode_error(self, e: Exception) -> Exception:
        if isinstance(e, _Mismatch):
            return SerializationError(f"cannot encode as {self._name}: {e}")
        if isinstance(e, (SerializationError, TypeError)):
            return e
        if isinstance(e, RecursionError):
            return _too_deep()
        return SerializationError(f"cannot encode as {self._name}: {e}")

    def _decode_slow(
        self, data: bytes | bytearray | memoryview, *, zero_copy: bool = False
    ) -> Any:
        """``decode``: bytes produced by ``encode`` for this type -> the value.

        ``data`` is read through the buffer protocol without a copy (any C-contiguous
        buffer). ``zero_copy=True`` (native backend only; the Python backend ignores it):
        bin values and ndarray data of at least :data:`ZERO_COPY_MIN` bytes come back as
        read-only views into ``data`` (a ``memoryview`` for ``bytes``/``memoryview``/``Any``
        hints, a read-only array for ndarrays) instead of copies; they keep ``data`` alive.

        Raises:
            SerializationError: for any malformed, truncated or trailing input, or a value
                that does not fit the hint. No other exception type escapes, and nothing
                named by the data is imported or called.
        """
        try:
            nc = ACTIVE.native
            if nc is not None:
                self._install(nc)
                view_min = ZERO_COPY_MIN if zero_copy else 0
                if self._any:
                    return nc.decode(data, ACTIVE.ref_factory, view_min)
                plans = self._plan
                if plans is None or plans[0] is not nc:
                    plans = self._native_plans(nc)
                return nc.decode_with(data, plans[2], ACTIVE.ref_factory, view_min)
            else:
                raw = _unpackb(
                    data, raw=False, strict_map_key=False, ext_hook=_ext_hook, use_list=True
                )
            if type(raw) in self._cexact:
                return raw
            return self._conv(raw, 0)
        except Exception as e:
            raise SerializationError(f"cannot decode {self._name}: {e}") from e

    # Without the extension these are the methods; ``Coder.install`` (called once by
    # ``bridge.set_backend``) replaces them with the native ones.
    encode = _encode_slow
    decode = _decode_slow


# --------------------------------------------------------------------------- native plans


def _plan_desc(ft: FieldType, active: set[int]) -> tuple[Any, ...]:
    """The encode plan of a hint for the native codec, as nested tuples.

    Nodes: ("any",); ("exact", types, prep); ("list", elem, prep); ("dict", key types,
    val, prep); ("record", cls, ((name, node), ...), by_dict, prep) (by_dict: read the
    values from ``__dict__``, for pydantic models); ("python", prep). A value
    whose exact type a node accepts is encoded natively, exactly as ``_prep`` would pass
    it through; anything else goes to that node's ``_prep`` (so errors are Python's).
    """
    if ft._any:
        return ("any",)
    st = ft._struct
    if st is None or id(ft) in active:  # unknown, or a recursive reference
        return ("python", ft._prep)
    active.add(id(ft))
    try:
        kind = st[0]
        if kind == "wrapper":
            return _plan_desc(st[1], active)
        if kind == "exact":
            return ("exact", tuple(ft._pexact) + st[1:], ft._prep)
        if kind == "list":
            return ("list", _plan_desc(st[1], active), ft._prep)
        if kind == "dict":
            return ("dict", tuple(st[1]), _plan_desc(st[2], active), ft._prep)
        if kind == "record":
            fields = tuple((name, _plan_desc(node, active)) for name, node in st[2])
            by_dict = issubclass(st[1], BaseModel)
            return ("record", st[1], fields, by_dict, ft._prep)
        return ("python", ft._prep)
    finally:
        active.discard(id(ft))


def _decode_plan_desc(ft: FieldType, active: set[int]) -> tuple[Any, ...]:
    """The decode plan of a hint for the native codec, as nested tuples.

    Nodes: ("any",); ("exact", types, conv); ("list", elem, conv); ("dict", key types,
    key conv, val, conv); ("record", ((name, node), ...), finish, model, conv); ("python",
    conv). A record map is decoded field by field into a dict, then ``finish(dict, depth)``
    builds the model or dataclass (any failure: the raw value goes to ``conv`` instead,
    which raises Python's error). ``model``: a pydantic model class whose ``finish`` is
    exactly ``model_validate(dict, by_name=True)`` (see :func:`_fast_model`), else None;
    the native decoder then calls its validator directly. A raw value of a type the node
    accepts is final, exactly as ``FieldType.decode`` and the container ``_conv`` fast
    paths keep it; anything else goes to that node's ``_conv`` (so errors are Python's).
    """
    if ft._any:
        return ("any",)
    st = ft._struct
    if st is None or id(ft) in active:
        return ("python", ft._conv)
    active.add(id(ft))
    try:
        kind = st[0]
        if kind == "wrapper":
            return _decode_plan_desc(st[1], active)
        if kind == "exact":
            return ("exact", tuple(ft._cexact), ft._conv)
        if kind == "list":
            return ("list", _decode_plan_desc(st[1], active), ft._conv)
        if kind == "dict":
            return ("dict", tuple(st[3]), st[4], _decode_plan_desc(st[2], active), ft._conv)
        if kind == "record":
            fields = tuple((name, _decode_plan_desc(node, active)) for name, node in st[2])
            return ("record", fields, st[3], _fast_model(st[1]), ft._conv)
        return ("python", ft._conv)
    finally:
        active.discard(id(ft))


def _fast_model(cls: Any) -> Any:
    """``cls`` when ``_fill_model``'s ``finish`` for it succeeds exactly when
    ``cls.__pydantic_validator__.validate_python(data, by_name=True)`` does, with the same
    result (what ``model_validate(data, by_name=True)`` calls); else None."""
    if (
        _MODEL_VALIDATE_BY_NAME
        and isinstance(cls, type)
        and issubclass(cls, BaseModel)
        and not issubclass(cls, RootModel)
        and inspect.getattr_static(cls, "model_validate")
        is inspect.getattr_static(BaseModel, "model_validate")
    ):
        return cls
    return None
