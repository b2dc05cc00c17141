"""Per-layer output shapes, parameters and multiply-accumulates: of a zoo model from its layer list's arithmetic
(no torch import), of any module by running it once."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.arguments import expect
from .specs import HEADS, ModelOptions, ModelSpec, check_image_size, get_spec, lrn_arguments, scale


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


def _macs(module, out) -> int:
    from torch import nn

    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return out[0].numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features
    return 0


def _detail(module) -> str:
    from torch import nn

    if isinstance(module, nn.Conv2d):
        return _conv_detail(module.kernel_size[0], module.in_channels, module.out_channels)
    if isinstance(module, nn.Linear):
        return f"{module.in_features}->{module.out_features}"
    if isinstance(module, nn.MaxPool2d):
        return f"{module.kernel_size}x{module.kernel_size} /{module.stride}"
    if isinstance(module, nn.AdaptiveAvgPool2d):
        size = module.output_size
        return f"to {size[0]}x{size[1]}" if isinstance(size, tuple) else f"to {size}x{size}"
    if isinstance(module, nn.LocalResponseNorm):
        return _lrn_detail(module.size, module.alpha, module.beta, module.k)
    if isinstance(module, nn.Dropout):
        return f"p={module.p:g}"
    if isinstance(module, nn.BatchNorm2d):
        return str(module.num_features)
    return ""


def _conv_detail(kernel: int, in_channels: int, out_channels: int) -> str:
    return f"{kernel}x{kernel} {in_channels}->{out_channels}"


def _lrn_detail(size, alpha, beta, k) -> str:
    return f"size {size}, alpha {alpha:g}, beta {beta:g}, k {k:g}"


def profile_module(model, image_size: int, name: str = "model") -> ModelProfile:
    """Profile any module on a 3-channel square input of `image_size` (runs it once, with forward hooks)."""
    import torch

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


def spec_layers(spec: ModelSpec, options: ModelOptions, image_size: int) -> tuple[LayerInfo, ...]:
    """The leaf layers `build(spec, options)` makes, with their shapes, params and MACs on one image, from the
    layer list's arithmetic: `models` and `info` answer without importing torch (seconds and most of a GB of
    memory for a table of numbers). models.make_layers and models.VGG lay the modules out; the two are compared,
    model by model, in tests/test_models.py."""
    rows: list[LayerInfo] = []
    index = {"features": 0, "classifier": 0}  # nn.Sequential's names: the position in its container

    def add(kind, detail, shape, params=0, macs=0, prefix="features"):
        rows.append(LayerInfo(f"{prefix}.{index[prefix]}", kind, detail, tuple(shape), params, macs))
        index[prefix] += 1

    channels, side = 3, image_size
    for token in spec.layers:
        if token == "M":
            side //= 2
            add("MaxPool2d", "2x2 /2", (channels, side, side))
        elif token == "LRN":
            lrn = lrn_arguments()
            add("LocalResponseNorm", _lrn_detail(lrn["size"], lrn["alpha"], lrn["beta"], lrn["k"]),
                (channels, side, side))
        else:
            out, kernel = token if isinstance(token, tuple) else (token, 3)
            out = scale(out, options.width)
            shape = (out, side, side)
            add("Conv2d", _conv_detail(kernel, channels, out), shape, channels * out * kernel * kernel + out,
                out * side * side * channels * kernel * kernel)
            if spec.batch_norm:
                add("BatchNorm2d", str(out), shape, 2 * out)
            add("ReLU", "", shape)
            channels = out
    pool = HEADS[options.head]["pool"]
    rows.append(LayerInfo("avgpool", "AdaptiveAvgPool2d", f"to {pool}x{pool}", (channels, pool, pool), 0, 0))
    fan_in = channels * pool * pool
    for width in options.hidden_features:
        add("Linear", f"{fan_in}->{width}", (width,), fan_in * width + width, fan_in * width, prefix="classifier")
        add("ReLU", "", (width,), prefix="classifier")
        add("Dropout", f"p={options.dropout:g}", (width,), prefix="classifier")
        fan_in = width
    add("Linear", f"{fan_in}->{options.num_classes}", (options.num_classes,), fan_in * options.num_classes
        + options.num_classes, fan_in * options.num_classes, prefix="classifier")
    return tuple(rows)


def profile(spec: ModelSpec | str, options: ModelOptions | None = None, image_size: int = 224) -> ModelProfile:
    """Shapes, params and MACs of a registered model, from its layer list (nothing is built; no torch import)."""
    expect("profile", "spec", spec, (str, ModelSpec), "a model name (str) or ModelSpec")
    expect("profile", "options", options, (ModelOptions, type(None)), "a ModelOptions or None")
    expect("profile", "image_size", image_size, int, "an integer")
    spec = get_spec(spec) if isinstance(spec, str) else spec
    check_image_size(spec, image_size)
    return ModelProfile(spec.name, image_size, spec_layers(spec, options or ModelOptions(), image_size))


def zoo_rows(names: list[str], options: ModelOptions | None = None, image_size: int = 224) -> list[dict]:
    """One summary row per model: config, depth, BN, LRN, params, GMACs and published weights."""
    from .imagenet import hub_cache_path, published_weights

    rows = []
    for name in names:
        spec = get_spec(name)
        prof = profile(spec, options, image_size)
        weights = "-"
        if spec.torchvision_name:
            tag, url = published_weights(spec)
            cached = hub_cache_path(url).exists()
            weights = f"imagenet ({tag}{', cached' if cached else ''})"
        rows.append({"name": spec.name, "config": spec.config, "depth": spec.depth, "bn": spec.batch_norm,
                     "lrn": spec.lrn, "params": prof.params, f"gmacs@{image_size}": round(prof.gmacs, 4),
                     "weights": weights})
    return rows


def layer_rows(prof: ModelProfile) -> list[dict]:
    """One row per leaf layer, with its output shape for one image."""
    return [{"layer": layer.name, "type": layer.kind, "detail": layer.detail,
             "output": "x".join(map(str, layer.out_shape)), "params": layer.params,
             "mmacs": round(layer.macs / 1e6, 2)} for layer in prof.layers]
