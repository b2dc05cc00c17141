"""One preparation for every measuring engine (`vggbench run`'s sweep, `vggbench loadgen`, and whatever times a
runner next): per model, the model loaded once (its dense form when the suite asks), its export cache, the eager
fp32 reference and its GMACs; per (backend, precision, memory format[, backend settings]) group, the cases, the
runner built through the export cache and its load time, with parity judged against eager fp32 by one function
and every failure classified by one function. A group comes out either as a `PreparedRunner` or as a `Failure`
that makes the group's rows."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..backends import Runner, Target, eager_runner, make_runner
from ..backends.registry import get_backend
from ..core.device import Device
from ..core.errors import CheckFailed, UnsupportedError, VggbenchError, one_line
from ..core.numerics import tf32_flag
from ..core.timing import free_memory, is_oom
from ..parity.metrics import compare, tolerance_for
from ..zoo.dense import dense_gmacs, dense_model, min_dense_size
from ..zoo.profiling import profile
from ..zoo.weights import LoadedModel, WeightsSource, load_model
from .cache import ExportCache, ExportFailed
from .rows import BenchResult, Case
from .setup import BackendSetup
from .suite import Suite

PARITY_IMAGES = 2  # a runner's first output is compared with eager fp32 on the CPU for this many images
DENSE_DEFAULT_SIZE = 224  # the paper's training crop: where a dense form of random weights equals the model
# judged by class agreement on many real images (when their export is verified, and by loadgen's accuracy
# mode): the top-1 of a few images, random ones above all, says nothing of that, so their difference is recorded
QUANTIZED = ("int8", "fp8")


class ParityMismatch(Exception):
    """A runner's first output is not eager fp32's (or eager fp32's own is not finite): status parity_failed."""

    def __init__(self, reason: str, max_abs: float | None = None) -> None:
        super().__init__(reason)
        self.max_abs = max_abs


def classify(error: Exception, *, building: bool = False, raise_errors: bool = False) -> tuple[str, str]:
    """A failure's (status, reason). building: it happened while the runner was made, where a check that
    failed (an export folder whose files were changed) is the export's failure. raise_errors: an error that is
    none of vggbench's own is re-raised instead (for debugging)."""
    if isinstance(error, ExportFailed):
        return "export_failed", str(error)
    if isinstance(error, ParityMismatch):
        return "parity_failed", str(error)
    if is_oom(error):
        return "oom", one_line(error)
    if isinstance(error, UnsupportedError):
        return "unsupported", str(error)
    if isinstance(error, (CheckFailed, VggbenchError)) and building:
        return "export_failed", str(error)
    if isinstance(error, VggbenchError):  # e.g. weights that do not fit one of the models
        return "error", str(error)
    if raise_errors:
        raise error
    return "error", one_line(error)


@dataclass(frozen=True)
class Failure:
    """Why a model or a group cannot be measured: the status and reason its rows carry."""

    status: str
    reason: str

    def row(self, case: Case, **fields) -> BenchResult:
        return BenchResult.failed(case, self.status, self.reason, **fields)

    def rows(self, cases: Iterable[Case], **fields) -> list[BenchResult]:
        return [self.row(case, **fields) for case in cases]


def judge_parity(runner: Runner, output, images: torch.Tensor, expected: torch.Tensor | None, case: Case, *,
                 tf32: bool, source: str) -> float | None:
    """The max abs difference of `output` (the runner's on `images`) from eager fp32 on its first
    PARITY_IMAGES images, `expected`; None for the reference itself, whose own output must be finite.
    ParityMismatch (carrying the difference) when eager fp32 is not finite, or when they differ beyond the
    precision's tolerance, except for QUANTIZED precisions, whose difference is only recorded."""
    k = min(PARITY_IMAGES, len(images))
    got = runner.to_tensor(output)[:k]
    if runner.target.is_reference:
        expected = got
    if not torch.isfinite(expected).all():
        raise ParityMismatch("the reference (eager fp32) output has NaN/Inf: check the weights")
    if runner.target.is_reference:
        return None
    result = compare(expected, got, tolerance_for(case.precision, tf32=tf32), backend=case.backend,
                     device=case.device, precision=case.precision, memory_format=case.memory_format,
                     inputs=f"{source}, first {k}")
    if not result.passed and case.precision not in QUANTIZED:
        raise ParityMismatch(f"output differs from eager fp32: {result.reason}", result.max_abs)
    return result.max_abs


@dataclass
class PreparedModel:
    """A model ready for its groups: what module backends run (`subject`: the model, or its dense form), the
    eager fp32 reference of it, its GMACs per image, its export cache and a note for its rows."""

    loaded: LoadedModel
    subject: object  # the LoadedModel, or the dense form's module
    reference: Runner
    gmacs: float
    cache: ExportCache
    note: str = ""  # "dense form, equal to the model at N" for a dense subject
    _expected: dict = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.loaded.name

    def expected(self, images: torch.Tensor, source: str) -> torch.Tensor:
        """Eager fp32 CPU logits of the first PARITY_IMAGES of `images`, made once per (source, count): a source
        names the same images for every group of the model."""
        key = source, len(images)
        if key not in self._expected:
            self._expected[key] = self.reference(images[:PARITY_IMAGES])
        return self._expected[key]


@dataclass
class PreparedRunner:
    """A group's runner, built and timed: with its model, its cases (one per batch size for a sweep) and the
    parity of the last output judged."""

    runner: Runner | None
    model: PreparedModel
    cases: list[Case]
    load_ms: float
    tf32: bool
    parity_max_abs: float | None = None

    @property
    def case(self) -> Case:
        return self.cases[0]

    @property
    def reference(self) -> Runner:
        return self.model.reference

    @property
    def gmacs(self) -> float:
        return self.model.gmacs

    def notes(self, batch: torch.Tensor) -> str:
        """What its rows say: the model's note, then what the backend chose for this batch."""
        return "; ".join(n for n in (self.model.note, self.runner.notes(batch)) if n)

    def judge(self, output, images: torch.Tensor, case: Case | None = None, *, source: str) -> float | None:
        """judge_parity of the runner's `output` on `images` (for `case`, else the group's first), kept in
        parity_max_abs, also when it raises."""
        case = case or self.case
        self.parity_max_abs = None
        expected = None if self.runner.target.is_reference else self.model.expected(images, source)
        try:
            self.parity_max_abs = judge_parity(self.runner, output, images, expected, case, tf32=self.tf32,
                                               source=source)
        except ParityMismatch as e:
            self.parity_max_abs = e.max_abs
            raise
        return self.parity_max_abs

    def check(self, images: torch.Tensor, *, source: str) -> float | None:
        """Run the first PARITY_IMAGES of `images` and judge them (before anything is timed)."""
        x = images[:PARITY_IMAGES]
        return self.judge(self.runner.run(self.runner.prepare(x)), x, source=source)

    def close(self) -> None:
        """Drop the runner and give back what its backend holds."""
        device, self.runner = self.runner.device, None
        _release(self.case.backend, device)


class Preparation:
    """How one run prepares its models and groups: the suite, its device, weights and export cache, and the
    backend settings for this process's thread count and TF32 flag.

    raise_errors: re-raise errors that are none of vggbench's own instead of making them "error" failures.
    """

    def __init__(self, suite: Suite, device: Device, weights: WeightsSource, export_cache: str | os.PathLike, *,
                 raise_errors: bool = False, max_batch: int | None = None) -> None:
        self.suite, self.device, self.weights = suite, device, weights
        self.export_cache, self.raise_errors = Path(export_cache), raise_errors
        self.threads = torch.get_num_threads()
        self.tf32 = bool(tf32_flag(device, suite.tf32))  # fp32 on CUDA with TF32 math: judged as such
        # max_batch: the largest batch a runner will be given, where not the suite's batch sizes (LoadGen's SUT)
        self.setup = BackendSetup(suite, self.threads, self.tf32, max_batch)

    def case(self, model: str, backend: str, precision: str, memory_format: str, batch_size: int,
             target: Target | Exception, settings=None, **timing) -> Case:
        """A case of the suite; `timing` replaces the suite's timing fields (warmup, warmup_time_s, min_time_s,
        min_iters, max_iters) where the caller times otherwise. settings: the group's backend settings (None: the
        suite's)."""
        s = self.suite
        fields = dict(warmup=max(s.warmup, get_backend(backend).min_warmup), warmup_time_s=s.warmup_time_s,
                      min_time_s=s.min_time_s, min_iters=s.min_iters, max_iters=s.max_iters)
        return Case(model=model, image_size=s.image_size, batch_size=batch_size, backend=backend,
                    device=str(self.device), precision=precision, memory_format=memory_format, threads=self.threads,
                    weights=self.weights.label, **{**fields, **timing},
                    **self.setup.case_fields(backend, target, settings))

    def model(self, name: str, *, dense: bool | None = None) -> PreparedModel | Failure:
        """The model, loaded once for its groups; a Failure when it cannot load or its dense form cannot take
        the suite's image size. dense: None follows the suite."""
        s = self.suite
        try:
            loaded = load_model(name, self.weights, **s.model_options())
        except Exception as e:  # weights that do not fit this model: its cases are rows, the other models run
            failure = self.failure(e)
            return Failure(failure.status, f"model not loaded: {failure.reason}")
        subject, note, dense_size = loaded, "", None
        if s.dense if dense is None else dense:
            dense_size = s.dense_size or loaded.weights.image_size or DENSE_DEFAULT_SIZE
            subject = dense_model(loaded.module, dense_size).eval()
            lowest = min_dense_size(subject.features, dense_size)
            if s.image_size < lowest:
                return Failure("unsupported", f"the dense form of {name} made at {dense_size} takes inputs of at "
                                              f"least {lowest}, not {s.image_size}")
            gmacs = dense_gmacs(subject, s.image_size, s.image_size)
            note = f"dense form, equal to the model at {dense_size}"
        else:
            gmacs = profile(loaded.spec, loaded.options, s.image_size).gmacs
        cache = ExportCache(self.export_cache, loaded, s.image_size, dense_size=dense_size)
        return PreparedModel(loaded, subject, eager_runner(getattr(subject, "module", subject)), gmacs, cache, note)

    def runner(self, model: PreparedModel, target: Target | UnsupportedError, cases: list[Case], *,
               parity_images: torch.Tensor | None = None, parity_source: str = "") -> PreparedRunner | Failure:
        """The group's runner, built (through the export cache for artifact backends) and its load timed; with
        `parity_images`, its output on their first PARITY_IMAGES judged now (else the caller judges the first
        output it makes, with PreparedRunner.judge). A Failure, its backend's resources given back, when the
        target cannot run, the export or the runner cannot be made, or the parity check fails."""
        c = cases[0]
        try:
            if isinstance(target, UnsupportedError):
                raise target
            export_dir = model.cache.folder(target, self.setup.case_settings(c, target)) if target.artifact else None
            started = time.perf_counter()
            options = self.setup.runner_options(c, target, model.loaded)
            runner = make_runner(target, model.subject, export_dir=export_dir, options=options)
            load_ms = (time.perf_counter() - started) * 1e3
        except Exception as e:  # the group's rows; re-raised on request
            failure = self.failure(e, building=True)
            _release(c.backend, self.device)
            return failure
        prepared = PreparedRunner(runner, model, cases, load_ms, self.tf32)
        if parity_images is not None:
            try:
                prepared.check(parity_images, source=parity_source)
            except Exception as e:
                failure = self.failure(e)
                prepared.close()
                return failure
        return prepared

    def failure(self, error: Exception, building: bool = False) -> Failure:
        """classify(), with this run's raise_errors."""
        return Failure(*classify(error, building=building, raise_errors=self.raise_errors))


def _release(backend: str, device: Device) -> None:
    close = get_backend(backend).close
    if close is not None:
        close()
    free_memory(device)
