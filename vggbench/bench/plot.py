"""Images/s against batch size, one line per backend / precision / memory format, as a PNG (or any
format matplotlib writes), with the spread of each point: the 95% interval of the median as a band, the
interquartile range of the single calls as a fainter one, on a log y axis (backends an order of magnitude apart
keep their shape). Uses matplotlib's object API only: no pyplot, no global state."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import ResultsError
from ..core.fileio import atomic_file
from ..core.plots import check_plot_path
from .confidence import images_interval
from .report import GROUP_KEYS, group_title, label

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def quartile_rates(row: dict) -> tuple[float, float] | None:
    """(low, high) images/s of the middle half of the row's calls: from its samples where the file has them
    (the 75th and 25th percentile of the times), else its median time -/+ half its IQR; None without either."""
    import numpy as np

    samples = row.get("samples_ms")
    if samples:
        q1, q3 = np.percentile(np.asarray(samples, dtype=float), [25, 75])
    elif row.get("median_ms") and row.get("iqr_ms") is not None:
        q1, q3 = row["median_ms"] - row["iqr_ms"] / 2, row["median_ms"] + row["iqr_ms"] / 2
    else:
        return None
    if q1 <= 0:
        return None
    return row["batch_size"] / (q3 / 1e3), row["batch_size"] / (q1 / 1e3)


def _band(ax, points: list[dict], spread, color, alpha: float) -> bool:
    """Fill between the low and high images/s `spread(row)` gives, over the points that have them; whether any
    had."""
    have = [(r["batch_size"], s) for r in points if (s := spread(r)) is not None]
    if not have:
        return False
    ax.fill_between([b for b, _ in have], [s[0] for _, s in have], [s[1] for _, s in have], color=color,
                    alpha=alpha, linewidth=0)
    return True


def plot_run(data: dict, path: str | os.PathLike) -> Path:
    """draw_run's figure written to `path` (its suffix names the format)."""
    path = check_plot_path(path)
    fig = draw_run(data)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".").lower() or "png", dpi=120)
    return path


def draw_run(data: dict) -> Figure:
    """One panel per model / image size / device; x: batch size (log2), y: images/s (log), each line with its
    spread. Only cases that ran."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

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
            x = [r["batch_size"] for r in points]
            (line,) = ax.plot(x, [r["images_per_s"] for r in points], marker="o", label=name)
            color = line.get_color()
            _band(ax, points, images_interval, color, 0.35)
            _band(ax, points, quartile_rates, color, 0.12)
            # bars as well: a band over one batch size has no width
            bars = [(r, s) for r in points if (s := images_interval(r)) is not None]
            if bars:
                ax.errorbar([r["batch_size"] for r, _ in bars], [r["images_per_s"] for r, _ in bars],
                            yerr=[[r["images_per_s"] - s[0] for r, s in bars], [s[1] - r["images_per_s"] for r, s in bars]],
                            fmt="none", ecolor=color, capsize=3, linewidth=1)
            noisy = [r for r in points if r.get("noisy") or r.get("under_load")]
            if noisy:  # hollow rings: the points whose interval is wide or that ran under load
                ax.plot([r["batch_size"] for r in noisy], [r["images_per_s"] for r in noisy], linestyle="none",
                        marker="o", markersize=11, markerfacecolor="none", markeredgecolor=color)
        sizes = sorted({r["batch_size"] for r in rows})
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(sizes))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_yscale("log")
        ax.set_xlabel("batch size (images per forward pass)")
        ax.set_ylabel("throughput (images/s, median; log scale)")
        ax.set_title(group_title(key, rows, data.get("environment", {})).replace("; ", "\n"), fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(title="backend precision memory format\n(bars and dark bands: 95% interval of the median;\n"
                        "faint bands: the calls' interquartile range; rings: noisy or under load)",
                  fontsize=8, title_fontsize=8)
    return fig
