"""Does the cyclic garbage collector's cost grow with the number of live objects?

For each count of live objects (default 1,000 and 100,000, created and committed and kept
referenced) this measures, on the memory store:

- ``tracked_per_object``: objects the garbage collector tracks per live object, new
  (created, not committed) and committed (``gc.get_objects()`` before and after, divided);
  a plain Python object with the same fields is 1 (plus its list field: 2);
- ``create_ns``: mean time of ``create()`` of one more object (kept referenced, as the
  ``ops`` suite's create does), with the collector on (``gc_on``) and off (``gc_off``);
- ``load_cold_ns``: mean time of ``load()`` of a committed object that is not live (and a
  read of one field), with the collector on and off;
- ``gc_ns_per_op``: time spent inside collections (``gc.callbacks``) per operation, with the
  collector on.

Run: ``python -m benchmarks.gc_scaling [--native on|off] [--live 1000,100000]
[--ops 20000] [--json PATH]``. Times are the process's CPU time (``time.process_time_ns``:
on a shared machine, time waiting for a core is not counted). Each measurement runs
``--repeat`` times, alternating collector on and off, and keeps the fastest.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import time
from pathlib import Path
from typing import Any

from oaas_sdk import OaasConfig, OaasObject, oaas


@oaas.service("GcObj", package="bench")
class GcObj(OaasObject):
    count: int = 0
    name: str = "counter"
    items: list[int] = []


class _GcClock:
    """Total CPU ns spent in collections while installed (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.total = 0
        self._t0 = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.process_time_ns()
        else:
            self.total += time.process_time_ns() - self._t0


def _tracked_per_object(n: int) -> dict[str, float]:
    gc.collect()
    base = len(gc.get_objects())
    fresh = [GcObj.create() for _ in range(n)]
    gc.collect()
    new = (len(gc.get_objects()) - base) / n
    for o in fresh:
        o.commit()
    gc.collect()
    committed = (len(gc.get_objects()) - base) / n
    del fresh
    return {"new": new, "committed": committed}


def _timed(fn: Any, ops: int, gc_on: bool) -> tuple[float, float]:
    """(ns per op, ns in collections per op) of ``fn(ops)``, collector on or off."""
    clock = _GcClock()
    gc.collect()
    if gc_on:
        gc.enable()
        gc.callbacks.append(clock)
    else:
        gc.disable()
    try:
        t0 = time.process_time_ns()
        fn(ops)
        t = time.process_time_ns() - t0
    finally:
        if clock in gc.callbacks:
            gc.callbacks.remove(clock)
        gc.enable()
    return t / ops, clock.total / ops


def _measure(live: int, ops: int, repeat: int) -> dict[str, Any]:
    oaas.configure(OaasConfig(mock_mode=True, native=_NATIVE))  # type: ignore[arg-type]
    keep = [GcObj.create() for _ in range(live)]
    for o in keep:
        o.commit()
    out: dict[str, Any] = {"live": live}
    made: list[Any] = []

    def create(k: int) -> None:
        c = GcObj.create
        add = made.append
        for _ in range(k):
            add(c())

    cold_ids: list[int] = []

    def prepare_cold(k: int) -> None:
        cold_ids.clear()
        for _ in range(k):
            o = GcObj.create()
            o.count = 1
            o.commit()
            cold_ids.append(o.object_id)  # type: ignore[arg-type]
        del o

    loaded: list[Any] = []

    def load_cold(k: int) -> None:
        load = GcObj.load
        add = loaded.append
        for i in cold_ids[:k]:
            o = load(i)
            o.count  # noqa: B018
            add(o)

    best: dict[str, float] = {}
    for _ in range(repeat):
        for gc_on in (True, False):
            tag = "gc_on" if gc_on else "gc_off"
            made.clear()
            t, g = _timed(create, ops, gc_on)
            best[f"create_{tag}"] = min(best.get(f"create_{tag}", t), t)
            if gc_on:
                best["create_gc_ns_per_op"] = min(best.get("create_gc_ns_per_op", g), g)
            made.clear()
            loaded.clear()
            prepare_cold(ops)
            gc.collect()
            t, g = _timed(load_cold, ops, gc_on)
            best[f"load_cold_{tag}"] = min(best.get(f"load_cold_{tag}", t), t)
            if gc_on:
                best["load_cold_gc_ns_per_op"] = min(best.get("load_cold_gc_ns_per_op", g), g)
            loaded.clear()
    out.update({k: round(v, 1) for k, v in best.items()})
    del keep
    return out


_NATIVE = "auto"


def main(argv: list[str] | None = None) -> None:
    global _NATIVE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--native", default="auto", choices=["auto", "on", "off"])
    ap.add_argument("--live", default="1000,100000")
    ap.add_argument("--ops", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    _NATIVE = args.native
    oaas.configure(OaasConfig(mock_mode=True, native=args.native))
    res: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": oaas.stats()["implementation"],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tracked_per_object": _tracked_per_object(1000),
        "runs": [_measure(int(n), args.ops, args.repeat) for n in args.live.split(",")],
    }
    print(f"implementation {res['implementation']}; GC-tracked objects per live object: "
          f"new {res['tracked_per_object']['new']:.2f}, "
          f"committed {res['tracked_per_object']['committed']:.2f}")
    cols = ("create_gc_on", "create_gc_off", "create_gc_ns_per_op", "load_cold_gc_on",
            "load_cold_gc_off", "load_cold_gc_ns_per_op")
    print(f"{'live':>8} " + " ".join(f"{c:>22}" for c in cols) + "   (ns per op)")
    for r in res["runs"]:
        print(f"{r['live']:>8} " + " ".join(f"{r[c]:>22.0f}" for c in cols))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
