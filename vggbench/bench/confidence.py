"""How sure a row's numbers are: the 95% interval of its median (recorded, or computed from its samples when a file
from before the intervals is read back), of its images/s and of a ratio between two rows; whether it is noisy;
and how sure a change between two runs is (a bootstrap interval of the ratio of medians, Mann-Whitney U). Works on
rows as read back from a results file (dicts). Never measures anything."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..core.timing import CONFIDENCE, Stats, is_wide, median_ranks

# the fewest samples with a distribution-free 95% interval of their median (6: the 1st and 6th cover 96.9%); a row
# with fewer has min..max instead, which covers less (5 samples: 93.75%), and a comparison of it is inconclusive
MIN_SAMPLES = next(n for n in range(1, 100) if median_ranks(n)[2] >= CONFIDENCE)
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # the same two files always get the same interval and verdict
_BOOTSTRAP_CELLS = 2_000_000  # resampled values held at once (16 MB)


def samples(row: dict) -> tuple[float, ...]:
    return tuple(row.get("samples_ms") or ())


def median_interval(row: dict) -> tuple[float, float] | None:
    """(low, high) of the row's median in ms: as recorded, else from its samples; None for a row without either
    (a case that did not run, a LoadGen scenario)."""
    low, high = row.get("median_ci_low_ms"), row.get("median_ci_high_ms")
    if low is not None and high is not None:
        return low, high
    if row.get("status", "ok") != "ok" or not samples(row):
        return None
    interval = Stats(samples(row)).median_interval
    return interval.low_ms, interval.high_ms


def fill_interval(row: dict) -> None:
    """Give a row read back without its interval (files and journals from before issue 27) the one its samples
    say, in place. LoadGen scenario rows keep none: their samples are LoadGen's, not in the file."""
    if row.get("median_ci_low_ms") is None and not row.get("scenario"):
        interval = median_interval(row)
        if interval is not None:
            row["median_ci_low_ms"], row["median_ci_high_ms"] = interval


def images_interval(row: dict) -> tuple[float, float] | None:
    """(low, high) of the row's images/s: batch size over the high and the low end of its median's interval."""
    interval = median_interval(row)
    if interval is None or not row.get("images_per_s") or interval[0] <= 0:
        return None
    return row["batch_size"] / (interval[1] / 1e3), row["batch_size"] / (interval[0] / 1e3)


def ratio_interval(numerator: tuple[float, float], denominator: tuple[float, float]) -> tuple[float, float]:
    """An interval of a ratio of two independent positive quantities from an interval of each: the extreme
    ratios. When both intervals cover (90.25% at 95% each, for independent rows) so does this one; in practice it
    covers more than 95%, since both ends are rarely off at once (for normal medians its half-width, the sum of the
    two, is wider than the root of the sum of squares that 95% needs). It needs nothing but the recorded intervals,
    so every row that has one gets it, at no cost."""
    return numerator[0] / denominator[1], numerator[1] / denominator[0]


def noisy(row: dict) -> bool:
    """Ran under load, or its median's 95% interval reaches more than NOISY_RELATIVE_CI from the median. A row
    without samples or interval keeps the flag it was written with (then: IQR above 10% of the median). An unknown
    load (None: not recorded) counts as none."""
    if row.get("under_load") is True:
        return True
    interval, median = median_interval(row), row.get("median_ms")
    if interval is not None and median:
        return is_wide(median, *interval)
    return bool(row.get("noisy"))


def half_width(value: float, low: float, high: float) -> float:
    """The larger side of an interval that need not be symmetric: what `±` shows."""
    return max(value - low, high - value, 0.0)


def plus_minus(value: float | None, low: float | None = None, high: float | None = None) -> str | None:
    """'4.98 ± 0.06': the half-width (the larger side) rounded up to one significant digit, the value to the
    same decimal place but to no more than 4 significant digits; '4.98' without an interval."""
    if value is None or not math.isfinite(value):
        return None
    digits = max(0, 3 - math.floor(math.log10(abs(value)))) if value else 0  # 4 significant digits
    if low is None or high is None:
        return f"{round(value, digits):g}"
    half = half_width(value, low, high)
    if half <= abs(value) * 1e-9:  # equal samples, up to the rounding of the divisions that made the interval
        return f"{round(value, digits):g} ± 0"
    exponent = math.floor(math.log10(half))
    # rounded up: never print an interval narrower than the one computed (round() first: 0.06 / 0.01 is 6.0000001)
    mantissa = math.ceil(round(half / 10 ** exponent, 9))
    if mantissa == 10:
        mantissa, exponent = 1, exponent + 1
    half = mantissa * 10 ** exponent
    places = max(0, -exponent)
    return f"{value:.{min(digits, places)}f} ± {half:.{places}f}"


# --- two runs ------------------------------------------------------------------------------------------------

def bootstrap_ratio(old: Sequence[float], new: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES,
                    seed: int = BOOTSTRAP_SEED, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The percentile bootstrap interval of median(new) / median(old): each run's samples resampled with
    replacement on their own (the runs are independent), `resamples` times, seeded. It makes no assumption on the
    times' distribution and gives the ratio itself, which is what --threshold is about."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ratios = _resampled_medians(new, resamples, rng) / _resampled_medians(old, resamples, rng)
    return _percentiles(ratios, confidence)


def bootstrap_median(values: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                     confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The percentile bootstrap interval of median(values), seeded: e.g. of paired ratios, one a pair."""
    import numpy as np

    return _percentiles(_resampled_medians(values, resamples, np.random.default_rng(seed)), confidence)


def _resampled_medians(values: Sequence[float], resamples: int, rng):
    """The medians of `resamples` resamples of `values` with replacement, drawn from `rng` (numpy's Generator), at
    most _BOOTSTRAP_CELLS values held at once."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    out = np.empty(resamples)
    step = max(1, _BOOTSTRAP_CELLS // len(x))
    for start in range(0, resamples, step):
        count = min(step, resamples - start)
        out[start:start + count] = np.median(x[rng.integers(0, len(x), size=(count, len(x)))], axis=1)
    return out


def clustered_ratio(rounds: Sequence[Sequence[float]], batch: int, tool: Sequence[float],
                    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                    confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The percentile bootstrap interval of a cross-check's ratio: the row's images/s (the batch over the median of
    its samples, in ms, pooled over its rounds) over the median of the tool's runs' images/s. The units resampled
    are a round (all its samples at once) and a tool run, not single calls: calls a few seconds apart share the
    machine's state (2026-12-07, AVX2 EPYC: winograd at batch 8 ran 757-1,021 ms in one round and 873-1,268 ms in
    another), so calls resampled one by one would give an interval as narrow as if they did not. With 5 rounds
    and 5 runs it is coarse (a median of 5 resampled values is one of them) and, as a small-sample bootstrap,
    covers somewhat less than `confidence`. None with fewer than 2 rounds or 2 runs."""
    import numpy as np

    groups, runs = _rounds(rounds), np.asarray(tool, dtype=float)
    if len(groups) < 2 or len(runs) < 2:
        return None
    rng = np.random.default_rng(seed)
    ratios = _resampled_rows(groups, batch, resamples, rng) / _resampled_medians(runs, resamples, rng)
    return _percentiles(ratios, confidence)


def clustered_images(rounds: Sequence[Sequence[float]], batch: int, resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The percentile bootstrap interval of a row's images/s (the batch over the median of its samples, in ms,
    pooled over its rounds), whole rounds resampled as in clustered_ratio: wider than the row's own interval of
    its median, which takes its calls as independent, where the machine moved between rounds. None with fewer than
    2 rounds."""
    import numpy as np

    groups = _rounds(rounds)
    if len(groups) < 2:
        return None
    return _percentiles(_resampled_rows(groups, batch, resamples, np.random.default_rng(seed)), confidence)


def _rounds(rounds: Sequence[Sequence[float]]) -> list:
    """The rounds that have samples, as arrays."""
    import numpy as np

    return [np.asarray(r, dtype=float) for r in rounds if len(r)]


def _resampled_rows(groups: list, batch: int, resamples: int, rng):
    """The row's images/s over `resamples` resamples of its rounds (_rounds: whole rounds, with replacement)."""
    import numpy as np

    row = np.empty(resamples)
    for i, picks in enumerate(rng.integers(0, len(groups), size=(resamples, len(groups)))):
        row[i] = batch / (np.median(np.concatenate([groups[k] for k in picks])) / 1e3)
    return row


def _percentiles(values, confidence: float) -> tuple[float, float]:
    import numpy as np

    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def mann_whitney_p(old: Sequence[float], new: Sequence[float]) -> float | None:
    """Two-sided Mann-Whitney U p-value that the two runs' times come from the same distribution, as
    scipy.stats.mannwhitneyu(new, old) gives it (method "auto"): the exact null distribution of U where a run has
    at most 8 samples and no value repeats, else the normal approximation with the tie and continuity
    corrections. Written out here so that `report --compare` needs no scipy (150 MB) in the default install.
    None where it is undefined (a sample that is not a number)."""
    import numpy as np

    x, y = np.asarray(new, dtype=float), np.asarray(old, dtype=float)
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return None
    both = np.concatenate([x, y])
    if not np.isfinite(both).all():
        return None
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    # average ranks: a value's rank is the mean of the positions its ties take in sorted order
    average_rank = np.cumsum(counts) - (counts - 1) / 2
    u1 = float(average_rank[inverse[:n1]].sum()) - n1 * (n1 + 1) / 2
    u = max(u1, n1 * n2 - u1)
    if (n1 <= 8 or n2 <= 8) and (counts == 1).all():
        p = 2 * _u_survival(round(u), n1, n2)
    else:
        n = n1 + n2
        ties = float((counts.astype(float) ** 3 - counts).sum())
        spread = math.sqrt(n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))))
        if spread == 0:  # every sample the same: U sits at its mean
            p = 1.0
        else:
            z = (u - n1 * n2 / 2 - 0.5) / spread
            p = math.erfc(z / math.sqrt(2))  # twice the normal upper tail
    p = min(max(p, 0.0), 1.0)
    return p if math.isfinite(p) else None


def _u_survival(u: int, n1: int, n2: int) -> float:
    """P(U >= u) under the null hypothesis, counting the orderings of n1 + n2 distinct values exactly: the
    number with statistic k is the coefficient of q^k in the Gaussian binomial [n1 + n2 choose n1]_q, the
    product over i = 1..min(n1, n2) of (1 - q^(max + i)) / (1 - q^i), taken as power series cut at degree
    n1 * n2 (the product is a polynomial of that degree, so the cut loses nothing)."""
    small, large = sorted((n1, n2))
    top = small * large
    counts = [1] + [0] * top  # Python ints: exact at any size
    for i in range(1, small + 1):
        step = large + i
        for k in range(top, step - 1, -1):
            counts[k] -= counts[k - step]
        for k in range(i, top + 1):
            counts[k] += counts[k - i]
    return sum(counts[u:]) / math.comb(n1 + n2, n1)

