"""tensorrt: TensorRT engines built from the manifest's model.onnx by TensorRT's own ONNX parser, in fp32 (TF32
off unless asked), fp16, int8 (calibrated on real images with an entropy calibrator) and fp8 (compute capability
8.9+: FP8 Q/DQ nodes calibrated on the same images, vggbench.backends.fp8), run on torch's current CUDA stream with torch tensors as bindings.

Each engine has one dynamic-batch optimisation profile: min 1, opt the batch being timed, max a setting. Engines,
the builder's timing cache and int8 calibration caches are kept under `$VGGBENCH_CACHE/tensorrt` (default
`~/.cache/vggbench/tensorrt`), keyed by the ONNX files' sha256, the TensorRT version, the GPU model, the
precision, the profile and the build settings, and written atomically: a second run reads the engine from disk.
TensorRT is the `tensorrt` extra: `pip install 'vggbench[tensorrt]'`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ..core.documents import open_regular, read_text
from ..core.errors import UnsupportedError, VggbenchError
from ..core.extras import require
from ..core.fileio import atomic_file, exclusive, write_json
from ..core.settings import setting
from ..exporters.manifest import Artifact
from .profiling import OpProfile, classify, mean_ops, sequential_trace
from .registry import Backend, Knob, register
from .runner import Runner, RunnerOptions
from .settings import BackendSettings, RunContext
from .target import Target

FP8_CAPABILITY = (8, 9)  # Ada and Hopper have fp8 tensor cores
# the builder flags of each precision; int8 and fp8 let the layers without a quantized kernel run in fp16
FLAGS = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8", "FP16"), "fp8": ("FP8", "FP16")}
DEFAULT_MAX_BATCH = 256  # the profile's largest batch when neither the settings nor the run say
OPTIMIZATION_LEVELS = (0, 1, 2, 3, 4, 5)  # TensorRT's builder optimisation levels
KEY_VERSION = 1  # bump when what goes into an engine changes without its key saying so


@dataclass(frozen=True, kw_only=True)
class TrtSettings(BackendSettings):
    """How engines are built; recorded with every result (and part of the engine's cache key)."""

    context = ("tf32",)

    max_batch: int | None = setting(None, "tensorrt: the optimisation profile's largest batch (min 1, opt the batch "
                                          "being timed) [default: the suite's largest batch size, else "
                                          f"{DEFAULT_MAX_BATCH}].", minimum=1)
    workspace_gib: float = setting(4.0, "tensorrt: the builder's workspace memory pool, GiB.", above=0,
                                   maximum=1024)
    calibration_batch: int = setting(8, "tensorrt: images per int8 calibration batch.", minimum=1, maximum=4096)
    # IBuilderConfig.builder_optimization_level: how hard the builder searches tactics (TensorRT's default 3; 0-2
    # build sooner, usually into slower engines; 4-5 try more, dynamic-shape kernels included, and build longer)
    builder_optimization_level: int = setting(3, "tensorrt: the builder's optimisation level (0-5).",
                                              choices=OPTIMIZATION_LEVELS)
    # the run's: fp32 layers may use TF32 tensor cores (TensorRT's default is on; fp32 is fp32 here)
    tf32: bool = setting(False, cli=False)

    def with_run(self, run: RunContext) -> TrtSettings:
        settings = super().with_run(run)
        return settings if self.max_batch is not None else replace(settings, max_batch=run.max_batch)

    @property
    def profile_max(self) -> int:
        """The profile's largest batch."""
        return self.max_batch or DEFAULT_MAX_BATCH


@dataclass(frozen=True)
class Profile:
    """The batch sizes of one optimisation profile."""

    min: int
    opt: int
    max: int

    def shapes(self, chw: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
        return tuple((b, *chw) for b in (self.min, self.opt, self.max))

    def covers(self, batch: int) -> bool:
        return self.min <= batch <= self.max

    def __str__(self) -> str:
        return f"batch {self.min}/{self.opt}/{self.max}"


def import_tensorrt():
    """The tensorrt module, or an UnsupportedError that says how to install it."""
    return require("tensorrt", "the tensorrt backend")


def cache_dir() -> Path:
    root = os.environ.get("VGGBENCH_CACHE") or Path.home() / ".cache" / "vggbench"
    return Path(root) / "tensorrt"


def _digest(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def engine_key(onnx_sha256: list[str], trt_version: str, gpu: str, precision: str, profile: Profile,
               settings: TrtSettings, calibration: str | None = None) -> str:
    """The name of an engine in the cache: everything that changes what TensorRT builds."""
    parts = {"onnx": onnx_sha256, "tensorrt": trt_version, "gpu": gpu, "precision": precision,
             "profile": asdict(profile), "settings": settings.to_dict(), "calibration": calibration,
             "version": KEY_VERSION}
    return f"{precision}-b{profile.opt}-{_digest(parts)}"


def images_digest(images: torch.Tensor) -> str:
    return hashlib.sha256(images.detach().float().contiguous().cpu().numpy().tobytes()).hexdigest()[:24]


def read_cached(path: Path) -> bytes | None:
    """A cached file whose size and sha256 match the record written beside it; None when absent or damaged."""
    record = path.with_name(path.name + ".json")
    try:
        expected = json.loads(read_text(record))
        if path.stat().st_size == expected["bytes"]:
            with open_regular(path) as f:
                data = f.read()  # read once: the bytes checked are the bytes returned
            if hashlib.sha256(data).hexdigest() == expected["sha256"]:
                return data
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def write_cached(path: Path, data: bytes) -> None:
    """Write `data` and its record (size, sha256) atomically."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    write_json(path.with_name(path.name + ".json"),
               {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})


def has_fp8_quantization(onnx_path: Path) -> bool:
    """Whether the model has FP8 Q/DQ nodes: TensorRT runs fp8 only where the network says so (explicit
    quantization); it has no fp8 calibrator."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    fp8 = {onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.FLOAT8E5M2}
    typed = {init.name for init in model.graph.initializer if init.data_type in fp8}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear":
            continue
        if len(node.input) > 2 and node.input[2] in typed:
            return True
        if any(a.name == "output_dtype" and a.i in fp8 for a in node.attribute):
            return True
    return False


def check_fp8(device_index: int) -> None:
    """fp8 runs on compute capability 8.9+ (Ada, Hopper); elsewhere it is refused with the reason."""
    capability = tuple(torch.cuda.get_device_capability(device_index))
    if capability < FP8_CAPABILITY:
        raise UnsupportedError(f"fp8 needs compute capability {FP8_CAPABILITY[0]}.{FP8_CAPABILITY[1]} or later "
                               f"(Ada, Hopper); {torch.cuda.get_device_name(device_index)} is "
                               f"{capability[0]}.{capability[1]}")


def make_calibrator(trt, images: torch.Tensor, batch: int, device: torch.device, cache: Path):
    """An IInt8EntropyCalibrator2 that feeds `images` (normalised, N x 3 x H x W) in full batches of `batch`
    through one device buffer, and keeps TensorRT's calibration table in `cache`."""

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.images, self.batch, self.next = images.float(), batch, 0
            self.buffer: torch.Tensor | None = None  # allocated when TensorRT first asks


        def get_batch_size(self) -> int:
            return self.batch

        def get_batch(self, names):
            if self.next + self.batch > self.images.shape[0]:
                return None  # the calibration profile's batch is fixed: full batches only
            if self.buffer is None:
                self.buffer = torch.empty((self.batch, *self.images.shape[1:]), dtype=torch.float32, device=device)
            self.buffer.copy_(self.images[self.next:self.next + self.batch])
            if self.buffer.is_cuda:
                torch.cuda.synchronize(self.buffer.device)  # TensorRT reads it on its own stream
            self.next += self.batch
            return [int(self.buffer.data_ptr())] * len(names)

        def read_calibration_cache(self):
            return read_cached(cache)

        def write_calibration_cache(self, table) -> None:
            write_cached(cache, bytes(table))

    return Calibrator()


def build_engine(trt, onnx_path: Path, precision: str, profile: Profile, settings: TrtSettings, logger,
                 timing_cache: Path, calibrator=None) -> bytes:
    """Parse `onnx_path` with TensorRT's ONNX parser and build a serialized engine for one profile."""
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch: the only mode of TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UnsupportedError(f"TensorRT's ONNX parser refused {onnx_path.name}: {errors or 'no reason given'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_gib * 2**30))
    config.builder_optimization_level = settings.builder_optimization_level
    if not settings.tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    for flag in FLAGS[precision]:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    name = network.get_input(0).name
    chw = tuple(network.get_input(0).shape)[1:]
    shapes = builder.create_optimization_profile()
    shapes.set_shape(name, *profile.shapes(chw))
    config.add_optimization_profile(shapes)
    if calibrator is not None:
        fixed = builder.create_optimization_profile()
        fixed.set_shape(name, *Profile(calibrator.batch, calibrator.batch, calibrator.batch).shapes(chw))
        config.set_calibration_profile(fixed)
        config.int8_calibrator = calibrator
    cache = config.create_timing_cache(read_cached(timing_cache) or b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise VggbenchError(f"TensorRT could not build a {precision} engine of {onnx_path.name} ({profile}); "
                            f"its log above says why")
    write_cached(timing_cache, bytes(cache.serialize()))  # what later builds on this GPU reuse
    return bytes(serialized)


def _torch_dtype(trt, dtype) -> torch.dtype:
    names = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
             "INT8": torch.int8}
    for name, torch_dtype in names.items():
        if dtype == getattr(trt.DataType, name, None):
            return torch_dtype
    raise UnsupportedError(f"TensorRT tensor type {dtype} has no torch dtype here")


class TrtRunner(Runner):
    """A TensorRT engine per profile, executed with execute_async_v3 on torch's current stream: torch's CUDA
    events time it like the torch runners, and the bindings are torch tensors fixed in `prepare`."""

    def __init__(self, path: Path, target: Target, settings: TrtSettings | None = None,
                 calibration: torch.Tensor | None = None, *, artifact: Artifact,
                 static_batch: int | None = None) -> None:
        self.trt = import_tensorrt()
        super().__init__(target)
        self.path = Path(path)
        settings = settings or TrtSettings()
        self.settings = replace(settings, max_batch=settings.profile_max)
        self._index = target.device.index or 0
        self.gpu = torch.cuda.get_device_name(self._index)
        self.calibration = None
        if self.precision == "fp8":
            check_fp8(self._index)
        # int8 is calibrated by TensorRT; fp8 needs Q/DQ nodes (explicit quantization), which vggbench writes with
        # scales calibrated on the same images unless the model has them already
        if self.precision == "int8" or (self.precision == "fp8" and not has_fp8_quantization(self.path)):
            if calibration is None or len(calibration) == 0:
                raise UnsupportedError(f"TensorRT {self.precision} is calibrated on real images, and none were given "
                                       f"(RunnerOptions.calibration)")
            self.calibration = calibration
        self.onnx_sha256 = artifact.sha256s  # the model and its external weights
        self.static_batch = static_batch
        self.logger = self.trt.Logger(self.trt.Logger.WARNING)
        self.runtime = self.trt.Runtime(self.logger)
        # an engine can carry host code (lean/plugin engines): the cache folder is writable by whoever shares it,
        # so such engines are never run, whatever TensorRT's default (vggbench.backends.safe_load)
        if hasattr(self.runtime, "engine_host_code_allowed"):
            self.runtime.engine_host_code_allowed = False
        self._current: tuple | None = None  # (profile, engine, context): one engine on the device at a time
        self.log: list[str] = []  # per engine: built or read from the cache

    @property
    def version(self) -> str:
        return str(self.trt.__version__)

    def profile(self, batch: int) -> Profile:
        """min 1, opt `batch`, max the setting; a static export has the one batch it was exported with."""
        if self.static_batch is not None:
            if batch != self.static_batch:
                raise UnsupportedError(f"this export has a static batch of {self.static_batch}, not {batch}: "
                                       f"export with a dynamic batch")
            return Profile(batch, batch, batch)
        if batch > self.settings.max_batch:
            raise UnsupportedError(f"batch {batch} is above the TensorRT profile's largest "
                                   f"({self.settings.max_batch}): raise --trt-max-batch")
        return Profile(1, batch, self.settings.max_batch)

    def key(self, profile: Profile) -> str:
        calibration = images_digest(self.calibration) if self.calibration is not None else None
        return engine_key(self.onnx_sha256, self.version, self.gpu, self.precision, profile, self.settings,
                          calibration)

    def engine_bytes(self, profile: Profile) -> bytes:
        """The serialized engine of a profile: from the cache, or built (and cached) under a lock."""
        folder = cache_dir()
        path = folder / f"{self.key(profile)}.engine"
        with exclusive(path, wait=True):  # two runs that want one engine: one builds, the other reads it
            data = read_cached(path)
            if data is not None:
                self.log.append(f"{profile} from the cache")
                return data
            calibrator, source = None, self.path
            if self.precision == "fp8" and self.calibration is not None:
                source = self._fp8_model(folder)
            elif self.calibration is not None:
                batch = min(self.settings.calibration_batch, self.calibration.shape[0])
                table = folder / f"calibration-{_digest([self.onnx_sha256, self.version, images_digest(self.calibration), batch])}.table"
                calibrator = make_calibrator(self.trt, self.calibration, batch, self.device.torch, table)
            timing = folder / f"timing-{_digest([self.version, self.gpu])}.cache"
            data = build_engine(self.trt, source, self.precision, profile, self.settings, self.logger, timing,
                                calibrator)
            write_cached(path, data)
            self.log.append(f"{profile} built")
            return data

    def _fp8_model(self, folder: Path) -> Path:
        """model.onnx with FP8 Q/DQ nodes calibrated on the images (made once, kept beside the engines)."""
        from .fp8 import quantize_fp8

        path = folder / f"fp8-{_digest([self.onnx_sha256, images_digest(self.calibration)])}.onnx"
        if not path.exists():
            quantize_fp8(self.path, path, self.calibration)
        return path

    def _context(self, batch: int, tuned: bool):
        if self._current is not None:
            profile, engine, context = self._current
            if (profile.opt == batch) if tuned else profile.covers(batch):
                return engine, context
        profile = self.profile(batch)
        self._current = None  # free the previous engine before the next one is loaded
        engine = self.runtime.deserialize_cuda_engine(self.engine_bytes(profile))
        if engine is None:
            raise VggbenchError(f"TensorRT could not load its {self.precision} engine ({profile})")
        context = engine.create_execution_context()
        self._current = (profile, engine, context)
        return engine, context

    def _io(self, engine) -> tuple[str, str]:
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == self.trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        return inputs[0], outputs[0]

    def _prepare(self, batch: torch.Tensor, tuned: bool):
        engine, context = self._context(batch.shape[0], tuned)
        name, output = self._io(engine)
        x = batch.to(self.device.torch, _torch_dtype(self.trt, engine.get_tensor_dtype(name))).contiguous()
        context.set_input_shape(name, tuple(x.shape))
        out = torch.empty(tuple(context.get_tensor_shape(output)),
                          dtype=_torch_dtype(self.trt, engine.get_tensor_dtype(output)), device=self.device.torch)
        context.set_tensor_address(name, x.data_ptr())
        context.set_tensor_address(output, out.data_ptr())
        return context, x, out  # the tensors live as long as the bindings that point at them

    def prepare(self, batch: torch.Tensor):
        """The engine whose profile is tuned for this batch size (opt = batch), with its bindings set."""
        return self._prepare(batch, tuned=True)

    def run(self, prepared) -> torch.Tensor:
        context, _, out = prepared
        if not context.execute_async_v3(torch.cuda.current_stream(self._index).cuda_stream):
            raise VggbenchError("TensorRT could not enqueue the engine")
        return out

    def notes(self, batch: torch.Tensor) -> str:
        return f"TensorRT {self.version}: " + "; ".join(self.log)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Parity checks: any engine whose profile covers the batch (no build per batch size)."""
        prepared = self._prepare(batch, tuned=False)
        out = self.run(prepared)
        self.synchronize()
        return self.to_tensor(out)


def trt_profiler(runner: TrtRunner, batch: torch.Tensor, calls: int) -> OpProfile:
    """TensorRT's layer profiler (IExecutionContext.profiler, an IProfiler) on the runner's engine for the batch:
    TensorRT reports each engine layer's time after every call (and synchronises between layers to measure
    them). Engine layers are named after the ONNX nodes they fuse ("node_Conv_3 + node_relu"), which classify
    reads; the format conversions TensorRT inserts ("Reformatting CopyNode for ...") are other. The profiler
    stays on the context, which the profile's runner is closed with."""
    trt = runner.trt

    class Layers(trt.IProfiler):
        def __init__(self) -> None:
            super().__init__()
            self.ops: list[tuple[str, str, float]] = []

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            kind = "other" if layer_name.startswith("Reformatting") else classify(layer_name)
            self.ops.append((layer_name, kind, ms))

    prepared = runner.prepare(batch)
    layers = Layers()
    prepared[0].profiler = layers
    walls, per_call = [], []
    for _ in range(calls):
        layers.ops = []
        started = time.perf_counter()
        runner.run(prepared)
        runner.synchronize()
        walls.append((time.perf_counter() - started) * 1e3)
        per_call.append(layers.ops)
    ops, notes = mean_ops(per_call)
    source = f"TensorRT {runner.version} IProfiler"
    return OpProfile(ops, walls, sequential_trace(per_call, source), source, notes)


def tensorrt_factory(path: Path, target: Target, options: RunnerOptions | None = None,
                     artifact_precision: str = "fp32", *, artifact: Artifact,
                     static_batch: int | None = None) -> TrtRunner:
    """`artifact`: the manifest's entry of the ONNX export `path` is the main file of; `static_batch`: the batch
    a static export takes (None: any)."""
    options = options or RunnerOptions()
    return TrtRunner(path, target, options.settings_for(target), options.calibration, artifact=artifact,
                     static_batch=static_batch)


BACKEND = register(Backend("tensorrt", "onnx", ("cuda",), ("fp32", "fp16", "int8", "fp8"), ("contiguous",),
                           tensorrt_factory, aliases=("trt",), builds_precisions=True, thread_safe=True,
                           settings=TrtSettings, option_prefix="trt", profiler=trt_profiler, package="tensorrt",
                           # the levels below the default build sooner, not faster engines: not a speed knob
                           knobs=(Knob("workspace_gib", (1.0, 4.0, 8.0)),
                                  Knob("builder_optimization_level", (3, 4, 5)))))
