"""What a runner is asked to be: backend, device, precision and memory format, resolved once into a `Target`.

`resolve_target` is the one place that checks a combination: names against the registry, the backend's
capabilities, and the device against this machine. Whatever the command, a bad value gets the same
`UnsupportedError` message, naming the part that does not fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.device import Device, parse_device, require_device
from ..core.errors import UnsupportedError
from ..exporters.manifest import INT8_FORMAT
from .registry import Backend, get_backend

# name -> (autocast dtype, weight/input dtype). amp is fp16 autocast: CUDA only; bf16 autocast runs anywhere.
PRECISIONS: dict[str, tuple[torch.dtype | None, torch.dtype]] = {
    "fp32": (None, torch.float32),
    "amp": (torch.float16, torch.float32),
    "bf16": (torch.bfloat16, torch.float32),
    "fp16": (None, torch.float16),
    "int8": (None, torch.float32),  # onnxruntime static quantization: fp32 in and out, int8 inside
    "fp8": (None, torch.float32),  # TensorRT on compute capability 8.9+: fp32 in and out, fp8 inside
}
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


@dataclass(frozen=True)
class Target:
    """One runnable combination; `str(target)` reads "eager cpu fp32 contiguous"."""

    backend: str
    device: Device
    precision: str
    memory_format: str = "contiguous"

    def __str__(self) -> str:
        return f"{self.backend} {self.device} {self.precision} {self.memory_format}"

    @property
    def spec(self) -> Backend:
        return get_backend(self.backend)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return PRECISIONS[self.precision][0]

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the module's weights and of its input."""
        return PRECISIONS[self.precision][1]

    @property
    def torch_memory_format(self) -> torch.memory_format:
        return MEMORY_FORMATS[self.memory_format]

    @property
    def artifact(self) -> str | None:
        """The export format this target loads: its backend's, model.int8.onnx at precision int8 (unless the
        backend builds its precisions itself), or None for backends that run the module itself."""
        if self.spec.artifact is None:
            return None
        return INT8_FORMAT if self.precision == "int8" and not self.spec.builds_precisions else self.spec.artifact

    @property
    def export_precision(self) -> str:
        """The precision of the export this target loads: fp16 runs an fp16 export, except on a backend that
        builds its precisions from the fp32 one; everything else (amp, bf16, int8, fp8) an fp32 export."""
        return "fp16" if self.precision == "fp16" and not self.spec.builds_precisions else "fp32"

    @property
    def is_reference(self) -> bool:
        """Eager fp32 contiguous on the CPU: what every other target is compared with."""
        return (self.backend, str(self.device), self.precision, self.memory_format) == \
            ("eager", "cpu", "fp32", "contiguous")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise UnsupportedError(f"unknown precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    return precision


def check_memory_format(memory_format: str) -> str:
    if memory_format not in MEMORY_FORMATS:
        raise UnsupportedError(f"unknown memory format {memory_format!r}: choose from {', '.join(MEMORY_FORMATS)}")
    return memory_format


def resolve_target(backend: str, device: str | Device = "cpu", precision: str = "fp32",
                   memory_format: str = "contiguous", *, available: bool = True) -> Target:
    """A Target, or an UnsupportedError that says which part cannot run (unknown name, a capability the
    backend lacks, amp on a CPU, a device this machine does not have). available=False skips the last check
    (for planning on another machine)."""
    spec = get_backend(backend)
    device = parse_device(device)
    check_precision(precision)
    check_memory_format(memory_format)
    if device.kind not in spec.devices:
        raise UnsupportedError(f"{spec.name} does not run on {device} (it runs on {', '.join(spec.devices)})")
    if precision not in spec.precisions:
        raise UnsupportedError(f"{spec.name} does not support {precision} (it supports {', '.join(spec.precisions)})")
    if memory_format not in spec.memory_formats:
        raise UnsupportedError(f"{spec.name} takes {', '.join(spec.memory_formats)} input only, not {memory_format}")
    if precision == "amp" and not device.is_cuda:
        raise UnsupportedError("amp (fp16 autocast) needs CUDA; on cpu use bf16 (bf16 autocast) or fp32")
    if available:
        require_device(device)
    return Target(spec.name, device, precision, memory_format)
