"""Persistence benchmark: durable commits per second, calling-thread cost, mapped fields.

Measures, in one process and one run:
- durable commits/s (``durability="sync"``: each commit resolves after its batch's fsync)
  of 1 KB objects (10 fields of 100 bytes, all rewritten per commit) with 1, 16 and 256
  concurrent committers (asyncio tasks, one object each), native vs pure-Python engine;
- the ceiling: the same bytes written straight into the store in fsynced batches of 1, 16
  and 256 commits by Rust with no engine (the ``raw_ceiling`` example of the ``oprc-core``
  crate, ``oprc-py/core/examples/raw_ceiling.rs``, built with cargo on first use): the same
  1, 16 or 256 objects rewritten in turn, as the committers do (``raw``), and, for
  reference, a new object per commit (``raw_insert``);
- the engines alone: durable commits/s of the same records pre-encoded, submitted
  straight to each engine (``submit_future``) by 1, 16 and 256 tasks, with no object in
  front; this separates what the engines do from the Python front end they share;
- calling-thread time per ``commit_async()`` with ``durability="async"`` (the whole call:
  encoding 10 fields plus handing the record to the engine), and of the engine's
  ``submit`` alone;
- the front end of one commit broken down (``durability="async"``): 10 field
  assignments, ``_oaas_prepare`` (encoding), engine submit, ``_oaas_apply``;
- a mapped field of ``--mapped-mib`` MiB (default 1024 = 1 GiB) summed with numpy through
  the zero-copy view, vs reading the same file into memory and summing.

Run: ``python -m benchmarks.persistence [--seconds S] [--repeats R] [--mapped-mib N]
[--json PATH]``. Each durable-rate point runs ``R`` times (default 3), interleaved across
the implementations and the ceiling; the median is reported, every run is in the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from oaas_sdk import Mapped, OaasConfig, OaasObject, mapped, oaas
from oaas_sdk import runtime as _rt
from oaas_sdk.engine import Engine, NativeEngine, PythonEngine
from oaas_sdk.stores import WriteRecord, open_store


@oaas.service("Rec", package="bench")
class Rec(OaasObject):
    f0: bytes = b""
    f1: bytes = b""
    f2: bytes = b""
    f3: bytes = b""
    f4: bytes = b""
    f5: bytes = b""
    f6: bytes = b""
    f7: bytes = b""
    f8: bytes = b""
    f9: bytes = b""


NAMES = [f"f{i}" for i in range(10)]


def _configure(impl: str, path: Path, durability: str) -> None:
    oaas.configure(OaasConfig(storage=f"lmdb:{path}", native="on" if impl == "native" else "off",
                              durability=durability, batch_max_delay_ms=1.0))


async def committers_run(objs: list[Rec], seconds: float) -> tuple[int, float, float]:
    """The durable workload: one task per object, each rewriting its object's 10 fields
    and awaiting ``commit_async()`` until ``seconds`` pass (after committing what is
    pending). Returns (commits, CPU seconds of the event loop's thread, wall seconds)."""
    await oaas.commit_all_async()
    stop = time.perf_counter() + seconds
    done = 0

    async def worker(o: Rec) -> None:
        nonlocal done
        n = 0
        while time.perf_counter() < stop:
            n += 1
            v = bytes([n % 256]) * 100
            for name in NAMES:
                setattr(o, name, v)
            await o.commit_async()
            done += 1

    cpu0, t0 = time.thread_time(), time.perf_counter()
    await asyncio.gather(*(worker(o) for o in objs))
    return done, time.thread_time() - cpu0, time.perf_counter() - t0


def durable_rate(impl: str, committers: int, seconds: float, base: Path) -> float:
    """Durable commits per second with ``committers`` concurrent tasks."""
    path = Path(tempfile.mkdtemp(dir=base, prefix=f"{impl}-{committers}-"))
    _configure(impl, path, "sync")
    objs = [Rec.create(obj_id=i) for i in range(committers)]
    t0 = time.perf_counter()
    done = asyncio.run(committers_run(objs, seconds))[0]
    rate = done / (time.perf_counter() - t0)
    oaas.configure(OaasConfig(mock_mode=True, native="off"))
    return rate


def engine_rate(impl: str, committers: int, seconds: float, base: Path) -> float:
    """Durable commits/s of pre-encoded records submitted straight to one engine by
    ``committers`` tasks (one object each): the engine without the object front end."""
    path = base / f"engine-{impl}-{committers}"
    eng: Engine
    if impl == "native":
        from oaas_sdk import _native

        eng = NativeEngine(_native, str(path), durability="sync", batch_max_delay_ms=1.0)
    else:
        eng = PythonEngine(open_store(f"lmdb:{path}", sync=True), durability="sync",
                     batch_max_delay_ms=1.0)
    entries = {name: b"\xc4\x64" + b"x" * 100 for name in NAMES}

    async def run() -> int:
        loop = asyncio.get_running_loop()
        stop = time.perf_counter() + seconds
        done = 0

        async def worker(oid: int) -> None:
            nonlocal done
            version = 0
            while time.perf_counter() < stop:
                rec = WriteRecord(("bench.Rec", 0, oid), version, entries, time_ms=1)
                await eng.submit_future(rec, loop)
                version += 1
                done += 1

        await asyncio.gather(*(worker(i) for i in range(committers)))
        return done

    t0 = time.perf_counter()
    done = asyncio.run(run())
    rate = done / (time.perf_counter() - t0)
    eng.close()
    return rate


def front_end_us(impl: str, base: Path, n: int = 20000) -> dict[str, float]:
    """Mean calling-thread µs of each step of one commit (``durability="async"``): 10
    assignments; then the general path: ``_oaas_prepare`` (encode), engine submit,
    ``_oaas_apply``; and, on the native engine, the one call that replaces those three
    for objects changed by assignments only (``commit_object``, what ``commit_async``
    uses there). Each part starts with ``n // 4`` unmeasured commits (steady state, as
    :func:`calling_thread_us`)."""
    _configure(impl, base / f"steps-{impl}", "async")
    objs = [Rec.create(obj_id=i) for i in range(256)]
    eng = _rt.current().engine
    clock = time.perf_counter_ns
    steps = {"assign_10_fields": 0, "prepare": 0, "submit": 0, "apply": 0}
    one_call = 0

    async def run() -> None:
        nonlocal one_call
        await oaas.commit_all_async()
        for k in range(-(n // 4), n):
            o = objs[k % 256]
            v = bytes([k % 256]) * 100
            t0 = clock()
            for name in NAMES:
                setattr(o, name, v)
            t1 = clock()
            rec = o._oaas_prepare()
            t2 = clock()
            assert rec is not None
            eng.submit(rec)
            t3 = clock()
            o._oaas_apply(rec)
            t4 = clock()
            if k < 0:
                continue
            steps["assign_10_fields"] += t1 - t0
            steps["prepare"] += t2 - t1
            steps["submit"] += t3 - t2
            steps["apply"] += t4 - t3
        if eng.commit_object is None:
            return
        encoders = Rec._oaas_build_encoders()
        for k in range(-(n // 4), n):
            o = objs[k % 256]
            v = bytes([(k + 7) % 256]) * 100
            for name in NAMES:
                setattr(o, name, v)
            t0 = clock()
            eng.commit_object(o, encoders)
            if k >= 0:
                one_call += clock() - t0

    asyncio.run(run())
    eng.flush()
    oaas.configure(OaasConfig(mock_mode=True, native="off"))
    out = {k: round(v / n / 1000, 2) for k, v in steps.items()}
    if one_call:
        out["commit_object"] = round(one_call / n / 1000, 2)
    return out


#: The repository's Cargo workspace (the raw ceiling is an example of its core crate).
_WORKSPACE = Path(__file__).resolve().parent.parent / "oprc-py" / "Cargo.toml"


@functools.cache
def raw_ceiling_binary() -> Path:
    """Build (release profile, ``cargo build --example raw_ceiling -p oprc-core``) and return
    the raw-ceiling program: ``raw_ceiling PATH N_COMMITS N_FIELDS VALUE_LEN BATCH
    [REWRITE]`` prints the elapsed seconds of the timed writes. Raises ``RuntimeError``
    when cargo is missing or the build fails."""
    cmd = ["cargo", "build", "--release", "--quiet", "--manifest-path", str(_WORKSPACE),
           "-p", "oprc-core", "--example", "raw_ceiling", "--message-format", "json"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"cannot build the raw ceiling ({' '.join(cmd)}): {e!r}") from e
    if p.returncode != 0:
        raise RuntimeError(f"cannot build the raw ceiling: {p.stderr[-2000:]}")
    for line in p.stdout.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
                and msg["target"]["name"] == "raw_ceiling":
            return Path(msg["executable"])
    raise RuntimeError("cargo built no raw_ceiling executable")


def raw_rate(batch: int, base: Path, seconds: float, rewrite: bool = True) -> float:
    """Commits/s of Rust writing the same bytes straight into the store, ``batch`` commits
    per fsynced transaction. ``rewrite``: ``batch`` objects each rewritten in turn (the
    durable-rate workload: every committer rewrites its own object); else a new object
    per commit. A short probe sizes the timed run to about ``seconds``."""
    exe = raw_ceiling_binary()

    def run(n: int) -> float:
        path = tempfile.mkdtemp(dir=base, prefix=f"raw-{batch}-")
        args = [str(exe), path, str(n), "10", "100", str(batch)]
        if rewrite:
            args.append(str(batch))
        out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=600)
        return n / float(out.stdout.strip())

    probe = max(batch * 20, 200)
    n = max(probe, int(run(probe) * seconds) // batch * batch)
    return run(n)


def calling_thread_us(impl: str, base: Path, n: int = 20000) -> dict[str, float]:
    """Mean calling-thread time per commit_async() and per engine submit, durability=async.

    Steady state: ``n // 4`` commits (and submits) run first, unmeasured, so that the
    process has grown its heaps (first-touch page faults are not per-commit costs). The
    commits are timed in 5 blocks of ``n // 5``; the median block mean is reported (one
    block slowed by the VM does not move it)."""
    _configure(impl, base / f"async-{impl}", "async")
    objs = [Rec.create(obj_id=i) for i in range(256)]

    async def run() -> tuple[float, float]:
        await oaas.commit_all_async()
        block = n // 5
        spent = [0] * 5
        for k in range(-(n // 4), block * 5):
            o = objs[k % 256]
            v = bytes([k % 256]) * 100
            for name in NAMES:
                setattr(o, name, v)
            t = time.perf_counter_ns()
            aw = o.commit_async()
            if k >= 0:
                spent[k // block] += time.perf_counter_ns() - t
            await aw
        eng = _rt.current().engine
        entries = {name: b"\xc4\x64" + b"x" * 100 for name in NAMES}
        recs = [WriteRecord(("bench.Rec", 0, 10_000 + k), 0, dict(entries), time_ms=1)
                for k in range(n + n // 4)]
        for r in recs[n:]:
            eng.submit(r)
        recs = recs[:n]
        t = time.perf_counter_ns()
        for r in recs:
            eng.submit(r)
        submit = (time.perf_counter_ns() - t) / n
        eng.flush()
        return statistics.median(spent) / block / 1000, submit / 1000

    commit_us, submit_us = asyncio.run(run())
    oaas.configure(OaasConfig(mock_mode=True, native="off"))
    return {"commit_async_us": round(commit_us, 2), "engine_submit_us": round(submit_us, 2)}


def mapped_sum(mib: int, base: Path) -> dict[str, float]:
    import numpy as np

    n = mib * (1 << 20) // 4

    @oaas.service("Big", package="bench")
    class Big(OaasObject):
        data: Mapped = mapped(shape=(n,), dtype="float32")

    _configure("native", base / "mapped", "sync")
    b = Big.create(obj_id=1)
    t = time.perf_counter()
    b.data[:] = 1.0
    b.commit()
    fill = time.perf_counter() - t
    path = base / "mapped"
    from oaas_sdk.mapped import mapped_path

    fpath = mapped_path(b, "data")
    oaas.configure(OaasConfig(mock_mode=True, native="off"))
    _configure("native", path, "sync")
    t = time.perf_counter()
    b2 = Big.load(1)
    s1 = float(b2.data.sum(dtype=np.float64))
    t_map = time.perf_counter() - t
    t = time.perf_counter()
    arr = np.fromfile(str(fpath), dtype="float32")
    s2 = float(arr.sum(dtype=np.float64))
    t_read = time.perf_counter() - t
    assert s1 == s2 == float(n)
    del arr
    oaas.configure(OaasConfig(mock_mode=True, native="off"))
    return {"mib": mib, "fill_and_commit_s": round(fill, 3),
            "open_and_sum_mapped_s": round(t_map, 3),
            "read_into_memory_and_sum_s": round(t_read, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="per durable-rate point")
    ap.add_argument("--mapped-mib", type=int, default=1024)
    ap.add_argument("--json", type=str, default=None)
    ap.add_argument("--repeats", type=int, default=3,
                    help="interleaved runs of each durable-rate point; the median is reported")
    a = ap.parse_args()
    out: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        base = Path(d)
        rates: dict[str, dict[int, float]] = {"python": {}, "native": {}, "raw": {},
                                              "raw_insert": {}}
        runs: dict[str, dict[int, list[float]]] = {k: {} for k in rates}
        for c in (1, 16, 256):
            # Interleaved repeats, median reported: the VM's speed drifts within minutes.
            for _ in range(a.repeats):
                for impl in ("python", "native"):
                    runs[impl].setdefault(c, []).append(
                        round(durable_rate(impl, c, a.seconds, base), 1))
                runs["raw"].setdefault(c, []).append(round(raw_rate(c, base, a.seconds), 1))
                runs["raw_insert"].setdefault(c, []).append(
                    round(raw_rate(c, base, a.seconds, rewrite=False), 1))
            for k in rates:
                rates[k][c] = statistics.median(runs[k][c])
            print(f"committers={c:>3}: python {rates['python'][c]:>9.1f}/s  native "
                  f"{rates['native'][c]:>9.1f}/s  raw ceiling {rates['raw'][c]:>9.1f}/s  "
                  f"native/python {rates['native'][c] / rates['python'][c]:.2f}x  "
                  f"native/raw {rates['native'][c] / rates['raw'][c]:.2f}  "
                  f"(runs: native {runs['native'][c]}, raw {runs['raw'][c]})", flush=True)
        out["repeats"] = a.repeats
        out["durable_commits_per_s_runs"] = runs
        out["durable_commits_per_s"] = rates
        eng_rates: dict[str, dict[int, float]] = {"python": {}, "native": {}}
        for c in (1, 16, 256):
            for impl in ("python", "native"):
                eng_rates[impl][c] = round(engine_rate(impl, c, a.seconds, base), 1)
            print(f"engines alone, committers={c:>3}: python {eng_rates['python'][c]:>9.1f}/s  "
                  f"native {eng_rates['native'][c]:>9.1f}/s  native/python "
                  f"{eng_rates['native'][c] / eng_rates['python'][c]:.2f}x  native/raw "
                  f"{eng_rates['native'][c] / rates['raw'][c]:.2f}", flush=True)
        out["engine_only_commits_per_s"] = eng_rates
        out["calling_thread"] = {i: calling_thread_us(i, base) for i in ("python", "native")}
        print("calling thread per commit_async (durability=async):", out["calling_thread"],
              flush=True)
        out["front_end_us"] = {i: front_end_us(i, base) for i in ("python", "native")}
        print("front end per commit, µs (durability=async):", out["front_end_us"], flush=True)
        out["mapped"] = mapped_sum(a.mapped_mib, base)
        print("mapped field:", out["mapped"], flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
