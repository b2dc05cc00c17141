"""`vggbench.loadgen`: MLPerf's deployment scenarios (SingleStream, MultiStream, Server, Offline) measured by MLPerf's
own load generator, LoadGen (the mlcommons-loadgen wheel), over any target of the registry.

Per model: the model is loaded once, its query sample library of real images is preprocessed once. Per (backend,
precision, memory format): the runner comes from the same parity-checked export cache as `vggbench run`, its
output on the library's first images is compared with eager fp32 before anything is timed, a few timed batches
give LoadGen its expected latencies and rates, then each scenario runs (Server: the search for the highest VALID
rate). Each scenario becomes a result row whose `scenario` block holds what LoadGen's summary said; LoadGen's own
logs stay in a folder beside the results.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..backends import Runner, backend_names, eager_runner, get_backend, make_runner, resolve_target
from ..core.arguments import expect
from ..core.device import require_device
from ..core.env import capture, package_version
from ..core.errors import CheckFailed, ConfigError, UnsupportedError, VggbenchError, one_line
from ..core.fileio import atomic_dir
from ..core.numerics import scoped_numerics, tf32_flag
from ..parity.metrics import compare, tolerance_for
from ..zoo.profiling import profile
from ..zoo.weights import load_model, parse_weights
from .cache import DEFAULT_EXPORT_CACHE, ExportCache, ExportFailed
from .qsl import ImageSet, SampleLibrary, check_fits, free_memory_bytes, load_images
from .results import BenchRun, Journal, not_loadgen_logs
from .rows import BenchResult, Case, ScenarioResult
from .scenarios import MAX_QUERIES, PERCENTILES, LoadgenSettings, SutSettings
from .search import Outcome, find_peak_qps, queries_at_late_fraction
from .setup import BackendSetup
from .suite import Suite, resolve_suite
from .summary import Summary, read_accuracy_log, read_summary
from .sut import BatchingSut, batch_within

PARITY_IMAGES = 2  # compared with eager fp32 before timing, as `vggbench run` does
# a Server probe's queries at least: its p99 is then about its slowest query, a cautious reading; an overloaded
# rate shows in the growing queue within the probe's duration
PROBE_MIN_QUERIES = 32
# a Server full run that held the bound but that early stopping would not accept: run again with this many times
# the queries early stopping needs at the run's fraction of late queries (a margin for the longer run's own), but
# not when that is over EXTEND_MAX times the full run's queries: then the rate steps down instead
EXTEND_MARGIN = 1.2
EXTEND_MAX = 4
SHORT_RERUNS = 3  # runs again, expecting more work, while a run ends before its minimum duration
ESTIMATE_CALLS = 2  # timed calls per batch size (after one untimed) for LoadGen's expected latencies and rates
EXPECTED_LATENCY_FRACTION = 0.1  # of the timed-batch estimate, told to LoadGen as SingleStream's/MultiStream's
# bounds on what is attempted at all: a timed call of a batch (extrapolated from the smaller ones timed before it)
# and a LoadGen run's computation (its queries at the measured speed), past which a target's scenario is a row
# that says why instead of a run that does not end (`--target-qps 1e9` scheduled billions of queries)
MAX_CALL_S = 60.0
MAX_RUN_S = 600.0  # MLPerf's run length; or MAX_RUN_FACTOR times the run's duration, when that is longer
MAX_RUN_FACTOR = 10  # also: Server's target QPS at most this many times the measured rate (its queue only grows)
_LG_SCENARIOS = {"singlestream": "SingleStream", "multistream": "MultiStream", "server": "Server",
                 "offline": "Offline"}
_METRICS = {"singlestream": "p90_ms", "multistream": "p99_ms", "server": "samples_per_s", "offline": "samples_per_s"}


def _mlperf_loadgen():
    try:
        import mlperf_loadgen
    except ImportError:
        raise UnsupportedError("LoadGen is not installed: pip install mlcommons-loadgen (wheels for CPython on "
                               "Linux x86_64)") from None
    return mlperf_loadgen


def loadgen(suite: Suite | str | os.PathLike | None = None, *, settings: LoadgenSettings | None = None,
            sut: SutSettings | None = None, export_cache: str | os.PathLike = DEFAULT_EXPORT_CACHE,
            logs: str | os.PathLike | None = None, journal: Journal | None = None,
            echo: Callable[[str], None] | None = None, **overrides) -> BenchRun:
    """Run LoadGen's scenarios over every (model, backend, precision, memory format) of a suite; one row per scenario.

    suite: a Suite, a suite name or TOML path, or None for Suite's defaults (vgg16, eager fp32, 224, cpu);
    overrides: Suite fields (models, backends, precisions, memory_formats, device, image_size, threads, weights,
    width, ...); the suite's batch sizes and timing keys are not used.
    settings: scenarios, mode, run lengths, the Server search, the sample library (LoadgenSettings);
    sut: the batching SUT (SutSettings).
    logs: the folder for LoadGen's logs, written atomically when every run is done (None: a temp folder, removed);
    rows name their logs relative to its parent folder.
    journal: rows are appended to it as they finish (see vggbench.bench.results.claim_results).
    echo: called with a line as each LoadGen run ends.
    """
    expect("loadgen", "settings", settings, (LoadgenSettings, type(None)), "a LoadgenSettings or None")
    expect("loadgen", "sut", sut, (SutSettings, type(None)), "a SutSettings or None")
    lg = _mlperf_loadgen()
    settings, sut = settings or LoadgenSettings(), sut or SutSettings()
    suite = resolve_suite(suite if suite is not None else Suite(name="loadgen"), **overrides)
    device = require_device(suite.device)
    weights = parse_weights(suite.weights, suite.seed).require()
    started = time.perf_counter()
    keep = logs is not None
    final = Path(logs) if keep else Path(tempfile.mkdtemp(prefix="vggbench-loadgen-"))
    with scoped_numerics(suite.threads, tf32_flag(device, suite.tf32), suite.cudnn_benchmark):
        environment = capture()
        environment["loadgen"] = package_version("mlcommons-loadgen")
        unused = ("batch_sizes", "warmup", "warmup_time_s", "min_time_s", "min_iters", "max_iters")  # `run`'s timing
        run_settings = {**{k: v for k, v in suite.to_dict().items() if k not in unused},
                        "export_cache": str(export_cache), "loadgen": settings.to_dict(),
                        "sut": sut.to_dict(), "logs": final.name if keep else None}
        if journal is not None:
            journal.start(run_settings, environment, environment["created"])
        rows: list[BenchResult] = []
        try:
            with atomic_dir(final, force=True, not_ours=not_loadgen_logs) if keep else _scratch(final) as folder:
                runs = _Runs(lg, suite, settings, sut, weights, Path(export_cache), folder, final.name if keep else None,
                             echo or (lambda line: None), rows, journal)
                runs.all()
        except KeyboardInterrupt:
            run_settings["interrupted"] = f"interrupted after {len(rows)} scenario(s); their LoadGen logs are lost"
            from ..core.errors import BenchmarkInterrupted

            raise BenchmarkInterrupted(BenchRun(run_settings, environment, rows, time.perf_counter() - started,
                                                environment["created"])) from None
        finally:
            if not keep:
                shutil.rmtree(final, ignore_errors=True)
    return BenchRun(run_settings, environment, rows, time.perf_counter() - started, environment["created"])


class _scratch:
    """A context manager yielding a folder that the caller removes (logs nobody asked to keep)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __enter__(self) -> Path:
        return self.folder

    def __exit__(self, *exc) -> None:
        return None


@dataclass
class _Target:
    """What one (model, backend, precision, memory format) runs with."""

    case: Case
    runner: Runner
    images: ImageSet
    reference: Runner
    gmacs: float
    load_ms: float
    parity_max_abs: float | None
    estimates: dict[int, float]  # batch size -> seconds per call
    server_batch: int = 1  # the SUT's largest Server batch: --max-batch, capped by --server-batch-budget
    offline_rate: float | None = None  # samples/s of this target's Offline run, once it ran


class _Runs:
    def __init__(self, lg, suite: Suite, settings: LoadgenSettings, sut: SutSettings, weights, export_cache: Path,
                 folder: Path, logs_name: str | None, echo: Callable[[str], None], rows: list[BenchResult],
                 journal: Journal | None) -> None:
        self.lg, self.suite, self.settings, self.sut, self.weights = lg, suite, settings, sut, weights
        self.export_cache, self.folder, self.logs_name, self.echo = export_cache, folder, logs_name, echo
        self.rows, self.journal = rows, journal
        self.threads = torch.get_num_threads()
        self.tf32 = bool(tf32_flag(require_device(suite.device), suite.tf32))
        self.setup = BackendSetup(suite, self.threads, self.tf32)

    # --- plan ----------------------------------------------------------------------------------------------
    def all(self) -> None:
        groups = self.suite.groups()
        for name in dict.fromkeys(g[0] for g in groups):
            loaded = load_model(name, self.weights, **self.suite.model_options())
            s = self.suite
            images = load_images(self.settings.images, s.image_size, loaded.weights.mean, loaded.weights.std,
                                 weights_meta=loaded.weights.meta, split=self.settings.split,
                                 count=self.settings.count, data_dir=self.settings.data_dir)
            self.echo(f"{name}: {len(images.images)} {images.source} images in the sample library")
            cache = ExportCache(self.export_cache, loaded, s.image_size)
            reference = eager_runner(loaded.module)
            gmacs = profile(loaded.spec, loaded.options, s.image_size).gmacs
            for _, backend, precision, memory_format, *_ in (g for g in groups if g[0] == name):
                self._group(loaded, cache, reference, images, gmacs, backend, precision, memory_format)

    def _case(self, model: str, backend: str, precision: str, memory_format: str, target) -> Case:
        s = self.suite
        return Case(model=model, image_size=s.image_size, batch_size=self.sut.max_batch, backend=backend,
                    device=str(s.device), precision=precision, memory_format=memory_format, threads=self.threads,
                    weights=self.weights.label, warmup=0, warmup_time_s=0.0, min_time_s=0.0, min_iters=1,
                    max_iters=1, **self.setup.case_fields(backend, target))

    def _group(self, loaded, cache: ExportCache, reference: Runner, images: ImageSet, gmacs: float, backend: str,
               precision: str, memory_format: str) -> None:
        model = loaded.name
        try:
            target = resolve_target(backend, self.suite.device, precision, memory_format)
        except UnsupportedError as e:
            target = e
        case = self._case(model, backend, precision, memory_format, target)
        try:
            if isinstance(target, UnsupportedError):
                raise target
            if self.sut.workers > 1 and not target.spec.thread_safe:
                safe = [name for name in backend_names() if get_backend(name).thread_safe]
                raise UnsupportedError(f"{target.backend}'s runner is not known to be safe to call from several "
                                       f"threads; use --workers 1 (backends that allow more: {', '.join(safe)})")
            started = time.perf_counter()
            export_dir = cache.folder(target) if target.artifact else None
            options = self.setup.runner_options(case, target, loaded)
            runner = make_runner(target, loaded, export_dir=export_dir, options=options)
            load_ms = (time.perf_counter() - started) * 1e3
            parity = self._parity(runner, reference, images, case)
        except Exception as e:  # a row per scenario that says why, as `run` records a case that cannot run
            status = ("export_failed" if isinstance(e, ExportFailed) else "unsupported" if isinstance(e, UnsupportedError)
                      else "parity_failed" if isinstance(e, CheckFailed) else "error")
            reason = str(e) if isinstance(e, (ExportFailed, VggbenchError)) else one_line(e)
            for scenario in self.settings.scenarios:
                self._record(BenchResult.failed(case, status, reason, scenario=self._block(scenario)))
            return
        self.echo(f"{model} {backend} {precision} {memory_format}: parity with eager fp32 ok; timing batches")
        try:
            estimates, server_batch = self._estimate(runner, images, loaded.options.width)
        except VggbenchError as e:
            for scenario in self.settings.scenarios:
                self._record(BenchResult.failed(case, "error", str(e), scenario=self._block(scenario)))
            return
        t = _Target(case, runner, images, reference, gmacs, load_ms, parity, estimates, server_batch=server_batch)
        if server_batch < self.sut.max_batch and "server" in self.settings.scenarios:
            over = min((n for n in estimates if n > server_batch), default=None)
            took = f" (a batch of {over} took {estimates[over] * 1e3:.4g} ms)" if over else ""
            self.echo(f"{model} {backend} {precision} {memory_format}: Server batches of at most {server_batch}, "
                      f"within {self.sut.server_batch_budget:g} of the {self.settings.latency_bound_ms:g} ms "
                      f"bound{took}")
        sub = self.folder / f"{model}-{backend}-{precision}-{memory_format}"
        # Server last: its search starts from what Offline measured, when Offline ran (the timed batches miss the
        # SUT's own cost per query, which is most of it for a tiny model)
        for scenario in sorted(self.settings.scenarios, key=lambda name: name == "server"):
            try:
                row = _Scenario(self, t, scenario, sub).run()
            except VggbenchError as e:
                row = BenchResult.failed(case, "error", str(e), scenario=self._block(scenario))
            self._record(row)

    def _block(self, scenario: str) -> dict:
        return asdict(ScenarioResult(scenario, self.settings.mode, metric=_METRICS[scenario]))

    def _record(self, row: BenchResult) -> None:
        self.rows.append(row)
        if self.journal is not None:
            self.journal.append(row)

    # --- before LoadGen ------------------------------------------------------------------------------------
    def _parity(self, runner: Runner, reference: Runner, images: ImageSet, case: Case) -> float | None:
        """The runner against eager fp32 on the library's first images (CheckFailed when they differ)."""
        if runner.target.is_reference:
            return None
        x = images.images[:PARITY_IMAGES]
        result = compare(reference(x), runner(x), tolerance_for(case.precision, tf32=self.tf32), backend=case.backend,
                         device=case.device, precision=case.precision, memory_format=case.memory_format,
                         inputs=f"sample library, first {len(x)}")
        # int8 is judged by class agreement on many real images (accuracy mode measures it); here it is recorded
        if not result.passed and case.precision != "int8":
            raise CheckFailed(f"output differs from eager fp32: {result.reason}")
        return result.max_abs

    def _estimate(self, runner: Runner, images: ImageSet, width: float) -> tuple[dict[int, float], int]:
        """Seconds per call at the batch sizes the scenarios run (LoadGen's expected latencies and rates), and the
        Server's batch: the largest within --server-batch-budget of the latency bound. A batch is timed only when
        it fits in memory (VGG's largest activations: the first block's two maps) and when its half, timed first,
        says it takes at most MAX_CALL_S; else ConfigError."""
        found: dict[int, float] = {}
        side = int(images.images.shape[-1])
        per_image = (3 + 2 * max(1, round(64 * width))) * side * side * 4  # bytes, fp32
        free = free_memory_bytes(self.suite.device)

        def seconds(size: int) -> float:
            if size not in found:
                check_fits(f"a batch of {size} at {side}x{side}", size * per_image, free, "lower --max-batch")
                known = max((n for n in found if n < size), default=None)
                while known is not None and known * 2 < size:  # doubling: each size extrapolated from its half
                    known *= 2
                    seconds(known)
                if known is not None and found[known] * size / known > MAX_CALL_S:
                    raise ConfigError(f"a batch of {size} would take about {found[known] * size / known:.3g} s per "
                                      f"call (a batch of {known} took {found[known]:.3g} s), over {MAX_CALL_S:g} s; "
                                      f"lower --max-batch")
                x = images.images[torch.arange(size) % len(images.images)]
                runner(x)
                times = []
                for _ in range(ESTIMATE_CALLS):
                    started = time.perf_counter()
                    runner(x)
                    times.append(time.perf_counter() - started)
                found[size] = min(times)
            return found[size]

        s, sut = self.settings, self.sut
        seconds(1)
        if "offline" in s.scenarios:
            seconds(sut.max_batch)
        if "multistream" in s.scenarios:
            seconds(min(s.samples_per_query, sut.max_batch))
        server = 1
        if "server" in s.scenarios:
            server = batch_within(seconds, sut.max_batch, sut.server_batch_budget * s.latency_bound_ms / 1e3)
        return found, server


class _Scenario:
    """One scenario of one target: its LoadGen runs (performance, accuracy) and the row they make."""

    def __init__(self, runs: _Runs, target: _Target, name: str, folder: Path) -> None:
        self.runs, self.t, self.name, self.folder = runs, target, name, folder
        self.settings, self.sut_settings = runs.settings, runs.sut
        self.lg = runs.lg
        self.stats: dict[Path, dict] = {}  # the SUT's batches in each LoadGen run, by its folder

    @property
    def batch(self) -> int:
        """The largest batch this scenario runs."""
        max_batch = self.sut_settings.max_batch
        return {"singlestream": 1, "multistream": min(self.settings.samples_per_query, max_batch),
                "server": self.t.server_batch}.get(self.name, max_batch)

    def run(self) -> BenchResult:
        s = self.settings
        summary = search = accuracy = folder = None
        qps = s.target_qps
        if s.mode in ("performance", "both"):
            if self.name == "server" and s.target_qps is None:
                summary, folder, search, qps = self._search()
            else:
                summary, folder, _ = self._loadgen("performance", qps)
                summary, folder = self._rerun_short(summary, folder, qps)
                if self.name == "offline" and summary.samples_per_s:
                    self.t.offline_rate = summary.samples_per_s
            if summary is None:  # a search that never came to a full run (every probe failed, down to the floor)
                raise VggbenchError(f"the Server search made no full run in {search['runs']} run(s): no probe held "
                                    f"the {s.latency_bound_ms:g} ms bound")
        if s.mode in ("accuracy", "both"):
            accuracy = self._accuracy(qps)
        return self._row(summary, folder, search, accuracy, qps)

    def _rerun_short(self, summary: Summary, folder: Path, qps: float | None) -> tuple[Summary, Path]:
        """Run again, as submitters do, while a run ended before its minimum duration because LoadGen generated
        too little work from expectations the timed batches set (they run slow on a loaded machine): Offline's
        one query sized from too low a rate, SingleStream's and MultiStream's queries from too high a latency."""
        if self.name == "server" or (self.name == "offline" and qps is not None):
            return summary, folder
        expected_qps, expected_latency = self._rate() * 1.1, None
        for n in range(1, SHORT_RERUNS + 1):
            if summary.constraints.get("Min duration satisfied") is not False:
                break
            if self.name == "offline" and summary.samples_per_s:  # a small query measures low: at least x4
                expected_qps = max(summary.samples_per_s * 1.5, expected_qps * 4)
            elif self.name != "offline" and summary.mean_ms:
                expected_latency = summary.mean_ms / 1e3 * EXPECTED_LATENCY_FRACTION
            else:
                break
            summary, folder, _ = self._loadgen("performance", expected_qps if self.name == "offline" else qps,
                                               label=f"rerun{n}", expected_latency_s=expected_latency)
        return summary, folder

    # --- LoadGen runs ----------------------------------------------------------------------------------------
    def _rate(self) -> float:
        """Samples per second at the largest batch, from the timed batches."""
        return self.batch / self.t.estimates[self.batch]

    def _loadgen(self, mode: str, qps: float | None, *, probe: bool = False, label: str = "",
                 expected_latency_s: float | None = None, min_queries: int | None = None
                 ) -> tuple[Summary, Path, dict]:
        lg, s = self.lg, self.settings
        ts = lg.TestSettings()
        ts.scenario = getattr(lg.TestScenario, _LG_SCENARIOS[self.name])
        ts.mode = lg.TestMode.AccuracyOnly if mode == "accuracy" else lg.TestMode.PerformanceOnly
        duration = s.probe_duration_for() if probe else s.min_duration_for(self.name)
        queries = min(PROBE_MIN_QUERIES, s.min_queries_for(self.name)) if probe else \
            (min_queries or s.min_queries_for(self.name))
        ts.min_duration_ms = int(round(duration * 1e3))
        ts.min_query_count = queries
        # expected latencies well below the estimates: LoadGen generates duration / expected latency queries and
        # stops issuing once the duration and the count are met, so too many cost nothing and too few make the run
        # INVALID (a loaded machine times the estimate slow); Offline's one query is sized from its expected rate
        ts.single_stream_expected_latency_ns = max(1, int(1e9 * (expected_latency_s or self.t.estimates[1] *
                                                                 EXPECTED_LATENCY_FRACTION)))
        ts.multi_stream_samples_per_query = s.samples_per_query
        ts.multi_stream_expected_latency_ns = max(1, int(1e9 * (expected_latency_s or self.t.estimates[self.batch] *
                                                                EXPECTED_LATENCY_FRACTION * s.samples_per_query /
                                                                self.batch)))
        ts.server_target_latency_ns = int(s.latency_bound_ms * 1e6)
        ts.server_target_qps = qps if qps is not None else self._rate()
        ts.offline_expected_qps = qps if qps is not None else self._rate() * 1.1
        if mode == "performance":
            self._check_run_length(duration, queries, ts.server_target_qps if self.name == "server"
                                   else ts.offline_expected_qps)
        label = f"{self.name}-{mode}" + (f"-{'probe' if probe else 'full'}-{qps:g}qps" if self.name == "server"
                                         and mode == "performance" and s.target_qps is None else "") + \
            (f"-{label}" if label else "")
        folder = self.folder / label
        folder.mkdir(parents=True)
        sut = self.stats[folder] = _run_test(lg, self.t, self.sut_settings, self.name, self.batch, ts, folder)
        (folder / "mlperf_log_trace.json").unlink(missing_ok=True)  # empty: tracing is off
        if mode == "performance":
            (folder / "mlperf_log_accuracy.json").unlink(missing_ok=True)  # empty outside accuracy mode
        summary = read_summary(folder) if mode == "performance" else None
        if summary is not None:
            verdict = summary.result or "?"
            p = PERCENTILES[self.name]
            at = f", p{p * 100:g} {summary.percentile(f'{p * 100:g}'):.4g} ms" if p else ""
            rate = f", {summary.samples_per_s:.4g} samples/s" if summary.samples_per_s else ""
            self.runs.echo(f"{self.t.case.model} {self.t.case.backend} {self.t.case.precision} "
                           f"{self.t.case.memory_format} {folder.name}: {verdict}{rate}{at}")
        return summary, folder, sut

    def _check_run_length(self, duration: float, queries: int, qps: float) -> None:
        """ConfigError when the run's queries would take this target over MAX_RUN_S (or MAX_RUN_FACTOR x the
        duration) to compute at the measured speed: LoadGen would schedule them all and wait for every answer."""
        per_sample = self.t.estimates[self.batch] / self.batch
        samples = {"singlestream": queries, "multistream": queries * self.settings.samples_per_query,
                   "server": max(queries, qps * duration), "offline": max(queries, qps * duration)}[self.name]
        if self.name == "singlestream":
            per_sample = self.t.estimates[1]
        need = samples * per_sample
        most = max(MAX_RUN_S, MAX_RUN_FACTOR * duration)
        if self.name == "server" and qps * per_sample > MAX_RUN_FACTOR:
            raise ConfigError(f"server: {qps:g} QPS is over {MAX_RUN_FACTOR} times the measured "
                              f"{1 / per_sample:.4g} samples/s: every run would be INVALID, its queue growing to the "
                              f"end; lower --target-qps")
        if need > most or samples > 10 * MAX_QUERIES:
            what = {"singlestream": f"{queries:,} queries", "multistream": f"{queries:,} queries of "
                    f"{self.settings.samples_per_query} samples", "server": f"{samples:,.0f} queries at {qps:g} QPS",
                    "offline": f"{samples:,.0f} samples at {qps:g} QPS"}[self.name]
            fix = {"singlestream": "--min-queries", "multistream": "--samples-per-query or --min-queries",
                   "server": "--target-qps or --min-duration", "offline": "--target-qps or --min-duration"}[self.name]
            raise ConfigError(f"{self.name}: {what} would take about {need:,.0f} s to compute at the measured "
                              f"{1 / per_sample:.4g} samples/s, over the {most:g} s a run may take; lower {fix}")

    def _search(self) -> tuple[Summary | None, Path | None, dict, float | None]:
        s = self.settings
        found: dict[float, tuple[Summary, Path]] = {}

        def run(qps: float, probe: bool) -> Outcome:
            summary, folder, _ = self._loadgen("performance", qps, probe=probe)
            runs = 1
            if not probe and not summary.valid and summary.latency_ok and summary.more_queries:
                # the bound held, but early stopping wants more queries to accept the p99 (a few late queries
                # among the 500): run this rate again with what it needs at this run's late fraction
                queries = self._extension(summary, folder)
                if queries is not None:
                    summary, folder, _ = self._loadgen("performance", qps, label=f"{queries}q", min_queries=queries)
                    runs = 2
            if not probe:
                found[qps] = (summary, folder)
            p99 = summary.percentile("99")
            over = p99 / s.latency_bound_ms if p99 is not None and s.latency_bound_ms else None
            return Outcome(bool(summary.valid), bool(summary.latency_ok), folder.name, over, runs)

        start = min(self._rate(), self.t.offline_rate or float("inf")) * 0.9
        result = find_peak_qps(run, start, max_runs=s.max_runs, tolerance=s.search_tolerance)
        block = {**result.to_dict(), "latency_bound_ms": s.latency_bound_ms,
                 "probe_duration_s": s.probe_duration_for(),
                 "folders": [t.outcome.detail for t in result.trials]}
        if result.qps is not None:
            summary, folder = found[result.qps]
            return summary, folder, block, result.qps
        last = next((t for t in reversed(result.trials) if not t.probe), None)
        if last is None:
            return None, None, block, None
        summary, folder = found[last.qps]
        return summary, folder, block, last.qps

    def _extension(self, summary: Summary, folder: Path) -> int | None:
        """The queries to rerun a full run with that held the bound but that early stopping did not accept: what
        it needs at this run's fraction of late queries (at least what LoadGen asked for, with every further one on
        time), plus EXTEND_MARGIN; None, said, where that is over EXTEND_MAX times the run's queries."""
        counts = _detail_ints(folder, "result_query_count", "result_overlatency_query_count")
        done = counts["result_query_count"] or summary.parameter("min_query_count", int) or 1
        late = counts["result_overlatency_query_count"] or 0
        most = EXTEND_MAX * self.settings.min_queries_for(self.name)
        needed = queries_at_late_fraction(late / done, most=most)
        if needed is None:
            self.runs.echo(f"{self.t.case.model} {self.t.case.backend} {self.t.case.precision} "
                           f"{self.t.case.memory_format} {folder.name}: {late} of {done} queries late; early stopping "
                           f"would need over {most} at that fraction: not extended")
            return None
        return min(most, int(max(needed, done + summary.more_queries) * EXTEND_MARGIN))

    def _accuracy(self, qps: float | None) -> dict:
        t = self.t
        summary, folder, _ = self._loadgen("accuracy", qps)
        logits = read_accuracy_log(folder, _width(t))
        indices = sorted(logits)
        got = torch.from_numpy(np.stack([logits[i] for i in indices]))
        top1 = got.argmax(1)
        block = {"images": len(indices), "source": t.images.source, "split": t.images.split,
                 "logs": self._relative(folder)}
        if t.images.labels is not None:
            block["top1"] = float((top1 == t.images.labels[indices]).float().mean())
        if t.runner.target.is_reference:
            block["agreement_top1"], block["max_abs"] = 1.0, 0.0  # it is the reference itself
        else:
            x = t.images.images[indices]
            expected = torch.cat([t.reference(x[i:i + 32]) for i in range(0, len(x), 32)])
            block["agreement_top1"] = float((expected.argmax(1) == top1).float().mean())
            block["max_abs"] = float((expected - got).abs().max())
        self.runs.echo(f"{t.case.model} {t.case.backend} {t.case.precision} {t.case.memory_format} {self.name} "
                       f"accuracy: {len(indices)} images, top-1 {block.get('top1', 'n/a')}, agreement with eager "
                       f"fp32 {block['agreement_top1']:.4f}")
        return block

    def _relative(self, folder: Path | None) -> str | None:
        if folder is None or self.runs.logs_name is None:
            return None
        return str(Path(self.runs.logs_name) / folder.relative_to(self.runs.folder))

    # --- the row ---------------------------------------------------------------------------------------------
    def _row(self, summary: Summary | None, folder: Path | None, search: dict | None, accuracy: dict | None,
             qps: float | None) -> BenchResult:
        s, t = self.settings, self.t
        name = self.name
        duration, queries = s.min_duration_for(name), s.min_queries_for(name)
        case = replace(t.case, batch_size=self.batch, min_time_s=duration, min_iters=queries,
                       max_iters=queries, warmup=1 + ESTIMATE_CALLS)
        block = ScenarioResult(name, s.mode, metric=_METRICS[name], min_duration_s=duration, min_queries=queries,
                               samples_per_query=s.samples_per_query if name == "multistream" else 1,
                               latency_bound_ms=s.latency_bound_ms if name == "server" else None,
                               loadgen=package_version("mlcommons-loadgen"), search=search, accuracy=accuracy,
                               sut={**self._sut_policy(), **self.stats.get(folder, {})}, images=t.images.describe(),
                               logs=self._relative(folder))
        if summary is None:  # accuracy alone: LoadGen reports no timing
            return BenchResult(**vars(case), status="ok", timer="loadgen", load_ms=t.load_ms,
                               parity_max_abs=t.parity_max_abs, gmacs_per_image=t.gmacs,
                               scenario=asdict(block))
        p = summary.percentiles_ms
        rate = summary.samples_per_s
        if name == "multistream" and summary.mean_ms:
            rate = s.samples_per_query / (summary.mean_ms / 1e3)  # queries run back to back
        reasons = tuple(summary.reasons())
        if name == "server" and search is not None and search["qps"] is None:
            reasons = (f"no VALID rate found in {search['runs']} run(s)",) + reasons
        block = replace(block, result=summary.result, reasons=reasons, early_stopping=tuple(summary.early_stopping),
                        samples_per_s=rate, early_stopping_ms=summary.early_stopping_ms,
                        target_qps=summary.parameter("target_qps") if name in ("server", "offline") else None,
                        p50_ms=p.get("50"), p90_ms=p.get("90"), p95_ms=p.get("95"), p97_ms=p.get("97"),
                        p99_ms=p.get("99"), p99_9_ms=p.get("99.9"), min_ms=summary.min_ms, max_ms=summary.max_ms,
                        mean_ms=summary.mean_ms, queries=_detail_ints(folder, "result_query_count")["result_query_count"],
                        errors=summary.errors)
        case = replace(case, max_iters=max(queries, block.queries or 0))
        gflops = 2 * t.gmacs * rate if rate else None
        return BenchResult(**vars(case), status="ok", timer="loadgen", iterations=block.queries or 0,
                           load_ms=t.load_ms, median_ms=p.get("50"), mean_ms=summary.mean_ms, p90_ms=p.get("90"),
                           p99_ms=p.get("99"), min_ms=summary.min_ms, max_ms=summary.max_ms, images_per_s=rate,
                           gmacs_per_image=t.gmacs, gflops_per_s=gflops, parity_max_abs=t.parity_max_abs,
                           scenario=asdict(block))

    def _sut_policy(self) -> dict:
        sut = self.sut_settings
        if self.name != "server":
            return {"max_batch": self.batch, "max_wait_ms": 0.0, "workers": sut.workers}
        return {"max_batch": self.batch, "max_wait_ms": sut.max_wait_ms, "workers": sut.workers,
                "max_batch_setting": sut.max_batch,
                "batch_budget_ms": sut.server_batch_budget * self.settings.latency_bound_ms}


def _width(t: _Target) -> int:
    return int(t.reference(t.images.images[:1]).shape[1])


def _detail_ints(folder: Path | None, *keys: str) -> dict[str, int | None]:
    """Counts from LoadGen's detail log, read once: result_query_count (the queries it counted),
    result_overlatency_query_count (those over the latency bound); None for a key it does not hold."""
    found: dict[str, int | None] = dict.fromkeys(keys)
    if folder is None:
        return found
    import json

    for line in (folder / "mlperf_log_detail.txt").read_text(encoding="utf-8").splitlines():
        for key in keys:
            if f'"key": "{key}"' in line:
                found[key] = int(json.loads(line.split(":::MLLOG", 1)[1])["value"])
    return found


def _run_test(lg, t: _Target, settings: SutSettings, scenario: str, max_batch: int, test_settings,
              folder: Path) -> dict:
    """One LoadGen test with a fresh SUT and QSL; LoadGen runs in a thread so that Ctrl-C is seen at once (the SUT
    then answers everything without running it, so that LoadGen ends soon)."""
    library = SampleLibrary(t.images)
    runner = t.runner

    def infer(indices: list[int]) -> np.ndarray:
        return runner(library.batch(indices)).numpy()

    def complete(pairs: list[tuple[int, np.ndarray]]) -> None:
        lg.QuerySamplesComplete([lg.QuerySampleResponse(sid, row.ctypes.data, row.nbytes) for sid, row in pairs])

    wait = settings.max_wait_ms / 1e3 if scenario == "server" else 0.0
    sut = BatchingSut(infer, complete, max_batch=max_batch, max_wait_s=wait, workers=settings.workers)
    sut_handle = lg.ConstructSUT(lambda samples: sut.issue([(q.id, q.index) for q in samples]), sut.flush)
    qsl_handle = lg.ConstructQSL(library.total, library.performance_count, library.load, library.unload)
    log = lg.LogSettings()
    log.log_output.outdir = str(folder)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = False
    failure: list[BaseException] = []
    done = threading.Event()

    def test() -> None:
        try:  # an audit.config in the working directory would change the run: name one that does not exist
            lg.StartTestWithLogSettings(sut_handle, qsl_handle, test_settings, log, str(folder / "audit.config"))
        except BaseException as e:
            failure.append(e)
        finally:
            done.set()

    # Ctrl-C and SIGTERM (the CLI's handler raises Terminated) reach only this, the main thread: LoadGen's C++
    # threads call the SUT's callbacks, which never raise. Once interrupted, the SUT answers everything at once and
    # this thread still waits for StartTest to return before the SUT, the QSL or the log folder go away (doing it
    # sooner crashed LoadGen: a segfault, or "terminate called without an active exception"). It waits on an
    # Event, not Thread.join: CPython 3.11's join, interrupted, can mark a thread that still runs as stopped, and
    # then returns at once. SingleStream, MultiStream and Offline then end within moments, Server at the end of
    # its scheduled queries (the run's duration).
    interrupt: KeyboardInterrupt | None = None
    thread = threading.Thread(target=test, name="vggbench-loadgen")
    sut.start()
    try:
        thread.start()
    except KeyboardInterrupt as e:
        interrupt = e
    try:
        while thread.ident is not None and not done.is_set():
            try:
                if interrupt is not None:
                    sut.abort()
                done.wait(0.2)
            except KeyboardInterrupt as e:
                interrupt = interrupt or e
        sut.stop()
    finally:
        lg.DestroyQSL(qsl_handle)
        lg.DestroySUT(sut_handle)
    if interrupt is not None:
        raise interrupt
    if failure:
        raise VggbenchError(f"LoadGen failed: {one_line(failure[0])}")
    if sut.error is not None:
        raise VggbenchError(f"the SUT failed while LoadGen ran ({scenario}): {one_line(sut.error)}")
    return sut.describe()
