"""Where the time goes: `vggbench run --profile`. Each case's runner (built and parity-checked as `run` builds
it) is run under its runtime's own profiler (the backend's `profiler` hook: onnxruntime's enable_profiling,
OpenVINO's PERF_COUNT, torch.profiler), and the runtime's ops are mapped to the model's layers (conv1_1 ... fc8)
by kind and order: the k-th convolution op is the k-th conv layer, the k-th max-pool op the k-th pool, the k-th
GEMM the k-th fully connected layer, and an activation, batch norm or dropout op counts with the weight layer
before it (as the runtimes that fuse them count it). What maps to no layer (layout reorders, the adaptive pool,
flatten, surplus ops) is the "other" line.

Profiling costs time (the profiler's own work, and hooks on the torch paths), so a profiled run never yields
timed rows: it is its own file, of kind "vggbench-layer-time", which `vggbench report` shows as the per-layer
table (and `read_run`, hence report's speed-ups, --best and --compare, refuses). Each case's Chrome trace goes
into NAME.traces/ beside it, and a plot of each layer's share into NAME.png.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..backends import resolve_target
from ..backends.profiling import TRACE_MARK, Op, OpProfile
from ..backends.registry import environment as backend_environment
from ..backends.registry import get_backend
from ..core import allocator
from ..core.device import Device, require_device
from ..core.documents import loads_json, read_text
from ..core.env import capture, package_version
from ..core.errors import ConfigError, ResultsError, Terminated, UnsupportedError
from ..core.fileio import atomic_dir, atomic_file, check_replaceable, write_json
from ..core.load import LoadSampler, wait_for_quiet
from ..core.numerics import scoped_numerics, tf32_flag
from ..core.plots import check_plot_path
from ..data.inputs import random_batch
from ..zoo.profiling import ModelProfile, profile
from ..zoo.weights import parse_weights
from .cache import DEFAULT_EXPORT_CACHE
from .peak import measure_peak, theoretical_peak
from .prepare import Failure, Preparation, PreparedModel
from .results import DEFAULT_RESULTS_DIR
from .suite import Suite, resolve_suite

KIND = "vggbench-layer-time"
SCHEMA_VERSION = 1
MAPPED = ("conv", "pool", "linear")


@dataclass(frozen=True)
class Slot:
    """A layer of the table: a weight layer (with the activations after it) or a max-pool."""

    layer: str  # conv1_1, pool1, fc6, ... (the paper's names: block_index, pool after the block, fc after the blocks)
    module: str  # features.0, classifier.6, ...
    kind: str  # conv, pool or linear
    macs: int  # per image


def layer_slots(prof: ModelProfile) -> list[Slot]:
    """The model's layers in depth order, named as the paper names VGG's: conv<block>_<n>, pool<block>, fc<n>
    numbered on after the blocks (fc6, fc7, fc8 for the five-block VGGs)."""
    slots, block, n, fc = [], 1, 0, 0
    for layer in prof.layers:
        if layer.kind == "Conv2d":
            n += 1
            slots.append(Slot(f"conv{block}_{n}", layer.name, "conv", layer.macs))
        elif layer.kind == "MaxPool2d":
            slots.append(Slot(f"pool{block}", layer.name, "pool", 0))
            block, n = block + 1, 0
        elif layer.kind == "Linear":
            slots.append(Slot(f"fc{block + fc}", layer.name, "linear", layer.macs))
            fc += 1
    return slots


@dataclass
class LayerMapping:
    """Ops charged to layers: ms per slot, the rest as other, and what did not fit."""

    ms: list[float]
    other_ms: float
    charged: list[str | None]  # per op: the layer it counts for (None: other)
    notes: list[str]


def map_ops(ops: list[Op], slots: list[Slot]) -> LayerMapping:
    """Charge each op to a layer by kind and order (see the module's docstring)."""
    queues = {kind: [i for i, s in enumerate(slots) if s.kind == kind] for kind in MAPPED}
    seen = dict.fromkeys(MAPPED, 0)
    ms, other, charged, surplus = [0.0] * len(slots), 0.0, [], []
    last_weight = None
    for op in ops:
        slot = None
        if op.kind in MAPPED:
            if seen[op.kind] < len(queues[op.kind]):
                slot = queues[op.kind][seen[op.kind]]
                if op.kind != "pool":
                    last_weight = slot
            else:
                surplus.append(op.name)
            seen[op.kind] += 1
        elif op.kind == "act":
            slot = last_weight
        if slot is None:
            other += op.ms
            charged.append(None)
        else:
            ms[slot] += op.ms
            charged.append(slots[slot].layer)
    notes = []
    for kind in MAPPED:
        if seen[kind] < len(queues[kind]):
            notes.append(f"the runtime ran {seen[kind]} {kind} op(s) for the model's {len(queues[kind])} {kind} "
                         f"layer(s): the last ones show no time")
    if surplus:
        notes.append(f"{len(surplus)} op(s) beyond the model's layers of their kind counted as other: "
                     f"{', '.join(surplus[:5])}{' ...' if len(surplus) > 5 else ''}")
    return LayerMapping(ms, other, charged, notes)


def layer_rows(op_profile: OpProfile, slots: list[Slot], batch_size: int, ceiling: float | None) -> dict:
    """A profiled case's layers: ms, share of the measured call (the mean wall time of the profiled calls),
    GFLOP/s and share of the ceiling, and the other line, from the runtime's ops."""
    mapping = map_ops(op_profile.ops, slots)
    # the mean, as each op's time is: a median call would leave a slow call's ops in the numerator alone
    wall = statistics.fmean(op_profile.wall_ms)
    layers = []
    for slot, ms in zip(slots, mapping.ms, strict=True):
        rate = 2 * slot.macs * batch_size / (ms / 1e3) / 1e9 if slot.macs and ms > 0 else None
        layers.append({"layer": slot.layer, "module": slot.module, "kind": slot.kind, "mmacs": slot.macs / 1e6,
                       "ms": ms, "share": ms / wall if wall > 0 else None, "gflops_per_s": rate,
                       "ceiling_pct": rate / ceiling * 100 if rate is not None and ceiling else None})
    return {"wall_ms": wall, "wall_ms_each": op_profile.wall_ms, "ops_ms": op_profile.ops_ms,
            "other_ms": mapping.other_ms, "coverage": op_profile.ops_ms / wall if wall > 0 else None,
            "layers": layers, "notes": [*op_profile.notes, *mapping.notes],
            "ops": [{**asdict(op), "layer": layer} for op, layer in zip(op_profile.ops, mapping.charged, strict=True)]}


# --- the profiled run -------------------------------------------------------------------------------------

def profile_run(suite: Suite | str | os.PathLike | None = None, *, export_cache: str | os.PathLike =
                DEFAULT_EXPORT_CACHE, out: str | os.PathLike | None = None, force: bool = False,
                command: str | None = None, raise_errors: bool = False, require_quiet: float | None = None,
                echo=None, **overrides) -> tuple[dict, Path]:
    """Profile every case of a suite (see the module's docstring) and write the results: NAME.json, the traces
    in NAME.traces/ and the plot NAME.png. `out`: a folder (default benchmarks/results/, NAME profile-<time>)
    or a .json file (replaced only with `force`, and only a profile vggbench wrote). The suite's `min_iters`
    is the number of profiled calls per case, after its warm-up; its rounds, isolation and cross-check do not
    apply (each case is profiled once, in this process). Returns the data written and its path."""
    suite = resolve_suite(suite, **overrides)
    if suite.dense:
        raise ConfigError("--profile maps the runtime's ops to the model's layers, and the dense form has other "
                          "layers (its fully connected layers are convolutions): profile without --dense")
    device = require_device(suite.device)
    weights = parse_weights(suite.weights, suite.seed).require()
    json_path = claim(out, force)
    sampler = LoadSampler()
    if require_quiet is not None:
        wait_for_quiet(require_quiet, sampler=sampler)
    traces: dict[str, dict] = {}
    entries = []
    with scoped_numerics(suite.threads, tf32_flag(device, suite.tf32), suite.cudnn_benchmark):
        environment = capture()
        environment["allocator"] = allocator.apply(suite.allocator)  # as `run` times: its measured call alike
        environment.update(backend_environment())
        environment["load"] = {"start": sampler.sample()}
        prep = Preparation(suite, device, weights, export_cache, raise_errors=raise_errors)
        ceilings: dict[str, dict] = {}
        interrupted = None
        try:
            _profile_groups(suite, device, prep, json_path, entries, traces, ceilings, echo)
        except KeyboardInterrupt as e:  # what was profiled is written, then the interrupt goes on
            interrupted = e
        environment["load"]["end"] = sampler.sample()
    _set_aside_beaten_theory(entries, ceilings)
    environment["ceilings"] = ceilings
    settings = {**suite.to_dict(), "export_cache": str(export_cache), "command": command}
    if interrupted is not None:
        how = "SIGTERM" if isinstance(interrupted, Terminated) else "Ctrl-C"
        settings["interrupted"] = f"{how} after {len(entries)} of {suite.case_count()} cases"
    data = {"schema_version": SCHEMA_VERSION, "kind": KIND, "vggbench": package_version("vggbench"),
            "created": environment["created"], "profiled": True, "settings": settings,
            "environment": environment, "profiles": entries}
    if interrupted is None or entries:
        _write(json_path, data, traces, force)
    if interrupted is not None:
        if entries and echo:
            echo(f"{settings['interrupted']}: the finished ones are written to {json_path}")
        raise interrupted
    return data, json_path


def _profile_groups(suite: Suite, device: Device, prep: Preparation, json_path: Path, entries: list,
                    traces: dict, ceilings: dict, echo) -> None:
    """Every group's runner built once and each of its cases profiled; an entry per case, in suite order."""
    models: dict[str, PreparedModel | Failure] = {}
    for model, backend, precision, memory_format, sizes, settings in suite.groups():
        if model not in models:
            models[model] = prep.model(model)
        prepared_model = models[model]
        try:
            target = resolve_target(backend, device, precision, memory_format)
            if get_backend(backend).profiler is None:
                raise UnsupportedError(f"backend {backend} has no profiler")
        except UnsupportedError as e:
            target = e
        cases = [prep.case(model, backend, precision, memory_format, b, target, settings) for b in sizes]
        if echo:
            echo(f"profiling {model} {backend} {precision} {memory_format} batch {','.join(map(str, sizes))}")
        if isinstance(prepared_model, Failure):
            entries += [_failed(c, prepared_model) for c in cases]
            continue
        prepared = prep.runner(prepared_model, target, cases)
        if isinstance(prepared, Failure):
            entries += [_failed(c, prepared) for c in cases]
            continue
        try:
            slots = layer_slots(profile(prepared_model.loaded.spec, prepared_model.loaded.options,
                                        suite.image_size))
            if precision not in ceilings:
                ceilings[precision] = _ceiling(device, precision)
            for case in cases:
                entry = _profile_case(prepared, case, slots, ceilings[precision], suite, prep)
                if "trace" in entry:
                    name = _trace_name(entry, traces)
                    traces[name] = entry.pop("trace")
                    entry["trace"] = f"{json_path.stem}.traces/{name}"
                entries.append(entry)
        finally:
            prepared.close()


def _profile_case(prepared, case, slots: list[Slot], ceiling: dict | None, suite: Suite, prep: Preparation) -> dict:
    """One case: its first output judged against eager fp32 (as `run` judges it), a warm-up, then the profile."""
    runner = prepared.runner
    base = _identity(case)
    try:
        batch = random_batch(case.batch_size, case.image_size, seed=0)
        x = runner.prepare(batch)
        parity = prepared.judge(runner.run(x), batch, case, source="benchmark batch")
        started, calls = time.perf_counter(), 0
        while calls < case.warmup or time.perf_counter() - started < case.warmup_time_s:
            runner.run(x)
            runner.synchronize()
            calls += 1
        op_profile = get_backend(case.backend).profiler(runner, batch, suite.min_iters)
    except Exception as e:  # recorded as the case's entry; re-raised on request
        failure = prep.failure(e)
        return {**base, "status": failure.status, "reason": failure.reason}
    rate = ceiling["gflops_per_s"] if ceiling else None
    rows = layer_rows(op_profile, slots, case.batch_size, rate)
    effective = get_backend(case.backend).fewer_flops
    notes = [*rows.pop("notes")] + (["GFLOP/s counts a direct convolution's FLOPs (Winograd computes fewer): an "
                                     "effective rate, which may pass the ceiling"] if effective else [])
    return {**base, "status": "ok", "reason": "", "source": op_profile.source, "calls": suite.min_iters,
            "parity_max_abs": parity, "runner_notes": runner.notes(batch), **rows, "notes": notes,
            "trace": op_profile.trace}


def _identity(case) -> dict:
    return {"model": case.model, "image_size": case.image_size, "batch_size": case.batch_size,
            "backend": case.backend, "device": case.device, "precision": case.precision,
            "memory_format": case.memory_format, "threads": case.threads, "variant": case.variant,
            "backend_settings": case.backend_settings, "profiled": True}


def _failed(case, failure: Failure) -> dict:
    return {**_identity(case), "status": failure.status, "reason": failure.reason}


def _ceiling(device: Device, precision: str) -> dict | None:
    """The rate a layer's GFLOP/s is a share of: the theoretical peak where known, else the best torch GEMM."""
    theory = theoretical_peak(device, precision, torch.get_num_threads())
    if theory:
        return {"gflops_per_s": theory["gflops_per_s"], "source": f"theoretical: {theory['source']}"}
    gemm = measure_peak(device, precision)
    if gemm:
        return {"gflops_per_s": gemm["gflops_per_s"], "source": f"measured GEMM {gemm['shape']}"}
    return None


def _set_aside_beaten_theory(entries: list[dict], ceilings: dict[str, dict]) -> None:
    """A theoretical ceiling that a layer of a backend computing every FLOP it is credited with ran faster than
    is wrong (a VM's /proc/cpuinfo clock under its boost: onnxruntime's convs at 136% of it on 2026-12-06, Zen 4),
    as vggbench.bench.peak.Ceilings sets it aside for a run's rows: the best such layer becomes the ceiling, each
    share is taken again, and the ceiling says why."""
    for precision, ceiling in ceilings.items():
        if not ceiling or not ceiling["source"].startswith("theoretical"):
            continue
        mine = [e for e in entries if e.get("status") == "ok" and e["precision"] == precision]
        rates = [(layer["gflops_per_s"], f"{e['backend']} {layer['layer']}") for e in mine
                 if not get_backend(e["backend"]).fewer_flops for layer in e["layers"] if layer["gflops_per_s"]]
        best, what = max(rates, default=(None, ""))
        if best is None or best <= ceiling["gflops_per_s"]:
            continue
        ceiling.update(gflops_per_s=best, source=f"measured: {what} (the {ceiling['source']} = "
                                                 f"{ceiling['gflops_per_s']:.4g} GFLOP/s set aside: a layer ran "
                                                 f"faster than it)")
        for e in mine:
            for layer in e["layers"]:
                if layer["gflops_per_s"] is not None:
                    layer["ceiling_pct"] = layer["gflops_per_s"] / best * 100


def _trace_name(entry: dict, taken: dict) -> str:
    stem = "-".join(str(part) for part in (entry["model"], entry["backend"], entry["variant"], entry["precision"],
                                           entry["memory_format"], f"b{entry['batch_size']}") if part)
    name, n = f"{stem}.json", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}.json"
    return name


# --- files ---------------------------------------------------------------------------------------------------

def traces_folder(json_path: Path) -> Path:
    return json_path.with_name(json_path.stem + ".traces")


def plot_path(json_path: Path) -> Path:
    return json_path.with_suffix(".png")


def _not_profile(path: Path) -> str | None:
    try:
        data = json.loads(read_text(path))
    except (OSError, ValueError):
        return "it is not a layer-time profile of vggbench (not JSON)"
    return None if isinstance(data, dict) and data.get("kind") == KIND else \
        f"it is not a layer-time profile of vggbench (no \"kind\": \"{KIND}\")"


def _not_traces(folder: Path) -> str | None:
    for path in folder.iterdir():
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path.suffix == ".json" else None
        except (OSError, ValueError):
            data = None
        if not (isinstance(data, dict) and (data.get("otherData") or {}).get("vggbench") == TRACE_MARK):
            return f"{path.name} is no trace that vggbench wrote"
    return None


def claim(out: str | os.PathLike | None, force: bool) -> Path:
    """The results' path, checked before anything is profiled: a named .json (and its traces and plot) that exists
    is replaced only with `force` and only when vggbench wrote it; in a folder, the first free profile-<time>."""
    out = Path(out) if out is not None else DEFAULT_RESULTS_DIR
    if out.suffix.lower() == ".json":
        hint = "pass another --out, or --force to replace an earlier profile"
        check_replaceable(out, force=force, not_ours=_not_profile, what="file", hint=hint)
        check_replaceable(traces_folder(out), force=force, not_ours=_not_traces, hint=hint)
        if force:
            check_plot_path(plot_path(out))
        else:
            check_replaceable(plot_path(out), force=False, what="file", hint=hint)
        return out
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder or a .json path")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    n = 1
    while True:
        path = out / f"profile-{stamp}{f'-{n}' if n > 1 else ''}.json"
        if not any(os.path.lexists(p) for p in (path, traces_folder(path), plot_path(path))):
            return path
        n += 1


def _write(json_path: Path, data: dict, traces: dict[str, dict], force: bool) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    if traces:
        with atomic_dir(traces_folder(json_path), force=force, not_ours=_not_traces) as tmp:
            for name, trace in traces.items():
                write_json(tmp / name, trace)
    write_json(json_path, data)
    if any(p.get("status") == "ok" for p in data["profiles"]):
        plot_layer_times(data, plot_path(json_path))


def read_layer_times(path: str | os.PathLike) -> dict:
    """A profile that `run --profile` wrote, or a ResultsError."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"profile {path} does not exist")
    data = loads_json(path.read_text(encoding="utf-8"), str(path), ResultsError)
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise ResultsError(f"{path} is not a layer-time profile (no \"kind\": \"{KIND}\")")
    if data.get("schema_version") != SCHEMA_VERSION or not isinstance(data.get("profiles"), list):
        raise ResultsError(f"{path} has schema_version {data.get('schema_version')!r}; this vggbench reads "
                           f"{SCHEMA_VERSION}")
    return data


def is_layer_times(path: str | os.PathLike) -> bool:
    """Whether `path` is a file of kind vggbench-layer-time (what `vggbench report` shows as the layer table)."""
    path = Path(path)
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(4096)
    except OSError:
        return False
    return f'"kind": "{KIND}"' in head



# --- the plot ----------------------------------------------------------------------------------------------

def plot_layer_times(data: dict, path: str | os.PathLike) -> Path:
    """Each layer's share of the measured call against depth, one line per profiled backend, one panel per
    model / image size / batch / device of a `run --profile` file: where the time goes, beside `verify --layers`'
    error against depth."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = check_plot_path(path)
    found = groups(data)
    if not found:
        raise ResultsError("nothing to plot: no case of this profile ran")
    fig = Figure(figsize=(10, 4.8 * len(found)), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, ((model, size, batch, device), entries) in zip(fig.subplots(len(found), 1, squeeze=False)[:, 0],
                                                           found.items(), strict=True):
        names = [row["layer"] for row in entries[0]["layers"]]
        for entry in entries:
            shares = [(row["share"] or 0) * 100 for row in entry["layers"]]
            ax.plot(range(len(names)), shares, marker="o",
                    label=f"{label(entry, entries)} ({entry['wall_ms']:.3g} ms/call, other "
                          f"{entry['other_ms'] / entry['wall_ms'] * 100:.1f}%)")
        ax.set_xticks(range(len(names)), names, rotation=45, fontsize=8)
        ax.set_xlabel("layer (depth)")
        ax.set_ylabel("share of the measured call (%)")
        ax.set_title(f"{model} {size}x{size}, batch {batch}, {device}: time per layer (profiled)", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".").lower() or "png", dpi=120)
    return path


# --- the table ---------------------------------------------------------------------------------------------

def label(entry: dict, entries: list[dict]) -> str:
    """A profile's column name: its backend, with precision, memory format and variant where the group's
    profiles differ in them."""
    parts = [entry["backend"]]
    for key in ("variant", "precision", "memory_format"):
        if len({e.get(key) for e in entries}) > 1 and entry.get(key):
            parts.append(str(entry[key]))
    return " ".join(parts)


def groups(data: dict) -> dict[tuple, list[dict]]:
    """The ok profiles by (model, image size, batch size, device): one table each."""
    found: dict[tuple, list[dict]] = {}
    for entry in data["profiles"]:
        if entry.get("status") == "ok":
            found.setdefault((entry["model"], entry["image_size"], entry["batch_size"], entry["device"]),
                             []).append(entry)
    return found


def table(entries: list[dict]) -> tuple[list[dict], list[str]]:
    """One row per layer, then other, the ops' sum and the measured call; for each profile (a column group) its
    ms, share of the measured call, GFLOP/s and share of the ceiling."""
    names = [label(e, entries) for e in entries]
    first = entries[0]["layers"]
    rows = [{"layer": row["layer"], "MMACs": row["mmacs"]} for row in first]
    extra = [{"layer": "other", "MMACs": None}, {"layer": "sum of ops", "MMACs": None},
             {"layer": "measured call", "MMACs": None}]
    columns = ["layer", "MMACs"]
    for name, entry in zip(names, entries, strict=True):
        columns += [f"{name} ms", f"{name} %", f"{name} GFLOP/s", f"{name} %ceil"]
        for row, layer in zip(rows, entry["layers"], strict=True):
            row.update({f"{name} ms": layer["ms"], f"{name} %": _pct(layer["share"]),
                        f"{name} GFLOP/s": layer["gflops_per_s"], f"{name} %ceil": layer["ceiling_pct"]})
        wall = entry["wall_ms"]
        for row, ms in zip(extra, (entry["other_ms"], entry["ops_ms"], wall), strict=True):
            row.update({f"{name} ms": ms, f"{name} %": _pct(ms / wall if wall else None)})
    return rows + extra, columns


def _pct(share: float | None) -> float | None:
    return None if share is None else share * 100


def render_layer_times(data: dict, fmt: str = "table") -> str:
    """The per-layer tables of a profile, with each group's header and notes (text formats); json: the file's
    profiles; csv: one table after another."""
    from .report import render

    if fmt == "json":
        return json.dumps(data["profiles"], indent=2, default=str)
    parts = []
    for (model, size, batch, device), entries in groups(data).items():
        rows, columns = table(entries)
        text = render(rows, fmt, columns, floatfmt=".3g")
        if fmt == "csv":
            parts.append(text)
            continue
        lines = [f"{model} {size}x{size}, batch {batch}, {device}: per-layer time (profiled: the profilers' own "
                 f"cost included; % of the measured call)"]
        lines.append(text)
        for name, entry in zip((label(e, entries) for e in entries), entries, strict=True):
            cover = entry["coverage"]
            lines.append(f"  {name}: {entry['source']}, {entry['calls']} calls; layers + other = "
                         f"{cover * 100:.1f}% of the measured {entry['wall_ms']:.3g} ms/call"
                         + (f"; trace {entry['trace']}" if entry.get("trace") else ""))
            lines += [f"    note: {note}" for note in entry.get("notes", [])]
        parts.append("\n".join(lines))
    ceilings = data.get("environment", {}).get("ceilings") or {}
    if fmt != "csv":
        parts += [f"ceiling {p}: {c['gflops_per_s']:.4g} GFLOP/s ({c['source']})" for p, c in ceilings.items() if c]
        failed = [e for e in data["profiles"] if e.get("status") != "ok"]
        parts += [f"not profiled: {e['model']} {e['backend']} {e['precision']} {e['memory_format']} batch "
                  f"{e['batch_size']}: {e['status']}: {e['reason']}" for e in failed]
        if not groups(data):
            parts.append("no case was profiled")
    return "\n\n".join(parts)
