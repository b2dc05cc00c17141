"""openvino: model.onnx (or model.int8.onnx at int8) compiled by OpenVINO's CPU plugin.

fp32 asks for f32 inference (INFERENCE_PRECISION_HINT=f32: on a CPU with bf16 instructions the plugin's own
default is bf16), bf16 for bf16 (only where the plugin lists BF16 among the CPU's capabilities), and int8
runs the QDQ model that the onnx-int8 export wrote, its other layers in the plugin's default precision.
`OvSettings(defaults=True)` compiles with no configuration at all: OpenVINO as a user gets it, whose
precision the plugin picks (the target's precision must be that one).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..core.errors import UnsupportedError
from ..core.extras import require
from ..core.settings import MAX_THREADS, setting
from .profiling import Op, OpProfile, classify, sequential_trace
from .registry import Backend, Knob, register
from .runner import Runner, RunnerOptions
from .settings import Int8ExportSettings
from .target import Target

HINTS = ("LATENCY", "THROUGHPUT")
DEVICE = "CPU"
# vggbench precision -> OpenVINO's inference precision (an element type's name)
INFERENCE_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


@dataclass(frozen=True, kw_only=True)
class OvSettings(Int8ExportSettings):
    """OpenVINO compile settings; recorded with every result."""

    context = ("threads",)

    hint: str = setting("LATENCY", "OpenVINO PERFORMANCE_HINT: LATENCY or THROUGHPUT (the batch split into single "
                                   "images over the plugin's streams).", choices=HINTS)
    streams: int | None = setting(None, "OpenVINO NUM_STREAMS [default: what the hint picks].", minimum=1,
                                  maximum=MAX_THREADS)
    # THROUGHPUT: the infer requests in flight at once (the AsyncInferQueue's jobs, and the hint's
    # PERFORMANCE_HINT_NUM_REQUESTS, which caps the streams it picks); None: OPTIMAL_NUMBER_OF_INFER_REQUESTS
    requests: int | None = setting(None, "OpenVINO THROUGHPUT: infer requests in flight [default: the plugin's "
                                         "OPTIMAL_NUMBER_OF_INFER_REQUESTS].", minimum=1, maximum=MAX_THREADS)
    # compile once per input shape (the batch fixed): the plugin plans memory and kernels for it. Off, the
    # exported model's dynamic batch is compiled once for every batch size
    static_batch: bool = setting(True, "OpenVINO: compile once per batch size (the batch fixed), not once for the "
                                       "export's dynamic batch.")
    defaults: bool = setting(False, "OpenVINO with no configuration at all (its own precision, hint, streams and "
                                    "threads; the case's precision must be the one it picks).")
    # the compiled-model cache (CACHE_DIR): None is <vggbench cache>/openvino, "" none
    cache_dir: str | None = setting(None, "OpenVINO's compiled-model cache (CACHE_DIR) [default: "
                                          "<vggbench cache>/openvino; \"\" for none].")
    # the run's: INFERENCE_NUM_THREADS; None: OpenVINO's default (every core)
    threads: int | None = setting(None, cli=False, minimum=1, maximum=MAX_THREADS)

    def cache_path(self) -> str | None:
        if self.cache_dir == "":
            return None
        if self.cache_dir is not None:
            return self.cache_dir
        root = os.environ.get("VGGBENCH_CACHE") or Path.home() / ".cache" / "vggbench"
        return str(Path(root) / "openvino")

    def config(self, precision: str) -> dict[str, str]:
        """The compile configuration for a precision ({} with defaults)."""
        if self.defaults:
            return {}
        config = {"PERFORMANCE_HINT": self.hint}
        if precision in INFERENCE_PRECISIONS:  # int8: the layers left in float run as the plugin decides
            config["INFERENCE_PRECISION_HINT"] = INFERENCE_PRECISIONS[precision]
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = str(self.threads)
        if self.streams:
            config["NUM_STREAMS"] = str(self.streams)
        if self.requests and self.hint == "THROUGHPUT":
            config["PERFORMANCE_HINT_NUM_REQUESTS"] = str(self.requests)
        if self.cache_path():
            config["CACHE_DIR"] = self.cache_path()
        return config


def _core():
    ov = require("openvino", "the openvino backend")
    return ov, ov.Core()


def cpu_capabilities(core) -> list[str]:
    """What OpenVINO's CPU plugin offers on this CPU, e.g. FP32, BF16, INT8 (OPTIMIZATION_CAPABILITIES)."""
    return [str(c) for c in core.get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")]


def _precision_name(element_type) -> str:
    """An OpenVINO element type as vggbench names precisions (f32 -> fp32)."""
    name = element_type.get_type_name() if hasattr(element_type, "get_type_name") else str(element_type)
    return {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(name, name)


def default_precision(core=None) -> str:
    """The precision OpenVINO's CPU plugin infers in when nobody asks: bf16 on a CPU with bf16 instructions."""
    core = core or _core()[1]
    return _precision_name(core.get_property(DEVICE, "INFERENCE_PRECISION_HINT"))


class OvRunner(Runner):
    """An OpenVINO compiled model on the CPU.

    LATENCY: one synchronous infer request per call, the whole batch at once. THROUGHPUT: the batch is split
    into single images that an AsyncInferQueue (OPTIMAL_NUMBER_OF_INFER_REQUESTS jobs) spreads over the
    plugin's streams; at batch 1 that is one request on one stream, which the hint gave fewer threads, so
    THROUGHPUT pays only with several images a call."""

    # a synchronous infer (and wait_all) returns when the outputs are ready: timed with the wall clock, and
    # there is nothing to wait for
    torch_stream = False

    def __init__(self, path: Path, target: Target, settings: OvSettings | None = None) -> None:
        ov, self.core = _core()
        self.version = ov.__version__.split("-")[0]
        super().__init__(target)
        self.settings = settings or OvSettings()
        self._check_precision()
        self.config = self.settings.config(self.precision)
        self.model = self.core.read_model(str(path))
        self.throughput = not self.settings.defaults and self.settings.hint == "THROUGHPUT"
        self.static = self.settings.static_batch and not self.settings.defaults
        self._compiled: dict[tuple, tuple] = {}  # input shape (or None: dynamic) -> (compiled model, runner)
        if not self.static:
            self._compile(None)  # once, for every batch size

    def _check_precision(self) -> None:
        if self.settings.defaults:
            chosen = default_precision(self.core)
            if self.precision != "int8" and self.precision != chosen:
                raise UnsupportedError(f"OpenVINO's defaults run {chosen} on this CPU (its CPU plugin's "
                                       f"INFERENCE_PRECISION_HINT); ask for {chosen}, or turn defaults off to "
                                       f"set {self.precision}")
        elif self.precision == "bf16" and "BF16" not in (capabilities := cpu_capabilities(self.core)):
            name = self.core.get_property(DEVICE, "FULL_DEVICE_NAME")
            raise UnsupportedError(f"OpenVINO's CPU plugin offers no bf16 on this CPU ({name}: capabilities "
                                   f"{', '.join(capabilities)}); bf16 needs AVX512_BF16 or AMX instructions")

    def _compile(self, shape: tuple | None) -> tuple:
        model = self.model
        if shape is not None:
            model = model.clone()
            model.reshape({0: list(shape)})
        compiled = self.core.compile_model(model, DEVICE, self.config)
        if self.throughput:
            from openvino import AsyncInferQueue

            jobs = self.settings.requests or int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            runner = AsyncInferQueue(compiled, jobs)
        else:
            runner = compiled.create_infer_request()
        entry = self._compiled[shape] = (compiled, runner)
        return entry

    def _entry(self, shape: tuple) -> tuple:
        key = None
        if self.static:  # THROUGHPUT: one image per request
            key = (1, *shape[1:]) if self.throughput else tuple(shape)
        return self._compiled.get(key) or self._compile(key)

    def prepare(self, batch: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(batch.detach().cpu().float().numpy())

    def run(self, prepared: np.ndarray) -> np.ndarray:
        compiled, runner = self._entry(prepared.shape)
        if not self.throughput:
            return runner.infer({0: prepared}, share_inputs=True)[0]
        # the dims after the batch: a dynamic-batch compile (static_batch off) has no static shape to ask for
        classes = [d.get_length() for d in list(compiled.outputs[0].get_partial_shape())[1:]]
        out = np.empty((prepared.shape[0], *classes), np.float32)

        def done(request, index: int) -> None:
            out[index] = request.get_output_tensor(0).data[0]

        runner.set_callback(done)
        for i in range(prepared.shape[0]):
            runner.start_async({0: prepared[i:i + 1]}, i, share_inputs=True)
        runner.wait_all()
        return out

    def to_tensor(self, output: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(output, dtype=np.float32))

    def notes(self, batch: torch.Tensor) -> str:
        """What was asked and what the plugin chose, e.g. "OpenVINO 2026.4.1, config INFERENCE_PRECISION_HINT=f32
        PERFORMANCE_HINT=LATENCY ...; compiled: precision f32, hint LATENCY, streams 1, threads 2"."""
        compiled, _ = self._entry(tuple(batch.shape))
        asked = "defaults (no config)" if self.settings.defaults else \
            "config " + " ".join(f"{k}={v}" for k, v in self.config.items())

        def get(name: str):
            try:
                return compiled.get_property(name)
            except RuntimeError:  # a property this plugin version does not report
                return "?"

        chosen = (f"precision {_precision_name(get('INFERENCE_PRECISION_HINT'))}, "
                  f"hint {str(get('PERFORMANCE_HINT')).split('.')[-1]}, streams {get('NUM_STREAMS')}, "
                  f"threads {get('INFERENCE_NUM_THREADS')}, requests {get('OPTIMAL_NUMBER_OF_INFER_REQUESTS')}")
        shape = "static batch" if self.static else "dynamic batch"
        return f"OpenVINO {self.version}, {asked}, {shape}; compiled: {chosen}"


def deploy_config(settings: OvSettings, row: dict) -> dict:
    """What a deploy folder's run.py gives OpenVINO: the compile configuration (without vggbench's compiled-model
    cache), and how it makes requests (THROUGHPUT: one image each, `requests` of them in flight)."""
    return {"compile_config": replace(settings, cache_dir="").config(row["precision"]),
            "throughput": not settings.defaults and settings.hint == "THROUGHPUT",
            "static_batch": settings.static_batch and not settings.defaults, "requests": settings.requests}


def ov_profiler(runner: OvRunner, batch: torch.Tensor, calls: int) -> OpProfile:
    """OpenVINO's performance counters (PERF_COUNT, InferRequest.profiling_info): the runner's model compiled
    again with its configuration and PERF_COUNT on, for the batch's shape, run by one synchronous request (with
    the THROUGHPUT hint too, where the runner spreads single images over requests: the counters are per
    request). Each executed node's real time; the nodes a fusion folded into another are NOT_RUN and left out.

    The CPU plugin reports each node's mean over every call since the request began, so the profiled calls'
    mean is taken from the means before and after them: (n1 x mean1 - n0 x mean0) / (n1 - n0), which leaves
    the first call's one-time work out."""
    from openvino import ProfilingInfo

    prepared = runner.prepare(batch)
    model = runner.model.clone()
    model.reshape({0: list(prepared.shape)})
    # not through the compiled-model cache: a blob compiled without PERF_COUNT has no counters to report
    config = {key: value for key, value in runner.config.items() if key != "CACHE_DIR"}
    compiled = runner.core.compile_model(model, DEVICE, {**config, "PERF_COUNT": "YES"})
    request = compiled.create_infer_request()

    def means() -> list[tuple[str, str, float]]:
        return [(info.node_name, classify(info.node_type), info.real_time.total_seconds() * 1e3)
                for info in request.profiling_info if info.status == ProfilingInfo.Status.EXECUTED]

    request.infer({0: prepared}, share_inputs=True)
    before = {name: ms for name, _, ms in means()}
    walls = []
    for _ in range(calls):
        started = time.perf_counter()
        request.infer({0: prepared}, share_inputs=True)
        walls.append((time.perf_counter() - started) * 1e3)
    ops = [Op(name, kind, max(0.0, ((calls + 1) * ms - before.get(name, 0.0)) / calls))
           for name, kind, ms in means()]
    notes = ["profiled with one synchronous request (the THROUGHPUT runner spreads images over several)"] \
        if runner.throughput else []
    source = f"OpenVINO {runner.version} PERF_COUNT"
    return OpProfile(ops, walls, sequential_trace([[(op.name, op.kind, op.ms) for op in ops]], source), source,
                     notes)


def openvino_factory(path: Path, target: Target, options: RunnerOptions | None = None,
                     artifact_precision: str = "fp32") -> OvRunner:
    if artifact_precision != "fp32":
        raise UnsupportedError(f"openvino runs an fp32 ONNX export (as fp32, bf16 or int8); this one was exported "
                               f"in {artifact_precision}")
    return OvRunner(path, target, (options or RunnerOptions()).settings_for(target))


BACKEND = register(Backend("openvino", "onnx", ("cpu",), ("fp32", "bf16", "int8"), ("contiguous",),
                           openvino_factory, aliases=("ov",), settings=OvSettings, option_prefix="openvino",
                           profiler=ov_profiler, package="openvino", runtime="openvino", deploy_precisions=("fp32", "bf16", "int8"),
                           deploy_config=deploy_config,
                           knobs=(Knob("hint"), Knob("streams", (None, 1, 2, 4)), Knob("requests", (None, 1, 2, 4, 8)),
                                  Knob("static_batch"), Knob("int8_method", precisions=("int8",)),
                                  Knob("int8_plan", precisions=("int8",)),
                                  Knob("int8_reduce_range", precisions=("int8",)))))
