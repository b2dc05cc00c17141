"""manifest.json of an export folder: what was exported, from what, and the checksums that guard it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..core.documents import loads_json
from ..core.errors import ArtifactError
from ..core.fileio import sha256_file, write_json

MANIFEST = "manifest.json"
# 2: a digest over the fields that change results (1 had none); 3: input.dense of a fully-convolutional export
# (height and width dynamic) and model.lrn of an A-LRN model (Krizhevsky's form). 1 and 2 are still read: they
# are fixed-size exports, and an A-LRN one without model.lrn predates the exact LRN (verify.reference_model refuses it).
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


def file_entry(folder: Path, name: str) -> dict:
    path = folder / name
    return {"file": name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def manifest_digest(manifest: dict) -> str:
    """sha256 over the DIGESTED fields, in a canonical JSON form."""
    canonical = json.dumps({k: manifest.get(k) for k in DIGESTED}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def write_manifest(folder: str | os.PathLike, manifest: dict) -> Path:
    """Write manifest.json with its digest (atomically)."""
    manifest["digest"] = manifest_digest(manifest)
    return write_json(Path(folder) / MANIFEST, manifest)


def _check_schema(manifest: dict, path: Path) -> None:
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


def read_manifest(export_dir: str | os.PathLike) -> dict:
    """The manifest of an export folder, or an ArtifactError that says what is wrong with the folder."""
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
        manifest = loads_json(path.read_text(encoding="utf-8"), str(path), ArtifactError)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path} is not valid JSON ({e})") from None
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version not in READABLE_VERSIONS:
        raise ArtifactError(f"{path} has schema_version {version!r}; this vggbench reads "
                            f"{', '.join(map(str, READABLE_VERSIONS))}")
    _check_schema(manifest, path)
    if version >= 2 and manifest.get("digest") != manifest_digest(manifest):
        raise ArtifactError(f"{path} was edited after export (its digest does not match the fields that change "
                            f"results: {', '.join(DIGESTED)}); export again")
    return manifest


def dense_spec(manifest: dict) -> dict | None:
    """input.dense of a dense export (train_size, min_size, kernel, stride, score_map), or None."""
    dense = manifest["input"].get("dense")
    return dense if isinstance(dense, dict) else None


def artifact(manifest: dict, fmt: str, export_dir: str | os.PathLike) -> dict:
    """The manifest entry of one format, after checking every file of it against its sha256."""
    entry = manifest.get("artifacts", {}).get(fmt)
    if entry is None:
        have = ", ".join(manifest.get("artifacts", {})) or "none"
        raise ArtifactError(f"{export_dir} has no {fmt} artifact (it has: {have}); export with --format {fmt}")
    for f in entry["files"]:
        path = Path(export_dir) / f["file"]
        if not path.exists():
            raise ArtifactError(f"{path} is missing (listed in {MANIFEST})")
        if path.stat().st_size != f["bytes"] or sha256_file(path) != f["sha256"]:
            raise ArtifactError(f"{path} does not match its sha256 in {MANIFEST}: it was modified after export; "
                                f"export again")
    return entry


def summary(manifest: dict) -> tuple[list[dict], list[str]]:
    """What an export made, for people: one row per format (its files and sizes), then lines on the
    exporters' warnings and the parity check."""
    rows = [{"format": fmt, "files": ", ".join(f"{f['file']} ({f['bytes'] / 2**20:.1f} MiB)" for f in a["files"])}
            for fmt, a in manifest["artifacts"].items()]
    lines = []
    if manifest["warnings"]:
        lines.append(f"{len(manifest['warnings'])} exporter warning(s) recorded in manifest.json "
                     f"(e.g. {manifest['warnings'][0][:100]})")
    if manifest["parity"]:
        worst = max(manifest["parity"], key=lambda r: r["max_abs"])
        lines.append(f"parity: {len(manifest['parity'])} comparisons passed; largest |diff| {worst['max_abs']:.3g} "
                     f"({worst['backend']}, {worst['inputs']})")
    return rows, lines
