"""How a call runs on an object: its *turn* (one call at a time per object, like an actor;
re-entrant along one call chain), the snapshot a rollback needs, the rollback when the body
raises, retries, and the commit after it when ``auto_commit`` is on and state changed."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ..errors import DecoratorError
from .mapped import MappedUndo

if TYPE_CHECKING:
    from .methods import MethodSpec
    from .object import OaasObject

__all__ = ["Turn"]

_HELD: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar(
    "oaas_held_turns", default=frozenset())


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


# -- running a call on an object ---------------------------------------------------------

_get = object.__getattribute__
_set = object.__setattr__
_del = object.__delattr__

# (the undo log replaced, this call's undo log): see _snapshot.
_UndoLogs = tuple[dict[str, Any] | None, dict[str, Any]]
# (values, encoded, dirty, live, committed state, undo logs): see _snapshot.
_Snapshot = tuple[dict[str, Any], dict[str, bytes], set[str], frozenset[str],
                  tuple[Any, ...], _UndoLogs | None]


def _snapshot(obj: OaasObject) -> _Snapshot:
    """What a rollback needs: the fields' current values (mutable ones also encoded, as
    in-place changes would alter the objects themselves), dirty and materialised sets, the
    committed state (``committed``, ``version``, ``created_ms``, ``updated_ms``: a
    ``refresh()`` in the call replaces it) and, for a class with mapped fields, the call's
    undo log (``ObjectState.undo``, where a mapped field keeps its bytes before the call
    first reaches it, :class:`~oaas_sdk.model.mapped.MappedUndo`) with the one it replaces."""
    st = obj._oaas_state
    cls = type(obj)
    fields = cls._oaas_fields
    live = st.live
    values = {n: _get(obj, n) for n, f in fields.items() if not f.mutable or n in live}
    encoded = {n: fields[n].ftype.encode(values[n]) for n in live} if live else {}
    undo: _UndoLogs | None = None
    if cls._oaas_mapped:
        undo = (st.undo, {})
        st.undo = undo[1]
    return (values, encoded, set(st.dirty), frozenset(live),
            (st.committed, st.version, st.created_ms, st.updated_ms), undo)


def _keep(obj: OaasObject, snap: _Snapshot) -> None:
    """The body returned: hand the call's undo log to the calling method's (the first
    value of a field wins), or drop it."""
    undo = snap[5]
    if undo is None:
        return
    prev, log = undo
    obj._oaas_state.undo = prev
    if prev is not None:
        for n, old in log.items():
            prev.setdefault(n, old)


def _rollback(obj: OaasObject, snap: _Snapshot) -> None:
    values, encoded, dirty, live_before, base, undo = snap
    fields = type(obj)._oaas_fields
    st = obj._oaas_state
    if undo is not None:
        st.undo = undo[0]
        for n, old in undo[1].items():
            if type(old) is MappedUndo:
                _set(obj, n, old)  # MappedField.__set__ copies the bytes back
    if st.committed is not base[0]:  # a refresh() in the call: undone too
        st.committed, st.version, st.created_ms, st.updated_ms = base
    live = st.live
    for n in live - live_before:
        _del(obj, n)  # decoded during the call: the next read decodes committed bytes again
    live.clear()
    live.update(live_before)
    for n, v in values.items():
        _set(obj, n, v)
    for n, data in encoded.items():
        _set(obj, n, fields[n].ftype.decode(data))
    st.dirty.clear()
    st.dirty.update(dirty)
    rt = st.rt
    # The registries hold the object again when a refresh() or commit in the call took
    # it out (see Runtime.dirty / Runtime.touched).
    if dirty:
        rt.dirty[id(obj)] = obj
    elif st.version != 0:
        rt.dirty.pop(id(obj), None)
    if live_before:
        rt.touched[id(obj)] = obj


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
    st = obj._oaas_state
    if not reentrant:
        turn = st.turn
        if turn is None:
            turn = st.turn = Turn()
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
                if snap[5] is not None:
                    _keep(obj, snap)
                break
            except BaseException as e:
                _rollback(obj, snap)
                if not isinstance(e, Exception) or not spec.retry_count:
                    raise
                if attempt >= spec.retry_count:
                    raise _exhausted(spec, e) from e
                attempt += 1
                await asyncio.sleep(spec.retry_delay)
        if not reentrant and st.rt.config.auto_commit and obj._oaas_needs_commit():
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
    return spec.fn(obj, *args, **kwargs)


def _exhausted(spec: MethodSpec, error: Exception) -> DecoratorError:
    """The error of a call whose every attempt (``retry_count + 1``) failed."""
    attempts = spec.retry_count + 1
    owner = f"{spec.owner.__name__}." if spec.owner is not None else ""
    return DecoratorError(f"{owner}{spec.name} failed after {attempts} attempts: "
                          f"{type(error).__name__}: {error}",
                          attempts=attempts, last_error=error)


def _call_sync(spec: MethodSpec, obj: OaasObject, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> Any:
    """A sync method: run now, in the calling thread, and return its value; commit
    (blocking) after it when ``auto_commit`` is on and state changed.

    Called from a method of the same object (re-entrant), it runs inside the caller's turn
    and leaves the commit to the caller. Otherwise, in a thread running an event loop, it
    takes the object's turn like an async call but cannot wait for it: when another call
    chain holds the turn (an async method of this object suspended at an ``await``), it
    raises ``RuntimeError`` rather than interleave with that method's changes.
    """
    args, kwargs = spec.convert_args(args, kwargs, obj)
    oid = id(obj)
    held = _HELD.get()
    outer = oid in held  # a call on this object up the chain commits after us
    turn = None
    if not outer and not spec.stateless and _in_running_loop():
        st = obj._oaas_state
        turn = st.turn
        if turn is None:
            turn = st.turn = Turn()
        if turn.locked:
            raise RuntimeError(
                f"{type(obj).__name__}.{spec.attr_name}() is a sync method called while "
                f"another call on {obj!r} holds its turn; make it async, or await that "
                f"call first")
        turn.locked = True
    held_token = None if outer else _HELD.set(held | {oid})
    try:
        snap = None if spec.stateless else _snapshot(obj)
        attempt = 0
        while True:
            try:
                result = spec.fn(obj, *args, **kwargs)
                if snap is not None and snap[5] is not None:
                    _keep(obj, snap)
                break
            except BaseException as e:
                if snap is not None:
                    _rollback(obj, snap)
                if not isinstance(e, Exception) or not spec.retry_count:
                    raise
                if attempt >= spec.retry_count:
                    raise _exhausted(spec, e) from e
                attempt += 1
                time.sleep(spec.retry_delay)
        if (not outer and not spec.stateless and obj._oaas_state.rt.config.auto_commit
                and obj._oaas_needs_commit()):
            obj.commit()
    finally:
        if held_token is not None:
            _HELD.reset(held_token)
        if turn is not None:
            turn.release()
    return spec.convert_result(result)


def _in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False
