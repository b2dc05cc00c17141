"""vggbench.bench.prepare: one parity judge and one failure classifier, and `run` and `loadgen` both use them
(a quantized difference is recorded, a wrong fp32 output fails, running out of memory is an `oom` row)."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch

import vggbench
import vggbench.bench.prepare as prepare
from tests.conftest import TINY, TINY_IMAGE, FakeRunner
from vggbench.backends import registry
from vggbench.bench.prepare import ParityMismatch, classify, judge_parity
from vggbench.bench.rows import Case
from vggbench.bench.scenarios import LoadgenSettings, SutSettings
from vggbench.core.errors import CheckFailed, ConfigError

OOM = "CUDA out of memory. Tried to allocate 20.00 GiB"  # what FakeRunner raises


def _case(precision: str) -> Case:
    return Case(model="vgg11", image_size=32, batch_size=4, backend="onnxruntime", device="cpu", precision=precision,
                memory_format="contiguous", threads=1, weights="random", warmup=0, warmup_time_s=0.0,
                min_time_s=0.0, min_iters=1, max_iters=1)


def _runner(reference: bool = False):
    return SimpleNamespace(target=SimpleNamespace(is_reference=reference), to_tensor=lambda out: out.float())


@pytest.mark.parametrize("precision, judged", [("fp32", True), ("fp16", True), ("bf16", True), ("amp", True),
                                               ("int8", False), ("fp8", False)])
def test_one_judge_fails_a_differing_output_and_only_records_a_quantized_ones(precision, judged):
    expected = torch.randn(2, 10, generator=torch.Generator().manual_seed(0)) * 5
    judge = dict(images=torch.zeros(4, 3, 8, 8), expected=expected, case=_case(precision), tf32=False,
                 source="benchmark batch")
    # only the first 2 images are judged: the others may differ
    assert judge_parity(_runner(), torch.cat([expected, expected + 9]), **judge) == 0.0
    wrong = torch.cat([expected + 1, expected])
    if judged:
        with pytest.raises(ParityMismatch, match="^output differs from eager fp32: ") as caught:
            judge_parity(_runner(), wrong, **judge)
        assert caught.value.max_abs == pytest.approx(1.0)
    else:
        assert judge_parity(_runner(), wrong, **judge) == pytest.approx(1.0)


@pytest.mark.parametrize("precision", ["fp32", "int8", "fp8"])
def test_a_reference_that_is_not_finite_fails_even_a_quantized_case(precision):
    images = torch.zeros(2, 3, 8, 8)
    expected = torch.tensor([[0.0, math.inf], [0.0, 0.0]])
    with pytest.raises(ParityMismatch, match="reference \\(eager fp32\\) output has NaN/Inf"):
        judge_parity(_runner(), torch.zeros(2, 2), images, expected, _case(precision), tf32=False, source="s")
    # the reference itself: its own output is all there is to check
    with pytest.raises(ParityMismatch, match="NaN/Inf"):
        judge_parity(_runner(reference=True), expected, images, None, _case("fp32"), tf32=False, source="s")
    assert judge_parity(_runner(reference=True), torch.zeros(2, 2), images, None, _case("fp32"), tf32=False,
                        source="s") is None


def test_one_classifier_names_every_failure():
    from vggbench.bench.cache import ExportFailed

    assert classify(torch.OutOfMemoryError(OOM)) == ("oom", f"OutOfMemoryError: {OOM}")
    assert classify(ExportFailed("onnx export failed")) == ("export_failed", "onnx export failed")
    assert classify(ParityMismatch("differs")) == ("parity_failed", "differs")
    assert classify(CheckFailed("sha256 differs"), building=True) == ("export_failed", "sha256 differs")
    assert classify(ConfigError("bad")) == ("error", "bad")
    assert classify(RuntimeError("boom\nmore")) == ("error", "RuntimeError: boom")
    with pytest.raises(RuntimeError, match="boom"):
        classify(RuntimeError("boom"), raise_errors=True)
    assert classify(ConfigError("bad"), raise_errors=True) == ("error", "bad")  # vggbench's own: a row still


@pytest.fixture
def quantized_eager(monkeypatch):
    """eager offering int8 and fp8 on the CPU; those runners, and compile's, compute the model's logits plus one."""
    eager = registry.get_backend("eager")
    monkeypatch.setitem(registry._BACKENDS, "eager",
                        dataclasses.replace(eager, precisions=(*eager.precisions, "int8", "fp8")))
    real = prepare.make_runner

    def fake(target, model, **kwargs):
        if target.precision in ("int8", "fp8") or target.backend == "compile":
            return FakeRunner(model.module, target, wrong=True)
        return real(target, model, **kwargs)
    monkeypatch.setattr(prepare, "make_runner", fake)


SUITE = dict(models=["vgg11"], image_size=TINY_IMAGE, memory_formats=["contiguous"], **TINY)


def test_run_records_a_quantized_difference_and_fails_a_wrong_fp32_one(quantized_eager, tmp_path):
    result = vggbench.benchmark(export_cache=tmp_path, progress=False, backends=["eager", "compile"],
                                precisions=["fp32", "int8", "fp8"], batch_sizes=[2], warmup=0, warmup_time_s=0.0,
                                min_time_s=0.0, min_iters=1, max_iters=1, **SUITE)
    rows = {(r.backend, r.precision): r for r in result.results}
    for precision in ("int8", "fp8"):
        assert rows["eager", precision].status == "ok"
        assert rows["eager", precision].parity_max_abs == pytest.approx(1.0)
    assert rows["eager", "fp32"].status == "ok" and rows["eager", "fp32"].parity_max_abs is None
    wrong = rows["compile", "fp32"]
    assert wrong.status == "parity_failed" and wrong.parity_max_abs == pytest.approx(1.0)


def test_loadgen_judges_parity_as_run_does(quantized_eager, tmp_path):
    pytest.importorskip("mlperf_loadgen")
    from vggbench.bench.loadgen import loadgen

    run = loadgen(backends=["eager", "compile"], precisions=["int8", "fp8", "fp32"], export_cache=tmp_path,
                  settings=LoadgenSettings(scenarios=("singlestream",), images="synthetic", count=8, short=True),
                  **SUITE)
    rows = {(r.backend, r.precision): r for r in run.results}
    for precision in ("int8", "fp8"):  # 10b0ddf failed fp8: only int8 was recorded rather than judged
        assert rows["eager", precision].status == "ok"
        assert rows["eager", precision].parity_max_abs == pytest.approx(1.0)
    assert rows["eager", "fp32"].status == "ok" and rows["eager", "fp32"].parity_max_abs is None
    wrong = rows["compile", "fp32"]
    assert wrong.status == "parity_failed" and wrong.reason.startswith("output differs from eager fp32: ")
    assert rows["compile", "int8"].status == "unsupported"


def test_loadgen_records_running_out_of_memory_as_oom(monkeypatch, tmp_path):
    pytest.importorskip("mlperf_loadgen")
    from vggbench.bench.loadgen import loadgen

    def fake(target, model, **kwargs):
        if target.backend == "compile":  # building the runner fills the device
            raise torch.OutOfMemoryError(OOM)
        return FakeRunner(model.module, target, oom_from=4)  # timing a batch of 4 does
    monkeypatch.setattr(prepare, "make_runner", fake)
    run = loadgen(backends=["compile", "eager"], export_cache=tmp_path, sut=SutSettings(max_batch=8),
                  settings=LoadgenSettings(scenarios=("singlestream", "offline"), images="synthetic", count=8,
                                           short=True), **SUITE)
    rows = {(r.backend, r.scenario["name"]): r for r in run.results}
    assert len(rows) == 4  # each target's scenarios, none run
    for row in rows.values():  # 10b0ddf: "error", or a crash of the whole run while timing batches
        assert (row.status, row.reason) == ("oom", f"OutOfMemoryError: {OOM}")
