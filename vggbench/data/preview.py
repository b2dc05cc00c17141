"""`vggbench data preview`: a grid of training images as the model gets them (after augmentation, before the
mean/std), each labelled with its class, as post 000 plots a batch before training."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..core.arguments import expect
from ..core.fileio import atomic_file, check_writable
from ..core.settings import Settings, setting

MAX_PREVIEW = 400  # tiles: a grid beyond this is too small to read
TILE = 96  # pixels: small images are scaled up to this so that a 32x32 digit can be seen
LABEL_HEIGHT = 14


# the PNG text chunk that marks a preview as vggbench's: only such a file is replaced by the next preview
MARK = ("Software", "vggbench data preview")


def _ours(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    return head.startswith(b"\x89PNG") and b"tEXt" + MARK[0].encode() + b"\0" + MARK[1].encode() in head


def _png_path(value):
    from ..core.errors import ConfigError

    if value is not None and not str(value).lower().endswith(".png"):
        raise ConfigError(f"--out {value}: the preview is a PNG image; name a .png file")
    path = check_writable(value, folder=False, label="--out")
    if path.is_symlink() or (path.exists() and not (path.is_file() and _ours(path))):
        raise ConfigError(f"--out {value} exists and is no preview vggbench wrote; it is not replaced: choose another "
                          f"name, or move it away")
    return str(path)


@dataclass(frozen=True, kw_only=True)
class PreviewSettings(Settings):
    """Which images the preview shows, and where it goes."""

    data: str = setting("digits", "The dataset, as train's --data.")
    data_dir: str = setting("data", "Folder holding cifar10/stl10, as train's --data-dir.")
    image_size: int = setting(32, "The model's input size the images are made to.", minimum=1, maximum=4096)
    augment: str | None = setting(None, "The training augmentation shown, as train's --augment [default: the "
                                        "dataset's].")
    split: str = setting("train", "train (with its augmentation), val or test (as evaluated).",
                         choices=("train", "val", "test"))
    count: int = setting(32, "Images in the grid.", minimum=1, maximum=MAX_PREVIEW)
    seed: int = setting(0, "Which images (and augmentations) are drawn.", minimum=0, maximum=2**32 - 1)
    out: str = setting("preview.png", "The PNG file written.", parse=_png_path)


def preview(settings: PreviewSettings) -> Path:
    """Write the labelled grid to settings.out; returns its path."""
    expect("preview", "settings", settings, PreviewSettings, "a PreviewSettings")
    import torch
    from PIL import Image, ImageDraw

    from .datasets import load_data

    data = load_data(settings.data, image_size=settings.image_size, data_dir=settings.data_dir,
                     normalize=((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), augment=settings.augment)
    dataset = data.dataset(settings.split, train=settings.split == "train")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        order = torch.randperm(len(dataset))[:settings.count].tolist()
        samples = [dataset[i] for i in order]
    columns = math.ceil(math.sqrt(len(samples)))
    rows = math.ceil(len(samples) / columns)
    side = max(TILE, settings.image_size)
    grid = Image.new("RGB", (columns * side, rows * (side + LABEL_HEIGHT)), "white")
    draw = ImageDraw.Draw(grid)
    for n, (image, label) in enumerate(samples):
        pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        tile = Image.fromarray(pixels).resize((side, side), Image.NEAREST)
        x, y = (n % columns) * side, (n // columns) * (side + LABEL_HEIGHT)
        grid.paste(tile, (x, y))
        draw.text((x + 2, y + side + 1), str(data.classes[label])[:side // 6], fill="black")
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(*MARK)
    with atomic_file(settings.out) as tmp:
        grid.save(tmp, format="PNG", pnginfo=info)
    return Path(settings.out)
