"""torchvision's published ImageNet weights: the enum member of a model, where torch.hub caches its file, the
download (or, offline, the file to put in place) and the published checksum."""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import torch

from ..core.errors import WeightsError
from ..core.fileio import atomic_file, sha256_file
from .specs import ModelSpec, get_spec, list_models

OFFLINE_ENV = "VGGBENCH_OFFLINE"


def imagenet_weights(spec: ModelSpec, tag: str | None = None):
    """torchvision's weights enum member for `spec` (DEFAULT when tag is None)."""
    from torchvision.models import get_model_weights

    if spec.torchvision_name is None:
        have = ", ".join(n for n in list_models() if get_spec(n).torchvision_name)
        raise WeightsError(f"{spec.name} has no published ImageNet weights (torchvision publishes them for "
                           f"{have}); use --weights random or a weights file")
    enum = get_model_weights(spec.torchvision_name)
    if tag is None:
        return enum.DEFAULT
    try:
        return enum[tag.upper()]
    except KeyError:
        raise WeightsError(f"{spec.torchvision_name} has no weights {tag!r}; available: "
                           f"{', '.join(w.name for w in enum)}") from None


def hub_cache_path(url: str) -> Path:
    """Where torch.hub (and so torchvision) keeps the file for `url`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def _published_prefix(filename: str) -> str | None:
    """torchvision names files <name>-<first hex digits of sha256>.pth."""
    match = re.search(r"-([a-f0-9]{6,})\.", filename)
    return match.group(1) if match else None


def download(url: str, dest: Path, model: str) -> None:
    how = f"download {url} on a machine with internet access and place it at {dest}"
    if os.environ.get(OFFLINE_ENV):
        raise WeightsError(f"ImageNet weights for {model} are not in the torch hub cache ({OFFLINE_ENV} is set); {how}")
    from tqdm import tqdm

    try:
        with urllib.request.urlopen(url, timeout=30) as resp, atomic_file(dest) as tmp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with open(tmp, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                                            leave=False) as bar:
                while chunk := resp.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
            check_published_hash(tmp, dest.name, url)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise WeightsError(f"ImageNet weights for {model} are not in the torch hub cache and could not be "
                           f"downloaded ({reason}); {how}") from None


def check_published_hash(path: Path, filename: str, url: str) -> str:
    digest = sha256_file(path)
    prefix = _published_prefix(filename)
    if prefix and not digest.startswith(prefix):
        raise WeightsError(f"{path} does not match the published checksum (sha256 should start with {prefix}, "
                           f"it starts with {digest[:len(prefix)]}): it is corrupt or not the file from {url}; "
                           f"delete it and place the original there")
    return digest
