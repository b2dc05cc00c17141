"""`vggbench tune MODEL`: a search over the runtimes' own knobs (each backend record's `knobs`, plus the run's
threads and memory format) and the precisions that pass parity, for one goal: the least latency at batch 1, the
most images/s at a batch size, or the most images/s under a p99 bound. Optuna's TPE sampler proposes each trial
and its median pruner drops a hopeless one after a short probe; every trial that is not pruned is an ordinary
timed case of `benchmark` (its own suite of one case: parity judged, rounds, intervals, load, --isolation process),
so the search is a results file that `report` reads, its `tune` block holding every trial and the winner.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..backends.registry import backend_names, get_backend, resolve_backend
from ..core.arguments import expect, expect_path
from ..core.errors import BenchmarkInterrupted, ConfigError, Terminated
from ..core.settings import MAX_THREADS, Settings, setting
from .suite import Suite, resolve_suite

if TYPE_CHECKING:  # the CLI imports this module for its options: torch comes with the search, not before
    from .results import BenchRun, Journal
    from .rows import BenchResult

GOALS = ("latency", "throughput", "p99")
DEFAULT_THROUGHPUT_BATCH = 8
DEFAULT_P99_BATCHES = (1, 2, 4, 8)
# the probe that pruning judges: a few calls, in one round (its number never becomes a row)
PROBE = {"warmup": 0, "warmup_time_s": 0.0, "min_iters": 3, "rounds": 1, "max_rounds": 1}
PRUNE_AFTER = 3  # trials completed before the pruner judges any (its median needs a few)
QUANTIZED = ("int8", "fp8")


@dataclass(frozen=True, kw_only=True)
class TuneSettings(Settings):
    """What `vggbench tune` searches and for which goal."""

    goal: str = setting("latency", "latency: the least median latency at batch 1; throughput: the most images/s at "
                                   "--batch-size; p99: the most images/s whose p99 latency stays within --bound-ms "
                                   "(the batch size is a knob).", choices=GOALS)
    batch_size: int | None = setting(None, "--goal throughput: the batch size [default: 8].", minimum=1,
                                     maximum=65536)
    batch_sizes: tuple[int, ...] = setting(DEFAULT_P99_BATCHES, "--goal p99: the batch sizes to try.", minimum=1,
                                           maximum=65536)
    bound_ms: float | None = setting(None, "--goal p99: the p99 latency bound, ms.", above=0)
    trials: int = setting(20, "Trials at most.", minimum=1, maximum=10000)
    time_budget_s: float | None = setting(None, "Start no trial after this many seconds [default: no limit].",
                                          above=0, option="--time-budget")
    backends: tuple[str, ...] | None = setting(None, "Comma-separated backends to search [default: the device's "
                                                     "deployable ones: their artifact runs without vggbench].")
    precisions: tuple[str, ...] = setting(("fp32",), "Comma-separated precisions to search (int8 and fp8 only with "
                                                     "trained weights: judged by agreement on real images).",
                                          option="--precision")
    threads: tuple[int, ...] | None = setting(None, "Comma-separated thread counts to try [default: powers of two up "
                                                    "to the cores, and the cores].", minimum=1, maximum=MAX_THREADS)
    prune: bool = setting(True, "Probe each trial with a few calls first and drop it when Optuna's median pruner "
                                "finds it hopeless.")
    probe_time_s: float = setting(0.5, "Seconds of the pruning probe.", minimum=0, option="--probe-time")
    defaults_first: bool = setting(True, "Begin with each backend's defaults at each precision (its settings as "
                                         "declared, every core), so that the search measures what it improves on.")
    tune_seed: int = setting(0, "The sampler's seed.", minimum=0, maximum=2**32 - 1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.goal == "p99" and self.bound_ms is None:
            raise ConfigError("--goal p99 needs --bound-ms (the p99 latency bound)")
        if self.goal != "p99" and self.bound_ms is not None:
            raise ConfigError(f"--bound-ms is for --goal p99, not {self.goal}")
        if self.goal == "latency" and self.batch_size not in (None, 1):
            raise ConfigError("--goal latency is measured at batch 1; for another batch use --goal throughput")
        if self.goal == "p99" and self.batch_size is not None:
            raise ConfigError("--goal p99 tries --batch-sizes; --batch-size is for --goal throughput")

    @property
    def direction(self) -> str:
        return "minimize" if self.goal == "latency" else "maximize"

    def sizes(self) -> tuple[int, ...]:
        """The batch sizes trials may use."""
        if self.goal == "latency":
            return (1,)
        if self.goal == "throughput":
            return (self.batch_size or DEFAULT_THROUGHPUT_BATCH,)
        return self.batch_sizes

    def value(self, row: BenchResult) -> float | None:
        """The objective of a row that ran (None for one that did not, or missed the p99 bound)."""
        if row.status != "ok" or not row.median_ms:
            return None
        if self.goal == "latency":
            return row.median_ms
        if self.goal == "p99" and not (row.p99_ms is not None and row.p99_ms <= self.bound_ms):
            return None
        return row.images_per_s


def default_threads() -> tuple[int, ...]:
    """1, 2, 4, ... up to the cores this process may use, and that count."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    values, n = [], 1
    while n < cores:
        values.append(n)
        n *= 2
    return (*values, cores)


def _label(value) -> str:
    """A knob's value as Optuna's categorical choice (it takes None, bools, numbers and strings, not tuples)."""
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def _value(label: str):
    value = json.loads(label)
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class Candidate:
    """A backend the search may pick, with its precisions and memory formats that can run here and its knobs (all
    of them; `by_precision`: those that mean something at each precision, e.g. the int8 quantization's)."""

    backend: str
    precisions: tuple[str, ...]
    memory_formats: tuple[str, ...]
    knobs: dict
    by_precision: dict | None = None

    def knobs_at(self, precision: str) -> dict:
        return self.knobs if self.by_precision is None else self.by_precision[precision]


def candidates(settings: TuneSettings, suite: Suite) -> tuple[list[Candidate], list[str]]:
    """The backends to search and, for those left out, why (a ConfigError when none is left)."""
    from ..core.device import require_device
    from ..zoo.weights import parse_weights

    device = require_device(suite.device)
    names = [resolve_backend(b) for b in settings.backends] if settings.backends is not None else \
        [n for n in backend_names() if get_backend(n).deployable]
    random = parse_weights(suite.weights, suite.seed).kind == "random"
    found, skipped = [], []
    for name in dict.fromkeys(names):
        spec = get_backend(name)
        if device.kind not in spec.devices:
            skipped.append(f"{name}: does not run on {device.kind}")
            continue
        precisions = [p for p in settings.precisions if p in spec.precisions]
        if random and any(p in QUANTIZED for p in precisions):
            skipped.append(f"{name} {'/'.join(p for p in precisions if p in QUANTIZED)}: random weights have no "
                           f"agreement on real images to judge it by (give trained --weights)")
            precisions = [p for p in precisions if p not in QUANTIZED]
        if not precisions:
            skipped.append(f"{name}: runs none of {', '.join(settings.precisions)}")
            continue
        found.append(Candidate(name, tuple(precisions), spec.memory_formats, spec.knob_space(device.kind),
                               {p: spec.knob_space(device.kind, p) for p in precisions}))
    if not found:
        raise ConfigError(f"nothing to tune on {device}: {'; '.join(skipped)}")
    return found, skipped


def suggest(trial, settings: TuneSettings, found: list[Candidate], threads: tuple[int, ...]) -> dict:
    """One trial's choice: backend, precision, memory format, threads, batch size and the backend's settings."""
    backend = trial.suggest_categorical("backend", [c.backend for c in found])
    c = next(c for c in found if c.backend == backend)

    def pick(name: str, values) -> object:
        return _value(trial.suggest_categorical(name, [_label(v) for v in values]))

    choice = {"backend": backend, "precision": pick(f"{backend}.precision", c.precisions),
              "memory_format": pick(f"{backend}.memory_format", c.memory_formats),
              "threads": pick("threads", threads), "batch_size": pick("batch_size", settings.sizes())}
    choice["settings"] = {field: pick(f"{backend}.{field}", values)
                          for field, values in c.knobs_at(choice["precision"]).items()}
    return choice


def defaults(found: list[Candidate], settings: TuneSettings, threads: tuple[int, ...]) -> list[dict]:
    """The trials of each backend's defaults, one per precision, as Optuna's parameters: its knobs at the values its
    settings class declares (a knob whose choices leave out its default is left to the sampler), the most threads,
    its first memory format and the first batch size."""
    trials = []
    for c in found:
        spec = get_backend(c.backend)
        declared = spec.settings() if spec.settings is not None else None
        for precision in c.precisions:
            params = {"backend": c.backend, f"{c.backend}.precision": _label(precision),
                      f"{c.backend}.memory_format": _label(c.memory_formats[0]), "threads": _label(threads[-1]),
                      "batch_size": _label(settings.sizes()[0])}
            for field, values in c.knobs_at(precision).items():
                value = getattr(declared, field)
                if value in values:
                    params[f"{c.backend}.{field}"] = _label(value)
            trials.append(params)
    return trials


def invalid(choice: dict) -> str | None:
    """Why a trial's settings cannot be (knobs that exclude each other: int8_plan auto with nncf), else None."""
    spec = get_backend(choice["backend"])
    if spec.settings is None or not choice["settings"]:
        return None
    try:
        spec.settings(**choice["settings"])
    except ConfigError as e:
        return str(e)
    return None


def _overrides(model: str, choice: dict) -> dict:
    return {"models": [model], "backends": [choice["backend"]], "precisions": [choice["precision"]],
            "memory_formats": [choice["memory_format"]], "batch_sizes": [choice["batch_size"]],
            "threads": choice["threads"],
            "backend": {choice["backend"]: choice["settings"]} if choice["settings"] else None}


def tune(model: str, settings: TuneSettings, *, export_cache: str | os.PathLike = "exports/.cache",
         journal: Journal | None = None, echo: Callable[[str], None] = lambda line: None,
         raise_errors: bool = False, cluster: str | None = None, node_cache: str | os.PathLike | None = None,
         **suite_overrides) -> BenchRun:
    """Search the knobs for `settings.goal` and return the run: a row per trial that was timed, the search in
    settings["tune"]. suite_overrides: Suite fields for every trial (image_size, weights, device, min_time_s,
    rounds, isolation, ...). cluster: time each trial on a node of a Ray cluster (vggbench.bench.fleet), of the one
    machine kind of `machines` (a tune answers for one kind of machine: tune each kind on its own)."""
    expect("tune", "model", model, str, "a model name (str)")
    expect("tune", "settings", settings, TuneSettings, "a TuneSettings")
    expect_path("tune", "export_cache", export_cache)
    import optuna

    from .results import BenchRun

    base = resolve_suite(Suite(name="tune"), models=[model], **suite_overrides)
    if cluster is None:
        from .sweep import benchmark
    else:
        import functools

        from .fleet import benchmark_on_cluster

        if len(base.machines) > 1:
            raise ConfigError(f"tune --cluster answers for one machine kind; got {', '.join(base.machines)}: tune "
                              f"each kind on its own (--machines KIND)")
        benchmark = functools.partial(benchmark_on_cluster, cluster=cluster, node_cache=node_cache)
    found, skipped = candidates(settings, base)
    threads = settings.threads or default_threads()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=PRUNE_AFTER) if settings.prune else \
        optuna.pruners.NopPruner()
    study = optuna.create_study(direction=settings.direction, pruner=pruner,
                                sampler=optuna.samplers.TPESampler(seed=settings.tune_seed))
    block = {"goal": settings.goal, "direction": settings.direction, "bound_ms": settings.bound_ms,
             "batch_sizes": list(settings.sizes()), "trials_asked": settings.trials,
             "time_budget_s": settings.time_budget_s, "defaults_first": settings.defaults_first, "optuna": optuna.__version__, "sampler": "TPESampler",
             "pruner": type(pruner).__name__, "skipped": skipped, "trials": [], "winner": None,
             "space": {c.backend: {"precision": list(c.precisions), "memory_format": list(c.memory_formats),
                                   **{k: [_label(v) for v in vs] for k, vs in c.knobs.items()}} for c in found}
             | {"threads": list(threads)}}
    rows: list[BenchResult] = []
    environment, started, created = None, time.monotonic(), None
    enqueued = defaults(found, settings, threads)[:settings.trials] if settings.defaults_first else []
    for params in enqueued:
        study.enqueue_trial(params)
    interrupted = None
    try:
        # trials whose knobs the settings refuse together, or that ask for settings an earlier trial ran, run
        # nothing and count for nothing (up to a limit: a small space is spent before the trials asked)
        counted, refused, tried = 0, 0, {}
        while counted < settings.trials and refused < 10 * settings.trials:
            if settings.time_budget_s is not None and time.monotonic() - started > settings.time_budget_s:
                block["stopped"] = f"time budget of {settings.time_budget_s:g} s spent after {counted} trial(s)"
                break
            trial = study.ask()
            choice = suggest(trial, settings, found, threads)
            entry = {"number": trial.number, **{k: v for k, v in choice.items() if k != "settings"},
                     "settings": choice["settings"], "row": None, "value": None}
            what = f"trial {trial.number}: {choice['backend']} {choice['precision']} batch {choice['batch_size']} " \
                   f"threads {choice['threads']} {choice['settings']}"
            why = invalid(choice)
            if why is not None:  # a combination the settings refuse: nothing to run
                entry.update(state="FAIL", reason=why)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                block["trials"].append(entry)
                echo(f"{what}: {why}")
                refused += 1
                continue
            key = json.dumps(choice, sort_keys=True, default=str)
            if key in tried:  # the sampler asked again for settings already run (a backend with no knobs, say)
                same = tried[key]
                entry.update(state="DUPLICATE", reason=f"the settings of trial {same['number']}: not run again",
                             row=same["row"], value=same["value"])
                # the earlier outcome, so that the sampler learns from it as from a trial
                if same["state"] == "COMPLETE":
                    study.tell(trial, same["value"])
                else:
                    study.tell(trial, state=getattr(optuna.trial.TrialState, same["state"]))
                block["trials"].append(entry)
                echo(f"{what}: {entry['reason']}")
                refused += 1
                continue
            counted += 1
            tried[key] = entry  # its state and value are filled in below, before the sampler asks again
            if trial.number < len(enqueued):  # asked first, in the order enqueued
                entry["defaults"], what = True, f"{what} (defaults)"
            overrides = _overrides(model, choice)
            if settings.prune:
                probe = benchmark(base, export_cache=export_cache, progress=False, raise_errors=raise_errors,
                                  **overrides, **PROBE, min_time_s=settings.probe_time_s).results[0]
                entry["probe"] = {"status": probe.status, "median_ms": probe.median_ms, "p99_ms": probe.p99_ms,
                                  "images_per_s": probe.images_per_s}
                value = settings.value(probe)
                if value is None:  # it did not run (or missed the bound even in a probe): nothing to time
                    entry.update(state="FAIL", reason=probe.reason or "p99 over the bound in the probe")
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    block["trials"].append(entry)
                    echo(f"{what}: failed in the probe ({entry['reason']})")
                    continue
                trial.report(value, 0)
                if trial.should_prune():
                    entry["state"] = "PRUNED"
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    block["trials"].append(entry)
                    echo(f"{what}: pruned after its probe ({_shown(settings, value)})")
                    continue
            run = benchmark(base, export_cache=export_cache, progress=False, raise_errors=raise_errors, **overrides)
            row = run.results[0]
            if environment is None:
                environment, created = run.environment, run.created
                if journal is not None:
                    journal.start(_settings(base, export_cache, block), environment, created)
            entry["row"] = len(rows)
            rows.append(row)
            if journal is not None:
                journal.append(row)
            value = settings.value(row)
            entry["value"] = value
            if value is None:
                entry.update(state="FAIL", reason=row.reason or f"p99 {row.p99_ms:.4g} ms over the bound")
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                echo(f"{what}: {entry['reason']}")
            else:
                entry["state"] = "COMPLETE"
                study.tell(trial, value)
                echo(f"{what}: {_shown(settings, value)}")
            block["trials"].append(entry)
        if counted < settings.trials and "stopped" not in block:
            block["stopped"] = (f"{counted} trial(s) run: the sampler asked {refused} time(s) for settings refused "
                                f"together or already run, and the search stopped (a small space is spent)")
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: the trials that finished are the search so far
        inner = getattr(e, "run", None)
        signal = isinstance(e, Terminated) or "SIGTERM" in str((inner.settings if inner else {}).get("interrupted"))
        interrupted = f"{'SIGTERM' if signal else 'Ctrl-C'} after {len(block['trials'])} trial(s)"
        block["stopped"] = interrupted
    done = [t for t in block["trials"] if t["state"] == "COMPLETE"]
    if done:
        best = (min if settings.direction == "minimize" else max)(done, key=lambda t: t["value"])
        block["winner"] = {"trial": best["number"], "row": best["row"], "value": best["value"]}
    run = BenchRun(_settings(base, export_cache, block), environment or {}, rows, time.monotonic() - started,
                   **({"created": created} if created else {}))
    if interrupted:
        run.settings["interrupted"] = interrupted
        raise BenchmarkInterrupted(run)
    return run


def _settings(base: Suite, export_cache, block: dict) -> dict:
    return {**replace(base, matrix=()).to_dict(), "export_cache": str(export_cache), "tune": block}


def _shown(settings: TuneSettings, value: float) -> str:
    return f"{value:.4g} ms" if settings.goal == "latency" else f"{value:.4g} images/s"
