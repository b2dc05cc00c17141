"""Interleaved rounds (suite.rounds) and process isolation (suite.isolation) in vggbench.bench.sweep: the order
cases run in, the samples and rounds rows keep, the out-of-memory back-off across rounds, rows from worker
processes, and workers that die."""

from __future__ import annotations

import functools
import multiprocessing
import sys
from dataclasses import fields
from types import SimpleNamespace

import pytest

import vggbench
import vggbench.backends
import vggbench.bench.prepare as prepare
import vggbench.bench.sweep as sweep
import vggbench.core.errors
from tests.conftest import TINY, TINY_IMAGE, FakeRunner
from vggbench.bench.rows import BenchResult, Case
from vggbench.core.errors import ConfigError
from vggbench.core.timing import Timing, round_timing

# one timed call a round (min_iters = max_iters = rounds), no warm-up calls: the order of calls is exact
EXACT = dict(warmup=0, warmup_time_s=0.0, min_time_s=0.0)
TINY_SUITE = dict(models=["vgg11"], image_size=TINY_IMAGE, memory_formats=["contiguous"], **TINY, **EXACT)


@pytest.fixture(autouse=True)
def no_gemm_peak(monkeypatch):
    """The run's GEMM ceilings are not what these tests are about: seconds saved per run."""
    monkeypatch.setattr(sweep, "measure_peak", lambda device, precision: None)


class Log(list):
    """The calls in order; oom_from: backend -> the batch size its runner runs out of memory from."""

    oom_from: dict


@pytest.fixture
def calls(monkeypatch):
    """Every runner is a FakeRunner that logs (backend, batch size) of each call in one list, with ("make",
    backend) when a runner is built and ("close", backend) when it is given back."""
    log = Log()

    class Logged(FakeRunner):
        def run(self, x):
            log.append((self.target.backend, x.shape[0]))
            return super().run(x)

    def make(target, model, **kwargs):
        log.append(("make", target.backend))
        return Logged(model.module, target, oom_from=oom_from.get(target.backend))

    real_close = prepare.PreparedRunner.close

    def close(self):
        log.append(("close", self.case.backend))
        real_close(self)

    log.oom_from = oom_from = {}
    monkeypatch.setattr(sweep, "REWARM_S", 0.0)  # a later round opens with exactly one untimed call
    monkeypatch.setattr(prepare, "make_runner", make)
    monkeypatch.setattr(prepare.ExportCache, "folder", lambda self, target, settings=None: None)
    monkeypatch.setattr(prepare.PreparedRunner, "close", close)
    return log


def run(tmp_path, **kwargs):
    return vggbench.benchmark(export_cache=tmp_path, progress=False, **{**TINY_SUITE, **kwargs})


def test_rounds_run_round_robin_and_rows_keep_each_samples_round(tmp_path, calls):
    result = run(tmp_path, backends=["eager", "torchscript"], batch_sizes=[1, 2], rounds=3, min_iters=3, max_iters=3)
    cases = [(b, n) for b in ("eager", "torchscript") for n in (1, 2)]
    # round 1: the first call and one timed; a later round: one untimed call and one timed
    one_round = [c for case in cases for c in [case] * 2]
    # every runner built first; each given back as soon as its last round is done
    assert calls == [("make", "eager"), ("make", "torchscript"), *one_round, *one_round, *one_round[:4],
                     ("close", "eager"), *one_round[4:], ("close", "torchscript")]
    assert [(r.backend, r.batch_size, r.status) for r in result.results] == [(*c, "ok") for c in cases]
    for row in result.results:
        assert row.rounds == 3 and row.sample_rounds == (1, 2, 3) and row.iterations == len(row.samples_ms) == 3
        assert row.isolation == "none" and row.warmup_calls == 2
    assert result.results[2].parity_max_abs is not None  # parity judged on the first output, kept to the end
    # a round times one call at least: no more rounds than max_iters
    (row,) = run(tmp_path, backends=["eager"], batch_sizes=[1], rounds=5, min_iters=1, max_iters=2).results
    assert (row.rounds, row.sample_rounds) == (2, (1, 2))


def test_one_round_is_the_sweep_as_before(tmp_path, calls):
    result = run(tmp_path, backends=["eager", "torchscript"], batch_sizes=[1, 2], rounds=1, min_iters=2, max_iters=2)
    assert calls == [("make", "eager"), *[("eager", 1)] * 3, *[("eager", 2)] * 3, ("close", "eager"),
                     ("make", "torchscript"), *[("torchscript", 1)] * 3, *[("torchscript", 2)] * 3,
                     ("close", "torchscript")]
    for row in result.results:
        assert (row.rounds, row.sample_rounds, row.isolation, row.iterations) == (1, (), "none", 2)


def test_an_oom_in_round_1_is_not_tried_again_nor_larger_batches(tmp_path, calls):
    calls.oom_from["torchscript"] = 2
    result = run(tmp_path, backends=["torchscript", "eager"], batch_sizes=[1, 2, 4], rounds=3, min_iters=3,
                 max_iters=3)
    rows = {(r.backend, r.batch_size): r for r in result.results}
    assert rows["torchscript", 2].status == "oom" and "out of memory" in rows["torchscript", 2].reason
    assert rows["torchscript", 4].reason == "not tried: batch 2 ran out of memory; the largest that fitted was 1"
    assert calls.count(("torchscript", 2)) == 1 and ("torchscript", 4) not in calls
    assert rows["torchscript", 1].sample_rounds == (1, 2, 3)
    assert all(rows["eager", b].status == "ok" for b in (1, 2, 4))


def test_a_group_whose_cases_all_failed_in_round_1_is_given_back_then_and_rows_keep_the_suites_order(tmp_path,
                                                                                                    calls):
    calls.oom_from["torchscript"] = 1
    result = run(tmp_path, backends=["eager", "torchscript"], batch_sizes=[1, 2], rounds=2, min_iters=2, max_iters=2)
    assert calls[calls.index(("torchscript", 1)) + 1] == ("close", "torchscript")  # batch 2 not tried
    assert calls[-3:] == [("eager", 2), ("eager", 2), ("close", "eager")]  # eager's round 2 came after
    # torchscript's rows were made first, yet the run lists them in the suite's order
    assert [(r.backend, r.status) for r in result.results] == [("eager", "ok")] * 2 + [("torchscript", "oom")] * 2


def test_round_budgets_add_up_and_rounds_are_checked():
    assert round_timing(Timing(min_time_s=3.0, min_iters=5, max_iters=1000), 3) == (2, 1.0, 333)
    assert round_timing(Timing(min_time_s=0, min_iters=1, max_iters=2), 2) == (1, 0.0, 1)
    with pytest.raises(ConfigError, match="rounds must be at least 1"):
        vggbench.Suite().override(rounds=0)
    with pytest.raises(ConfigError, match="isolation"):
        vggbench.Suite().override(isolation="thread")


def test_ctrl_c_between_rounds_keeps_the_finished_rows(tmp_path, calls, monkeypatch):
    real = sweep._Sweep._round

    def interrupted_in_round_2(self, prepared, state, round, back_off):
        if round == 2 and state.case.batch_size == 2:
            raise KeyboardInterrupt
        return real(self, prepared, state, round, back_off)
    monkeypatch.setattr(sweep._Sweep, "_round", interrupted_in_round_2)
    with pytest.raises(vggbench.core.errors.BenchmarkInterrupted) as caught:
        run(tmp_path, backends=["eager"], batch_sizes=[1, 2], rounds=2, min_iters=2, max_iters=2)
    assert [(r.batch_size, r.sample_rounds) for r in caught.value.run.results] == [(1, (1, 2))]


# --- rounds until narrow (--max-rounds) ------------------------------------------------------------------------

def _narrow_after(rounds_by_batch):
    """A stand-in for _Sweep._narrow: a case is narrow once it has run the rounds given for its batch size."""
    def narrow(self, state):
        return len(set(state.session.sample_rounds)) >= rounds_by_batch[state.case.batch_size]
    return narrow


def test_cases_go_on_a_round_at_a_time_until_narrow_and_no_further_than_max_rounds(tmp_path, calls, monkeypatch):
    monkeypatch.setattr(sweep._Sweep, "_narrow", _narrow_after({1: 4, 2: 99}))
    result = run(tmp_path, backends=["eager"], batch_sizes=[1, 2], rounds=3, max_rounds=6, min_iters=3,
                 max_iters=100)
    rows = {r.batch_size: r for r in result.results}
    # batch 1 was narrow after its 4th round; batch 2 never, so it stopped at the bound
    assert (rows[1].rounds, rows[1].sample_rounds) == (4, (1, 2, 3, 4))
    assert (rows[2].rounds, rows[2].sample_rounds) == (6, (1, 2, 3, 4, 5, 6))
    # still in turn while both go on (one untimed call and one timed a round), then batch 2 alone
    both = [("eager", 1)] * 2 + [("eager", 2)] * 2
    assert calls[-(2 * len(both) + 2 * 2 + 1):] == [*both, *both, ("eager", 2), ("eager", 2), ("eager", 2),
                                                    ("eager", 2), ("close", "eager")]
    assert all(r.status == "ok" and r.iterations == len(r.samples_ms) for r in result.results)


def test_without_max_rounds_a_case_stops_at_its_rounds_whatever_its_width(tmp_path, calls, monkeypatch):
    monkeypatch.setattr(sweep._Sweep, "_narrow", _narrow_after({1: 99}))
    (row,) = run(tmp_path, backends=["eager"], batch_sizes=[1], rounds=3, min_iters=3, max_iters=100).results
    assert (row.rounds, row.sample_rounds) == (3, (1, 2, 3))
    # max_rounds with rounds 1: the case is timed in rounds (one at first), not in one go
    (row,) = run(tmp_path, backends=["eager"], batch_sizes=[1], rounds=1, max_rounds=3, min_iters=1,
                 max_iters=100).results
    assert (row.rounds, row.sample_rounds) == (3, (1, 2, 3))


def test_a_cross_checked_case_runs_its_tool_after_every_round_it_adds(tmp_path, calls, monkeypatch):
    monkeypatch.setattr(sweep._Sweep, "_narrow", _narrow_after({1: 4}))
    runs = []

    def tool_run(row, prepared, suite, share=1):
        runs.append(share)
        return {"tool": "t", "command": ["t"], "images_per_s": 1e3 / row.median_ms, "median_ms": row.median_ms,
                "seconds": 0.1}
    monkeypatch.setattr(sweep, "tool_run", tool_run)
    (row,) = run(tmp_path, backends=["eager"], batch_sizes=[1], rounds=2, max_rounds=6, min_iters=2, max_iters=100,
                 cross_check=True).results
    assert row.rounds == 4
    # after each of the 2 rounds, each with half the budget, then after each added round with the same share
    assert runs == [2, 2, 2, 2]
    assert [r["after_round"] for r in row.cross_check["runs"]] == [1, 2, 3, 4]
    assert "ratio_low" in row.cross_check


def _state(rounds_ms, tool=(), batch=1):
    """A case after its rounds (ms per call, one list a round) and its tool's runs (images/s, or an error)."""
    samples = [v for values in rounds_ms for v in values]
    order = [k for k, values in enumerate(rounds_ms, 1) for _ in values]
    runs = [{"tool": "t", "error": t} if isinstance(t, str) else
            {"tool": "t", "images_per_s": t, "median_ms": batch / t * 1e3, "seconds": 1.0} for t in tool]
    case = Case(model="vgg11", image_size=32, batch_size=batch, backend="eager", device="cpu", precision="fp32",
                memory_format="contiguous", threads=1, weights="random (seed 0)", warmup=0, warmup_time_s=0.0,
                min_time_s=0.0, min_iters=1, max_iters=100)
    return sweep._InRounds(case, SimpleNamespace(samples_ms=samples, sample_rounds=order), tool_runs=runs)


def test_narrow_judges_the_interval_of_whole_rounds_on_its_width_alone():
    judge = SimpleNamespace(suite=vggbench.Suite(target_width=0.025))
    narrow = functools.partial(sweep._Sweep._narrow, judge)
    steady = [[100.0, 100.5, 99.5]] * 5
    drifting = [[v * f for v in (100.0, 100.5, 99.5)] for f in (0.8, 1.0, 1.25, 0.9, 1.1)]
    tool = (10.0, 10.05, 9.95, 10.02, 9.98)
    assert narrow(_state(steady, tool))
    # each round steady within, the rounds apart: one by one the calls would look sure; by round, not
    assert not narrow(_state(drifting, tool))
    # a steady tool far from the row is as narrow: going on never depends on the ratio's value
    assert narrow(_state(steady, tuple(v * 0.7 for v in tool)))
    # a tool that spreads widens the ratio's interval, though the row is steady
    assert not narrow(_state(steady, (8.0, 10.0, 12.5, 9.0, 11.0)))
    # without a tool, or with one that failed, the row's own interval decides (more rounds cannot mend the tool)
    assert narrow(_state(steady)) and narrow(_state(steady, (10.0, "it crashed")))
    assert not narrow(_state(drifting)) and not narrow(_state(drifting, (10.0, "it crashed")))
    # one round cannot say how far the rounds spread
    assert not narrow(_state([[100.0] * 9], tool[:1]))
    # the target is the suite's
    assert functools.partial(sweep._Sweep._narrow, SimpleNamespace(suite=vggbench.Suite(target_width=0.5)))(
        _state(drifting, tool))


def test_max_rounds_and_target_width_are_checked():
    with pytest.raises(ConfigError, match=r"max_rounds \(3\) must be at least rounds \(5\)"):
        vggbench.benchmark(models=["vgg11"], rounds=5, max_rounds=3)
    for bad in (0, 1, -0.1):
        with pytest.raises(ConfigError, match="target_width"):
            vggbench.Suite().override(target_width=bad)
    with pytest.raises(ConfigError, match="max_rounds"):
        vggbench.Suite().override(max_rounds=0)


# --- isolation -----------------------------------------------------------------------------------------------

DIES = '''
"""exits, killed and hangs: eager, until a batch of 2 or more ends its process (os._exit(3), SIGKILL) or never
returns; ooms: runs out of memory at a batch of 2 or more; pids: eager. Their notes say the process's torch threads
and its pid."""

import os
import signal
import time

import torch

from .registry import Backend, register
from .runner import TorchRunner, place


class DyingRunner(TorchRunner):
    how = ""

    def run(self, prepared):
        if self.how == "ooms" and prepared.shape[0] >= 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        if prepared.shape[0] >= 2 and self.how in ("exits", "killed", "hangs"):
            if self.how == "exits":
                os._exit(3)
            if self.how == "killed":
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(3600)
        return super().run(prepared)

    def notes(self, batch):
        return f"threads {torch.get_num_threads()} pid {os.getpid()}"


def factory(how):
    def make(module, target, options=None):
        runner = DyingRunner(place(module, target), target)
        runner.how = how
        return runner
    return make


for how in ("exits", "killed", "hangs", "ooms", "pids"):
    register(Backend(how, None, ("cpu",), ("fp32",), ("contiguous",), factory(how)))
'''


@pytest.fixture
def dying(tmp_path, monkeypatch):
    """Backends registered at run time by a module of the package's path (as a plugin would be), so that only the
    path and the module's name tell a worker process of them."""
    import vggbench.backends.registry as registry

    folder = tmp_path / "package"
    folder.mkdir()
    (folder / "dies.py").write_text(DIES)
    monkeypatch.setattr(vggbench.backends, "__path__", [*vggbench.backends.__path__, str(folder)])
    registry._load()
    backends, aliases = dict(registry._BACKENDS), dict(registry._ALIASES)
    __import__("vggbench.backends.dies")
    yield
    registry._BACKENDS.clear()
    registry._BACKENDS.update(backends)
    registry._ALIASES.clear()
    registry._ALIASES.update(aliases)
    sys.modules.pop("vggbench.backends.dies", None)
    vars(vggbench.backends).pop("dies", None)


TIMINGS = {"timer", "warmup_calls", "first_call_ms", "median_ms", "mean_ms", "p90_ms", "p99_ms", "iqr_ms", "min_ms", "max_ms",
           "std_ms", "noisy", "images_per_s", "gflops_per_s", "peak_gflops_per_s", "peak_pct", "gemm_gflops_per_s",
           "theoretical_gflops_per_s", "theoretical_pct", "peak_memory_mib", "rss_delta_mib", "load_ms",
           "samples_ms", "median_ci_low_ms", "median_ci_high_ms", "load", "under_load", "cross_check",
           "parity_max_abs", "faults_per_call", "kernel_pct"}


def test_rows_from_worker_processes_match_the_rows_made_here(tmp_path):
    settings = dict(backends=["eager"], memory_formats=["contiguous", "channels_last"], batch_sizes=[1, 2],
                    min_iters=2, max_iters=2, threads=1)
    here = run(tmp_path, **settings).results
    there = run(tmp_path, isolation="process", **settings).results
    assert multiprocessing.active_children() == []
    assert len(here) == len(there) == 4
    for a, b in zip(here, there, strict=True):
        assert a.status == b.status == "ok"
        assert (a.isolation, b.isolation) == ("none", "process") and a.rounds == b.rounds == 2  # max_iters 2
        differ = {f.name for f in fields(BenchResult) if getattr(a, f.name) != getattr(b, f.name)}
        assert differ <= TIMINGS | {"isolation"}, differ
        assert b.parity_max_abs == pytest.approx(a.parity_max_abs, abs=1e-6) if a.parity_max_abs else \
            b.parity_max_abs is None


def test_a_worker_that_dies_is_an_error_row_and_the_next_group_runs(tmp_path, dying):
    result = run(tmp_path, backends=["exits", "killed", "eager"], batch_sizes=[1, 2, 4], min_iters=1, max_iters=1,
                 threads=1, isolation="process")
    rows = {(r.backend, r.batch_size): r for r in result.results}
    assert len(rows) == 9 and {r.isolation for r in result.results} == {"process"}
    assert rows["exits", 1].status == rows["killed", 1].status == "ok"  # sent before the worker died
    assert rows["exits", 1].notes.startswith("threads 1 pid ")  # the worker took the suite's threads
    for size in (2, 4):
        assert rows["exits", size].status == rows["killed", size].status == "error"
        assert rows["exits", size].reason == ("the worker process exited with code 3 before its cases were done "
                                              "during: vgg11 exits fp32 contiguous batch 2")
        assert rows["killed", size].reason.startswith("the worker process was killed by signal 9 (SIGKILL) during")
    assert all(rows["eager", b].status == "ok" for b in (1, 2, 4))
    assert multiprocessing.active_children() == []


def test_isolation_case_times_each_batch_size_in_its_own_worker_and_backs_off_after_an_oom(tmp_path, dying):
    import os

    def pids(result) -> list[str]:
        return [r.notes.split(" pid ")[1] for r in result.results if r.backend == "pids"]

    settings = dict(backends=["ooms", "pids"], batch_sizes=[1, 2, 4], min_iters=1, max_iters=1, threads=1)
    grouped, alone = run(tmp_path, isolation="process", **settings), run(tmp_path, isolation="case", **settings)
    assert multiprocessing.active_children() == []
    assert {r.isolation for r in alone.results} == {"case"}
    for result in (grouped, alone):
        rows = {(r.backend, r.batch_size): r for r in result.results}
        assert rows["ooms", 1].status == "ok" and rows["ooms", 2].status == "oom"
        # batch 4 is not tried after batch 2 ran out of memory, whether it would have had a worker of its own or not
        assert rows["ooms", 4].status == "oom" and rows["ooms", 4].reason.startswith("not tried: batch 2 ran out")
        assert all(rows["pids", b].status == "ok" for b in (1, 2, 4))
    assert len(set(pids(grouped))) == 1 and len(set(pids(alone))) == 3  # one worker a group; one a case
    assert str(os.getpid()) not in pids(grouped) + pids(alone)


def test_isolation_case_a_worker_that_dies_takes_only_its_own_case(tmp_path, dying):
    # a runner that ends its process at batch 2 or more: with a worker a case, batch 4 is tried in its own (and
    # ends it too), where a group's worker died at batch 2 before batch 4 was reached
    settings = dict(backends=["exits"], batch_sizes=[1, 2, 4], min_iters=1, max_iters=1, threads=1)
    for isolation, died_at_4 in (("process", "batch 2"), ("case", "batch 4")):
        rows = {r.batch_size: r for r in run(tmp_path, isolation=isolation, **settings).results}
        assert rows[1].status == "ok" and rows[2].status == rows[4].status == "error"
        assert rows[4].reason == ("the worker process exited with code 3 before its cases were done during: vgg11 "
                                  f"exits fp32 contiguous {died_at_4}")


def test_a_case_waits_for_the_host_before_its_first_call_once(tmp_path, monkeypatch):
    # settle_until (set by an isolated worker's parent) holds back the first case's first call, in one go or in
    # rounds, and only that case's; its row's load says how long
    import time

    slept = []
    monkeypatch.setattr(sweep, "_sleep", lambda s: slept.append(s))
    assert sweep._Sweep._settle(SimpleNamespace(settle_until=None)) == 0.0
    assert sweep._Sweep._settle(SimpleNamespace(settle_until=time.time() - 5)) == 0.0 and slept == []
    state = SimpleNamespace(settle_until=time.time() + 12)
    assert 11.0 <= sweep._Sweep._settle(state) <= 12.0 and state.settle_until is None and len(slept) == 1
    real = sweep._Sweep.__init__

    def held_back(self, *args, **kwargs):
        real(self, *args, **kwargs)
        self.settle_until = time.time() + 30

    monkeypatch.setattr(sweep._Sweep, "__init__", held_back)
    for rounds in (1, 2):
        slept.clear()
        first, second = run(tmp_path, backends=["eager"], batch_sizes=[1, 2], rounds=rounds, min_iters=2,
                            max_iters=2).results
        assert len(slept) == 1 and 29.0 <= slept[0] <= 30.0
        assert first.load["settled_s"] == round(slept[0], 1) and "settled_s" not in second.load


def _echo_settle(conn, settle_until=None, **job) -> None:
    """A worker's body for the test below: says what it was told to wait for."""
    conn.send({"status": f"settle_until {settle_until}"})


def test_an_isolated_workers_memory_sets_when_the_next_one_may_call(monkeypatch):
    import time

    import vggbench.bench.isolation as isolation
    import vggbench.core.load as load

    seen, statuses = [], []
    monkeypatch.setattr(load, "settle_time_s", lambda peak, reporting: seen.append(peak) or 9.0)
    fake = SimpleNamespace(plan={("vgg11", "eager", "fp32", "contiguous"): None}, ceilings=None,
                           prep=SimpleNamespace(export_cache="/nowhere", raise_errors=False),
                           suite=SimpleNamespace(worker_timeout_s=None),
                           bar=SimpleNamespace(set_postfix_str=statuses.append), settle_until=123.5)
    group = ("eager", "fp32", "contiguous", (1,), {})
    isolation.run_group(fake, "vgg11", group, [], _echo_settle)
    assert statuses == ["settle_until 123.5"]  # the job carried the parent's
    assert len(seen) == 1 and seen[0] > 0  # the worker's memory, read while it ran
    assert time.time() + 8 <= fake.settle_until <= time.time() + 9
    assert multiprocessing.active_children() == []


@pytest.mark.slow
def test_a_worker_past_its_timeout_is_killed_and_its_cases_are_rows(tmp_path, dying):
    result = run(tmp_path, backends=["hangs"], batch_sizes=[1, 2], min_iters=1, max_iters=1, isolation="process",
                 worker_timeout_s=20)
    ok, hung = result.results
    assert ok.status == "ok" and hung.status == "error"
    assert hung.reason == ("the worker process was still running after 20 s (worker_timeout_s) and was killed "
                           "during: vgg11 hangs fp32 contiguous batch 2")


def test_ctrl_c_stops_the_worker_and_keeps_its_rows(tmp_path, dying, monkeypatch):
    real = sweep._Sweep._record

    def interrupt_after_the_first_row(self, rows):
        real(self, rows)
        if self.results:
            raise KeyboardInterrupt
    monkeypatch.setattr(sweep._Sweep, "_record", interrupt_after_the_first_row)
    with pytest.raises(vggbench.core.errors.BenchmarkInterrupted) as caught:
        run(tmp_path, backends=["hangs"], batch_sizes=[1, 2], min_iters=1, max_iters=1, isolation="process")
    assert [(r.backend, r.batch_size, r.status) for r in caught.value.run.results] == [("hangs", 1, "ok")]
    assert multiprocessing.active_children() == []  # the worker, stuck at batch 2, is gone
