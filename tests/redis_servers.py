"""Redis servers that tests start themselves: one server, or a 3-primary cluster.

Every server binds 127.0.0.1 on a port picked free here, lives in its own temporary
directory and is stopped by whoever started it (the fixtures in conftest.py). Nothing here
talks to a server it did not start. Needs Debian's ``redis-server`` and ``redis-tools``
(``.ci/run`` installs them).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

__all__ = ["RedisServer", "RedisCluster", "need_redis", "free_port"]


def need_redis() -> None:
    """Skip (or fail, with OAAS_REQUIRE_REDIS=1 as in CI) without redis-server."""
    if shutil.which("redis-server") and shutil.which("redis-cli"):
        return
    if os.environ.get("OAAS_REQUIRE_REDIS") == "1":
        pytest.fail("redis-server is required (OAAS_REQUIRE_REDIS=1) but not installed")
    pytest.skip("redis-server not installed")


def free_port(bus: bool = False) -> int:
    """A loopback port free now (and, with ``bus``, port + 10000 too: a cluster's bus)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not bus:
            return port
        if port + 10000 < 65536:
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair found")


def _wait(cond: object, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what}")


class RedisServer:
    """One ``redis-server`` on 127.0.0.1 in directory ``path``.

    ``durable=True``: append-only file with ``appendfsync always`` (every acknowledged
    write is on disk). ``cluster=True``: cluster mode (see :class:`RedisCluster`)."""

    def __init__(self, path: Path, *, durable: bool = False, cluster: bool = False,
                 port: int | None = None, extra: list[str] | None = None,
                 password: str | None = None) -> None:
        self.path = path
        self.extra = list(extra or ())
        self.password = password
        if password is not None:
            self.extra += ["--requirepass", password, "--masterauth", password]
        self.durable = durable
        self.cluster = cluster
        self.port = port if port is not None else free_port(bus=cluster)
        self.proc: subprocess.Popen[bytes] | None = None
        path.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        a = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.path), "--save", "", "--daemonize", "no",
             "--logfile", str(self.path / "redis.log"), "--protected-mode", "yes"]
        if self.durable:
            a += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            a += ["--appendonly", "no"]
        if self.cluster:
            a += ["--cluster-enabled", "yes", "--cluster-config-file",
                  str(self.path / "nodes.conf"), "--cluster-node-timeout", "3000",
                  "--repl-diskless-sync-delay", "0"]
        return a + self.extra

    def cli(self, *args: str, check: bool = True) -> str:
        """``redis-cli -p PORT args...`` against this server; its output."""
        auth = [] if self.password is None else ["-a", self.password, "--no-auth-warning"]
        out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *auth,
                              *args],
                             capture_output=True, timeout=30, check=check)
        return out.stdout.decode().strip()

    def start(self) -> RedisServer:
        """Start and wait until it answers PING (15 s at most)."""
        self.proc = subprocess.Popen(self.args(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                log = (self.path / "redis.log")
                raise RuntimeError(f"redis-server exited: "
                                   f"{log.read_text()[-2000:] if log.exists() else ''}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
            except OSError:
                return False

        try:
            _wait(up, f"redis-server on port {self.port}")
        except BaseException:
            self.kill()  # never leave a server behind
            raise
        return self

    def kill(self) -> None:
        """SIGKILL (no shutdown, no save) and wait for the process to end."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=15)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 10 s)."""
        p = self.proc
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        self.proc = None


class RedisCluster:
    """Three primaries on 127.0.0.1 (``replicas`` replicas each), made with
    ``redis-cli --cluster create``."""

    def __init__(self, path: Path, size: int = 3, *, durable: bool = False,
                 password: str | None = None, replicas: int = 0) -> None:
        self.password = password
        self.replicas = replicas
        size *= 1 + replicas
        self.nodes = [RedisServer(path / f"node{i}", cluster=True, durable=durable,
                                  password=password) for i in range(size)]

    @property
    def url(self) -> str:
        auth = "" if self.password is None else f":{self.password}@"
        return f"redis+cluster://{auth}" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> RedisCluster:
        for n in self.nodes:
            n.start()
        auth = [] if self.password is None else ["-a", self.password, "--no-auth-warning"]
        subprocess.run(["redis-cli", *auth, "--cluster", "create",
                        *[f"127.0.0.1:{n.port}" for n in self.nodes],
                        "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                       capture_output=True, timeout=60, check=True)
        self.wait_ok()
        return self

    def wait_ok(self) -> None:
        """Wait (30 s at most) until every running node reports cluster_state:ok."""
        def ok() -> bool:
            return all("cluster_state:ok" in n.cli("cluster", "info", check=False)
                       for n in self.nodes if n.proc is not None)

        _wait(ok, "cluster_state:ok on every node", timeout=30)

        if self.replicas:
            self._wait_replicas_streaming()

    def _wait_replicas_streaming(self) -> None:
        """Until every primary's replicas acknowledge a write (``WAIT``): after a diskless
        full sync a primary streams writes to a replica only once the replica has
        acknowledged, up to a second later, and a replica promoted before that would
        have none of them."""
        pending = {n.port for n in self.nodes if "role:master" in n.cli("info", "replication")
                   and "slave0:" in n.cli("info", "replication")}
        i = 0
        deadline = time.monotonic() + 30
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"replicas of {sorted(pending)} never acknowledged")
            key = f"replication-check-{i}"
            i += 1
            node = self.primary_of(key)
            if node.port not in pending:
                continue
            out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(node.port),
                                  *([] if self.password is None else
                                    ["-a", self.password, "--no-auth-warning"])],
                                 input=f"SET {key} x\nWAIT {self.replicas} 2000\nDEL {key}\n",
                                 capture_output=True, text=True, timeout=30).stdout.split()
            if len(out) >= 2 and out[1] == str(self.replicas):
                pending.discard(node.port)

    def primary_of(self, key: str) -> RedisServer:
        """The running node that serves ``key`` as a primary (from CLUSTER NODES)."""
        node = next(n for n in self.nodes if n.proc is not None)
        slot = int(node.cli("cluster", "keyslot", key))
        for line in node.cli("cluster", "nodes").splitlines():
            f = line.split()
            if "master" not in f[2] or "fail" in f[2]:
                continue
            for r in f[8:]:
                lo, _, hi = r.partition("-")
                if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                    port = int(f[1].split("@")[0].rpartition(":")[2])
                    return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no primary serves slot {slot}")

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
