"""Export a model to TorchScript, ONNX and torch.export, into a folder that appears whole or not at all.

Exporters only write (`write_artifacts`). The parity check that decides whether the folder is put in place is
passed in as `check` (vggbench.parity.checked wires `verify` in, and `vggbench.export` is that checked export), and
int8 calibration images are passed in (vggbench.data.inputs.calibration_images makes them): this package
knows neither datasets nor runtimes."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..core.console import recorded_warnings, say
from ..core.env import package_version
from ..core.errors import ConfigError, ExportError, UnsupportedError, VggbenchError, WriteError, one_line
from ..core.fileio import atomic_dir, atomic_stream, check_replaceable, exclusive, write_failure
from ..core.numerics import scoped_numerics
from ..zoo.dense import dense_model, feature_size, min_dense_size
from ..zoo.profiling import profile
from ..zoo.specs import LRN_FORM, LRN_PARAMS, MAX_IMAGE_SIZE, check_image_size
from ..zoo.stages import Stage, prefix, weight_layers
from ..zoo.weights import LoadedModel
from .manifest import (
    FORMATS,
    INT8_FORMAT,
    MANIFEST,
    SCHEMA_VERSION,
    Artifact,
    DenseSpec,
    InputSpec,
    Manifest,
    MapSpec,
    ModelRecord,
    OutputSpec,
    WeightsRecord,
    file_entry,
    write_manifest,
)
from .quantize import QuantConfig, quantize_onnx

if TYPE_CHECKING:
    from .settings import ExportSettings

INPUT_NAME, OUTPUT_NAME = "input", "logits"
MAP_NAME = "score_map"  # a dense export's second output, with score_map=True
PREFIX_OUTPUT_NAME = "output"  # a prefix sub-model's output: a stage's activations, not logits
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}  # of each of choices.EXPORT_PRECISIONS
# Weights above this go to model.onnx.data beside model.onnx (protobuf caps one file at 2 GiB, and a
# small graph file is quicker to inspect and diff).
ONNX_EXTERNAL_DATA_BYTES = 100 * 2**20


def _export_torchscript(module: nn.Module, example: torch.Tensor, folder: Path, *, mode: str, **_) -> Artifact:
    if mode == "trace":
        # a trace bakes cuDNN's flags into every aten::_convolution as constants: traced with TF32 on
        # (torch's default), the artifact would run fp32 convolutions in TF32 on any GPU, whatever the
        # loading process says (seen on an H100: VGG16 logits off by 7e-4 of their range)
        with scoped_numerics(tf32=False, cudnn_benchmark=False):
            scripted = torch.jit.trace(module, example, check_trace=True)
    else:
        scripted = torch.jit.script(module)
    path = folder / FORMATS["torchscript"]
    with atomic_stream(path) as f:  # given a path, torch's writer aborts the process on a full disk
        torch.jit.save(scripted, f)
    flags = {"allow_tf32": False, "benchmark": False} if mode == "trace" else None
    return Artifact(mode=mode, files=(file_entry(folder, path.name),), cudnn_flags_in_trace=flags)


def _dynamic_shapes(dynamic_batch: bool, dense_min: int | None = None):
    """torch.export's dynamic dims: the batch, and for a dense export height and width from its smallest input."""
    dims = {0: torch.export.Dim("batch", min=1)} if dynamic_batch else {}
    if dense_min is not None:
        dims[2] = torch.export.Dim("height", min=dense_min, max=MAX_IMAGE_SIZE)
        dims[3] = torch.export.Dim("width", min=dense_min, max=MAX_IMAGE_SIZE)
    return (dims,) if dims else None


def _tracing_sizes(dense: bool):
    """A dense net's score map is 1x1 at its smallest input; torch.export would specialise a size that may be 1
    (its 0/1 rule) unless sizes are traced size-obliviously."""
    if not dense:
        return contextlib.nullcontext()
    import torch.fx.experimental._config as fx_config

    return fx_config.patch(backed_size_oblivious=True)


def _export_pt2(module: nn.Module, example: torch.Tensor, folder: Path, *, dynamic_shapes, dense: bool,
                **_) -> Artifact:
    with _tracing_sizes(dense):
        program = torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes, strict=False)
    path = folder / FORMATS["pt2"]
    with atomic_stream(path) as f:  # as torch.jit.save: given a path, a full disk aborts the process
        torch.export.save(program, f)
    return Artifact(files=(file_entry(folder, path.name),))


def _export_onnx(module: nn.Module, example: torch.Tensor, folder: Path, *, dynamic_shapes, dense: bool,
                 opset: int | None, output_name: str = OUTPUT_NAME, **_) -> Artifact:
    import onnx

    from .onnx_ops import with_onnx_lrn

    module, translations = with_onnx_lrn(module)
    outputs = [output_name, MAP_NAME] if getattr(module, "return_map", False) else [output_name]
    with _tracing_sizes(dense):
        program = torch.onnx.export(module, (example,), dynamo=True, dynamic_shapes=dynamic_shapes,
                                    input_names=[INPUT_NAME], output_names=outputs, opset_version=opset,
                                    custom_translation_table=translations or None, verbose=False)
    path = folder / FORMATS["onnx"]
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    external = weight_bytes > ONNX_EXTERNAL_DATA_BYTES
    program.save(str(path), external_data=external)
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path), load_external_data=False)
    written = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset is not None and written != opset:  # torch falls back to its own opset when a conversion fails
        raise ExportError(f"onnx export: --opset {opset} was asked for, but the exporter could only write opset "
                          f"{written}; pass --opset {written} (or leave --opset out)")
    names = [path.name] + sorted(p.name for p in folder.iterdir() if p.name.startswith(path.name + "."))
    return Artifact(opset=written, external_data=external, files=tuple(file_entry(folder, n) for n in names))


def _export_onnx_int8(module: nn.Module, example: torch.Tensor, folder: Path, *, quant: QuantConfig,
                      calibration: torch.Tensor, int8_plan: dict | None = None, **_) -> Artifact:
    fp32 = folder / FORMATS["onnx"]
    if not fp32.exists():
        raise ConfigError("onnx-int8 is quantized from the ONNX export: add onnx to --formats")
    path = folder / FORMATS["onnx-int8"]
    layers = weight_layers(module)  # a prefix has only some of the layers the plan names
    keep = [f"{layers[name]}.weight" for name in quant.keep_fp32 if name in layers]
    quantize_onnx(fp32, path, calibration, quant, INPUT_NAME, keep_weights=keep)
    return Artifact(quantization=quant.to_dict(), files=(file_entry(folder, path.name),), plan=int8_plan)


EXPORTERS: dict[str, Callable[..., Artifact]] = {
    "torchscript": _export_torchscript,
    "onnx": _export_onnx,
    "pt2": _export_pt2,
    "onnx-int8": _export_onnx_int8,
}


def write_artifacts(model: LoadedModel, out: str | os.PathLike, settings: ExportSettings, *,
                    quant: QuantConfig | None = None, calibration: torch.Tensor | None = None,
                    check: Callable[[Path], list[dict]] | None = None, stage: Stage | None = None,
                    int8_plan: dict | None = None) -> Manifest:
    """Write `out`/model.ts, model.onnx, model.pt2 (the formats `settings` name) and manifest.json.

    `settings` (exporters.settings.ExportSettings) say which formats and how: image_size (None: the size the
    weights were trained at, else 224), batch_size, dynamic_batch, opset, precision, torchscript_mode, force, dense,
    score_map, and how onnx-int8 is quantized unless `quant` is given; the model's own settings in it are not read.

    The folder is built beside `out` and renamed into place only when every format exported and `check`
    (called with the finished temp folder; it returns parity rows for the manifest, or raises) passed, so a
    failure leaves an old export intact. batch_size is the example batch of a static export; dynamic exports
    serve any batch size. While it runs, `out` is locked (vggbench.core.fileio.exclusive): a second export into it
    is a VggbenchError. onnx-int8 is quantized from model.onnx with `quant`, calibrated on `calibration`
    (normalised images, required for onnx-int8); `quant.keep_fp32` names the layers left in fp32 and
    `int8_plan` (how that plan was found) is recorded beside it. With `dense`, the model's fully-convolutional
    form (vggbench.zoo.dense, equal to the model at `image_size`) is exported with dynamic height and width,
    returning the spatially averaged class scores (and with `score_map` the class score map as a second output).
    With `stage` (vggbench.zoo.stages), the prefix sub-model that ends at that stage is exported instead of the
    whole model, with the same settings (its output: that stage's activations; the manifest's model.stage says
    which). Returns the manifest.
    """
    s = settings.for_model(model)
    formats, image_size, batch_size, dynamic_batch = s.formats, s.image_size, s.batch_size, s.dynamic_batch
    precision, opset, dense, score_map = s.precision, s.opset, s.dense, s.score_map
    check_image_size(model.spec, image_size)
    check_replaceable(out, force=s.force, not_ours=not_an_export)  # now, not after the export
    quant = quant or s.quant()
    check_keep_fp32(model.module, quant.keep_fp32)
    if score_map and not dense:
        raise ConfigError("--score-map is an output of a dense export: add --dense")
    if dense and INT8_FORMAT in formats:
        raise UnsupportedError("onnx-int8 of a dense export is not offered: its calibration and int8 parity are "
                               "measured at one input size, and a dense export takes any")
    if dense and stage is not None:
        raise UnsupportedError("a stage's prefix is cut from the model, not from its dense form: export one or "
                               "the other")
    formats = [f for f in EXPORTERS if f in formats]  # onnx before onnx-int8
    if INT8_FORMAT in formats:
        if precision != "fp32":
            raise ConfigError("onnx-int8 is quantized from an fp32 model: export it with --precision fp32")
        if calibration is None:
            raise ConfigError("onnx-int8 needs calibration images (vggbench.data.inputs.calibration_images)")
        if quant.calibration == "auto":  # images chosen by the caller, who did not say where from
            quant = dataclasses.replace(quant, calibration="given")
        quant = dataclasses.replace(quant, images=calibration.shape[0])
    out = Path(out)
    # A dynamic batch exported from a batch of 1 gets specialised to 1 by torch.export: use >= 2.
    example_batch = max(2, batch_size) if dynamic_batch else batch_size
    dtype = DTYPES[precision]
    module = copy.deepcopy(model.module).eval().to(dtype)
    height = width = image_size
    dense_min = None
    if dense:
        module = dense_model(module, image_size, return_map=score_map).eval()
        dense_min = min_dense_size(module.features, image_size)
        # a non-square example with a score map of 2x3, so that no traced size is a 1 that could be specialised
        step = dense_min // feature_size(module.features, image_size)
        height, width = dense_min + step, dense_min + 2 * step
    example = torch.randn(example_batch, 3, height, width, generator=torch.Generator().manual_seed(0), dtype=dtype)
    dynamic_shapes = _dynamic_shapes(dynamic_batch, dense_min)
    output_name, output_shape = OUTPUT_NAME, None
    if stage is not None:
        module = prefix(module, stage)
        with torch.no_grad():
            output_shape = list(module(example).shape[1:])
        output_name = PREFIX_OUTPUT_NAME
    # one writer per folder: a second process exporting here gets one error line, not a mix of two exports
    with exclusive(out), atomic_dir(out, force=s.force, not_ours=not_an_export) as folder:
        artifacts, caught = {}, []
        for i, fmt in enumerate(formats):
            say(f"export: {fmt} ({i + 1}/{len(formats)}){f' of stage {stage.name}' if stage is not None else ''}")
            with recorded_warnings(fmt, caught):
                try:
                    artifacts[fmt] = EXPORTERS[fmt](module, example, folder, mode=s.torchscript_mode,
                                                    dynamic_shapes=dynamic_shapes, dense=dense, opset=opset,
                                                    quant=quant, calibration=calibration, output_name=output_name,
                                                    int8_plan=int8_plan)
                except VggbenchError:
                    raise
                except Exception as e:  # any failure of a third-party exporter becomes one clear error
                    failure = write_failure(e)
                    written = Path(failure.filename or folder / FORMATS.get(fmt, "")) if failure else None
                    if isinstance(failure, OSError) and folder in written.parents:  # a full disk, not the
                        # exporter: atomic_dir names the file in `out` (not its temp folder), keeps the old folder
                        raise WriteError(written, failure.strerror or str(failure)) from None
                    raise ExportError(f"{fmt} export of {model.name} failed: {one_line(e)}") from e
        manifest = build_manifest(model, artifacts, image_size, batch_size, dynamic_batch, example_batch, precision,
                                  caught, dense_input(module, image_size, score_map) if dense else None)
        if stage is not None:  # a prefix: what it ends at, and its output
            r = dataclasses.replace
            recorded = {**dataclasses.asdict(stage), "layers": list(stage.layers)}  # as the JSON reads back
            manifest = r(manifest, model=r(manifest.model, stage=recorded),
                         output=r(manifest.output, name=output_name,
                                  shape=(manifest.output.shape[0], *output_shape)),
                         dynamic_axes={k if k != OUTPUT_NAME else output_name: v
                                       for k, v in manifest.dynamic_axes.items()})
        manifest = manifest.signed()
        write_manifest(folder, manifest)
        if check is not None:
            say(f"parity: comparing the {len(artifacts)} exported format(s) with the eager model")
            with recorded_warnings("parity", caught):
                rows, seen = check(folder)
            caught += [line for line in seen if line not in caught]
            manifest = dataclasses.replace(manifest, parity=tuple(rows), warnings=tuple(caught)).signed()
            write_manifest(folder, manifest)
    return manifest


def not_an_export(folder: Path) -> str | None:
    """Why `folder` is not an export folder that vggbench wrote (None when it is): --force replaces only such a
    folder, and only when it holds nothing besides what its manifest lists, so the user's own files are never lost.
    An edited manifest (digest off) is still vggbench's."""
    import json

    from ..core.documents import read_text
    from ..core.errors import ArtifactError

    path = folder / MANIFEST
    if not folder.is_dir():
        return "it is not a folder"
    try:
        data = json.loads(read_text(path))
    except FileNotFoundError:
        return f"it has no {MANIFEST}, so it is no vggbench export"
    except OSError as e:
        return f"its {MANIFEST} cannot be read ({e.strerror or e.__class__.__name__})"
    except ValueError as e:
        return f"its {MANIFEST} cannot be read as JSON ({e.__class__.__name__})"
    try:
        manifest = Manifest.from_dict(data, path=path)  # the digest is not asked for
    except ArtifactError:
        return f"its {MANIFEST} is not a vggbench manifest"
    listed = {MANIFEST} | {f.file for entry in manifest.artifacts.values() for f in entry.files}
    foreign = sorted(p.name for p in folder.iterdir() if p.name not in listed or not p.is_file() or p.is_symlink())
    if foreign:
        return f"it holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, which its {MANIFEST} does not list"
    return None


def check_keep_fp32(module: nn.Module, names: Sequence[str]) -> None:
    """Every layer a mixed-precision plan keeps in fp32 must be one of the model's weight layers."""
    if "auto" in names:
        raise ConfigError("--keep-fp32 auto is resolved by vggbench.export (the checked export), which searches the "
                          "plan; the exporters take the layer names it found")
    layers = weight_layers(module)
    unknown = [n for n in names if n not in layers]
    if unknown:
        raise ConfigError(f"--keep-fp32: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a weight "
                          f"layer of this model; its layers are {', '.join(layers)}")


def dense_input(module: nn.Module, image_size: int, score_map: bool) -> DenseSpec:
    """The manifest's input.dense of a dense export: where it equals the model, its smallest input, its outputs."""
    side, low = feature_size(module.features, image_size), min_dense_size(module.features, image_size)
    return DenseSpec(train_size=image_size, min_size=low, kernel=side, stride=low // side, score_map=score_map)


def build_manifest(model: LoadedModel, artifacts: dict[str, Artifact], image_size: int, batch_size: int,
                   dynamic_batch: bool, example_batch: int, precision: str, warnings_seen: list[str],
                   dense: DenseSpec | None = None) -> Manifest:
    prof = profile(model.spec, model.options, image_size)
    batch = "batch" if dynamic_batch else batch_size
    dtype = str(DTYPES[precision]).removeprefix("torch.")
    import datetime as dt

    spatial = ["height", "width"] if dense else [image_size, image_size]
    dynamic_axes = {INPUT_NAME: {"0": "batch"}, OUTPUT_NAME: {"0": "batch"}} if dynamic_batch else {}
    if dense:
        dynamic_axes.setdefault(INPUT_NAME, {}).update({"2": "height", "3": "width"})
    weights = model.weights.to_dict()
    return Manifest(
        schema_version=SCHEMA_VERSION,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        model=ModelRecord(name=model.name, config=model.spec.config, batch_norm=model.spec.batch_norm,
                          options=model.options.to_dict(), params=prof.params, gmacs=round(prof.gmacs, 4),
                          lrn={**LRN_PARAMS, "form": LRN_FORM} if model.spec.lrn else None,
                          # a custom layer list (--config): the manifest rebuilds it
                          spec=model.spec.record() if model.spec.custom else None),
        weights=WeightsRecord.from_dict({**weights, "state_sha256": model.fingerprint}, "weights"),
        precision=precision,
        input=InputSpec(name=INPUT_NAME, shape=(batch, 3, *spatial), dtype=dtype, layout="NCHW",
                        image_size=image_size, mean=tuple(model.weights.mean), std=tuple(model.weights.std),
                        dynamic_batch=dynamic_batch, example_batch=example_batch, dense=dense),
        output=OutputSpec(name=OUTPUT_NAME, shape=(batch, model.options.num_classes), dtype=dtype,
                          score_map=MapSpec(name=MAP_NAME, shape=(batch, model.options.num_classes, "map_height",
                                                                  "map_width"))
                          if dense and dense.score_map else None),
        dynamic_axes=dynamic_axes,
        artifacts=artifacts,
        versions={name: package_version(name) for name in
                  ("vggbench", "torch", "torchvision", "onnx", "onnxscript", "onnxruntime-gpu", "onnxruntime")
                  if package_version(name)},
        warnings=tuple(warnings_seen),
        parity=None,
    )
