"""The native (tonic) server of the OaaS invocation protocol, and the choice between it and
the ``grpc.aio`` server (:func:`server_implementation`).

The native server (``oaas_sdk._native.NativeServer``, Rust crate ``oprc-py/rpc``) does the
I/O, TLS, protobuf decoding/encoding, limits, deadlines and health check on its own tokio
threads without the GIL. Each call enters Python once, on the server's event loop: the
loop watches the server's wake-up socket (``loop.add_reader``) and drains the queued
calls, each passed with the request's fields as they are. Its coroutine
(:func:`oaas_sdk.rpc.server.run_call`) is driven one step at once, in a context of its
own; a call that completes without suspending answers there (no task), one that
suspends goes on as a task, cancelled when the server reports its client gone (went
away, deadline passed, a stop's grace period over). The response fields go back to
Rust, which encodes them. Statuses, headers and limits are those of
:class:`~oaas_sdk.rpc.server.RpcServer`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Coroutine
from typing import Any

from .._backend import server_implementation  # re-exported: the seam makes the choice
from ..errors import ConfigError
from .server import Reply, internal_error, run_call
from .tls import ServerTls

__all__ = ["NativeRpcServer", "server_implementation"]

log = logging.getLogger("oaas_sdk")



class _Suspended:
    """A call that suspended at its first step: its task, whether the task has begun,
    and whether its client went away before it did."""

    __slots__ = ("task", "started", "gone")

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.started = False
        self.gone = False

    def cancel(self) -> None:
        """The client went away: cancel the call where it waits. A task cancelled before
        its first step would never run its coroutine (the call would keep the object's
        turn): its first step does the cancellation instead."""
        if self.started:
            if self.task is not None:
                self.task.cancel()
        else:
            self.gone = True


async def _resume(coro: Coroutine[Any, Any, Reply], yielded: Any, done: Any,
                  call: _Suspended, running: dict[int, _Suspended]) -> None:
    """Go on with a call's coroutine that suspended at its first step (outside any task),
    as a task would: wait for what it awaits (``yielded``, an asyncio future, or ``None``
    for a bare yield), resume it, until it returns; then answer. Cancelling this task
    cancels what the coroutine awaits, so it sees the cancellation where it waits."""
    call.started = True
    try:
        try:
            cancelled: BaseException | None = None
            if call.gone:  # cancelled before this task began: as Task.cancel() does
                if yielded is None or not yielded.cancel():
                    cancelled = asyncio.CancelledError()
            while True:
                if cancelled is None:
                    try:
                        if yielded is None:
                            await asyncio.sleep(0)
                        else:
                            # as a task takes a yielded future: ours to wait on now
                            yielded._asyncio_future_blocking = False
                            await yielded
                    except asyncio.CancelledError as e:
                        if yielded is None or not yielded.cancelled():
                            cancelled = e  # this task was cancelled: pass it on
                    except BaseException:  # noqa: S110 - the future's own error
                        pass  # the coroutine reads it from the future when resumed
                try:
                    yielded = coro.throw(cancelled) if cancelled is not None \
                        else coro.send(None)
                except StopIteration as stop:
                    reply = stop.value
                    break
                cancelled = None
        finally:
            running.pop(done.id, None)
    except asyncio.CancelledError:
        # the client went away or the grace period of a stop ended (nobody waits for an
        # answer then); else the client learns the call was cancelled
        coro.close()
        done.fail("the call was cancelled in the server")
        raise
    except Exception as e:  # a defect of the SDK: answer, keep serving
        log.exception("an invocation failed in the server")
        done(*internal_error(e))
        return
    done(*reply)


class NativeRpcServer:
    """The native server with the interface of :class:`~oaas_sdk.rpc.server.RpcServer`
    (``bind``, ``start``, ``stop``, ``port``, ``inflight``, ``stopping``).

    Calls run on the event loop that is current when :meth:`bind` runs (the running loop,
    else the thread's current loop): as with the grpcio server, methods run there.
    """

    def __init__(self, host: str, port: int, max_message_bytes: int,
                 tls: ServerTls | None = None) -> None:
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.tls = tls
        self.stopping = False
        self._native: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # calls that suspended, by call id: cancelled when their client goes away
        self._running: dict[int, _Suspended] = {}

    @property
    def io_threads(self) -> int | None:
        """The tokio I/O threads of the native servers (``OAAS_RPC_THREADS``)."""
        return int(self._native.io_threads) if self._native is not None else None

    @property
    def inflight(self) -> int:
        """Calls being served now."""
        return int(self._native.inflight) if self._native is not None else 0

    def bind(self) -> int:
        """Bind and start serving at once (calls wait for the loop to run); returns the
        bound port. Raises ``OSError`` when the address cannot be bound,
        :class:`ConfigError` for a malformed host, a TLS certificate or key rustls does
        not take, or a bad ``OAAS_RPC_THREADS``."""
        from .._backend import native_module

        _native = native_module("on")  # ConfigError without the extension
        assert _native is not None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = asyncio.get_event_loop_policy().get_event_loop()
        self._loop = loop
        host = "0.0.0.0" if self.host in ("", "*") else \
            "127.0.0.1" if self.host == "localhost" else self.host
        tls = self.tls
        try:
            self._native = _native.NativeServer(
                host, self.port, self.max_message_bytes, self._entry,
                None if tls is None else tls.cert_pem, None if tls is None else tls.key_pem,
                None if tls is None else tls.client_ca_pem)
        except ValueError as e:  # a malformed host, a certificate rustls does not take
            raise ConfigError(f"cannot start the native server: {e}") from None
        loop.add_reader(self._native.wake_fd, self._drain)
        self.port = int(self._native.port)
        return self.port

    def _entry(self, is_obj: bool, cls_id: str, fn_id: str, object_id: str | None,
               partition_id: int, payload: bytes, options: dict[str, str],
               done: Any) -> None:
        # The call's first step runs here, in a context of its own (the turn a call holds
        # is a context variable): a call that completes without suspending (most do)
        # answers at once, with no task; one that suspends goes on as a task.
        ctx = contextvars.copy_context()
        coro = run_call(is_obj, cls_id, fn_id, object_id, partition_id, payload, options)
        try:
            yielded = ctx.run(coro.send, None)
        except StopIteration as stop:
            done(*stop.value)
            return
        except Exception as e:  # a defect of the SDK: answer, keep serving
            log.exception("invocation %s.%s failed in the server", cls_id, fn_id)
            done(*internal_error(e))
            return
        assert self._loop is not None
        call = _Suspended()
        call.task = self._loop.create_task(_resume(coro, yielded, done, call, self._running),
                                           context=ctx)
        self._running[done.id] = call

    def _drain(self) -> None:
        try:
            gone = self._native.drain()
            if gone:
                running = self._running
                for call_id in gone:
                    call = running.get(call_id)
                    if call is not None:
                        call.cancel()
        except Exception:  # pragma: no cover - entry failed; those calls got INTERNAL
            log.exception("passing calls to the event loop failed")

    async def start(self) -> None:
        """Start serving (binds first if :meth:`bind` was not called)."""
        if self._native is None:
            self.bind()

    async def stop(self, grace: float | None) -> None:
        """Stop accepting calls; calls in flight get ``grace`` seconds to finish (``None``:
        they end at once with ``UNAVAILABLE``). Runs on the server's loop (calls in
        flight need it)."""
        self.stopping = True
        native = self._native
        if native is None:
            return
        loop = asyncio.get_running_loop()
        stopped: asyncio.Future[bool] = loop.create_future()

        def done(finished: bool) -> None:  # called from a tokio thread
            def resolve() -> None:
                if not stopped.done():
                    stopped.set_result(finished)
            try:
                loop.call_soon_threadsafe(resolve)
            except RuntimeError:  # pragma: no cover - loop closed meanwhile
                pass

        native.stop(grace, done)
        try:
            await stopped
        finally:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(native.wake_fd)
            self._native = None
