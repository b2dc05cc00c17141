"""`vggbench run --cross-check`: each row that ran is timed again by its runtime's own tool, in a fresh process,
with the row's settings and for about the row's time budget, and the row gets a `cross_check` block:

    {"tool", "command" (the exact argv), "images_per_s", "median_ms", "ratio" (the row's images/s over the
     tool's), "seconds" (the tool's process, start to exit), "iterations", "timed_s", "config" (openvino),
     "runs" (a row timed in rounds: the tool runs after each round (at most 5, spread), each with its share of
     the budget; the block's images/s is the median of theirs), "ratio_low" and "ratio_high" (the ratio's 95%
     interval, over the rounds and the runs), "pairs" (each run's round's images/s over the run's) and
     "paired_ratio" (their median); see combine), and for the torch timers "faults_per_call" and
     "kernel_pct" over their timed calls, as the row records them (the median of the runs'), "anon_peak_mb"
     (the most anonymous memory the tool's process was seen to hold) and "settled_s" (how long vggbench then
     waited for the host to take that memory back before timing again: see execute)}

or {"tool", "command", "error"} when the tool is missing or fails; a failed cross-check never fails the row.

- openvino: OpenVINO's `benchmark_app` (in the openvino wheel) on the row's model.onnx or model.int8.onnx with the
  row's compile configuration read from a file (-load_config: the hint, streams, threads, precision and cache; on
  its command line benchmark_app refuses threads and streams beside a hint), f32 input (-ip f32: it would feed
  u8 images otherwise), the row's batch as a static shape (-shape) or a dynamic one (-data_shape). LATENCY: one
  synchronous request per batch; THROUGHPUT: single images, asynchronously, on as many requests as the plugin
  finds optimal (benchmark_app keeps them all busy, where vggbench's row waits for its batch at every call).
  Its images/s: LATENCY, the batch over its median latency, as the row's (its Throughput, a mean over the wall
  time, is kept as "throughput_fps"); THROUGHPUT, its Throughput (FPS), which counts images whatever the batch.
- onnxruntime, ort-tensorrt: a bare InferenceSession with the row's options (vggbench.bench.timers.ort_timer,
  run with `python -I`: no vggbench in that process).
- torchscript, pt2: torch.jit.load / torch.export.load of the file vggbench checked (vggbench.backends.safe_load,
  again just before the process starts), timed by torch.utils.benchmark.Timer (timers.torch_timer, `python -I`).
- eager, compile, winograd: the model rebuilt by vggbench's load_model from the run's model settings in a fresh
  process (the same code, not an independent one; the tool's name says so), then run by torch itself
  (torch.compile with the row's mode and freezing) or, for winograd, by vggbench's runner; timed by
  torch.utils.benchmark.Timer.
- tensorrt: `trtexec` (images/s = its qps x batch, no host-device copies), else `polygraphy run` (its average
  inference time), where installed; else "not installed".
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ..backends import resolve_target
from ..backends.load import checked_artifact
from ..backends.registry import get_backend
from ..core.allocator import DEFAULT_POLICY, child_environment
from ..core.errors import one_line
from ..core.extras import install_hint
from ..core.load import higher_anon_rss, host_takes_freed_memory, settle_time_s
from ..exporters.manifest import read_manifest
from ..zoo.settings import ModelSettings
from .confidence import clustered_ratio
from .rows import BenchResult

TIMERS = Path(__file__).resolve().parent / "timers"
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # where `python -m vggbench...` finds this vggbench
# the tool's process may take this long beyond its budget: starting, loading or compiling (torch.compile and
# Winograd's tuning of VGG16 take minutes on two cores)
STARTUP_ALLOWANCE_S = 600
WATCH_S = 0.5  # how often a tool's memory is read while it runs


class ToolMissing(Exception):
    """The runtime's tool is not installed here."""


@dataclass(frozen=True)
class Subject:
    """What a row's cross-check runs: its artifact's main file (artifact backends) or how to rebuild its model
    (module backends: the run's model settings and dense size), with the run's CUDA flags."""

    artifact: Path | None = None
    input_name: str = "input"
    static_batch: int | None = None  # the batch a static export fixes
    model_settings: dict | None = None  # ModelSettings fields, for load_model in the tool's process
    dense_size: int | None = None
    tf32: bool = False
    cudnn_benchmark: bool | None = None


@dataclass(frozen=True)
class Plan:
    """One tool's run: its command, the folder it runs in, how its output reads, and a config file it reads."""

    tool: str
    command: tuple[str, ...]
    parse: Callable[[str], dict]
    cwd: str | None = None
    config: dict | None = None  # recorded in the block: the file itself is temporary


# --- the command of each tool ----------------------------------------------------------------------------------

def _budget(row) -> list[str]:
    """The row's warm-up and budget, as the timers take them: seconds of timed calls, and calls, whichever ends
    later (a VGG16 call at batch 8 takes over a second: seconds alone left two or three calls a tool run)."""
    return ["--warmup", str(row.warmup), "--warmup-time", f"{row.warmup_time_s:g}", "--time", f"{row.min_time_s:g}",
            "--min-iters", str(row.min_iters)]


def _shape(batch: int, image_size: int) -> str:
    return f"[{batch},3,{image_size},{image_size}]"


def benchmark_app() -> list[str]:
    """How to start benchmark_app: beside this Python (a virtual environment's bin), on the PATH, or from the
    openvino package; ToolMissing when none is there."""
    beside = Path(sys.executable).parent / "benchmark_app"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("benchmark_app")
    if found:
        return [found]
    try:
        import openvino.tools.benchmark.main  # noqa: F401
    except ImportError as e:
        raise ToolMissing(f"not installed: benchmark_app ({one_line(e)}); {install_hint('openvino')}") from None
    # its module has no __main__ guard, so -m would only import it
    return [sys.executable, "-c", "import sys; from openvino.tools.benchmark.main import main; sys.exit(main())"]


def openvino_plan(row, subject: Subject, workdir: Path, app: list[str] | None = None) -> Plan:
    """benchmark_app with the row's OpenVINO settings (see the module's docstring)."""
    settings = get_backend(row.backend).settings(**(row.backend_settings or {}))
    config = settings.config(row.precision)
    throughput = not settings.defaults and settings.hint == "THROUGHPUT"
    static = settings.static_batch and not settings.defaults
    command = [*(app or benchmark_app()), "-m", str(subject.artifact), "-d", "CPU"]
    if config:
        path = workdir / "openvino-config.json"
        path.write_text(json.dumps({"CPU": config}, indent=2), encoding="utf-8")
        command += ["-load_config", str(path)]
    else:  # OpenVINO's defaults: no hint either
        command += ["-hint", "none"]
    # benchmark_app goes on while either budget is left (-niter counts requests: a throughput row's of one image)
    command += ["-api", "async" if throughput else "sync", "-ip", "f32",
                "-shape" if static else "-data_shape", _shape(1 if throughput else row.batch_size, row.image_size),
                "-t", str(max(1, math.ceil(row.min_time_s))),
                "-niter", str(row.min_iters * (row.batch_size if throughput else 1))]
    parse = parse_benchmark_app if throughput else functools.partial(parse_benchmark_app, batch=row.batch_size)
    return Plan("benchmark_app", tuple(command), parse, config=config or None)


def onnxruntime_plan(row, subject: Subject, workdir: Path | None = None) -> Plan:
    """A bare onnxruntime session with the row's session options, in `python -I` (no vggbench there)."""
    s = row.backend_settings or {}
    if row.backend == "ort-tensorrt":
        provider = "tensorrt"
    else:
        provider = "cuda" if row.device.startswith("cuda") else "cpu"
    command = [sys.executable, "-I", str(TIMERS / "ort_timer.py"), str(subject.artifact),
               "--batch", str(row.batch_size), "--image-size", str(row.image_size),
               "--optimization", s.get("optimization", "all"), "--device", row.device, "--provider", provider]
    if s.get("threads"):
        command += ["--threads", str(s["threads"])]
    # settings rows of before 2026-12-06 did not record: onnxruntime's defaults
    command += ["--execution-mode", s.get("execution_mode", "sequential")]
    command += ["--no-spinning"] * (s.get("spinning") is False) + ["--no-memory-arena"] * (s.get("memory_arena") is False)
    command += ["--no-nchwc"] * (s.get("nchwc") is False) + ["--no-nhwc"] * (s.get("nhwc") is False)
    if provider != "cpu":
        command += ["--cudnn-conv-algo-search", s.get("cudnn_conv_algo_search", "EXHAUSTIVE")]
        command += ["--tf32"] * bool(s.get("tf32")) + ["--cuda-graph"] * bool(s.get("cuda_graph"))
        command += ["--fp16"] * (provider == "tensorrt" and row.precision == "fp16")
        if provider == "tensorrt":
            command += ["--trt-optimization-level", str(s.get("trt_builder_optimization_level", 3))]
    command += [*_budget(row), "--max-iters", str(max(row.max_iters, row.min_iters))]
    return Plan("onnxruntime InferenceSession (bare, python -I)", tuple(command), parse_json_line)


def _torch_common(row, subject: Subject) -> list[str]:
    common = ["--batch", str(row.batch_size), "--image-size", str(row.image_size), "--device", row.device,
              "--precision", row.precision, "--memory-format", row.memory_format, "--threads", str(row.threads)]
    if row.device.startswith("cuda"):
        common += ["--tf32"] * subject.tf32
        if subject.cudnn_benchmark is not None:
            common += ["--cudnn-benchmark", "on" if subject.cudnn_benchmark else "off"]
    return common + _budget(row)


def torch_artifact_plan(row, subject: Subject, workdir: Path | None = None) -> Plan:
    """The exported file as torch loads it, timed by torch.utils.benchmark.Timer in `python -I` (torch only)."""
    command = [sys.executable, "-I", str(TIMERS / "torch_timer.py"), "--artifact", row.backend,
               "--path", str(subject.artifact), *_torch_common(row, subject)]
    loader = "torch.jit.load" if row.backend == "torchscript" else "torch.export.load"
    return Plan(f"torch.utils.benchmark.Timer ({loader}, python -I)", tuple(command), parse_json_line)


def torch_build_plan(row, subject: Subject, workdir: Path | None = None) -> Plan:
    """The model rebuilt by vggbench's load_model in a fresh process, run by torch (torch.compile with the row's
    settings) or by vggbench's winograd runner, timed by torch.utils.benchmark.Timer."""
    command = [sys.executable, "-m", "vggbench.bench.timers.torch_timer", "--build", row.backend,
               "--model", row.model, "--model-settings", json.dumps(subject.model_settings or {}, sort_keys=True)]
    if subject.dense_size:
        command += ["--dense-size", str(subject.dense_size)]
    if row.backend == "compile":
        s = row.backend_settings or {}
        command += ["--compile-mode", s["mode"]] * bool(s.get("mode"))
        command += ["--compile-freezing"] * bool(s.get("freezing"))
    if row.backend == "winograd" and row.notes:
        command += ["--plan", row.notes]  # the plan the row ran, not one tuned again (WinogradRunner.follow)
    command += _torch_common(row, subject)
    runs = "vggbench's winograd runner" if row.backend == "winograd" else \
        "torch.compile" if row.backend == "compile" else "torch eager"
    return Plan(f"torch.utils.benchmark.Timer ({runs}; model rebuilt by vggbench's load_model in a fresh process)",
                tuple(command), parse_json_line, cwd=str(PACKAGE_ROOT))


def _tool(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def tensorrt_plan(row, subject: Subject, workdir: Path | None = None, *, trtexec: str | None = None,
                  polygraphy: str | None = None) -> Plan:
    """trtexec (else polygraphy run) on the row's model.onnx with its precision and optimisation profile."""
    trtexec = trtexec or _tool("trtexec")
    polygraphy = polygraphy or (None if trtexec else _tool("polygraphy"))
    if not trtexec and not polygraphy:
        raise ToolMissing(f"not installed: neither trtexec (TensorRT's samples) nor polygraphy "
                          f"({install_hint('tensorrt')}) is on this machine")
    s = row.backend_settings or {}
    name, b, n = subject.input_name, row.batch_size, row.image_size
    profile = (1, b, s.get("max_batch") or max(b, 1))
    flags = {"fp32": [], "fp16": ["fp16"], "int8": ["int8", "fp16"], "fp8": ["fp8", "fp16"]}[row.precision]
    index = row.device.partition(":")[2] or "0"
    if trtexec:
        command = [trtexec, f"--onnx={subject.artifact}", *(f"--{f}" for f in flags)]
        if subject.static_batch is None:
            command += [f"--minShapes={name}:{profile[0]}x3x{n}x{n}", f"--optShapes={name}:{b}x3x{n}x{n}",
                        f"--maxShapes={name}:{profile[2]}x3x{n}x{n}", f"--shapes={name}:{b}x3x{n}x{n}"]
        command += ["--noTF32"] * (not s.get("tf32")) + [
            f"--memPoolSize=workspace:{round(s.get('workspace_gib', 4.0) * 1024)}M",
            f"--builderOptimizationLevel={s.get('builder_optimization_level', 3)}", f"--device={index}",
            "--noDataTransfers", f"--warmUp={round(row.warmup_time_s * 1000)}",
            f"--duration={max(1, math.ceil(row.min_time_s))}", f"--iterations={row.min_iters}"]
        return Plan("trtexec", tuple(command), lambda text: parse_trtexec(text, b))
    calls = max(row.min_iters, math.ceil(row.min_time_s / (row.median_ms / 1e3))) if row.median_ms else row.min_iters
    command = [polygraphy, "run", str(subject.artifact), "--trt", *(f"--{f}" for f in flags)]
    if subject.static_batch is None:
        command += ["--trt-min-shapes", f"{name}:{_shape(profile[0], n)}", "--trt-opt-shapes", f"{name}:{_shape(b, n)}",
                    "--trt-max-shapes", f"{name}:{_shape(profile[2], n)}", "--input-shapes", f"{name}:{_shape(b, n)}"]
    command += ["--builder-optimization-level", str(s.get("builder_optimization_level", 3))]
    command += ["--warm-up", str(max(1, row.warmup)), "--iterations", str(calls)]
    return Plan("polygraphy run", tuple(command), lambda text: parse_polygraphy(text, b))


# backend -> (its tool's name for a block that failed before the command was made, the plan's builder)
PLANS: dict[str, tuple[str, Callable]] = {
    "openvino": ("benchmark_app", openvino_plan),
    "onnxruntime": ("onnxruntime InferenceSession", onnxruntime_plan),
    "ort-tensorrt": ("onnxruntime InferenceSession", onnxruntime_plan),
    "torchscript": ("torch.utils.benchmark.Timer", torch_artifact_plan),
    "pt2": ("torch.utils.benchmark.Timer", torch_artifact_plan),
    "eager": ("torch.utils.benchmark.Timer", torch_build_plan),
    "compile": ("torch.utils.benchmark.Timer", torch_build_plan),
    "winograd": ("torch.utils.benchmark.Timer", torch_build_plan),
    "tensorrt": ("trtexec", tensorrt_plan),
}


# --- reading what the tools print ------------------------------------------------------------------------------

def _positive(value: float | None, what: str) -> float:
    if value is None or not math.isfinite(value) or value <= 0:
        raise ValueError(f"no positive {what} in its output")
    return value


# what torch_timer also says of its timed calls, as a row does: page faults a call and the kernel's share of the CPU
# time (vggbench.core.allocator), so that a block shows whether the tool's process met the allocator as the row did
USAGE = ("faults_per_call", "kernel_pct")


def parse_json_line(text: str) -> dict:
    """The last JSON line the timers print: images_per_s, median_ms, iterations, timed_s, and USAGE where given."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            data = json.loads(line)
            _positive(data.get("images_per_s"), "images_per_s")
            return {k: data.get(k) for k in ("images_per_s", "median_ms", "iterations", "timed_s", *USAGE)
                    if k not in USAGE or data.get(k) is not None}
    raise ValueError("no JSON line in its output")


_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


def parse_benchmark_app(text: str, batch: int | None = None) -> dict:
    """benchmark_app's report: Throughput (FPS, images per second whatever the batch), the median latency of a
    request (ms or us), the iteration count and the duration. batch: a synchronous run's (one request at a time),
    whose images/s is then the batch over the median latency, the statistic of the row it checks; its FPS, the
    iterations over the wall time, is a mean, which one slow call of ten moves by several per cent (2026-12-07,
    AVX2 EPYC: OpenVINO at batch 1, FPS 4.18-5.20 in five runs whose medians gave 4.98-5.37). Kept as
    "throughput_fps". Without batch (asynchronous requests, which overlap) the FPS is the images/s."""
    def find(pattern: str):
        m = re.search(pattern, text)
        return m.groups() if m else None

    fps = find(rf"Throughput:\s*{_NUMBER}\s*FPS")
    median = find(rf"Median:\s*{_NUMBER}\s*(ms|us)")  # the first: the run's, before any per-shape group's
    count, duration = find(r"Count:\s*(\d+) iterations"), find(rf"Duration:\s*{_NUMBER}\s*ms")
    throughput = _positive(float(fps[0]) if fps else None, "Throughput (FPS)")
    median_ms = float(median[0]) / (1000 if median[1] == "us" else 1) if median else None
    if batch is not None:
        images_per_s = _positive(batch / (median_ms / 1e3) if median_ms else None, "Median latency")
    else:
        images_per_s = throughput
    return {"images_per_s": images_per_s, "median_ms": median_ms, "throughput_fps": throughput,
            "iterations": int(count[0]) if count else None,
            "timed_s": float(duration[0]) / 1000 if duration else None}


def parse_trtexec(text: str, batch: int) -> dict:
    """trtexec's performance summary: Throughput in qps (batches per second: x batch for images), the median of
    GPU Compute Time (its Latency line's without one)."""
    qps = re.search(rf"Throughput:\s*{_NUMBER}\s*qps", text)
    median = re.search(rf"GPU Compute Time:.*?median = {_NUMBER} ms", text) or \
        re.search(rf"Latency:.*?median = {_NUMBER} ms", text)
    duration = re.search(rf"Total Host Walltime:\s*{_NUMBER}\s*s", text)
    count = re.search(r"Timing trace has (\d+) queries", text)
    return {"images_per_s": _positive(float(qps.group(1)) * batch if qps else None, "Throughput (qps)"),
            "median_ms": float(median.group(1)) if median else None,
            "iterations": int(count.group(1)) if count else None,
            "timed_s": float(duration.group(1)) if duration else None}


def parse_polygraphy(text: str, batch: int) -> dict:
    """`polygraphy run`'s runner line: N iterations in X ms, an average inference time (a mean: no median)."""
    m = re.search(rf"Completed (\d+) iteration\(s\) in {_NUMBER} ms \| Average inference time: {_NUMBER} ms", text)
    mean_ms = float(m.group(3)) if m else None
    return {"images_per_s": _positive(batch / (mean_ms / 1e3) if mean_ms else None, "average inference time"),
            "median_ms": None, "iterations": int(m.group(1)) if m else None,
            "timed_s": float(m.group(2)) / 1e3 if m else None}


# --- running it ------------------------------------------------------------------------------------------------

def _why(done: subprocess.CompletedProcess) -> str:
    """The line that says why a tool failed: its last error line, else its last line."""
    lines = [line.strip() for line in (done.stderr + "\n" + done.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"error|exception", line, re.IGNORECASE)]
    text = (errors or lines or ["no output"])[-1]
    return f"exit status {done.returncode}: {text[:300]}"


def execute(plan: Plan, row_images_per_s: float, timeout_s: float, policy: str = DEFAULT_POLICY) -> dict:
    """Run a plan's command, under the allocator `policy` of the row it checks (vggbench.core.allocator), and make
    the row's block from what it prints. Once it exits, on a VM whose host takes back the memory it frees, wait as
    long as settle_time_s says for the memory it held, so that the row's next round does not pay for the tool's
    exit (vggbench.core.load, "the host, after a process that held much memory exits"); the block records the
    memory ("anon_peak_mb") and the wait ("settled_s")."""
    block: dict = {"tool": plan.tool, "command": list(plan.command), "allocator": policy}
    if plan.config is not None:
        block["config"] = plan.config
    started = time.perf_counter()
    try:
        done, peak = _watched(plan, timeout_s, child_environment(policy))
    except subprocess.TimeoutExpired:
        return {**block, "error": f"timed out after {timeout_s:.0f} s", "seconds": round(timeout_s, 3)}
    except OSError as e:
        return {**block, "error": f"could not start it: {one_line(e)}"}
    seconds = round(time.perf_counter() - started, 3)
    block.update(settle(peak))
    if done.returncode != 0:
        return {**block, "error": _why(done), "seconds": seconds}
    try:
        measured = plan.parse(done.stdout)
    except (ValueError, KeyError, TypeError) as e:
        return {**block, "error": f"its output could not be read: {e}", "seconds": seconds}
    return {**block, "images_per_s": measured["images_per_s"], "median_ms": measured["median_ms"],
            "ratio": row_images_per_s / measured["images_per_s"], "seconds": seconds,
            **{k: measured[k] for k in ("iterations", "timed_s", "throughput_fps", *USAGE)
               if measured.get(k) is not None}}


def _watched(plan: Plan, timeout_s: float, env: dict) -> tuple[subprocess.CompletedProcess, int | None]:
    """The plan's command run to its end as subprocess.run runs it (output captured, no stdin; killed and
    TimeoutExpired raised past timeout_s), and the largest anonymous memory it was seen to hold, read every
    WATCH_S (None where that cannot be read)."""
    deadline = time.monotonic() + timeout_s
    peak = None
    with subprocess.Popen(plan.command, cwd=plan.cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env) as process:
        try:
            while True:
                try:
                    stdout, stderr = process.communicate(timeout=max(0.0, min(WATCH_S, deadline - time.monotonic())))
                    break
                except subprocess.TimeoutExpired:
                    peak = higher_anon_rss(process.pid, peak)
                    if time.monotonic() >= deadline:
                        raise
        except BaseException:  # past its time, Ctrl-C, SIGTERM: the tool goes too, as subprocess.run sees to
            process.kill()
            process.communicate()
            raise
    return subprocess.CompletedProcess(plan.command, process.returncode, stdout, stderr), peak


def _reporting() -> bool | None:
    return host_takes_freed_memory()


def _sleep(seconds: float) -> None:  # the wait of settle (tests replace it, not time.sleep, which others use)
    time.sleep(seconds)


def settle(peak_bytes: int | None) -> dict:
    """Wait for the host after a tool's process that held `peak_bytes` exits (settle_time_s), and say so."""
    wait = settle_time_s(peak_bytes, _reporting())
    if wait:
        _sleep(wait)
    record = {"settled_s": wait}
    if peak_bytes is not None:
        record["anon_peak_mb"] = round(peak_bytes / 2**20)
    return record


def restate(run: dict, batch: int) -> dict:
    """A tool run as recorded (a block, or one of its "runs") with its images/s as parse_benchmark_app gives it
    today: benchmark_app's synchronous runs before 2026-12-07 recorded its FPS (a mean), now the batch over its
    median latency, the row's statistic, with the FPS kept as "throughput_fps". Anything else unchanged."""
    command = list(run.get("command") or ())
    synchronous = "-api" in command[:-1] and command[command.index("-api") + 1] == "sync"
    if run.get("tool") != "benchmark_app" or not synchronous or "throughput_fps" in run or not run.get("median_ms"):
        return run
    return {**run, "images_per_s": batch / (run["median_ms"] / 1e3), "throughput_fps": run["images_per_s"]}


def timeout_for(row) -> float:
    calls_s = row.min_iters * row.median_ms / 1e3 if row.median_ms else 0.0
    return STARTUP_ALLOWANCE_S + 4 * (row.warmup_time_s + max(row.min_time_s, calls_s))


def subject_of(row: BenchResult, prepared, suite) -> Subject:
    """What a row of the sweep runs: its artifact, checked again (its sha256 against the manifest, then
    vggbench.backends.safe_load) right before another process opens it, or its model's settings."""
    model = prepared.model
    common = {"tf32": bool(prepared.tf32), "cudnn_benchmark": suite.cudnn_benchmark}
    target = resolve_target(row.backend, row.device, row.precision, row.memory_format)
    if target.artifact is None:
        return Subject(model_settings=model_settings(suite), dense_size=model.cache.dense_size, **common)
    settings = target.spec.settings(**row.backend_settings) if target.spec.settings and row.backend_settings else None
    folder = model.cache.path(target, settings)
    path = checked_artifact(target, folder).resolve()
    manifest = read_manifest(folder)
    return Subject(artifact=path, input_name=manifest.input.name, static_batch=manifest.static_batch, **common)


def model_settings(suite) -> dict:
    """The suite's model settings that are set, paths made absolute (the tool's process runs elsewhere)."""
    found = {}
    for name in ModelSettings.setting_names():
        value = getattr(suite, name)
        if value is None:
            continue
        if name in ("weights", "model_config") and os.path.exists(value):
            value = str(Path(value).resolve())
        found[name] = list(value) if isinstance(value, tuple) else value
    return found


def cross_check(row: BenchResult, prepared, suite) -> BenchResult:
    """`row` (status ok) with its cross_check block: the same thing timed by its runtime's own tool in a fresh
    process. prepared: the row's vggbench.bench.prepare.PreparedRunner; suite: the run's Suite."""
    if row.status != "ok" or not row.images_per_s:
        return row
    return combine(row, [tool_run(row, prepared, suite)])


def chunk_rounds(rounds: int) -> tuple[int, ...]:
    """After which of a case's rounds its tool runs, when the rounds are interleaved: after each one, or after 5 of
    them spread from the first to the last. A machine's speed drifts by several per cent within a minute
    (2026-12-06, Zen 4: one onnxruntime row's round medians 1,138-1,259 ms; a winograd row's 600-880 ms), so the
    tool is timed right after each round it is set against (see combine)."""
    if rounds <= 5:
        return tuple(range(1, rounds + 1))
    return tuple(sorted({1 + round(i * (rounds - 1) / 4) for i in range(5)}))


def tool_run(row: BenchResult, prepared, suite, share: int = 1) -> dict:
    """One run of the row's tool in a fresh process, with 1/share of the row's budget (seconds and calls; its
    warm-up whole, since every process needs it): the block of `execute`, ratio left out (the row is not measured
    yet), or an error."""
    tool, make = PLANS.get(get_backend(row.backend).name, (None, None))
    if make is None:
        return {"tool": None, "error": f"no cross-check tool for {row.backend}"}
    row = replace(row, min_time_s=row.min_time_s / share, min_iters=math.ceil(row.min_iters / share))
    with tempfile.TemporaryDirectory(prefix="vggbench-cross-check-") as workdir:
        try:
            plan = make(row, subject_of(row, prepared, suite), Path(workdir))
        except ToolMissing as e:
            return {"tool": tool, "error": str(e)}
        except Exception as e:  # whatever stops the check, the row stands
            return {"tool": tool, "error": one_line(e)}
        block = execute(plan, 1.0, timeout_for(row), suite.allocator)
    block.pop("ratio", None)
    return block


def combine(row: BenchResult, runs: list[dict]) -> BenchResult:
    """`row` with the cross_check block of its tool's runs: the median of their images/s, and the ratio of the
    row's images/s (the median of all its samples) to it. The tool runs after every round (chunk_rounds), so both
    sides cover the same minutes alike. Where the runs say which round they followed ("after_round"), each run's
    ratio to that round is kept too ("pairs", their median "paired_ratio"): a diagnostic, not the verdict. A pair
    is one round's few calls against one run's, and a burst of slowness that lands on one side of a pair moves it
    by 10-60% (2026-12-06, Zen 4: eager at batch 1, one round at 365 ms against 209-235 ms for the others), so the
    median of five pairs scattered more than the pooled medians did: 6 of 10 rows within 5% paired against 9 of
    10 pooled in the same run. Each run kept under "runs" where there were several. With 2 rounds and 2 runs or
    more, "ratio_low" and "ratio_high": the ratio's 95% interval, a bootstrap over the rounds and the runs
    (confidence.clustered_ratio), which says whether the ratio is sure to within a tolerance. An error in any run
    is the block's."""
    if row.status != "ok" or not row.images_per_s or not runs:
        return row
    failed = next((r for r in runs if "error" in r or not r.get("median_ms")), None)
    if failed is not None:
        return replace(row, cross_check={**failed, "error": failed.get("error", "no median")}
                       | ({"runs": runs} if len(runs) > 1 else {}))
    # each tool's own images/s (the batch over its median; benchmark_app's FPS for asynchronous requests)
    images_per_s = statistics.median(r["images_per_s"] for r in runs)
    median_ms = statistics.median(r["median_ms"] for r in runs)
    block = {**runs[-1], "images_per_s": images_per_s, "median_ms": median_ms,
             "ratio": row.images_per_s / images_per_s, "seconds": round(sum(r["seconds"] for r in runs), 3)}
    block.pop("after_round", None)
    for key in (*USAGE, "throughput_fps"):
        values = [r[key] for r in runs if r.get(key) is not None]
        if values:
            block[key] = statistics.median(values)
    rounds = by_round(row)
    interval = clustered_ratio(list(rounds.values()), row.batch_size, [r["images_per_s"] for r in runs]) \
        if rounds else None
    if interval is not None:
        block.update(ratio_low=interval[0], ratio_high=interval[1])
    pairs = _pairs(rounds, row.batch_size, runs)
    if pairs:
        block.update(pairs=pairs, paired_ratio=statistics.median(pairs))
    if len(runs) > 1:
        block["iterations"] = sum(r.get("iterations") or 0 for r in runs) or None
        block["timed_s"] = sum(r.get("timed_s") or 0 for r in runs) or None
        # the waits for the host after each run (execute), in all; the most memory a run held
        settled = [r["settled_s"] for r in runs if r.get("settled_s") is not None]
        peaks = [r["anon_peak_mb"] for r in runs if r.get("anon_peak_mb") is not None]
        block.update({"settled_s": round(sum(settled), 1)} if settled else {},
                     **({"anon_peak_mb": max(peaks)} if peaks else {}))
        block["runs"] = runs
    return replace(row, cross_check=block)


def _pairs(by_round: dict[int, list[float]], batch: int, runs: list[dict]) -> list[float] | None:
    """Each run's ratio to the round it followed (that round's images/s: the batch over its samples' median, from
    the row's samples by round, by_round), or None where a run does not say which round, or the row has no
    samples of it."""
    if not by_round:
        return None
    pairs = []
    for run in runs:
        samples = by_round.get(run.get("after_round"))
        if not samples:
            return None
        pairs.append(batch / (statistics.median(samples) / 1e3) / run["images_per_s"])
    return pairs


def by_round(row: BenchResult) -> dict[int, list[float]]:
    """The row's samples (ms) by the round that took them; {} where the row does not say each sample's round (a
    row read from elsewhere) or has none."""
    samples = tuple(row.samples_ms or ())
    rounds = tuple(row.sample_rounds or (1,) * len(samples))
    if len(rounds) != len(samples):
        return {}
    by_round: dict[int, list[float]] = {}
    for value, k in zip(samples, rounds, strict=True):
        by_round.setdefault(k, []).append(value)
    return by_round
