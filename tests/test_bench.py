"""The timing engine: stats over raw samples, warm-up and the adaptive loop on a fake clock, real sleeps,
agreement with torch.utils.benchmark, memory and OOM classification."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import TINY, TINY_IMAGE
from vggbench.backends import eager_runner
from vggbench.bench.rows import BenchResult, Case
from vggbench.core.device import CPU, Device
from vggbench.core.errors import ConfigError
from vggbench.core.timing import (
    CudaEventTimer,
    MemoryProbe,
    PerfCounterTimer,
    Stats,
    Timing,
    is_oom,
    measure,
    timer_for,
)
from vggbench.zoo.weights import load_model


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeRunner:
    """Each call 'takes' the next duration (seconds) on a fake clock: exact, deterministic samples."""

    device, precision, memory_format, name = CPU, "fp32", "contiguous", "fake"
    torch_stream = False

    def __init__(self, clock: FakeClock, durations) -> None:
        self.clock, self.durations, self.calls = clock, durations, 0

    def prepare(self, batch):
        return batch

    def run(self, prepared):
        self.clock.now += self.durations(self.calls)
        self.calls += 1
        return prepared

    def synchronize(self) -> None:
        pass


class SleepRunner(FakeRunner):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def run(self, prepared):
        time.sleep(self.seconds)
        return prepared


BATCH = torch.zeros(1)
STEP = 1 / 64  # exact in binary floating point, so that sums of it are exact


def fake_measure(durations, timing: Timing):
    clock = FakeClock()
    runner = FakeRunner(clock, durations)
    return measure(runner, BATCH, timing, clock=clock), runner


# --- Stats ---------------------------------------------------------------------------------------------

@given(st.lists(st.floats(0.001, 1e4, allow_nan=False), min_size=1, max_size=200))
def test_stats_agree_with_numpy_on_the_raw_samples(samples):
    s = Stats(tuple(samples))
    a = np.array(samples)
    assert s.samples_ms == tuple(samples)  # kept raw, in the order they were taken
    assert s.median_ms == pytest.approx(np.median(a))
    assert s.p90_ms == pytest.approx(np.percentile(a, 90))
    assert s.p99_ms == pytest.approx(np.percentile(a, 99))
    assert s.iqr_ms == pytest.approx(np.percentile(a, 75) - np.percentile(a, 25), abs=1e-9)
    assert s.mean_ms == pytest.approx(a.mean())
    assert s.std_ms == pytest.approx(a.std(ddof=1) if len(a) > 1 else 0.0, abs=1e-9)
    assert s.min_ms == a.min() and s.max_ms == a.max()
    assert s.min_ms <= s.median_ms <= s.p90_ms <= s.p99_ms <= s.max_ms


def test_noisy_flag_is_the_medians_interval_beyond_five_percent():
    # five samples: the interval is min..max
    assert not Stats((10.0, 10.2, 10.4, 10.6, 10.8)).noisy  # 10.0..10.8 around 10.4: 3.8%
    assert Stats((10.0, 9.0, 12.0, 8.0, 11.0)).noisy  # 8..12 around 10: 20%


def test_stats_need_samples():
    with pytest.raises(ValueError):
        Stats(())


# --- the loop, on a fake clock -------------------------------------------------------------------------

def test_first_call_warmup_and_budget_on_a_fake_clock():
    # first call 2 s (a compile, say), then 1/64 s a call
    m, runner = fake_measure(lambda i: 2.0 if i == 0 else STEP,
                             Timing(warmup=2, warmup_time_s=0.05, min_time_s=0.125, min_iters=3, max_iters=100))
    assert m.first_call_ms == 2000.0
    assert m.warmup_calls == 4  # 0.05 s / (1/64 s) = 3.2 -> 4 calls, more than the 2 asked for
    assert m.stats.samples_ms == (STEP * 1e3,) * 8  # 0.125 s / (1/64 s) = 8 calls fill the budget
    assert runner.calls == 1 + 4 + 8
    assert m.timer == "perf_counter"


@pytest.mark.parametrize("timing,expected", [
    (Timing(warmup=0, warmup_time_s=0, min_time_s=0.125, min_iters=1, max_iters=1000), 8),  # the budget
    (Timing(warmup=0, warmup_time_s=0, min_time_s=0.125, min_iters=20, max_iters=1000), 20),  # min_iters wins
    (Timing(warmup=0, warmup_time_s=0, min_time_s=0.125, min_iters=2, max_iters=5), 5),  # max_iters wins
    (Timing(warmup=3, warmup_time_s=0, min_time_s=0, min_iters=1, max_iters=5), 1),
])
def test_iteration_count_respects_budget_min_and_max(timing, expected):
    m, _ = fake_measure(lambda i: STEP, timing)
    assert len(m.stats.samples_ms) == expected
    assert m.warmup_calls == timing.warmup


def test_the_count_follows_the_calls_not_a_plan_from_the_warmup():
    # warm-up calls are fast, then calls get 16x slower: the loop stops when the budget is spent
    m, _ = fake_measure(lambda i: STEP if i < 5 else 16 * STEP,
                        Timing(warmup=4, warmup_time_s=0, min_time_s=1.0, min_iters=2, max_iters=1000))
    assert len(m.stats.samples_ms) == 4  # 4 x 0.25 s = the 1 s budget, not 64 calls planned at 1/64 s


def test_jittery_runner_is_noisy_and_steady_one_is_not():
    timing = Timing(warmup=1, warmup_time_s=0, min_time_s=0, min_iters=40, max_iters=40)
    jittery, _ = fake_measure(lambda i: 0.002 if i % 2 else 0.008, timing)
    steady, _ = fake_measure(lambda i: 0.005 + (i % 3) * 1e-5, timing)
    assert jittery.stats.noisy and not steady.stats.noisy


@pytest.mark.parametrize("kwargs", [dict(min_iters=0), dict(min_iters=10, max_iters=5), dict(min_time_s=-1),
                                    dict(warmup=-1)])
def test_bad_timing_is_a_config_error(kwargs):
    with pytest.raises(ConfigError):
        Timing(**kwargs)


def test_on_first_output_sees_the_first_output_and_can_stop_the_case():
    seen = []
    clock = FakeClock()
    runner = FakeRunner(clock, lambda i: STEP)
    measure(runner, torch.ones(2), Timing(0, 0, 0, 1, 1), on_first_output=seen.append, clock=clock)
    assert len(seen) == 1 and torch.equal(seen[0], torch.ones(2))

    def stop(out):
        raise RuntimeError("wrong output")
    with pytest.raises(RuntimeError, match="wrong output"):
        measure(FakeRunner(clock, lambda i: STEP), BATCH, Timing(), on_first_output=stop, clock=clock)


# --- real time -----------------------------------------------------------------------------------------

def test_known_sleep_times_are_measured():
    m = measure(SleepRunner(0.005), BATCH, Timing(warmup=2, warmup_time_s=0, min_time_s=0.15, min_iters=10,
                                                  max_iters=200))
    s = m.stats
    assert 5.0 <= s.median_ms <= 9.0  # sleep never returns early; a busy machine may add a few ms
    assert s.min_ms >= 5.0
    assert 10 <= len(s.samples_ms) <= 31  # 0.15 s of 5 ms calls (fewer when the machine is busy)
    assert s.min_ms <= s.median_ms <= s.p90_ms <= s.p99_ms <= s.max_ms


def test_statistics_agree_with_torch_utils_benchmark_on_its_own_samples():
    """The same raw samples give torch.utils.benchmark's median and IQR (no timing is compared: runs on a busy
    machine differ by more than any honest threshold)."""
    from torch.utils import benchmark as tub

    model = load_model("vgg11", **TINY)
    runner = eager_runner(model.module)
    prepared = runner.prepare(torch.randn(2, 3, TINY_IMAGE, TINY_IMAGE))
    timer = tub.Timer("run(x)", globals={"run": runner.run, "x": prepared}, num_threads=torch.get_num_threads())
    theirs = timer.blocked_autorange(min_run_time=0.2)
    ours = Stats(tuple(t * 1e3 for t in theirs.times))
    assert ours.median_ms == pytest.approx(theirs.median * 1e3, rel=1e-6)
    assert ours.percentile(75) - ours.percentile(25) == pytest.approx(theirs.iqr * 1e3, rel=1e-6)


# --- timers, memory, failures ----------------------------------------------------------------------------

def test_timer_is_chosen_once_per_device_and_runner():
    cpu = eager_runner(load_model("vgg11", **TINY).module)
    assert isinstance(timer_for(cpu), PerfCounterTimer)
    other = FakeRunner(FakeClock(), lambda i: 0)
    other.device = Device("cuda")  # a runner outside torch's streams gets a wall clock, even on CUDA
    assert isinstance(timer_for(other), PerfCounterTimer)


@pytest.mark.cuda
def test_cuda_events_time_torch_work_on_the_gpu():
    runner = eager_runner(load_model("vgg11", **TINY).module, device="cuda")
    assert isinstance(timer_for(runner), CudaEventTimer)
    m = measure(runner, torch.randn(4, 3, 32, 32), Timing(2, 0, 0.1, 5, 100))
    assert m.timer == "cuda_event" and m.peak_memory_mib > 0 and m.rss_delta_mib is None


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's resettable peak RSS")
def test_cpu_memory_probe_sees_a_temporary_allocation():
    import mmap

    probe = MemoryProbe(CPU)
    # 64 MiB of fresh pages, touched, then given back: mapped directly, since malloc may serve a block that size
    # from memory the process already holds (under the "steady" allocator policy a run in this worker has set)
    big = mmap.mmap(-1, 64 * 2**20)
    for offset in range(0, len(big), 4096):
        big[offset] = 1
    big.close()
    cuda_peak, rss_delta = probe.read()
    assert cuda_peak is None and rss_delta >= 48


@pytest.mark.parametrize("error,oom", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for requested buffer"), True),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1099511627776 bytes"), True),
    (RuntimeError("shape mismatch"), False),
])
def test_oom_is_recognised(error, oom):
    assert is_oom(error) is oom


def test_result_row_numbers_follow_from_the_samples():
    case = Case(model="vgg16", image_size=224, batch_size=8, backend="eager", device="cpu", precision="fp32",
                memory_format="contiguous", threads=2, weights="random", warmup=1, warmup_time_s=0, min_time_s=0,
                min_iters=3, max_iters=3)
    m, _ = fake_measure(lambda i: 0.5 if i % 3 else 2.0, case.timing)
    row = BenchResult.measured(case, m, gmacs_per_image=15.47, peak_gflops_per_s=100.0)
    assert row.median_ms == 500.0 and row.iterations == 3 and row.samples_ms == m.stats.samples_ms
    assert row.images_per_s == 8 / 0.5
    assert row.gflops_per_s == pytest.approx(2 * 15.47 * 16)
    assert row.peak_pct == pytest.approx(row.gflops_per_s)  # of 100 GFLOP/s
    assert row.status == "ok" and row.reason == ""
    failed = BenchResult.failed(case, "oom", "CUDA out of memory")
    assert failed.median_ms is None and failed.images_per_s is None and failed.samples_ms == ()
    with pytest.raises(ValueError):
        BenchResult.failed(case, "ok", "")
