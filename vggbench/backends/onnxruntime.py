"""onnxruntime: model.onnx (or model.int8.onnx) in an InferenceSession on the CPU or CUDA provider, following
the target's device (on CUDA optionally replayed as a CUDA graph); ort-tensorrt: the same file on onnxruntime's
TensorRT provider, where its libraries load (vggbench's own TensorRT backend is `tensorrt`)."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.errors import UnsupportedError
from ..core.extras import install_hint
from ..core.settings import MAX_THREADS, setting
from .profiling import OpProfile, chrome_trace, classify, mean_ops
from .registry import Backend, Knob, register
from .runner import Runner, RunnerOptions
from .settings import Int8ExportSettings
from .target import Target

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "ort-tensorrt": "TensorrtExecutionProvider"}
OPTIMIZATIONS = ("disable", "basic", "extended", "all")
CONV_ALGO_SEARCHES = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
EXECUTION_MODES = ("sequential", "parallel")


@dataclass(frozen=True, kw_only=True)
class OrtSettings(Int8ExportSettings):
    """onnxruntime session settings (also ort-tensorrt's); recorded with every result."""

    context = ("threads", "tf32")

    optimization: str = setting("all", "onnxruntime graph optimisation: disable, basic, extended, all.",
                                choices=OPTIMIZATIONS)
    cudnn_conv_algo_search: str = setting("EXHAUSTIVE", "onnxruntime CUDA: EXHAUSTIVE, HEURISTIC or DEFAULT.",
                                          choices=CONV_ALGO_SEARCHES, option="--cudnn-conv-algo-search")
    # CUDA provider: capture the session as a CUDA graph on the first run of a batch size, replay it after; the
    # input and output stay in fixed device buffers (IO binding), as onnxruntime requires
    cuda_graph: bool = setting(False, "onnxruntime CUDA: capture each batch size as a CUDA graph and replay it "
                                      "(fixed IO-bound buffers).")
    # CPU: parallel runs independent nodes of the graph at once (inter-op threads); a VGG is one chain of nodes,
    # so it is a knob to measure, not to guess
    execution_mode: str = setting("sequential", "onnxruntime execution mode: sequential or parallel.",
                                  choices=EXECUTION_MODES)
    # intra-op threads spin between calls (onnxruntime's default): quicker to wake, but they take the cores from
    # any neighbour
    spinning: bool = setting(True, "onnxruntime: intra-op threads spin while waiting for work "
                                   "(session.intra_op.allow_spinning).")
    memory_arena: bool = setting(True, "onnxruntime: the CPU memory arena (enable_cpu_mem_arena).")
    # the CPU provider's two layout rewrites of optimisation level "all" (its layout level): NchwcTransformer
    # runs fp32 convolutions and pools in MLAS's blocked NCHWc layout (x86 with AVX2 or AVX-512), NhwcTransformer
    # runs int8 QLinearConv channels-last with NhwcMaxPool. onnxruntime 1.31 has no NHWC fp32 kernels on x86 (its
    # fp32 NHWC convolution is KleidiAI's, Arm with SME), so NHWC is an int8 knob and NCHWc the fp32 one; turning
    # either off names it in optimization.disable_specified_optimizers
    nchwc: bool = setting(True, "onnxruntime CPU: fp32 convolutions in the blocked NCHWc layout (NchwcTransformer, "
                                "optimisation level all).")
    nhwc: bool = setting(True, "onnxruntime CPU: int8 convolutions in the NHWC layout (NhwcTransformer, "
                               "optimisation level all).")
    # ort-tensorrt: TensorRT's builder optimisation level (its provider option; TensorRT's default 3)
    trt_builder_optimization_level: int = setting(3, "ort-tensorrt: TensorRT's builder optimisation level (0-5).",
                                                  choices=(0, 1, 2, 3, 4, 5))
    # the run's: intra-op threads (None: onnxruntime's default, one per physical core) and TF32 on the CUDA
    # provider (onnxruntime's default is on; fp32 is fp32 here)
    threads: int | None = setting(None, cli=False, minimum=1, maximum=MAX_THREADS)
    tf32: bool = setting(False, cli=False)

    def variant(self) -> str:
        return "cuda-graph" if self.cuda_graph else ""


LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "all": "ORT_ENABLE_ALL"}
# SessionOptions attributes whose values are onnxruntime enums, given by name
ENUMS = {"graph_optimization_level": "GraphOptimizationLevel", "execution_mode": "ExecutionMode"}


def session_options(settings: OrtSettings) -> dict:
    """The SessionOptions attributes these settings set, enums by name ("ORT_ENABLE_ALL"): what the runner sets and
    what a deploy folder's configuration holds."""
    options = {"graph_optimization_level": LEVELS[settings.optimization],
               "execution_mode": f"ORT_{settings.execution_mode.upper()}", "enable_cpu_mem_arena": settings.memory_arena}
    if settings.threads:
        options["intra_op_num_threads"] = settings.threads
    return options


# the layout settings -> the graph transformer each one turns off when False
LAYOUT_TRANSFORMERS = {"nchwc": "NchwcTransformer", "nhwc": "NhwcTransformer"}


def session_config(settings: OrtSettings) -> dict[str, str]:
    """The session's config entries (add_session_config_entry) these settings set."""
    config = {"session.intra_op.allow_spinning": "1" if settings.spinning else "0"}
    disabled = [name for field, name in LAYOUT_TRANSFORMERS.items() if not getattr(settings, field)]
    if disabled:
        config["optimization.disable_specified_optimizers"] = ";".join(disabled)
    return config


def deploy_config(settings: OrtSettings, row: dict) -> dict:
    """What a deploy folder's run.py gives onnxruntime (on the CPU provider)."""
    return {"session_options": session_options(settings), "session_config": session_config(settings)}


class OrtRunner(Runner):
    """onnxruntime InferenceSession. On CUDA the input is bound on the device (IO binding), so the timed run
    does not include host-device copies, as for the torch runners."""

    # onnxruntime runs on its own CUDA stream and Session.run returns when the outputs are ready: torch's CUDA
    # events would not see its work, so the benchmark times it with a wall clock (and there is nothing to wait for)
    torch_stream = False

    def __init__(self, path: Path, target: Target, settings: OrtSettings | None = None,
                 profile_prefix: str | None = None) -> None:
        import onnxruntime as ort

        super().__init__(target)
        self.settings = settings or OrtSettings()
        self.path, self._profile_prefix = path, profile_prefix  # profile_prefix: onnxruntime's profiler on
        kind = "ort-tensorrt" if target.backend == "ort-tensorrt" else target.device.kind
        wanted = PROVIDERS[kind]
        if wanted not in ort.get_available_providers():
            # the CPU wheel (the default install) has only the CPU provider; onnxruntime-gpu brings the others
            hint = f"; {install_hint('gpu')}" if kind != "cpu" else ""
            raise UnsupportedError(f"onnxruntime {ort.__version__} has no {wanted} here "
                                   f"(available: {', '.join(ort.get_available_providers())}){hint}")
        self.session = ort.InferenceSession(str(path), self._session_options(ort),
                                            providers=self._providers(kind, wanted))
        if self.session.get_providers()[0] != wanted:
            # onnxruntime silently falls back to the CPU when a provider cannot start; we do not
            raise UnsupportedError(f"onnxruntime could not start {wanted} (it fell back to "
                                   f"{', '.join(self.session.get_providers())}); check the CUDA/cuDNN/TensorRT install")
        self.input = self.session.get_inputs()[0]
        self.output = self.session.get_outputs()[0].name
        self._np_dtype = {"tensor(float)": "float32", "tensor(float16)": "float16"}[self.input.type]
        self._on_device = kind != "cpu"

    @property
    def _index(self) -> int:
        return self.target.device.index or 0

    def _session_options(self, ort):
        options = ort.SessionOptions()
        for name, value in session_options(self.settings).items():
            setattr(options, name, getattr(getattr(ort, ENUMS[name]), value) if name in ENUMS else value)
        for key, value in session_config(self.settings).items():
            options.add_session_config_entry(key, value)
        if self._profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = self._profile_prefix
        return options

    def _providers(self, kind: str, wanted: str) -> list:
        if kind == "cuda":
            options = {"device_id": self._index, "cudnn_conv_algo_search": self.settings.cudnn_conv_algo_search,
                       "use_tf32": int(self.settings.tf32)}
            if self.settings.cuda_graph:
                options["enable_cuda_graph"] = 1
            return [(wanted, options)]
        if kind == "ort-tensorrt":
            trt = {"device_id": self._index, "trt_fp16_enable": self.precision == "fp16",
                   "trt_builder_optimization_level": self.settings.trt_builder_optimization_level}
            return [(wanted, trt), ("CUDAExecutionProvider", {"device_id": self._index})]
        return [wanted]

    def prepare(self, batch: torch.Tensor):
        array = batch.detach().cpu().numpy().astype(self._np_dtype)
        if not self._on_device:
            return array
        import onnxruntime as ort

        value = ort.OrtValue.ortvalue_from_numpy(array, "cuda", self._index)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input.name, value)
        run_options = None
        if self.settings.cuda_graph:
            # a graph replays fixed addresses: the output gets its own buffer too, and each batch size its
            # own graph (onnxruntime captures one per gpu_graph_id)
            shape = [array.shape[0], *self.session.get_outputs()[0].shape[1:]]
            output = ort.OrtValue.ortvalue_from_shape_and_type(shape, array.dtype.type, "cuda", self._index)
            binding.bind_ortvalue_output(self.output, output)
            run_options = ort.RunOptions()
            run_options.add_run_config_entry("gpu_graph_id", str(array.shape[0]))
            return binding, (value, output), run_options
        binding.bind_output(self.output, "cuda", self._index)
        return binding, value, run_options  # keep the device buffers alive as long as the binding

    def run(self, prepared):
        if not self._on_device:
            return self.session.run([self.output], {self.input.name: prepared})[0]
        binding, _, run_options = prepared
        self.session.run_with_iobinding(binding, run_options)
        return binding

    def to_tensor(self, output) -> torch.Tensor:
        if self._on_device:
            output = output.copy_outputs_to_cpu()[0]
        return torch.from_numpy(output).float()


def ort_profiler(runner: OrtRunner, batch: torch.Tensor, calls: int) -> OpProfile:
    """onnxruntime's own profiler (SessionOptions.enable_profiling) on a second runner of the same file and
    settings: one call left out, then `calls` calls; each node's kernel time within each call's model_run.
    The profile's JSON is a Chrome trace already: it is returned as it is."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="vggbench-ort-profile-") as tmp:
        profiled = OrtRunner(runner.path, runner.target, runner.settings, profile_prefix=str(Path(tmp) / "ort"))
        prepared = profiled.prepare(batch)
        profiled.run(prepared)  # first-call allocations: left out below
        walls = []
        for _ in range(calls):
            started = time.perf_counter()
            profiled.run(prepared)
            walls.append((time.perf_counter() - started) * 1e3)
        events = json.loads(Path(profiled.session.end_profiling()).read_text(encoding="utf-8"))
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])[-calls:]
    nodes = sorted((e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")),
                   key=lambda e: e["ts"])
    per_call = [[(e["name"].removesuffix("_kernel_time"), classify(e.get("args", {}).get("op_name", e["name"])),
                  e["dur"] / 1e3) for e in nodes if run["ts"] <= e["ts"] <= run["ts"] + run["dur"]] for run in runs]
    ops, notes = mean_ops(per_call)
    source = f"onnxruntime {ort.__version__} enable_profiling"
    return OpProfile(ops, walls, chrome_trace(events, source), source, notes)


def ort_factory(path: Path, target: Target, options: RunnerOptions | None = None,
                artifact_precision: str = "fp32") -> OrtRunner:
    if target.precision not in ("int8", artifact_precision):
        raise UnsupportedError(f"this artifact was exported in {artifact_precision}; onnxruntime runs it as "
                               f"{artifact_precision} only")
    return OrtRunner(path, target, (options or RunnerOptions()).settings_for(target))


BACKEND = register(Backend("onnxruntime", "onnx", ("cpu", "cuda"), ("fp32", "fp16", "int8"), ("contiguous",),
                           ort_factory, aliases=("onnx", "ort"), thread_safe=True, settings=OrtSettings,
                           option_prefix="ort", profiler=ort_profiler, runtime="onnxruntime",
                           deploy_precisions=("fp32", "int8"), deploy_config=deploy_config,
                           knobs=(Knob("optimization"), Knob("execution_mode", devices=("cpu",)),
                                  Knob("spinning", devices=("cpu",)), Knob("memory_arena", devices=("cpu",)),
                                  Knob("nchwc", devices=("cpu",)),
                                  Knob("nhwc", devices=("cpu",), precisions=("int8",)),
                                  Knob("int8_method", precisions=("int8",)), Knob("int8_plan", precisions=("int8",)),
                                  Knob("int8_reduce_range", precisions=("int8",)),
                                  Knob("cudnn_conv_algo_search", devices=("cuda",)),
                                  Knob("cuda_graph", devices=("cuda",)))))
ORT_TENSORRT = register(Backend("ort-tensorrt", "onnx", ("cuda",), ("fp32", "fp16"), ("contiguous",), ort_factory,
                                aliases=("ort-trt",), settings=OrtSettings, settings_of="onnxruntime",
                                profiler=ort_profiler,
                                knobs=(Knob("trt_builder_optimization_level", (3, 4, 5)),)))
