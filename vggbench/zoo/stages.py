"""A VGG cut into stages, and the prefix sub-model that ends at any stage (for per-layer error profiles).

Stages of `blocks` granularity: each conv block's output (after its ReLU and max-pool), the flattened features
(after the adaptive pool), then each classifier layer (after its ReLU; the last one is the logits). `layers`
granularity cuts after every weight layer instead (after its BatchNorm and ReLU). A prefix keeps the module
names of the full model (features.N, classifier.N), so its parameters, and every artifact made from it, carry
the same names as the full model's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import ConfigError

GRANULARITIES = ("blocks", "layers")


@dataclass(frozen=True)
class Stage:
    """Where a prefix ends: after `features[:features_end]`, then (with `pooled`) the adaptive pool and the
    flatten, then `classifier[:classifier_end]`."""

    index: int  # 1-based, in depth order
    name: str  # block1.., flatten, fc1.. (blocks); conv1.., flatten, fc1.. (layers)
    layers: tuple[str, ...]  # the weight layers (conv1, fc2, ...) whose output this stage is or contains
    features_end: int
    pooled: bool = False
    classifier_end: int = 0

    def to_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "layers": list(self.layers)}


class VGGPrefix(nn.Module):
    """The first stages of a VGG: the same submodules (shared, not copied) under the same names."""

    def __init__(self, model: nn.Module, stage: Stage) -> None:
        super().__init__()
        self.features = model.features[:stage.features_end]
        self.avgpool = model.avgpool if stage.pooled else None
        self.classifier = model.classifier[:stage.classifier_end] if stage.pooled else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if self.avgpool is not None:
            x = torch.flatten(self.avgpool(x), 1)
            x = self.classifier(x)
        return x


def weight_layers(model: nn.Module) -> dict[str, str]:
    """The model's weight layers in depth order: conv1.. and fc1.. -> module name (features.0, classifier.6)."""
    convs = [f"features.{i}" for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
    linears = [f"classifier.{i}" for i, m in enumerate(model.classifier or ()) if isinstance(m, nn.Linear)]
    return {**{f"conv{i}": n for i, n in enumerate(convs, 1)}, **{f"fc{i}": n for i, n in enumerate(linears, 1)}}


def _end_after(sequence: nn.Sequential, start: int) -> int:
    """The index just past the layer at `start` and the BatchNorm/ReLU/Dropout that follow it."""
    end = start + 1
    while end < len(sequence) and isinstance(sequence[end], (nn.BatchNorm2d, nn.ReLU, nn.Dropout)):
        end += 1
    return end


def stages(model: nn.Module, granularity: str = "blocks") -> list[Stage]:
    """The stages of a VGG (see the module's docstring), the last one being the whole model."""
    if granularity not in GRANULARITIES:
        raise ConfigError(f"unknown stage granularity {granularity!r}: choose {' or '.join(GRANULARITIES)}")
    features, classifier = model.features, model.classifier
    conv_names = {i: f"conv{k}" for k, i in enumerate(
        (i for i, m in enumerate(features) if isinstance(m, nn.Conv2d)), 1)}
    found: list[tuple[str, tuple[str, ...], int, bool, int]] = []
    if granularity == "blocks":
        block: list[str] = []
        for i, m in enumerate(features):
            block += [conv_names[i]] if i in conv_names else []
            if isinstance(m, nn.MaxPool2d):
                found.append((f"block{len(found) + 1}", tuple(block), i + 1, False, 0))
                block = []
    else:
        found = [(name, (name,), _end_after(features, i), False, 0) for i, name in conv_names.items()]
    found.append(("flatten", (), len(features), True, 0))
    linears = [i for i, m in enumerate(classifier) if isinstance(m, nn.Linear)]
    for k, i in enumerate(linears, 1):
        # keep the Dropout (identity in eval) of the last layer out: the prefix ends where the next begins
        end = _end_after(classifier, i) if k < len(linears) else len(classifier)
        found.append((f"fc{k}", (f"fc{k}",), len(features), True, end))
    return [Stage(n, name, layers, f_end, pooled, c_end)
            for n, (name, layers, f_end, pooled, c_end) in enumerate(found, 1)]


def find_stage(model: nn.Module, name: str, granularity: str = "blocks") -> Stage:
    """A stage by name, or a ConfigError listing the stage names."""
    known = stages(model, granularity)
    for stage in known:
        if stage.name == name:
            return stage
    raise ConfigError(f"unknown stage {name!r}: this model's stages are {', '.join(s.name for s in known)}")


def prefix(model: nn.Module, stage: Stage) -> nn.Module:
    """The sub-model that computes `stage`'s output (for the last stage, the whole model's computation)."""
    return VGGPrefix(model, stage).eval()
