"""Payload conventions without a server: what the client sends for which arguments, how
results and errors of any OaaS server (with or without oaas-sdk's headers) are read."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import msgpack
import pytest
from pydantic import BaseModel

from oaas_sdk import RemoteError, SerializationError, ValidationError, codec
from oaas_sdk.rpc.client import _error
from oaas_sdk.rpc.payload import decode_result, encode_args, encode_result


class Point(BaseModel):
    x: int
    y: int = 0


@pytest.mark.parametrize("value, payload", [
    (5, b"5"), ("hi", b'"hi"'), ([1, "a", None], b'[1,"a",null]'), ({"k": 1.5}, b'{"k":1.5}'),
    (b"\xff\x00", b"\xff\x00"), (Point(x=1), b'{"x":1,"y":0}'), (True, b"true"),
])
def test_one_plain_argument_uses_the_platform_convention(value: Any, payload: bytes) -> None:
    body, options = encode_args((value,), {}, "f()")
    assert body == payload and "oaas-args" not in options
    assert options["oaas-result"] == "codec"


@pytest.mark.parametrize("args, kwargs", [
    ((1, 2), {}), ((), {"a": 1}), ((None,), {}), (((1, 2),), {}), (({1, 2},), {}),
    ((dt.datetime(2024, 1, 2, 3, 4, 5),), {}), (([b"x"],), {}), (({1: "a"},), {}),
    ((float("nan"),), {}),
])
def test_other_arguments_use_the_envelope(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    body, options = encode_args(args, kwargs, "f()")
    assert options["oaas-args"] == "envelope"
    pos, kw = msgpack.unpackb(body, raw=False)
    decoded = [codec.decode(b) for b in pos]
    assert [type(v) for v in decoded] == [type(v) for v in args]
    assert {k: codec.decode(v) for k, v in kw.items()} == kwargs


def test_unencodable_argument_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="argument 'sock'"):
        encode_args((), {"sock": object()}, "f()")


@pytest.mark.parametrize("value, kind", [
    (None, "none"), ("é", "str"), (b"\x00", "bytes"), (3, "json"), ([1, 2], "json"),
    (Point(x=2), "json"), (dt.date(2024, 1, 2), "json"),
])
def test_plain_results_round_trip(value: Any, kind: str) -> None:
    payload, got_kind = encode_result(value, {})
    assert got_kind == kind
    assert decode_result(payload, kind, type(value) if value is not None else Any) == value


@pytest.mark.parametrize("value", [(1, 2), {1, 2}, dt.datetime(2024, 1, 2, tzinfo=dt.UTC),
                                   10**40, {"a": [b"x"]}])
def test_codec_results_keep_their_types(value: Any) -> None:
    payload, kind = encode_result(value, {"oaas-result": "codec"})
    assert kind == "codec"
    got = decode_result(payload, kind)
    assert got == value and type(got) is type(value)


def test_results_of_a_server_without_headers() -> None:
    """oaas-sdk2-py's server sends no oaas-result header: the return hint decides."""
    assert decode_result(b"hello", None, str) == "hello"
    assert decode_result(b'"hello"', None) == "hello"
    assert decode_result(b"hello", None) == "hello"  # not JSON: the text
    assert decode_result(b"\xff", None) == b"\xff"
    assert decode_result(b"\xff", None, bytes) == b"\xff"
    assert decode_result(b"", None) is None
    assert decode_result(b'{"x": 3}', None, Point) == Point(x=3)
    assert decode_result(b"[1, 2]", None, tuple[int, ...]) == (1, 2)


def test_errors_of_a_server_without_headers() -> None:
    e = _error(2, b"boom", {}, "h:1", "C.f()")
    assert type(e) is RemoteError and str(e) == "boom" and e.status == "APP_ERROR"
    body = json.dumps({"error_type": "SerializationError", "error_message": "bad"}).encode()
    e = _error(2, body, {}, "h:1", "C.f()")
    assert type(e) is SerializationError and str(e) == "bad"


def test_errors_with_headers() -> None:
    e = _error(2, b"no", {"oaas-error-type": "ValueError", "oaas-error-module": "builtins"},
               "h:1", "C.f()")
    assert type(e) is ValueError and str(e) == "no"
    e = _error(2, b"v", {"oaas-error-type": "ValidationError",
                         "oaas-error-module": "oaas_sdk.errors"}, "h:1", "C.f()")
    assert type(e) is ValidationError
    e = _error(2, b"x", {"oaas-error-type": "SystemExit", "oaas-error-module": "builtins"},
               "h:1", "C.f()")
    assert isinstance(e, RemoteError) and type(e).__name__ == "SystemExit"  # not a real exit
    e = _error(2, b"x", {"oaas-error-type": "UnicodeDecodeError",
                         "oaas-error-module": "builtins"}, "h:1", "C.f()")
    assert isinstance(e, RemoteError)  # its constructor wants other arguments
    e = _error(2, b"x", {"oaas-error-type": "not a name", "oaas-error-module": "m"},
               "h:1", "C.f()")
    assert type(e) is RemoteError and e.remote_type == "not a name"
    e = _error(1, b"fn_id 'q' not found", {}, "h:1", "C.q()")
    assert type(e) is RemoteError and e.status == "INVALID_REQUEST"
