"""PNG plots of a results document (matplotlib, no display needed).

One file per figure in the plot directory: ``ops_latency.png`` (per-operation latency
percentiles), ``ycsb_throughput.png`` and ``ycsb_latency.png`` (YCSB A-F), ``throughput.png``
(commit batches), ``memory.png`` (bytes per object) and ``pipeline.png`` (telemetry loop).
Every axis that spans orders of magnitude is logarithmic; every figure names its units.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.report import OPS, _dig, results

__all__ = ["write_all"]

COLORS = {"plain": "#9e9e9e", "oaas_sdk2_py": "#e07b39", "oaas_sdk_native": "#2a6fba",
          "oaas_sdk_python": "#6fb0e8"}
LABELS = {"plain": "plain object (floor)", "oaas_sdk2_py": "oaas-sdk2-py 0.3.6 (mock)",
          "oaas_sdk_native": "oaas-sdk native", "oaas_sdk_python": "oaas-sdk pure Python"}
SHORT = {"plain": "plain object", "oaas_sdk2_py": "oaas-sdk2-py", "oaas_sdk_native":
         "oaas-sdk native", "oaas_sdk_python": "oaas-sdk Python"}
ORDER = ("plain", "oaas_sdk2_py", "oaas_sdk_native", "oaas_sdk_python")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3,
                         "axes.axisbelow": True, "font.size": 9})
    return plt


def _subtitle(doc: dict[str, Any]) -> str:
    m = doc.get("machine", {})
    return (f"{m.get('cpu_model')}, {m.get('logical_cores')} cores, Python {m.get('python')}"
            f" — {doc.get('mode')} run {doc.get('started', '')[:10]}")


def _ops_latency(doc: dict[str, Any], path: Path) -> bool:
    plt = _plt()
    variants = [v for v in ORDER if results(doc, "ops", v)]
    ops = [op for op in OPS if any(_dig(results(doc, "ops", v), op) for v in variants)]
    if not ops:
        return False
    fig, ax = plt.subplots(figsize=(9, 0.2 * len(ops) * len(variants) + 1.6))
    h = 0.8 / len(variants)
    for i, v in enumerate(variants):
        ys, p50, lo, hi, p95 = [], [], [], [], []
        for j, op in enumerate(ops):
            s = _dig(results(doc, "ops", v), op)
            if not s:
                continue
            ys.append(j + (i - (len(variants) - 1) / 2) * h)
            p50.append(max(s["p50_ns"], 1.0))
            lo.append(0.0)
            hi.append(max(s["p99_ns"] - s["p50_ns"], 0.0))
            p95.append(max(s["p95_ns"], 1.0))
        ax.barh(ys, p50, height=h * 0.9, color=COLORS[v], label=LABELS[v],
                xerr=[lo, hi], error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "#333"})
        ax.plot(p95, ys, "|", color="#000", markersize=5)
    ax.set_yticks(range(len(ops)), ops)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("latency per operation, ns (log scale): bar = p50, tick = p95, "
                  "whisker end = p99")
    ax.set_title("Operation latency by SDK\n" + _subtitle(doc), fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _series(doc: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for store in ("memory", "lmdb"):
        for v in ORDER:
            if _dig(results(doc, "ycsb", v), store):
                out.append((v, store))
    return out


def _ycsb(doc: dict[str, Any], path_tp: Path, path_lat: Path) -> bool:
    plt = _plt()
    series = _series(doc)
    if not series:
        return False
    workloads = sorted({w for v, s in series for w in _dig(results(doc, "ycsb", v), s)})
    w_bar = 0.85 / len(series)
    for path, metric in ((path_tp, "throughput"), (path_lat, "latency")):
        fig, ax = plt.subplots(figsize=(10, 5.4))
        for i, (v, store) in enumerate(series):
            xs, ys, errs = [], [], [[], []]
            for j, w in enumerate(workloads):
                r = _dig(results(doc, "ycsb", v), store, w)
                if not r:
                    continue
                xs.append(j + (i - (len(series) - 1) / 2) * w_bar)
                if metric == "throughput":
                    ys.append(r["ops_per_s"])
                else:
                    la = r["latency_all"]
                    ys.append(max(la["p50_ns"], 1.0) / 1000)
                    errs[0].append(0.0)
                    errs[1].append(max(la["p99_ns"] - la["p50_ns"], 0.0) / 1000)
            kw: dict[str, Any] = {}
            if metric == "latency":
                kw = {"yerr": errs, "error_kw": {"elinewidth": 0.8, "capsize": 2,
                                                 "ecolor": "#333"}}
            ax.bar(xs, ys, width=w_bar * 0.9, color=COLORS[v],
                   hatch="//" if store == "lmdb" else None, edgecolor="white",
                   label=f"{LABELS[v]}, {store}", **kw)
        ax.set_xticks(range(len(workloads)), [f"workload {w}" for w in workloads])
        ax.set_yscale("log")
        p = doc.get("params", {}).get("ycsb", {})
        what = (f"{p.get('records')} records of 10 × 100 B, {p.get('operations')} operations, "
                f"{p.get('clients')} clients")
        if metric == "throughput":
            ax.set_ylabel("operations per second (log scale)")
            ax.set_title(f"YCSB core workloads: throughput ({what})\n" + _subtitle(doc),
                         fontsize=9)
        else:
            ax.set_ylabel("latency per operation, µs (log): bar = p50, whisker = p99")
            ax.set_title(f"YCSB core workloads: latency over all operations ({what})\n"
                         + _subtitle(doc), fontsize=9)
        ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.07))
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
    return True


def _throughput(doc: dict[str, Any], path: Path) -> bool:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    drew = False
    for v in ("oaas_sdk_native", "oaas_sdk_python"):
        r = results(doc, "throughput", v) or {}
        sizes = sorted(int(k) for k in r if k.isdigit())
        for kind, style in (("insert", "-o"), ("update", "--s")):
            ys = [r[str(s)][kind]["objects_per_s_median"] for s in sizes]
            es = [r[str(s)][kind]["objects_per_s_stdev"] or 0.0 for s in sizes]
            if ys:
                ax.errorbar(sizes, ys, yerr=es, fmt=style, color=COLORS[v], capsize=3,
                            label=f"{LABELS[v]}, {kind}")
                drew = True
    if not drew:
        plt.close(fig)
        return False
    ax.set_xscale("log")
    ax.set_xlabel("objects committed in one commit_all_async() (log scale)")
    ax.set_ylabel("objects per second (median ± sd)")
    ax.set_ylim(bottom=0)
    ax.set_title("Commit throughput, LMDB, durability=sync\n" + _subtitle(doc), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _memory(doc: dict[str, Any], path: Path) -> bool:
    plt = _plt()
    rows: list[tuple[str, str, float | None, float | None]] = []
    for v in ORDER:
        r = results(doc, "memory", v) or {}
        for key, s in r.items():
            if isinstance(s, dict):
                label = f"{LABELS[v]}, {key}" if v != "plain" else key.replace("_", " ")
                rows.append((v, label, s.get("live_traced_bytes_per_object"),
                             s.get("cached_traced_bytes_per_object")))
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    ys = range(len(rows))
    ax.barh([y - 0.2 for y in ys], [r[2] or 0 for r in rows], height=0.38,
            color=[COLORS[r[0]] for r in rows], label="live object")
    ax.barh([y + 0.2 for y in ys], [r[3] or 0 for r in rows], height=0.38,
            color=[COLORS[r[0]] for r in rows], alpha=0.45, hatch="..", label="cached only")
    ax.set_yticks(list(ys), [r[1] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("bytes per object (tracemalloc: Python heap), one record of 10 × 100 B")
    ax.set_title("Memory per object\n" + _subtitle(doc), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _pipeline(doc: dict[str, Any], path: Path) -> bool:
    plt = _plt()
    rows = []
    for v in ORDER:
        r = results(doc, "pipeline", v) or {}
        for store in ("memory", "lmdb"):
            s = r.get(store)
            if isinstance(s, dict):
                rows.append((v, f"{SHORT[v]}\n{store}", s["max_rate_hz"]))
    if not rows:
        return False
    target = (doc.get("params", {}).get("pipeline", {}) or {}).get("target_hz", 1000.0)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    ax.bar(range(len(rows)), [r[2] for r in rows], color=[COLORS[r[0]] for r in rows])
    ax.axhline(target, color="#c62828", linestyle="--", label=f"target {target:.0f} Hz")
    for i, r in enumerate(rows):
        ax.text(i, r[2], f"{r[2] / target:.1f}×", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(rows)), [r[1] for r in rows], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("highest sustained tick rate, Hz (log); label = headroom")
    ax.set_title("Telemetry loop with background commits\n" + _subtitle(doc), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write_all(doc: dict[str, Any], plot_dir: Path) -> list[Path]:
    """Write every plot that has data; returns the paths written."""
    plot_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if _ops_latency(doc, plot_dir / "ops_latency.png"):
        written.append(plot_dir / "ops_latency.png")
    if _ycsb(doc, plot_dir / "ycsb_throughput.png", plot_dir / "ycsb_latency.png"):
        written += [plot_dir / "ycsb_throughput.png", plot_dir / "ycsb_latency.png"]
    for name, fn in (("throughput.png", _throughput), ("memory.png", _memory),
                     ("pipeline.png", _pipeline)):
        if fn(doc, plot_dir / name):
            written.append(plot_dir / name)
    return written


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.plots RESULTS.json [PLOT_DIR]``: redraw the plots of a run."""
    import json
    import sys

    args = sys.argv[1:] if argv is None else argv
    doc = json.loads(Path(args[0]).read_text())
    for p in write_all(doc, Path(args[1] if len(args) > 1 else "benchmarks/plots")):
        print(p)


if __name__ == "__main__":
    main()
