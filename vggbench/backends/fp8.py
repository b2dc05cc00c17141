"""FP8 Q/DQ for TensorRT: TensorRT runs fp8 only where the network says so (explicit quantization; it has no fp8
calibrator), so the tensorrt backend writes a copy of model.onnx with FP8 (e4m3) QuantizeLinear/DequantizeLinear
pairs on the inputs and weights of every Conv and Gemm, per-tensor scales from the largest |value| seen on
calibration images (activations, run through onnxruntime on the CPU) or in the weights."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

FP8_MAX = 448.0  # the largest finite float8 e4m3fn
OPSET = 19  # QuantizeLinear/DequantizeLinear with float8 types
QUANTIZED_OPS = ("Conv", "Gemm")


def activation_ranges(model, names: list[str], images: torch.Tensor, batch: int = 8) -> dict[str, float]:
    """The largest |value| of each named tensor over `images`, from onnxruntime on the CPU."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names
                              if n not in outputs)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = probe.graph.input[0].name
    ranges = dict.fromkeys(names, 0.0)
    for start in range(0, images.shape[0], batch):
        values = session.run(names, {feed: images[start:start + batch].float().numpy()})
        for name, value in zip(names, values, strict=True):
            ranges[name] = max(ranges[name], float(np.abs(value).max()))
    return ranges


def quantize_fp8(onnx_path: str | os.PathLike, out_path: str | os.PathLike, images: torch.Tensor) -> Path:
    """Write `out_path` (with its weights beside it in OUT.data): `onnx_path` with FP8 Q/DQ on every Conv's and
    Gemm's input and weight, activation scales calibrated on `images` (normalised, N x 3 x H x W)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(onnx_path))  # with its external weights
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    layers = [n for n in graph.node if n.op_type in QUANTIZED_OPS and len(n.input) > 1 and n.input[1] in weights]
    inputs = list(dict.fromkeys(n.input[0] for n in layers))
    ranges = activation_ranges(model, inputs, images)
    for name in {n.input[1] for n in layers}:
        ranges[name] = float(np.abs(numpy_helper.to_array(weights[name])).max())
    zero = "fp8_zero_point"
    graph.initializer.append(helper.make_tensor(zero, TensorProto.FLOAT8E4M3FN, [], [0]))
    made: dict[str, str] = {}  # tensor -> its dequantized copy (a tensor feeding two layers is quantized once)

    def qdq(name: str) -> list:
        if name in made:
            return []
        scale = f"{name}_fp8_scale"
        graph.initializer.append(helper.make_tensor(scale, TensorProto.FLOAT, [], [max(ranges[name], 1e-12) / FP8_MAX]))
        made[name] = f"{name}_fp8_dq"
        return [helper.make_node("QuantizeLinear", [name, scale, zero], [f"{name}_fp8"], name=f"{name}_fp8_q"),
                helper.make_node("DequantizeLinear", [f"{name}_fp8", scale, zero], [made[name]],
                                 name=f"{name}_fp8_dq")]

    nodes = []
    for node in graph.node:  # each pair right before its layer: the graph stays topologically sorted
        if node in layers:
            nodes += qdq(node.input[0]) + qdq(node.input[1])
            node.input[0], node.input[1] = made[node.input[0]], made[node.input[1]]
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(opset.version, OPSET)
    model.ir_version = max(model.ir_version, 9)  # float8 types
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fp8-", dir=out.parent) as tmp:
        onnx.save(model, str(Path(tmp) / out.name), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=f"{out.name}.data")
        data = Path(tmp) / f"{out.name}.data"
        if data.exists():  # tensors under 1 KiB stay in the model: a tiny model has no data file
            os.replace(data, out.with_name(data.name))
        os.replace(Path(tmp) / out.name, out)  # the model last: it is there only with its weights
    return out
