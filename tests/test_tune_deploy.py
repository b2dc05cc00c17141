"""`vggbench tune` (an Optuna search whose trials are ordinary timed cases, written as a results file `report` reads)
and `vggbench deploy` (a folder whose run.py reproduces a row with the runtime alone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from vggbench.bench.deploy import KIND, requirements, select
from vggbench.bench.results import read_run
from vggbench.bench.suite import Suite
from vggbench.bench.tune import TuneSettings, candidates, default_threads
from vggbench.cli import main
from vggbench.core.errors import ConfigError

TINY_ARGS = ("--width", "0.0625", "--hidden", "32", "--image-size", "32")
QUICK = ("--min-time", "0.05", "--warmup-time", "0", "--min-iters", "3", "--rounds", "1")


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def run_script(folder, tmp_path):
    """run.py in a fresh `python -I` (no script folder, no PYTHONPATH, no user site) from an empty folder: only the
    runtime and numpy can be imported there, and the script reports whether vggbench was."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    cwd = tmp_path / "elsewhere"
    cwd.mkdir(exist_ok=True)
    out = tmp_path / f"{folder.name}-result.json"
    done = subprocess.run([sys.executable, "-I", str(folder / "run.py"), "--time", "0.1", "--warmup-time", "0",
                           "--min-iters", "3", "--out", str(out)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    return done, (json.loads(out.read_text()) if out.exists() else None)


# --- settings and selection: fast ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"goal": "p99"}, "--goal p99 needs --bound-ms"),
    ({"goal": "latency", "bound_ms": 10.0}, "--bound-ms is for --goal p99"),
    ({"goal": "latency", "batch_size": 8}, "--goal latency is measured at batch 1"),
    ({"goal": "p99", "bound_ms": 5.0, "batch_size": 4}, "--goal p99 tries --batch-sizes"),
    ({"goal": "fastest"}, "unknown goal 'fastest'"),
    ({"trials": 0}, r"--trials must be in \[1, 10000\], got 0"),
])
def test_tune_settings_refuse_what_does_not_fit_the_goal(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TuneSettings(**kwargs)


def test_tune_bad_input_is_one_error_line():
    result = cli("tune", "vgg11", "--goal", "p99")
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        "error: --goal p99 needs --bound-ms (the p99 latency bound)"]
    result = cli("tune", "vgg11", "--ort-optimization", "basic")  # tune turns the backends' knobs itself
    assert result.exit_code == 2 and result.output.startswith("error: No such option")


def test_the_search_space_comes_from_the_backend_records():
    found, skipped = candidates(TuneSettings(backends=("onnxruntime", "winograd", "tensorrt"),
                                             precisions=("fp32", "int8")), Suite())
    space = {c.backend: c for c in found}
    assert set(space) == {"onnxruntime", "winograd"}
    # random weights: int8 is left out (judged by agreement on real images), and TensorRT needs CUDA
    assert space["onnxruntime"].precisions == ("fp32",) and any("int8" in s for s in skipped)
    assert any(s.startswith("tensorrt: does not run on cpu") for s in skipped)
    assert space["onnxruntime"].knobs["execution_mode"] == ("sequential", "parallel")
    assert "cudnn_conv_algo_search" not in space["onnxruntime"].knobs  # a CUDA knob
    assert space["winograd"].knobs["tiles"][0] == (2, 4, 6) and space["winograd"].memory_formats == ("channels_last",)
    assert default_threads()[0] == 1 and default_threads()[-1] >= default_threads()[0]
    with pytest.raises(ConfigError, match="nothing to tune"):
        candidates(TuneSettings(backends=("tensorrt",)), Suite())


def test_the_row_to_deploy_is_a_tunes_winner_or_one_chosen():
    rows = [{"backend": "eager", "batch_size": 1, "status": "ok"}, {"backend": "onnxruntime", "batch_size": 1,
                                                                    "status": "ok"},
            {"backend": "onnxruntime", "batch_size": 8, "status": "error"}]
    assert select({"results": rows, "settings": {"tune": {"winner": {"row": 1}}}}) == 1
    assert select({"results": rows, "settings": {}}, where="backend=onnxruntime") == 1  # the error row never ran
    assert select({"results": rows, "settings": {}}, row=2) == 2
    for kwargs, message in [({}, "no tune's with a winner"), ({"where": "batch_size=1"}, "matches 2 rows"),
                            ({"where": "colour=red"}, "key=value pairs of row fields"), ({"row": 3}, "rows 0 to 2")]:
        with pytest.raises(ConfigError, match=message):
            select({"results": rows, "settings": {}}, **kwargs)
    env = {"versions": {"numpy": "2.1.0", "torch": "2.9.0"}, "onnxruntime": {"version": "1.22.0"}}
    assert requirements("onnxruntime", env) == "onnxruntime==1.22.0\nnumpy==2.1.0\n"
    assert requirements("openvino", env) == "openvino\nnumpy==2.1.0\n"  # not recorded: unpinned, never guessed


# --- end to end: slow -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """A run of a tiny VGG11 on eager, onnxruntime and pt2 at batch 2, written as a results file (and into no results
    database: a module fixture runs before the tests' own VGGBENCH_DB is set)."""
    tmp = tmp_path_factory.mktemp("deploy")
    result = cli("run", "--models", "vgg11", *TINY_ARGS, "--batch-sizes", "2", "--backends", "eager,onnxruntime,pt2",
                 *QUICK, "--out", tmp / "run.json", "--export-cache", tmp / "cache", "--format", "csv", "--no-db")
    assert result.exit_code == 0, result.output
    return tmp, read_run(tmp / "run.json")


@pytest.mark.slow
@pytest.mark.parametrize("backend, artifact", [("onnxruntime", "model.onnx"), ("pt2", "model.pt2")])
def test_a_deployed_row_runs_with_its_runtime_alone(measured, tmp_path, backend, artifact):
    source, data = measured
    folder = tmp_path / f"deploy-{backend}"
    result = cli("deploy", source / "run.json", folder, "--where", f"backend={backend},memory_format=contiguous")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [artifact, "config.json", "expected.npy", "input.npy", "requirements.txt", "run.py", "safe_load.py"])
    config = json.loads((folder / "config.json").read_text())
    row = next(r for r in data["results"] if r["backend"] == backend and r["memory_format"] == "contiguous")
    assert config["kind"] == KIND and config["measured"]["images_per_s"] == row["images_per_s"]
    runtime = {"onnxruntime": "onnxruntime", "pt2": "torch"}[backend]
    version = data["environment"]["onnxruntime"]["version"] if backend == "onnxruntime" else \
        data["environment"]["versions"]["torch"]
    assert (folder / "requirements.txt").read_text().splitlines()[0] == f"{runtime}=={version}"
    done, report = run_script(folder, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert report["passed"] and report["reason"] == "ok" and report["batch_size"] == 2
    assert report["vggbench_imported"] is False and report["runtime"].startswith(runtime)
    assert report["images_per_s"] > 0 and report["iterations"] >= 3  # a figure, not a threshold
    assert report["measured_images_per_s"] == row["images_per_s"]
    # a changed artifact is refused before it is run
    with open(folder / artifact, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 0xFF]))
    done, _ = run_script(folder, tmp_path)
    assert done.returncode == 1 and "sha256" in done.stdout


@pytest.mark.slow
def test_deploy_refuses_what_it_cannot_ship_and_folders_it_did_not_make(measured, tmp_path):
    source, _ = measured
    eager = cli("deploy", source / "run.json", tmp_path / "eager", "--where", "backend=eager,memory_format=contiguous")
    assert eager.exit_code == 2 and "runs vggbench's own code" in eager.output
    assert not (tmp_path / "eager").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for extra in ((), ("--force",)):
        result = cli("deploy", source / "run.json", mine, "--where", "backend=onnxruntime", *extra)
        assert result.exit_code == 2 and result.output.startswith("error:"), result.output
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    pt2 = ("--where", "backend=pt2,memory_format=contiguous")
    first = cli("deploy", source / "run.json", tmp_path / "again", *pt2)
    again = cli("deploy", source / "run.json", tmp_path / "again", *pt2, "--force")
    assert first.exit_code == 0 and again.exit_code == 0, again.output  # its own folder, replaced whole


def tiny_tune(tmp_path, backend: str) -> tuple:
    """Three trials of a tiny VGG11 over one backend, one thread, no pruning: (the file, its data, its tune block)."""
    out = tmp_path / "tune.json"
    result = cli("tune", "vgg11", *TINY_ARGS, "--trials", "3", "--backends", backend, "--threads", "1",
                 "--no-prune", *QUICK, "--out", out, "--export-cache", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    data = read_run(out)
    return out, data, data["settings"]["tune"]


@pytest.mark.slow
def test_a_tiny_tune_is_a_results_file_with_its_trials_and_a_deployable_winner(tmp_path):
    out, data, block = tiny_tune(tmp_path, "onnxruntime")
    assert block["goal"] == "latency" and len(block["trials"]) == 3 and block["pruner"] == "NopPruner"
    assert block["trials"][0]["defaults"] and block["trials"][0]["settings"]["optimization"] == "all"  # the start
    assert all(t["state"] == "COMPLETE" and t["backend"] == "onnxruntime" for t in block["trials"])
    # every trial is a row of its own, with the settings it ran with
    assert len(data["results"]) == 3
    for t in block["trials"]:
        row = data["results"][t["row"]]
        assert row["status"] == "ok" and row["batch_size"] == 1 and row["median_ms"] == t["value"]
        assert {k: row["backend_settings"][k] for k in t["settings"]} == t["settings"]
    winner = block["winner"]
    assert winner["value"] == min(t["value"] for t in block["trials"])
    # and the search is a run of the results database, as every run, loadgen and verify is
    history = cli("history", "--kind", "tune", "--format", "json")
    assert history.exit_code == 0 and [r["kind"] for r in json.loads(history.stdout)] == ["tune"]
    shown = cli("report", out)
    assert shown.exit_code == 0 and f"winner: trial {winner['trial']} (row {winner['row']})" in shown.output
    folder = tmp_path / "winner"
    deployed = cli("deploy", out, folder)
    assert deployed.exit_code == 0, deployed.output
    config = json.loads((folder / "config.json").read_text())
    assert config["source"]["row"] == winner["row"] and config["runtime"] == "onnxruntime"
    assert config["runtime_config"]["session_options"]["execution_mode"] == \
        "ORT_" + data["results"][winner["row"]]["backend_settings"]["execution_mode"].upper()


@pytest.mark.slow
def test_settings_already_run_are_not_run_again_and_a_spent_space_stops_the_search(tmp_path):
    # torchscript has no knobs: its memory formats are the whole space (one thread, one batch size), asked for
    # again and again
    out, data, block = tiny_tune(tmp_path, "torchscript")
    ran = [t for t in block["trials"] if t["state"] == "COMPLETE"]
    repeats = [t for t in block["trials"] if t["state"] == "DUPLICATE"]
    formats = [t["memory_format"] for t in ran]
    assert len(formats) == len(set(formats)) == len(data["results"]) <= 2  # each setting timed once
    by_format = {t["memory_format"]: t for t in ran}
    assert repeats and all(t["reason"] == f"the settings of trial {by_format[t['memory_format']]['number']}: not run "
                           f"again" and t["value"] == by_format[t["memory_format"]]["value"] for t in repeats)
    assert "a small space is spent" in block["stopped"] and block["winner"]["trial"] in {t["number"] for t in ran}
    shown = cli("report", out)
    assert shown.exit_code == 0 and "DUPLICATE" in shown.output and "a small space is spent" in shown.output


def test_each_goal_values_a_row_as_it_says():
    from types import SimpleNamespace

    row = SimpleNamespace(status="ok", median_ms=20.0, p99_ms=30.0, images_per_s=400.0)
    assert TuneSettings(goal="latency").value(row) == 20.0
    assert TuneSettings(goal="throughput", batch_size=8).value(row) == 400.0
    assert TuneSettings(goal="p99", bound_ms=30.0).value(row) == 400.0  # the bound is inclusive
    assert TuneSettings(goal="p99", bound_ms=29.9).value(row) is None  # over it: the trial fails
    assert TuneSettings().value(SimpleNamespace(status="parity_failed", median_ms=None)) is None
    assert TuneSettings(goal="p99", bound_ms=5.0).sizes() == (1, 2, 4, 8) and TuneSettings().sizes() == (1,)
    assert TuneSettings(goal="throughput").sizes() == (8,)


def test_a_knob_names_a_setting_and_its_values():
    from vggbench.backends.onnxruntime import OrtSettings
    from vggbench.backends.registry import Knob

    assert Knob("optimization").values(OrtSettings) == ("disable", "basic", "extended", "all")
    assert Knob("spinning").values(OrtSettings) == (False, True)
    with pytest.raises(ValueError, match="has no setting 'colour'"):
        Knob("colour").values(OrtSettings)
    with pytest.raises(ValueError, match="needs its values"):
        Knob("threads").values(OrtSettings)  # a number in a range: the record must list what to try


def test_int8_knobs_are_searched_at_int8_only_and_exclusive_ones_are_refused():
    import optuna

    from vggbench.backends.registry import get_backend
    from vggbench.bench.tune import Candidate, defaults, invalid, suggest

    ort = get_backend("onnxruntime")
    fp32, int8 = ort.knob_space("cpu", "fp32"), ort.knob_space("cpu", "int8")
    assert "nchwc" in fp32 and not {"nhwc", "int8_method", "int8_plan"} & set(fp32)
    assert int8["int8_method"] == ("minmax", "percentile", "entropy", "nncf") and int8["nhwc"] == (False, True)
    assert get_backend("openvino").knob_space("cpu", "int8")["int8_plan"] == ("all", "auto")
    assert int8["int8_reduce_range"] == (False, True) and "int8_reduce_range" not in fp32
    found = [Candidate("onnxruntime", ("fp32", "int8"), ("contiguous",), ort.knob_space("cpu"),
                       {"fp32": fp32, "int8": int8})]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(12):
        choice = suggest(study.ask(), TuneSettings(), found, (1,))
        assert set(choice["settings"]) == set(int8 if choice["precision"] == "int8" else fp32)
    first = defaults(found, TuneSettings(), (1, 2))
    assert [json.loads(p["onnxruntime.precision"]) for p in first] == ["fp32", "int8"]
    assert json.loads(first[1]["onnxruntime.int8_method"]) == "minmax" and first[1]["threads"] == "2"
    assert json.loads(first[1]["onnxruntime.nhwc"]) is True and "onnxruntime.nhwc" not in first[0]
    assert invalid({"backend": "onnxruntime", "settings": {"int8_method": "nncf", "int8_plan": "auto"}}) \
        .startswith("int8_plan auto (layers kept in fp32) needs onnxruntime's quantizer")
    assert invalid({"backend": "onnxruntime", "settings": {"int8_method": "entropy"}}) is None
    assert invalid({"backend": "openvino", "settings": {"int8_method": "nncf", "int8_reduce_range": True}}) \
        .startswith("int8_reduce_range (7-bit weights) is onnxruntime's quantizer's")


def test_each_int8_quantization_is_an_export_of_its_own(tiny):
    from vggbench.backends import resolve_target
    from vggbench.backends.onnxruntime import OrtSettings
    from vggbench.bench.cache import ExportCache
    from vggbench.zoo.weights import load_model

    cache = ExportCache("cache", load_model("vgg11", **tiny), 32)
    int8, fp32 = resolve_target("onnxruntime", "cpu", "int8"), resolve_target("onnxruntime", "cpu", "fp32")
    default = cache.path(int8)
    assert cache.path(int8, OrtSettings()) == default  # vggbench's default quantization keeps its folder
    entropy = cache.path(int8, OrtSettings(int8_method="entropy"))
    mixed = cache.path(int8, OrtSettings(int8_plan="auto"))
    assert len({default, entropy, mixed}) == 3
    assert cache.quant(int8, OrtSettings(int8_plan="auto")).keep_fp32 == ("auto",)
    # 7-bit weights are an export of their own too, and the quantizer is told so
    assert cache.quant(int8, OrtSettings(int8_reduce_range=True)).reduce_range
    assert cache.path(int8, OrtSettings(int8_reduce_range=True)) not in {cache.path(int8), entropy, mixed}
    assert cache.path(fp32, OrtSettings(int8_method="entropy")) == cache.path(fp32)  # fp32 has no quantization


def test_onnxruntime_layout_settings_change_the_graph_it_runs(tmp_path):
    """NCHWc (fp32 convolutions) and NHWC (int8 QLinearConv) are onnxruntime's own rewrites, turned off by name: the
    optimised graph shows which ran; the deploy folder's configuration carries the same entries."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from vggbench.backends.onnxruntime import OrtSettings, deploy_config

    # a VGG block (conv, relu, pool): what the rewrites act on, exported by the TorchScript exporter (seconds
    # faster than a model through vggbench's export)
    block = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU()).eval()
    fp32 = tmp_path / "block.onnx"
    torch.onnx.export(block, torch.randn(1, 3, 16, 16), str(fp32), input_names=["x"], dynamo=False)

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.batches = iter([{"x": rng.standard_normal((1, 3, 16, 16)).astype("float32")} for _ in range(2)])

        def get_next(self):
            return next(self.batches, None)

    int8 = tmp_path / "int8.onnx"
    quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)

    def ops(path, settings):
        config = deploy_config(settings, {})
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        for key, value in config["session_config"].items():
            options.add_session_config_entry(key, value)
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return {f"{n.domain}:{n.op_type}" for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}

    if ort.capi._pybind_state.get_device() == "CPU" and "com.microsoft.nchwc:Conv" in ops(fp32, OrtSettings()):
        assert "com.microsoft.nchwc:Conv" not in ops(fp32, OrtSettings(nchwc=False))  # an x86 with AVX2 or AVX-512
    assert "com.microsoft:NhwcMaxPool" in ops(int8, OrtSettings())
    assert "com.microsoft:NhwcMaxPool" not in ops(int8, OrtSettings(nhwc=False))
    assert deploy_config(OrtSettings(nchwc=False, nhwc=False), {})["session_config"][
        "optimization.disable_specified_optimizers"] == "NchwcTransformer;NhwcTransformer"
