"""Faults and hostile input (issue 16's battery): each test failed before its fix. A case that cannot run is
a row, never a crash that loses the rows already measured."""

from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vggbench
from tests.conftest import TINY, TINY_IMAGE
from vggbench.core.errors import ConfigError, UnsupportedError, WeightsError
from vggbench.zoo.weights import load_model, save_weights

FAST = dict(warmup=0, warmup_time_s=0.0, min_time_s=0.0, min_iters=2, max_iters=2)
SUITE = dict(models=["vgg11"], image_size=TINY_IMAGE, backends=["eager"], memory_formats=["contiguous"], **FAST)


def bench(tmp_path, **kwargs):
    return vggbench.benchmark(export_cache=tmp_path / "cache", progress=False, **{**SUITE, **kwargs})


def test_weights_that_fit_one_model_only_keep_the_other_models_rows(tmp_path):
    trained = save_weights(load_model("vgg11", num_classes=10, **TINY), tmp_path / "vgg11.pt")
    result = bench(tmp_path, models=["vgg11", "vgg13"], weights=str(trained), batch_sizes=[1], width=None,
                   hidden=None)
    rows = {r.model: r for r in result.results}
    assert rows["vgg11"].status == "ok"
    assert rows["vgg13"].status == "error" and rows["vgg13"].reason.startswith("model not loaded: ")
    assert "vgg11" in rows["vgg13"].reason  # it says what the file holds


def test_a_missing_weights_file_fails_before_any_work(tmp_path):
    with pytest.raises(WeightsError, match="weights file .*missing.pt does not exist"):
        bench(tmp_path, weights=str(tmp_path / "missing.pt"), batch_sizes=[1], **TINY)


def test_a_batch_that_cannot_be_allocated_is_a_row(tmp_path):
    result = bench(tmp_path, batch_sizes=[1, 99_999_999_999], **TINY)
    small, huge = result.results
    assert small.status == "ok" and huge.status in ("oom", "error") and huge.reason


def test_a_non_finite_reference_is_a_parity_failure_not_ok(tmp_path):
    model = load_model("vgg11", num_classes=10, **TINY)
    with torch.no_grad():  # finite weights (a file with NaN is refused at load) whose logits overflow to Inf
        for layer in (model.module.classifier[0], model.module.classifier[3], model.module.classifier[6]):
            layer.weight.fill_(1e30)
    nan = save_weights(model, tmp_path / "nan.pt")
    result = bench(tmp_path, weights=str(nan), batch_sizes=[1], width=None, hidden=None)
    (row,) = result.results
    assert row.status == "parity_failed" and "NaN/Inf" in row.reason


def test_verify_refuses_an_unknown_precision_in_a_list(tmp_path):
    model = load_model("vgg11", **TINY)
    vggbench.export(model, tmp_path / "e", formats=["onnx"], image_size=TINY_IMAGE)
    with pytest.raises(UnsupportedError, match="unknown precision 'bf61'"):
        vggbench.verify(tmp_path / "e", precisions=["fp32", "bf61"])


def test_a_killed_export_leaves_the_old_folder_and_its_temp_folder_is_removed_next_time(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from vggbench.core.fileio import atomic_dir

    target = tmp_path / "export"
    target.mkdir()
    (target / "model.onnx").write_text("old")
    code = ("import sys, time\nfrom vggbench.core.fileio import atomic_dir\n"
            "with atomic_dir(sys.argv[1], force=True, not_ours=lambda p: None) as tmp:\n"
            "    (tmp / 'model.onnx').write_text('half')\n    print('writing', flush=True)\n    time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdout.readline().strip() == "writing"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    stale = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(stale) == 1 and (target / "model.onnx").read_text() == "old"
    with atomic_dir(target, force=True, not_ours=lambda p: None) as tmp:  # the caller knows it made it
        (tmp / "model.onnx").write_text("new")
    assert (target / "model.onnx").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no stale or swapped-out folder left


@pytest.mark.skipif(sys.platform != "linux", reason="renameat2 is Linux's")
def test_replacing_a_folder_swaps_it_in_one_step(tmp_path, monkeypatch):
    from vggbench.core import fileio

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f").write_text("a")
    (b / "f").write_text("b")
    assert fileio._exchange(a, b) and (a / "f").read_text() == "b" and (b / "f").read_text() == "a"
    # the replace goes through the swap: the name is never missing
    renames = []
    monkeypatch.setattr(fileio.os, "replace", lambda *args: renames.append(args))
    with fileio.atomic_dir(b, force=True, not_ours=lambda p: None) as tmp:
        (tmp / "f").write_text("c")
    assert renames == [] and (b / "f").read_text() == "c"


# --- any bytes as weights: one line, never a traceback ------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("w")
    model = load_model("vgg11", **TINY)
    return (save_weights(model, folder / "good.pt").read_bytes(),
            save_weights(model, folder / "good.safetensors").read_bytes())


def _load_bytes(tmp_path_factory, data: bytes, suffix: str) -> None:
    path = tmp_path_factory.mktemp("bytes") / f"w{suffix}"
    path.write_bytes(data)
    load_model("vgg11", path)


@given(data=st.binary(max_size=600), suffix=st.sampled_from([".pt", ".pth", ".safetensors"]))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_bytes_are_refused_in_one_line(tmp_path_factory, data, suffix):
    with pytest.raises(WeightsError):
        _load_bytes(tmp_path_factory, data, suffix)


@given(text=st.text(max_size=300))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_text_files_are_refused_in_one_line(tmp_path_factory, text):
    with pytest.raises(WeightsError):
        _load_bytes(tmp_path_factory, text.encode(), ".pt")


@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)), min_size=1, max_size=4),
       cut=st.floats(0, 1), kind=st.sampled_from(["flip", "truncate"]), which=st.sampled_from([0, 1]))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_damaged_checkpoints_load_or_are_refused_in_one_line(tmp_path_factory, checkpoints, flips, cut, kind, which):
    data = bytearray(checkpoints[which])
    if kind == "flip":
        for where, bit in flips:
            data[int(where * len(data))] ^= 1 << bit
    else:
        data = data[:int(cut * len(data))]
    # a flipped bit inside a weight's mantissa still loads: that is fine, a traceback is not
    with contextlib.suppress(WeightsError, ConfigError):
        _load_bytes(tmp_path_factory, bytes(data), [".pt", ".safetensors"][which])


@pytest.mark.parametrize("meta,message", [
    ([1, 2], "unreadable vggbench metadata \\(a list"),
    (5, "unreadable vggbench metadata \\(a int"),
    ({"mean": 5}, "'mean' must be three finite numbers"),
    ({"std": [0.2, 0.0, 0.2]}, "'std' must be three finite numbers above 0"),
    ({"image_size": "big"}, "'image_size' must be a positive integer"),
    ({"options": [1]}, "'options' must be an object"),
])
def test_crafted_metadata_is_refused_in_one_line(tmp_path, meta, message):
    import json

    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in load_model("vgg11", **TINY).module.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"), metadata={"vggbench": json.dumps(meta)})
    torch.save({"vggbench": meta, "model_state_dict": state}, tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pt"):
        with pytest.raises(WeightsError, match=message):
            load_model("vgg11", tmp_path / name)


@pytest.mark.parametrize("change,message", [
    (lambda s: s.__setitem__("features.0.weight", s["features.0.weight"].fill_(math.inf)), "features.0.weight holds NaN"),
    (lambda s: s.__setitem__("features.0.bias", s["features.0.bias"].long()), "features.0.bias is int64"),
    (lambda s: s.__setitem__("features.0.bias", s["features.0.bias"].to(torch.complex64)), "features.0.bias is complex64"),
])
def test_non_finite_integer_and_complex_tensors_are_named(tmp_path, change, message):
    state = dict(load_model("vgg11", **TINY).module.state_dict())
    change(state)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(WeightsError, match=message):
        load_model("vgg11", tmp_path / "w.pt")


def test_a_one_dimensional_classifier_weight_is_no_vgg(tmp_path):
    state = dict(load_model("vgg11", **TINY).module.state_dict())
    state["classifier.0.weight"] = state["classifier.0.weight"].flatten()
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(WeightsError, match="does not hold a VGG state_dict"):
        load_model("vgg11", tmp_path / "w.pt")


def test_a_malicious_pickle_is_refused_naming_the_global_and_never_run(tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"model_state_dict": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError) as caught:
        load_model("vgg11", tmp_path / "evil.pt")
    message = str(caught.value)
    assert "refused to load" in message and "system" in message and "weights_only=False" not in message
    assert not (tmp_path / "pwned").exists()


# --- bad images, run folders ---------------------------------------------------------------------------------

def _photo_folder(root: Path, truncated: bool) -> Path:
    from PIL import Image

    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for j in range(4):
            Image.new("RGB", (40, 40), (60 * c, 20 * j, 200)).save(root / name / f"{j}.jpg")
    if truncated:
        bad = root / "cat" / "0.jpg"
        bad.write_bytes(bad.read_bytes()[:200])
    return root


@pytest.mark.slow  # a compile, a training or vggbench processes: seconds each
def test_a_truncated_image_is_one_line_naming_it_and_leaves_no_run_folder(tmp_path):
    from vggbench.core.errors import DataError
    from vggbench.training.loop import TrainConfig, train

    photos = _photo_folder(tmp_path / "photos", truncated=True)
    out = tmp_path / "run"
    config = TrainConfig(model="vgg11", data=f"folder:{photos}", val_fraction=0.25, epochs=1, batch_size=8,
                         out=str(out), progress=False, **TINY)
    with pytest.raises(DataError, match=r"cannot read image .*cat/0\.jpg"):
        train(config)
    assert not out.exists()  # no folder that holds only config.json


def test_a_run_folder_is_written_by_one_process_at_a_time(tmp_path):
    import os
    import subprocess
    import sys

    from vggbench.core.errors import VggbenchError
    from vggbench.core.fileio import exclusive

    folder = tmp_path / "runs" / "shared"
    code = ("import sys, time\nfrom vggbench.core.fileio import exclusive\n"
            "with exclusive(sys.argv[1]):\n    print('holding', flush=True)\n    time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    other = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert other.stdout.readline().strip() == "holding"
        with pytest.raises(VggbenchError, match=f"in use by another vggbench process \\(pid {other.pid}\\)"), \
                exclusive(folder):
            pass
    finally:
        other.kill()
        other.wait(timeout=30)
    with exclusive(folder):  # released when its holder died
        pass


@pytest.mark.slow  # a compile, a training or vggbench processes: seconds each
def test_two_trainings_on_one_out_folder_do_not_mix(tmp_path):
    from vggbench.core.errors import VggbenchError
    from vggbench.core.fileio import exclusive
    from vggbench.training.loop import TrainConfig, train

    out = tmp_path / "shared"
    config = TrainConfig(model="vgg11", data="synthetic", epochs=1, batch_size=64, out=str(out), progress=False,
                         **TINY)
    with exclusive(out), pytest.raises(VggbenchError, match="in use by another vggbench process"):
        train(config)  # the lock is per process: flock refuses a second open file description too


# --- the manifest is checked like the artifacts ---------------------------------------------------------------

@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("m") / "e"
    vggbench.export(load_model("vgg11", **TINY), out, formats=["onnx"], image_size=TINY_IMAGE)
    return out


def _edited(onnx_export, tmp_path, edit) -> Path:
    import json
    import shutil

    out = tmp_path / "edited"
    shutil.copytree(onnx_export, out)
    manifest = json.loads((out / "manifest.json").read_text())
    edit(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.mark.parametrize("edit,message", [
    (lambda m: m["input"].update(mean=[0.5, 0.5, 0.5]), "was edited after export"),
    (lambda m: m["input"].update(std=[1.0, 1.0, 1.0]), "was edited after export"),
    (lambda m: m["output"].update(shape=["batch", 7]), "was edited after export"),
    (lambda m: m["artifacts"]["onnx"].pop("files"), "lacks artifacts.onnx.files"),
    (lambda m: m.pop("weights"), "lacks weights"),
    (lambda m: m["input"].update(image_size="32"), "input.image_size must be a int"),
    (lambda m: m["artifacts"]["onnx"]["files"][0].update(file="/etc/passwd"), "is not a file name inside"),
    (lambda m: m["artifacts"]["onnx"]["files"][0].update(file="../e/model.onnx"), "is not a file name inside"),
])
def test_an_edited_or_incomplete_manifest_is_refused_in_one_line(onnx_export, tmp_path, edit, message):
    from vggbench.core.errors import ArtifactError

    with pytest.raises(ArtifactError, match=message):
        vggbench.verify(_edited(onnx_export, tmp_path, edit))


def test_a_schema_1_manifest_is_still_read(onnx_export, tmp_path):
    def to_v1(m):
        m["schema_version"] = 1
        m.pop("digest")
    assert vggbench.verify(_edited(onnx_export, tmp_path, to_v1), photos=False, batch_sizes=[1]).passed
