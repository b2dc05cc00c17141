"""The timing engine: warm-up, an adaptive iteration count, one timer per device, statistics over the
raw samples, peak memory and OOM capture.

It times anything with `prepare`, `run`, `synchronize`, `device` (a `Device`) and `torch_stream` (a backend's
runner), or a bare call with a timer from `make_timer` (one layer of the winograd tuner), and knows nothing of
models, exports or suites: vggbench.bench decides what to time and turns measurements into result rows.
"""

from __future__ import annotations

import gc
import math
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .allocator import Usage
from .device import Device
from .errors import ConfigError

if TYPE_CHECKING:  # torch is imported where a case runs: `report` and `models` render rows without it
    import torch

CONFIDENCE = 0.95  # of the interval around each median
# a case is noisy when its median's 95% interval reaches more than 5% from the median on either side: its number
# cannot tell a 5% difference (report --compare's default threshold) from noise
NOISY_RELATIVE_CI = 0.05
NOISY_RELATIVE_IQR = 0.10  # the rule before the interval, still used for rows read back without their samples
_OOM_MESSAGE = re.compile(r"out of memory|failed to allocate memory|can't allocate memory", re.IGNORECASE)


@dataclass(frozen=True)
class Timing:
    """How long to warm up and how many calls to time. Every field is recorded with each result."""

    warmup: int = 1  # warm-up calls after the first call, at least...
    warmup_time_s: float = 1.0  # ...and for at least this long
    min_time_s: float = 3.0  # the timed loop's budget: calls go on until it is spent...
    min_iters: int = 5  # ...and at least this many were timed...
    max_iters: int = 1000  # ...but stop at this many

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.warmup_time_s < 0 or self.min_time_s < 0:
            raise ConfigError(f"warm-up and time budgets must not be negative ({self})")
        if not 1 <= self.min_iters <= self.max_iters:
            raise ConfigError(f"need 1 <= min_iters <= max_iters, got min_iters={self.min_iters}, "
                              f"max_iters={self.max_iters}")


def _percentile(ordered: tuple[float, ...], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method) of sorted samples."""
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median_ranks(n: int, confidence: float = CONFIDENCE) -> tuple[int, int, float]:
    """(low, high, coverage): the 1-based ranks of the order statistics that bound a distribution-free interval of
    the median of `n` independent samples, and the interval's exact coverage.

    The population median lies between the k-th smallest and the k-th largest sample unless at least n - k + 1
    samples fall on one side of it, so the coverage is 1 - 2 P(B <= k - 1) for B ~ Binomial(n, 1/2), whatever
    the distribution: k is the largest rank with a coverage of at least `confidence`. Below 6 samples no such k
    exists at 95% (5 samples: min..max covers 93.75%): then the widest there is, min..max, with its coverage."""
    if n < 1:
        raise ValueError("need at least one sample")
    alpha = (1 - confidence) / 2
    # the lower tail beyond 6 standard deviations is below 1e-9: start there, so that long runs cost O(sqrt n)
    k = max(0, math.floor(n / 2 - 3 * math.sqrt(n)))
    tail = 0.0
    log_half = n * math.log(2)
    while k < n:
        mass = math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - log_half)
        if tail + mass > alpha:
            break
        tail += mass
        k += 1
    if k == 0:  # even min..max falls short of `confidence`
        return 1, n, 1 - 2 * 0.5 ** n if n > 1 else 0.0
    return k, n + 1 - k, 1 - 2 * tail


@dataclass(frozen=True)
class MedianInterval:
    """A confidence interval of a median from its samples' order statistics (see median_ranks)."""

    low_ms: float
    high_ms: float
    coverage: float  # exact, distribution-free: at least CONFIDENCE, below it for fewer than 6 samples

    @property
    def reached(self) -> bool:
        """Whether the interval has the confidence asked for (False: too few samples, min..max instead)."""
        return self.coverage >= CONFIDENCE


@dataclass(frozen=True)
class Stats:
    """Statistics of per-call times in milliseconds; keeps the raw samples, computes the rest lazily."""

    samples_ms: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.samples_ms:
            raise ValueError("Stats needs at least one sample")

    @cached_property
    def _sorted(self) -> tuple[float, ...]:
        return tuple(sorted(self.samples_ms))

    def percentile(self, q: float) -> float:
        return _percentile(self._sorted, q)

    @property
    def median_ms(self) -> float:
        return self.percentile(50)

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.samples_ms)

    @property
    def p90_ms(self) -> float:
        return self.percentile(90)

    @property
    def p99_ms(self) -> float:
        return self.percentile(99)

    @property
    def iqr_ms(self) -> float:
        return self.percentile(75) - self.percentile(25)

    @property
    def min_ms(self) -> float:
        return self._sorted[0]

    @property
    def max_ms(self) -> float:
        return self._sorted[-1]

    @property
    def std_ms(self) -> float:
        return statistics.stdev(self.samples_ms) if len(self.samples_ms) > 1 else 0.0

    @cached_property
    def median_interval(self) -> MedianInterval:
        """The 95% confidence interval of the median: distribution-free, so that the skewed, multi-modal times of a
        shared machine need no assumed shape. It treats the samples as independent; calls that slow down together
        (a neighbour busy for a while) make it narrower than it should be, which is what the load record and the
        interleaved rounds are for."""
        low, high, coverage = median_ranks(len(self._sorted))
        return MedianInterval(self._sorted[low - 1], self._sorted[high - 1], coverage)

    @property
    def noisy(self) -> bool:
        """The median's interval reaches more than NOISY_RELATIVE_CI from it on either side."""
        return is_wide(self.median_ms, self.median_interval.low_ms, self.median_interval.high_ms)

    def to_dict(self) -> dict:
        return {"median_ms": self.median_ms, "mean_ms": self.mean_ms, "p90_ms": self.p90_ms, "p99_ms": self.p99_ms,
                "iqr_ms": self.iqr_ms, "min_ms": self.min_ms, "max_ms": self.max_ms, "std_ms": self.std_ms,
                "noisy": self.noisy, "median_ci_low_ms": self.median_interval.low_ms,
                "median_ci_high_ms": self.median_interval.high_ms}


def is_wide(median: float, low: float, high: float) -> bool:
    """Whether an interval [low, high] around `median` reaches more than NOISY_RELATIVE_CI from it on either side."""
    return max(median - low, high - median) > NOISY_RELATIVE_CI * abs(median)


# --- timers: chosen once per case -----------------------------------------------------------------------

class PerfCounterTimer:
    """Wall-clock time of one call, with the device synchronised before and after it."""

    name = "perf_counter"

    def __init__(self, synchronize: Callable[[], None], clock: Callable[[], float] = time.perf_counter) -> None:
        self._sync, self._clock = synchronize, clock

    def time_ms(self, fn: Callable[[], Any]) -> tuple[Any, float]:
        self._sync()
        start = self._clock()
        out = fn()
        self._sync()
        return out, (self._clock() - start) * 1e3


class CudaEventTimer:
    """GPU time of one call between two CUDA events on the current stream (no host launch jitter)."""

    name = "cuda_event"

    def __init__(self, device: Device) -> None:
        import torch

        self._stream = torch.cuda.current_stream(device.torch)
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def time_ms(self, fn: Callable[[], Any]) -> tuple[Any, float]:
        self._start.record(self._stream)
        out = fn()
        self._end.record(self._stream)
        self._end.synchronize()
        return out, self._start.elapsed_time(self._end)


def make_timer(device: Device, synchronize: Callable[[], None], torch_stream: bool = True,
               clock: Callable[[], float] = time.perf_counter):
    """CUDA events for torch work on a CUDA device; otherwise perf_counter around synchronised calls."""
    if device.is_cuda and torch_stream:
        return CudaEventTimer(device)
    return PerfCounterTimer(synchronize, clock)


def timer_for(runner, clock: Callable[[], float] = time.perf_counter):
    return make_timer(runner.device, runner.synchronize, runner.torch_stream, clock)


# --- memory --------------------------------------------------------------------------------------------

def _rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _reset_peak_rss() -> bool:
    """Linux: make the peak RSS (VmHWM) restart from the current RSS. False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class MemoryProbe:
    """Peak memory of one case. CUDA: torch's max allocated bytes (weights included; onnxruntime allocates
    outside torch, so none for it). CPU: how far the process's peak RSS rose above its RSS at the start."""

    def __init__(self, device: Device, torch_stream: bool = True) -> None:
        import torch

        self._device = device.torch
        self._cuda = device.is_cuda
        self._torch_stream = torch_stream
        if self._cuda:
            torch.cuda.reset_peak_memory_stats(self._device)
        else:
            self._start = _rss_bytes()
            self._hwm = _reset_peak_rss()

    def read(self) -> tuple[float | None, float | None]:
        """(peak_memory_mib, rss_delta_mib)."""
        if self._cuda:
            import torch

            return (torch.cuda.max_memory_allocated(self._device) / 2**20 if self._torch_stream else None), None
        peak = _peak_rss_bytes() if self._hwm else None
        # without a resettable high-water mark, the RSS now is a lower bound of the peak
        peak = max(peak or 0, _rss_bytes())
        return None, max(0, peak - self._start) / 2**20


# --- failures ------------------------------------------------------------------------------------------

def is_oom(error: BaseException) -> bool:
    """torch's OutOfMemoryError, or an allocator failure reported by onnxruntime or the CPU allocator."""
    import torch

    return isinstance(error, torch.OutOfMemoryError) or bool(_OOM_MESSAGE.search(str(error)))


def free_memory(device: Device) -> None:
    """Give cached memory back after a case (after an OOM, before the next one)."""
    gc.collect()
    if device.is_cuda:
        import torch

        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()


# --- timed loops --------------------------------------------------------------------------------------

def sample(fn: Callable[[], Any], timer, min_calls: int = 1, min_time_s: float = 0.0, max_calls: int | None = None,
           clock: Callable[[], float] = time.perf_counter) -> Stats:
    """Per-call times of `fn` by `timer` (see make_timer): calls go on until `min_time_s` of wall time is
    spent and at least `min_calls` were made, at most `max_calls` (None: no cap). The count adapts to the
    calls as they come. Outputs are dropped as soon as each call is timed."""
    if min_calls < 1 or (max_calls is not None and max_calls < min_calls):
        raise ValueError(f"need 1 <= min_calls <= max_calls, got {min_calls} and {max_calls}")
    samples: list[float] = []
    start = clock()
    while len(samples) < min_calls or (clock() - start < min_time_s
                                       and (max_calls is None or len(samples) < max_calls)):
        samples.append(timer.time_ms(fn)[1])
    return Stats(tuple(samples))


# --- one measurement -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Measurement:
    """What `measure` found for one runner on one batch."""

    stats: Stats
    first_call_ms: float  # the first call at this input shape: compilation, algorithm search, lazy init
    warmup_calls: int
    timer: str
    peak_memory_mib: float | None = None
    rss_delta_mib: float | None = None
    # over the timed calls, every thread of the process: page faults a call (fresh pages the kernel zeroed, see
    # vggbench.core.allocator) and the kernel's share of the CPU time
    faults_per_call: float | None = None
    kernel_pct: float | None = None


class Session:
    """One runner at one batch, past its first call: timed calls are taken from it in one or more rounds, so that
    rounds of several runners can run in turn (interleaved rounds), each round a `sample` of the same timer.
    `measure` is a session of one warm-up and one round.

    on_first_output: called with the first call's output (e.g. a parity check); it may raise to stop.
    clock: the wall clock (tests pass a fake one).
    """

    def __init__(self, runner, batch: torch.Tensor, *, on_first_output: Callable[[Any], None] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self._runner, self._clock = runner, clock
        self._prepared = runner.prepare(batch)
        self._timer = timer_for(runner, clock)
        self._probe = MemoryProbe(runner.device, runner.torch_stream)
        self._memory: tuple[float | None, float | None] | None = None
        self.warmup_calls = 0
        self.samples_ms: list[float] = []
        self.sample_rounds: list[int] = []
        self._usage: list[Usage] = []  # (start, end) of each round's timed calls
        out, self.first_call_ms = self._timer.time_ms(self._call)
        if on_first_output is not None:
            on_first_output(out)
        del out

    def _call(self):
        return self._runner.run(self._prepared)

    def warm_up(self, calls: int, time_s: float) -> int:
        """Untimed calls: at least `calls` of them and for at least `time_s`. Returns how many ran."""
        count, start = 0, self._clock()
        while count < calls or self._clock() - start < time_s:
            self._timer.time_ms(self._call)
            count += 1
        self.warmup_calls += count
        return count

    def sample(self, min_calls: int = 1, min_time_s: float = 0.0, max_calls: int | None = None,
               round: int = 1) -> Stats:
        """One round of timed calls (see `sample`), kept with the round's number."""
        start = Usage.now()
        stats = sample(self._call, self._timer, min_calls, min_time_s, max_calls, self._clock)
        self._usage += [start, Usage.now()]
        self.samples_ms += stats.samples_ms
        self.sample_rounds += [round] * len(stats.samples_ms)
        if self._memory is None:
            # the peak is read once, after the first call, the warm-up and the first round, where a runner
            # allocates; a later round reuses that memory, and another session started meanwhile restarts the
            # process's peak RSS
            self._memory = self._probe.read()
        return stats

    def measurement(self) -> Measurement:
        """Every sample so far (at least one round must have run)."""
        peak, rss = self._memory or (None, None)
        return Measurement(Stats(tuple(self.samples_ms)), self.first_call_ms, self.warmup_calls, self._timer.name,
                           peak, rss, **_usage(self._usage, len(self.samples_ms)))


def _usage(marks: list[Usage], calls: int) -> dict:
    """Faults a call and the kernel's share over the timed rounds alone (marks: each round's start and end)."""
    if not marks:
        return {}
    total = Usage(0.0, 0.0, 0, 0)
    for start, end in zip(marks[::2], marks[1::2], strict=True):
        total = Usage(total.user_s + end.user_s - start.user_s, total.system_s + end.system_s - start.system_s,
                      total.minor_faults + end.minor_faults - start.minor_faults,
                      total.major_faults + end.major_faults - start.major_faults)
    return total.since(Usage(0.0, 0.0, 0, 0), calls)


def measure(runner, batch: torch.Tensor, timing: Timing = Timing(), *,
            on_first_output: Callable[[Any], None] | None = None,
            clock: Callable[[], float] = time.perf_counter) -> Measurement:
    """Time `runner.run` on `batch`: a first call (timed on its own), warm-up calls (at least
    `timing.warmup` and `timing.warmup_time_s`), then timed calls until `timing.min_time_s` of wall time
    is spent and at least `timing.min_iters` were made, at most `timing.max_iters`. The count adapts to
    the calls as they come, not to a plan made from the warm-up: one fast or slow warm-up call would
    otherwise make the loop far too long or too short. `prepare` (device copy, dtype, memory format)
    runs once, untimed.

    on_first_output: called with the first call's output (e.g. a parity check); it may raise to stop.
    clock: the wall clock (tests pass a fake one).
    """
    session = Session(runner, batch, on_first_output=on_first_output, clock=clock)
    session.warm_up(timing.warmup, timing.warmup_time_s)
    session.sample(timing.min_iters, timing.min_time_s, timing.max_iters)
    return session.measurement()


def round_timing(timing: Timing, rounds: int) -> tuple[int, float, int]:
    """One round's share of a case's budget split in `rounds`: (min_calls, min_time_s, max_calls). The rounds
    together make at least min_iters calls and at most max_iters (but one call a round at least)."""
    min_calls = math.ceil(timing.min_iters / rounds)
    return min_calls, timing.min_time_s / rounds, max(min_calls, timing.max_iters // rounds)
