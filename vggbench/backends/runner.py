"""What every backend's runner offers its callers, and the runner of torch modules that most backends share.

A runner is built for one `Target`. `prepare` moves and converts an fp32 NCHW CPU batch into what the
backend eats (outside any timed loop); `run` is the forward pass the benchmark times; `synchronize` waits
for the device; `to_tensor` gives fp32 CPU logits for parity; `notes` says what the backend chose.
"""

from __future__ import annotations

import abc
import contextlib
import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.device import Device
from .target import Target


class Runner(abc.ABC):
    """The base of every backend's runner: its identity comes from the target it was built for; a backend
    writes `prepare`, `run` and, for outputs that are not torch tensors, `to_tensor`."""

    # True when its CUDA work runs on torch's current stream, so that CUDA events can time it and
    # `synchronize` waits for it; False for runtimes with their own streams whose calls return once the
    # outputs are ready (onnxruntime, OpenVINO), which are timed with a synchronised wall clock
    torch_stream: bool = True

    def __init__(self, target: Target) -> None:
        self.target = target
        self.name = target.backend
        self.device: Device = target.device  # results record str(device), e.g. "cuda:0"
        self.precision, self.memory_format = target.precision, target.memory_format

    @abc.abstractmethod
    def prepare(self, batch: torch.Tensor) -> Any:
        """An fp32 NCHW CPU batch as the backend eats it (device, dtype, layout), outside any timed loop."""

    @abc.abstractmethod
    def run(self, prepared: Any) -> Any:
        """The forward pass that the benchmark times."""

    def synchronize(self) -> None:
        """Wait for the device: on torch's stream, torch waits for it; the others returned when done."""
        if self.torch_stream and self.device.is_cuda:
            torch.cuda.synchronize(self.device.torch)

    def to_tensor(self, output: Any) -> torch.Tensor:
        """fp32 CPU logits, for parity."""
        if isinstance(output, (tuple, list)):  # a dense export with its score map: the scores come first
            output = output[0]
        return output.detach().float().cpu()

    def notes(self, batch: torch.Tensor) -> str:
        """What the backend chose for this batch, where it chooses anything."""
        return ""

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.to_tensor(self.run(self.prepare(batch)))


@dataclass(frozen=True)
class RunnerOptions:
    """What builds a runner besides its target: each backend's settings, by the name of the backend that owns
    them (a backend without an entry gets its settings' defaults), and images for backends that calibrate int8
    and fp8 themselves (TensorRT)."""

    settings: Mapping[str, Any] = field(default_factory=dict)
    # normalised real images (N, 3, H, W) for backends that calibrate int8 themselves (TensorRT)
    calibration: Any = None

    @classmethod
    def of(cls, *settings, calibration=None) -> RunnerOptions:
        """Options from settings objects, each filed under the backend whose settings class it is, e.g.
        RunnerOptions.of(OvSettings(threads=1))."""
        from .registry import settings_owner

        return cls({settings_owner(type(s)): s for s in settings}, calibration)

    @classmethod
    def from_settings(cls, settings=None, calibration=None) -> RunnerOptions:
        """Options from None, {backend: settings} or a list of settings objects (what the library's
        `backend_settings=` keywords take)."""
        if settings is None:
            return cls(calibration=calibration)
        if isinstance(settings, Mapping):
            return cls(dict(settings), calibration)
        return cls.of(*settings, calibration=calibration)

    def settings_for(self, target) -> Any:
        """The settings `target`'s backend runs with (its class's defaults when none were given); None for a
        backend without settings."""
        spec = target.spec
        if spec.settings is None:
            return None
        found = self.settings.get(spec.settings_name)
        return found if found is not None else spec.settings()


class TorchRunner(Runner):
    """Runs a torch callable (module, ScriptModule, exported program or compiled module)."""

    def __init__(self, module: nn.Module, target: Target, autocast: bool = True) -> None:
        super().__init__(target)
        self.module = module
        self._autocast_dtype = target.autocast_dtype if autocast else None

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device.torch, self.target.dtype).contiguous(memory_format=self.target.torch_memory_format)

    def _autocast(self):
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.kind, dtype=self._autocast_dtype)

    def run(self, prepared: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), self._autocast():
            return self.module(prepared)


def place(module: nn.Module, target: Target) -> nn.Module:
    """The module on the target's device, dtype and memory format; a copy whenever that changes anything, so
    the caller's module (often the parity reference) is never altered."""
    changes = target.device.is_cuda or target.dtype != torch.float32 or target.memory_format != "contiguous"
    module = copy.deepcopy(module).to(target.device.torch) if changes else module
    if target.dtype != torch.float32:
        module = module.to(target.dtype)
    return module.to(memory_format=target.torch_memory_format).eval()
