"""``python -m benchmarks.rpc [--servers native,python,sdk2,echo] [--calls N] [--json PATH]``:
calls per second and latency percentiles of the OaaS gRPC servers, all driven by one load
generator.

Servers (each in its own process, on a free loopback port):

* ``native``: ``HTTP_PORT=<port> python service.py`` with the native implementation (the
  tonic server, ``oaas_sdk._native.NativeServer``), LMDB store in a temporary directory,
  ``durability="sync"``;
* ``python``: the same service with the Python implementation (the ``grpc.aio`` server);
* ``sdk2``: the same class written for oaas-sdk2-py 0.3.6 (its own server, ``async_mode``,
  not mock mode), installed in a separate virtual environment
  (``$OAAS_BENCH_CACHE/sdk2-venv``, default ``/var/cache/oaas-sdk``; created with pip on
  first use) so it never shadows ``oaas_sdk``;
* ``echo``: the bare tonic server of the ``oprc-rpc`` crate answering with the payload
  (``examples/echo_server.rs``): the floor.

The load generator is ``examples/loadgen.rs`` of the same crate (tonic client, one
single-threaded tokio runtime, one HTTP/2 connection), built here with ``cargo build
--release``; it reports its own CPU time, so a run shows it was not the limit. Workloads:
``small`` (``hello("x")``, a stateless method returning a string: protocol + dispatch
cost) on every server, ``commit`` (``add(1)``, committed and fsynced before the response)
on the two oaas-sdk servers; 1 and 64 concurrent callers, each on its own object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.rpc_support import ServiceProcess, free_port, wait_ready, write_service  # noqa: E402

CRATE = ROOT / "oprc-py"
SDK2_VERSION = "0.3.6"
SERVERS = ("native", "python", "sdk2", "echo")

SDK2_SERVICE = '''
from oaas_sdk2_py import oaas, OaasObject, OaasConfig


@oaas.service("Counter", package="example")
class Counter(OaasObject):
    count: int = 0

    @oaas.method()
    async def add(self, amount: int = 1) -> int:
        self.count += amount
        return self.count

    @oaas.method(stateless=True)
    async def hello(self, name: str) -> str:
        return f"hello {name}"


if __name__ == "__main__":
    oaas.configure(OaasConfig(async_mode=True, mock_mode=False))
    oaas.run_or_gen()
'''


def build_tools() -> tuple[Path, Path]:
    """``cargo build --release`` of the load generator and the echo server; their paths."""
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "oprc-rpc",
                    "--example", "loadgen", "--example", "echo_server"],
                   cwd=CRATE, check=True)
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=CRATE,
        check=True, capture_output=True, text=True).stdout)
    examples = Path(meta["target_directory"]) / "release" / "examples"
    return examples / "loadgen", examples / "echo_server"


def sdk2_python() -> Path:
    """The interpreter of a virtual environment with oaas-sdk2-py (created when missing)."""
    cache = Path(os.environ.get("OAAS_BENCH_CACHE", "/var/cache/oaas-sdk"))
    venv = cache / "sdk2-venv"
    py = venv / "bin" / "python"
    probe = [str(py), "-c", f"import importlib.metadata as m; "
             f"assert m.version('oaas-sdk2-py') == '{SDK2_VERSION}'"]
    if not py.exists() or subprocess.run(probe, capture_output=True).returncode != 0:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q",
                        f"oaas-sdk2-py=={SDK2_VERSION}"], check=True)
    return py


@contextmanager
def serve(kind: str, workdir: Path, echo_bin: Path) -> Iterator[str]:
    """Run server ``kind``; yields its target ``host:port``; stops it after."""
    if kind in ("native", "python"):
        passed = {k: v for k, v in os.environ.items() if k == "OAAS_RPC_THREADS"}
        svc = ServiceProcess(write_service(workdir), kind, workdir / "store",
                             OAAS_DURABILITY="sync", **passed).start()
        try:
            yield svc.target
        finally:
            rc = svc.terminate()
            if rc != 0:
                raise RuntimeError(f"{kind} service exited {rc}: {svc.output}")
        return
    port = free_port()
    if kind == "sdk2":
        script = workdir / "sdk2_service.py"
        script.write_text(SDK2_SERVICE)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("OAAS_") and k != "PYTHONPATH"}
        env["HTTP_PORT"] = str(port)
        cmd = [str(sdk2_python()), str(script)]
    else:
        env = dict(os.environ)
        cmd = [str(echo_bin), "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, cwd=workdir, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        target = f"127.0.0.1:{port}"
        wait_ready(target, proc)
        yield target
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def load(loadgen: Path, target: str, fn: str, payload: str, callers: int,
         calls: int) -> dict[str, Any]:
    """One run of the load generator; its JSON report."""
    out = subprocess.run([str(loadgen), "--target", target, "--callers", str(callers),
                          "--calls", str(calls), "--fn", fn, "--payload", payload],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed against {target}: {out.stderr.strip()}")
    r: dict[str, Any] = json.loads(out.stdout)
    return r


WORKLOADS = {"small": ("hello", '"x"'), "commit": ("add", "1")}


def bench(servers: list[str], calls: int) -> list[dict[str, Any]]:
    loadgen, echo_bin = build_tools()
    out = []
    for kind in servers:
        with tempfile.TemporaryDirectory() as d, serve(kind, Path(d), echo_bin) as target:
            workloads = ["small", "commit"] if kind in ("native", "python") else ["small"]
            for workload in workloads:
                fn, payload = WORKLOADS[workload]
                for callers in (1, 64):
                    n = calls if callers > 1 else max(1, calls // 4)
                    r = load(loadgen, target, fn, payload, callers, n)
                    r.update(server=kind, workload=workload)
                    out.append(r)
                    print(f"{kind:6} {workload:6} callers={callers:3} "
                          f"{r['calls_per_s']:7.0f} calls/s  p50 {r['p50_us']:6.0f} us  "
                          f"p99 {r['p99_us']:6.0f} us  client CPU "
                          f"{r['client_cpu_share']:.2f} core", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", default=",".join(SERVERS),
                    help=f"comma-separated, of {', '.join(SERVERS)}")
    ap.add_argument("--calls", type=int, default=20000,
                    help="calls per run with 64 callers (a quarter with 1)")
    ap.add_argument("--json", help="write the results here")
    ns = ap.parse_args()
    servers = [s for s in ns.servers.split(",") if s]
    bad = [s for s in servers if s not in SERVERS]
    if bad:
        ap.error(f"unknown server(s) {bad}; choose from {SERVERS}")
    os.environ.pop("OAAS_STORAGE", None)
    results = bench(servers, ns.calls)
    if ns.json:
        Path(ns.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
