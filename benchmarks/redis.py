"""Redis store benchmark: pipelined commits of 1 KB objects against Redis's own SET rate.

Starts its own ``redis-server`` on a free loopback port (``--save '' --appendonly no``, in a
temporary directory; stopped at the end) and measures, in one run:

- ``redis-benchmark -P 16 -t set -d 1000 -q -n N``: the server's pipelined SET rate of
  1000-byte values (the ceiling for one small write per request), and the same
  ``redis-benchmark -P 16`` sending the store's commit script (``EVALSHA``, one 1000-byte
  entry, a new random key each: what one commit costs the server);
- ``redis_benchmark_batch16_P16``: the same ``redis-benchmark -P 16`` sending one script
  call of 16 commits each (the store's batch protocol: one call per batch and node),
  reported in commits/s (calls/s x 16): what the server can commit through the script;
- ``store``: ``RedisStore.write_batch`` alone, batches of 16 and 256 commits of a new
  object with one 1000-byte entry (one pipeline of script calls per batch), commits/s;
- ``native_store_batch16`` / ``native_store_batch256``: the native store
  (``oprc-py/core/src/store/redis.rs``) under the native engine: ``n`` commits of a new
  object with one 1000-byte entry submitted at once (``Engine.submit``), batches of at most
  16 or 256 commits (``batch_max_entries``: one script call each) until all
  are written, commits/s (needs the extension);
- ``sdk_insert`` / ``sdk_update``: objects with one 1000-byte ``bytes`` field created with
  fresh ids (or changed) and committed by ``await oaas.commit_all_async()`` in groups of 1,000
  (``durability="sync"``: resolves once Redis answered), objects/s, with the Python
  implementation (Python engine and store) and the native one (native engine and store);
- ``ycsb_<A|B>_cluster_<impl>``: YCSB workloads A (50% read, 50% update) and B (95% read,
  5% update) of the ``ycsb`` suite (``benchmarks/workload.py``, ``benchmarks/ycsb.py``:
  records of 10 fields of 100 bytes, zipfian keys, 8 clients on one event loop,
  ``durability="sync"``) on a 3-primary Redis Cluster started here, operations/s of the
  run phase (``ycsb`` in the JSON has the load rate and latencies), per implementation.

Run: ``python -m benchmarks.redis [--objects N] [--repeats R] [--requests N]
[--ycsb-records N] [--ycsb-operations N] [--json PATH]``. Each point runs ``R`` times
(default 3); the median is reported, every run is in the JSON; ``--requests`` is per
redis-benchmark run (default 200,000). Needs Debian's ``redis-server`` and
``redis-tools`` and redis-py (``.[test]`` or ``.[redis]``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks import workload, ycsb
from oaas_sdk import OaasConfig, OaasObject, native_available, oaas
from oaas_sdk.stores import WriteRecord, open_store
from oaas_sdk.stores.redis import COMMIT_SCRIPT
from tests.redis_servers import RedisCluster, RedisServer

VALUE = bytes(range(256)) * 3 + bytes(232)  # 1000 bytes
assert len(VALUE) == 1000


@oaas.service("Blob", package="bench_redis")
class Blob(OaasObject):
    data: bytes = b""


def redis_benchmark(port: int, n: int, *command: str) -> float:
    """Requests/s of ``redis-benchmark -P 16 -q``: ``-t set -d 1000``, or ``command``."""
    what = list(command) if command else ["-t", "set", "-d", "1000"]
    out = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-P", "16",
                          "-q", "-n", str(n), "-r", "100000000", *what],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    found = re.findall(r"([\d.]+) requests per second", out)
    if not found:
        raise RuntimeError(f"redis-benchmark said: {out[-500:]!r}")
    return float(found[-1])


def store_rate(url: str, n: int, batch: int) -> float:
    """Commits/s of ``write_batch`` alone: ``n`` new objects in batches of ``batch``."""
    store = open_store(url)
    try:
        recs = [WriteRecord(("bench.Raw", batch, i), 0, {"data": VALUE}, time_ms=1)
                for i in range(n)]
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            res = store.write_batch(recs[i:i + batch])
            assert not any(res), res
        return n / (time.perf_counter() - t0)
    finally:
        store.close()


def native_store_rate(url: str, n: int, batch: int) -> float:
    """Commits/s of the native engine over the native Redis store: ``n`` new objects
    submitted at once, written in batches of at most ``batch`` commits (pipelines)."""
    from oaas_sdk._backend import native_module
    from oaas_sdk.stores.redis import native_target

    target = native_target(url)
    assert target is not None, url
    client_url, prefix, name, cluster, ca_file = target
    native = native_module("on")
    assert native is not None
    eng = native.Engine(client_url, durability="sync", batch_max_entries=batch,
                        batch_max_delay_ms=1.0, pending_max_bytes=0,
                        redis=(prefix, name, 30.0, cluster, ca_file, 0, 1.0))
    try:
        entries = {"data": VALUE}
        t0 = time.perf_counter()
        tickets = [eng.submit("bench.Native", batch, i, 0, entries, time_ms=1)
                   for i in range(n)]
        eng.flush()
        elapsed = time.perf_counter() - t0
        assert all(t.error is None for t in tickets), next(t.error for t in tickets if t.error)
        return n / elapsed
    finally:
        eng.close()


async def sdk_rates(url: str, n: int, native: str) -> tuple[float, float]:
    """(inserts/s, updates/s) of objects committed with ``commit_all_async`` per 1,000."""
    oaas.configure(OaasConfig(storage=url, native=native, durability="sync"))  # type: ignore[arg-type]
    objs: list[Blob] = []
    t0 = time.perf_counter()
    for i in range(0, n, 1000):
        for _ in range(i, min(n, i + 1000)):
            objs.append(Blob.create(data=VALUE))  # a given id would cost a read (exists?)
        await oaas.commit_all_async()
    insert = n / (time.perf_counter() - t0)
    changed = VALUE[::-1]
    t0 = time.perf_counter()
    for i in range(0, n, 1000):
        for o in objs[i:i + 1000]:
            o.data = changed
        await oaas.commit_all_async()
    update = n / (time.perf_counter() - t0)
    oaas.configure(OaasConfig(mock_mode=True, native="off"))
    return insert, update


def batch_script_args(sha: str, n: int) -> list[str]:
    """``redis-benchmark`` arguments of one script call committing ``n`` new objects with
    one 1000-byte entry each (a random key each)."""
    args = ["evalsha", sha, "1", "b:{__rand_int__}", str(n)]
    for _ in range(n):
        args += ["b:{__rand_int__}", "0", "1", "1", "w", "0123456789abcdef", "1", "0", "data",
                 "x" * 1000]
    return args


def ycsb_on_cluster(url: str, native: str, records: int, operations: int,
                    workloads: tuple[str, ...] = ("A", "B")) -> dict[str, dict[str, object]]:
    """YCSB ``workloads`` of the ``ycsb`` suite on the cluster at ``url`` (a fresh key prefix
    per workload), with ``native`` ("on"/"off"): {workload: the suite's result}."""
    os.environ[workload.REDIS_ENV] = url
    try:
        sdk = workload.Sdk("oaas_sdk", native)
        out: dict[str, dict[str, object]] = {}
        for name in workloads:
            out[name] = asyncio.run(workload._ycsb_one(
                sdk, ycsb.WORKLOADS[name], "redis", records, operations, 8, seed=ord(name)))
        sdk.cleanup()
        return out
    finally:
        del os.environ[workload.REDIS_ENV]
        oaas.configure(OaasConfig(mock_mode=True, native="off"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--requests", type=int, default=200_000,
                    help="requests per redis-benchmark run")
    ap.add_argument("--ycsb-records", type=int, default=10_000)
    ap.add_argument("--ycsb-operations", type=int, default=20_000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    n = args.objects
    runs: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        runs.setdefault(name, []).append(value)

    natives = ["off", "on"] if native_available() else ["off"]
    with tempfile.TemporaryDirectory(prefix="oaas-bench-redis-") as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        try:
            for rep in range(args.repeats):
                server.cli("flushall")
                add("redis_benchmark_set_P16", redis_benchmark(server.port, args.requests))
                sha = server.cli("script", "load", COMMIT_SCRIPT)
                add("redis_benchmark_script_P16", redis_benchmark(
                    server.port, args.requests, "evalsha", sha, "1", "b:{__rand_int__}",
                    "1", "b:{__rand_int__}", "0", "1", "1", "w", "0123456789abcdef", "1", "0",
                    "data", "x" * 1000))
                add("redis_benchmark_batch16_P16", 16 * redis_benchmark(
                    server.port, max(1, args.requests // 16), *batch_script_args(sha, 16)))
                for batch in (16, 256):
                    add(f"store_batch{batch}",
                        store_rate(f"{server.url}?prefix=s{rep}", n, batch))
                if native_available():
                    for batch in (16, 256):
                        add(f"native_store_batch{batch}", native_store_rate(
                            f"{server.url}?prefix=n{rep}", n, batch))
                for native in natives:
                    ins, upd = asyncio.run(sdk_rates(f"{server.url}?prefix=o{rep}{native}", n,
                                                     native))
                    impl = "native" if native == "on" else "python"
                    add(f"sdk_insert_{impl}", ins)
                    add(f"sdk_update_{impl}", upd)
            version = server.cli("info", "server")
        finally:
            server.stop()
        ycsb_runs: dict[str, list[dict[str, object]]] = {}
        cluster = RedisCluster(Path(tmp) / "cluster")
        try:
            cluster.start()
            for _ in range(args.repeats):
                for native in natives:
                    impl = "native" if native == "on" else "python"
                    for node in cluster.nodes:  # start empty (the key prefixes repeat)
                        node.cli("flushall")
                    res = ycsb_on_cluster(cluster.url, native, args.ycsb_records,
                                          args.ycsb_operations)
                    for wname, r in res.items():
                        add(f"ycsb_{wname}_cluster_{impl}", float(r["ops_per_s"]))  # type: ignore[arg-type]
                        ycsb_runs.setdefault(f"{wname}_{impl}", []).append(r)
        finally:
            cluster.stop()
    med = {k: statistics.median(v) for k, v in runs.items()}
    ceiling = med["redis_benchmark_set_P16"]
    print(f"{'point':32} {'per s (median)':>16} {'of SET -P 16':>14}")
    for k, v in med.items():
        ratio = "" if k.startswith("ycsb_") else f"{v / ceiling:14.2f}"
        print(f"{k:32} {v:16,.0f} {ratio}")
    if args.json is not None:
        m = re.search(r"redis_version:(\S+)", version)
        args.json.write_text(json.dumps({
            "suite": "redis", "objects": n, "repeats": args.repeats, "requests": args.requests,
            "value_bytes": len(VALUE), "median_per_s": med, "runs": runs,
            "ycsb": {"records": args.ycsb_records, "operations": args.ycsb_operations,
                     "clients": 8, "store": "3-primary Redis Cluster", "runs": ycsb_runs},
            "redis_version": m.group(1) if m else None,
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
