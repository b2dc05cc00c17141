"""Every option validated before work starts (issue 16): a user's mistake is one `error:` line and exit 2,
never a traceback, a hang or a silent fallback. Each test failed before its fix."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import TINY_IMAGE
from tests.test_report import ROWS, results_file
from vggbench.cli import main
from vggbench.core.errors import ExportError
from vggbench.zoo.weights import load_model

TINY_OPTIONS = ["--width", "0.0625", "--head", "compact", "--num-classes", "10", "--image-size", str(TINY_IMAGE)]
README = Path(__file__).parents[1] / "README.md"  # a file that is not a folder


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(result, *names: str, code: int = 2) -> str:
    """The single `error:` line of a failed command, which must name every one of `names`."""
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


# --- click's own usage errors -----------------------------------------------------------------------------

@pytest.mark.parametrize("args, names", [
    (("run", "--bogus"), ("--bogus", "run --help`")),
    (("info",), ("NAME",)),
    (("models", "--format", "bad"), ("--format", "'bad'")),
    (("run", "--image-size", "abc"), ("--image-size", "'abc'")),
    (("--bogus",), ("--bogus",)),
])
def test_click_usage_errors_are_one_error_line(args, names):
    one_error_line(cli(*args), *names)
    usage = cli("info", "-h")  # help still shows the usage line
    assert usage.exit_code == 0 and usage.output.startswith("Usage: ")


def test_traceback_keeps_the_exit_code_of_the_error():
    result = cli("--traceback", "info", "vgg99")
    assert result.exit_code == 2, result.output  # an unknown model is bad input with or without --traceback
    assert "Traceback (most recent call last)" in result.output
    assert result.output.strip().splitlines()[-1].startswith("error: unknown model")


# --- opsets -------------------------------------------------------------------------------------------------

def test_an_opset_newer_than_onnx_can_write_is_refused_before_work(tmp_path):
    out = tmp_path / "e"
    line = one_error_line(cli("export", "vgg11", *TINY_OPTIONS, "--opset", "99", "--out", out), "--opset 99")
    assert "use 18 to" in line and not out.exists()


def test_an_opset_the_exporter_fell_back_from_is_an_error_not_a_silent_18(tmp_path, monkeypatch):
    from vggbench.exporters import choices
    from vggbench.exporters.export import write_artifacts
    from vggbench.exporters.settings import ExportSettings

    monkeypatch.setattr(choices, "max_opset", lambda: 999)  # let 99 through to torch, which falls back to 18
    model = load_model("vgg11", width=1 / 16, head="compact", num_classes=10)
    with pytest.raises(ExportError, match="--opset 99 was asked for, but the exporter could only write opset 18"):
        write_artifacts(model, tmp_path / "e", ExportSettings(formats=("onnx",), image_size=TINY_IMAGE, opset=99))
    assert not (tmp_path / "e").exists()


# --- bounds -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, names", [
    (("export", "vgg11", "--image-size", "100000"), ("--image-size", "4096", "100000")),
    (("train", "vgg11", "--data", "synthetic", "--image-size", "100000"), ("--image-size", "4096")),
    (("eval", "vgg11", "--data", "synthetic", "--image-size", "100000"), ("--image-size", "4096")),
    (("run", "--models", "vgg11", "--image-size", "100000"), ("image_size", "4096")),
    (("export", "vgg11", "--num-classes", "99999999999"), ("--num-classes", "1000000")),
    (("export", "vgg11", "--width", "16"), ("--width", "(0, 4]")),
    (("export", "vgg11", "--hidden", "10000000"), ("--hidden", "65536")),
])
def test_sizes_beyond_memory_are_refused_before_work(args, names):
    one_error_line(cli(*args), *names)


def test_model_options_share_the_bounds_of_the_options():
    from vggbench.core.errors import ConfigError
    from vggbench.zoo.specs import ModelOptions, check_image_size, get_spec

    for options in ({"width": 16}, {"num_classes": 10**11}, {"hidden": 10**7}):
        with pytest.raises(ConfigError):
            ModelOptions(**options)
    with pytest.raises(ConfigError, match="image size 100000 is too large: at most 4096"):
        check_image_size(get_spec("vgg11"), 100_000)


# --- names and paths ----------------------------------------------------------------------------------------

def test_verify_of_a_file_says_it_is_not_an_export_folder():
    one_error_line(cli("verify", README), "README.md is a file, not an export folder")


def test_an_unknown_baseline_is_refused(tmp_path):
    path = results_file(tmp_path, ROWS)
    one_error_line(cli("report", path, "--baseline", "foo:bar"), "--baseline foo:bar", "unknown backend 'foo'")
    one_error_line(cli("report", path, "--baseline", "eager:fp33"), "unknown precision 'fp33'")
    one_error_line(cli("report", path, "--baseline", "eager:fp32:nhwc"), "unknown memory format 'nhwc'")
    out = tmp_path / "run.json"
    one_error_line(cli("run", "--models", "vgg11", "--baseline", "foo:bar", "--out", out), "--baseline foo:bar")
    assert not out.exists()
    assert "speedup" in cli("report", path, "--baseline", "ort").output  # aliases are fine


@pytest.mark.parametrize("args, names", [
    (("train", "vgg11", "--data", "synthetic", "--out", README), ("--out", "is a file, not a folder")),
    (("train", "vgg11", "--data", "synthetic", "--out", README / "sub"), ("--out", "README.md is a file")),
    (("export", "vgg11", "--out", README), ("--out", "is a file, not a folder")),
    (("export", "vgg11", "--out", README / "sub"), ("--out", "README.md is a file")),
])
def test_an_output_folder_that_cannot_be_made_is_refused_before_work(args, names):
    one_error_line(cli(*args), *names)


def _read_only_folder(tmp_path) -> Path:
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    if Path("/proc/sys").is_dir() and not os.access("/proc/sys", os.W_OK):  # root writes anywhere but there
        return Path("/proc/sys")
    pytest.skip("no read-only folder to try")


def test_output_paths_on_a_read_only_folder_are_refused(tmp_path):
    folder = _read_only_folder(tmp_path)
    one_error_line(cli("train", "vgg11", "--data", "synthetic", "--out", folder / "run"), "--out", "is not writable")
    one_error_line(cli("export", "vgg11", "--out", folder / "e"), "--out", "is not writable")
    one_error_line(cli("report", results_file(tmp_path, ROWS), "--plot", folder / "p.png"), "--plot",
                   "is not writable")


def test_a_plot_in_a_format_matplotlib_lacks_or_under_a_file_is_refused_first(tmp_path):
    path = results_file(tmp_path, ROWS)
    one_error_line(cli("report", path, "--plot", tmp_path / "p.txt"), "--plot", "cannot write .txt files")
    one_error_line(cli("report", path, "--plot", README / "p.png"), "--plot", "README.md is a file")
    one_error_line(cli("report", path, "--plot", tmp_path), "--plot", "is a folder, not a file")


def test_a_suite_file_that_is_not_utf8_is_one_line(tmp_path):
    suite = tmp_path / "bad.toml"
    suite.write_bytes(b'models = ["vgg11"]\nname = "\xff\xfe"\n')
    one_error_line(cli("run", "--suite", suite), "bad.toml is not UTF-8")


# --- results files edited by hand ---------------------------------------------------------------------------

def _edited(tmp_path, name, edit) -> Path:
    path = results_file(tmp_path, ROWS, name)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("edit, names", [
    (lambda d: d["results"][0].update(device=3), ("results[0].device", "must be a string")),
    (lambda d: d["results"][1].update(device="cuda:x"), ("results[1].device",)),
    (lambda d: d["results"][0].update(median_ms=None), ("results[0].median_ms", "status ok")),
    (lambda d: d["results"][2].update(batch_size="8"), ("results[2].batch_size", "an integer")),
    (lambda d: d["results"][0].update(status="fine"), ("results[0].status",)),
    (lambda d: d["environment"].update(cpu="x"), ("environment.cpu",)),
    (lambda d: d["environment"]["gemm_peaks"][0].pop("gflops_per_s"), ("environment.gemm_peaks",)),
])
def test_a_hand_edited_results_file_is_one_line_naming_file_and_field(tmp_path, edit, names):
    bad = _edited(tmp_path, "edited", edit)
    good = results_file(tmp_path, ROWS, "good")
    one_error_line(cli("report", bad), "edited.json", *names)
    one_error_line(cli("report", good, "--compare", bad), "edited.json", *names)
    one_error_line(cli("report", bad, "--compare", good), "edited.json", *names)


def test_an_unedited_results_file_still_reads(tmp_path):
    path = results_file(tmp_path, copy.deepcopy(ROWS))
    assert cli("report", path, "--compare", path).exit_code == 0


# --- the kernel cache ---------------------------------------------------------------------------------------

_LOAD = textwrap.dedent("""
    import torch
    from vggbench.backends.winograd import native
    lib = native.winograd()
    assert lib is not None, native.unavailable_reason()
    x = torch.randn(1, 8, 8, 16)
    native.winograd_input(4, x, 0, 4, torch.empty(36, 4, 16))
    print(native.library_path(native.describe()["compiler"]))
""")


def _load_kernels(cache: Path) -> subprocess.CompletedProcess:
    # a process of its own: a damaged library must never be mapped into the test process
    env = {**os.environ, "VGGBENCH_CACHE": str(cache), "PYTHONPATH": str(Path(__file__).parents[1])}
    env.pop("VGGBENCH_NO_NATIVE", None)
    return subprocess.run([sys.executable, "-c", _LOAD], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow  # a compile, a training or vggbench processes: seconds each
def test_a_damaged_library_in_the_kernel_cache_is_rebuilt_not_loaded(tmp_path):
    from vggbench.backends.winograd import native
    from vggbench.core.fileio import sha256_file

    if native.describe()["compiler"] is None:
        pytest.skip("no C++ compiler")
    first = _load_kernels(tmp_path)
    assert first.returncode == 0, first.stderr
    library = Path(first.stdout.strip().splitlines()[-1])
    record = json.loads(native.record_path(library).read_text())
    assert record == {"size": library.stat().st_size, "sha256": sha256_file(library)}
    for damage in ("truncate", "alter"):
        data = library.read_bytes()
        library.write_bytes(data[:len(data) // 2] if damage == "truncate" else data[:-64] + bytes(64))
        damaged = library.read_bytes()
        again = _load_kernels(tmp_path)  # before: SIGBUS (exit -7) for a truncated library, and no kernels
        assert again.returncode == 0, (damage, again.returncode, again.stderr[-2000:])
        assert native.verified(library) and library.read_bytes() != damaged, damage


def test_a_non_finite_number_in_a_row_is_written_as_null_and_read_back(tmp_path):
    from tests.test_report import row
    from vggbench.bench.results import read_run

    failed = row("eager", 1, 500.0)
    failed = type(failed)(**{**vars(failed), "status": "parity_failed", "reason": "output not finite",
                             "parity_max_abs": float("nan"), "max_ms": float("inf")})
    path = results_file(tmp_path, [*ROWS, failed])
    json.loads(path.read_text(), parse_constant=lambda bare: pytest.fail(f"bare {bare} in the results JSON"))
    last = read_run(path)["results"][-1]
    assert last["parity_max_abs"] is None and last["max_ms"] is None and last["status"] == "parity_failed"
