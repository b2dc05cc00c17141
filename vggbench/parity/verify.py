"""`vggbench verify`: run every artifact of an export folder against the eager model on the same inputs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..backends import (
    RunnerOptions,
    artifact_backends,
    eager_runner,
    make_runner,
    resolve_backend,
    resolve_target,
)
from ..backends.target import check_memory_format, check_precision
from ..core.arguments import expect_path
from ..core.console import recorded_warnings, say
from ..core.device import require_device
from ..core.errors import ArtifactError, CheckFailed, DataError, UnsupportedError
from ..core.extras import MissingExtra
from ..core.numerics import scoped_numerics, tf32_flag
from ..data.inputs import calibration_images, dataset_images, random_batch, sample_photos, trained_on
from ..exporters.manifest import INT8_FORMAT, DenseSpec, Manifest, read_manifest
from ..exporters.quantize import QuantConfig
from ..zoo.dense import dense_model
from ..zoo.specs import LRN_FORM, get_spec
from ..zoo.stages import Stage, prefix
from ..zoo.weights import LoadedModel, WeightsSource, load_model
from .metrics import ParityResult, compare, tolerance_for
from .settings import VerifySettings

CHUNK = 32  # images per call when comparing many (bounds memory at 224x224)
DATA_IMAGES = 1000  # dataset images compared at most (seeded sample of the test split)


@dataclass
class VerifyReport:
    export_dir: str
    model: str
    results: list[ParityResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # combinations that cannot run here, and why
    # what the backends warned while loading and running (torch.jit.load's deprecation notice), one line each,
    # recorded rather than printed
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def failed(self) -> list[ParityResult]:
        return [r for r in self.results if not r.passed]

    def check(self) -> None:
        """Raise unless every comparison passed: UnsupportedError when nothing could be compared (exit 2),
        CheckFailed naming the first failure otherwise (exit 1)."""
        if not self.results:
            raise UnsupportedError(f"nothing to compare in {self.export_dir}: every combination was skipped")
        failed = self.failed
        if failed:
            first = failed[0]
            raise CheckFailed(f"{len(failed)} of {len(self.results)} comparisons failed "
                              f"(first: {first.backend} {first.precision} on {first.inputs}: {first.reason})")

    def summary(self) -> str:
        """One line for a report that passed."""
        return f"ok: {len(self.results)} comparisons passed"

    def to_dict(self) -> dict:
        return {"export_dir": self.export_dir, "model": self.model, "passed": self.passed,
                "results": [r.to_dict() for r in self.results], "skipped": self.skipped,
                "warnings": self.warnings}


def reference_model(manifest: Manifest, weights: str | os.PathLike | None = None) -> LoadedModel:
    """Rebuild the exported model in eager mode, and prove that its weights are the exported ones."""
    info, model = manifest.weights, manifest.model
    if weights is None:
        weights = WeightsSource(info.source, seed=info.seed or 0, tag=info.tag,
                                path=Path(info.path) if info.path else None)
    if model.spec is not None:  # a custom layer list (--config): registered as the export recorded it
        from ..zoo.custom import register_custom

        register_custom(**{k: model.spec.get(k) for k in ("name", "layers", "batch_norm")}, where="manifest.json")
    spec = get_spec(model.name)
    if spec.lrn and not (model.lrn is not None and model.lrn.get("form") == LRN_FORM):
        raise ArtifactError(f"{model.name} was exported before vggbench's LRN was Krizhevsky's (its LRN is 5x "
                            f"weaker than the eager model's now): export it again to verify it")
    loaded = load_model(model.name, weights, seed=info.seed or 0, **model.options)
    if loaded.fingerprint != info.state_sha256:
        raise ArtifactError(f"the weights rebuilt from {weights} are not the ones exported (state_sha256 differs); "
                            f"pass --weights with the file the export was made from")
    return loaded


def exported_module(manifest: Manifest, reference: LoadedModel) -> LoadedModel:
    """The reference for what the folder holds: the model, or the prefix sub-model of a stage export."""
    stage = manifest.model.stage
    if not stage:
        return reference
    cut = Stage(**{**stage, "layers": tuple(stage["layers"])})
    return replace(reference, module=prefix(reference.module, cut))


def verify_inputs(manifest: Manifest, batch_sizes: Sequence[int], photos: bool, data: str | None, data_images: int,
                  skipped: list[str]) -> list[tuple[str, torch.Tensor]]:
    """(label, images) to compare on: seeded random batches, the photos, and a dataset's test images (see
    `verify`); a dataset that "auto" could not load is noted in `skipped`."""
    spec = manifest.input
    size = spec.image_size
    inputs = [(f"random x{b}", random_batch(b, size, seed=b)) for b in batch_sizes]
    if photos:
        try:
            real = sample_photos(size, spec.mean, spec.std)
        except MissingExtra as e:
            # the photos are on by default: without the [data] extra the check goes on with the other inputs
            skipped.append(str(e))
        else:
            inputs.append((f"photos x{real.shape[0]}", real))
    name = trained_on(manifest.weights.meta or {}) if data == "auto" else data
    if name:
        try:
            images, _, split = dataset_images(name, size, spec.mean, spec.std, count=data_images)
            inputs.append((f"{name} {split} x{images.shape[0]}", images))
        except (DataError, MissingExtra) as e:
            if data != "auto":
                raise
            skipped.append(f"{name} images, which the weights were trained on: {e}")
    return inputs


def runnable(combos, device, skipped: list[str], build):
    """(target, runner) for each (backend, precision, memory_format) of `combos` that resolves on `device` and
    that `build(target)` can run; the others are added to `skipped` with the reason (the reference itself, or
    why the combination cannot run)."""
    for backend, precision, memory_format in combos:
        combo = f"{backend} {device} {precision} {memory_format}"
        try:
            target = resolve_target(backend, device, precision, memory_format)
            if target.is_reference:
                skipped.append(f"{combo}: this is the reference itself")
                continue
            runner = build(target)
        except UnsupportedError as e:
            skipped.append(f"{combo}: {e}")
            continue
        yield target, runner


def run_in_batches(runner, x: torch.Tensor, batch: int | None) -> torch.Tensor:
    """Run `x` in chunks: of a static export's batch size (padding the last chunk), else of up to CHUNK."""
    if batch is None and x.shape[0] <= CHUNK or x.shape[0] == batch:
        return runner(x)
    size = batch or CHUNK
    outs = []
    for start in range(0, x.shape[0], size):
        chunk = x[start:start + size]
        n = chunk.shape[0]
        if batch is not None and n < batch:
            chunk = torch.cat([chunk, chunk[-1:].expand(batch - n, *chunk.shape[1:])])
        outs.append(runner(chunk)[:n])
    return torch.cat(outs)


def verify(export_dir: str | os.PathLike, *, reference: LoadedModel | None = None, backend_settings=None,
           **options) -> VerifyReport:
    """Compare each (backend, precision, memory format) of an export folder against eager fp32 on the CPU.

    `options` are the comparison's settings (vggbench.parity.settings.VerifySettings): backends (default: every
    artifact in the folder), device, precisions (default: the one it was exported in), memory_formats,
    batch_sizes, photos, data (None: none), data_images, atol, rtol, weights. Inputs: seeded random batches of each
    size in `batch_sizes` (1 and >1 catch batch specialisation); with `photos`, two real photos and their mirror
    images, normalised as the manifest says; and `data`: up to `data_images` test images of a dataset ("auto": the
    one the weights were trained on, when it loads offline; None: none), which is where int8's class agreement is
    measured. `reference`: the eager model, when the caller has it (else rebuilt from the manifest).
    backend_settings: the backends' settings (vggbench.backends.settings), a list of settings objects such as
    [OvSettings(threads=1)] or {backend: settings}; a backend without any runs with its settings' defaults.
    """
    return verify_with(export_dir, VerifySettings.of(options, "verify()"), reference=reference,
                       backend_settings=backend_settings)


def verify_with(export_dir: str | os.PathLike, config: VerifySettings, *, reference: LoadedModel | None = None,
                backend_settings=None) -> VerifyReport:
    """`verify` with its comparison settings as one object."""
    expect_path("verify", "export_dir", export_dir)
    device = require_device(config.device)
    manifest = read_manifest(export_dir)
    reference = exported_module(manifest, reference or reference_model(manifest, config.weights))
    combos = combinations(manifest, config.backends, config.precisions, config.memory_formats)
    static = manifest.static_batch
    report = VerifyReport(str(export_dir), manifest.model.name)
    inputs = verify_inputs(manifest, config.batch_sizes, config.photos, config.dataset,
                           config.data_images or DATA_IMAGES, report.skipped)
    subject = reference  # what module backends run, and what the artifacts are compared with
    dense = manifest.dense
    if dense is not None:
        subject = dense_model(reference.module, dense.train_size, return_map=dense.score_map).eval()
        for i, (h, w) in enumerate(dense_sizes(dense)):
            g = torch.Generator().manual_seed(100 + i)
            inputs.append((f"random x2 {h}x{w}", torch.randn(2, 3, h, w, generator=g)))
    gold = eager_runner(getattr(subject, "module", subject), "cpu", "fp32")
    say(f"verify: eager fp32 reference on {len(inputs)} input(s); {len(combos)} combination(s) to compare")
    expected = {label: run_in_batches(gold, x, None) for label, x in inputs}

    # fp32 on a CUDA device is compared as IEEE fp32: TF32 (torch's default for cuDNN) is off meanwhile
    options = RunnerOptions.from_settings(backend_settings)
    with recorded_warnings("verify", report.warnings), scoped_numerics(tf32=tf32_flag(device, False)):
        def build(target):
            return make_runner(target, subject, export_dir=export_dir, options=_calibrated(options, target, manifest))

        for i, (target, runner) in enumerate(runnable(combos, device, report.skipped, build)):
            say(f"verify: {target} ({i + 1}/{len(combos)})")
            precision, memory_format = target.precision, target.memory_format
            tol = tolerance_for(precision, config.atol, config.rtol)
            for label, x in inputs:
                if tol.min_top1 is not None and label.startswith("random"):
                    # judged by class agreement, which random inputs do not have
                    report.skipped.append(f"{target} on {label}: {precision} is judged on real images only")
                    continue
                got = run_in_batches(runner, x, static)
                report.results.append(compare(expected[label], got, tol, backend=target.backend, device=str(device),
                                              precision=precision, memory_format=memory_format, inputs=label))
    return report


def _calibrated(options: RunnerOptions, target, manifest: Manifest) -> RunnerOptions:
    """`options` with int8/fp8 calibration images for a backend that calibrates itself (TensorRT), chosen as
    onnx-int8's are: the training split of the weights' dataset, else crops of real photos."""
    if target.precision not in ("int8", "fp8") or not target.spec.builds_precisions:
        return options
    spec, quant = manifest.input, QuantConfig()
    images, _ = calibration_images(quant.calibration, quant.images, spec.image_size, spec.mean, spec.std,
                                   manifest.weights.meta or {})
    return replace(options, calibration=images)


def dense_sizes(dense: DenseSpec) -> list[tuple[int, int]]:
    """The sizes a dense export is compared at besides its training size: the smallest, non-square ones, and sizes
    that are no multiple of the net's stride (the max-pools floor)."""
    size, low, stride = dense.train_size, dense.min_size, dense.stride
    sizes = [(low, low), (size + stride, size), (size, size + 3 * stride), (size + 2 * stride + 5, size + 7)]
    return list(dict.fromkeys(s for s in sizes if s != (size, size)))


def combinations(manifest: Manifest, backends, precisions, memory_formats) -> list[tuple[str, str, str]]:
    """What to compare: by default each artifact at its own precision (onnx-int8 as onnxruntime int8);
    backends/precisions given explicitly are crossed with each other."""
    if backends is None and precisions is None:
        pairs = [("onnxruntime", "int8") if fmt == INT8_FORMAT else (artifact_backends(fmt)[0], manifest.precision)
                 for fmt in manifest.artifacts if artifact_backends(fmt) or fmt == INT8_FORMAT]
    else:
        if backends is None:
            backends = list(dict.fromkeys(artifact_backends(f)[0] for f in manifest.artifacts if artifact_backends(f)))
        precisions = [check_precision(p) for p in precisions or [manifest.precision]]  # a typo is an error,
        pairs = [(resolve_backend(b), p) for b in backends for p in precisions]  # not a skipped combination
    for memory_format in memory_formats:
        check_memory_format(memory_format)
    return [(b, p, m) for b, p in pairs for m in memory_formats]
