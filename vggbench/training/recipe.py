"""The training recipe: the model to train, the paper's optimizer and learning-rate schedules."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from ..core.errors import ConfigError
from ..zoo.weights import LoadedModel, load_model, parse_weights
from .config import MIN_AUTO_BATCH, MIN_STEPS_PER_EPOCH, TrainConfig

LR_FACTOR = 0.1  # the paper divides the learning rate by 10; plateau and step do the same


def make_model(config: TrainConfig, num_classes: int) -> LoadedModel:
    """The model to train: from --resume, from --weights or a seeded init (the recipe's, and net A's layers with
    --init-from); with `num_classes` outputs."""
    shape = config.model_options()
    shape.pop("num_classes", None)  # decided below, from the data and the weights
    if config.init_from and not config.resume:
        return init_from_net_a(config, num_classes, shape)
    if config.num_classes is not None and config.num_classes < num_classes:
        raise ConfigError(f"--num-classes {config.num_classes} is fewer than the {num_classes} classes of "
                          f"{config.data}")
    num_classes = config.num_classes or num_classes
    if config.resume:
        return load_model(config.model, config.resume, **shape)
    source = parse_weights(config.weights, config.seed)
    if source.kind == "random":
        return load_model(config.model, source, num_classes=num_classes,
                          **{"init": config.init_value, "dropout": config.dropout_value, **shape})
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


# --- the paper's pre-initialisation from net A -------------------------------------------------------------

NET_A = ("A", "A-LRN")
NET_A_CONVS = 4  # the paper copies net A's first four conv layers (and its three FC layers)


def conv_names(spec) -> list[tuple[str, int]]:
    """(name, index in `features`) of every conv as the paper's Caffe models name them: conv<block>_<n>."""
    names, block, n, index = [], 1, 0, 0
    for token in spec.layers:
        if token == "M":
            block, n = block + 1, 0
            index += 1
        elif token == "LRN":
            index += 1
        else:
            n += 1
            names.append((f"conv{block}_{n}", index))
            index += 3 if spec.batch_norm else 2  # conv, [bn,] relu
    return names


def init_from_net_a(config: TrainConfig, num_classes: int, shape: dict) -> LoadedModel:
    """A seeded init of `config.model` whose layers named as net A's first four convs (conv1_1, conv2_1, conv3_1,
    conv3_2: the same names in every config) and whose three FC layers are net A's, as the paper's deeper nets
    started. Shape options not given are net A's; every copied tensor's shape is checked."""
    from ..zoo.specs import get_spec
    from ..zoo.weight_files import identify, read_weights_file

    path = config.init_from
    state, meta = read_weights_file(path)
    names = [meta["model"]] if isinstance(meta.get("model"), str) else identify(state)
    source_spec = get_spec(names[0]) if names else None
    if source_spec is None or source_spec.config not in NET_A:
        what = f"a {source_spec.name} checkpoint" if source_spec else "no VGG checkpoint that vggbench recognises"
        raise ConfigError(f"--init-from {path}: it is {what}; the paper initialises deeper nets from net A "
                          f"(vgg11, vgg11_bn or vgg11_lrn): train one first, e.g. vggbench train vgg11 --data ...")
    net_a = load_model(source_spec, path)
    wanted = {k: v for k, v in net_a.options.to_dict().items() if k not in ("init", "dropout")}
    wanted.update(shape)
    wanted["num_classes"] = config.num_classes or num_classes
    wanted.setdefault("init", config.init_value)
    wanted.setdefault("dropout", config.dropout_value)
    model = load_model(config.model, parse_weights("random", config.seed), **wanted)
    target, source = model.module.state_dict(), net_a.module.state_dict()
    pairs = []  # (name in the new model, name in net A), module prefixes
    deeper = dict(conv_names(model.spec))
    for name, index in conv_names(source_spec)[:NET_A_CONVS]:
        if name not in deeper:
            raise ConfigError(f"--init-from {path}: {model.name} has no layer {name} to take net A's")
        pairs.append((f"features.{deeper[name]}", f"features.{index}", name))
        if source_spec.batch_norm and model.spec.batch_norm:
            pairs.append((f"features.{deeper[name] + 1}", f"features.{index + 1}", f"{name}'s batch norm"))
    fcs = sorted({int(k.split(".")[1]) for k in source if k.startswith("classifier.")})
    new_fcs = sorted({int(k.split(".")[1]) for k in target if k.startswith("classifier.")})
    if len(fcs) != len(new_fcs):
        raise ConfigError(f"--init-from {path}: net A has {len(fcs)} FC layers, {model.name} has {len(new_fcs)}; "
                          f"give both the same --hidden")
    pairs += [(f"classifier.{n}", f"classifier.{a}", f"fc{i + 6}") for i, (n, a) in enumerate(zip(new_fcs, fcs, strict=True))]
    copied = dict(target)
    for new, old, label in pairs:
        for key in [k for k in source if k.startswith(old + ".")]:
            mine = new + key[len(old):]
            if mine not in target or target[mine].shape != source[key].shape:
                have = list(target[mine].shape) if mine in target else "nothing"
                raise ConfigError(f"--init-from {path}: {label} is {list(source[key].shape)} in net A but {have} in "
                                  f"{model.name} ({key[len(old) + 1:]}); train net A with the same --width, --head, "
                                  f"--hidden and --num-classes")
            copied[mine] = source[key]
    model.module.load_state_dict(copied)
    info = dataclasses.replace(model.weights, meta={**model.weights.meta, "init_from": str(path),
                                                   "init_from_layers": [p[2] for p in pairs]})
    return LoadedModel(model.module, model.spec, model.options, info)


def batch_for_data(config: TrainConfig, train_samples: int, world_size: int = 1) -> tuple[int, str | None]:
    """The batch per process, and a note when the recipe's batch was scaled down to the data: a batch given with
    --batch-size is kept; the recipe's is halved until an epoch has MIN_STEPS_PER_EPOCH steps per process (not
    below MIN_AUTO_BATCH)."""
    wanted = config.batch_size_value
    if config.batch_size is not None:
        return wanted, None
    per_process = max(1, math.ceil(train_samples / world_size))
    batch = wanted
    while batch > MIN_AUTO_BATCH and per_process / batch < MIN_STEPS_PER_EPOCH:
        batch = max(MIN_AUTO_BATCH, batch // 2)
    if batch == wanted:
        return wanted, None
    steps = lambda b: math.ceil(per_process / b)  # noqa: E731
    return batch, (f"--recipe {config.recipe}'s batch {wanted} gives {steps(wanted)} step"
                   f"{'' if steps(wanted) == 1 else 's'} an epoch on {per_process} training samples"
                   f"{' per process' if world_size > 1 else ''}; training in batches of {batch} ({steps(batch)} "
                   f"steps an epoch): give --batch-size to choose")


def make_optimizer(config: TrainConfig, module: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer_value == "sgd":
        return torch.optim.SGD(module.parameters(), lr=config.lr_value, momentum=config.momentum,
                               weight_decay=config.weight_decay_value)
    return torch.optim.Adam(module.parameters(), lr=config.lr_value, weight_decay=config.weight_decay_value)


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer):
    """Stepped once per epoch after the warm-up (plateau with the --monitor value); None for a constant rate."""
    lr_scheduler = torch.optim.lr_scheduler
    if config.schedule == "plateau":
        return lr_scheduler.ReduceLROnPlateau(optimizer, mode="max" if config.monitor == "val_acc" else "min",
                                              factor=LR_FACTOR, patience=config.patience)
    if config.schedule == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, config.epochs - config.warmup_value))
    if config.schedule == "step":
        return lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=LR_FACTOR)
    return None


def step_scheduler(scheduler, monitored: float) -> None:
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(monitored)
    elif scheduler is not None:
        scheduler.step()


def warmup_lr(config: TrainConfig, epoch: int, step: int, steps_per_epoch: int) -> float | None:
    """The learning rate of this step during the warm-up (rising linearly to --lr at its last step); None after."""
    epochs = config.warmup_value
    if epoch >= epochs:
        return None
    return config.lr_value * (epoch * steps_per_epoch + step + 1) / (epochs * steps_per_epoch)


def chance_warning(config: TrainConfig, history: list[dict], num_classes: int) -> str | None:
    """A warning when validation accuracy has been at chance (no more than a tenth of the way from chance to
    100%) for the last --chance-epochs epochs, naming the likely fix; None otherwise."""
    chance = 1 / num_classes
    recent = history[-config.chance_epochs:]
    if len(recent) < config.chance_epochs or any(e["val_acc"] > chance + 0.1 * (1 - chance) for e in recent):
        return None
    if not config.init_value.startswith("glorot") and not config.init_from and config.weights == "random":
        fix = (f"its {config.init_value} init is known to stall at this size: use Glorot's (--init glorot_relu"
               f"{', or drop --recipe paper' if config.recipe == 'paper' else ''})")
    elif config.warmup_value == 0:
        fix = "add a learning-rate warm-up (--warmup 1)"
    else:
        fix = "start from net A's weights (train vgg11 first, then --init-from its best.pt), lower --lr, " \
              "or use --optimizer adam"
    return (f"validation accuracy has stayed at chance ({recent[-1]['val_acc']:.1%}, {num_classes} classes) for "
            f"{len(recent)} epochs: the model is not learning. Likely fix: {fix}")
