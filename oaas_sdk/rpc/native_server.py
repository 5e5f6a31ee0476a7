"""The native (tonic) server of the OaaS invocation protocol, and the choice between it and
the ``grpc.aio`` server (:func:`server_implementation`).

The native server (``oaas_sdk._native.NativeServer``, Rust crate ``oprc-py/rpc``) does the
I/O, protobuf decoding/encoding, limits and health check on its own tokio threads without
the GIL. Each call enters Python once, on the server's event loop: the loop watches the
server's wake-up socket (``loop.add_reader``), drains the queued calls and runs
:func:`oaas_sdk.rpc.server.dispatch` for each as a task; the response fields go back to
Rust, which encodes them. Statuses, headers and limits are those of
:class:`~oaas_sdk.rpc.server.RpcServer`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .._backend import server_implementation  # re-exported: the seam makes the choice
from ..invocation import InvocationRequest, ObjectInvocationRequest, ResponseStatus
from .server import dispatch

__all__ = ["NativeRpcServer", "server_implementation"]

log = logging.getLogger("oaas_sdk")



async def _run(is_obj: bool, cls_id: str, fn_id: str, object_id: str | None,
               partition_id: int, payload: bytes, options: dict[str, str],
               done: Any) -> None:
    try:
        if is_obj:
            req: InvocationRequest = ObjectInvocationRequest.model_construct(
                partition_id=partition_id, cls_id=cls_id, fn_id=fn_id, options=options,
                payload=payload, object_id=object_id)
        else:
            req = InvocationRequest.model_construct(
                partition_id=partition_id, cls_id=cls_id, fn_id=fn_id, options=options,
                payload=payload)
        resp = await dispatch(req)
    except Exception as e:  # a defect of the SDK: answer, keep serving
        log.exception("invocation %s.%s failed in the server", cls_id, fn_id)
        done(int(ResponseStatus.SYSTEM_ERROR), f"internal error: {e}".encode(), {}, "")
        return
    except BaseException:  # cancelled (loop closing): the client gets UNAVAILABLE
        done.fail("the call was cancelled")
        raise
    done(int(resp.status), resp.payload, resp.headers, resp.invocation_id)


class NativeRpcServer:
    """The native server with the interface of :class:`~oaas_sdk.rpc.server.RpcServer`
    (``bind``, ``start``, ``stop``, ``port``, ``inflight``, ``stopping``).

    Calls run on the event loop that is current when :meth:`bind` runs (the running loop,
    else the thread's current loop): as with the grpcio server, methods run there.
    """

    def __init__(self, host: str, port: int, max_message_bytes: int) -> None:
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.stopping = False
        self._native: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def inflight(self) -> int:
        """Calls being served now."""
        return int(self._native.inflight) if self._native is not None else 0

    def bind(self) -> int:
        """Bind and start serving at once (calls wait for the loop to run); returns the
        bound port. Raises ``OSError`` when the address cannot be bound."""
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
        self._native = _native.NativeServer(host, self.port, self.max_message_bytes,
                                            self._entry)
        loop.add_reader(self._native.wake_fd, self._drain)
        self.port = int(self._native.port)
        return self.port

    def _entry(self, is_obj: bool, cls_id: str, fn_id: str, object_id: str | None,
               partition_id: int, payload: bytes, options: dict[str, str],
               done: Any) -> None:
        assert self._loop is not None
        # A plain task: eager start (Python 3.12's eager_start=True) measured slower with
        # 64 callers (12-15k against 20k calls/s, benchmarks/rpc.py).
        task = self._loop.create_task(_run(is_obj, cls_id, fn_id, object_id, partition_id,
                                           payload, options, done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _drain(self) -> None:
        try:
            self._native.drain()
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
