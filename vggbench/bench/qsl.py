"""The query sample library: real images, preprocessed once to the model's input (resized, centre-cropped,
normalised with the weights' mean/std) and held in memory; LoadGen says which of them to keep loaded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..core.device import available_memory_bytes as free_memory_bytes
from ..core.errors import ConfigError, DataError
from ..data.inputs import dataset_images, photo_crops, sample_photos, trained_on

MAX_SAMPLES = 1024  # a split larger than this is sampled (seeded): MLPerf's ResNet-50 performance sample count
PHOTO_SAMPLES = 64  # the two photos, their mirror images and random crops of them


@dataclass
class ImageSet:
    """Preprocessed images (N, 3, S, S) float32, their labels (None for photos) and where they came from."""

    images: torch.Tensor
    labels: torch.Tensor | None
    source: str
    split: str | None

    def describe(self) -> dict:
        return {"source": self.source, "split": self.split, "count": len(self.images),
                "labels": self.labels is not None}


def check_fits(what: str, needed: int, free: int | None, fix: str) -> None:
    """ConfigError when `needed` bytes are over half of what is free: refused before it is allocated, since the
    kernel's OOM killer ends the process with no line at all."""
    if free is not None and needed > free / 2:
        raise ConfigError(f"{what} would take about {needed / 2**30:.3g} GiB, over half of the {free / 2**30:.3g} "
                          f"GiB free; {fix}")


def load_images(source: str, image_size: int, mean: Sequence[float], std: Sequence[float], *,
                weights_meta: dict | None = None, split: str = "test", count: int | None = None,
                data_dir: str = "data") -> ImageSet:
    """The images of a library source: "auto" (the dataset the weights were trained on, when it loads offline,
    else photos), "photos", or a dataset name (digits, synthetic, cifar10, stl10, folder:PATH)."""
    if source == "auto":
        source = trained_on(weights_meta or {}) or "photos"
    wanted = count if count is not None else (PHOTO_SAMPLES if source == "photos" else MAX_SAMPLES)
    check_fits(f"a sample library of {wanted} images at {image_size}x{image_size}", wanted * 3 * image_size ** 2 * 4,
               free_memory_bytes(), "lower --count")
    if source == "photos":
        wanted = count or PHOTO_SAMPLES
        photos = sample_photos(image_size, mean, std)  # the two photos and their mirror images
        crops = photo_crops(max(0, wanted - len(photos)), image_size, mean, std) if wanted > len(photos) else None
        images = photos[:wanted] if crops is None else torch.cat([photos, crops])
        return ImageSet(images.contiguous(), None, "photos", None)
    wanted = count if count is not None else MAX_SAMPLES
    try:
        images, labels, used = dataset_images(source, image_size, mean, std, split=split, count=wanted,
                                              data_dir=data_dir)
    except DataError:
        raise
    except (ValueError, KeyError) as e:
        raise ConfigError(f"--images {source}: {e}") from None
    if not len(images):
        raise DataError(f"{source} {used} has no images")
    return ImageSet(images.contiguous(), labels, source, used)


class SampleLibrary:
    """The QSL's callbacks over an ImageSet: LoadGen names the samples to load before a run and unloads them
    after it; the SUT reads only loaded ones (a sample issued but not loaded is a LoadGen contract breach)."""

    def __init__(self, images: ImageSet, performance_count: int | None = None) -> None:
        self.set = images
        self.total = len(images.images)
        self.performance_count = min(performance_count or self.total, self.total)
        self.loaded: dict[int, torch.Tensor] = {}

    def load(self, indices: Sequence[int]) -> None:
        for i in indices:
            self.loaded[int(i)] = self.set.images[int(i)]

    def unload(self, indices: Sequence[int]) -> None:
        for i in indices:
            self.loaded.pop(int(i), None)

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        """The loaded samples stacked into one NCHW batch."""
        try:
            return torch.stack([self.loaded[int(i)] for i in indices])
        except KeyError as e:
            raise RuntimeError(f"LoadGen issued sample {e.args[0]}, which it did not load") from None
