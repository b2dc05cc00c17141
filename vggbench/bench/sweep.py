"""`vggbench.benchmark`: run a suite. Each model is built once; artifact backends get an export made
once per (model, weights, image size, precision, format) into a cache and checked for parity; one
runner per (backend, precision, memory format) times every batch size through vggbench.bench; every
case that cannot run becomes a row with a status and a reason."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..backends import (
    Runner,
    Target,
    eager_runner,
    make_runner,
    resolve_target,
)
from ..backends.registry import get_backend
from ..backends.winograd import native
from ..core.device import Device, cpu_bf16_instructions, require_device
from ..core.env import capture
from ..core.errors import (
    BenchmarkInterrupted,
    CheckFailed,
    Terminated,
    UnsupportedError,
    VggbenchError,
    one_line,
)
from ..core.numerics import scoped_numerics, tf32_flag
from ..core.timing import free_memory, is_oom, measure
from ..data.inputs import random_batch
from ..parity.metrics import compare, tolerance_for
from ..zoo.dense import dense_gmacs, dense_model, min_dense_size
from ..zoo.profiling import profile
from ..zoo.weights import WeightsSource, load_model, parse_weights
from .cache import DEFAULT_EXPORT_CACHE, ExportCache, ExportFailed
from .peak import Ceilings, measure_peak, theoretical_peak
from .results import BenchRun, Journal
from .rows import BenchResult, Case
from .setup import BackendSetup
from .suite import Suite, resolve_suite

PARITY_IMAGES = 2  # a case's first output is compared with eager fp32 on the CPU for this many images
DENSE_DEFAULT_SIZE = 224  # the paper's training crop: where a dense form of random weights equals the model


class _ParityMismatch(Exception):
    pass


def benchmark(suite: Suite | str | os.PathLike | None = None, *, export_cache: str | os.PathLike = DEFAULT_EXPORT_CACHE,
              progress: bool | None = None, raise_errors: bool = False, journal: Journal | None = None,
              **overrides) -> BenchRun:
    """Time every case of a suite and return the run (settings, environment, one row per case).

    suite: a Suite, a suite name (vggbench/bench/suites/, then ./benchmarks/suites/) or a TOML path; None is
    the default suite of the device (cpu or cuda). overrides: any Suite field, e.g. models=["vgg11"],
    batch_sizes=[1, 8], min_time_s=1.0; they replace the suite's values.
    progress: a progress bar on stderr (None: only on a terminal).
    raise_errors: re-raise unexpected errors instead of recording them as "error" rows (for debugging).
    journal: where each finished case is appended as it is measured (vggbench.bench.results.claim_results
    makes one), so that a crash or a kill keeps it.
    """
    suite = resolve_suite(suite, **overrides)
    device = require_device(suite.device)
    weights = parse_weights(suite.weights, suite.seed).require()  # a missing file fails before any work
    plan = _plan(suite, device)
    started = time.perf_counter()
    with scoped_numerics(suite.threads, tf32_flag(device, suite.tf32), suite.cudnn_benchmark):
        environment = capture()
        environment["native_kernels"] = native.describe()  # the winograd backend's C++ transforms
        environment["gemm_peaks"] = _peaks(plan, device)
        ceilings = Ceilings(environment["gemm_peaks"], _theoretical(plan, device, suite))
        settings = {**suite.to_dict(), "export_cache": str(export_cache)}
        if journal is not None:
            journal.start(settings, environment, environment["created"])
        sweep = _Sweep(suite, device, weights, plan, Path(export_cache), ceilings, progress, raise_errors,
                       journal)
        interrupted = None
        try:
            sweep.run()
        except KeyboardInterrupt as e:
            interrupted = "SIGTERM" if isinstance(e, Terminated) else "Ctrl-C"
    if interrupted:
        settings["interrupted"] = f"{interrupted} after {len(sweep.results)} of {suite.case_count()} cases"
    # every row against the final ceilings: the best rate of the whole run (rows were recorded against the best so
    # far, which is also at most 100%)
    environment["ceilings"] = ceilings.to_list()
    results = [replace(r, **ceilings.row_fields(r.device, r.precision, r.gflops_per_s, _hardware_rate(r.backend)))
               if r.status == "ok" else r for r in sweep.results]
    run = BenchRun(settings, environment, results, time.perf_counter() - started, environment["created"])
    if interrupted:
        raise BenchmarkInterrupted(run)
    return run


def _hardware_rate(backend: str) -> bool:
    """Whether a backend's GFLOP/s is a rate the hardware ran (not Winograd's effective one)."""
    return not get_backend(backend).fewer_flops


def _plan(suite: Suite, device: Device) -> dict[tuple, Target | UnsupportedError]:
    """Each group's target, resolved once; a combination that cannot run here is kept as its error (its cases
    become "unsupported" rows)."""
    plan = {}
    emulated = suite.native_only and not device.is_cuda and not cpu_bf16_instructions()
    for model, backend, precision, memory_format, *_ in suite.groups():
        try:
            if emulated and precision == "bf16":
                raise UnsupportedError("this CPU has no bf16 instructions (AVX512-BF16 or AMX): bf16 would run "
                                       "emulated, several times slower than fp32, so this suite skips it "
                                       "(native_only)")
            plan[model, backend, precision, memory_format] = resolve_target(backend, device, precision, memory_format)
        except UnsupportedError as e:
            plan[model, backend, precision, memory_format] = e
    return plan


def _theoretical(plan: dict, device: Device, suite: Suite) -> dict[tuple[str, str], dict | None]:
    """The theoretical ceiling of each precision that has a runnable case, where it is known."""
    runnable = dict.fromkeys(t.precision for t in plan.values() if isinstance(t, Target))
    threads = torch.get_num_threads()
    tf32 = bool(tf32_flag(device, suite.tf32))
    return {(str(device), p): theoretical_peak(device, p, threads, tf32) for p in runnable}


def _peaks(plan: dict, device: Device) -> list[dict]:
    """One GEMM per precision that has a runnable case (amp on a CPU, say, has none)."""
    runnable = list(dict.fromkeys(t.precision for t in plan.values() if isinstance(t, Target)))
    return [p for p in (measure_peak(device, precision) for precision in runnable) if p]


class _Sweep:
    def __init__(self, suite: Suite, device: Device, weights: WeightsSource, plan: dict, export_cache: Path,
                 ceilings: Ceilings, progress, raise_errors: bool, journal: Journal | None) -> None:
        self.suite, self.device, self.weights, self.plan = suite, device, weights, plan
        self.export_cache, self.raise_errors = export_cache, raise_errors
        self.ceilings = ceilings
        self.threads = torch.get_num_threads()
        self.tf32 = bool(tf32_flag(device, suite.tf32))  # fp32 on CUDA with TF32 math: judged as such
        self.setup = BackendSetup(suite, self.threads, self.tf32)
        self.progress, self.journal = progress, journal
        self.results: list[BenchResult] = []

    def run(self) -> list[BenchResult]:
        from tqdm import tqdm

        groups = self.suite.groups()
        with tqdm(total=self.suite.case_count(), unit="case", desc="vggbench run", disable=_disabled(self.progress),
                  dynamic_ncols=True) as self.bar:
            for name in dict.fromkeys(g[0] for g in groups):
                self._model(name, [g[1:] for g in groups if g[0] == name])
        return self.results

    def _case(self, model: str, backend: str, precision: str, memory_format: str, batch_size: int,
              settings=None) -> Case:
        s = self.suite
        target = self.plan[model, backend, precision, memory_format]
        return Case(model=model, image_size=s.image_size, batch_size=batch_size, backend=backend,
                    device=str(self.device), precision=precision, memory_format=memory_format, threads=self.threads,
                    weights=self.weights.label,
                    warmup=max(s.warmup, get_backend(backend).min_warmup),
                    warmup_time_s=s.warmup_time_s, min_time_s=s.min_time_s, min_iters=s.min_iters,
                    max_iters=s.max_iters, **self.setup.case_fields(backend, target, settings))

    def _model(self, name: str, groups: list) -> None:
        s = self.suite
        self.bar.set_postfix_str(f"loading {name}")
        try:
            loaded = load_model(name, self.weights, **s.model_options())
        except Exception as e:  # weights that do not fit this model: its cases are rows, the other models run
            status, reason = self._failure(e)
            self._record([BenchResult.failed(self._case(name, *g[:3], b, g[4]), status, f"model not loaded: {reason}")
                          for g in groups for b in g[3]])
            return
        subject, self.dense_note = loaded, ""  # what module backends run and what parity compares with
        dense_size = None
        if s.dense:
            dense_size = s.dense_size or loaded.weights.image_size or DENSE_DEFAULT_SIZE
            subject = dense_model(loaded.module, dense_size).eval()
            lowest = min_dense_size(subject.features, dense_size)
            if s.image_size < lowest:
                reason = (f"the dense form of {name} made at {dense_size} takes inputs of at least {lowest}, not "
                          f"{s.image_size}")
                self._record([BenchResult.failed(self._case(name, *g[:3], b, g[4]), "unsupported", reason)
                              for g in groups for b in g[3]])
                return
            self.gmacs = dense_gmacs(subject, s.image_size, s.image_size)
            self.dense_note = f"dense form, equal to the model at {dense_size}"
        else:
            self.gmacs = profile(loaded.spec, loaded.options, s.image_size).gmacs
        self.cache = ExportCache(self.export_cache, loaded, s.image_size, dense_size=dense_size)
        self.loaded, self.reference, self.batches, self.expected = subject, eager_runner(
            getattr(subject, "module", subject)), {}, {}
        for backend, precision, memory_format, sizes, settings in groups:
            cases = [self._case(name, backend, precision, memory_format, b, settings) for b in sizes]
            self._group(self.plan[name, backend, precision, memory_format], cases)
        del self.loaded, self.reference, self.batches, self.expected, self.cache

    def _group(self, target: Target | UnsupportedError, cases: list[Case]) -> None:
        """Build one runner and time it at every batch size."""
        c = cases[0]
        self.bar.set_postfix_str(f"{c.model} {c.backend} {c.precision} {c.memory_format}: preparing")
        runner, load_ms = None, None
        try:
            if isinstance(target, UnsupportedError):
                raise target
            export_dir = self.cache.folder(target) if target.artifact else None
            started = time.perf_counter()
            options = self.setup.runner_options(c, target, self.loaded)
            runner = make_runner(target, self.loaded, export_dir=export_dir, options=options)
            load_ms = (time.perf_counter() - started) * 1e3
        except Exception as e:  # recorded as rows; re-raised on request
            status, reason = self._failure(e, building=True)
            self._record([BenchResult.failed(case, status, reason) for case in cases])
        if runner is not None:
            self._time_sizes(runner, cases, load_ms)
        del runner
        close = get_backend(c.backend).close
        if close is not None:
            close()
        free_memory(self.device)

    def _time_sizes(self, runner: Runner, cases: list[Case], load_ms: float) -> None:
        """Every batch size in turn, backing off after an out-of-memory one: a batch at least as large is
        recorded as oom without being tried (each try would fill the device again, for nothing)."""
        fitted, failed_at = 0, None
        for case in cases:
            if failed_at is not None and case.batch_size >= failed_at:
                largest = f"; the largest that fitted was {fitted}" if fitted else ""
                self._record([BenchResult.failed(case, "oom", f"not tried: batch {failed_at} ran out of memory"
                                                              f"{largest}", load_ms=load_ms)])
                continue
            row = self._time(runner, case, load_ms)
            if row.status == "oom":
                failed_at = min(failed_at or case.batch_size, case.batch_size)
            elif row.status == "ok":
                fitted = max(fitted, case.batch_size)

    def _time(self, runner: Runner, case: Case, load_ms: float) -> BenchResult:
        self.bar.set_postfix_str(f"{case.model} {case.backend} {case.precision} {case.memory_format} "
                                 f"batch {case.batch_size}")
        parity: dict = {}
        reference = runner.target.is_reference

        def check(out) -> None:
            k = min(PARITY_IMAGES, case.batch_size)
            if reference:  # the reference is compared with nothing, but NaN/Inf logits are no result
                if not torch.isfinite(runner.to_tensor(out)[:k]).all():
                    raise _ParityMismatch("the reference (eager fp32) output has NaN/Inf: check the weights")
                return
            got = runner.to_tensor(out)[:k]
            result = compare(self._expected(case.batch_size), got, tolerance_for(case.precision, tf32=self.tf32),
                             backend=case.backend, device=case.device, precision=case.precision,
                             memory_format=case.memory_format, inputs=f"benchmark batch, first {k}")
            parity["max_abs"] = result.max_abs
            # int8 is judged by class agreement on real images (done when its export was verified); on
            # random noise its top-1 says nothing, so here it is only recorded
            if not result.passed and case.precision not in ("int8", "fp8"):
                raise _ParityMismatch(f"output differs from eager fp32: {result.reason}")

        try:
            batch = self._batch(case.batch_size)  # allocating it can fail too (a batch beyond memory): a row
            m = measure(runner, batch, case.timing, on_first_output=check)
            notes = "; ".join(n for n in (self.dense_note, runner.notes(batch)) if n)
            row = BenchResult.measured(case, m, gmacs_per_image=self.gmacs, peak_gflops_per_s=None, load_ms=load_ms,
                                       parity_max_abs=parity.get("max_abs"), notes=notes)
            self.ceilings.see(case.device, case.precision, row.gflops_per_s,
                              f"{case.backend} {case.precision} {case.memory_format} batch {case.batch_size}")
            row = replace(row, **self.ceilings.row_fields(case.device, case.precision, row.gflops_per_s,
                                                          _hardware_rate(case.backend)))
        except Exception as e:  # recorded as a row; re-raised on request
            status, reason = self._failure(e)
            row = BenchResult.failed(case, status, reason, load_ms=load_ms, parity_max_abs=parity.get("max_abs"))
        if row.status == "oom":
            free_memory(self.device)
        self._record([row])
        return row

    def _failure(self, error: Exception, building: bool = False) -> tuple[str, str]:
        if isinstance(error, ExportFailed):
            return "export_failed", str(error)
        if isinstance(error, _ParityMismatch):
            return "parity_failed", str(error)
        if is_oom(error):
            return "oom", one_line(error)
        if isinstance(error, UnsupportedError):
            return "unsupported", str(error)
        if isinstance(error, (CheckFailed, VggbenchError)) and building:
            return "export_failed", str(error)  # e.g. an export folder whose files were changed
        if isinstance(error, VggbenchError):  # e.g. weights that do not fit one of the models
            return "error", str(error)
        if self.raise_errors:
            raise error
        return "error", one_line(error)

    def _record(self, rows: list[BenchResult]) -> None:
        for row in rows:
            self.results.append(row)
            if self.journal is not None:
                self.journal.append(row)
        self.bar.update(len(rows))

    def _batch(self, batch_size: int) -> torch.Tensor:
        if batch_size not in self.batches:
            self.batches[batch_size] = random_batch(batch_size, self.suite.image_size, seed=0)
        return self.batches[batch_size]

    def _expected(self, batch_size: int) -> torch.Tensor:
        """Eager fp32 CPU logits of the first images of the batch: the parity reference."""
        if batch_size not in self.expected:
            k = min(PARITY_IMAGES, batch_size)
            self.expected[batch_size] = self.reference(self._batch(batch_size)[:k])
        return self.expected[batch_size]


def _disabled(progress: bool | None) -> bool | None:
    return None if progress is None else not progress
