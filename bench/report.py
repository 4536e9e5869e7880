"""Turn measurements into JSON lines ``{"name", "value", "unit", ...parameters}``.

Every line carries the run's parameters (projects, interval_s, duration_s, warmup_s) and
its start time, so a line read alone from ``bench/results/*.jsonl`` still says what it
measured. Lines go to stdout and are appended to ``bench/results/<timestamp>.jsonl``.
"""

from __future__ import annotations

import io
import json
import math
import pstats
import statistics
import sys
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# The "Foundation" goal at 1,000 projects polled every 10 s.
GOAL_LATENESS_P99_S = 1.0
GOAL_CPU_RATIO = 3.0
# "Benchmarks at scale": 5,000 projects every 10 s on one orch process.
SCALE_PROJECTS = 5000
SCALE_CPU = 0.25  # of one core
SCALE_RSS_MB = 300.0

# (key in a worker's result, metric name, unit)
PER_MODE = [
    ("probes_per_s", "probes_per_s", "probes/s"),
    ("lateness_p50_s", "lateness_p50", "s"),
    ("lateness_p99_s", "lateness_p99", "s"),
    ("lateness_max_s", "lateness_max", "s"),
    ("cpu_per_probe_s", "cpu_per_probe", "cpu_s/probe"),
    ("cpu_share", "cpu_share", "cores"),
    ("peak_rss_mb", "peak_rss", "MB"),
    ("success_rate_pct", "success_rate", "%"),
    ("probes", "probes_measured", "probes"),
]
# The fleet's processes over the whole bench (start-up included), for a sanity check.
FLEET = [("cpu_total", "cpu_s"), ("peak_rss", "MB")]


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 9)
    return value


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from several rounds of one side: the median of each figure, except the
    counts (summed), peak RSS (the highest) and healthy projects (the lowest); anything
    else from the last round."""
    if len(runs) == 1:
        return runs[0]
    out = dict(runs[-1])
    for key, value in runs[-1].items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        values = [run[key] for run in runs]
        if key in ("probes", "rows_written", "rows_dropped", "handler_failures"):
            out[key] = sum(values)
        elif key == "peak_rss_mb":
            out[key] = max(values)
        elif key == "projects_healthy":
            out[key] = min(values)
        else:
            out[key] = statistics.median(values)
    out["rounds"] = [
        {k: run[k] for k in ("cpu_per_probe_s", "lateness_p99_s", "success_rate_pct")}
        for run in runs
    ]
    return out


def build_lines(
    params: dict[str, Any], results: dict[str, dict[str, Any]], fleet: dict[str, Any]
) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []

    def add(name: str, value: Any, unit: str) -> None:
        lines.append({"name": name, "value": _clean(value), "unit": unit, **params})

    for mode, result in results.items():
        for key, name, unit in PER_MODE:
            if key in result:
                add(f"polling.{mode}.{name}", result[key], unit)
    orch, base = results.get("orch"), results.get("baseline")
    if orch and base and base.get("cpu_per_probe_s"):
        ratio = orch["cpu_per_probe_s"] / base["cpu_per_probe_s"]
        add("polling.cpu_per_probe_ratio_orch_over_baseline", ratio, "x")
        add("polling.goal.cpu_ratio_at_most_3x", ratio <= GOAL_CPU_RATIO, "bool")
    lean = results.get("baseline-lean")
    if orch and lean and lean.get("cpu_per_probe_s"):
        ratio = orch["cpu_per_probe_s"] / lean["cpu_per_probe_s"]
        add("polling.cpu_per_probe_ratio_orch_over_baseline_lean", ratio, "x")
    if orch:
        ok = orch["lateness_p99_s"] < GOAL_LATENESS_P99_S
        add("polling.goal.orch_lateness_p99_under_1s", ok, "bool")
        if params.get("projects", 0) >= SCALE_PROJECTS:  # "Benchmarks at scale"
            add("polling.goal.orch_cpu_at_most_25pct", orch["cpu_share"] <= SCALE_CPU, "bool")
            add("polling.goal.orch_rss_under_300mb", orch["peak_rss_mb"] < SCALE_RSS_MB, "bool")
    for (name, unit), value in zip(FLEET, fleet.values(), strict=True):
        add(f"polling.fleet.{name}", value, unit)
    return lines


def emit(lines: list[dict[str, Any]], stamp: str, results_dir: Path = RESULTS_DIR) -> Path:
    """Print ``lines`` to stdout and append them to ``results_dir/<stamp>.jsonl``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{stamp}.jsonl"
    text = "".join(json.dumps(line) + "\n" for line in lines)
    sys.stdout.write(text)
    sys.stdout.flush()
    with path.open("a", encoding="utf-8") as out:
        out.write(text)
    return path


def summary(results: dict[str, dict[str, Any]]) -> str:
    """A few human lines for stderr: what the JSON says, and whether the bench is sane."""
    rows = []
    for mode, r in results.items():
        rows.append(
            f"{mode:>13}: {r['probes_per_s']:7.1f} probes/s  lateness p50 "
            f"{r['lateness_p50_s'] * 1000:6.1f} ms  p99 {r['lateness_p99_s'] * 1000:7.1f} ms  "
            f"cpu/probe {r['cpu_per_probe_s'] * 1e6:7.0f} µs  cpu {r['cpu_share'] * 100:5.1f} %"
            f"  rss {r['peak_rss_mb']:6.1f} MB  ok {r['success_rate_pct']:6.2f} %"
        )
        if r["success_rate_pct"] < 99.0:
            rows.append(f"          WARNING: success rate below 99 %: the bench is broken ({r})")
    orch, base = results.get("orch"), results.get("baseline")
    if orch and base and base.get("cpu_per_probe_s"):
        ratio = orch["cpu_per_probe_s"] / base["cpu_per_probe_s"]
        rows.append(f"   ratio: orch/baseline CPU per probe {ratio:.2f}x")
    lean = results.get("baseline-lean")
    if orch and lean and lean.get("cpu_per_probe_s"):
        ratio = orch["cpu_per_probe_s"] / lean["cpu_per_probe_s"]
        rows.append(f"   ratio: orch/baseline-lean CPU per probe {ratio:.2f}x")
    return "\n".join(rows)


# Worker fields worth a look on stderr but not reported as metrics.
DIAGNOSTICS = (
    "handler_failures",
    "projects_healthy",
    "rows_written",
    "rows_dropped",
    "failure_reasons",
    "window_s",
    "rounds",
    "cpu_loop_thread_s",
    "cpu_other_threads_s",
    "cpu_kernel_s",
    "loop_stall_p99_s",
    "loop_stall_max_s",
    "gc_pause_total_s",
    "gc_full_collections",
    "gc_full_pause_max_s",
)


def top_functions(prof: Path, limit: int = 25) -> str:
    """The heaviest functions of a cProfile dump, by own time and by cumulative time."""
    buffer = io.StringIO()
    stats = pstats.Stats(str(prof), stream=buffer)
    buffer.write(f"--- {prof.name}: by own time\n")
    stats.sort_stats("tottime").print_stats(limit)
    buffer.write(f"--- {prof.name}: by cumulative time\n")
    stats.sort_stats("cumulative").print_stats(limit)
    return buffer.getvalue()
