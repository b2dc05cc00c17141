"""Parity that says where: the error of each stage of the network (vggbench.zoo.stages) for a backend and
precision, against eager fp32 on the same inputs, and the first stage whose error exceeds the precision's budget.

Each stage is measured on a prefix sub-model (the network up to that stage), exported with the export's own
settings and run with the same runner settings, never by adding the stage's tensor as an extra graph output:
an extra output keeps the runtime from fusing across it (conv+ReLU+pool, QDQ pairs, a TensorRT layer fusion),
so the run would no longer be the engine that failed, and every marked tensor costs memory. The last stage is
the whole model, measured on the export folder itself.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from ..backends import RunnerOptions, eager_runner, make_runner
from ..backends.target import Target
from ..core.arguments import expect_path
from ..core.device import require_device
from ..core.errors import ArtifactError, CheckFailed, UnsupportedError, VggbenchError, WriteError
from ..core.fileio import write_json
from ..core.numerics import scoped_numerics, tf32_flag
from ..data.inputs import calibration_images
from ..exporters.export import write_artifacts
from ..exporters.manifest import INT8_FORMAT, Manifest, artifact, read_manifest
from ..exporters.quantize import QuantConfig
from ..exporters.settings import ExportSettings
from ..zoo.stages import Stage, prefix, stages
from ..zoo.weights import LoadedModel
from .layer_plot import plot_layers
from .metrics import Tolerance, tolerance_for
from .settings import VerifySettings
from .verify import combinations, reference_model, run_in_batches, runnable, verify_inputs

LAYER_IMAGES = 256  # dataset images at most: every stage's activations of all images are held at once
COLUMNS = ["stage", "layers", "shape", "max_abs", "rel_error", "min_cosine", "growth", "budget"]


@dataclass(frozen=True)
class StageError:
    """The error of one stage's output (all images, flattened) against eager fp32."""

    stage: str
    index: int  # 1-based depth
    layers: list[str]
    shape: list[int]  # one image's output
    # None where not finite (NaN/Inf in the output) or not comparable (another shape)
    max_abs: float | None
    rel_error: float | None  # ||got - ref|| / ||ref|| over all images
    min_cosine: float | None  # the worst image's cosine similarity (images whose reference is all zeros left out)
    growth: float | None  # rel_error / the previous measured stage's (None for the first, or from zero)
    within: bool  # within the precision's budget (metrics.Tolerance)
    reason: str  # "ok", or how it exceeds the budget
    top1_agreement: float | None = None  # the logits stage only


@dataclass
class LayerProfile:
    """One backend/precision's profile: the stages measured (all, or the ones bisection visited)."""

    backend: str
    device: str
    precision: str
    memory_format: str
    mode: str  # "bisect" or "all-stages"
    inputs: list[str]
    images: int
    stages_total: int
    tolerance: dict
    rows: list[StageError] = field(default_factory=list)
    builds: int = 0  # prefix sub-models exported (or built) for this profile

    @property
    def first_exceeding(self) -> str | None:
        """The first stage whose error exceeds the budget (by bisection: assuming error only grows with depth)."""
        bad = [r for r in self.rows if not r.within]
        return bad[0].stage if bad else None

    @property
    def label(self) -> str:
        return f"{self.backend} {self.device} {self.precision} {self.memory_format}"

    def to_dict(self) -> dict:
        return {**{f.name: getattr(self, f.name) for f in fields(self) if f.name != "rows"},
                "first_exceeding": self.first_exceeding, "rows": [asdict(r) for r in self.rows]}


@dataclass
class LayersReport:
    export_dir: str
    model: str
    granularity: str
    profiles: list[LayerProfile] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def check(self) -> None:
        """UnsupportedError when nothing was profiled (exit 2), CheckFailed when a stage exceeds its budget (1)."""
        if not self.profiles:
            raise UnsupportedError(f"nothing to profile in {self.export_dir}: every combination was skipped")
        bad = [p for p in self.profiles if p.first_exceeding]
        if bad:
            raise CheckFailed("; ".join(f"{p.label}: error exceeds the {p.precision} budget from stage "
                                        f"{p.first_exceeding}" for p in bad))

    def summary(self) -> str:
        return f"ok: every stage of {len(self.profiles)} profile(s) within its precision's budget"

    def to_dict(self) -> dict:
        return {"export_dir": self.export_dir, "model": self.model, "granularity": self.granularity,
                "profiles": [p.to_dict() for p in self.profiles], "skipped": self.skipped}


def table_rows(profile: LayerProfile) -> list[dict]:
    """The profile's rows for a table (COLUMNS)."""
    first = profile.first_exceeding
    return [{"stage": r.stage, "layers": ",".join(r.layers) or "-", "shape": "x".join(map(str, r.shape)),
             "max_abs": r.max_abs, "rel_error": r.rel_error, "min_cosine": r.min_cosine,
             "growth": "-" if r.growth is None else f"{r.growth:.3g}x",
             "budget": "ok" if r.within else ("EXCEEDS (first)" if r.stage == first else "exceeds")}
            for r in profile.rows]


# --- metrics ---------------------------------------------------------------------------------------------

def stage_error(stage: Stage, reference: torch.Tensor, got: torch.Tensor, tol: Tolerance,
                last: bool = False) -> StageError:
    """The error of a stage's (N, ...) output; within budget when every element is within atol + rtol x |ref|
    (atol: the preset's share of the stage's largest |ref|), every image's cosine >= tol.min_cosine and, on
    the logits, top-1 agreement >= tol.min_top1 where the precision sets one."""
    shape = list(reference.shape[1:])
    ref, out = reference.flatten(1).double(), got.flatten(1).double()
    if ref.shape != out.shape:
        return StageError(stage.name, stage.index, list(stage.layers), shape, None, None, None, None, False,
                          f"shape {tuple(got.shape)} != reference {tuple(reference.shape)}")
    diff = (out - ref).abs()
    max_abs = diff.max().item()
    norm = ref.norm().item()
    rel = (out - ref).norm().item() / norm if norm > 0 else (0.0 if max_abs == 0 else math.inf)
    live = ref.norm(dim=1) > 0
    cosine = torch.nn.functional.cosine_similarity(out[live], ref[live], dim=1).min().item() if live.any() else 1.0
    reasons = []
    if not torch.isfinite(out).all():
        reasons.append("output has NaN/Inf")
    atol = tol.absolute(ref)
    if atol is not None and not bool((diff <= atol + tol.rtol * ref.abs()).all()):
        reasons.append(f"max abs diff {max_abs:.3g} exceeds atol {atol:.3g} + rtol {tol.rtol:g} x |ref|")
    if not cosine >= tol.min_cosine:
        reasons.append(f"cosine {cosine:.6f} < {tol.min_cosine}")
    agreement = None
    if last:
        agreement = (ref.argmax(1) == out.argmax(1)).double().mean().item()
        if tol.min_top1 is not None and not agreement >= tol.min_top1:
            reasons.append(f"top-1 agreement {agreement:.1%} < {tol.min_top1:.0%}")
    finite = lambda v: v if math.isfinite(v) else None  # noqa: E731  (JSON has no NaN or Inf: null)
    return StageError(stage.name, stage.index, list(stage.layers), shape, finite(max_abs), finite(rel),
                      finite(cosine), None, not reasons, "; ".join(reasons) or "ok", agreement)


# --- prefix builds ---------------------------------------------------------------------------------------

class PrefixBuilds:
    """Prefix exports of one export folder, made with its recorded settings and kept under `root` (reused
    while their manifest and checksums say they are what is asked for)."""

    def __init__(self, export_dir: str | os.PathLike, manifest: Manifest, reference: LoadedModel, root: Path,
                 calibration: torch.Tensor | None = None) -> None:
        self.export_dir, self.manifest, self.reference, self.root = Path(export_dir), manifest, reference, root
        self._calibration = calibration
        self.built = 0

    def export_settings(self, formats: list[str]) -> tuple[ExportSettings, QuantConfig | None]:
        """The export settings that reproduce the export's own for `formats`, and its int8 quantization when
        `formats` hold onnx-int8."""
        m, spec, arts = self.manifest, self.manifest.input, self.manifest.artifacts
        torchscript = arts.get("torchscript")
        settings = ExportSettings(formats=tuple(formats), image_size=spec.image_size, dynamic_batch=spec.dynamic_batch,
                                  batch_size=m.static_batch or 1, precision=m.precision, force=True,
                                  torchscript_mode=(torchscript and torchscript.mode) or "trace",
                                  opset=arts["onnx"].opset if "onnx" in formats and "onnx" in arts else None)
        return settings, arts[INT8_FORMAT].quant_config() if INT8_FORMAT in formats else None

    def calibration(self, quant: QuantConfig) -> torch.Tensor:
        if self._calibration is None:
            self._calibration = recorded_calibration(self.manifest, quant, self.export_dir)
        return self._calibration

    def folder(self, stage: Stage, fmt: str) -> Path:
        formats = ["onnx", fmt] if fmt == INT8_FORMAT else [fmt]
        settings, quant = self.export_settings(formats)
        recorded = settings.to_dict()
        ident = {"state_sha256": self.manifest.weights.state_sha256, "stage": asdict(stage),
                 **{k: recorded[k] for k in ("formats", "image_size", "dynamic_batch", "batch_size", "precision",
                                             "torchscript_mode", "opset")},
                 "quant": quant.to_dict() if quant else None}
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=list).encode()).hexdigest()[:12]
        folder = self.root / f"{stage.name}-{fmt}-{digest}"
        if not self._usable(folder, fmt):
            calibration = self.calibration(quant) if quant else None
            write_artifacts(self.reference, folder, settings, quant=quant, calibration=calibration, stage=stage)
            self.built += 1
        return folder

    def _usable(self, folder: Path, fmt: str) -> bool:
        try:
            m = read_manifest(folder)
            artifact(m, fmt, folder)
        except VggbenchError:
            return False
        return m.weights.state_sha256 == self.manifest.weights.state_sha256


def recorded_calibration(manifest: Manifest, quant: QuantConfig, export_dir) -> torch.Tensor:
    """An int8 export's calibration images again: the recorded source and count, drawn with the same seed as
    vggbench.export drew them."""
    if quant.calibration in ("given", "auto"):
        raise ArtifactError(f"{export_dir}'s int8 model was calibrated on images its caller gave; pass the same "
                            f"images (calibration=) to rebuild it")
    spec = manifest.input
    source = quant.calibration.rsplit(" ", 1)[0] if quant.calibration != "photos" else "photos"  # "digits train"
    images, _ = calibration_images(source, quant.images, spec.image_size, spec.mean, spec.std,
                                   manifest.weights.meta or {})
    return images


# --- the profile -----------------------------------------------------------------------------------------

def profile_layers(export_dir: str | os.PathLike, *, reference: LoadedModel | None = None, backend_settings=None,
                   options: RunnerOptions | None = None, calibration: torch.Tensor | None = None,
                   **keywords) -> LayersReport:
    """The error after each stage for every (backend, precision, memory format) that `verify` would compare
    (same settings, same inputs: random batches, photos, dataset images; int8 on real images only).

    `keywords` are the profile's settings (vggbench.parity.settings.VerifySettings): verify's (backends, device,
    precisions, memory_formats, batch_sizes, photos, data, data_images (default 256), atol, rtol, weights) and
    all_stages, granularity, cache_dir, out and plot (the profile also written as JSON, and drawn). By default
    the stages are bisected for the first one whose error exceeds the budget (the whole model first; about
    log2(stages) prefixes more when it fails); `all_stages` measures every stage. granularity: "blocks" (each conv
    block after its pool, flatten, each classifier layer) or "layers" (after every weight layer). Prefix exports
    go to `cache_dir` (kept and reused), else to a temp folder. `calibration`: the images an int8 export was
    calibrated on, when its caller gave them.
    """
    return profile_with(export_dir, VerifySettings.of(keywords, "profile_layers()", layers=True),
                        reference=reference, backend_settings=backend_settings, options=options,
                        calibration=calibration)


def profile_with(export_dir: str | os.PathLike, config: VerifySettings, *, reference: LoadedModel | None = None,
                 backend_settings=None, options: RunnerOptions | None = None,
                 calibration: torch.Tensor | None = None) -> LayersReport:
    """`profile_layers` with its settings as one object (`vggbench verify --layers`); the report is written to
    `config.out` (with the settings) and drawn into `config.plot` where they are given."""
    options = options or RunnerOptions.from_settings(backend_settings)
    report = _profile(export_dir, config, reference, options, calibration)
    if config.out:
        write_json(config.out, {"settings": config.to_dict(), **report.to_dict()})
    if config.plot:
        try:
            plot_layers(report, config.plot)
        except WriteError as e:
            raise e.keeping(f"the profile is in {config.out}") if config.out else e from None
    return report


def _profile(export_dir, config: VerifySettings, reference: LoadedModel | None, options: RunnerOptions,
             calibration: torch.Tensor | None) -> LayersReport:
    expect_path("profile_layers", "export_dir", export_dir)
    device = require_device(config.device)
    manifest = read_manifest(export_dir)
    if manifest.model.stage:
        raise ArtifactError(f"{export_dir} holds a prefix sub-model (stage {manifest.model.stage['name']}); "
                            f"profile the whole model's export")
    if manifest.dense is not None:
        raise UnsupportedError(f"{export_dir} is a dense export (any input size); profile a fixed-size export of "
                               f"the model, whose stages are cut at one size")
    reference = reference or reference_model(manifest, config.weights)
    cuts = stages(reference.module, config.granularity)
    report = LayersReport(str(export_dir), manifest.model.name, config.granularity)
    inputs = verify_inputs(manifest, config.batch_sizes, config.photos, config.dataset,
                           config.data_images or LAYER_IMAGES, report.skipped)
    static = manifest.static_batch
    gold = eager_runner(reference.module, "cpu", "fp32")
    expected: dict[str, dict[str, torch.Tensor]] = {}

    def reference_outputs(stage: Stage) -> dict[str, torch.Tensor]:
        if stage.name not in expected:
            runner = gold if stage is cuts[-1] else eager_runner(prefix(reference.module, stage), "cpu", "fp32")
            expected[stage.name] = {label: run_in_batches(runner, x, None) for label, x in inputs}
        return expected[stage.name]

    with tempfile.TemporaryDirectory(prefix="vggbench-prefixes-") as tmp, \
            scoped_numerics(tf32=tf32_flag(device, False)):
        builds = PrefixBuilds(export_dir, manifest, reference, Path(config.cache_dir or tmp), calibration)
        combos = combinations(manifest, config.backends, config.precisions, config.memory_formats)
        # the whole model's runner first: a combination that cannot run is skipped before any prefix
        for target, whole in runnable(combos, device, report.skipped, lambda target: _stage_runner(
                target, cuts[-1], True, reference, export_dir, builds, options)):
            backend, precision, memory_format = target.backend, target.precision, target.memory_format
            tol = tolerance_for(precision, config.atol, config.rtol)
            used = [(label, x) for label, x in inputs if tol.min_top1 is None or not label.startswith("random")]
            profile = LayerProfile(backend, str(device), precision, memory_format,
                                   "all-stages" if config.all_stages else "bisect", [label for label, _ in used],
                                   sum(x.shape[0] for _, x in used), len(cuts), asdict(tol))
            before = builds.built

            # bound now: the function is called only within this iteration, but say so
            def measure(k: int, target=target, whole=whole, used=used, tol=tol) -> StageError:
                stage = cuts[k]
                runner = whole if stage is cuts[-1] else _stage_runner(target, stage, False, reference, export_dir,
                                                                       builds, options)
                ref = reference_outputs(stage)
                got = torch.cat([run_in_batches(runner, x, static).flatten(1) for label, x in used])
                want = torch.cat([ref[label].flatten(1) for label, _ in used])
                shape = ref[used[0][0]].shape
                return stage_error(stage, want.view(-1, *shape[1:]), got.view(-1, *shape[1:]), tol,
                                   last=stage is cuts[-1])

            measured = _search(measure, len(cuts), config.all_stages)
            profile.rows = _with_growth(measured)
            profile.builds = builds.built - before
            report.profiles.append(profile)
    return report


def _stage_runner(target: Target, stage: Stage, last: bool, reference: LoadedModel, export_dir, builds: PrefixBuilds,
                  options: RunnerOptions):
    """The target's runner of the prefix that ends at `stage`: module backends run the prefix module; artifact
    backends load a prefix export made with the export's settings (the export itself for the last stage)."""
    if target.artifact is None:
        module = reference.module if last else prefix(reference.module, stage)
        if not last:
            builds.built += 1
        return make_runner(target, module, options=options)
    folder = export_dir if last else builds.folder(stage, target.artifact)
    return make_runner(target, export_dir=folder, options=options)


def _search(measure, count: int, all_stages: bool) -> list[StageError]:
    """Every stage, or a bisection for the first stage over budget: the last stage (the whole model) first;
    when it is within budget, so is (we assume) every stage before it."""
    if all_stages:
        return [measure(k) for k in range(count)]
    found = {count - 1: measure(count - 1)}
    if found[count - 1].within:
        return list(found.values())
    lo, hi = 0, count - 1  # invariant: stage hi exceeds; every stage before lo is within
    while lo < hi:
        mid = (lo + hi) // 2
        found[mid] = measure(mid)
        if found[mid].within:
            lo = mid + 1
        else:
            hi = mid
    return [found[k] for k in sorted(found)]


def _with_growth(rows: list[StageError]) -> list[StageError]:
    """Each row's growth from the previous measured row (the rows are in depth order)."""
    out, previous = [], None
    for row in rows:
        growth = row.rel_error / previous if previous and row.rel_error is not None else None
        out.append(replace(row, growth=growth))
        previous = row.rel_error
    return out
