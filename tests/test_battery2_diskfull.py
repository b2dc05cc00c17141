"""Issue 25's hostile battery, a full disk (ENOSPC, EFBIG, ...) on every write path: each test failed on 10b0ddf.

A write that fails for want of room is one `error:` line (exit 2) that names the file that failed, never a temp
name, and says what was kept; no traceback, no temp file, and the files written before are unchanged.

The disk is made full for real where that is cheap: RLIMIT_FSIZE with SIGXFSZ ignored makes every write past N bytes
of a file fail with EFBIG, in this process (`file_size_limit`) or in a child (`vggbench_limited`)."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tests.conftest import TINY, TINY_IMAGE
from vggbench.bench.results import read_run
from vggbench.cli import main
from vggbench.zoo.weights import load_model

TINY_CLI = ["--models", "vgg11", "--width", "0.0625", "--hidden", "32", "--head", "compact", "--num-classes", "10",
            "--image-size", "32", "--backends", "eager", "--memory-format", "contiguous"]
FAST_CLI = ["--min-time", "0", "--warmup-time", "0", "--warmup", "0", "--min-iters", "2", "--max-iters", "2"]
TRAIN_CLI = ["vgg11", "--width", "0.0625", "--hidden", "32", "--data", "synthetic", "--batch-size", "64",
             "--no-progress"]


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Writes past `limit` bytes of any file fail with EFBIG (as a full disk fails them) for the block."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def vggbench_limited(limit: int, *args) -> subprocess.CompletedProcess:
    """`vggbench ARGS` in a child whose files cannot grow past `limit` bytes (an ignored SIGXFSZ survives exec)."""
    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return subprocess.run([sys.executable, "-m", "vggbench", *map(str, args)], preexec_fn=limited,
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error(output: str) -> str:
    """The one `error:` line of `output`, which holds no traceback."""
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]


def no_temp_files(folder: Path) -> None:
    left = [p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.name]
    assert not left, left


@pytest.fixture
def full_disk_for(monkeypatch):
    """full_disk_for("csv"): Path.write_text of a file whose name holds '.csv.' (atomic_file's temp name) writes
    half of the text and fails with ENOSPC, as a disk that fills up half-way does."""
    real = Path.write_text

    def arm(kind: str):
        def write_text(self, text, *args, **kwargs):
            if f".{kind}." in self.name:
                real(self, text[: len(text) // 2], *args, **kwargs)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(self, text, *args, **kwargs)

        monkeypatch.setattr(Path, "write_text", write_text)
    return arm


# --- run: the journal, the .json, the .csv -------------------------------------------------------------------

@pytest.fixture
def no_peaks(monkeypatch):
    """No GEMM peak measured before the cases (seconds that these tests do not need)."""
    from vggbench.bench import sweep

    monkeypatch.setattr(sweep, "_peaks", lambda plan, device: [])


def test_run_whose_csv_fails_names_the_csv_and_keeps_the_json_and_the_journal(tmp_path, full_disk_for, no_peaks):
    full_disk_for("csv")
    out = tmp_path / "out"
    result = cli("run", *TINY_CLI, *FAST_CLI, "--batch-sizes", "1,2", "--out", out, "--export-cache", tmp_path / "c")
    assert result.exit_code == 2, result.output
    (journal,) = out.glob("run-*.jsonl")
    csv, json_path = journal.with_suffix(".csv"), journal.with_suffix(".json")
    assert one_error(result.output) == (
        f"error: cannot write {csv}: No space left on device; the results are in {json_path}; the 2 finished "
        f"case(s) are kept in {journal} (`vggbench report {journal}` reads it)")  # was: it named the .json
    assert len(read_run(json_path)["results"]) == len(read_run(journal)["results"]) == 2
    assert not csv.exists()
    no_temp_files(out)


@pytest.mark.slow  # a run of three cases: seconds
def test_run_whose_journal_fills_the_disk_is_one_line_and_keeps_the_rows_before(tmp_path, no_peaks):
    out = tmp_path / "out"
    # the header and a row fit, the second row does not: a header is 3.6-4.5 kB, a row 2.4-3.5 kB (each carries
    # the load samples, whose busiest processes' command lines are at most 120 characters)
    with file_size_limit(8000):
        result = cli("run", *TINY_CLI, *FAST_CLI, "--batch-sizes", "1,2,4", "--out", out,
                     "--export-cache", tmp_path / "c")
    assert result.exit_code == 2, result.output
    (journal,) = out.glob("run-*.jsonl")
    rows = len(read_run(journal)["results"])  # the row cut short is left out
    assert rows >= 1
    assert one_error(result.output) == (  # was: a chained traceback (closing the journal failed again)
        f"error: cannot write {journal}: File too large; the {rows} finished case(s) are kept in {journal} "
        f"(`vggbench report {journal}` reads it)")
    assert len(result.output.strip().splitlines()) == 1  # said once, not again on a second line
    assert sorted(p.name for p in out.iterdir()) == [journal.name]


def test_run_whose_journal_header_fails_leaves_nothing(tmp_path, no_peaks):
    out = tmp_path / "out"
    with file_size_limit(1000):
        result = cli("run", *TINY_CLI, *FAST_CLI, "--batch-sizes", "1", "--out", out, "--export-cache",
                     tmp_path / "c")
    assert result.exit_code == 2, result.output
    assert re.fullmatch(rf"error: cannot write {re.escape(str(out))}/run-[-\d]+\.jsonl: File too large; "
                        r"no case had finished", one_error(result.output))
    assert not out.exists()  # not a journal cut in its header that claims 0 cases are kept in it (nor its folder)


def test_loadgen_whose_journal_fails_is_one_line(tmp_path):
    out = tmp_path / "lg.json"
    with file_size_limit(1000):
        result = cli("loadgen", "--models", "vgg11", "--width", TINY["width"], "--hidden", TINY["hidden"],
                     "--image-size", TINY_IMAGE, "--scenario", "singlestream", "--short", "--out", out,
                     "--export-cache", tmp_path / "c")
    assert result.exit_code == 2, result.output
    assert one_error(result.output) == f"error: cannot write {tmp_path / 'lg.jsonl'}: File too large; " \
                                       f"no case had finished"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # a LoadGen run: seconds
def test_loadgen_whose_json_fails_names_it_and_keeps_the_journal(tmp_path, full_disk_for):
    full_disk_for("json")
    out = tmp_path / "lg.json"
    result = cli("loadgen", "--models", "vgg11", "--width", TINY["width"], "--hidden", TINY["hidden"],
                 "--image-size", TINY_IMAGE, "--images", "digits", "--count", 32, "--scenario", "singlestream",
                 "--short", "--out", out, "--export-cache", tmp_path / "c")
    assert result.exit_code == 2, result.output
    journal = tmp_path / "lg.jsonl"
    assert one_error(result.output) == (f"error: cannot write {out}: No space left on device; the 1 finished "
                                        f"case(s) are kept in {journal} (`vggbench report {journal}` reads it)")
    assert len(read_run(journal)["results"]) == 1 and not out.exists()
    no_temp_files(tmp_path)


# --- train: the lock's pid, a later checkpoint ---------------------------------------------------------------

def test_train_whose_lock_pid_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    from vggbench.core import fileio

    def disk_full(fd, data, offset):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(fileio.os, "pwrite", disk_full)
    out = tmp_path / "run"
    result = cli("train", *TRAIN_CLI, "--epochs", 1, "--out", out)
    assert result.exit_code == 2, result.output
    assert one_error(result.output) == (f"error: cannot write {tmp_path / '.run.lock'}: No space left on device; "
                                        f"nothing was started")
    assert not (tmp_path / ".run.lock").exists() and not (out / "config.json").exists()


@pytest.mark.slow  # a training of two epochs: seconds
def test_train_whose_later_checkpoint_fails_keeps_the_last_good_one(tmp_path, monkeypatch):
    """The disk fills up while epoch 2's checkpoint is written: torch's own writer reported it as 'unexpected pos'
    (or, given a path, aborted the process)."""
    real_save = torch.save
    saves = []

    class FullAfter(io.RawIOBase):  # a file on a disk with 100 bytes left
        def __init__(self, path):
            super().__init__()
            self.file, self.left = open(path, "wb"), 100  # noqa: SIM115

        def writable(self):
            return True

        def write(self, data):
            if len(data) > self.left:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.left -= len(data)
            return self.file.write(data)

        def close(self):
            self.file.close()
            super().close()

    def save(obj, f, *args, **kwargs):
        # last.pt carries the epoch at its top; best.pt (weights and metadata only) in its metadata
        epoch = obj["epoch"] if "epoch" in obj else obj["vggbench"]["epoch"]
        saves.append(epoch)
        if epoch < 2:
            return real_save(obj, f, *args, **kwargs)
        target = f.file if hasattr(f, "file") else f  # a path (10b0ddf) or the file vggbench opened
        with FullAfter(target.name if hasattr(target, "name") else target) as full:
            return real_save(obj, full, *args, **kwargs)
    monkeypatch.setattr(torch, "save", save)
    out = tmp_path / "run"
    result = cli("train", *TRAIN_CLI, "--epochs", 2, "--out", out)
    assert result.exit_code == 2, result.output
    failed = re.escape(str(out))
    last = out / "last.pt"
    assert re.fullmatch(rf"error: cannot write {failed}/(best|last)\.pt: No space left on device(; the old file is "
                        rf"unchanged)?; {re.escape(str(last))} of epoch 1 is kept: continue with --resume "
                        rf"{re.escape(str(last))} once there is room", one_error(result.output)), result.output
    assert torch.load(last, weights_only=True)["epoch"] == 1
    no_temp_files(out)


# --- report --plot, verify --layers --out, export -------------------------------------------------------------

def test_report_plot_on_a_full_disk_keeps_the_old_plot(tmp_path):
    results = tmp_path / "r.json"
    rows = [{"model": "vgg11", "image_size": 32, "batch_size": b, "backend": "eager", "device": "cpu",
             "precision": "fp32", "memory_format": "contiguous", "threads": 1, "status": "ok", "median_ms": 1.0 * b,
             "images_per_s": 1000.0} for b in (1, 2, 4)]
    results.write_text(json.dumps({"schema_version": 1, "kind": "vggbench-run", "created": "2026-01-01T00:00:00",
                                   "settings": {}, "environment": {}, "results": rows}))
    plot = tmp_path / "p.png"
    assert cli("report", results, "--plot", plot).exit_code == 0  # an earlier plot of vggbench's: it may be redrawn
    old = plot.read_bytes()
    with file_size_limit(2000):
        result = cli("report", results, "--plot", plot)
    assert result.exit_code == 2, result.output
    assert one_error(result.output) == f"error: cannot write {plot}: File too large; the old file is unchanged"
    assert plot.read_bytes() == old
    no_temp_files(tmp_path)


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    from vggbench import export

    out = tmp_path_factory.mktemp("layers") / "vgg11"
    export(load_model("vgg11", seed=0, **TINY), out, image_size=TINY_IMAGE, formats=["torchscript"], verify=False)
    return out


def test_verify_layers_out_on_a_full_disk_names_the_json(tiny_export, tmp_path, full_disk_for):
    full_disk_for("json")
    out = tmp_path / "profile.json"
    result = cli("verify", tiny_export, "--layers", "--backends", "torchscript", "--no-photos", "--batch-sizes", "2",
                 "--out", out)
    assert result.exit_code == 2, result.output
    assert one_error(result.output) == f"error: cannot write {out}: No space left on device"
    assert list(tmp_path.iterdir()) == []


def test_verify_layers_plot_on_a_full_disk_keeps_the_profile(tiny_export, tmp_path):
    out, plot = tmp_path / "profile.json", tmp_path / "profile.png"
    with file_size_limit(8000):  # the profile fits, the plot does not
        result = cli("verify", tiny_export, "--layers", "--backends", "torchscript", "--no-photos", "--batch-sizes", "2",
                     "--out", out, "--plot", plot)
    assert result.exit_code == 2, result.output
    assert one_error(result.output) == f"error: cannot write {plot}: File too large; the profile is in {out}"
    assert json.loads(out.read_text())["settings"]["layers"] is True and not plot.exists()
    no_temp_files(tmp_path)


@pytest.mark.slow  # an ONNX export: seconds
def test_export_on_a_full_disk_names_the_artifact_and_keeps_the_old_folder(tiny_export, tmp_path):
    import shutil

    out = tmp_path / "exp"
    shutil.copytree(tiny_export, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with file_size_limit(100_000):  # model.onnx is 0.5 MB
        result = cli("export", "vgg11", "--width", "0.0625", "--hidden", "32", "--image-size", "32", "--format",
                     "onnx", "--no-verify", "--force", "--out", out)
    assert result.exit_code == 2, result.output
    assert one_error(result.output) == (f"error: cannot write {out / 'model.onnx'}: File too large; "
                                        f"the old folder is unchanged")  # was: onnx export failed: OSError
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


@pytest.mark.slow  # vggbench processes: seconds each
@pytest.mark.parametrize("fmt, artifact", [("torchscript", "model.ts"), ("pt2", "model.pt2")])
def test_torch_serialised_exports_on_a_full_disk_are_one_line_not_an_abort(tmp_path, fmt, artifact):
    result = vggbench_limited(100_000, "export", "vgg11", "--width", "0.0625", "--hidden", "32", "--image-size",
                              "32", "--format", fmt, "--no-verify", "--out", tmp_path / "new")
    assert result.returncode == 2, result.stderr  # was: SIGABRT from torch's writer (rc -6)
    assert one_error(result.stderr) == f"error: cannot write {tmp_path / 'new' / artifact}: File too large"
    assert list(tmp_path.iterdir()) == []  # no temp folder left


# --- the mechanism: fileio ------------------------------------------------------------------------------------

def test_atomic_writes_name_the_target_and_let_other_errors_through(tmp_path, monkeypatch):
    from vggbench.core import fileio
    from vggbench.core.errors import WriteError

    target = tmp_path / "a.json"
    target.write_text("old")
    with file_size_limit(10), pytest.raises(WriteError) as caught:
        fileio.write_json(target, {"x": "y" * 100})
    assert str(caught.value) == f"cannot write {target}: File too large; the old file is unchanged"
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    problem = ValueError("not a disk error")
    with pytest.raises(ValueError) as other, fileio.atomic_file(target):
        raise problem
    assert other.value is problem
    with pytest.raises(FileNotFoundError), fileio.atomic_file(target):  # a read of another file: not ours
        open(tmp_path / "missing")  # noqa: SIM115
    folder = tmp_path / "folder"
    with file_size_limit(10), pytest.raises(WriteError) as nested, fileio.atomic_dir(folder) as tmp:
        fileio.write_text(tmp / "sub" / "big.txt", "z" * 100)
    assert str(nested.value) == f"cannot write {folder / 'sub' / 'big.txt'}: File too large"  # not the temp name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    monkeypatch.setattr(fileio.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only "
                                                                                       "file system")))
    with pytest.raises(WriteError, match=f"cannot write {re.escape(str(target))}: Read-only file system"):
        fileio.write_text(target, "new")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
