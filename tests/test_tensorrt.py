"""The tensorrt backend without TensorRT or a GPU: a fake `tensorrt` module records what vggbench asks TensorRT to
build (it computes nothing), and CUDA is mocked where vggbench asks about the device (is_available,
get_device_name, get_device_capability). One test at the end runs a real engine where both exist."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from tests.conftest import TINY, TINY_IMAGE
from vggbench import export
from vggbench.backends import RunnerOptions, make_runner, resolve_target
from vggbench.backends import tensorrt as trt_backend
from vggbench.backends.registry import get_backend
from vggbench.core.errors import ConfigError, UnsupportedError
from vggbench.core.imagenet import IMAGENET_MEAN as MEAN
from vggbench.core.imagenet import IMAGENET_STD as STD
from vggbench.exporters.manifest import file_entry, write_manifest
from vggbench.zoo.weights import load_model

H100 = "NVIDIA H100 80GB HBM3"


# --- the fake TensorRT: records each build's configuration --------------------------------------------------

class FakeTrt(types.ModuleType):
    """The few TensorRT 10 calls the backend makes. An "engine" is the JSON of the configuration it was built
    with, so that a test can read back what was asked for."""

    def __init__(self) -> None:
        super().__init__("tensorrt")
        self.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # torch._dynamo looks it up
        self.__version__ = "10.99.0"
        self.builds: list[dict] = []  # one per build_serialized_network
        self.loaded: list[dict] = []  # one per deserialize_cuda_engine
        trt = self
        self.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8", FP8="FP8", TF32="TF32")
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
        self.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
        self.DataType = types.SimpleNamespace(FLOAT="FLOAT", HALF="HALF")

        class Logger:
            WARNING = "WARNING"

            def __init__(self, level):
                self.level = level

        class Input:
            name, shape = "input", (-1, 3, TINY_IMAGE, TINY_IMAGE)  # what the parser reads off a dynamic export

        class Network:
            def __init__(self):
                self.parsed = None

            def get_input(self, index):
                return Input()

        class OnnxParser:
            num_errors = 0

            def __init__(self, network, logger):
                self.network = network

            def parse_from_file(self, path):
                self.network.parsed = path
                return True

        class Profile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, low, opt, high):
                self.shapes[name] = [list(low), list(opt), list(high)]

        class TimingCache:
            def __init__(self, data):
                self.given = bytes(data)

            def serialize(self):
                return self.given + b"+"  # a build adds to the cache it was given

        class Config:
            def __init__(self):
                self.flags, self.cleared, self.profiles, self.pools = [], [], [], {}
                self.int8_calibrator, self.calibration_profile, self.timing_cache = None, None, None
                self.builder_optimization_level = 3  # TensorRT's default

            def set_memory_pool_limit(self, pool, size):
                self.pools[pool] = size

            def set_flag(self, flag):
                self.flags.append(flag)

            def clear_flag(self, flag):
                self.cleared.append(flag)

            def add_optimization_profile(self, profile):
                self.profiles.append(profile)

            def set_calibration_profile(self, profile):
                self.calibration_profile = profile

            def create_timing_cache(self, data):
                return TimingCache(data)

            def set_timing_cache(self, cache, ignore_mismatch):
                self.timing_cache = cache

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                calibrator = config.int8_calibrator
                record = {"onnx": network.parsed, "flags": config.flags, "cleared": config.cleared,
                          "profiles": [p.shapes for p in config.profiles], "workspace": config.pools["WORKSPACE"],
                          "optimization_level": config.builder_optimization_level,
                          "timing_cache_given": config.timing_cache.given.decode(),
                          "calibration": None if calibrator is None else {
                              "batch": calibrator.get_batch_size(), "images": calibrator.images.shape[0],
                              "profile": config.calibration_profile.shapes}}
                trt.builds.append(record)
                return json.dumps(record).encode()

        class Engine:
            num_io_tensors = 2

            def __init__(self, record):
                self.record = record

            def get_tensor_name(self, i):
                return ["input", "logits"][i]

            def get_tensor_mode(self, name):
                return "INPUT" if name == "input" else "OUTPUT"

            def create_execution_context(self):
                return object()

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, data):
                trt.loaded.append(json.loads(data))
                return Engine(trt.loaded[-1])

        class IInt8EntropyCalibrator2:
            def __init__(self):
                pass

        self.Logger, self.Builder, self.OnnxParser, self.Runtime = Logger, Builder, OnnxParser, Runtime
        self.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2


@pytest.fixture
def fake_trt(monkeypatch, tmp_path):
    """The fake module as `tensorrt`, an H100 as CUDA device 0, and an empty engine cache."""
    trt = FakeTrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    gpu(monkeypatch, H100, (9, 0))
    monkeypatch.setenv("VGGBENCH_CACHE", str(tmp_path / "cache"))
    return trt


def gpu(monkeypatch, name: str, capability: tuple[int, int]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An export folder as vggbench.export writes it, holding a one-conv ONNX model (TensorRT is fake here: it
    only needs a file whose sha256 the manifest guards); the real export where a real engine is built."""
    out = tmp_path_factory.mktemp("trt")
    if torch.cuda.is_available():
        export(load_model("vgg11", **TINY), out / "vgg11", image_size=TINY_IMAGE, formats=["onnx"], verify=False)
        return out / "vgg11"
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], [0.1] * 108)
    graph = helper.make_graph([helper.make_node("Conv", ["input", "w"], ["logits"])], "conv",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4, 30, 30])],
                              [weight])
    onnx.save(helper.make_model(graph, ir_version=9, opset_imports=[helper.make_opsetid("", 17)]), out / "model.onnx")
    write_manifest(out, {
        "schema_version": 2, "model": {"name": "conv", "options": {}},
        "weights": {"source": "random", "state_sha256": "0" * 64}, "precision": "fp32",
        "input": {"name": "input", "shape": ["batch", 3, 32, 32], "image_size": 32, "mean": list(MEAN),
                  "std": list(STD), "dynamic_batch": True},
        "output": {"name": "logits", "shape": ["batch", 4, 30, 30]},
        "artifacts": {"onnx": {"files": [file_entry(out, "model.onnx")]}}, "warnings": [], "parity": []})
    return out


def runner(exported, precision="fp16", tensorrt=None, calibration=None):
    target = resolve_target("tensorrt", "cuda", precision)
    settings = () if tensorrt is None else (tensorrt,)
    return make_runner(target, export_dir=exported, options=RunnerOptions.of(*settings, calibration=calibration))


# --- tests ---------------------------------------------------------------------------------------------------

def test_without_tensorrt_the_message_says_how_to_install_it(exported, monkeypatch):
    gpu(monkeypatch, H100, (9, 0))
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt raises ImportError
    with pytest.raises(UnsupportedError, match=r'pip install "vggbench\[tensorrt\]"'):
        runner(exported)


def test_an_engine_is_built_once_then_read_from_the_cache(exported, fake_trt, monkeypatch):
    first = runner(exported)
    first._context(8, tuned=True)
    assert len(fake_trt.builds) == 1 and first.log == ["batch 1/8/256 built"]
    build = fake_trt.builds[0]
    assert build["onnx"] == str(exported / "model.onnx")
    assert build["flags"] == ["FP16"] and build["cleared"] == ["TF32"]  # fp32 layers stay IEEE fp32
    # the dynamic-batch profile: min 1, opt the batch being timed, max the setting
    assert build["profiles"] == [{"input": [[1, 3, 32, 32], [8, 3, 32, 32], [256, 3, 32, 32]]}]
    assert build["timing_cache_given"] == ""
    cached = sorted(p.name for p in (Path(trt_backend.cache_dir())).iterdir())
    assert len([n for n in cached if n.endswith(".engine")]) == 1 and any(n.startswith("timing-") for n in cached)

    second = runner(exported)  # another runner, e.g. the next run: the engine comes from disk
    second._context(8, tuned=True)
    assert len(fake_trt.builds) == 1 and second.log == ["batch 1/8/256 from the cache"]
    assert fake_trt.loaded[1] == fake_trt.loaded[0]

    second._context(4, tuned=False)  # a parity check at batch 4 uses the engine whose profile covers it
    assert len(fake_trt.builds) == 1
    second._context(32, tuned=True)  # the benchmark at batch 32 gets an engine tuned for 32...
    assert len(fake_trt.builds) == 2 and fake_trt.builds[1]["profiles"][0]["input"][1] == [32, 3, 32, 32]
    assert fake_trt.builds[1]["timing_cache_given"] == "+"  # ...built with the timing cache of the first build

    gpu(monkeypatch, "NVIDIA A100-SXM4-80GB", (8, 0))  # another GPU model: another engine
    runner(exported)._context(8, tuned=True)
    assert len(fake_trt.builds) == 3


def test_the_builder_optimisation_level_reaches_the_builder_config(exported, fake_trt):
    runner(exported)._context(8, tuned=True)
    assert fake_trt.builds[-1]["optimization_level"] == 3
    runner(exported, tensorrt=trt_backend.TrtSettings(builder_optimization_level=5))._context(8, tuned=True)
    assert len(fake_trt.builds) == 2 and fake_trt.builds[-1]["optimization_level"] == 5  # another engine
    with pytest.raises(ConfigError, match="builder optimization level 6"):
        trt_backend.TrtSettings(builder_optimization_level=6)
    assert get_backend("tensorrt").knob_space("cuda")["builder_optimization_level"] == (3, 4, 5)


def test_the_cache_key_holds_onnx_version_gpu_precision_and_profile():
    profile = trt_backend.Profile(1, 8, 256)
    settings = trt_backend.TrtSettings()
    base = trt_backend.engine_key(["a"], "10.1", H100, "fp16", profile, settings)
    assert base.startswith("fp16-b8-")
    changed = [trt_backend.engine_key(["b"], "10.1", H100, "fp16", profile, settings),
               trt_backend.engine_key(["a"], "10.2", H100, "fp16", profile, settings),
               trt_backend.engine_key(["a"], "10.1", "NVIDIA L4", "fp16", profile, settings),
               trt_backend.engine_key(["a"], "10.1", H100, "fp32", profile, settings),
               trt_backend.engine_key(["a"], "10.1", H100, "fp16", trt_backend.Profile(1, 8, 512), settings),
               trt_backend.engine_key(["a"], "10.1", H100, "fp16", profile, trt_backend.TrtSettings(tf32=True)),
               trt_backend.engine_key(["a"], "10.1", H100, "fp16", profile, settings, calibration="x")]
    assert base not in changed and len(set(changed)) == len(changed)


def test_a_damaged_cached_engine_is_rebuilt(exported, fake_trt):
    runner(exported)._context(8, tuned=True)
    engine = next(p for p in trt_backend.cache_dir().iterdir() if p.suffix == ".engine")
    engine.write_bytes(engine.read_bytes()[:-3])
    runner(exported)._context(8, tuned=True)
    assert len(fake_trt.builds) == 2


def test_batches_beyond_the_profile_are_refused(exported, fake_trt):
    small = runner(exported, tensorrt=trt_backend.TrtSettings(max_batch=16))
    assert small.profile(16) == trt_backend.Profile(1, 16, 16)
    with pytest.raises(UnsupportedError, match=r"batch 32 is above the TensorRT profile's largest \(16\)"):
        small.profile(32)


def test_int8_is_calibrated_on_the_images_given(exported, fake_trt):
    with pytest.raises(UnsupportedError, match="calibrated on real images, and none were given"):
        runner(exported, "int8")
    images = torch.randn(20, 3, TINY_IMAGE, TINY_IMAGE)  # which images is the calibrator's test, below
    int8 = runner(exported, "int8", calibration=images)
    int8._context(8, tuned=True)
    build = fake_trt.builds[0]
    assert build["flags"] == ["INT8", "FP16"]
    # calibration batches of 8 on a profile fixed at 8, over the 20 images given
    assert build["calibration"] == {"batch": 8, "images": 20,
                                    "profile": {"input": [[8, 3, 32, 32]] * 3}}
    other = runner(exported, "int8", calibration=images + 1)
    assert other.key(other.profile(8)) != int8.key(int8.profile(8))  # other images, another engine


def real_images(count: int) -> torch.Tensor:
    """Normalised 32x32 tiles of scikit-learn's two photos (photo_crops without torchvision's transforms,
    whose import costs seconds)."""
    from sklearn.datasets import load_sample_images

    tiles = [torch.from_numpy(photo[y:y + 32, x:x + 32].copy()).permute(2, 0, 1).float() / 255
             for photo in load_sample_images().images for y in range(100, 420, 64) for x in range(0, 128, 64)]
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    return (torch.stack(tiles[:count]) - mean) / std


def test_the_calibrator_feeds_the_real_images_in_full_batches(tmp_path):
    images = real_images(20)
    assert images.shape == (20, 3, 32, 32) and images.std() > 0.1
    calibrator = trt_backend.make_calibrator(FakeTrt(), images, 8, "cpu", tmp_path / "table")
    assert calibrator.get_batch_size() == 8
    for start in (0, 8):
        pointers = calibrator.get_batch(["input"])
        assert pointers == [calibrator.buffer.data_ptr()]
        assert torch.equal(calibrator.buffer, images[start:start + 8])
    assert calibrator.get_batch(["input"]) is None  # 4 images left: not a full batch
    assert calibrator.read_calibration_cache() is None
    calibrator.write_calibration_cache(b"table")
    assert calibrator.read_calibration_cache() == b"table"


def fp8_onnx(path: Path) -> Path:
    """A one-layer model with FP8 Q/DQ on its input, as an FP8 quantizer writes it (never run here)."""
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [0.1])
    zero = helper.make_tensor("zero", TensorProto.FLOAT8E4M3FN, [], [0])
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"])]
    graph = helper.make_graph(nodes, "fp8", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [scale, zero])
    onnx.save(helper.make_model(graph, ir_version=9, opset_imports=[helper.make_opsetid("", 19)]), path)
    return path


def test_fp8_needs_hopper_or_ada_and_is_built_from_fp8_qdq(exported, fake_trt, monkeypatch, tmp_path):
    gpu(monkeypatch, "NVIDIA A100-SXM4-80GB", (8, 0))
    with pytest.raises(UnsupportedError, match=r"fp8 needs compute capability 8.9 or later \(Ada, Hopper\); "
                                               r"NVIDIA A100-SXM4-80GB is 8.0"):
        runner(exported, "fp8", calibration=torch.randn(8, 3, 32, 32))
    gpu(monkeypatch, H100, (9, 0))
    with pytest.raises(UnsupportedError, match="TensorRT fp8 is calibrated on real images, and none were given"):
        runner(exported, "fp8")
    fp8 = runner(exported, "fp8", calibration=real_images(8))
    fp8._context(4, tuned=True)
    build = fake_trt.builds[0]
    assert build["flags"] == ["FP8", "FP16"] and build["calibration"] is None  # explicit: no calibrator
    parsed = Path(build["onnx"])  # the Q/DQ copy made beside the engines, not model.onnx
    assert parsed.parent == trt_backend.cache_dir() and trt_backend.has_fp8_quantization(parsed)
    assert not trt_backend.has_fp8_quantization(exported / "model.onnx")
    # a model that has FP8 Q/DQ already is built as it is, without images
    quantized = fp8_onnx(tmp_path / "fp8.onnx")
    trt_backend.build_engine(fake_trt, quantized, "fp8", trt_backend.Profile(1, 4, 4), trt_backend.TrtSettings(),
                             None, tmp_path / "timing")
    assert fake_trt.builds[-1]["onnx"] == str(quantized) and fake_trt.builds[-1]["flags"] == ["FP8", "FP16"]


def test_fp8_qdq_quantizes_every_conv_and_tracks_fp32(exported, tmp_path):
    """The Q/DQ copy, run by onnxruntime on the CPU (which simulates fp8): one pair per Conv input and weight,
    scales from the images, outputs close to fp32."""
    import numpy as np
    import onnxruntime as ort

    from vggbench.backends.fp8 import FP8_MAX, quantize_fp8

    images = real_images(16)
    out = quantize_fp8(exported / "model.onnx", tmp_path / "q" / "model.fp8.onnx", images)
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["QuantizeLinear", "DequantizeLinear", "QuantizeLinear", "DequantizeLinear", "Conv"]
    conv = model.graph.node[-1]
    assert list(conv.input[:2]) == ["input_fp8_dq", "w_fp8_dq"]
    scales = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer if i.name.endswith("_scale")}
    assert scales["w_fp8_scale"] == pytest.approx(0.1 / FP8_MAX)  # the weights are all 0.1
    assert scales["input_fp8_scale"] == pytest.approx(images.abs().max().item() / FP8_MAX)
    x = real_images(20)[16:].numpy()
    plain = ort.SessionOptions()  # as written: onnxruntime's CPU fusions (QLinearConv) have no fp8 kernels
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    run = {p: ort.InferenceSession(str(p), plain, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
           for p in (exported / "model.onnx", out)}
    want, got = run[exported / "model.onnx"], run[out]
    assert not np.array_equal(want, got)  # quantized...
    cosine = (want * got).sum() / np.linalg.norm(want) / np.linalg.norm(got)
    assert cosine > 0.999 and np.abs(got - want).max() < 0.1 * np.abs(want).max()  # ...within fp8's 3 bits


def test_the_registry_has_native_tensorrt_and_the_ort_provider_apart(exported, monkeypatch):
    from vggbench.backends import get_backend, resolve_backend

    assert resolve_backend("trt") == "tensorrt" and resolve_backend("ort-trt") == "ort-tensorrt"
    native = get_backend("tensorrt")
    assert native.builds_precisions and native.precisions == ("fp32", "fp16", "int8", "fp8")
    gpu(monkeypatch, H100, (9, 0))
    target = resolve_target("tensorrt", "cuda", "int8")
    # int8 and fp16 engines are built from the fp32 ONNX export, not model.int8.onnx or an fp16 export
    assert target.artifact == "onnx" and target.export_precision == "fp32"
    assert resolve_target("tensorrt", "cuda", "fp16").export_precision == "fp32"
    assert resolve_target("onnxruntime", "cuda", "int8").artifact == "onnx-int8"
    assert resolve_target("onnxruntime", "cuda", "fp16").export_precision == "fp16"


@pytest.mark.cuda
def test_a_real_engine_matches_eager(exported, tmp_path, monkeypatch):
    pytest.importorskip("tensorrt")
    monkeypatch.setenv("VGGBENCH_CACHE", str(tmp_path))
    model = load_model("vgg11", **TINY)
    x = torch.randn(3, 3, TINY_IMAGE, TINY_IMAGE)
    with torch.inference_mode():
        expected = model.module(x)
    got = runner(exported, "fp32", tensorrt=trt_backend.TrtSettings(max_batch=8))(x)
    assert torch.allclose(got, expected, rtol=1e-3, atol=1e-3 * expected.abs().max().item())


def test_a_cached_engine_is_given_back_only_whole_and_as_it_was_recorded(tmp_path):
    import os

    path = tmp_path / "fp16-b8-abc.engine"
    trt_backend.write_cached(path, b"engine bytes")
    assert trt_backend.read_cached(path) == b"engine bytes"
    path.write_bytes(b"engine bytez")  # same size, other bytes: the sha256 tells
    assert trt_backend.read_cached(path) is None
    path.unlink()
    os.mkfifo(path)  # never waited on
    assert trt_backend.read_cached(path) is None
    assert trt_backend.read_cached(tmp_path / "absent.engine") is None
