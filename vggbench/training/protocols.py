"""The paper's test-time protocols (Simonyan & Zisserman, section 3.2), scored on a dataset split.

- center: the image rescaled so its shorter side is Q, one centre crop of the model's input size S.
- dense: the net made fully convolutional (vggbench.zoo.dense) and run on the whole image rescaled to Q; its class
  score map is averaged spatially (the FC model's logits, exactly, when the image is S x S).
- multicrop: crops of S x S from the image rescaled to Q: the paper's 5x5 grid (evenly spaced, corners included),
  or torchvision's FiveCrop / TenCrop; their soft-max posteriors are averaged.
- dense+multicrop: the two posteriors averaged, as the paper combines them.
With `flip`, the posteriors of the mirrored image (crops) are averaged in. Several scales Q add a multi-scale row
whose posterior is the average over the scales. Every row gives top-1/top-5 error and the time per image of its
work (rescaling, cropping and forward passes; not the data loading).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..core.arguments import expect
from ..core.errors import ConfigError, DataError
from ..data.datasets import SOURCES, Transformed, parse_name
from ..zoo.dense import dense_model, min_dense_size
from . import distributed
from .config import EvalConfig
from .evaluation import TOP5_NOTE, autocast_factory, has_top5, prepare_evaluation
from .seeding import seed_worker

GRID = 5  # the paper's multi-crop grid: 5x5 crops per scale


@dataclass(frozen=True)
class ProtocolRow:
    protocol: str
    scales: str  # "256", or "256,384,512" for the multi-scale average
    views: int  # network evaluations per image (crops x flips x scales; dense counts one per image and flip)
    top1_err: float
    top5_err: float | None  # None with 5 classes or fewer (evaluation.has_top5)
    top1: float
    top5: float | None
    loss: float  # mean negative log of the averaged posterior of the true class, in nats
    images: int
    ms_per_image: float


@dataclass
class ProtocolReport:
    model: str
    weights: str
    dataset: str
    split: str
    image_size: int  # S: the crop the model takes, and the size at which the dense form equals it
    rows: list[ProtocolRow] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # for people: choices that the numbers depend on

    def to_dict(self) -> dict:
        return {"model": self.model, "weights": self.weights, "dataset": self.dataset, "split": self.split,
                "image_size": self.image_size, "rows": [asdict(r) for r in self.rows], "settings": self.settings,
                "notes": self.notes}


# --- crops --------------------------------------------------------------------------------------------

def grid_offsets(length: int, crop: int, count: int = GRID) -> list[int]:
    """`count` crop starts spread evenly from 0 to length - crop (rounded half up)."""
    span = length - crop
    return [(2 * i * span + count - 1) // (2 * (count - 1)) for i in range(count)] if count > 1 else [span // 2]


def crops(images: torch.Tensor, size: int, kind: str, flip: bool) -> list[torch.Tensor]:
    """The crops of a batch (N, C, H, W) as a list of (N, C, size, size): grid, five or ten (see module doc)."""
    from torchvision.transforms.v2 import functional as TF

    if kind == "grid":
        h, w = images.shape[-2:]
        views = [images[..., top:top + size, left:left + size]
                 for top in grid_offsets(h, size) for left in grid_offsets(w, size)]
    elif kind == "five":
        views = list(TF.five_crop(images, [size, size]))
    elif kind == "ten":
        return list(TF.ten_crop(images, [size, size]))  # mirrored crops included
    else:
        raise ConfigError(f"unknown crops {kind!r}: choose grid, five or ten")
    if flip:
        views += [v.flip(-1) for v in views]
    return views


def rescale(images: torch.Tensor, shorter: int) -> torch.Tensor:
    """Resize so that the shorter side is `shorter` (aspect kept), as torchvision's Resize(int) does."""
    from torchvision.transforms.v2 import functional as TF

    if min(images.shape[-2:]) == shorter:
        return images
    return TF.resize(images, shorter, antialias=True)


# --- scoring ------------------------------------------------------------------------------------------

class Scorer:
    """Posteriors of one protocol family for a batch of same-size images at one scale."""

    def __init__(self, module: nn.Module, dense: nn.Module | None, size: int, config: EvalConfig,
                 autocast: Callable, memory_format: torch.memory_format, device: torch.device) -> None:
        self.module, self.dense, self.size, self.config = module, dense, size, config
        self.autocast, self.memory_format, self.device = autocast, memory_format, device

    def _forward(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for start in range(0, x.shape[0], self.config.batch_size):
            chunk = x[start:start + self.config.batch_size].contiguous(memory_format=self.memory_format)
            with self.autocast():
                outs.append(net(chunk).float().softmax(dim=1))
        return torch.cat(outs)

    def views(self, views: list[torch.Tensor], net: nn.Module) -> torch.Tensor:
        """Averaged posterior over views of the same batch, one view at a time (50 crops of a batch at once
        would hold 50 batches of images in memory)."""
        total = self._forward(net, views[0])
        for view in views[1:]:
            total += self._forward(net, view)
        return total / len(views)

    def center(self, images: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF

        view = TF.center_crop(images, [self.size, self.size])
        return self.views([view, view.flip(-1)] if self.config.flip else [view], self.module)

    def multicrop(self, images: torch.Tensor) -> torch.Tensor:
        return self.views(crops(images, self.size, self.config.crops, self.config.flip), self.module)

    def dense_scores(self, images: torch.Tensor) -> torch.Tensor:
        return self.views([images, images.flip(-1)] if self.config.flip else [images], self.dense)


def _views_per_image(protocol: str, config: EvalConfig) -> int:
    flips = 2 if config.flip else 1
    per_crop = {"grid": GRID * GRID * flips, "five": 5 * flips, "ten": 10}[config.crops]
    return {"center": flips, "dense": flips, "multicrop": per_crop, "dense+multicrop": flips + per_crop}[protocol]


def _check_scales(scales: Sequence[int], size: int, protocols: Sequence[str], min_dense: int) -> None:
    if any(p != "dense" for p in protocols) and min(scales) < size:
        raise ConfigError(f"scale {min(scales)} is smaller than the {size}x{size} crops of "
                          f"{', '.join(p for p in protocols if p != 'dense')}: give --scales of at least {size} "
                          f"(or a smaller --image-size)")
    if any("dense" in p for p in protocols) and min(scales) < min_dense:
        raise ConfigError(f"scale {min(scales)} is smaller than the dense net's smallest input, {min_dense} (the "
                          f"first FC layer became a convolution whose kernel is the feature map at {size})")


@torch.no_grad()
def evaluate_protocols(config: EvalConfig) -> ProtocolReport:
    """Top-1/top-5 error of a model under each of `config.protocol` at each of `config.scales`, with time per image.

    Model, weights, data, split and normalisation are chosen as `evaluate` chooses them.
    """
    expect("evaluate_protocols", "config", config, EvalConfig, "an EvalConfig (vggbench.EvalConfig(model=...))")
    prep = prepare_evaluation(config)
    size = prep.image_size
    protocols = list(dict.fromkeys(config.protocol or ("center",)))
    source = SOURCES[parse_name(config.data)[0]]
    default_scale = round(size / source.crop_fraction)
    scales = list(dict.fromkeys(config.scales or (default_scale,)))
    module = prep.module.eval()
    dense = None
    if any("dense" in p for p in protocols):
        dense = dense_model(module, size).eval()
    _check_scales(scales, size, protocols, min_dense_size(module.features, size))
    device, memory_format = prep.device, prep.memory_format
    scorer = Scorer(module, dense, size, config, autocast_factory(device, config.amp), memory_format, device)
    mean = torch.tensor(prep.data.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(prep.data.std, device=device).view(1, -1, 1, 1)

    from torchvision.transforms import v2

    base = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    dataset = Transformed(prep.data.splits[prep.split], base)
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=distributed.shard(len(dataset), prep.dist),
                        num_workers=config.workers, worker_init_fn=seed_worker, collate_fn=_as_list,
                        pin_memory=device.type == "cuda")
    k = min(5, prep.num_classes)
    keys = [(p, (q,)) for p in protocols for q in scales] + ([(p, tuple(scales)) for p in protocols]
                                                            if len(scales) > 1 else [])
    sums = {key: torch.zeros(5, dtype=torch.float64) for key in keys}  # loss, top-1, top-k hits, images, seconds

    def clock() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    for batch in loader:
        for images, labels in _same_size_groups(batch):
            images = images.to(device)
            labels = labels.to(device)
            posts: dict[tuple[str, int], torch.Tensor] = {}
            seconds: dict[tuple[str, int], float] = {}  # per family and scale; ("resize", q) the rescale
            for q in scales:
                start = clock()
                scaled = (rescale(images, q) - mean) / std
                seconds["resize", q] = clock() - start
                for family in {f for p in protocols for f in p.split("+")}:
                    start = clock()
                    posts[family, q] = getattr(scorer, "dense_scores" if family == "dense" else family)(scaled)
                    seconds[family, q] = clock() - start
            for protocol, qs in keys:
                families = protocol.split("+")
                posterior = torch.stack([posts[f, q] for f in families for q in qs]).mean(dim=0)
                spent = sum(seconds[f, q] for f in ("resize", *families) for q in qs)  # one rescale per scale
                sums[protocol, qs] += _score(posterior, labels, k, spent)
    report = ProtocolReport(config.model, str(config.weights), config.data, prep.split, size,
                            settings={**config.to_dict(), "scales": scales, "protocol": protocols})
    if (config.flip or config.crops == "ten" and any("multicrop" in p for p in protocols)) and not source.mirror_safe:
        report.notes.append(f"{config.data} is not mirror-safe (a mirrored image can be another class): the "
                            f"mirrored views cost accuracy here")
    top5 = has_top5(prep.num_classes)
    if not top5:
        report.notes.append(TOP5_NOTE)
    for (protocol, qs), total in sums.items():
        loss, top1, topk, images, spent = distributed.all_reduce_sum(total.to(device)).tolist()
        if not images:
            raise DataError(f"the {prep.split} split of {config.data} has no images")
        report.rows.append(ProtocolRow(
            protocol=protocol, scales=",".join(map(str, qs)), views=_views_per_image(protocol, config) * len(qs),
            top1_err=1 - top1 / images, top5_err=1 - topk / images if top5 else None, top1=top1 / images,
            top5=topk / images if top5 else None,
            loss=loss / images, images=int(images), ms_per_image=1000 * spent / images))
    return report


def _score(posterior: torch.Tensor, labels: torch.Tensor, k: int, seconds: float) -> torch.Tensor:
    hits = posterior.topk(k, dim=1).indices == labels[:, None]
    nll = -posterior.gather(1, labels[:, None]).clamp_min(1e-12).log().sum()
    return torch.tensor([nll.item(), hits[:, 0].sum().item(), hits.any(dim=1).sum().item(), len(labels), seconds],
                        dtype=torch.float64)


def _as_list(batch: list) -> list:
    return batch


def _same_size_groups(batch: list) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A loader batch of (image, label) pairs as stacks of images of one size (folder images differ)."""
    groups: dict[tuple, list] = {}
    for image, label in batch:
        groups.setdefault(tuple(image.shape), []).append((image, label))
    return [(torch.stack([torch.as_tensor(i) for i, _ in g]), torch.tensor([int(lbl) for _, lbl in g]))
            for g in groups.values()]
