"""Driver of the benchmark suite: ``python -m benchmarks [SUITE ...] [--quick] [--json PATH]
[--plot-dir DIR]``.

Every suite runs for every SDK variant in the same run on the same machine, each in a fresh
subprocess executing the one workload module (:mod:`benchmarks.workload`):

- ``oaas_sdk_native``: oaas-sdk with ``native="on"`` (reported missing when the extension is
  not built);
- ``oaas_sdk_python``: oaas-sdk with ``native="off"``;
- ``oaas_sdk2_py``: oaas-sdk2-py 0.3.6 in mock mode, from its own virtual environment
  (created on first use in ``~/.cache/oaas-sdk-bench/sdk2-venv``; set
  ``OAAS_BENCH_SKIP_SDK2=1`` to skip it when offline, the JSON then says why it is missing);
- ``plain``: plain Python objects with the same API and no state management (the floor).

Jobs run one at a time (the machine has 2 cores: parallel jobs would measure each other).
The JSON file records the machine, package versions, the parameters and every figure; the
ratios between variants are computed by :mod:`benchmarks.report` and stored beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks import environment, report
from benchmarks.workload import RESULT_MARKER

REPO = Path(__file__).resolve().parent.parent

#: Suites run when none is named (``rust`` runs only when named).
DEFAULT_SUITES = ("ops", "ycsb", "throughput", "memory", "pipeline")
ALL_SUITES = (*DEFAULT_SUITES, "rust")

#: variant key -> (label, sdk module, native mode)
VARIANTS: dict[str, tuple[str, str, str]] = {
    "oaas_sdk_native": ("oaas-sdk (native)", "oaas_sdk", "on"),
    "oaas_sdk_python": ("oaas-sdk (pure Python)", "oaas_sdk", "off"),
    "oaas_sdk2_py": (f"oaas-sdk2-py {environment.SDK2_VERSION} (mock mode)", "oaas_sdk2_py",
                     "off"),
    "plain": ("plain Python object (floor)", "plain", "off"),
}

#: Parameters per suite: ``--quick`` (under 5 minutes in all on 2 cores) and the default run.
PARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {
        "ops": {"n": 1000, "warmup": 100, "n_lmdb": 50, "repeats": 2},
        "ycsb": {"records": 1000, "operations": 2000, "clients": 8},
        "throughput": {"sizes": [1000, 10000, 100000],
                       "repeats": {"1000": 3, "10000": 2, "100000": 1}},
        "memory": {"objects": 2000},
        "pipeline": {"sensors": 4, "duration_s": 1.0, "target_hz": 1000.0,
                     "commit_interval_ms": 10.0},
    },
    "full": {
        "ops": {"n": 10000, "warmup": 1000, "n_lmdb": 300, "repeats": 3},
        "ycsb": {"records": 10000, "operations": 10000, "clients": 8},
        "throughput": {"sizes": [1000, 10000, 100000],
                       "repeats": {"1000": 5, "10000": 5, "100000": 3}},
        "memory": {"objects": 20000},
        "pipeline": {"sensors": 4, "duration_s": 3.0, "target_hz": 1000.0,
                     "commit_interval_ms": 10.0},
    },
}


def _progress(total: int) -> Any:
    """A tqdm progress bar on stderr (shown on terminals only), or a silent stand-in."""
    try:
        from tqdm import tqdm

        return tqdm(total=total, unit="job", file=sys.stderr, disable=None,
                    bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]")
    except ImportError:
        class _Quiet:
            def update(self, n: int = 1) -> None: ...
            def set_description(self, s: str) -> None: ...
            def close(self) -> None: ...
        return _Quiet()


def _child_env() -> dict[str, str]:
    """The environment of a workload process: the repository on ``PYTHONPATH`` (so this work
    tree's ``oaas_sdk`` wins over an installed one) and no ``OAAS_*`` settings (except the
    suite's own ``OAAS_BENCH_*``), so that the configuration is the one the workload sets."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("OAAS_") or k.startswith("OAAS_BENCH_")}
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONHASHSEED"] = "0"
    env.pop("PYTHONSTARTUP", None)
    return env


def run_job(python: str, variant: str, suite: str, params: dict[str, Any],
            timeout_s: float) -> dict[str, Any]:
    """Run one suite for one variant in a subprocess; returns its result dict (with
    ``error`` when the process failed, timed out or printed no result)."""
    _, sdk, native = VARIANTS[variant]
    cmd = [python, "-m", "benchmarks.workload", "--sdk", sdk, "--suite", suite,
           "--native", native, "--params", json.dumps(params)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                           env=_child_env(), cwd=str(REPO))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s", "wall_s": timeout_s}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            out: dict[str, Any] = json.loads(line[len(RESULT_MARKER):])
            out["process_wall_s"] = time.perf_counter() - t0
            return out
    return {"error": f"exit {p.returncode}, no result", "stderr": p.stderr[-4000:],
            "wall_s": time.perf_counter() - t0}


#: Seconds allowed for ``cargo bench --no-run`` (a cold release build of the crate).
BUILD_TIMEOUT_S = 1800.0


def parse_bencher(text: str) -> dict[str, dict[str, float]]:
    """Results from criterion's ``bencher`` output (``test NAME ... bench: N ns/iter (+/- M)``,
    N the median and M the standard deviation, both rounded to whole nanoseconds):
    benchmark name -> ``{"ns_per_iter": N, "deviation_ns": M}``."""
    results: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[0] == "test" and parts[3] == "bench:":
            results[parts[1]] = {"ns_per_iter": float(parts[4].replace(",", "")),
                                 "deviation_ns": float(parts[7].rstrip(")").replace(",", ""))}
    return results


def add_criterion_details(results: dict[str, dict[str, Any]], criterion_dir: Path) -> None:
    """Add what the bencher line leaves out, from the files criterion writes for each
    benchmark (``<target>/criterion/<benchmark>/new/``): ``median_ns`` and ``mean_ns``
    unrounded, and for a benchmark with a throughput, ``elements`` or ``bytes`` per
    iteration and ``elements_per_s`` or ``bytes_per_s`` at the median."""
    if not criterion_dir.is_dir():
        return
    for bench_json in criterion_dir.glob("**/new/benchmark.json"):
        try:
            info = json.loads(bench_json.read_text())
            est = json.loads((bench_json.parent / "estimates.json").read_text())
        except (OSError, ValueError):
            continue
        r = results.get(info.get("full_id"))
        if r is None:
            continue
        median = est["median"]["point_estimate"]
        r["median_ns"] = median
        r["mean_ns"] = est["mean"]["point_estimate"]
        for kind, n in (info.get("throughput") or {}).items():
            unit = {"Elements": "elements", "Bytes": "bytes", "BytesDecimal": "bytes"}.get(kind)
            if unit and median > 0:
                r[unit] = n
                r[f"{unit}_per_s"] = n / (median * 1e-9)


def _cargo_target_dir(manifest: Path) -> Path:
    """The crate's target directory as cargo resolves it (``CARGO_TARGET_DIR`` included)."""
    p = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps",
                        "--manifest-path", str(manifest)],
                       capture_output=True, text=True, timeout=120, check=True)
    return Path(json.loads(p.stdout)["target_directory"])


def run_rust(timeout_s: float) -> dict[str, Any]:
    """criterion benchmarks of the Rust core (``cargo bench -p oprc-core`` in the
    ``oprc-py`` workspace: benches ``codec``, ``cache``, ``batcher`` of ``oprc-py/core``),
    parsed from the ``bencher`` output format and completed from criterion's own files
    (see :func:`add_criterion_details`)."""
    manifest = REPO / "oprc-py" / "Cargo.toml"
    benches = manifest.parent / "core" / "benches"
    if not benches.is_dir() or not any(benches.glob("*.rs")):
        return {"skipped": "oprc-py/core/benches/ has no criterion benchmark"}
    bench = ["cargo", "bench", "--manifest-path", str(manifest), "-p", "oprc-core"]
    t0 = time.perf_counter()
    try:
        # Build first, with its own allowance: a cold release build takes minutes.
        b = subprocess.run([*bench, "--no-run"], capture_output=True, text=True,
                           timeout=BUILD_TIMEOUT_S)
        if b.returncode != 0:
            return {"error": f"cargo bench --no-run exit {b.returncode}",
                    "stderr": b.stderr[-4000:]}
        t_build = time.perf_counter() - t0
        p = subprocess.run([*bench, "--", "--output-format", "bencher"], capture_output=True,
                           text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": repr(e)}
    results: dict[str, Any] = parse_bencher(p.stdout)
    try:
        add_criterion_details(results, _cargo_target_dir(manifest) / "criterion")
    except (OSError, ValueError, KeyError, subprocess.SubprocessError):
        pass  # the bencher figures stand on their own
    out: dict[str, Any] = {
        "command": "cargo bench --manifest-path oprc-py/Cargo.toml -p oprc-core -- "
                   "--output-format bencher",
        "build_s": t_build, "wall_s": time.perf_counter() - t0 - t_build, "results": results}
    if p.returncode != 0:
        out.update(error=f"cargo bench exit {p.returncode}", stderr=p.stderr[-4000:])
    return out


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="oaas-sdk benchmark suite: oaas-sdk (native and pure Python) side by "
                    "side with oaas-sdk2-py and plain Python objects, in one run.")
    ap.add_argument("suites", nargs="*", metavar="SUITE",
                    help=f"suites to run, from {', '.join(ALL_SUITES)} "
                         f"(default: {' '.join(DEFAULT_SUITES)})")
    ap.add_argument("--quick", action="store_true",
                    help="small sizes: the whole default run takes under 5 minutes")
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "latest.json"),
                    help="where to write the results (default benchmarks/results/latest.json)")
    ap.add_argument("--plot-dir", default=str(REPO / "benchmarks" / "plots"),
                    help="where to write the PNG plots (default benchmarks/plots/)")
    ap.add_argument("--no-plots", action="store_true", help="write no plots")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="comma-separated variants to run (default: all)")
    ap.add_argument("--sdk2-venv", default=str(environment.DEFAULT_SDK2_VENV),
                    help="virtual environment of oaas-sdk2-py (created when missing)")
    ap.add_argument("--ycsb-records", type=int, help="YCSB records loaded per workload")
    ap.add_argument("--ycsb-operations", type=int, help="YCSB operations per workload")
    ap.add_argument("--ycsb-clients", type=int, help="concurrent YCSB clients (coroutines)")
    ap.add_argument("--ycsb-workloads", help="YCSB workloads to run, e.g. A,B,C (default all)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds allowed per job (default 300 with --quick, else 1800)")
    args = ap.parse_args(argv)
    unknown = [s for s in args.suites if s not in ALL_SUITES]
    if unknown:
        ap.error(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(ALL_SUITES)}")
    bad = [v for v in args.variants.split(",") if v not in VARIANTS]
    if bad:
        ap.error(f"unknown variant(s) {', '.join(bad)}; choose from {', '.join(VARIANTS)}")
    return args


#: The memory suite runs each store (or plain container) in its own process, so that memory
#: freed by one measurement is never reused by the next (RSS would not see it).
MEMORY_UNITS: dict[str, tuple[str, ...]] = {
    "oaas_sdk_native": ("memory", "lmdb"), "oaas_sdk_python": ("memory", "lmdb"),
    "oaas_sdk2_py": ("memory",), "plain": ("plain_object", "dict", "dataclass",
                                           "dataclass_slots"),
}


def _jobs(suites: Iterable[str], variants: list[str]) -> list[tuple[str, str, str | None]]:
    """(suite, variant, unit) triples, ``unit`` being a memory-suite unit or ``None``."""
    jobs: list[tuple[str, str, str | None]] = []
    for s in suites:
        for v in variants:
            if s == "rust" or (s == "throughput" and v == "plain"):
                continue
            if s == "memory":
                jobs += [(s, v, u) for u in MEMORY_UNITS[v]]
            else:
                jobs.append((s, v, None))
    return jobs


def _merge(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Merge the result of one memory unit into the variant's result."""
    if old is None or "results" not in old or "results" not in new:
        return new if old is None or "error" in new or "missing" in new else old
    old["results"].update(new["results"])
    old["wall_s"] = old.get("wall_s", 0.0) + new.get("wall_s", 0.0)
    return old


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the suites; write the JSON (and plots); print the comparison tables. Returns the
    result document."""
    args = _parse(argv)
    t_start = time.perf_counter()
    suites = list(dict.fromkeys(args.suites or DEFAULT_SUITES))
    variants = args.variants.split(",")
    mode = "quick" if args.quick else "full"
    params = {s: dict(PARAMS[mode][s]) for s in suites if s in PARAMS[mode]}
    if "ycsb" in params:
        y = params["ycsb"]
        for key, val in (("records", args.ycsb_records), ("operations", args.ycsb_operations),
                         ("clients", args.ycsb_clients)):
            if val is not None:
                y[key] = val
        if args.ycsb_workloads:
            y["workloads"] = [w.strip().upper() for w in args.ycsb_workloads.split(",")]
    timeout = args.timeout or (300.0 if args.quick else 1800.0)

    doc: dict[str, Any] = {
        "schema": 1,
        "command": "python -m benchmarks " + " ".join(argv if argv is not None
                                                       else sys.argv[1:]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "mode": mode,
        "machine": environment.machine_info(),
        "packages": {"driver": environment.package_versions(),
                     "oaas_sdk_git": environment.git_revision(REPO)},
        "variants": {v: {"label": VARIANTS[v][0]} for v in variants},
        "params": params,
        "suites": {},
    }

    python_of: dict[str, str | None] = {v: sys.executable for v in variants}
    if "oaas_sdk2_py" in variants and any(s != "rust" for s in suites):
        if os.environ.get("OAAS_BENCH_SKIP_SDK2") == "1":
            env = environment.Sdk2Env(ok=False, venv=args.sdk2_venv,
                                      reason="skipped: OAAS_BENCH_SKIP_SDK2=1")
        else:
            print(f"oaas-sdk2-py {environment.SDK2_VERSION}: virtual environment "
                  f"{args.sdk2_venv}", file=sys.stderr)
            env = environment.ensure_sdk2_venv(Path(args.sdk2_venv))
        doc["packages"]["oaas_sdk2_py_env"] = env.to_json()
        python_of["oaas_sdk2_py"] = env.python if env.ok else None
        if not env.ok:
            print(f"oaas-sdk2-py unavailable: {env.reason}", file=sys.stderr)

    jobs = _jobs(suites, variants)
    bar = _progress(len(jobs) + (1 if "rust" in suites else 0))
    for suite, variant, unit in jobs:
        bar.set_description(f"{suite}: {variant}" + (f" ({unit})" if unit else ""))
        py = python_of[variant]
        if py is None:
            reason = doc["packages"]["oaas_sdk2_py_env"]["reason"]
            res: dict[str, Any] = {"missing": f"oaas-sdk2-py environment unavailable: {reason}"}
        else:
            p = dict(params[suite], units=[unit]) if unit else params[suite]
            res = run_job(py, variant, suite, p, timeout)
        by_variant = doc["suites"].setdefault(suite, {})
        by_variant[variant] = _merge(by_variant.get(variant), res) if unit else res
        if "sdk" in res and isinstance(res["sdk"], dict):
            doc["variants"][variant].setdefault("sdk", res["sdk"])
        if "missing" in res:
            doc["variants"][variant]["missing"] = res["missing"]
        bar.update(1)
    if "throughput" in suites and "plain" in variants:
        doc["suites"]["throughput"]["plain"] = {"skipped": "plain objects have nothing to "
                                                           "commit"}
    if "rust" in suites:
        bar.set_description("rust: cargo bench")
        doc["suites"]["rust"] = run_rust(timeout)
        bar.update(1)
    bar.close()

    doc["comparisons"] = report.comparisons(doc)
    doc["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    doc["wall_s"] = time.perf_counter() - t_start
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=repr, allow_nan=True))
    if not args.no_plots:
        try:
            from benchmarks import plots

            doc["plots"] = [str(p) for p in plots.write_all(doc, Path(args.plot_dir))]
        except Exception as e:  # plots are a convenience; the figures are in the JSON
            doc["plots_error"] = f"{type(e).__name__}: {e}"
            print(f"plots not written: {doc['plots_error']}", file=sys.stderr)
        doc["wall_s"] = time.perf_counter() - t_start
        out.write_text(json.dumps(doc, indent=1, default=repr, allow_nan=True))
    print(report.markdown(doc))
    errors = [f"{s}/{v}: {r['error']}" for s, by in doc["suites"].items() if isinstance(by, dict)
              for v, r in by.items() if isinstance(r, dict) and "error" in r]
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    print(f"\nwritten {out} in {doc['wall_s']:.0f} s", file=sys.stderr)
    return doc
