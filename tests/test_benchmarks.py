"""The benchmark suite: YCSB generators, and ``python -m benchmarks --quick`` end to end.

The end-to-end test (marker ``bench_suite``, about 2-4 minutes) runs the whole quick suite in
a subprocess, oaas-sdk2-py's virtual environment included (created from PyPI on first use);
set ``OAAS_BENCH_SKIP_SDK2=1`` when offline, and the test then checks that the JSON says why
that SDK is missing. It checks keys, never values: figures depend on the machine.
Deselect it with ``-m "not bench_suite"``.
"""

from __future__ import annotations

import collections
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import ycsb
from benchmarks.report import OPS
from oaas_sdk import native_available

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------
# YCSB generators (fast)
# ---------------------------------------------------------------------------------------
def test_fnvhash64_is_java_abs_of_fnv1a() -> None:
    for v in (0, 1, 255, 2**40 + 7, 2**63 - 1):
        h = ycsb.fnvhash64(v)
        assert 0 <= h <= 2**63
    assert ycsb.fnvhash64(12345) == ycsb.fnvhash64(12345)
    assert len({ycsb.fnvhash64(i) for i in range(1000)}) == 1000


def test_zipfian_is_skewed_towards_low_items() -> None:
    z = ycsb.ZipfianGenerator(0, 999, rng=random.Random(1))
    c = collections.Counter(z.next() for _ in range(50_000))
    assert min(c) >= 0 and max(c) <= 999
    # P(item 0) = 1 / zeta(1000, 0.99) ~ 0.13
    assert 0.11 < c[0] / 50_000 < 0.15
    assert c[0] > c[1] > c[10] > c[500]


def test_scrambled_zipfian_spreads_popular_items() -> None:
    g = ycsb.ScrambledZipfianGenerator(0, 999, rng=random.Random(2))
    c = collections.Counter(g.next() for _ in range(50_000))
    assert min(c) >= 0 and max(c) <= 999
    hottest = [k for k, _ in c.most_common(5)]
    assert hottest != sorted(hottest) or hottest[0] != 0  # not the low keys in order
    # the hottest item keeps P = 1 / ZETAN ~ 3.8 % (uniform would give 0.1 %)
    assert c.most_common(1)[0][1] / 50_000 > 0.03


def test_latest_prefers_recent_inserts() -> None:
    rng = random.Random(3)
    kc = ycsb.KeyChooser(ycsb.WORKLOADS["D"], 1000, 1000, rng)
    keys = [kc.next_key() for _ in range(5000)]
    assert all(0 <= k <= 999 for k in keys)
    assert sum(k >= 900 for k in keys) / len(keys) > 0.5
    k = kc.next_insert()
    kc.acknowledge_insert(k)
    assert k == 1000 and kc.inserts.last == 1000


def test_workload_mixes_match_ycsb() -> None:
    for w in ycsb.WORKLOADS.values():
        assert abs(w.read + w.update + w.insert + w.scan + w.rmw - 1.0) < 1e-9
    chooser = ycsb.OperationChooser(ycsb.WORKLOADS["B"], random.Random(4))
    c = collections.Counter(chooser.next() for _ in range(20_000))
    assert set(c) == {"read", "update"}
    assert 0.93 < c["read"] / 20_000 < 0.97


# ---------------------------------------------------------------------------------------
# The rust suite's reading of criterion's output (fast; cargo bench itself is not run)
# ---------------------------------------------------------------------------------------
BENCHER_OUTPUT = """\
test batcher/engine_sync/16 ... bench:   4,429,418 ns/iter (+/- 1,563,769)

test codec/bin_64k/decode ... bench:          13 ns/iter (+/- 3)
Gnuplot not found, using plotters backend
"""


def test_rust_suite_parses_bencher_lines_and_criterion_files(tmp_path: Path) -> None:
    from benchmarks.report import _rate
    from benchmarks.runner import add_criterion_details, parse_bencher

    results: dict[str, Any] = dict(parse_bencher(BENCHER_OUTPUT))
    assert results == {
        "batcher/engine_sync/16": {"ns_per_iter": 4429418.0, "deviation_ns": 1563769.0},
        "codec/bin_64k/decode": {"ns_per_iter": 13.0, "deviation_ns": 3.0},
    }
    new = tmp_path / "batcher_engine_sync" / "16" / "new"
    new.mkdir(parents=True)
    (new / "benchmark.json").write_text(json.dumps(
        {"full_id": "batcher/engine_sync/16", "throughput": {"Elements": 16}}))
    (new / "estimates.json").write_text(json.dumps(
        {"median": {"point_estimate": 4e6}, "mean": {"point_estimate": 5e6}}))
    add_criterion_details(results, tmp_path)
    r = results["batcher/engine_sync/16"]
    assert (r["median_ns"], r["mean_ns"], r["elements"]) == (4e6, 5e6, 16)
    assert r["elements_per_s"] == pytest.approx(4000.0)
    assert _rate(r) == "4,000 /s"
    assert "median_ns" not in results["codec/bin_64k/decode"]


# ---------------------------------------------------------------------------------------
# python -m benchmarks --quick (slow)
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OAAS_")
           or k == "OAAS_BENCH_SKIP_SDK2" or k == "OAAS_BENCH_SDK2_VENV"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--json",
                        str(out / "r.json"), "--plot-dir", str(out / "plots")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-4000:]
    return json.loads((out / "r.json").read_text()), out / "plots"


def _res(doc: dict[str, Any], suite: str, variant: str) -> dict[str, Any]:
    r = doc["suites"][suite][variant]
    assert "error" not in r, r
    return r["results"]


def _present(doc: dict[str, Any]) -> list[str]:
    """Variants that ran; the others must say why they are missing."""
    ran = []
    for v, info in doc["variants"].items():
        if "missing" in info:
            assert info["missing"], v
            if v == "oaas_sdk2_py":
                assert os.environ.get("OAAS_BENCH_SKIP_SDK2") == "1" or \
                    doc["packages"]["oaas_sdk2_py_env"]["reason"]
        else:
            ran.append(v)
    return ran


@pytest.mark.bench_suite
def test_quick_run_records_machine_and_versions(quick_run: tuple[dict[str, Any], Path]) -> None:
    doc, _ = quick_run
    m = doc["machine"]
    for key in ("cpu_model", "logical_cores", "memory_bytes", "os", "python"):
        assert m[key], key
    assert doc["packages"]["driver"]["pydantic"]
    assert doc["packages"]["oaas_sdk_git"]["commit"]
    assert set(doc["variants"]) == {"oaas_sdk_native", "oaas_sdk_python", "oaas_sdk2_py",
                                    "plain"}
    env = doc["packages"]["oaas_sdk2_py_env"]
    if env["ok"]:
        assert env["packages"]["oaas-sdk2-py"] == "0.3.6"
        assert doc["variants"]["oaas_sdk2_py"]["sdk"]["version"] == "0.3.6"
    else:
        assert env["reason"]
    if os.environ.get("OAAS_BENCH_SKIP_SDK2") != "1":
        assert env["ok"], env["reason"]
    assert doc["wall_s"] < 300, "--quick must finish in under 5 minutes"


@pytest.mark.bench_suite
def test_quick_run_has_every_suites_figures(quick_run: tuple[dict[str, Any], Path]) -> None:
    doc, _ = quick_run
    ran = _present(doc)
    assert {"oaas_sdk_python", "plain"} <= set(ran)
    lat_keys = {"ops_per_s", "mean_ns", "p50_ns", "p95_ns", "p99_ns"}
    for v in ran:
        ops = _res(doc, "ops", v)
        for op in OPS:
            if op.endswith("_lmdb") and not v.startswith("oaas_sdk_"):
                continue
            assert lat_keys <= set(ops[op]), (v, op)
        ycsb_res = _res(doc, "ycsb", v)
        stores = ("memory", "lmdb") if v.startswith("oaas_sdk_") else ("memory",)
        for store in stores:
            assert set(ycsb_res[store]) == set("ABCDEF"), (v, store)
            for w in "ABCDEF":
                r = ycsb_res[store][w]
                assert {"ops_per_s", "load_records_per_s", "latency", "latency_all"} <= set(r)
                assert lat_keys <= set(r["latency_all"])
        mem = _res(doc, "memory", v)
        units = (("plain_object", "dict", "dataclass", "dataclass_slots") if v == "plain"
                 else stores)
        for u in units:
            assert {"live_traced_bytes_per_object", "live_rss_bytes_per_object"} <= set(mem[u])
            if v != "plain":
                assert "cached_traced_bytes_per_object" in mem[u]
        pipe = _res(doc, "pipeline", v)
        for store in stores:
            assert {"max_rate_hz", "headroom_x", "paced"} <= set(pipe[store])
    for v in ran:
        if v.startswith("oaas_sdk_"):
            tp = _res(doc, "throughput", v)
            for size in ("1000", "10000", "100000"):
                for kind in ("insert", "update"):
                    assert {"objects_per_s_median", "objects_per_s_mean",
                            "objects_per_s_stdev"} <= set(tp[size][kind])
    cmp = doc["comparisons"]
    for key in ("ops", "ycsb_memory", "pipeline_memory", "memory_live_traced"):
        assert cmp[key], key
    assert "oaas_sdk_python" in cmp["ops"]["commit"]


@pytest.mark.bench_suite
def test_quick_run_writes_plots(quick_run: tuple[dict[str, Any], Path]) -> None:
    doc, plot_dir = quick_run
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "plots_error" in doc  # the bench extra is not installed: said, not hidden
        return
    names = {"ops_latency.png", "ycsb_throughput.png", "ycsb_latency.png", "throughput.png",
             "memory.png", "pipeline.png"}
    assert names <= {p.name for p in plot_dir.glob("*.png")}
    for n in names:
        assert (plot_dir / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not native_available(), reason="the native extension is not built")
def test_loop_cpu_measures_both_figures(tmp_path: Path) -> None:
    """``benchmarks.loop_cpu`` (comparisons of builds) runs and reports positive figures."""
    from benchmarks import loop_cpu

    durable = loop_cpu.durable_loop_cpu(4, 0.2, tmp_path)
    assert durable["commits_per_s"] > 0 and durable["loop_cpu_us_per_commit"] > 0
    assert loop_cpu.async_commit_call_us(2000, tmp_path) > 0
