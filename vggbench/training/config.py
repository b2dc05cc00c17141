"""What decides a training run (`TrainConfig`) and an evaluation (`EvalConfig`): settings declared once,
from which `vggbench train` and `vggbench eval` get their options. No torch import here."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.device import device_or_auto_text
from ..core.fileio import writable_folder
from ..core.settings import setting
from ..zoo.settings import ModelSettings
from ..zoo.specs import MAX_IMAGE_SIZE

OPTIMIZERS = {
    # the paper: mini-batch SGD with momentum 0.9, weight decay 5e-4, learning rate 1e-2
    "sgd": {"lr": 1e-2, "weight_decay": 5e-4},
    "adam": {"lr": 1e-3, "weight_decay": 0.0},
}
SCHEDULES = ("plateau", "cosine", "step", "constant")
SPLITS = ("train", "val", "test")
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
    batch_size: int = setting(64, "Images per batch (per process under torchrun).", minimum=1)
    workers: int = setting(0, "DataLoader worker processes.", minimum=0)
    # --- hardware
    device: str = setting("auto", "auto (cuda if there is one), cpu, cuda or cuda:N.", parse=device_or_auto_text)
    amp: bool = setting(False, "Mixed precision: fp16 + GradScaler on CUDA, bf16 on CPU.")
    channels_last: bool = setting(False, "NHWC memory format.")


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

    # --- data
    image_size: int = setting(32, "Input size; at least 32 for VGG's 5 max-pools.", minimum=1, maximum=MAX_IMAGE_SIZE)
    augment: str | None = setting(None, "none; light (mild crops + flips, for small images); paper (scale "
                                        "jittering as in the paper + flips) [default: the dataset's: paper for "
                                        "folder:, none for synthetic, light otherwise].", choices=_augmentations)
    color_jitter: float = setting(0.0, "Brightness/contrast/saturation jitter strength; 0: off.", minimum=0)
    normalize: str = setting("imagenet", "Mean/std: imagenet's, or computed on the training split (dataset).",
                             choices=_normalizations)
    val_fraction: float = setting(0.1, "Training images held out for validation where the dataset has no val "
                                       "split.", above=0, below=1)
    # --- optimisation
    optimizer: str = setting("sgd", "sgd (the paper's) or adam.", choices=tuple(OPTIMIZERS))
    lr: float | None = setting(None, "Learning rate [default: 0.01 for sgd (the paper), 0.001 for adam].",
                               above=0)
    momentum: float = setting(0.9, "SGD momentum.", minimum=0)
    weight_decay: float | None = setting(None, "[default: 5e-4 for sgd (the paper), 0 for adam].", minimum=0)
    schedule: str = setting("plateau", "plateau: lr / 10 when val accuracy stalls (the paper); cosine; step; "
                                       "constant.", choices=SCHEDULES)
    patience: int = setting(2, "plateau: epochs without improvement before lr / 10.", minimum=1)
    step_size: int = setting(10, "step: epochs between lr / 10.", minimum=1)
    label_smoothing: float = setting(0.0, "Label smoothing of the cross-entropy.", minimum=0, below=1)
    epochs: int = setting(10, "Epochs in total, counting those before --resume.", minimum=1)
    # --- hardware
    cudnn_benchmark: bool = setting(False, "cudnn.benchmark for this run only (restored afterwards).")
    # --- run folder
    out: str | None = setting(None, "Run folder [default: runs/MODEL-DATA, numbered if taken].",
                              parse=writable_folder)
    save_every: int = setting(1, "Write last.pt every N epochs (and at the end, and on Ctrl-C).", minimum=1)
    resume: str | None = setting(None, "A run's last.pt: continue it with its saved settings up to --epochs.")
    progress: bool = setting(True, "Progress bar and a line per epoch on stderr.")

    @property
    def lr_value(self) -> float:
        return self.lr if self.lr is not None else OPTIMIZERS[self.optimizer]["lr"]

    @property
    def weight_decay_value(self) -> float:
        return self.weight_decay if self.weight_decay is not None else OPTIMIZERS[self.optimizer]["weight_decay"]
