"""oaas-sdk's own RPC client: ``ObjectRef`` calls routed to a service in another process
(native on and off on both sides), several positional and keyword arguments with defaults,
exact result types, remote exceptions re-raised; the in-process server of
``oaas.start_server()``; routes and the environment names of the configuration."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oaas_sdk import (
    OaasConfig,
    RemoteError,
    ServerError,
    ValidationError,
    oaas,
    ref,
)
from oaas_sdk.rpc import client as rpc_client
from tests.conftest import IMPLS, _need_impl
from tests.rpc_support import ServiceProcess, free_port, wait_ready, write_service

PKG = "rpcclient"


@pytest.fixture(scope="module", params=IMPLS)
def remote(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    _need_impl(request.param)
    d = tmp_path_factory.mktemp(f"remote-{request.param}")
    svc = ServiceProcess(write_service(d, PKG, "rpcclient_service.py"), request.param,
                         d / "store", OAAS_RPC_MAX_MESSAGE_BYTES=str(1 << 20)).start()
    try:
        yield svc
    finally:
        rc = svc.terminate()
        assert rc == 0, svc.output


class Routed:
    def __init__(self, target: str, base: int) -> None:
        self.target = target
        self.base = base  # object ids of this test run: the remote store is shared

    def ref(self, n: int) -> Any:
        return ref(f"{PKG}.Counter", self.base + n)


@pytest.fixture
def routed(remote: ServiceProcess, impl: str) -> Iterator[Routed]:
    """This process (implementation ``impl``) routes the package to the remote service."""
    oaas.configure(OaasConfig(mock_mode=True, native="on" if impl == "native" else "off",
                              routes={f"{PKG}.*": remote.target}))
    yield Routed(remote.target, 0 if impl == "python" else 100_000)
    oaas.configure(OaasConfig(mock_mode=True, native="off"))


async def test_calls_with_positional_keyword_and_default_arguments(routed: Routed) -> None:
    r = routed.ref(1001)
    assert await r.add(3) == 3
    assert await r.add() == 4  # default
    assert await r.combine(1, 2, 3, 4, scale=2.0, tag="z") == \
        {"sum": 20.0, "tag": "z", "rest": [3, 4]}
    assert await r.combine(1) == {"sum": 11.0, "tag": "t", "rest": []}
    assert await r.combine(a=5, tag="kw") == {"sum": 15.0, "tag": "kw", "rest": []}
    assert await r.get_history() == ["+3", "+1", "z", "t", "kw"]
    assert await r.get_count() == 4


async def test_result_and_argument_types_round_trip(routed: Routed) -> None:
    r = routed.ref(1002)
    assert await r.hello("x") == "hello x"
    assert await r.echo(b"\xff\x00") == b"\xff\x00"
    assert await r.nothing() is None
    assert await r.put({"name": "a"}) == {"name": "a", "qty": 1}
    got = await r.when((1, "a"), {3, 4})
    assert got == ((1, "a"), {3, 4}) and isinstance(got[0], tuple)
    assert await r.version() == "1.0"  # a class-level function
    assert await r.set_count(7) == 7
    assert await r.get_count() == 7
    assert await r.add(10**30) == 10**30 + 7  # beyond 64 bits


async def test_references_as_arguments(routed: Routed) -> None:
    """An ObjectRef argument arrives as the live object of the parameter's class."""
    src, dst = routed.ref(2000), routed.ref(2001)
    assert await src.add(6) == 6
    assert await dst.absorb(src) == 6
    assert await dst.absorb(src, factor=2) == 18


async def test_remote_exceptions_are_reraised(routed: Routed) -> None:
    r = routed.ref(1003)
    await r.add(2)
    with pytest.raises(ValueError, match="^kaput$"):
        await r.boom("kaput")
    with pytest.raises(KeyError) as ki:
        await r.missing("zz")
    assert ki.value.args == ("zz",)
    with pytest.raises(RemoteError) as ei:
        await r.custom()
    assert type(ei.value).__name__ == "Custom" and str(ei.value) == "custom failure"
    assert ei.value.remote_type == "Custom" and ei.value.status == "APP_ERROR"
    with pytest.raises(ValidationError, match="amount"):
        await r.add("xyz")  # conversion fails on the server: the local error type
    with pytest.raises(TimeoutError):
        await r.slow()
    with pytest.raises(RemoteError) as ei:
        await r.nope()
    assert ei.value.status == "INVALID_REQUEST" and "fn_id 'nope' not found" in str(ei.value)
    assert await r.get_count() == 2  # nothing written by the failures


async def test_message_size_limit(routed: Routed) -> None:
    r = routed.ref(1004)
    assert await r.size(b"x" * (256 << 10)) == 256 << 10
    with pytest.raises(RemoteError) as ei:
        await r.size(b"x" * (2 << 20))  # over the server's 1 MiB
    assert ei.value.status == "RESOURCE_EXHAUSTED"
    oaas.configure(OaasConfig(mock_mode=True, routes={f"{PKG}.*": routed.target},
                              rpc_max_message_bytes=64 << 10))
    with pytest.raises(RemoteError) as ei:
        await routed.ref(1004).size(b"x" * (128 << 10))  # over ours
    assert ei.value.status == "RESOURCE_EXHAUSTED"


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Any]:
    """The service module imported here too (its class registered in this process), and
    unregistered after the test."""
    from oaas_sdk.object import _CLASSES

    name = "rpcclient_mirror"
    path = write_service(tmp_path, PKG, f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(name, None)
        _CLASSES.pop(f"{PKG}.Counter", None)


async def test_class_known_here_uses_its_types_and_options(routed: Routed, mirror: Any) -> None:
    """The class is also defined in this process: a route sends its calls to the remote
    process anyway, results take the declared types, options apply."""
    mod = mirror
    r = mod.Counter.create(obj_id=routed.base + 1005).as_ref()
    item = await r.put(mod.Item(name="n", qty=2))
    assert isinstance(item, mod.Item) and item == mod.Item(name="n", qty=2)
    assert await r.add(5) == 5
    assert mod.Counter.load(routed.base + 1005).count == 0  # ran remotely, not on the local object
    assert await r.add_numbers(1) == 3  # a function: InvokeFn, default applied remotely
    with pytest.raises(AttributeError):
        r.not_a_method  # noqa: B018
    with pytest.raises(TimeoutError):
        await r.slow()  # deadline from the method's timeout (0.2 s)


async def test_unavailable_is_retried_then_raised() -> None:
    port = free_port()  # nothing listens there
    oaas.configure(OaasConfig(mock_mode=True, native="off"))
    t0 = time.monotonic()
    with pytest.raises(RemoteError) as ei:
        await rpc_client.invoke(f"127.0.0.1:{port}", "x.Y", "f", (1,), object_id=1,
                                retry_count=2, retry_delay=0.1, timeout=20)
    assert ei.value.status == "UNAVAILABLE"
    assert time.monotonic() - t0 >= 0.2  # two waits before giving up


def test_no_route_and_no_class_is_not_found() -> None:
    oaas.configure(OaasConfig(mock_mode=True, native="off"))
    with pytest.raises(KeyError, match="routes"):
        ref("nowhere.Thing", 1).anything  # noqa: B018


# -- the in-process server ----------------------------------------------------------------

@pytest.fixture
def local_server(sdk: Any) -> Iterator[int]:
    """oaas.start_server() in this process (a background thread), port picked free."""
    oaas.configure(sdk.config(server_host="127.0.0.1"))
    oaas.start_server(port=0)
    try:
        info = oaas.get_server_info()
        assert info["running"] and info["port"]
        assert info["implementation"] == sdk.impl  # the native server with native on
        wait_ready(f"127.0.0.1:{info['port']}")
        yield int(info["port"])
    finally:
        oaas.stop_server()
    assert not oaas.is_server_running() and oaas.get_server_info()["port"] is None


def test_start_server_serves_this_process(local_server: int) -> None:
    from tests.models import Counter

    with pytest.raises(ServerError, match="already running"):
        oaas.start_server(port=0)
    target = f"127.0.0.1:{local_server}"

    async def calls() -> tuple[int, int]:
        oaas.config.routes = {"test.Counter": target}
        try:
            r = ref("test.Counter", 31)
            return await r.increment(2), await r.add_many(1, c=10)
        finally:
            oaas.config.routes = {}
            await rpc_client.close_channels()

    assert asyncio.run(calls()) == (2, 15)
    assert Counter.load(31).count == 15  # the server ran it in this process's runtime
    oaas.restart_server()  # same port again
    assert oaas.get_server_info()["port"] == local_server
    wait_ready(target)


async def test_start_server_from_a_coroutine(sdk: Any) -> None:
    oaas.configure(sdk.config(server_host="127.0.0.1"))
    oaas.start_server(port=0)  # on the running loop
    try:
        port = oaas.get_server_info()["port"]
        oaas.config.routes = {"test.Counter": f"127.0.0.1:{port}"}
        assert await ref("test.Counter", 32).increment(4) == 4
    finally:
        oaas.config.routes = {}
        await rpc_client.close_channels()
        stopping = oaas.stop_server()
        assert stopping is not None
        await stopping


def test_start_server_on_a_given_loop(sdk: Any) -> None:
    """oaas-sdk2-py's pattern: start_server(loop=loop), then the caller runs the loop."""
    oaas.configure(sdk.config(server_host="127.0.0.1"))
    loop = asyncio.new_event_loop()
    try:
        oaas.start_server(port=0, loop=loop)
        port = oaas.get_server_info()["port"]

        async def call() -> int:
            oaas.config.routes = {"test.Counter": f"127.0.0.1:{port}"}
            try:
                return int(await ref("test.Counter", 33).increment(6))
            finally:
                oaas.config.routes = {}
                await rpc_client.close_channels()

        assert loop.run_until_complete(call()) == 6
        oaas.stop_server()  # the loop is not running: runs the stop to its end
        assert not oaas.is_server_running()
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def test_start_server_on_a_busy_port_fails(sdk: Any) -> None:
    import socket

    oaas.configure(sdk.config(server_host="127.0.0.1"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(ServerError):
            oaas.start_server(port=s.getsockname()[1])
    assert not oaas.is_server_running()


# -- configuration from the environment ----------------------------------------------------

def test_environment_names_of_oaas_sdk2_py_and_the_platform(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("OAAS_MOCK_MODE", "OAAS_HTTP_PORT", "OAAS_AUTO_COMMIT",
              "OAAS_OPRC_PARTITION_DEFAULT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HTTP_PORT", "9123")
    monkeypatch.setenv("MOCK_MODE", "true")
    monkeypatch.setenv("AUTO_COMMIT", "false")
    monkeypatch.setenv("OPRC_PARTITION_DEFAULT", "3")
    c = OaasConfig()
    assert (c.http_port, c.mock_mode, c.auto_commit, c.oprc_partition_default) == \
        (9123, True, False, 3)
    monkeypatch.setenv("OAAS_HTTP_PORT", "9200")  # OAAS_* wins
    monkeypatch.setenv("OAAS_MOCK_MODE", "false")
    c = OaasConfig()
    assert (c.http_port, c.mock_mode) == (9200, False)
    assert OaasConfig(http_port=1).http_port == 1  # code wins over both


def test_routes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from oaas_sdk import ConfigError

    monkeypatch.setenv("OAAS_ROUTES", '{"a.B": "h1:1", "a.*": "h2:2", "*": "h3:3"}')
    c = OaasConfig()
    assert c.route_for("a.B") == "h1:1"
    assert c.route_for("a.C") == "h2:2"
    assert c.route_for("b.C") == "h3:3"
    assert c.route_for("b.C", served_here=True) is None
    assert OaasConfig(routes={"x.Y": "grpc://h:5/"}).routes["x.Y"] == "h:5"
    monkeypatch.setenv("OAAS_ROUTES", '{"a.B": "no-port"}')
    with pytest.raises(ConfigError, match="routes"):
        OaasConfig()
