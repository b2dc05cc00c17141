"""The winograd backend's runner: eager channels_last with each 3x3 conv as direct or Winograd, tuned per
input shape on the first call (vggbench.backends.winograd.model)."""

from __future__ import annotations

import torch
from torch import nn

from ..registry import Backend, register
from ..runner import RunnerOptions, TorchRunner
from ..target import Target, resolve_target
from .model import winograd_model


class WinogradRunner(TorchRunner):
    """Eager channels_last with Winograd convs; layers are tuned on the first call for each input shape.
    The tuned models keep their activations between calls (vggbench.cpu_layers): one call at a time."""

    def __init__(self, module: nn.Module, target: Target | None = None) -> None:
        super().__init__(module, target or resolve_target("winograd", "cpu", "fp32", "channels_last"))
        self._source, self._tuned = module, {}
        self.choices: dict[tuple, list[dict]] = {}

    def run(self, prepared: torch.Tensor) -> torch.Tensor:
        shape = tuple(prepared.shape)
        if shape not in self._tuned:
            self._tuned[shape], self.choices[shape] = winograd_model(self._source, prepared)
        with torch.inference_mode():
            return self._tuned[shape](prepared)

    def notes(self, batch: torch.Tensor) -> str:
        """The plan tuned for this batch's shape, e.g. "conv1 direct, conv2 F6-cpp-whole, ..., fc1 onednn"."""
        rows = self.choices.get(tuple(batch.shape), [])
        return ", ".join(f"{r['layer']} {r['choice']}" for r in rows)


def winograd_runner(module: nn.Module, device: str = "cpu", precision: str = "fp32",
                    memory_format: str = "channels_last") -> WinogradRunner:
    return WinogradRunner(module, resolve_target("winograd", device, precision, memory_format))


def winograd_factory(module: nn.Module, target: Target, options: RunnerOptions | None = None) -> WinogradRunner:
    return WinogradRunner(module, target)


BACKEND = register(Backend("winograd", None, ("cpu",), ("fp32",), ("channels_last",), winograd_factory))
