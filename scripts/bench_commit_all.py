"""``python scripts/bench_commit_all.py``: issue 13's ``commit_all_async()`` case.

3,000 objects, each with a 40-entry dict and a 20-element list, changed in place (or by
one assignment, or new), committed with ``oaas.commit_all_async()``. Measured: the main
thread's CPU time per object (``time.thread_time``: the persister thread and the load of
other processes on the machine do not count), best of 4 commits, native and pure Python
interleaved 3 times in one process. Prints one line per case with the ratio
pure Python / native (issue 13's goal for the in-place case on LMDB: >= 3x).
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time

from oaas_sdk import OaasConfig, OaasObject, oaas

N = 3000
ROUNDS = 4
CASES = (("inplace", "lmdb", "sync"), ("new", "lmdb", "sync"), ("assign", "lmdb", "sync"),
         ("inplace", "lmdb", "async"), ("inplace", "memory", "sync"),
         ("assign", "memory", "sync"))


@oaas.service("Big", package="benchcommitall")
class Big(OaasObject):
    d: dict[str, int] = {}
    l: list[int] = []  # noqa: E741
    n: int = 0


def _configure(native: str, store: str, durability: str) -> None:
    storage = "memory" if store == "memory" else f"lmdb:{tempfile.mkdtemp()}"
    oaas.configure(OaasConfig(storage=storage, durability=durability,  # type: ignore[arg-type]
                              native=native))  # type: ignore[arg-type]


def _objects(base: int) -> list[Big]:
    return [Big.create(obj_id=base + i + 1, d={f"k{j}": j for j in range(40)},
                       l=list(range(20))) for i in range(N)]


async def _timed() -> float:
    gc.collect()
    t = time.thread_time()
    await oaas.commit_all_async()
    return (time.thread_time() - t) / N * 1e6


async def _case(kind: str, native: str, store: str, durability: str) -> float:
    """Best microseconds of main-thread CPU per object."""
    _configure(native, store, durability)
    best = float("inf")
    if kind == "new":
        for r in range(ROUNDS):
            _objects(r * N)
            best = min(best, await _timed())
        return best
    objs = _objects(0)
    await oaas.commit_all_async()
    for r in range(ROUNDS):
        for o in objs:
            if kind == "inplace":
                o.d["k1"] = r
                o.l[0] = r
            else:
                o.n = r + 1
        best = min(best, await _timed())
    return best


async def main() -> None:
    for kind, store, durability in CASES:
        best: dict[str, float] = {}
        for _ in range(3):
            for native in ("on", "off"):
                v = await _case(kind, native, store, durability)
                best[native] = min(best.get(native, float("inf")), v)
        on, off = best["on"], best["off"]
        print(f"{kind:8s} {store:6s} {durability:5s}: native {on:6.2f} us/obj  "
              f"python {off:6.2f} us/obj  python/native {off / on:.2f}x", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
