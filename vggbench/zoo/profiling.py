"""Per-layer output shapes, parameters and multiply-accumulates, computed by running on the meta device."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core.arguments import expect
from .models import build
from .specs import ModelOptions, ModelSpec, check_image_size, get_spec


@dataclass(frozen=True)
class LayerInfo:
    name: str  # state_dict prefix, e.g. "features.0"
    kind: str  # module class, e.g. "Conv2d"
    detail: str  # e.g. "3x3 3->64"
    out_shape: tuple[int, ...]  # for one image, without the batch dim
    params: int
    macs: int


@dataclass(frozen=True)
class ModelProfile:
    model: str
    image_size: int
    layers: tuple[LayerInfo, ...]

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    def stages(self) -> list[LayerInfo]:
        """The layers that end a stage: each max-pool, the adaptive pool and the last linear layer."""
        return [layer for layer in self.layers if layer.kind in ("MaxPool2d", "AdaptiveAvgPool2d")] + \
            [self.layers[-1]]


def _macs(module: nn.Module, out: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return out[0].numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features
    return 0


def _detail(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        return f"{module.kernel_size[0]}x{module.kernel_size[1]} {module.in_channels}->{module.out_channels}"
    if isinstance(module, nn.Linear):
        return f"{module.in_features}->{module.out_features}"
    if isinstance(module, nn.MaxPool2d):
        return f"{module.kernel_size}x{module.kernel_size} /{module.stride}"
    if isinstance(module, nn.AdaptiveAvgPool2d):
        size = module.output_size
        return f"to {size[0]}x{size[1]}" if isinstance(size, tuple) else f"to {size}x{size}"
    if isinstance(module, nn.LocalResponseNorm):
        return f"size {module.size}, alpha {module.alpha:g}, beta {module.beta:g}, k {module.k:g}"
    if isinstance(module, nn.Dropout):
        return f"p={module.p:g}"
    if isinstance(module, nn.BatchNorm2d):
        return str(module.num_features)
    return ""


def profile_module(model: nn.Module, image_size: int, name: str = "model") -> ModelProfile:
    """Profile any module on a 3-channel square input of `image_size`."""
    rows: list[LayerInfo] = []
    hooks = []
    for prefix, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue

        def hook(mod, inputs, out, prefix=prefix):
            rows.append(LayerInfo(prefix, type(mod).__name__, _detail(mod), tuple(out.shape[1:]),
                                  sum(p.numel() for p in mod.parameters()), _macs(mod, out)))
        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(torch.empty(1, 3, image_size, image_size, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    return ModelProfile(name, image_size, tuple(rows))


def profile(spec: ModelSpec | str, options: ModelOptions | None = None, image_size: int = 224) -> ModelProfile:
    """Shapes, params and MACs of a registered model; builds it on the meta device, so it is instant."""
    expect("profile", "spec", spec, (str, ModelSpec), "a model name (str) or ModelSpec")
    expect("profile", "options", options, (ModelOptions, type(None)), "a ModelOptions or None")
    expect("profile", "image_size", image_size, int, "an integer")
    spec = get_spec(spec) if isinstance(spec, str) else spec
    check_image_size(spec, image_size)
    with torch.device("meta"):
        model = build(spec, options).eval()
    return profile_module(model, image_size, spec.name)


def zoo_rows(names: list[str], options: ModelOptions | None = None, image_size: int = 224) -> list[dict]:
    """One summary row per model: config, depth, BN, LRN, params, GMACs and published weights."""
    from .imagenet import hub_cache_path, imagenet_weights

    rows = []
    for name in names:
        spec = get_spec(name)
        prof = profile(spec, options, image_size)
        weights = "-"
        if spec.torchvision_name:
            published = imagenet_weights(spec)
            cached = hub_cache_path(published.url).exists()
            weights = f"imagenet ({published.name}{', cached' if cached else ''})"
        rows.append({"name": spec.name, "config": spec.config, "depth": spec.depth, "bn": spec.batch_norm,
                     "lrn": spec.lrn, "params": prof.params, f"gmacs@{image_size}": round(prof.gmacs, 4),
                     "weights": weights})
    return rows


def layer_rows(prof: ModelProfile) -> list[dict]:
    """One row per leaf layer, with its output shape for one image."""
    return [{"layer": layer.name, "type": layer.kind, "detail": layer.detail,
             "output": "x".join(map(str, layer.out_shape)), "params": layer.params,
             "mmacs": round(layer.macs / 1e6, 2)} for layer in prof.layers]
