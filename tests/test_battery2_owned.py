"""Issue 25's hostile battery, data lost or overwritten and green when it failed: each test failed on 10b0ddf."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import TINY, TINY_IMAGE
from vggbench.cli import main

TINY_CLI = ["--models", "vgg11", "--width", "0.0625", "--head", "compact", "--num-classes", "10", "--image-size",
            str(TINY_IMAGE), "--backends", "eager", "--memory-format", "contiguous", "--batch-sizes", "1"]
FAST_CLI = ["--min-time", "0", "--warmup-time", "0", "--warmup", "0"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error(result, code: int) -> str:
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


def _photo_folder(root: Path) -> Path:
    """Two classes of photos, one of them cut short: a run on it fails in its first epoch."""
    from PIL import Image

    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for j in range(4):
            Image.new("RGB", (40, 40), (60 * c, 20 * j, 200)).save(root / name / f"{j}.jpg")
    bad = root / "cat" / "0.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    return root


def _train(tmp_path, out):
    photos = _photo_folder(tmp_path / "photos")
    return cli("train", "vgg11", "--data", f"folder:{photos}", "--val-fraction", "0.25", "--epochs", "1",
               "--batch-size", "8", "--out", out, "--no-progress", "--width", "0.0625", "--hidden", "32")


# --- a run folder, an export folder, a results file: replaced or removed only when vggbench made them ----------

def test_train_into_a_folder_with_the_users_config_and_history_is_refused_and_leaves_them(tmp_path):
    out = tmp_path / "proj"
    out.mkdir()
    (out / "config.json").write_text('{"mine": 1}')
    (out / "history.json").write_text('{"mine": 2}')
    before = _files(out)
    line = _one_error(_train(tmp_path, out), 2)
    assert line == (f"error: --out {out} already holds config.json, history.json, which a run writes; choose a new "
                    f"or empty folder")
    assert _files(out) == before


def test_a_failed_run_leaves_the_users_own_empty_out_folder(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    result = _train(tmp_path, out)
    assert result.exit_code == 2 and "cannot read image" in result.output, result.output
    assert out.is_dir() and not list(out.iterdir())  # what the run wrote went; the folder it did not make stays


def test_a_failed_run_removes_only_what_it_wrote():
    from vggbench.training import loop, runs

    class Stub:
        discard_if_unsaved = loop._Run.discard_if_unsaved

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        run = Stub()
        run.run_dir, run.saved_epoch = Path(d), None
        run.dist = type("D", (), {"is_main": True})()
        (run.run_dir / "history.json").write_text("the user's")
        run.found, run.made_dir = {"history.json"}, True
        (run.run_dir / runs.CONFIG).write_text("{}")  # the run's own
        run.discard_if_unsaved()
        assert sorted(p.name for p in run.run_dir.iterdir()) == ["history.json"]


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos") / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("my notes")
    (folder / "sub" / "a.jpg").write_bytes(b"\xff\xd8 not really")
    return folder


def test_export_force_never_deletes_a_folder_that_holds_no_export(user_folder):
    before = _files(user_folder)
    line = _one_error(cli("export", "vgg11", "--width", "0.0625", "--hidden", "32", "--image-size", TINY_IMAGE,
                          "--format", "torchscript", "--no-verify", "--force", "--out", user_folder), 2)
    assert line == (f"error: {user_folder} is not replaced, even with --force: it has no manifest.json, so it is no "
                    f"vggbench export; vggbench replaces only a folder it made. Choose another --out, or move it away "
                    f"yourself")
    assert _files(user_folder) == before


def test_an_export_folder_with_the_users_files_in_it_is_not_replaced(tmp_path):
    from dataclasses import replace

    from vggbench.core.errors import VggbenchError
    from vggbench.core.fileio import atomic_dir
    from vggbench.exporters.export import write_artifacts
    from vggbench.exporters.settings import ExportSettings
    from vggbench.zoo.weights import load_model

    out = tmp_path / "e"
    settings = ExportSettings(formats=("torchscript",), image_size=TINY_IMAGE)
    write_artifacts(load_model("vgg11", **TINY), out, settings)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(VggbenchError, match="it holds notes.txt, which its manifest.json does not list"):
        write_artifacts(load_model("vgg11", **TINY), out, replace(settings, force=True))
    assert (out / "notes.txt").read_text() == "mine" and (out / "model.ts").is_file()
    with pytest.raises(VggbenchError, match="cannot tell that it made it"), atomic_dir(out, force=True):
        pass  # a caller that says nothing of what it made replaces only an empty folder


def _envelope(created="2026-01-01T00:00:00+00:00", **extra):
    return {"schema_version": 1, "kind": "vggbench-run", "created": created, "results": [], **extra}


def test_a_named_results_file_is_never_replaced_silently(tmp_path):
    from vggbench.bench.results import write_run
    from vggbench.core.errors import VggbenchError

    res = tmp_path / "res.json"
    write_run(_envelope(first=True), res)
    with pytest.raises(VggbenchError, match=r"res.json already exists; pass another --out, or --force to replace "
                                            r"the results of an earlier run"):
        write_run(_envelope(), res)
    assert json.loads(res.read_text())["first"] is True
    write_run(_envelope(second=True), res, force=True)  # an earlier run's results, asked for
    assert "second" in json.loads(res.read_text())


@pytest.mark.parametrize("name,content", [("res.json", '{"my": "data"}'), ("res.csv", "a,b\n1,2\n")])
def test_force_never_replaces_a_results_name_that_vggbench_did_not_write(tmp_path, name, content):
    from vggbench.bench.results import write_run
    from vggbench.core.errors import VggbenchError

    (tmp_path / name).write_text(content)
    with pytest.raises(VggbenchError, match=f"{name} is not replaced, even with --force: it is not "):
        write_run(_envelope(), tmp_path / "res.json", force=True)
    assert (tmp_path / name).read_text() == content and not list(tmp_path.glob("*.jsonl"))


def test_run_out_that_exists_is_refused_before_anything_runs(tmp_path):
    res = tmp_path / "res.json"
    res.write_text("my own notes")
    line = _one_error(cli("run", *TINY_CLI, *FAST_CLI, "--out", res, "--export-cache", tmp_path / "cache"), 2)
    assert line == (f"error: {res} already exists; pass another --out, or --force to replace the results of an "
                    f"earlier run")
    assert res.read_text() == "my own notes" and not (tmp_path / "res.csv").exists()


@pytest.mark.parametrize("out", ["new/deeper", "new/deeper/res.json"])
def test_a_run_refused_after_its_claim_leaves_no_folder_it_made(tmp_path, out):
    (tmp_path / "mine").mkdir()
    line = _one_error(cli("run", *TINY_CLI, *FAST_CLI, "--threads", "0", "--out", tmp_path / out), 2)
    assert line.startswith("error: threads must be in [1, 1024]")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # new/ and new/deeper/ are gone, mine/ stays
    _one_error(cli("run", *TINY_CLI, *FAST_CLI, "--threads", "0", "--out", tmp_path / "mine" / out), 2)
    assert (tmp_path / "mine").is_dir() and not list((tmp_path / "mine").iterdir())  # there before: stays, empty


def test_loadgen_logs_beside_a_named_out_are_the_users_unless_loadgen_wrote_them(tmp_path):
    from vggbench.bench.results import claim_results, write_run
    from vggbench.core.errors import VggbenchError

    res = tmp_path / "res.json"
    write_run(_envelope(), res)
    logs = tmp_path / "res.logs"
    (logs / "x").mkdir(parents=True)
    (logs / "x" / "mlperf_log_summary.txt").write_text("loadgen's")
    claim_results(res, force=True, logs=True).close()  # LoadGen's own logs: replaced with --force
    (logs / "thesis.tex").write_text("mine")
    with pytest.raises(VggbenchError, match="res.logs is not replaced, even with --force: it holds thesis.tex"):
        claim_results(res, force=True, logs=True)
    assert (logs / "thesis.tex").read_text() == "mine"


def test_verify_layers_out_and_plots_never_overwrite_a_file_vggbench_did_not_write(tmp_path):
    from vggbench.core.errors import ConfigError
    from vggbench.core.plots import check_plot_path
    from vggbench.parity.settings import VerifySettings

    photo, notes = tmp_path / "photo.png", tmp_path / "notes.json"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n my holiday")
    notes.write_text('{"todo": []}')
    with pytest.raises(ConfigError, match="photo.png exists and is no plot that vggbench drew"):
        check_plot_path(photo)
    with pytest.raises(ConfigError, match="notes.json exists and is no layer profile that vggbench wrote"):
        VerifySettings(layers=True, out=str(notes))
    assert photo.read_bytes().endswith(b"my holiday") and notes.read_text() == '{"todo": []}'
    (tmp_path / "old.json").write_text('{"settings": {}, "profiles": []}')  # its own: rewritten
    VerifySettings(layers=True, out=str(tmp_path / "old.json"))


# --- green when it failed -----------------------------------------------------------------------------------

def test_a_run_whose_cases_errored_exits_1_after_writing_its_rows(tmp_path):
    import math

    import torch

    from vggbench.zoo.weights import load_model

    state = dict(load_model("vgg11", num_classes=10, width=0.0625, head="compact").module.state_dict())
    state["features.0.weight"] = state["features.0.weight"].fill_(math.nan)
    torch.save(state, tmp_path / "nan.pth")
    res = tmp_path / "res.json"
    result = cli("run", *TINY_CLI, *FAST_CLI, "--weights", tmp_path / "nan.pth", "--out", res, "--export-cache",
                 tmp_path / "cache")
    line = _one_error(result, 1)
    assert line.startswith("error: 1 of 1 cases failed with an error, first vgg11 eager fp32 contiguous batch 1: ")
    assert "features.0.weight holds NaN" in line
    assert [r["status"] for r in json.loads(res.read_text())["results"]] == ["error"]
    assert "1 cases (1 error)" in result.output  # the rows are shown before the error


@pytest.mark.parametrize("status", ["error", "export_failed", "parity_failed"])
def test_a_case_that_failed_fails_the_run_and_one_that_could_not_run_by_design_does_not(status):
    from vggbench.bench.results import BenchRun
    from vggbench.bench.rows import BenchResult, Case
    from vggbench.core.errors import EXIT_CHECK_FAILED, CheckFailed

    case = Case(model="vgg11", image_size=32, batch_size=1, backend="eager", device="cpu", precision="fp32",
                memory_format="contiguous", threads=1, weights="random", warmup=0, warmup_time_s=0.0, min_time_s=0.0,
                min_iters=1, max_iters=1)
    by_design = [BenchResult.failed(case, s, "why not") for s in ("unsupported", "oom")]
    BenchRun({}, {}, by_design).check()  # outcomes, not failures: exit 0
    with pytest.raises(CheckFailed) as caught:
        BenchRun({}, {}, [*by_design, BenchResult.failed(case, status, "why")]).check()
    assert caught.value.exit_code == EXIT_CHECK_FAILED
    words = {"error": "with an error", "export_failed": "to export", "parity_failed": "parity"}[status]
    assert str(caught.value) == f"1 of 3 cases failed {words}, first vgg11 eager fp32 contiguous batch 1: why"
    with pytest.raises(CheckFailed) as caught:
        BenchRun({}, {}, [*by_design, BenchResult.failed(case, "error", "e"),
                          BenchResult.failed(case, "export_failed", "x")]).check()
    assert str(caught.value) == ("2 of 4 cases failed (1 export_failed, 1 error), first vgg11 eager fp32 contiguous "
                                 "batch 1 (error): e")
