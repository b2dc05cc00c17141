"""manifest.json of an export folder: what was exported, from what, and the checksums that guard it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..core.errors import ArtifactError
from ..core.fileio import sha256_file

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
# export format -> its main file (which backends run a format, the backends themselves say: vggbench.backends)
FORMATS: dict[str, str] = {
    "torchscript": "model.ts",
    "onnx": "model.onnx",
    "pt2": "model.pt2",
    "onnx-int8": "model.int8.onnx",  # made from model.onnx; runs as precision int8
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
