"""The paper's dense (fully-convolutional) form of a VGG: the classifier's Linear layers become convolutions, so
the net takes an image of any size >= the training size and gives a class score map.

The first Linear layer becomes a convolution whose kernel is the feature map at the training size (7x7 at 224);
the later ones become 1x1 convolutions. The model's AdaptiveAvgPool2d is folded into that first kernel: from an
s x s feature map (s = training size / 32) it is a fixed linear map onto the pool x pool grid the Linear layer
reads, so the folded kernel gives exactly the FC model's logits at the training size (s = 7: the pool is the
identity and the kernel is the weight reshaped). The dense net has no adaptive pool, which would otherwise squash
every input back to the training size's grid.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..core.arguments import expect
from ..core.errors import ConfigError, UnsupportedError

# Layers that act on each value (or channel) alone: they work the same on a score map as on a vector.
_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Dropout, nn.Identity)


def feature_size(features: nn.Sequential, image_size: int) -> int:
    """The side of the last feature map for a square input of `image_size` (each 2x2 max-pool floors)."""
    side = image_size
    for m in features:
        if isinstance(m, nn.MaxPool2d):
            side = (side - 2) // 2 + 1
    return side


def adaptive_pool_matrix(side: int, pool: int) -> torch.Tensor:
    """(pool, side): AdaptiveAvgPool1d from `side` to `pool` values as a matrix (torch's bins)."""
    matrix = torch.zeros(pool, side, dtype=torch.float64)
    for p in range(pool):
        start, end = (p * side) // pool, -(-((p + 1) * side) // pool)
        matrix[p, start:end] = 1.0 / (end - start)
    return matrix


class DenseVGG(nn.Module):
    """features -> convolutional head -> class score map (N, classes, h, w), spatially averaged.

    forward returns the averaged class scores (N, classes); with `return_map`, (scores, map).
    """

    def __init__(self, features: nn.Sequential, head: nn.Sequential, return_map: bool = False) -> None:
        super().__init__()
        self.features, self.head, self.return_map = features, head, return_map

    def score_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def forward(self, x: torch.Tensor):
        scores_map = self.score_map(x)
        scores = scores_map.mean(dim=(2, 3))
        if self.return_map:
            return scores, scores_map
        return scores


def _pool_size(module: nn.Module) -> int:
    pool = getattr(module, "avgpool", None)
    if not isinstance(pool, nn.AdaptiveAvgPool2d):
        raise UnsupportedError(f"{type(module).__name__} has no AdaptiveAvgPool2d `avgpool`: not a VGG of vggbench's")
    size = pool.output_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    if size[0] != size[1] or size[0] is None:
        raise UnsupportedError(f"dense form needs a square adaptive pool, got {size}")
    return int(size[0])


def dense_model(module: nn.Module, train_size: int, return_map: bool = False) -> DenseVGG:
    """The dense form of a VGG module (features, avgpool, classifier), equal to it on `train_size` inputs.

    Built from the classifier's actual Linear layers, whatever their widths; the module itself is not changed.
    """
    from .models import VGG

    expect("dense_model", "module", module, VGG, "a VGG module (vggbench.build, or LoadedModel.module)")
    expect("dense_model", "train_size", train_size, int, "an integer")
    features = copy.deepcopy(module.features)
    pool = _pool_size(module)
    side = feature_size(features, train_size)
    if side < 1:
        raise ConfigError(f"training size {train_size} leaves no feature map after the max-pools")
    channels = [m for m in features if isinstance(m, nn.Conv2d)][-1].out_channels
    layers: list[nn.Module] = []
    first = True
    for m in module.classifier:
        if isinstance(m, nn.Linear):
            if first:
                if m.in_features != channels * pool * pool:
                    raise UnsupportedError(f"the first classifier layer takes {m.in_features} values, not "
                                           f"{channels} channels x {pool}x{pool}: cannot make it a convolution")
                pooling = adaptive_pool_matrix(side, pool)
                w = m.weight.detach().double().reshape(m.out_features, channels, pool, pool)
                # kernel[o, c, i, j] = sum_pq W[o, c, p, q] P[p, i] P[q, j]: the pool folded in
                kernel = torch.einsum("ocpq,pi,qj->ocij", w, pooling, pooling)
                conv = nn.Conv2d(channels, m.out_features, kernel_size=side)
                first = False
            else:
                kernel = m.weight.detach().double().reshape(m.out_features, m.in_features, 1, 1)
                conv = nn.Conv2d(m.in_features, m.out_features, kernel_size=1)
            conv = conv.to(m.weight.dtype)
            with torch.no_grad():
                conv.weight.copy_(kernel.to(m.weight.dtype))
                if m.bias is not None:
                    conv.bias.copy_(m.bias.detach())
                else:
                    conv.bias.zero_()
            layers.append(conv.to(m.weight.device))
        elif isinstance(m, _ELEMENTWISE):
            layers.append(copy.deepcopy(m))
        else:
            raise UnsupportedError(f"the classifier's {type(m).__name__} has no dense (convolutional) form here")
    if first:
        raise UnsupportedError("the classifier has no Linear layer to make a convolution of")
    dense = DenseVGG(features, nn.Sequential(*layers), return_map=return_map)
    return dense.train(module.training)


def min_dense_size(features: nn.Sequential, train_size: int) -> int:
    """The smallest square input the dense form takes: one whose feature map covers the first kernel."""
    side = feature_size(features, train_size)
    pools = sum(isinstance(m, nn.MaxPool2d) for m in features)
    return side * 2 ** pools


def dense_gmacs(dense: DenseVGG, height: int, width: int) -> float:
    """Multiply-accumulates (G) of one height x width image through the dense net: convolutions only."""
    macs, h, w = 0, height, width
    for m in [*dense.features, *dense.head]:
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            h, w = h + 2 * m.padding[0] - kh + 1, w + 2 * m.padding[1] - kw + 1
            macs += h * w * m.out_channels * m.in_channels * kh * kw
        elif isinstance(m, nn.MaxPool2d):
            h, w = (h - 2) // 2 + 1, (w - 2) // 2 + 1
    return macs / 1e9
