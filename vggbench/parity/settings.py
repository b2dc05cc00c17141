"""The settings of `vggbench verify`, declared once; no torch import here."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..core.device import device_text
from ..core.settings import Settings, setting


@dataclass(frozen=True, kw_only=True)
class VerifySettings(Settings):
    """What to compare against the eager model, on which inputs, with which tolerances."""

    backends: tuple[str, ...] | None = setting(None, "Comma-separated [default: every artifact in the folder]; "
                                                     "eager and compile compare the eager model itself in another "
                                                     "precision or memory format.")
    device: str = setting("cpu", "cpu, cuda or cuda:N.", parse=device_text)
    precisions: tuple[str, ...] | None = setting(None, "Comma-separated: fp32, fp16, amp, bf16, int8 [default: the "
                                                       "export's precision].", option="--precision")
    channels_last: bool = setting(False, "Also compare channels_last input.")
    batch_sizes: tuple[int, ...] = setting((1, 3), "Random batches to compare.", minimum=1)
    photos: bool = setting(True, "Also compare on two real photos.")
    data: str = setting("auto", "Also compare on up to 1,000 test images of a dataset: auto (the one the weights "
                                "were trained on, when it loads offline), none, or a name (digits, cifar10, stl10, "
                                "folder:PATH).")
    atol: float | None = setting(None, "Absolute tolerance (replaces the preset's range-relative one).", minimum=0)
    rtol: float | None = setting(None, "Relative tolerance.", minimum=0)
    weights: str | None = setting(None, "Reference weights, if the file the export was made from has moved.")

    def verify(self, export_dir: str | os.PathLike):
        """`vggbench.verify` of `export_dir` with these settings: the VerifyReport."""
        from .verify import verify

        return verify(export_dir, backends=None if self.backends is None else list(self.backends),
                      device=self.device, precisions=None if self.precisions is None else list(self.precisions),
                      memory_formats=("contiguous", "channels_last") if self.channels_last else ("contiguous",),
                      batch_sizes=list(self.batch_sizes), photos=self.photos, atol=self.atol, rtol=self.rtol,
                      weights=self.weights, data=None if self.data.lower() == "none" else self.data)
