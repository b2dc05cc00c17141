"""Issue 16, "nothing measured is ever lost": `run` checks where it writes before it measures, keeps a journal of
finished cases, claims result names that cannot collide, locks export folders, takes SIGTERM as Ctrl-C and exits 1
on a parity failure. Each test failed before its fix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import vggbench
from tests.conftest import TINY, TINY_IMAGE
from vggbench.bench import results as results_module
from vggbench.bench.results import claim_results, read_run, write_run
from vggbench.cli import main
from vggbench.core.errors import VggbenchError
from vggbench.zoo.weights import load_model, save_weights

ROOT = Path(__file__).resolve().parents[1]
TINY_CLI = ["--models", "vgg11", "--width", "0.0625", "--head", "compact", "--num-classes", "10", "--image-size",
            "32", "--backends", "eager", "--memory-format", "contiguous"]
FAST_CLI = ["--min-time", "0", "--warmup-time", "0", "--warmup", "0"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def child_env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def vggbench_process(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vggbench.cli", *map(str, args)], env=child_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def wait_for(condition, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


@pytest.fixture
def no_benchmark(monkeypatch):
    """Fails the test if `run` gets as far as measuring."""
    def refuse(*args, **kwargs):
        raise AssertionError("benchmark() was called")
    monkeypatch.setattr("vggbench.bench.sweep.benchmark", refuse)


# --- 1. the output location is checked before the first case --------------------------------------------------

def test_run_refuses_an_out_under_a_file_before_any_case(tmp_path, no_benchmark):
    (tmp_path / "README.md").write_text("text")
    for out in (tmp_path / "README.md" / "sub", tmp_path / "README.md"):
        result = cli("run", *TINY_CLI, "--out", out)
        assert result.exit_code == 2, result.output
        assert result.output.strip() == f"error: cannot write results to {out}: {tmp_path / 'README.md'} is a file"


def test_run_refuses_an_out_json_that_is_a_folder_before_any_case(tmp_path, no_benchmark):
    (tmp_path / "x.json").mkdir()
    result = cli("run", *TINY_CLI, "--out", tmp_path / "x.json")
    assert result.exit_code == 2
    assert result.output.strip() == f"error: cannot write the results to {tmp_path / 'x.json'}: it is a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_run_refuses_a_read_only_folder_before_any_case(tmp_path, no_benchmark):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        result = cli("run", *TINY_CLI, "--out", folder)
    finally:
        folder.chmod(0o755)
    assert result.exit_code == 2
    assert result.output.startswith(f"error: cannot write results into {folder}: Permission denied")


# --- 2. the journal -------------------------------------------------------------------------------------------

def tiny_run(tmp_path, journal=None, **kwargs):
    suite = dict(models=["vgg11"], image_size=TINY_IMAGE, backends=["eager"], memory_formats=["contiguous"],
                 batch_sizes=[1, 2], warmup=0, warmup_time_s=0.0, min_time_s=0.0, min_iters=2, max_iters=2, **TINY)
    return vggbench.benchmark(export_cache=tmp_path / "cache", progress=False, journal=journal,
                              **{**suite, **kwargs})


def test_each_finished_case_is_in_the_journal_and_the_journal_reads_back_as_the_run(tmp_path):
    journal = claim_results(tmp_path / "out", command="vggbench run")
    assert journal.path.suffix == ".jsonl" and journal.json_path == journal.path.with_suffix(".json")
    run = tiny_run(tmp_path, journal)
    lines = journal.path.read_text().splitlines()
    assert len(lines) == 1 + len(run.results) == 3
    assert json.loads(lines[0])["kind"] == "vggbench-run-journal"
    data = read_run(journal.path)  # what `vggbench report run-X.jsonl` reads
    assert data["schema_version"] == 2 and data["kind"] == "vggbench-run"
    assert data["results"] == json.loads(json.dumps(run.to_dict()["results"]))  # tuples are lists in JSON
    # the ceilings are known when the run ends (its best rows raise them), and so is the load at its end: the
    # journal's header has all but them
    assert {k: v for k, v in data["environment"].items() if k != "load"} == \
        {k: v for k, v in run.environment.items() if k not in ("ceilings", "load")}
    assert data["environment"]["load"]["start"] == run.environment["load"]["start"]
    assert run.environment["ceilings"] and data["settings"]["command"] == "vggbench run"
    assert data["settings"]["interrupted"] == "the run did not finish; 2 case(s) read from its journal"
    json_path, csv_path = journal.finish(run.to_dict())
    assert not journal.path.exists() and read_run(json_path)["results"] == data["results"] and csv_path.is_file()


def test_a_journal_cut_short_by_a_kill_keeps_its_whole_lines(tmp_path):
    journal = claim_results(tmp_path)
    tiny_run(tmp_path, journal)
    text = journal.path.read_text()
    journal.path.write_text(text[:-40])  # the last row was being written
    data = read_run(journal.path)
    assert [r["batch_size"] for r in data["results"]] == [1]
    result = cli("report", journal.path, "--format", "json")
    assert result.exit_code == 0 and [r["batch_size"] for r in json.loads(result.output)] == [1]


def test_a_failed_final_write_names_the_journal_that_keeps_the_rows(tmp_path, monkeypatch):
    def disk_full(path, data):
        raise OSError(28, "No space left on device", str(path))
    monkeypatch.setattr(results_module, "write_json", disk_full)
    out = tmp_path / "out"
    result = cli("run", *TINY_CLI, *FAST_CLI, "--batch-sizes", "1,2", "--out", out, "--export-cache", tmp_path / "c")
    assert result.exit_code == 2
    (journal,) = out.glob("run-*.jsonl")
    assert result.output.strip() == (f"error: cannot write {journal.with_suffix('.json')}: No space left on device; "
                                     f"the 2 finished case(s) are kept in {journal} (`vggbench report {journal}` "
                                     f"reads it)")
    assert [r["batch_size"] for r in read_run(journal)["results"]] == [1, 2]


def test_a_run_that_fails_before_its_first_case_leaves_no_journal(tmp_path):
    out = tmp_path / "out"
    result = cli("run", *TINY_CLI, "--weights", tmp_path / "missing.pt", "--out", out)
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not out.exists()  # no journal, and not the folder vggbench made for it


# --- 3. result names that cannot collide ----------------------------------------------------------------------

def test_two_processes_writing_results_of_the_same_second_never_overwrite_each_other(tmp_path):
    # every write has the same time stamp: each one is a collision for the claim to resolve
    code = ("import sys\nfrom vggbench.bench.results import write_run\n"
            "sys.stdin.readline()\n"
            "for i in range(15):\n"
            "    write_run({'created': '2026-01-01T00:00:00+00:00', 'writer': sys.argv[2], 'i': i, 'results': []},"
            " sys.argv[1])\n")
    writers = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), name], stdin=subprocess.PIPE,
                                env=child_env(), text=True) for name in ("a", "b")]
    for w in writers:  # both are started (imports done meanwhile); let them go at once
        w.stdin.write("go\n")
        w.stdin.flush()
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    written = sorted((json.loads(p.read_text())["writer"], json.loads(p.read_text())["i"])
                     for p in tmp_path.glob("*.json"))
    assert written == sorted((name, i) for name in ("a", "b") for i in range(15))
    assert len(list(tmp_path.glob("*.csv"))) == 30 and not list(tmp_path.glob("*.jsonl"))


@pytest.mark.slow  # a compile, a training or vggbench processes: seconds each
def test_two_runs_started_at_once_on_one_out_folder_write_two_results(tmp_path):
    out = tmp_path / "shared"
    runs = [vggbench_process("run", *TINY_CLI, *FAST_CLI, "--batch-sizes", "1", "--out", out, "--export-cache",
                             tmp_path / "cache", "--format", "json") for _ in range(2)]
    outputs = [r.communicate(timeout=300) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outputs
    files = sorted(out.glob("*.json"))
    assert len(files) == 2 and len(list(out.glob("*.csv"))) == 2 and not list(out.glob("*.jsonl"))
    assert all(len(read_run(f)["results"]) == 1 for f in files)


def test_an_existing_result_name_gets_a_suffix(tmp_path):
    data = {"created": "2026-01-01T00:00:00+00:00", "results": []}
    first, _ = write_run(data, tmp_path)
    second, _ = write_run(data, tmp_path)
    assert second.name == first.stem + "-2.json" and first.is_file() and second.is_file()


# --- 4. one exporter per folder -------------------------------------------------------------------------------

def test_a_second_export_into_a_folder_in_use_gets_one_error_line(tmp_path):
    folder = tmp_path / "e"
    code = ("import sys, time\nfrom vggbench.core.fileio import exclusive\n"
            "with exclusive(sys.argv[1]):\n    print('holding', flush=True)\n    time.sleep(120)\n")
    other = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True,
                             env=child_env())
    try:
        assert other.stdout.readline().strip() == "holding"
        with pytest.raises(VggbenchError, match=f"{folder} is in use by another vggbench process "
                                                f"\\(pid {other.pid}\\)"):
            vggbench.export(load_model("vgg11", **TINY), folder, formats=["onnx"], image_size=TINY_IMAGE)
        result = cli("export", "vgg11", "--width", "0.0625", "--hidden", "32", "--image-size", "32", "--format",
                     "onnx", "--out", folder)
        assert result.exit_code == 2
        assert result.output.strip().startswith(f"error: {folder} is in use by another vggbench process")
        assert not folder.exists()
    finally:
        other.kill()
        other.wait(timeout=30)
    vggbench.export(load_model("vgg11", **TINY), folder, formats=["onnx"], image_size=TINY_IMAGE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]  # no lock file left beside it


# --- 5. SIGTERM is Ctrl-C ------------------------------------------------------------------------------------

@pytest.mark.slow  # a compile, a training or vggbench processes: seconds each
def test_sigterm_during_run_keeps_the_finished_cases_and_exits_143(tmp_path):
    out = tmp_path / "out"
    child = vggbench_process("run", *TINY_CLI, "--batch-sizes", "1,2,4,8", "--min-time", "1", "--out", out,
                             "--export-cache", tmp_path / "cache", "--no-progress")

    def first_case_done() -> bool:
        journals = list(out.glob("run-*.jsonl")) if out.is_dir() else []
        return bool(journals) and len(journals[0].read_text().splitlines()) >= 2
    try:
        wait_for(first_case_done)
    finally:
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=120)
    assert child.returncode == 143, stderr
    (results,) = out.glob("run-*.json")
    data = read_run(results)
    assert 1 <= len(data["results"]) < 4 and data["results"][0]["status"] == "ok"
    assert data["settings"]["interrupted"].startswith("SIGTERM after ")
    assert not list(out.glob("*.jsonl")) and "the results so far are written" in stderr


@pytest.mark.slow  # a compile, a training or vggbench processes: seconds each
def test_sigterm_during_export_removes_its_temp_folder(tmp_path):
    child = vggbench_process("export", "vgg11", "--width", "0.0625", "--hidden", "32", "--image-size", "32",
                             "--out", tmp_path / "e")
    try:
        wait_for(lambda: any(p.name.endswith(".tmp") for p in tmp_path.iterdir()))
    finally:
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=120)
    assert child.returncode == 143, stderr
    assert stderr.strip().endswith("interrupted")
    assert list(tmp_path.iterdir()) == []  # no temp folder, no half export, no lock file


def test_the_previous_sigterm_handler_is_restored_after_a_command():
    def mine(signum, frame):
        pass
    previous = signal.signal(signal.SIGTERM, mine)
    try:
        assert cli("models").exit_code == 0
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- 6. a parity failure is exit 1 ----------------------------------------------------------------------------

def test_run_exits_1_on_a_parity_failure_after_writing_and_showing_the_results(tmp_path):
    model = load_model("vgg11", num_classes=10, width=1 / 16, head="compact")
    with torch.no_grad():  # finite weights whose logits overflow to Inf: the reference fails its check
        for layer in model.module.classifier:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.fill_(1e30)
    weights = save_weights(model, tmp_path / "inf.pt")
    out = tmp_path / "r.json"
    result = cli("run", "--models", "vgg11", "--weights", weights, "--image-size", "32", "--backends", "eager",
                 "--memory-format", "contiguous", "--batch-sizes", "1", *FAST_CLI, "--out", out)
    assert result.exit_code == 1, result.output
    assert "parity_failed" in result.output and f"wrote {out}" in result.output
    assert result.output.strip().splitlines()[-1].startswith("error: 1 of 1 cases failed parity, first vgg11 eager")
    assert read_run(out)["results"][0]["status"] == "parity_failed"


def test_a_waiting_lock_gets_the_folder_once_its_holder_lets_go(tmp_path):
    """Benchmark runs that share an export cache take turns on an entry instead of failing."""
    import threading

    from vggbench.core.fileio import exclusive

    folder, order = tmp_path / "entry", []

    def waiter():
        with exclusive(folder, wait=True):
            order.append("waiter")
    with exclusive(folder):
        thread = threading.Thread(target=waiter)
        thread.start()
        thread.join(0.5)  # it is blocked: the holder still holds
        order.append("holder")
    thread.join(30)
    assert order == ["holder", "waiter"] and list(tmp_path.iterdir()) == []


def test_a_folder_that_refuses_the_first_write_stops_run_before_any_case(tmp_path, monkeypatch, no_benchmark):
    """What a read-only folder does for users other than root (who writes anywhere, so the chmod test skips)."""
    real_open = results_module.os.open

    def read_only(path, flags, mode=0o777):
        if str(path).startswith(str(tmp_path)):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, mode)
    monkeypatch.setattr(results_module.os, "open", read_only)
    result = cli("run", *TINY_CLI, "--out", tmp_path)
    assert result.exit_code == 2
    assert result.output.strip() == f"error: cannot write results into {tmp_path}: Permission denied"
