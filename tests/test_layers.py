"""The per-stage error profile: stages and prefixes, the metrics, and a planted fault found at its stage by
bisection and by measuring every stage, for a module backend and for an artifact backend."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from tests.conftest import TINY, TINY_IMAGE
from vggbench.backends import registry
from vggbench.backends.registry import Backend
from vggbench.backends.runner import TorchRunner, place
from vggbench.core.errors import CheckFailed, ConfigError
from vggbench.parity.checked import export
from vggbench.parity.layers import profile_layers, stage_error
from vggbench.parity.metrics import tolerance_for
from vggbench.zoo.stages import VGGPrefix, find_stage, prefix, stages, weight_layers
from vggbench.zoo.weights import load_model

FAULTY_LAYER = "features.6"  # vgg11's conv3, the first conv of block3


def test_stages_of_vgg11_and_their_prefixes_compute_the_model_up_to_there():
    model = load_model("vgg11", **TINY).module
    names = [s.name for s in stages(model)]
    assert names == ["block1", "block2", "block3", "block4", "block5", "flatten", "fc1", "fc2", "fc3"]
    assert [s.name for s in stages(model, "layers")][:3] == ["conv1", "conv2", "conv3"]
    assert len(stages(model, "layers")) == 8 + 1 + 3
    assert find_stage(model, "block3").layers == ("conv3", "conv4")
    assert weight_layers(model)["conv3"] == FAULTY_LAYER and weight_layers(model)["fc3"] == "classifier.6"
    x = torch.randn(2, 3, TINY_IMAGE, TINY_IMAGE)
    with torch.inference_mode():
        assert torch.equal(prefix(model, stages(model)[-1])(x), model(x))
        block2 = prefix(model, find_stage(model, "block2"))(x)
        assert torch.equal(block2, model.features[:6](x)) and block2.shape == (2, 8, 8, 8)
        fc1 = prefix(model, find_stage(model, "fc1"))(x)
        assert torch.equal(fc1, model.classifier[:2](torch.flatten(model.avgpool(model.features(x)), 1)))
    # the prefix shares the model's modules under the same names (so exports name its weights alike)
    cut = prefix(model, find_stage(model, "block3"))
    assert isinstance(cut, VGGPrefix) and cut.features[6] is model.features[6]
    assert set(cut.state_dict()) <= set(model.state_dict())
    with pytest.raises(ConfigError, match="this model's stages are block1, block2"):
        find_stage(model, "block9")


def test_stage_error_measures_and_judges_against_the_budget():
    stage = stages(load_model("vgg11", **TINY).module)[0]
    ref = torch.rand(4, 8, 2, 2) + 0.5
    same = stage_error(stage, ref, ref.clone(), tolerance_for("fp32"))
    assert same.within and same.max_abs == 0 and same.rel_error == 0 and same.min_cosine == pytest.approx(1)
    off = ref.clone()
    off[1, 3, 0, 0] += 0.3
    bad = stage_error(stage, ref, off, tolerance_for("fp32"))
    assert not bad.within and bad.max_abs == pytest.approx(0.3, rel=1e-6)
    assert bad.rel_error == pytest.approx(0.3 / ref.double().norm().item(), rel=1e-6)
    assert "exceeds atol" in bad.reason
    small = ref.clone()
    small[1, 3, 0, 0] += 0.01  # 1e-3 of the range: over fp32's budget, within bf16's wider one
    assert not stage_error(stage, ref, small, tolerance_for("fp32")).within
    assert stage_error(stage, ref, small, tolerance_for("bf16")).within
    dead = torch.zeros(2, 5)  # an image whose reference is all zeros has no cosine: left out, not 0
    assert stage_error(stage, dead, dead, tolerance_for("fp32")).min_cosine == 1.0


def _corrupting(module: torch.nn.Module) -> torch.nn.Module:
    """`module` with FAULTY_LAYER's output scaled by 1.5 (its weight and bias), if it has that layer (a prefix
    may not)."""
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name in (f"{FAULTY_LAYER}.weight", f"{FAULTY_LAYER}.bias"):
            if name in params:
                params[name].mul_(1.5)
    return module


@pytest.fixture
def faulty_backends(monkeypatch):
    """Two backends registered for the test that get conv3 wrong: one runs the module, one a torchscript
    artifact (its runtime, not the file, is faulty: every prefix export goes through it)."""
    registry.backend_names()  # the built-in ones first

    def module_factory(module, target, options=None):
        import copy

        return TorchRunner(_corrupting(copy.deepcopy(place(module, target))), target)

    def artifact_factory(path, target, options=None, artifact_precision="fp32"):
        return TorchRunner(_corrupting(torch.jit.load(str(path))), target)

    for backend in (Backend("faulty", None, ("cpu",), ("fp32",), ("contiguous",), module_factory),
                    Backend("faulty-ts", "torchscript", ("cpu",), ("fp32",), ("contiguous",), artifact_factory)):
        monkeypatch.setitem(registry._BACKENDS, backend.name, backend)


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("layers") / "vgg11"
    model = load_model("vgg11", seed=0, **TINY)
    export(model, out, image_size=TINY_IMAGE, formats=["torchscript"], verify=False)
    return out, model


@pytest.mark.parametrize("all_stages", [False, True], ids=["bisect", "all-stages"])
def test_a_planted_fault_is_found_at_its_stage(tiny_export, faulty_backends, all_stages):
    out, model = tiny_export
    report = profile_layers(out, backends=["faulty"], precisions=["fp32"], all_stages=all_stages, reference=model,
                            photos=False, batch_sizes=[1, 2])
    (profile,) = report.profiles
    assert profile.first_exceeding == "block3"
    measured = [r.stage for r in profile.rows]
    if all_stages:
        assert measured == [s.name for s in stages(model.module)]
        assert [r.within for r in profile.rows] == [True, True] + [False] * 7
        assert profile.rows[2].growth is None or profile.rows[2].growth > 1e3  # from (near) zero to 1e-1
    else:
        # the whole model, then a bisection of the 9 stages: about log2(9) prefixes, not 8
        assert measured[-1] == "fc3" and "block3" in measured and "block2" in measured
        assert len(measured) <= 5 and profile.builds == len(measured) - 1
    assert profile.rows[measured.index("block3")].rel_error > 0.1
    with pytest.raises(CheckFailed, match="faulty cpu fp32 contiguous: error exceeds the fp32 budget from stage block3"):
        report.check()


@pytest.mark.slow
@pytest.mark.parametrize("all_stages", [False, True], ids=["bisect", "all-stages"])
def test_a_planted_fault_in_an_artifact_runtime_is_found_at_its_stage(tiny_export, faulty_backends, all_stages,
                                                                       tmp_path):
    out, model = tiny_export
    report = profile_layers(out, backends=["faulty-ts"], precisions=["fp32"], all_stages=all_stages,
                            reference=model, cache_dir=tmp_path)
    (profile,) = report.profiles
    assert profile.first_exceeding == "block3"
    # prefixes are torchscript exports made with the folder's settings, kept in the cache folder
    made = sorted(p.name.split("-")[0] for p in tmp_path.iterdir())
    assert made == sorted(r.stage for r in profile.rows if r.stage != "fc3")
    manifest = json.loads(next(tmp_path.glob("block3-*/manifest.json")).read_text())
    assert manifest["model"]["stage"]["name"] == "block3" and manifest["output"]["shape"] == ["batch", 16, 4, 4]
    assert manifest["artifacts"]["torchscript"]["mode"] == "trace"
    again = profile_layers(out, backends=["faulty-ts"], precisions=["fp32"], all_stages=all_stages,
                           reference=model, cache_dir=tmp_path)
    assert again.profiles[0].builds == 0 and again.profiles[0].first_exceeding == "block3"


def test_a_healthy_backend_is_within_budget_at_every_stage(tiny_export):
    out, model = tiny_export
    report = profile_layers(out, backends=["eager"], precisions=["bf16"], all_stages=True, reference=model,
                            photos=False, batch_sizes=[2])
    (profile,) = report.profiles
    assert profile.first_exceeding is None and len(profile.rows) == 9
    assert all(0 < r.rel_error < 0.05 for r in profile.rows)  # bf16: about 3 significant digits
    report.check()


@pytest.mark.slow  # matplotlib's import and first figure: seconds
def test_verify_layers_cli_prints_the_table_and_writes_json_and_plot(tiny_export, faulty_backends, tmp_path):
    from vggbench.cli import main

    out, _ = tiny_export
    result = CliRunner().invoke(main, ["verify", str(out), "--layers", "--backends", "faulty", "--no-photos",
                                       "--batch-sizes", "2", "--out", str(tmp_path / "p.json"),
                                       "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 1, result.output
    assert "first stage over budget: block3" in result.output and "EXCEEDS (first)" in result.output
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["profiles"][0]["first_exceeding"] == "block3" and saved["settings"]["layers"] is True
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    from vggbench.bench.db import Database

    with Database() as database:  # recorded too, though it failed: the stages it measured
        (recorded,) = database.layer_profiles([saved["model"]])
    assert [r["stage"] for r in recorded["rows"]] == [r["stage"] for r in saved["profiles"][0]["rows"]]
    usage = CliRunner().invoke(main, ["verify", str(out), "--all-stages"])
    assert usage.exit_code == 2 and "add --layers" in usage.output
