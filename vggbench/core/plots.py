"""What every plot of vggbench checks before any work: that its file can be written, in a format matplotlib has."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError
from .fileio import check_writable


def check_plot_path(path: str | os.PathLike) -> Path:
    """`path` if a plot can be written there in a format its suffix names (none: PNG), else a ConfigError."""
    from matplotlib.backend_bases import FigureCanvasBase

    path = check_writable(path, folder=False, label="--plot")
    kinds = FigureCanvasBase.get_supported_filetypes()
    suffix = path.suffix.lstrip(".").lower()
    if suffix and suffix not in kinds:
        raise ConfigError(f"--plot {path}: matplotlib cannot write .{suffix} files; use one of "
                          f"{', '.join('.' + k for k in sorted(kinds))}")
    return path
