"""The model settings that train, eval, export, run and info share, declared once: which weights, and the
shape options of `ModelOptions` (None: the defaults of `load_model`, or those stored with the weights)."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.settings import MAX_SEED, Settings, setting
from .specs import HEADS, MAX_HIDDEN, MAX_NUM_CLASSES, MAX_WIDTH, check_init, given_options


@dataclass(frozen=True, kw_only=True)
class ShapeSettings(Settings):
    """Options that shape a model (not its weights)."""

    num_classes: int | None = setting(None, "Classifier outputs [default: 1000, or the weights file's].", minimum=1,
                                       maximum=MAX_NUM_CLASSES)
    width: float | None = setting(None, "Channel multiplier, e.g. 0.0625 for a tiny model [default: 1].",
                                   above=0, maximum=MAX_WIDTH)
    hidden: tuple[int, ...] | None = setting(None, "Classifier width: one value for both hidden layers, or one "
                                                    "value per hidden layer, e.g. 4096,1000 [default: 4096 x width "
                                                    "(imagenet head), 512 x width (compact)].", minimum=1,
                                             maximum=MAX_HIDDEN)
    dropout: float | None = setting(None, "Classifier dropout [default: 0.5; train from scratch: 0, 0.5 with "
                                              "--recipe paper].", minimum=0, below=1)
    head: str | None = setting(None, "imagenet (pool to 7x7, torchvision layout) or compact (1x1, for 32x32 "
                                     "inputs) [default: imagenet].", choices=tuple(HEADS))
    init: str | None = setting(None, "kaiming (torchvision), paper (N(0, 0.01)), glorot (Glorot & Bengio), "
                                     "glorot_relu (Glorot's with the ReLU gain), torch (PyTorch's layer defaults) "
                                     "or normal:STD (N(0, STD^2), e.g. normal:1e-4) [default: kaiming; train: "
                                     "glorot_relu, glorot with batch norm, paper with --recipe paper].",
                               parse=check_init)

    def model_options(self) -> dict:
        """The shape options set (not None), for `load_model(..., **options)`."""
        return given_options(self)


@dataclass(frozen=True, kw_only=True)
class WeightsSettings(Settings):
    """Which weights a model gets."""

    weights: str = setting("random", "random, imagenet (torchvision's published weights; imagenet:TAG for "
                                     "another tag), or a .pth/.pt/.safetensors file (or a training checkpoint).")
    seed: int = setting(0, "Seed for --weights random (and, in training, of the data order and augmentation).",
                        minimum=0, maximum=MAX_SEED)


def _config_path(value):
    from .custom import config_path  # reads the file and registers its model

    return config_path(value)


@dataclass(frozen=True, kw_only=True)
class ModelSettings(ShapeSettings, WeightsSettings):
    """A model's weights and shape: what `load_model` takes besides the model's name."""

    model_config: str | None = setting(None, "A TOML or JSON file naming a layer list of your own, e.g. name = "
                                             "\"myvgg\", layers = [64, \"M\", 128, \"M\"], batch_norm = false; "
                                             "the model is then used by that name.", option="--config",
                                       parse=_config_path)

    def load(self, name: str):
        """The LoadedModel `name` with these weights and shape options."""
        from .weights import load_model

        return load_model(name, self.weights, seed=self.seed, **self.model_options())
