"""The paper's A-LRN, its dense form and its test-time protocols (eval --protocol), and dense exports."""

from __future__ import annotations

import contextlib
import json

import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from tests.conftest import TINY, slow_except
from vggbench.backends import load_runner
from vggbench.cli import main
from vggbench.core.errors import ArtifactError, ConfigError, WeightsError
from vggbench.exporters.manifest import read_manifest, write_manifest
from vggbench.exporters.onnx_ops import with_onnx_lrn
from vggbench.parity.checked import export
from vggbench.parity.verify import verify
from vggbench.training.config import EvalConfig
from vggbench.training.evaluation import evaluate
from vggbench.training.protocols import Scorer, crops, evaluate_protocols, grid_offsets
from vggbench.zoo.dense import adaptive_pool_matrix, dense_gmacs, dense_model, min_dense_size
from vggbench.zoo.weights import checkpoint_meta, load_model, save_weights

# --- A-LRN: Krizhevsky's formula ----------------------------------------------------------------------


def krizhevsky_lrn(a: torch.Tensor, size=5, alpha=1e-4, beta=0.75, k=2.0) -> torch.Tensor:
    """b_i = a_i / (k + alpha * sum_{j = max(0, i - n/2)}^{min(N - 1, i + n/2)} a_j^2) ^ beta, written out."""
    a = a.double()
    channels = a.shape[1]
    out = torch.empty_like(a)
    for i in range(channels):
        lo, hi = max(0, i - size // 2), min(channels - 1, i + size // 2)
        out[:, i] = a[:, i] / (k + alpha * (a[:, lo:hi + 1] ** 2).sum(dim=1)) ** beta
    return out


@pytest.fixture
def lrn_input():
    # magnitude ~30, where a 5x weaker normalisation is plainly visible
    return (torch.randn(2, 7, 5, 6, generator=torch.Generator().manual_seed(0)) * 30).relu()


def the_lrn() -> nn.Module:
    lrn = load_model("vgg11_lrn", seed=0, **TINY).module.features[2]
    assert isinstance(lrn, nn.LocalResponseNorm)
    return nn.Sequential(lrn).eval()


def test_a_lrn_is_krizhevskys_formula_in_eager_torchscript_and_pt2(lrn_input):
    expected = krizhevsky_lrn(lrn_input).float()
    old = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)(lrn_input)  # alpha passed through, as before
    assert (old - expected).abs().max() > 1.0  # the difference shows on these inputs
    wrapped = the_lrn()
    got = {"eager": wrapped(lrn_input),
           "torchscript": torch.jit.trace(wrapped, lrn_input)(lrn_input * 1.0),
           "pt2": torch.export.export(wrapped, (lrn_input,), strict=False).module()(lrn_input)}
    for name, value in got.items():
        assert (value - expected).abs().max() <= 1e-5 * expected.abs().max(), name


@pytest.mark.slow
def test_a_lrn_exports_as_one_onnx_lrn_node_that_computes_krizhevskys_formula(lrn_input, tmp_path):
    expected = krizhevsky_lrn(lrn_input).float()
    onnx_module, table = with_onnx_lrn(the_lrn())
    program = torch.onnx.export(onnx_module, (lrn_input,), dynamo=True, custom_translation_table=table,
                                input_names=["x"], output_names=["y"], verbose=False)
    path = tmp_path / "lrn.onnx"
    program.save(str(path))
    (node,) = [n for n in onnx.load(str(path)).graph.node if n.op_type == "LRN"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["size"] == 5 and attrs["alpha"] == pytest.approx(5e-4) and attrs["bias"] == 2.0
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"x": lrn_input.numpy()})[0])
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_lrn_checkpoint_saved_before_the_exact_form_is_refused(tmp_path):
    loaded = load_model("vgg11_lrn", seed=0, **TINY)
    new = save_weights(loaded, tmp_path / "new.pt")
    assert torch.equal(load_model("vgg11_lrn", new).module.features[0].weight, loaded.module.features[0].weight)
    old_meta = {k: v for k, v in checkpoint_meta(loaded).items() if k != "lrn"}
    torch.save({"vggbench": old_meta, "model_state_dict": loaded.module.state_dict()}, tmp_path / "old.pt")
    with pytest.raises(WeightsError, match="5x weaker"):
        load_model("vgg11_lrn", tmp_path / "old.pt")
    # a plain state_dict (no vggbench metadata) is taken as it is; models without LRN are unaffected
    torch.save(loaded.module.state_dict(), tmp_path / "plain.pt")
    assert load_model("vgg11_lrn", tmp_path / "plain.pt").options.width == TINY["width"]


def test_lrn_export_made_before_the_exact_form_is_refused_by_verify_and_old_schemas_read(tmp_path):
    export(load_model("vgg11_lrn", seed=0, **TINY), tmp_path / "lrn", image_size=32, formats=["torchscript"],
           verify=False)
    manifest = read_manifest(tmp_path / "lrn")
    assert manifest.schema_version == 3 and manifest.model.lrn["form"] == "krizhevsky"
    assert manifest.model.lrn["alpha"] == 1e-4
    old = manifest.to_dict()
    del old["model"]["lrn"]
    old["schema_version"] = 2  # as vggbench wrote it before
    write_manifest(tmp_path / "lrn", old)
    again = read_manifest(tmp_path / "lrn")  # old manifests still read
    assert again.schema_version == 2 and again.model.lrn is None
    with pytest.raises(ArtifactError, match="export it again"):
        verify(tmp_path / "lrn", photos=False, data=None)


# --- the dense form -----------------------------------------------------------------------------------


def test_adaptive_pool_matrix_is_torchs_adaptive_pool():
    for side, pool in [(1, 7), (2, 7), (3, 7), (7, 7), (10, 7), (5, 1)]:
        x = torch.randn(2, 3, side, side, dtype=torch.float64)
        m = adaptive_pool_matrix(side, pool)
        assert torch.allclose(torch.einsum("pi,ncij,qj->ncpq", m, x, m), nn.AdaptiveAvgPool2d(pool)(x))


@pytest.mark.parametrize("case", slow_except(["imagenet-224", "imagenet-64", "imagenet-96", "compact-32", "compact-64"],
                                              "imagenet-64", "compact-32"))
def test_dense_form_equals_the_fc_model_at_the_training_size(case):
    head, size = case.split("-")[0], int(case.split("-")[1])
    model = load_model("vgg11_bn", seed=3, width=1 / 16, hidden=24, head=head, num_classes=7).module
    dense = dense_model(model, size).eval()
    assert not any(isinstance(m, (nn.AdaptiveAvgPool2d, nn.Linear)) for m in dense.modules())
    side = size // 32
    assert dense.head[0].kernel_size == (side, side) and dense.head[3].kernel_size == (1, 1)
    assert dense.head[0].out_channels == 24  # the classifier's actual widths
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fc, d = model(x), dense(x)
    # fp32 sums in another order (a 7x7 conv against a Linear over 1,568 inputs): about sqrt(n) x eps (1.2e-7) of the
    # largest logit apart, 1.1e-6 measured on an AVX-512/AMX Xeon, under 1e-6 on the EPYCs
    assert (fc - d).abs().max() <= 1e-5 * fc.abs().max()
    # any larger, non-square input: a score map, averaged
    big = torch.randn(1, 3, size + 32, size + 64)
    dense.return_map = True
    with torch.no_grad():
        scores, score_map = dense(big)
    assert score_map.shape == (1, 7, 2, 3) and torch.allclose(scores, score_map.mean(dim=(2, 3)))
    assert min_dense_size(dense.features, size) == 32 * side
    assert dense_gmacs(dense, size, size) > 0


# --- protocols ----------------------------------------------------------------------------------------


def test_grid_crops_are_the_papers_5x5_and_five_ten_are_torchvisions():
    from torchvision.transforms import v2

    assert grid_offsets(40, 32) == [0, 2, 4, 6, 8] and grid_offsets(32, 32) == [0] * 5
    assert grid_offsets(37, 32) == [0, 1, 3, 4, 5]  # 1.25 -> 1, 2.5 -> 3, 3.75 -> 4: evenly spaced, rounded
    images = torch.arange(2 * 3 * 40 * 45, dtype=torch.float32).reshape(2, 3, 40, 45)
    grid = crops(images, 32, "grid", flip=False)
    assert len(grid) == 25
    lefts = grid_offsets(45, 32)
    assert lefts == [0, 3, 7, 10, 13]
    for n, view in enumerate(grid):
        top, left = grid_offsets(40, 32)[n // 5], lefts[n % 5]
        assert torch.equal(view, images[..., top:top + 32, left:left + 32])
    flipped = crops(images, 32, "grid", flip=True)
    assert len(flipped) == 50 and all(torch.equal(f, g.flip(-1)) for f, g in zip(flipped[25:], grid, strict=True))
    five = crops(images, 32, "five", flip=False)
    assert all(torch.equal(a, b) for a, b in zip(five, v2.FiveCrop(32)(images), strict=True))
    ten = crops(images, 32, "ten", flip=False)
    assert len(ten) == 10 and all(torch.equal(a, b) for a, b in zip(ten, v2.TenCrop(32)(images), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(crops(images, 32, "ten", flip=True), ten, strict=True))


def test_flip_averages_the_mirrored_images_posterior():
    model = load_model("vgg11", seed=0, **TINY, num_classes=10).module.eval()
    images = torch.randn(4, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    scorer = Scorer(model, dense_model(model, 32).eval(), 32, EvalConfig(flip=True, crops="five"), contextlib.nullcontext,
                    torch.contiguous_format, torch.device("cpu"))
    with torch.no_grad():
        centre = images[..., 4:36, 4:36]
        expected = (model(centre).softmax(1) + model(centre.flip(-1)).softmax(1)) / 2
        assert torch.allclose(scorer.center(images), expected, atol=1e-7)
        dense = scorer.dense
        expected = (dense(images).softmax(1) + dense(images.flip(-1)).softmax(1)) / 2
        assert torch.allclose(scorer.dense_scores(images), expected, atol=1e-7)
        views = crops(images, 32, "five", flip=True)
        expected = torch.stack([model(v).softmax(1) for v in views]).mean(0)
        assert torch.allclose(scorer.multicrop(images), expected, atol=1e-7)


def test_dense_at_the_training_size_scores_as_the_centre_crop_on_digits():
    config = dict(model="vgg11", **TINY, data="digits", batch_size=128)
    plain = evaluate(EvalConfig(**config))
    report = evaluate_protocols(EvalConfig(**config, protocol=("center", "dense"), scales=(32,)))
    rows = {r.protocol: r for r in report.rows}
    assert set(rows) == {"center", "dense"} and report.split == "test" and report.image_size == 32
    for row in rows.values():  # 32x32 digits: the centre crop is the whole image, which the dense net takes
        assert row.images == plain.images == 270
        assert row.top1 == plain.top1 and row.top5 == plain.top5 and row.top1_err == 1 - plain.top1
        assert row.loss == pytest.approx(plain.loss, rel=1e-5)
        assert row.views == 1 and row.ms_per_image > 0


@pytest.mark.slow
def test_several_scales_add_a_multi_scale_row_and_small_scales_are_refused():
    config = dict(model="vgg11", **TINY, data="digits", batch_size=128, split="val")
    report = evaluate_protocols(EvalConfig(**config, protocol=("dense",), scales=(32, 48), flip=True))
    assert [(r.protocol, r.scales, r.views) for r in report.rows] == [("dense", "32", 2), ("dense", "48", 2),
                                                                        ("dense", "32,48", 4)]
    assert report.settings["flip"] is True and report.settings["scales"] == [32, 48]
    assert report.notes and "not mirror-safe" in report.notes[0]
    with pytest.raises(ConfigError, match="smaller than the 32x32 crops"):
        evaluate_protocols(EvalConfig(**config, protocol=("multicrop",), scales=(31,)))
    with pytest.raises(ConfigError, match="dense net's smallest input"):
        evaluate_protocols(EvalConfig(**config, image_size=64, protocol=("dense",), scales=(40,)))


def test_eval_cli_prints_one_row_per_protocol_and_scale():
    bad = CliRunner().invoke(main, ["eval", "vgg11", "--protocol", "sparse"])
    assert bad.exit_code == 2 and "sparse" in bad.output
    result = CliRunner().invoke(main, ["eval", "vgg11", "--width", "0.0625", "--hidden", "32", "--data", "digits",
                                       "--split", "val", "--protocol", "center,dense", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["protocol"], r["scales"], r["views"]) for r in rows] == [("center", "32", 1), ("dense", "32", 1)]
    assert rows[0]["top1_err"] == rows[1]["top1_err"] and rows[0]["images"] == 270


@pytest.mark.slow
def test_eval_cli_combines_dense_and_multicrop_over_scales():
    result = CliRunner().invoke(main, ["eval", "vgg11", "--width", "0.0625", "--hidden", "32", "--data", "digits",
                                       "--split", "val", "--protocol", "dense,dense+multicrop", "--crops", "five",
                                       "--scales", "32,36", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["protocol"], r["scales"]) for r in rows] == [
        ("dense", "32"), ("dense", "36"), ("dense+multicrop", "32"), ("dense+multicrop", "36"),
        ("dense", "32,36"), ("dense+multicrop", "32,36")]
    assert all(0 <= r["top1_err"] <= 1 and r["images"] == 270 for r in rows)
    assert rows[2]["views"] == 6 and rows[5]["views"] == 12  # dense 1 + FiveCrop 5, per scale


# --- dense exports ------------------------------------------------------------------------------------


def test_dense_torchscript_export_takes_any_size_and_verify_checks_several(tmp_path):
    loaded = load_model("vgg11", seed=0, **TINY, head="imagenet", num_classes=10)
    manifest = export(loaded, tmp_path / "d", image_size=64, formats=["torchscript"], dense=True, score_map=True)
    dense = manifest.dense
    assert dense.to_dict() == {"train_size": 64, "min_size": 64, "kernel": 2, "stride": 32, "score_map": True}
    assert manifest.input.shape == ("batch", 3, "height", "width")
    assert manifest.dynamic_axes["input"] == {"0": "batch", "2": "height", "3": "width"}
    inputs = {r["inputs"] for r in manifest.parity}
    assert {"random x2 96x64", "random x2 64x160", "random x2 133x71"} <= inputs
    assert all(r["passed"] for r in manifest.parity)
    runner = load_runner(tmp_path / "d", "torchscript")
    reference = dense_model(loaded.module, 64).eval()
    x = torch.randn(2, 3, 100, 70)
    with torch.no_grad():
        assert torch.allclose(runner(x), reference(x), atol=1e-6)
        square = torch.randn(1, 3, 64, 64)
        assert torch.allclose(runner(square), loaded.module(square), atol=1e-6)  # the FC model at 64
    scores, score_map = torch.jit.load(str(tmp_path / "d" / "model.ts"))(x)
    assert score_map.shape == (2, 10, 2, 1) and torch.allclose(scores, score_map.mean(dim=(2, 3)))
    assert verify(tmp_path / "d", photos=False, data=None).passed


def test_dense_export_options_are_checked(tmp_path):
    loaded = load_model("vgg11", seed=0, **TINY)
    with pytest.raises(ConfigError, match="--dense"):
        export(loaded, tmp_path / "x", image_size=32, formats=["torchscript"], score_map=True)
    with pytest.raises(Exception, match="onnx-int8 of a dense export"):
        export(loaded, tmp_path / "x", image_size=32, formats=["onnx", "onnx-int8"], dense=True)


@pytest.mark.slow
def test_dense_onnx_and_pt2_exports_have_dynamic_height_and_width(tmp_path):
    loaded = load_model("vgg11_lrn", seed=0, **TINY, num_classes=10)
    manifest = export(loaded, tmp_path / "d", image_size=32, formats=["onnx", "pt2"], dense=True)
    assert all(r["passed"] for r in manifest.parity) and len(manifest.parity) >= 8
    reference = dense_model(loaded.module, 32).eval()
    for backend in ("onnxruntime", "pt2"):
        runner = load_runner(tmp_path / "d", backend)
        for h, w in [(32, 32), (32, 97), (150, 64)]:
            x = torch.randn(3, 3, h, w)
            with torch.no_grad():
                assert (runner(x) - reference(x)).abs().max() <= 1e-5, (backend, h, w)
    graph = onnx.load(str(tmp_path / "d" / "model.onnx")).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))
    lrn = [n for n in graph.node if n.op_type == "LRN"]
    assert len(lrn) == 1


@pytest.mark.slow
def test_run_times_the_dense_form_at_a_given_size(tmp_path):
    from vggbench.bench.sweep import benchmark

    run = benchmark(None, models=["vgg11"], backends=["eager", "torchscript"], memory_formats=["contiguous"],
                    batch_sizes=[1], image_size=80, dense=True, dense_size=32, width=TINY["width"],
                    hidden=TINY["hidden"], head="compact", num_classes=10, min_time_s=0.0, min_iters=2,
                    warmup_time_s=0.0, export_cache=tmp_path / "cache")
    assert [r.status for r in run.results] == ["ok", "ok"]
    assert all(r.image_size == 80 and "dense form, equal to the model at 32" in r.notes for r in run.results)
    small = benchmark(None, models=["vgg11"], backends=["eager"], memory_formats=["contiguous"], batch_sizes=[1],
                      image_size=32, dense=True, dense_size=64, width=TINY["width"], min_time_s=0.0, min_iters=1,
                      warmup_time_s=0.0, export_cache=tmp_path / "cache")
    assert small.results[0].status == "unsupported" and "at least 64" in small.results[0].reason
