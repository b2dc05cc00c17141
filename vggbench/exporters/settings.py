"""The settings of an export (`vggbench export`, `vggbench.export`), declared once; no torch import here."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..core.errors import ConfigError
from ..core.fileio import writable_folder
from ..core.settings import check_keys, setting
from ..zoo.settings import ModelSettings
from ..zoo.specs import MAX_IMAGE_SIZE
from . import choices
from .choices import DEFAULT_IMAGE_SIZE, EXPORT_PRECISIONS, MIN_OPSET, TORCHSCRIPT_MODES
from .manifest import FORMATS, INT8_FORMAT


def _calibration_methods() -> tuple[str, ...]:
    from .quantize import METHODS

    return METHODS


def _formats(value):
    """Export formats, each one vggbench writes; checked here so that a typo costs no model loading."""
    names = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
    if isinstance(names, (list, tuple)):
        unknown = [str(f) for f in names if f not in FORMATS]
        if unknown or not names:
            raise ConfigError(f"unknown export format {', '.join(unknown) or '(none)'}: choose from "
                              f"{', '.join(FORMATS)}")
    return names


def _precision(value):
    if isinstance(value, str) and value not in EXPORT_PRECISIONS:
        raise ConfigError(f"export precision must be one of {', '.join(EXPORT_PRECISIONS)}, got {value!r} "
                          f"(amp and bf16 are run-time choices: export fp32 and run it with --precision)")
    return value


def _opset(value):
    """An opset the dynamo exporter and the installed onnx can write; checked here so that a typo costs no model
    loading."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < MIN_OPSET:
            raise ConfigError(f"opset {value} is too old for the dynamo ONNX exporter: use {MIN_OPSET} or newer")
        if value > (newest := choices.max_opset()):
            raise ConfigError(f"--opset {value} is newer than the installed onnx can write: use {MIN_OPSET} to "
                              f"{newest}")
    return value


def _keep_fp32(value):
    """Layer names as convN/fcN (checked against the model once it is built), or auto alone."""
    names = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)
    if "auto" in names and len(names) > 1:
        raise ConfigError("--keep-fp32 auto finds the layers itself: give auto alone, or a list of layers")
    bad = [n for n in names if n != "auto" and not re.fullmatch(r"(conv|fc)[1-9][0-9]*", str(n))]
    if bad:
        raise ConfigError(f"--keep-fp32: {', '.join(map(str, bad))} is not a layer name: use convN or fcN "
                          f"(conv1 is the first conv, fc3 the last linear layer), or auto")
    return tuple(names)


@dataclass(frozen=True, kw_only=True)
class ExportSettings(ModelSettings):
    """Which model (see ModelSettings), which formats, where, and how each is made and checked."""

    formats: tuple[str, ...] = setting(("torchscript", "onnx", "pt2"), "Comma-separated: torchscript, onnx, pt2, "
                                       "onnx-int8 (int8 quantized from onnx); --format is the older spelling.",
                                       option="--formats", aliases=("--format",), parse=_formats)
    out: str | None = setting(None, "Export folder [default: exports/MODEL].", parse=writable_folder)
    image_size: int | None = setting(None, "Input size [default: the size the weights were trained at, as their "
                                           "checkpoint records it, else 224].", minimum=1, maximum=MAX_IMAGE_SIZE)
    batch_size: int = setting(1, "Batch of a --static-batch export (dynamic exports take any batch).", minimum=1)
    dynamic_batch: bool = setting(True, "A batch dimension of any size, or the --batch-size only.",
                                  option="--dynamic-batch/--static-batch")
    opset: int | None = setting(None, "ONNX opset [default: the exporter's].", parse=_opset)
    precision: str = setting("fp32", "fp32 or fp16.", choices=EXPORT_PRECISIONS, parse=_precision)
    torchscript_mode: str = setting("trace", "trace or script.", choices=TORCHSCRIPT_MODES)
    force: bool = setting(False, "Replace an existing export folder.")
    verify: bool = setting(True, "Check every artifact against the eager model before the folder is put in place.")
    dense: bool = setting(False, "The paper's fully-convolutional form (FC layers as convolutions, equal to the "
                                 "model at --image-size): height and width dynamic, returns the class score map "
                                 "averaged.")
    score_map: bool = setting(False, "--dense: also return the class score map (a second output).")
    # onnx-int8
    calibration_images: int = setting(32, "onnx-int8: how many real images calibrate the activation ranges.",
                                      minimum=1)
    calibration_method: str = setting("minmax", "onnx-int8: minmax, percentile or entropy (onnxruntime's "
                                                "quantizer), or nncf (NNCF's post-training quantization).",
                                      choices=_calibration_methods)
    keep_fp32: tuple[str, ...] = setting((), "onnx-int8: weight layers left in fp32, e.g. conv1,fc3 (the Nth conv "
                                             "and the Nth linear layer in depth order), or auto: the fewest that "
                                             "bring top-1 agreement with fp32 on real images to 99% (found from the "
                                             "int8 per-layer error profile; recorded in the manifest).",
                                         parse=_keep_fp32)
    reduce_range: bool = setting(False, "onnx-int8: 7-bit weights, onnxruntime's advice for x86 CPUs without "
                                        "VNNI, where uint8 x int8 products can saturate in int16.")
    calibration_data: str = setting("auto", "onnx-int8 calibration images: auto (the training split of the "
                                            "dataset the weights were trained on, when it loads offline, else "
                                            "photos), photos, or a dataset name (digits, cifar10, ...).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.keep_fp32 and INT8_FORMAT not in self.formats:
            raise ConfigError("--keep-fp32 is a plan for the int8 model: add onnx-int8 to --formats")
        if self.reduce_range and INT8_FORMAT not in self.formats:
            raise ConfigError("--reduce-range is how the int8 model is quantized: add onnx-int8 to --formats")

    @classmethod
    def of(cls, options: Mapping, where: str = "export()") -> ExportSettings:
        """The settings a library call's keywords give: those of the export (the model is given, not chosen by
        name, and the folder is an argument of its own)."""
        check_keys(options, LIBRARY_KEYS, where)
        return cls(**options)

    def for_model(self, model) -> ExportSettings:
        """These settings with the input size filled in for `model` (a LoadedModel): the size its weights were
        trained at (vggbench checkpoints record it; 224 for ImageNet weights), else 224."""
        if self.image_size is not None:
            return self
        return dataclasses.replace(self, image_size=model.weights.image_size or DEFAULT_IMAGE_SIZE)

    def quant(self):
        """How onnx-int8 is made (exporters.quantize.QuantConfig), as these settings say."""
        from .quantize import QuantConfig

        return QuantConfig(method=self.calibration_method, images=self.calibration_images,
                           calibration=self.calibration_data, keep_fp32=self.keep_fp32,
                           reduce_range=self.reduce_range)


# the keywords of vggbench.export: the export's settings, not the model's (ModelSettings) nor the folder
LIBRARY_KEYS = tuple(n for n in ExportSettings.setting_names() if n not in (*ModelSettings.setting_names(), "out"))
