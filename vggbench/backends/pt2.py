"""pt2: model.pt2 via torch.export.load."""

from __future__ import annotations

from pathlib import Path

import torch

from .artifact import place_artifact, torch_deploy_config
from .profiling import module_profiler
from .registry import Backend, register
from .runner import RunnerOptions, TorchRunner
from .target import MEMORY_FORMATS, Target


def pt2_factory(path: Path, target: Target, options: RunnerOptions | None = None,
                artifact_precision: str = "fp32") -> TorchRunner:
    module = torch.export.load(str(path)).module()
    return TorchRunner(place_artifact(module, target, artifact_precision), target)


BACKEND = register(Backend("pt2", "pt2", ("cpu", "cuda"), ("fp32", "amp", "bf16", "fp16"), tuple(MEMORY_FORMATS),
                           pt2_factory, aliases=("export", "torch.export"), thread_safe=True,
                           profiler=module_profiler, runtime="torch", deploy_precisions=("fp32",),
                           deploy_config=torch_deploy_config))
