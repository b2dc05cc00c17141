"""The paper's VGG configurations and the model registry, as plain data (no torch import)."""

from __future__ import annotations

import difflib
import fnmatch
import math
from collections.abc import Iterable
from dataclasses import dataclass, fields

from ..core.arguments import expect
from ..core.device import available_memory_bytes
from ..core.errors import ConfigError, UnknownModelError

# Table 1 of Simonyan & Zisserman (2015). An int is a 3x3 conv (stride 1, pad 1) with that many
# output channels, (c, 1) is config C's 1x1 conv, "M" a 2x2 max-pool, "LRN" local response norm.
CONFIGS: dict[str, tuple] = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "A-LRN": (64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "C": (64, 64, "M", 128, 128, "M", 256, 256, (256, 1), "M", 512, 512, (512, 1), "M",
          512, 512, (512, 1), "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "E": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"),
}

# Krizhevsky et al.'s LRN as the paper uses it in A-LRN: b = a / (k + alpha * sum of a^2 over `size` adjacent
# channels) ^ beta. torch's LocalResponseNorm and ONNX's LRN divide alpha by size, so they are given
# alpha * size (`lrn_arguments`).
LRN_PARAMS = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}
# The name checkpoints and manifests record the LRN under (files without it predate the exact form, when vggbench
# passed alpha straight to torch and normalised 5x too weakly).
LRN_FORM = "krizhevsky"


def lrn_arguments() -> dict:
    """LRN_PARAMS in torch's and ONNX's convention (alpha divided by size there)."""
    return {**LRN_PARAMS, "alpha": LRN_PARAMS["alpha"] * LRN_PARAMS["size"]}

HEADS = {
    # torchvision-compatible: AdaptiveAvgPool2d(7) -> 25088-4096-4096-N at full width
    "imagenet": {"pool": 7, "hidden": 4096},
    # for 32x32 inputs (CIFAR, digits), where the last feature map is 1x1
    "compact": {"pool": 1, "hidden": 512},
}
# kaiming: torchvision's; paper: N(0, 0.01) as the paper's random init; glorot: Glorot & Bengio's uniform init,
# which the paper names as what lets its deeper nets train without pre-training from net A; glorot_relu: the same
# with the ReLU gain sqrt(2) on the layers a ReLU follows (Glorot's plain init halves the signal's variance at each
# ReLU: after VGG19's 16 convs at width 1/16 it is ~2000x smaller, and the net often never leaves chance)
INITS = ("kaiming", "paper", "glorot", "glorot_relu", "torch")
NORMAL_INIT = "normal"  # normal:STD, N(0, STD^2) weights and zero biases (post 004's code uses normal:1e-4)


def check_init(value) -> str:
    """An init's canonical name: one of INITS, or normal:STD with 0 < STD <= 10 (written as float() reads it)."""
    text = str(value).strip().lower()
    if text in INITS:
        return text
    kind, _, std = text.partition(":")
    if kind == NORMAL_INIT:
        try:
            number = float(std)
        except ValueError:
            number = math.nan
        if 0 < number <= 10:
            return f"{NORMAL_INIT}:{number!r}"
    raise ConfigError(f"unknown init {value!r}: choose one of {', '.join(INITS)} or normal:STD (e.g. normal:1e-4)")

# Upper bounds of the shape options and the input size, so that a typo is one line instead of an allocation
# that fails (or swaps) minutes later:
# - width 4: VGG19 at 4x the paper's channels has ~2.3G parameters (9 GB of fp32 weights); wider is no VGG
#   of the paper and does not fit a single GPU's training memory anyway.
# - num_classes 1,000,000: beyond the largest classification label sets (ImageNet-21k has 21,841 classes);
#   at the imagenet head's 4096 hidden units the last layer alone is then 16 GB of fp32.
# - hidden 65,536: 16x the paper's 4096, where the imagenet head's first layer is 6.6G parameters at width 1.
# - image size 4096: the first conv layer's output alone is 4 GiB of fp32 for one image at that size
#   (64 x 4096 x 4096), the most that one image of a real VGG fits on a large GPU; the paper tests up to 512.
MAX_WIDTH = 4.0
MAX_NUM_CLASSES = 1_000_000
MAX_HIDDEN = 65_536
MAX_IMAGE_SIZE = 4096


@dataclass(frozen=True)
class ModelSpec:
    """One registered model: a paper config with or without batch norm."""

    name: str
    config: str  # a paper letter, or CUSTOM for a layer list of the user's (--config FILE)
    batch_norm: bool
    torchvision_name: str | None = None  # the torchvision builder with the same layers and weights
    custom_layers: tuple | None = None  # the layer list of a CUSTOM config

    @property
    def layers(self) -> tuple:
        return self.custom_layers if self.custom_layers is not None else CONFIGS[self.config]

    @property
    def custom(self) -> bool:
        return self.custom_layers is not None

    def record(self) -> dict:
        """What rebuilds a custom spec (`register_custom(**record)`): name, layers and batch_norm."""
        return {"name": self.name, "layers": [list(t) if isinstance(t, tuple) else t for t in self.layers],
                "batch_norm": self.batch_norm}

    @property
    def depth(self) -> int:
        """Weight layers, as the paper counts them: convs plus the three fully connected layers."""
        return sum(1 for t in self.layers if t not in ("M", "LRN")) + 3

    @property
    def lrn(self) -> bool:
        return "LRN" in self.layers

    @property
    def min_image_size(self) -> int:
        """The smallest input that leaves a 1x1 feature map after every max-pool."""
        return 2 ** self.layers.count("M")


@dataclass(frozen=True)
class ModelOptions:
    """How a spec is built. Defaults give the paper's ImageNet model."""

    num_classes: int = 1000
    width: float = 1.0  # channel multiplier; 1/16 gives tiny models for tests
    # classifier width: one int for both hidden layers (the paper's two), a tuple for one hidden layer per
    # value (e.g. (4096, 1000)); None: the head's default scaled by width
    hidden: int | tuple[int, ...] | None = None
    dropout: float = 0.5
    head: str = "imagenet"
    init: str = "kaiming"

    def __post_init__(self) -> None:
        if (not isinstance(self.num_classes, int) or isinstance(self.num_classes, bool)
                or not 1 <= self.num_classes <= MAX_NUM_CLASSES):
            raise ConfigError(f"num_classes must be an integer in [1, {MAX_NUM_CLASSES:,}], got {self.num_classes!r}")
        if (not isinstance(self.width, (int, float)) or not (0 < self.width <= MAX_WIDTH)
                or math.isnan(self.width)):
            raise ConfigError(f"width must be a channel multiplier in (0, {MAX_WIDTH:g}], got {self.width!r}")
        hidden = self.hidden
        if isinstance(hidden, (list, tuple)):  # as JSON and checkpoints hold it; one value is the int form
            hidden = tuple(hidden) if len(hidden) != 1 else hidden[0]
            object.__setattr__(self, "hidden", hidden)
        values = hidden if isinstance(hidden, tuple) else (hidden,)
        if hidden is not None and (not values or not all(
                isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_HIDDEN for v in values)):
            raise ConfigError(f"hidden must be an integer in [1, {MAX_HIDDEN:,}] or a list of them, got {self.hidden!r}")
        if not isinstance(self.dropout, (int, float)) or not (0 <= self.dropout < 1):
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.head not in HEADS:
            raise ConfigError(f"unknown head {self.head!r}: choose one of {', '.join(HEADS)}")
        if not isinstance(self.init, str):
            raise ConfigError(f"init must be a name such as kaiming, got {self.init!r}")
        object.__setattr__(self, "init", check_init(self.init))

    @property
    def hidden_features(self) -> tuple[int, ...]:
        """The width of each hidden layer of the classifier."""
        if isinstance(self.hidden, tuple):
            return self.hidden
        width = self.hidden if self.hidden is not None else scale(HEADS[self.head]["hidden"], self.width)
        return (width, width)

    def to_dict(self) -> dict:
        """Field -> value, a tuple of hidden widths as a list (for JSON)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}


OPTION_NAMES = tuple(f.name for f in fields(ModelOptions))  # num_classes, width, hidden, dropout, head, init


def given_options(source) -> dict:
    """The model options that `source` sets (a mapping, or a config object with these attributes): those
    present and not None, for `load_model(..., **options)` to fill in the rest."""
    get = source.get if isinstance(source, dict) else lambda name: getattr(source, name, None)
    return {name: value for name in OPTION_NAMES if (value := get(name)) is not None}


def scale(channels: int, width: float) -> int:
    """Channels after the width multiplier; never below one."""
    return max(1, int(round(channels * width)))


def parameter_count(spec: ModelSpec, options: ModelOptions | None = None) -> int:
    """The parameters (and BatchNorm buffers) `build(spec, options)` makes, counted without building it."""
    options = options or ModelOptions()
    count, channels = 0, 3
    for token in spec.layers:
        if token in ("M", "LRN"):
            continue
        out, kernel = token if isinstance(token, tuple) else (token, 3)
        out = scale(out, options.width)
        count += channels * out * kernel * kernel + out + (4 * out + 1 if spec.batch_norm else 0)
        channels = out
    fan_in = channels * HEADS[options.head]["pool"] ** 2
    for width in (*options.hidden_features, options.num_classes):
        count += fan_in * width + width
        fan_in = width
    return count


def activation_count(spec: ModelSpec, options: ModelOptions | None, image_size: int) -> int:
    """The values the feature layers output for one image (what a forward pass with gradients keeps)."""
    options = options or ModelOptions()
    count, side = 0, image_size
    for token in spec.layers:
        if token == "M":
            side //= 2
        elif token != "LRN":
            out = scale(token[0] if isinstance(token, tuple) else token, options.width)
            count += out * side * side * (2 if spec.batch_norm else 1)
    return count


def check_fits_memory(spec: ModelSpec, options: ModelOptions | None = None, image_size: int | None = None,
                      batch: int = 1) -> None:
    """A ConfigError, before any allocation, for a model that cannot fit in the memory this machine has available
    now: building or running it would be killed by the OOM killer or fail deep inside torch. The rule: fp32
    parameters (x 4 bytes) plus, where the image size is known, the feature maps of `batch` images (x 4 bytes)
    must not exceed psutil's available memory; gradients and optimizer state come on top, so passing is no promise."""
    params = parameter_count(spec, options) * 4
    maps = activation_count(spec, options, image_size) * batch * 4 if image_size else 0
    available = available_memory_bytes()
    if available is not None and params + maps > available:
        what = (f"{params // 4:,} parameters: {params / 1e9:.1f} GB of fp32 weights" if not maps else
                f"{params / 1e9:.1f} GB of fp32 weights and {maps / 1e9:.1f} GB of feature maps for {batch} "
                f"image(s) of {image_size}x{image_size}")
        raise ConfigError(f"{spec.name} has {what}, more than the {available / 1e9:.1f} GB of memory available "
                          f"here; use a smaller --width, --hidden, --num-classes{', --image-size, --batch-size' if maps else ''} "
                          f"or fewer/narrower layers")


def check_image_size(spec: ModelSpec, image_size: int) -> None:
    """Raise a ConfigError for an input the model cannot take."""
    if not isinstance(image_size, int) or image_size < spec.min_image_size:
        raise ConfigError(
            f"image size {image_size} is too small for {spec.name}: its {spec.layers.count('M')} max-pools "
            f"need at least {spec.min_image_size}x{spec.min_image_size}")
    if image_size > MAX_IMAGE_SIZE:
        raise ConfigError(f"image size {image_size} is too large: at most {MAX_IMAGE_SIZE} (one image's first "
                          f"feature map alone would not fit in memory)")


# --- registry -----------------------------------------------------------------------------------------

_REGISTRY: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}


def register_model(spec: ModelSpec, aliases: Iterable[str] = ()) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    for alias in aliases:
        if alias in _ALIASES or alias in _REGISTRY:
            raise ValueError(f"alias {alias!r} is already taken")
        _ALIASES[alias] = spec.name
    return spec


CUSTOM = "custom"


def custom_spec(name: str, layers: tuple, batch_norm: bool) -> ModelSpec:
    """The spec of a layer list of the user's (checked by zoo.custom)."""
    return ModelSpec(name, CUSTOM, batch_norm, None, tuple(layers))


# (name, paper config, torchvision builder, has a batch-norm variant)
_ZOO = (
    ("vgg11", "A", "vgg11", True),
    ("vgg11_lrn", "A-LRN", None, False),
    ("vgg13", "B", "vgg13", True),
    ("vgg16c", "C", None, True),
    ("vgg16", "D", "vgg16", True),
    ("vgg19", "E", "vgg19", True),
)

for _name, _config, _tv, _has_bn in _ZOO:
    _letter = _config.lower()
    register_model(ModelSpec(_name, _config, False, _tv), aliases={_letter, _letter.replace("-", "_")})
    if _has_bn:
        register_model(ModelSpec(f"{_name}_bn", _config, True, _tv and f"{_tv}_bn"),
                       aliases={f"{_letter}_bn", f"{_letter}-bn"})


def list_models(include: str | Iterable[str] | None = None, exclude: str | Iterable[str] | None = None) -> list[str]:
    """Registered names in paper order, filtered by fnmatch patterns."""
    for arg, value in (("include", include), ("exclude", exclude)):
        expect("list_models", arg, value, (str, list, tuple, set, frozenset, type(None)), "a pattern or a list of them")

    def patterns(p):
        return [p] if isinstance(p, str) else list(p or [])

    names = list(_REGISTRY)
    if include is not None:
        names = [n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns(include))]
    return [n for n in names if not any(fnmatch.fnmatch(n, p) for p in patterns(exclude))]


def get_spec(name: str) -> ModelSpec:
    """Look a model up by name or paper letter (case-insensitive); suggest close names when unknown."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key in _REGISTRY:
        return _REGISTRY[key]
    close = difflib.get_close_matches(key, [*_REGISTRY, *_ALIASES], n=3, cutoff=0.6)
    close = list(dict.fromkeys(_ALIASES.get(c, c) for c in close))
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownModelError(f"unknown model {name!r}{hint} (`vggbench models` lists them all)")
