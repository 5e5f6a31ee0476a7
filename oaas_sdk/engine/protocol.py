"""What both engines share: the interface of tickets (:class:`Ticket`), the future a
durable ``commit_async`` returns (:class:`CommitFuture`), and how waiters of a batch are
settled on their event loops."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["CommitFuture", "Ticket", "OnError", "thrown"]

log = logging.getLogger("oaas_sdk")

def thrown(typ: Any, val: Any = None) -> BaseException:
    """The exception ``coroutine.throw(typ, val)`` raises: ``typ`` itself when it is an
    exception instance, else ``typ(val)`` (``typ()`` without ``val``)."""
    if isinstance(typ, BaseException):
        return typ
    exc: BaseException = typ() if val is None else typ(val)
    return exc


class CommitFuture(asyncio.Future[None]):
    """The future of a durable commit made in Python (``submit_future``): an
    ``asyncio.Future`` that is also a coroutine (``send`` / ``throw`` / ``close``, driving
    its own ``__await__``), so ``asyncio.run(obj.commit_async())`` and
    ``asyncio.create_task(obj.commit_async())`` take it, as they take oaas-sdk2-py's
    ``async def commit_async``. (The native engine's one-call commits have their own,
    ``_native.CommitFuture``, with the same protocols.)"""

    __slots__ = ()

    def send(self, value: Any) -> Any:
        if not self.done():
            self._asyncio_future_blocking = True
            return self  # the task waits on this future
        raise StopIteration(self.result())

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        raise thrown(typ, val)

    def close(self) -> None:
        pass


OnError = Callable[[], Any]
#: What a future-based submission leaves for the persister: ``[loop, future, on_error]``,
#: ``on_error`` being what to run on that loop before the future fails (it usually holds
#: the committing object). A list, so that settling can drop ``on_error`` while the
#: persister's thread may still hold the waiter: the object must be collectable (its
#: finalizer fills the entry cache) as soon as its commit settled.
_Waiter = list[Any]


def _settle(fut: asyncio.Future[None], error: BaseException | None,
            on_error: OnError | None = None) -> None:
    if fut.done():  # settled by the other side of a race, or cancelled
        if error is not None and on_error is not None and fut.cancelled():
            _run(on_error)  # nobody awaits the failure, but the object must still know
        return
    if error is None:
        fut.set_result(None)
    else:
        if on_error is not None:
            _run(on_error)
        fut.set_exception(error)


def _run(on_error: OnError) -> None:
    try:
        on_error()
    except Exception:
        log.exception("commit error handler failed")


def _settle_waiter(w: _Waiter, error: BaseException | None) -> None:
    on_error = w[2]
    w[2] = None
    _settle(w[1], error, on_error)


def _settle_many(items: list[tuple[_Waiter, BaseException | None]]) -> None:
    for w, error in items:
        fut = w[1]
        if error is None and not fut.done():  # the common case, inlined
            w[2] = None
            fut.set_result(None)
        else:
            _settle_waiter(w, error)


def _dispatch(items: list[tuple[_Waiter, BaseException | None]]) -> None:
    """Resolve futures from a non-loop thread: one ``call_soon_threadsafe`` per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Waiter, BaseException | None]]] = {}
    for item in items:
        loop = item[0][0]
        lst = by_loop.get(loop)
        if lst is None:
            lst = by_loop[loop] = []
        lst.append(item)
    for loop, lst in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_many, lst)
        except RuntimeError:  # the loop was closed: nobody is waiting any more
            pass


class Ticket(Protocol):
    """What :meth:`PythonEngine.submit` and :meth:`NativeEngine.submit` return."""

    @property
    def error(self) -> BaseException | None: ...

    def done(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> None: ...


_forks = 0


def _count_fork() -> None:
    global _forks
    _forks += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_count_fork)
