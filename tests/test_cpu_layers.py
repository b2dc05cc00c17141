from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vggbench.backends.winograd import onednn
from vggbench.backends.winograd.layers import DirectConvReLU, LinearReLU, MaxPool2x2, Scratch, held_bytes


@pytest.fixture
def reprobe():
    """Probes the oneDNN ops afresh in the test and again after it (the probe is cached per process)."""
    onednn.problem.cache_clear()
    yield
    onednn.problem.cache_clear()


def _raise(*args, **kwargs):
    raise RuntimeError("mkldnn::_linear_pointwise() Expected a value of type 'str' for argument 'attr'")


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("channels_last", [True, False])
def test_direct_conv_relu_equals_conv_then_relu(bias, channels_last):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, 3, padding=1, bias=bias).requires_grad_(False)
    layer = DirectConvReLU(conv)
    x = torch.randn(2, 6, 11, 9)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    expected = torch.relu(conv(x.contiguous(memory_format=torch.channels_last)))
    with torch.inference_mode():
        first = layer(x)
        assert torch.equal(first, expected)  # the fused op computes exactly conv + bias, then ReLU
        again = layer(x)
    assert again.data_ptr() == first.data_ptr()  # the output tensor is kept and rewritten
    assert again.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])  # fp64: torch's fallback
def test_linear_relu_equals_linear_then_relu(relu, dtype):
    torch.manual_seed(0)
    linear = nn.Linear(300, 20).to(dtype).requires_grad_(False)
    layer = LinearReLU(linear, relu)
    x = torch.randn(3, 300, dtype=dtype)
    expected = F.linear(x, linear.weight, linear.bias)
    expected = torch.relu(expected) if relu else expected
    with torch.inference_mode():
        got = layer(x)
        assert layer(x).data_ptr() != got.data_ptr()  # a fresh output each call: it may be the network's
    assert got.dtype == dtype and (got < 0).any().item() is not relu
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)  # the same sums, in another order


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (2, 3)])
def test_max_pool_2x2_equals_torch(size):
    x = torch.randn(3, 5, *size).contiguous(memory_format=torch.channels_last)
    layer = MaxPool2x2()
    with torch.inference_mode():
        got = layer(x)
        assert torch.equal(got, F.max_pool2d(x, 2)) and torch.equal(layer(x), got)


@pytest.mark.parametrize("pool, replaced", [(nn.MaxPool2d(2, 2), True), (nn.MaxPool2d(2), True),
                                            (nn.MaxPool2d(3, 2), False), (nn.MaxPool2d(2, 2, ceil_mode=True), False),
                                            (nn.AvgPool2d(2), False)])
def test_only_plain_2x2_pools_are_replaced(pool, replaced):
    assert MaxPool2x2.replaces(pool) is replaced


def test_scratch_keeps_tensors_by_shape():
    s = Scratch()
    like = torch.empty(0)
    a = s.get("out", (2, 3), like)
    assert s.get("out", (2, 3), like) is a and len(s) == 1 and s.nbytes() == 24
    assert s.get("out", (4, 3), like) is not a  # a new shape re-allocates
    assert torch.equal(s.get("pad", (2, 2), like, zero=True), torch.zeros(2, 2))
    with torch.inference_mode():
        t = s.get("made-in-inference-mode", (2,), like)
    t.add_(1)  # a normal tensor: in-place updates work outside inference mode too


def test_scratch_channels_last_copies_only_when_needed():
    s = Scratch()
    nchw = torch.randn(2, 3, 4, 5)
    nhwc = nchw.contiguous(memory_format=torch.channels_last)
    assert s.channels_last("in", nhwc) is nhwc and len(s) == 0
    copy = s.channels_last("in", nchw)
    assert torch.equal(copy, nchw) and copy.is_contiguous(memory_format=torch.channels_last)
    assert s.channels_last("in", nchw * 2).data_ptr() == copy.data_ptr()  # the kept tensor is reused


def test_held_bytes_counts_weights_buffers_and_kept_tensors_once():
    model = nn.Sequential(nn.Linear(3, 4), MaxPool2x2(), MaxPool2x2())
    model.register_buffer("scale", torch.ones(5))
    model[2].scratch = model[1].scratch  # shared, as the Winograd layers share their workspaces
    assert held_bytes(model) == (12 + 4 + 5) * 4
    kept = model[1].scratch.get("out", (10,), torch.empty(0))
    model[1].scratch.flat("work", (2, 3), kept)
    assert held_bytes(model) == (12 + 4 + 5 + 10 + 6) * 4


def test_the_onednn_ops_pass_their_probes_here(reprobe):
    assert onednn.problems() == {}
    assert DirectConvReLU(nn.Conv2d(3, 4, 3, padding=1)).fused and LinearReLU(nn.Linear(3, 4), True).fused


@pytest.mark.parametrize("broken, reason", [
    (_raise, "mkldnn._linear_pointwise failed on a probe call (RuntimeError: mkldnn::_linear_pointwise() Expected"),
    (lambda x, w, b, *rest: torch.zeros(x.shape[0], w.shape[0]), "mkldnn._linear_pointwise gave wrong numbers"),
])
def test_a_linear_op_that_fails_its_probe_falls_back_to_torch(monkeypatch, reprobe, broken, reason):
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", broken)  # as after a schema change
    assert onednn.problem(onednn.LINEAR).startswith(reason)
    assert list(onednn.problems()) == [onednn.LINEAR]
    linear = nn.Linear(30, 8).requires_grad_(False)
    layer = LinearReLU(linear, relu=True)
    x = torch.randn(2, 30)
    with torch.inference_mode():
        assert not layer.fused and torch.equal(layer(x), torch.relu(linear(x)))


def test_a_conv_op_that_fails_its_probe_falls_back_to_conv_then_relu(monkeypatch, reprobe):
    monkeypatch.setattr(torch.ops.mkldnn, "_convolution_pointwise_", object())  # no .binary
    assert onednn.problem(onednn.CONV).startswith("mkldnn._convolution_pointwise_ failed on a probe call "
                                                  "(AttributeError")
    conv = nn.Conv2d(3, 5, 3, padding=1).requires_grad_(False)
    layer = DirectConvReLU(conv)
    x = torch.randn(2, 3, 6, 6)
    with torch.inference_mode():
        assert not layer.fused and torch.equal(layer(x), torch.relu(conv(x)))
