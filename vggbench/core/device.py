"""Devices as typed values: parsed once at the edge (`parse_device`), checked against this machine once
(`require_device`); everything below takes a `Device` and asks it `.is_cuda`, never a string."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ConfigError, UnsupportedError

_SYNTAX = re.compile(r"(cpu|cuda)(?::(\d+))?")
AUTO = "auto"


@dataclass(frozen=True)
class Device:
    """cpu, cuda or cuda:N. `str(device)` is how results and manifests record it."""

    kind: str  # "cpu" | "cuda"
    index: int | None = None

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    @property
    def torch(self):
        """The torch.device (imports torch)."""
        import torch

        return torch.device(str(self))


CPU = Device("cpu")


def parse_device(value: str | Device, *, allow_auto: bool = False) -> Device | str:
    """'cpu', 'cuda', 'cuda:1' -> Device; 'auto' stays 'auto' where `allow_auto`. One message for a bad value,
    whatever the command: a ConfigError (exit 2)."""
    if isinstance(value, Device):
        return value
    text = str(value).strip().lower()
    if allow_auto and text == AUTO:
        return AUTO
    match = _SYNTAX.fullmatch(text)
    if not match or (match.group(1) == "cpu" and match.group(2) is not None):
        choices = "auto, cpu, cuda or cuda:N" if allow_auto else "cpu, cuda or cuda:N"
        raise ConfigError(f"unknown device {value!r}: use {choices}")
    return Device(match.group(1), int(match.group(2)) if match.group(2) is not None else None)


def device_text(value: str | Device) -> str:
    """cpu, cuda or cuda:N as `parse_device` writes it: how settings store a device (a setting's `parse`)."""
    return str(parse_device(value))


def device_or_auto_text(value: str | Device) -> str:
    """Like `device_text`, and 'auto' is kept."""
    return str(parse_device(value, allow_auto=True))


def cuda_count() -> int:
    """How many CUDA devices torch sees (0 without CUDA); the one place that asks."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def require_device(value: str | Device) -> Device:
    """The device, after checking that this machine has it; an UnsupportedError that says why not."""
    device = parse_device(value)
    if not device.is_cuda:
        return device
    count = cuda_count()
    if count == 0:
        import torch

        why = "this torch has no CUDA support" if torch.version.cuda is None else "no CUDA device is visible"
        raise UnsupportedError(f"device {device} requested but CUDA is not available ({why}); use --device cpu")
    if device.index is not None and device.index >= count:
        raise UnsupportedError(f"device {device} does not exist: {count} CUDA device(s)")
    return device


def resolve_device(value: str | Device) -> Device:
    """Like `require_device`, and 'auto' becomes cuda where there is one, else cpu."""
    device = parse_device(value, allow_auto=True)
    if device == AUTO:
        return Device("cuda") if cuda_count() else CPU
    return require_device(device)


def cpu_bf16_instructions() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere torch and oneDNN emulate it
    through fp32 conversions, several times slower than fp32 itself."""
    import torch

    probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(probe() for probe in probes if probe is not None)


def available_memory_bytes(device: str | None = None) -> int | None:
    """Memory an allocation may still take: the GPU's free memory for a cuda device, else the system's available
    memory (psutil; Linux's MemAvailable); None where it cannot be read. The one reader for every fits-in-memory
    check (a model in zoo, a batch or a sample library in loadgen)."""
    if device is not None and str(device).startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            try:
                return int(torch.cuda.mem_get_info(torch.device(device))[0])
            except (RuntimeError, ValueError):
                return None
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except (ImportError, OSError, RuntimeError):
        return None
