"""The native (tonic) server of the OaaS invocation protocol, and the choice between it and
the ``grpc.aio`` server (:func:`server_implementation`).

The native server (``oaas_sdk._native.NativeServer``, Rust crate ``oprc-py/rpc``) does the
I/O, TLS, protobuf decoding/encoding, limits, deadlines and health check on its own tokio
threads without the GIL. Each call enters Python once, on the server's event loop: the
loop watches the server's wake-up socket (``loop.add_reader``) and drains the queued
calls, each passed with the request's fields as they are. Each call's coroutine
(:func:`oaas_sdk.rpc.server.run_call`) runs as a task of its own; on Python 3.12+ an eager
one (its first step runs at once, so a call that does not suspend answers with no
event-loop round trip). A task is cancelled when the server reports its client gone (went
away, deadline passed, a stop's grace period over). The response fields go back to
Rust, which encodes them; the answers of one loop turn are handed to the I/O threads
together, at the end of the turn (or 16 at a time). Statuses, headers and limits are those of
:class:`~oaas_sdk.rpc.server.RpcServer`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from .._backend import server_implementation  # re-exported: the seam makes the choice
from ..errors import ConfigError
from .server import internal_error, run_call
from .tls import ServerTls

__all__ = ["NativeRpcServer", "server_implementation"]

log = logging.getLogger("oaas_sdk")


#: Python 3.12+ runs a new task's first step at once (``eager_start``): a call that does not
#: suspend is answered before the entry returns, inside its task (``asyncio.timeout``,
#: ``wait_for`` and ``current_task()`` work as in any task), with no event-loop round trip.
#: On 3.11 each call is a task scheduled on the loop.
_EAGER = sys.version_info >= (3, 12)
_EAGER_START: dict[str, Any] = {"eager_start": True} if _EAGER else {}
_Task = asyncio.Task


async def _serve_call(server: NativeRpcServer, args: tuple[Any, ...], done: Any) -> None:
    """Run one call (:func:`~oaas_sdk.rpc.server.run_call` with ``args``, the request's
    fields) in its task and pass its reply to ``done`` (Rust encodes and sends it; the
    answers of a loop turn leave together, see :meth:`NativeRpcServer._flush_soon`).
    Cancelled (the client went away, the deadline passed, a stop's grace period ended):
    the method sees the cancellation where it waits (its changes roll back, nothing is
    committed) and the call is failed (also when cancelled before its first step: the
    method never ran)."""
    try:
        reply = await run_call(*args)
    except asyncio.CancelledError:
        if done.fail("the call was cancelled in the server"):
            server._flush_soon()
        raise
    except Exception as e:  # a defect of the SDK: answer, keep serving
        log.exception("an invocation failed in the server")
        reply = internal_error(e)
    finally:
        server._running.pop(done.id, None)
    if done(*reply) and not server._draining:  # (a drain sends its batch at its end)
        if server._running:  # other calls go on: their answers leave with this one
            server._flush_soon()
        else:  # nothing else in flight here: no batch to wait for
            server._flush()


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
        # calls that suspended (or, on 3.11, have not run yet), by call id: their tasks
        # (cancelled when their client goes away) and completers
        self._running: dict[int, tuple[asyncio.Task[None], Any]] = {}
        # in NativeServer.drain (eager calls answered there leave at its end)
        self._draining = False

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
        # Each call is a task of its own (the turn a call holds is a context variable of
        # its context); on 3.12+ its first step runs here, so a call that completes
        # without suspending (most do) has answered when the task is made.
        try:
            task = _Task(_serve_call(self, (is_obj, cls_id, fn_id, object_id, partition_id,
                                            payload, options), done),
                         loop=self._loop, **_EAGER_START)
        except Exception as e:  # pragma: no cover - a defect of the SDK: answer, serve on
            log.exception("invocation %s.%s failed in the server", cls_id, fn_id)
            if done(*internal_error(e)):
                self._flush_soon()
            return
        if not task.done():
            self._running[done.id] = (task, done)

    def _flush(self) -> None:
        native = self._native
        if native is not None:
            native.flush()

    def _flush_soon(self) -> None:
        """Have the answers queued in this loop turn sent at its end (one wake-up of the
        I/O threads for them, not one per answer; Rust sends a full batch at once)."""
        native = self._native
        if native is not None and self._loop is not None:
            self._loop.call_soon(native.flush)

    def _drain(self) -> None:
        try:
            self._draining = True
            try:
                gone = self._native.drain()
            finally:
                self._draining = False
            if gone:
                running = self._running
                for call_id in gone:
                    entry = running.pop(call_id, None)
                    if entry is not None:
                        task, done = entry
                        task.cancel()  # the method sees it where it waits
                        # (answered now: it may not have started, and nobody waits)
                        if done.fail("the call was cancelled in the server"):
                            self._flush_soon()
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
        native.stop(grace)
        # Waited for on a thread of the loop's executor (a Python thread: the tokio
        # threads never call into Python, so none is inside the interpreter when it
        # finalizes); the loop keeps running the calls in flight meanwhile.
        stopped = loop.run_in_executor(None, native.wait_stopped)
        try:
            await stopped
        finally:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(native.wake_fd)
            self._native = None
