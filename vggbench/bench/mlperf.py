"""MLPerf's four scenarios as objects, looked up by name in SCENARIO_TABLE: what differs between SingleStream,
MultiStream, Server and Offline (LoadGen's scenario, the row's metric, the batch each runs, what a run computes,
whether a short run is rerun, the SUT's policy, the Server's search for its highest VALID rate). Running LoadGen
is vggbench.bench.loadgen's: a scenario object is handed the run it serves (a `ScenarioRun`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

from ..core.errors import ConfigError, VggbenchError
from .scenarios import MAX_QUERIES, PERCENTILES, LoadgenSettings, SutSettings
from .search import Outcome, find_peak_qps, queries_at_late_fraction
from .summary import Summary, read_detail_ints
from .sut import batch_within

SHORT_RERUNS = 3  # runs again, expecting more work, while a run ends before its minimum duration
EXPECTED_LATENCY_FRACTION = 0.1  # of the timed-batch estimate, told to LoadGen as SingleStream's/MultiStream's
# bounds on a LoadGen run's computation (its queries at the measured speed), past which a target's scenario is a
# row that says why instead of a run that does not end (`--target-qps 1e9` scheduled billions of queries)
MAX_RUN_S = 600.0  # MLPerf's run length; or MAX_RUN_FACTOR times the run's duration, when that is longer
MAX_RUN_FACTOR = 10  # also: Server's target QPS at most this many times the measured rate (its queue only grows)
# a Server full run that held the bound but that early stopping would not accept: run again with this many times
# the queries early stopping needs at the run's fraction of late queries (a margin for the longer run's own), but
# not when that is over EXTEND_MAX times the full run's queries: then the rate steps down instead
EXTEND_MARGIN = 1.2
EXTEND_MAX = 4

Performance = tuple[Summary | None, Path | None, dict | None, float | None]  # summary, logs, search, QPS


class ScenarioRun(Protocol):
    """What a scenario object asks of the run it serves (one scenario of one target)."""

    settings: LoadgenSettings
    target: Any  # its offline_rate: Offline's samples/s, once Offline ran

    def loadgen(self, mode: str, qps: float | None, *, probe: bool = False, label: str = "",
                expected_latency_s: float | None = None, min_queries: int | None = None
                ) -> tuple[Summary, Path, dict]: ...

    def rate(self) -> float: ...  # samples/s at the scenario's batch, from the timed batches

    def say(self, text: str) -> None: ...  # a progress line about this target


class Scenario:
    """One MLPerf scenario: the settings of its LoadGen runs and its row, and how its performance is measured."""

    name: ClassVar[str]
    loadgen_name: ClassVar[str]  # its member of LoadGen's TestScenario
    metric: ClassVar[str]  # the row's headline number
    fix: ClassVar[str]  # the options that shorten a run too long to compute
    runs_last: ClassVar[bool] = False
    records_target_qps: ClassVar[bool] = False  # the row keeps LoadGen's target_qps

    @property
    def percentile(self) -> float | None:
        """The latency percentile it is judged at (MLPerf's), None for a throughput scenario."""
        return PERCENTILES[self.name]

    # --- before LoadGen --------------------------------------------------------------------------------------
    def batch(self, settings: LoadgenSettings, sut: SutSettings) -> int:
        """The largest batch it runs."""
        return sut.max_batch

    def time_batch(self, seconds: Callable[[int], float], settings: LoadgenSettings, sut: SutSettings) -> int:
        """Its largest batch, timed by `seconds` (seconds per call of a batch size)."""
        batch = self.batch(settings, sut)
        seconds(batch)
        return batch

    def announce(self, batch: int, estimates: dict[int, float], settings: LoadgenSettings,
                 sut: SutSettings) -> str | None:
        """A line worth saying about its batch once timed, if any."""
        return None

    def max_wait_s(self, sut: SutSettings) -> float:
        """How long the SUT's batch waits for more samples."""
        return 0.0

    def sut_policy(self, batch: int, settings: LoadgenSettings, sut: SutSettings) -> dict:
        return {"max_batch": batch, "max_wait_ms": 0.0, "workers": sut.workers}

    # --- a run's length --------------------------------------------------------------------------------------
    def scheduled_qps(self, test_settings) -> float:
        """The rate at which LoadGen's test settings make its queries."""
        return test_settings.offline_expected_qps

    def samples(self, queries: int, qps: float, duration: float, settings: LoadgenSettings) -> float:
        """The samples a run of `queries` queries at least, for `duration` s at least, computes."""
        return max(queries, qps * duration)

    def describe(self, queries: int, samples: float, qps: float, settings: LoadgenSettings) -> str:
        return f"{samples:,.0f} samples at {qps:g} QPS"

    def check_rate(self, qps: float, per_sample: float) -> None:
        """ConfigError for a rate no run can hold."""

    def check_run_length(self, duration: float, queries: int, qps: float, per_sample: float,
                         settings: LoadgenSettings) -> None:
        """ConfigError when a run's queries would take this target (`per_sample` s a sample) over MAX_RUN_S (or
        MAX_RUN_FACTOR x the duration) to compute: LoadGen would schedule them all and wait for every answer."""
        samples = self.samples(queries, qps, duration, settings)
        need = samples * per_sample
        most = max(MAX_RUN_S, MAX_RUN_FACTOR * duration)
        self.check_rate(qps, per_sample)
        if need > most or samples > 10 * MAX_QUERIES:
            raise ConfigError(f"{self.name}: {self.describe(queries, samples, qps, settings)} would take about "
                              f"{need:,.0f} s to compute at the measured {1 / per_sample:.4g} samples/s, over the "
                              f"{most:g} s a run may take; lower {self.fix}")

    def label(self, mode: str, probe: bool, qps: float | None, settings: LoadgenSettings) -> str:
        """The name of a run's log folder (before any label the run adds)."""
        return f"{self.name}-{mode}"

    # --- performance -----------------------------------------------------------------------------------------
    def performance(self, run: ScenarioRun) -> Performance:
        """Its performance run(s): the summary and log folder reported, the search (Server's), the rate asked."""
        qps = run.settings.target_qps
        summary, folder, _ = run.loadgen("performance", qps)
        summary, folder = self.rerun_short(run, summary, folder, qps)
        return summary, folder, None, qps

    def reruns_short(self, qps: float | None) -> bool:
        return True

    def more_work(self, summary: Summary, qps: float | None, last_qps: float) -> tuple[float | None,
                                                                                         float | None] | None:
        """The (QPS, expected latency) to rerun a run that ended short with; None when the summary cannot say."""
        return None

    def rerun_short(self, run: ScenarioRun, summary: Summary, folder: Path, qps: float | None
                    ) -> tuple[Summary, Path]:
        """Run again, as submitters do, while a run ended before its minimum duration because LoadGen generated
        too little work from expectations the timed batches set (they run slow on a loaded machine): Offline's
        one query sized from too low a rate, SingleStream's and MultiStream's queries from too high a latency."""
        if not self.reruns_short(qps):
            return summary, folder
        last_qps = run.rate() * 1.1  # what the first run expected (Offline's)
        for n in range(1, SHORT_RERUNS + 1):
            if summary.constraints.get("Min duration satisfied") is not False:
                break
            more = self.more_work(summary, qps, last_qps)
            if more is None:
                break
            last_qps, latency = more
            summary, folder, _ = run.loadgen("performance", last_qps, label=f"rerun{n}", expected_latency_s=latency)
        return summary, folder

    # --- the row ---------------------------------------------------------------------------------------------
    def samples_per_query(self, settings: LoadgenSettings) -> int:
        return 1

    def latency_bound_ms(self, settings: LoadgenSettings) -> float | None:
        return None

    def samples_per_s(self, summary: Summary, settings: LoadgenSettings) -> float | None:
        return summary.samples_per_s

    def reasons(self, summary: Summary, search: dict | None) -> tuple[str, ...]:
        """Why a run is INVALID."""
        return tuple(summary.reasons())


class _Stream(Scenario):
    """A scenario whose queries follow one another (SingleStream, MultiStream): a short run is rerun expecting
    the latency it measured."""

    def more_work(self, summary, qps, last_qps):
        if not summary.mean_ms:
            return None
        return qps, summary.mean_ms / 1e3 * EXPECTED_LATENCY_FRACTION


class SingleStream(_Stream):
    name, loadgen_name, metric, fix = "singlestream", "SingleStream", "p90_ms", "--min-queries"

    def batch(self, settings, sut):
        return 1

    def samples(self, queries, qps, duration, settings):
        return queries

    def describe(self, queries, samples, qps, settings):
        return f"{queries:,} queries"


class MultiStream(_Stream):
    name, loadgen_name, metric, fix = "multistream", "MultiStream", "p99_ms", "--samples-per-query or --min-queries"

    def batch(self, settings, sut):
        return min(settings.samples_per_query, sut.max_batch)

    def samples(self, queries, qps, duration, settings):
        return queries * settings.samples_per_query

    def describe(self, queries, samples, qps, settings):
        return f"{queries:,} queries of {settings.samples_per_query} samples"

    def samples_per_query(self, settings):
        return settings.samples_per_query

    def samples_per_s(self, summary, settings):
        if summary.mean_ms:
            return settings.samples_per_query / (summary.mean_ms / 1e3)  # queries run back to back
        return summary.samples_per_s


class Offline(Scenario):
    name, loadgen_name, metric, fix = "offline", "Offline", "samples_per_s", "--target-qps or --min-duration"
    records_target_qps = True

    def performance(self, run):
        summary, folder, search, qps = super().performance(run)
        if summary.samples_per_s:  # where the Server's search starts
            run.target.offline_rate = summary.samples_per_s
        return summary, folder, search, qps

    def reruns_short(self, qps):
        return qps is None  # a rate given is run as given

    def more_work(self, summary, qps, last_qps):
        if not summary.samples_per_s:
            return None
        return max(summary.samples_per_s * 1.5, last_qps * 4), None  # a small query measures low: at least x4


class Server(Scenario):
    """Queries at a scheduled rate under a p99 bound; without --target-qps, the search for the highest VALID
    rate (vggbench.bench.search), starting from Offline's rate when Offline ran."""

    name, loadgen_name, metric, fix = "server", "Server", "samples_per_s", "--target-qps or --min-duration"
    runs_last = True  # its search starts from what Offline measured
    records_target_qps = True

    def time_batch(self, seconds, settings, sut):
        """The largest batch within --server-batch-budget of the latency bound."""
        return batch_within(seconds, sut.max_batch, sut.server_batch_budget * settings.latency_bound_ms / 1e3)

    def announce(self, batch, estimates, settings, sut):
        if batch >= sut.max_batch:
            return None
        over = min((n for n in estimates if n > batch), default=None)
        took = f" (a batch of {over} took {estimates[over] * 1e3:.4g} ms)" if over else ""
        return (f"Server batches of at most {batch}, within {sut.server_batch_budget:g} of the "
                f"{settings.latency_bound_ms:g} ms bound{took}")

    def max_wait_s(self, sut):
        return sut.max_wait_ms / 1e3

    def sut_policy(self, batch, settings, sut):
        return {"max_batch": batch, "max_wait_ms": sut.max_wait_ms, "workers": sut.workers,
                "max_batch_setting": sut.max_batch,
                "batch_budget_ms": sut.server_batch_budget * settings.latency_bound_ms}

    def scheduled_qps(self, test_settings):
        return test_settings.server_target_qps

    def describe(self, queries, samples, qps, settings):
        return f"{samples:,.0f} queries at {qps:g} QPS"

    def check_rate(self, qps, per_sample):
        if qps * per_sample > MAX_RUN_FACTOR:
            raise ConfigError(f"server: {qps:g} QPS is over {MAX_RUN_FACTOR} times the measured "
                              f"{1 / per_sample:.4g} samples/s: every run would be INVALID, its queue growing to the "
                              f"end; lower --target-qps")

    def label(self, mode, probe, qps, settings):
        searched = mode == "performance" and settings.target_qps is None
        return super().label(mode, probe, qps, settings) + \
            (f"-{'probe' if probe else 'full'}-{qps:g}qps" if searched else "")

    def reruns_short(self, qps):
        return False

    def latency_bound_ms(self, settings):
        return settings.latency_bound_ms

    def reasons(self, summary, search):
        reasons = super().reasons(summary, search)
        if search is not None and search["qps"] is None:
            return (f"no VALID rate found in {search['runs']} run(s)",) + reasons
        return reasons

    def performance(self, run):
        if run.settings.target_qps is not None:
            return super().performance(run)
        return self.search(run)

    def search(self, run: ScenarioRun) -> Performance:
        """The highest VALID rate: the full run at it (or the last full run, when none was VALID); VggbenchError
        when no probe came to a full run."""
        s = run.settings
        found: dict[float, tuple[Summary, Path]] = {}

        def trial(qps: float, probe: bool) -> Outcome:
            summary, folder, _ = run.loadgen("performance", qps, probe=probe)
            runs = 1
            if not probe and not summary.valid and summary.latency_ok and summary.more_queries:
                # the bound held, but early stopping wants more queries to accept the p99 (a few late queries
                # among the 500): run this rate again with what it needs at this run's late fraction
                queries = self.extension(summary, folder, s, run.say)
                if queries is not None:
                    summary, folder, _ = run.loadgen("performance", qps, label=f"{queries}q", min_queries=queries)
                    runs = 2
            if not probe:
                found[qps] = (summary, folder)
            p99 = summary.percentile("99")
            over = p99 / s.latency_bound_ms if p99 is not None and s.latency_bound_ms else None
            return Outcome(bool(summary.valid), bool(summary.latency_ok), folder.name, over, runs)

        start = min(run.rate(), run.target.offline_rate or float("inf")) * 0.9
        result = find_peak_qps(trial, start, max_runs=s.max_runs, tolerance=s.search_tolerance)
        block = {**result.to_dict(), "latency_bound_ms": s.latency_bound_ms,
                 "probe_duration_s": s.probe_duration_for(),
                 "folders": [t.outcome.detail for t in result.trials]}
        if result.qps is not None:
            summary, folder = found[result.qps]
            return summary, folder, block, result.qps
        last = next((t for t in reversed(result.trials) if not t.probe), None)
        if last is None:  # every probe failed, down to the floor
            raise VggbenchError(f"the Server search made no full run in {block['runs']} run(s): no probe held "
                                f"the {s.latency_bound_ms:g} ms bound")
        summary, folder = found[last.qps]
        return summary, folder, block, last.qps

    def extension(self, summary: Summary, folder: Path, settings: LoadgenSettings,
                  say: Callable[[str], None]) -> int | None:
        """The queries to rerun a full run with that held the bound but that early stopping did not accept: what
        it needs at this run's fraction of late queries (at least what LoadGen asked for, with every further one on
        time), plus EXTEND_MARGIN; None, said, where that is over EXTEND_MAX times the run's queries."""
        counts = read_detail_ints(folder, "result_query_count", "result_overlatency_query_count")
        done = counts["result_query_count"] or summary.parameter("min_query_count", int) or 1
        late = counts["result_overlatency_query_count"] or 0
        most = EXTEND_MAX * settings.min_queries_for(self.name)
        needed = queries_at_late_fraction(late / done, most=most)
        if needed is None:
            say(f"{folder.name}: {late} of {done} queries late; early stopping would need over {most} at that "
                f"fraction: not extended")
            return None
        return min(most, int(max(needed, done + summary.more_queries) * EXTEND_MARGIN))


# in the order their batches are timed, after a batch of 1 (which every run's expected latency needs): a batch
# too large for the memory or the time a call may take is reported for the first scenario that asks for it
SCENARIO_TABLE: dict[str, Scenario] = {s.name: s for s in (SingleStream(), Offline(), MultiStream(), Server())}
