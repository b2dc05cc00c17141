"""The settings of `vggbench verify` (and of `vggbench.verify` and `vggbench.profile_layers`), declared once; no
torch import here."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..core.device import device_text
from ..core.documents import read_text
from ..core.errors import ConfigError
from ..core.fileio import check_writable
from ..core.settings import Settings, check_keys, setting


def _plot_path(value):
    if isinstance(value, str):
        from ..core.plots import check_plot_path

        check_plot_path(value)
    return value


def _json_path(value):
    if isinstance(value, str):
        path = check_writable(value, folder=False, label="--out")
        if path.is_file() and not _is_profile(path):
            raise ConfigError(f"--out {path} exists and is no layer profile that vggbench wrote; it is not replaced: "
                              f"choose another name, or move it away")
    return value


def _path_text(value):
    """A path given as a str or an os.PathLike (a library caller's Path), stored as text."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _is_profile(path) -> bool:
    """A JSON file that `verify --layers --out` wrote (its settings and profiles): one that may be rewritten."""
    import json

    try:
        data = json.loads(read_text(path))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("settings"), dict) and isinstance(data.get("profiles"), list)


@dataclass(frozen=True, kw_only=True)
class VerifySettings(Settings):
    """What to compare against the eager model, on which inputs, with which tolerances."""

    backends: tuple[str, ...] | None = setting(None, "Comma-separated [default: every artifact in the folder]; "
                                                     "eager and compile compare the eager model itself in another "
                                                     "precision or memory format.")
    device: str = setting("cpu", "cpu, cuda or cuda:N.", parse=device_text)
    precisions: tuple[str, ...] | None = setting(None, "Comma-separated: {precisions} [default: the export's "
                                                       "precision].", option="--precision")
    memory_formats: tuple[str, ...] = setting(("contiguous",), "Comma-separated: contiguous, channels_last.",
                                              option="--memory-format")
    batch_sizes: tuple[int, ...] = setting((1, 3), "Random batches to compare, comma-separated.", minimum=1,
                                           option="--batch-size", aliases=("--batch-sizes",))  # the older spelling
    photos: bool = setting(True, "Also compare on two real photos.")
    data: str | None = setting("auto", "Also compare on up to 1,000 test images of a dataset: auto (the one the "
                                       "weights were trained on, when it loads offline), none, or a name (digits, "
                                       "cifar10, stl10, folder:PATH).")
    data_images: int | None = setting(None, "Dataset images compared at most [default: 1,000; 256 with --layers, "
                                            "which holds every stage's activations of all images at once].",
                                      minimum=1, cli=False)
    atol: float | None = setting(None, "Absolute tolerance (replaces the preset's range-relative one).", minimum=0)
    rtol: float | None = setting(None, "Relative tolerance.", minimum=0)
    weights: str | None = setting(None, "Reference weights, if the file the export was made from has moved.",
                                  parse=_path_text)
    # the per-stage error profile (parity/layers.py)
    layers: bool = setting(False, "Profile the error after each stage (conv block, flatten, classifier layer) on "
                                  "prefix sub-models, and name the first stage over the precision's budget.")
    all_stages: bool = setting(False, "--layers: measure every stage instead of bisecting for the first over "
                                      "budget.")
    granularity: str = setting("blocks", "--layers: blocks (each conv block, flatten, each classifier layer) or "
                                         "layers (after every weight layer).", choices=("blocks", "layers"))
    cache_dir: str | None = setting(None, "--layers: keep the prefix exports in this folder and reuse them "
                                          "[default: a temporary folder].", parse=_path_text, cli=False)
    plot: str | None = setting(None, "--layers: draw relative error against depth into this file (.png, .svg, "
                                     "...).", parse=_plot_path)
    out: str | None = setting(None, "--layers: also write the profile as JSON to this file.", parse=_json_path)

    def __post_init__(self) -> None:
        super().__post_init__()
        wanted = [name for name in ("all_stages", "cache_dir", "plot", "out")
                  if getattr(self, name) not in (None, False)]
        if wanted and not self.layers:
            raise ConfigError(f"--{wanted[0].replace('_', '-')} belongs to the layer profile: add --layers")
        if self.granularity != "blocks" and not self.layers:
            raise ConfigError("--granularity belongs to the layer profile: add --layers")

    @classmethod
    def of(cls, options: Mapping, where: str, *, layers: bool = False) -> VerifySettings:
        """The settings a library call's keywords give (`where` names it in errors): `vggbench.verify`'s, or with
        `layers` `vggbench.profile_layers`'s."""
        check_keys(options, [n for n in cls.setting_names() if n != "layers"], where)
        return cls(**options, layers=layers)

    @property
    def dataset(self) -> str | None:
        """The dataset to compare on: auto, a name, or None for none."""
        return None if self.data is None or self.data.lower() == "none" else self.data
