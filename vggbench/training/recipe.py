"""The training recipe: the model to train, the paper's optimizer and learning-rate schedules."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..core.errors import ConfigError
from ..zoo.weights import LoadedModel, load_model, parse_weights
from .config import TrainConfig

LR_FACTOR = 0.1  # the paper divides the learning rate by 10; plateau and step do the same


def make_model(config: TrainConfig, num_classes: int) -> LoadedModel:
    """The model to train: from --resume, from --weights or a seeded init; with `num_classes` outputs."""
    shape = config.model_options()
    shape.pop("num_classes", None)  # decided below, from the data and the weights
    if config.num_classes is not None and config.num_classes < num_classes:
        raise ConfigError(f"--num-classes {config.num_classes} is fewer than the {num_classes} classes of "
                          f"{config.data}")
    num_classes = config.num_classes or num_classes
    if config.resume:
        return load_model(config.model, config.resume, **shape)
    source = parse_weights(config.weights, config.seed)
    if source.kind == "random":
        return load_model(config.model, source, num_classes=num_classes, **shape)
    loaded = load_model(config.model, source, **shape)
    if loaded.options.num_classes == num_classes:
        return loaded
    return new_head(loaded, num_classes, config.seed)


def new_head(loaded: LoadedModel, num_classes: int, seed: int) -> LoadedModel:
    """Fine-tuning on other classes: a fresh last layer, seeded and initialised as build() does."""
    old = loaded.module.classifier[-1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new = nn.Linear(old.in_features, num_classes)
        nn.init.normal_(new.weight, 0, 0.01)
        nn.init.zeros_(new.bias)
    loaded.module.classifier[-1] = new
    return LoadedModel(loaded.module, loaded.spec, dataclasses.replace(loaded.options, num_classes=num_classes),
                       loaded.weights)


def make_optimizer(config: TrainConfig, module: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(module.parameters(), lr=config.lr_value, momentum=config.momentum,
                               weight_decay=config.weight_decay_value)
    return torch.optim.Adam(module.parameters(), lr=config.lr_value, weight_decay=config.weight_decay_value)


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer):
    """Stepped once per epoch (plateau with the validation accuracy); None for a constant rate."""
    lr_scheduler = torch.optim.lr_scheduler
    if config.schedule == "plateau":
        return lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=LR_FACTOR, patience=config.patience)
    if config.schedule == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.schedule == "step":
        return lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=LR_FACTOR)
    return None


def step_scheduler(scheduler, val_acc: float) -> None:
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(val_acc)
    elif scheduler is not None:
        scheduler.step()
