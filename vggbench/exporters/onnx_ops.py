"""Exporting LocalResponseNorm as ONNX's own LRN op instead of the dynamo exporter's decomposition.

torch.nn.functional.local_response_norm is Python code (pad, avg_pool3d, pow, div), so the exporter
only ever sees its pieces. A custom op stands in for it during ONNX export and translates to one LRN
node, which onnxruntime runs as a single kernel. Both define the same function for odd sizes
(pytorch #75722): b = a / (k + alpha / size * sum of a^2 over `size` channels) ^ beta.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


@torch.library.custom_op("vggbench::local_response_norm", mutates_args=())
def local_response_norm(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    return F.local_response_norm(x, size, alpha, beta, k)


@local_response_norm.register_fake
def _(x, size, alpha, beta, k):
    return torch.empty_like(x)


class ExportableLRN(nn.Module):
    def __init__(self, lrn: nn.LocalResponseNorm) -> None:
        super().__init__()
        if lrn.size % 2 == 0:
            raise ValueError(f"LocalResponseNorm size {lrn.size} is even: ONNX LRN pads it differently")
        self.size, self.alpha, self.beta, self.k = lrn.size, lrn.alpha, lrn.beta, lrn.k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.vggbench.local_response_norm(x, self.size, self.alpha, self.beta, self.k)


def _lrn_to_onnx(x, size: int, alpha: float, beta: float, k: float):
    from onnxscript import opset18 as op

    return op.LRN(x, size=size, alpha=alpha, beta=beta, bias=k)


def with_onnx_lrn(module: nn.Module) -> tuple[nn.Module, dict]:
    """A copy of `module` whose LRN layers export as ONNX LRN, and the exporter's translation table."""
    if not any(isinstance(m, nn.LocalResponseNorm) for m in module.modules()):
        return module, {}
    module = copy.deepcopy(module)
    for child in list(module.modules()):
        for attr, grandchild in list(child.named_children()):
            if isinstance(grandchild, nn.LocalResponseNorm):
                setattr(child, attr, ExportableLRN(grandchild))
    return module, {torch.ops.vggbench.local_response_norm.default: _lrn_to_onnx}
