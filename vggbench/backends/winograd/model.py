"""Winograd convolution (Lavin & Gray, 2016) for VGG's 3x3 convs, on the CPU.

F(m x m, 3x3) computes an m x m output tile from an (m+2) x (m+2) input tile with (m+2)^2
multiplications instead of 9 m^2: 2.25x fewer for F(2x2), 4x for F(4x4), 5.06x for F(6x6). The
multiplications become one batched GEMM per layer, [(m+2)^2, tiles, C_in] x [(m+2)^2, C_in, C_out], which
MKL runs at 110-140 GFLOP/s here; the tile transforms around it are memory-bound. They run as C++ kernels
(kernels/winograd.cpp, one pass over memory each, built on first use by native.py) or,
without a C++ compiler, as torch ops (several passes). Winograd wins most on the deep layers (many
channels) and the best choice per layer depends on the machine and the batch: `winograd_model` measures
each 3x3 conv on the real input shape and keeps the fastest of direct (oneDNN, channels_last) and the
Winograd variants (tile size; cache-sized bands or whole batches; for torch ops, Kronecker or separable
transforms).

Tensors stay channels_last throughout (an NCHW tensor with NHWC strides), so direct and Winograd
layers chain without copies. F(4x4) and F(6x6) move fp32 logits by ~1e-5 of their range (transform
constants up to 32 grow rounding error); `vggbench verify` checks the result against eager like any backend.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from ...core.device import CPU
from ...core.timing import Stats, make_timer, sample
from . import native as _native
from . import onednn
from .layers import DirectConvReLU, LinearReLU, MaxPool2x2, Scratch
from .matrices import TILES, matrices

CHUNK_BYTES = 2 * 2**20  # about one core's L2 cache
STREAM_BYTES = 16 * 2**20  # half a 32 MB L3: larger outputs are written past the caches


class WinogradConv2d(nn.Module):
    """A 3x3, stride-1, padding-1 convolution computed as Winograd F(m x m, 3x3), bias and ReLU fused.

    native: transforms by the C++ kernels (see native.py; fp32 on the CPU), else torch ops, where
    separable transforms tiles with two passes of the 1-D matrices (2(m+2) multiply-adds per value)
    instead of one pass of their Kronecker product ((m+2)^2 per value, but one GEMM call).
    chunk_bytes: the size of a band of transformed tiles, processed start to end while it is in cache
    (None: the whole batch at once, which reads the transformed weights once per call)."""

    def __init__(self, conv: nn.Conv2d, m: int = 4, relu: bool = True, chunk_bytes: int | None = CHUNK_BYTES,
                 separable: bool = False, native: bool = False) -> None:
        super().__init__()
        if conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.padding != (1, 1) or conv.groups != 1 \
                or conv.dilation != (1, 1):
            raise ValueError("Winograd F(m, 3) here takes 3x3 convs with stride 1, padding 1")
        bt, g, at = matrices(m)
        if native and _native.winograd() is None:
            raise RuntimeError(f"the C++ Winograd kernels are unavailable: {_native.unavailable_reason()}")
        self.m, self.alpha, self.relu, self.chunk_bytes, self.separable = m, m + 2, relu, chunk_bytes, separable
        self.native = native
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        w = conv.weight.detach().double()
        # U[xi, c, o] = (G w G^T) flattened over the alpha x alpha transform positions xi
        u = torch.einsum("ij,ocjk,lk->ilco", g, w, g).reshape(self.alpha ** 2, self.in_channels, self.out_channels)
        self.register_buffer("u", u.float().contiguous())
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(self.out_channels)
        self.register_buffer("bias", bias.float().clone())
        if separable:
            self.register_buffer("t_in", bt.float())
            self.register_buffer("t_out", at.float())
        else:
            self.register_buffer("t_in", torch.kron(bt, bt).float())  # vec(B^T d B) = kron(B^T, B^T) vec(d)
            self.register_buffer("t_out", torch.kron(at, at).float())  # vec(A^T M A) = kron(A^T, A^T) vec(M)
        self.scratch = Scratch()  # the padded input and the output, kept between calls
        self.workspace = Scratch()  # transformed tiles and products, used within a call: can be shared

    def _transform(self, t: torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
        """[k*k, X] from x [a*a, X]: the 2-D transform T x T^T of every column, into a workspace."""
        ws = self.workspace
        if not self.separable:
            return torch.mm(t, x, out=ws.flat(name, (t.shape[0], x.shape[1]), x))
        k, a = t.shape
        half = torch.mm(t, x.view(a, -1), out=ws.flat(name + "-rows", (k, a * x.shape[1]), x))
        out = ws.flat(name, (k * k, x.shape[1]), x)
        torch.matmul(t, half.view(k, a, -1), out=out.view(k, k, -1))  # along the second axis, per row
        return out

    def _tile_block(self, d: torch.Tensor, p: int, c: int) -> torch.Tensor:
        """Output tiles [m*m, p, C_out] for the input tiles d [a, a, *p, C_in] (a strided view), bias and
        ReLU applied."""
        m, a, co = self.m, self.alpha, self.out_channels
        tiles = self.workspace.flat("tiles", (a * a, p * c), d)
        tiles.view(d.shape).copy_(d)  # the one gather copy
        v = self._transform(self.t_in, tiles, "v")
        prod = torch.bmm(v.view(a * a, p, c), self.u, out=self.workspace.flat("prod", (a * a, p, co), d))
        y = self._transform(self.t_out, prod.view(a * a, p * co), "y").view(m * m, p, co)
        y.add_(self.bias)
        return y.relu_() if self.relu else y

    def _forward_native(self, x: torch.Tensor) -> torch.Tensor:
        """Transforms in C++ (kernels/winograd.cpp), one pass each, the GEMM in torch, band by band; the
        output is channels_last-contiguous and cropped to the image by the output kernel."""
        x = self.scratch.channels_last("input", x)
        n, c, h, w = x.shape
        m, a, co = self.m, self.alpha, self.out_channels
        x_nhwc = x.permute(0, 2, 3, 1)
        out = self.scratch.get("out", (n, h, w, co), x)
        tiles = n * -(-h // m) * -(-w // m)
        band = tiles if self.chunk_bytes is None else max(1, self.chunk_bytes // (a * a * max(c, co) * x.element_size()))
        ws = self.workspace
        # Bands far larger than the caches go to memory anyway: write them with streaming stores
        stream_in = band * a * a * c * x.element_size() > STREAM_BYTES
        stream_out = out.numel() * out.element_size() > STREAM_BYTES
        for p0 in range(0, tiles, band):
            p1 = min(tiles, p0 + band)
            v = _native.winograd_input(m, x_nhwc, p0, p1, ws.flat("v", (a * a, p1 - p0, c), x), stream_in)
            prod = torch.bmm(v, self.u, out=ws.flat("prod", (a * a, p1 - p0, co), x))
            _native.winograd_output(m, prod, self.bias, out, p0, p1, self.relu, stream_out)
        return out.permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.native and x.dtype == torch.float32 and x.device.type == "cpu":
            return self._forward_native(x)
        n, c, h, w = x.shape
        m, a, co = self.m, self.alpha, self.out_channels
        th, tw = -(-h // m), -(-w // m)
        # The top row and left column stay zero from the first call. The bottom and right padding are
        # zeroed on every call: a larger image that rounds up to the same tiles may have written there.
        padded = self.scratch.get("padded", (n, m * th + 2, m * tw + 2, c), x, zero=True)
        padded[:, 1:h + 1, 1:w + 1].copy_(x.permute(0, 2, 3, 1))
        padded[:, h + 1:].zero_()
        padded[:, 1:h + 1, w + 1:].zero_()
        tiles = padded.unfold(1, a, m).unfold(2, a, m)  # [n, th, tw, c, a, a], a view
        full = self.scratch.get("out", (n, th * m, tw * m, co), x)  # whole tiles; cropped on return
        # A band's transformed tiles stay in cache between the input transform, the GEMM and the output
        # transform, so each step reads what the last wrote. In the deep layers the transformed weights
        # (a^2 x C_in x C_out, up to 38 MB) outweigh the tiles and each band re-reads them: there one
        # band for the whole batch (chunk_bytes None) is faster. The tuner decides.
        row_bytes = a * a * tw * max(c, co) * x.element_size()
        rows = n * th if self.chunk_bytes is None else max(1, self.chunk_bytes // row_bytes)
        if rows >= th:  # bands of whole images: the GEMM runs over several images' tiles
            step = rows // th
            for i0 in range(0, n, step):
                k = min(n, i0 + step) - i0
                y = self._tile_block(tiles[i0:i0 + k].permute(4, 5, 0, 1, 2, 3), k * th * tw, c)
                full[i0:i0 + k].view(k, th, m, tw, m, co).copy_(
                    y.view(m, m, k, th, tw, co).permute(2, 3, 0, 4, 1, 5))
        else:
            for i in range(n):  # bands of tile rows within each image
                for r0 in range(0, th, rows):
                    r1 = min(th, r0 + rows)
                    y = self._tile_block(tiles[i, r0:r1].permute(3, 4, 0, 1, 2), (r1 - r0) * tw, c)
                    full[i, r0 * m:r1 * m].view(r1 - r0, m, tw, m, co).copy_(
                        y.view(m, m, r1 - r0, tw, co).permute(2, 0, 3, 1, 4))
        return full[:, :h, :w].permute(0, 3, 1, 2)  # NCHW shape, NHWC strides (contiguous when m divides h, w)

    def extra_repr(self) -> str:
        bands = f"bands of {self.chunk_bytes / 2**20:g} MiB" if self.chunk_bytes else "whole batches"
        transforms = "C++" if self.native else "separable" if self.separable else "kronecker"
        return (f"{self.in_channels}, {self.out_channels}, F({self.m}x{self.m}, 3x3), relu={self.relu}, {bands}, "
                f"{transforms} transforms")


def variants(tiles: Sequence[int] = TILES, native: bool | None = None) -> dict[str, dict]:
    """The Winograd variants the tuner tries, by name. With the C++ transform kernels (native; default:
    when they build on this machine): "F2-cpp", "F2-cpp-whole", "F4-cpp", ... Without them, transforms in
    torch ops: "F4", "F4-whole", "F4-sep", "F4-sep-whole", ... (F(2x2)'s 16x16 Kronecker transform is
    already cheap: it has no separable variant). "-whole": one band for the whole batch."""
    if native is None:
        native = _native.winograd() is not None
    out = {}
    for m in tiles:
        for sep in (None,) if native else (False, True) if m > 2 else (False,):
            for whole in (False, True):
                name = f"F{m}" + ("-cpp" if native else "-sep" if sep else "") + ("-whole" if whole else "")
                out[name] = {"m": m, "chunk_bytes": None if whole else CHUNK_BYTES,
                             **({"native": True} if native else {"separable": sep})}
    return out


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


def _fastest(candidates: dict[str, nn.Module], x: torch.Tensor, repeats: int, finalists: int = 3,
             budget_s: float = 0.1, most: int = 12) -> dict[str, Stats]:
    """Per-call times of each candidate on x: every candidate once after a warm-up call (which also
    allocates its kept tensors), then the `finalists` fastest `repeats` more times, or more while that
    takes under `budget_s` (up to `most` calls: fast layers, as at batch 1, get medians that noise moves
    less). Choose by the median, not the minimum: a variant with many small steps has a wide spread on a
    shared machine, and its best call is not what a forward pass gets. Timing every variant repeatedly
    would make tuning slow."""
    timer = make_timer(CPU, lambda: None)
    calls = {name: (lambda c=c: c(x)) for name, c in candidates.items()}
    stats = {}
    for name, call in calls.items():
        call()
        stats[name] = sample(call, timer)
    for name in sorted(stats, key=lambda k: stats[k].median_ms)[:finalists]:
        more = sample(calls[name], timer, repeats, budget_s, max(repeats, most))
        stats[name] = Stats(stats[name].samples_ms + more.samples_ms)
    return stats


def _pick(candidates: dict[str, nn.Module], x: torch.Tensor, repeats: int, choose: str | None,
          layer: str) -> tuple[str, dict]:
    """The fastest candidate by median (or `choose`, untimed) and its row for the tuning report."""
    stats = _fastest(candidates, x, repeats) if choose is None else {}
    best = min(stats, key=lambda k: stats[k].median_ms) if stats else choose
    return best, {"layer": layer, "shape": list(x.shape[1:]), "choice": best,
                  **{f"{k}_ms": round(s.median_ms, 3) for k, s in stats.items()}}


def _replace_linears(classifier: nn.Sequential, x: torch.Tensor, repeats: int,
                     plan: Sequence[str | None] | None, default: str | None) -> list[dict]:
    """Each Linear (and the ReLU after it) becomes the faster of torch's and oneDNN's, or the plan's entry
    for it ("torch", "onednn", None: timed; no plan: `default` for all), in place; one row per Linear.
    Where the oneDNN op fails its probe (see onednn.py), torch's."""
    rows = []
    count = sum(isinstance(layer, nn.Linear) for layer in classifier)
    if plan is not None and (len(plan) != count or not set(plan) <= {"torch", "onednn", None}):
        raise ValueError(f"the Linear plan {list(plan)} must name torch, onednn or None for each of {count} Linears")
    usable = onednn.problem(onednn.LINEAR) is None
    for i, layer in enumerate(classifier):
        if isinstance(layer, nn.Linear) and x.dim() == 2:
            relu = i + 1 < len(classifier) and isinstance(classifier[i + 1], nn.ReLU)
            candidates = {"torch": nn.Sequential(layer, nn.ReLU()) if relu else layer}
            if usable:
                candidates["onednn"] = LinearReLU(layer, relu)
            want = default if plan is None else plan[len(rows)]
            best, row = _pick(candidates, x, repeats, "torch" if want == "onednn" and not usable else want,
                              f"fc{len(rows) + 1}")
            rows.append(row)
            if best == "onednn":
                classifier[i] = candidates[best]
                if relu:
                    classifier[i + 1] = nn.Identity()
        x = classifier[i](x)
    return rows


def winograd_model(module: nn.Module, example: torch.Tensor, tiles: Sequence[int] = TILES,
                   repeats: int = 3, choose: str | Sequence[str | None] | None = None,
                   linears: Sequence[str | None] | None = None) -> tuple[nn.Module, list[dict]]:
    """A copy of a VGG whose conv+ReLU pairs run as the fastest of direct (oneDNN, bias and ReLU fused)
    and the Winograd `variants`, timed on the shapes `example` produces (or all as `choose`: "direct" or a
    variant's name, untimed; or one entry per 3x3 conv, None to time that one, e.g. the choices of an
    earlier tuning); its 2x2 max pools become `MaxPool2x2`, and each classifier Linear (with
    its ReLU) runs as the faster of torch's and oneDNN's (`LinearReLU`; oneDNN when `choose` is given),
    or as `linears` says, one entry per Linear ("torch", "onednn", or None to time it).
    Every replaced conv and pool keeps its output between calls (see layers.py), so the model runs one
    forward pass at a time.
    Returns the module (channels_last, eval) and one row per conv and Linear: its choice and, when timed,
    each candidate's median time."""
    names = variants(tiles)  # what the tuner tries
    known = {**variants(tiles, native=False), **names}  # what a plan may name
    plan = None if choose is None or isinstance(choose, str) else list(choose)  # one entry per 3x3 conv
    for name in plan or [choose]:
        if name is not None and name != "direct" and name not in known:
            hint = f" (the C++ kernels are unavailable: {_native.unavailable_reason()})" if "-cpp" in name else ""
            raise ValueError(f"unknown Winograd variant {name!r}: choose direct or one of {', '.join(known)}{hint}")
    model = copy.deepcopy(module).eval().requires_grad_(False).to(memory_format=torch.channels_last)
    model.features = features = fold_batch_norm(model.features)
    x = example.contiguous(memory_format=torch.channels_last)
    choices, workspaces = [], Scratch()
    with torch.inference_mode():
        i = 0
        while i < len(features):
            layer = features[i]
            fused_relu = i + 1 < len(features) and isinstance(features[i + 1], nn.ReLU)
            if isinstance(layer, nn.Conv2d) and layer.kernel_size == (3, 3) and fused_relu:
                if plan is not None and len(choices) >= len(plan):
                    raise ValueError(f"the plan names {len(plan)} convs; this model has more 3x3 convs")
                layer_choice = choose if plan is None else plan[len(choices)]
                wanted = names if layer_choice is None else {k: v for k, v in known.items() if k == layer_choice}
                candidates = {"direct": DirectConvReLU(layer),
                              **{name: WinogradConv2d(layer, relu=True, **kw) for name, kw in wanted.items()}}
                best, row = _pick(candidates, x, repeats, layer_choice, f"conv{len(choices) + 1}")
                choices.append(row)
                if best != "direct":  # Winograd layers run one after another: one set of workspaces for all
                    candidates[best].workspace = workspaces
                features[i], features[i + 1] = candidates[best], nn.Identity()
                x = candidates[best](x)
                i += 2
                continue
            if MaxPool2x2.replaces(layer):
                features[i] = layer = MaxPool2x2()
            x = layer(x)
            i += 1
        if plan is not None and len(choices) != len(plan):
            raise ValueError(f"the plan names {len(plan)} convs; this model has {len(choices)} 3x3 convs")
        if isinstance(getattr(model, "classifier", None), nn.Sequential) and isinstance(getattr(model, "avgpool", None), nn.Module):
            x = torch.flatten(model.avgpool(x), 1)  # as torchvision's and vggbench's VGG.forward
            choices += _replace_linears(model.classifier, x, repeats, linears, None if choose is None else "onednn")
    return model, choices
