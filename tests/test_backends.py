"""The backend registry and Target: names, aliases, capabilities, one message per bad value."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import TINY, TINY_IMAGE
from vggbench.backends import (
    Backend,
    Runner,
    Target,
    artifact_backends,
    backend_names,
    get_backend,
    make_runner,
    register,
    registry,
    resolve_backend,
    resolve_target,
)
from vggbench.core.device import CPU, Device, parse_device, require_device, resolve_device
from vggbench.core.errors import ConfigError, UnsupportedError
from vggbench.zoo.weights import load_model


def test_every_builtin_backend_is_registered_in_order():
    assert backend_names() == ["eager", "compile", "torchscript", "pt2", "winograd", "onnxruntime", "ort-tensorrt",
                               "tensorrt", "openvino"]
    assert artifact_backends("onnx") == ["onnxruntime", "ort-tensorrt", "tensorrt", "openvino"]
    assert artifact_backends("pt2") == ["pt2"]
    assert {get_backend(b).artifact for b in ("eager", "compile", "winograd")} == {None}


@pytest.mark.parametrize("alias,name", [("onnx", "onnxruntime"), ("ORT", "onnxruntime"), ("ts", "torchscript"),
                                        ("trt", "tensorrt"), ("torch.export", "pt2"), (" Eager ", "eager")])
def test_aliases_resolve_to_one_name(alias, name):
    assert resolve_backend(alias) == name


def test_an_unknown_backend_suggests_the_close_one():
    with pytest.raises(UnsupportedError, match=r"unknown backend 'onnxrutime'; did you mean onnxruntime\?"):
        get_backend("onnxrutime")


def test_a_name_can_be_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        register(Backend("eager", None, ("cpu",), ("fp32",), ("contiguous",), lambda *a: None))
    with pytest.raises(ValueError, match="'ort' is already registered"):
        register(Backend("another", None, ("cpu",), ("fp32",), ("contiguous",), lambda *a: None, aliases=("ort",)))
    assert "another" not in backend_names()


def test_a_new_backend_is_one_registration(monkeypatch):
    """What a backend module does: register, and every caller can resolve and build it."""
    monkeypatch.setattr(registry, "_BACKENDS", dict(registry._BACKENDS))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))
    from vggbench.backends.eager import eager_factory

    register(Backend("doubled", None, ("cpu",), ("fp32",), ("contiguous",), eager_factory, aliases=("dbl",)))
    model = load_model("vgg11", **TINY)
    runner = make_runner("dbl", model)
    assert isinstance(runner, Runner) and runner.name == "doubled"
    x = torch.randn(2, 3, TINY_IMAGE, TINY_IMAGE)
    assert torch.equal(runner(x), make_runner("eager", model)(x))
    with pytest.raises(UnsupportedError, match="doubled does not support bf16"):
        resolve_target("doubled", "cpu", "bf16")


@pytest.mark.parametrize("args,message", [
    (("onnxruntime", "cpu", "fp32", "channels_last"), "onnxruntime takes contiguous input only, not channels_last"),
    (("winograd", "cpu", "bf16", "channels_last"), "winograd does not support bf16 (it supports fp32)"),
    (("tensorrt", "cpu", "fp32"), "tensorrt does not run on cpu (it runs on cuda)"),
    (("eager", "cpu", "amp"), "amp (fp16 autocast) needs CUDA"),
    (("eager", "cpu", "fp8"), "eager does not support fp8 (it supports fp32, amp, bf16, fp16)"),
    (("eager", "cpu", "fp4"), "unknown precision 'fp4'"),
    (("eager", "cpu", "fp32", "nhwc"), "unknown memory format 'nhwc'"),
])
def test_resolve_target_says_which_part_does_not_fit(args, message):
    with pytest.raises(UnsupportedError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_target(*args)


def test_a_target_is_resolved_once_into_typed_values():
    target = resolve_target("ORT", "cpu", "fp32")
    assert target == Target("onnxruntime", Device("cpu"), "fp32", "contiguous")
    assert str(target) == "onnxruntime cpu fp32 contiguous" and not target.is_reference
    assert resolve_target("eager").is_reference and target.dtype == torch.float32
    # planning for another machine: no device check
    assert resolve_target("eager", "cuda:1", "amp", available=False).device == Device("cuda", 1)


@pytest.mark.parametrize("text", ["tpu", "cuda:x", "cpu:0", "gpu", ""])
def test_one_message_for_a_bad_device(text):
    with pytest.raises(ConfigError, match=f"unknown device {text!r}: use cpu, cuda or cuda:N"):
        parse_device(text)


def test_devices_parse_and_resolve():
    assert parse_device("CUDA:2") == Device("cuda", 2) and str(Device("cuda", 2)) == "cuda:2"
    assert parse_device("auto", allow_auto=True) == "auto" and require_device("cpu") is not None
    assert resolve_device("auto") == (Device("cuda") if torch.cuda.is_available() else CPU)
    if not torch.cuda.is_available():
        with pytest.raises(UnsupportedError, match="device cuda requested but CUDA is not available"):
            require_device("cuda")


def test_run_and_verify_say_the_same_about_a_bad_device(tmp_path):
    from click.testing import CliRunner

    from vggbench.cli import main

    runner = CliRunner()
    run = runner.invoke(main, ["run", "--device", "tpu", "--models", "vgg11", "--out", str(tmp_path)])
    verify = runner.invoke(main, ["verify", str(tmp_path), "--device", "tpu"])
    assert run.exit_code == verify.exit_code == 2
    assert run.output.strip() == verify.output.strip() == "error: unknown device 'tpu': use cpu, cuda or cuda:N"
