from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper

import vggbench.exporters.export as export_module
from tests.conftest import TINY, TINY_IMAGE, slow_except
from vggbench.backends import load_runner
from vggbench.cli import main
from vggbench.core.errors import ArtifactError, CheckFailed, ConfigError, ExportError, VggbenchError
from vggbench.core.fileio import sha256_file
from vggbench.exporters.manifest import REQUIRED, SCHEMA_VERSION, read_manifest, write_manifest
from vggbench.parity.checked import export
from vggbench.parity.verify import verify
from vggbench.zoo.specs import list_models
from vggbench.zoo.weights import load_model, save_weights

ALL = ("torchscript", "onnx", "pt2")


def tiny(name="vgg11", **kwargs):
    return load_model(name, seed=1, **{**TINY, **kwargs})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One tiny vgg16_bn export shared by the read-only tests below."""
    out = tmp_path_factory.mktemp("exp") / "vgg16_bn"
    export(tiny("vgg16_bn"), out, image_size=TINY_IMAGE)
    return out


@pytest.mark.parametrize("name", slow_except(list_models(), "vgg11"))
def test_every_config_exports_to_every_format_and_matches_eager(tmp_path, name):
    manifest = export(tiny(name), tmp_path / name, image_size=TINY_IMAGE)
    assert set(manifest.artifacts) == set(ALL)
    rows = manifest.parity
    # 3 artifacts x (random x1, random x3, photos x4)
    assert len(rows) == 9 and all(r["passed"] for r in rows)
    assert {r["backend"] for r in rows} == {"torchscript", "onnxruntime", "pt2"}
    assert max(r["max_abs"] for r in rows) <= max(r["atol"] for r in rows)


@pytest.mark.slow
def test_lrn_exports_as_onnx_lrn_with_the_same_constants(tmp_path):
    model = tiny("vgg11_lrn")
    export(model, tmp_path / "lrn", image_size=TINY_IMAGE, formats=["onnx"])
    nodes = onnx.load(str(tmp_path / "lrn" / "model.onnx")).graph.node
    assert [n.op_type for n in nodes][:4] == ["Conv", "Relu", "LRN", "MaxPool"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[2].attribute}
    assert attrs["size"] == 5 and attrs["bias"] == 2.0
    # Krizhevsky's alpha 1e-4 in ONNX's convention, which divides alpha by the size
    assert attrs["alpha"] == pytest.approx(5e-4) and attrs["beta"] == pytest.approx(0.75)
    # at large activations the normalisation really divides: ONNX and torch agree there too
    x = torch.randn(2, 3, 32, 32) * 300
    with torch.inference_mode():
        pre = model.module.features[:2](x)
        expected = model.module(x)
    assert (model.module.features[2](pre) - pre).abs().max() > 0.1 * pre.abs().max()
    got = load_runner(tmp_path / "lrn", "onnxruntime")(x)
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


@pytest.mark.xdist_group("exported")  # one worker builds the module fixture
def test_manifest_describes_the_export(exported):
    m = read_manifest(exported)
    assert m.schema_version == SCHEMA_VERSION
    assert m.model.name == "vgg16_bn" and m.model.config == "D" and m.model.batch_norm
    assert m.model.options["width"] == TINY["width"]
    assert m.weights.source == "random" and m.weights.seed == 1 and len(m.weights.state_sha256) == 64
    assert m.input.to_dict() == {"name": "input", "shape": ["batch", 3, 32, 32], "dtype": "float32",
                                 "layout": "NCHW", "image_size": 32, "mean": [0.485, 0.456, 0.406],
                                 "std": [0.229, 0.224, 0.225], "dynamic_batch": True, "example_batch": 2}
    assert m.output.shape == ("batch", 1000) and m.static_batch is None and m.dense is None
    assert m.artifacts["onnx"].opset >= 18
    for fmt, entry in m.artifacts.items():
        for f in entry.files:
            path = exported / f.file
            assert f.bytes == path.stat().st_size and f.sha256 == sha256_file(path), fmt
    assert m.versions["torch"] == torch.__version__.split("+")[0]
    assert any("torchscript" in w for w in m.warnings)  # TorchScript's deprecation, recorded not hidden
    # the typed manifest is the file: read and written again, every key and value stays
    assert m.to_dict() == json.loads((exported / "manifest.json").read_text())


@pytest.mark.xdist_group("exported")  # one worker builds the module fixture
@pytest.mark.parametrize("backend", ["torchscript", "onnxruntime", "pt2"])
def test_one_dynamic_artifact_serves_every_batch_size(exported, backend):
    runner = load_runner(exported, backend)
    model = tiny("vgg16_bn").module
    for batch in (1, 2, 5, 8):
        x = torch.randn(batch, 3, TINY_IMAGE, TINY_IMAGE)
        with torch.inference_mode():
            expected = model(x)
        got = runner(x)
        assert got.shape == (batch, 1000)
        assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_static_batch_export_fixes_the_batch(tmp_path):
    out = tmp_path / "static"
    manifest = export(tiny(), out, image_size=TINY_IMAGE, dynamic_batch=False, batch_size=2, formats=["onnx", "pt2"])
    assert manifest.input.shape == (2, 3, 32, 32) and manifest.dynamic_axes == {} and manifest.static_batch == 2
    dims = onnx.load(str(out / "model.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [2, 3, 32, 32]
    # verify splits its inputs into batches of 2 (and passed, or export would have raised)
    assert all(r["passed"] for r in manifest.parity)
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own error type
        load_runner(out, "onnxruntime")(torch.randn(3, 3, 32, 32))


@pytest.mark.parametrize("size", slow_except([32, 50, 64, 100, 224], 32))
def test_image_sizes_keep_the_adaptive_pool_right(tmp_path, size):
    # 32 -> 1x1 feature map pooled up to 7x7; 50 -> 1; 64 -> 2; 100 -> 3; 224 -> 7 (identity)
    manifest = export(tiny("vgg13"), tmp_path / "s", image_size=size)
    assert all(r["passed"] for r in manifest.parity)


@pytest.mark.xdist_group("exported")  # one worker builds the module fixture
def test_a_different_image_size_is_refused_not_silently_wrong(exported):
    for backend in ("onnxruntime", "pt2"):
        with pytest.raises(Exception, match=r"(?i)dimension|guard|shape|size"):
            load_runner(exported, backend)(torch.randn(1, 3, 64, 64))


@pytest.mark.slow
def test_fp16_export_matches_within_the_fp16_preset(tmp_path):
    manifest = export(tiny("vgg11_bn"), tmp_path / "h", image_size=TINY_IMAGE, precision="fp16")
    assert manifest.precision == "fp16" and manifest.input.dtype == "float16"
    assert all(r["passed"] and r["precision"] == "fp16" for r in manifest.parity)
    assert load_runner(tmp_path / "h", "onnxruntime")(torch.randn(2, 3, 32, 32)).dtype == torch.float32


@pytest.mark.slow
def test_script_mode_and_explicit_opset(tmp_path):
    manifest = export(tiny("vgg19"), tmp_path / "s", image_size=TINY_IMAGE, formats=["torchscript", "onnx"],
                      torchscript_mode="script", opset=18)
    assert manifest.artifacts["torchscript"].mode == "script"
    assert manifest.artifacts["onnx"].opset == 18


def test_large_models_put_onnx_weights_in_external_data(tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "ONNX_EXTERNAL_DATA_BYTES", 1000)
    manifest = export(tiny(), tmp_path / "x", image_size=TINY_IMAGE, formats=["onnx"])
    files = [f.file for f in manifest.artifacts["onnx"].files]
    assert manifest.artifacts["onnx"].external_data and files == ["model.onnx", "model.onnx.data"]
    assert (tmp_path / "x" / "model.onnx").stat().st_size < 100_000


def test_existing_folder_needs_force_and_failures_leave_it_intact(tmp_path, monkeypatch):
    out = tmp_path / "e"
    export(tiny(), out, image_size=TINY_IMAGE, formats=["onnx"], verify=False)
    before = sha256_file(out / "manifest.json")
    with pytest.raises(VggbenchError, match="already exists; pass --force"):
        export(tiny(), out, image_size=TINY_IMAGE, formats=["onnx"])

    def broken(*args, **kwargs):
        raise RuntimeError("exporter exploded\nsecond line")
    monkeypatch.setitem(export_module.EXPORTERS, "pt2", broken)
    with pytest.raises(ExportError, match="pt2 export of vgg11 failed: RuntimeError: exporter exploded$"):
        export(tiny("vgg11"), out, image_size=TINY_IMAGE, force=True)
    assert sha256_file(out / "manifest.json") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]  # no temp folders left behind


@pytest.mark.parametrize("kwargs,match", [
    ({"formats": ["tflite"]}, "unknown export format tflite"),
    ({"image_size": 16}, "too small"),
    ({"precision": "bf16"}, "export precision must be one of fp32, fp16"),
    ({"opset": 11}, "opset 11 is too old"),
    ({"batch_size": 0}, "--batch-size must be a positive integer"),
    # the model is given, so its settings are no export keyword
    ({"width": 0.5}, r"unknown key 'width' in export\(\)"),
])
def test_bad_export_arguments(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        export(tiny(), tmp_path / "bad", **{"image_size": TINY_IMAGE, **kwargs})
    assert not (tmp_path / "bad").exists()


# --- broken artifacts --------------------------------------------------------------------------------

def copy_export(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


@pytest.mark.xdist_group("exported")  # one worker builds the module fixture
@pytest.mark.parametrize("version", [1, 2])
def test_an_old_schema_manifest_is_read_into_the_typed_manifest(exported, tmp_path, version):
    """Schema 1 (no digest) and 2 (before input.dense and model.lrn) are still read: converted into the typed
    Manifest, keeping the version their file has. The schema 1 manifest here holds only the keys every version
    has (REQUIRED, each artifact's files, and the seed its random weights are rebuilt from): what a reader relies
    on is enough."""
    out = copy_export(exported, tmp_path / "old")
    data = json.loads((out / "manifest.json").read_text())
    data["schema_version"] = version
    if version == 1:
        data = {"schema_version": 1, "precision": data["precision"], **{
            part: {k: v for k, v in data[part].items() if f"{part}.{k}" in REQUIRED or k == "seed"}
            for part in ("model", "weights", "input", "output")},
            "artifacts": {fmt: {"files": entry["files"]} for fmt, entry in data["artifacts"].items()}}
        (out / "manifest.json").write_text(json.dumps(data))
    else:
        write_manifest(out, data)
    m = read_manifest(out)
    assert m.schema_version == version and m.model.name == "vgg16_bn" and m.weights.source == "random"
    assert m.input.image_size == 32 and m.input.mean == (0.485, 0.456, 0.406) and m.static_batch is None
    assert m.dense is None and m.model.lrn is None and m.model.stage is None
    assert m.artifacts["onnx"].main.file == "model.onnx" and len(m.artifacts["onnx"].sha256s) == 1
    if version == 1:  # what it lacks is None (or empty), not an error
        assert m.digest is None and m.created is None and m.model.config is None and m.input.dtype is None
        assert m.artifacts["onnx"].opset is None and m.warnings == () and m.parity is None
    else:
        assert m.artifacts["onnx"].opset >= 18 and m.parity
    report = verify(out, backends=["onnxruntime"], batch_sizes=[1], photos=False, data=None)
    assert report.passed and len(report.results) == 1


def test_a_manifest_part_of_the_wrong_type_is_refused_in_one_line(tmp_path):
    from vggbench.exporters.manifest import Manifest

    data = {"schema_version": 3, "model": {"name": "vgg11", "options": {}, "params": "many"},
            "weights": {"source": "random", "state_sha256": "0" * 64}, "precision": "fp32",
            "input": {"name": "input", "shape": ["batch", 3, 32, 32], "image_size": 32, "mean": [0.5] * 3,
                      "std": [0.5] * 3, "dynamic_batch": True},
            "output": {"name": "logits", "shape": ["batch", 10]}, "artifacts": {}}
    with pytest.raises(ArtifactError, match=r"model.params must be a int, got 'many'"):
        Manifest.from_dict(data)
    data["model"]["params"] = 10
    data["input"]["dense"] = {"train_size": 32}
    with pytest.raises(ArtifactError, match="lacks input.dense.min_size"):
        Manifest.from_dict(data)
    del data["input"]["dense"]
    data["model"]["future"] = {"kept": True}  # a key this vggbench does not know survives a rewrite
    assert Manifest.from_dict(data).to_dict()["model"]["future"] == {"kept": True}


@pytest.mark.xdist_group("exported")  # one worker builds the module fixture
def test_an_edited_file_is_refused_before_it_runs(exported, tmp_path):
    out = copy_export(exported, tmp_path / "edited")
    data = bytearray((out / "model.pt2").read_bytes())
    data[-100] ^= 0xFF
    (out / "model.pt2").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model.pt2 does not match its sha256 in manifest.json"):
        load_runner(out, "pt2")
    (out / "model.ts").unlink()
    with pytest.raises(ArtifactError, match="model.ts is missing"):
        verify(out, backends=["torchscript"])


@pytest.mark.xdist_group("exported")  # one worker builds the module fixture
def test_perturbed_weights_fail_verify_with_exit_1(exported, tmp_path):
    out = copy_export(exported, tmp_path / "perturbed")
    model = onnx.load(str(out / "model.onnx"))
    conv = next(t for t in model.graph.initializer if len(t.dims) == 4)
    values = numpy_helper.to_array(conv).copy()
    values *= np.float32(1.01)  # a 1% change to one conv layer
    conv.CopyFrom(numpy_helper.from_array(values, conv.name))
    onnx.save(model, str(out / "model.onnx"))
    # re-sign the manifest so the sha256 check passes and only parity can catch it
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["artifacts"]["onnx"]["files"][0].update(bytes=(out / "model.onnx").stat().st_size,
                                                     sha256=sha256_file(out / "model.onnx"))
    write_manifest(out, manifest)
    report = verify(out)
    onnx_rows = [r for r in report.results if r.backend == "onnxruntime"]
    assert onnx_rows and not any(r.passed for r in onnx_rows)
    assert all(r.passed for r in report.results if r.backend != "onnxruntime")
    result = CliRunner().invoke(main, ["verify", str(out)])
    assert result.exit_code == 1
    assert "error: 3 of 9 comparisons failed (first: onnxruntime fp32 on random x1: max abs diff" in result.output


def test_features_only_weights_with_a_nan_classifier_never_pass(tmp_path):
    model = tiny("vgg16")
    torch.nn.init.constant_(model.module.classifier[6].weight, float("nan"))
    with pytest.raises(CheckFailed, match="reference has NaN"):
        export(model, tmp_path / "nan", image_size=TINY_IMAGE, formats=["onnx"])
    assert not (tmp_path / "nan").exists()


def test_reference_weights_from_a_file_that_moved(tmp_path):
    path = save_weights(tiny("vgg13", num_classes=10), tmp_path / "w.safetensors")
    out = tmp_path / "from_file"
    export(load_model("vgg13", path), out, image_size=TINY_IMAGE, formats=["onnx"])
    moved = path.rename(tmp_path / "moved.safetensors")
    with pytest.raises(VggbenchError, match="does not exist"):
        verify(out)
    assert verify(out, weights=moved).passed
    other = save_weights(load_model("vgg13", seed=9, num_classes=10, **TINY), tmp_path / "other.pt")
    with pytest.raises(ArtifactError, match="not the ones exported"):
        verify(out, weights=other)


@pytest.mark.xdist_group("exported")  # one worker builds the module fixture
def test_eager_precision_and_memory_format_comparisons(exported):
    report = verify(exported, backends=["eager", "torchscript"], precisions=["fp32", "bf16"],
                    memory_formats=["contiguous", "channels_last"], batch_sizes=[2], photos=False)
    combos = {(r.backend, r.precision, r.memory_format) for r in report.results}
    assert ("eager", "bf16", "channels_last") in combos and ("torchscript", "fp32", "channels_last") in combos
    assert ("eager", "fp32", "contiguous") not in combos  # the reference itself
    assert report.passed
    bf16 = next(r for r in report.results if r.precision == "bf16")
    assert bf16.max_abs > 0  # bf16 really ran in bf16
    assert any("reference itself" in s for s in report.skipped)


@pytest.mark.xdist_group("exported")  # one worker builds the module fixture
def test_unsupported_combinations_are_skipped_with_a_reason(exported):
    report = verify(exported, backends=["onnxruntime"], precisions=["fp32", "amp"], batch_sizes=[1], photos=False)
    assert [r.precision for r in report.results] == ["fp32"]
    assert any("amp (fp16 autocast) needs CUDA" in s or "does not support amp" in s for s in report.skipped)


@pytest.mark.xdist_group("exported")  # one worker builds the module fixture
def test_the_trace_runs_fp32_convolutions_in_fp32_on_any_gpu(exported):
    """A trace bakes cuDNN's allow_tf32 into each convolution; vggbench traces with it off, whatever the
    exporting process had, so that the artifact's fp32 is fp32 on a GPU too."""
    folder = exported
    graph = torch.jit.load(str(folder / "model.ts")).inlined_graph
    convolutions = [n for n in graph.nodes() if n.kind() == "aten::_convolution"]
    assert len(convolutions) == 13  # vgg16_bn
    assert all(n.inputsAt(12).toIValue() is False for n in convolutions)  # allow_tf32
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["artifacts"]["torchscript"]["cudnn_flags_in_trace"] == {"allow_tf32": False, "benchmark": False}
