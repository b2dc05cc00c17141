"""The int8 mixed-precision plan: the search over ranked layers, the layer names it takes, and (slow) the whole
plan on a model with a planted quantization fault: an outlier channel between conv3 and conv4."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import TINY_IMAGE
from vggbench.core.errors import ConfigError
from vggbench.exporters.quantize import QuantConfig
from vggbench.exporters.settings import ExportSettings
from vggbench.parity.checked import export
from vggbench.parity.plan import candidates, search
from vggbench.zoo.weights import load_model


def _counting(needed: set[str]):
    """A `reaches` that is true once every layer of `needed` is kept, and the plans it was asked about."""
    asked: list[list[str]] = []

    def reaches(keep: list[str]) -> bool:
        asked.append(keep)
        return needed <= set(keep)
    return reaches, asked


def test_search_finds_the_fewest_layers_in_few_trials():
    ranked = [f"conv{i}" for i in range(1, 14)] + ["fc1", "fc2", "fc3"]
    reaches, asked = _counting(set())
    assert search(ranked, reaches) == [] and asked == [[]]
    reaches, asked = _counting({"conv1"})
    assert search(ranked, reaches) == ["conv1"] and len(asked) == 2
    # two layers far down the ranking: doubling, bisection, then the layers it does not need are dropped
    reaches, asked = _counting({"conv2", "conv9"})
    assert search(ranked, reaches) == ["conv2", "conv9"]
    assert len(asked) <= 2 + 5 + 4 + 9
    reaches, asked = _counting({"nonexistent"})
    assert search(ranked, reaches) is None


def test_candidates_follow_each_layer_by_the_one_before_it():
    ranking = [{"layer": "conv4", "added_error": 0.9}, {"layer": "conv1", "added_error": 0.2},
               {"layer": "fc1", "added_error": 0.1}, {"layer": "conv3", "added_error": -0.1}]
    assert candidates(ranking, ["conv1", "conv2", "conv3", "conv4", "fc1"]) == ["conv4", "conv3", "conv1", "fc1", "conv2"]


def test_keep_fp32_names_are_checked_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="add onnx-int8 to --formats"):
        ExportSettings(keep_fp32="conv1")
    with pytest.raises(ConfigError, match="conv0 is not a layer name"):
        ExportSettings(keep_fp32="conv1,conv0", formats=("onnx", "onnx-int8"))
    with pytest.raises(ConfigError, match="give auto alone"):
        ExportSettings(keep_fp32="auto,fc3", formats=("onnx", "onnx-int8"))
    assert ExportSettings(keep_fp32="conv1, fc3", formats=("onnx", "onnx-int8")).quant().keep_fp32 == ("conv1", "fc3")
    model = load_model("vgg11", width=1 / 16, hidden=32)
    with pytest.raises(ConfigError, match="conv9 is not a weight layer of this model; its layers are conv1, conv2"):
        export(model, tmp_path / "x", image_size=TINY_IMAGE, formats=["onnx", "onnx-int8"],
               quant=QuantConfig(keep_fp32=("conv9",)))
    assert not (tmp_path / "x").exists()


def planted_outlier(model):
    """Channel 0 of conv3 scaled by 1000 and conv4's weights on it by 1/1000: the same function in fp32, but
    the int8 activation range of conv3's output is then all that one channel's, and every other channel
    rounds to nothing."""
    convs = [m for m in model.module.features if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        convs[2].weight[0] *= 1000
        convs[2].bias[0] *= 1000
        convs[3].weight[:, 0] /= 1000
    return model


@pytest.mark.slow
def test_the_plan_keeps_the_planted_layers_in_fp32_and_export_applies_it(tmp_path, capsys):
    from vggbench.core.console import progress_lines
    from vggbench.exporters.manifest import read_manifest
    from vggbench.parity.plan import plan_int8
    from vggbench.parity.verify import verify

    # 10 classes: a random model's 4 photos keep their int8 top-1 (as in test_quantize) until the fault
    model = planted_outlier(load_model("vgg11", seed=0, width=1 / 8, hidden=64, num_classes=10))
    quant = QuantConfig(images=8, calibration="photos")
    out = tmp_path / "int8"
    export(model, out, image_size=TINY_IMAGE, formats=["onnx", "onnx-int8"], quant=quant, verify=False)
    assert not verify(out, backends=["onnxruntime"], precisions=["int8"], reference=model).passed
    capsys.readouterr()
    with progress_lines(True):
        plan = plan_int8(out, reference=model, data=None)
    lines = capsys.readouterr().err.splitlines()  # a line per step while the search runs, as the CLI shows them
    assert "int8 plan: trial 3, fp32 kept for conv3, conv4: top-1 agreement 100.00%" in "\n".join(lines)
    assert len([line for line in lines if "int8 plan: trial" in line]) == len(plan.trials)
    assert plan.ranking[0]["layer"] == "conv4"  # the profile points at the planted fault
    # none, conv4, conv4 with the layer before it, then conv3 alone (is conv4 needed?)
    assert [t.keep_fp32 for t in plan.trials] == [[], ["conv4"], ["conv3", "conv4"], ["conv3"]]
    assert plan.trials[0].keep_fp32 == [] and not plan.trials[0].reached
    assert plan.keep_fp32 == ["conv3", "conv4"]
    found = next(t for t in plan.trials if t.keep_fp32 == ["conv3", "conv4"])
    assert found.top1_agreement == 1.0 and found.min_cosine >= 0.99 and found.images_per_s > 0
    # fewest: neither layer alone reaches the target
    assert not any(t.reached for t in plan.trials if len(t.keep_fp32) < 2)
    assert [t.keep_fp32 for t in plan.trials if len(t.keep_fp32) == 1 and not t.reached]
    # the plan applied: an export that passes its own parity check, with the plan in the manifest
    fixed = tmp_path / "fixed"
    export(model, fixed, image_size=TINY_IMAGE, formats=["onnx", "onnx-int8"],
           quant=QuantConfig(images=8, calibration="photos", keep_fp32=("conv3", "conv4")))
    entry = read_manifest(fixed).artifacts["onnx-int8"]
    assert entry.quantization["keep_fp32"] == ["conv3", "conv4"]
    import onnx

    convs = [n for n in onnx.load(str(fixed / "model.int8.onnx")).graph.node if n.op_type == "Conv"]
    quantized = {n.input[1] for n in convs if "DequantizeLinear" in n.input[1] or "_DequantizeLinear" in n.input[1]}
    assert len(convs) == 8 and len(quantized) == 6
