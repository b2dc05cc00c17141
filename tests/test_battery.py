"""Faults and hostile input (issue 16's battery): each test failed before its fix. A case that cannot run is
a row, never a crash that loses the rows already measured."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

import vggbench
from tests.conftest import TINY, TINY_IMAGE
from vggbench.core.errors import UnsupportedError, WeightsError
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
    with torch.no_grad():
        model.module.classifier[6].weight.fill_(math.nan)
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
            "with atomic_dir(sys.argv[1], force=True) as tmp:\n"
            "    (tmp / 'model.onnx').write_text('half')\n    print('writing', flush=True)\n    time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdout.readline().strip() == "writing"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    stale = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(stale) == 1 and (target / "model.onnx").read_text() == "old"
    with atomic_dir(target, force=True) as tmp:
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
    with fileio.atomic_dir(b, force=True) as tmp:
        (tmp / "f").write_text("c")
    assert renames == [] and (b / "f").read_text() == "c"
