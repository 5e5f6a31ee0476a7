"""Codec and cache benchmark: the native codec against the pure-Python one and the fast
serializers of the ecosystem (json, orjson, ormsgpack, msgspec, pickle), in one process.

Payloads (fixed, built from a seeded generator): small scalars, a ~1 KB dict of str, a
100-element mixed list, a pydantic model with 10 fields, a 64 KiB bytes value and a 1 MiB
numpy array. Each library encodes/decodes what it natively supports: the model goes through
``model_dump()`` / ``model_validate()`` for libraries without model support, and binary
payloads are skipped by json/orjson (no bytes type). The 1 MiB array is also compared with a
plain memory copy of it (``arr.tobytes()``). Cache: median cost of a hit on the native and
the Python ``EntryCache`` against a ``dict`` lookup.

Timings are medians of repeated ``timeit`` runs, in nanoseconds per operation; for each
payload every library's encode and decode are timed in interleaved rounds (one block of
each per round), so a drift of the machine's speed during the run moves them alike.
Run: ``python -m benchmarks.codec [--json PATH] [--quick] [--payloads NAME[,NAME...]]``
(``--payloads`` runs only the named payloads); needs the ``bench`` extra.
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import random
import statistics
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from oaas_sdk import codec
from oaas_sdk.cache import EntryCache
from oaas_sdk.stores import StoredObject

try:
    from oaas_sdk import _native
except ImportError:  # pragma: no cover - the benchmark reports the Python codec only
    _native = None  # type: ignore[assignment]

OPTIONAL: dict[str, Any] = {}
for _name in ("orjson", "ormsgpack", "msgspec"):
    try:
        OPTIONAL[_name] = __import__(_name)
    except ImportError:
        pass


class Model10(BaseModel):
    id: int
    name: str
    email: str
    score: float
    active: bool
    tags: list[str]
    counts: dict[str, int]
    parent: int | None
    note: str
    ratio: float


def payloads() -> dict[str, tuple[Any, Any]]:
    """name -> (hint, value)."""
    rnd = random.Random(42)
    d1k = {f"key{i:02d}": f"value-{rnd.randrange(10**8):08d}" for i in range(36)}
    mixed: list[Any] = []
    for i in range(100):
        mixed.append([i, rnd.random(), f"s{i}", True, None][i % 5])
    model = Model10(id=7, name="alice", email="a@example.org", score=9.5, active=True,
                    tags=["a", "b", "c"], counts={"x": 1, "y": 2}, parent=None,
                    note="n" * 40, ratio=0.25)
    return {
        "small_int": (int, 42),
        "small_str": (str, "hello world"),
        "small_float": (float, 3.14159),
        "dict_1k": (dict[str, str], d1k),
        "list_100_mixed": (list[Any], mixed),
        "model_10": (Model10, model),
        "bytes_64k": (bytes, bytes(rnd.getrandbits(8) for _ in range(64 * 1024))),
        "ndarray_1m": (np.ndarray, np.arange(1 << 17, dtype="<f8")),  # 131072 x 8 B = 1 MiB
    }


def bench(fn: Callable[[], Any], quick: bool) -> float:
    """Median ns per call."""
    t = timeit.Timer(fn)
    n, _ = t.autorange()
    n = max(1, n // (10 if quick else 2))
    runs = t.repeat(repeat=3 if quick else 7, number=n)
    return statistics.median(runs) / n * 1e9


def bench_interleaved(thunks: dict[str, Callable[[], Any]], quick: bool,
                      before: Callable[[str], None]) -> dict[str, float]:
    """Median ns per call of each thunk, timed in rounds that take every thunk in turn
    (``before(name)`` runs untimed ahead of each block): a drift of the machine's speed
    during the run shifts all of them alike, so their ratios hold."""
    timers = {k: timeit.Timer(f) for k, f in thunks.items()}
    number: dict[str, int] = {}
    for k, t in timers.items():
        before(k)
        n, _ = t.autorange()
        number[k] = max(1, n // (10 if quick else 4))
    runs: dict[str, list[float]] = {k: [] for k in thunks}
    for _ in range(3 if quick else 11):
        for k, t in timers.items():
            before(k)
            runs[k].append(t.timeit(number[k]) / number[k] * 1e9)
    return {k: statistics.median(v) for k, v in runs.items()}


def codecs(hint: Any, value: Any) -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
    """library -> (encode thunk, decode thunk)."""
    out: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {}
    ft = codec.field_type(hint)
    is_model = isinstance(value, BaseModel)
    binary = isinstance(value, bytes | np.ndarray)
    plain = value.model_dump() if is_model else value

    def with_backend(mod: Any) -> tuple[Callable[[], Any], Callable[[], Any]]:
        codec.set_backend(mod)
        data = ft.encode(value)
        codec.set_backend(None)

        def enc() -> Any:
            return ft.encode(value)

        def dec() -> Any:
            return ft.decode(data)

        return enc, dec

    if _native is not None:
        out["native"] = with_backend(_native)
    out["python"] = with_backend(None)

    def finish(dec: Callable[[Any], Any]) -> Callable[[Any], Any]:
        return (lambda b: type(value).model_validate(dec(b))) if is_model else dec

    def add(name: str, enc: Callable[[Any], Any], dec: Callable[[Any], Any]) -> None:
        data = enc(plain)
        d = finish(dec)
        out[name] = ((lambda: enc(plain)), (lambda: d(data)))

    if not binary:
        add("json", json.dumps, json.loads)
    if "orjson" in OPTIONAL and not binary:
        oj = OPTIONAL["orjson"]
        add("orjson", oj.dumps, oj.loads)
    if "ormsgpack" in OPTIONAL:
        om = OPTIONAL["ormsgpack"]
        if isinstance(value, np.ndarray):
            add("ormsgpack", lambda v: om.packb(v, option=om.OPT_SERIALIZE_NUMPY), om.unpackb)
        else:
            add("ormsgpack", om.packb, om.unpackb)
    if "msgspec" in OPTIONAL and not isinstance(value, np.ndarray):
        ms = OPTIONAL["msgspec"].msgpack
        add("msgspec", ms.Encoder().encode, ms.Decoder().decode)
    add("pickle", lambda v: pickle.dumps(v, protocol=5), pickle.loads)
    if isinstance(value, np.ndarray):
        out["memcpy"] = ((lambda: value.tobytes()), (lambda: bytearray(value.data)))
    return out


def cache_bench(quick: bool) -> dict[str, float]:
    key = ("bench.Counter", 0, 42)
    rec = StoredObject(1, 0, 0, {"count": b"\x05", "name": b"\xa5alice"})
    d = {key: rec}
    out = {"dict_get": bench(lambda: d.get(key), quick)}
    py = EntryCache(1 << 20)
    py.put(key, rec)
    out["python_cache_get"] = bench(lambda: py.get(key), quick)
    if _native is not None:
        nat = _native.EntryCache(1 << 20, None, StoredObject)
        nat.put(key, rec)
        out["native_cache_get"] = bench(lambda: nat.get(key), quick)
        out["native_cache_miss"] = bench(lambda: nat.get(("bench.Counter", 0, 43)), quick)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "codec.json"))
    ap.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    ap.add_argument("--payloads", metavar="NAME[,NAME...]",
                    help="run only these payloads (comma-separated), e.g. dict_1k")
    args = ap.parse_args()
    chosen = payloads()
    if args.payloads:
        names = [n.strip() for n in args.payloads.split(",") if n.strip()]
        unknown = sorted(set(names) - chosen.keys())
        if unknown:
            ap.error(f"unknown payloads {unknown}; choose from {sorted(chosen)}")
        chosen = {n: v for n, v in chosen.items() if n in names}

    results: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "native_profile": _native.build_profile() if _native is not None else None,
        "versions": {k: getattr(m, "__version__", "?") for k, m in OPTIONAL.items()},
        "unit": "ns per operation (median)",
        "payloads": {},
    }
    fastest_lib = ("orjson", "ormsgpack", "msgspec")
    for name, (hint, value) in chosen.items():
        thunks: dict[str, Callable[[], Any]] = {}
        for lib, (enc, dec) in codecs(hint, value).items():
            thunks[f"{lib}:encode"] = enc
            thunks[f"{lib}:decode"] = dec

        def backend_for(key: str) -> None:
            codec.set_backend(_native if key.startswith("native:") else None)

        timed = bench_interleaved(thunks, args.quick, backend_for)
        codec.set_backend(None)
        row: dict[str, Any] = {}
        for key, ns in timed.items():
            lib, op = key.split(":")
            row.setdefault(lib, {})[op] = ns
        results["payloads"][name] = row
        print(f"\n{name}")
        for lib, t in row.items():
            print(f"  {lib:10s} encode {t['encode']:12.0f} ns   decode {t['decode']:12.0f} ns")
        if "native" in row:
            for op in ("encode", "decode"):
                rivals = {k: row[k][op] for k in fastest_lib if k in row}
                if rivals:
                    best = min(rivals, key=rivals.__getitem__)
                    ratio = row["native"][op] / rivals[best]
                    print(f"  native/{best} {op}: {ratio:.2f}x")
            if "memcpy" in row:
                ratio = row["native"]["encode"] / row["memcpy"]["encode"]
                print(f"  native encode / memcpy: {ratio:.2f}x (goal <= 1.5x)")
    results["cache"] = cache_bench(args.quick)
    print("\ncache hit (ns):", {k: round(v) for k, v in results["cache"].items()})
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
