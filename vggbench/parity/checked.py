"""`vggbench.export`: an export whose folder is put in place only after every artifact matched the eager model.

vggbench.exporters only writes; this module gives it the two things it must not fetch itself: the int8
calibration images (from vggbench.data) and the parity check (vggbench.parity.verify).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from ..core.arguments import expect, expect_path
from ..core.errors import CheckFailed, ConfigError
from ..data.inputs import calibration_images
from ..exporters import export as exporters
from ..exporters.manifest import INT8_FORMAT
from ..exporters.quantize import QuantConfig
from ..exporters.settings import ExportSettings
from ..zoo.specs import check_fits_memory
from ..zoo.weights import LoadedModel
from .verify import verify as run_verify

DEFAULT_IMAGE_SIZE = 224  # the paper's, for weights that record no size
RANDOM_INT8_HINT = " (int8 is only offered for trained weights: random weights give no confident classes)"


def export(model: LoadedModel, out: str | os.PathLike, *, verify: bool = True, quant: QuantConfig | None = None,
           calibration: torch.Tensor | None = None, **options) -> dict:
    """Export `model` into `out` (see vggbench.exporters.export.export for `options`: formats, image_size,
    batch_size, dynamic_batch, opset, precision, torchscript_mode, force) and, with `verify`, check every
    artifact against the eager model before the folder is put in place. `image_size` defaults to the size the
    weights were trained at (recorded in vggbench checkpoints; 224 for ImageNet weights), else 224.

    onnx-int8 is calibrated on `calibration` (normalised images), or else on the images `quant.calibration`
    names (see vggbench.data.inputs.calibration_images). Returns the manifest.
    """
    expect("export", "model", model, LoadedModel, "a LoadedModel (vggbench.load_model(name))")
    expect_path("export", "out", out)
    quant = quant or QuantConfig()
    formats = options.get("formats", exporters.DEFAULT_FORMATS)
    # the size the weights were trained at (a checkpoint records it), not 224 for a model trained at 64
    options["image_size"] = options.get("image_size") or model.weights.image_size or DEFAULT_IMAGE_SIZE
    check_fits_memory(model.spec, model.options, options["image_size"], max(2, options.get("batch_size") or 1))
    if quant.keep_fp32 != ("auto",):
        exporters.check_keep_fp32(model.module, quant.keep_fp32)  # before calibration images are made
    if INT8_FORMAT in formats and calibration is None and options.get("precision", "fp32") == "fp32":
        image_size = options["image_size"]
        calibration, source = calibration_images(quant.calibration, quant.images, image_size, model.weights.mean,
                                                 model.weights.std, model.weights.meta)
        quant = dataclasses.replace(quant, calibration=source)
    if quant.keep_fp32 == ("auto",):
        if INT8_FORMAT not in formats:
            raise ConfigError("--keep-fp32 is a plan for the int8 model: add onnx-int8 to --format")
        plan = find_plan(model, calibration, quant, options)
        plan.check()
        quant = dataclasses.replace(quant, keep_fp32=tuple(plan.keep_fp32))
        options["int8_plan"] = plan.to_dict()
    check = (lambda folder: _parity_rows(folder, model, Path(out))) if verify else None
    return exporters.export(model, out, quant=quant, calibration=calibration, check=check, **options)


def find_plan(model: LoadedModel, calibration: torch.Tensor, quant: QuantConfig, options: dict):
    """`--keep-fp32 auto`: export ONNX and int8 into a temp folder with the same settings and search the plan
    there (vggbench.parity.plan)."""
    import tempfile

    from .plan import plan_int8

    with tempfile.TemporaryDirectory(prefix="vggbench-plan-export-") as tmp:
        settings = {k: v for k, v in options.items() if k in ("image_size", "batch_size", "dynamic_batch", "opset")}
        exporters.export(model, Path(tmp) / "export", formats=["onnx", INT8_FORMAT], calibration=calibration,
                         quant=dataclasses.replace(quant, keep_fp32=()), **settings)
        return plan_int8(Path(tmp) / "export", reference=model, calibration=calibration)


def _parity_rows(folder: Path, model: LoadedModel, out: Path) -> list[dict]:
    """The manifest's parity rows for the finished temp folder; a CheckFailed when any comparison failed."""
    report = run_verify(folder, reference=model)
    failed = [r for r in report.results if not r.passed]
    if failed:
        worst = failed[0]
        hint = RANDOM_INT8_HINT if worst.precision == "int8" and model.weights.source == "random" else ""
        raise CheckFailed(f"export of {model.name} does not match the eager model: {worst.backend} "
                          f"{worst.precision} on {worst.inputs}: {worst.reason}{hint} ({len(failed)} "
                          f"failing comparison(s)); {out} was not written")
    return [r.to_dict() for r in report.results]


def export_from(settings: ExportSettings, model: str) -> tuple[dict, str]:
    """`vggbench export MODEL`: load the model as `settings` say and export it; (the manifest, the folder)."""
    loaded = settings.load(model)
    out = settings.out or f"exports/{loaded.name}"
    return export(loaded, out, **settings.arguments()), out
