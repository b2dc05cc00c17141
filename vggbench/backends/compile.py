"""compile: torch.compile (inductor); the first call compiles, and the benchmark records it as first-call time."""

from __future__ import annotations

import torch
from torch import nn

from .registry import Backend, register
from .runner import RunnerOptions, TorchRunner, place
from .target import MEMORY_FORMATS, Target

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_factory(module: nn.Module, target: Target, options: RunnerOptions | None = None) -> TorchRunner:
    options = options or RunnerOptions()
    compiled = torch.compile(place(module, target), mode=options.compile_mode, options=options.compile_options,
                             dynamic=False)
    return TorchRunner(compiled, target)


BACKEND = register(Backend("compile", None, ("cpu", "cuda"), ("fp32", "amp", "bf16", "fp16"), tuple(MEMORY_FORMATS),
                           compile_factory, aliases=("torch.compile", "inductor"), min_warmup=3, deployable=False,
                           close=torch._dynamo.reset))
