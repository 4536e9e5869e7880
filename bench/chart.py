"""The fleet-size sweep as a PNG: orch's (and the bare loop's) schedule lateness p99 and
CPU share against the number of projects, with the "at scale" goals drawn in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import report


def sweep_chart(sweep: list[dict[str, Any]], path: Path, interval: float = 10.0) -> Path:
    """``sweep``: one ``{"projects": n, "orch": result, "baseline": result}`` per size."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file only
    import matplotlib.pyplot as plt

    sizes = [point["projects"] for point in sweep]
    xlabel = f"projects (each every {interval:g} s)"
    fig, (late_ax, cpu_ax) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    names = {"orch": "orch", "baseline": "bare aiohttp loop", "baseline-lean": "bare lean loop"}
    for mode, style in (("orch", "o-"), ("baseline", "s--"), ("baseline-lean", "^:")):
        if not all(mode in point for point in sweep):
            continue
        p99_ms = [point[mode]["lateness_p99_s"] * 1000 for point in sweep]
        cpu_pct = [point[mode]["cpu_share"] * 100 for point in sweep]
        label = names[mode]
        late_ax.plot(sizes, p99_ms, style, label=label)
        cpu_ax.plot(sizes, cpu_pct, style, label=label)
    late_ax.set(title="schedule lateness p99", xlabel=xlabel, ylabel="ms")
    late_ax.set_ylim(bottom=0)
    cpu_ax.axhline(report.SCALE_CPU * 100, color="red", linewidth=0.8, label="goal at 5,000")
    cpu_ax.set(title="CPU", xlabel=xlabel, ylabel="% of one core")
    cpu_ax.set_ylim(bottom=0)
    for ax in (late_ax, cpu_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
