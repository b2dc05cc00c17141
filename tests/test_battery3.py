"""Issue 25's hostile battery, third round: the doors added after it (tune, deploy and its run.py, the results
database, report --html/--prices, fleet, data preview). One test per class that failed before its fix: security
(code run when a file is read), lost (a user's file changed or replaced), hang, and crash (a traceback or a deep
error instead of one line naming what is wrong)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import vggbench
from tests.conftest import TINY, TINY_IMAGE
from tests.test_battery2_security import _pt2_pickled_weight
from vggbench.bench import db as results_db
from vggbench.bench import deploy as deploy_module
from vggbench.bench.tune import TuneSettings, tune
from vggbench.cli import main
from vggbench.core import fileio
from vggbench.core.errors import VggbenchError
from vggbench.data.preview import preview
from vggbench.zoo.weights import load_model


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


# --- security: a deploy folder's run.py opens nothing that could run code ---------------------------------------

def _deploy_folder(tmp_path: Path) -> Path:
    """A pt2 deploy folder as `vggbench deploy` writes it (the artifact, references, config.json, run.py and the
    gate beside it), made by hand so that no run is needed."""
    export = tmp_path / "exp"
    vggbench.export(load_model("vgg11", **TINY), export, formats=["pt2"], image_size=TINY_IMAGE, verify=False)
    folder = tmp_path / "deployed"
    folder.mkdir()
    shutil.copyfile(export / "model.pt2", folder / "model.pt2")
    x = torch.randn(1, 3, TINY_IMAGE, TINY_IMAGE)
    module = torch.export.load(str(export / "model.pt2")).module()  # vggbench's own export: plain tensors
    np.save(folder / "input.npy", x.numpy(), allow_pickle=False)
    np.save(folder / "expected.npy", module(x).detach().numpy(), allow_pickle=False)
    config = {"kind": deploy_module.KIND, "runtime": "torch", "runtime_config": {"threads": 1,
                                                                                 "memory_format": "contiguous"},
              "artifact": {"file": "model.pt2", "files": [{"file": "model.pt2", "sha256": ""}]},
              "tolerance": {"rtol": 1e-3, "range_atol": 1e-3, "min_cosine": 0.999, "min_top1": None},
              "measured": {"images_per_s": 1.0}}
    (folder / "config.json").write_text(json.dumps(config))
    shutil.copyfile(deploy_module.SCRIPT, folder / "run.py")
    shutil.copyfile(deploy_module.GATE, folder / "safe_load.py")
    _reseal(folder)
    return folder


def _reseal(folder: Path) -> None:
    """What whoever swaps the artifact does next: write its sha256 into config.json (a digest is no signature)."""
    config = json.loads((folder / "config.json").read_text())
    for entry in config["artifact"]["files"]:
        entry["sha256"] = hashlib.sha256((folder / entry["file"]).read_bytes()).hexdigest()
    (folder / "config.json").write_text(json.dumps(config))


def _run_py(folder: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run([sys.executable, "-I", str(folder / "run.py"), "--time", "0", "--warmup-time", "0",
                           "--min-iters", "1"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_a_deploy_folder_whose_pt2_was_swapped_and_resealed_runs_nothing(tmp_path):
    folder = _deploy_folder(tmp_path)
    done = _run_py(folder, tmp_path)
    assert done.returncode == 0 and json.loads(done.stdout)["passed"], done.stdout + done.stderr
    marker = tmp_path / "code-ran"
    _pt2_pickled_weight(folder, marker)
    _reseal(folder)
    done = _run_py(folder, tmp_path)
    assert not marker.exists()  # before the gate: torch.export.load unpickled the weight and ran the payload
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert not result["passed"] and "is refused" in result["reason"] and "pickled" in result["reason"]


def test_a_db_name_planted_as_a_dangling_symlink_creates_nothing_where_it_points(tmp_path):
    planted = tmp_path / "results.db"
    planted.symlink_to(tmp_path / "elsewhere" / "victim")
    (tmp_path / "elsewhere").mkdir()
    assert "symbolic link to nothing" in one_error(cli("db", "check", "--db", planted))
    assert not (tmp_path / "elsewhere" / "victim").exists()  # before: SQLite made its database there


# --- lost: what the user made is never changed or replaced ---------------------------------------------------

def test_outputs_and_databases_of_the_users_own_are_left_as_they_were(tmp_path):
    # an SQLite file of the user's own named as --db: vggbench added its tables to it, even for `history`
    photos = tmp_path / "photos.db"
    with sqlite3.connect(photos) as c:
        c.execute("create table photos (name text)")
    before = photos.read_bytes()
    for args in (("history",), ("db", "check")):
        assert "did not make" in one_error(cli(*args, "--db", photos))
    assert photos.read_bytes() == before
    # history --out and data preview --out replaced a file that was there
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert "history writes only a new file" in one_error(cli("history", "--db", tmp_path / "r.db", "--out", notes))
    picture = tmp_path / "holiday.png"
    picture.write_bytes(b"\x89PNG not vggbench's")
    assert "no preview vggbench wrote" in one_error(cli("data", "preview", "--count", "2", "--out", picture))
    assert notes.read_text() == "mine" and picture.read_bytes() == b"\x89PNG not vggbench's"
    # a preview vggbench wrote is its own to redraw
    ours = tmp_path / "grid.png"
    for _ in range(2):
        assert cli("data", "preview", "--count", "2", "--out", ours).exit_code == 0


def test_an_interrupted_tune_writes_the_trials_that_finished(tmp_path, monkeypatch):
    from vggbench.bench import sweep

    real, calls = sweep.benchmark, []

    def interrupted_on_the_second_trial(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep, "benchmark", interrupted_on_the_second_trial)
    out = tmp_path / "tune.json"
    result = cli("tune", "vgg11", "--width", "0.0625", "--hidden", "32", "--image-size", "32", "--trials", "3",
                 "--backends", "onnxruntime", "--no-prune", "--min-time", "0", "--warmup-time", "0", "--min-iters",
                 "2", "--max-iters", "2", "--rounds", "1", "--no-db", "--export-cache", tmp_path / "cache",
                 "--out", out)
    assert result.exit_code == 130, result.output  # before: the search was lost, only the journal kept its rows
    data = json.loads(out.read_text())
    block = data["settings"]["tune"]
    assert len(data["results"]) == 1 and block["winner"]["row"] == 0 and "Ctrl-C after 1 trial" in block["stopped"]


# --- hang: a file that never ends ----------------------------------------------------------------------------

def test_a_fifo_named_as_the_price_table_is_one_line_not_a_wait(tmp_path):
    fifo = tmp_path / "prices.toml"
    os.mkfifo(fifo)
    found = {}
    thread = threading.Thread(target=lambda: found.setdefault("result", cli(
        "report", tmp_path / "none.json", "--machines", "--prices", fifo)), daemon=True)
    thread.start()
    thread.join(60)
    if thread.is_alive():  # unblock the reader so that the test process can end
        with open(fifo, "w"):
            pass
        thread.join(10)
        pytest.fail("report --prices waited on a fifo for a writer")
    assert "not a regular file" in one_error(found["result"])


# --- crash: one line that names what is wrong --------------------------------------------------------------------

def _results(tmp_path: Path, edit) -> Path:
    run = vggbench.benchmark(vggbench.Suite(models=["vgg11"], backends=["eager"], batch_sizes=[1],
                                            memory_formats=["contiguous"], image_size=TINY_IMAGE,
                                            min_time_s=0, warmup_time_s=0, warmup=0, min_iters=2, max_iters=2,
                                            rounds=1), **TINY, export_cache=tmp_path / "cache")
    data = run.to_dict()
    edit(data)
    path = tmp_path / f"results-{len(list(tmp_path.glob('results-*')))}.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("edit, args, message", [
    (lambda d: d["settings"].update(tune={"winner": {"row": 99}}), (), "names row 99"),
    (lambda d: d["settings"].update(tune={"winner": [1]}), (), "names row None"),
    (lambda d: d.update(settings=[1]), ("--row", "0"), "settings must be an object"),
    (lambda d: d.update(results=[]), ("--where", "backend=eager"), "--where takes key=value pairs"),
])
def test_deploy_of_a_hand_edited_results_file_is_one_line(tmp_path, edit, args, message):
    results = _results(tmp_path, edit)
    assert message in one_error(cli("deploy", results, tmp_path / "out", *args))
    assert not (tmp_path / "out").exists()


def test_the_new_public_functions_name_the_argument_they_wanted(tmp_path):
    cases = [
        (lambda: tune("vgg11", None), "tune: settings must be a TuneSettings"),
        (lambda: tune(123, TuneSettings()), "tune: model must be a model name"),
        (lambda: deploy_module.deploy(tmp_path / "r.json", 123), "deploy: out must be a path"),
        (lambda: deploy_module.deploy(tmp_path / "r.json", tmp_path / "o", row="1"), "deploy: row must be"),
        (lambda: deploy_module.deploy(tmp_path / "r.json", tmp_path / "o", where=5), "deploy: where must be"),
        (lambda: preview(None), "preview: settings must be a PreviewSettings"),
        (lambda: results_db.Database(123), "Database: db must be"),
        (lambda: results_db.import_files(str(tmp_path / "r.json")), "import_files: paths must be a list"),
        (lambda: results_db.record(None, db=tmp_path / "r.db"), "record: run_or_results must be"),
    ]
    for call, message in cases:
        with pytest.raises(TypeError, match=message):
            call()
    assert not (tmp_path / "r.db").exists() and not Path("123").exists()


def test_a_database_url_no_dialect_reads_is_one_line_before_any_work(tmp_path):
    for args in (("history",), ("db", "check"), ("run", "--models", "vgg11", "--out", tmp_path / "r.json")):
        assert "not a path or an SQLAlchemy URL" in one_error(cli(*args, "--db", "bogus://x"))
    assert not (tmp_path / "r.json").exists()


def test_a_copy_into_a_folder_on_a_full_disk_names_the_file_not_a_traceback(tmp_path, monkeypatch):
    source = tmp_path / "model.pt2"
    source.write_bytes(b"weights")

    def full(src, dst, *args, **kwargs):  # what shutil.copyfile raises: the source first, the written file second
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG), str(src), None, str(dst))

    monkeypatch.setattr(shutil, "copyfile", full)
    with pytest.raises(VggbenchError) as caught, fileio.atomic_dir(tmp_path / "deployed") as tmp:
        shutil.copyfile(source, tmp / "model.pt2")
    assert str(tmp_path / "deployed" / "model.pt2") in str(caught.value)
    assert not (tmp_path / "deployed").exists() and [p.name for p in tmp_path.iterdir()] == ["model.pt2"]
