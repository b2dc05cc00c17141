"""`vggbench loadgen`: the Server search (with an injected run), the batching SUT (with a fake runner), the query
sample library, LoadGen's summary parsed from real runs, and the four scenarios end to end on a tiny model."""

from __future__ import annotations

import copy
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import TINY, TINY_IMAGE
from vggbench.bench.compare import compare_runs
from vggbench.bench.qsl import SampleLibrary, load_images
from vggbench.bench.report import render_run, scenario_rows
from vggbench.bench.results import BenchRun, read_run
from vggbench.bench.scenarios import LoadgenSettings
from vggbench.bench.search import (
    Outcome,
    confirm_step,
    early_stopping_queries,
    find_peak_qps,
    queries_at_late_fraction,
)
from vggbench.bench.summary import parse_summary, read_summary
from vggbench.bench.sut import BatchingSut, batch_within
from vggbench.cli import main
from vggbench.core.errors import ConfigError, ResultsError
from vggbench.core.imagenet import IMAGENET_MEAN, IMAGENET_STD

pytest.importorskip("mlperf_loadgen")


# --- the Server search ---------------------------------------------------------------------------------

def capacity(peak: float, full_margin: float = 0.97, calls: list | None = None):
    """A fake LoadGen: probes hold the bound up to `peak`, full runs are VALID up to `full_margin` x peak."""

    def run(qps: float, probe: bool) -> Outcome:
        if calls is not None:
            calls.append((qps, probe))
        return Outcome(valid=not probe and qps <= peak * full_margin, latency_ok=qps <= peak)

    return run


@pytest.mark.parametrize("start", [3.0, 10.0, 40.0, 400.0])
def test_search_finds_the_highest_valid_rate_within_the_runs(start):
    calls = []
    result = find_peak_qps(capacity(20.0, calls=calls), start, max_runs=10, tolerance=0.05)
    assert result.qps is not None and 20.0 * 0.97 * 0.9 <= result.qps <= 20.0 * 0.97
    assert result.runs == len(calls) <= 10
    assert result.best.qps == result.qps and not result.best.probe and result.best.outcome.valid
    assert calls[0] == (start, True)  # starts from the estimate
    first_full = next(i for i, (_, probe) in enumerate(calls) if not probe)
    assert first_full > 0 and not any(probe for _, probe in calls[first_full:])  # probes first, then full runs
    trials = result.to_dict()["trials"]
    assert [t["qps"] for t in trials] == [c[0] for c in calls]


def test_search_steps_down_when_the_full_run_is_invalid_then_bisects_up():
    # probes pass up to 20, but full runs only up to 15: the full runs step down by 10% until one is VALID, then
    # halve the gap to the lowest INVALID rate while runs are left
    result = find_peak_qps(capacity(20.0, full_margin=0.75), 16.0, max_runs=12, tolerance=0.02)
    full = [t for t in result.trials if not t.probe]
    down = full[:next(i for i, t in enumerate(full) if t.outcome.valid) + 1]
    assert [t.outcome.valid for t in down] == [False] * (len(down) - 1) + [True]
    assert all(b.qps == pytest.approx(a.qps * 0.9, rel=1e-2) for a, b in zip(down, down[1:], strict=False))
    up = full[len(down):]
    assert up and all(down[-1].qps < t.qps < down[-2].qps for t in up)  # between the VALID and INVALID rates
    assert result.qps is not None and down[-1].qps < result.qps <= 15.0  # higher than the first VALID rate
    assert result.best.qps == result.qps and result.runs <= 12


def test_search_keeps_a_quarter_of_its_runs_for_full_runs():
    # probes pass far above what full runs sustain: the probes stop early enough for three full runs to step down
    result = find_peak_qps(capacity(20.0, full_margin=0.85), 1.0, max_runs=12, tolerance=0.01)
    assert sum(not t.probe for t in result.trials) >= 3
    assert result.qps is not None and result.qps <= 17.0  # the third full run, at 20 x 0.9 x 0.9


def test_a_full_run_far_over_the_bound_steps_down_further():
    # probes hold up to 20 QPS; full runs are VALID up to 12 and report p99 / bound = rate / 12 above it
    def run(qps: float, probe: bool) -> Outcome:
        if probe:
            return Outcome(False, qps <= 20.0)
        return Outcome(qps <= 12.0, qps <= 12.0, over_bound=qps / 12.0)

    result = find_peak_qps(run, 20.0, max_runs=8, tolerance=0.05)
    full = [t.qps for t in result.trials if not t.probe]
    assert full[0] == 20.0 and full[1] == pytest.approx(12.0, rel=1e-2)  # 20 x (1 / 1.67), not 20 x 0.9
    assert result.qps == 12.0 and all(q > 12.0 for q in full[2:])  # the bisection above found nothing higher
    assert confirm_step(Outcome(False, False, over_bound=1.05)) == 0.9  # just over: the usual 10%
    assert confirm_step(Outcome(False, False, over_bound=5.0)) == 0.5  # far over: at most halved
    assert confirm_step(Outcome(False, False)) == 0.9


EARLY_STOPPING_WANTS_MORE = """================================================
MLPerf Results Summary
================================================
SUT name : PySUT
Scenario : Server
Mode     : PerformanceOnly
Completed samples per second    : 1.43
Result is : INVALID
  Performance constraints satisfied : Yes
  Min duration satisfied : Yes
  Min queries satisfied : Yes
  Early stopping satisfied: NO
Recommendations:
Early Stopping Result:
 * Run unsuccessful.
 * Processed 500 queries.
 * Would need to run at least 162 more queries,
 with the run being successful if every additional
 query were under latency.
"""


def test_a_run_that_held_the_bound_says_how_many_more_queries_early_stopping_wants(tmp_path):
    from vggbench.bench.summary import read_summary

    (tmp_path / "mlperf_log_summary.txt").write_text(EARLY_STOPPING_WANTS_MORE)
    summary = read_summary(tmp_path)
    assert summary.valid is False and summary.latency_ok and summary.more_queries == 162
    # an extended full run counts as the two LoadGen runs it took
    result = find_peak_qps(lambda qps, probe: Outcome(not probe, True, runs=1 if probe else 2), 5.0, max_runs=4)
    assert result.runs == len(result.trials) + 1 and result.trials[-1].to_dict()["loadgen_runs"] == 2


def test_early_stopping_arithmetic_matches_loadgens_and_sizes_the_extension_from_the_late_fraction(tmp_path):
    from vggbench.bench.mlperf import SCENARIO_TABLE

    # LoadGen's own figures (its summaries): 459 on-time queries at p99; 500 + 162 with 1 late, 500 + 338 with 2,
    # 1005 + 591 with 7 (VGG16 on onnxruntime, 1.1 QPS)
    assert [early_stopping_queries(late) for late in (0, 1, 2, 7)] == [459, 662, 838, 1596]
    assert queries_at_late_fraction(0.0, most=2000) == 459
    assert queries_at_late_fraction(0.004, most=2000) == 1157
    assert queries_at_late_fraction(0.006, most=2000) is None  # 2,798 needed
    assert queries_at_late_fraction(0.01, most=10**6) is None  # at the percentile itself: never

    lines = []

    def extension(late, more):
        (tmp_path / "mlperf_log_detail.txt").write_text("".join(
            f':::MLLOG {{"key": "{key}", "value": {value}, "time_ms": 1.0}}\n'
            for key, value in (("result_query_count", 500), ("result_overlatency_query_count", late))))
        summary = parse_summary(EARLY_STOPPING_WANTS_MORE.replace("162", str(more)))
        return SCENARIO_TABLE["server"].extension(summary, tmp_path, LoadgenSettings(), lines.append)

    assert extension(1, 162) == int(662 * 1.2)  # 0.2% late: what LoadGen asked for is enough
    assert extension(2, 338) == int(1157 * 1.2)  # 0.4% late: more than LoadGen's 838 (its "if all on time")
    assert extension(3, 509) is None and "3 of 500 queries late" in lines[-1] and "not extended" in lines[-1]


def test_search_is_bounded_and_says_when_nothing_was_valid():
    never = find_peak_qps(lambda qps, probe: Outcome(False, False), 10.0, max_runs=4)
    assert never.qps is None and never.runs == 4 and never.best is None
    one = find_peak_qps(capacity(20.0), 10.0, max_runs=1)  # one run: a full run at the start rate
    assert one.runs == 1 and one.qps == 10.0 and not one.trials[0].probe
    with pytest.raises(ConfigError):
        find_peak_qps(capacity(20.0), 0.0, max_runs=3)
    with pytest.raises(ConfigError):
        find_peak_qps(capacity(20.0), 1.0, max_runs=0)


# --- the batching SUT --------------------------------------------------------------------------------

class FakeRunner:
    """infer(): each sample's row is [index, batch size]; records the batches and how many ran at once."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches, self.delay, self.running, self.most = [], delay, 0, 0
        self.lock = threading.Lock()

    def infer(self, indices):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.batches.append(list(indices))
        time.sleep(self.delay)
        with self.lock:
            self.running -= 1
        return np.array([[i, len(indices)] for i in indices], dtype=np.float32)


class Answers:
    def __init__(self) -> None:
        self.rows, self.lock = {}, threading.Lock()

    def __call__(self, pairs):
        with self.lock:
            for sid, row in pairs:
                assert sid not in self.rows  # each sample answered once
                self.rows[sid] = row.copy()


def test_server_batch_is_the_largest_within_the_budget_and_larger_ones_are_not_timed():
    timed = []

    def seconds(size):  # 0.2 s per image, as VGG16 on 2 cores
        timed.append(size)
        return 0.2 * size

    assert batch_within(seconds, 8, 0.25) == 1 and timed == [2]  # a batch of 2 is over: 4 and 8 are not timed
    timed.clear()
    assert batch_within(seconds, 8, 0.8) == 4 and timed == [2, 4, 8]
    timed.clear()
    assert batch_within(seconds, 6, 10.0) == 6 and timed == [2, 4, 6]  # max_batch itself, not only powers of 2
    assert batch_within(seconds, 1, 10.0) == 1 and timed == [2, 4, 6]  # nothing to time


def test_offline_queue_runs_in_batches_of_at_most_max_batch():
    runner, answers = FakeRunner(), Answers()
    with BatchingSut(runner.infer, answers, max_batch=8, max_wait_s=0.0) as sut:
        sut.issue([(100 + i, i % 5) for i in range(20)])
        sut.flush()
    assert sorted(len(b) for b in runner.batches) == [4, 8, 8]
    assert {sid: int(row[0]) for sid, row in answers.rows.items()} == {100 + i: i % 5 for i in range(20)}
    described = sut.describe()
    assert {k: described[k] for k in ("max_batch", "max_wait_ms", "workers", "batches", "mean_batch")} == \
        {"max_batch": 8, "max_wait_ms": 0.0, "workers": 1, "batches": 3, "mean_batch": 20 / 3}


def test_the_sut_times_each_samples_queue_and_each_batchs_compute():
    runner, answers = FakeRunner(delay=0.05), Answers()
    with BatchingSut(runner.infer, answers, max_batch=1, max_wait_s=0.0) as sut:
        sut.issue([(i, i) for i in range(3)])  # one at a time: the third queues behind two batches
    described = sut.describe()
    compute, queued = described["compute_ms"], described["queued_ms"]
    assert len(sut.compute_s) == 3 and len(sut.queued_s) == 3
    assert 50 <= compute["p50"] <= compute["p90"] <= compute["p99"] <= compute["max"]
    assert queued["max"] >= 100 and sorted(sut.queued_s) == sut.queued_s  # later samples queued longer
    assert BatchingSut(runner.infer, answers, max_batch=1, max_wait_s=0.0).describe()["compute_ms"] is None


def test_server_batches_wait_for_more_samples_up_to_max_wait():
    runner, answers = FakeRunner(), Answers()
    with BatchingSut(runner.infer, answers, max_batch=4, max_wait_s=2.0) as sut:
        sut.issue([(1, 0)])
        time.sleep(0.05)
        sut.issue([(2, 1)])  # arrives while the first waits: one batch
        time.sleep(0.05)
        sut.flush()  # no more: run what is queued now, not after 2 s
        deadline = time.monotonic() + 1.5
        while len(answers.rows) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert runner.batches == [[0, 1]]
    runner, answers = FakeRunner(), Answers()
    with BatchingSut(runner.infer, answers, max_batch=4, max_wait_s=0.0) as sut:
        sut.issue([(1, 0)])
        time.sleep(0.05)
        sut.issue([(2, 1)])
    assert runner.batches == [[0], [1]]  # no waiting: each sample alone


def test_workers_run_batches_concurrently_and_errors_still_answer_every_sample():
    runner, answers = FakeRunner(delay=0.05), Answers()
    with BatchingSut(runner.infer, answers, max_batch=1, max_wait_s=0.0, workers=3) as sut:
        sut.issue([(i, i) for i in range(9)])
    assert runner.most >= 2 and len(answers.rows) == 9

    def broken(indices):
        raise RuntimeError("kernel failed")

    answers = Answers()
    with BatchingSut(broken, answers, max_batch=2, max_wait_s=0.0) as sut:
        sut.issue([(i, i) for i in range(5)])
    assert len(answers.rows) == 5 and all(row.size == 0 for row in answers.rows.values())
    assert isinstance(sut.error, RuntimeError)
    with pytest.raises(ValueError):
        BatchingSut(broken, answers, max_batch=0, max_wait_s=0.0)


# --- the query sample library --------------------------------------------------------------------------

def test_library_holds_preprocessed_real_images_and_only_serves_loaded_ones():
    digits = load_images("digits", TINY_IMAGE, IMAGENET_MEAN, IMAGENET_STD, count=12)
    assert digits.images.shape == (12, 3, TINY_IMAGE, TINY_IMAGE) and digits.labels.shape == (12,)
    assert digits.split == "test" and set(digits.labels.tolist()) <= set(range(10))
    photos = load_images("photos", TINY_IMAGE, IMAGENET_MEAN, IMAGENET_STD, count=6)
    assert photos.images.shape[0] == 6 and photos.labels is None
    assert np.allclose(photos.images[2].numpy(), photos.images[0].flip(-1).numpy())  # a photo's mirror image
    auto = load_images("auto", TINY_IMAGE, IMAGENET_MEAN, IMAGENET_STD, weights_meta={"dataset": "digits"}, count=3)
    assert auto.source == "digits"
    library = SampleLibrary(digits, performance_count=100)
    assert library.performance_count == 12
    library.load([3, 5])
    assert np.array_equal(library.batch([5, 3]).numpy(), digits.images[[5, 3]].numpy())
    library.unload([3])
    with pytest.raises(RuntimeError, match="did not load"):
        library.batch([3])


def test_settings_defaults_follow_the_scenario_and_short_mode():
    s = LoadgenSettings()
    assert (s.min_duration_for("server"), s.min_queries_for("singlestream"), s.min_queries_for("server")) == \
        (60.0, 1024, 500)
    short = LoadgenSettings(short=True, min_queries=70)
    assert short.min_duration_for("offline") == 0.25 and short.min_queries_for("server") == 70
    with pytest.raises(ConfigError):
        LoadgenSettings(scenarios=("batch",))


# --- end to end: the four scenarios in short mode on a tiny model ----------------------------------------

@pytest.fixture(scope="module")
def four_scenarios(tmp_path_factory):
    """One `vggbench loadgen` of the four scenarios (19 s on a 2-core machine loaded by six other jobs), shared by
    the tests below."""
    out = tmp_path_factory.mktemp("loadgen") / "lg.json"
    args = ["loadgen", "--models", "vgg11", "--width", TINY["width"], "--hidden", TINY["hidden"], "--image-size",
            TINY_IMAGE, "--images", "digits", "--count", 32, "--scenario", "singlestream,multistream,server,offline",
            "--short", "--samples-per-query", 4, "--latency-bound-ms", 100, "--search-max-runs", 3,
            "--server-batch-budget", 1e-6, "--out", out,  # no batch of 2 runs within 0.1 us: Server's is 1
            "--db", out.parent / "results.db"]  # the module's own: each test's VGGBENCH_DB is another
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_the_scenarios_are_recorded_in_the_results_database(four_scenarios):
    from vggbench.bench.db import Database

    out, _ = four_scenarios
    with Database(out.parent / "results.db") as database:
        assert [(r["kind"], r["cases"]) for r in database.runs()] == [("loadgen", 4)]
        names = [n for (n,) in database.engine.connect().exec_driver_sql("SELECT name FROM scenarios ORDER BY name")]
        assert database.check() == []
    assert names == sorted(r["scenario"]["name"] for r in read_run(out)["results"])


def test_four_scenarios_run_and_their_summaries_land_in_the_results(four_scenarios):
    out, output = four_scenarios
    data = read_run(out)
    rows = {r["scenario"]["name"]: r for r in data["results"]}
    assert list(rows) == ["singlestream", "multistream", "offline", "server"]  # server last: it starts from offline
    for r in rows.values():
        block = r["scenario"]
        assert r["status"] == "ok" and block["result"] in ("VALID", "INVALID")
        assert (block["result"] == "INVALID") == bool(block["reasons"])  # INVALID always says why
        assert 0 < block["p50_ms"] <= block["p90_ms"] <= block["p99_ms"] <= block["p99_9_ms"] <= block["max_ms"]
        assert r["median_ms"] == block["p50_ms"] and r["p99_ms"] == block["p99_ms"]
        folder = out.parent / block["logs"]
        assert (folder / "mlperf_log_summary.txt").is_file() and (folder / "mlperf_log_detail.txt").is_file()
        summary = read_summary(folder)  # the parser on the real summary: it agrees with LoadGen's detail log
        detail = _detail(folder)
        assert summary.result == detail["result_validity"] == block["result"]
        assert summary.percentile("99") == pytest.approx(detail["result_99.00_percentile_latency_ns"] / 1e6)
        assert summary.percentile("99.9") == pytest.approx(detail["result_99.90_percentile_latency_ns"] / 1e6)
        assert block["queries"] == detail["result_query_count"]
        assert summary.constraints["Min duration satisfied"] == detail["result_min_duration_met"]
        assert summary.constraints["Early stopping satisfied"] == detail["early_stopping_met"]
    assert rows["singlestream"]["batch_size"] == 1 and rows["multistream"]["batch_size"] == 4
    assert rows["multistream"]["scenario"]["samples_per_query"] == 4
    assert rows["singlestream"]["scenario"]["queries"] >= 64 and rows["multistream"]["scenario"]["queries"] >= 662
    assert rows["singlestream"]["images_per_s"] == rows["singlestream"]["scenario"]["samples_per_s"]
    server = rows["server"]["scenario"]
    search = server["search"]
    # --search-max-runs 3; a full run that early stopping made run again counts two, and may end the search one over
    assert 1 <= search["runs"] <= 3 + 1 and search["latency_bound_ms"] == 100.0
    assert search["start_qps"] <= rows["offline"]["scenario"]["samples_per_s"]  # started from Offline's rate
    if search["qps"] is not None:  # the rate reported is that of the full run LoadGen found VALID
        assert server["result"] == "VALID" and server["target_qps"] == search["qps"]
        assert server["p99_ms"] <= 100.0
    for folder in search["folders"]:
        assert (out.parent / Path(server["logs"]).parent / folder / "mlperf_log_summary.txt").is_file()
    assert "LoadGen scenarios" in output and "singlestream" in output
    assert json.loads(out.read_text())["settings"]["sut"] == {"max_batch": 8, "server_batch_budget": 1e-6,
                                                              "max_wait_ms": 5.0, "workers": 1}
    # Server's batch capped by the budget, Offline's not; the policy is recorded with the row
    assert rows["offline"]["batch_size"] == 8 and rows["offline"]["scenario"]["sut"]["max_batch"] == 8
    assert rows["server"]["batch_size"] == 1
    assert {k: server["sut"][k] for k in ("max_batch", "max_batch_setting", "batch_budget_ms")} == \
        {"max_batch": 1, "max_batch_setting": 8, "batch_budget_ms": pytest.approx(1e-4)}
    assert "Server batches of at most 1, within 1e-06 of the 100 ms bound (a batch of 2 took" in output


def _detail(folder: Path) -> dict:
    found = {}
    for line in (folder / "mlperf_log_detail.txt").read_text().splitlines():
        entry = json.loads(line.split(":::MLLOG", 1)[1])
        found[entry["key"]] = entry["value"]
    return found


def test_summary_parser_reads_verdicts_reasons_and_percentiles(four_scenarios):
    out, _ = four_scenarios
    data = read_run(out)
    folder = out.parent / data["results"][0]["scenario"]["logs"]
    text = (folder / "mlperf_log_summary.txt").read_text()
    summary = parse_summary(text)
    assert (summary.scenario, summary.mode) == ("SingleStream", "PerformanceOnly")
    assert set(summary.percentiles_ms) == {"50", "90", "95", "97", "99", "99.9"}
    assert summary.headline_ms == summary.percentile("90")  # SingleStream's metric is its p90
    assert summary.parameter("min_query_count", int) == 64
    broken = text.replace("Result is : VALID", "Result is : INVALID").replace(
        "Min duration satisfied : Yes", "Min duration satisfied : NO")
    assert "min duration not satisfied" in parse_summary(broken).reasons()
    with pytest.raises(ResultsError):
        parse_summary("not a summary")


def test_report_and_compare_read_the_scenario_block(four_scenarios, tmp_path):
    out, _ = four_scenarios
    data = read_run(out)
    table = scenario_rows(data["results"])
    assert [r["scenario"] for r in table] == ["singlestream", "multistream", "offline", "server"]
    for row, result in zip(table, data["results"], strict=True):  # the SUT's own share of the latency
        sut = result["scenario"]["sut"]
        assert row["compute_p99_ms"] == sut["compute_ms"]["p99"] and row["queued_p99_ms"] == sut["queued_ms"]["p99"]
        assert 0 < sut["compute_ms"]["p50"] <= sut["compute_ms"]["max"]
    assert "LoadGen scenarios" in render_run(data, "github")
    slower = copy.deepcopy(data)
    ss = slower["results"][0]["scenario"]
    ss["p90_ms"] *= 2
    comparison = compare_runs(slower, data)
    verdicts = {r["scenario"]: r["verdict"] for r in comparison.scenario_rows}
    assert verdicts["singlestream"] == "slower" and comparison.regressions
    assert compare_runs(data, copy.deepcopy(data)).regressions == [] or any(
        r["verdict"] == "not compared" for r in compare_runs(data, copy.deepcopy(data)).scenario_rows)
    bad = copy.deepcopy(data)
    bad["results"][0]["scenario"]["result"] = "MAYBE"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ResultsError, match="scenario.result"):
        read_run(path)


def test_accuracy_mode_scores_loadgens_accuracy_log_against_labels_and_eager(tmp_path):
    from vggbench.bench.loadgen import loadgen

    run = loadgen(models=["vgg11"], width=TINY["width"], hidden=TINY["hidden"], num_classes=10,
                  image_size=TINY_IMAGE, backends=["eager"],
                  settings=LoadgenSettings(scenarios=("offline",), mode="accuracy", images="digits", count=20,
                                           short=True), export_cache=tmp_path / "cache", logs=tmp_path / "logs")
    (row,) = [r for r in run.results]
    accuracy = row.scenario["accuracy"]
    assert accuracy["images"] == 20 and accuracy["agreement_top1"] == 1.0 and 0 <= accuracy["top1"] <= 1
    assert row.scenario["result"] is None and row.median_ms is None  # an accuracy run has no timing
    assert (tmp_path / accuracy["logs"] / "mlperf_log_accuracy.json").is_file()
    path, _ = BenchRun(run.settings, run.environment, run.results).write(tmp_path / "acc.json")
    assert read_run(path)["results"][0]["scenario"]["accuracy"]["top1"] == accuracy["top1"]


@pytest.mark.parametrize("args, message", [
    (["--scenario", "batch"], "unknown scenarios 'batch'"),
    (["--max-batch", "0"], "--max-batch must be in [1, 4096], got 0"),
    (["--latency-bound-ms", "-1"], "--latency-bound-ms must be in (0, 3600000], got -1.0"),
    (["--mode", "fast"], "unknown mode 'fast'"),
])
def test_bad_options_are_one_line_errors_before_any_work(args, message, tmp_path):
    result = CliRunner().invoke(main, ["loadgen", *args, "--out", str(tmp_path / "r.json")])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not list(tmp_path.iterdir())  # nothing claimed, nothing written


def test_targets_that_cannot_run_are_rows_that_say_why(tmp_path):
    from vggbench.bench.loadgen import loadgen
    from vggbench.bench.scenarios import SutSettings

    run = loadgen(models=["vgg11"], width=TINY["width"], hidden=TINY["hidden"], image_size=TINY_IMAGE,
                  backends=["compile", "onnxruntime"], memory_formats=["channels_last"],
                  settings=LoadgenSettings(scenarios=("singlestream", "server"), short=True),
                  sut=SutSettings(workers=2), export_cache=tmp_path / "cache")
    reasons = {(r.backend, r.scenario["name"]): (r.status, r.reason) for r in run.results}
    assert reasons["compile", "server"][0] == "unsupported" and "--workers 1" in reasons["compile", "server"][1]
    assert reasons["onnxruntime", "singlestream"] == ("unsupported", "onnxruntime takes contiguous input only, "
                                                                     "not channels_last")
    assert not (tmp_path / "cache").exists()  # nothing was exported for them


def test_every_loadgen_and_sut_setting_is_an_option_of_the_command():
    import dataclasses

    from vggbench.bench.scenarios import SutSettings

    params = {p.name for p in main.commands["loadgen"].params}
    for cls in (LoadgenSettings, SutSettings):
        wanted = {f.name for f in dataclasses.fields(cls) if f.metadata["vggbench.setting"].cli}
        assert wanted <= params, wanted - params
