"""Results as tables others read: BenchRun.to_dataframe and vggbench.results_frame (pandas), the env_* columns of
the CSV and of DataFrames, and `report --plot`'s spread bands on a log axis."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

import vggbench
from tests.conftest import REPO
from vggbench.bench.plot import draw_run, quartile_rates
from vggbench.bench.results import CSV_COLUMNS, ENV_COLUMNS, BenchRun, csv_text, env_columns, read_run
from vggbench.bench.rows import BenchResult

pd = pytest.importorskip("pandas")

# a run on a GPU with 12 rows (6 configurations x batch 1 and 256), its samples kept
H200 = REPO / "benchmarks" / "results" / "h200-vgg16-eager-20261126.json"


def bench_run(data: dict) -> BenchRun:
    return BenchRun(data["settings"], data["environment"], [BenchResult(**row) for row in data["results"]],
                    data["wall_s"], data["created"])


def test_a_results_file_is_one_dataframe_row_per_result_with_its_machine():
    data = read_run(H200)
    df = vggbench.results_frame(H200)
    assert len(df) == len(data["results"]) == 12
    assert list(df.columns) == CSV_COLUMNS + ENV_COLUMNS and "samples_ms" not in df
    assert (df["env_gpu"] == "NVIDIA H200").all() and (df["env_torch"] == data["environment"]["versions"]["torch"]).all()
    assert (df["env_git_commit"] == data["environment"]["git_commit"]).all()
    assert df["images_per_s"].tolist() == [r["images_per_s"] for r in data["results"]]
    assert df["backend_settings"].map(lambda s: s is None or isinstance(json.loads(s), dict)).all()
    # what one asks of it: the fastest configuration per batch size
    best = df.loc[df.groupby("batch_size")["images_per_s"].idxmax(), ["batch_size", "precision", "memory_format"]]
    assert best["batch_size"].tolist() == [1, 256]


def test_samples_are_a_list_column_on_request_and_the_frame_writes_to_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    data = read_run(H200)
    run = bench_run(data)
    df = run.to_dataframe(samples=True)
    assert df["samples_ms"].map(list).tolist() == [r["samples_ms"] for r in data["results"]]
    assert list(run.to_dataframe().columns) == CSV_COLUMNS + ENV_COLUMNS
    df.to_parquet(tmp_path / "run.parquet")
    back = pd.read_parquet(tmp_path / "run.parquet")
    assert back["median_ms"].tolist() == df["median_ms"].tolist()
    assert [list(s) for s in back["samples_ms"]] == [r["samples_ms"] for r in data["results"]]


def test_the_csv_carries_the_environment_and_an_older_record_leaves_it_empty():
    data = read_run(H200)
    table = list(csv.DictReader(io.StringIO(csv_text(data))))
    assert list(table[0]) == CSV_COLUMNS + ENV_COLUMNS
    assert {row["env_gpu"] for row in table} == {"NVIDIA H200"}
    assert {row["env_cuda_driver"] for row in table} == {data["environment"]["cuda"]["driver"]}
    assert env_columns({}, "cuda:0") == dict.fromkeys(ENV_COLUMNS)
    # a row names the GPU it ran on, not the machine's first one
    env = {"cuda": {"devices": [{"index": 0, "name": "A"}, {"index": 1, "name": "B"}]}}
    assert env_columns(env, "cuda:1")["env_gpu"] == "B" and env_columns(env, "cpu")["env_gpu"] is None


def test_the_plot_draws_the_spread_of_every_line_on_a_log_axis():
    data = read_run(H200)
    fig = draw_run(data)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log" and ax.get_xscale() == "log"
    lines = [line for line in ax.get_lines() if line.get_label() and not line.get_label().startswith("_")]
    assert len(lines) == 6
    # two bands per line (the median's interval, the calls' IQR), then error bars of the interval
    bands = [c for c in ax.collections if type(c).__name__ in ("FillBetweenPolyCollection", "PolyCollection")]
    assert len(bands) == 12
    for band in bands:
        ys = band.get_paths()[0].vertices[:, 1]
        assert np.isfinite(ys).all() and (ys > 0).all()
    # each row's IQR band holds its median, and is its samples' quartiles as images/s
    row = data["results"][0]
    low, high = quartile_rates(row)
    q1, q3 = np.percentile(row["samples_ms"], [25, 75])
    assert low == pytest.approx(row["batch_size"] * 1e3 / q3) and high == pytest.approx(row["batch_size"] * 1e3 / q1)
    assert low <= row["images_per_s"] <= high
    without = {**row, "samples_ms": None, "median_ms": 10.0, "iqr_ms": 2.0, "batch_size": 1}
    assert quartile_rates(without) == pytest.approx((1e3 / 11, 1e3 / 9))
