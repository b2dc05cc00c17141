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
    if path.is_file() and not _drawn(path):
        raise ConfigError(f"--plot {path} exists and is no plot that vggbench drew (it does not name matplotlib, "
                          f"which draws them); it is not replaced: choose another name, or move it away")
    return path


def _drawn(path: Path) -> bool:
    """Whether matplotlib wrote `path` (PNG, SVG, PDF and PS name it in their metadata; JPEG, TIFF, WebP cannot, so
    an existing one of those is never replaced): a plot is redrawn, a photo of the same name is not lost."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
        f.seek(max(0, path.stat().st_size - (1 << 16)))
        tail = f.read()
    return b"matplotlib" in head.lower() or b"matplotlib" in tail.lower()
