"""Per-op time from a runtime's own profiler: what each backend's `profiler` hook (vggbench.backends.registry)
returns, and the torch profiler that the torch backends share. vggbench.bench.layer_time maps the ops to the
model's layers.

An op is classified by what it computes: conv, pool, linear, act (ReLU, batch norm, dropout, LRN: the layer
mapping charges it to the weight layer before it, as runtimes that fuse them into the convolution do) or other
(layout reorders, the adaptive pool, flatten, a framework's own scopes).
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

KINDS = ("conv", "pool", "linear", "act", "other")
# tried in this order, on an op's type (ORT's op_name, OpenVINO's node type) or name (torch's): a compiled
# kernel named "cpp_fused_max_pool2d_relu" is the pool, one named "convolution_relu" the convolution
_PATTERNS = (("conv", re.compile(r"conv", re.I)),
             ("pool", re.compile(r"max_?pool", re.I)),
             ("linear", re.compile(r"gemm|linear|addmm|matmul|fullyconnected|^aten::mm$", re.I)),
             ("act", re.compile(r"relu|batch_?norm|dropout|localresponse|\blrn\b|identity", re.I)))
# marks the Chrome traces vggbench writes (an existing trace file is replaced only when it carries this)
TRACE_MARK = "vggbench layer-time trace"
_SCOPE = "vggbench.layer"  # torch: the record_function scope of one module call, "vggbench.layer:<kind>:<name>"
_CALL = "vggbench.call"


def classify(name: str) -> str:
    """The kind of an op from its type or name (see the module's docstring)."""
    for kind, pattern in _PATTERNS:
        if pattern.search(name):
            return kind
    return "other"


@dataclass(frozen=True)
class Op:
    """One op of a call, in execution order: its time per call (the mean over the profiled calls)."""

    name: str
    kind: str
    ms: float


@dataclass
class OpProfile:
    """What a backend's profiler measured: the ops of one call in execution order (each the mean over `calls`),
    each profiled call's wall time (taken outside the profiler, profiling overhead included), the runtime's
    trace as a Chrome trace (chrome://tracing, Perfetto) and which profiler it was."""

    ops: list[Op]
    wall_ms: list[float]
    trace: dict
    source: str
    notes: list[str] = field(default_factory=list)

    @property
    def ops_ms(self) -> float:
        return sum(op.ms for op in self.ops)


def chrome_trace(events: list, source: str) -> dict:
    """A Chrome trace (JSON object format) marked as vggbench's."""
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"vggbench": TRACE_MARK, "source": source}}


def mean_ops(calls: list[list[tuple[str, str, float]]]) -> tuple[list[Op], list[str]]:
    """Each op's mean time over the calls, from each call's (name, kind, ms) in order. A call whose ops differ from
    the most common sequence (a runtime that ran another plan once) is left out, with a note."""
    signatures = [tuple((name, kind) for name, kind, _ in ops) for ops in calls]
    common, _ = Counter(signatures).most_common(1)[0]
    kept = [ops for ops, sig in zip(calls, signatures, strict=True) if sig == common]
    notes = [f"{len(calls) - len(kept)} of {len(calls)} profiled calls ran other ops and are left out"] \
        if len(kept) < len(calls) else []
    return [Op(name, kind, sum(ops[i][2] for ops in kept) / len(kept)) for i, (name, kind) in enumerate(common)], notes


# --- torch.profiler, for the backends that run torch --------------------------------------------------------

def layer_module(module) -> nn.Module | None:
    """The module whose layers can be timed one by one with hooks: a plain nn.Module with a `features` stack
    (eager, winograd's tuned model); None for a scripted, exported or compiled one, whose calls never reach its
    submodules' hooks (their ops are classified by name instead)."""
    from torch.fx import GraphModule

    if not isinstance(module, nn.Module) or isinstance(module, (torch.jit.ScriptModule, GraphModule)):
        return None
    if type(module).__name__ == "OptimizedModule":  # torch.compile's wrapper: hooks would break its graph
        return None
    return module if isinstance(getattr(module, "features", None), nn.Sequential) else None


def _module_kind(module: nn.Module) -> str:
    if isinstance(module, nn.Sequential) and len(module):  # winograd's torch Linear with its ReLU
        module = module[0]
    return classify(type(module).__name__)


def _scope_hooks(module: nn.Module) -> list:
    """A record_function scope around each call of the model's layers (features.N, avgpool, classifier.N)."""
    handles = []
    for name, child in module.named_modules():
        parent, _, _ = name.rpartition(".")
        if name != "avgpool" and parent not in ("features", "classifier"):
            continue
        scope = f"{_SCOPE}:{_module_kind(child)}:{name}"

        def enter(mod, args, scope=scope):
            mod._vggbench_scope = torch.profiler.record_function(scope)
            mod._vggbench_scope.__enter__()

        def leave(mod, args, out):
            mod._vggbench_scope.__exit__(None, None, None)
            del mod._vggbench_scope

        handles += [child.register_forward_pre_hook(enter), child.register_forward_hook(leave)]
    return handles


def _ops_of(event, found: list, device: bool) -> None:
    """The ops under a call's scope: a classified event is one op (its children are its own work); an
    unclassified one is opened up, its time outside its children an "other" op. device: the time of the CUDA
    kernels an op launched (its CPU time is only the launch), else its CPU time."""
    def us(e) -> float:
        return e.device_time_total if device else e.cpu_time_total

    name = event.name
    if name.startswith(_SCOPE + ":"):
        _, kind, module = name.split(":", 2)
        found.append((module, kind, us(event) / 1e3))
        return
    kind = classify(name)
    children = list(event.cpu_children)
    if kind != "other" or not children:
        found.append((name, kind, us(event) / 1e3))
        return
    for child in children:
        _ops_of(child, found, device)
    rest = us(event) - sum(us(c) for c in children)
    if rest > 0:
        found.append((f"{name} (self)", "other", rest / 1e3))


def torch_profile(runner, batch: torch.Tensor, calls: int, module: nn.Module | None = None) -> OpProfile:
    """`calls` calls of a torch runner under torch.profiler (on CUDA each op's time is its kernels' device time).
    With `module` (see layer_module), each layer's call is one scope, named after the module; else the ops are the
    call's outermost aten ops (or compiled kernels), classified by name."""
    from torch.profiler import ProfilerActivity, profile, record_function

    prepared = runner.prepare(batch)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if runner.device.is_cuda else [])
    handles = _scope_hooks(module) if module is not None else []
    walls = []
    try:
        with profile(activities=activities) as prof:
            for i in range(calls):
                started = time.perf_counter()
                with record_function(f"{_CALL}:{i}"):
                    runner.run(prepared)
                    runner.synchronize()
                walls.append((time.perf_counter() - started) * 1e3)
    finally:
        for handle in handles:
            handle.remove()
    per_call = []
    for event in sorted((e for e in prof.events() if e.name.startswith(_CALL + ":")),
                        key=lambda e: e.time_range.start):
        found: list = []
        for child in sorted(event.cpu_children, key=lambda e: e.time_range.start):
            _ops_of(child, found, runner.device.is_cuda)
        per_call.append(found)
    ops, notes = mean_ops(per_call)
    if any("CompiledFxGraph" in op.name for op in ops):
        notes.append("torch.compile's generated kernels (the ReLUs and pools it fuses) run within its graph call, "
                     "which the profiler sees as one op: their time is in other")
    with tempfile.TemporaryDirectory(prefix="vggbench-trace-") as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        data = json.loads(path.read_text(encoding="utf-8"))
    events = data.get("traceEvents", data) if isinstance(data, dict) else data
    source = "torch.profiler" + (", one scope per layer" if module is not None else ", outermost ops")
    return OpProfile(ops, walls, chrome_trace(events, source), source, notes)


def module_profiler(runner, batch: torch.Tensor, calls: int) -> OpProfile:
    """The profiler of a TorchRunner (eager, compile, torchscript, pt2): per layer where the module takes hooks."""
    return torch_profile(runner, batch, calls, layer_module(runner.module))


def sequential_trace(calls: Iterable[list[tuple[str, str, float]]], source: str) -> dict:
    """A Chrome trace of ops known only by their durations (OpenVINO's counters): laid end to end, one call after
    another."""
    events, ts = [], 0.0
    for i, ops in enumerate(calls):
        start = ts
        for name, kind, ms in ops:
            events.append({"name": name, "cat": kind, "ph": "X", "ts": ts, "dur": ms * 1e3, "pid": 0, "tid": 0})
            ts += ms * 1e3
        events.append({"name": f"call {i}", "cat": "call", "ph": "X", "ts": start, "dur": ts - start, "pid": 0,
                       "tid": 1})
    return chrome_trace(events, source)
