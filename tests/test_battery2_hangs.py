"""Issue 25's hostile battery, hangs: each test failed on 10b0ddf.

Walks of a user's data folder end (symlink loops, fifos), hidden folders are no classes, every image decoding error
is one line (from DataLoader workers too); loadgen refuses what it could not finish, and SIGTERM ends it with 143."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from PIL import Image

from tests.conftest import REPO, TINY, TINY_IMAGE
from vggbench.core.errors import ConfigError, DataError
from vggbench.data.datasets import load_data, read_image


def make_images(root, counts: dict[str, int], size=(40, 30)):
    for i, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for j in range(count):
            Image.new("RGB", size, (40 * i, 10 * j, 200)).save(root / name / f"{j}.png")


# --- bounded walks ----------------------------------------------------------------------------------------

def test_a_symlink_loop_is_walked_once_and_said(tmp_path, capsys):
    make_images(tmp_path, {"cat": 3, "dog": 3})
    os.symlink("..", tmp_path / "cat" / "up")  # cat/up/cat/up/... : 10b0ddf read 221 images of 6, until ELOOP
    data = load_data(f"folder:{tmp_path}", val_fraction=0.2)
    assert data.classes == ("cat", "dog") and sum(data.sizes().values()) == 6
    assert "skipped 1 folder reached again through a symlink" in capsys.readouterr().err


def test_a_symlinked_class_folder_is_still_followed(tmp_path):
    make_images(tmp_path / "elsewhere", {"cat": 2})
    make_images(tmp_path / "data", {"dog": 2})
    os.symlink(tmp_path / "elsewhere" / "cat", tmp_path / "data" / "cat")
    data = load_data(f"folder:{tmp_path / 'data'}", val_fraction=0.25)
    assert data.classes == ("cat", "dog") and sum(data.sizes().values()) == 4


def test_a_fifo_named_like_an_image_is_refused_before_it_is_opened(tmp_path):
    make_images(tmp_path, {"cat": 3, "dog": 3})
    fifo = tmp_path / "cat" / "x.png"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=f"^{fifo} is a named pipe, not an image file; remove it$"):
        load_data(f"folder:{tmp_path}")
    # one swapped in after the scan: read_image opens without waiting for a writer, then refuses it
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(_error(read_image, str(fifo))), daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # 10b0ddf: open() waits for a writer; give it one, so that the thread ends
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(10)
    assert outcome == [f"cannot read image {fifo}: it is a named pipe; remove it"]


@pytest.fixture
def fifo_alarm():
    """A read that waits on a fifo ends the test with a failure, not the run with a hang: SIGALRM interrupts the
    blocked open() and its handler raises."""
    def ring(signum, frame):
        raise TimeoutError("waited 30 s on a fifo: vggbench opened it")
    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _fifo(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


RUN_TINY = ["--models", "vgg11", "--width", str(TINY["width"]), "--hidden", str(TINY["hidden"]), "--image-size",
            str(TINY_IMAGE), "--backends", "eager", "--batch-sizes", "1", "--no-progress"]


@pytest.mark.parametrize("where", ["manifest of verify", "manifest of export --force", "results --out --force",
                                   "csv --out --force", "report", "suite"])
def test_a_fifo_in_the_place_of_a_file_vggbench_reads_is_refused_not_waited_on(tmp_path, where, fifo_alarm):
    # the first walk's fifo was an image in a data folder; any file vggbench reads is such a door: a manifest it
    # checks, a results file it would replace, a suite. Each is opened without blocking and refused unless it is a
    # regular file (core.documents.open_regular): one error line that names it, exit 2
    from click.testing import CliRunner

    from vggbench.cli import main

    fifo = _fifo(tmp_path / {"manifest of verify": "exp/manifest.json", "manifest of export --force": "exp/manifest.json",
                             "csv --out --force": "res.csv", "suite": "s.toml"}.get(where, "res.json"))
    run = ["run", *RUN_TINY, "--out", str(tmp_path / "res.json"), "--force"]
    args = {"manifest of verify": ["verify", str(fifo.parent), "--backends", "onnxruntime"],
            "manifest of export --force": ["export", "vgg11", "--width", "0.0625", "--formats", "onnx", "--out",
                                           str(fifo.parent), "--force"],
            "results --out --force": run, "csv --out --force": run, "report": ["report", str(fifo)],
            "suite": ["run", "--suite", str(fifo)]}[where]
    result = CliRunner().invoke(main, args)
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(lines) == 1, (result.exit_code, result.output)
    assert str(fifo) in lines[0] or f"{fifo.parent} is not replaced" in lines[0], lines[0]
    assert "regular file" in lines[0] or "not a vggbench results file" in lines[0] or "not the CSV" in lines[0]
    assert "Traceback" not in result.output


def test_hashing_or_reading_a_fifo_is_an_oserror_at_once(tmp_path, fifo_alarm):
    from vggbench.bench.layer_time import _not_profile
    from vggbench.core.documents import read_text
    from vggbench.core.fileio import sha256_file
    from vggbench.exporters.export import not_an_export
    from vggbench.parity.settings import _is_profile

    fifo = _fifo(tmp_path / "model.onnx")
    for read in (sha256_file, read_text):
        with pytest.raises(OSError, match="not a regular file"):
            read(fifo)
    assert _is_profile(fifo) is False and _not_profile(fifo).startswith("it is not a layer-time profile")
    _fifo(tmp_path / "exp" / "manifest.json")
    assert not_an_export(tmp_path / "exp") == "its manifest.json cannot be read (not a regular file)"
    (tmp_path / "f").write_text("x")
    assert read_text(tmp_path / "f") == "x" and len(sha256_file(tmp_path / "f")) == 64


def _error(function, *args) -> str | None:
    try:
        function(*args)
    except Exception as e:  # noqa: BLE001 - the test reads its message
        return str(e)
    return None


def test_hidden_folders_and_files_are_no_classes_and_are_said_once(tmp_path, capsys):
    make_images(tmp_path, {"cat": 3, "dog": 3, ".thumbnails": 2})
    (tmp_path / "cat" / ".DS_Store.png").write_bytes(b"not an image")
    data = load_data(f"folder:{tmp_path}", val_fraction=0.2)
    assert data.classes == ("cat", "dog") and sum(data.sizes().values()) == 6
    err = capsys.readouterr().err
    assert f"note: {tmp_path}: ignored 1 hidden folder: .thumbnails\n" in err
    assert "ignored 1 hidden file: cat/.DS_Store.png" in err
    assert any("hidden folder" in note for note in data.notes)


# --- image decoding errors: one line naming the file ----------------------------------------------------

def _bad_images(folder, monkeypatch):
    """name -> the start of what PIL says of it."""
    Image.new("RGB", (100, 100)).save(folder / "bomb.png")  # 10,000 pixels: over twice the limit set below
    Image.new("RGB", (30, 50)).save(folder / "warns.png")  # 1,500: over the limit, under twice it (PIL warns)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    (folder / "text.png").write_text("hello")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(folder / "whole.jpg")
    (folder / "truncated.jpg").write_bytes((folder / "whole.jpg").read_bytes()[:200])
    return {"bomb.png": "DecompressionBombError: Image size (10000 pixels) exceeds limit",
            "warns.png": "DecompressionBombWarning: Image size (1500 pixels) exceeds limit",
            "text.png": "UnidentifiedImageError: cannot identify image file",
            "truncated.jpg": "OSError: Truncated File Read"}


def test_every_image_decoding_error_is_one_data_error_naming_the_file(tmp_path, monkeypatch):
    for name, says in _bad_images(tmp_path, monkeypatch).items():
        with pytest.raises(DataError) as e:
            read_image(str(tmp_path / name))
        assert str(e.value).startswith(f"cannot read image {tmp_path / name}: {says}"), str(e.value)
        assert "\n" not in str(e.value)


def test_a_dataloader_workers_error_is_the_clean_line_without_its_traceback(tmp_path):
    # in a child process: a forked DataLoader worker in the test process made a later OpenVINO test segfault there
    make_images(tmp_path, {"cat": 4, "dog": 4})
    (tmp_path / "cat" / "zz.png").write_text("hello")
    code = ("import sys\nimport traceback\nfrom torch.utils.data import DataLoader\n"
            "from vggbench.core.errors import DataError\nfrom vggbench.data.datasets import load_data\n"
            "data = load_data(f'folder:{sys.argv[1]}', val_fraction=0.2)\n"
            "try:\n"
            "    for split in ('train', 'val'):\n"
            "        list(DataLoader(data.dataset(split), batch_size=16, num_workers=1))\n"
            "except DataError as e:\n"
            "    print(repr(str(e)))\n"
            # freed now: left to the cycle collector at exit, the failed iterator's queue feeder is stopped
            # before the iterator's __del__ asks its worker to stop, and the join waits 5 s for nothing
            "    traceback.clear_frames(e.__traceback__)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
    expected = (f"cannot read image {tmp_path / 'cat' / 'zz.png'}: UnidentifiedImageError: cannot "
                f"identify image file {str(tmp_path / 'cat' / 'zz.png')!r}; remove or replace the file")
    assert done.stdout.strip() == repr(expected)


# --- bounded waits in loadgen -----------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, message", [
    ("target_qps", 1e9, "--target-qps must be in (0, 1000000], got 1000000000.0"),
    ("samples_per_query", 100_000, "--samples-per-query must be in [1, 1024], got 100000"),
    ("min_queries", 10**12, "--min-queries must be in [1, 1000000]"),
    ("min_duration_s", 1e9, "--min-duration must be in [0, 86400]"),
    ("max_runs", 10**6, "--search-max-runs must be in [1, 100]"),
    ("count", 10**9, "--count must be in [1, 50000]"),
])
def test_absurd_loadgen_settings_are_refused_up_front(field, value, message):
    from vggbench.bench.scenarios import LoadgenSettings

    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace("[", r"\[")):
        LoadgenSettings(**{field: value})


@pytest.mark.parametrize("field, value, message", [
    ("max_batch", 100_000, "--max-batch must be in [1, 4096], got 100000"),
    ("workers", 100_000, "--workers must be in [1, 256], got 100000"),
])
def test_absurd_sut_settings_are_refused_up_front(field, value, message):
    from vggbench.bench.scenarios import SutSettings

    with pytest.raises(ConfigError, match="^" + message.replace("[", r"\[")):
        SutSettings(**{field: value})


def _loadgen_args(tmp_path, *extra) -> list[str]:
    return [sys.executable, "-m", "vggbench", "loadgen", "--models", "vgg11", "--width", str(TINY["width"]),
            "--hidden", str(TINY["hidden"]), "--image-size", str(TINY_IMAGE), "--images", "synthetic", "--count", "16",
            "--export-cache", str(tmp_path / "cache"), "--out", str(tmp_path / "lg.json"), *extra]


def test_a_target_qps_past_the_measured_speed_is_a_row_that_says_why_not_a_hang(tmp_path):
    pytest.importorskip("mlperf_loadgen")
    done = subprocess.run(_loadgen_args(tmp_path, "--scenario", "server", "--target-qps", "100000", "--short"),
                          cwd=REPO, capture_output=True, text=True, timeout=120)  # 10b0ddf: scheduled 25,000 queries
    assert done.returncode == 1, done.stderr  # a case that errored fails the run, after its row is written
    (row,) = json.loads((tmp_path / "lg.json").read_text())["results"]
    assert row["status"] == "error" and row["reason"].startswith("server: 100000 QPS is over 10 times the measured")
    assert row["reason"].endswith("lower --target-qps") and "Traceback" not in done.stderr


def test_a_batch_that_would_not_fit_in_memory_is_never_timed(tmp_path, monkeypatch):
    pytest.importorskip("mlperf_loadgen")
    from vggbench.bench import loadgen as module
    from vggbench.bench.scenarios import LoadgenSettings, SutSettings

    monkeypatch.setattr(module, "free_memory_bytes", lambda device=None: 64 << 20)  # 64 MiB free
    run = module.loadgen(models=["vgg11"], width=TINY["width"], hidden=TINY["hidden"], image_size=TINY_IMAGE,
                         backends=["eager"], export_cache=tmp_path / "cache", sut=SutSettings(max_batch=4096),
                         settings=LoadgenSettings(scenarios=("offline",), images="synthetic", count=16, short=True))
    (row,) = run.results
    assert row.status == "error" and row.reason.startswith("a batch of 4096 at 32x32 would take about 0.172 GiB, "
                                                           "over half of the 0.0625 GiB free; lower --max-batch")


@pytest.mark.slow
def test_sigterm_during_loadgen_exits_143_with_the_finished_scenarios_written(tmp_path):
    pytest.importorskip("mlperf_loadgen")
    proc = subprocess.Popen(_loadgen_args(tmp_path, "--scenario", "offline,singlestream,server",
                                          "--min-duration", "1",
                                          "--min-queries", "64"),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:  # Offline's row is written, Server's search (runs of 0.25 s and 1 s) begins
            if "singlestream-performance" in line:
                break
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err  # 10b0ddf: -11 (segfault) or -6 ("terminate called without an active ...")
    assert "terminate called" not in err and "Fatal Python error" not in err and "Traceback" not in err
    names = [r["scenario"]["name"] for r in json.loads((tmp_path / "lg.json").read_text())["results"]]
    assert names[0] == "offline"
