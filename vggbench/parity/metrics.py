"""Do two runners compute the same thing? Metrics, tolerance presets per precision, ParityResult rows."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch


@dataclass(frozen=True)
class Tolerance:
    """A comparison passes when every logit satisfies |got - ref| <= atol + rtol * |ref|, every image's
    logits have cosine similarity >= min_cosine, and no top-1 class changes unless the reference's two
    logits were within tolerance of each other (a near tie).

    atol is absolute when given; the presets instead give `range_atol`, a fraction of the reference's
    largest |logit|, so that one preset fits a tiny random model (logits ~1e-8) and a trained one
    (logits ~10) alike. With neither (int8) the elementwise check is off and at least min_top1 of the
    images must keep their top-1 class.
    """

    rtol: float
    range_atol: float | None
    min_cosine: float
    min_top1: float | None = None
    atol: float | None = None

    def absolute(self, reference: torch.Tensor) -> float | None:
        if self.atol is not None:
            return self.atol
        if self.range_atol is None:
            return None
        return self.range_atol * reference.abs().max().item()


# Why these numbers (measured on VGG16 at 224, random weights, CPU; see the README): fp32 backends
# differ from eager only in summation order and kernel choice, ~2e-6 of the logit range (channels_last)
# and less for ONNX Runtime; 1e-4 leaves room for other CPUs and GPUs (TF32 off) and still catches a
# 1% change to any layer. fp16 moved logits by 1e-3 of the range and bf16 by 8e-3 (cosine 0.99996):
# the presets allow ~5-10x that. int8 moves logits far more, so it is judged by class agreement.
# "tf32" is fp32 run with TF32 matmuls/convolutions on a CUDA GPU (10-bit mantissa, like fp16): on an H100
# it moved VGG16's logits by ~1e-3 of the range (3e-3 on a tiny model), so it gets fp16's preset.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(rtol=1e-4, range_atol=1e-4, min_cosine=0.99999),
    "fp16": Tolerance(rtol=1e-2, range_atol=1e-2, min_cosine=0.999),
    "amp": Tolerance(rtol=1e-2, range_atol=1e-2, min_cosine=0.999),
    "bf16": Tolerance(rtol=5e-2, range_atol=5e-2, min_cosine=0.99),
    "int8": Tolerance(rtol=0.0, range_atol=None, min_cosine=0.99, min_top1=0.99),
    "fp8": Tolerance(rtol=0.0, range_atol=None, min_cosine=0.99, min_top1=0.99),  # like int8: by class agreement
    "tf32": Tolerance(rtol=1e-2, range_atol=1e-2, min_cosine=0.999),
}


def tolerance_for(precision: str, atol: float | None = None, rtol: float | None = None,
                  tf32: bool = False) -> Tolerance:
    """The preset of `precision`; fp32 with `tf32` (TF32 math allowed on a CUDA device) gets tf32's."""
    tol = TOLERANCES["tf32" if tf32 and precision == "fp32" else precision]
    if atol is not None:
        tol = replace(tol, atol=atol)
    if rtol is not None:
        tol = replace(tol, rtol=rtol)
    return tol


@dataclass(frozen=True)
class ParityResult:
    """One comparison of a runner against the eager fp32 reference, on one set of inputs."""

    backend: str
    device: str
    precision: str
    memory_format: str
    inputs: str  # e.g. "random x1", "photos x4"
    images: int
    max_abs: float
    max_rel: float  # over logits with |ref| > atol (relative error is meaningless near zero)
    mean_abs: float
    min_cosine: float  # the worst image's cosine similarity
    top1_agreement: float
    top5_overlap: float
    top1_flips: int  # top-1 changes that are not near ties (fail)
    atol: float | None
    rtol: float
    passed: bool
    reason: str  # "ok", or why it failed

    def to_dict(self) -> dict:
        return asdict(self)


def _finite(x: float) -> float:
    return x if math.isfinite(x) else float("nan")


def compare(reference: torch.Tensor, got: torch.Tensor, tol: Tolerance, *, backend: str = "", device: str = "cpu",
            precision: str = "fp32", memory_format: str = "contiguous", inputs: str = "") -> ParityResult:
    """Compare (N, classes) logits. NaN or Inf anywhere is a failure, never 'equal'."""
    ref, out = reference.double(), got.double()
    atol = tol.absolute(ref) if torch.isfinite(ref).all() else None
    common = dict(backend=backend, device=device, precision=precision, memory_format=memory_format, inputs=inputs,
                  images=ref.shape[0], atol=atol, rtol=tol.rtol)
    if ref.shape != out.shape:
        nan = float("nan")
        return ParityResult(**common, max_abs=nan, max_rel=nan, mean_abs=nan, min_cosine=nan, top1_agreement=nan,
                            top5_overlap=nan, top1_flips=ref.shape[0], passed=False,
                            reason=f"shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
    diff = (out - ref).abs()
    max_abs, mean_abs = diff.max().item(), diff.mean().item()
    floor = atol or 0.0
    significant = ref.abs() > floor
    max_rel = (diff[significant] / ref.abs()[significant]).max().item() if significant.any() else 0.0
    cosine = torch.nn.functional.cosine_similarity(out, ref, dim=1).min().item()
    top1_ref, top1_out = ref.argmax(1), out.argmax(1)
    agree = (top1_ref == top1_out).double().mean().item()
    k = min(5, ref.shape[1])
    top5_ref, top5_out = ref.topk(k, 1).indices, out.topk(k, 1).indices
    overlap = torch.tensor([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(top5_ref, top5_out, strict=True)])
    flips = 0
    if atol is not None:
        for i in torch.nonzero(top1_ref != top1_out).flatten().tolist():
            best, chosen = ref[i, top1_ref[i]], ref[i, top1_out[i]]
            if best - chosen > 2 * (atol + tol.rtol * best.abs()):
                flips += 1

    reasons = []
    if not torch.isfinite(ref).all():
        reasons.append("the reference has NaN/Inf (are these weights features-only?)")
    if not torch.isfinite(out).all():
        reasons.append("output has NaN/Inf")
    if not reasons:
        if atol is not None and not bool((diff <= atol + tol.rtol * ref.abs()).all()):
            worst = (diff - tol.rtol * ref.abs()).argmax()
            reasons.append(f"max abs diff {max_abs:.3g} exceeds atol {atol:.3g} + rtol {tol.rtol:g} x |ref| "
                           f"(worst logit: ref {ref.flatten()[worst].item():.4g}, got {out.flatten()[worst].item():.4g})")
        if not cosine >= tol.min_cosine:
            reasons.append(f"cosine {cosine:.6f} < {tol.min_cosine}")
        if flips:
            reasons.append(f"{flips} top-1 class change(s) beyond tolerance")
        if tol.min_top1 is not None and not agree >= tol.min_top1:
            reasons.append(f"top-1 agreement {agree:.1%} < {tol.min_top1:.0%}")
    return ParityResult(**common, max_abs=_finite(max_abs), max_rel=_finite(max_rel), mean_abs=_finite(mean_abs),
                        min_cosine=_finite(cosine), top1_agreement=agree, top5_overlap=overlap.mean().item(),
                        top1_flips=flips, passed=not reasons, reason="; ".join(reasons) or "ok")
