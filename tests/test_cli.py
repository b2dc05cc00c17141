from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from vggbench.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_models_table_lists_the_zoo_with_computed_figures():
    result = run("models")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["name", "config", "depth", "bn", "lrn", "params", "gmacs@224", "weights"]
    vgg16 = next(line for line in lines if line.startswith("vgg16 "))
    assert "138,357,544" in vgg16 and "15.47" in vgg16 and "IMAGENET1K_V1" in vgg16
    assert any(line.startswith("vgg16c ") and " - " in line + " " for line in lines)


def test_models_json_and_csv():
    rows = json.loads(run("models", "--format", "json").output)
    assert {r["name"]: r["params"] for r in rows}["vgg19_bn"] == 143_678_248
    csv_out = run("models", "--format", "csv", "--width", "0.5").output.splitlines()
    assert csv_out[0].startswith("name,config,depth") and len(csv_out) == 12


def test_one_model_shows_its_layers_and_shapes():
    result = run("models", "vgg16")
    assert result.exit_code == 0
    assert "vgg16: config D, 16 weight layers" in result.output
    assert "512x7x7" in result.output and "25088->4096" in result.output
    tiny = run("info", "a-lrn", "--width", "0.0625", "--head", "compact", "--image-size", "32",
               "--num-classes", "10", "--format", "json")
    layers = json.loads(tiny.output)
    assert layers[2]["type"] == "LocalResponseNorm" and layers[-1]["output"] == "10"


@pytest.mark.parametrize("args,message", [
    (("models", "vgg17"), "error: unknown model 'vgg17'; did you mean vgg19, vgg16, vgg13?"),
    (("info", "vgg16", "--width", "0"), "error: --width must be in (0, 4], got 0.0"),
    (("info", "vgg16", "--image-size", "16"), "error: image size 16 is too small for vgg16"),
    (("info", "vgg16", "--head", "big"), "error: unknown head 'big'"),
])
def test_user_errors_are_one_line_and_exit_2(args, message):
    result = run(*args)
    assert result.exit_code == 2
    assert result.output.strip().startswith(message)
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_help_is_fast_and_does_not_import_torch():
    code = "import sys; from vggbench.cli import main; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- export / verify from the command line --------------------------------------------------------------

TINY_ARGS = ["--width", "0.0625", "--hidden", "32", "--image-size", "32"]


def test_export_then_verify_as_a_user_types_it(tmp_path):
    out = tmp_path / "vgg11"
    result = run("export", "vgg11", *TINY_ARGS, "--out", out, "--progress")
    assert result.exit_code == 0, result.output
    assert "model.onnx" in result.stdout and "parity: 9 comparisons passed" in result.stdout
    assert f"wrote {out}" in result.stdout
    steps = [line.split("] ", 1)[1] for line in result.stderr.splitlines()]
    assert steps[:4] == ["export: torchscript (1/3)", "export: onnx (2/3)", "export: pt2 (3/3)",
                         "parity: comparing the 3 exported format(s) with the eager model"]
    assert "verify: onnxruntime cpu fp32 contiguous (2/3)" in steps
    # torch's deprecation notices, from the exporter and from loading the file for the parity check, recorded
    recorded = json.loads((out / "manifest.json").read_text())["warnings"]
    assert any(w.startswith("torchscript: FutureWarning") for w in recorded), recorded
    assert any(w.startswith("verify: FutureWarning: `torch.jit.load`") for w in recorded), recorded
    result = run("verify", out)  # not a terminal: no progress lines unless asked for
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("ok: 9 comparisons passed") and not result.stderr
    assert "backend warning(s) recorded, shown with --json" in result.stdout
    report = json.loads(run("verify", out, "--json", "--backends", "onnx", "--no-photos").output)
    assert report["passed"] and {r["inputs"] for r in report["results"]} == {"random x1", "random x3"}
    # both verifies are in the results database too, each comparison a case
    recorded = json.loads(run("history", "--kind", "verify", "--format", "json").stdout)
    assert [r["cases"] for r in recorded] == [9, len(report["results"])]
    again = run("export", "vgg11", *TINY_ARGS, "--out", out)
    assert again.exit_code == 2 and "already exists; pass --force" in again.output


@pytest.mark.parametrize("args,message", [
    (("verify", "nowhere"), "error: export folder nowhere does not exist"),
    (("export", "vgg16", "--weights", "missing.pth"), "error: weights file missing.pth does not exist"),
    (("export", "vgg16c", "--weights", "imagenet"), "error: vgg16c has no published ImageNet weights"),
    (("export", "vgg11", *TINY_ARGS, "--format", "tflite"), "error: unknown export format tflite"),
    (("export", "vgg11", "--width", "0.0625", "--image-size", "20"), "error: image size 20 is too small"),
])
def test_export_and_verify_errors_are_one_line(args, message):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith(message) and len(result.output.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def ts_export(tmp_path_factory):
    """A tiny TorchScript export (unchecked: these tests check options, not parity)."""
    out = tmp_path_factory.mktemp("cli") / "ts"
    result = run("export", "vgg11", *TINY_ARGS, "--out", out, "--formats", "torchscript", "--no-verify")
    assert result.exit_code == 0, result.output
    return out


def test_export_formats_and_the_older_format_spelling(ts_export, tmp_path):
    # --formats (the artifact formats; --format is a table's format in every other command), and --format kept
    assert sorted(p.name for p in ts_export.iterdir()) == ["manifest.json", "model.ts"]
    old = run("export", "vgg11", *TINY_ARGS, "--out", tmp_path / "old", "--format", "torchscript", "--no-verify")
    assert old.exit_code == 0, old.output
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == ["manifest.json", "model.ts"]
    assert "--formats, --format" in run("export", "--help").output
    bad = run("export", "vgg11", *TINY_ARGS, "--formats", "tflite")
    assert bad.exit_code == 2 and bad.output.startswith("error: unknown export format tflite")


@pytest.mark.parametrize("args,formats", [
    ((), ["contiguous"]),
    (("--memory-format", "channels_last"), ["channels_last"]),
    (("--memory-format", "contiguous,channels_last"), ["contiguous", "channels_last"]),
    (("--channels-last",), ["contiguous", "channels_last"]),  # the older spelling, meaning what it meant
    (("--no-channels-last",), ["contiguous"]),
])
def test_verify_memory_format_and_the_older_channels_last(ts_export, args, formats):
    result = run("verify", ts_export, "--backends", "torchscript", "--batch-sizes", "1", "--no-photos", "--data",
                 "none", "--json", *args)
    assert result.exit_code == 0, result.output
    assert [r["memory_format"] for r in json.loads(result.output)["results"]] == formats


@pytest.mark.parametrize("command", [["verify", "nowhere"], ["train", "vgg11"], ["eval", "vgg11"]])
def test_memory_format_and_channels_last_together_are_one_error(command):
    result = run(*command, "--memory-format", "contiguous", "--channels-last")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and "channels-last" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_verify_on_a_device_this_machine_lacks(tmp_path):
    import torch

    out = tmp_path / "e"
    assert run("export", "vgg11", *TINY_ARGS, "--out", out, "--format", "onnx", "--no-verify").exit_code == 0
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run("verify", out, "--device", "cuda")
    assert result.exit_code == 2
    assert result.output.strip() == ("error: device cuda requested but CUDA is not available (no CUDA device is "
                                     "visible); use --device cpu")


def test_models_and_info_show_a_config_files_net(tmp_path):
    config = tmp_path / "net.toml"
    config.write_text('name = "shownet"\nlayers = [16, "M", [8, 1], "M"]\nbatch_norm = true\n')
    listed = run("models", "--config", config, "--format", "json")
    assert listed.exit_code == 0, listed.output
    assert {"name": "shownet", "config": "custom", "depth": 5, "bn": True}.items() <= \
        next(r for r in json.loads(listed.output) if r["name"] == "shownet").items()
    shown = run("info", "shownet", "--config", config, "--image-size", "8", "--format", "json")
    assert shown.exit_code == 0, shown.output
    assert [r["detail"] for r in json.loads(shown.output)][:5] == ["3x3 3->16", "16", "", "2x2 /2", "1x1 16->8"]
