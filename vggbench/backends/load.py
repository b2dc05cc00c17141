"""Runners from a target: module backends run a model, artifact backends load their file from an export
folder after every file of it was checked against the manifest's sha256 and inspected by safe_load (nothing a
runtime opens may execute code)."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from ..core.device import Device
from ..core.errors import UnsupportedError
from ..exporters.manifest import artifact, read_manifest
from .runner import Runner, RunnerOptions
from .safe_load import check_artifact
from .target import Target, resolve_target


def make_runner(target: Target | str, model=None, *, export_dir: str | os.PathLike | None = None,
                device: str | Device = "cpu", precision: str = "fp32", memory_format: str = "contiguous",
                options: RunnerOptions | None = None) -> Runner:
    """The runner of `target`: module backends run `model` (a LoadedModel or nn.Module), artifact backends load
    their artifact from `export_dir` (see vggbench.export). A backend name is resolved with `device`,
    `precision` and `memory_format` into a Target first (they are ignored when a Target is given)."""
    if not isinstance(target, Target):
        target = resolve_target(target, device, precision, memory_format)
    spec = target.spec
    if spec.artifact is None:
        module = getattr(model, "module", model)
        if not isinstance(module, nn.Module):
            raise ValueError(f"backend {spec.name} needs a model")
        return spec.factory(module, target, options)
    if export_dir is None:
        raise ValueError(f"backend {spec.name} needs an export folder")
    manifest = read_manifest(export_dir)
    exported = manifest.precision
    if target.precision == "int8" and exported != "fp32":
        raise UnsupportedError(f"int8 is quantized from an fp32 export; {export_dir} was exported in {exported}")
    if spec.builds_precisions and exported not in ("fp32", target.precision):
        raise UnsupportedError(f"{spec.name} builds {target.precision} from an fp32 export; {export_dir} was "
                               f"exported in {exported}")
    # which precisions an ONNX export runs in is the backend's to say (onnxruntime: its own; openvino: bf16 too)
    entry, path = _checked(manifest, target, export_dir)
    if spec.builds_precisions:
        # a backend that builds its engine from the artifact (TensorRT) is told which files it is (their sha256
        # keys its engine cache) and the batch a static export fixes, rather than reading the manifest again
        return spec.factory(path, target, options, exported, artifact=entry, static_batch=manifest.static_batch)
    return spec.factory(path, target, options, exported)


def load_runner(export_dir: str | os.PathLike, backend: str, device: str | Device = "cpu",
                precision: str | None = None, memory_format: str = "contiguous",
                options: RunnerOptions | None = None) -> Runner:
    """A runner for one artifact of an export folder; precision defaults to the one it was exported in."""
    precision = precision or read_manifest(export_dir).precision
    return make_runner(resolve_target(backend, device, precision, memory_format), export_dir=export_dir,
                       options=options)


def eager_runner(module: nn.Module, device: str | Device = "cpu", precision: str = "fp32",
                 memory_format: str = "contiguous") -> Runner:
    """The eager runner of a module: the parity reference when left at its defaults."""
    return make_runner(resolve_target("eager", device, precision, memory_format), module)


def checked_artifact(target: Target, export_dir: str | os.PathLike) -> Path:
    """The main file of `target`'s artifact in an export folder, once every file of it was checked against the
    manifest's sha256 and inspected by safe_load, as make_runner checks them: what another process (a runtime's
    own tool, `run --cross-check`) may then open."""
    return _checked(read_manifest(export_dir), target, export_dir)[1]


def _checked(manifest, target: Target, export_dir: str | os.PathLike):
    """`target`'s artifact entry in the manifest and its main file, every file of it checked against its sha256
    and inspected by safe_load (nothing a runtime opens may execute code)."""
    entry = artifact(manifest, target.artifact, export_dir)
    check_artifact(entry.to_dict(), export_dir)
    return entry, Path(export_dir) / entry.main.file
