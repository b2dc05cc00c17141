"""torchscript: model.ts via torch.jit.load."""

from __future__ import annotations

from pathlib import Path

import torch

from .artifact import place_artifact, torch_deploy_config
from .profiling import module_profiler
from .registry import Backend, register
from .runner import RunnerOptions, TorchRunner
from .target import MEMORY_FORMATS, Target


def torchscript_factory(path: Path, target: Target, options: RunnerOptions | None = None,
                        artifact_precision: str = "fp32") -> TorchRunner:
    module = torch.jit.load(str(path), map_location=str(target.device))
    return TorchRunner(place_artifact(module, target, artifact_precision), target)


BACKEND = register(Backend("torchscript", "torchscript", ("cpu", "cuda"), ("fp32", "amp", "bf16", "fp16"),
                           tuple(MEMORY_FORMATS), torchscript_factory, aliases=("ts", "jit"), thread_safe=True,
                           profiler=module_profiler, runtime="torch", deploy_precisions=("fp32",),
                           deploy_config=torch_deploy_config))
