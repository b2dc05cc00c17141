"""`vggbench run --cross-check` (vggbench.bench.crosscheck): each tool's command line made from a row, what the
tools print read back, a failed check kept as data, and a tiny run whose every ok row carries a cross-check."""

from __future__ import annotations

import contextlib
import io
import json
import statistics
import sys
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

import vggbench.bench.crosscheck as crosscheck
import vggbench.core.load as crosscheck_load  # where the tool's memory is read
from tests.conftest import TINY, TINY_IMAGE, benchmark_script
from vggbench.backends.compile import CompileSettings
from vggbench.backends.onnxruntime import OrtSettings
from vggbench.backends.openvino import OvSettings
from vggbench.backends.tensorrt import TrtSettings
from vggbench.bench.crosscheck import Plan, Subject, ToolMissing
from vggbench.bench.results import read_run
from vggbench.bench.rows import BenchResult
from vggbench.bench.suite import Suite, parse_suite
from vggbench.cli import main

ONNX = Path("/exports/vgg11/model.onnx")


def row(backend="onnxruntime", settings=None, **fields) -> BenchResult:
    base = dict(model="vgg11", image_size=32, batch_size=8, backend=backend, device="cpu", precision="fp32",
                memory_format="contiguous", threads=2, weights="random (seed 0)", warmup=2, warmup_time_s=0.5,
                min_time_s=2.5, min_iters=5, max_iters=100, backend_settings=settings.to_dict() if settings else None,
                images_per_s=100.0, median_ms=80.0)
    return BenchResult(**{**base, **fields})


def after(command, flag):
    return command[command.index(flag) + 1]


# --- command lines -------------------------------------------------------------------------------------------

def test_benchmark_app_gets_the_rows_compile_configuration_from_a_file(tmp_path):
    r = row("openvino", OvSettings(threads=2, cache_dir=""))
    plan = crosscheck.openvino_plan(r, Subject(artifact=ONNX), tmp_path, app=["benchmark_app"])
    c = list(plan.command)
    assert c[:5] == ["benchmark_app", "-m", str(ONNX), "-d", "CPU"]
    config = json.loads(Path(after(c, "-load_config")).read_text())
    assert config == {"CPU": {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                              "INFERENCE_NUM_THREADS": "2"}}
    assert plan.config == config["CPU"]  # recorded in the block: the file is temporary
    # one synchronous request per batch of the row's size, fed f32 (not benchmark_app's u8 images), for the
    # row's budget rounded up to whole seconds (benchmark_app takes no fractions)
    assert after(c, "-api") == "sync" and after(c, "-ip") == "f32"
    assert after(c, "-shape") == "[8,3,32,32]" and after(c, "-t") == "3"
    assert "-hint" not in c and "-nthreads" not in c  # benchmark_app refuses -nthreads beside a hint
    assert plan.tool == "benchmark_app"
    # one request at a time: the batch over its median latency, the row's statistic, not its FPS (a mean)
    assert plan.parse(BENCHMARK_APP)["images_per_s"] == pytest.approx(8 / 0.56509e-3)


def test_benchmark_app_throughput_streams_precision_dynamic_batch_and_defaults(tmp_path):
    tput = crosscheck.openvino_plan(row("openvino", OvSettings(hint="THROUGHPUT", streams=2, threads=2, cache_dir="")),
                                    Subject(artifact=ONNX), tmp_path, app=["benchmark_app"])
    assert tput.config["NUM_STREAMS"] == "2" and tput.config["PERFORMANCE_HINT"] == "THROUGHPUT"
    # vggbench's THROUGHPUT runner sends single images over the plugin's requests
    assert after(tput.command, "-api") == "async" and after(tput.command, "-shape") == "[1,3,32,32]"
    assert tput.parse(BENCHMARK_APP)["images_per_s"] == 9925.85  # overlapping requests: its FPS
    bf16 = crosscheck.openvino_plan(row("openvino", OvSettings(static_batch=False, cache_dir=""), precision="bf16"),
                                    Subject(artifact=ONNX), tmp_path, app=["benchmark_app"])
    assert bf16.config["INFERENCE_PRECISION_HINT"] == "bf16" and "INFERENCE_NUM_THREADS" not in bf16.config
    assert after(bf16.command, "-data_shape") == "[8,3,32,32]" and "-shape" not in bf16.command
    int8 = crosscheck.openvino_plan(row("openvino", OvSettings(cache_dir="/c"), precision="int8"),
                                    Subject(artifact=Path("/e/model.int8.onnx")), tmp_path, app=["benchmark_app"])
    assert "INFERENCE_PRECISION_HINT" not in int8.config and int8.config["CACHE_DIR"] == "/c"
    assert after(int8.command, "-m") == "/e/model.int8.onnx"
    defaults = crosscheck.openvino_plan(row("openvino", OvSettings(defaults=True)), Subject(artifact=ONNX),
                                        tmp_path, app=["benchmark_app"])
    assert after(defaults.command, "-hint") == "none" and "-load_config" not in defaults.command
    assert defaults.config is None and after(defaults.command, "-data_shape") == "[8,3,32,32]"


def test_benchmark_app_is_found_beside_this_python():
    app = crosscheck.benchmark_app()
    assert Path(app[0]).name == "benchmark_app" or app[:2] == [sys.executable, "-c"]


def test_onnxruntime_runs_bare_in_an_isolated_python():
    r = row("onnxruntime", OrtSettings(optimization="basic", threads=2))
    c = list(crosscheck.onnxruntime_plan(r, Subject(artifact=ONNX)).command)
    # -I: neither the script's folder nor PYTHONPATH on the path, so that no vggbench can be imported there
    assert c[:3] == [sys.executable, "-I", str(crosscheck.TIMERS / "ort_timer.py")] and c[3] == str(ONNX)
    imports = [line for line in (crosscheck.TIMERS / "ort_timer.py").read_text().splitlines()
               if line.lstrip().startswith(("import ", "from "))]
    assert imports and not any("vggbench" in line for line in imports)
    assert after(c, "--optimization") == "basic" and after(c, "--threads") == "2"
    assert after(c, "--provider") == "cpu" and after(c, "--batch") == "8" and after(c, "--image-size") == "32"
    assert after(c, "--time") == "2.5" and after(c, "--warmup-time") == "0.5" and after(c, "--max-iters") == "100"
    assert "--tf32" not in c and "--cuda-graph" not in c
    assert "--no-nchwc" not in c and "--no-nhwc" not in c  # onnxruntime's layouts, as the row had them
    layouts = crosscheck.onnxruntime_plan(row("onnxruntime", OrtSettings(nchwc=False, nhwc=False)),
                                          Subject(artifact=ONNX)).command
    assert "--no-nchwc" in layouts and "--no-nhwc" in layouts
    cuda = crosscheck.onnxruntime_plan(row("onnxruntime", OrtSettings(cuda_graph=True, tf32=True), device="cuda:1"),
                                       Subject(artifact=ONNX)).command
    assert after(cuda, "--provider") == "cuda" and after(cuda, "--device") == "cuda:1"
    assert {"--tf32", "--cuda-graph"} <= set(cuda) and "--threads" not in cuda
    trt = crosscheck.onnxruntime_plan(row("ort-tensorrt", OrtSettings(trt_builder_optimization_level=4), device="cuda",
                                          precision="fp16"),
                                      Subject(artifact=ONNX)).command
    assert after(trt, "--provider") == "tensorrt" and "--fp16" in trt and after(trt, "--trt-optimization-level") == "4"


@pytest.mark.parametrize("backend", ["torchscript", "pt2"])
def test_torch_artifacts_are_loaded_by_torch_alone(backend):
    path = Path(f"/exports/model.{backend}")
    plan = crosscheck.torch_artifact_plan(row(backend, memory_format="channels_last", precision="bf16"),
                                          Subject(artifact=path))
    c = list(plan.command)
    assert c[:3] == [sys.executable, "-I", str(crosscheck.TIMERS / "torch_timer.py")]
    assert after(c, "--artifact") == backend and after(c, "--path") == str(path) and after(c, "--threads") == "2"
    assert after(c, "--memory-format") == "channels_last" and after(c, "--precision") == "bf16"
    assert ("torch.jit.load" if backend == "torchscript" else "torch.export.load") in plan.tool


def test_module_backends_rebuild_the_model_with_vggbench_in_a_fresh_process():
    subject = Subject(model_settings={"width": 0.0625, "hidden": [32], "weights": "random", "seed": 3}, dense_size=64)
    plan = crosscheck.torch_build_plan(row("compile", CompileSettings(mode="max-autotune", freezing=True)), subject)
    c = list(plan.command)
    assert c[:5] == [sys.executable, "-m", "vggbench.bench.timers.torch_timer", "--build", "compile"]
    assert plan.cwd == str(crosscheck.PACKAGE_ROOT)  # the same vggbench as this one
    assert json.loads(after(c, "--model-settings")) == subject.model_settings and after(c, "--model") == "vgg11"
    assert after(c, "--compile-mode") == "max-autotune" and "--compile-freezing" in c
    assert after(c, "--dense-size") == "64"
    assert "vggbench's load_model" in plan.tool and "torch.compile" in plan.tool
    eager = crosscheck.torch_build_plan(row("eager"), Subject(model_settings={})).command
    assert "--compile-mode" not in eager and "--dense-size" not in eager
    winograd = crosscheck.torch_build_plan(row("winograd", memory_format="channels_last"), Subject(model_settings={}))
    assert "winograd runner" in winograd.tool


def test_cuda_flags_reach_the_torch_timer_only_on_cuda():
    cuda = crosscheck.torch_build_plan(row("eager", device="cuda:0"),
                                       Subject(model_settings={}, tf32=True, cudnn_benchmark=False)).command
    assert "--tf32" in cuda and after(cuda, "--cudnn-benchmark") == "off"
    cpu = crosscheck.torch_build_plan(row("eager"), Subject(model_settings={}, tf32=True, cudnn_benchmark=True)).command
    assert "--tf32" not in cpu and "--cudnn-benchmark" not in cpu


def test_model_settings_are_the_suites_with_absolute_paths(tmp_path, monkeypatch):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    suite = Suite(models=("vgg11",), weights="w.pth", seed=4, width=0.0625, hidden=(32,))
    assert crosscheck.model_settings(suite) == {"weights": str(weights), "seed": 4, "width": 0.0625, "hidden": [32]}


def test_tensorrt_uses_trtexec_then_polygraphy_else_says_not_installed(monkeypatch):
    r = row("tensorrt", TrtSettings(max_batch=16, workspace_gib=2.0, builder_optimization_level=5), device="cuda:1",
            precision="fp16")
    c = crosscheck.tensorrt_plan(r, Subject(artifact=ONNX), trtexec="trtexec").command
    assert "--builderOptimizationLevel=5" in c  # the engine is built as the row's was
    assert c[:3] == ("trtexec", f"--onnx={ONNX}", "--fp16") and "--noTF32" in c and "--noDataTransfers" in c
    assert "--minShapes=input:1x3x32x32" in c and "--optShapes=input:8x3x32x32" in c
    assert "--maxShapes=input:16x3x32x32" in c and "--shapes=input:8x3x32x32" in c
    assert "--memPoolSize=workspace:2048M" in c and "--device=1" in c and "--duration=3" in c
    static = crosscheck.tensorrt_plan(row("tensorrt", TrtSettings(tf32=True), device="cuda"),
                                      Subject(artifact=ONNX, static_batch=8), trtexec="trtexec").command
    assert not any(a.startswith("--shapes") for a in static) and "--noTF32" not in static
    poly = crosscheck.tensorrt_plan(r, Subject(artifact=ONNX), polygraphy="polygraphy")
    assert poly.tool == "polygraphy run" and poly.command[:4] == ("polygraphy", "run", str(ONNX), "--trt")
    # as many calls as the row's median says fill its budget: 2.5 s / 80 ms
    assert after(poly.command, "--iterations") == "32" and after(poly.command, "--input-shapes") == "input:[8,3,32,32]"
    assert after(poly.command, "--builder-optimization-level") == "5"
    monkeypatch.setattr(crosscheck, "_tool", lambda name: None)
    with pytest.raises(ToolMissing, match="not installed"):
        crosscheck.tensorrt_plan(r, Subject(artifact=ONNX))


# --- what the tools print --------------------------------------------------------------------------------------

BENCHMARK_APP = """\
[Step 10/11] Measuring performance (Start inference synchronously, limits: 1000 ms duration)
[ INFO ] Benchmarking in inference only mode (inputs filling are not included in measurement loop).
[ INFO ] First inference took 2.44 ms
[Step 11/11] Dumping statistics report
[ INFO ] Execution Devices:['CPU']
[ INFO ] Count:            1244 iterations
[ INFO ] Duration:         1002.63 ms
[ INFO ] Latency:
[ INFO ]    Median:        565.09 us
[ INFO ]    Average:       788.80 us
[ INFO ]    Min:           344.22 us
[ INFO ]    Max:           16960.03 us
[ INFO ] Throughput:   9925.85 FPS
"""

TRTEXEC = """\
[12/06/2026-10:00:00] [I] === Performance summary ===
[12/06/2026-10:00:00] [I] Throughput: 412.5 qps
[12/06/2026-10:00:00] [I] Latency: min = 2.31 ms, max = 3.02 ms, mean = 2.44 ms, median = 2.42 ms, percentile(90%) = 2.5 ms
[12/06/2026-10:00:00] [I] Enqueue Time: min = 0.01 ms, max = 0.05 ms, mean = 0.02 ms, median = 0.02 ms
[12/06/2026-10:00:00] [I] GPU Compute Time: min = 2.30 ms, max = 3.00 ms, mean = 2.41 ms, median = 2.40 ms, percentile(90%) = 2.48 ms
[12/06/2026-10:00:00] [I] Total Host Walltime: 3.00421 s
[12/06/2026-10:00:00] [I] Total GPU Compute Time: 2.98 s
"""

POLYGRAPHY = ("[I] trt-runner-N0-12/06/26-10:00:00    | Completed 32 iteration(s) in 80.64 ms | "
              "Average inference time: 2.52 ms.\n[I] PASSED | Runtime: 9.1s\n")


def test_benchmark_app_output_reads_as_images_per_second():
    # sync at batch 8: its FPS is 8 x 1244 iterations / 1.00263 s, images not requests
    assert crosscheck.parse_benchmark_app(BENCHMARK_APP) == {
        "images_per_s": 9925.85, "median_ms": pytest.approx(0.56509), "throughput_fps": 9925.85, "iterations": 1244,
        "timed_s": pytest.approx(1.00263)}
    # a synchronous run's images/s is the batch over its median latency; its FPS is kept beside
    sync = crosscheck.parse_benchmark_app(BENCHMARK_APP, batch=8)
    assert sync["images_per_s"] == pytest.approx(8 / 0.56509e-3) and sync["throughput_fps"] == 9925.85
    with pytest.raises(ValueError, match="Median"):
        crosscheck.parse_benchmark_app(BENCHMARK_APP.replace("Median", "Middle"), batch=8)
    ms = crosscheck.parse_benchmark_app(BENCHMARK_APP.replace("565.09 us", "12.5 ms"))
    assert ms["median_ms"] == 12.5
    with pytest.raises(ValueError, match="Throughput"):
        crosscheck.parse_benchmark_app("[ ERROR ] Input shape mismatch\n")


def test_trtexec_qps_counts_batches_and_polygraphy_gives_a_mean():
    assert crosscheck.parse_trtexec(TRTEXEC, 8) == {"images_per_s": 3300.0, "median_ms": 2.40, "iterations": None,
                                                    "timed_s": 3.00421}
    no_gpu_line = crosscheck.parse_trtexec(TRTEXEC.replace("GPU Compute Time: min", "Compute: min"), 8)
    assert no_gpu_line["median_ms"] == 2.42
    assert crosscheck.parse_polygraphy(POLYGRAPHY, 8) == {"images_per_s": pytest.approx(8 / 2.52e-3),
                                                          "median_ms": None, "iterations": 32,
                                                          "timed_s": pytest.approx(0.08064)}
    with pytest.raises(ValueError):
        crosscheck.parse_trtexec("[E] Engine could not be created\n", 8)


def test_timer_output_is_its_last_json_line():
    text = 'W1206 a warning\n{"images_per_s": 250.0, "median_ms": 4.0, "iterations": 40, "timed_s": 0.16}\n'
    assert crosscheck.parse_json_line(text) == {"images_per_s": 250.0, "median_ms": 4.0, "iterations": 40,
                                                "timed_s": 0.16}
    # the torch timer's page faults and kernel share are kept where it gives them
    usage = '{"images_per_s": 2.0, "median_ms": 500, "faults_per_call": 0.0, "kernel_pct": 0.1, "torch": "2"}\n'
    assert crosscheck.parse_json_line(usage) == {"images_per_s": 2.0, "median_ms": 500, "iterations": None,
                                                 "timed_s": None, "faults_per_call": 0.0, "kernel_pct": 0.1}
    with pytest.raises(ValueError):
        crosscheck.parse_json_line('{"images_per_s": 0}\n')
    with pytest.raises(ValueError):
        crosscheck.parse_json_line("Traceback (most recent call last):\n")


# --- running a tool: a failure is data ------------------------------------------------------------------------

def python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


def test_execute_makes_the_block_with_the_ratio():
    line = json.dumps({"images_per_s": 200.0, "median_ms": 5.0, "iterations": 10, "timed_s": 0.05})
    block = crosscheck.execute(Plan("a tool", python(f"print({line!r})"), crosscheck.parse_json_line), 150.0, 60)
    assert block["tool"] == "a tool" and block["command"] == list(python(f"print({line!r})"))
    assert block["images_per_s"] == 200.0 and block["median_ms"] == 5.0 and block["ratio"] == 0.75
    assert block["seconds"] > 0 and block["iterations"] == 10 and "error" not in block


def test_a_failing_slow_or_unreadable_tool_is_an_error_in_the_block():
    failed = crosscheck.execute(Plan("t", python("import sys; print('loading'); sys.exit('error: no such model')"),
                                     crosscheck.parse_json_line), 1.0, 60)
    assert failed["error"] == "exit status 1: error: no such model" and "images_per_s" not in failed
    slow = crosscheck.execute(Plan("t", python("import time; time.sleep(30)"), crosscheck.parse_json_line), 1.0, 0.5)
    assert slow["error"] == "timed out after 0 s" or slow["error"].startswith("timed out after")
    garbled = crosscheck.execute(Plan("t", python("print('hello')"), crosscheck.parse_json_line), 1.0, 60)
    assert garbled["error"] == "its output could not be read: no JSON line in its output"
    missing = crosscheck.execute(Plan("t", ("/no/such/tool",), crosscheck.parse_json_line), 1.0, 60)
    assert missing["error"].startswith("could not start it: FileNotFoundError")


def test_after_a_tool_that_held_much_memory_the_host_is_let_settle(monkeypatch):
    # the host takes back what the tool frees: wait as long as settle_time_s says for the most memory it was seen
    # to hold, before the row's next round; record both, on a failed tool too
    slept, seen = [], []
    monkeypatch.setattr(crosscheck, "_reporting", lambda: True)
    monkeypatch.setattr(crosscheck, "WATCH_S", 0.05)
    monkeypatch.setattr(crosscheck_load, "anon_rss_bytes", lambda pid: seen.append(pid) or 3 * 2**30)
    monkeypatch.setattr(crosscheck, "_sleep", slept.append)
    line = json.dumps({"images_per_s": 200.0, "median_ms": 5.0})
    block = crosscheck.execute(Plan("t", python(f"import time; time.sleep(0.5); print({line!r})"),
                                    crosscheck.parse_json_line), 100.0, 60)
    assert block["ratio"] == 0.5 and block["settled_s"] == 20.0 and block["anon_peak_mb"] == 3072
    assert slept == [20.0] and seen
    failed = crosscheck.execute(Plan("t", python("import time, sys; time.sleep(0.3); sys.exit('error: boom')"),
                                     crosscheck.parse_json_line), 100.0, 60)
    assert failed["error"] == "exit status 1: error: boom" and failed["settled_s"] == 20.0
    # a host that keeps freed memory (or a tool too quick to be read): no wait
    monkeypatch.setattr(crosscheck, "_reporting", lambda: False)
    assert crosscheck.execute(Plan("t", python(f"import time; time.sleep(0.3); print({line!r})"),
                                   crosscheck.parse_json_line), 100.0, 60)["settled_s"] == 0.0
    monkeypatch.setattr(crosscheck, "_reporting", lambda: True)
    monkeypatch.setattr(crosscheck_load, "anon_rss_bytes", lambda pid: None)
    quick = crosscheck.execute(Plan("t", python(f"print({line!r})"), crosscheck.parse_json_line), 100.0, 60)
    assert quick["settled_s"] == 0.0 and "anon_peak_mb" not in quick and len(slept) == 2


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, RuntimeError])
def test_a_tool_is_killed_when_its_run_is_interrupted(tmp_path, monkeypatch, interruption):
    # Ctrl-C (or SIGTERM, or anything raised) while the tool runs: the tool goes too, as with subprocess.run, and is
    # reaped; left alone it would sleep on (an orphan, after Ctrl-C) or be waited for and write "finished"
    started, finished = tmp_path / "started", tmp_path / "finished"
    monkeypatch.setattr(crosscheck, "WATCH_S", 0.05)

    def interrupt(pid):
        if started.exists():
            raise interruption
        return None

    monkeypatch.setattr(crosscheck_load, "anon_rss_bytes", interrupt)
    code = (f"import os, time, pathlib; pathlib.Path({str(started)!r}).write_text(str(os.getpid())); "
            f"time.sleep(15); pathlib.Path({str(finished)!r}).touch()")
    with pytest.raises(interruption):
        crosscheck.execute(Plan("t", python(code), crosscheck.parse_json_line), 1.0, 120)
    assert not finished.exists() and not Path(f"/proc/{started.read_text()}").exists()


def test_the_tools_runs_spread_over_the_rounds_and_make_one_block():
    assert [crosscheck.chunk_rounds(n) for n in (1, 2, 3, 5, 8)] == [(1,), (1, 2), (1, 2, 3), (1, 2, 3, 4, 5),
                                                                      (1, 3, 5, 6, 8)]
    row_ = row(status="ok", images_per_s=10.0)
    runs = [{"tool": "t", "command": ["t", str(i)], "images_per_s": v, "median_ms": 1e3 / v, "seconds": 2.0,
             "iterations": 4, "timed_s": 1.0} for i, v in enumerate((8.0, 12.0, 9.0))]
    block = crosscheck.combine(row_, runs).cross_check
    assert block["images_per_s"] == 9.0 and block["ratio"] == pytest.approx(10 / 9)
    assert block["median_ms"] == pytest.approx(1e3 / 9) and block["seconds"] == 6.0 and block["iterations"] == 12
    assert block["command"] == ["t", "2"] and block["runs"] == runs
    failed = crosscheck.combine(row_, [runs[0], {"tool": "t", "error": "exit status 1: boom"}]).cross_check
    assert failed["error"] == "exit status 1: boom" and len(failed["runs"]) == 2 and "ratio" not in failed
    one = crosscheck.combine(row_, runs[:1]).cross_check
    assert "runs" not in one and one["ratio"] == pytest.approx(10 / 8)
    assert "settled_s" not in block and "anon_peak_mb" not in block
    waited = [r | {"settled_s": s, "anon_peak_mb": m} for r, s, m in zip(runs, (21.0, 0.0, 14.7), (3072, 500, 2100), strict=True)]
    block = crosscheck.combine(row_, waited).cross_check
    assert block["settled_s"] == 35.7 and block["anon_peak_mb"] == 3072
    assert crosscheck.combine(row_, []) is row_
    # the timers' usage is the median of the runs that give it; a block without it says nothing of it
    assert "faults_per_call" not in block
    used = [r | {"faults_per_call": f, "kernel_pct": k} for r, f, k in zip(runs, (0.0, 900.0, 30.0), (0.1, 5, 2),
                                                                          strict=True)]
    assert crosscheck.combine(row_, used).cross_check.items() >= {"faults_per_call": 30.0, "kernel_pct": 2}.items()


def test_every_tool_gets_the_rows_calls_as_well_as_its_seconds_split_over_its_runs(tmp_path, monkeypatch):
    # a slow row (VGG16 at batch 8: over a second a call) left two or three calls in a tool run's seconds; the
    # count is a budget on both sides: the row's min_iters over its rounds, the tool's over its runs
    r = row("onnxruntime", OrtSettings(), min_iters=30, min_time_s=9.0)
    assert after(crosscheck.onnxruntime_plan(r, Subject(artifact=ONNX)).command, "--min-iters") == "30"
    sync = crosscheck.openvino_plan(row("openvino", OvSettings(cache_dir=""), min_iters=30), Subject(artifact=ONNX),
                                    tmp_path, app=["benchmark_app"]).command
    assert after(sync, "-niter") == "30" and after(sync, "-t") == "3"  # it goes on while either is left
    tput = crosscheck.openvino_plan(row("openvino", OvSettings(hint="THROUGHPUT", cache_dir=""), min_iters=30),
                                    Subject(artifact=ONNX), tmp_path, app=["benchmark_app"]).command
    assert after(tput, "-niter") == str(30 * 8)  # its requests are single images
    eager = crosscheck.torch_build_plan(row("eager", min_iters=30), Subject(model_settings={})).command
    assert after(eager, "--min-iters") == "30"
    trt = crosscheck.tensorrt_plan(row("tensorrt", TrtSettings(), device="cuda", min_iters=30),
                                   Subject(artifact=ONNX, input_name="input"), trtexec="trtexec").command
    assert "--iterations=30" in trt
    seen = []
    monkeypatch.setattr(crosscheck, "subject_of", lambda *a: Subject(artifact=ONNX))
    monkeypatch.setattr(crosscheck, "execute", lambda plan, *a: seen.append(plan.command) or {"tool": plan.tool})
    crosscheck.tool_run(r, None, Suite(), share=3)
    assert after(seen[0], "--min-iters") == "10" and after(seen[0], "--time") == "3"


def test_the_torch_timer_times_at_least_its_calls():
    from vggbench.bench.timers import torch_timer

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        torch_timer.main(["--build", "eager", "--model", "vgg11", "--model-settings",
                          '{"width": 0.0625, "hidden": [16], "num_classes": 4}', "--batch", "1", "--image-size",
                          "32", "--threads", "1", "--warmup", "0", "--warmup-time", "0", "--time", "0",
                          "--min-iters", "40"])
    measured = json.loads(out.getvalue().splitlines()[-1])
    assert measured["iterations"] >= 40 and measured["images_per_s"] > 0
    # over its calls, as a row records them (Timer's calibration calls counted in)
    assert measured["faults_per_call"] >= 0 and 0 <= measured["kernel_pct"] <= 100


def test_a_winograd_check_runs_the_plan_the_row_tuned():
    plan = "conv1 direct, conv2 F4-cpp-whole, conv3 direct, fc1 onednn, fc2 torch"
    winograd = crosscheck.torch_build_plan(row("winograd", memory_format="channels_last",
                                               notes=f"weights: random; {plan}"), Subject(model_settings={}))
    assert after(winograd.command, "--plan") == f"weights: random; {plan}"
    assert "--plan" not in crosscheck.torch_build_plan(row("eager"), Subject(model_settings={})).command


def test_a_winograd_runner_follows_another_processes_plan_without_tuning_again(monkeypatch):
    from vggbench import load_model
    from vggbench.backends.winograd import runner as winograd_runner

    model = load_model("vgg11", seed=4, **TINY).module
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    tuned = winograd_runner.WinogradRunner(model)
    tuned.run(x)
    notes = tuned.notes(x)

    def no_tuning(*args, choose=None, **kw):
        assert choose is not None, "followed a plan, so nothing is timed"
        return real(*args, choose=choose, **kw)

    real = winograd_runner.winograd_model
    monkeypatch.setattr(winograd_runner, "winograd_model", no_tuning)
    follower = winograd_runner.WinogradRunner(model)
    follower.follow(tuple(x.shape), f"a model note; {notes}")
    assert torch.allclose(follower.run(x), tuned.run(x), atol=1e-4) and follower.notes(x) == notes
    with pytest.raises(ValueError, match="no winograd plan"):
        follower.follow(tuple(x.shape), "weights: random")
    with pytest.raises(ValueError, match="not a winograd plan entry"):
        follower.follow(tuple(x.shape), "conv1 direct, conv2")


def test_runs_after_rounds_are_paired_with_them_as_a_diagnostic():
    # the machine slows by half in round 2 for both sides alike: each pair reads 1.0; the verdict stays the pooled
    # ratio, the row's median of all its samples against the median of the tool's runs
    row_ = row(status="ok", batch_size=1, samples_ms=(100.0, 100.0, 200.0, 200.0, 200.0, 100.0),
               sample_rounds=(1, 1, 2, 2, 2, 3), median_ms=150.0, images_per_s=1e3 / 150)
    runs = [{"tool": "t", "command": ["t"], "images_per_s": 1e3 / ms, "median_ms": ms, "seconds": 1.0,
             "after_round": k} for k, ms in ((1, 100.0), (2, 200.0), (3, 100.0))]
    block = crosscheck.combine(row_, runs).cross_check
    assert block["pairs"] == pytest.approx([1.0, 1.0, 1.0]) and block["paired_ratio"] == pytest.approx(1.0)
    assert block["ratio"] == pytest.approx(100 / 150) and "after_round" not in block
    unpaired = [{k: v for k, v in r.items() if k != "after_round"} for r in runs]
    plain = crosscheck.combine(row_, unpaired).cross_check  # a tool run once, after the row: no pairs
    assert "pairs" not in plain and plain["ratio"] == pytest.approx(100 / 150)
    no_samples = crosscheck.combine(replace(row_, samples_ms=(), sample_rounds=()), runs).cross_check
    assert "pairs" not in no_samples and no_samples["ratio"] == pytest.approx(100 / 150)


def _rounds_row(rounds_ms):
    samples = tuple(v for values in rounds_ms for v in values)
    order = tuple(k for k, values in enumerate(rounds_ms, 1) for _ in values)
    median = statistics.median(samples)
    return row(status="ok", batch_size=1, samples_ms=samples, sample_rounds=order, median_ms=median,
               images_per_s=1e3 / median)


def test_the_ratio_gets_an_interval_from_the_rounds_and_the_runs_as_units():
    tool = [{"tool": "t", "command": ["t"], "images_per_s": v, "median_ms": 1e3 / v, "seconds": 1.0,
             "after_round": k} for k, v in enumerate((10.0, 10.1, 9.9, 10.05, 9.95), 1)]
    # steady on both sides: the whole interval lies within 2% of 1, around the ratio
    steady = crosscheck.combine(_rounds_row([[100.0, 101.0, 99.0]] * 5), tool).cross_check
    assert 0.98 < steady["ratio_low"] <= steady["ratio"] <= steady["ratio_high"] < 1.02
    # the same calls, but each round its own speed (a neighbour's minute, the machine's regime): each round is
    # steady within, so calls resampled one by one would look sure; resampled by round, the interval widens past
    # 5% on a side, though the ratio is the same
    drifting = [[v * f for v in (100.0, 101.0, 99.0)] for f in (0.8, 1.0, 1.25, 0.9, 1.1)]
    wide = crosscheck.combine(_rounds_row(drifting), tool).cross_check
    assert wide["ratio"] == pytest.approx(1.0, abs=0.01)
    assert wide["ratio_low"] < 0.95 and wide["ratio_high"] > 1.05
    again = crosscheck.combine(_rounds_row(drifting), tool).cross_check
    assert (again["ratio_low"], again["ratio_high"]) == (wide["ratio_low"], wide["ratio_high"])  # seeded
    # a noisy tool widens it as much: both sides' spread counts
    noisy_tool = [r | {"images_per_s": v} for r, v in zip(tool, (8.0, 10.0, 12.5, 9.0, 11.0), strict=True)]
    both = crosscheck.combine(_rounds_row([[100.0, 101.0, 99.0]] * 5), noisy_tool).cross_check
    assert both["ratio_low"] < 0.95 and both["ratio_high"] > 1.05
    # one round, or one tool run: no interval to give
    assert "ratio_low" not in crosscheck.combine(_rounds_row([[100.0] * 6]), tool).cross_check
    assert "ratio_low" not in crosscheck.combine(_rounds_row([[100.0] * 3] * 5), tool[:1]).cross_check


def test_a_check_that_cannot_start_never_fails_the_row(monkeypatch):
    r = row("onnxruntime", OrtSettings())

    def broken(*args):
        raise RuntimeError("the export folder is gone")

    monkeypatch.setattr(crosscheck, "subject_of", broken)
    checked = crosscheck.cross_check(r, None, None)
    assert checked.status == "ok" and checked.images_per_s == r.images_per_s
    assert checked.cross_check == {"tool": "onnxruntime InferenceSession",
                                   "error": "RuntimeError: the export folder is gone"}
    monkeypatch.setattr(crosscheck, "subject_of", lambda *a: Subject(artifact=ONNX))
    monkeypatch.setattr(crosscheck, "_tool", lambda name: None)
    trt = crosscheck.cross_check(row("tensorrt", TrtSettings(), device="cuda"), None, None)
    assert trt.cross_check["tool"] == "trtexec" and trt.cross_check["error"].startswith("not installed")
    failed = replace(r, status="error", images_per_s=None)
    assert crosscheck.cross_check(failed, None, None) is failed  # only rows that ran are checked


def test_suites_turn_it_on_by_key():
    assert parse_suite("cross_check = true").cross_check is True
    assert Suite().cross_check is False


# --- end to end ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backends", ["eager,onnxruntime", pytest.param("openvino", marks=pytest.mark.slow)])
def test_run_cross_check_gives_every_ok_row_its_tools_numbers(tmp_path, backends):
    result = CliRunner().invoke(main, [
        "run", "--models", "vgg11", "--width", str(TINY["width"]), "--hidden", str(TINY["hidden"]),
        "--image-size", str(TINY_IMAGE), "--batch-sizes", "1,2", "--backends", backends,
        "--memory-format", "contiguous", "--threads", "1", "--warmup-time", "0", "--min-time", "0.1",
        "--cross-check", "--rounds", "2", "--out", str(tmp_path), "--export-cache", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    data = read_run(next(tmp_path.glob("run-*.json")))
    assert data["settings"]["cross_check"] is True
    ok = [r for r in data["results"] if r["status"] == "ok"]
    assert len(ok) == 2 * len(backends.split(","))
    for r in ok:
        block = r["cross_check"]
        assert "error" not in block, block
        assert block["images_per_s"] > 0 and block["median_ms"] > 0 and block["seconds"] > 0
        assert block["ratio"] == pytest.approx(r["images_per_s"] / block["images_per_s"])
        assert block["paired_ratio"] == pytest.approx(statistics.median(block["pairs"])) and len(block["pairs"]) == 2
        assert 0 < block["ratio_low"] <= block["ratio_high"]  # two rounds and two runs: an interval
        assert block["command"][0] and str(r["batch_size"]) in " ".join(block["command"])
        # the tool ran between the rounds, after round 1 and after round 2, with half the budget each
        assert len(block["runs"]) == 2 and all("ratio" not in run for run in block["runs"])
        assert [run["after_round"] for run in block["runs"]] == [1, 2]
        assert block["images_per_s"] == pytest.approx(statistics.median(run["images_per_s"] for run in block["runs"]))
        assert "--time" not in block["command"] or block["command"][block["command"].index("--time") + 1] == "0.05"
    by = {r["backend"]: r["cross_check"] for r in ok}
    if "onnxruntime" in by:
        assert by["onnxruntime"]["command"][1] == "-I" and by["onnxruntime"]["command"][3].endswith("model.onnx")
        assert "load_model" in by["eager"]["tool"]
    else:
        assert by["openvino"]["tool"] == "benchmark_app" and by["openvino"]["config"]["INFERENCE_NUM_THREADS"] == "1"
    header = result.output.splitlines()[2].split()
    assert header[-2:] == ["cross_check", "status"]


def test_an_artifact_changed_after_the_row_is_refused_before_the_tool_opens_it(tmp_path):
    import vggbench
    from vggbench.backends import resolve_target
    from vggbench.bench.cache import ExportCache

    loaded = vggbench.load_model("vgg11", "random", **TINY)
    cache = ExportCache(tmp_path, loaded, TINY_IMAGE)
    folder = cache.folder(resolve_target("onnxruntime", "cpu", "fp32"))
    prepared = SimpleNamespace(model=SimpleNamespace(cache=cache), tf32=False)
    suite = Suite(models=("vgg11",), image_size=TINY_IMAGE, **TINY)
    r = row("onnxruntime", OrtSettings())
    subject = crosscheck.subject_of(r, prepared, suite)
    assert subject.artifact == (folder / "model.onnx").resolve() and subject.input_name == "input"
    with open(folder / "model.onnx", "ab") as f:
        f.write(b"\0")
    checked = crosscheck.cross_check(r, prepared, suite)
    assert checked.status == "ok" and "does not match its sha256" in checked.cross_check["error"]
    assert "command" not in checked.cross_check  # nothing was started


# --- benchmarks/cross_check.py's verdicts ------------------------------------------------------------------------

def _cross_check_script():
    return benchmark_script("cross_check")


@pytest.mark.parametrize("ratio, low, high, within, verdict", [
    (1.01, 0.99, 1.03, "yes", "within"),  # the whole interval inside 5%
    (0.97, 0.88, 1.08, "yes", "unsure"),  # the ratio inside, its interval too wide to say so
    (0.86, 0.70, 1.07, "no", "unsure"),  # outside, but not sure of that either
    (0.80, 0.75, 0.85, "no", "outside"),
    (1.02, None, None, "yes", "-"),  # one round: no interval
])
def test_the_cross_check_script_says_how_sure_each_ratio_is(ratio, low, high, within, verdict):
    script = _cross_check_script()
    check = {"tool": "t", "images_per_s": 10.0, "ratio": ratio}
    if low is not None:
        check |= {"ratio_low": low, "ratio_high": high}
    r = row(status="ok", images_per_s=10.0 * ratio, cross_check=check, rounds=7)
    lines, failed, sure = script.verdicts(SimpleNamespace(results=[r]), 0.05)
    cells = [c.strip() for c in lines[-1].split("|")]
    assert cells[8:10] == [within, verdict] and cells[11] == "7"  # the rounds it ran (--max-rounds)
    assert len(cells) == len(lines[0].split("|"))
    assert (failed, sure) == (within == "no", verdict == "within")


def test_runs_recorded_before_the_median_rule_are_restated():
    sync = {"tool": "benchmark_app", "command": ["benchmark_app", "-api", "sync", "-t", "2"], "images_per_s": 4.5,
            "median_ms": 200.0}
    restated = crosscheck.restate(sync, 1)
    assert restated["images_per_s"] == pytest.approx(5.0) and restated["throughput_fps"] == 4.5
    assert crosscheck.restate(restated, 1) == restated  # once only
    asynchronous = sync | {"command": ["benchmark_app", "-api", "async"]}
    timer = {"tool": "torch.utils.benchmark.Timer", "command": ["python"], "images_per_s": 4.5, "median_ms": 200.0}
    assert crosscheck.restate(asynchronous, 1) == asynchronous and crosscheck.restate(timer, 1) == timer


def test_the_cross_check_script_judges_an_earlier_run_again(tmp_path):
    from vggbench.bench.results import BenchRun

    script = _cross_check_script()
    runs = [{"tool": "benchmark_app", "command": ["benchmark_app", "-api", "sync"], "images_per_s": fps,
             "median_ms": ms, "seconds": 3.0, "after_round": k}
            for k, fps, ms in ((1, 9.0, 80.0), (2, 7.0, 80.0), (3, 9.5, 80.0))]
    old = row("openvino", status="ok", samples_ms=(80.0, 80.0, 80.0), sample_rounds=(1, 2, 3),
              cross_check={"tool": "benchmark_app", "images_per_s": 9.0, "ratio": 100 / 9.0, "runs": runs})
    path, _ = BenchRun({"name": "t", "models": ["vgg11"], "image_size": 32}, {}, [old], 1.0,
                       "2026-12-01T00:00:00+00:00").write(tmp_path / "old.json")
    (again,) = script.rejudge(str(path)).results
    # the runs' medians (80 ms at batch 8: 100 images/s) against the row's 100: 1.0, where their FPS gave 1.11
    assert again.cross_check["images_per_s"] == pytest.approx(100.0) and again.cross_check["ratio"] == pytest.approx(1)
    assert again.cross_check["ratio_low"] == pytest.approx(1) == again.cross_check["ratio_high"]
    assert again.cross_check["throughput_fps"] == 9.0


def test_the_machine_noise_probe_says_dash_where_it_has_too_few_calls():
    script = benchmark_script("machine_noise")
    once = script.spread(0.0, lambda: None)  # one call at least, whatever the seconds
    assert once["calls"] == 1 and once["calls_p5_p95_pct"] is None and once["windows_cv_pct"] is None
    ticks = iter(range(10**6))
    steady = script.spread(0.05, lambda: next(ticks))
    assert steady["calls"] > 1 and steady["calls_p5_p95_pct"] is not None
    text = script.lines({"probes": {"copy": once}})
    assert text == ["copy: 1 calls, median " + f"{once['median_ms']:.2f}" + " ms, p5-p95 - of it; 0 1 s windows: "
                    "range -, cv -"]


@pytest.mark.parametrize("text", ["nan", "inf", "-1", "1e9"])
def test_the_probes_refuse_seconds_that_would_hang_or_mean_nothing(text):
    import argparse

    script = benchmark_script("machine_noise")
    with pytest.raises(argparse.ArgumentTypeError, match="seconds from 0 to 3600"):
        script.seconds(text)
    with pytest.raises(argparse.ArgumentTypeError, match="thread count"):
        script.threads("0")
    assert script.seconds("2.5") == 2.5 and script.threads("2") == 2


@pytest.mark.parametrize("make", [lambda d: d / "missing.json", lambda d: d,
                                  lambda d: (d / "x.json").write_text("{not json") and d / "x.json"])
def test_rejudging_what_is_not_a_results_file_is_one_error_line(make, tmp_path, monkeypatch, capsys):
    script = _cross_check_script()
    monkeypatch.setattr(sys, "argv", ["cross_check.py", "--rejudge", str(make(tmp_path))])
    with pytest.raises(SystemExit) as exit_:
        script.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith("error: ")


def test_the_cross_check_script_refuses_bad_rounds_with_one_line_before_timing_anything(monkeypatch, capsys):
    script = _cross_check_script()
    monkeypatch.setattr(script.machine_noise, "measure", lambda *a: pytest.fail("probed before checking"))
    monkeypatch.setattr(sys, "argv", ["cross_check.py", "--rounds", "5", "--max-rounds", "3", "--out", "unused"])
    with pytest.raises(SystemExit) as exit_:
        script.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and err == ["error: max_rounds (3) must be at least rounds (5): the rounds a case "
                                             "may go on to, past the ones it always runs"]


def test_the_process_age_probe_checks_its_numbers_and_bounds_its_median():
    import argparse

    script = benchmark_script("process_age")
    pairs = script.ranged(2, 200)
    assert pairs("20") == 20
    for bad in ("1", "201", "x", "2.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="an integer from 2 to 200"):
            pairs(bad)
    from vggbench.bench.confidence import bootstrap_median  # its median's interval

    assert bootstrap_median([0.9] * 8) == pytest.approx((0.9, 0.9))
    # --layers: per layer, the kept process's speed over the fresh one's, and the layer's share of a fresh pass
    pairs = [{"kept_layers_ms": {"conv": 110.0, "fc": 10.0}, "fresh_layers_ms": {"conv": 100.0, "fc": 10.0}},
             {"kept_layers_ms": {"conv": 100.0, "fc": 5.0}, "fresh_layers_ms": {"conv": 90.0, "fc": 10.0}}]
    by_layer = script.layer_ratios(pairs)
    assert list(by_layer) == ["conv", "fc"]
    assert by_layer["conv"][0] == pytest.approx((100 / 110 + 90 / 100) / 2)
    assert by_layer["fc"][0] == pytest.approx(1.5) and by_layer["fc"][1] == pytest.approx((10 / 110 + 10 / 100) / 2 * 100)
    # the pairs split by which side went first: a kept side that opens a pair followed itself, one that closes it
    # followed a fresh process
    order = script.by_order([{"first": "kept", "kept_ms": 100.0, "fresh_ms": 100.0, "ratio": 1.0},
                             {"first": "fresh", "kept_ms": 110.0, "fresh_ms": 90.0, "ratio": 90 / 110}])
    assert script.verdict([{"ratio": 0.9}, {"ratio": 1.1}, {"ratio": 0.95}])[::3] == (0.95, 2)  # median, under 1
    assert order == {"kept_first_ratio": 1.0, "fresh_first_ratio": 90 / 110, "kept_after_kept_ms": 100.0,
                     "fresh_after_kept_ms": 100.0, "fresh_after_fresh_ms": 90.0, "kept_after_fresh_ms": 110.0}
    low, high = bootstrap_median([0.8, 0.9, 1.0, 1.1, 1.2] * 4)
    assert 0.8 <= low < 1.0 < high <= 1.2


def test_the_exit_steal_probe_reads_its_conditions_and_the_steal():
    import argparse

    script = benchmark_script("exit_steal")
    assert script.parse_conditions("3:0, 3:10,0:0") == [(3.0, 0.0), (3.0, 10.0), (0.0, 0.0)]
    for bad in ("3", "3:x", "-1:0", "65:0", "3:601", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="GIB:WAIT"):
            script.parse_conditions(bad)
    stat = "cpu  100 0 20 500 3 0 2 10 0 0\ncpu0 50 0 10 250 1 0 1 5 0 0\n"
    before = script.cpu_ticks(stat)
    assert before == [100, 0, 20, 500, 3, 0, 2, 10]
    assert script.steal_pct(before, [185, 0, 25, 500, 3, 0, 2, 20]) == 10.0  # 10 of 100 ticks
    assert script.steal_pct(before, before) is None
    with pytest.raises(ValueError):
        script.cpu_ticks("intr 1 2 3\n")
    assert script.order([1, 2, 3], 0) == [1, 2, 3] and script.order([1, 2, 3], 1) == [3, 2, 1]
    windows = [{"gib": 3.0, "wait_s": 0.0, "steal_pct": 8.0, "median_ms": 1400.0},
               {"gib": 0.0, "wait_s": 0.0, "steal_pct": 0.5, "median_ms": 1200.0},
               {"gib": 0.0, "wait_s": 0.0, "steal_pct": None, "median_ms": 1300.0},
               {"gib": 3.0, "wait_s": 0.0, "steal_pct": 7.0, "median_ms": 1300.0}]
    rows = script.summary(windows)
    assert [(r["gib"], r["median_steal_pct"], r["median_of_ms"]) for r in rows] == [(3.0, 7.5, 1350.0),
                                                                                  (0.0, 0.5, 1250.0)]
    assert rows[1]["steal_pct"] == [0.5, None]


def test_the_worker_against_tool_probe_runs_one_case_in_one_round_following_the_plan(tmp_path):
    import argparse

    script = benchmark_script("worker_vs_tool")
    args = argparse.Namespace(backend="winograd", batch=8, image_size=224, min_time=1.6, calls=6, isolation="case",
                              threads=2)
    command = script.vggbench_command(args, tmp_path / "a.json", "conv1 direct, fc1 onednn", False)
    assert command[1:4] == ["-m", "vggbench", "run"] and "--cross-check" not in command
    for option, value in [("--rounds", "1"), ("--isolation", "case"), ("--winograd-plan", "conv1 direct, fc1 onednn"),
                          ("--memory-format", "channels_last"), ("--batch-sizes", "8"), ("--min-iters", "6"),
                          ("--threads", "2"), ("--out", str(tmp_path / "a.json"))]:
        assert after(command, option) == value, option
    first = script.vggbench_command(argparse.Namespace(**{**vars(args), "backend": "eager", "threads": None}),
                                    tmp_path / "b.json", None, True)
    assert first[-1] == "--cross-check" and "--winograd-plan" not in first and "--threads" not in first


def test_round_pairs_sets_each_rows_first_round_against_its_later_ones(tmp_path):
    from vggbench.bench.results import BenchRun, write_run
    from vggbench.core.env import capture

    script = benchmark_script("round_pairs")

    def timed(backend, pairs, speeds):
        # round k: 3 calls of 100 ms (round 1) or 110 ms (later rounds)
        rounds = [k for k in range(1, len(pairs) + 1) for _ in range(3)]
        return row(backend, samples_ms=tuple(100.0 if k == 1 else 110.0 for k in rounds), sample_rounds=tuple(rounds),
                   cross_check={"pairs": pairs, "runs": [{"images_per_s": s} for s in speeds]})

    environment, files = capture(), []
    for i in range(4):
        run = BenchRun({}, environment, [timed("winograd", [1.0 + i / 100, 0.9, 0.91, 0.89], [8, 8, 8, 8]),
                                         timed("eager", [1.0, 1.0], [4, 4])])
        files.append(write_run(run.to_dict(), tmp_path / f"run{i}.json")[0])
    (tmp_path / "noise.json").write_text(json.dumps({"results": [asdict(timed("winograd", [0.1] * 3, [1] * 3))]}))
    files.append(tmp_path / "noise.json")  # not a results file (the noise probe's): no rows from it
    (line,) = [x for x in script.summary(script.gather(files)) if x["backend"] == "winograd"]
    assert line["files"] == 4 and line["first_pair"] == pytest.approx(1.015) and line["later_pairs"] == 0.9
    assert line["later_count"] == 12 and line["p_value"] < 0.01  # every first pair above every later one
    assert line["row_later_over_first_ms"] == pytest.approx(1.1) and line["tool_later_over_first"] == 1.0
    # two rounds and two runs: too few to set a first against later ones, so the row is left out
    assert [x["backend"] for x in script.summary(script.gather(files))] == ["winograd"]
