"""onnxruntime on CUDA without a GPU: the session is a stand-in that records what vggbench asks onnxruntime for
(providers and their options, IO bindings, run options); CUDA is mocked where vggbench asks about the device."""

from __future__ import annotations

import types

import numpy as np
import onnxruntime as ort
import pytest
import torch

from vggbench.backends import OrtSettings, resolve_target
from vggbench.backends.onnxruntime import OrtRunner


class Binding:
    def __init__(self):
        self.calls = []

    def bind_ortvalue_input(self, name, value):
        self.calls.append(("input", name, value.shape))

    def bind_ortvalue_output(self, name, value):
        self.calls.append(("output", name, value.shape))

    def bind_output(self, name, device, index):
        self.calls.append(("output on", name, device))


class Session:
    made: list = []

    def __init__(self, path, options, providers):
        self.providers, self.runs = providers, []
        Session.made.append(self)

    def get_providers(self):
        return [self.providers[0][0], "CPUExecutionProvider"]

    def get_inputs(self):
        return [types.SimpleNamespace(name="input", type="tensor(float)")]

    def get_outputs(self):
        return [types.SimpleNamespace(name="logits", shape=["batch", 10])]

    def io_binding(self):
        return Binding()

    def run_with_iobinding(self, binding, run_options=None):
        self.runs.append((binding, run_options))


class Value:
    """OrtValue on "cuda": its shape and where it would live."""

    def __init__(self, shape, device):
        self.shape, self.device = list(shape), device

    @classmethod
    def ortvalue_from_numpy(cls, array, device, index):
        return cls(array.shape, device)

    @classmethod
    def ortvalue_from_shape_and_type(cls, shape, dtype, device, index):
        assert dtype is np.float32
        return cls(shape, device)


@pytest.fixture
def fake_ort(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", Session)
    monkeypatch.setattr(ort, "OrtValue", Value)
    Session.made.clear()


def test_cuda_graphs_replay_fixed_buffers_one_graph_per_batch_size(fake_ort):
    target = resolve_target("onnxruntime", "cuda:1", "fp32")
    runner = OrtRunner("model.onnx", target, OrtSettings(cuda_graph=True, cudnn_conv_algo_search="HEURISTIC"))
    (provider,) = Session.made[0].providers
    assert provider == ("CUDAExecutionProvider", {"device_id": 1, "cudnn_conv_algo_search": "HEURISTIC",
                                                  "use_tf32": 0, "enable_cuda_graph": 1})
    prepared = runner.prepare(torch.zeros(4, 3, 8, 8))
    binding, _, options = prepared
    # input and output both in device buffers of their own: the addresses a captured graph replays
    assert binding.calls == [("input", "input", [4, 3, 8, 8]), ("output", "logits", [4, 10])]
    assert options.get_run_config_entry("gpu_graph_id") == "4"
    runner.run(prepared)
    assert Session.made[0].runs == [(binding, options)]


def test_without_cuda_graphs_the_output_is_bound_by_device(fake_ort):
    runner = OrtRunner("model.onnx", resolve_target("onnxruntime", "cuda", "fp32"), OrtSettings(tf32=True))
    assert Session.made[0].providers[0][1] == {"device_id": 0, "cudnn_conv_algo_search": "EXHAUSTIVE",
                                               "use_tf32": 1}
    binding, _, options = runner.prepare(torch.zeros(2, 3, 8, 8))
    assert binding.calls[-1] == ("output on", "logits", "cuda") and options is None


def test_the_tensorrt_provider_is_ort_tensorrt_and_refused_where_it_does_not_start(fake_ort, monkeypatch):
    from vggbench.core.errors import UnsupportedError

    with pytest.raises(UnsupportedError, match="has no TensorrtExecutionProvider here"):
        OrtRunner("model.onnx", resolve_target("ort-tensorrt", "cuda", "fp16"))
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(Session, "get_providers", lambda self: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(UnsupportedError, match="could not start TensorrtExecutionProvider .*fell back"):
        OrtRunner("model.onnx", resolve_target("ort-tensorrt", "cuda", "fp16"))
    assert Session.made[-1].providers[0] == ("TensorrtExecutionProvider", {"device_id": 0, "trt_fp16_enable": True,
                                                                          "trt_builder_optimization_level": 3})
