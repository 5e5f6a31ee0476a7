"""Ratios between variants and the Markdown tables of a results file.

``python -m benchmarks.report [PATH]`` prints the tables of a JSON file written by
``python -m benchmarks`` (default ``benchmarks/results/latest.json``); ``docs/benchmarks.md``
quotes them.

Ratio convention (every ``comparisons`` entry and table column ``a ÷ b``): oaas-sdk's time
per operation divided by the peer's time per operation, i.e. the peer's rate divided by
oaas-sdk's rate, and for memory oaas-sdk's bytes divided by the peer's bytes. Below 1 means
oaas-sdk is faster (or smaller) than the peer; 2.0 means it takes twice as long.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

__all__ = ["comparisons", "markdown", "OPS", "OURS", "PEERS"]

#: Operations of the ``ops`` suite, in table order.
OPS = ("create", "load", "load_cold", "field_read", "field_write", "method_call",
       "method_update", "accessor_get", "accessor_set", "commit", "commit_async",
       "commit_lmdb", "commit_async_lmdb")
OURS = ("oaas_sdk_native", "oaas_sdk_python")
PEERS = ("oaas_sdk2_py", "plain")
SHORT = {"oaas_sdk_native": "native", "oaas_sdk_python": "python", "oaas_sdk2_py": "sdk2-py",
         "plain": "plain"}


def results(doc: dict[str, Any], suite: str, variant: str) -> dict[str, Any] | None:
    """The ``results`` of one suite for one variant, or ``None`` when missing or failed."""
    r = doc.get("suites", {}).get(suite, {}).get(variant)
    if not isinstance(r, dict):
        return None
    res = r.get("results")
    return res if isinstance(res, dict) else None


def _ratio(ours: float | None, peer: float | None) -> float | None:
    if ours is None or peer is None or not peer or math.isnan(ours) or math.isnan(peer):
        return None
    return ours / peer


def _dig(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _inv(x: Any) -> float | None:
    return 1.0 / x if isinstance(x, int | float) and x > 0 else None


def comparisons(doc: dict[str, Any]) -> dict[str, Any]:
    """Ratios of oaas-sdk (native and pure Python) to oaas-sdk2-py and to the plain floor,
    per operation (``ops``, mean latency), per YCSB workload on the memory store (time per
    operation), per pipeline store (time per tick at the highest rate) and for memory
    (traced bytes per live object). See the module docstring for the convention."""
    out: dict[str, Any] = {"convention": "oaas-sdk time per operation / peer time per "
                           "operation (memory: bytes / bytes); < 1: oaas-sdk faster or smaller"}

    def table(metric: Any) -> dict[str, Any]:
        t: dict[str, Any] = {}
        for ours in OURS:
            mine = metric(ours)
            if mine is None:
                continue
            t[ours] = {f"vs_{peer}": _ratio(mine, metric(peer)) for peer in PEERS}
        return t

    if doc.get("suites", {}).get("ops"):
        out["ops"] = {op: table(lambda v, op=op: _dig(results(doc, "ops", v), op, "mean_ns"))
                      for op in OPS}
    if doc.get("suites", {}).get("ycsb"):
        workloads = sorted({w for v in doc["suites"]["ycsb"]
                            for w in (_dig(results(doc, "ycsb", v), "memory") or {})})
        out["ycsb_memory"] = {
            w: table(lambda v, w=w: _inv(_dig(results(doc, "ycsb", v), "memory", w,
                                              "ops_per_s")))
            for w in workloads}
    if doc.get("suites", {}).get("pipeline"):
        out["pipeline_memory"] = table(
            lambda v: _inv(_dig(results(doc, "pipeline", v), "memory", "max_rate_hz")))
    if doc.get("suites", {}).get("memory"):
        def mem(v: str) -> float | None:
            r = results(doc, "memory", v)
            if v == "plain":
                return _dig(r, "plain_object", "live_traced_bytes_per_object")
            return _dig(r, "memory", "live_traced_bytes_per_object")
        out["memory_live_traced"] = table(mem)
    return out


# ---------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------
def _ns(x: Any) -> str:
    if not isinstance(x, int | float) or math.isnan(x):
        return "—"
    if x < 1_000:
        return f"{x:.0f} ns"
    if x < 1_000_000:
        return f"{x / 1e3:.1f} µs"
    return f"{x / 1e6:.2f} ms"


def _rate(r: dict[str, Any]) -> str:
    """Throughput of a Rust benchmark: commits (elements) per second or bytes per second."""
    if "elements_per_s" in r:
        return f"{_num(r['elements_per_s'])} /s"
    if "bytes_per_s" in r:
        return f"{r['bytes_per_s'] / 2**20:,.0f} MiB/s"
    return "—"


def _num(x: Any, digits: int = 0) -> str:
    if not isinstance(x, int | float) or math.isnan(x):
        return "—"
    return f"{x:,.{digits}f}"


def _x(x: Any) -> str:
    return "—" if not isinstance(x, int | float) else f"{x:.2f}×"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _header(cols: list[str]) -> list[str]:
    return [_row(cols), _row(["---"] * len(cols))]


def _ratio_cols(cmp: dict[str, Any]) -> list[str]:
    return [_x(_dig(cmp, ours, f"vs_{peer}")) for peer in PEERS for ours in OURS]


_RATIO_HEAD = ["native ÷ sdk2-py", "python ÷ sdk2-py", "native ÷ plain", "python ÷ plain"]
_VARIANT_ORDER = ("plain", "oaas_sdk2_py", "oaas_sdk_native", "oaas_sdk_python")


def machine_line(doc: dict[str, Any]) -> str:
    m = doc.get("machine", {})
    mem = m.get("memory_bytes")
    git = _dig(doc, "packages", "oaas_sdk_git") or {}
    sdk2 = _dig(doc, "packages", "oaas_sdk2_py_env", "packages") or {}
    return (f"{m.get('cpu_model')}, {m.get('logical_cores')} cores"
            f"{' (VM)' if m.get('virtualized') else ''}, "
            f"{(mem or 0) / 2**30:.1f} GiB, {m.get('os')} (kernel {m.get('kernel')}), "
            f"Python {m.get('python')}; oaas-sdk {str(git.get('commit', '?'))[:10]}"
            f"{' (uncommitted changes)' if git.get('dirty') else ''}"
            f" on branch {git.get('branch')}; oaas-sdk2-py {sdk2.get('oaas-sdk2-py', '—')} "
            f"(oprc-py {sdk2.get('oprc-py', '—')}); mode {doc.get('mode')}, started "
            f"{doc.get('started')}")


def markdown(doc: dict[str, Any]) -> str:
    """The comparison tables of a results document, as Markdown."""
    cmp = doc.get("comparisons") or comparisons(doc)
    lines = [f"Machine: {machine_line(doc)}", ""]
    missing = {v: i["missing"] for v, i in doc.get("variants", {}).items() if "missing" in i}
    for v, why in missing.items():
        lines.append(f"- **{v} missing**: {why}")
    if missing:
        lines.append("")
    suites = doc.get("suites", {})

    if "ops" in suites:
        lines += ["### Operations (mean latency per operation; ratios of mean times)", ""]
        lines += _header(["operation", "plain", "sdk2-py", "native", "python", *_RATIO_HEAD])
        for op in OPS:
            vals = [_ns(_dig(results(doc, "ops", v), op, "mean_ns")) for v in _VARIANT_ORDER]
            if all(x == "—" for x in vals):
                continue
            lines.append(_row([op, *vals, *_ratio_cols(_dig(cmp, "ops", op) or {})]))
        lines += ["", "Latency percentiles, p50 / p95 / p99:", ""]
        lines += _header(["operation", *[SHORT[v] for v in _VARIANT_ORDER]])
        for op in OPS:
            cells = []
            for v in _VARIANT_ORDER:
                s = _dig(results(doc, "ops", v), op)
                cells.append("—" if not s else
                             f"{_ns(s['p50_ns'])} / {_ns(s['p95_ns'])} / {_ns(s['p99_ns'])}")
            if all(c == "—" for c in cells):
                continue
            lines.append(_row([op, *cells]))
        lines.append("")

    if "ycsb" in suites:
        p = doc.get("params", {}).get("ycsb", {})
        lines += [f"### YCSB, memory store ({p.get('records')} records, {p.get('operations')} "
                  f"operations, {p.get('clients')} clients; ops/s, ratios of time per "
                  "operation)", ""]
        lines += _header(["workload", "plain", "sdk2-py", "native", "python", *_RATIO_HEAD])
        for w in sorted(_dig(cmp, "ycsb_memory") or {}):
            vals = [_num(_dig(results(doc, "ycsb", v), "memory", w, "ops_per_s"))
                    for v in _VARIANT_ORDER]
            lines.append(_row([w, *vals, *_ratio_cols(_dig(cmp, "ycsb_memory", w) or {})]))
        lines += ["", "YCSB on LMDB (durability=\"sync\"), oaas-sdk only: ops/s and latency "
                  "p50 / p99 over all operations; load phase records/s:", ""]
        lines += _header(["workload", "native ops/s", "python ops/s", "native p50 / p99",
                          "python p50 / p99", "native load/s", "python load/s"])
        for w in sorted(_dig(cmp, "ycsb_memory") or {}):
            r = {v: _dig(results(doc, "ycsb", v), "lmdb", w) or {} for v in OURS}
            lat = {v: r[v].get("latency_all") or {} for v in OURS}
            lines.append(_row([w, *[_num(r[v].get("ops_per_s")) for v in OURS],
                               *[f"{_ns(lat[v].get('p50_ns'))} / {_ns(lat[v].get('p99_ns'))}"
                                 for v in OURS],
                               *[_num(r[v].get("load_records_per_s")) for v in OURS]]))
        lines.append("")

    if "throughput" in suites:
        lines += ["### Commit throughput (LMDB, durability=\"sync\", "
                  "`await oaas.commit_all_async()`; objects/s, median ± standard deviation)",
                  ""]
        lines += _header(["batch", "native insert", "python insert", "native update",
                          "python update"])
        sizes = sorted({int(k) for v in OURS for k in (results(doc, "throughput", v) or {})
                        if k.isdigit()})
        for size in sizes:
            cells = []
            for kind in ("insert", "update"):
                for v in OURS:
                    s = _dig(results(doc, "throughput", v), str(size), kind)
                    if not s:
                        cells.append("—")
                        continue
                    sd = s.get("objects_per_s_stdev")
                    cells.append(f"{_num(s['objects_per_s_median'])}"
                                 + (f" ± {_num(sd)}" if sd is not None else " (1 run)"))
            lines.append(_row([f"{size:,}", *cells]))
        lines.append("")

    if "memory" in suites:
        lines += ["### Memory per object (one YCSB record: 10 × 100-byte strings; bytes)", ""]
        lines += _header(["variant", "store", "live (tracemalloc)", "live (RSS)",
                          "cached (tracemalloc)", "cached (RSS)"])
        for v in _VARIANT_ORDER:
            r = results(doc, "memory", v) or {}
            for store, s in r.items():
                if not isinstance(s, dict):
                    continue
                lines.append(_row([SHORT[v], store,
                                   _num(s.get("live_traced_bytes_per_object")),
                                   _num(s.get("live_rss_bytes_per_object")),
                                   _num(s.get("cached_traced_bytes_per_object")),
                                   _num(s.get("cached_rss_bytes_per_object"))]))
        lines += ["", "oaas-sdk ÷ peer, live objects (tracemalloc): "
                  + "; ".join(f"{SHORT[o]} ÷ {SHORT[p]} "
                              f"{_x(_dig(cmp, 'memory_live_traced', o, 'vs_' + p))}"
                              for o in OURS for p in PEERS), ""]

    if "pipeline" in suites:
        pp = doc.get("params", {}).get("pipeline", {})
        lines += [f"### Telemetry pipeline ({pp.get('sensors')} sensors, one reading each per "
                  f"tick, background commits every {pp.get('commit_interval_ms')} ms)", ""]
        lines += _header(["variant", "store", "highest rate (ticks/s)", "headroom over 1 kHz",
                          "busy at 1 kHz", "lateness p99 at 1 kHz", "missed deadlines"])
        for v in _VARIANT_ORDER:
            r = results(doc, "pipeline", v) or {}
            for store in ("memory", "lmdb"):
                s = r.get(store)
                if not isinstance(s, dict):
                    continue
                paced = s.get("paced", {})
                lines.append(_row([SHORT[v], store, _num(s.get("max_rate_hz")),
                                   _x(s.get("headroom_x")),
                                   f"{100 * paced.get('busy_fraction', float('nan')):.1f} %",
                                   f"{paced.get('lateness_p99_us', float('nan')):.0f} µs",
                                   _num(paced.get("missed_deadlines"))]))
        lines += ["", "oaas-sdk ÷ peer, time per tick at the highest rate (memory store): "
                  + "; ".join(f"{SHORT[o]} ÷ {SHORT[p]} "
                              f"{_x(_dig(cmp, 'pipeline_memory', o, 'vs_' + p))}"
                              for o in OURS for p in PEERS), ""]

    if "rust" in suites:
        r = suites["rust"]
        lines += ["### Rust (criterion)", ""]
        if "results" in r and r["results"]:
            lines += [f"`{r.get('command', 'cargo bench')}`: median ± standard deviation "
                      "per iteration; throughput at the median.", ""]
            lines += _header(["benchmark", "time per iteration", "throughput"])
            lines += [_row([k, f"{_ns(v.get('median_ns', v['ns_per_iter']))} ± "
                               f"{_ns(v['deviation_ns'])}", _rate(v)])
                      for k, v in r["results"].items()]
        else:
            lines.append(f"Not run: {r.get('skipped') or r.get('error')}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else Path(__file__).parent / "results" / "latest.json"
    print(markdown(json.loads(path.read_text())))


if __name__ == "__main__":
    main()
