"""int8: static quantization of an exported ONNX model into a QDQ model, calibrated on real images, by onnxruntime's
quantizer (methods minmax, percentile, entropy) or by NNCF's post-training quantization (method nncf)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from ..core.errors import ConfigError, ExportError
from ..core.extras import require
from .choices import QUANT_METHODS

METHODS = QUANT_METHODS


@dataclass(frozen=True)
class QuantConfig:
    """How the int8 model is made; recorded in the manifest."""

    # QDQ with per-channel int8 weights and uint8 activations: onnxruntime fuses it into QLinearConv,
    # which runs on VNNI (x86) / dot-product (Arm) instructions.
    # calibration: minmax | percentile | entropy (onnxruntime's quantizer) | nncf (NNCF's post-training
    # quantization: its own range statistics, symmetric per-channel weights; per_channel and activations are
    # then NNCF's choice, which OpenVINO's int8 kernels are tuned for)
    method: str = "minmax"
    per_channel: bool = True
    activations: str = "uint8"  # uint8 | int8
    # 7-bit weights: onnxruntime's advice for x86 CPUs without VNNI, whose uint8 x int8 kernels (VPMADDUBSW) add
    # pairs of products in int16 and can saturate (VGG16's conv1 on an AVX2 EPYC: 10x the error of a VNNI Xeon)
    reduce_range: bool = False
    # where the calibration images come from: "auto" (the training split of the dataset the weights were
    # trained on, when it loads offline, else photos), "photos" (crops of two real photos), or a dataset name
    calibration: str = "auto"
    images: int = 32  # how many calibration images
    # weight layers left in fp32 (conv1.., fc1..: vggbench.zoo.stages.weight_layers), a mixed-precision plan
    keep_fp32: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep_fp32", tuple(self.keep_fp32))
        if self.method not in METHODS:
            raise ConfigError(f"unknown calibration method {self.method!r}: choose from {', '.join(METHODS)}")
        if self.activations not in ("uint8", "int8"):
            raise ConfigError(f"int8 activations must be uint8 or int8, got {self.activations!r}")
        if self.images < 1:
            raise ConfigError(f"need at least one calibration image, got {self.images}")
        if self.method == "nncf" and self.reduce_range:
            raise ConfigError("--reduce-range works with onnxruntime's quantizer (minmax, percentile, entropy), not "
                              "with nncf")
        if self.method == "nncf" and self.keep_fp32:
            raise ConfigError("--keep-fp32 works with onnxruntime's quantizer (minmax, percentile, entropy), not "
                              "with nncf")

    def to_dict(self) -> dict:
        return {**asdict(self), "keep_fp32": list(self.keep_fp32)}

    @classmethod
    def from_dict(cls, recorded: dict) -> QuantConfig:
        """The config a manifest's artifacts.onnx-int8.quantization records (fields it lacks take their defaults;
        fields this version does not know are left out)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in recorded.items() if k in known})


def nodes_reading(model_path: str | os.PathLike, weights: Sequence[str]) -> list[str]:
    """The names of the nodes that read any of the initializers `weights` (e.g. features.0.weight): the
    dynamo exporter names a layer's weight after its module, and onnxruntime's pre-processing keeps the name
    (even where it folds a BatchNorm into the conv)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    wanted = set(weights)
    nodes = [n.name for n in graph.node if wanted & set(n.input)]
    missing = wanted - {i for n in graph.node for i in n.input}
    if missing:
        raise ExportError(f"int8: no node of {Path(model_path).name} reads {', '.join(sorted(missing))}; cannot "
                          f"keep that layer in fp32")
    return nodes


def quantize_onnx(fp32_path: str | os.PathLike, out_path: str | os.PathLike, images: torch.Tensor,
                  config: QuantConfig, input_name: str = "input", keep_weights: Sequence[str] = ()) -> None:
    """Write an int8 QDQ model of `fp32_path`, calibrated on `images` (N, 3, H, W, normalised); the layers
    whose weights are named in `keep_weights` (e.g. features.0.weight) stay fp32 (onnxruntime's
    nodes_to_exclude)."""
    if config.method == "nncf":
        if keep_weights:
            raise ConfigError("layers kept in fp32 need onnxruntime's quantizer (minmax, percentile, entropy), "
                              "not nncf")
        return _quantize_nncf(fp32_path, out_path, images, input_name)
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{input_name: images[i:i + 1].numpy()} for i in range(images.shape[0])])

        def get_next(self):
            return next(self._batches, None)

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    with tempfile.TemporaryDirectory(prefix="vggbench-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # weights as external data beside the prepared model: a full VGG16 keeps its fp32 weights in
        # model.onnx.data, which the pre-processor's optimized copy must find next to it
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True, save_as_external_data=True,
                          all_tensors_to_one_file=True, external_data_location="prepared.onnx.data")
        excluded = nodes_reading(prepared, keep_weights) if keep_weights else []
        quantize_static(str(prepared), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                        nodes_to_exclude=excluded,
                        per_channel=config.per_channel,
                        activation_type=QuantType.QUInt8 if config.activations == "uint8" else QuantType.QInt8,
                        weight_type=QuantType.QInt8, calibrate_method=methods[config.method],
                        reduce_range=config.reduce_range,
                        extra_options={"CalibTensorRangeSymmetric": False})


def _quantize_nncf(fp32_path: str | os.PathLike, out_path: str | os.PathLike, images: torch.Tensor,
                   input_name: str) -> None:
    """NNCF's post-training quantization of the ONNX model (its ONNX backend), written as a QDQ model."""
    import onnx

    nncf = require("nncf", "NNCF's int8 quantization")
    model = onnx.load(str(fp32_path))  # the external weights of a full VGG16 are read from beside it
    dataset = nncf.Dataset([{input_name: images[i:i + 1].numpy()} for i in range(images.shape[0])])
    quantized = nncf.quantize(model, dataset, subset_size=images.shape[0])
    out_path = Path(out_path)
    # int8 weights of a VGG16 are about 138 MB: under protobuf's 2 GB, one file as onnxruntime's quantizer writes
    onnx.save(quantized, str(out_path))
