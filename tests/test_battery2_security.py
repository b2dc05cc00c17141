"""Issue 25's hostile battery, security (code runs, or a file outside the given paths is overwritten): each test
failed on 10b0ddf. Artifacts are tampered with the way an attacker would: the payload edited, then the manifest's
sha256 and digest recomputed with vggbench's own functions (a digest is not a signature)."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import vggbench
import vggbench.backends
import vggbench.cli
from tests.conftest import TINY, TINY_IMAGE, slow_except
from vggbench.core.errors import ArtifactError, VggbenchError
from vggbench.core.fileio import exclusive, remove_stale_temp_dirs, sha256_file
from vggbench.exporters.manifest import read_manifest, write_manifest
from vggbench.zoo.weights import load_model


class Payload:
    """Unpickling it writes `marker`: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    out = tmp_path_factory.mktemp("x") / "exp"
    vggbench.export(load_model("vgg11", **TINY), out, formats=["torchscript", "onnx", "pt2"], image_size=TINY_IMAGE,
                    verify=False)
    return out


def _copy(export: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "exp"
    shutil.copytree(export, folder)
    return folder


def _rewrite_zip(path: Path, edit) -> None:
    """Rewrite the archive with edit(name, bytes) -> bytes | None (None drops the entry)."""
    with zipfile.ZipFile(path) as z:
        entries = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries:
            data = edit(name, data)
            if data is not None:
                z.writestr(name, data)
    tmp.replace(path)


def _reseal(folder: Path) -> None:
    """What an attacker does after editing a file: recompute its manifest entry and the manifest's digest."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["artifacts"].values():
        for f in entry["files"]:
            f["bytes"], f["sha256"] = (folder / f["file"]).stat().st_size, sha256_file(folder / f["file"])
    write_manifest(folder, manifest)
    read_manifest(folder)  # it passes every check the manifest makes


def _verify(folder: Path, backend: str):
    return CliRunner().invoke(vggbench.cli.main, ["verify", str(folder), "--backends", backend])


def _refused_in_one_line(result, marker: Path | None = None) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "is refused: " in lines[0], result.output
    assert "Traceback" not in result.output
    if marker is not None:
        assert not marker.exists()


# --- 1. pt2: nothing torch.export.load would unpickle or evaluate ----------------------------------------------

def _pt2_pickled_weight(folder: Path, marker: Path) -> None:
    def edit(name, data):
        if name.endswith("model_weights_config.json"):
            config = json.loads(data)
            config["config"]["features.0.weight"]["use_pickle"] = True
            return json.dumps(config).encode()
        if name.endswith("data/weights/weight_0"):
            return pickle.dumps(Payload(marker))
        return data
    _rewrite_zip(folder / "model.pt2", edit)


def test_a_pt2_with_a_pickled_weight_is_refused_by_verify_and_runs_nothing(export, tmp_path):
    folder, marker = _copy(export, tmp_path), tmp_path / "pwned"
    _pt2_pickled_weight(folder, marker)
    _reseal(folder)
    result = _verify(folder, "pt2")
    _refused_in_one_line(result, marker)
    assert "marks 'features.0.weight' as pickled" in result.output
    with pytest.raises(ArtifactError, match="is refused"):  # every loader goes through make_runner
        vggbench.backends.load_runner(folder, "pt2")
    assert not marker.exists()


@pytest.mark.parametrize("attack", slow_except(["sample_inputs", "guards_code", "sympy", "target", "aoti"], "guards_code"))
def test_every_other_way_a_pt2_could_run_code_is_refused(export, tmp_path, attack):
    folder, marker = _copy(export, tmp_path), tmp_path / "pwned"

    def model_json(edit_model):
        def edit(name, data):
            if name.endswith("models/model.json"):
                model = json.loads(data)
                edit_model(model)
                return json.dumps(model).encode()
            return data
        return edit

    def sympy(model):  # torch parses symbolic sizes with sympy.sympify: an eval
        model["range_constraints"] = {}
        text = json.dumps(model).replace("Symbol('s77', positive=True, integer=True)",
                                         f"__import__('os').system('touch {marker}')")
        model.clear()
        model.update(json.loads(text))

    def target(model):  # resolved by getattr from torch, then called by the graph
        model["graph_module"]["graph"]["nodes"][0]["target"] = "torch.serialization.os.system"

    edits = {
        # torch retries a sample input that weights_only refuses with weights_only=False
        "sample_inputs": lambda name, data: pickle.dumps(Payload(marker)) if name.endswith("sample_inputs/model.pt")
        else data,
        # `.module()` execs guards_code
        "guards_code": model_json(lambda m: m.update(guards_code=[f"__import__('os').system('touch {marker}')"])),
        "sympy": model_json(sympy),
        "target": model_json(target),
        "aoti": None,
    }
    if attack == "aoti":  # an AOTInductor library is a shared object torch would dlopen
        with zipfile.ZipFile(folder / "model.pt2", "a") as z:
            z.writestr(f"{z.namelist()[0].split('/')[0]}/data/aotinductor/model/model.so", b"\x7fELF")
    else:
        _rewrite_zip(folder / "model.pt2", edits[attack])
    _reseal(folder)
    _refused_in_one_line(_verify(folder, "pt2"), marker)


def test_the_artifacts_that_vggbench_writes_are_not_refused(export):
    for backend in ("pt2", "torchscript", "onnxruntime"):
        runner = vggbench.backends.load_runner(export, backend)
        assert runner(torch.zeros(1, 3, TINY_IMAGE, TINY_IMAGE)).shape == (1, 1000)


# --- 2. TorchScript: code that calls only aten/prim/quantized operators, none of them file I/O ---------------

def _torchscript_calls(folder: Path, statement) -> None:
    """Insert statement(name of the tensor flattened) before the model's flatten. The code is in
    code/__torch__/vggbench/zoo/models.py, or in models/___torch_mangle_N.py when the process scripted another VGG
    class first (tests run in another order under xdist)."""
    edited = []

    def edit(name, data):
        if "code/__torch__/vggbench/zoo/models" in name and name.endswith(".py"):
            text = data.decode()
            new = re.sub(r"^(    )(input = torch\.flatten\((\w+), 1\))$",
                         lambda m: f"{m[1]}{statement(m[3])}\n{m[1]}{m[2]}", text, flags=re.M)
            if new != text:
                edited.append(name)
            return new.encode()
        return data
    _rewrite_zip(folder / "model.ts", edit)
    assert edited, "the test's edit found no flatten to insert before"


def test_a_torchscript_that_writes_a_file_is_refused_and_writes_nothing(export, tmp_path):
    folder, victim = _copy(export, tmp_path), tmp_path / "victim.txt"
    victim.write_text("keep me")
    _torchscript_calls(folder, lambda x: f'torch.save({x}, "{victim}")')
    _reseal(folder)
    result = _verify(folder, "torchscript")
    _refused_in_one_line(result)
    assert "calls torch.save" in result.output
    assert victim.read_text() == "keep me"


def test_a_torchscript_with_an_entry_vggbench_never_writes_is_refused(export, tmp_path):
    folder = _copy(export, tmp_path)
    with zipfile.ZipFile(folder / "model.ts", "a") as z:
        z.writestr(f"{z.namelist()[0].split('/')[0]}/extra/payload.pkl", pickle.dumps(Payload(tmp_path / "m")))
    _reseal(folder)
    _refused_in_one_line(_verify(folder, "torchscript"))


# --- 3. ONNX external data stays inside the export folder ----------------------------------------------------

@pytest.mark.parametrize("where", slow_except(["dotdot", "absolute", "symlink"], "dotdot"))
def test_onnx_external_data_outside_the_export_folder_is_refused(export, tmp_path, where):
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data

    folder = _copy(export, tmp_path)
    model = onnx.load(str(folder / "model.onnx"))
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    onnx.save_model(model, str(folder / "model.onnx"))  # writes weights.bin beside it
    outside = tmp_path / "outside.bin"
    shutil.move(folder / "weights.bin", outside)
    manifest = json.loads((folder / "manifest.json").read_text())
    files = manifest["artifacts"]["onnx"]["files"]
    if where == "symlink":  # listed and resealed, but a link to a file outside
        (folder / "weights.bin").symlink_to(outside)
        files.append({"file": "weights.bin", "bytes": 0, "sha256": ""})
    else:
        location = "../outside.bin" if where == "dotdot" else str(outside)
        for tensor in model.graph.initializer:
            for e in tensor.external_data:
                if e.key == "location":
                    e.value = location
        (folder / "model.onnx").write_bytes(model.SerializeToString())
    (folder / "manifest.json").write_text(json.dumps(manifest))
    _reseal(folder)
    _refused_in_one_line(_verify(folder, "onnxruntime"))


# --- 4. locks never follow a planted symlink, never truncate a file they did not make -------------------------

EXPORT_ARGS = ["export", "vgg11", "--width", "0.0625", "--hidden", "32", "--image-size", "32", "--format", "onnx"]


def test_a_lock_name_planted_as_a_symlink_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / ".exp.lock").symlink_to(victim)
    result = CliRunner().invoke(vggbench.cli.main, [*EXPORT_ARGS, "--out", str(tmp_path / "exp")])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"error: {tmp_path}/.exp.lock is not a lock file vggbench made (Too many levels of symbolic links); "
        f"remove it if it is not yours"]
    assert victim.read_text() == "precious" and not (tmp_path / "exp").exists()


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_lock_name_that_is_not_a_regular_file_is_refused(tmp_path, kind):
    lock = tmp_path / ".run.lock"
    os.mkfifo(lock) if kind == "fifo" else lock.mkdir()
    with pytest.raises(VggbenchError, match=r"\.run\.lock is not a (regular file|lock file vggbench made)"), \
            exclusive(tmp_path / "run"):
        pass


def test_a_stale_lock_file_is_never_written_into(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    os.link(victim, tmp_path / ".run.lock")  # a hard link: a regular file, but someone else's
    with exclusive(tmp_path / "run"):
        assert (tmp_path / ".run.lock").read_text() == str(os.getpid())
    assert victim.read_text() == "precious" and not (tmp_path / ".run.lock").exists()


def test_two_paths_to_one_folder_share_one_lock(tmp_path):
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(tmp_path / "runs" / "r1")  # `train --resume alias` and `--resume runs/r1`
    with exclusive(tmp_path / "runs" / "r1"), \
            pytest.raises(VggbenchError, match="is in use by another vggbench process"), exclusive(tmp_path / "alias"):
        pass


def test_stale_temp_folder_cleanup_never_follows_a_symlink(tmp_path):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "data").write_text("precious")
    (tmp_path / ".exp.999999999.abcdefgh.tmp").symlink_to(keep)  # named like a dead writer's temp folder
    assert remove_stale_temp_dirs(tmp_path / "exp") == []
    assert (keep / "data").read_text() == "precious"
    assert (tmp_path / ".exp.999999999.abcdefgh.tmp").is_symlink()
