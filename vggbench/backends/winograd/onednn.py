"""The private oneDNN ops the layers fuse with, checked by a real call before they are used.

`torch.ops.mkldnn._convolution_pointwise_` and `_linear_pointwise` are inductor's, not a public API: a
torch release may drop them or keep the name and change the schema. Each is called once per process on
tiny tensors and its result compared with the plain torch ops; where that raises or differs, the layers
use the plain torch path and `problems()` says why (the winograd runner's notes show it).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

CONV = "_convolution_pointwise_"
LINEAR = "_linear_pointwise"


def conv_add_relu(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, padding, stride, dilation,
                  groups: int) -> torch.Tensor:
    """out = relu(conv(x, weight) + out), in place (out channels_last): bias and ReLU fused."""
    return torch.ops.mkldnn._convolution_pointwise_.binary(
        out, x, weight, None, list(padding), list(stride), list(dilation), groups, "add", 1.0, "relu", [], "")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, relu: bool) -> torch.Tensor:
    """relu(x @ weight.T + bias) (or without the ReLU), one oneDNN call."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "relu" if relu else "none", [], "")


def _probe_conv() -> bool:
    x = torch.randn(2, 3, 5, 4).contiguous(memory_format=torch.channels_last)
    w, bias = torch.randn(4, 3, 3, 3), torch.randn(4)
    expected = torch.relu(F.conv2d(x, w, bias, padding=1))
    out = bias.view(1, -1, 1, 1).expand_as(expected).contiguous(memory_format=torch.channels_last)
    got = conv_add_relu(out, x, w, (1, 1), (1, 1), (1, 1), 1)
    return torch.allclose(got, expected, rtol=1e-4, atol=1e-5) and torch.allclose(out, expected, rtol=1e-4, atol=1e-5)


def _probe_linear() -> bool:
    x, w, bias = torch.randn(3, 7), torch.randn(5, 7), torch.randn(5)
    return (torch.allclose(linear(x, w, bias, True), torch.relu(F.linear(x, w, bias)), rtol=1e-4, atol=1e-5)
            and torch.allclose(linear(x, w, bias, False), F.linear(x, w, bias), rtol=1e-4, atol=1e-5))


_PROBES = {CONV: _probe_conv, LINEAR: _probe_linear}


@functools.cache
def problem(op: str) -> str | None:
    """Why `torch.ops.mkldnn.<op>` cannot be used here; None when a call on tiny tensors gave the plain
    torch ops' numbers. Probed once per process."""
    if not torch.backends.mkldnn.is_available():
        return "this torch has no oneDNN (mkldnn)"
    try:
        with torch.no_grad():
            agrees = _PROBES[op]()
    except Exception as e:  # noqa: BLE001 -- any failure of a private op means: use the public path
        return f"mkldnn.{op} failed on a probe call ({type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]})"
    return None if agrees else f"mkldnn.{op} gave wrong numbers on a probe call"


def problems() -> dict[str, str]:
    """The ops that cannot be used here, with the reason (empty when all work)."""
    return {op: why for op in _PROBES if (why := problem(op)) is not None}
