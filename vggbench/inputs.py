"""Inputs for parity checks and benchmarks: seeded random batches and real photos, normalised."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def random_batch(batch_size: int, image_size: int, seed: int = 0) -> torch.Tensor:
    """A seeded standard-normal NCHW batch (what normalised images look like, statistically)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, 3, image_size, image_size, generator=generator)


def sample_photos(image_size: int, mean: Sequence[float], std: Sequence[float], flips: bool = True) -> torch.Tensor:
    """scikit-learn's two sample photos (a temple, a flower), resized and centre-cropped the way
    torchvision evaluates ImageNet (shorter side to size x 256/224), normalised; with their mirror
    images when `flips`. Returns an (N, 3, size, size) float32 batch."""
    from sklearn.datasets import load_sample_images
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
