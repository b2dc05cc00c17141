"""eager: the nn.Module itself under torch.inference_mode (autocast for amp and bf16)."""

from __future__ import annotations

from torch import nn

from .profiling import module_profiler
from .registry import Backend, register
from .runner import RunnerOptions, TorchRunner, place
from .target import MEMORY_FORMATS, Target


def eager_factory(module: nn.Module, target: Target, options: RunnerOptions | None = None) -> TorchRunner:
    return TorchRunner(place(module, target), target)


BACKEND = register(Backend("eager", None, ("cpu", "cuda"), ("fp32", "amp", "bf16", "fp16"), tuple(MEMORY_FORMATS),
                           eager_factory, thread_safe=True, deployable=False,
                           profiler=module_profiler))
