"""A mixed-precision plan for int8: the fewest weight layers to keep in fp32 so that the int8 model's top-1
class agrees with fp32 on real images (>= 99% by default; and every image's logits keep int8's minimum cosine,
which the export's parity check asks too), found from the per-layer error profile.

The int8 profile at `layers` granularity (parity/layers.py) says how much relative error each weight layer
adds. Layers are tried in that order, most error first, each followed by the layer before it (see
`candidates`): the whole int8 model, then the top 1, 2, 4, ... layers
kept in fp32 until the agreement reaches the target, a bisection between the last two counts, and a last pass
that drops any kept layer the plan does not need. Each plan is quantized from the export's model.onnx with the
export's calibration images and settings (onnxruntime's nodes_to_exclude keeps a layer in fp32), checked on
the real images and timed with the timing engine (briefly: the numbers compare plans, they are not a benchmark).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..backends import RunnerOptions, eager_runner, make_runner, resolve_target
from ..core.arguments import expect_path
from ..core.console import say
from ..core.errors import ArtifactError, CheckFailed, ConfigError
from ..core.timing import Timing, measure
from ..exporters.manifest import (
    FORMATS,
    INT8_FORMAT,
    Artifact,
    artifact,
    file_entry,
    read_manifest,
    write_manifest,
)
from ..exporters.quantize import quantize_onnx
from ..zoo.stages import weight_layers
from ..zoo.weights import LoadedModel
from .layers import LAYER_IMAGES, profile_layers, recorded_calibration
from .metrics import tolerance_for
from .verify import reference_model, run_in_batches, verify_inputs

PLAN_TIMING = Timing(warmup=1, warmup_time_s=0.2, min_time_s=1.0, min_iters=3, max_iters=100)


@dataclass(frozen=True)
class PlanTrial:
    """One plan quantized, checked and timed."""

    keep_fp32: list[str]
    top1_agreement: float  # with eager fp32 on the real images
    min_cosine: float  # the worst image's logits
    median_ms: float
    images_per_s: float
    reached: bool  # agreement >= the target, and min_cosine >= int8's (parity.metrics), as the export checks


@dataclass
class Int8Plan:
    model: str
    target: float
    inputs: list[str]  # the real images agreement is measured on
    images: int
    ranking: list[dict] = field(default_factory=list)  # {layer, added_error}, most error first
    trials: list[PlanTrial] = field(default_factory=list)
    fp32: dict = field(default_factory=dict)  # the fp32 ONNX model's speed, for comparison
    timing: dict = field(default_factory=dict)
    batch_size: int = 1

    @property
    def keep_fp32(self) -> list[str] | None:
        """The plan found: the fewest layers among the trials that reached the target (None: none did)."""
        reached = [t for t in self.trials if t.reached]
        return min(reached, key=lambda t: len(t.keep_fp32)).keep_fp32 if reached else None

    def check(self) -> None:
        if self.keep_fp32 is None:
            best = max(self.trials, key=lambda t: t.top1_agreement)
            raise CheckFailed(f"no int8 plan reached {self.target:.0%} top-1 agreement with fp32 (best: "
                              f"{best.top1_agreement:.1%} keeping {', '.join(best.keep_fp32) or 'nothing'} in fp32)")

    def to_dict(self) -> dict:
        return {"model": self.model, "target": self.target, "inputs": self.inputs, "images": self.images,
                "keep_fp32": self.keep_fp32, "ranking": self.ranking, "batch_size": self.batch_size,
                "timing": self.timing, "fp32": self.fp32, "trials": [asdict(t) for t in self.trials]}


def rank_layers(profile_rows, layer_names: Sequence[str]) -> list[dict]:
    """Weight layers by the relative error each adds (its stage's error minus the previous stage's), most
    first; from a `layers`-granularity profile's rows."""
    added, previous = {}, 0.0
    for row in profile_rows:
        if row.stage in layer_names:  # None: the stage's output was NaN/Inf, the worst there is
            added[row.stage] = None if row.rel_error is None or previous is None else row.rel_error - previous
        previous = row.rel_error
    worst_first = lambda r: -math.inf if r["added_error"] is None else -r["added_error"]  # noqa: E731
    return sorted(({"layer": k, "added_error": v} for k, v in added.items()), key=worst_first)


def candidates(ranking: Sequence[dict], layer_names: Sequence[str]) -> list[str]:
    """The order in which layers are kept in fp32: each layer by the error it adds, followed by the layer before
    it. A stage's added error comes from its weights and from its input, which is the previous layer's int8
    output: an outlier in that output shows as error at the next layer (keeping both in fp32 removes it)."""
    order: list[str] = []
    for row in ranking:
        i = layer_names.index(row["layer"])
        for name in (row["layer"], layer_names[i - 1] if i > 0 else None):
            if name is not None and name not in order:
                order.append(name)
    return order


def search(ranked: Sequence[str], reaches: Callable[[list[str]], bool]) -> list[str] | None:
    """The fewest leading layers of `ranked` whose plan reaches the target (none, 1, 2, 4, ... then a bisection),
    less any layer it does not need; None when even all of them do not."""
    if reaches([]):
        return []
    fail, count = 0, 1
    while not reaches(list(ranked[:count])):
        if count >= len(ranked):
            return None
        fail, count = count, min(2 * count, len(ranked))
    while count - fail > 1:  # reaches at count, not at fail
        mid = (fail + count) // 2
        if reaches(list(ranked[:mid])):
            count = mid
        else:
            fail = mid
    plan = list(ranked[:count])
    for layer in reversed(plan[:]):  # least error first: the likeliest not to be needed
        if len(plan) > 1 and reaches([x for x in plan if x != layer]):
            plan.remove(layer)
    return plan


def plan_int8(export_dir: str | os.PathLike, *, target: float = 0.99, reference: LoadedModel | None = None,
              weights: str | os.PathLike | None = None, photos: bool = True, data: str | None = "auto",
              data_images: int = LAYER_IMAGES, calibration: torch.Tensor | None = None, batch_size: int = 1,
              timing: Timing = PLAN_TIMING, backend_settings=None,
              cache_dir: str | os.PathLike | None = None) -> Int8Plan:
    """Find the int8 plan of an export folder holding model.onnx and model.int8.onnx (see the module's
    docstring). Agreement is measured on the real images `verify` uses (the photos, and the test images of
    the dataset the weights were trained on); each plan is timed at `batch_size`."""
    expect_path("plan_int8", "export_dir", export_dir)
    if not 0 < target <= 1:
        raise ConfigError(f"the agreement target must be in (0, 1], got {target}")
    manifest = read_manifest(export_dir)
    artifact(manifest, "onnx", export_dir)
    if INT8_FORMAT not in manifest.artifacts:
        raise ArtifactError(f"{export_dir} has no {INT8_FORMAT} artifact: export with --formats onnx,onnx-int8")
    reference = reference or reference_model(manifest, weights)
    quant = manifest.artifacts[INT8_FORMAT].quant_config()
    images = calibration if calibration is not None else recorded_calibration(manifest, quant, export_dir)
    skipped: list[str] = []
    real = verify_inputs(manifest, [], photos, data, data_images, skipped)
    if not real:
        why = f" ({'; '.join(skipped)})" if skipped else ""
        raise ConfigError(f"the int8 plan is judged on real images: allow the photos or a dataset{why}")
    x = torch.cat([t for _, t in real])
    expected = run_in_batches(eager_runner(reference.module, "cpu", "fp32"), x, None)
    layers = weight_layers(reference.module)
    result = Int8Plan(manifest.model.name, target, [label for label, _ in real], x.shape[0],
                      timing=asdict(timing), batch_size=batch_size)
    say(f"int8 plan: ranking the {len(layers)} weight layers by the error int8 adds at each ({x.shape[0]} images)")
    profile = profile_layers(export_dir, backends=["onnxruntime"], precisions=["int8"], reference=reference,
                             photos=photos, data=data, data_images=data_images, all_stages=True, granularity="layers",
                             backend_settings=backend_settings, cache_dir=cache_dir, calibration=images)
    result.ranking = rank_layers(profile.profiles[0].rows, list(layers))
    target_int8 = resolve_target("onnxruntime", "cpu", "int8")
    batch = x[:batch_size].expand(batch_size, *x.shape[1:]) if x.shape[0] < batch_size else x[:batch_size]
    # through make_runner, as every run: each file is checked against its sha256 and inspected before it is opened
    options = RunnerOptions.from_settings(backend_settings)
    say("int8 plan: timing the fp32 ONNX model")
    fp32 = make_runner(resolve_target("onnxruntime", "cpu", "fp32"), export_dir=export_dir, options=options)
    timed = measure(fp32, batch, timing)
    result.fp32 = {"median_ms": timed.stats.median_ms, "images_per_s": batch_size * 1000 / timed.stats.median_ms}
    tried: dict[tuple[str, ...], bool] = {}
    min_cosine = tolerance_for("int8").min_cosine
    with tempfile.TemporaryDirectory(prefix="vggbench-plan-") as tmp:

        def reaches(keep: list[str]) -> bool:
            key = tuple(sorted(keep, key=list(layers).index))
            if key not in tried:
                # each plan is an export folder of its own (the export's manifest, with this int8 model as its
                # one artifact), so that it is loaded as any export is
                folder = Path(tmp) / f"plan{len(tried)}"
                folder.mkdir()
                plan = dataclasses.replace(quant, keep_fp32=key)
                quantize_onnx(Path(export_dir) / FORMATS["onnx"], folder / FORMATS[INT8_FORMAT], images, plan,
                              manifest.input.name, keep_weights=[f"{layers[name]}.weight" for name in key])
                entry = Artifact(quantization=plan.to_dict(), files=(file_entry(folder, FORMATS[INT8_FORMAT]),))
                write_manifest(folder, dataclasses.replace(manifest, artifacts={INT8_FORMAT: entry}, parity=None))
                runner = make_runner(target_int8, export_dir=folder, options=options)
                got = run_in_batches(runner, x, None)
                agreement = (got.argmax(1) == expected.argmax(1)).double().mean().item()
                cosine = torch.nn.functional.cosine_similarity(got.double(), expected.double(), dim=1).min().item()
                stats = measure(runner, batch, timing).stats
                # the export's own int8 check asks for the cosine too: a plan that passes here passes there
                reached = agreement >= target and cosine >= min_cosine
                result.trials.append(PlanTrial(list(key), agreement, cosine, stats.median_ms,
                                               batch_size * 1000 / stats.median_ms, reached))
                say(f"int8 plan: trial {len(result.trials)}, fp32 kept for {', '.join(key) or 'no layer'}: top-1 "
                    f"agreement {agreement:.2%} (target {target:.2%}), min cosine {cosine:.4f}"
                    f"{'' if reached else '; not enough'}")
                tried[key] = reached
            return tried[key]

        search(candidates(result.ranking, list(layers)), reaches)
    return result
