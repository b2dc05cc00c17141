"""`vggbench.loadgen`: MLPerf's deployment scenarios (SingleStream, MultiStream, Server, Offline) measured by MLPerf's
own load generator, LoadGen (the mlcommons-loadgen wheel), over any target of the registry.

Per model: the model is loaded once, its query sample library of real images is preprocessed once. Per (backend,
precision, memory format): the runner is prepared as `vggbench run` prepares it (vggbench.bench.prepare: the
parity-checked export cache, failures as rows), its output on the library's first images judged against eager fp32
before anything is timed; a few timed batches give LoadGen its expected latencies and rates, then each scenario
runs, what differs between them asked of its object in vggbench.bench.mlperf (Server: the search for the highest
VALID rate). Each scenario becomes a result row whose `scenario` block holds what LoadGen's summary said; LoadGen's own
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

from ..backends import Runner, Target, backend_names, get_backend, resolve_target
from ..core.arguments import expect
from ..core.device import require_device
from ..core.env import capture, package_version
from ..core.errors import ConfigError, UnsupportedError, VggbenchError, one_line
from ..core.fileio import atomic_dir
from ..core.load import LoadSampler, load_block, run_load, wait_for_quiet
from ..core import allocator
from ..core.numerics import scoped_numerics, tf32_flag
from ..zoo.weights import parse_weights
from .cache import DEFAULT_EXPORT_CACHE
from .mlperf import EXPECTED_LATENCY_FRACTION, SCENARIO_TABLE, Scenario
from .prepare import QUANTIZED, Failure, Preparation, PreparedModel, PreparedRunner
from .qsl import ImageSet, SampleLibrary, check_fits, free_memory_bytes, load_images
from .results import BenchRun, Journal, not_loadgen_logs
from .rows import BenchResult, Case, ScenarioResult
from .scenarios import LoadgenSettings, SutSettings
from .suite import Suite, resolve_suite
from .summary import Summary, read_accuracy_log, read_detail_ints, read_summary
from .sut import BatchingSut

# a Server probe's queries at least: its p99 is then about its slowest query, a cautious reading; an overloaded
# rate shows in the growing queue within the probe's duration
PROBE_MIN_QUERIES = 32
ESTIMATE_CALLS = 2  # timed calls per batch size (after one untimed) for LoadGen's expected latencies and rates
# a timed call of a batch (extrapolated from the smaller ones timed before it) at most: past it a target's
# scenarios are rows that say why (see also vggbench.bench.mlperf.MAX_RUN_S, a run's computation at most)
MAX_CALL_S = 60.0
# the timing fields of a LoadGen row's case until its scenario ran: LoadGen's runs set them
_UNTIMED = dict(warmup=0, warmup_time_s=0.0, min_time_s=0.0, min_iters=1, max_iters=1)


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
            echo: Callable[[str], None] | None = None, require_quiet: float | None = None,
            **overrides) -> BenchRun:
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
    require_quiet: wait up to this many seconds for a quiet machine first (vggbench.core.load), then raise
    MachineBusy; None does not wait. Either way each scenario's row records the load it ran under.
    """
    expect("loadgen", "settings", settings, (LoadgenSettings, type(None)), "a LoadgenSettings or None")
    expect("loadgen", "sut", sut, (SutSettings, type(None)), "a SutSettings or None")
    lg = _mlperf_loadgen()
    settings, sut = settings or LoadgenSettings(), sut or SutSettings()
    suite = resolve_suite(suite if suite is not None else Suite(name="loadgen"), **overrides)
    device = require_device(suite.device)
    weights = parse_weights(suite.weights, suite.seed).require()
    sampler = LoadSampler()
    if require_quiet is not None:
        wait_for_quiet(require_quiet, sampler=sampler)
    started = time.perf_counter()
    keep = logs is not None
    final = Path(logs) if keep else Path(tempfile.mkdtemp(prefix="vggbench-loadgen-"))
    with scoped_numerics(suite.threads, tf32_flag(device, suite.tf32), suite.cudnn_benchmark):
        environment = capture()
        environment["allocator"] = allocator.apply(suite.allocator)
        environment["loadgen"] = package_version("mlcommons-loadgen")
        environment["load"] = {"start": sampler.sample()}
        unused = ("batch_sizes", "warmup", "warmup_time_s", "min_time_s", "min_iters", "max_iters")  # `run`'s timing
        run_settings = {**{k: v for k, v in suite.to_dict().items() if k not in unused},
                        "export_cache": str(export_cache), "loadgen": settings.to_dict(),
                        "sut": sut.to_dict(), "logs": final.name if keep else None}
        if journal is not None:
            journal.start(run_settings, environment, environment["created"])
        rows: list[BenchResult] = []
        try:
            with atomic_dir(final, force=True, not_ours=not_loadgen_logs) if keep else _scratch(final) as folder:
                # in the scope: its thread count; the SUT's batches, not the suite's, are what the runners get
                prep = Preparation(suite, device, weights, export_cache, max_batch=sut.max_batch)
                runs = _Runs(lg, suite, prep, settings, sut, folder, final.name if keep else None,
                             echo or (lambda line: None), rows, journal, sampler)
                runs.all()
        except KeyboardInterrupt:
            environment["load"] = run_load(environment["load"]["start"], sampler.sample(),
                                           [r.under_load for r in rows])
            run_settings["interrupted"] = f"interrupted after {len(rows)} scenario(s); their LoadGen logs are lost"
            from ..core.errors import BenchmarkInterrupted

            raise BenchmarkInterrupted(BenchRun(run_settings, environment, rows, time.perf_counter() - started,
                                                environment["created"])) from None
        finally:
            if not keep:
                shutil.rmtree(final, ignore_errors=True)
    environment["load"] = run_load(environment["load"]["start"], sampler.sample(), [r.under_load for r in rows])
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

    prepared: PreparedRunner
    images: ImageSet
    estimates: dict[int, float]  # batch size -> seconds per call
    batches: dict[str, int]  # scenario -> its largest batch (Server's: --max-batch capped by --server-batch-budget)
    offline_rate: float | None = None  # samples/s of this target's Offline run, once it ran


class _Runs:
    def __init__(self, lg, suite: Suite, prep: Preparation, settings: LoadgenSettings, sut: SutSettings,
                 folder: Path, logs_name: str | None, echo: Callable[[str], None], rows: list[BenchResult],
                 journal: Journal | None, sampler: LoadSampler) -> None:
        self.lg, self.suite, self.prep, self.settings, self.sut = lg, suite, prep, settings, sut
        self.folder, self.logs_name, self.echo = folder, logs_name, echo
        self.rows, self.journal = rows, journal
        self.load = sampler  # sampled as each scenario starts and ends: the load it ran under

    # --- plan ----------------------------------------------------------------------------------------------
    def all(self) -> None:
        groups = self.suite.groups()
        for name in dict.fromkeys(g[0] for g in groups):
            planned = [self._plan(name, g.backend, g.precision, g.memory_format, g.settings)
                       for g in groups if g.model == name]
            # the model as trained: LoadGen's samples are real images at the suite's size
            model = self.prep.model(name, dense=False)
            if isinstance(model, Failure):
                for _, case in planned:
                    self._failed(model, case)
                continue
            s, loaded = self.suite, model.loaded
            images = load_images(self.settings.images, s.image_size, loaded.weights.mean, loaded.weights.std,
                                 weights_meta=loaded.weights.meta, split=self.settings.split,
                                 count=self.settings.count, data_dir=self.settings.data_dir)
            self.echo(f"{name}: {len(images.images)} {images.source} images in the sample library")
            for target, case in planned:
                self._group(model, images, target, case)

    def _plan(self, model: str, backend: str, precision: str, memory_format: str, settings=None
              ) -> tuple[Target | UnsupportedError, Case]:
        """A group's target (or why it cannot run here) and its case."""
        try:
            target = resolve_target(backend, self.suite.device, precision, memory_format)
        except UnsupportedError as e:
            target = e
        case = self.prep.case(model, backend, precision, memory_format, self.sut.max_batch, target, settings,
                              **_UNTIMED)
        if isinstance(target, Target) and self.sut.workers > 1 and not target.spec.thread_safe:
            safe = [name for name in backend_names() if get_backend(name).thread_safe]
            target = UnsupportedError(f"{target.backend}'s runner is not known to be safe to call from several "
                                      f"threads; use --workers 1 (backends that allow more: {', '.join(safe)})")
        return target, case

    def _group(self, model: PreparedModel, images: ImageSet, target: Target | UnsupportedError, case: Case) -> None:
        prepared = self.prep.runner(model, target, [case], parity_images=images.images,
                                    parity_source="sample library")
        if isinstance(prepared, Failure):  # a row per scenario that says why, as `run` records a case
            self._failed(prepared, case)
            return
        c = case
        self.echo(f"{c.model} {c.backend} {c.precision} {c.memory_format}: parity with eager fp32 "
                  f"{'recorded' if c.precision in QUANTIZED else 'ok'}; timing batches")
        try:
            estimates, batches = self._estimate(prepared.runner, images, model.loaded.options.width)
        except Exception as e:
            self._failed(self.prep.failure(e), case)
            prepared.close()
            return
        t = _Target(prepared, images, estimates, batches)
        for name in self.settings.scenarios:
            line = SCENARIO_TABLE[name].announce(batches[name], estimates, self.settings, self.sut)
            if line:
                self.echo(f"{c.model} {c.backend} {c.precision} {c.memory_format}: {line}")
        # a backend in two settings (a suite's [[matrix]] tables) logs into two folders: its variant names the second
        variant = "-".join(c.variant.split()) if c.variant else ""
        sub = self.folder / "-".join(filter(None, (c.model, c.backend, variant, c.precision, c.memory_format)))
        for name in sorted(self.settings.scenarios, key=lambda name: SCENARIO_TABLE[name].runs_last):
            start = self.load.sample()
            try:
                row = _ScenarioRun(self, t, SCENARIO_TABLE[name], sub).run()
            except VggbenchError as e:
                row = BenchResult.failed(case, "error", str(e), scenario=self._block(name))
            block, under_load = load_block(start, self.load.sample())
            self._record(replace(row, load=block, under_load=under_load))
        prepared.close()

    def _failed(self, failure: Failure, case: Case) -> None:
        for name in self.settings.scenarios:
            self._record(failure.row(case, scenario=self._block(name)))

    def _block(self, scenario: str) -> dict:
        return asdict(ScenarioResult(scenario, self.settings.mode, metric=SCENARIO_TABLE[scenario].metric))

    def _record(self, row: BenchResult) -> None:
        self.rows.append(row)
        if self.journal is not None:
            self.journal.append(row)

    # --- before LoadGen ------------------------------------------------------------------------------------
    def _estimate(self, runner: Runner, images: ImageSet, width: float) -> tuple[dict[int, float], dict[str, int]]:
        """Seconds per call at the batch sizes the scenarios run (LoadGen's expected latencies and rates), and
        each scenario's largest batch. A batch is timed only when it fits in memory (VGG's largest activations:
        the first block's two maps) and when its half, timed first, says it takes at most MAX_CALL_S; else
        ConfigError."""
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

        seconds(1)  # every run's expected SingleStream latency
        batches = {name: scenario.time_batch(seconds, self.settings, self.sut)
                   for name, scenario in SCENARIO_TABLE.items() if name in self.settings.scenarios}
        return found, batches


class _ScenarioRun:
    """One scenario of one target: its LoadGen runs (performance, accuracy) and the row they make; what differs
    between scenarios is asked of the scenario object (vggbench.bench.mlperf)."""

    def __init__(self, runs: _Runs, target: _Target, scenario: Scenario, folder: Path) -> None:
        self.runs, self.target, self.scenario, self.folder = runs, target, scenario, folder
        self.name = scenario.name
        self.settings, self.sut_settings, self.lg = runs.settings, runs.sut, runs.lg
        self.batch = target.batches[scenario.name]  # the largest batch this scenario runs
        self.stats: dict[Path, dict] = {}  # the SUT's batches in each LoadGen run, by its folder

    def run(self) -> BenchResult:
        s = self.settings
        summary = search = accuracy = folder = None
        qps = s.target_qps
        if s.mode in ("performance", "both"):
            summary, folder, search, qps = self.scenario.performance(self)
        if s.mode in ("accuracy", "both"):
            accuracy = self._accuracy(qps)
        return self._row(summary, folder, search, accuracy)

    def say(self, text: str) -> None:
        c = self.target.prepared.case
        self.runs.echo(f"{c.model} {c.backend} {c.precision} {c.memory_format} {text}")

    # --- LoadGen runs ----------------------------------------------------------------------------------------
    def rate(self) -> float:
        """Samples per second at the largest batch, from the timed batches."""
        return self.batch / self.target.estimates[self.batch]

    def loadgen(self, mode: str, qps: float | None, *, probe: bool = False, label: str = "",
                expected_latency_s: float | None = None, min_queries: int | None = None
                ) -> tuple[Summary, Path, dict]:
        lg, s, t = self.lg, self.settings, self.target
        ts = lg.TestSettings()
        ts.scenario = getattr(lg.TestScenario, self.scenario.loadgen_name)
        ts.mode = lg.TestMode.AccuracyOnly if mode == "accuracy" else lg.TestMode.PerformanceOnly
        duration = s.probe_duration_for() if probe else s.min_duration_for(self.name)
        queries = min(PROBE_MIN_QUERIES, s.min_queries_for(self.name)) if probe else \
            (min_queries or s.min_queries_for(self.name))
        ts.min_duration_ms = int(round(duration * 1e3))
        ts.min_query_count = queries
        # expected latencies well below the estimates: LoadGen generates duration / expected latency queries and
        # stops issuing once the duration and the count are met, so too many cost nothing and too few make the run
        # INVALID (a loaded machine times the estimate slow); Offline's one query is sized from its expected rate
        ts.single_stream_expected_latency_ns = max(1, int(1e9 * (expected_latency_s or t.estimates[1] *
                                                                 EXPECTED_LATENCY_FRACTION)))
        ts.multi_stream_samples_per_query = s.samples_per_query
        ts.multi_stream_expected_latency_ns = max(1, int(1e9 * (expected_latency_s or t.estimates[self.batch] *
                                                                EXPECTED_LATENCY_FRACTION * s.samples_per_query /
                                                                self.batch)))
        ts.server_target_latency_ns = int(s.latency_bound_ms * 1e6)
        ts.server_target_qps = qps if qps is not None else self.rate()
        ts.offline_expected_qps = qps if qps is not None else self.rate() * 1.1
        if mode == "performance":
            self.scenario.check_run_length(duration, queries, self.scenario.scheduled_qps(ts),
                                           t.estimates[self.batch] / self.batch, s)
        label = self.scenario.label(mode, probe, qps, s) + (f"-{label}" if label else "")
        folder = self.folder / label
        folder.mkdir(parents=True)
        sut = self.stats[folder] = _run_test(lg, t, self.sut_settings, self.scenario, self.batch, ts, folder)
        (folder / "mlperf_log_trace.json").unlink(missing_ok=True)  # empty: tracing is off
        if mode == "performance":
            (folder / "mlperf_log_accuracy.json").unlink(missing_ok=True)  # empty outside accuracy mode
        summary = read_summary(folder) if mode == "performance" else None
        if summary is not None:
            verdict = summary.result or "?"
            p = self.scenario.percentile
            at = f", p{p * 100:g} {summary.percentile(f'{p * 100:g}'):.4g} ms" if p else ""
            rate = f", {summary.samples_per_s:.4g} samples/s" if summary.samples_per_s else ""
            self.say(f"{folder.name}: {verdict}{rate}{at}")
        return summary, folder, sut

    def _accuracy(self, qps: float | None) -> dict:
        t = self.target
        summary, folder, _ = self.loadgen("accuracy", qps)
        logits = read_accuracy_log(folder, _width(t))
        indices = sorted(logits)
        got = torch.from_numpy(np.stack([logits[i] for i in indices]))
        top1 = got.argmax(1)
        block = {"images": len(indices), "source": t.images.source, "split": t.images.split,
                 "logs": self._relative(folder)}
        if t.images.labels is not None:
            block["top1"] = float((top1 == t.images.labels[indices]).float().mean())
        if t.prepared.runner.target.is_reference:
            block["agreement_top1"], block["max_abs"] = 1.0, 0.0  # it is the reference itself
        else:
            x = t.images.images[indices]
            expected = torch.cat([t.prepared.reference(x[i:i + 32]) for i in range(0, len(x), 32)])
            block["agreement_top1"] = float((expected.argmax(1) == top1).float().mean())
            block["max_abs"] = float((expected - got).abs().max())
        self.say(f"{self.name} accuracy: {len(indices)} images, top-1 {block.get('top1', 'n/a')}, agreement with "
                 f"eager fp32 {block['agreement_top1']:.4f}")
        return block

    def _relative(self, folder: Path | None) -> str | None:
        if folder is None or self.runs.logs_name is None:
            return None
        return str(Path(self.runs.logs_name) / folder.relative_to(self.runs.folder))

    # --- the row ---------------------------------------------------------------------------------------------
    def _row(self, summary: Summary | None, folder: Path | None, search: dict | None,
             accuracy: dict | None) -> BenchResult:
        s, t, sc, p = self.settings, self.target, self.scenario, self.target.prepared
        duration, queries = s.min_duration_for(self.name), s.min_queries_for(self.name)
        case = replace(p.case, batch_size=self.batch, min_time_s=duration, min_iters=queries,
                       max_iters=queries, warmup=1 + ESTIMATE_CALLS)
        block = ScenarioResult(self.name, s.mode, metric=sc.metric, min_duration_s=duration, min_queries=queries,
                               samples_per_query=sc.samples_per_query(s), latency_bound_ms=sc.latency_bound_ms(s),
                               loadgen=package_version("mlcommons-loadgen"), search=search, accuracy=accuracy,
                               sut={**sc.sut_policy(self.batch, s, self.sut_settings), **self.stats.get(folder, {})},
                               images=t.images.describe(), logs=self._relative(folder))
        if summary is None:  # accuracy alone: LoadGen reports no timing
            return BenchResult(**vars(case), status="ok", timer="loadgen", load_ms=p.load_ms,
                               parity_max_abs=p.parity_max_abs, gmacs_per_image=p.gmacs,
                               scenario=asdict(block))
        pct = summary.percentiles_ms
        rate = sc.samples_per_s(summary, s)
        block = replace(block, result=summary.result, reasons=sc.reasons(summary, search),
                        early_stopping=tuple(summary.early_stopping), samples_per_s=rate,
                        early_stopping_ms=summary.early_stopping_ms,
                        target_qps=summary.parameter("target_qps") if sc.records_target_qps else None,
                        p50_ms=pct.get("50"), p90_ms=pct.get("90"), p95_ms=pct.get("95"), p97_ms=pct.get("97"),
                        p99_ms=pct.get("99"), p99_9_ms=pct.get("99.9"), min_ms=summary.min_ms,
                        max_ms=summary.max_ms, mean_ms=summary.mean_ms,
                        queries=read_detail_ints(folder, "result_query_count")["result_query_count"],
                        errors=summary.errors)
        case = replace(case, max_iters=max(queries, block.queries or 0))
        gflops = 2 * p.gmacs * rate if rate else None
        return BenchResult(**vars(case), status="ok", timer="loadgen", iterations=block.queries or 0,
                           load_ms=p.load_ms, median_ms=pct.get("50"), mean_ms=summary.mean_ms,
                           p90_ms=pct.get("90"), p99_ms=pct.get("99"), min_ms=summary.min_ms, max_ms=summary.max_ms,
                           images_per_s=rate, gmacs_per_image=p.gmacs, gflops_per_s=gflops,
                           parity_max_abs=p.parity_max_abs, scenario=asdict(block))


def _width(t: _Target) -> int:
    return int(t.prepared.reference(t.images.images[:1]).shape[1])


def _run_test(lg, t: _Target, settings: SutSettings, scenario: Scenario, max_batch: int, test_settings,
              folder: Path) -> dict:
    """One LoadGen test with a fresh SUT and QSL; LoadGen runs in a thread so that Ctrl-C is seen at once (the SUT
    then answers everything without running it, so that LoadGen ends soon)."""
    library = SampleLibrary(t.images)
    runner = t.prepared.runner

    def infer(indices: list[int]) -> np.ndarray:
        return runner(library.batch(indices)).numpy()

    def complete(pairs: list[tuple[int, np.ndarray]]) -> None:
        lg.QuerySamplesComplete([lg.QuerySampleResponse(sid, row.ctypes.data, row.nbytes) for sid, row in pairs])

    sut = BatchingSut(infer, complete, max_batch=max_batch, max_wait_s=scenario.max_wait_s(settings),
                      workers=settings.workers)
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
        raise VggbenchError(f"the SUT failed while LoadGen ran ({scenario.name}): {one_line(sut.error)}")
    return sut.describe()
