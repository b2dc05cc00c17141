"""vggbench.benchmark and `vggbench run`: cases become rows whatever happens to them, exports are made once
and checked, settings are scoped and recorded, results are written and read back."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import vggbench.bench.cache as export_cache
import vggbench.bench.prepare as prepare
import vggbench.bench.sweep as sweep
import vggbench.core.errors
from tests.conftest import TINY, TINY_IMAGE, FakeRunner
from vggbench.bench.report import LOAD_MARK, render_run
from vggbench.bench.results import CSV_COLUMNS, ENV_COLUMNS, read_run
from vggbench.cli import main
from vggbench.core.device import CPU, Device
from vggbench.core.errors import ExportError, UnsupportedError
from vggbench.zoo.profiling import profile
from vggbench.zoo.specs import ModelOptions

FAST = dict(warmup=1, warmup_time_s=0.0, min_time_s=0.02, min_iters=3, max_iters=50)
TINY_SUITE = dict(models=["vgg11"], image_size=TINY_IMAGE, batch_sizes=[1, 2], memory_formats=["contiguous"], **TINY, **FAST)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One export cache for the module: each tiny export is made once."""
    return tmp_path_factory.mktemp("export_cache")


def run(cache, **kwargs):
    return vggbench.benchmark(export_cache=cache, progress=False, **{**TINY_SUITE, **kwargs})


def by_combo(result):
    return {(r.backend, r.precision, r.memory_format, r.batch_size): r for r in result.results}


@pytest.mark.slow
def test_unsupported_combinations_are_rows_with_reasons(cache):
    result = run(cache, backends=["eager", "onnxruntime", "tensorrt"], precisions=["fp32", "amp"],
                 memory_formats=["contiguous", "channels_last"], batch_sizes=[1])
    rows = by_combo(result)
    assert len(rows) == 3 * 2 * 2
    assert rows["eager", "fp32", "contiguous", 1].status == "ok"
    assert rows["eager", "fp32", "channels_last", 1].status == "ok"
    assert rows["onnxruntime", "fp32", "contiguous", 1].status == "ok"
    amp = rows["eager", "amp", "contiguous", 1]
    assert amp.status == "unsupported" and "amp (fp16 autocast) needs CUDA" in amp.reason
    assert amp.median_ms is None and amp.samples_ms == ()
    assert rows["tensorrt", "fp32", "contiguous", 1].reason == "tensorrt does not run on cpu (it runs on cuda)"
    assert rows["onnxruntime", "fp32", "channels_last", 1].reason == \
        "onnxruntime takes contiguous input only, not channels_last"
    assert {p["precision"] for p in result.environment["gemm_peaks"]} == {"fp32"}  # no peak for amp on a CPU


def test_rows_carry_numbers_settings_and_parity(cache):
    result = run(cache, backends=["eager", "onnxruntime"], threads=1)
    rows = by_combo(result)
    ort = rows["onnxruntime", "fp32", "contiguous", 2]
    assert ort.status == "ok" and ort.threads == 1 and ort.backend_settings["threads"] == 1
    assert ort.iterations == len(ort.samples_ms) >= 3 and ort.timer == "perf_counter"
    assert ort.images_per_s == pytest.approx(2 / (ort.median_ms / 1e3))
    assert ort.gmacs_per_image == pytest.approx(profile("vgg11", ModelOptions(**TINY), TINY_IMAGE).gmacs)
    assert ort.gemm_gflops_per_s == result.environment["gemm_peaks"][0]["gflops_per_s"]
    assert ort.peak_gflops_per_s >= ort.gemm_gflops_per_s and 0 < ort.peak_pct <= 100
    assert ort.load_ms > 0 and ort.first_call_ms > 0 and ort.rss_delta_mib >= 0
    assert 0 <= ort.parity_max_abs < 1e-4  # the first output was checked against eager fp32
    assert rows["eager", "fp32", "contiguous", 1].parity_max_abs is None  # the reference itself
    assert rows["eager", "fp32", "contiguous", 1].backend_settings is None
    assert rows["eager", "fp32", "contiguous", 1].weights == "random (seed 0)"
    assert torch.get_num_threads() != 1 or result.environment["flags"]["torch_threads"] == 1
    assert result.environment["flags"]["torch_threads"] == 1  # recorded inside the run's scope


def test_threads_are_scoped_to_the_run(cache):
    before = torch.get_num_threads()
    run(cache, backends=["eager"], batch_sizes=[1], threads=1)
    assert torch.get_num_threads() == before


@pytest.mark.slow
def test_exports_are_cached_and_rebuilt_when_tampered_with(cache, monkeypatch):
    calls = []
    real = export_cache.export
    monkeypatch.setattr(export_cache, "export", lambda *a, **k: calls.append(k["formats"]) or real(*a, **k))
    run(cache, backends=["onnxruntime"], batch_sizes=[1])
    run(cache, backends=["onnxruntime"], batch_sizes=[1])
    assert calls in ([], [["onnx"]])  # made by an earlier test, or by the first run here: once
    calls.clear()
    folder = next(p for p in cache.iterdir() if p.name.startswith("vgg11-32-fp32-onnx-"))
    (folder / "model.onnx").write_bytes(b"not onnx")
    result = run(cache, backends=["onnxruntime"], batch_sizes=[1, 2])
    assert calls == [["onnx"]]
    assert [(r.status, r.reason) for r in result.results] == [("ok", "")] * 2
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["parity"] and all(p["passed"] for p in manifest["parity"])


def test_export_failure_is_a_row_and_is_tried_once(cache, monkeypatch, tmp_path):
    calls = []

    def broken(model, out, **kwargs):
        calls.append(kwargs["formats"])
        raise ExportError(f"{kwargs['formats'][0]} export of {model.name} failed: RuntimeError: boom")
    monkeypatch.setattr(export_cache, "export", broken)
    result = vggbench.benchmark(export_cache=tmp_path, progress=False,
                                **{**TINY_SUITE, "backends": ["eager", "pt2"], "precisions": ["fp32", "bf16"]})
    rows = by_combo(result)
    assert rows["eager", "fp32", "contiguous", 2].status == "ok"
    failed = [r for r in result.results if r.backend == "pt2"]
    assert len(failed) == 4 and {r.status for r in failed} == {"export_failed"}
    assert failed[0].reason == "pt2 export of vgg11 failed: RuntimeError: boom"
    assert calls == [["pt2"]]  # fp32 and bf16 run the same fp32 export: one attempt


def test_oom_is_a_row_and_the_run_goes_on(cache, monkeypatch):
    real = prepare.make_runner

    made = []

    def fake(target, model, **kwargs):
        if target.backend == "torchscript":
            made.append(FakeRunner(model.module, target, oom_from=2))
            return made[-1]
        return real(target, model, **kwargs)
    monkeypatch.setattr(prepare, "make_runner", fake)
    monkeypatch.setattr(prepare.ExportCache, "folder", lambda self, target, settings=None: None)
    result = run(cache, backends=["torchscript", "eager"], batch_sizes=[1, 2, 4])
    statuses = [(r.backend, r.batch_size, r.status) for r in result.results]
    assert statuses == [("torchscript", 1, "ok"), ("torchscript", 2, "oom"), ("torchscript", 4, "oom"),
                        ("eager", 1, "ok"), ("eager", 2, "ok"), ("eager", 4, "ok")]
    oom = result.results[1]
    assert oom.reason == "OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB"
    assert oom.load_ms is not None and oom.median_ms is None
    # backed off: a larger batch is not tried once one ran out of memory
    assert result.results[2].reason == "not tried: batch 2 ran out of memory; the largest that fitted was 1"
    assert 4 not in made[0].batches and 2 in made[0].batches


def test_wrong_outputs_are_parity_failures_and_errors_are_rows(cache, monkeypatch):
    def fake(target, model, **kwargs):
        if target.backend == "compile":
            return FakeRunner(model.module, target, wrong=True)
        raise RuntimeError("backend exploded\nwith a long traceback")
    monkeypatch.setattr(prepare, "make_runner", fake)
    result = run(cache, backends=["compile", "eager"], batch_sizes=[2])
    wrong, broken = result.results
    assert wrong.status == "parity_failed" and wrong.reason.startswith("output differs from eager fp32: max abs diff")
    assert wrong.parity_max_abs == pytest.approx(1.0)
    assert broken.status == "error" and broken.reason == "RuntimeError: backend exploded"
    with pytest.raises(RuntimeError, match="backend exploded"):
        vggbench.benchmark(export_cache=cache, progress=False, raise_errors=True,
                           **{**TINY_SUITE, "backends": ["eager"]})


def test_missing_cuda_stops_before_anything_runs(cache):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UnsupportedError, match="device cuda requested but CUDA is not available"):
        run(cache, device="cuda")


# --- results files ---------------------------------------------------------------------------------------

def test_results_of_schema_version_1_are_read_as_version_2():
    """Recorded runs of schema 1 (flat backend keys; compile_mode/ort_settings/... per row) still read, report and
    compare: their rows' settings become backend_settings and a variant."""
    recorded = Path(__file__).parent.parent / "benchmarks" / "results"
    data = read_run(recorded / "h200-vgg16-autotune-20261126.json")
    assert data["schema_version"] == 2 and data["settings"]["backend"]["compile"]["mode"] == "max-autotune"
    assert "compile_mode" not in data["settings"]
    row = data["results"][0]
    assert row["backend_settings"] == {"mode": "max-autotune", "freezing": False}
    assert row["variant"] == "max-autotune" and "compile_mode" not in row and "ort_settings" not in row
    ort = read_run(recorded / "epyc2-vgg16-loadgen-ort-server-20261126.json")["results"][0]
    assert ort["backend_settings"]["optimization"] == "all" and ort["variant"] == ""
    assert "compile max-autotune" in render_run(data, "table")



def test_json_envelope_and_csv_round_trip(cache, tmp_path):
    result = run(cache, backends=["eager", "onnxruntime"], memory_formats=["contiguous", "channels_last"])
    json_path, csv_path = result.write(tmp_path)
    assert json_path.parent == tmp_path and json_path.name.startswith("run-") and csv_path.suffix == ".csv"
    data = read_run(json_path)
    assert data["schema_version"] == 2 and data["kind"] == "vggbench-run"
    env = data["environment"]
    assert {"versions", "cpu", "cuda", "flags", "git_commit", "gemm_peaks", "onnxruntime"} <= set(env)
    assert env["flags"]["tf32_matmul"] in (True, False) and env["cpu"]["logical_cores"] >= 1
    assert data["settings"]["models"] == ["vgg11"] and data["settings"]["min_time_s"] == FAST["min_time_s"]
    assert len(data["results"]) == 8 and data["results"][0]["samples_ms"]
    with open(csv_path, newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == CSV_COLUMNS + ENV_COLUMNS and "samples_ms" not in table[0]
    for row, original in zip(table, data["results"], strict=True):
        for key in CSV_COLUMNS:
            value = original[key]
            expected = "" if value is None else json.dumps(value, sort_keys=True) if isinstance(value, dict) \
                else str(value)
            assert row[key] == expected, key
        # the machine and versions, in every row: a CSV read alone still says where its numbers came from
        assert row["env_torch"] == env["versions"]["torch"] and row["env_git_commit"] == (env["git_commit"] or "")
        assert row["env_cpu"] == env["cpu"]["model"] and row["env_onnxruntime"] == env["onnxruntime"]["version"]
    # a .json path is written as is, the CSV beside it
    again = result.write(tmp_path / "named.json")
    assert again == (tmp_path / "named.json", tmp_path / "named.csv")


# --- the command line ------------------------------------------------------------------------------------

def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_run_end_to_end_as_a_user_types_it(tmp_path, cache):
    result = cli("run", "--models", "vgg11", "--width", "0.0625", "--hidden", "32", "--image-size", "32",
                 "--batch-sizes", "1,2", "--backends", "eager,onnxruntime,torchscript,pt2", "--min-time", "0.05",
                 "--warmup-time", "0", "--out", tmp_path, "--export-cache", cache)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("vgg11 at 32x32 on cpu (") and f"{torch.get_num_threads()} threads" in lines[0]
    assert lines[2].split() == ["backend", "precision", "memory_format", "batch_size", "median_ms", "p90_ms",
                                "images_per_s", "gflops_per_s", "peak_pct", "theoretical_pct", "speedup", "noisy",
                                "status"]
    json_path = next(tmp_path.glob("run-*.json"))
    # the default suite's two layouts cross the backends asked for: onnxruntime channels_last cannot run
    assert lines[-1].startswith("16 cases (14 ok, 2 unsupported) in ") and lines[-1].endswith(
        f"wrote {json_path} and {json_path.with_suffix('.csv')}")
    data = read_run(json_path)
    assert data["settings"]["command"].startswith("vggbench run --models vgg11 --width 0.0625 --hidden 32 ")
    # the printed table is exactly what `vggbench report` prints from the JSON
    report = cli("report", json_path)
    assert report.exit_code == 0 and result.output.startswith(report.output)
    ort = next(r for r in data["results"] if r["backend"] == "onnxruntime" and r["batch_size"] == 2)
    # the backend may carry the under-load mark (a shared machine): the contiguous row at batch 2
    row = next(line for line in lines if line.split()[:1] and line.split()[0].rstrip(LOAD_MARK) == "onnxruntime"
               and line.split()[2:4] == ["contiguous", "2"])
    assert row.split()[4] == f"{ort['median_ms']:.4g}"


def test_run_on_cuda_without_cuda_is_one_line_and_exit_2(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = cli("run", "--device", "cuda", "--out", tmp_path)
    assert result.exit_code == 2
    assert result.output.strip() == ("error: device cuda requested but CUDA is not available (no CUDA device is "
                                     "visible); use --device cpu")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("args,message", [
    (("--models", "vgg17"), "error: unknown model 'vgg17'; did you mean"),
    (("--backends", "tflite"), "error: unknown backend 'tflite'"),
    (("--precision", "fp4"), "error: unknown precision 'fp4'"),
    (("--suite", "nightly"), "error: unknown suite 'nightly'"),
    (("--batch-sizes", "1,x"), "error: batch sizes must be ints or A..B (powers of two from A to B), got 'x'"),
    (("--batch-sizes", "8..2"), "error: batch size range '8..2' needs 1 <= A <= B"),
    (("--baseline", "eager:fp32:contiguous:extra"), "error: baseline must look like backend[:precision"),
])
def test_run_user_errors_are_one_line(args, message, tmp_path):
    result = cli("run", *args, "--out", tmp_path)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    if message.startswith("error:"):
        assert len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_run_best_times_the_fast_paths_and_names_the_fastest(tmp_path):
    cache = tmp_path / "cache"
    result = cli("run", "--best", "--models", "vgg11", "--width", "0.0625", "--hidden", "32", "--image-size", "32",
                 "--batch-sizes", "1", "--min-time", "0.02", "--min-iters", "3", "--warmup-time", "0",
                 "--out", tmp_path / "best.json", "--export-cache", cache, "--format", "csv")
    assert result.exit_code == 0, result.output
    data = read_run(tmp_path / "best.json")
    assert data["settings"]["name"] == "best-cpu" and data["settings"]["backend"]["compile"]["freezing"] is True
    rows = {(r["backend"], r["precision"], r["memory_format"]): r for r in data["results"]}
    assert {("winograd", "fp32", "channels_last"), ("compile", "fp32", "channels_last"),
            ("onnxruntime", "int8", "contiguous"), ("eager", "bf16", "channels_last")} <= set(rows)
    assert rows["compile", "fp32", "channels_last"]["backend_settings"] == {"mode": None, "freezing": True}
    # random weights have no real-image agreement to offer int8 with: refused before any export is made
    int8 = rows["onnxruntime", "int8", "contiguous"]
    assert int8["status"] == "unsupported" and int8["reason"] == export_cache.INT8_NEEDS_TRAINED_WEIGHTS
    assert not any("onnx-int8" in p.name for p in cache.iterdir())
    assert rows["winograd", "fp32", "channels_last"]["status"] == "ok"
    # the tuned plan is recorded with the row: one entry per 3x3 conv (8 in VGG11) and per Linear
    plan = rows["winograd", "fp32", "channels_last"]["notes"].split(", ")
    assert [p.split()[0] for p in plan] == [f"conv{i}" for i in range(1, 9)] + ["fc1", "fc2", "fc3"]
    assert rows["eager", "bf16", "channels_last"]["notes"] == ""
    assert "native_kernels" in data["environment"]
    assert "fastest that ran and passed parity" in cli("report", tmp_path / "best.json").output


@pytest.mark.slow
def test_int8_runs_in_a_sweep_with_weights_trained_on_digits(tmp_path, cache):
    from vggbench.zoo.weights import load_model, save_weights

    trained = save_weights(load_model("vgg11", seed=0, width=1 / 8, hidden=64, num_classes=10),
                           tmp_path / "digits.pt", dataset="digits")
    result = run(cache, weights=str(trained), width=None, hidden=None, backends=["onnxruntime"],
                 precisions=["fp32", "int8"], batch_sizes=[1, 4])
    rows = by_combo(result)
    assert rows["onnxruntime", "int8", "contiguous", 4].status == "ok", rows["onnxruntime", "int8", "contiguous", 4]
    assert rows["onnxruntime", "int8", "contiguous", 4].parity_max_abs is not None
    folder = next(p for p in cache.iterdir() if "-onnx-int8-" in p.name)
    quant = json.loads((folder / "manifest.json").read_text())["artifacts"]["onnx-int8"]["quantization"]
    assert quant["calibration"] == "digits train"


def test_batch_size_ranges_are_powers_of_two():
    from vggbench.bench.suite import resolve_suite

    assert resolve_suite("cpu", batch_sizes="1..256").batch_sizes == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert resolve_suite("cpu", batch_sizes="3,8..40").batch_sizes == (3, 8, 16, 32)


def test_fp32_on_cuda_is_strict_unless_tf32_is_asked_for():
    from vggbench.backends import OrtSettings
    from vggbench.core.numerics import scoped_numerics, tf32_flag
    from vggbench.parity.metrics import TOLERANCES, tolerance_for

    assert tf32_flag(CPU, None) is None and tf32_flag(CPU, True) is None and tf32_flag(Device("cuda"), None) is False
    assert tf32_flag(Device("cuda", 1), True) is True
    assert tolerance_for("fp32", tf32=True) == TOLERANCES["tf32"] != TOLERANCES["fp32"]
    assert tolerance_for("amp", tf32=True) == TOLERANCES["amp"]
    assert OrtSettings().to_dict()["tf32"] is False
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with scoped_numerics(tf32=not flags[1]):
        assert torch.backends.cudnn.allow_tf32 == (not flags[1]) == torch.backends.cuda.matmul.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == flags


def test_ctrl_c_keeps_the_cases_that_finished(tmp_path, cache, monkeypatch):
    """Each case in one go (rounds 1, where _time times a case; tests/test_rounds.py interrupts rounds)."""
    real, calls = sweep._Sweep._time, []

    def interrupted_on_the_third(self, prepared, case):
        calls.append(case.batch_size)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, prepared, case)
    monkeypatch.setattr(sweep._Sweep, "_time", interrupted_on_the_third)
    with pytest.raises(KeyboardInterrupt) as caught:  # the Python API still sees an interrupt...
        run(cache, backends=["eager"], batch_sizes=[1, 2, 4], rounds=1)
    assert isinstance(caught.value, vggbench.core.errors.BenchmarkInterrupted)
    assert len(caught.value.run.results) == 2  # ...carrying what finished
    calls.clear()
    result = cli("run", "--models", "vgg11", "--width", "0.0625", "--hidden", "32", "--image-size", "32",
                 "--backends", "eager", "--memory-format", "contiguous", "--batch-sizes", "1,2,4", "--min-time", "0.02",
                 "--warmup-time", "0", "--rounds", "1", "--out", tmp_path / "r.json", "--export-cache", cache)
    assert result.exit_code == 130, result.output
    assert "interrupted: Ctrl-C after 2 of 3 cases; the results so far are written" in result.output
    data = read_run(tmp_path / "r.json")
    assert [r["batch_size"] for r in data["results"]] == [1, 2]
    assert data["settings"]["interrupted"] == "Ctrl-C after 2 of 3 cases"


def test_oom_back_off_on_a_cuda_device_mocked_at_the_device_queries(cache, monkeypatch):
    """The CUDA path of a run without a GPU: torch's device queries say there is an H100, the GEMM peak and the
    runner are stand-ins (no CUDA kernel can run here), and the batch sweep backs off after an out-of-memory one."""
    import types

    props = types.SimpleNamespace(name="NVIDIA H100 80GB HBM3", major=9, minor=0, total_memory=80 * 2**30,
                                  multi_processor_count=132)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=None: props)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: props.name)
    monkeypatch.setattr(sweep, "measure_peak", lambda device, precision: {
        "device": str(device), "precision": precision, "gflops_per_s": 1e-3, "shape": "8192x8192x8192"})
    made = []

    def fake(target, model, **kwargs):
        made.append(FakeRunner(model.module, target, oom_from=8))
        return made[-1]
    monkeypatch.setattr(prepare, "make_runner", fake)
    result = run(cache, device="cuda", backends=["eager"], precisions=["amp"], batch_sizes="1..32")
    assert [(r.batch_size, r.status) for r in result.results] == [(1, "ok"), (2, "ok"), (4, "ok"), (8, "oom"),
                                                                 (16, "oom"), (32, "oom")]
    assert result.results[4].reason == "not tried: batch 8 ran out of memory; the largest that fitted was 4"
    assert max(made[0].batches) == 8  # 16 and 32 were never tried
    assert {r.device for r in result.results} == {"cuda"}
    assert result.environment["cuda"]["devices"][0]["name"] == "NVIDIA H100 80GB HBM3"
    # fp16 tensor cores, from the datasheet; every row at most 100% of the measured ceiling
    ok = [r for r in result.results if r.status == "ok"]
    assert [r.theoretical_gflops_per_s for r in ok] == pytest.approx([989_400] * 3)
    assert all(0 < r.peak_pct <= 100 for r in ok)
    assert result.environment["flags"]["tf32_matmul"] is False  # fp32 on CUDA is IEEE fp32 unless asked
