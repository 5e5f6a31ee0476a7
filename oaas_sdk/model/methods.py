"""Method, function, constructor and accessor decorators, and how a call runs.

A call on an object takes the object's *turn* (one call at a time per object, like an
actor; re-entrant along one call chain), snapshots what a rollback needs, runs the body,
rolls its changes back if it raises, and commits after it when ``auto_commit`` is on and
state changed. Parameters annotated with pydantic models (and other convertible types) are
converted as pydantic's lax mode does.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import time
import typing
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeAlias, TypeVar, cast, overload

import pydantic

from ..errors import ValidationError
from ..invocation import InvocationRequest, ObjectInvocationRequest
from .calls import _HELD, Turn, _call_async, _call_sync, _exhausted

if TYPE_CHECKING:
    from .object import OaasObject

__all__ = ["method", "function", "constructor", "getter", "setter", "MethodSpec",
           "collect_methods", "invoke"]

# Ids of the objects whose turn the current call chain holds.
_SIMPLE = (int, float, str, bool, bytes)

# The decorated function's own type: decorators hand it back unchanged to type checkers.
_F = TypeVar("_F", bound=Callable[..., Any])
_P = ParamSpec("_P")
_R = TypeVar("_R")


class MethodSpec:
    """What a decorator recorded about one method, function, constructor or accessor."""

    __slots__ = ("fn", "name", "kind", "stateless", "strict", "serve_with_agent", "timeout",
                 "retry_count", "retry_delay", "is_async", "field", "projection",
                 "_params", "_return_model", "_request_param", "attr_name", "owner", "_nat")

    def __init__(self, fn: Callable[..., Any], *, name: str = "", kind: str = "method",
                 stateless: bool = False, strict: bool = False, serve_with_agent: bool = False,
                 timeout: float | None = None, retry_count: int = 0, retry_delay: float = 1.0,
                 field: str | None = None, projection: list[str] | None = None) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.kind = kind
        self.stateless = stateless
        self.strict = strict
        self.serve_with_agent = serve_with_agent
        self.timeout = timeout
        self.retry_count = retry_count
        self.retry_delay = retry_delay
        self.is_async = inspect.iscoroutinefunction(fn)
        self.field = field
        self.projection = projection
        self._params: list[tuple[str, Any, pydantic.TypeAdapter[Any] | None]] | None = None
        self._return_model: Any = None
        self._request_param: str | None = None
        self.attr_name = fn.__name__
        self.owner: type | None = None
        self._nat: tuple[Any, ...] | None = None

    @property
    def field_name(self) -> str | None:
        """The field an accessor reads or writes (``None`` for other kinds, and for an
        accessor whose field is inferred until its class is defined); oaas-sdk2-py's
        ``AccessorSpec.field_name``."""
        return self.field

    # -- argument conversion --------------------------------------------------------------
    def _prepare(self) -> list[tuple[str, Any, pydantic.TypeAdapter[Any] | None]]:
        params = self._params
        if params is not None:
            return params
        try:
            hints = typing.get_type_hints(self.fn)
        except Exception:
            hints = {}
        sig = inspect.signature(self.fn)
        out: list[tuple[str, Any, pydantic.TypeAdapter[Any] | None]] = []
        plist = list(sig.parameters.values())
        if self.kind != "function" and plist:
            plist = plist[1:]  # self
        for p in plist:
            ann = hints.get(p.name, inspect.Parameter.empty)
            if ann in (ObjectInvocationRequest, InvocationRequest):
                self._request_param = p.name
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                out.append((p.name, p.kind, None))
                continue
            adapter = None
            if ann is not inspect.Parameter.empty and ann is not Any:
                try:
                    adapter = pydantic.TypeAdapter(
                        ann, config=pydantic.ConfigDict(arbitrary_types_allowed=True,
                                                        strict=self.strict)
                        if not _is_model(ann) else None)
                except Exception:
                    adapter = None
            out.append((p.name, ann, adapter))
        ret = hints.get("return")
        if _is_model(ret):
            self._return_model = ret
        self._params = out
        return out

    def needs_conversion(self) -> bool:
        """Whether calls need :meth:`convert_args` (annotated parameters or a request)."""
        params = self._params
        if params is None:
            params = self._prepare()
        return bool(params) or self._request_param is not None

    def convert_args(self, args: tuple[Any, ...], kwargs: dict[str, Any],
                     obj: Any = None) -> tuple[tuple[Any, ...], dict[str, Any]]:
        params = self._prepare()
        if self._request_param is not None and self._request_param not in kwargs:
            kwargs = dict(kwargs)
            kwargs[self._request_param] = self._request(obj, args, kwargs)
        if not params:
            return args, kwargs
        new_args = list(args)
        for i, v in enumerate(args):
            if i >= len(params):
                break
            name, ann, adapter = params[i]
            if ann is inspect.Parameter.VAR_POSITIONAL:
                break
            if adapter is not None and not (type(v) is ann and ann in _SIMPLE):
                new_args[i] = self._convert(name, adapter, v)
        if kwargs:
            by_name = {n: (a, ad) for n, a, ad in params}
            for k, v in list(kwargs.items()):
                spec = by_name.get(k)
                if spec is None or spec[1] is None or k == self._request_param:
                    continue
                if not (type(v) is spec[0] and spec[0] in _SIMPLE):
                    kwargs[k] = self._convert(k, spec[1], v)
        return tuple(new_args), kwargs

    def _convert(self, pname: str, adapter: pydantic.TypeAdapter[Any], value: Any) -> Any:
        try:
            return adapter.validate_python(value)
        except pydantic.ValidationError as e:
            owner = self.owner.__name__ if self.owner is not None else "?"
            reason = "; ".join(err["msg"] for err in e.errors())
            raise ValidationError(f"{owner}.{self.name}(): parameter {pname!r} cannot take "
                                  f"{value!r} ({type(value).__name__}): {reason}") from None

    def _native_plan(self) -> tuple[Any, ...]:
        """What the native method call (``oprc-py/src/object/method.rs``) needs, made once:
        ``(fn, stateless, argtypes, is_async, converts_result, Turn, _HELD, _call_async,
        python_only, _call_sync)``. ``argtypes``: per positional parameter ``None`` (no conversion),
        the simple type an argument passes unconverted with, or ``...`` (always
        converted); ``None`` when every call needs :meth:`convert_args`. ``python_only``:
        retries or a timeout, which the Python definitions run."""
        params = self._prepare()
        argtypes: tuple[Any, ...] | None = None
        if self._request_param is None:
            types: list[Any] = []
            for _name, ann, adapter in params:
                if ann is inspect.Parameter.VAR_POSITIONAL or ann is inspect.Parameter.VAR_KEYWORD:
                    break
                if adapter is None:
                    types.append(None)
                elif ann in _SIMPLE:
                    types.append(ann)
                else:
                    types.append(...)
            argtypes = tuple(types)
        plan = (self.fn, self.stateless, argtypes, self.is_async,
                self._return_model is not None, Turn, _HELD, _call_async,
                bool(self.timeout or self.retry_count), _call_sync)
        self._nat = plan
        return plan

    def convert_result(self, result: Any) -> Any:
        model = self._return_model
        if model is not None and not isinstance(result, model) and isinstance(result, dict):
            return model.model_validate(result)
        return result

    def _request(self, obj: Any, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> InvocationRequest:
        owner = self.owner
        cls_id = getattr(owner, "_oaas_cls_id", "") if owner is not None else ""
        if obj is None or self.kind == "function":
            return InvocationRequest(cls_id=cls_id, fn_id=self.name)
        m = obj.meta
        return ObjectInvocationRequest(partition_id=m.partition_id, cls_id=m.cls_id,
                                       fn_id=self.name, object_id=str(m.object_id))


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, pydantic.BaseModel)


# What runs an async / a sync method call: the Python definitions, or the native ones
# (use_native).
_run_async: Callable[[MethodSpec, Any, tuple[Any, ...], dict[str, Any]], Any] = _call_async
_run_sync: Callable[[MethodSpec, Any, tuple[Any, ...], dict[str, Any]], Any] = _call_sync
# Awaitables of a value known at once, for async getters (native: no coroutine): of a
# value, and of an attribute of an object.
_ready: Callable[[Any], Any] | None = None
_ready_attr: Callable[[Any, str], Any] | None = None


# Async methods, setters and getters: [class, attribute, Python wrapper, native wrapper,
# how to make the native wrapper]. The native wrapper (an ``AsyncMethod`` or
# ``AsyncGetter`` of the extension, or a Python function) is made when first installed,
# by ``make(native module)``.
_ASYNC_WRAPPERS: list[list[Any]] = []
# The extension module while the native implementation is configured.
_native_mod: Any = None


def use_native(native: Any) -> None:
    """Run async method and setter calls with the native method call of the extension
    module ``native`` (``oprc-py/src/object/method.rs``), and async getters with its
    ready awaitable; or, with ``None``, with the Python definitions (``calls._call_async``,
    a coroutine per getter call). Called by the seam (``_backend.py``)."""
    global _run_async, _run_sync, _ready, _ready_attr, _native_mod
    if native is None:
        _run_async, _run_sync, _ready, _ready_attr = _call_async, _call_sync, None, None
    else:
        _run_async, _run_sync = native.method_call, native.method_call_sync
        _ready, _ready_attr = native.ready, native.ready_attr
    _native_mod = native
    alive = []
    for entry in _ASYNC_WRAPPERS:
        cls = entry[0]()
        if cls is None:
            continue
        alive.append(entry)
        want = _native_wrapper(entry) if native is not None else entry[2]
        if cls.__dict__.get(entry[1]) is not want:
            setattr(cls, entry[1], want)
    _ASYNC_WRAPPERS[:] = alive


def _native_wrapper(entry: list[Any]) -> Any:
    """The native wrapper of an async method, setter or getter (see ``_ASYNC_WRAPPERS``)."""
    wrapper = entry[3]
    if wrapper is None:
        python = entry[2]
        wrapper = entry[4](_native_mod)
        if not hasattr(wrapper, "__wrapped__"):
            functools.update_wrapper(wrapper, python.__wrapped__)
            for attr in ("_oaas_spec", "_oaas_run_spec"):
                if hasattr(python, attr):
                    setattr(wrapper, attr, getattr(python, attr))
        entry[3] = wrapper
    return wrapper


def _register_async(cls: type, attr: str, python: Any, make: Callable[[Any], Any]) -> Any:
    """Record the two wrappers of an async callable of ``cls``; the one to install now."""
    entry: list[Any] = [weakref.ref(cls), attr, python, None, make]
    _ASYNC_WRAPPERS.append(entry)
    return _native_wrapper(entry) if _native_mod is not None else python


def _make_method(cls: type, spec: MethodSpec) -> Callable[..., Any]:
    fn = spec.fn
    if spec.is_async:
        @functools.wraps(fn)
        def amethod(self: OaasObject, *args: Any, **kwargs: Any) -> Any:
            return _run_async(spec, self, args, kwargs)

        amethod._oaas_spec = spec  # type: ignore[attr-defined]
        # Native: the extension's AsyncMethod (no Python frame per call).
        return cast(Callable[..., Any], _register_async(
            cls, spec.attr_name, amethod, lambda native: native.AsyncMethod(spec)))
    else:
        @functools.wraps(fn)
        def smethod(self: OaasObject, *args: Any, **kwargs: Any) -> Any:
            return _run_sync(spec, self, args, kwargs)

        wrapper = smethod
    wrapper._oaas_spec = spec  # type: ignore[attr-defined]
    return wrapper


def _make_function(spec: MethodSpec) -> Callable[..., Any]:
    fn = spec.fn

    if spec.is_async:
        @functools.wraps(fn)
        async def afunc(*args: Any, **kwargs: Any) -> Any:
            args, kwargs = spec.convert_args(args, kwargs)
            attempt = 0
            while True:
                try:
                    coro = fn(*args, **kwargs)
                    res = await (asyncio.wait_for(coro, spec.timeout) if spec.timeout else coro)
                    return spec.convert_result(res)
                except Exception as e:
                    if not spec.retry_count:
                        raise
                    if attempt >= spec.retry_count:
                        raise _exhausted(spec, e) from e
                    attempt += 1
                    await asyncio.sleep(spec.retry_delay)

        wrapper: Callable[..., Any] = afunc
    else:
        @functools.wraps(fn)
        def sfunc(*args: Any, **kwargs: Any) -> Any:
            args, kwargs = spec.convert_args(args, kwargs)
            attempt = 0
            while True:
                try:
                    return spec.convert_result(fn(*args, **kwargs))
                except Exception as e:
                    if not spec.retry_count:
                        raise
                    if attempt >= spec.retry_count:
                        raise _exhausted(spec, e) from e
                    attempt += 1
                    time.sleep(spec.retry_delay)

        wrapper = sfunc
    wrapper._oaas_spec = spec  # type: ignore[attr-defined]
    return staticmethod(wrapper)


# -- decorators ---------------------------------------------------------------------------

class _Pending:
    """Marks a function decorated inside a class body until the class is finished."""

    __slots__ = ("spec",)

    def __init__(self, spec: MethodSpec) -> None:
        self.spec = spec

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # used outside an OaasObject
        return self.spec.fn(*args, **kwargs)


@overload
def method(func_or_name: _F, /) -> _F: ...
@overload
def method(func_or_name: str | None = None, /, *, name: str = "", stateless: bool = False,
           strict: bool = False, serve_with_agent: bool = False, timeout: float | None = None,
           retry_count: int = 0, retry_delay: float = 1.0) -> Callable[[_F], _F]: ...
def method(func_or_name: Callable[..., Any] | str | None = None, *, name: str = "",
           stateless: bool = False, strict: bool = False, serve_with_agent: bool = False,
           timeout: float | None = None, retry_count: int = 0,
           retry_delay: float = 1.0) -> Any:
    """Mark a method of an :class:`OaasObject` subclass as an invocable method.

    Usable as ``@oaas.method``, ``@oaas.method()`` or ``@oaas.method("name")``. Options as in
    oaas-sdk2-py: ``name`` (invocation name), ``stateless`` (does not change state: no turn,
    no commit), ``strict`` (strict pydantic conversion of parameters), ``serve_with_agent``,
    ``timeout`` (seconds, async methods), ``retry_count`` and ``retry_delay`` (seconds):
    a failing call is run again up to ``retry_count`` times, and when every attempt failed
    it raises :class:`~oaas_sdk.errors.DecoratorError` from the last error.

    The decorated method keeps its signature for type checkers: an ``async def`` returns an
    awaitable of its declared result, a ``def`` its result (at run time too, in or outside
    an event loop).
    """
    def deco(fn: _F) -> _F:
        return cast(_F, _Pending(MethodSpec(
            fn, name=name, kind="method", stateless=stateless, strict=strict,
            serve_with_agent=serve_with_agent, timeout=timeout, retry_count=retry_count,
            retry_delay=retry_delay)))

    if callable(func_or_name):
        return deco(func_or_name)
    if isinstance(func_or_name, str):
        name = func_or_name
    elif func_or_name is not None:
        raise TypeError(f"@method takes a function or a name, not {func_or_name!r}")
    return deco


if TYPE_CHECKING:  # staticmethod is not subscriptable at run time before Python 3.12
    _FunctionLike: TypeAlias = Callable[_P, _R] | staticmethod[_P, _R]


@overload
def function(name: _FunctionLike[_P, _R], /) -> staticmethod[_P, _R]: ...
@overload
def function(name: str = "", serve_with_agent: bool = False, timeout: float | None = None,
             retry_count: int = 0, retry_delay: float = 1.0,
             ) -> Callable[[_FunctionLike[_P, _R]], staticmethod[_P, _R]]: ...
def function(name: Callable[..., Any] | staticmethod[..., Any] | str = "",
             serve_with_agent: bool = False, timeout: float | None = None,
             retry_count: int = 0, retry_delay: float = 1.0) -> Any:
    """Mark a class-level, stateless function (no object, no ``self``): called on the class
    (``await Cls.version()``), as a ``staticmethod`` is. Usable as ``@oaas.function`` or
    ``@oaas.function(name, ...)``; options as for :func:`method`. A ``@staticmethod``
    below it is accepted (pyright checks the first parameter of a function in a class body
    as ``self`` unless it sees ``staticmethod`` itself).
    """
    def deco(fn: _FunctionLike[_P, _R]) -> staticmethod[_P, _R]:
        if isinstance(fn, staticmethod):
            fn = fn.__func__
        return cast("staticmethod[_P, _R]", _Pending(MethodSpec(
            fn, name=fname, kind="function", serve_with_agent=serve_with_agent,
            timeout=timeout, retry_count=retry_count, retry_delay=retry_delay)))

    if callable(name) or isinstance(name, staticmethod):  # bare @oaas.function
        fname = ""
        return deco(name)
    fname = name
    return deco


@overload
def constructor(validate: _F, /) -> _F: ...
@overload
def constructor(validate: bool = True, timeout: float | None = None,
                error_handling: str = "strict") -> Callable[[_F], _F]: ...
def constructor(validate: Callable[..., Any] | bool = True, timeout: float | None = None,
                error_handling: str = "strict") -> Any:
    """Mark an initialisation method; it runs, and commits, like any other method.

    Usable as ``@oaas.constructor`` or ``@oaas.constructor(...)``; ``validate`` and
    ``error_handling`` are accepted for oaas-sdk2-py compatibility (arguments are always
    converted to the annotated types), ``timeout`` is in seconds.
    """
    def deco(fn: _F) -> _F:
        return cast(_F, _Pending(MethodSpec(fn, kind="constructor", timeout=timeout)))
    if callable(validate):
        return deco(validate)  # bare @oaas.constructor
    return deco


@overload
def getter(field: _F, /) -> _F: ...
@overload
def getter(field: str | None = None, *,
           projection: list[str] | None = None) -> Callable[[_F], _F]: ...
def getter(field: Callable[..., Any] | str | None = None, *,
           projection: list[str] | None = None) -> Any:
    """Mark an accessor that returns a persisted field; the body is not run.

    ``field``: the field name, inferred from ``get_<field>`` or the method name when
    omitted. ``projection``: a path into the value (attribute or dict key per step).
    The class definition fails with ``TypeError`` when the field does not exist; a
    malformed ``projection`` raises ``ValueError``. A sync getter returns the value, an
    async one an awaitable of it.
    """
    if projection is not None and (not isinstance(projection, list)
                                   or not all(isinstance(s, str) and s for s in projection)):
        raise ValueError("projection must be a list of non-empty strings")

    def deco(fn: _F) -> _F:
        return cast(_F, _Pending(MethodSpec(fn, kind="getter", field=fname,
                                            projection=projection)))
    if callable(field):  # bare @oaas.getter
        fname = None
        return deco(field)
    fname = field
    return deco


@overload
def setter(field: _F, /) -> _F: ...
@overload
def setter(field: str | None = None) -> Callable[[_F], _F]: ...
def setter(field: Callable[..., Any] | str | None = None) -> Any:
    """Mark an accessor that assigns a persisted field (converted like an assignment) and
    commits like a method; returns the stored value when the method declares a return type.
    The field is inferred from ``set_<field>`` when omitted. A sync setter runs and commits
    before it returns; an async one returns an awaitable."""
    def deco(fn: _F) -> _F:
        return cast(_F, _Pending(MethodSpec(fn, kind="setter", field=fname)))
    if callable(field):  # bare @oaas.setter
        fname = None
        return deco(field)
    fname = field
    return deco


def _infer_field(cls: type, spec: MethodSpec) -> str:
    fields = cls._oaas_fields  # type: ignore[attr-defined]
    if spec.field:
        if spec.field not in fields:
            raise TypeError(f"{cls.__name__}.{spec.attr_name}: @{spec.kind} names the field "
                            f"{spec.field!r}, which {cls.__name__} does not declare")
        return spec.field
    n = spec.attr_name
    prefix = "get_" if spec.kind == "getter" else "set_"
    for cand in (n[4:] if n.startswith(prefix) else None, n):
        if cand and cand in fields:
            return cand
    raise TypeError(f"{cls.__name__}.{n}: cannot infer the field of this @{spec.kind}; "
                    f"name it {prefix}<field> or pass the field name")


def _project(value: Any, projection: list[str] | None) -> Any:
    if not projection:
        return value
    cur = value
    for seg in projection:
        if cur is None:
            return None
        if isinstance(cur, dict):
            if seg not in cur:
                raise KeyError(f"projection step {seg!r} not found")
            cur = cur[seg]
        elif hasattr(cur, seg):
            cur = getattr(cur, seg)
        else:
            raise KeyError(f"projection step {seg!r} not found")
    return cur


def _make_getter(cls: type, spec: MethodSpec) -> Callable[..., Any]:
    field_name = _infer_field(cls, spec)
    spec.field = field_name
    proj = spec.projection
    finfo = cls._oaas_fields[field_name]  # type: ignore[attr-defined]

    def read(self: Any) -> Any:
        # A getter returns the persisted value, not an alias of live state (as over RPC).
        value = getattr(self, field_name)
        ft = finfo.ftype
        if not ft.mutable:
            return _project(value, proj)
        if proj is None:
            return ft.decode(ft.encode(value))  # a copy of the field's exact type
        return copy.deepcopy(_project(value, proj))

    if spec.is_async:
        plain = not finfo.ftype.mutable and proj is None

        @functools.wraps(spec.fn)
        async def aget(self: Any) -> Any:
            return read(self)

        aget._oaas_spec = spec  # type: ignore[attr-defined]
        # The native wrapper: an awaitable of the value read now (no coroutine, no frame
        # to resume); for a plain field the extension's AsyncGetter (one native call).
        @functools.wraps(spec.fn)
        def aget_native(self: Any) -> Any:
            return _ready(read(self))  # type: ignore[misc]

        aget_native._oaas_spec = spec  # type: ignore[attr-defined]
        return cast(Callable[..., Any], _register_async(
            cls, spec.attr_name, aget,
            (lambda native: native.AsyncGetter(field_name)) if plain
            else (lambda native: aget_native)))
    else:
        @functools.wraps(spec.fn)
        def sget(self: Any) -> Any:
            return read(self)
        wrapper = sget
    wrapper._oaas_spec = spec  # type: ignore[attr-defined]
    return wrapper


def _make_setter(cls: type, spec: MethodSpec) -> Callable[..., Any]:
    field_name = _infer_field(cls, spec)
    spec.field = field_name
    try:
        ret = typing.get_type_hints(spec.fn).get("return", None)
    except Exception:
        ret = None
    returns = ret is not None and ret is not type(None)

    def body(self: Any, value: Any) -> Any:
        setattr(self, field_name, value)
        return getattr(self, field_name) if returns else None

    inner = MethodSpec(body, name=spec.name, kind="setter")
    inner.attr_name = spec.attr_name
    inner.owner = cls
    inner._params = []
    if spec.is_async:
        @functools.wraps(spec.fn)
        def aset(self: OaasObject, value: Any) -> Any:
            return _run_async(inner, self, (value,), {})

        aset._oaas_spec = spec  # type: ignore[attr-defined]
        aset._oaas_run_spec = inner  # type: ignore[attr-defined]
        return cast(Callable[..., Any], _register_async(
            cls, spec.attr_name, aset, lambda native: native.AsyncMethod(inner)))
    else:
        @functools.wraps(spec.fn)
        def sset(self: OaasObject, value: Any) -> Any:
            return _run_sync(inner, self, (value,), {})
        wrapper = sset
    wrapper._oaas_spec = spec  # type: ignore[attr-defined]
    wrapper._oaas_run_spec = inner  # type: ignore[attr-defined]
    return wrapper


async def invoke(target: Any, spec: MethodSpec, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> Any:
    """Run one call of ``spec`` from async code (an invocation server, a proxy) and return
    its result: on ``target``, the object, or the class for a function.

    Unlike calling the method itself, a sync method or setter called this way waits for
    the object's turn when another call holds it (called directly, a sync call cannot wait
    and raises ``RuntimeError``); everything else (rollback, retries, auto-commit) is as
    for a direct call. Raises what the call raises.
    """
    if spec.is_async or spec.kind in ("function", "getter"):  # nothing to wait for here
        res = getattr(target, spec.attr_name)(*args, **kwargs)
        return await res if inspect.isawaitable(res) else res
    # A sync method or setter: run as an async call, which awaits the turn.
    run: MethodSpec = getattr(getattr(type(target), spec.attr_name), "_oaas_run_spec", spec)
    return await _call_async(run, target, args, kwargs)


def collect_methods(cls: type) -> None:
    """Turn the decorated functions of a class body into callables; record their specs in
    ``cls._oaas_methods`` (invocation name -> spec) and the accessors' specs in
    ``cls._oaas_accessors`` (attribute name -> spec, as oaas-sdk2-py records them; each has
    ``kind`` ``"getter"``/``"setter"`` and ``field_name``), inherited specs included."""
    specs: dict[str, MethodSpec] = {}
    accessors: dict[str, MethodSpec] = {}
    for base in reversed(cls.__mro__[1:]):
        specs.update(getattr(base, "_oaas_methods", {}) or {})
        accessors.update(getattr(base, "_oaas_accessors", {}) or {})
    for attr, value in list(cls.__dict__.items()):
        if not isinstance(value, _Pending):
            continue
        spec = value.spec
        spec.attr_name = attr
        spec.owner = cls
        if spec.kind in ("method", "constructor"):
            setattr(cls, attr, _make_method(cls, spec))
        elif spec.kind == "function":
            setattr(cls, attr, _make_function(spec))
        elif spec.kind == "getter":
            setattr(cls, attr, _make_getter(cls, spec))
            accessors[attr] = spec
        elif spec.kind == "setter":
            setattr(cls, attr, _make_setter(cls, spec))
            accessors[attr] = spec
        specs[spec.name] = spec
    cls._oaas_methods = specs  # type: ignore[attr-defined]
    cls._oaas_accessors = accessors  # type: ignore[attr-defined]
