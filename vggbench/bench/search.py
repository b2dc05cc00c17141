"""The Server search: the highest target QPS whose LoadGen run is VALID at the latency bound, as MLPerf submitters
find it. Short probe runs, judged by LoadGen's own latency check (p99 within the bound), bracket the rate from an
estimate; full runs then step down from the highest rate that passed until one is VALID (further where a run's p99
was far over the bound), and bisect between that rate and the lowest INVALID one while runs are left. Every run
counts against `max_runs`. The run itself is injected, so the logic is tested without LoadGen.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import ConfigError

STEP = 2.0  # the factor between probes while the bracket is open on one side
# a full run that is INVALID: the next full run is at this fraction of its rate, or lower where the run's p99 was
# further over the bound (rate x bound / p99, down to MIN_CONFIRM_STEP): VGG16 eager on 2 cores held 1.27 QPS in a
# 20 s probe, then read p99 1,423 ms at 1.27 and 1,458 ms at 1.14 QPS in full runs against a 1,000 ms bound
CONFIRM_STEP = 0.9
MIN_CONFIRM_STEP = 0.5
# runs kept for full runs, at least (a quarter of the budget, and at least one): a short probe's p99 reads a rate
# as safe that a full run, long enough for the queue to build, can find INVALID (2.91 QPS: p99 894 ms in the probe,
# 2,537 ms in the full run, VGG16 on onnxruntime, 2 CPU cores)
FULL_SHARE = 4
# probes read p99 from a few dozen queries, an optimistic reading: a bracket narrower than this is not worth a probe
PROBE_TOLERANCE = 0.25
DECIMALS = 3  # rates are rounded to this many significant digits


@dataclass(frozen=True)
class Outcome:
    """What one LoadGen run said: its verdict and whether the latency bound held (LoadGen's "performance
    constraints"); `detail` is anything the caller wants back (the run's summary, its folder)."""

    valid: bool
    latency_ok: bool
    detail: Any = None
    over_bound: float | None = None  # the run's constrained percentile over the latency bound (p99 / bound), if known
    runs: int = 1  # LoadGen runs it took (a full run extended with the queries early stopping asked for: 2)


@dataclass
class Trial:
    qps: float
    probe: bool
    outcome: Outcome

    def to_dict(self) -> dict:
        return {"qps": self.qps, "run": "probe" if self.probe else "full", "valid": self.outcome.valid,
                "latency_ok": self.outcome.latency_ok, "over_bound": self.outcome.over_bound,
                "loadgen_runs": self.outcome.runs}


@dataclass
class SearchResult:
    """The highest rate a full run found VALID (None if none within the runs), and every run made."""

    qps: float | None
    trials: list[Trial] = field(default_factory=list)
    start_qps: float = 0.0
    max_runs: int = 0

    @property
    def runs(self) -> int:
        return sum(t.outcome.runs for t in self.trials)

    @property
    def best(self) -> Trial | None:
        """The full run at the rate found."""
        return next((t for t in reversed(self.trials) if not t.probe and t.outcome.valid and t.qps == self.qps), None)

    def to_dict(self) -> dict:
        return {"qps": self.qps, "runs": self.runs, "max_runs": self.max_runs, "start_qps": self.start_qps,
                "trials": [t.to_dict() for t in self.trials]}


def _round(qps: float) -> float:
    return float(f"{qps:.{DECIMALS}g}")


def find_peak_qps(run: Callable[[float, bool], Outcome], start_qps: float, *, max_runs: int,
                  tolerance: float = 0.05, min_qps: float = 1e-3) -> SearchResult:
    """Search the highest VALID Server rate.

    run(qps, probe): one LoadGen run at `qps`, a short probe (True) or a full run (False).
    start_qps: the first probe's rate, e.g. an Offline or batch throughput estimate.
    max_runs: every LoadGen run counts (an Outcome says how many it took); a quarter of them (at least one) is
    kept for full runs (max_runs 1: that run alone, at start_qps). A run that took two can end one over.
    tolerance: full runs stop bisecting when the VALID and INVALID rates are this close (a fraction of the VALID
    one); probing stops at PROBE_TOLERANCE or this, whichever is wider.
    min_qps: below this, no rate is tried (the search gives up: result None).
    """
    if not start_qps > 0:
        raise ConfigError(f"the Server search needs a positive start rate, got {start_qps}")
    if max_runs < 1:
        raise ConfigError(f"the Server search needs at least one run, got {max_runs}")
    result = SearchResult(None, start_qps=_round(start_qps), max_runs=max_runs)
    low = high = None  # the highest rate whose probe held the bound, the lowest whose probe did not
    qps = _round(start_qps)

    def attempt(rate: float, probe: bool) -> Outcome:
        outcome = run(rate, probe)
        result.trials.append(Trial(rate, probe, outcome))
        return outcome

    # probes: bracket, then bisect, leaving a quarter of the runs (at least one) for the full ones
    probes = max_runs - max(1, max_runs // FULL_SHARE)
    while result.runs < probes and qps >= min_qps:
        if attempt(qps, True).latency_ok:
            low = qps
        else:
            high = qps
        if low is None:
            qps = _round(qps / STEP)
        elif high is None:
            qps = _round(qps * STEP)
        elif high - low <= max(tolerance, PROBE_TOLERANCE) * low:
            break
        else:
            qps = _round((low + high) / 2)
        if qps in (low, high):  # rounding leaves nothing between them
            break
    # full runs: from the highest probe that held (or the start, with no probes), down until one is VALID
    qps = low if low is not None else (result.start_qps if not result.trials else _round(qps))
    invalid = None  # the lowest rate a full run found INVALID
    while result.runs < max_runs and qps >= min_qps:
        outcome = attempt(qps, False)
        if outcome.valid:
            result.qps = qps
            break
        invalid = qps
        qps = _round(qps * confirm_step(outcome))
    # then up again: halve the gap between the VALID rate and the lowest INVALID one while runs are left
    while result.qps is not None and invalid is not None and result.runs < max_runs \
            and invalid - result.qps > tolerance * result.qps:
        qps = _round((result.qps + invalid) / 2)
        if qps in (result.qps, invalid):
            break
        if attempt(qps, False).valid:
            result.qps = qps
        else:
            invalid = qps
    return result


def confirm_step(outcome: Outcome) -> float:
    """The factor from an INVALID full run's rate to the next one's: CONFIRM_STEP, or bound / p99 where the run
    was further over the bound than that (latency falls faster than the rate near saturation, so this errs low),
    but not below MIN_CONFIRM_STEP."""
    if outcome.over_bound is None or outcome.over_bound <= 1:
        return CONFIRM_STEP
    return max(MIN_CONFIRM_STEP, min(CONFIRM_STEP, 1 / outcome.over_bound))


def early_stopping_queries(late: int, percentile: float = 0.99, confidence: float = 0.99) -> int:
    """The fewest queries with which LoadGen's early stopping accepts a run that had `late` queries over the
    bound: the smallest n with P(Binomial(n, 1 - percentile) <= late) <= 1 - confidence, as LoadGen computes it
    (with no late query, 459 at Server's p99; 662 with one, 838 with two)."""
    n = late + 1
    while _binomial_cdf(late, n, 1 - percentile) > 1 - confidence:
        n += 1
    return n


def queries_at_late_fraction(fraction: float, *, most: int, percentile: float = 0.99,
                             confidence: float = 0.99) -> int | None:
    """The fewest queries with which early stopping accepts a run whose queries are late (over the bound) at
    `fraction`, as in the run that measured it; None if more than `most` are needed (the fraction is too near
    1 - percentile for a run of practical length: 0.4% late needs 1,157 queries, 0.6% needs 2,798)."""
    if fraction >= round(1 - percentile, 12):  # 1 - 0.99 is 0.010000000000000009
        return None
    for n in range(early_stopping_queries(0, percentile, confidence), most + 1):
        if _binomial_cdf(math.floor(fraction * n), n, 1 - percentile) <= 1 - confidence:
            return n
    return None


def _binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (n in the thousands)."""
    log_p, log_q = math.log(p), math.log1p(-p)
    return sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p
                        + (n - i) * log_q) for i in range(k + 1))
