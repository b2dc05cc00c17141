"""What decides a training run (`TrainConfig`) and an evaluation (`EvalConfig`): settings declared once,
from which `vggbench train` and `vggbench eval` get their options. No torch import here."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.device import device_or_auto_text
from ..core.errors import ConfigError
from ..core.fileio import writable_folder
from ..core.settings import MAX_THREADS, setting
from ..zoo.settings import ModelSettings
from ..zoo.specs import MAX_IMAGE_SIZE

OPTIMIZERS = {
    # the paper: mini-batch SGD with momentum 0.9, weight decay 5e-4, learning rate 1e-2
    "sgd": {"lr": 1e-2, "weight_decay": 5e-4},
    "adam": {"lr": 1e-3, "weight_decay": 0.0},
}
SCHEDULES = ("plateau", "cosine", "step", "constant")
SPLITS = ("train", "val", "test")
# train_loss: post 001 steps its plateau on the training loss
MONITORS = ("val_acc", "val_loss", "train_loss")
# FiveCrop/TenCrop training views (post 004): every training image gives 5 (10) samples, its corners and centre
# (and their mirror images) of the image resized to 256/224 of the image size
TRAIN_CROPS = ("none", "five", "ten")
# A recipe's batch (not one given with --batch-size) is halved until an epoch has at least this many steps per
# process, down to MIN_AUTO_BATCH: the paper's 256 on a few hundred images is two steps an epoch, and stayed at
# chance for 8 epochs where batches of 32 learned.
MIN_STEPS_PER_EPOCH = 8
MIN_AUTO_BATCH = 16
# What --recipe sets where the option is not given. paper: the paper's random-init recipe exactly (SGD lr 1e-2,
# momentum 0.9, weight decay 5e-4, batch 256, N(0, 0.01) init; dropout 0.5 and plateau / 10 on validation
# accuracy are everyone's defaults); at small widths its init leaves the deeper nets at chance. default: Glorot's
# init, which the paper names as what trains its deep nets from scratch (with the ReLU gain sqrt(2) in the nets
# without batch norm: plain Glorot halves the signal's variance at each ReLU, and at width 1/16 VGG19 stayed at
# chance with seed 0 and reached 69.6% with seed 1 (Adam at 5e-4: chance with seed 2); with the gain 94.4%,
# 94.8% and 96.3% with seeds 0, 1 and 2.
# Batch norm restores the scale after every conv, where the gain would only shrink Adam's step relative to the
# weights: VGG19-BN reached 87.0% without it, 63.7% with it, seed 0), a learning-rate warm-up over the first
# epoch, Adam in batches of 32 (64 with batch norm), and no dropout with batch norm (Ioffe & Szegedy: batch norm
# regularises, dropout can go; at width 1/16 the hidden FC layers have 256 units, and dropout 0.5 there kept
# VGG19-BN's training accuracy at 40-60% by epoch 20: 87.0%, 48.5%, 77.0% test with seeds 0-2; seed 1 without
# dropout: 96.3% val). The nets without batch norm drop it too: with the compact head at width 1/16 (32 hidden
# units) dropout 0.5 left VGG16 at 90.0-91.1% test over seeds 0-2 with one thread and 87.8% with two (seed 0,
# best val below 90% in half the runs, still rising at epoch 20), and without it 97.0% and 97.4% (seeds 0 and 1;
# benchmarks/README.md). Measured on digits at width 1/16: SGD (lr 1e-2 or 5e-2,
# with Glorot's init, with or without warm-up) left VGG19 at chance for 8 epochs; batches of 64 made VGG19 learn
# half as fast as 32, while VGG16-BN reached 70% test accuracy in batches of 32 and 93% in batches of 64 (its
# last blocks' maps are 2x2: batch statistics of 32 images are noisy). The paper's other tool, net A's
# weights, is --init-from.
RECIPES = {
    "default": {"init": "glorot_relu", "init_bn": "glorot", "dropout": 0.0, "dropout_bn": 0.0, "warmup": 1, "optimizer": "adam", "batch_size": 32, "batch_size_bn": 64},
    "paper": {"init": "paper", "init_bn": "paper", "dropout": 0.5, "dropout_bn": 0.5, "warmup": 0, "optimizer": "sgd", "batch_size": 256, "batch_size_bn": 256},
}
# The paper's test-time protocols (section 3.2): one centre crop; dense (the net made fully convolutional, on the
# whole rescaled image); multi-crop; and dense and multi-crop combined (soft-max posteriors averaged).
PROTOCOLS = ("center", "dense", "multicrop", "dense+multicrop")
# multicrop: the paper's 5x5 grid of crops per scale; torchvision's FiveCrop (corners + centre) and TenCrop
# (FiveCrop + the mirrored image's five)
CROPS = ("grid", "five", "ten")


def _augmentations() -> tuple[str, ...]:
    from ..data.datasets import AUGMENTATIONS  # imports torch: asked only when a value is checked

    return tuple(AUGMENTATIONS)


def _normalizations() -> tuple[str, ...]:
    from ..data.datasets import NORMALIZE

    return NORMALIZE


def _numbers(value, what: str):
    """'0.5,0.5' -> [0.5, 0.5] (anything else as it is); `what` names the setting and an example in the error."""
    if not isinstance(value, str):
        return value
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what}, got {value!r}") from None


def _three(value):
    """--mean/--std: three per-channel numbers; one number stands for all three."""
    value = _numbers(value, "mean/std must be numbers such as 0.5,0.5,0.5")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = list(value) * 3
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ConfigError(f"mean/std must be one number or three (one per colour channel), got {value!r}")
    return tuple(value)


def _crop_scale(value):
    """--crop-scale MIN,MAX: RandomResizedCrop's range of crop areas, as fractions of the image's area."""
    value = _numbers(value, "--crop-scale must be two numbers such as 0.08,1")
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            or not 0 < value[0] <= value[1] <= 1):
        raise ConfigError(f"--crop-scale must be two area fractions 0 < MIN <= MAX <= 1 (torchvision's "
                          f"RandomResizedCrop default is 0.08,1), got {value!r}")
    return tuple(float(v) for v in value)


def _train_device(value):
    """--device of train: as everywhere, or cuda:I,J,... (DDP over those GPUs, one process each)."""
    from ..core.device import parse_device

    text = str(value).strip().lower()
    if "," not in text:
        return device_or_auto_text(value)
    head, _, rest = text.partition(":")
    ids = [v.strip() for v in rest.split(",")]
    if head != "cuda" or not all(v.isdigit() for v in ids) or len(set(ids)) != len(ids):
        raise ConfigError(f"unknown device {value!r}: use auto, cpu, cuda, cuda:N or cuda:N,M,... (DDP over those "
                          f"GPUs, each once)")
    for v in ids:
        parse_device(f"cuda:{v}")
    return "cuda:" + ",".join(str(int(v)) for v in ids)


def device_list(device: str) -> tuple[int, ...]:
    """The GPUs of --device cuda:I,J,... (empty for a single device)."""
    if "," not in device:
        return ()
    return tuple(int(v) for v in device.partition(":")[2].split(","))


def _existing_file(value):
    """A path that must name a file now, before any work (checked again, in full, when it is read)."""
    from pathlib import Path

    if not Path(value).is_file():
        raise ConfigError(f"--init-from {value}: no such file" if not Path(value).exists() else
                          f"--init-from {value} is not a file")
    return str(value)


@dataclass(frozen=True, kw_only=True)
class CommonSettings(ModelSettings):
    """What train and eval share: the model (see ModelSettings), where its images come from, how they are
    batched, and the hardware."""

    model: str = setting("vgg11", "A model name (vgg11 ... vgg19_bn, or a paper letter).", cli=False)
    # --- data
    data: str = setting("digits", "digits (offline), cifar10, stl10, synthetic, or folder:PATH.")
    data_dir: str = setting("data", "Folder holding cifar10/stl10 in torchvision's layout.")
    download: bool = setting(False, "Let torchvision download cifar10/stl10 (never by default, so that "
                                    "offline never hangs).")
    verify_md5: bool = setting(False, "Refuse cifar10/stl10 files whose md5 differs from the published archive's "
                                      "(by default such a file, converted or re-encoded, is read by its format "
                                      "with a note).")
    batch_size: int = setting(64, "Images per batch (per process under torchrun).", minimum=1)
    workers: int = setting(0, "DataLoader worker processes.", minimum=0, maximum=MAX_THREADS)
    # --- hardware
    device: str = setting("auto", "auto (cuda if there is one), cpu, cuda or cuda:N.", parse=device_or_auto_text)
    amp: bool = setting(False, "Mixed precision (fp16 + GradScaler on CUDA, bf16 on CPU): the older spelling of "
                                "--precision amp.")
    channels_last: bool = setting(False, "NHWC memory format: the older spelling of --memory-format channels_last.")


@dataclass(frozen=True, kw_only=True)
class EvalConfig(CommonSettings):
    """What to score: a model with its weights, on one split of a dataset."""

    split: str | None = setting(None, "[default: test where the dataset has one, else val].", choices=SPLITS)
    image_size: int | None = setting(None, "Input size; at least 32 for VGG's 5 max-pools [default: the "
                                           "checkpoint's, else 32].", minimum=1,
                                    maximum=MAX_IMAGE_SIZE)
    normalize: str | None = setting(None, "Mean/std: imagenet's, or computed on the training split (dataset) "
                                          "[default: the mean/std stored with the weights].",
                                    choices=_normalizations)
    val_fraction: float | None = setting(None, "Training images held out for validation where the dataset has "
                                               "no val split [default: the checkpoint's, else 0.1].",
                                         above=0, below=1)
    # --- the paper's test-time protocols (vggbench.training.protocols)
    protocol: tuple[str, ...] | None = setting(None, "Comma-separated: center, dense, multicrop, dense+multicrop; "
                                                     "one table row per protocol and scale [default: the single "
                                                     "centre crop of training, one row].", choices=PROTOCOLS)
    scales: tuple[int, ...] | None = setting(None, "Comma-separated test scales Q (the image's shorter side); "
                                                   "several add a multi-scale row [default: the eval transform's "
                                                   "resize, the image size for digits].", minimum=1,
                                             maximum=MAX_IMAGE_SIZE)
    flip: bool = setting(False, "Average in the soft-max of the mirrored image (of each view, in every protocol).")
    crops: str = setting("grid", "multicrop: grid (the paper's 5x5 crops per scale), five (torchvision's FiveCrop) "
                                 "or ten (TenCrop: five plus mirrored, whatever --flip says).", choices=CROPS)

    @property
    def uses_protocols(self) -> bool:
        """Whether the paper's protocol table is asked for (else the single-row evaluation of training)."""
        return self.protocol is not None or self.scales is not None or self.flip


@dataclass(frozen=True, kw_only=True)
class TrainConfig(CommonSettings):
    """Everything that decides a training run; saved in config.json and in every checkpoint."""

    batch_size: int | None = setting(None, "Images per batch (per process under torchrun) [default: 32, 64 with "
                                           "batch norm; 256 with --recipe paper].", minimum=1)
    # --- data
    image_size: int = setting(32, "Input size; at least 32 for VGG's 5 max-pools.", minimum=1, maximum=MAX_IMAGE_SIZE)
    augment: str | None = setting(None, "none; light (mild crops + flips, for small images); paper (scale "
                                        "jittering as in the paper + flips) [default: the dataset's: paper for "
                                        "folder:, none for synthetic, light otherwise].", choices=_augmentations)
    color_jitter: float = setting(0.0, "Brightness/contrast/saturation jitter strength; 0: off.", minimum=0)
    crop_scale: tuple[float, ...] | None = setting(None, "MIN,MAX area fractions of --augment's random crop "
                                                         "(RandomResizedCrop's scale; torchvision's default "
                                                         "0.08,1) [default: the preset's].", parse=_crop_scale)
    train_crops: str = setting("none", "five or ten: FiveCrop/TenCrop training views of the image resized to "
                                       "256/224 of the image size (post 004's Resize(256) + FiveCrop(224)), each "
                                       "a sample (the training set x5 or x10; they replace --augment's crop and "
                                       "flip).", choices=TRAIN_CROPS)
    normalize: str = setting("imagenet", "Mean/std: imagenet's, or computed on the training split (dataset); "
                                         "--mean/--std override it.", choices=_normalizations)
    mean: tuple[float, ...] | None = setting(None, "Per-channel mean, e.g. 0.5,0.5,0.5 (or one value for all "
                                                   "three) [default: from --normalize].", parse=_three)
    std: tuple[float, ...] | None = setting(None, "Per-channel std, e.g. 0.5,0.5,0.5 [default: from --normalize].",
                                            above=0, parse=_three)
    val_fraction: float = setting(0.1, "Training images held out for validation where the dataset has no val "
                                       "split.", above=0, below=1)
    # --- optimisation
    recipe: str = setting("default", "default: Glorot init (with the ReLU gain without batch norm), a 1-epoch lr "
                                     "warm-up, Adam, batch 32 (64 with batch norm), no dropout: trains every "
                                     "model from scratch; paper: the paper's recipe exactly (SGD lr 0.01, momentum "
                                     "0.9, weight decay 5e-4, batch 256, N(0, 0.01) init, dropout 0.5, no warm-up).",
                          choices=tuple(RECIPES))
    init_from: str | None = setting(None, "A checkpoint of net A (vgg11 or vgg11_bn): its first four conv layers and "
                                          "its three FC layers initialise this deeper net, as the paper did.",
                                    parse=_existing_file)
    warmup: int | None = setting(None, "Epochs over which the learning rate rises linearly from 0 [default: 1; "
                                       "0 with --recipe paper].", minimum=0)
    optimizer: str | None = setting(None, "sgd (the paper's) or adam [default: adam; sgd with --recipe paper].",
                                    choices=tuple(OPTIMIZERS))
    lr: float | None = setting(None, "Learning rate [default: 0.01 for sgd (the paper), 0.001 for adam].",
                               above=0)
    momentum: float = setting(0.9, "SGD momentum.", minimum=0)
    weight_decay: float | None = setting(None, "[default: 5e-4 for sgd (the paper), 0 for adam].", minimum=0)
    schedule: str = setting("plateau", "plateau: lr / 10 when val accuracy stalls (the paper); cosine; step; "
                                       "constant.", choices=SCHEDULES)
    monitor: str = setting("val_acc", "What the plateau schedule and best.pt follow: validation accuracy (the "
                                      "paper), validation loss, or the training loss (post 001's plateau).",
                           choices=MONITORS)
    patience: int = setting(2, "plateau: epochs without improvement before lr / 10.", minimum=1)
    step_size: int = setting(10, "step: epochs between lr / 10.", minimum=1)
    label_smoothing: float = setting(0.0, "Label smoothing of the cross-entropy.", minimum=0, below=1)
    epochs: int = setting(10, "Epochs in total, counting those before --resume.", minimum=1)
    # --- hardware
    device: str = setting("auto", "auto (cuda if there is one), cpu, cuda, cuda:N, or cuda:N,M,... (DDP over those "
                                  "GPUs, one process each).", parse=_train_device)
    nproc_per_node: int = setting(1, "Train with DDP in this many processes on this machine (started through "
                                     "torch.distributed.run's API; gloo on CPU, one GPU each on CUDA).", minimum=1,
                                  maximum=MAX_THREADS)
    cudnn_benchmark: bool = setting(False, "cudnn.benchmark for this run only (restored afterwards).")
    # --- run folder
    out: str | None = setting(None, "Run folder [default: runs/MODEL-DATA, numbered if taken].",
                              parse=writable_folder)
    save_every: int = setting(1, "Write last.pt every N epochs (and at the end, and on Ctrl-C).", minimum=1)
    keep_every: int = setting(0, "Also keep a snapshot epoch_N.pt every N epochs; 0: none.", minimum=0)
    chance_epochs: int = setting(5, "Warn (and record it in history.json) when validation accuracy has stayed at "
                                    "chance for this many epochs.", minimum=1)
    resume: str | None = setting(None, "A run's last.pt: continue it with its saved settings up to --epochs.")
    progress: bool = setting(True, "Progress bar and a line per epoch on stderr.")

    @property
    def init_value(self) -> str:
        if self.init is not None:
            return self.init
        from ..zoo.specs import get_spec

        return RECIPES[self.recipe]["init_bn" if get_spec(self.model).batch_norm else "init"]

    @property
    def dropout_value(self) -> float:
        """The classifier's dropout when the model starts from scratch (random or --init-from)."""
        if self.dropout is not None:
            return self.dropout
        from ..zoo.specs import get_spec

        return RECIPES[self.recipe]["dropout_bn" if get_spec(self.model).batch_norm else "dropout"]

    @property
    def warmup_value(self) -> int:
        return self.warmup if self.warmup is not None else RECIPES[self.recipe]["warmup"]

    @property
    def optimizer_value(self) -> str:
        return self.optimizer if self.optimizer is not None else RECIPES[self.recipe]["optimizer"]

    @property
    def batch_size_value(self) -> int:
        if self.batch_size is not None:
            return self.batch_size
        from ..zoo.specs import get_spec

        return RECIPES[self.recipe]["batch_size_bn" if get_spec(self.model).batch_norm else "batch_size"]

    @property
    def lr_value(self) -> float:
        return self.lr if self.lr is not None else OPTIMIZERS[self.optimizer_value]["lr"]

    @property
    def weight_decay_value(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        return OPTIMIZERS[self.optimizer_value]["weight_decay"]
