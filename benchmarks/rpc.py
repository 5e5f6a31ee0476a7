"""``python -m benchmarks.rpc [--impl python|native|both] [--calls N] [--json PATH]``:
calls per second and latency percentiles of the pure-Python gRPC server.

A service (one class, LMDB store in a temporary directory, ``durability="sync"``) runs in a
subprocess, ``HTTP_PORT=<free port> python service.py``; this process calls it with
``grpc.aio`` (raw ``oprc`` messages, no oaas-sdk client code on the path) with 1 and 64
concurrent callers, each caller on its own object. Workloads: ``stateless`` (a stateless
method: protocol + dispatch cost), ``commit`` (``add(1)``: a state change committed and
fsynced before the response; concurrent commits share group-commit batches).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from oaas_sdk.rpc import messages as pb  # noqa: E402
from tests.rpc_support import ServiceProcess, write_service  # noqa: E402


def _request(fn: str, oid: int, payload: bytes) -> bytes:
    data: bytes = pb.PbObjectInvocationRequest(cls_id="example.Counter", fn_id=fn,
                                               object_id=str(oid),
                                               payload=payload).SerializeToString()
    return data


async def _run(target: str, fn: str, payload: bytes, callers: int,
               calls: int) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(target) as ch:
        call = ch.unary_unary(pb.INVOKE_OBJ)
        reqs = [_request(fn, 1_000_000 + i, payload) for i in range(callers)]
        for r in reqs:  # warm up: objects created, connections open
            await call(r, timeout=60)
        per_caller = max(1, calls // callers)
        lat: list[float] = []

        async def caller(req: bytes) -> None:
            for _ in range(per_caller):
                t = time.perf_counter()
                raw = await call(req, timeout=60)
                lat.append(time.perf_counter() - t)
                if pb.PbInvocationResponse.FromString(raw).status != 0:
                    raise RuntimeError("call failed")

        t0 = time.perf_counter()
        await asyncio.gather(*(caller(r) for r in reqs))
        wall = time.perf_counter() - t0
    lat.sort()
    n = len(lat)
    return {"callers": callers, "calls": n, "calls_per_s": round(n / wall),
            "p50_us": round(lat[n // 2] * 1e6), "p99_us": round(lat[min(n - 1, n * 99 // 100)]
                                                                * 1e6),
            "mean_us": round(statistics.fmean(lat) * 1e6)}


def bench(impl: str, calls: int) -> list[dict[str, Any]]:
    out = []
    with tempfile.TemporaryDirectory() as d:
        script = write_service(Path(d))
        svc = ServiceProcess(script, impl, Path(d) / "store", OAAS_DURABILITY="sync").start()
        try:
            for workload, fn, payload in (("stateless", "hello", b'"x"'),
                                          ("commit", "add", b"1")):
                for callers in (1, 64):
                    r = asyncio.run(_run(svc.target, fn, payload, callers, calls))
                    r.update(impl=impl, workload=workload)
                    out.append(r)
                    print(f"{impl:7} {workload:9} callers={callers:3} "
                          f"{r['calls_per_s']:7d} calls/s  p50 {r['p50_us']:6d} us  "
                          f"p99 {r['p99_us']:6d} us", flush=True)
        finally:
            rc = svc.terminate()
            if rc != 0:
                raise RuntimeError(f"service exited {rc}: {svc.output}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--impl", choices=("python", "native", "both"), default="both")
    ap.add_argument("--calls", type=int, default=2000, help="calls per run")
    ap.add_argument("--json", help="write the results here")
    ns = ap.parse_args()
    impls = ["python", "native"] if ns.impl == "both" else [ns.impl]
    os.environ.pop("OAAS_STORAGE", None)
    results = [r for impl in impls for r in bench(impl, ns.calls)]
    if ns.json:
        Path(ns.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
