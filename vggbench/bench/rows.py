"""Result rows: a `Case` (everything that shapes a number) and the `BenchResult` it becomes, units in the
field names. The measuring itself is vggbench.core.timing."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.timing import Measurement, Timing
from .scenarios import SCENARIOS, VERDICTS  # noqa: F401  (the names a ScenarioResult takes)

STATUSES = ("ok", "unsupported", "oom", "export_failed", "parity_failed", "error")


@dataclass(frozen=True)
class Case:
    """One thing to time, with every setting that shapes the number; all of it lands in the result row."""

    model: str
    image_size: int
    batch_size: int
    backend: str
    device: str
    precision: str
    memory_format: str
    threads: int  # torch intra-op threads, also given to onnxruntime
    weights: str
    # how it is measured
    warmup: int
    warmup_time_s: float
    min_time_s: float
    min_iters: int
    max_iters: int
    # the backend's settings (its settings class's fields, the run's threads/TF32 filled in); None for a backend
    # without settings
    backend_settings: dict | None = None
    variant: str = ""  # what the settings set apart in tables: torch.compile's mode, onnxruntime's CUDA graphs

    @property
    def timing(self) -> Timing:
        return Timing(self.warmup, self.warmup_time_s, self.min_time_s, self.min_iters, self.max_iters)


@dataclass(frozen=True)
class BenchResult(Case):
    """One row of a run: the case, its status and, when it ran, its numbers (units in the names)."""

    status: str = "ok"  # one of STATUSES
    reason: str = ""  # why a case did not run or failed; "" when ok
    timer: str | None = None  # perf_counter | cuda_event
    iterations: int = 0
    warmup_calls: int = 0
    load_ms: float | None = None  # building the runner: export loading, onnxruntime session, module copy
    first_call_ms: float | None = None
    median_ms: float | None = None
    mean_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    iqr_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    std_ms: float | None = None
    # the median's 95% interval reaches more than 5% from it, or the row ran under load (before issue 27: iqr_ms
    # > 10% of median_ms, still the rule for a row without samples)
    noisy: bool | None = None
    images_per_s: float | None = None  # batch_size / median
    gmacs_per_image: float | None = None
    gflops_per_s: float | None = None  # 2 x MACs x images_per_s
    # the measured ceiling of this device and precision: the best of the run's GEMM shapes and of all its rows
    # (vggbench.bench.peak.Ceilings), so that peak_pct is at most 100
    peak_gflops_per_s: float | None = None
    peak_pct: float | None = None  # gflops_per_s / peak_gflops_per_s x 100
    gemm_gflops_per_s: float | None = None  # the best GEMM shape alone (what peak_gflops_per_s was before)
    theoretical_gflops_per_s: float | None = None  # datasheet (GPU) or cores x clock x FLOPs/cycle (CPU)
    theoretical_pct: float | None = None  # gflops_per_s / theoretical_gflops_per_s x 100
    peak_memory_mib: float | None = None  # CUDA max allocated
    rss_delta_mib: float | None = None  # CPU: peak RSS growth during the case
    # over its timed calls (vggbench.core.allocator): page faults a call, whole process, and the kernel's share of
    # the CPU time; torch's CPU paths fault on fresh activation memory, the runtimes with arenas hardly at all
    faults_per_call: float | None = None
    kernel_pct: float | None = None
    parity_max_abs: float | None = None  # first output vs eager fp32 on the same images; None for the reference
    notes: str = ""  # what the backend chose for this case (winograd: each conv's and Linear's algorithm)
    # a LoadGen scenario's row (`vggbench loadgen`): a ScenarioResult as a dict; None for rows of `vggbench run`.
    # Its latencies are also in median_ms/p90_ms/p99_ms/..., its throughput in images_per_s; batch_size is the
    # SUT's largest batch, min_time_s/min_iters LoadGen's minimum duration and query count
    scenario: dict | None = None
    # how sure (issue 27): the 95% confidence interval of median_ms (distribution-free, from the order statistics
    # of samples_ms), and of images_per_s from it; noisy is judged from its width and the load
    median_ci_low_ms: float | None = None
    median_ci_high_ms: float | None = None
    # the load it ran under (vggbench.core.load): CPU pressure, load average and the busiest other processes,
    # sampled as it started and as it ended; under_load when they say the machine was busy meanwhile
    load: dict | None = None
    under_load: bool | None = None
    rounds: int = 1  # its timed calls were split into this many rounds, run in turn with the other cases'
    isolation: str = "none"  # "process": built and measured in a fresh worker process with its group; "case": alone
    # the same artifact timed by the runtime's own tool in a fresh process (benchmark_app, a bare onnxruntime
    # session, torch.utils.benchmark, trtexec): tool, command, images_per_s, ratio (this row's / the tool's)
    cross_check: dict | None = None
    samples_ms: tuple[float, ...] = ()
    sample_rounds: tuple[int, ...] = ()  # the round of each of samples_ms (empty: one round)
    # `--cluster` (vggbench.bench.fleet): the machine kind whose node ran the case, and that node (its Ray id, host,
    # CPU, versions, the attempt and the case's start and end as Unix times there); None for a run on this machine
    machine: str | None = None
    node: dict | None = None

    @classmethod
    def failed(cls, case: Case, status: str, reason: str, **extra) -> BenchResult:
        if status not in STATUSES or status == "ok":
            raise ValueError(f"not a failure status: {status!r}")
        return cls(**_fields(case), status=status, reason=reason, **extra)

    @classmethod
    def measured(cls, case: Case, m: Measurement, *, gmacs_per_image: float | None,
                 peak_gflops_per_s: float | None, status: str = "ok", reason: str = "", **extra) -> BenchResult:
        images_per_s = case.batch_size / (m.stats.median_ms / 1e3) if m.stats.median_ms > 0 else None
        gflops = 2 * gmacs_per_image * images_per_s if gmacs_per_image is not None and images_per_s else None
        pct = gflops / peak_gflops_per_s * 100 if gflops is not None and peak_gflops_per_s else None
        stats = m.stats.to_dict()
        stats["noisy"] = stats["noisy"] or extra.get("under_load") is True
        return cls(**_fields(case), status=status, reason=reason, timer=m.timer, iterations=len(m.stats.samples_ms),
                   warmup_calls=m.warmup_calls, first_call_ms=m.first_call_ms, **stats,
                   images_per_s=images_per_s, gmacs_per_image=gmacs_per_image, gflops_per_s=gflops,
                   peak_gflops_per_s=peak_gflops_per_s, peak_pct=pct, peak_memory_mib=m.peak_memory_mib,
                   rss_delta_mib=m.rss_delta_mib, faults_per_call=m.faults_per_call, kernel_pct=m.kernel_pct,
                   samples_ms=m.stats.samples_ms, **extra)


@dataclass(frozen=True)
class ScenarioResult:
    """What LoadGen reported for one scenario (its mlperf_log_summary.txt, parsed), with the SUT's and the
    search's settings: the `scenario` block of a result row. Latencies in ms, as LoadGen's percentiles."""

    name: str  # one of SCENARIOS
    mode: str  # performance | accuracy | both
    result: str | None = None  # LoadGen's verdict, VALID or INVALID; None for an accuracy run alone
    reasons: tuple[str, ...] = ()  # why INVALID: the constraints not met, LoadGen's recommendations
    early_stopping: tuple[str, ...] = ()  # LoadGen's early-stopping lines
    metric: str | None = None  # the scenario's headline number: p90_ms, p99_ms or samples_per_s
    samples_per_s: float | None = None  # completed samples per second (multistream: samples per query / mean)
    target_qps: float | None = None  # server: the scheduled rate of the run reported; offline: the expected one
    latency_bound_ms: float | None = None  # server: the p99 bound
    early_stopping_ms: float | None = None  # LoadGen's early-stopping estimate of the scenario's percentile
    p50_ms: float | None = None
    p90_ms: float | None = None
    p95_ms: float | None = None
    p97_ms: float | None = None
    p99_ms: float | None = None
    p99_9_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    mean_ms: float | None = None
    queries: int | None = None
    samples_per_query: int | None = None
    min_duration_s: float | None = None
    min_queries: int | None = None
    errors: bool = False  # LoadGen logged errors (see the detail log)
    loadgen: str | None = None  # LoadGen's version
    logs: str | None = None  # the folder of LoadGen's logs, relative to the results file
    search: dict | None = None  # server: the QPS search (runs, what each found)
    accuracy: dict | None = None  # accuracy mode: top-1 against the labels, agreement with eager fp32
    sut: dict | None = None  # the SUT's batch policy and workers, and the batches it ran
    images: dict | None = None  # the query sample library: source, split, count


def _fields(case: Case) -> dict:
    """The Case part of a case or row (shallow: ort_settings stays the same dict)."""
    return {name: getattr(case, name) for name in Case.__dataclass_fields__}
