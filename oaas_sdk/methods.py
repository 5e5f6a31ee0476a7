"""Method, function, constructor and accessor decorators, and how a call runs.

A call on an object takes the object's *turn* (one call at a time per object, like an
actor; re-entrant along one call chain), snapshots what a rollback needs, runs the body,
rolls its changes back if it raises, and commits after it when ``auto_commit`` is on and
state changed. Parameters annotated with pydantic models (and other convertible types) are
converted as pydantic's lax mode does.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import functools
import inspect
import time
import typing
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pydantic

from .errors import ValidationError
from .invocation import InvocationRequest, ObjectInvocationRequest

if TYPE_CHECKING:
    from .object import OaasObject

__all__ = ["method", "function", "constructor", "getter", "setter", "MethodSpec",
           "collect_methods"]

# Ids of the objects whose turn the current call chain holds.
_HELD: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar(
    "oaas_held_turns", default=frozenset())
# True while a sync method body runs: nested sync calls then run inline.
_IN_SYNC: contextvars.ContextVar[bool] = contextvars.ContextVar("oaas_in_sync", default=False)

_SIMPLE = (int, float, str, bool, bytes)


class Turn:
    """A fair, loop-agnostic lock: one holder at a time, waiters served first-in first-out."""

    __slots__ = ("locked", "waiters")

    def __init__(self) -> None:
        self.locked = False
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if not self.locked:
            self.locked = True
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            await fut  # ownership is handed over by release()
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release()  # we were handed the turn while being cancelled
            else:
                try:
                    self.waiters.remove(fut)
                except ValueError:
                    pass
            raise

    def release(self) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.locked = False


class MethodSpec:
    """What a decorator recorded about one method, function, constructor or accessor."""

    __slots__ = ("fn", "name", "kind", "stateless", "strict", "serve_with_agent", "timeout",
                 "retry_count", "retry_delay", "is_async", "field", "projection",
                 "_params", "_return_model", "_request_param", "attr_name", "owner")

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


# -- running a call on an object ---------------------------------------------------------

_get = object.__getattribute__
_set = object.__setattr__
_del = object.__delattr__

_Snapshot = tuple[dict[str, Any], dict[str, bytes], set[str], frozenset[str]]


def _snapshot(obj: OaasObject) -> _Snapshot:
    """What a rollback needs: the fields' current values (mutable ones also encoded, as
    in-place changes would alter the objects themselves), dirty and materialised sets."""
    cls = type(obj)
    fields = cls._oaas_fields
    live = obj._oaas_live
    values = {n: _get(obj, n) for n, f in fields.items() if not f.mutable or n in live}
    encoded = {n: fields[n].ftype.encode(values[n]) for n in live}
    return values, encoded, set(obj._oaas_dirty), frozenset(live)


def _rollback(obj: OaasObject, snap: _Snapshot) -> None:
    values, encoded, dirty, live_before = snap
    fields = type(obj)._oaas_fields
    live = obj._oaas_live
    for n in live - live_before:
        _del(obj, n)  # decoded during the call: the next read decodes committed bytes again
    live.clear()
    live.update(live_before)
    for n, v in values.items():
        _set(obj, n, v)
    for n, data in encoded.items():
        _set(obj, n, fields[n].ftype.decode(data))
    obj._oaas_dirty.clear()
    obj._oaas_dirty.update(dirty)
    rt = obj._oaas_rt
    if not dirty and obj._oaas_version != 0:
        rt.dirty.pop(id(obj), None)


async def _call_async(spec: MethodSpec, obj: OaasObject, args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> Any:
    if spec.needs_conversion():
        args, kwargs = spec.convert_args(args, kwargs, obj)
    if spec.stateless:
        return spec.convert_result(await _run_body(spec, obj, args, kwargs))
    oid = id(obj)
    held = _HELD.get()
    reentrant = oid in held
    turn = None
    token = None
    if not reentrant:
        turn = obj._oaas_turn
        if turn is None:
            turn = Turn()
            object.__setattr__(obj, "_oaas_turn", turn)
        if turn.locked:
            await turn.acquire()
        else:
            turn.locked = True  # uncontended: no await, no future
        token = _HELD.set(held | {oid})
    try:
        attempt = 0
        while True:
            snap = _snapshot(obj)
            try:
                if spec.is_async and not spec.timeout:
                    result = await spec.fn(obj, *args, **kwargs)
                else:
                    result = await _run_body(spec, obj, args, kwargs)
                break
            except BaseException as e:
                _rollback(obj, snap)
                if attempt >= spec.retry_count or not isinstance(e, Exception):
                    raise
                attempt += 1
                await asyncio.sleep(spec.retry_delay)
        if not reentrant and obj._oaas_rt.config.auto_commit and obj._oaas_needs_commit():
            await obj.commit_async()
        return result if spec._return_model is None else spec.convert_result(result)
    finally:
        if turn is not None:
            assert token is not None
            _HELD.reset(token)
            turn.release()


async def _run_body(spec: MethodSpec, obj: Any, args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
    if spec.is_async:
        coro = spec.fn(obj, *args, **kwargs)
        if spec.timeout:
            return await asyncio.wait_for(coro, spec.timeout)
        return await coro
    token = _IN_SYNC.set(True)
    try:
        return spec.fn(obj, *args, **kwargs)
    finally:
        _IN_SYNC.reset(token)


def _call_sync_inline(spec: MethodSpec, obj: OaasObject, args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> Any:
    """A sync method called from sync code: run now, commit (blocking) after."""
    args, kwargs = spec.convert_args(args, kwargs, obj)
    nested = _IN_SYNC.get()
    snap = None if spec.stateless else _snapshot(obj)
    token = _IN_SYNC.set(True)
    try:
        attempt = 0
        while True:
            try:
                result = spec.fn(obj, *args, **kwargs)
                break
            except BaseException as e:
                if snap is not None:
                    _rollback(obj, snap)
                if attempt >= spec.retry_count or not isinstance(e, Exception):
                    raise
                attempt += 1
                time.sleep(spec.retry_delay)
    finally:
        _IN_SYNC.reset(token)
    if (not nested and not spec.stateless and obj._oaas_rt.config.auto_commit
            and obj._oaas_needs_commit()):
        obj.commit()
    return spec.convert_result(result)


def _in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


def _make_method(spec: MethodSpec) -> Callable[..., Any]:
    fn = spec.fn
    if spec.is_async:
        @functools.wraps(fn)
        def amethod(self: OaasObject, *args: Any, **kwargs: Any) -> Any:
            return _call_async(spec, self, args, kwargs)

        wrapper: Callable[..., Any] = amethod
    else:
        @functools.wraps(fn)
        def smethod(self: OaasObject, *args: Any, **kwargs: Any) -> Any:
            if _IN_SYNC.get() or not _in_running_loop():
                return _call_sync_inline(spec, self, args, kwargs)
            return _call_async(spec, self, args, kwargs)

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
                except Exception:
                    if attempt >= spec.retry_count:
                        raise
                    attempt += 1
                    await asyncio.sleep(spec.retry_delay)

        wrapper: Callable[..., Any] = afunc
    else:
        @functools.wraps(fn)
        def sfunc(*args: Any, **kwargs: Any) -> Any:
            args, kwargs = spec.convert_args(args, kwargs)
            return spec.convert_result(fn(*args, **kwargs))

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


def method(func_or_name: Any = None, *, name: str = "", stateless: bool = False,
           strict: bool = False, serve_with_agent: bool = False, timeout: float | None = None,
           retry_count: int = 0, retry_delay: float = 1.0) -> Any:
    """Mark a method of an :class:`OaasObject` subclass as an invocable method.

    Usable as ``@oaas.method``, ``@oaas.method()`` or ``@oaas.method("name")``. Options as in
    oaas-sdk2-py: ``name`` (invocation name), ``stateless`` (does not change state: no turn,
    no commit), ``strict`` (strict pydantic conversion of parameters), ``serve_with_agent``,
    ``timeout`` (seconds, async methods), ``retry_count`` and ``retry_delay`` (seconds).
    """
    def deco(fn: Callable[..., Any]) -> Any:
        return _Pending(MethodSpec(fn, name=name, kind="method", stateless=stateless,
                                   strict=strict, serve_with_agent=serve_with_agent,
                                   timeout=timeout, retry_count=retry_count,
                                   retry_delay=retry_delay))

    if callable(func_or_name):
        return deco(func_or_name)
    if isinstance(func_or_name, str):
        name = func_or_name
    return deco


def function(name: str = "", serve_with_agent: bool = False, timeout: float | None = None,
             retry_count: int = 0, retry_delay: float = 1.0) -> Any:
    """Mark a class-level, stateless function (no object, no ``self``)."""
    if callable(name):  # bare @oaas.function
        return _Pending(MethodSpec(name, kind="function"))

    def deco(fn: Callable[..., Any]) -> Any:
        return _Pending(MethodSpec(fn, name=name, kind="function",
                                   serve_with_agent=serve_with_agent, timeout=timeout,
                                   retry_count=retry_count, retry_delay=retry_delay))
    return deco


def constructor(validate: bool = True, timeout: float | None = None,
                error_handling: str = "strict") -> Any:
    """Mark an initialisation method; it runs, and commits, like any other method."""
    def deco(fn: Callable[..., Any]) -> Any:
        return _Pending(MethodSpec(fn, kind="constructor", timeout=timeout))
    if callable(validate):
        return deco(validate)  # bare @oaas.constructor
    return deco


def getter(field: str | None = None, *, projection: list[str] | None = None) -> Any:
    """Mark an accessor that returns a persisted field; the body is not run.

    ``field``: the field name, inferred from ``get_<field>`` or the method name when
    omitted. ``projection``: a path into the value (attribute or dict key per step).
    The class definition fails with ``TypeError`` when the field does not exist.
    """
    if projection is not None and (not isinstance(projection, list)
                                   or not all(isinstance(s, str) and s for s in projection)):
        raise ValueError("projection must be a list of non-empty strings")

    def deco(fn: Callable[..., Any]) -> Any:
        return _Pending(MethodSpec(fn, kind="getter", field=field, projection=projection))
    return deco


def setter(field: str | None = None) -> Any:
    """Mark an accessor that assigns a persisted field (converted like an assignment) and
    commits like a method; returns the stored value when the method declares a return type.
    The field is inferred from ``set_<field>`` when omitted."""
    def deco(fn: Callable[..., Any]) -> Any:
        return _Pending(MethodSpec(fn, kind="setter", field=field))
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
        @functools.wraps(spec.fn)
        async def aget(self: Any) -> Any:
            return read(self)
        wrapper: Callable[..., Any] = aget
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
            return _call_async(inner, self, (value,), {})
        wrapper: Callable[..., Any] = aset
    else:
        @functools.wraps(spec.fn)
        def sset(self: OaasObject, value: Any) -> Any:
            if _IN_SYNC.get() or not _in_running_loop():
                return _call_sync_inline(inner, self, (value,), {})
            return _call_async(inner, self, (value,), {})
        wrapper = sset
    wrapper._oaas_spec = spec  # type: ignore[attr-defined]
    return wrapper


def collect_methods(cls: type) -> None:
    """Turn the decorated functions of a class body into callables; record their specs in
    ``cls._oaas_methods`` (invocation name -> spec), inherited specs included."""
    specs: dict[str, MethodSpec] = {}
    for base in reversed(cls.__mro__[1:]):
        specs.update(getattr(base, "_oaas_methods", {}) or {})
    for attr, value in list(cls.__dict__.items()):
        if not isinstance(value, _Pending):
            continue
        spec = value.spec
        spec.attr_name = attr
        spec.owner = cls
        if spec.kind in ("method", "constructor"):
            setattr(cls, attr, _make_method(spec))
        elif spec.kind == "function":
            setattr(cls, attr, _make_function(spec))
        elif spec.kind == "getter":
            setattr(cls, attr, _make_getter(cls, spec))
        elif spec.kind == "setter":
            setattr(cls, attr, _make_setter(cls, spec))
        specs[spec.name] = spec
    cls._oaas_methods = specs  # type: ignore[attr-defined]
