"""First micro-benchmark: the cost of the SDK's basic operations against plain Python.

Measures, in one process and one run:
- field read of a loaded field vs a plain object's attribute read;
- field write (validated, dirty-tracked) vs a plain attribute write;
- a method call (turn, snapshot, auto-commit skipped when nothing changed) vs a plain
  coroutine method call;
- a commit (``durability="sync"`` and ``"async"``) of one changed field on the memory and
  LMDB stores;
- ``commit_all`` cost with one changed object among 10 vs 100,000 live objects (must follow
  changed objects, not live ones).

Run: ``python -m benchmarks.micro [--native auto|on|off] [--json PATH]``. Timings are
medians of repeated ``timeit`` runs (seconds per operation, reported in nanoseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

from oaas_sdk import OaasConfig, OaasObject, oaas


@oaas.service("MicroObj", package="bench")
class MicroObj(OaasObject):
    count: int = 0
    name: str = "x"
    items: list[int] = []

    @oaas.method()
    async def touch(self, n: int = 1) -> int:
        return self.count + n

    @oaas.method()
    async def bump(self, n: int = 1) -> int:
        self.count += n
        return self.count


class Plain:
    def __init__(self) -> None:
        self.count = 0
        self.name = "x"
        self.items: list[int] = []

    async def touch(self, n: int = 1) -> int:
        return self.count + n


def per_op_ns(stmt: Any, number: int, repeat: int = 7, globals_: dict[str, Any] | None = None
              ) -> float:
    """Nanoseconds per operation of ``stmt``: the fastest of ``repeat`` runs (the timeit
    docs' advice: slower runs measure interference, not the code).

    ``stmt`` is a string (timed inline, no call overhead) or a callable."""
    runs = timeit.repeat(stmt, number=number, repeat=repeat, globals=globals_)
    return min(runs) / number * 1e9


def bench_fields(results: dict[str, Any]) -> None:
    """Loaded-object field reads and writes against a plain object's attributes. The
    object goes through a commit first, so it is in the state a long-lived object is in."""
    o = MicroObj.create()
    o.items.append(1)
    o.commit()
    _ = o.items
    o.commit()
    p = Plain()
    g = {"o": o, "p": p}
    n = 1_000_000
    results["field_read_ns"] = per_op_ns("o.count", n, globals_=g)
    results["plain_read_ns"] = per_op_ns("p.count", n, globals_=g)
    results["field_read_ratio"] = results["field_read_ns"] / results["plain_read_ns"]
    _ = o.items
    results["list_field_read_ns"] = per_op_ns("o.items", n, globals_=g)
    results["plain_list_read_ns"] = per_op_ns("p.items", n, globals_=g)
    results["list_field_read_ratio"] = (results["list_field_read_ns"]
                                        / results["plain_list_read_ns"])
    n = 200_000
    results["field_write_ns"] = per_op_ns("o.count = 5", n, globals_=g)
    results["plain_write_ns"] = per_op_ns("p.count = 5", n, globals_=g)
    results["field_write_ratio"] = results["field_write_ns"] / results["plain_write_ns"]


def bench_method(results: dict[str, Any]) -> None:
    o = MicroObj.create()
    o.commit()
    p = Plain()
    loop = asyncio.new_event_loop()
    n = 5_000

    async def many_sdk() -> None:
        for _ in range(n):
            await o.touch(1)

    async def many_plain() -> None:
        for _ in range(n):
            await p.touch(1)

    results["method_call_ns"] = per_op_ns(lambda: loop.run_until_complete(many_sdk()), 1) / n
    results["plain_method_call_ns"] = (
        per_op_ns(lambda: loop.run_until_complete(many_plain()), 1) / n)
    results["method_call_ratio"] = results["method_call_ns"] / results["plain_method_call_ns"]
    loop.close()


def _commit_ns(storage: str, durability: str, native: str, n: int) -> float:
    oaas.configure(OaasConfig(storage=storage, durability=durability,  # type: ignore[arg-type]
                              native=native))  # type: ignore[arg-type]
    o = MicroObj.create()
    o.commit()
    loop = asyncio.new_event_loop()

    async def many() -> None:
        for i in range(n):
            o.count = i
            await o.commit_async()

    try:
        return per_op_ns(lambda: loop.run_until_complete(many()), 1, repeat=3) / n
    finally:
        loop.close()
        oaas.configure(OaasConfig(mock_mode=True, native=native))  # type: ignore[arg-type]


def bench_commit(results: dict[str, Any], native: str) -> None:
    for durability in ("sync", "async"):
        results[f"commit_memory_{durability}_ns"] = _commit_ns("memory", durability, native, 3000)
        with tempfile.TemporaryDirectory() as d:
            n = 300 if durability == "sync" else 3000
            results[f"commit_lmdb_{durability}_ns"] = _commit_ns(f"lmdb:{d}", durability,
                                                                 native, n)


def _commit_all_ns(live: int) -> float:
    objs = [MicroObj.create() for _ in range(live)]
    oaas.commit_all()
    target = objs[live // 2]

    def one() -> None:
        target.count += 1
        oaas.commit_all()

    return per_op_ns(one, 500, repeat=5)


def bench_commit_scaling(results: dict[str, Any], native: str) -> None:
    oaas.configure(OaasConfig(mock_mode=True, native=native))  # type: ignore[arg-type]
    small = _commit_all_ns(10)
    large = _commit_all_ns(100_000)
    results["commit_all_10_live_ns"] = small
    results["commit_all_100k_live_ns"] = large
    results["commit_all_100k_over_10_ratio"] = large / small


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--native", default="auto", choices=["auto", "on", "off"])
    ap.add_argument("--json", default="benchmarks/results/micro.json")
    args = ap.parse_args()
    oaas.configure(OaasConfig(mock_mode=True, native=args.native))
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "processor": platform.processor()},
        "implementation": oaas.stats()["implementation"],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    bench_fields(results)
    bench_method(results)
    bench_commit(results, args.native)
    bench_commit_scaling(results, args.native)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    for k, v in results.items():
        if isinstance(v, float):
            print(f"{k:36s} {v:12.2f}")
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
