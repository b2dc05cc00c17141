"""manifest.json of an export folder: what was exported, from what, and the checksums that guard it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..core.errors import ArtifactError
from ..core.fileio import sha256_file

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
# export format -> (main file, backends that run it)
FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    "torchscript": ("model.ts", ("torchscript",)),
    "onnx": ("model.onnx", ("onnxruntime", "tensorrt")),
    "pt2": ("model.pt2", ("pt2",)),
    "onnx-int8": ("model.int8.onnx", ("onnxruntime",)),  # made from model.onnx; runs as precision int8
}


def file_entry(folder: Path, name: str) -> dict:
    path = folder / name
    return {"file": name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def read_manifest(export_dir: str | os.PathLike) -> dict:
    """The manifest of an export folder, or an ArtifactError that says what is wrong with the folder."""
    folder = Path(export_dir)
    if not folder.is_dir():
        raise ArtifactError(f"export folder {folder} does not exist (create it with `vggbench export MODEL`)")
    path = folder / MANIFEST
    if not path.exists():
        raise ArtifactError(f"{folder} has no {MANIFEST}: not a vggbench export folder")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path} is not valid JSON ({e})") from None
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version != SCHEMA_VERSION:
        raise ArtifactError(f"{path} has schema_version {version!r}; this vggbench reads {SCHEMA_VERSION}")
    return manifest


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


def format_for_backend(backend: str) -> str:
    for fmt, (_, backends) in FORMATS.items():
        if backend in backends:
            return fmt
    raise ArtifactError(f"backend {backend} does not run an exported artifact")


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
