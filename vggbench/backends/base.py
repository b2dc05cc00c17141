"""Everything that can run a model behind one small interface: prepare(x) once, run(prepared), to_tensor(out).

A runner is built for one backend, device, precision and memory format. `prepare` moves and converts
an fp32 NCHW CPU batch into what the backend eats (outside any timed loop); `run` is the forward pass
the benchmark times; `synchronize` waits for the device; `to_tensor` gives fp32 CPU logits for parity.
"""

from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ..core.errors import UnsupportedError

# name -> (autocast dtype, weight/input dtype). amp is fp16 autocast: CUDA only; bf16 autocast runs anywhere.
PRECISIONS: dict[str, tuple[torch.dtype | None, torch.dtype]] = {
    "fp32": (None, torch.float32),
    "amp": (torch.float16, torch.float32),
    "bf16": (torch.bfloat16, torch.float32),
    "fp16": (None, torch.float16),
    "int8": (None, torch.float32),  # onnxruntime static quantization: fp32 in and out, int8 inside
}
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


@dataclass(frozen=True)
class Backend:
    """What a backend can do; checked once, before anything is built."""

    name: str
    artifact: str | None  # the export format it loads, or None for backends that run the module itself
    devices: tuple[str, ...]
    precisions: tuple[str, ...]
    memory_formats: tuple[str, ...]
    about: str


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("eager", None, ("cpu", "cuda"), ("fp32", "amp", "bf16", "fp16"), tuple(MEMORY_FORMATS),
            "the nn.Module under torch.inference_mode"),
    Backend("compile", None, ("cpu", "cuda"), ("fp32", "amp", "bf16", "fp16"), tuple(MEMORY_FORMATS),
            "torch.compile (inductor)"),
    Backend("torchscript", "torchscript", ("cpu", "cuda"), ("fp32", "amp", "bf16", "fp16"),
            tuple(MEMORY_FORMATS), "model.ts via torch.jit.load"),
    Backend("pt2", "pt2", ("cpu", "cuda"), ("fp32", "amp", "bf16", "fp16"), tuple(MEMORY_FORMATS),
            "model.pt2 via torch.export.load"),
    Backend("winograd", None, ("cpu",), ("fp32",), ("channels_last",),
            "3x3 convs as direct (oneDNN, bias+ReLU fused) or Winograd F(2x2)/F(4x4)/F(6x6), the fastest per "
            "layer (tuned on the first call); activations kept between calls"),
    Backend("onnxruntime", "onnx", ("cpu", "cuda"), ("fp32", "fp16", "int8"), ("contiguous",),
            "model.onnx on onnxruntime (CPU or CUDA provider, following --device)"),
    Backend("tensorrt", "onnx", ("cuda",), ("fp32", "fp16"), ("contiguous",),
            "model.onnx on onnxruntime's TensorRT provider"),
)}


class Runner(Protocol):
    name: str
    device: str
    precision: str
    memory_format: str

    def prepare(self, batch: torch.Tensor) -> Any: ...
    def run(self, prepared: Any) -> Any: ...
    def synchronize(self) -> None: ...
    def to_tensor(self, output: Any) -> torch.Tensor: ...


def device_kind(device: str) -> str:
    return torch.device(device).type


def check_device(device: str) -> None:
    """Raise UnsupportedError for a device that this machine does not have."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UnsupportedError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return
    if dev.type != "cuda":
        raise UnsupportedError(f"device {device!r} is not supported: use cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        why = "this torch has no CUDA support" if torch.version.cuda is None else "no CUDA device is visible"
        raise UnsupportedError(f"device {device} requested but CUDA is not available ({why}); use --device cpu")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UnsupportedError(f"device {device} does not exist: {torch.cuda.device_count()} CUDA device(s)")


def check_supported(backend: str, device: str, precision: str, memory_format: str = "contiguous") -> Backend:
    """The Backend if this combination can run here; otherwise an UnsupportedError that says which part."""
    if backend not in BACKENDS:
        raise UnsupportedError(f"unknown backend {backend!r}: choose from {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise UnsupportedError(f"unknown precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    if memory_format not in MEMORY_FORMATS:
        raise UnsupportedError(f"unknown memory format {memory_format!r}: choose from {', '.join(MEMORY_FORMATS)}")
    spec = BACKENDS[backend]
    kind = device_kind(device) if device in ("cpu", "cuda") or device.startswith("cuda:") else device
    if kind not in spec.devices:
        raise UnsupportedError(f"{backend} does not run on {device} (it runs on {', '.join(spec.devices)})")
    if precision not in spec.precisions:
        raise UnsupportedError(f"{backend} does not support {precision} (it supports {', '.join(spec.precisions)})")
    if memory_format not in spec.memory_formats:
        raise UnsupportedError(f"{backend} takes {', '.join(spec.memory_formats)} input only, not {memory_format}")
    if precision == "amp" and kind == "cpu":
        raise UnsupportedError("amp (fp16 autocast) needs CUDA; on cpu use bf16 (bf16 autocast) or fp32")
    check_device(device)
    return spec


# --- torch runners ------------------------------------------------------------------------------------

class TorchRunner:
    """Runs a torch callable (module, ScriptModule, exported program or compiled module)."""

    # its CUDA work goes to torch's current stream, so the benchmark can time it with CUDA events
    torch_stream = True

    def __init__(self, name: str, module: nn.Module, device: str, precision: str, memory_format: str,
                 autocast: bool = True) -> None:
        self.name, self.device, self.precision, self.memory_format = name, device, precision, memory_format
        self._autocast_dtype, self._dtype = PRECISIONS[precision]
        if not autocast:
            self._autocast_dtype = None
        self._format = MEMORY_FORMATS[memory_format]
        self.module = module

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, self._dtype).contiguous(memory_format=self._format)

    def _autocast(self):
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_kind(self.device), dtype=self._autocast_dtype)

    def run(self, prepared: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), self._autocast():
            return self.module(prepared)

    def synchronize(self) -> None:
        if device_kind(self.device) == "cuda":
            torch.cuda.synchronize(self.device)

    def to_tensor(self, output: torch.Tensor) -> torch.Tensor:
        return output.detach().float().cpu()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.to_tensor(self.run(self.prepare(batch)))


def _place(module: nn.Module, device: str, precision: str, memory_format: str) -> nn.Module:
    """The module on its device, dtype and memory format; a copy whenever that changes anything, so the
    caller's module (often the parity reference) is never altered."""
    changes = (device_kind(device) != "cpu" or PRECISIONS[precision][1] != torch.float32
               or memory_format != "contiguous")
    module = copy.deepcopy(module).to(device) if changes else module
    if PRECISIONS[precision][1] != torch.float32:
        module = module.to(PRECISIONS[precision][1])
    return module.to(memory_format=MEMORY_FORMATS[memory_format]).eval()


def eager_runner(module: nn.Module, device: str = "cpu", precision: str = "fp32",
                 memory_format: str = "contiguous") -> TorchRunner:
    check_supported("eager", device, precision, memory_format)
    return TorchRunner("eager", _place(module, device, precision, memory_format), device, precision, memory_format)


def compile_runner(module: nn.Module, device: str = "cpu", precision: str = "fp32",
                   memory_format: str = "contiguous", mode: str | None = None,
                   options: dict | None = None) -> TorchRunner:
    """torch.compile; the first call compiles (the benchmark records it as first-call time)."""
    check_supported("compile", device, precision, memory_format)
    placed = _place(module, device, precision, memory_format)
    compiled = torch.compile(placed, mode=mode, options=options, dynamic=False)
    return TorchRunner("compile", compiled, device, precision, memory_format)


def torchscript_runner(path: str | os.PathLike, device: str = "cpu", precision: str = "fp32",
                       memory_format: str = "contiguous", artifact_precision: str = "fp32") -> TorchRunner:
    check_supported("torchscript", device, precision, memory_format)
    module = torch.jit.load(str(path), map_location=device)
    return TorchRunner("torchscript", _place_artifact(module, device, precision, memory_format, artifact_precision),
                       device, precision, memory_format)


def pt2_runner(path: str | os.PathLike, device: str = "cpu", precision: str = "fp32",
               memory_format: str = "contiguous", artifact_precision: str = "fp32") -> TorchRunner:
    check_supported("pt2", device, precision, memory_format)
    module = torch.export.load(str(path)).module()
    return TorchRunner("pt2", _place_artifact(module, device, precision, memory_format, artifact_precision),
                       device, precision, memory_format)


def _place_artifact(module, device, precision, memory_format, artifact_precision):
    """An exported module keeps its dtype: an fp16 artifact runs as fp16 only, autocast needs an fp32 one."""
    if artifact_precision != "fp32" and precision != artifact_precision:
        raise UnsupportedError(f"this artifact was exported in {artifact_precision}; it runs only as "
                               f"{artifact_precision}, not {precision} (export again with --precision fp32)")
    if artifact_precision == "fp32" and precision == "fp16":
        raise UnsupportedError("this artifact was exported in fp32; for fp16 export with --precision fp16")
    return module.to(device).to(memory_format=MEMORY_FORMATS[memory_format])


# --- onnxruntime --------------------------------------------------------------------------------------

ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                 "tensorrt": "TensorrtExecutionProvider"}


@dataclass(frozen=True)
class OrtSettings:
    """onnxruntime session settings; recorded with every result."""

    threads: int | None = None  # intra-op threads; None: onnxruntime's default (one per physical core)
    optimization: str = "all"  # disable | basic | extended | all
    cudnn_conv_algo_search: str = "EXHAUSTIVE"  # CUDA provider: EXHAUSTIVE | HEURISTIC | DEFAULT
    prefer_nhwc: bool = False  # CUDA provider: NHWC convolutions
    tf32: bool = False  # CUDA provider: TF32 matmuls/convolutions (onnxruntime's default is on; fp32 is fp32 here)
    trt_fp16: bool = False  # TensorRT provider: build fp16 engines
    trt_cache_dir: str | None = None  # TensorRT provider: engine cache folder

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class OrtRunner:
    """onnxruntime InferenceSession. On CUDA the input is bound on the device (IO binding), so the
    timed run does not include host-device copies, as for the torch runners."""

    # onnxruntime runs on its own CUDA stream and returns when the outputs are ready: torch's CUDA
    # events would not see its work, so the benchmark times it with a wall clock
    torch_stream = False

    def __init__(self, path: str | os.PathLike, device: str = "cpu", precision: str = "fp32",
                 settings: OrtSettings | None = None, provider: str | None = None) -> None:
        import onnxruntime as ort

        self.device, self.precision, self.memory_format = device, precision, "contiguous"
        kind = provider or device_kind(device)
        self.name = "tensorrt" if kind == "tensorrt" else "onnxruntime"
        check_supported(self.name, device, precision)
        self.settings = settings or OrtSettings()
        wanted = ORT_PROVIDERS[kind]
        if wanted not in ort.get_available_providers():
            raise UnsupportedError(f"onnxruntime {ort.__version__} has no {wanted} here "
                                   f"(available: {', '.join(ort.get_available_providers())})")
        options = ort.SessionOptions()
        levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                  "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                  "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
        options.graph_optimization_level = levels[self.settings.optimization]
        if self.settings.threads:
            options.intra_op_num_threads = self.settings.threads
        providers: list = [wanted]
        index = torch.device(device).index or 0
        if kind == "cuda":
            providers = [(wanted, {"device_id": index,
                                   "cudnn_conv_algo_search": self.settings.cudnn_conv_algo_search,
                                   "prefer_nhwc": int(self.settings.prefer_nhwc),
                                   "use_tf32": int(self.settings.tf32)})]
        elif kind == "tensorrt":
            trt = {"device_id": index, "trt_fp16_enable": self.settings.trt_fp16 or precision == "fp16"}
            if self.settings.trt_cache_dir:
                trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=self.settings.trt_cache_dir)
            providers = [(wanted, trt), ("CUDAExecutionProvider", {"device_id": index})]
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        if self.session.get_providers()[0] != wanted:
            # onnxruntime silently falls back to the CPU when a provider cannot start; we do not
            raise UnsupportedError(f"onnxruntime could not start {wanted} (it fell back to "
                                   f"{', '.join(self.session.get_providers())}); check the CUDA/cuDNN/TensorRT install")
        self.input = self.session.get_inputs()[0]
        self.output = self.session.get_outputs()[0].name
        self._np_dtype = {"tensor(float)": "float32", "tensor(float16)": "float16"}[self.input.type]
        self._on_device = kind != "cpu"
        self._index = index

    def prepare(self, batch: torch.Tensor):
        array = batch.detach().cpu().numpy().astype(self._np_dtype)
        if not self._on_device:
            return array
        import onnxruntime as ort

        value = ort.OrtValue.ortvalue_from_numpy(array, "cuda", self._index)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input.name, value)
        binding.bind_output(self.output, "cuda", self._index)
        return binding, value  # keep the device buffer alive as long as the binding

    def run(self, prepared):
        if not self._on_device:
            return self.session.run([self.output], {self.input.name: prepared})[0]
        binding, _ = prepared
        self.session.run_with_iobinding(binding)
        return binding

    def synchronize(self) -> None:
        """Session.run returns once the outputs are ready, so there is nothing to wait for."""

    def to_tensor(self, output) -> torch.Tensor:
        if self._on_device:
            output = output.copy_outputs_to_cpu()[0]
        return torch.from_numpy(output).float()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.to_tensor(self.run(self.prepare(batch)))


def ort_runner(path: str | os.PathLike, device: str = "cpu", precision: str = "fp32",
               settings: OrtSettings | None = None, provider: str | None = None) -> OrtRunner:
    return OrtRunner(Path(path), device, precision, settings, provider)


# --- from an export folder ----------------------------------------------------------------------------

def load_runner(export_dir: str | os.PathLike, backend: str, device: str = "cpu", precision: str | None = None,
                memory_format: str = "contiguous", settings: OrtSettings | None = None):
    """A runner for one artifact of an export folder; every file is checked against the manifest first.

    precision defaults to the precision the folder was exported in.
    """
    from ..exporters.manifest import artifact, format_for_backend, read_manifest

    manifest = read_manifest(export_dir)
    exported = manifest["precision"]
    precision = precision or exported
    check_supported(backend, device, precision, memory_format)
    if precision == "int8" and exported != "fp32":
        raise UnsupportedError(f"int8 is quantized from an fp32 export; {export_dir} was exported in {exported}")
    fmt = "onnx-int8" if precision == "int8" else format_for_backend(backend)
    entry = artifact(manifest, fmt, export_dir)
    path = Path(export_dir) / entry["files"][0]["file"]
    if backend == "torchscript":
        return torchscript_runner(path, device, precision, memory_format, exported)
    if backend == "pt2":
        return pt2_runner(path, device, precision, memory_format, exported)
    if precision not in ("int8", exported):
        raise UnsupportedError(f"{export_dir} was exported in {exported}; onnxruntime runs it as {exported} only")
    return ort_runner(path, device, precision, settings, provider="tensorrt" if backend == "tensorrt" else None)


def make_runner(backend: str, model=None, *, export_dir: str | os.PathLike | None = None, device: str = "cpu",
                precision: str = "fp32", memory_format: str = "contiguous", settings: OrtSettings | None = None,
                compile_mode: str | None = None, compile_options: dict | None = None):
    """One entry point for every backend: eager and compile run `model` (a LoadedModel or nn.Module),
    the others load their artifact from `export_dir` (see vggbench.export)."""
    check_supported(backend, device, precision, memory_format)
    module = getattr(model, "module", model)
    if BACKENDS[backend].artifact is None:
        if module is None:
            raise ValueError(f"backend {backend} needs a model")
        if backend == "eager":
            return eager_runner(module, device, precision, memory_format)
        if backend == "winograd":
            from .winograd.runner import winograd_runner

            return winograd_runner(module, device, precision, memory_format)
        return compile_runner(module, device, precision, memory_format, compile_mode, compile_options)
    if export_dir is None:
        raise ValueError(f"backend {backend} needs an export folder")
    return load_runner(export_dir, backend, device, precision, memory_format, settings)
