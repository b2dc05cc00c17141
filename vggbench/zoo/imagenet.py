"""torchvision's published ImageNet weights: the enum member of a model, where torch.hub caches its file, the
download (or, offline, the file to put in place) and the published checksum."""

from __future__ import annotations

import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from ..core.errors import WeightsError
from ..core.fileio import atomic_file, sha256_file
from .specs import ModelSpec, get_spec, list_models

OFFLINE_ENV = "VGGBENCH_OFFLINE"

# torchvision's DEFAULT weights of each builder (member name, file): what `vggbench models` shows without importing
# torchvision; tests/test_weights.py holds the table to torchvision's own enums.
PUBLISHED = {
    "vgg11": ("IMAGENET1K_V1", "https://download.pytorch.org/models/vgg11-8a719046.pth"),
    "vgg11_bn": ("IMAGENET1K_V1", "https://download.pytorch.org/models/vgg11_bn-6002323d.pth"),
    "vgg13": ("IMAGENET1K_V1", "https://download.pytorch.org/models/vgg13-19584684.pth"),
    "vgg13_bn": ("IMAGENET1K_V1", "https://download.pytorch.org/models/vgg13_bn-abd245e5.pth"),
    "vgg16": ("IMAGENET1K_V1", "https://download.pytorch.org/models/vgg16-397923af.pth"),
    "vgg16_bn": ("IMAGENET1K_V1", "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth"),
    "vgg19": ("IMAGENET1K_V1", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"),
    "vgg19_bn": ("IMAGENET1K_V1", "https://download.pytorch.org/models/vgg19_bn-c79401a0.pth"),
}


def published_weights(spec: ModelSpec) -> tuple[str, str]:
    """The tag and URL of torchvision's DEFAULT weights for `spec`, from PUBLISHED (no torchvision import); a
    builder missing there is asked of torchvision."""
    if spec.torchvision_name in PUBLISHED:
        return PUBLISHED[spec.torchvision_name]
    weights = imagenet_weights(spec)
    return weights.name, weights.url


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


def hub_dir() -> str:
    """torch.hub.get_dir(); before torch is imported (when torch.hub.set_dir cannot have been called) its rule,
    $TORCH_HOME/hub with TORCH_HOME defaulting to $XDG_CACHE_HOME/torch and that to ~/.cache/torch, without the
    import."""
    if "torch" in sys.modules:
        return sys.modules["torch"].hub.get_dir()
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return os.path.join(os.path.expanduser(home), "hub")


def hub_cache_path(url: str) -> Path:
    """Where torch.hub (and so torchvision) keeps the file for `url`."""
    return Path(hub_dir()) / "checkpoints" / Path(urlparse(url).path).name


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
