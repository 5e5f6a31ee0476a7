"""The server side of the OaaS invocation protocol: :func:`dispatch` and :class:`RpcServer`.

A request runs exactly as a local call of the same method: the object is loaded by id
(an id with no stored state starts from the class's defaults, as ``load_or_create``), the
method takes the object's turn, its changes roll back if it raises, and the auto-commit
after it (``OaasConfig.auto_commit``) completes before the response leaves, so with
``durability="sync"`` a successful response means the new state is durable.

Statuses: ``OKAY``; ``INVALID_REQUEST`` for an unknown ``cls_id``/``fn_id``, a missing or
malformed object id, or a stateful method called without an object; ``APP_ERROR`` for an
exception raised by the method (payload: its message as UTF-8; header ``oaas-error-type``
its type) and for a payload that cannot be converted to the parameters (payload: a JSON
object ``{"error_type": "SerializationError", "error_message": ..., "error_class": ...}``,
header ``oaas-error: json``); ``SYSTEM_ERROR`` when the store failed. Nothing is written
for a failed call. Malformed protobuf bytes end the RPC with gRPC status
``INVALID_ARGUMENT``; messages over ``OaasConfig.rpc_max_message_bytes`` with
``RESOURCE_EXHAUSTED`` (by gRPC).

This is the pure-Python server (grpcio, ``grpc.aio``); it serves with the native and the
Python implementation alike, since a request runs through the same Python method path.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import inspect
import itertools
import json
import logging
import re
import uuid
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from ..errors import ObjectNotFound, SerializationError, StorageError, ValidationError
from ..invocation import (
    InvocationRequest,
    InvocationResponse,
    ObjectInvocationRequest,
    ResponseStatus,
)
from ..model.methods import invoke
from ..model.object import OaasObject, class_by_id
from . import messages as _pb
from .payload import RESULT_HEADER, decode_args, encode_result, signature_of

if TYPE_CHECKING:
    from .native_server import NativeRpcServer
    from .tls import ServerTls

__all__ = ["dispatch", "run_call", "RpcServer", "ERROR_TYPE_HEADER", "ERROR_MODULE_HEADER",
           "ERROR_FORMAT_HEADER"]

log = logging.getLogger("oaas_sdk")

ERROR_TYPE_HEADER = "oaas-error-type"
ERROR_MODULE_HEADER = "oaas-error-module"
ERROR_FORMAT_HEADER = "oaas-error"

# Invocation ids: unique per process start (random prefix) and call (counter).
_ID_PREFIX = uuid.uuid4().hex[:16] + "-"
_ids = itertools.count(1)

_NUMERIC_ID = re.compile(r"0|[1-9][0-9]{0,19}")


# A response as fields: (status, payload, headers, invocation_id). The native server
# hands these to Rust, which encodes them; the grpcio server builds the message.
Reply = tuple[int, "bytes | None", dict[str, str], str]

_OKAY = int(ResponseStatus.OKAY)
_INVALID = int(ResponseStatus.INVALID_REQUEST)
_APP_ERROR = int(ResponseStatus.APP_ERROR)
_SYSTEM_ERROR = int(ResponseStatus.SYSTEM_ERROR)


def _response(payload: bytes | None, status: ResponseStatus,
              headers: dict[str, str] | None = None,
              invocation_id: str = "") -> InvocationResponse:
    # Built without validation: every value is typed here.
    return InvocationResponse.model_construct(payload=payload, status=status,
                                              headers=headers or {},
                                              invocation_id=invocation_id)


def _invalid(msg: str, inv_id: str) -> Reply:
    return _INVALID, msg.encode(), {ERROR_FORMAT_HEADER: "text"}, inv_id


def _message_of(e: BaseException) -> str:
    """The exception's message: its single string argument when it has one (so
    ``KeyError("k")`` gives ``k``, not ``'k'``), else ``str(e)``."""
    if len(e.args) == 1 and isinstance(e.args[0], str):
        return e.args[0]
    return str(e)


def _error_headers(e: BaseException, fmt: str) -> dict[str, str]:
    t = type(e)
    return {ERROR_TYPE_HEADER: t.__name__, ERROR_MODULE_HEADER: t.__module__,
            ERROR_FORMAT_HEADER: fmt}


def _app_error(e: BaseException, inv_id: str) -> Reply:
    status = _SYSTEM_ERROR if isinstance(e, StorageError) else _APP_ERROR
    return (status, _message_of(e).encode("utf-8", "surrogatepass"),
            _error_headers(e, "text"), inv_id)


def _conversion_error(e: BaseException, inv_id: str) -> Reply:
    """The protocol's answer to a payload that cannot be converted: APP_ERROR with a JSON
    ``SerializationError`` object (as oaas-sdk2-py); the exact local exception type is in
    ``error_class`` and the headers."""
    body = {"error_type": "SerializationError", "error_message": _message_of(e),
            "error_class": type(e).__name__}
    return _APP_ERROR, json.dumps(body).encode(), _error_headers(e, "json"), inv_id


def internal_error(e: BaseException) -> Reply:
    """The answer to a defect of the SDK itself (the server keeps serving)."""
    return _SYSTEM_ERROR, f"internal error: {e}".encode(), {}, ""


def _object_id(raw: str) -> int | str:
    """The id of a wire object id: decimal strings are numeric ids (u64)."""
    if _NUMERIC_ID.fullmatch(raw):
        n = int(raw)
        if n < 2**64:
            return n
    return raw


def _spec_of(cls: type[OaasObject], fn_id: str) -> Any:
    specs = cls._oaas_methods
    spec = specs.get(fn_id)
    if spec is None:
        spec = next((s for s in specs.values() if s.attr_name == fn_id), None)
    return spec


class _Target:
    """What :func:`run_call` needs of one method of one class, resolved once (kept in the
    class's ``_oaas_rpc_targets``, by ``fn_id``)."""

    __slots__ = ("spec", "sig", "kind", "where", "passes", "direct", "converts", "attr")

    def __init__(self, cls: type[OaasObject], spec: Any) -> None:
        self.spec = spec
        self.sig = sig = signature_of(spec)
        self.kind = kind = spec.kind
        self.where = f"{cls.__name__}.{spec.attr_name}()"
        self.attr = spec.attr_name
        # an async method, setter, getter or function is called as it is (it returns an
        # awaitable); a sync method or setter goes through ``invoke`` (it waits for the turn)
        self.direct = spec.is_async
        self.converts = kind in ("method", "constructor", "function") and \
            spec.needs_conversion()
        # Per positional parameter, the type an argument passes the method's argument
        # conversion with unchanged: ``None`` (no conversion: no hint, or ``Any``), a
        # simple type (an argument of exactly that type), or ``...`` (converted).
        P = inspect.Parameter
        passes: list[Any] = []
        for prm in sig.params:
            if prm.kind not in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD):
                break
            hint = sig.hints.get(prm.name, Any)
            passes.append(None if hint is Any else hint if hint in _SIMPLE else ...)
        self.passes = tuple(passes)

    def unconverted(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether the method's argument conversion leaves these arguments as they are
        (so checking them first is not needed)."""
        if kwargs or len(args) > len(self.passes):
            return False
        for a, t in zip(args, self.passes, strict=False):
            if t is not None and type(a) is not t:
                return False
        return True


_SIMPLE = (int, float, str, bool, bytes)


def _target_of(cls: type[OaasObject], fn_id: str) -> _Target | None:
    targets: dict[str, _Target] | None = cls.__dict__.get("_oaas_rpc_targets")
    if targets is None:
        targets = {}
        cls._oaas_rpc_targets = targets  # type: ignore[attr-defined]
    t = targets.get(fn_id)
    if t is None:
        spec = _spec_of(cls, fn_id)
        if spec is None:
            return None
        t = targets[fn_id] = _Target(cls, spec)
    return t


def _forget(obj: OaasObject) -> None:
    """Drop an object created for this call that must not be persisted, unless another
    call is using it meanwhile (holds or awaits its turn): that call then decides."""
    turn = obj._oaas_state.turn
    if turn is not None and (turn.locked or turn.waiters):
        return
    rt = obj._oaas_state.rt
    m = obj.meta
    rt.dirty.pop(id(obj), None)
    key = (m.cls_id, m.partition_id, m.object_id)
    if rt.identity.get(key) is obj:
        del rt.identity[key]


async def dispatch(req: InvocationRequest) -> InvocationResponse:
    """Run one invocation (an :class:`ObjectInvocationRequest` for a method of an object,
    an :class:`InvocationRequest` for a class-level function or a stateless method) and
    return its response. Never raises for a request or method error: those become the
    response's status (see the module docstring)."""
    is_obj = isinstance(req, ObjectInvocationRequest)
    status, payload, headers, inv_id = await run_call(
        is_obj, req.cls_id, req.fn_id,
        req.object_id if is_obj else None,  # type: ignore[attr-defined]
        req.partition_id, req.payload, req.options, req)
    return _response(payload=payload, status=ResponseStatus(status), headers=headers,
                     invocation_id=inv_id)


def _request(is_obj: bool, cls_id: str, fn_id: str, object_id: str | None,
             partition_id: int, payload: bytes,
             options: dict[str, str]) -> InvocationRequest:
    if is_obj:
        return ObjectInvocationRequest.model_construct(
            partition_id=partition_id, cls_id=cls_id, fn_id=fn_id, options=options,
            payload=payload, object_id=object_id)
    return InvocationRequest.model_construct(
        partition_id=partition_id, cls_id=cls_id, fn_id=fn_id, options=options,
        payload=payload)


async def run_call(is_obj: bool, cls_id: str, fn_id: str, object_id: str | None,
                   partition_id: int, payload: bytes, options: dict[str, str],
                   request: InvocationRequest | None = None) -> Reply:
    """Run one invocation given as the request's fields (``is_obj``: ``InvokeObj``, else
    ``InvokeFn``; ``object_id``: the wire id or ``None``) and return the response as
    ``(status, payload, headers, invocation_id)``. ``request``: the request model a
    parameter annotated ``ObjectInvocationRequest``/``InvocationRequest`` receives (built
    from the fields only when such a parameter asks for it). Never raises for a request
    or method error: those become the status (see the module docstring).

    A call that needs not wait (an uncontended turn, a method that does not suspend, a
    commit acknowledged at once) completes at its first step (on Python 3.12+, the
    native server's eager task answers it before the loop turns)."""
    inv_id = f"{_ID_PREFIX}{next(_ids):x}"
    cls = class_by_id(cls_id)
    if cls is None:
        return _invalid(f"cls_id '{cls_id}' not found", inv_id)
    t = _target_of(cls, fn_id)
    if t is None:
        return _invalid(f"fn_id '{fn_id}' not found", inv_id)
    spec = t.spec
    kind = t.kind
    if kind != "function" and not spec.stateless and kind != "getter" and not is_obj:
        return _invalid(
            f"fn_id '{fn_id}' of '{cls_id}' is a method of an object: call it "
            f"with InvokeObj and an object_id", inv_id)
    sig = t.sig
    try:
        if payload or options:
            args, kwargs = decode_args(sig, payload, options, t.where)
        else:
            args, kwargs = (), {}
    except SerializationError as e:
        return _conversion_error(e, inv_id)

    obj: OaasObject | None = None
    created = False
    if kind != "function":
        if is_obj and object_id is not None:
            try:
                oid = _object_id(object_id)
                try:
                    obj = cls.load(oid, partition_id)
                except ObjectNotFound:
                    obj = cls.create(oid, partition_id=partition_id)
                    created = True
            except ValueError as e:  # malformed identity
                return _invalid(f"object_id: {e}", inv_id)
            except StorageError as e:
                return _app_error(e, inv_id)
        elif is_obj:
            return _invalid("object_id is missing", inv_id)
        else:  # InvokeFn of a stateless method or getter: a transient default object
            obj = cls.create()
            created = True
    # The arguments are checked here, so that one the parameters cannot take is a
    # conversion error (not the method's): unless the method's own conversion passes
    # them unchanged (the common case: as many simple values as it takes).
    check = t.converts and not t.unconverted(args, kwargs)
    if sig.request_param is not None:
        kwargs[sig.request_param] = request if request is not None else _request(
            is_obj, cls_id, fn_id, object_id, partition_id, payload, options)
    try:
        try:
            sig.check_binding(args, kwargs)
        except TypeError as e:
            raise ValidationError(f"{t.where}: {e}") from None
        if check:
            spec.convert_args(args, kwargs, obj)  # a conversion error is the caller's
    except ValidationError as e:
        if created and obj is not None:
            _forget(obj)
        return _conversion_error(e, inv_id)

    try:
        if t.direct:  # an async method, setter, getter or function: it awaits the turn
            res = await getattr(cls if obj is None else obj, t.attr)(*args, **kwargs)
        else:  # as a call through a reference: a sync method or setter waits for the turn
            res = await invoke(cls if obj is None else obj, spec, args, kwargs)
    except Exception as e:
        if created and obj is not None:
            _forget(obj)
        log.debug("invocation %s.%s failed", cls_id, fn_id, exc_info=True)
        if kind == "setter" and isinstance(e, ValidationError):
            return _conversion_error(e, inv_id)  # the value does not fit the field
        return _app_error(e, inv_id)
    except BaseException:  # cancelled: a new object the call created is not kept
        if created and obj is not None:
            _forget(obj)
        raise
    if created and obj is not None and (not is_obj or spec.stateless or kind == "getter"):
        _forget(obj)  # a read does not create the object
    try:
        out, rkind = encode_result(res, options)
    except SerializationError as e:
        return _app_error(e, inv_id)
    return _OKAY, out, {RESULT_HEADER: rkind}, inv_id


class RpcServer:
    """A ``grpc.aio`` server of the ``oprc.OprcFunction`` service for the classes
    registered in this process.

    ``host``/``port``: bind address (port 0: any free port, see :attr:`port` after
    :meth:`bind`). ``max_message_bytes``: largest request/response message. ``tls``:
    serve TLS with this certificate and key (and require client certificates chaining to
    its ``client_ca_pem``); ``None``: plaintext. Create and use it on one event loop.
    """

    def __init__(self, host: str, port: int, max_message_bytes: int,
                 tls: ServerTls | None = None) -> None:
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.tls = tls
        self._server: Any = None
        self.inflight = 0
        self.stopping = False

    def bind(self) -> int:
        """Create the server and bind its port (synchronously); returns the bound port.
        Raises ``OSError`` when the address cannot be bound."""
        opts = [("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", self.max_message_bytes),
                ("grpc.so_reuseport", 0)]
        server = grpc.aio.server(options=opts)
        server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler(_pb.SERVICE, {
                "InvokeFn": grpc.unary_unary_rpc_method_handler(self._invoke_fn),
                "InvokeObj": grpc.unary_unary_rpc_method_handler(self._invoke_obj),
            }),
            grpc.method_handlers_generic_handler(_pb.HEALTH_SERVICE, {
                "Check": grpc.unary_unary_rpc_method_handler(self._health_check),
            }),
        ))
        addr = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        try:
            if self.tls is None:
                bound = server.add_insecure_port(addr)
            else:
                creds = grpc.ssl_server_credentials(
                    [(self.tls.key_pem, self.tls.cert_pem)],
                    root_certificates=self.tls.client_ca_pem,
                    require_client_auth=self.tls.client_ca_pem is not None)
                bound = server.add_secure_port(addr, creds)
        except RuntimeError as e:
            raise OSError(f"cannot bind {addr}: {e}") from None
        if not bound:
            raise OSError(f"cannot bind {addr}")
        self._server = server
        self.port = bound
        return bound

    async def start(self) -> None:
        """Start serving (binds first if :meth:`bind` was not called)."""
        if self._server is None:
            self.bind()
        await self._server.start()

    async def stop(self, grace: float | None) -> None:
        """Stop accepting calls; calls in flight get ``grace`` seconds to finish (``None``:
        cancelled at once)."""
        self.stopping = True
        if self._server is not None:
            await self._server.stop(grace)

    async def _health_check(self, data: bytes, context: Any) -> bytes:
        """``grpc.health.v1.Health/Check``: SERVING for the whole server (``""``) and for
        ``oprc.OprcFunction``; NOT_SERVING once stopping; NOT_FOUND for other services."""
        try:
            service = _pb.PbHealthCheckRequest.FromString(data).service
        except DecodeError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"malformed HealthCheckRequest: {e}")
        if service not in ("", _pb.SERVICE):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {service!r}")
        status = _pb.HEALTH_NOT_SERVING if self.stopping else _pb.HEALTH_SERVING
        out: bytes = _pb.PbHealthCheckResponse(status=status).SerializeToString()
        return out

    async def _invoke_fn(self, data: bytes, context: Any) -> bytes:
        try:
            m = _pb.PbInvocationRequest.FromString(data)
        except DecodeError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"malformed oprc.InvocationRequest: {e}")
        return await self._run(_pb.request_from_pb(m))

    async def _invoke_obj(self, data: bytes, context: Any) -> bytes:
        try:
            m = _pb.PbObjectInvocationRequest.FromString(data)
        except DecodeError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"malformed oprc.ObjectInvocationRequest: {e}")
        return await self._run(_pb.object_request_from_pb(m))

    async def _run(self, req: InvocationRequest) -> bytes:
        self.inflight += 1
        try:
            resp = await dispatch(req)
        except Exception as e:  # a defect of the SDK: answer, keep serving
            log.exception("invocation %s.%s failed in the server", req.cls_id, req.fn_id)
            status, payload, headers, inv_id = internal_error(e)
            resp = _response(payload=payload, status=ResponseStatus(status),
                             headers=headers, invocation_id=inv_id)
        finally:
            self.inflight -= 1
        out: bytes = _pb.response_to_pb(resp).SerializeToString()
        return out


class ServerHandle:
    """An :class:`RpcServer` running on an event loop, for the synchronous facade
    (``oaas.start_server()``).

    * Called from a coroutine (a loop runs in this thread) or given a ``loop``: the server
      binds now and starts on that loop (when it next runs, for a loop not yet running).
    * Otherwise: the server runs on its own event loop in a daemon thread, started before
      :meth:`start` returns; methods then run on that thread (do not use the same objects
      from other threads meanwhile).

    Raises ``OSError`` when the address cannot be bound.
    """

    def __init__(self, server: RpcServer | NativeRpcServer, loop: asyncio.AbstractEventLoop,
                 thread: Any = None, started: Any = None) -> None:
        self.server = server
        self.loop = loop
        self.thread = thread
        self.started = started  # the start task/future

    @classmethod
    def start(cls, host: str, port: int, max_message_bytes: int,
              loop: asyncio.AbstractEventLoop | None = None,
              implementation: str = "python", tls: ServerTls | None = None) -> ServerHandle:
        """``implementation``: ``"python"`` (:class:`RpcServer`) or ``"native"``
        (:class:`~oaas_sdk.rpc.native_server.NativeRpcServer`); ``tls``: serve TLS."""
        server: RpcServer | NativeRpcServer
        if implementation == "native":
            from .native_server import NativeRpcServer

            server = NativeRpcServer(host, port, max_message_bytes, tls)
        else:
            server = RpcServer(host, port, max_message_bytes, tls)
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        if loop is None:
            return cls._start_thread(server)
        if loop.is_running():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:  # a loop running in another thread
                fut = asyncio.run_coroutine_threadsafe(server.start(), loop)
                fut.result(timeout=30)
                return cls(server, loop, started=fut)
        if not loop.is_running():
            # grpc.aio binds a server to the current event loop; the caller is about to
            # run this one (oaas-sdk2-py's pattern: start_server(loop=l); l.run_forever()).
            asyncio.set_event_loop(loop)
        server.bind()
        task = loop.create_task(server.start())
        return cls(server, loop, started=task)

    @classmethod
    def _start_thread(cls, server: RpcServer | NativeRpcServer) -> ServerHandle:
        import threading

        loop = asyncio.new_event_loop()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(server.start())
            except BaseException as e:
                ready.set_exception(e)
                loop.close()
                return
            ready.set_result(None)
            try:
                loop.run_forever()
            finally:
                loop.close()

        t = threading.Thread(target=run, name="oaas-rpc-server", daemon=True)
        t.start()
        ready.result(timeout=30)
        handle = cls(server, loop, thread=t, started=ready)
        # At exit, stop serving before the runtime flushes and closes the store (atexit
        # runs handlers last-registered first).
        atexit.register(handle._stop_at_exit)
        return handle

    def _stop_at_exit(self) -> None:
        try:
            self.stop(0)
        except Exception:  # pragma: no cover - nothing to report to at exit
            log.debug("stopping the server at exit failed", exc_info=True)

    @property
    def port(self) -> int:
        return self.server.port

    async def astop(self, grace: float | None) -> None:
        """Stop from a coroutine on the server's loop."""
        if self.started is not None and isinstance(self.started, asyncio.Task) \
                and not self.started.done():
            await self.started
        await self.server.stop(grace)

    def stop(self, grace: float | None) -> asyncio.Task[None] | None:
        """Stop from synchronous code: waits for calls in flight (``grace`` seconds at
        most), unless called from within the server's own running loop: the stop is then
        scheduled and its task returned (await it to wait for the stop)."""
        loop = self.loop
        if self.thread is not None:
            atexit.unregister(self._stop_at_exit)
            if loop.is_running():
                fut = asyncio.run_coroutine_threadsafe(self.server.stop(grace), loop)
                fut.result(timeout=None if grace is None else grace + 10)
                loop.call_soon_threadsafe(loop.stop)
            self.thread.join(timeout=30)
            return None
        if loop.is_closed():
            return None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            started = self.started
            if isinstance(started, asyncio.Task) and not started.done():
                started.cancel()  # never served: nothing to stop, the port is released
                return None
            return loop.create_task(self.astop(grace))
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(self.astop(grace), loop).result(
                timeout=None if grace is None else grace + 10)
        else:
            loop.run_until_complete(self.astop(grace))
        return None
