"""manifest.json of an export folder: what was exported, from what, and the checksums that guard it.

`read_manifest` gives a typed, frozen `Manifest` (its parts: `ModelRecord`, `WeightsRecord`, `InputSpec`,
`OutputSpec`, and per format an `Artifact` with its `FileEntry`s); `write_manifest` writes one, or a plain dict
as a test that tampers with the JSON does. The JSON on disk is the dict form (`Manifest.to_dict`): a manifest read
and written again keeps every key, those this vggbench does not know included (each part's `extra`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.documents import loads_json, read_text
from ..core.errors import ArtifactError
from ..core.fileio import sha256_file, write_json
from .choices import QUANT_METHODS  # noqa: F401 (how a quantization.method is named; backends read it here)

MANIFEST = "manifest.json"
# 2: a digest over the fields that change results (1 had none); 3: input.dense of a fully-convolutional export
# (height and width dynamic) and model.lrn of an A-LRN model (Krizhevsky's form). 1 and 2 are still read: they
# are fixed-size exports, and an A-LRN one without model.lrn predates the exact LRN (verify.reference_model refuses
# it). What 3 added is optional in the typed form (None when absent), so reading 1 or 2 converts it; the
# Manifest keeps the schema_version its file has, so that a rewrite does not claim fields it lacks.
SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
# the fields whose edit would change what a verify or a run computes or how it reads the files; their digest is
# stored in the manifest, so an edited manifest is refused like an edited artifact
DIGESTED = ("model", "weights", "precision", "input", "output", "dynamic_axes", "artifacts")
# what a reader relies on: key path -> type
REQUIRED = {
    "model": dict, "model.name": str, "model.options": dict,
    "weights": dict, "weights.source": str, "weights.state_sha256": str,
    "precision": str,
    "input": dict, "input.name": str, "input.shape": list, "input.image_size": int, "input.mean": list,
    "input.std": list, "input.dynamic_batch": bool,
    "output": dict, "output.name": str, "output.shape": list,
    "artifacts": dict,
}
# export format -> its main file (which backends run a format, the backends themselves say: vggbench.backends)
FORMATS: dict[str, str] = {
    "torchscript": "model.ts",
    "onnx": "model.onnx",
    "pt2": "model.pt2",
    "onnx-int8": "model.int8.onnx",  # made from model.onnx; runs as precision int8
}
INT8_FORMAT = "onnx-int8"  # the artifact a run at precision int8 loads

_OMIT = "vggbench.manifest.omit"  # field metadata: a key the JSON has only when it has a value


def _optional(default: Any = None) -> Any:
    """A field whose key the manifest leaves out when it is None (what a newer schema or one format added)."""
    return field(default=default, metadata={_OMIT: True})


def _extra() -> Any:
    return field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, kw_only=True)
class _Record:
    """A part of the manifest. Fields are its keys, in the order they are written; `extra` holds the keys this
    vggbench does not know, so that a manifest read and written again loses none."""

    extra: dict = _extra()

    @classmethod
    def from_dict(cls, data: Any, where: str, path: Path | str = MANIFEST):
        if not isinstance(data, dict):
            raise ArtifactError(f"{path}: {where} must be a dict, got {data!r}")
        hints = _hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "extra":
                continue
            key = f"{where}.{f.name}" if where else f.name
            if f.name in data:
                values[f.name] = _typed(data[f.name], hints[f.name], key, path)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ArtifactError(f"{path} lacks {key}: not a complete vggbench manifest; export again")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**values, extra={k: copy.deepcopy(v) for k, v in data.items() if k not in known})

    def to_dict(self) -> dict:
        """The JSON form (a deep copy: editing it leaves this record as it is)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or value is None and f.metadata.get(_OMIT):
                continue
            out[f.name] = _plain(value)
        return {**out, **copy.deepcopy(self.extra)}


@functools.cache
def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


def _typed(value: Any, hint: Any, where: str, path) -> Any:
    """`value` read as `hint` says (records parsed, lists made tuples), or an ArtifactError naming `where`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(hint)):
            return None
        hint = args[0] if len(args) == 1 else Any
    origin = typing.get_origin(hint) or hint
    if origin is Any:
        return copy.deepcopy(value)
    if isinstance(origin, type) and issubclass(origin, _Record):
        return origin.from_dict(value, where, path)
    if origin is tuple:
        if not isinstance(value, list):
            raise ArtifactError(f"{path}: {where} must be a list, got {value!r}")
        element = typing.get_args(hint)[0]
        return tuple(_typed(v, element, f"{where}[{i}]", path) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ArtifactError(f"{path}: {where} must be a dict, got {value!r}")
        args = typing.get_args(hint)
        if args and isinstance(typing.get_origin(args[1]) or args[1], type) and issubclass(args[1], _Record):
            return {k: args[1].from_dict(v, f"{where}.{k}", path) for k, v in value.items()}
        return copy.deepcopy(value)
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)) if origin is float else \
        (isinstance(value, int) and not isinstance(value, bool)) if origin is int else isinstance(value, origin)
    if not ok:
        raise ArtifactError(f"{path}: {where} must be a {origin.__name__}, got {value!r}")
    return value


def _plain(value: Any) -> Any:
    """JSON's form of a field's value: records as dicts, tuples as lists, containers copied."""
    if isinstance(value, _Record):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, kw_only=True)
class FileEntry(_Record):
    """One file of an artifact: a plain name inside the export folder, its size and sha256."""

    file: str
    bytes: int
    sha256: str


@dataclass(frozen=True, kw_only=True)
class Artifact(_Record):
    """One format's entry: its files (the main one first) and how it was made."""

    mode: str | None = _optional()  # torchscript: trace or script
    opset: int | None = _optional()  # onnx
    external_data: bool | None = _optional()  # onnx: weights in model.onnx.data
    quantization: dict | None = _optional()  # onnx-int8: QuantConfig.to_dict()
    files: tuple[FileEntry, ...]
    cudnn_flags_in_trace: dict | None = _optional()  # torchscript trace: the cuDNN flags baked in
    plan: dict | None = _optional()  # onnx-int8 with --keep-fp32 auto: how the plan was found

    @property
    def main(self) -> FileEntry:
        """The file a runtime opens (the others are its external data)."""
        return self.files[0]

    @property
    def sha256s(self) -> list[str]:
        return [f.sha256 for f in self.files]

    def quant_config(self):
        """The QuantConfig an onnx-int8 artifact was made with."""
        from .quantize import QuantConfig

        if self.quantization is None:
            raise ArtifactError("this artifact records no quantization: it is not an onnx-int8 model")
        return QuantConfig.from_dict(self.quantization)


@dataclass(frozen=True, kw_only=True)
class ModelRecord(_Record):
    name: str
    config: str | None = None  # the paper's letter (A ... E)
    batch_norm: bool | None = None
    options: dict  # ModelOptions.to_dict()
    params: int | None = None
    gmacs: float | None = None
    lrn: dict | None = _optional()  # an A-LRN model: its LRN parameters and form (schema 3)
    spec: dict | None = _optional()  # a custom layer list (--config): what rebuilds it
    stage: dict | None = _optional()  # a prefix sub-model: the stage it ends at (zoo.stages.Stage as a dict)


@dataclass(frozen=True, kw_only=True)
class WeightsRecord(_Record):
    source: str
    seed: int | None = None
    path: str | None = None
    sha256: str | None = None
    tag: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    image_size: int | None = None
    meta: dict | None = None
    state_sha256: str  # zoo.fingerprint of the exported state dict


@dataclass(frozen=True, kw_only=True)
class DenseSpec(_Record):
    """A dense (fully-convolutional) export: where it equals the model, its smallest input, its outputs."""

    train_size: int
    min_size: int
    kernel: int
    stride: int
    score_map: bool


@dataclass(frozen=True, kw_only=True)
class InputSpec(_Record):
    name: str
    shape: tuple[int | str, ...]  # "batch", "height", "width" where dynamic
    dtype: str | None = None
    layout: str | None = None
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dynamic_batch: bool
    example_batch: int | None = None
    dense: DenseSpec | None = _optional()  # schema 3


@dataclass(frozen=True, kw_only=True)
class MapSpec(_Record):
    name: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True, kw_only=True)
class OutputSpec(_Record):
    name: str
    shape: tuple[int | str, ...]
    dtype: str | None = None
    score_map: MapSpec | None = _optional()  # a dense export's second output


@dataclass(frozen=True, kw_only=True)
class Manifest(_Record):
    """An export folder's manifest.json, typed; `to_dict` is its JSON."""

    schema_version: int
    created: str | None = None
    model: ModelRecord
    weights: WeightsRecord
    precision: str
    input: InputSpec
    output: OutputSpec
    dynamic_axes: dict = field(default_factory=dict)
    artifacts: dict[str, Artifact]
    versions: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    parity: tuple[dict, ...] | None = None  # the export's parity rows (ParityResult.to_dict()), once checked
    digest: str | None = _optional()

    @classmethod
    def from_dict(cls, data: Any, where: str = "", path: Path | str = MANIFEST) -> Manifest:
        """A manifest from its JSON form, checked as `read_manifest` checks a file (but for the digest)."""
        _check_schema(data, Path(path))
        return super().from_dict(data, where, path)

    @property
    def static_batch(self) -> int | None:
        """The batch size a static export takes (None: any)."""
        return None if self.input.dynamic_batch else int(self.input.shape[0])

    @property
    def dense(self) -> DenseSpec | None:
        """input.dense of a dense export, or None."""
        return self.input.dense

    def signed(self) -> Manifest:
        """This manifest with its digest computed."""
        return dataclasses.replace(self, digest=manifest_digest(self))


def file_entry(folder: Path, name: str) -> FileEntry:
    path = folder / name
    return FileEntry(file=name, bytes=path.stat().st_size, sha256=sha256_file(path))


def manifest_digest(manifest: Manifest | Mapping) -> str:
    """sha256 over the DIGESTED fields, in a canonical JSON form."""
    data = manifest.to_dict() if isinstance(manifest, Manifest) else manifest
    canonical = json.dumps({k: data.get(k) for k in DIGESTED}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def write_manifest(folder: str | os.PathLike, manifest: Manifest | Mapping) -> Path:
    """Write manifest.json with its digest (atomically): a Manifest, or its JSON form as a dict (whose parts may be
    records, such as file_entry's)."""
    data = manifest.to_dict() if isinstance(manifest, Manifest) else _plain(dict(manifest))
    data["digest"] = manifest_digest(data)
    return write_json(Path(folder) / MANIFEST, data)


def _check_schema(manifest: Any, path: Path) -> None:
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version not in READABLE_VERSIONS:
        raise ArtifactError(f"{path} has schema_version {version!r}; this vggbench reads "
                            f"{', '.join(map(str, READABLE_VERSIONS))}")
    for key, kind in REQUIRED.items():
        value = manifest
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                raise ArtifactError(f"{path} lacks {key}: not a complete vggbench manifest; export again")
            value = value[part]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ArtifactError(f"{path}: {key} must be a {kind.__name__}, got {value!r}")
    for fmt, entry in manifest["artifacts"].items():
        files = entry.get("files") if isinstance(entry, dict) else None
        if not isinstance(files, list) or not files:
            raise ArtifactError(f"{path} lacks artifacts.{fmt}.files: not a complete vggbench manifest; export again")
        for f in files:
            if not (isinstance(f, dict) and isinstance(f.get("file"), str) and isinstance(f.get("bytes"), int)
                    and isinstance(f.get("sha256"), str)):
                raise ArtifactError(f"{path}: artifacts.{fmt}.files holds {f!r}, not {{file, bytes, sha256}}")
            name = f["file"]
            # a plain file name in the folder: no absolute path, no folder part, no way out of the folder
            if not name or name != Path(name).name or name in (".", ".."):
                raise ArtifactError(f"{path}: artifact file {name!r} is not a file name inside the export folder")


def read_manifest_json(export_dir: str | os.PathLike) -> tuple[dict, Path]:
    """The JSON of an export folder's manifest and its path, or an ArtifactError that says what is wrong with the
    folder (its contents are not checked here)."""
    folder = Path(export_dir)
    if folder.exists() and not folder.is_dir():
        raise ArtifactError(f"{folder} is a file, not an export folder (`vggbench export MODEL` writes one: a "
                            f"folder holding manifest.json and the model files)")
    if not folder.is_dir():
        raise ArtifactError(f"export folder {folder} does not exist (create it with `vggbench export MODEL`)")
    path = folder / MANIFEST
    if not path.exists():
        raise ArtifactError(f"{folder} has no {MANIFEST}: not a vggbench export folder")
    try:
        return loads_json(read_text(path), str(path), ArtifactError), path
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path} is not valid JSON ({e})") from None
    except OSError as e:
        raise ArtifactError(f"cannot read {path}: {e.strerror or e}") from None


def read_manifest(export_dir: str | os.PathLike) -> Manifest:
    """The manifest of an export folder, or an ArtifactError that says what is wrong with the folder."""
    data, path = read_manifest_json(export_dir)
    manifest = Manifest.from_dict(data, path=path)
    if manifest.schema_version >= 2 and data.get("digest") != manifest_digest(data):
        raise ArtifactError(f"{path} was edited after export (its digest does not match the fields that change "
                            f"results: {', '.join(DIGESTED)}); export again")
    return manifest


def artifact(manifest: Manifest, fmt: str, export_dir: str | os.PathLike) -> Artifact:
    """The manifest entry of one format, after checking every file of it against its sha256."""
    entry = manifest.artifacts.get(fmt)
    if entry is None:
        have = ", ".join(manifest.artifacts) or "none"
        raise ArtifactError(f"{export_dir} has no {fmt} artifact (it has: {have}); export with --formats {fmt}")
    for f in entry.files:
        path = Path(export_dir) / f.file
        if not path.exists():
            raise ArtifactError(f"{path} is missing (listed in {MANIFEST})")
        if path.stat().st_size != f.bytes or sha256_file(path) != f.sha256:
            raise ArtifactError(f"{path} does not match its sha256 in {MANIFEST}: it was modified after export; "
                                f"export again")
    return entry


def summary(manifest: Manifest) -> tuple[list[dict], list[str]]:
    """What an export made, for people: one row per format (its files and sizes), then lines on the
    exporters' warnings and the parity check."""
    rows = [{"format": fmt, "files": ", ".join(f"{f.file} ({f.bytes / 2**20:.1f} MiB)" for f in a.files)}
            for fmt, a in manifest.artifacts.items()]
    lines = []
    if manifest.warnings:
        lines.append(f"{len(manifest.warnings)} exporter warning(s) recorded in manifest.json "
                     f"(e.g. {manifest.warnings[0][:100]})")
    if manifest.parity:
        worst = max(manifest.parity, key=lambda r: r["max_abs"])
        lines.append(f"parity: {len(manifest.parity)} comparisons passed; largest |diff| {worst['max_abs']:.3g} "
                     f"({worst['backend']}, {worst['inputs']})")
    return rows, lines
