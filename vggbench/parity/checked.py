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
from ..core.console import recorded_warnings, say
from ..core.errors import CheckFailed, ConfigError
from ..data.inputs import calibration_images
from ..exporters.export import check_keep_fp32, write_artifacts
from ..exporters.manifest import INT8_FORMAT, Manifest
from ..exporters.quantize import QuantConfig
from ..exporters.settings import ExportSettings
from ..zoo.specs import check_fits_memory
from ..zoo.weights import LoadedModel
from .verify import verify as run_verify

RANDOM_INT8_HINT = " (int8 is only offered for trained weights: random weights give no confident classes)"


def export(model: LoadedModel, out: str | os.PathLike, *, quant: QuantConfig | None = None,
           calibration: torch.Tensor | None = None, **options) -> Manifest:
    """Export `model` into `out` and, unless verify=False, check every artifact against the eager model before the
    folder is put in place. `options` are the export's settings (vggbench.exporters.settings.ExportSettings: formats,
    image_size, batch_size, dynamic_batch, opset, precision, torchscript_mode, force, verify, dense, score_map, and
    the onnx-int8 ones); `image_size` defaults to the size the weights were trained at (recorded in vggbench
    checkpoints; 224 for ImageNet weights), else 224.

    onnx-int8 is made as `quant` says (else as the settings' calibration_* fields say), calibrated on `calibration`
    (normalised images), or else on the images `quant.calibration` names (see
    vggbench.data.inputs.calibration_images). Returns the manifest.
    """
    expect("export", "model", model, LoadedModel, "a LoadedModel (vggbench.load_model(name))")
    expect_path("export", "out", out)
    return export_with(model, out, ExportSettings.of(options), quant=quant, calibration=calibration)


def export_with(model: LoadedModel, out: str | os.PathLike, settings: ExportSettings, *,
                quant: QuantConfig | None = None, calibration: torch.Tensor | None = None) -> Manifest:
    """`vggbench.export` with its settings as one object (see `export`)."""
    settings = settings.for_model(model)
    quant = quant or settings.quant()
    check_fits_memory(model.spec, model.options, settings.image_size, max(2, settings.batch_size))
    if quant.keep_fp32 != ("auto",):
        check_keep_fp32(model.module, quant.keep_fp32)  # before calibration images are made
    if INT8_FORMAT in settings.formats and calibration is None and settings.precision == "fp32":
        calibration, source = calibration_images(quant.calibration, quant.images, settings.image_size,
                                                 model.weights.mean, model.weights.std, model.weights.meta)
        quant = dataclasses.replace(quant, calibration=source)
    int8_plan = None
    if quant.keep_fp32 == ("auto",):
        if INT8_FORMAT not in settings.formats:
            raise ConfigError("--keep-fp32 is a plan for the int8 model: add onnx-int8 to --formats")
        seen: list[str] = []
        with recorded_warnings("int8 plan", seen):
            plan = find_plan(model, calibration, quant, settings)
        plan.check()
        quant = dataclasses.replace(quant, keep_fp32=tuple(plan.keep_fp32))
        int8_plan = {**plan.to_dict(), **({"warnings": seen} if seen else {})}
    check = (lambda folder: _parity_rows(folder, model, Path(out))) if settings.verify else None
    return write_artifacts(model, out, settings, quant=quant, calibration=calibration, check=check,
                           int8_plan=int8_plan)


def find_plan(model: LoadedModel, calibration: torch.Tensor, quant: QuantConfig, settings: ExportSettings):
    """`--keep-fp32 auto`: export ONNX and int8 into a temp folder with the same settings and search the plan
    there (vggbench.parity.plan)."""
    import tempfile

    from .plan import plan_int8

    say("int8 plan: exporting fp32 and int8 ONNX to search which layers int8 may not take")
    with tempfile.TemporaryDirectory(prefix="vggbench-plan-export-") as tmp:
        same = ExportSettings(formats=("onnx", INT8_FORMAT), image_size=settings.image_size,
                              batch_size=settings.batch_size, dynamic_batch=settings.dynamic_batch,
                              opset=settings.opset)
        write_artifacts(model, Path(tmp) / "export", same, calibration=calibration,
                        quant=dataclasses.replace(quant, keep_fp32=()))
        return plan_int8(Path(tmp) / "export", reference=model, calibration=calibration)


def _parity_rows(folder: Path, model: LoadedModel, out: Path) -> tuple[list[dict], list[str]]:
    """The manifest's parity rows for the finished temp folder and the warnings the check recorded (loading a
    TorchScript file warns); a CheckFailed when any comparison failed."""
    report = run_verify(folder, reference=model)
    failed = [r for r in report.results if not r.passed]
    if failed:
        worst = failed[0]
        hint = RANDOM_INT8_HINT if worst.precision == "int8" and model.weights.source == "random" else ""
        raise CheckFailed(f"export of {model.name} does not match the eager model: {worst.backend} "
                          f"{worst.precision} on {worst.inputs}: {worst.reason}{hint} ({len(failed)} "
                          f"failing comparison(s)); {out} was not written")
    return [r.to_dict() for r in report.results], report.warnings


def export_from(settings: ExportSettings, model: str) -> tuple[Manifest, str]:
    """`vggbench export MODEL`: load the model as `settings` say and export it; (the manifest, the folder)."""
    loaded = settings.load(model)
    out = settings.out or f"exports/{loaded.name}"
    return export_with(loaded, out, settings), out
