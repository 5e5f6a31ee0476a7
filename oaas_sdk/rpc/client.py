"""The client side of the OaaS invocation protocol: calls on objects served elsewhere.

:func:`invoke` sends one invocation to ``"host:port"`` over ``grpc.aio`` and returns the
decoded result, or raises the remote exception: a builtin exception type (``ValueError``,
``KeyError``, ...) or an oaas-sdk error (``ValidationError``, ``SerializationError``, ...)
is re-raised as that type with the remote message; any other type ``T`` as a subclass of
:class:`~oaas_sdk.errors.RemoteError` named ``T``. :func:`remote_method` is what
``ObjectRef`` attribute access returns for a routed class.

Channels are reused per event loop and target. With ``OaasConfig.rpc_tls_ca`` (or
``rpc_tls``) they speak TLS, presenting ``rpc_tls_cert``/``rpc_tls_key`` when set
(:mod:`oaas_sdk.rpc.tls`). The deadline of a call is the method's
``timeout`` plus :data:`DEADLINE_SLACK_S` (room for the commit and the transport), else
``OaasConfig.rpc_timeout_s``; a call that fails with gRPC
``UNAVAILABLE`` is retried ``retry_count`` times, ``retry_delay`` seconds apart (the
method's options when its class is known here).
"""

from __future__ import annotations

import asyncio
import builtins
import json
import keyword
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from .. import errors as _errors
from .. import runtime as _rt
from ..errors import RemoteError
from ..invocation import ResponseStatus
from . import messages as _pb
from .payload import RESULT_HEADER, decode_result, encode_args, signature_of
from .server import ERROR_FORMAT_HEADER, ERROR_MODULE_HEADER, ERROR_TYPE_HEADER
from .tls import client_credentials

__all__ = ["invoke", "remote_method", "close_channels", "DEADLINE_SLACK_S"]

DEADLINE_SLACK_S = 1.0
"""Seconds added to a method's ``timeout`` to make the deadline of a remote call to it."""

# (loop, target, max message bytes, TLS files) -> channel. A grpc.aio channel belongs to
# the loop it was created on.
_channels: dict[tuple[Any, ...], tuple[asyncio.AbstractEventLoop, Any]] = {}


def _channel(target: str, cfg: Any) -> Any:
    loop = asyncio.get_running_loop()
    max_bytes = cfg.rpc_max_message_bytes
    tls = (cfg.rpc_tls, cfg.rpc_tls_ca, cfg.rpc_tls_cert, cfg.rpc_tls_key)
    key = (id(loop), target, max_bytes, tls)
    hit = _channels.get(key)
    if hit is not None and hit[0] is loop:
        return hit[1]
    for k, (lp, _ch) in list(_channels.items()):
        if lp.is_closed():
            del _channels[k]
    options = [("grpc.max_receive_message_length", max_bytes),
               ("grpc.max_send_message_length", max_bytes)]
    creds = client_credentials(cfg)  # ConfigError for unreadable files
    if creds is None:
        ch = grpc.aio.insecure_channel(target, options=options)
    else:
        ch = grpc.aio.secure_channel(target, creds, options=options)
    _channels[key] = (loop, ch)
    return ch


async def close_channels() -> None:
    """Close the channels opened on the running event loop."""
    loop = asyncio.get_running_loop()
    for k, (lp, ch) in list(_channels.items()):
        if lp is loop:
            del _channels[k]
            await ch.close()


async def invoke(target: str, cls_id: str, fn_id: str, args: tuple[Any, ...] = (),
                 kwargs: dict[str, Any] | None = None, *, object_id: int | str | None = None,
                 partition_id: int = 0, returns: Any = Any, timeout: float | None = None,
                 retry_count: int = 0, retry_delay: float = 1.0) -> Any:
    """Invoke ``fn_id`` of ``cls_id`` at ``target`` (``"host:port"``): ``InvokeObj`` when
    ``object_id`` is given, else ``InvokeFn``. Returns the result decoded (with the return
    hint ``returns`` when known).

    Raises the remote exception (see the module docstring); :class:`RemoteError` with
    ``status="INVALID_REQUEST"`` for an unknown class or function; ``TimeoutError`` when
    the deadline (``timeout`` seconds) passes; :class:`RemoteError` with the gRPC status
    for transport failures (``UNAVAILABLE`` after the retries); ``TypeError`` when an
    argument cannot be encoded.
    """
    where = f"{cls_id}.{fn_id}()"
    payload, options = encode_args(args, kwargs or {}, where)
    cfg = _rt.current().config
    if object_id is not None:
        msg = _pb.PbObjectInvocationRequest(partition_id=partition_id, cls_id=cls_id,
                                            fn_id=fn_id, options=options, payload=payload,
                                            object_id=str(object_id))
        path = _pb.INVOKE_OBJ
    else:
        msg = _pb.PbInvocationRequest(partition_id=partition_id, cls_id=cls_id, fn_id=fn_id,
                                      options=options, payload=payload)
        path = _pb.INVOKE_FN
    data = msg.SerializeToString()
    timeout = timeout if timeout else cfg.rpc_timeout_s
    call = _channel(target, cfg).unary_unary(path)
    attempt = 0
    while True:
        try:
            raw = await call(data, timeout=timeout)
            break
        except grpc.aio.AioRpcError as e:
            code = e.code()
            if code == grpc.StatusCode.UNAVAILABLE and attempt < retry_count:
                attempt += 1
                await asyncio.sleep(retry_delay)
                continue
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TimeoutError(f"{where} at {target}: no answer within {timeout} s") \
                    from None
            raise _remote(RemoteError, f"{where} at {target}: {code.name}: {e.details()}",
                          code.name, "", target) from None
    try:
        resp = _pb.PbInvocationResponse.FromString(raw)
    except DecodeError as e:
        raise _remote(RemoteError, f"{where} at {target}: malformed response: {e}",
                      "SYSTEM_ERROR", "", target) from None
    headers = dict(resp.headers)
    body = resp.payload if resp.HasField("payload") else None
    if resp.status == ResponseStatus.OKAY:
        return decode_result(body, headers.get(RESULT_HEADER), returns)
    raise _error(resp.status, body or b"", headers, target, where) from None


def _remote(cls: type[BaseException], msg: str, status: str, remote_type: str,
            target: str) -> BaseException:
    e = cls(msg)
    if isinstance(e, RemoteError):
        e.status, e.remote_type, e.target = status, remote_type, target
    return e


_remote_types: dict[str, type[RemoteError]] = {}


_MAX_REMOTE_TYPES = 512  # bounds what a server can make this process create


def _remote_type(name: str) -> type[RemoteError]:
    t = _remote_types.get(name)
    if t is None:
        if len(_remote_types) >= _MAX_REMOTE_TYPES:
            return RemoteError
        t = _remote_types[name] = type(name, (RemoteError,), {
            "__module__": "oaas_sdk.remote",
            "__doc__": f"The remote exception type {name} (a RemoteError)."})
    return t


def _exception_type(name: str, module: str) -> type[BaseException]:
    if module in ("builtins", ""):
        t = getattr(builtins, name, None)
        if isinstance(t, type) and issubclass(t, Exception):
            return t
    if (module.startswith("oaas_sdk") or not module) and name in _errors.__all__:
        t = getattr(_errors, name)
        if t is not RemoteError:
            return t
    if name.isidentifier() and not keyword.iskeyword(name) and len(name) <= 200:
        return _remote_type(name)
    return RemoteError


def _error(status: int, body: bytes, headers: dict[str, str], target: str,
           where: str) -> BaseException:
    try:
        status_name = ResponseStatus(status).name
    except ValueError:
        status_name = f"STATUS_{status}"
    text = body.decode("utf-8", "replace")
    name = headers.get(ERROR_TYPE_HEADER, "")
    module = headers.get(ERROR_MODULE_HEADER, "")
    fmt = headers.get(ERROR_FORMAT_HEADER)
    if fmt == "json" or (fmt is None and text.startswith("{")):
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and "error_type" in obj:
            text = str(obj.get("error_message", text))
            name = name or str(obj.get("error_class") or obj["error_type"])
    if status == ResponseStatus.INVALID_REQUEST:
        return _remote(RemoteError, f"{where} at {target}: {text}", status_name, "", target)
    if not name:
        return _remote(RemoteError, text, status_name, "", target)
    cls = _exception_type(name, module)
    try:
        return _remote(cls, text, status_name, name, target)
    except Exception:  # a type whose constructor wants other arguments
        return _remote(_remote_type(name), text, status_name, name, target)


def remote_method(target: str, cls_id: str, object_id: int | str, partition_id: int,
                  cls: type | None, name: str) -> Callable[..., Any]:
    """The async callable for ``ref.<name>`` of an object served at ``target``.

    With the class known here, ``name`` must be one of its methods, accessors or functions
    (else ``AttributeError``) and its options (function or method, timeout, retries,
    return type) apply; without it, ``name`` is sent as the ``fn_id`` of an ``InvokeObj``.
    """
    spec = None
    if cls is not None:
        specs = getattr(cls, "_oaas_methods", {})
        spec = next((s for s in specs.values() if s.attr_name == name or s.name == name),
                    None)
        if spec is None:
            raise AttributeError(f"{cls_id} has no method or accessor {name!r}")
    fn_id = spec.name if spec is not None else name
    is_fn = spec is not None and spec.kind == "function"
    returns = signature_of(spec).returns if spec is not None else Any
    # The method's timeout bounds its body on the server; the deadline adds room for the
    # commit after it and the transport.
    timeout = spec.timeout + DEADLINE_SLACK_S if spec is not None and spec.timeout else None
    retry_count = spec.retry_count if spec is not None else 0
    retry_delay = spec.retry_delay if spec is not None else 1.0

    async def call(*args: Any, **kwargs: Any) -> Any:
        return await invoke(target, cls_id, fn_id, args, kwargs,
                            object_id=None if is_fn else object_id,
                            partition_id=partition_id, returns=returns, timeout=timeout,
                            retry_count=retry_count, retry_delay=retry_delay)

    call.__name__ = name
    call.__qualname__ = f"{cls_id}.{name}"
    return call
