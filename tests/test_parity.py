from __future__ import annotations

import math

import pytest
import torch

from vggbench.parity.metrics import TOLERANCES, compare, tolerance_for

REF = torch.tensor([[2.0, 1.0, 0.5, -1.0, 0.0, 0.3], [0.1, 3.0, -2.0, 1.0, 0.2, 0.0]], dtype=torch.float64)
FP32 = TOLERANCES["fp32"]


def test_identical_outputs_pass_with_zero_diffs():
    r = compare(REF, REF.clone(), FP32)
    assert r.passed and r.reason == "ok"
    assert (r.max_abs, r.mean_abs, r.top1_agreement, r.top5_overlap, r.top1_flips) == (0, 0, 1, 1, 0)
    assert r.min_cosine == pytest.approx(1.0)


def test_metrics_are_computed_as_documented():
    got = REF.clone()
    got[0, 0] += 1e-5  # |ref| = 2 -> rel 5e-6
    got[1, 4] += 2e-5  # |ref| = 0.2 -> rel 1e-4
    r = compare(REF, got, FP32)
    assert r.max_abs == pytest.approx(2e-5, rel=1e-6)
    assert r.mean_abs == pytest.approx(3e-5 / 12, rel=1e-6)
    assert r.max_rel == pytest.approx(1e-4, rel=1e-4)
    # the preset's absolute tolerance is 1e-4 of the largest |logit| (3.0)
    assert r.atol == pytest.approx(3e-4)
    assert r.passed


def test_a_real_change_fails_and_says_where():
    got = REF.clone()
    got[1, 2] = -1.9  # 0.1 away from -2.0
    r = compare(REF, got, FP32)
    assert not r.passed
    assert "max abs diff 0.1 exceeds atol 0.0003" in r.reason and "ref -2, got -1.9" in r.reason


def test_tolerance_scales_with_the_output_range():
    tiny = REF * 1e-8
    assert compare(tiny, tiny * (1 + 1e-7), FP32).passed
    assert not compare(tiny, tiny + 1e-9, FP32).passed  # 1e-9 is 3% of this model's logit range


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_is_never_equal(bad):
    got = REF.clone()
    got[0, 3] = bad
    r = compare(REF, got, FP32)
    assert not r.passed and "output has NaN/Inf" in r.reason


def test_a_nan_reference_fails_even_against_itself():
    ref = REF.clone()
    ref[:, :] = float("nan")  # like vgg16 IMAGENET1K_FEATURES, whose classifier is NaN on purpose
    r = compare(ref, ref.clone(), FP32)
    assert not r.passed and "reference has NaN/Inf" in r.reason and math.isnan(r.max_abs)


def test_a_top1_change_is_allowed_only_for_a_near_tie():
    ref = torch.tensor([[1.0, 1.0 - 1e-6, 0.0], [5.0, 0.0, 0.0]])
    near = torch.tensor([[1.0 - 1e-6, 1.0, 0.0], [5.0, 0.0, 0.0]])
    r = compare(ref, near, FP32)
    assert r.passed and r.top1_agreement == 0.5 and r.top1_flips == 0
    far = torch.tensor([[1.0, 1.0 - 1e-6, 0.0], [0.0, 5.0, 0.0]])
    r = compare(ref, far, FP32)
    assert not r.passed and r.top1_flips == 1 and "1 top-1 class change(s) beyond tolerance" in r.reason


def test_cosine_catches_a_scaled_output():
    r = compare(REF, REF.flip(1), tolerance_for("fp32", atol=100.0))
    assert not r.passed and "cosine" in r.reason


def test_int8_is_judged_by_class_agreement():
    got = REF * 1.05 + 0.02
    assert compare(REF, got, TOLERANCES["int8"]).passed
    swapped = got.clone()
    swapped[1, [0, 1]] = swapped[1, [1, 0]]
    r = compare(REF, swapped, TOLERANCES["int8"])
    assert not r.passed and "top-1 agreement 50.0% < 99%" in r.reason


def test_shape_mismatch():
    r = compare(REF, REF[:, :3], FP32)
    assert not r.passed and "shape" in r.reason


def test_user_tolerances_override_the_preset():
    tol = tolerance_for("bf16", atol=1e-3, rtol=0.0)
    assert (tol.atol, tol.rtol, tol.min_cosine) == (1e-3, 0.0, TOLERANCES["bf16"].min_cosine)
    assert tol.absolute(REF) == 1e-3
    assert TOLERANCES["fp16"].absolute(REF) == pytest.approx(0.03)
