"""How sure the numbers are (issue 27): the 95% interval of a median, images/s and speedups with theirs, noisy from
the interval and the load, the fastest summary that names no winner it cannot be sure of, and `report --compare`'s
verdicts from both runs' samples. Results are made by hand with seeded noise (no timing), except one tiny run."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace

import numpy as np
import pytest
import scipy.stats

from tests.test_report import cli, results_file, row
from vggbench.bench.compare import compare_runs, judge
from vggbench.bench.confidence import (
    MIN_SAMPLES,
    bootstrap_ratio,
    fill_interval,
    images_interval,
    mann_whitney_p,
    noisy,
    plus_minus,
)
from vggbench.bench.report import NO_CLEAR_WINNER, fastest_rows, run_rows
from vggbench.bench.results import read_run
from vggbench.core.timing import Stats, median_ranks


def noisy_samples(median_ms: float, n: int = 30, sd: float = 0.02, seed: int = 0) -> tuple[float, ...]:
    """Timings as a quiet machine gives them: a few % of spread, a long tail of slow calls."""
    rng = np.random.default_rng(seed)
    return tuple(float(x) for x in median_ms * (1 + sd * rng.standard_normal(n) + 0.02 * rng.exponential(0.5, n)))


def sampled(backend: str, batch: int, samples: tuple[float, ...], **extra):
    """A row whose numbers are those of `samples`, as `vggbench run` writes them."""
    stats = Stats(samples)
    r = row(backend, batch, stats.median_ms, **extra)
    return replace(r, samples_ms=samples, iterations=len(samples), **stats.to_dict())


# --- the interval of a median ------------------------------------------------------------------------------

def test_the_medians_interval_is_the_order_statistics_the_binomial_gives():
    s = Stats(tuple(float(x) for x in range(1, 21)))  # 1..20: the 6th and 15th smallest bound it
    assert (s.median_interval.low_ms, s.median_interval.high_ms) == (6.0, 15.0)
    assert s.median_interval.coverage == pytest.approx(1 - 2 * scipy.stats.binom.cdf(5, 20, 0.5))
    assert s.median_interval.reached
    assert s.to_dict()["median_ci_low_ms"] == 6.0 and s.to_dict()["median_ci_high_ms"] == 15.0
    # shuffled samples, the same interval
    assert Stats((9.0, 3.0, 20.0, *map(float, range(4, 9)), 1.0, 2.0, *map(float, range(10, 20)))).median_interval \
        == s.median_interval
    for n in range(MIN_SAMPLES, 400):  # the narrowest that covers 95%, against scipy's binomial
        low, high, coverage = median_ranks(n)
        assert high == n + 1 - low and coverage >= 0.95
        assert 1 - 2 * scipy.stats.binom.cdf(low, n, 0.5) < 0.95  # one rank further in falls short
        assert coverage == pytest.approx(1 - 2 * scipy.stats.binom.cdf(low - 1, n, 0.5), abs=1e-8)


def test_below_six_samples_the_interval_is_min_to_max_and_says_it_falls_short():
    assert MIN_SAMPLES == 6
    s = Stats((10.0, 12.0, 11.0, 10.5, 13.0))
    assert (s.median_interval.low_ms, s.median_interval.high_ms) == (10.0, 13.0)
    assert s.median_interval.coverage == pytest.approx(0.9375) and not s.median_interval.reached
    assert median_ranks(6) == (1, 6, pytest.approx(1 - 2 / 64))


def test_noisy_is_the_interval_beyond_five_percent_or_the_load_not_the_iqr():
    # 200 calls spread over ±20% (IQR ~20% of the median, noisy by the old rule): the median itself is known to ±3%
    spread = Stats(tuple(100.0 * (1 + 0.4 * (i * 37 % 200 / 199 - 0.5)) for i in range(200)))
    assert spread.iqr_ms > 0.1 * spread.median_ms and not spread.noisy
    few = Stats((100.0, 80.0, 120.0, 100.0, 104.0, 96.0))  # 6 calls: min..max, ±20%
    assert few.noisy
    quiet = sampled("eager", 1, noisy_samples(100.0))
    assert not noisy(quiet.__dict__)
    assert noisy({**quiet.__dict__, "under_load": True}) and not noisy({**quiet.__dict__, "under_load": None})
    # a row without samples or interval keeps the flag it was written with (the IQR rule)
    bare = {**quiet.__dict__, "samples_ms": [], "median_ci_low_ms": None, "median_ci_high_ms": None}
    assert not noisy(bare) and noisy({**bare, "noisy": True})


def test_a_row_read_back_without_its_interval_gets_it_from_its_samples(tmp_path):
    samples = noisy_samples(100.0)
    path = results_file(tmp_path, [sampled("eager", 1, samples)])
    data = json.loads(path.read_text())
    for r in data["results"]:  # a file from before the intervals
        del r["median_ci_low_ms"], r["median_ci_high_ms"]
    path.write_text(json.dumps(data))
    back = read_run(path)["results"][0]
    interval = Stats(samples).median_interval
    assert (back["median_ci_low_ms"], back["median_ci_high_ms"]) == (interval.low_ms, interval.high_ms)
    failed = {"status": "oom", "samples_ms": [], "median_ci_low_ms": None}
    fill_interval(failed)
    assert failed["median_ci_low_ms"] is None


# --- tables ------------------------------------------------------------------------------------------------

def test_plus_minus_prints_the_larger_side_rounded_up():
    assert plus_minus(4.9812, 4.93, 5.03) == "4.98 ± 0.06"
    assert plus_minus(4.9812, 4.97, 5.03) == "4.98 ± 0.05"  # asymmetric: the larger side, 0.0488 up to 0.05
    assert plus_minus(886.2, 860.0, 914.0) == "886 ± 30"
    assert plus_minus(512.34, 512.33, 512.35) == "512.3 ± 0.01"  # no more than 4 significant digits
    assert plus_minus(6.25, 6.25, 6.25) == "6.25 ± 0"
    assert plus_minus(6.25) == "6.25"


def test_images_per_s_and_speedup_carry_their_intervals(tmp_path):
    base, fast = noisy_samples(100.0, seed=1), noisy_samples(50.0, seed=2)
    rows = run_rows([sampled("eager", 4, base).__dict__, sampled("onnxruntime", 4, fast).__dict__])
    eager, ort = rows
    assert eager["images_per_s_low"] <= eager["images_per_s"] <= eager["images_per_s_high"]
    assert eager["speedup_low"] == eager["speedup"] == eager["speedup_high"] == 1.0  # the baseline against itself
    assert ort["speedup_low"] < ort["speedup"] < ort["speedup_high"]
    # from both medians' intervals: the extreme ratios
    b, f = Stats(base).median_interval, Stats(fast).median_interval
    assert ort["speedup_low"] == pytest.approx(b.low_ms / f.high_ms)
    assert ort["speedup_high"] == pytest.approx(b.high_ms / f.low_ms)
    text = cli("report", results_file(tmp_path, [sampled("eager", 4, base), sampled("onnxruntime", 4, fast)])).output
    line = next(x for x in text.splitlines() if x.startswith("onnxruntime "))
    assert plus_minus(ort["images_per_s"], ort["images_per_s_low"], ort["images_per_s_high"]) in line
    assert plus_minus(ort["speedup"], ort["speedup_low"], ort["speedup_high"]) in line
    assert "±: the larger side of the 95% confidence interval of the median time" in text
    table = list(csv.DictReader(io.StringIO(cli("report", results_file(tmp_path, [sampled("eager", 4, base)], "c"),
                                                "--format", "csv").output)))
    assert float(table[0]["images_per_s_low"]) <= float(table[0]["images_per_s"]) <= float(
        table[0]["images_per_s_high"])


def test_a_row_under_load_is_marked_and_noisy(tmp_path):
    rows = [sampled("eager", 1, noisy_samples(100.0)),
            sampled("onnxruntime", 1, noisy_samples(60.0, seed=3), under_load=True)]
    text = cli("report", results_file(tmp_path, rows)).output
    line = next(x for x in text.splitlines() if x.startswith("onnxruntime"))
    assert line.startswith("onnxruntime*") and " yes " in line
    assert "* ran under load (1 case(s))" in text
    assert "onnxruntime\\*" in cli("report", results_file(tmp_path, rows, "g"), "--format", "github").output


# --- the fastest summary -----------------------------------------------------------------------------------

def test_the_fastest_summary_names_no_winner_between_overlapping_rows():
    eager = sampled("eager", 1, noisy_samples(100.0, sd=0.06, n=8, seed=4))
    ort = sampled("onnxruntime", 1, noisy_samples(97.0, sd=0.06, n=8, seed=5))
    a, b = images_interval(eager.__dict__), images_interval(ort.__dict__)
    assert a[0] <= b[1] and b[0] <= a[1]  # the two intervals overlap
    best = fastest_rows([eager.__dict__, ort.__dict__])[0]
    faster, slower = sorted((eager, ort), key=lambda r: -r.images_per_s)
    assert best["fastest"] == (f"{NO_CLEAR_WINNER}: {faster.backend} fp32 contiguous and {slower.backend} fp32 "
                               f"contiguous overlap")
    assert best["fastest_fp32"] == best["fastest"] and best.get("images_per_s") is None
    # far apart: a winner, with its interval
    clear = sampled("onnxruntime", 1, noisy_samples(50.0, n=30, seed=6))
    best = fastest_rows([sampled("eager", 1, noisy_samples(100.0, n=30)).__dict__, clear.__dict__])[0]
    assert best["fastest"] == "onnxruntime fp32 contiguous"
    assert best["images_per_s_low"] <= best["images_per_s"] <= best["images_per_s_high"]


def test_the_fastest_summary_names_no_winner_when_a_row_ran_under_load(tmp_path):
    quiet = sampled("eager", 1, noisy_samples(100.0, n=30))
    loaded = sampled("onnxruntime", 1, noisy_samples(300.0, n=30, seed=7), under_load=True)
    best = fastest_rows([quiet.__dict__, loaded.__dict__])[0]
    assert best["fastest"] == f"{NO_CLEAR_WINNER}: onnxruntime fp32 contiguous ran under load"
    # a load not recorded (None) is no reason
    unknown = sampled("onnxruntime", 1, noisy_samples(300.0, n=30, seed=7), under_load=None)
    assert fastest_rows([quiet.__dict__, unknown.__dict__])[0]["fastest"] == "eager fp32 contiguous"
    text = cli("report", results_file(tmp_path, [quiet, loaded]), "--best").output
    assert "no clear winner: onnxruntime fp32 contiguous ran under load" in text


# --- the significance gate -----------------------------------------------------------------------------------

def two_runs(tmp_path, old_rows, new_rows):
    return results_file(tmp_path, old_rows, "old"), results_file(tmp_path, new_rows, "new")


def test_the_same_code_with_one_row_made_noisy_is_inconclusive_not_regressed(tmp_path):
    a, b = noisy_samples(100.0, seed=10), noisy_samples(40.0, seed=11)
    # the same run again, one row's calls spread (a neighbour woke up): its median 12% up, its interval wide
    spread = tuple(40.0 + (x - 40.0) * 15 + 4.0 * (i % 2) for i, x in enumerate(b))
    old, new = two_runs(tmp_path, [sampled("eager", 1, a), sampled("onnxruntime", 1, b)],
                        [sampled("eager", 1, a), sampled("onnxruntime", 1, spread)])
    data_old, data_new = read_run(old), read_run(new)
    assert data_new["results"][1]["median_ms"] > 1.1 * data_old["results"][1]["median_ms"]  # beyond the threshold
    comparison = compare_runs(data_new, data_old)
    verdicts = {r["backend"]: r for r in comparison.rows}
    assert verdicts["eager"]["verdict"] == "unchanged"
    assert verdicts["eager"]["change_low_pct"] <= 0 <= verdicts["eager"]["change_high_pct"]
    assert verdicts["onnxruntime"]["verdict"] == "inconclusive" and verdicts["onnxruntime"]["why"] == "new noisy"
    assert comparison.regressions == []
    result = cli("report", new, "--compare", old)
    assert result.exit_code == 0, result.output
    assert "1 unchanged, 1 inconclusive" in result.output
    failing = cli("report", new, "--compare", old, "--fail-on", "inconclusive")
    assert failing.exit_code == 1
    assert failing.output.strip().splitlines()[-1] == (
        "error: 1 of 2 cases inconclusive (--fail-on inconclusive; first: vgg16 onnxruntime fp32 contiguous batch "
        "1: new noisy)")
    assert cli("report", new, "--compare", old, "--fail-on", "sometimes").exit_code == 2


def test_a_planted_20_percent_slowdown_is_regressed_with_an_interval_that_excludes_zero(tmp_path):
    old_rows = [sampled("eager", 1, noisy_samples(100.0, seed=20)), sampled("eager", 8, noisy_samples(700.0, seed=21))]
    slow = tuple(1.2 * x for x in noisy_samples(100.0, seed=22))  # another run of the same case, 20% slower
    new_rows = [sampled("eager", 1, slow), sampled("eager", 8, noisy_samples(700.0, seed=23))]
    old, new = two_runs(tmp_path, old_rows, new_rows)
    comparison = compare_runs(read_run(new), read_run(old))
    r = {c["batch_size"]: c for c in comparison.rows}
    assert r[1]["verdict"] == "regressed"
    assert 5 < r[1]["change_low_pct"] <= r[1]["change_pct"] <= r[1]["change_high_pct"]  # beyond +5%, so beyond 0
    assert abs(r[1]["change_pct"] - 20) < 5 and r[1]["change_low_pct"] < 20 < r[1]["change_high_pct"]
    assert r[1]["p_value"] < 1e-6
    assert r[8]["verdict"] == "unchanged" and r[8]["change_low_pct"] >= -5 and r[8]["change_high_pct"] <= 5
    result = cli("report", new, "--compare", old)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(
        "error: 1 of 2 cases regressed beyond 5% (worst: vgg16 eager fp32 contiguous batch 1: +")
    # the same slowdown measured under load says nothing: inconclusive, exit 0
    loaded = [sampled("eager", 1, slow, under_load=True), new_rows[1]]
    comparison = compare_runs(read_run(results_file(tmp_path, loaded, "loaded")), read_run(old))
    assert comparison.rows[0]["verdict"] == "inconclusive" and comparison.rows[0]["why"] == "new ran under load"


def test_improved_too_few_samples_and_an_interval_across_the_threshold():
    old = sampled("eager", 1, noisy_samples(100.0, seed=30)).__dict__
    faster = sampled("eager", 1, tuple(0.7 * x for x in noisy_samples(100.0, seed=31))).__dict__
    assert judge(old, faster, 0.05)["verdict"] == "improved"
    five = sampled("eager", 1, tuple(1.3 * x for x in noisy_samples(100.0, n=5, sd=0.001, seed=32))).__dict__
    verdict = judge(old, five, 0.05)
    assert verdict["verdict"] == "inconclusive" and verdict["why"] == "5 samples (fewer than 6)"
    # +5% planted with a 5% threshold: the interval straddles it
    edge = sampled("eager", 1, tuple(1.05 * x for x in noisy_samples(100.0, seed=33))).__dict__
    verdict = judge(old, edge, 0.05)
    assert verdict["verdict"] == "inconclusive" and verdict["why"] == "interval crosses ±5%"
    assert verdict["change_low_pct"] < 5 < verdict["change_high_pct"]


def test_rows_without_samples_are_judged_on_their_medians_as_before():
    old = {**row("eager", 1, 500.0).__dict__, "samples_ms": [], "median_ci_low_ms": None, "median_ci_high_ms": None}
    new = {**old, "median_ms": 540.0}
    assert judge(old, new, 0.05) == {"change_pct": pytest.approx(8.0), "change_low_pct": None,
                                     "change_high_pct": None, "p_value": None, "verdict": "regressed",
                                     "why": "no samples: medians alone"}
    verdict = judge(old, {**new, "noisy": True}, 0.05)
    assert verdict["verdict"] == "inconclusive" and verdict["why"] == "no samples: medians alone; new noisy"


def test_the_bootstrap_is_seeded_and_covers_the_true_ratio():
    a, b = noisy_samples(100.0, seed=40), noisy_samples(125.0, seed=41)
    assert bootstrap_ratio(a, b) == bootstrap_ratio(a, b)
    # over many pairs of runs drawn from known distributions, the 95% interval holds the true ratio of medians
    # (1.25) about 95% of the time: here at least 85 of 100 (binomial: below that with probability < 1e-3)
    true = 1.25
    hits = 0
    for seed in range(100):
        rng = np.random.default_rng(1000 + seed)
        old = 100 * np.exp(0.05 * rng.standard_normal(40))
        new = true * 100 * np.exp(0.05 * rng.standard_normal(40))
        low, high = bootstrap_ratio(old, new, resamples=500, seed=seed)
        hits += low <= true <= high
    assert hits >= 85, hits


# --- end to end ----------------------------------------------------------------------------------------------

def test_a_tiny_run_records_ordered_intervals(tmp_path):
    result = cli("run", "--models", "vgg11", "--width", "0.0625", "--hidden", "32", "--image-size", "32",
                 "--batch-sizes", "1", "--backends", "eager", "--memory-format", "contiguous", "--min-time", "0.05",
                 "--min-iters", "10", "--warmup-time", "0", "--out", tmp_path / "run.json",
                 "--export-cache", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    row_ = read_run(tmp_path / "run.json")["results"][0]
    assert row_["status"] == "ok" and len(row_["samples_ms"]) >= 10
    assert row_["median_ci_low_ms"] <= row_["median_ms"] <= row_["median_ci_high_ms"]
    stats = Stats(tuple(row_["samples_ms"]))
    assert (row_["median_ci_low_ms"], row_["median_ci_high_ms"]) == (stats.median_interval.low_ms,
                                                                      stats.median_interval.high_ms)
    assert row_["noisy"] == stats.noisy
    line = next(x for x in result.output.splitlines() if x.split()[:1] in (["eager"], ["eager*"]))
    assert "±" in line


def test_the_mann_whitney_p_value_is_scipys_without_scipy():
    """vggbench computes it itself (scipy is not in the default install): the exact distribution where a run has
    at most 8 samples and no value repeats, the normal approximation with tie and continuity corrections else."""
    rng = np.random.default_rng(7)
    cases = [([1.0] * 5, [1.0] * 5), ([1.0, 2.0, 3.0], [4.0, 5.0]), ([1.0], [2.0])]
    for _ in range(400):
        n1, n2 = (int(n) for n in rng.integers(1, 14, size=2))
        if rng.random() < 0.2:
            n2 = int(rng.integers(20, 200))  # one small run against a long one: still exact
        if rng.random() < 0.4:  # ties: timer resolution
            cases.append((rng.integers(0, 6, n1) * 0.5, rng.integers(0, 6, n2) * 0.5))
        else:
            cases.append((rng.random(n1), rng.random(n2) + rng.random() * 0.6))
    for old, new in cases:
        expected = float(scipy.stats.mannwhitneyu(new, old, alternative="two-sided").pvalue)
        assert mann_whitney_p(old, new) == pytest.approx(expected, rel=1e-9, abs=1e-12), (old, new)
    assert mann_whitney_p([1.0, float("nan")], [2.0, 3.0]) is None
