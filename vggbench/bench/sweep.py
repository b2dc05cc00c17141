"""`vggbench.benchmark`: run a suite. Each model and each runner per (backend, precision, memory format) is
prepared once (vggbench.bench.prepare: the export cache, the runner, parity with eager fp32, failures as rows);
this module times every batch size of a runner, backing off after an out-of-memory one, against the run's
ceilings: in one go per case, or in interleaved rounds (suite.rounds), in this process or in a worker process per
group (suite.isolation, vggbench.bench.isolation)."""

from __future__ import annotations

import functools
import os
import statistics
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch

from ..backends import Target, resolve_target
from ..backends.registry import environment as backend_environment
from ..backends.registry import get_backend
from ..core import allocator
from ..core.device import Device, cpu_bf16_instructions, require_device
from ..core.env import capture
from ..core.errors import BenchmarkInterrupted, Terminated, UnsupportedError
from ..core.load import LoadSampler, host_takes_freed_memory, load_block, run_load, wait_for_quiet
from ..core.numerics import scoped_numerics, tf32_flag
from ..core.timing import Session, free_memory, measure, round_timing
from ..data.inputs import random_batch
from ..zoo.weights import WeightsSource, parse_weights
from .cache import DEFAULT_EXPORT_CACHE
from .confidence import clustered_images, half_width
from .crosscheck import by_round, chunk_rounds, combine, cross_check, tool_run
from .peak import Ceilings, measure_peak, theoretical_peak
from .prepare import Failure, Preparation, PreparedModel, PreparedRunner
from .results import BenchRun, Journal
from .rows import BenchResult, Case
from .suite import Suite, resolve_suite


def benchmark(suite: Suite | str | os.PathLike | None = None, *, export_cache: str | os.PathLike = DEFAULT_EXPORT_CACHE,
              progress: bool | None = None, raise_errors: bool = False, journal: Journal | None = None,
              require_quiet: float | None = None, **overrides) -> BenchRun:
    """Time every case of a suite and return the run (settings, environment, one row per case).

    suite: a Suite, a suite name (vggbench/bench/suites/, then ./benchmarks/suites/) or a TOML path; None is
    the default suite of the device (cpu or cuda). overrides: any Suite field, e.g. models=["vgg11"],
    batch_sizes=[1, 8], min_time_s=1.0; they replace the suite's values.
    progress: a progress bar on stderr (None: only on a terminal).
    raise_errors: re-raise unexpected errors instead of recording them as "error" rows (for debugging).
    journal: where each finished case is appended as it is measured (vggbench.bench.results.claim_results
    makes one), so that a crash or a kill keeps it.
    require_quiet: wait up to this many seconds for a quiet machine before the first case (vggbench.core.load),
    then raise MachineBusy; None does not wait. Either way the load is sampled as each case starts and ends.
    """
    suite = resolve_suite(suite, **overrides)
    device = require_device(suite.device)
    weights = parse_weights(suite.weights, suite.seed).require()  # a missing file fails before any work
    plan = _plan(suite, device)
    sampler = LoadSampler()
    if require_quiet is not None:
        wait_for_quiet(require_quiet, sampler=sampler)
    started = time.perf_counter()
    with scoped_numerics(suite.threads, tf32_flag(device, suite.tf32), suite.cudnn_benchmark):
        environment = capture()
        environment["allocator"] = allocator.apply(suite.allocator)
        environment.update(backend_environment())  # e.g. native_kernels: the winograd backend's C++ transforms
        environment["load"] = {"start": sampler.sample()}
        environment["gemm_peaks"] = _peaks(plan, device)
        ceilings = Ceilings(environment["gemm_peaks"], _theoretical(plan, device, suite))
        settings = {**suite.to_dict(), "export_cache": str(export_cache)}
        if journal is not None:
            journal.start(settings, environment, environment["created"])
        sweep = _Sweep(suite, device, weights, plan, Path(export_cache), ceilings, progress, raise_errors,
                       journal, sampler)
        interrupted = None
        try:
            sweep.run()
        except KeyboardInterrupt as e:
            interrupted = "SIGTERM" if isinstance(e, Terminated) else "Ctrl-C"
        environment["load"] = run_load(environment["load"]["start"], sampler.sample(),
                                       [r.under_load for r in sweep.results])
        # whether the host takes back what a process frees: then a tool's or a worker's exit is waited out
        environment["load"]["free_page_reporting"] = host_takes_freed_memory()
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


# What opens each later round of a case, untimed: at least this many calls, for at least this long. Such a round
# follows the other runners' rounds, which took the caches (and let onnxruntime's threads sleep): on a tiny VGG11
# (benchmarks/README.md, "Interleaved rounds and process isolation") the first call after a switch took 3-5x the
# case's median at batch 1 and 1.1-1.3x at batch 8, and the calls after it stayed slow for 0.6-2 ms of calls (one
# untimed call was not enough). A VGG16 call lasts far longer than that, so it costs one call a round there.
REWARM_CALLS = 1
REWARM_S = 0.01


class _Sweep:
    def __init__(self, suite: Suite, device: Device, weights: WeightsSource, plan: dict, export_cache: Path,
                 ceilings: Ceilings, progress, raise_errors: bool, journal: Journal | None,
                 sampler: LoadSampler) -> None:
        self.suite, self.device, self.plan = suite, device, plan
        self.prep = Preparation(suite, device, weights, export_cache, raise_errors=raise_errors)
        self.ceilings = ceilings
        self.progress, self.journal = progress, journal
        self.load = sampler  # sampled as each case starts and ends: the load it ran under
        # a time.time() before which this process should not call a runner: the host is still taking back what the
        # previous worker freed (isolation: vggbench.bench.isolation sets it, _settle waits for it once)
        self.settle_until: float | None = None
        self.results: list[BenchResult] = []
        # a round times one call at least, so there are at most max_iters of them
        self.rounds = min(suite.rounds, suite.max_iters)
        # --max-rounds: how far a case may go on, a round at a time, until its interval is narrow (_narrow)
        self.max_rounds = max(self.rounds, min(suite.max_rounds or 0, suite.max_iters))

    def run(self) -> list[BenchResult]:
        from tqdm import tqdm

        groups = self.suite.groups()
        model = self._model if self.suite.isolation == "none" else self._isolated
        with tqdm(total=self.suite.case_count(), unit="case", desc="vggbench run", disable=_disabled(self.progress),
                  dynamic_ncols=True) as self.bar:
            for name in dict.fromkeys(g[0] for g in groups):
                model(name, [g[1:] for g in groups if g[0] == name])
        return self.results

    def _planned(self, name: str, groups: list) -> list[tuple[Target | UnsupportedError, list[Case]]]:
        """Each group's target and cases."""
        planned = []
        for backend, precision, memory_format, sizes, settings in groups:
            target = self.plan[name, backend, precision, memory_format]
            planned.append((target, [self.prep.case(name, backend, precision, memory_format, b, target, settings)
                                     for b in sizes]))
        return planned

    def _model(self, name: str, groups: list) -> None:
        planned = self._planned(name, groups)
        self.bar.set_postfix_str(f"loading {name}")
        model = self.prep.model(name)
        if isinstance(model, Failure):
            self._record([row for _, cases in planned for row in model.rows(cases)])
            return
        self.batches: dict[int, torch.Tensor] = {}
        if self.max_rounds == 1:
            for target, cases in planned:
                self._group(model, target, cases)
        else:
            start = len(self.results)
            self._interleaved(model, planned)
            # rows come as cases end (a failed group's first, the rest in the last round): the run lists them in
            # the suite's order, as one round does
            order = [case for _, cases in planned for case in cases]
            self.results[start:] = sorted(self.results[start:], key=lambda row: _position(row, order))
        del self.batches

    def _isolated(self, name: str, groups: list) -> None:
        """Each group (isolation "process"), or each case ("case"), built and timed in a fresh worker process
        (vggbench.bench.isolation); a group that cannot run here needs none."""
        from .isolation import run_group

        for group, (target, cases) in zip(groups, self._planned(name, groups), strict=True):
            if isinstance(target, UnsupportedError):
                self._record(self.prep.failure(target).rows(cases))
                continue
            if self.suite.isolation == "process":
                self.bar.set_postfix_str(f"{name} {' '.join(group[:3])}: starting a worker")
                run_group(self, name, group, cases, _group_in_worker)
                continue
            # a worker per batch size, backing off across them as the group's own worker would
            self._backing_off(cases, None, functools.partial(self._case_in_worker, run_group, name, group))

    def _case_in_worker(self, run_group, name: str, group: tuple, case: Case) -> str:
        """One case of the group alone in a fresh worker; its row's status."""
        self.bar.set_postfix_str(f"{name} {' '.join(group[:3])} batch {case.batch_size}: starting a worker")
        run_group(self, name, (*group[:3], (case.batch_size,), *group[4:]), [case], _group_in_worker)
        return self.results[-1].status  # run_group records a row for every case it is given

    def _group(self, model: PreparedModel, target: Target | UnsupportedError, cases: list[Case]) -> None:
        """Build one runner and time it at every batch size."""
        prepared = self._prepare(model, target, cases)
        if prepared is not None:
            self._time_sizes(prepared)
            prepared.close()

    def _prepare(self, model: PreparedModel, target: Target | UnsupportedError,
                 cases: list[Case]) -> PreparedRunner | None:
        """The group's runner, or None once its failure's rows are recorded."""
        c = cases[0]
        self.bar.set_postfix_str(f"{c.model} {c.backend} {c.precision} {c.memory_format}: preparing")
        prepared = self.prep.runner(model, target, cases)
        if isinstance(prepared, Failure):
            self._record(prepared.rows(cases))
            return None
        return prepared

    def _time_sizes(self, prepared: PreparedRunner) -> None:
        """Every batch size in turn, backing off after an out-of-memory one."""
        self._backing_off(prepared.cases, prepared.load_ms, lambda case: self._time(prepared, case).status)

    def _backing_off(self, cases: list[Case], load_ms: float | None, time_one) -> None:
        """Each case in turn through time_one(case), which records its row and gives its status; after an
        out-of-memory one, a case at least as large is recorded as oom without being tried (_BackOff)."""
        back_off = _BackOff()
        for case in cases:
            skipped = back_off.skip(case, load_ms)
            if skipped is not None:
                self._record([skipped])
                continue
            back_off.see(case, time_one(case))

    def _time(self, prepared: PreparedRunner, case: Case) -> BenchResult:
        self.bar.set_postfix_str(f"{case.model} {case.backend} {case.precision} {case.memory_format} "
                                 f"batch {case.batch_size}")
        prepared.parity_max_abs = None  # this batch's own, once its first output is judged
        settled = self._settle()
        start = self.load.sample()
        try:
            batch = self._batch(case.batch_size)  # allocating it can fail too (a batch beyond memory): a row
            m = measure(prepared.runner, batch, case.timing,
                        on_first_output=lambda out: prepared.judge(out, batch, case, source="benchmark batch"))
            row = self._measured(prepared, case, m, batch, prepared.parity_max_abs)
        except Exception as e:  # recorded as a row; re-raised on request
            row = self.prep.failure(e).row(case, load_ms=prepared.load_ms, parity_max_abs=prepared.parity_max_abs)
        block, under_load = load_block(start, self.load.sample())
        row = replace(row, load=block | ({"settled_s": settled} if settled else {}), under_load=under_load)
        if row.status == "oom":
            free_memory(self.device)
        if self.suite.cross_check:  # the runtime's own tool, in a fresh process; it never fails the row
            row = cross_check(row, prepared, self.suite)
        self._record([row])
        return row

    def _measured(self, prepared: PreparedRunner, case: Case, m, batch: torch.Tensor, parity_max_abs: float | None,
                  **extra) -> BenchResult:
        """A measured case's row, against the run's ceilings (which it may raise)."""
        row = BenchResult.measured(case, m, gmacs_per_image=prepared.gmacs, peak_gflops_per_s=None,
                                   load_ms=prepared.load_ms, parity_max_abs=parity_max_abs,
                                   notes=prepared.notes(batch), **extra)
        self.see(row)
        return replace(row, **self.ceilings.row_fields(case.device, case.precision, row.gflops_per_s,
                                                       _hardware_rate(case.backend)))

    def see(self, row: BenchResult) -> None:
        """Raise the run's ceilings to a measured row's rate (here, or a row a worker process sent)."""
        self.ceilings.see(row.device, row.precision, row.gflops_per_s,
                          f"{row.backend} {row.precision} {row.memory_format} batch {row.batch_size}",
                          _hardware_rate(row.backend))

    # --- interleaved rounds -----------------------------------------------------------------------------------

    def _interleaved(self, model: PreparedModel, planned: list) -> None:
        """Every group's runner first, then round k of every case in turn (A B C, A B C, ...), so that a
        neighbour busy for a while slows every case alike rather than the one or two it happens to meet. Round 1
        of a case is its first call (parity judged on it), its warm-up and its first share of the timed calls;
        the batch sizes of a group keep their order, so the out-of-memory back-off works as in one go. A group's
        runner is given back once its last case is done. Past the suite's rounds, the cases whose interval is not yet
        narrow go on in turn, a round at a time, up to --max-rounds (_narrow)."""
        groups = []
        for target, cases in planned:
            prepared = self._prepare(model, target, cases)
            if prepared is not None:
                groups.append((prepared, [_InRounds(case) for case in cases], _BackOff()))
        for round in range(1, self.max_rounds + 1):
            if all(state.done for _, states, _ in groups for state in states):
                break
            for prepared, states, back_off in groups:
                if prepared.runner is None:  # closed: every case done
                    continue
                for state in states:
                    if state.done:
                        continue
                    skipped = back_off.skip(state.case, prepared.load_ms) if round == 1 else None
                    if skipped is not None:
                        state.done = True
                        self._record([skipped])
                    else:
                        self._round(prepared, state, round, back_off)
                if all(state.done for state in states):
                    prepared.close()

    def _round(self, prepared: PreparedRunner, state: _InRounds, round: int, back_off: _BackOff) -> None:
        """One round of one case; its row once the last round (or a failure) ends it."""
        case, rounds = state.case, self.rounds
        of = f"{round}/{rounds}" if round <= rounds else f"{round} (of at most {self.max_rounds}, until narrow)"
        self.bar.set_postfix_str(f"{case.model} {case.backend} {case.precision} {case.memory_format} "
                                 f"batch {case.batch_size} round {of}")
        if state.session is None:
            state.settled_s = self._settle()
        start = self.load.sample()
        try:
            if state.session is None:
                prepared.parity_max_abs = None
                state.batch = batch = self._batch(case.batch_size)
                state.session = Session(prepared.runner, batch, on_first_output=lambda out: prepared.judge(
                    out, batch, case, source="benchmark batch"))
                state.parity_max_abs = prepared.parity_max_abs
                state.session.warm_up(case.warmup, case.warmup_time_s)
            else:
                state.session.warm_up(REWARM_CALLS, REWARM_S)
            state.session.sample(*round_timing(case.timing, rounds), round=round)
            state.loads.append(load_block(start, self.load.sample()))
            if self.suite.cross_check and (round in chunk_rounds(rounds) or round > rounds):
                # the tool after the rounds, in as many runs as it has places, so that it meets the machine the
                # rounds meet (crosscheck.chunk_rounds), and after each round added past them; the row's block is
                # made of them when its rounds are done
                state.tool_runs.append(tool_run(_pending(case, state.session, prepared.notes(state.batch)),
                                                prepared, self.suite, len(chunk_rounds(rounds))) | {"after_round": round})
            if round == 1:
                back_off.see(case, "ok")
            if round < rounds or (round < self.max_rounds and not self._narrow(state)):
                return
            row = self._measured(prepared, case, state.session.measurement(), state.batch, state.parity_max_abs,
                                 sample_rounds=tuple(state.session.sample_rounds))
        except Exception as e:  # recorded as a row; re-raised on request
            parity = prepared.parity_max_abs if state.session is None else state.parity_max_abs
            row = self.prep.failure(e).row(case, load_ms=prepared.load_ms, parity_max_abs=parity)
            if round == 1:
                back_off.see(case, row.status)
            state.loads.append(load_block(start, self.load.sample()))
        row = replace(row, **_rounds_load(state.loads, state.settled_s))
        state.done, state.session, state.batch = True, None, None
        if row.status == "oom":
            free_memory(self.device)
        if self.suite.cross_check:  # the runtime's own tool, in fresh processes; it never fails the row
            row = combine(row, state.tool_runs)
        self._record([row])

    def _settle(self) -> float:
        """Before a case's first call, once: wait out the rest of settle_until (the host taking back what the
        previous worker freed). The seconds waited, 0.0 for none."""
        until, self.settle_until = self.settle_until, None
        wait = 0.0 if until is None else until - time.time()
        if wait <= 0:
            return 0.0
        _sleep(wait)
        return round(wait, 1)

    def _narrow(self, state: _InRounds) -> bool:
        """Whether a case's 95% interval reaches no more than suite.target_width (relative, the larger side) from its
        value: the interval of its cross-check ratio as the row's block would record it so far (crosscheck.combine)
        where it has one, else that of its images/s; each a bootstrap of whole rounds, since calls within a round
        share the machine's state. The width alone decides, never the value, so that going on cannot pick a ratio
        it likes."""
        pending = _pending(state.case, state.session)
        row = replace(pending, images_per_s=pending.batch_size / (pending.median_ms / 1e3),
                      samples_ms=tuple(state.session.samples_ms), sample_rounds=tuple(state.session.sample_rounds))
        check = combine(row, state.tool_runs).cross_check or {}
        if "ratio_low" in check:
            value, interval = check["ratio"], (check["ratio_low"], check["ratio_high"])
        else:  # not cross-checked, or its tool failed: more rounds cannot narrow that, they can the row's own
            value, interval = row.images_per_s, clustered_images(list(by_round(row).values()), row.batch_size)
        return interval is not None and half_width(value, *interval) <= self.suite.target_width * value

    def _record(self, rows: list[BenchResult]) -> None:
        for row in rows:
            # how the run measured, on each of its rows (a row that never ran included): the rounds a row ran, more
            # than the suite's where it went on until narrow (--max-rounds)
            rounds = max(self.rounds, *row.sample_rounds) if row.sample_rounds else self.rounds
            if (row.rounds, row.isolation) != (rounds, self.suite.isolation):
                row = replace(row, rounds=rounds, isolation=self.suite.isolation)
            self.results.append(row)
            if self.journal is not None:
                self.journal.append(row)
        self.bar.update(len(rows))

    def _batch(self, batch_size: int) -> torch.Tensor:
        if batch_size not in self.batches:
            self.batches[batch_size] = random_batch(batch_size, self.suite.image_size, seed=0)
        return self.batches[batch_size]


def _sleep(seconds: float) -> None:  # _Sweep._settle's wait (tests replace it, not time.sleep, which others use)
    time.sleep(seconds)


@dataclass
class _InRounds:
    """A case timed in rounds: its session from its first round on, until it is done."""

    case: Case
    session: Session | None = None
    batch: torch.Tensor | None = None
    parity_max_abs: float | None = None
    done: bool = False
    loads: list = field(default_factory=list)  # each round's (load block, under_load)
    tool_runs: list = field(default_factory=list)  # --cross-check: the tool's runs between its rounds
    settled_s: float = 0.0  # what it waited for the host before its first call (_Sweep._settle)


def _pending(case: Case, session: Session, notes: str = "") -> BenchResult:
    """A case's row as its rounds go on, for the tool's command: its settings, the median so far and what the
    backend chose (winograd's plan, which the tool follows)."""
    return BenchResult(**{f.name: getattr(case, f.name) for f in fields(Case)},
                       median_ms=statistics.median(session.samples_ms), notes=notes)


def _rounds_load(loads: list, settled_s: float = 0.0) -> dict:
    """A case's load over its rounds: under load when any of its rounds was (a neighbour met in one round slowed
    that round's share of the samples); the block of the first round with the verdicts of each, and the wait for
    the host before its first call where there was one."""
    if not loads:
        return {}
    verdicts = [under for _, under in loads]
    judged = [v for v in verdicts if v is not None]
    worst = next((block for block, under in loads if under), loads[0][0])
    readings = ("stall_pct", "other_cores", "steal_pct", "reason")
    return {"load": {**worst, "rounds": [{k: block.get(k) for k in readings} | {"under_load": under}
                                         for block, under in loads]} | ({"settled_s": settled_s} if settled_s else {}),
            "under_load": any(judged) if judged else None}


class _BackOff:
    """A group's batch sizes after an out-of-memory one: a batch at least as large is recorded as oom without
    being tried (each try would fill the device again, for nothing)."""

    def __init__(self) -> None:
        self.fitted, self.failed_at = 0, None

    def skip(self, case: Case, load_ms: float | None) -> BenchResult | None:
        """The row of a case not to try, or None to try it."""
        if self.failed_at is None or case.batch_size < self.failed_at:
            return None
        largest = f"; the largest that fitted was {self.fitted}" if self.fitted else ""
        return BenchResult.failed(case, "oom", f"not tried: batch {self.failed_at} ran out of memory{largest}",
                                  load_ms=load_ms)

    def see(self, case: Case, status: str) -> None:
        if status == "oom":
            self.failed_at = min(self.failed_at or case.batch_size, case.batch_size)
        elif status == "ok":
            self.fitted = max(self.fitted, case.batch_size)


def _position(row: BenchResult, cases: list[Case]) -> int:
    """Where a row's case is in `cases` (their end when it is none of them)."""
    case = Case(**{name: getattr(row, name) for name in Case.__dataclass_fields__})
    return next((i for i, c in enumerate(cases) if c == case), len(cases))


def _disabled(progress: bool | None) -> bool | None:
    return None if progress is None else not progress


def _group_in_worker(conn, suite, export_cache: str, ceilings, threads: int, raise_errors: bool, name: str,
                     group: tuple, target, settle_until: float | None = None) -> None:
    """In a worker process of vggbench.bench.isolation: the sweep of one group, each row and status sent through
    `conn` as it comes; its first call not before settle_until (a time.time())."""
    from dataclasses import asdict

    class Rows:  # the sweep's journal: each finished row to the parent
        def append(self, row) -> None:
            conn.send({"row": asdict(row)})

    class Status:  # the sweep's progress bar: what it is doing, for the parent's bar and a crash's reason
        def set_postfix_str(self, text: str) -> None:
            conn.send({"status": text})

        def update(self, n: int) -> None:
            pass

    device = require_device(suite.device)
    weights = parse_weights(suite.weights, suite.seed).require()
    allocator.apply(suite.allocator)  # as in the parent (whose record the run keeps)
    with scoped_numerics(threads, tf32_flag(device, suite.tf32), suite.cudnn_benchmark):
        # the load each case meets, as in the parent's process (the parent waits meanwhile: it uses no CPU)
        sweep = _Sweep(suite, device, weights, {(name, *group[:3]): target}, Path(export_cache), ceilings, False,
                       raise_errors, Rows(), LoadSampler())
        sweep.bar = Status()
        sweep.settle_until = settle_until
        sweep._model(name, [group])
