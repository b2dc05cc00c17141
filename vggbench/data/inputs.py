"""Inputs for parity checks, benchmarks and int8 calibration: seeded random batches, real photos and dataset
images, normalised."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.extras import require


def random_batch(batch_size: int, image_size: int, seed: int = 0) -> torch.Tensor:
    """A seeded standard-normal NCHW batch (what normalised images look like, statistically)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, 3, image_size, image_size, generator=generator)


def sample_photos(image_size: int, mean: Sequence[float], std: Sequence[float], flips: bool = True) -> torch.Tensor:
    """scikit-learn's two sample photos (a temple, a flower), resized and centre-cropped the way
    torchvision evaluates ImageNet (shorter side to size x 256/224), normalised; with their mirror
    images when `flips`. Returns an (N, 3, size, size) float32 batch."""
    load_sample_images = require("sklearn.datasets", "the sample photos").load_sample_images
    from torchvision.transforms import v2

    transform = v2.Compose([
        v2.Resize(int(round(image_size * 256 / 224)), antialias=True),
        v2.CenterCrop(image_size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
    ])
    photos = [transform(torch.from_numpy(img.copy()).permute(2, 0, 1)) for img in load_sample_images().images]
    if flips:
        photos += [p.flip(-1) for p in photos]
    return torch.stack(photos)


def trained_on(weights_meta: dict) -> str | None:
    """The dataset weights were trained on, when vggbench can load it by name (digits, cifar10, stl10,
    folder:PATH); None for anything else (ImageNet, unknown)."""
    from ..core.errors import DataError
    from .datasets import parse_name

    name = weights_meta.get("dataset")
    if not name:
        return None
    try:
        parse_name(name)
    except DataError:
        return None
    return name


def dataset_images(name: str, image_size: int, mean: Sequence[float], std: Sequence[float], *, split: str = "test",
                   count: int | None = None, seed: int = 0,
                   data_dir: str = "data") -> tuple[torch.Tensor, torch.Tensor, str]:
    """Real images of a dataset split, evaluation-transformed (resized, centre-cropped) and normalised with
    the weights' mean/std: all of them, or `count` drawn without replacement with `seed`. A dataset without
    a test split gives its val split. Returns (images, labels, the split used)."""
    from .datasets import load_data

    data = load_data(name, image_size=image_size, data_dir=data_dir, normalize=(tuple(mean), tuple(std)))
    split = split if split in data.splits else "val"
    images = data.dataset(split)
    indices = list(range(len(images)))
    if count is not None and count < len(indices):
        indices = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))[:count].tolist()
    pairs = [images[i] for i in indices]
    return torch.stack([x for x, _ in pairs]), torch.tensor([int(y) for _, y in pairs]), split


def photo_crops(count: int, image_size: int, mean, std, seed: int = 0) -> torch.Tensor:
    """`count` normalised random-resized crops and flips of scikit-learn's two sample photos."""
    load_sample_images = require("sklearn.datasets", "the sample photos").load_sample_images
    from torchvision.transforms import v2

    transform = v2.Compose([
        v2.RandomResizedCrop(image_size, scale=(0.2, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
    ])
    photos = [torch.from_numpy(img.copy()).permute(2, 0, 1) for img in load_sample_images().images]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([transform(photos[i % len(photos)]) for i in range(count)])


def calibration_images(source: str, count: int, image_size: int, mean, std,
                       weights_meta: dict) -> tuple[torch.Tensor, str]:
    """`count` normalised int8 calibration images and where they came from, e.g. "digits train".

    source: "auto" (the training split of the dataset the weights were trained on, when it loads offline, else
    photos), "photos" (crops of two real photos), or a dataset name."""
    from ..core.errors import DataError

    name = trained_on(weights_meta) if source == "auto" else source
    if name and name != "photos":
        try:
            images, _, split = dataset_images(name, image_size, mean, std, split="train", count=count)
            return images, f"{name} {split}"
        except DataError:
            if source != "auto":
                raise
    return photo_crops(count, image_size, mean, std), "photos"
