"""The OaaS gRPC server, black box: ``HTTP_PORT=<port> python service.py`` in a subprocess
(native on and off), called with a plain grpcio client generated from the package's
``oprc.proto``: statuses, payload conventions, state across calls and restarts, errors,
and the graceful stop on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.conftest import IMPLS, _need_impl
from tests.rpc_support import (
    PlainClient,
    ServiceProcess,
    compile_proto,
    raw_grpc_call,
    write_service,
)

OKAY, INVALID_REQUEST, APP_ERROR = 0, 1, 2


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    return compile_proto(tmp_path_factory.mktemp("proto"))


@pytest.fixture(scope="module", params=IMPLS)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           pb: tuple[Any, Any]) -> Iterator[tuple[ServiceProcess, PlainClient]]:
    """One service process per implementation for the tests that need no restart."""
    _need_impl(request.param)
    d = tmp_path_factory.mktemp(f"svc-{request.param}")
    svc = ServiceProcess(write_service(d), request.param, d / "store",
                         OAAS_RPC_MAX_MESSAGE_BYTES=str(1 << 20)).start()
    client = PlainClient(*pb, svc.target)
    try:
        yield svc, client
    finally:
        client.close()
        rc = svc.terminate()
        assert rc == 0, svc.output


def _json(r: Any) -> Any:
    assert r.status == OKAY, r
    return json.loads(r.payload)


def test_invoke_obj_keeps_state_across_calls(served: Any) -> None:
    _, c = served
    assert _json(c.obj("add", b"5", object_id="100")) == 5
    assert _json(c.obj("add", b"5", object_id="100")) == 10  # not from the default again
    assert _json(c.obj("add", b"", object_id="100")) == 11  # empty payload: the default
    assert _json(c.obj("get_count", object_id="100")) == 11
    assert _json(c.obj("get_history", object_id="100")) == ["+5", "+5", "+1"]
    # another object, string id, is independent
    assert _json(c.obj("add", b"2", object_id="alice")) == 2
    assert _json(c.obj("get_count", object_id="100")) == 11


def test_invoke_fn(served: Any) -> None:
    _, c = served
    r = c.fn("version")
    assert (r.status, r.payload, r.headers["oaas-result"]) == (OKAY, b"1.0", "str")
    assert _json(c.fn("add_numbers", b"40")) == 42
    # a stateless method through InvokeFn runs on a transient object
    assert c.fn("hello", b'"fn"').payload == b"hello fn"
    # a stateful method needs an object
    r = c.fn("add", b"1")
    assert r.status == INVALID_REQUEST and b"InvokeObj" in r.payload


def test_methods_run_in_a_task(served: Any) -> None:
    """A served method runs inside an asyncio task, as a local call does: asyncio.timeout,
    wait_for and current_task() work, whether the method suspends or not."""
    _, c = served
    assert _json(c.obj("add_in_task", b"1", object_id="640")) is True
    assert _json(c.obj("add_in_task", b"2", object_id="640")) is True
    assert _json(c.obj("get_count", object_id="640")) == 3


def test_result_conventions(served: Any) -> None:
    _, c = served
    r = c.obj("hello", b'"bob"')
    assert (r.payload, r.headers["oaas-result"]) == (b"hello bob", "str")  # raw UTF-8
    assert c.obj("hello", b"bob").payload == b"hello bob"  # non-JSON text taken as is
    r = c.obj("echo", b"\xff\x00\x01")
    assert (r.payload, r.headers["oaas-result"]) == (b"\xff\x00\x01", "bytes")
    r = c.obj("nothing")
    assert r.status == OKAY and r.payload == b"" and r.headers["oaas-result"] == "none"
    r = c.obj("put", b'{"name": "n", "qty": 2}', object_id="7")
    assert _json(r) == {"name": "n", "qty": 2}  # a pydantic model as its JSON


def test_request_parameter_gets_the_invocation(served: Any) -> None:
    _, c = served
    got = _json(c.obj("who", b"raw body", object_id="55", options={"k": "v"}))
    assert got == {"object_id": "55", "fn_id": "who", "payload": "raw body",
                   "options": {"k": "v"}}


def test_legacy_numeric_object_id_field(served: Any) -> None:
    _, c = served
    pb2 = c.pb2
    raw = pb2.ObjectInvocationRequest(cls_id="example.Counter", fn_id="add", payload=b"3")
    # field 2 (uint64) of older platform versions, by its wire bytes
    data = raw.SerializeToString() + b"\x10\xd2\x09"  # field 2 varint 1234
    call = c.channel.unary_unary("/oprc.OprcFunction/InvokeObj")
    r = pb2.InvocationResponse.FromString(call(data, timeout=30))
    assert r.status == OKAY and json.loads(r.payload) == 3
    assert _json(c.obj("get_count", object_id="1234")) == 3


def test_app_error_writes_nothing_and_server_keeps_serving(served: Any) -> None:
    _, c = served
    assert _json(c.obj("add", b"4", object_id="300")) == 4
    r = c.obj("boom", b'"kaput"', object_id="300")
    assert r.status == APP_ERROR
    assert r.payload == b"kaput"  # the exception's message as UTF-8
    assert r.headers["oaas-error-type"] == "ValueError"
    assert _json(c.obj("get_count", object_id="300")) == 4  # rolled back
    assert _json(c.obj("get_history", object_id="300")) == ["+4"]
    # KeyError's message is its argument, not its repr
    r = c.obj("missing", b'"zz"', object_id="300")
    assert (r.status, r.payload, r.headers["oaas-error-type"]) == (APP_ERROR, b"zz", "KeyError")


def test_failed_call_on_new_id_creates_nothing(served: Any) -> None:
    _, c = served
    assert c.obj("boom", b'"x"', object_id="301").status == APP_ERROR
    assert c.obj("get_count", object_id="302").status == OKAY  # a read creates nothing
    assert c.obj("hello", b'"x"', object_id="303").status == OKAY
    # a method's timeout applies as in a local call
    r = c.obj("slow", object_id="304")
    assert r.status == APP_ERROR and r.headers["oaas-error-type"] == "TimeoutError"


def test_invalid_request(served: Any) -> None:
    _, c = served
    r = c.obj("add", b"1", cls_id="example.Nope")
    assert (r.status, r.payload) == (INVALID_REQUEST, b"cls_id 'example.Nope' not found")
    r = c.obj("nope", b"1")
    assert (r.status, r.payload) == (INVALID_REQUEST, b"fn_id 'nope' not found")
    r = c.fn("nope")
    assert (r.status, r.payload) == (INVALID_REQUEST, b"fn_id 'nope' not found")
    r = c.obj("add", b"1", object_id=None)
    assert r.status == INVALID_REQUEST and b"object_id" in r.payload
    r = c.obj("add", b"1", object_id="Not Valid!")
    assert r.status == INVALID_REQUEST and b"object_id" in r.payload


def test_unconvertible_payload(served: Any) -> None:
    _, c = served
    for fn, payload in [("add", b'"xyz"'), ("add", b"[1, 2]"), ("put", b'{"nme": 1}'),
                        ("put", b"not json"), ("set_count", b'"many"'),
                        ("add", b"[" * 100_000 + b"]" * 100_000)]:  # nesting too deep
        r = c.obj(fn, payload, object_id="400")
        assert r.status == APP_ERROR, (fn, payload, r)
        body = json.loads(r.payload)
        assert body["error_type"] == "SerializationError", body
        assert body["error_message"], body
        assert r.headers["oaas-error"] == "json"
    assert _json(c.obj("get_count", object_id="400")) == 0
    # an envelope that is not one
    r = c.obj("add", b"\xc1garbage", object_id="400", options={"oaas-args": "envelope"})
    assert r.status == APP_ERROR and json.loads(r.payload)["error_type"] == \
        "SerializationError"
    # a missing required argument
    r = c.obj("combine", b"", object_id="400")
    assert r.status == APP_ERROR and "a" in json.loads(r.payload)["error_message"]


def test_oversized_and_malformed_messages(served: Any) -> None:
    svc, c = served
    # 1 MiB limit in this service (OAAS_RPC_MAX_MESSAGE_BYTES)
    with pytest.raises(grpc.RpcError) as ei:
        c.obj("size", b"x" * (2 << 20))
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _json(c.obj("size", b"x" * (512 << 10))) == 512 << 10
    call = c.channel.unary_unary("/oprc.OprcFunction/InvokeObj")
    for bad in (b"\xff\xff\xff", b"\x1a\x10abc", b"\x0a"):
        with pytest.raises(grpc.RpcError) as ei:
            call(bad, timeout=30)
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _json(c.obj("add", b"1", object_id="500")) == 1  # still serving
    assert svc.proc.poll() is None


def test_grpc_health_check(served: Any) -> None:
    """The standard grpc.health.v1 Check, by its wire bytes (no generated code)."""
    _, c = served
    check = c.channel.unary_unary("/grpc.health.v1.Health/Check")
    assert check(b"", timeout=30) == b"\x08\x01"  # service "": SERVING
    name = b"oprc.OprcFunction"
    assert check(b"\x0a" + bytes([len(name)]) + name, timeout=30) == b"\x08\x01"
    with pytest.raises(grpc.RpcError) as ei:
        check(b"\x0a\x05other", timeout=30)
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND


def test_calls_on_one_object_take_turns(served: Any) -> None:
    """Concurrent calls on one object run one at a time: no update is lost."""
    _, c = served
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(10):
                assert c.obj("add", b"1", object_id="600").status == OKAY
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert _json(c.obj("get_count", object_id="600")) == 40


# What a client sees when its deadline passes: DEADLINE_EXCEEDED, from its own timer or
# the server's (test_server_answers_deadline_exceeded tells them apart).
_PAST_DEADLINE = (grpc.StatusCode.DEADLINE_EXCEEDED,)


def _envelope(c: PlainClient, fn: str, object_id: str, *args: Any) -> Any:
    import msgpack

    from oaas_sdk import codec

    req = c.pb2.ObjectInvocationRequest(cls_id="example.Counter", fn_id=fn,
                                        object_id=object_id)
    req.payload = msgpack.packb([[codec.encode(a) for a in args], {}])
    req.options["oaas-args"] = "envelope"
    return req


def _wait_for_file(path: Path, svc: ServiceProcess) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        assert svc.proc is not None and svc.proc.poll() is None, "the service exited"
        time.sleep(0.01)


def test_client_gone_mid_call_cancels_it(served: Any, tmp_path: Path) -> None:
    """A client that goes away while the method runs: the method is cancelled where it
    waits, its changes roll back, nothing is committed, and the server keeps serving
    (grpcio's behaviour, and the native server's)."""
    svc, c = served
    started, release = tmp_path / "started", tmp_path / "release"
    fut = c.stub.InvokeObj.future(
        _envelope(c, "gated_add", "700", str(started), str(release), 5), timeout=60)
    _wait_for_file(started, svc)  # the call is running in the server (5 added)
    fut.cancel()  # the client goes away (RST_STREAM)
    assert fut.cancelled()
    _wait_for_file(Path(f"{started}.cancelled"), svc)  # cancelled where it waited
    release.touch()
    assert _json(c.obj("add", b"1", object_id="701")) == 1  # still serving
    assert _json(c.obj("add", b"1", object_id="700")) == 1  # the 5 rolled back
    assert _json(c.obj("get_history", object_id="700")) == ["+1"]
    assert svc.proc.poll() is None


def test_call_past_its_deadline_mid_call_is_cancelled(served: Any, tmp_path: Path) -> None:
    """A deadline that passes while the method runs cancels it as a client going away."""
    svc, c = served
    started, release = tmp_path / "started", tmp_path / "release"
    with pytest.raises(grpc.RpcError) as ei:
        c.stub.InvokeObj(_envelope(c, "gated_add", "720", str(started), str(release), 5),
                         timeout=1.0)
    assert ei.value.code() in _PAST_DEADLINE
    _wait_for_file(Path(f"{started}.cancelled"), svc)
    release.touch()
    assert _json(c.obj("get_count", object_id="720")) == 0  # nothing committed


def test_server_answers_deadline_exceeded(served: Any, tmp_path: Path) -> None:
    """A call whose deadline (``grpc-timeout``) passes: the server itself answers
    DEADLINE_EXCEEDED, as gRPC servers do (the native server's tonic answered CANCELLED
    "Timeout expired"). The client here sends the deadline but keeps no timer of its own,
    so the status is the server's. The method is cancelled and nothing is committed."""
    import msgpack

    from oaas_sdk import codec

    svc, c = served
    started, release = tmp_path / "started", tmp_path / "release"
    req = c.pb2.ObjectInvocationRequest(cls_id="example.Counter", fn_id="gated_add",
                                        object_id="740")
    req.payload = msgpack.packb([[codec.encode(a) for a in
                                  (str(started), str(release), 5)], {}])
    req.options["oaas-args"] = "envelope"
    t0 = time.monotonic()
    status, message = raw_grpc_call(svc.target, "/oprc.OprcFunction/InvokeObj",
                                    req.SerializeToString(), {"grpc-timeout": "700m"})
    elapsed = time.monotonic() - t0
    assert status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0], (status, message)
    assert 0.5 < elapsed < 20
    _wait_for_file(Path(f"{started}.cancelled"), svc)  # cancelled where it waited
    release.touch()
    assert _json(c.obj("get_count", object_id="740")) == 0  # nothing committed
    # a call within its deadline is answered as usual
    status, _ = raw_grpc_call(svc.target, "/oprc.OprcFunction/InvokeObj",
                              c.pb2.ObjectInvocationRequest(
                                  cls_id="example.Counter", fn_id="add", payload=b"2",
                                  object_id="741").SerializeToString(),
                              {"grpc-timeout": "20S"})
    assert status == 0
    assert _json(c.obj("get_count", object_id="741")) == 2


def test_calls_gone_before_they_ran_never_run(served: Any, tmp_path: Path) -> None:
    """Calls whose deadline passed or whose client went away while they waited (the
    server's loop busy with another call, or the object's turn held) do not run."""
    svc, c = served
    started, release = tmp_path / "started", tmp_path / "release"
    started2, release2 = tmp_path / "started2", tmp_path / "release2"
    try:
        # `block` holds the server's event loop until `release` exists and no other call
        # is in flight there any more (the server dropped the two below)
        blocker = c.stub.InvokeObj.future(
            _envelope(c, "block", "730", str(started), str(release)), timeout=60)
        _wait_for_file(started, svc)
        late = c.stub.InvokeObj.future(c.pb2.ObjectInvocationRequest(
            cls_id="example.Counter", fn_id="add", payload=b"7", object_id="731"),
            timeout=0.3)
        gone = c.stub.InvokeObj.future(c.pb2.ObjectInvocationRequest(
            cls_id="example.Counter", fn_id="add", payload=b"9", object_id="732"),
            timeout=60)
        with pytest.raises(grpc.RpcError) as ei:
            late.result(timeout=30)
        assert ei.value.code() in _PAST_DEADLINE
        gone.cancel()
        release.touch()
        assert blocker.result(timeout=60).status == OKAY
        # a call waiting for the object's turn, then past its deadline
        holder = c.stub.InvokeObj.future(
            _envelope(c, "gated_add", "733", str(started2), str(release2), 1), timeout=60)
        _wait_for_file(started2, svc)
        waiting = c.stub.InvokeObj.future(c.pb2.ObjectInvocationRequest(
            cls_id="example.Counter", fn_id="add", payload=b"100", object_id="733"),
            timeout=0.5)
        with pytest.raises(grpc.RpcError) as ei:
            waiting.result(timeout=30)
        assert ei.value.code() in _PAST_DEADLINE
        release2.touch()
        assert json.loads(holder.result(timeout=60).payload) == 1
    finally:
        release.touch()
        release2.touch()
    assert _json(c.obj("get_count", object_id="731")) == 0
    assert _json(c.obj("get_count", object_id="732")) == 0
    assert _json(c.obj("get_count", object_id="733")) == 1  # the 100 never ran
    assert svc.proc.poll() is None


@pytest.mark.parametrize("impl", IMPLS)
def test_state_survives_sigterm_and_restart(impl: str, tmp_path: Path,
                                            pb: tuple[Any, Any]) -> None:
    _need_impl(impl)
    script = write_service(tmp_path)
    svc = ServiceProcess(script, impl, tmp_path / "store").start()
    c = PlainClient(*pb, svc.target)
    try:
        assert _json(c.obj("add", b"5", object_id="42")) == 5
        assert _json(c.obj("add", b"5", object_id="42")) == 10
    finally:
        c.close()
    assert svc.terminate(signal.SIGTERM) == 0, svc.output
    # the native server runs with the native implementation, grpcio's otherwise
    assert f"oaas-sdk: serving 1 class (oprc.OprcFunction) on 127.0.0.1:{svc.port} " \
        f"({impl} server)" in svc.output

    svc = ServiceProcess(script, impl, tmp_path / "store").start()
    c = PlainClient(*pb, svc.target)
    try:
        assert _json(c.obj("add", b"1", object_id="42")) == 11
        assert _json(c.obj("get_history", object_id="42")) == ["+5", "+5", "+1"]
    finally:
        c.close()
    assert svc.terminate(signal.SIGINT) == 0, svc.output


@pytest.mark.parametrize("impl", IMPLS)
def test_sigterm_commits_what_auto_commit_left(impl: str, tmp_path: Path,
                                              pb: tuple[Any, Any]) -> None:
    """AUTO_COMMIT=false (oaas-sdk2-py's environment name): changes stay in the live
    objects and are committed when the server stops."""
    _need_impl(impl)
    script = write_service(tmp_path)
    svc = ServiceProcess(script, impl, tmp_path / "store", AUTO_COMMIT="false").start()
    c = PlainClient(*pb, svc.target)
    try:
        assert _json(c.obj("add", b"5", object_id="8")) == 5
        assert _json(c.obj("add", b"5", object_id="8")) == 10
    finally:
        c.close()
    assert svc.terminate() == 0, svc.output
    svc = ServiceProcess(script, impl, tmp_path / "store").start()
    c = PlainClient(*pb, svc.target)
    try:
        assert _json(c.obj("get_count", object_id="8")) == 10
    finally:
        c.close()
        assert svc.terminate() == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_sync_durability_response_after_commit(impl: str, tmp_path: Path,
                                               pb: tuple[Any, Any]) -> None:
    """With durability="sync" a response means the state is durable: a SIGKILL right
    after it loses nothing."""
    _need_impl(impl)
    script = write_service(tmp_path)
    svc = ServiceProcess(script, impl, tmp_path / "store", OAAS_DURABILITY="sync").start()
    c = PlainClient(*pb, svc.target)
    try:
        assert _json(c.obj("add", b"7", object_id="9")) == 7
    finally:
        c.close()
    svc.kill()
    svc = ServiceProcess(script, impl, tmp_path / "store").start()
    c = PlainClient(*pb, svc.target)
    try:
        assert _json(c.obj("get_count", object_id="9")) == 7
    finally:
        c.close()
        svc.terminate()


@pytest.mark.parametrize("impl", IMPLS)
def test_sigterm_lets_calls_in_flight_finish(impl: str, tmp_path: Path,
                                             pb: tuple[Any, Any]) -> None:
    _need_impl(impl)
    script = write_service(tmp_path)
    svc = ServiceProcess(script, impl, tmp_path / "store",
                         OAAS_DURABILITY="async").start()
    c = PlainClient(*pb, svc.target)
    started, release = tmp_path / "started", tmp_path / "release"
    req = c.pb2.ObjectInvocationRequest(cls_id="example.Counter", fn_id="gated_add",
                                        object_id="77")
    import msgpack

    from oaas_sdk import codec

    req.payload = msgpack.packb([[codec.encode(str(started)), codec.encode(str(release)),
                                  codec.encode(3)], {}])
    req.options["oaas-args"] = "envelope"
    fut = c.stub.InvokeObj.future(req, timeout=60)
    deadline = time.monotonic() + 60
    while not started.exists():  # the call is running in the server
        assert time.monotonic() < deadline and svc.proc is not None \
            and svc.proc.poll() is None
        time.sleep(0.01)
    assert svc.proc is not None
    svc.proc.send_signal(signal.SIGTERM)
    release.touch()
    r = fut.result(timeout=60)
    assert r.status == OKAY and json.loads(r.payload) == 3
    assert svc.proc.wait(timeout=60) == 0
    c.close()
    svc = ServiceProcess(script, impl, tmp_path / "store").start()
    c = PlainClient(*pb, svc.target)
    try:
        assert _json(c.obj("get_count", object_id="77")) == 3  # flushed at exit
    finally:
        c.close()
        svc.terminate()


def test_gen_writes_the_package_description(tmp_path: Path) -> None:
    import yaml

    script = write_service(tmp_path)
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent), "PATH": "/usr/bin"}
    out = subprocess.run([sys.executable, str(script), "gen"], env=env, cwd=tmp_path,
                         capture_output=True, timeout=120, check=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert len(docs) == 1
    pkg = docs[0]
    assert pkg["name"] == "example"
    cls = pkg["classes"][0]
    assert cls["key"] == "Counter"
    bindings = {b["name"]: b for b in cls["function_bindings"]}
    assert {"add", "version", "get_count"} <= set(bindings)
    assert bindings["add"]["function_key"] == "Counter.add"
    assert bindings["add"]["parameters"] == ["amount: int"]
    assert bindings["add"]["immutable"] is False and bindings["hello"]["immutable"] is True
    assert {f["key"] for f in pkg["functions"]} >= {"Counter.add", "Counter.version"}
    assert pkg["deployments"][0]["class_key"] == "Counter"
    subprocess.run([sys.executable, str(script), "gen", "--format", "json", "--out",
                    str(tmp_path / "pkg.json")], env=env, cwd=tmp_path, timeout=120,
                   check=True, capture_output=True)
    assert json.loads((tmp_path / "pkg.json").read_text()) == pkg
    bad = subprocess.run([sys.executable, str(script), "gen", "--format", "xml"], env=env,
                         cwd=tmp_path, capture_output=True, timeout=120)
    assert bad.returncode == 2 and b"--format" in bad.stderr


_THREADS_SCRIPT = '''
import json, os
from oaas_sdk import oaas, OaasConfig
oaas.configure(OaasConfig(native="on", mock_mode=True, server_host="127.0.0.1"))
try:
    oaas.start_server(port=0)
except Exception as e:
    print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
    raise SystemExit(0)
info = oaas.get_server_info()


def named():  # threads name themselves once they run: wait (bounded) for them
    return [open(f"/proc/self/task/{t}/comm").read().strip()
            for t in os.listdir("/proc/self/task")].count("oaas-rpc")


import time
deadline = time.monotonic() + 30
while named() < info["io_threads"] and time.monotonic() < deadline:
    time.sleep(0.01)
n = named()
oaas.stop_server(grace=0)
print(json.dumps({"io_threads": info["io_threads"], "named": n}))
'''


@pytest.mark.parametrize("threads", [None, "1", "3", "0", "lots"])
def test_rpc_threads_sets_the_native_servers_io_threads(threads: str | None,
                                                         tmp_path: Path) -> None:
    """``OAAS_RPC_THREADS``: the native server's tokio I/O threads (default 2), as
    ``get_server_info()["io_threads"]`` says and the process's threads show; a value
    out of 1..64 is a ConfigError naming it."""
    _need_impl("native")
    script = tmp_path / "threads.py"
    script.write_text(_THREADS_SCRIPT)
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OAAS_")}
    if threads is not None:
        env["OAAS_RPC_THREADS"] = threads
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    if threads in ("0", "lots"):
        assert got["error"].startswith("ConfigError") and "OAAS_RPC_THREADS" in got["error"]
    else:
        n = 2 if threads is None else int(threads)
        assert got == {"io_threads": n, "named": n}
