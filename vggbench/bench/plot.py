"""Images/s against batch size, one line per backend / precision / memory format, as a PNG (or any
format matplotlib writes). Uses matplotlib's object API only: no pyplot, no global state."""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import ResultsError
from ..core.fileio import atomic_file
from ..core.plots import check_plot_path
from .report import GROUP_KEYS, group_title, label


def plot_run(data: dict, path: str | os.PathLike) -> Path:
    """One panel per model / image size / device; x: batch size (log2), y: images/s. Only cases that ran."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    path = check_plot_path(path)
    ok = [r for r in data["results"] if r["status"] == "ok" and not r.get("scenario")]  # LoadGen rows: no batch axis
    if not ok:
        raise ResultsError("nothing to plot: no case in these results ran (every status is a failure)")
    groups: dict[tuple, list[dict]] = {}
    for r in ok:
        groups.setdefault(tuple(r[k] for k in GROUP_KEYS), []).append(r)
    fig = Figure(figsize=(9, 4.5 * len(groups)), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, (key, rows) in zip(fig.subplots(len(groups), 1, squeeze=False)[:, 0], groups.items(), strict=True):
        lines: dict[str, list[dict]] = {}
        for r in rows:
            lines.setdefault(f"{label(r)} {r['precision']} {r['memory_format']}", []).append(r)
        for name, points in lines.items():
            points.sort(key=lambda r: r["batch_size"])
            ax.plot([r["batch_size"] for r in points], [r["images_per_s"] for r in points], marker="o", label=name)
        sizes = sorted({r["batch_size"] for r in rows})
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(sizes))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_ylim(bottom=0)
        ax.set_xlabel("batch size (images per forward pass)")
        ax.set_ylabel("throughput (images/s, median)")
        ax.set_title(group_title(key, rows, data.get("environment", {})).replace("; ", "\n"), fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(title="backend precision memory format", fontsize=8, title_fontsize=8)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".").lower() or "png", dpi=120)
    return path
