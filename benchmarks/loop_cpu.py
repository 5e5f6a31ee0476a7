"""The event loop thread's cost per commit, for comparing builds of the native engine.

Two measures, ``--runs`` runs each, medians printed (and every run with ``--json``):

- ``durable``: the durable workload of ``benchmarks.persistence`` (``committers`` tasks,
  each assigning 10 fields of 100 bytes of its own 1 KB object and awaiting
  ``commit_async()``, ``durability="sync"``, ``--seconds`` per run): commits per second,
  and the CPU time of the event loop's thread per commit (``time.thread_time``), in µs.
  At hundreds of committers
  that thread is the bottleneck, so its CPU per commit is what a change of the commit path
  moves; it is steadier than the rate, which also follows the disk.
- ``async``: one task rewriting 256 objects in turn, ``durability="async"``: the wall
  time of the ``commit_async()`` call alone, in µs
  (``benchmarks.persistence.calling_thread_us``, ``--commits`` commits per run).

To compare two builds, run this alternately against a copy of each package, e.g.
``PYTHONPATH=/tmp/build-a python -m benchmarks.loop_cpu`` then ``PYTHONPATH=/tmp/build-b
...``, several times: the VM's speed drifts by tens of percent within minutes, so only
interleaved runs compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from oaas_sdk import OaasConfig, oaas

from .persistence import Rec, _configure, calling_thread_us, committers_run


def durable_loop_cpu(committers: int, seconds: float, base: Path) -> dict[str, float]:
    """Durable commits/s and the event loop thread's CPU µs per commit."""
    _configure("native", Path(tempfile.mkdtemp(dir=base)), "sync")
    objs = [Rec.create(obj_id=i) for i in range(committers)]
    done, cpu, wall = asyncio.run(committers_run(objs, seconds))
    oaas.configure(OaasConfig(mock_mode=True, native="off"))
    return {"commits_per_s": round(done / wall, 1),
            "loop_cpu_us_per_commit": round(cpu / done * 1e6, 3)}


def async_commit_call_us(commits: int, base: Path) -> float:
    """µs of the ``commit_async()`` call, ``durability="async"``
    (:func:`benchmarks.persistence.calling_thread_us`)."""
    path = Path(tempfile.mkdtemp(dir=base))
    return calling_thread_us("native", path, n=commits)["commit_async_us"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--committers", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=1.0, help="per run")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--commits", type=int, default=20000,
                    help="per run of the commit_async() call measure")
    ap.add_argument("--json", type=str, default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        base = Path(d)
        durable = [durable_loop_cpu(a.committers, a.seconds, base) for _ in range(a.runs)]
        calls = [async_commit_call_us(a.commits, base) for _ in range(a.runs)]
    out: dict[str, Any] = {
        "committers": a.committers,
        "durable_runs": durable,
        "async_commit_call_us_runs": calls,
        "commits_per_s": statistics.median(r["commits_per_s"] for r in durable),
        "loop_cpu_us_per_commit": statistics.median(r["loop_cpu_us_per_commit"]
                                                    for r in durable),
        "async_commit_call_us": statistics.median(calls),
    }
    print(f"committers={a.committers}: {out['commits_per_s']:.0f} durable commits/s, "
          f"loop thread {out['loop_cpu_us_per_commit']:.2f} µs CPU per commit; "
          f"commit_async() call (durability=async) {out['async_commit_call_us']:.2f} µs",
          flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
