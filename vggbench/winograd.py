"""Winograd convolution (Lavin & Gray, 2016) for VGG's 3x3 convs, on the CPU, in plain torch ops.

F(m x m, 3x3) computes an m x m output tile from an (m+2) x (m+2) input tile with (m+2)^2
multiplications instead of 9 m^2: 2.25x fewer for F(2x2), 4x fewer for F(4x4). The multiplications
become one batched GEMM per layer, [(m+2)^2, tiles, C_in] x [(m+2)^2, C_in, C_out], which MKL runs
near its peak; the tile transforms around it are memory-bound. So Winograd wins on the deep layers
(many channels, small images) and loses on the first ones, and the best choice per layer depends on
the machine: `winograd_model` measures each 3x3 conv once on the real input shape and keeps the
fastest of direct (oneDNN, channels_last), F(2x2) and F(4x4).

Tensors stay channels_last throughout (an NCHW tensor with NHWC strides), so direct and Winograd
layers chain without copies. F(4x4) moves fp32 logits by ~1e-5 of their range (transform constants
up to 8 grow rounding error); `vggbench verify` checks the result against eager like any backend.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Transform matrices: B^T (input), G (filter), A^T (output).
_MATRICES = {
    2: ([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]]),
    4: ([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
         [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
         [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]),
}
TILES = tuple(_MATRICES)
CHUNK_BYTES = 2 * 2**20  # about one core's L2 cache


class WinogradConv2d(nn.Module):
    """A 3x3, stride-1, padding-1 convolution computed as Winograd F(m x m, 3x3), bias and ReLU fused."""

    def __init__(self, conv: nn.Conv2d, m: int = 4, relu: bool = True, chunk_bytes: int | None = CHUNK_BYTES) -> None:
        super().__init__()
        if conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.padding != (1, 1) or conv.groups != 1 \
                or conv.dilation != (1, 1):
            raise ValueError("Winograd F(m, 3) here takes 3x3 convs with stride 1, padding 1")
        if m not in _MATRICES:
            raise ValueError(f"tile size must be one of {TILES}, got {m}")
        bt, g, at = (torch.tensor(a, dtype=torch.float64) for a in _MATRICES[m])
        # chunk_bytes: the transformed tiles of one band of tile rows (None: a whole image at once)
        self.m, self.alpha, self.relu, self.chunk_bytes = m, m + 2, relu, chunk_bytes
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        w = conv.weight.detach().double()
        # U[xi, c, o] = (G w G^T) flattened over the alpha x alpha transform positions xi
        u = torch.einsum("ij,ocjk,lk->ilco", g, w, g).reshape(self.alpha ** 2, self.in_channels, self.out_channels)
        self.register_buffer("u", u.float().contiguous())
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(self.out_channels)
        self.register_buffer("bias", bias.float().clone())
        self.register_buffer("t_in", torch.kron(bt, bt).float())  # vec(B^T d B) = kron(B^T, B^T) vec(d)
        self.register_buffer("t_out", torch.kron(at, at).float())  # vec(A^T M A) = kron(A^T, A^T) vec(M)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        m, a, co = self.m, self.alpha, self.out_channels
        th, tw = -(-h // m), -(-w // m)
        nhwc = x.permute(0, 2, 3, 1)  # a free view for channels_last input
        padded = F.pad(nhwc, (0, 0, 1, m * tw + 1 - w, 1, m * th + 1 - h))
        tiles = padded.unfold(1, a, m).unfold(2, a, m)  # [n, th, tw, c, a, a], a view
        out = torch.empty(n, h, w, co, dtype=x.dtype, device=x.device)
        # Bands of tile rows small enough that a band's transformed tiles stay in cache between the
        # input transform, the GEMM and the output transform: each step then reads what the last wrote.
        # In the deep layers the transformed weights (a^2 x C_in x C_out, up to 38 MB) outweigh the tiles,
        # and each band re-reads them: there one band (chunk_bytes None) is faster. The tuner decides.
        budget = self.chunk_bytes or th * a * a * tw * max(c, co) * x.element_size()
        rows = max(1, min(th, budget // (a * a * tw * max(c, co) * x.element_size())))
        for i in range(n):
            for r0 in range(0, th, rows):
                r1 = min(th, r0 + rows)
                p = (r1 - r0) * tw
                d = tiles[i, r0:r1].permute(3, 4, 0, 1, 2).reshape(a * a, p * c)  # the one gather copy
                v = torch.mm(self.t_in, d).view(a * a, p, c)
                prod = torch.bmm(v, self.u)  # [a*a, p, out]: the multiplications
                y = torch.mm(self.t_out, prod.view(a * a, p * co)).view(m, m, r1 - r0, tw, co)
                y = y.permute(2, 0, 3, 1, 4).reshape((r1 - r0) * m, tw * m, co)
                rows_out = min(h, r1 * m) - r0 * m
                out[i, r0 * m:r0 * m + rows_out] = y[:rows_out, :w]
        out.add_(self.bias)
        if self.relu:
            out.relu_()
        return out.permute(0, 3, 1, 2)  # NCHW shape, channels_last memory

    def extra_repr(self) -> str:
        bands = f"bands of {self.chunk_bytes / 2**20:g} MiB" if self.chunk_bytes else "whole images"
        return f"{self.in_channels}, {self.out_channels}, F({self.m}x{self.m}, 3x3), relu={self.relu}, {bands}"


def fold_batch_norm(features: nn.Sequential) -> nn.Sequential:
    """Eval-mode BatchNorm folded into the conv before it (w * gamma / sigma, shifted bias)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    layers: list[nn.Module] = []
    for layer in features:
        if isinstance(layer, nn.BatchNorm2d) and layers and isinstance(layers[-1], nn.Conv2d):
            layers[-1] = fuse_conv_bn_eval(layers[-1], layer)
        else:
            layers.append(layer)
    return nn.Sequential(*layers)


def _time(fn, x: torch.Tensor, repeats: int) -> float:
    with torch.inference_mode():
        fn(x)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            fn(x)
            best = min(best, time.perf_counter() - start)
    return best


def winograd_model(module: nn.Module, example: torch.Tensor, tiles: Sequence[int] = TILES,
                   repeats: int = 3, choose: str | None = None) -> tuple[nn.Module, list[dict]]:
    """A copy of a VGG whose conv+ReLU pairs run as the fastest of direct, F(2x2) and F(4x4) (in
    cache-sized bands of tile rows, or whole images: "F4-whole"), timed on the shapes `example` produces
    (or all as `choose`: "direct", "F2", "F4", untimed). Returns the
    module (channels_last, eval) and one row per conv."""
    model = copy.deepcopy(module).eval().to(memory_format=torch.channels_last)
    model.features = features = fold_batch_norm(model.features)
    layers = list(features)
    x = example.contiguous(memory_format=torch.channels_last)
    choices = []
    with torch.inference_mode():
        i = 0
        while i < len(layers):
            layer = layers[i]
            fused_relu = i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU)
            if isinstance(layer, nn.Conv2d) and layer.kernel_size == (3, 3) and fused_relu:
                candidates = {"direct": nn.Sequential(layer, nn.ReLU())}
                candidates.update({f"F{m}": WinogradConv2d(layer, m, relu=True) for m in tiles})
                if choose is None:  # whole images too, where the weights are what does not fit in cache
                    candidates.update({f"F{m}-whole": WinogradConv2d(layer, m, relu=True, chunk_bytes=None)
                                       for m in tiles})
                if choose is None:
                    timings = {name: _time(c, x, repeats) for name, c in candidates.items()}
                    best = min(timings, key=timings.get)
                else:
                    timings, best = {}, choose
                choices.append({"layer": f"conv{len(choices) + 1}", "shape": list(x.shape[1:]), "choice": best,
                                **{f"{k}_ms": round(v * 1e3, 3) for k, v in timings.items()}})
                if best != "direct":
                    features[i], features[i + 1] = candidates[best], nn.Identity()
                x = candidates[best](x)
                i += 2
                continue
            x = layer(x)
            i += 1
    return model, choices
