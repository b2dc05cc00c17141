"""Scoring a model on a dataset split: top-1, top-5 and loss; and the device/precision choices it shares
with training."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..core import device as core_device
from ..core.arguments import expect
from ..core.errors import ConfigError, DataError, UnsupportedError
from ..data.datasets import Data, load_data
from ..zoo.specs import check_image_size
from ..zoo.weights import LoadedModel, load_model
from . import distributed
from .config import EvalConfig
from .seeding import seed_worker

DEFAULT_IMAGE_SIZE = 32


@dataclass(frozen=True)
class EvalResult:
    """Accuracies are fractions of the images; the loss is the mean cross-entropy in nats."""

    top1: float
    # None with 5 classes or fewer, where every label is among the top five and top-5 would read 100%
    top5: float | None
    loss: float
    images: int
    dataset: str = ""
    split: str = ""


@dataclass
class Prepared:
    """What an evaluation works with: the model on its device, the data, the split and the input size."""

    loaded: LoadedModel
    data: Data
    image_size: int
    split: str
    dist: distributed.Dist
    device: torch.device
    memory_format: torch.memory_format

    @property
    def module(self) -> nn.Module:
        return self.loaded.module

    @property
    def num_classes(self) -> int:
        return self.data.num_classes


def prepare_evaluation(config: EvalConfig) -> Prepared:
    """Load the model and the data as `evaluate` does, checking that they fit each other."""
    shape = config.model_options()
    loaded = load_model(config.model, config.weights, seed=config.seed, **shape)
    info = loaded.weights
    image_size = config.image_size or info.image_size or DEFAULT_IMAGE_SIZE
    check_image_size(loaded.spec, image_size)
    data = load_data(config.data, image_size=image_size, data_dir=config.data_dir, download=config.download,
                     verify_md5=config.verify_md5,
                     normalize=config.normalize or (info.mean, info.std),
                     val_fraction=config.val_fraction or info.meta.get("val_fraction") or 0.1)
    if info.source == "random" and config.num_classes is None and loaded.options.num_classes != data.num_classes:
        loaded = load_model(config.model, info.as_source(), **shape, num_classes=data.num_classes)
    trained_on = info.meta.get("classes")
    if trained_on and list(trained_on) != list(data.classes):
        raise DataError(f"{config.weights} was trained on classes {', '.join(map(str, trained_on))}; "
                        f"{config.data} has {', '.join(data.classes)}")
    if loaded.options.num_classes < data.num_classes:
        raise ConfigError(f"{loaded.name} has {loaded.options.num_classes} outputs but {config.data} has "
                          f"{data.num_classes} classes; give weights trained on it (or --num-classes)")
    split = config.split or ("test" if "test" in data.splits else "val")
    dist = distributed.Dist()
    device = resolve_device(config.device, dist)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    loaded.module = loaded.module.to(device, memory_format=memory_format)
    return Prepared(loaded, data, image_size, split, dist, device, memory_format)


def evaluate(config: EvalConfig) -> EvalResult:
    """Top-1/top-5 accuracy and loss of a model on a dataset split (one centre crop, as in training).

    Image size, normalisation and validation split default to the ones stored in a vggbench checkpoint,
    so a run's best.pt scores here exactly as it did at the end of training. The paper's other test-time
    protocols (dense, multi-crop, several scales, flips) are `vggbench.training.protocols.evaluate_protocols`.
    """
    expect("evaluate", "config", config, EvalConfig, "an EvalConfig (vggbench.EvalConfig(model=...))")
    prep = prepare_evaluation(config)
    loader = eval_loader(prep.data.dataset(prep.split), config.batch_size, config.workers, prep.device, prep.dist)
    return evaluate_loader(prep.module, loader, prep.device, autocast_factory(prep.device, config.amp),
                           prep.memory_format, prep.num_classes, dataset=config.data, split=prep.split)


@torch.no_grad()
def evaluate_loader(module: nn.Module, loader: DataLoader, device: torch.device, autocast: Callable,
                    memory_format: torch.memory_format, num_classes: int, dataset: str = "",
                    split: str = "") -> EvalResult:
    """Score `module` on this rank's batches; sums are all-reduced, so every rank returns the same result."""
    module.eval()
    k = min(5, num_classes)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top-1 hits, top-k hits, images
    for images, labels in loader:
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        labels = labels.to(device, non_blocking=True)
        with autocast():
            logits = module(images)
        logits = logits.float()
        hits = logits.topk(k, dim=1).indices == labels[:, None]
        sums += torch.stack([nn.functional.cross_entropy(logits, labels, reduction="sum").double(),
                             hits[:, 0].sum().double(), hits.any(dim=1).sum().double(),
                             torch.tensor(len(labels), dtype=torch.float64, device=device)])
    loss, top1, top5, images = distributed.all_reduce_sum(sums).tolist()
    if not images:
        raise DataError(f"the {split or 'evaluation'} split of {dataset or 'the dataset'} has no images")
    return EvalResult(top1=top1 / images, top5=top5 / images if has_top5(num_classes) else None,
                      loss=loss / images, images=int(images),
                      dataset=dataset, split=split)


def has_top5(num_classes: int) -> bool:
    """Whether top-5 accuracy says anything: with 5 classes or fewer it is 100% whatever the model does."""
    return num_classes > 5


TOP5_NOTE = "top-5 is not reported with 5 classes or fewer: every label is among the top five"


def eval_loader(dataset: Dataset, batch_size: int, workers: int, device: torch.device,
                dist: distributed.Dist) -> DataLoader:
    """In order, this rank's share of every image exactly once (DistributedSampler would pad)."""
    return DataLoader(dataset, batch_size=batch_size, sampler=distributed.shard(len(dataset), dist),
                      num_workers=workers, worker_init_fn=seed_worker, pin_memory=device.type == "cuda")


def resolve_device(name: str, dist: distributed.Dist, pinned: bool = False) -> torch.device:
    """auto -> cuda if available, else cpu; under torchrun on CUDA, the process's own GPU (`pinned`: the one
    `name` says, as --device cuda:I,J,... gives each rank its own)."""
    device = core_device.resolve_device(name)
    if not device.is_cuda:
        return device.torch
    index = dist.local_rank if dist.enabled and not pinned else (device.index or 0)
    if index >= core_device.cuda_count():
        raise UnsupportedError(f"--device {name}: this machine has {core_device.cuda_count()} CUDA devices")
    cuda = torch.device("cuda", index)
    if dist.enabled:
        torch.cuda.set_device(cuda)  # nccl and DDP use the current device
    return cuda


def autocast_factory(device: torch.device, amp: bool) -> Callable[[], contextlib.AbstractContextManager]:
    """Chosen once: fp16 autocast on CUDA (with a GradScaler in training), bf16 on CPU, or nothing."""
    if not amp:
        return contextlib.nullcontext
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return functools.partial(torch.autocast, device_type=device.type, dtype=dtype)
