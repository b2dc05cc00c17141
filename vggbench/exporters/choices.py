"""What an export may be asked for, known without torch: the settings (exporters.settings) check values against
these before any model is built, and the writer (exporters.export) turns them into torch types."""

from __future__ import annotations

EXPORT_PRECISIONS = ("fp32", "fp16")  # amp and bf16 are run-time choices, made from an fp32 export
TORCHSCRIPT_MODES = ("trace", "script")
MIN_OPSET = 18  # the dynamo exporter's lowest
DEFAULT_IMAGE_SIZE = 224  # the paper's, for weights that record no size


def max_opset() -> int:
    """The newest ONNX opset the installed onnx package knows (and so can convert an export to)."""
    import onnx

    return onnx.defs.onnx_opset_version()


# how onnx-int8 may be calibrated: onnxruntime's quantizer's methods, or NNCF's post-training quantization
# (vggbench.exporters.quantize)
QUANT_METHODS = ("minmax", "percentile", "entropy", "nncf")
