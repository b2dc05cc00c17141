"""`vggbench report`: tables with speed-ups, formats, comparisons with exit codes, machine checks, plots.
Results here are made by hand, so every number is known."""

from __future__ import annotations

import copy
import csv
import io
import json

import pytest
from click.testing import CliRunner

from vggbench.bench.compare import compare_runs, parse_threshold
from vggbench.bench.report import fastest_rows, parse_baseline, render_run, run_rows
from vggbench.bench.results import BenchRun, read_run
from vggbench.bench.rows import BenchResult, Case
from vggbench.cli import main
from vggbench.core.env import capture
from vggbench.core.errors import ConfigError, ResultsError

ENV = {**capture(), "gemm_peaks": [{"device": "cpu", "precision": "fp32", "dtype": "float32", "n": 2048, "reps": 3,
                                    "threads": 2, "gflops_per_s": 100.0, "seconds": 0.5}]}


def row(backend, batch, median_ms, memory_format="contiguous", precision="fp32", status="ok", reason="",
        noisy=False, model="vgg16", spread=0.0, n=5, **extra):
    """A row whose `n` samples lie evenly within ±`spread` of `median_ms` (so the median is exactly it)."""
    case = Case(model=model, image_size=224, batch_size=batch, backend=backend, device="cpu", precision=precision,
                memory_format=memory_format, threads=2, weights="random (seed 0)", warmup=1, warmup_time_s=1.0,
                min_time_s=3.0, min_iters=5, max_iters=200)
    if status != "ok":
        return BenchResult.failed(case, status, reason)
    ips = batch / (median_ms / 1e3)
    half = n // 2
    samples = tuple(median_ms * (1 + spread * (k - half) / max(half, 1)) for k in range(n))
    return BenchResult(**{**dict(vars(case), median_ms=median_ms, p90_ms=median_ms * 1.05, images_per_s=ips,
                                 gmacs_per_image=15.47, gflops_per_s=2 * 15.47 * ips, peak_gflops_per_s=100.0,
                                 peak_pct=2 * 15.47 * ips, noisy=noisy, iterations=n, samples_ms=samples), **extra})


def results_file(tmp_path, rows, name="new", env=ENV):
    run = BenchRun({"name": "test"}, copy.deepcopy(env), rows, 60.0, "2026-01-01T00:00:00+00:00")
    path, _ = run.write(tmp_path / f"{name}.json")
    return path


ROWS = [row("eager", 1, 500.0), row("eager", 8, 3200.0), row("eager", 1, 400.0, "channels_last"),
        row("eager", 8, 1600.0, "channels_last"), row("onnxruntime", 1, 180.0), row("onnxruntime", 8, 1280.0),
        row("onnxruntime", 1, None, "channels_last", status="unsupported",
            reason="onnxruntime takes contiguous input only, not channels_last"),
        row("eager", 1, 120.0, model="vgg11", noisy=True, spread=0.2)]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_speedup_is_relative_to_the_baseline_at_the_same_batch_size():
    rows = run_rows([r.__dict__ for r in ROWS])
    speed = {(r["model"], r["backend"], r["memory_format"], r["batch_size"]): r["speedup"] for r in rows}
    assert speed["vgg16", "eager", "contiguous", 1] == pytest.approx(1.0)
    assert speed["vgg16", "eager", "channels_last", 8] == pytest.approx(2.0)
    assert speed["vgg16", "onnxruntime", "contiguous", 8] == pytest.approx(2.5)
    assert speed["vgg16", "onnxruntime", "channels_last", 1] is None
    assert speed["vgg11", "eager", "contiguous", 1] == pytest.approx(1.0)  # its own baseline, not vgg16's
    other = run_rows([r.__dict__ for r in ROWS], "onnxruntime")
    assert next(r["speedup"] for r in other if r["backend"] == "eager" and r["batch_size"] == 8
                and r["memory_format"] == "contiguous" and r["model"] == "vgg16") == pytest.approx(0.4)


def test_table_is_grouped_per_model_and_machine_with_readable_numbers(tmp_path):
    result = cli("report", results_file(tmp_path, ROWS))
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.startswith(f"vgg16 at 224x224 on cpu ({ENV['cpu']['model']}), 2 threads; GEMM peak GFLOP/s: fp32 100.0")
    assert "\nvgg11 at 224x224 on cpu" in text
    line = next(x for x in text.splitlines() if x.startswith("onnxruntime") and x.split()[3] == "8")
    # median 1280 ms, p90 1344, 6.25 img/s, 2 x 15.47 x 6.25 = 193.4 GFLOP/s, 193.4% of 100 (a file from before the
    # measured ceilings: read as it was written), no theoretical ceiling, 2.5x eager; five equal samples: an interval
    # of no width
    assert line.split() == ["onnxruntime", "fp32", "contiguous", "8", "1280", "1344", "6.25", "±", "0", "193.4",
                            "193.4", "-", "2.50", "±", "0", "no", "ok"]
    assert "unsupported: onnxruntime takes contiguous input only, not channels_last" in text
    # vgg11's five samples within ±20%: with five calls, the median's interval is min..max
    assert "noisy: 1 case(s) whose median's 95% interval reaches beyond ±5% of it" in text
    assert "timed fewer than 6 calls: no 95% interval of a median exists" in text


def test_github_csv_and_json_formats(tmp_path):
    path = results_file(tmp_path, ROWS)
    github = cli("report", path, "--format", "github").output
    assert github.startswith("**vgg16 at 224x224") and "| backend " in github
    table = list(csv.DictReader(io.StringIO(cli("report", path, "--format", "csv").output)))
    assert len(table) == len(ROWS) and table[0]["model"] == "vgg16" and table[0]["threads"] == "2"
    assert float(table[5]["speedup"]) == pytest.approx(2.5) and table[5]["median_ms"] == "1280.0"
    rows = json.loads(cli("report", path, "--format", "json").output)
    assert rows[5]["images_per_s"] == 6.25 and rows[6]["status"].startswith("unsupported: ")


def test_bad_results_files_are_one_line_errors(tmp_path):
    assert cli("report", tmp_path / "none.json").output.startswith("error: results file")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert "is not valid JSON" in cli("report", bad).output
    bad.write_text(json.dumps({"kind": "vggbench-run", "schema_version": 99, "results": []}))
    result = cli("report", bad)
    assert result.exit_code == 2 and "has schema_version 99; this vggbench reads 1" in result.output
    bad.write_text(json.dumps({"schema_version": 1, "parity": []}))
    with pytest.raises(ResultsError, match="not a vggbench results file"):
        read_run(bad)
    assert "baseline must look like" in cli("report", results_file(tmp_path, ROWS), "--baseline", "a:b:c:d").output


# --- compare -------------------------------------------------------------------------------------------

STEADY = {"spread": 0.01, "n": 21}  # 21 samples within ±1%: the median known to about ±0.5%


def test_compare_passes_within_the_threshold_and_fails_beyond_it(tmp_path):
    old = results_file(tmp_path, [row("eager", 1, 500.0, **STEADY), row("onnxruntime", 8, 1280.0, **STEADY),
                                  *ROWS[1:4]], "old")
    same = results_file(tmp_path, [row("eager", 1, 510.0, **STEADY), row("onnxruntime", 8, 1200.0, **STEADY)], "same")
    result = cli("report", same, "--compare", old)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[-8:] == ["old_median_ms", "new_median_ms", "change_pct", "change_low_pct",
                                     "change_high_pct", "p_value", "verdict", "why"]
    # +2%, its interval well within ±5%; -6.25%, its interval below -5%
    assert lines[2].split()[-7:-4] == ["500", "510", "2"] and lines[2].split()[-1] == "unchanged"
    assert lines[3].split()[-5] == "-6.25" and lines[3].split()[-1] == "improved"
    assert lines[-1] == "2 cases compared (1 unchanged, 1 improved); 3 only in the old run, 0 only in the new one"

    slower = results_file(tmp_path, [row("eager", 1, 540.0, **STEADY), row("onnxruntime", 8, 1200.0, **STEADY)],
                          "slower")
    result = cli("report", slower, "--compare", old)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("error: 1 of 2 cases regressed beyond 5% (worst: vgg16 "
                                                             "eager fp32 contiguous batch 1: +8.0% [+")
    assert cli("report", slower, "--compare", old, "--threshold", "10%").exit_code == 0


def test_a_case_that_no_longer_runs_is_a_regression(tmp_path):
    old = results_file(tmp_path, ROWS, "old")
    new = results_file(tmp_path, [row("eager", 1, None, status="oom", reason="CUDA out of memory")], "new")
    result = cli("report", new, "--compare", old)
    assert result.exit_code == 1 and "failed now" in result.output


def test_different_machines_are_refused_unless_allowed(tmp_path):
    other = copy.deepcopy(ENV)
    other["cpu"] = {**other["cpu"], "model": "Intel(R) Xeon(R) Platinum 8480+", "logical_cores": 112}
    old = results_file(tmp_path, ROWS, "old", env=other)
    new = results_file(tmp_path, ROWS, "new")
    result = cli("report", new, "--compare", old)
    assert result.exit_code == 2
    assert result.output.startswith("error: these runs come from different machines (CPU: Intel(R) Xeon(R) Platinum "
                                    "8480+ (old) vs ") and "--allow-different-machines" in result.output
    allowed = cli("report", new, "--compare", old, "--allow-different-machines")
    assert allowed.exit_code == 0 and "warning: environments differ: CPU: Intel(R) Xeon" in allowed.output
    # another torch on the same machine is what a regression check is for: pointed out, not refused
    newer = copy.deepcopy(ENV)
    newer["versions"] = {**newer["versions"], "torch": "9.9.9"}
    data_old, data_new = read_run(results_file(tmp_path, ROWS, "o2", env=newer)), read_run(new)
    comparison = compare_runs(data_new, data_old)
    assert comparison.warnings == [f"torch: 9.9.9 (old) vs {ENV['versions']['torch']} (new)"]


def test_thresholds_and_baselines_parse():
    assert parse_threshold("5%") == 0.05 and parse_threshold("2.5") == 0.025
    with pytest.raises(ConfigError):
        parse_threshold("fast")
    assert parse_baseline("onnxruntime") == ("onnxruntime", "fp32", "contiguous")
    assert parse_baseline("eager:bf16:channels_last") == ("eager", "bf16", "channels_last")


def test_no_common_cases_is_an_error_not_a_pass(tmp_path):
    old = results_file(tmp_path, [row("eager", 1, 500.0)], "old")
    new = results_file(tmp_path, [row("eager", 2, 500.0)], "new")
    result = cli("report", new, "--compare", old)
    assert result.exit_code == 2 and "no case in common" in result.output


# --- plot ----------------------------------------------------------------------------------------------

def test_plot_writes_a_png(tmp_path):
    out = tmp_path / "plot.png"
    result = cli("report", results_file(tmp_path, ROWS), "--plot", out)
    assert result.exit_code == 0 and f"wrote {out}" in result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    failed = results_file(tmp_path, [ROWS[6]], "failed")
    assert "nothing to plot" in cli("report", failed, "--plot", tmp_path / "x.png").output


def test_render_run_is_what_report_prints(tmp_path):
    path = results_file(tmp_path, ROWS)
    assert cli("report", path).output == render_run(read_run(path)) + "\n"


def test_fastest_is_the_quickest_case_that_passed_and_fp32_is_named_apart(tmp_path):
    rows = [row("eager", 1, 100.0), row("eager", 1, 60.0, precision="bf16", memory_format="channels_last"),
            row("onnxruntime", 1, 80.0), row("winograd", 1, 10.0, status="parity_failed", reason="differs"),
            row("eager", 8, 400.0), row("onnxruntime", 8, 500.0, precision="int8")]
    best = {r["batch_size"]: r for r in fastest_rows([r.__dict__ for r in rows])}
    assert best[1]["fastest"] == "eager bf16 channels_last" and best[1]["speedup"] == pytest.approx(100 / 60)
    # the failed winograd case is faster but did not pass parity: it is not offered
    assert best[1]["fastest_fp32"] == "onnxruntime fp32 contiguous" and best[1]["fp32_speedup"] == pytest.approx(1.25)
    assert best[8]["fastest"] == "eager fp32 contiguous" == best[8]["fastest_fp32"]
    path = results_file(tmp_path, rows)
    full = cli("report", path)
    assert full.exit_code == 0 and "fastest that ran and passed parity, per batch size" in full.output
    only = cli("report", path, "--best", "--format", "csv")
    assert only.exit_code == 0, only.output
    table = list(csv.DictReader(io.StringIO(only.output)))
    assert [(r["batch_size"], r["fastest"]) for r in table] == [("1", "eager bf16 channels_last"),
                                                                ("8", "eager fp32 contiguous")]


def test_the_fastest_deployable_is_named_beside_the_fastest_overall(tmp_path):
    # eager and winograd run vggbench's own code (their records say deployable=False): the fastest of them is the
    # fastest overall, the quickest onnxruntime/openvino/pt2 row is what can be shipped
    rows = [row("winograd", 1, 40.0, memory_format="channels_last"), row("eager", 1, 100.0),
            row("onnxruntime", 1, 80.0), row("openvino", 1, 70.0), row("pt2", 8, 200.0), row("eager", 8, 300.0)]
    best = {r["batch_size"]: r for r in fastest_rows([r.__dict__ for r in rows])}
    assert best[1]["fastest"] == "winograd fp32 channels_last"
    assert best[1]["fastest_deployable"] == "openvino fp32 contiguous"
    assert best[1]["deployable_speedup"] == pytest.approx(100 / 70)
    assert best[8]["fastest"] == "pt2 fp32 contiguous" == best[8]["fastest_deployable"]
    table = cli("report", results_file(tmp_path, rows), "--best", "--format", "csv")
    assert table.exit_code == 0, table.output
    assert [r["fastest_deployable"] for r in csv.DictReader(io.StringIO(table.output))] == [
        "openvino fp32 contiguous", "pt2 fp32 contiguous"]




def test_a_cross_check_ratio_prints_with_its_interval(tmp_path):
    checked = [row("eager", 1, 500.0, cross_check={"tool": "t", "images_per_s": 2.0, "ratio": 1.0,
                                                   "ratio_low": 0.93, "ratio_high": 1.04}),
               row("onnxruntime", 1, 180.0, cross_check={"tool": "t", "images_per_s": 5.4, "ratio": 1.029})]
    text = cli("report", results_file(tmp_path, checked)).output
    eager = next(x for x in text.splitlines() if x.startswith("eager")).split()
    ort = next(x for x in text.splitlines() if x.startswith("onnxruntime")).split()
    assert eager[-4:] == ["1.00", "±", "0.07", "ok"]  # the larger side, rounded up
    assert ort[-2:] == ["1.03", "ok"]  # one tool run: no interval
    assert "± its 95% interval over the rounds and the tool's runs" in text
