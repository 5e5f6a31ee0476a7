"""Helpers of the RPC tests: a service module run in a subprocess, and a plain grpcio client
built from ``oaas_sdk/rpc/oprc.proto`` with grpc_tools (nothing of oaas-sdk's client)."""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "oaas_sdk" / "rpc" / "oprc.proto"

SERVICE_SOURCE = '''
import asyncio
from typing import Optional
from pydantic import BaseModel
from oaas_sdk import oaas, OaasObject, ObjectInvocationRequest


class Item(BaseModel):
    name: str
    qty: int = 1


class Custom(Exception):
    pass


@oaas.service("Counter", package="example")
class Counter(OaasObject):
    count: int = 0
    history: list[str] = []

    @oaas.method()
    async def add(self, amount: int = 1) -> int:
        self.count += amount
        self.history.append(f"+{amount}")
        return self.count

    @oaas.method()
    async def combine(self, a: int, b: int = 10, *rest: int, scale: float = 1.0,
                      tag: str = "t") -> dict:
        self.history.append(tag)
        return {"sum": (a + b + sum(rest)) * scale, "tag": tag, "rest": list(rest)}

    @oaas.method()
    async def boom(self, msg: str) -> None:
        self.count = 999
        self.history.append("boom")
        raise ValueError(msg)

    @oaas.method()
    async def custom(self) -> None:
        raise Custom("custom failure")

    @oaas.method()
    async def missing(self, key: str) -> int:
        return {"a": 1}[key]

    @oaas.method()
    def put(self, item: Item) -> Item:
        self.history.append(item.name)
        return item

    @oaas.method()
    async def when(self, stamps: tuple, tags: set) -> tuple:
        return (stamps, tags)

    @oaas.method()
    async def absorb(self, other: "Counter", factor: int = 1) -> int:
        self.count += other.count * factor
        return self.count

    @oaas.method(stateless=True)
    async def echo(self, data: bytes) -> bytes:
        return data

    @oaas.method(stateless=True)
    async def hello(self, name: str) -> str:
        return f"hello {name}"

    @oaas.method(stateless=True)
    async def nothing(self) -> None:
        return None

    @oaas.method(stateless=True)
    async def size(self, data: bytes) -> int:
        return len(data)

    @oaas.method()
    async def who(self, req: ObjectInvocationRequest) -> dict:
        return {"object_id": req.object_id, "fn_id": req.fn_id, "payload": req.payload.decode(),
                "options": req.options}

    @oaas.method()
    async def add_in_task(self, amount: int) -> bool:
        # asyncio APIs that need a current task, in a method that never suspends and in
        # one that does
        async with asyncio.timeout(5):
            self.count += amount
        if amount > 1:
            await asyncio.wait_for(asyncio.sleep(0.001), 5)
        return asyncio.current_task() is not None

    @oaas.method(stateless=True, timeout=0.2)
    async def slow(self) -> str:
        await asyncio.sleep(30)
        return "late"

    @oaas.method()
    async def gated_add(self, started: str, release: str, amount: int) -> int:
        """Adds `amount` at once, creates the file `started`, waits (60 s at most) for the
        file `release`; creates `started + ".cancelled"` if cancelled meanwhile."""
        import os, time
        self.count += amount
        self.history.append(f"gated+{amount}")
        open(started, "w").close()
        deadline = time.monotonic() + 60
        try:
            while not os.path.exists(release) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            open(started + ".cancelled", "w").close()
            raise
        return self.count

    @oaas.method(stateless=True)
    def block(self, started: str, release: str) -> None:
        """Blocks the server's event loop (a sync body) until the file `release` exists
        and no other call is in flight in the server (60 s at most); creates the file
        `started` first."""
        import os, time
        open(started, "w").close()
        deadline = time.monotonic() + 60
        while (not os.path.exists(release) or oaas.get_server_info()["inflight"] > 1) \
                and time.monotonic() < deadline:
            time.sleep(0.005)

    @oaas.getter("count")
    async def get_count(self) -> int: ...

    @oaas.getter("history")
    async def get_history(self) -> list: ...

    @oaas.setter("count")
    async def set_count(self, value: int) -> int: ...

    @oaas.function()
    async def version() -> str:
        return "1.0"

    @oaas.function()
    async def add_numbers(a: int, b: int = 2) -> int:
        return a + b


if __name__ == "__main__":
    oaas.run_or_gen()
'''


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_service(directory: Path, package: str = "example",
                  name: str = "service.py") -> Path:
    """The service module in ``directory``; its class is ``<package>.Counter``."""
    path = directory / name
    path.write_text(SERVICE_SOURCE.replace('package="example"', f'package="{package}"'))
    return path


def wait_ready(target: str, proc: subprocess.Popen[bytes] | None = None,
               timeout: float = 60.0, credentials: Any = None) -> None:
    """Wait until a gRPC server answers at ``target`` (bounded); fail early if ``proc``
    exits. ``credentials``: ``grpc.ChannelCredentials`` of a TLS server."""
    deadline = time.monotonic() + timeout
    with (grpc.insecure_channel(target) if credentials is None
          else grpc.secure_channel(target, credentials)) as ch:
        fut = grpc.channel_ready_future(ch)
        while True:
            try:
                fut.result(timeout=0.2)
                return
            except grpc.FutureTimeoutError:
                pass
            if proc is not None and proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise AssertionError(f"service exited with {proc.returncode}:\n{out}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no server at {target} within {timeout} s")


class ServiceProcess:
    """``HTTP_PORT=<port> python service.py`` with the given implementation and store."""

    def __init__(self, script: Path, impl: str, store_dir: Path, port: int | None = None,
                 credentials: Any = None, **env: str) -> None:
        self.script = script
        self.credentials = credentials  # of a TLS server, to see it ready
        self.port = port or free_port()
        self.target = f"127.0.0.1:{self.port}"
        e = {k: v for k, v in os.environ.items() if not k.startswith("OAAS_")}
        e.update({"HTTP_PORT": str(self.port), "OAAS_SERVER_HOST": "127.0.0.1",
                  "OAAS_NATIVE": "on" if impl == "native" else "off",
                  "OAAS_STORAGE": f"lmdb:{store_dir}",
                  "PYTHONPATH": os.pathsep.join([str(ROOT), str(script.parent)])})
        e.update(env)
        self.env = e
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        self.proc = subprocess.Popen([sys.executable, str(self.script)], env=self.env,
                                     cwd=str(self.script.parent), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        wait_ready(self.target, self.proc, credentials=self.credentials)
        return self

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send ``sig`` and wait (bounded) for the exit; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.output = self.proc.stdout.read().decode() if self.proc.stdout else ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def compile_proto(out: Path) -> tuple[ModuleType, ModuleType]:
    """``oprc_pb2`` and ``oprc_pb2_grpc`` compiled from the package's .proto."""
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    rc = protoc.main(["protoc", f"-I{PROTO.parent}", f"--python_out={out}",
                      f"--grpc_python_out={out}", str(PROTO)])
    assert rc == 0, "protoc failed"
    sys.path.insert(0, str(out))
    try:
        for name in ("oprc_pb2", "oprc_pb2_grpc"):
            sys.modules.pop(name, None)
        pb2 = importlib.import_module("oprc_pb2")
        pb2_grpc = importlib.import_module("oprc_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    return pb2, pb2_grpc


class PlainClient:
    """A plain grpcio client of ``oprc.OprcFunction`` (generated stubs)."""

    def __init__(self, pb2: ModuleType, pb2_grpc: ModuleType, target: str,
                 max_bytes: int = 64 << 20, credentials: Any = None) -> None:
        self.pb2 = pb2
        options = [("grpc.max_send_message_length", max_bytes),
                   ("grpc.max_receive_message_length", max_bytes)]
        self.channel = grpc.insecure_channel(target, options=options) if credentials is None \
            else grpc.secure_channel(target, credentials, options=options)
        self.stub = pb2_grpc.OprcFunctionStub(self.channel)

    def obj(self, fn: str, payload: bytes = b"", object_id: str | None = "1",
            cls_id: str = "example.Counter", options: dict[str, str] | None = None,
            **kw: Any) -> Any:
        req = self.pb2.ObjectInvocationRequest(cls_id=cls_id, fn_id=fn, payload=payload,
                                               options=options or {}, **kw)
        if object_id is not None:
            req.object_id = object_id
        return self.stub.InvokeObj(req, timeout=30)

    def fn(self, fn: str, payload: bytes = b"", cls_id: str = "example.Counter") -> Any:
        return self.stub.InvokeFn(self.pb2.InvocationRequest(cls_id=cls_id, fn_id=fn,
                                                             payload=payload), timeout=30)

    def close(self) -> None:
        self.channel.close()


def raw_grpc_call(target: str, path: str, message: bytes, headers: dict[str, str],
                  wait: float = 30.0) -> tuple[int | None, str]:
    """One unary gRPC call over plaintext HTTP/2 with the ``h2`` library: ``message`` (the
    serialized request) to ``path`` with extra request ``headers`` (e.g. ``grpc-timeout``,
    which a grpcio client cannot send without enforcing it itself). Returns the server's
    ``(grpc-status, grpc-message)``; ``(None, reason)`` when the stream is reset or the
    connection closes first. Waits ``wait`` seconds at most (``TimeoutError``)."""
    import h2.config
    import h2.connection
    import h2.events

    host, port = target.rsplit(":", 1)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding="utf-8"))
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", path),
                                (":authority", target), ("content-type", "application/grpc"),
                                ("te", "trailers"), *headers.items()])
        conn.send_data(sid, b"\x00" + len(message).to_bytes(4, "big") + message,
                       end_stream=True)
        sock.sendall(conn.data_to_send())
        deadline = time.monotonic() + wait
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = sock.recv(65536)
            if not data:
                return None, "connection closed"
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)) \
                        and ev.stream_id == sid:
                    h = dict(ev.headers)
                    if "grpc-status" in h:
                        return int(h["grpc-status"]), h.get("grpc-message", "")
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    return None, f"stream reset ({ev.error_code!r})"
            sock.sendall(conn.data_to_send())
