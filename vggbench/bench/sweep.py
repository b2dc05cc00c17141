"""`vggbench.benchmark`: run a suite. Each model is built once; artifact backends get an export made
once per (model, weights, image size, precision, format) into a cache and checked for parity; one
runner per (backend, precision, memory format) times every batch size through vggbench.bench; every
case that cannot run becomes a row with a status and a reason."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch

from ..backends.base import BACKENDS, OrtSettings, check_device, check_supported, eager_runner, make_runner
from ..backends.winograd import native
from ..core.env import capture
from ..core.errors import BenchmarkInterrupted, CheckFailed, UnsupportedError, VggbenchError, one_line
from ..core.numerics import scoped_numerics, tf32_flag
from ..core.timing import free_memory, is_oom, measure
from ..data.inputs import random_batch
from ..exporters.export import export
from ..exporters.manifest import SCHEMA_VERSION as MANIFEST_SCHEMA
from ..exporters.manifest import artifact, format_for_backend, read_manifest
from ..parity.metrics import compare, tolerance_for
from ..zoo.profiling import profile
from ..zoo.weights import LoadedModel, load_model, state_sha256
from .peak import measure_peak
from .results import BenchRun
from .rows import BenchResult, Case
from .suite import Suite, resolve_suite

DEFAULT_EXPORT_CACHE = Path("exports") / ".cache"
PARITY_IMAGES = 2  # a case's first output is compared with eager fp32 on the CPU for this many images
COMPILE_MIN_WARMUP = 3  # torch.compile's CUDA graphs (reduce-overhead) record on the 2nd-3rd call


class _ExportFailed(Exception):
    """Wraps an export failure so that it is reported as export_failed, whatever raised it."""


class _ParityMismatch(Exception):
    pass


INT8_NEEDS_TRAINED_WEIGHTS = ("int8 is offered only with its measured top-1 agreement with fp32 on real images, "
                              "which random weights do not have: give trained weights (--weights FILE or imagenet)")


class ExportCache:
    """Parity-checked export folders under `root`, one per (model, weights, image size, precision, format),
    reused while their manifest and checksums say they are what is asked for."""

    def __init__(self, root: str | os.PathLike, model: LoadedModel, image_size: int) -> None:
        self.root, self.model, self.image_size = Path(root), model, image_size
        self.weights_sha = state_sha256(model.module)
        self._failed: dict[str, str] = {}

    def key(self, fmt: str, precision: str) -> str:
        ident = {"model": self.model.name, "options": self.model.options.to_dict(), "state_sha256": self.weights_sha,
                 "image_size": self.image_size, "precision": precision, "format": fmt, "schema": MANIFEST_SCHEMA}
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
        return f"{self.model.name}-{self.image_size}-{precision}-{fmt}-{digest}"

    def folder(self, backend: str, precision: str) -> Path:
        """The export folder for a backend at a run precision (amp and bf16 run an fp32 export; int8 runs
        model.int8.onnx, quantized from the fp32 ONNX export and verified by class agreement on real
        images, which random weights cannot have: for them int8 is refused before anything is made)."""
        if precision == "int8" and self.model.weights.source == "random":
            raise _ExportFailed(INT8_NEEDS_TRAINED_WEIGHTS)
        fmt = "onnx-int8" if precision == "int8" else format_for_backend(backend)
        exported = "fp16" if precision == "fp16" else "fp32"
        key = self.key(fmt, exported)
        if key in self._failed:
            raise _ExportFailed(self._failed[key])
        folder = self.root / key
        if not self._usable(folder, fmt, exported):
            try:
                export(self.model, folder, formats=["onnx", fmt] if fmt == "onnx-int8" else [fmt],
                       image_size=self.image_size, precision=exported, force=True, verify=True)
            except Exception as e:  # any exporter failure is this case's status, not a crash
                self._failed[key] = str(e) if isinstance(e, VggbenchError) else one_line(e)
                raise _ExportFailed(self._failed[key]) from e
        return folder

    def _usable(self, folder: Path, fmt: str, precision: str) -> bool:
        try:
            m = read_manifest(folder)
            artifact(m, fmt, folder)  # every file against its sha256
        except VggbenchError:
            return False
        parity = m.get("parity") or []
        return (m["model"]["name"] == self.model.name and m["weights"]["state_sha256"] == self.weights_sha
                and m["input"]["image_size"] == self.image_size and m["precision"] == precision
                and bool(parity) and all(p["passed"] for p in parity))


def benchmark(suite: Suite | str | os.PathLike | None = None, *, export_cache: str | os.PathLike = DEFAULT_EXPORT_CACHE,
              progress: bool | None = None, raise_errors: bool = False, **overrides) -> BenchRun:
    """Time every case of a suite and return the run (settings, environment, one row per case).

    suite: a Suite, a suite name (vggbench/suites/, then ./benchmarks/suites/) or a TOML path; None is
    the default suite of the device (cpu or cuda). overrides: any Suite field, e.g. models=["vgg11"],
    batch_sizes=[1, 8], min_time_s=1.0; they replace the suite's values.
    progress: a progress bar on stderr (None: only on a terminal).
    raise_errors: re-raise unexpected errors instead of recording them as "error" rows (for debugging).
    """
    suite = resolve_suite(suite, **overrides)
    check_device(suite.device)
    started = time.perf_counter()
    with scoped_numerics(suite.threads, tf32_flag(suite.device, suite.tf32), suite.cudnn_benchmark):
        environment = capture()
        environment["native_kernels"] = native.describe()  # the winograd backend's C++ transforms
        environment["gemm_peaks"] = _peaks(suite)
        sweep = _Sweep(suite, Path(export_cache), environment, progress, raise_errors)
        interrupted = False
        try:
            sweep.run()
        except KeyboardInterrupt:
            interrupted = True
    settings = {**suite.to_dict(), "export_cache": str(export_cache)}
    if interrupted:
        settings["interrupted"] = f"Ctrl-C after {len(sweep.results)} of {suite.case_count()} cases"
    run = BenchRun(settings, environment, sweep.results, time.perf_counter() - started, environment["created"])
    if interrupted:
        raise BenchmarkInterrupted(run)
    return run


def _peaks(suite: Suite) -> list[dict]:
    """One GEMM per precision that has a runnable case (amp on a CPU, say, has none)."""
    runnable = []
    for _, backend, precision, memory_format, _ in suite.groups():
        try:
            check_supported(backend, suite.device, precision, memory_format)
        except UnsupportedError:
            continue
        if precision not in runnable:
            runnable.append(precision)
    return [p for p in (measure_peak(suite.device, precision) for precision in runnable) if p]


class _Sweep:
    def __init__(self, suite: Suite, export_cache: Path, environment: dict, progress, raise_errors: bool) -> None:
        self.suite, self.export_cache, self.raise_errors = suite, export_cache, raise_errors
        self.peaks = {p["precision"]: p["gflops_per_s"] for p in environment["gemm_peaks"]}
        self.threads = torch.get_num_threads()
        self.tf32 = bool(tf32_flag(suite.device, suite.tf32))  # fp32 on CUDA with TF32 math: judged as such
        self.ort = OrtSettings(threads=self.threads, optimization=suite.ort_optimization,
                               cudnn_conv_algo_search=suite.cudnn_conv_algo_search, tf32=self.tf32)
        self.progress = progress
        self.results: list[BenchResult] = []

    def run(self) -> list[BenchResult]:
        from tqdm import tqdm

        groups = self.suite.groups()
        with tqdm(total=self.suite.case_count(), unit="case", desc="vggbench run", disable=_disabled(self.progress),
                  dynamic_ncols=True) as self.bar:
            for name in dict.fromkeys(g[0] for g in groups):
                self._model(name, [g[1:] for g in groups if g[0] == name])
        return self.results

    def _case(self, model: str, backend: str, precision: str, memory_format: str, batch_size: int) -> Case:
        s = self.suite
        seed = f" (seed {s.seed})" if s.weights == "random" else ""
        return Case(model=model, image_size=s.image_size, batch_size=batch_size, backend=backend, device=s.device,
                    precision=precision, memory_format=memory_format, threads=self.threads, weights=s.weights + seed,
                    warmup=max(s.warmup, COMPILE_MIN_WARMUP) if backend == "compile" else s.warmup,
                    warmup_time_s=s.warmup_time_s, min_time_s=s.min_time_s, min_iters=s.min_iters,
                    max_iters=s.max_iters, compile_mode=s.compile_mode if backend == "compile" else None,
                    compile_options={"freezing": True} if backend == "compile" and s.compile_freezing else None,
                    ort_settings=self.ort.to_dict() if BACKENDS[backend].artifact == "onnx" else None)

    def _model(self, name: str, groups: list) -> None:
        s = self.suite
        self.bar.set_postfix_str(f"loading {name}")
        loaded = load_model(name, s.weights, seed=s.seed, **s.model_options())
        self.gmacs = profile(loaded.spec, loaded.options, s.image_size).gmacs
        self.cache = ExportCache(self.export_cache, loaded, s.image_size) if any(
            BACKENDS[g[0]].artifact for g in groups) else None
        self.loaded, self.reference, self.batches, self.expected = loaded, eager_runner(loaded.module), {}, {}
        for backend, precision, memory_format, sizes in groups:
            cases = [self._case(name, backend, precision, memory_format, b) for b in sizes]
            self._group(cases)
        del self.loaded, self.reference, self.batches, self.expected, self.cache

    def _group(self, cases: list[Case]) -> None:
        """Build one runner and time it at every batch size."""
        c = cases[0]
        self.bar.set_postfix_str(f"{c.model} {c.backend} {c.precision} {c.memory_format}: preparing")
        runner, load_ms = None, None
        try:
            check_supported(c.backend, c.device, c.precision, c.memory_format)
            export_dir = self.cache.folder(c.backend, c.precision) if BACKENDS[c.backend].artifact else None
            started = time.perf_counter()
            runner = make_runner(c.backend, self.loaded, export_dir=export_dir, device=c.device, precision=c.precision,
                                 memory_format=c.memory_format, settings=self.ort, compile_mode=c.compile_mode,
                                 compile_options=c.compile_options)
            load_ms = (time.perf_counter() - started) * 1e3
        except Exception as e:  # recorded as rows; re-raised on request
            status, reason = self._failure(e, building=True)
            self._record([BenchResult.failed(case, status, reason) for case in cases])
        if runner is not None:
            self._time_sizes(runner, cases, load_ms)
        del runner
        if c.backend == "compile":
            torch._dynamo.reset()  # drop this runner's graphs, so later ones do not hit the recompile limit
        free_memory(c.device)

    def _time_sizes(self, runner, cases: list[Case], load_ms: float) -> None:
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

    def _time(self, runner, case: Case, load_ms: float) -> BenchResult:
        self.bar.set_postfix_str(f"{case.model} {case.backend} {case.precision} {case.memory_format} "
                                 f"batch {case.batch_size}")
        batch = self._batch(case.batch_size)
        parity: dict = {}
        reference = (case.backend, case.device, case.precision, case.memory_format) == \
            ("eager", "cpu", "fp32", "contiguous")

        def check(out) -> None:
            if reference:
                return
            k = min(PARITY_IMAGES, case.batch_size)
            got = runner.to_tensor(out)[:k]
            result = compare(self._expected(case.batch_size), got, tolerance_for(case.precision, tf32=self.tf32),
                             backend=case.backend, device=case.device, precision=case.precision,
                             memory_format=case.memory_format, inputs=f"benchmark batch, first {k}")
            parity["max_abs"] = result.max_abs
            # int8 is judged by class agreement on real images (done when its export was verified); on
            # random noise its top-1 says nothing, so here it is only recorded
            if not result.passed and case.precision != "int8":
                raise _ParityMismatch(f"output differs from eager fp32: {result.reason}")

        try:
            m = measure(runner, batch, case.timing, on_first_output=check)
            notes = runner.notes(batch) if hasattr(runner, "notes") else ""
            row = BenchResult.measured(case, m, gmacs_per_image=self.gmacs,
                                       peak_gflops_per_s=self.peaks.get(case.precision), load_ms=load_ms,
                                       parity_max_abs=parity.get("max_abs"), notes=notes)
        except Exception as e:  # recorded as a row; re-raised on request
            status, reason = self._failure(e)
            row = BenchResult.failed(case, status, reason, load_ms=load_ms, parity_max_abs=parity.get("max_abs"))
        if row.status == "oom":
            free_memory(case.device)
        self._record([row])
        return row

    def _failure(self, error: Exception, building: bool = False) -> tuple[str, str]:
        if isinstance(error, _ExportFailed):
            return "export_failed", str(error)
        if isinstance(error, _ParityMismatch):
            return "parity_failed", str(error)
        if is_oom(error):
            return "oom", one_line(error)
        if isinstance(error, UnsupportedError):
            return "unsupported", str(error)
        if isinstance(error, (CheckFailed, VggbenchError)) and building:
            return "export_failed", str(error)  # e.g. an export folder whose files were changed
        if self.raise_errors:
            raise error
        return "error", one_line(error)

    def _record(self, rows: list[BenchResult]) -> None:
        self.results += rows
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
