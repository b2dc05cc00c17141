"""What the torch artifact backends (torchscript, pt2) share: an exported module keeps its dtype."""

from __future__ import annotations

from torch import nn

from ..core.errors import UnsupportedError
from .target import Target


def place_artifact(module: nn.Module, target: Target, artifact_precision: str) -> nn.Module:
    """An fp16 artifact runs as fp16 only; autocast (amp, bf16) needs an fp32 one."""
    if artifact_precision != "fp32" and target.precision != artifact_precision:
        raise UnsupportedError(f"this artifact was exported in {artifact_precision}; it runs only as "
                               f"{artifact_precision}, not {target.precision} (export again with --precision fp32)")
    if artifact_precision == "fp32" and target.precision == "fp16":
        raise UnsupportedError("this artifact was exported in fp32; for fp16 export with --precision fp16")
    return module.to(target.device.torch).to(memory_format=target.torch_memory_format)


def torch_deploy_config(settings, row: dict) -> dict:
    """What a deploy folder's run.py gives torch for an artifact it loads (pt2, TorchScript): threads and layout."""
    return {"threads": row["threads"], "memory_format": row["memory_format"]}
