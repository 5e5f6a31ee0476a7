"""The workload definitions, run by every interpreter of the suite, one SDK per process.

``python -m benchmarks.workload --sdk SDK --suite SUITE [--native on|off] [--params JSON]``

``SDK`` is ``oaas_sdk`` (this repository), ``oaas_sdk2_py`` (oaas-sdk2-py 0.3.6, run from its
own virtual environment) or ``plain`` (plain Python objects with the same API and no state
management: the floor). The classes below are defined once against the simplified API that
both SDKs share (``oaas.service``, ``OaasObject``, ``oaas.method``, ``oaas.getter``,
``oaas.setter``), so both SDKs run the same source code; only the import differs. The
process prints one line ``@@RESULT@@ <json>`` on stdout; the driver (``python -m
benchmarks``) parses it.

This module must import nothing outside the standard library except the SDK under test:
the oaas-sdk2-py environment has nothing else installed.

Units everywhere: latencies in nanoseconds (``*_ns``), rates per second (``*_per_s``),
memory in bytes. Timing uses :func:`time.perf_counter_ns`; every measured loop is preceded
by a warm-up of the same operation.
"""

import argparse
import asyncio
import gc
import importlib
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import traceback
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from benchmarks import ycsb

now = time.perf_counter_ns

RESULT_MARKER = "@@RESULT@@"
SDKS = ("oaas_sdk", "oaas_sdk2_py", "plain")
FIELDS = tuple(f"field{i}" for i in range(ycsb.FIELD_COUNT))
REDIS_ENV = "OAAS_BENCH_REDIS_URL"  # set to a redis:// URL to add a "redis" store to ycsb
WINDOW = 64  # readings in a sensor's moving-average window


# ---------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------
def percentile(sorted_values: list[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of sorted values, linear interpolation between ranks."""
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def summarize(samples_ns: list[float], ops_per_sample: int = 1) -> dict[str, Any]:
    """Latency summary of per-operation samples (nanoseconds per operation).

    ``ops_per_s`` is ``1e9 / mean``; ``p50_ns``/``p95_ns``/``p99_ns`` are percentiles of the
    samples. When ``ops_per_sample > 1`` each sample is the mean of a block of that many
    operations, so the percentiles describe block means (used for sub-microsecond
    operations, where timing one operation would measure the clock instead).
    """
    s = sorted(samples_ns)
    mean = sum(s) / len(s) if s else float("nan")
    return {
        "samples": len(s),
        "ops_per_sample": ops_per_sample,
        "ops_per_s": 1e9 / mean if mean > 0 else float("inf"),
        "mean_ns": mean,
        "p50_ns": percentile(s, 50),
        "p95_ns": percentile(s, 95),
        "p99_ns": percentile(s, 99),
        "min_ns": s[0] if s else float("nan"),
        "max_ns": s[-1] if s else float("nan"),
    }


def timer_overhead_ns() -> float:
    """Median cost of an empty ``perf_counter_ns()`` pair, in ns (subtracted from
    single-operation samples)."""
    vals = []
    for _ in range(5000):
        t0 = now()
        vals.append(now() - t0)
    vals.sort()
    return float(vals[len(vals) // 2])


# ---------------------------------------------------------------------------------------
# The plain-object floor: the same API, no state management
# ---------------------------------------------------------------------------------------
class _PlainObject:
    """Base class of the floor: ``create`` registers the object in a dict, ``load`` looks
    it up, commits do nothing. Fields are plain instance attributes."""

    _registry: dict[Any, Any] = {}
    _defaults: dict[str, Any] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls._registry = {}
        cls._defaults = {n: cls.__dict__.get(n) for n in cls.__dict__.get("__annotations__", {})
                         if not n.startswith("_")}

    @classmethod
    def create(cls, obj_id: Any = None, local: Any = None) -> Any:
        obj = object.__new__(cls)
        d = obj.__dict__
        for n, v in cls._defaults.items():
            d[n] = v.copy() if isinstance(v, list | dict | set) else v
        cls._registry[obj_id if obj_id is not None else id(obj)] = obj
        return obj

    @classmethod
    def load(cls, obj_id: Any, partition_id: Any = None) -> Any:
        return cls._registry[obj_id]

    def commit(self) -> None:
        pass

    async def commit_async(self) -> None:
        pass


class _PlainOaas:
    """Decorators of the floor: ``service`` and ``method`` leave the class and function as
    they are; ``getter``/``setter`` read and write the field."""

    def service(self, name: str, package: str = "default") -> Callable[[type], type]:
        return lambda cls: cls

    def method(self, *a: Any, **kw: Any) -> Callable[[Any], Any]:
        return lambda fn: fn

    def getter(self, field: str) -> Callable[[Any], Any]:
        def deco(fn: Any) -> Any:
            async def get(self: Any) -> Any:
                return getattr(self, field)
            return get
        return deco

    def setter(self, field: str) -> Callable[[Any], Any]:
        def deco(fn: Any) -> Any:
            async def set_(self: Any, value: Any) -> Any:
                setattr(self, field, value)
                return value
            return set_
        return deco

    async def commit_all_async(self) -> None:
        pass

    def commit_all(self) -> None:
        pass


# ---------------------------------------------------------------------------------------
# The SDK under test
# ---------------------------------------------------------------------------------------
@dataclass
class Classes:
    Counter: Any
    Record: Any
    Sensor: Any


def define_classes(oaas: Any, base: type) -> Classes:
    """The benchmark's OaaS classes, written once against the API both SDKs share."""

    @oaas.service("BenchCounter", package="bench")
    class BenchCounter(base):  # type: ignore[misc, valid-type]
        count: int = 0
        name: str = "counter"

        @oaas.method()
        async def peek(self, n: int = 1) -> int:
            return self.count + n

        @oaas.method()
        async def bump(self, n: int = 1) -> int:
            self.count += n
            return self.count

        @oaas.getter("count")
        async def get_count(self) -> int: ...

        @oaas.setter("count")
        async def set_count(self, value: int) -> int: ...

    @oaas.service("YcsbRecord", package="bench")
    class YcsbRecord(base):  # type: ignore[misc, valid-type]
        field0: str = ""
        field1: str = ""
        field2: str = ""
        field3: str = ""
        field4: str = ""
        field5: str = ""
        field6: str = ""
        field7: str = ""
        field8: str = ""
        field9: str = ""

    @oaas.service("Sensor", package="bench")
    class Sensor(base):  # type: ignore[misc, valid-type]
        readings: list[float] = []
        total: float = 0.0
        samples: int = 0
        average: float = 0.0

        @oaas.method()
        async def record(self, value: float) -> float:
            """Add one reading; returns the moving average over the last WINDOW readings."""
            r = self.readings
            r.append(value)
            total = self.total + value
            if len(r) > WINDOW:
                total -= r.pop(0)
            self.total = total
            self.samples += 1
            self.average = total / len(r)
            return self.average

    return Classes(BenchCounter, YcsbRecord, Sensor)


class Sdk:
    """One SDK under test in this process: import, configuration per store, versions."""

    def __init__(self, name: str, native: str) -> None:
        self.name = name
        self.native = native
        self.missing: str | None = None
        self._tmpdirs: list[str] = []
        if name == "plain":
            self.oaas: Any = _PlainOaas()
            self.classes = define_classes(self.oaas, _PlainObject)
            self.version = platform.python_version()
            self.implementation = "plain"
            return
        mod = importlib.import_module(name)
        self.mod = mod
        self.oaas = mod.oaas
        self.Config = mod.OaasConfig
        dist = "oaas-sdk" if name == "oaas_sdk" else "oaas-sdk2-py"
        self.version = getattr(mod, "__version__", None) or _dist_version(dist)
        self.implementation = "python"
        if name == "oaas_sdk":
            try:
                self.configure("memory")
            except Exception as e:  # ConfigError: native="on" without the extension
                self.missing = f"{type(e).__name__}: {e}"
                return
            self.implementation = self.oaas.stats()["implementation"]
        else:
            self.configure("memory")
        self.classes = define_classes(self.oaas, mod.OaasObject)

    @property
    def stores(self) -> tuple[str, ...]:
        """Stores this SDK can run on: oaas-sdk2-py has only its in-memory mock mode."""
        if self.name != "oaas_sdk":
            return ("memory",)
        # The Redis store, when a server is named (docs/benchmarks.md, "Not done yet").
        return ("memory", "lmdb", "redis") if os.environ.get(REDIS_ENV) else ("memory", "lmdb")

    def configure(self, store: str, durability: str = "sync", **extra: Any) -> None:
        """Start over on a fresh ``store`` (``"memory"`` or ``"lmdb"``, a new directory)."""
        if self.name == "plain":
            for c in (self.classes.Counter, self.classes.Record, self.classes.Sensor):
                c._registry.clear()
            return
        if self.name == "oaas_sdk2_py":
            if store != "memory":
                raise ValueError("oaas-sdk2-py has no durable local store")
            self.oaas.configure(self.Config(async_mode=True, mock_mode=True))
            return
        if store == "memory":
            storage = "memory"
        elif store == "redis":  # a fresh key prefix: a store of its own on the server
            url = os.environ[REDIS_ENV]
            self._redis_runs = getattr(self, "_redis_runs", 0) + 1
            storage = (f"{url}{'&' if '?' in url else '?'}"
                       f"prefix=bench{os.getpid()}x{self._redis_runs}")
        else:
            d = tempfile.mkdtemp(prefix="oaas-bench-")
            self._tmpdirs.append(d)
            storage = f"lmdb:{d}"
        self.oaas.configure(self.Config(storage=storage, durability=durability,
                                        native=self.native, **extra))

    def evict(self, obj: Any) -> None:
        """Make ``obj`` not live, so that the next load goes through the cache or the store.

        oaas-sdk holds live objects weakly (identity map), so dropping the last reference is
        enough. oaas-sdk2-py keeps every object of a session in a dict; this removes it
        from there (internal API of 0.3.6)."""
        if self.name == "oaas_sdk2_py":
            obj.session.remote_obj_dict.pop(obj.meta, None)
            obj.session.local_obj_dict.pop(obj.meta, None)
            mgr = getattr(obj, "_auto_session_manager", None)
            if mgr is not None:
                mgr._managed_objects.discard(obj)

    def cleanup(self) -> None:
        for d in self._tmpdirs:
            shutil.rmtree(d, ignore_errors=True)
        self._tmpdirs.clear()

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"sdk": self.name, "version": self.version,
                                "implementation": self.implementation,
                                "python": platform.python_version(),
                                "executable": sys.executable}
        if self.name != "plain":
            info["module_file"] = getattr(self.mod, "__file__", None)
            info["pydantic"] = _dist_version("pydantic")
        if self.name == "oaas_sdk2_py":
            info["oprc_py"] = _dist_version("oprc-py")
        if self.name == "oaas_sdk" and self.implementation == "native":
            try:
                from oaas_sdk import _native  # type: ignore[attr-defined]

                info["native_build"] = _native.build_info()
            except Exception as e:  # pragma: no cover - reported, not fatal
                info["native_build"] = repr(e)
        return info


def _dist_version(dist: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return None


# ---------------------------------------------------------------------------------------
# Suite "ops": latency of each operation
# ---------------------------------------------------------------------------------------
SingleOp = Callable[[int], Awaitable[int]]


async def _time_single(op: SingleOp, n: int, warmup: int, overhead: float) -> list[float]:
    """Run ``op(i)`` ``warmup`` then ``n`` times; ``op`` returns the ns it measured itself
    (so set-up outside the measured region is excluded). The timer overhead is subtracted."""
    for i in range(warmup):
        await op(i)
    gc.collect()
    out = []
    for i in range(warmup, warmup + n):
        out.append(max(0.0, await op(i) - overhead))
    return out


async def _summary_of(op: SingleOp, n: int, warmup: int, overhead: float) -> dict[str, Any]:
    return summarize(await _time_single(op, n, warmup, overhead))


async def _best_of(plan: dict[str, Callable[[], Awaitable[dict[str, Any]]]],
                   repeats: int) -> dict[str, dict[str, Any]]:
    """Measure every operation of ``plan`` once per round, ``repeats`` rounds, and keep for
    each the round with the lowest mean (as ``timeit`` advises: slower rounds measure
    interference, not the code). Rounds interleave operations, so a burst of noise on the
    machine does not hit every round of one operation. ``round_means_ns`` lists all."""
    best: dict[str, dict[str, Any]] = {}
    means: dict[str, list[float]] = {name: [] for name in plan}
    for _ in range(repeats):
        for name, measure in plan.items():
            s = await measure()
            means[name].append(s["mean_ns"])
            if name not in best or s["mean_ns"] < best[name]["mean_ns"]:
                best[name] = s
    for name, s in best.items():
        s["round_means_ns"] = means[name]
    return best


async def bench_ops(sdk: Sdk, p: dict[str, Any]) -> dict[str, Any]:
    """Latency of the basic operations on the in-memory store (oaas-sdk2-py's mock mode)
    and, for oaas-sdk, commits on LMDB with ``durability="sync"``.

    Operations (one sample each unless noted):
    ``create`` new object with a fresh id; ``load`` a live object (identity map);
    ``load_cold`` an object that is not live, then read one field (cache or store, decode);
    ``field_read``/``field_write`` one field (samples are blocks of 100 operations);
    ``method_call`` a method that only reads; ``method_update`` a method that changes a
    field (with the SDK's auto-commit); ``accessor_get``/``accessor_set`` the getter and
    setter of a field; ``commit``/``commit_async`` assign one field then commit it (blocking
    / awaited). ``commit_lmdb``/``commit_async_lmdb``: the same on LMDB (oaas-sdk only).
    With ``repeats`` > 1 each operation is measured that many times, interleaved, and the
    round with the lowest mean is reported (see :func:`_best_of`).
    """
    n = int(p.get("n", 2000))
    warm = int(p.get("warmup", max(50, n // 10)))
    repeats = int(p.get("repeats", 1))
    overhead = timer_overhead_ns()
    C = sdk.classes.Counter
    sdk.configure("memory")
    res: dict[str, Any] = {"timer_overhead_ns": overhead, "store": "memory"}

    async def op_create(i: int) -> int:
        t0 = now()
        C.create()
        return now() - t0

    plan: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {}
    plan["create"] = lambda: _summary_of(op_create, n, warm, overhead)

    live = [C.create(obj_id=10_000_000 + i) for i in range(100)]
    for o in live:
        o.commit()

    async def op_load(i: int) -> int:
        k = 10_000_000 + i % 100
        t0 = now()
        C.load(k)
        return now() - t0

    plan["load"] = lambda: _summary_of(op_load, n, warm, overhead)

    cold_base = 20_000_000
    for i in range(n + warm):
        o = C.create(obj_id=cold_base + i)
        o.count = i
        o.commit()
        sdk.evict(o)
    del o
    gc.collect()

    async def op_load_cold(i: int) -> int:
        t0 = now()
        o = C.load(cold_base + i)
        o.count  # noqa: B018 - the read decodes the field
        t = now() - t0
        sdk.evict(o)
        return t

    plan["load_cold"] = lambda: _summary_of(op_load_cold, n, warm, overhead)

    o = live[0]
    o.count  # noqa: B018
    blocks = max(20, n // 10)

    def read_block(o: Any = o) -> int:
        t0 = now()
        for _ in range(10):
            o.count; o.count; o.count; o.count; o.count  # noqa: B018, E702
            o.count; o.count; o.count; o.count; o.count  # noqa: B018, E702
        return now() - t0

    def write_block(o: Any = o) -> int:
        t0 = now()
        for i in range(10):
            o.count = i; o.count = i; o.count = i; o.count = i; o.count = i  # noqa: E702
            o.count = i; o.count = i; o.count = i; o.count = i; o.count = i  # noqa: E702
        return now() - t0

    async def blocks_of(fn: Callable[[], int]) -> dict[str, Any]:
        for _ in range(max(5, blocks // 10)):
            fn()
        gc.collect()
        summary = summarize([fn() / 100.0 for _ in range(blocks)], ops_per_sample=100)
        o.commit()
        return summary

    plan["field_read"] = lambda: blocks_of(read_block)
    plan["field_write"] = lambda: blocks_of(write_block)

    async def op_peek(i: int) -> int:
        t0 = now()
        await o.peek(1)
        return now() - t0

    async def op_bump(i: int) -> int:
        t0 = now()
        await o.bump(1)
        return now() - t0

    async def op_get(i: int) -> int:
        t0 = now()
        await o.get_count()
        return now() - t0

    async def op_set(i: int) -> int:
        t0 = now()
        await o.set_count(i)
        return now() - t0

    async def op_commit(i: int) -> int:
        t0 = now()
        o.count = i
        o.commit()
        return now() - t0

    async def op_commit_async(i: int) -> int:
        t0 = now()
        o.count = i
        await o.commit_async()
        return now() - t0

    for name, fn in (("method_call", op_peek), ("method_update", op_bump),
                     ("accessor_get", op_get), ("accessor_set", op_set),
                     ("commit", op_commit), ("commit_async", op_commit_async)):
        plan[name] = lambda fn=fn: _summary_of(fn, n, warm, overhead)
    res.update(await _best_of(plan, repeats))

    if "lmdb" in sdk.stores:
        sdk.configure("lmdb", durability="sync")
        ol = C.create(obj_id=1)
        ol.commit()
        nl = int(p.get("n_lmdb", 200))

        async def op_commit_l(i: int) -> int:
            t0 = now()
            ol.count = i
            ol.commit()
            return now() - t0

        async def op_commit_async_l(i: int) -> int:
            t0 = now()
            ol.count = i
            await ol.commit_async()
            return now() - t0

        res.update(await _best_of({
            "commit_lmdb": lambda: _summary_of(op_commit_l, nl, 20, overhead),
            "commit_async_lmdb": lambda: _summary_of(op_commit_async_l, nl, 20, overhead),
        }, repeats))
        res["lmdb_config"] = _sdk_config(sdk)
    return res


def _sdk_config(sdk: Sdk) -> dict[str, Any]:
    cfg = sdk.oaas.config
    return {"durability": cfg.durability, "batch_max_delay_ms": cfg.batch_max_delay_ms,
            "batch_max_entries": cfg.batch_max_entries}


# ---------------------------------------------------------------------------------------
# Suite "ycsb": the YCSB core workloads A-F
# ---------------------------------------------------------------------------------------
async def _ycsb_one(sdk: Sdk, w: ycsb.Workload, store: str, records: int, operations: int,
                    clients: int, seed: int) -> dict[str, Any]:
    """Load ``records`` records, then run ``operations`` operations of workload ``w`` from
    ``clients`` concurrent clients (coroutines on one event loop). Keys ``k`` are object ids
    ``k + 1``. Returns load and run throughput and per-operation latency."""
    R = sdk.classes.Record
    sdk.configure(store, durability="sync")
    rng = random.Random(seed)
    pool = [ycsb.field_value(rng) for _ in range(1024)]
    npool = len(pool)

    async def insert(k: int) -> None:
        r = R.create(obj_id=k + 1)
        for j, f in enumerate(FIELDS):
            setattr(r, f, pool[(k * 7 + j) % npool])
        await r.commit_async()

    # Load phase: insert every record, committed in chunks.
    t0 = now()
    chunk = 1000
    for start in range(0, records, chunk):
        for k in range(start, min(records, start + chunk)):
            r = R.create(obj_id=k + 1)
            for j, f in enumerate(FIELDS):
                setattr(r, f, pool[(k * 7 + j) % npool])
        del r
        await sdk.oaas.commit_all_async()
    load_ns = now() - t0
    gc.collect()

    keys = ycsb.KeyChooser(w, records, operations, rng)
    chooser = ycsb.OperationChooser(w, rng)
    lat: dict[str, list[float]] = {}
    scanned = 0

    async def read(k: int) -> None:
        r = R.load(k + 1)
        for f in FIELDS:
            getattr(r, f)

    async def update(k: int, v: str) -> None:
        r = R.load(k + 1)
        setattr(r, FIELDS[k % ycsb.FIELD_COUNT], v)
        await r.commit_async()

    async def rmw(k: int, v: str) -> None:
        r = R.load(k + 1)
        for f in FIELDS:
            getattr(r, f)
        setattr(r, FIELDS[k % ycsb.FIELD_COUNT], v)
        await r.commit_async()

    async def client(nops: int) -> None:
        nonlocal scanned
        for i in range(nops):
            op = chooser.next()
            t = now()
            if op == "read":
                await read(keys.next_key())
            elif op == "update":
                await update(keys.next_key(), pool[i % npool])
            elif op == "rmw":
                await rmw(keys.next_key(), pool[i % npool])
            elif op == "insert":
                k = keys.next_insert()
                await insert(k)
                keys.acknowledge_insert(k)
            else:  # scan: consecutive ids from a zipfian start
                start = keys.next_key()
                end = min(start + keys.next_scan_length(), keys.inserts.last + 1)
                for k in range(start, end):
                    await read(k)
                scanned += end - start
            lat.setdefault(op, []).append(now() - t)

    per_client = [operations // clients + (1 if c < operations % clients else 0)
                  for c in range(clients)]
    t0 = now()
    await asyncio.gather(*(client(m) for m in per_client))
    await sdk.oaas.commit_all_async()
    run_ns = now() - t0
    out: dict[str, Any] = {
        "store": store, "records": records, "operations": operations, "clients": clients,
        "load_records_per_s": records / (load_ns / 1e9),
        "ops_per_s": operations / (run_ns / 1e9),
        "run_s": run_ns / 1e9,
        "latency": {op: summarize(v) for op, v in sorted(lat.items())},
        "latency_all": summarize([x for v in lat.values() for x in v]),
    }
    if scanned:
        out["records_scanned"] = scanned
    return out


async def bench_ycsb(sdk: Sdk, p: dict[str, Any]) -> dict[str, Any]:
    """YCSB core workloads A-F (Cooper et al., SoCC 2010) on each store the SDK has: records
    of 10 fields of 100 bytes, scrambled-zipfian key choice with constant 0.99 (latest for
    D), scans of 1-100 consecutive ids (E); reads read every field, updates write one."""
    records = int(p.get("records", 1000))
    operations = int(p.get("operations", 2000))
    clients = int(p.get("clients", 8))
    workloads = p.get("workloads", list(ycsb.WORKLOADS))
    stores = [s for s in p.get("stores", sdk.stores) if s in sdk.stores]
    out: dict[str, Any] = {}
    for store in stores:
        for wname in workloads:
            w = ycsb.WORKLOADS[wname]
            out.setdefault(store, {})[wname] = await _ycsb_one(
                sdk, w, store, records, operations, clients, seed=ord(wname))
            sdk.cleanup()
    return out


# ---------------------------------------------------------------------------------------
# Suite "throughput": batches of object commits with commit_all_async
# ---------------------------------------------------------------------------------------
async def bench_throughput(sdk: Sdk, p: dict[str, Any]) -> dict[str, Any]:
    """Objects per second committed by one ``await oaas.commit_all_async()`` of a batch of
    ``size`` changed objects (LMDB, ``durability="sync"``: resolves once fsynced). ``insert``:
    new objects; ``update``: one field changed on each of the batch's committed objects.
    Reports median, mean and standard deviation over ``repeats`` batches."""
    if "lmdb" not in sdk.stores:
        return {"skipped": "no durable store: oaas-sdk2-py writes at assignment, it has no "
                           "batched commit to measure"}
    sizes = [int(s) for s in p.get("sizes", [1000, 10000, 100000])]
    repeats = p.get("repeats", {})
    C = sdk.classes.Counter
    out: dict[str, Any] = {"store": "lmdb", "durability": "sync"}
    for size in sizes:
        reps = int(repeats.get(str(size), 3))
        ins: list[float] = []
        upd: list[float] = []
        for _ in range(reps):
            sdk.configure("lmdb", durability="sync")
            objs = [C.create(obj_id=i + 1) for i in range(size)]
            for i, o in enumerate(objs):
                o.count = i
            gc.collect()
            t0 = now()
            await sdk.oaas.commit_all_async()
            ins.append(size / ((now() - t0) / 1e9))
            for o in objs:
                o.count += 1
            t0 = now()
            await sdk.oaas.commit_all_async()
            upd.append(size / ((now() - t0) / 1e9))
            del objs, o
            sdk.cleanup()
        out[str(size)] = {"repeats": reps, "insert": _spread(ins), "update": _spread(upd)}
    return out


def _spread(v: list[float]) -> dict[str, Any]:
    import statistics

    return {"objects_per_s_median": statistics.median(v),
            "objects_per_s_mean": statistics.fmean(v),
            "objects_per_s_stdev": statistics.stdev(v) if len(v) > 1 else None,
            "values": v}


# ---------------------------------------------------------------------------------------
# Suite "memory": bytes per live and per cached object
# ---------------------------------------------------------------------------------------
def _rss_bytes() -> int:
    """Resident set size of this process, bytes (``/proc/self/statm``; 0 where absent)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _values(k: int, pool: list[str]) -> list[str]:
    """Ten fresh 100-byte strings for record ``k`` (new objects, not shared)."""
    tag = f"{k:08d}"
    return [pool[(k + j) % len(pool)][:-8] + tag for j in range(ycsb.FIELD_COUNT)]


def _measure(mode: str) -> int:
    """Bytes in use now: tracemalloc's traced total (``"traced"``) or the RSS (``"rss"``)."""
    gc.collect()
    return tracemalloc.get_traced_memory()[0] if mode == "traced" else _rss_bytes()


def _make_record(R: Any, k: int, pool: list[str]) -> Any:
    r = R.create(obj_id=k)
    for f, v in zip(FIELDS, _values(k, pool), strict=True):
        setattr(r, f, v)
    return r


CHUNK = 50  # objects created at a time for the "cached" memory measurement


async def bench_memory(sdk: Sdk, p: dict[str, Any]) -> dict[str, Any]:
    """Bytes per object holding one YCSB record (10 fields of 100-byte strings).

    ``live``: objects created, committed and still referenced (instance, decoded values,
    committed bytes, cache entry and, for the memory store, the store's copy).
    ``cached``: objects committed and no longer referenced, so only the SDK's cache and
    store keep them. Each is measured twice: ``rss`` (resident set size delta of the
    process, everything including LMDB pages and allocator slack) and ``traced``
    (tracemalloc: Python heap allocations only). The floor (``plain``) reports plain
    objects, dicts and dataclasses holding the same strings."""
    n = int(p.get("objects", 5000))
    units = p.get("units")  # run only these stores / plain containers (one per process)
    pool = [ycsb.field_value(random.Random(7)) for _ in range(64)]
    out: dict[str, Any] = {"objects": n, "record": "10 str fields x 100 bytes"}
    if sdk.name == "plain":
        from dataclasses import make_dataclass

        DC = make_dataclass("DC", [(f, str) for f in FIELDS])
        DCS = make_dataclass("DCS", [(f, str) for f in FIELDS], slots=True)
        R = sdk.classes.Record

        def mk_obj(k: int) -> Any:
            r = R.create(obj_id=k)
            for f, v in zip(FIELDS, _values(k, pool), strict=True):
                setattr(r, f, v)
            return r

        makers: dict[str, Callable[[int], Any]] = {
            "plain_object": mk_obj,
            "dict": lambda k: dict(zip(FIELDS, _values(k, pool), strict=True)),
            "dataclass": lambda k: DC(*_values(k, pool)),
            "dataclass_slots": lambda k: DCS(*_values(k, pool)),
        }
        for name, mk in makers.items():
            if units is not None and name not in units:
                continue
            res = {}
            for mode in ("rss", "traced"):
                sdk.configure("memory")
                gc.collect()
                if mode == "traced":
                    tracemalloc.start()
                b0 = tracemalloc.get_traced_memory()[0] if mode == "traced" else _rss_bytes()
                keep = [mk(k) for k in range(n)]
                gc.collect()
                b1 = tracemalloc.get_traced_memory()[0] if mode == "traced" else _rss_bytes()
                if mode == "traced":
                    tracemalloc.stop()
                res[f"live_{mode}_bytes_per_object"] = (b1 - b0) / n
                del keep
            out[name] = res
        return out

    R = sdk.classes.Record
    for store in sdk.stores:
        if units is not None and store not in units:
            continue
        res: dict[str, Any] = {}
        base = 0
        for mode in ("rss", "traced"):
            sdk.configure(store, durability="sync")
            gc.collect()
            if mode == "traced":
                tracemalloc.start()

            # live first (nothing freed before it is measured): created, committed, kept
            m0 = _measure(mode)
            keep = [_make_record(R, base + k + 1, pool) for k in range(n)]
            await sdk.oaas.commit_all_async()
            m1 = _measure(mode)
            res[f"live_{mode}_bytes_per_object"] = (m1 - m0) / n
            # cached: created and committed in small chunks and dropped, so at most one
            # chunk of instances is ever live (and at most that much freed memory counted)
            for start in range(0, n, CHUNK):
                objs = [_make_record(R, base + n + k + 1, pool)
                        for k in range(start, min(n, start + CHUNK))]
                await sdk.oaas.commit_all_async()
                for o in objs:
                    sdk.evict(o)
                del objs, o
            m2 = _measure(mode)
            res[f"cached_{mode}_bytes_per_object"] = (m2 - m1) / n
            if mode == "traced":
                tracemalloc.stop()
            if sdk.name == "oaas_sdk" and mode == "rss":
                # what the cache counts against cache_max_bytes, per object it holds
                st = sdk.oaas.stats()
                res["cache_accounted_bytes_per_object"] = (
                    st["cache_bytes"] / st["cache_entries"] if st["cache_entries"] else None)
            del keep
            base += 2 * n
            sdk.cleanup()
        out[store] = res
    return out


# ---------------------------------------------------------------------------------------
# Suite "pipeline": a 1 kHz telemetry acquisition loop
# ---------------------------------------------------------------------------------------
async def bench_pipeline(sdk: Sdk, p: dict[str, Any]) -> dict[str, Any]:
    """Sensor objects fed one reading per tick each, a moving average over the last 64
    readings computed by the ``record`` method, commits in the background
    (``auto_commit=False``; a task commits every changed object each ``commit_interval_ms``
    with ``commit_all_async``; LMDB with ``durability="sync"`` for oaas-sdk).

    ``max_rate_hz``: ticks per second when the loop runs as fast as it can for
    ``duration_s`` with the background commits running (the highest sustained rate).
    ``paced``: the loop paced at ``target_hz`` (1 kHz) against absolute deadlines:
    ``achieved_hz``, ``lateness_p50_us``/``lateness_p99_us`` (tick start after its
    deadline), ``busy_fraction`` (time spent in ticks / wall time). ``headroom_x``:
    ``max_rate_hz / target_hz``; ``headroom_busy_x``: ``1 / busy_fraction``."""
    sensors = int(p.get("sensors", 4))
    duration = float(p.get("duration_s", 1.0))
    target = float(p.get("target_hz", 1000.0))
    interval = float(p.get("commit_interval_ms", 10.0)) / 1000.0
    out: dict[str, Any] = {"sensors": sensors, "target_hz": target, "duration_s": duration,
                           "commit_interval_ms": interval * 1000}
    stores = ["lmdb", "memory"] if "lmdb" in sdk.stores else ["memory"]
    for store in stores:
        out[store] = await _pipeline_one(sdk, store, sensors, duration, target, interval)
        sdk.cleanup()
    return out


async def _pipeline_one(sdk: Sdk, store: str, sensors: int, duration: float, target: float,
                        interval: float) -> dict[str, Any]:
    """One store of the pipeline suite (see :func:`bench_pipeline`)."""
    S = sdk.classes.Sensor
    values = [20.0 + 5.0 * math.sin(i / 10.0) for i in range(1000)]
    extra = {"auto_commit": False} if sdk.name == "oaas_sdk" else {}
    sdk.configure(store, durability="sync", **extra)
    fleet = [S.create(obj_id=i + 1) for i in range(sensors)]
    await sdk.oaas.commit_all_async()
    stop = False
    rounds = 0
    commit_ns: list[float] = []

    async def committer() -> None:
        nonlocal rounds
        while not stop:
            await asyncio.sleep(interval)
            t = now()
            await sdk.oaas.commit_all_async()
            commit_ns.append(now() - t)
            rounds += 1

    async def tick(i: int) -> None:
        v = values[i % 1000]
        for s in fleet:
            await s.record(v)

    for i in range(200):  # warm-up
        await tick(i)
    task = asyncio.create_task(committer())
    # Unpaced: the highest sustained rate.
    ticks = 0
    t0 = now()
    end = t0 + int(duration * 1e9)
    while now() < end:
        await tick(ticks)
        ticks += 1
        await asyncio.sleep(0)  # let the committer run, as a paced loop would
    max_rate = ticks / ((now() - t0) / 1e9)
    # Paced at the target rate against absolute deadlines.
    period = int(1e9 / target)
    nticks = int(duration * target)
    late: list[float] = []
    busy = 0
    start = now() + period
    for i in range(nticks):
        deadline = start + i * period
        # Yield to the event loop (background commits) until the deadline: its timers
        # wake up to a few ms late on this kind of VM, too coarse for a 1 ms period.
        while now() < deadline:
            await asyncio.sleep(0)
        t = now()
        late.append(max(0, t - deadline) / 1000.0)
        await tick(i)
        busy += now() - t
    wall = now() - start
    stop = True
    await task
    await sdk.oaas.commit_all_async()
    late.sort()
    busy_fraction = busy / wall if wall > 0 else float("nan")
    return {
        "max_rate_hz": max_rate,
        "readings_per_s": max_rate * sensors,
        "headroom_x": max_rate / target,
        "paced": {
            "achieved_hz": nticks / (wall / 1e9),
            "lateness_p50_us": percentile(late, 50),
            "lateness_p99_us": percentile(late, 99),
            "missed_deadlines": sum(1 for x in late if x > period / 1000.0),
            "busy_fraction": busy_fraction,
        },
        "headroom_busy_x": 1.0 / busy_fraction if busy_fraction > 0 else float("inf"),
        "commit_rounds": rounds,
        "commit_round_p50_us": percentile(sorted(commit_ns), 50) / 1000.0,
        "samples_committed": fleet[0].samples,
    }


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------
SUITES: dict[str, Callable[[Sdk, dict[str, Any]], Awaitable[dict[str, Any]]]] = {
    "ops": bench_ops, "ycsb": bench_ycsb, "throughput": bench_throughput,
    "memory": bench_memory, "pipeline": bench_pipeline,
}


def run(sdk_name: str, suite: str, native: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run one suite for one SDK in this process; returns the result dict (``missing`` or
    ``error`` set when it could not run)."""
    t0 = time.perf_counter()
    sdk = Sdk(sdk_name, native)
    out: dict[str, Any] = {"sdk": sdk.describe() if sdk.missing is None else
                           {"sdk": sdk_name, "native": native}}
    if sdk.missing is not None:
        out["missing"] = sdk.missing
        return out
    try:
        out["results"] = asyncio.run(SUITES[suite](sdk, params))
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
        out["traceback"] = traceback.format_exc()
    finally:
        sdk.cleanup()
    out["wall_s"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Run one benchmark suite for one SDK.")
    ap.add_argument("--sdk", choices=SDKS, required=True)
    ap.add_argument("--suite", choices=sorted(SUITES), required=True)
    ap.add_argument("--native", choices=["auto", "on", "off"], default="off")
    ap.add_argument("--params", default="{}", help="suite parameters as a JSON object")
    args = ap.parse_args(argv)
    out = run(args.sdk, args.suite, args.native, json.loads(args.params))
    sys.stdout.flush()
    print(RESULT_MARKER, json.dumps(out, default=repr), flush=True)


if __name__ == "__main__":
    main()
