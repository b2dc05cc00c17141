"""Faults and hostile input (issue 16's battery): each test failed before its fix. A case that cannot run is
a row, never a crash that loses the rows already measured."""

from __future__ import annotations

import math

import pytest
import torch

import vggbench
from tests.conftest import TINY, TINY_IMAGE
from vggbench.core.errors import UnsupportedError, WeightsError
from vggbench.zoo.weights import load_model, save_weights

FAST = dict(warmup=0, warmup_time_s=0.0, min_time_s=0.0, min_iters=2, max_iters=2)
SUITE = dict(models=["vgg11"], image_size=TINY_IMAGE, backends=["eager"], memory_formats=["contiguous"], **FAST)


def bench(tmp_path, **kwargs):
    return vggbench.benchmark(export_cache=tmp_path / "cache", progress=False, **{**SUITE, **kwargs})


def test_weights_that_fit_one_model_only_keep_the_other_models_rows(tmp_path):
    trained = save_weights(load_model("vgg11", num_classes=10, **TINY), tmp_path / "vgg11.pt")
    result = bench(tmp_path, models=["vgg11", "vgg13"], weights=str(trained), batch_sizes=[1], width=None,
                   hidden=None)
    rows = {r.model: r for r in result.results}
    assert rows["vgg11"].status == "ok"
    assert rows["vgg13"].status == "error" and rows["vgg13"].reason.startswith("model not loaded: ")
    assert "vgg11" in rows["vgg13"].reason  # it says what the file holds


def test_a_missing_weights_file_fails_before_any_work(tmp_path):
    with pytest.raises(WeightsError, match="weights file .*missing.pt does not exist"):
        bench(tmp_path, weights=str(tmp_path / "missing.pt"), batch_sizes=[1], **TINY)


def test_a_batch_that_cannot_be_allocated_is_a_row(tmp_path):
    result = bench(tmp_path, batch_sizes=[1, 99_999_999_999], **TINY)
    small, huge = result.results
    assert small.status == "ok" and huge.status in ("oom", "error") and huge.reason


def test_a_non_finite_reference_is_a_parity_failure_not_ok(tmp_path):
    model = load_model("vgg11", num_classes=10, **TINY)
    with torch.no_grad():
        model.module.classifier[6].weight.fill_(math.nan)
    nan = save_weights(model, tmp_path / "nan.pt")
    result = bench(tmp_path, weights=str(nan), batch_sizes=[1], width=None, hidden=None)
    (row,) = result.results
    assert row.status == "parity_failed" and "NaN/Inf" in row.reason


def test_verify_refuses_an_unknown_precision_in_a_list(tmp_path):
    model = load_model("vgg11", **TINY)
    vggbench.export(model, tmp_path / "e", formats=["onnx"], image_size=TINY_IMAGE)
    with pytest.raises(UnsupportedError, match="unknown precision 'bf61'"):
        vggbench.verify(tmp_path / "e", precisions=["fp32", "bf61"])
