"""The picture of a layer profile: relative error against depth, one line per backend/precision, log scale,
with each stage's budget check marked. matplotlib's object API only (no pyplot, no global state)."""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import UnsupportedError
from ..core.fileio import atomic_file
from ..core.plots import check_plot_path


def plot_layers(report, path: str | os.PathLike) -> Path:
    """Relative error (log) against stage, one line per profile of a LayersReport; a cross marks a stage over
    its budget. Written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = check_plot_path(path)
    if not report.profiles:
        raise UnsupportedError("nothing to plot: no backend/precision was profiled")
    names: dict[int, str] = {}
    fig = Figure(figsize=(9, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for profile in report.profiles:
        rows = [r for r in profile.rows if r.rel_error is not None]  # NaN/Inf outputs have no point to draw
        names.update({r.index: r.stage for r in rows})
        # a stage with no error at all cannot sit on a log axis: drawn at the axis' floor
        ys = [max(r.rel_error, 1e-12) for r in rows]
        line, = ax.plot([r.index for r in rows], ys, marker="o", label=f"{profile.backend} {profile.precision} "
                        f"{profile.memory_format} ({profile.mode})")
        bad = [(r.index, y) for r, y in zip(rows, ys, strict=True) if not r.within]
        if bad:
            ax.plot(*zip(*bad, strict=True), linestyle="none", marker="x", markersize=12, color=line.get_color())
    ax.set_yscale("log")
    ax.set_xticks(sorted(names), [names[i] for i in sorted(names)], rotation=30)
    ax.set_xlabel("stage (depth)")
    ax.set_ylabel("relative error vs eager fp32 (||got - ref|| / ||ref||)")
    ax.set_title(f"{report.model}: error after each stage ({report.export_dir}); x: over the precision's budget",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".").lower() or "png", dpi=120)
    return path
