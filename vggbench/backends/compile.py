"""compile: torch.compile (inductor); the first call compiles, and the benchmark records it as first-call time."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core.settings import setting
from .profiling import module_profiler
from .registry import Backend, Knob, register
from .runner import RunnerOptions, TorchRunner, place
from .settings import BackendSettings
from .target import MEMORY_FORMATS, Target

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True, kw_only=True)
class CompileSettings(BackendSettings):
    """torch.compile's settings; recorded with every result."""

    mode: str | None = setting(None, "torch.compile mode: default, reduce-overhead, max-autotune, ...",
                               choices=MODES)
    freezing: bool = setting(False, "torch.compile with inductor freezing (weights as constants, prepacked).")

    @property
    def options(self) -> dict | None:
        """torch.compile(options=...)."""
        return {"freezing": True} if self.freezing else None

    def variant(self) -> str:
        return self.mode or ""


def reset() -> None:
    """Drop the compiled graphs, so that later runners do not hit the recompile limit (torch._dynamo is imported
    here, on the first call, not with this module: it takes seconds)."""
    torch._dynamo.reset()


def compile_factory(module: nn.Module, target: Target, options: RunnerOptions | None = None) -> TorchRunner:
    settings = (options or RunnerOptions()).settings_for(target)
    compiled = torch.compile(place(module, target), mode=settings.mode, options=settings.options, dynamic=False)
    return TorchRunner(compiled, target)


BACKEND = register(Backend("compile", None, ("cpu", "cuda"), ("fp32", "amp", "bf16", "fp16"), tuple(MEMORY_FORMATS),
                           compile_factory, aliases=("torch.compile", "inductor"), min_warmup=3, deployable=False,
                           close=reset, settings=CompileSettings, option_prefix="compile",
                           profiler=module_profiler,
                           knobs=(Knob("mode", (None, "max-autotune-no-cudagraphs")), Knob("freezing"))))
