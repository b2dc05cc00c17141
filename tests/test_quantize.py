from __future__ import annotations

import onnx
import pytest
import torch

from tests.conftest import TINY_IMAGE
from vggbench.backends import load_runner
from vggbench.core.errors import CheckFailed, ConfigError
from vggbench.data.inputs import photo_crops
from vggbench.exporters.quantize import QuantConfig
from vggbench.parity.checked import export
from vggbench.parity.verify import verify
from vggbench.zoo.weights import load_model

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "vgg11"
    # 10 classes: with 1000, a random model's logits are so close that int8 flips a photo's top-1 on some CPUs
    model = load_model("vgg11", seed=0, width=1 / 8, hidden=64, num_classes=10)
    export(model, out, image_size=TINY_IMAGE, formats=["onnx", "onnx-int8"], quant=QuantConfig(images=8))
    return out, model


@pytest.mark.xdist_group("int8_export")  # one worker builds the module fixture
def test_int8_artifact_is_a_qdq_model_with_its_calibration_recorded(int8_export):
    out, _ = int8_export
    ops = {n.op_type for n in onnx.load(str(out / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    from vggbench.exporters.manifest import read_manifest
    entry = read_manifest(out).artifacts["onnx-int8"]
    assert entry.quantization == {"method": "minmax", "per_channel": True, "activations": "uint8",
                                     "reduce_range": False, "calibration": "photos", "images": 8, "keep_fp32": []}
    # int8 weights: a quarter of the fp32 file, give or take the graph
    assert entry.main.bytes < 0.4 * read_manifest(out).artifacts["onnx"].main.bytes


@pytest.mark.xdist_group("int8_export")  # one worker builds the module fixture
def test_int8_runs_any_batch_and_tracks_fp32(int8_export):
    out, model = int8_export
    runner = load_runner(out, "onnxruntime", precision="int8")
    x = photo_crops(5, TINY_IMAGE, MEAN, STD, seed=3)
    with torch.inference_mode():
        expected = model.module(x)
    got = runner(x)
    assert got.shape == (5, 10)
    assert torch.nn.functional.cosine_similarity(got, expected).min() > 0.99
    assert not torch.equal(got, expected)  # it really is a different, quantized computation


@pytest.mark.xdist_group("int8_export")  # one worker builds the module fixture
def test_verify_judges_int8_on_real_images_only(int8_export):
    out, _ = int8_export
    report = verify(out)
    int8 = [r for r in report.results if r.precision == "int8"]
    assert [r.inputs for r in int8] == ["photos x4"]
    assert int8[0].atol is None and int8[0].passed
    assert sum("judged on real images only" in s for s in report.skipped) == 2


def int8_weights(path) -> list:
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    return [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and t.dims]


def test_reduce_range_quantizes_weights_to_7_bits_and_is_recorded(tmp_path):
    from vggbench.exporters.manifest import read_manifest
    from vggbench.exporters.settings import ExportSettings

    assert ExportSettings(formats=("onnx", "onnx-int8"), reduce_range=True).quant().reduce_range
    model = load_model("vgg11", seed=0, width=1 / 16, hidden=32, num_classes=10)
    full, reduced = tmp_path / "full", tmp_path / "reduced"
    export(model, full, image_size=TINY_IMAGE, formats=["onnx", "onnx-int8"], quant=QuantConfig(images=4),
           verify=False)
    export(model, reduced, image_size=TINY_IMAGE, formats=["onnx", "onnx-int8"],
           quant=QuantConfig(images=4, reduce_range=True), verify=False)
    assert max(abs(int(w.min())) for w in int8_weights(full / "model.int8.onnx")) > 64  # 8 bits used
    weights = int8_weights(reduced / "model.int8.onnx")
    assert weights and all(int(w.min()) >= -64 and int(w.max()) <= 64 for w in weights)
    assert read_manifest(reduced).artifacts["onnx-int8"].quant_config().reduce_range is True
    with pytest.raises(ConfigError, match="reduce-range"):
        QuantConfig(method="nncf", reduce_range=True)
    with pytest.raises(ConfigError, match="add onnx-int8"):
        ExportSettings(formats=("onnx",), reduce_range=True)


def test_int8_needs_an_fp32_onnx_export(tmp_path):
    model = load_model("vgg11", width=1 / 16, hidden=32)
    with pytest.raises(ConfigError, match="add onnx to --format"):
        export(model, tmp_path / "a", image_size=TINY_IMAGE, formats=["onnx-int8"])
    with pytest.raises(ConfigError, match="quantized from an fp32 model"):
        export(model, tmp_path / "b", image_size=TINY_IMAGE, formats=["onnx", "onnx-int8"], precision="fp16")
    with pytest.raises(ConfigError, match="unknown calibration method"):
        QuantConfig(method="magic")


def test_a_badly_calibrated_int8_model_is_refused(tmp_path):
    model = load_model("vgg11", seed=0, width=1 / 8, hidden=64)
    zeros = torch.zeros(4, 3, TINY_IMAGE, TINY_IMAGE)  # every activation range collapses to nothing
    with pytest.raises(CheckFailed, match="onnxruntime int8 on photos x4"):
        export(model, tmp_path / "bad", image_size=TINY_IMAGE, formats=["onnx", "onnx-int8"], calibration=zeros)
    assert not (tmp_path / "bad").exists()


def test_photo_crops_are_seeded_and_normalised():
    a, b = photo_crops(6, 48, MEAN, STD, seed=1), photo_crops(6, 48, MEAN, STD, seed=1)
    assert a.shape == (6, 3, 48, 48) and torch.equal(a, b)
    assert not torch.equal(a, photo_crops(6, 48, MEAN, STD, seed=2))
    assert -1.0 < a.mean().item() < 1.0 and 0.5 < a.std().item() < 2.0


@pytest.mark.slow
def test_weights_trained_on_digits_calibrate_and_verify_on_digits(tmp_path):
    from vggbench.core.errors import DataError
    from vggbench.zoo.weights import save_weights

    trained = save_weights(load_model("vgg11", seed=0, width=1 / 8, hidden=64, num_classes=10), tmp_path / "w.pt",
                           dataset="digits")
    model = load_model("vgg11", weights=trained)
    out = tmp_path / "export"
    manifest = export(model, out, image_size=TINY_IMAGE, formats=["onnx", "onnx-int8"], quant=QuantConfig(images=8),
                      verify=False)
    assert manifest.artifacts["onnx-int8"].quantization["calibration"] == "digits train"
    report = verify(out, backends=["onnxruntime"], batch_sizes=[1], photos=False)
    assert [r.inputs for r in report.results] == ["random x1", "digits test x270"]
    assert all(r.passed for r in report.results)
    assert [r.inputs for r in verify(out, backends=["onnxruntime"], batch_sizes=[1], data=None).results] == \
        ["random x1", "photos x4"]
    with pytest.raises(DataError, match="unknown dataset"):
        verify(out, backends=["onnxruntime"], data="digitz")
    photos = export(model, tmp_path / "photos", image_size=TINY_IMAGE, formats=["onnx", "onnx-int8"], verify=False,
                    quant=QuantConfig(images=8, calibration="photos"))
    assert photos.artifacts["onnx-int8"].quantization["calibration"] == "photos"


@pytest.mark.slow
def test_int8_from_an_onnx_export_with_external_weights(tmp_path, monkeypatch):
    """Full VGG16's fp32 weights live in model.onnx.data; quantizing must find them (it once did not)."""
    import vggbench.exporters.export as export_module

    monkeypatch.setattr(export_module, "ONNX_EXTERNAL_DATA_BYTES", 1000)
    model = load_model("vgg11", seed=0, width=1 / 16, hidden=32)
    manifest = export(model, tmp_path / "e", image_size=TINY_IMAGE, formats=["onnx", "onnx-int8"],
                      quant=QuantConfig(images=4), verify=False)
    assert [f.file for f in manifest.artifacts["onnx"].files] == ["model.onnx", "model.onnx.data"]
    runner = load_runner(tmp_path / "e", "onnxruntime", precision="int8")
    assert runner(torch.randn(2, 3, TINY_IMAGE, TINY_IMAGE)).shape == (2, 1000)
