"""The settings of `vggbench verify`, declared once; no torch import here."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..core.device import device_text
from ..core.errors import ConfigError
from ..core.fileio import check_writable
from ..core.settings import Settings, setting


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


def _is_profile(path) -> bool:
    """A JSON file that `verify --layers --out` wrote (its settings and profiles): one that may be rewritten."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
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
    channels_last: bool = setting(False, "Also compare channels_last input.")
    batch_sizes: tuple[int, ...] = setting((1, 3), "Random batches to compare.", minimum=1)
    photos: bool = setting(True, "Also compare on two real photos.")
    data: str = setting("auto", "Also compare on up to 1,000 test images of a dataset: auto (the one the weights "
                                "were trained on, when it loads offline), none, or a name (digits, cifar10, stl10, "
                                "folder:PATH).")
    atol: float | None = setting(None, "Absolute tolerance (replaces the preset's range-relative one).", minimum=0)
    rtol: float | None = setting(None, "Relative tolerance.", minimum=0)
    weights: str | None = setting(None, "Reference weights, if the file the export was made from has moved.")
    # the per-stage error profile (parity/layers.py)
    layers: bool = setting(False, "Profile the error after each stage (conv block, flatten, classifier layer) on "
                                  "prefix sub-models, and name the first stage over the precision's budget.")
    all_stages: bool = setting(False, "--layers: measure every stage instead of bisecting for the first over "
                                      "budget.")
    granularity: str = setting("blocks", "--layers: blocks (each conv block, flatten, each classifier layer) or "
                                         "layers (after every weight layer).", choices=("blocks", "layers"))
    plot: str | None = setting(None, "--layers: draw relative error against depth into this file (.png, .svg, "
                                     "...).", parse=_plot_path)
    out: str | None = setting(None, "--layers: also write the profile as JSON to this file.", parse=_json_path)

    def __post_init__(self) -> None:
        super().__post_init__()
        wanted = [name for name in ("all_stages", "plot", "out") if getattr(self, name) not in (None, False)]
        if wanted and not self.layers:
            raise ConfigError(f"--{wanted[0].replace('_', '-')} belongs to the layer profile: add --layers")
        if self.granularity != "blocks" and not self.layers:
            raise ConfigError("--granularity belongs to the layer profile: add --layers")

    def profile_layers(self, export_dir: str | os.PathLike, backend=None):
        """`vggbench.profile_layers` of `export_dir` with these settings (and `backend`: each backend's settings,
        {backend: settings object}): the LayersReport (JSON and plot written when asked for)."""
        from ..backends import RunnerOptions
        from .layers import profile_layers

        report = profile_layers(export_dir, backends=None if self.backends is None else list(self.backends),
                                device=self.device,
                                precisions=None if self.precisions is None else list(self.precisions),
                                memory_formats=("contiguous", "channels_last") if self.channels_last
                                else ("contiguous",), batch_sizes=list(self.batch_sizes), photos=self.photos,
                                atol=self.atol, rtol=self.rtol, weights=self.weights,
                                data=None if self.data.lower() == "none" else self.data,
                                all_stages=self.all_stages, granularity=self.granularity,
                                options=RunnerOptions(dict(backend or {})))
        if self.out:
            from ..core.fileio import write_json

            write_json(self.out, {"settings": self.to_dict(), **report.to_dict()})
        if self.plot:
            from ..core.errors import WriteError
            from .layer_plot import plot_layers

            try:
                plot_layers(report, self.plot)
            except WriteError as e:
                raise e.keeping(f"the profile is in {self.out}") if self.out else e from None
        return report

    def verify(self, export_dir: str | os.PathLike, backend=None):
        """`vggbench.verify` of `export_dir` with these settings (and `backend`: each backend's settings,
        {backend: settings object}): the VerifyReport."""
        from .verify import verify

        return verify(export_dir, backends=None if self.backends is None else list(self.backends),
                      device=self.device, precisions=None if self.precisions is None else list(self.precisions),
                      memory_formats=("contiguous", "channels_last") if self.channels_last else ("contiguous",),
                      batch_sizes=list(self.batch_sizes), photos=self.photos, atol=self.atol, rtol=self.rtol,
                      weights=self.weights, data=None if self.data.lower() == "none" else self.data,
                      backend_settings=backend)
