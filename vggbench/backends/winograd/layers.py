"""CPU inference layers that keep their outputs and workspaces between calls.

On Linux, glibc serves a large allocation (above its mmap threshold, at most 32 MB) with fresh pages
from the kernel, and every page is faulted in and zeroed on first touch. Eager PyTorch allocates each
layer's output anew on every call, so a VGG16 forward pass at batch 8 touches about 1 GB of fresh pages
(~250,000 page faults, measured with getrusage), and in a VM each fault is expensive. Layers here
allocate their tensors once per input shape (`Scratch`) and write into them on every later call, as
ONNX Runtime's arena and TensorRT's memory plan do.

The price: a module's output is overwritten by its next call, so these modules are not re-entrant
(one forward pass at a time) and their outputs must be consumed before the next call. A VGG's final
Linear allocates its own output, so the network's output is always fresh.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from . import onednn


class Scratch:
    """Tensors kept between calls, by name and shape (re-allocated when the input shape changes)."""

    def __init__(self) -> None:
        self._tensors: dict[str, torch.Tensor] = {}

    def _new(self, name: str, shape: tuple[int, ...], like: torch.Tensor, zero: bool = False) -> torch.Tensor:
        with torch.inference_mode(False):  # a normal tensor: usable inside and outside inference mode
            t = (torch.zeros if zero else torch.empty)(shape, dtype=like.dtype, device=like.device)
        self._tensors[name] = t
        return t

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor, zero: bool = False) -> torch.Tensor:
        t = self._tensors.get(name)
        if t is None or tuple(t.shape) != tuple(shape) or t.dtype != like.dtype or t.device != like.device:
            t = self._new(name, shape, like, zero)
        return t

    def flat(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """A workspace: the front of a 1-D tensor grown to the largest request, viewed as `shape`. Layers
        that run one after another can share one Scratch for their workspaces, which live only within a
        call."""
        numel = math.prod(shape)
        t = self._tensors.get(name)
        if t is None or t.numel() < numel or t.dtype != like.dtype or t.device != like.device:
            t = self._new(name, (numel,), like)
        return t[:numel].view(shape)

    def channels_last(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """x itself when it is channels_last-contiguous, else a copy in a kept tensor (NCHW shape, NHWC memory)."""
        if x.is_contiguous(memory_format=torch.channels_last):
            return x
        n, c, h, w = x.shape
        return self.get(name, (n, h, w, c), x).permute(0, 3, 1, 2).copy_(x)

    def __len__(self) -> int:
        return len(self._tensors)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._tensors.values())

    def tensors(self) -> list[torch.Tensor]:
        return list(self._tensors.values())

    def __deepcopy__(self, memo) -> Scratch:
        return Scratch()  # a copy gets its own buffers, allocated on its first call


def held_bytes(module: nn.Module) -> int:
    """Bytes of the distinct tensors a module holds: parameters, buffers and every layer's Scratch (a tensor
    shared by several layers, as the Winograd workspaces are, counts once)."""
    tensors = [*module.parameters(), *module.buffers()]
    for layer in module.modules():
        tensors += [t for s in vars(layer).values() if isinstance(s, Scratch) for t in s.tensors()]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


class DirectConvReLU(nn.Module):
    """conv + bias + ReLU by oneDNN into an output tensor kept between calls (channels_last).

    The output is pre-filled with the bias and oneDNN adds the convolution and applies the ReLU in one
    pass (`mkldnn._convolution_pointwise_`, the op inductor uses for the same fusion); the result is
    bit-identical to `relu(conv(x))`. Where that op fails its probe (see onednn.py), conv then relu_."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.scratch = Scratch()
        self.fused = onednn.problem(onednn.CONV) is None and isinstance(conv.padding, tuple)  # not padding="same"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if not (self.fused and x.device.type == "cpu"):
            return torch.relu_(conv(x))
        x = self.scratch.channels_last("input", x)  # e.g. a torch-op Winograd layer's cropped output
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
        oh, ow = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        out = self.scratch.get("out", (n, oh, ow, conv.out_channels), x).permute(0, 3, 1, 2)
        if conv.bias is not None:
            out.copy_(conv.bias.view(1, -1, 1, 1).expand_as(out))
        else:
            out.zero_()
        return onednn.conv_add_relu(out, x, conv.weight, conv.padding, conv.stride, conv.dilation, conv.groups)

    def extra_repr(self) -> str:
        return "bias and ReLU fused, output kept between calls"


class LinearReLU(nn.Module):
    """A Linear, and the ReLU after it when `relu`, as one oneDNN op (`mkldnn._linear_pointwise`, which
    inductor uses for the same fusion). For VGG16's fc6 (411 MB of weights) oneDNN reads the weights
    once per call where MKL's sgemm, behind `F.linear`, took about twice as long at batch 8 on this
    project's CPU. The output is allocated on every call, so the network's output stays fresh. Falls
    back to `F.linear` (then ReLU) where the op fails its probe or the input is not fp32 on the CPU."""

    def __init__(self, linear: nn.Linear, relu: bool) -> None:
        super().__init__()
        self.linear, self.relu = linear, relu
        self.fused = onednn.problem(onednn.LINEAR) is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused and x.device.type == "cpu" and x.dtype == torch.float32:
            return onednn.linear(x, self.linear.weight, self.linear.bias, self.relu)
        y = self.linear(x)
        return torch.relu(y) if self.relu else y

    def extra_repr(self) -> str:
        return f"relu={self.relu}, " + ("oneDNN" if self.fused else "torch")


class MaxPool2x2(nn.Module):
    """2x2, stride-2 max pooling (VGG's) as two elementwise maxima into tensors kept between calls."""

    def __init__(self) -> None:
        super().__init__()
        self.scratch = Scratch()

    @staticmethod
    def replaces(layer: nn.Module) -> bool:
        return (isinstance(layer, nn.MaxPool2d) and _pair(layer.kernel_size) == (2, 2)
                and _pair(layer.stride) == (2, 2) and _pair(layer.padding) == (0, 0)
                and _pair(layer.dilation) == (1, 1) and not layer.ceil_mode and not layer.return_indices)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            return F.max_pool2d(x, 2)
        n, c, h, w = x.shape
        oh, ow = h // 2, w // 2
        v = x.permute(0, 2, 3, 1)  # NHWC view: the channel dim is the contiguous one for channels_last
        rows = self.scratch.get("rows", (n, oh, w, c), x)
        torch.maximum(v[:, 0:2 * oh:2], v[:, 1:2 * oh:2], out=rows)
        out = self.scratch.get("out", (n, oh, ow, c), x)
        torch.maximum(rows[:, :, 0:2 * ow:2], rows[:, :, 1:2 * ow:2], out=out)
        return out.permute(0, 3, 1, 2)  # NCHW shape, channels_last memory
