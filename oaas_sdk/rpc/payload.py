"""Payload conventions: a call's arguments and result <-> the bytes of the OaaS protocol.

Plain convention (the OaaS platform and oaas-sdk2-py; ``docs/rpc.md``):

* request payload = the method's single (first) argument: JSON for primitives, lists and
  dicts, a pydantic model as its JSON, ``bytes`` as they are; empty = no argument (the
  parameters' defaults apply). A payload that is not JSON is taken as UTF-8 text (or
  raw bytes when it is not UTF-8) and converted to the parameter's type.
* response payload: ``str`` as raw UTF-8, ``bytes`` as they are, ``None`` as an empty
  payload, anything else as JSON. The header ``oaas-result`` says which
  (``str``/``bytes``/``none``/``json``).

Extensions, announced so other clients and servers are unaffected:

* request option ``oaas-args: envelope``: the payload is a MessagePack array
  ``[[arg, ...], {name: arg, ...}]`` whose items are each encoded with the state codec
  (``docs/format.md``), for calls with several positional or keyword arguments, or a
  value JSON cannot carry exactly (tuples, sets, datetimes, bytes in containers, ...).
* request option ``oaas-result: codec``: encode the result with the state codec (header
  ``oaas-result: codec``) so types round-trip exactly; a server that ignores the option
  answers with the plain convention, which the client also reads.

Nothing here runs code named by the data: values are rebuilt from the parameters' and the
return's type hints only.
"""

from __future__ import annotations

import inspect
import json
import typing
from dataclasses import dataclass
from typing import Any

import msgpack
import pydantic
import pydantic_core

from .. import codec
from ..errors import SerializationError
from ..invocation import InvocationRequest, ObjectInvocationRequest

__all__ = [
    "ARGS_OPTION",
    "RESULT_OPTION",
    "RESULT_HEADER",
    "Signature",
    "signature_of",
    "decode_args",
    "encode_args",
    "encode_result",
    "decode_result",
]

ARGS_OPTION = "oaas-args"
RESULT_OPTION = "oaas-result"
RESULT_HEADER = "oaas-result"
ENVELOPE = "envelope"
CODEC = "codec"

_BYTES = (bytes, bytearray, memoryview)
_JSON_SCALARS = (str, int, float, bool)


@dataclass(frozen=True)
class Signature:
    """What the wire needs of a method: its parameters (self excluded) with type hints,
    the name of the parameter receiving the invocation request (if any), the return hint,
    and the inspect signature to bind arguments against."""

    params: tuple[inspect.Parameter, ...]
    hints: dict[str, Any]
    request_param: str | None
    returns: Any
    sig: inspect.Signature
    has_self: bool
    binds_0: bool  # a call without arguments binds (every parameter has a default)
    binds_1: bool  # ... and one with a single positional argument

    def check_binding(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise ``TypeError`` (as a call would) when ``args``/``kwargs`` do not bind to
        the parameters; the request parameter counts as given."""
        n = len(args)
        if n <= 1 and len(kwargs) == (self.request_param is not None) and \
                (self.request_param is None or self.request_param in kwargs):
            if self.binds_0 if n == 0 else self.binds_1:
                return
        self.sig.bind(*((None,) if self.has_self else ()), *args, **kwargs)


_sigs: dict[int, tuple[Any, Signature]] = {}


def signature_of(spec: Any) -> Signature:
    """The :class:`Signature` of a method spec (``oaas_sdk.methods.MethodSpec``), cached."""
    hit = _sigs.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1]
    fn = spec.fn
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = dict(getattr(fn, "__annotations__", {}) or {})
    sig = inspect.signature(fn)
    plist = list(sig.parameters.values())
    has_self = spec.kind != "function" and bool(plist)
    if has_self:
        plist = plist[1:]
    request_param = None
    params = []
    for p in plist:
        if hints.get(p.name) in (ObjectInvocationRequest, InvocationRequest):
            request_param = p.name
            continue
        params.append(p)
    ret = hints.get("return", Any)
    if spec.kind == "getter" and spec.field and spec.owner is not None:
        finfo = spec.owner._oaas_fields.get(spec.field)
        if finfo is not None and ret in (Any, None):
            ret = finfo.annotation
    P = inspect.Parameter
    optional = [p.default is not P.empty or p.kind in (P.VAR_POSITIONAL, P.VAR_KEYWORD)
                for p in params]
    binds_0 = all(optional)
    binds_1 = bool(params) and params[0].kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD,
                                                  P.VAR_POSITIONAL) and all(optional[1:])
    s = Signature(tuple(params), hints, request_param, ret, sig, has_self, binds_0, binds_1)
    _sigs[id(spec)] = (spec, s)
    return s


# -- server side: request payload -> arguments ---------------------------------------------

def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, pydantic.BaseModel)


def _is_bytes_hint(t: Any) -> bool:
    return t in _BYTES


def _bad(msg: str) -> SerializationError:
    return SerializationError(msg)


def decode_args(sig: Signature, payload: bytes, options: dict[str, str],
                where: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The positional and keyword arguments a request payload carries.

    ``where`` names the method in messages (``"Counter.increment()"``). Raises
    :class:`SerializationError` naming the method when the payload cannot be read (bad
    envelope, a model's JSON that does not validate). Conversion of the values to the
    parameters' types is left to the method's own argument conversion, as for a local call.
    """
    mode = options.get(ARGS_OPTION)
    if mode == ENVELOPE:
        return _decode_envelope(sig, payload, where)
    if mode:
        raise _bad(f"{where}: unknown argument encoding {ARGS_OPTION}={mode!r}")
    if not payload or not sig.params:
        return (), {}
    first = sig.params[0]
    hint = sig.hints.get(first.name, Any)
    if first.kind is inspect.Parameter.VAR_KEYWORD:
        value = _json_or_text(payload)
        if not isinstance(value, dict):
            raise _bad(f"{where}: the payload must be a JSON object for **{first.name}")
        return (), value
    if first.kind is inspect.Parameter.KEYWORD_ONLY:
        return (), {first.name: _single(hint, payload, where, first.name)}
    return (_single(hint, payload, where, first.name),), {}


def _single(hint: Any, payload: bytes, where: str, pname: str) -> Any:
    if _is_bytes_hint(hint):
        return bytes(payload)
    if _is_model(hint):
        try:
            return hint.model_validate_json(payload)
        except pydantic.ValidationError as e:
            reason = "; ".join(err["msg"] for err in e.errors())
            raise _bad(f"{where}: parameter {pname!r} cannot take the payload as "
                       f"{hint.__name__}: {reason}") from None
    return _json_or_text(payload)


def _json_or_text(payload: bytes) -> Any:
    try:
        text = payload.decode("utf-8")  # (json.loads of bytes guesses the encoding first)
    except UnicodeDecodeError:
        text = None
    try:
        return json.loads(payload if text is None else text)  # bytes: UTF-16/32 JSON
    except ValueError:
        pass
    except RecursionError:
        raise _bad("the payload's JSON nests too deep") from None
    return bytes(payload) if text is None else text


def _decode_envelope(sig: Signature, payload: bytes,
                     where: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    try:
        env = msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True)
    except Exception as e:  # msgpack raises several types for malformed input
        raise _bad(f"{where}: malformed argument envelope: {e}") from None
    if not (isinstance(env, list) and len(env) == 2 and isinstance(env[0], list)
            and isinstance(env[1], dict)
            and all(isinstance(a, bytes) for a in env[0])
            and all(isinstance(k, str) and isinstance(v, bytes) for k, v in env[1].items())):
        raise _bad(f"{where}: malformed argument envelope: expected "
                   f"[[bin, ...], {{str: bin}}]")
    P = inspect.Parameter
    positional = [p for p in sig.params if p.kind in (P.POSITIONAL_ONLY,
                                                      P.POSITIONAL_OR_KEYWORD)]
    var_pos = next((p for p in sig.params if p.kind is P.VAR_POSITIONAL), None)
    var_kw = next((p for p in sig.params if p.kind is P.VAR_KEYWORD), None)
    by_name = {p.name: p for p in sig.params if p.kind not in (P.VAR_POSITIONAL,
                                                               P.VAR_KEYWORD)}

    def hint_of(p: inspect.Parameter | None) -> Any:
        return Any if p is None else sig.hints.get(p.name, Any)

    args = []
    for i, data in enumerate(env[0]):
        p = positional[i] if i < len(positional) else var_pos
        args.append(_decode_value(data, hint_of(p), where))
    kwargs = {k: _decode_value(v, hint_of(by_name.get(k, var_kw)), where)
              for k, v in env[1].items()}
    return tuple(args), kwargs


def _decode_value(data: bytes, hint: Any, where: str) -> Any:
    """One envelope item: decoded for the parameter's type (so references, models and
    dataclasses come back as such), else as a plain value that the method's argument
    conversion then converts as pydantic's lax mode does."""
    if hint is not Any:
        try:
            return codec.decode(data, hint)
        except (TypeError, SerializationError):
            pass
    try:
        return codec.decode(data)
    except SerializationError as e:
        raise _bad(f"{where}: malformed argument in the envelope: {e}") from None


# -- client side: arguments -> request payload ---------------------------------------------

def _json_plain(v: Any, depth: int = 0) -> bool:
    """Whether JSON carries ``v`` exactly (so the plain convention can be used)."""
    if depth > 32:
        return False
    if v is None or type(v) in _JSON_SCALARS:
        return not (type(v) is float and v != v)  # NaN is not JSON
    if type(v) is list:
        return all(_json_plain(x, depth + 1) for x in v)
    if type(v) is dict:
        return all(type(k) is str and _json_plain(x, depth + 1) for k, x in v.items())
    return False


def encode_args(args: tuple[Any, ...], kwargs: dict[str, Any],
                where: str) -> tuple[bytes, dict[str, str]]:
    """The payload and options of a call with these arguments.

    One positional argument that the plain convention carries exactly (``bytes``, a
    pydantic model, or JSON-able primitives, lists and dicts; not ``None``) is sent as
    such, so any OaaS server understands it; no argument is an empty payload; anything
    else goes in the envelope. Raises ``TypeError`` naming the argument when a value
    cannot be encoded.
    """
    options = {RESULT_OPTION: CODEC}
    if not args and not kwargs:
        return b"", options
    if len(args) == 1 and not kwargs:
        v = args[0]
        if isinstance(v, _BYTES):
            return bytes(v), options
        if isinstance(v, pydantic.BaseModel):
            return v.model_dump_json().encode(), options
        if v is not None and _json_plain(v):
            return json.dumps(v, ensure_ascii=False, separators=(",", ":")).encode(), options
    try:
        enc_args = [codec.encode(a) for a in args]
    except (TypeError, SerializationError) as e:
        raise TypeError(f"{where}: an argument cannot be sent: {e}") from None
    enc_kwargs = {}
    for k, v in kwargs.items():
        try:
            enc_kwargs[k] = codec.encode(v)
        except (TypeError, SerializationError) as e:
            raise TypeError(f"{where}: argument {k!r} cannot be sent: {e}") from None
    options[ARGS_OPTION] = ENVELOPE
    return msgpack.packb([enc_args, enc_kwargs], use_bin_type=True), options


# -- results --------------------------------------------------------------------------------

def _json_fallback(v: Any) -> Any:
    ident = getattr(v, "__oaas_identity__", None)
    if ident is not None:
        cls_id, pid, oid = ident
        return {"cls_id": cls_id, "partition_id": pid, "object_id": oid}
    raise pydantic_core.PydanticSerializationError(
        f"a value of type {type(v).__name__} cannot be encoded as JSON")


def encode_result(value: Any, options: dict[str, str]) -> tuple[bytes, str]:
    """The response payload of a result and its ``oaas-result`` header value.

    Raises :class:`SerializationError` when the value can be encoded neither way."""
    if options.get(RESULT_OPTION) == CODEC and value is not None \
            and not isinstance(value, (str, *_BYTES)):
        try:
            return codec.encode(value), CODEC
        except (TypeError, SerializationError):
            pass  # fall back to the plain convention
    if value is None:
        return b"", "none"
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass"), "str"
    if isinstance(value, _BYTES):
        return bytes(value), "bytes"
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump_json().encode(), "json"
    try:
        return pydantic_core.to_json(value, bytes_mode="base64", fallback=_json_fallback), \
            "json"
    except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as e:
        raise SerializationError(f"the result cannot be encoded: {e}") from None


def decode_result(payload: bytes | None, kind: str | None, returns: Any = Any) -> Any:
    """The value of a response payload. ``kind``: the ``oaas-result`` header (``None``
    when the server sent none: the return hint then decides, else JSON, else text, else
    bytes). ``returns``: the method's return hint when the class is known here.

    Raises :class:`SerializationError` when the payload does not decode."""
    if payload is None:
        return None
    if kind == CODEC:
        try:
            return codec.decode(payload, returns)
        except TypeError:  # a hint the codec does not compile
            return _convert(codec.decode(payload), returns)
    if kind == "none" or (not payload and kind is None):
        return None
    if kind == "str":
        return payload.decode("utf-8", "surrogatepass")
    if kind == "bytes":
        return bytes(payload)
    if kind is None:
        if _is_bytes_hint(returns):
            return bytes(payload)
        if returns is str:
            return payload.decode("utf-8")
        value = _json_or_text(payload)
    else:
        try:
            value = json.loads(payload)
        except ValueError as e:
            raise SerializationError(f"the result is not JSON: {e}") from None
    return _convert(value, returns)


def _convert(value: Any, hint: Any) -> Any:
    if hint is Any or hint is None or hint is inspect.Parameter.empty:
        return value
    try:
        return _adapter(hint).validate_python(value)
    except pydantic.ValidationError:
        return value  # the caller gets what was sent rather than nothing
    except Exception:
        return value


_adapters: dict[Any, pydantic.TypeAdapter[Any]] = {}


def _adapter(hint: Any) -> pydantic.TypeAdapter[Any]:
    ad = _adapters.get(hint)
    if ad is None:
        ad = _adapters[hint] = pydantic.TypeAdapter(
            hint, config=None if _is_model(hint)
            else pydantic.ConfigDict(arbitrary_types_allowed=True))
    return ad
