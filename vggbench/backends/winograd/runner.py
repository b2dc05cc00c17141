"""The winograd backend's runner: eager channels_last with each 3x3 conv as direct or Winograd, tuned per
input shape on the first call (vggbench.backends.winograd.model).

A shape's first call tunes it, then builds the chosen plan again (the tuning's own model is dropped).
A tuned model holds its own weights (the Winograd layers' transformed ones among them) and, per layer, the
activations and workspaces it keeps between calls: about 1 GB for VGG16 at batch 8. The runner keeps the
models of the shapes used last, up to `max_cache_bytes`; an evicted shape's model is rebuilt on its next
call from the plan its tuning chose (untimed, so the same layers and the same outputs as before).
With a plan given (`--winograd-plan`, a row's notes), every shape follows it and none is tuned.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from ...core.device import Device
from ...core.errors import ConfigError
from ...core.settings import setting
from ..profiling import torch_profile
from ..registry import Backend, Knob, register
from ..runner import RunnerOptions, TorchRunner
from ..settings import BackendSettings
from ..target import Target, resolve_target
from . import native, onednn
from .layers import held_bytes
from .matrices import TILES
from .model import variants, winograd_model

DEFAULT_CACHE_BYTES = 2 * 2**30  # a VGG16 at batch 8 holds about 1 GB; smaller models fit many shapes


@dataclass(frozen=True, kw_only=True)
class WinogradSettings(BackendSettings):
    """Which Winograd tiles the per-layer tuning may choose from (beside the direct convolution); recorded with
    every result."""

    tiles: tuple[int, ...] = setting(TILES, "winograd: the output tile sizes m of F(m x m, 3 x 3) each conv may use "
                                            "(the fastest per layer is timed on the first call).", choices=TILES)

    plan: str | None = setting(None, "winograd: follow this plan for every input shape instead of timing each "
                                     "layer's choices on the first call: a row's notes, e.g. \"conv1 direct, conv2 "
                                     "F6-cpp-whole, ..., fc1 onednn\" (one entry per 3x3 conv and per Linear) "
                                     "[default: tuned per shape].", parse=lambda text: _checked_plan(text))

    def __post_init__(self) -> None:
        super().__post_init__()  # the plan's entries are known ones (_checked_plan); their tiles must be allowed too
        allowed = _conv_choices(self.tiles)
        for row in parse_plan(self.plan) if self.plan is not None else ():
            if row["layer"].startswith("conv") and row["choice"] not in allowed:
                m = _conv_choices(TILES)[row["choice"]]["m"]
                raise ConfigError(f"the plan's {row['layer']} {row['choice']} uses F({m}x{m}), which the tiles "
                                  f"setting leaves out ({', '.join(map(str, self.tiles))})")

    def variant(self) -> str:
        return "" if self.tiles == TILES else "F" + "/".join(map(str, self.tiles))


def parse_plan(plan: str) -> list[dict]:
    """A tuning's rows ({"layer", "choice"}) from its plan as a row's notes give it: "conv1 direct, conv2
    F6-cpp-whole, ..., fc1 onednn", after any model note and before any "; torch fallback: ..."."""
    # the plan is the part of a row's notes that names the convs (a model's note may come before it)
    text = next((part for part in str(plan).split(";") if part.strip().startswith("conv")), None)
    if text is None:
        raise ValueError(f"no winograd plan in {plan!r} (expected e.g. 'conv1 direct, conv2 F6-cpp-whole, ...')")
    rows = []
    for entry in text.split(","):
        layer, _, choice = entry.strip().partition(" ")
        if not layer.startswith(("conv", "fc")) or not choice.strip():
            raise ValueError(f"not a winograd plan entry: {entry.strip()!r} (expected e.g. 'conv2 F6-cpp-whole')")
        rows.append({"layer": layer, "choice": choice.strip()})
    return rows


def _conv_choices(tiles) -> dict[str, dict]:
    """What a plan may name for a 3x3 conv with these tiles: direct, and every Winograd variant by name (the C++ ones
    too, which may still be unavailable on this machine: the case then says so)."""
    return {"direct": {}, **variants(tiles, native=False), **variants(tiles, native=True)}


def _checked_plan(text) -> str:
    """--winograd-plan as typed: a plan parse_plan reads, whose entries name known variants (the C++ ones may
    still be unavailable on this machine: the case then says so)."""
    if not isinstance(text, str):
        raise ConfigError(f"winograd plan must be a string, got {text!r}")
    try:
        rows = parse_plan(text)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    known = _conv_choices(TILES)
    for row in rows:
        allowed = {"torch", "onednn"} if row["layer"].startswith("fc") else known
        if row["choice"] not in allowed:
            raise ConfigError(f"the plan's {row['layer']} {row['choice']!r} is none of {', '.join(sorted(allowed))}")
    return text


def _plan(rows: list[dict]) -> tuple[list[str], list[str]]:
    """(each 3x3 conv's choice, each Linear's choice) from a tuning's rows."""
    return ([r["choice"] for r in rows if r["layer"].startswith("conv")],
            [r["choice"] for r in rows if r["layer"].startswith("fc")])


class WinogradRunner(TorchRunner):
    """Eager channels_last with Winograd convs; layers are tuned on the first call for each input shape.
    The tuned models keep their activations between calls (see layers.py): one call at a time.

    max_cache_bytes: the bytes of tuned models kept (weights, kept activations and workspaces, measured
    from their tensors); the least recently used go first. The model in use is kept even when it alone
    is larger."""

    def __init__(self, module: nn.Module, target: Target | None = None,
                 max_cache_bytes: int = DEFAULT_CACHE_BYTES, tiles: tuple[int, ...] = TILES,
                 plan: str | None = None) -> None:
        super().__init__(module, target or resolve_target("winograd", "cpu", "fp32", "channels_last"))
        self._source, self._max_cache_bytes, self.tiles = module, 0, tuple(tiles)
        self._plan = parse_plan(plan) if plan is not None else None  # every shape's, when given
        self._tuned: OrderedDict[tuple, tuple[nn.Module, int]] = OrderedDict()  # shape -> (model, bytes)
        self.choices: dict[tuple, list[dict]] = {}  # every shape tuned so far (small): rebuilds follow it
        self.max_cache_bytes = max_cache_bytes  # checked

    @property
    def max_cache_bytes(self) -> int:
        return self._max_cache_bytes

    @max_cache_bytes.setter
    def max_cache_bytes(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"max_cache_bytes must not be negative, got {value}")
        self._max_cache_bytes = value
        self._evict()

    def _evict(self) -> None:
        """Drops the least recently used models until the rest fit the bound (the latest always stays)."""
        while len(self._tuned) > 1 and self.cache_bytes > self._max_cache_bytes:
            self._tuned.popitem(last=False)

    def run(self, prepared: torch.Tensor) -> torch.Tensor:
        shape = tuple(prepared.shape)
        if shape in self._tuned:
            self._tuned.move_to_end(shape)
            with torch.inference_mode():
                return self._tuned[shape][0](prepared)
        if shape not in self.choices and self._plan is not None:
            self.choices[shape] = [dict(row) for row in self._plan]
        if shape not in self.choices:
            # the tuning's own model is dropped and the plan built again, as an evicted shape and a cross-check's
            # timer build it: one construction for a plan wherever it runs. Not for speed: on 2026-12-06 (AVX2
            # EPYC, VGG16 at batch 8) one plan ran 8.6-10.6 images/s in six fresh processes, and 8.3-10.4 in six
            # blocks of one process, a wider spread than any gap seen between tuned and rebuilt models
            # (benchmarks/README.md, "Winograd after its tuning")
            self.choices[shape] = winograd_model(self._source, prepared, self.tiles)[1]
        convs, linears = _plan(self.choices[shape])
        model, _ = winograd_model(self._source, prepared, self.tiles, choose=convs or "direct", linears=linears)
        with torch.inference_mode():
            out = model(prepared)  # allocates what the model keeps, so that it can be counted
        self._tuned[shape] = (model, held_bytes(model))
        self._evict()
        return out

    @property
    def cached(self) -> dict[tuple, int]:
        """The bytes each kept tuned model holds, by input shape, least recently used first."""
        return {shape: size for shape, (_, size) in self._tuned.items()}

    @property
    def cache_bytes(self) -> int:
        return sum(size for _, size in self._tuned.values())

    def follow(self, shape: tuple, plan: str) -> None:
        """Run inputs of `shape` with the plan another process tuned (its notes: "conv1 direct, conv2 F6-cpp-whole,
        ..., fc1 onednn") instead of tuning again: the per-layer timings behind a tuning move with the machine, so
        two processes can draw two plans whose speeds differ by several per cent (2026-12-06, Zen 4: a cross-check
        of winograd read 0.90-1.01x on the same settings). Read on the next call of that shape."""
        rows = parse_plan(plan)
        shape = tuple(shape)
        self.choices[shape] = rows
        self._tuned.pop(shape, None)

    def notes(self, batch: torch.Tensor) -> str:
        """The plan tuned for this batch's shape, e.g. "conv1 direct, conv2 F6-cpp-whole, ..., fc1 onednn",
        then any oneDNN op that failed its probe and why."""
        rows = self.choices.get(tuple(batch.shape), [])
        plan = ", ".join(f"{r['layer']} {r['choice']}" for r in rows)
        problems = onednn.problems()
        return f"{plan}; torch fallback: {'; '.join(problems.values())}" if problems else plan


def winograd_runner(module: nn.Module, device: str | Device = "cpu", precision: str = "fp32",
                    memory_format: str = "channels_last") -> WinogradRunner:
    return WinogradRunner(module, resolve_target("winograd", device, precision, memory_format))


def winograd_factory(module: nn.Module, target: Target, options: RunnerOptions | None = None) -> WinogradRunner:
    settings = (options or RunnerOptions()).settings_for(target) or WinogradSettings()
    return WinogradRunner(module, target, tiles=settings.tiles, plan=settings.plan)


def _profiler(runner: WinogradRunner, batch: torch.Tensor, calls: int):
    """torch.profiler over the tuned model of the batch's shape, one scope per layer (its direct, Winograd and
    oneDNN layers run vggbench's own ops, which no op name tells apart)."""
    prepared = runner.prepare(batch)
    runner.run(prepared)  # the shape's model tuned (or rebuilt) before anything is profiled
    return torch_profile(runner, batch, calls, runner._tuned[tuple(prepared.shape)][0])


def _environment() -> dict:
    return {"native_kernels": native.describe()}  # its C++ transforms, as built (or as they would be)


BACKEND = register(Backend("winograd", None, ("cpu",), ("fp32",), ("channels_last",), winograd_factory,
                           fewer_flops=True, deployable=False, environment=_environment, settings=WinogradSettings,
                           option_prefix="winograd", profiler=_profiler,
                           knobs=(Knob("tiles", (TILES, *((m,) for m in TILES))),)))
