"""The VGG module: one layer builder, one module class, the two initialisations, one builder."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from ..core.arguments import expect
from .specs import (  # noqa: F401  (re-exported: models is the public face of the zoo)
    CONFIGS,
    HEADS,
    INITS,
    LRN_PARAMS,
    NORMAL_INIT,
    ModelOptions,
    ModelSpec,
    check_fits_memory,
    check_image_size,
    get_spec,
    list_models,
    lrn_arguments,
    register_model,
    scale,
)


def make_layers(layers: Iterable, batch_norm: bool, width: float = 1.0, in_channels: int = 3) -> nn.Sequential:
    """The feature extractor. Module indices match torchvision's for the configs it has."""
    modules: list[nn.Module] = []
    for token in layers:
        if token == "M":
            modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif token == "LRN":
            modules.append(nn.LocalResponseNorm(**lrn_arguments()))
        else:
            out, kernel = token if isinstance(token, tuple) else (token, 3)
            out = scale(out, width)
            modules.append(nn.Conv2d(in_channels, out, kernel_size=kernel, padding=kernel // 2))
            if batch_norm:
                modules.append(nn.BatchNorm2d(out))
            modules.append(nn.ReLU(inplace=True))
            in_channels = out
    return nn.Sequential(*modules)


class VGG(nn.Module):
    """Features, an adaptive average pool and a classifier, as torchvision lays them out: Linear, ReLU, Dropout
    per hidden layer (two of 4096 in the paper), then the last Linear."""

    # return_features: forward returns (logits, h), h the flattened pooled features the classifier takes, as
    # post 002's forward does; a constant so that TorchScript compiles only the branch taken
    __constants__ = ["return_features"]

    def __init__(self, features: nn.Sequential, feature_channels: int, num_classes: int = 1000,
                 hidden: int | Sequence[int] = 4096, dropout: float = 0.5, pool: int = 7,
                 return_features: bool = False) -> None:
        super().__init__()
        self.return_features = return_features
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((pool, pool))
        widths = (hidden, hidden) if isinstance(hidden, int) else tuple(hidden)
        layers: list[nn.Module] = []
        fan_in = feature_channels * pool * pool
        for width in widths:
            layers += [nn.Linear(fan_in, width), nn.ReLU(inplace=True), nn.Dropout(p=dropout)]
            fan_in = width
        self.classifier = nn.Sequential(*layers, nn.Linear(fan_in, num_classes))

    def forward(self, x: torch.Tensor):
        x = self.features(x)
        x = self.avgpool(x)
        h = torch.flatten(x, 1)
        if self.return_features:
            return self.classifier(h), h
        return self.classifier(h)


def init_kaiming(model: nn.Module) -> None:
    """torchvision's initialisation."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def init_paper(model: nn.Module) -> None:
    """The paper's random initialisation: N(0, 0.01^2) weights and zero biases everywhere."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_glorot(model: nn.Module, relu_gain: bool = False) -> None:
    """Glorot & Bengio (2010)'s uniform initialisation with zero biases, which the paper found lets its deep nets
    train from scratch, without net A's weights. relu_gain: every layer but the last scaled by sqrt(2) (torch's
    calculate_gain("relu")), so that the signal keeps its scale through the ReLUs instead of halving its variance
    at each one."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            gain = nn.init.calculate_gain("relu") if relu_gain and m is not layers[-1] else 1.0
            nn.init.xavier_uniform_(m.weight, gain=gain)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_normal(model: nn.Module, std: float) -> None:
    """N(0, std^2) weights and zero biases in every conv and linear layer (post 004's code: std 1e-4)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0, std)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_torch(model: nn.Module) -> None:
    """PyTorch's own defaults, as a model built with plain nn layers gets them (post 000): every layer's
    reset_parameters() (Kaiming-uniform with a = sqrt(5) and fan-in-scaled uniform biases), drawn again so that
    the seed decides them as it does the other inits."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
            m.reset_parameters()


_INIT_FUNCTIONS = {"kaiming": init_kaiming, "paper": init_paper, "glorot": init_glorot,
                   "glorot_relu": lambda model: init_glorot(model, relu_gain=True), "torch": init_torch}


def initialise(model: nn.Module, init: str) -> None:
    """Apply the init named `init` (one of INITS, or normal:STD)."""
    kind, _, std = init.partition(":")
    if kind == NORMAL_INIT:
        init_normal(model, float(std))
    else:
        _INIT_FUNCTIONS[init](model)


def build(spec: ModelSpec | str, options: ModelOptions | None = None, *, return_features: bool = False) -> VGG:
    """A freshly initialised VGG (uses the global RNG; see `weights.load_model` for seeded builds).
    return_features: forward returns (logits, h), h the flattened features the classifier takes (post 002)."""
    expect("build", "spec", spec, (str, ModelSpec), "a model name (str) or ModelSpec")
    expect("build", "options", options, (ModelOptions, type(None)), "a ModelOptions or None")
    spec = get_spec(spec) if isinstance(spec, str) else spec
    options = options or ModelOptions()
    if torch.get_default_device().type != "meta":  # profile() builds on the meta device: no memory is taken
        check_fits_memory(spec, options)
    features = make_layers(spec.layers, spec.batch_norm, options.width)
    last = [m for m in features if isinstance(m, nn.Conv2d)][-1].out_channels
    model = VGG(features, last, options.num_classes, options.hidden_features, options.dropout,
                HEADS[options.head]["pool"], return_features=return_features)
    initialise(model, options.init)
    return model


