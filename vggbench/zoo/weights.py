"""Where weights come from (`WeightsSource`: seeded random, torchvision ImageNet, a file), `load_model` that
gives a model its weights, and saving them with the metadata that rebuilds the model. Reading files safely is
weight_files.py, torchvision's weights imagenet.py, the weights' fingerprint fingerprint.py."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..core.arguments import expect, expect_path
from ..core.errors import ConfigError, UnknownModelError, WeightsError
from ..core.fileio import atomic_file, atomic_stream, sha256_file
from ..core.imagenet import IMAGENET_MEAN, IMAGENET_STD
from ..core.settings import MAX_SEED
from .fingerprint import state_sha256
from .imagenet import check_published_hash, download, hub_cache_path, imagenet_weights
from .models import build
from .specs import LRN_FORM, LRN_PARAMS, ModelOptions, ModelSpec, get_spec
from .weight_files import (
    CHECKPOINT_SUFFIXES,
    SAFETENSORS_SUFFIX,
    check_weights_path,
    describe_options,
    expected_shapes,
    identify,
    infer_options,
    read_torch,
    read_weights_file,
    shapes,
)


@dataclass(frozen=True)
class WeightsSource:
    """Where weights come from, parsed once from `random`, `imagenet[:TAG]` or a file path."""

    kind: str  # "random" | "imagenet" | "file"
    seed: int = 0  # random only
    tag: str | None = None  # imagenet only; None: torchvision's DEFAULT
    path: Path | None = None  # file only

    def __str__(self) -> str:
        if self.kind == "imagenet":
            return f"imagenet:{self.tag}" if self.tag else "imagenet"
        return str(self.path) if self.kind == "file" else "random"

    def require(self) -> WeightsSource:
        """Fail now, with the message a load would give, when a weights file is not there (before a run's work)."""
        if self.kind == "file":
            check_weights_path(self.path)
        return self

    @property
    def label(self) -> str:
        """How result rows name it: 'random (seed 0)', 'imagenet', or the path."""
        return f"random (seed {self.seed})" if self.kind == "random" else str(self)


def parse_weights(value: str | os.PathLike | WeightsSource, seed: int = 0) -> WeightsSource:
    """'random' (seeded with `seed`), 'imagenet', 'imagenet:TAG' or a path; a WeightsSource is kept as it is."""
    if isinstance(value, WeightsSource):
        return value
    text = str(value)
    if text == "random":
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError(f"seed must be an integer, got {seed!r}")
        return WeightsSource("random", seed=seed)
    if text == "imagenet" or text.startswith("imagenet:"):
        return WeightsSource("imagenet", tag=text.partition(":")[2] or None)
    if not text.strip():
        raise ConfigError("weights must be random, imagenet[:TAG] or a file path, got an empty string")
    return WeightsSource("file", path=Path(value))


@dataclass(frozen=True)
class WeightsInfo:
    """Where a model's weights came from and what input they expect."""

    source: str  # "random", "imagenet" or "file"
    seed: int | None = None
    path: str | None = None
    sha256: str | None = None
    tag: str | None = None  # torchvision weights enum member, e.g. IMAGENET1K_V1
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    image_size: int | None = None  # the size the weights were trained at, when known
    meta: dict = field(default_factory=dict)  # anything else the file said (dataset, classes, ...)

    def as_source(self) -> WeightsSource:
        """The source that loads these weights again."""
        if self.source == "imagenet":
            return WeightsSource("imagenet", tag=self.tag)
        if self.source == "file":
            return WeightsSource("file", path=Path(self.path))
        return WeightsSource("random", seed=self.seed or 0)

    def to_dict(self) -> dict:
        return {"source": self.source, "seed": self.seed, "path": self.path, "sha256": self.sha256,
                "tag": self.tag, "mean": list(self.mean), "std": list(self.std),
                "image_size": self.image_size, "meta": self.meta}


@dataclass
class LoadedModel:
    """A built module in eval mode with everything needed to describe it."""

    module: nn.Module
    spec: ModelSpec
    options: ModelOptions
    weights: WeightsInfo

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def fingerprint(self) -> str:
        """state_sha256 of the module, computed once while its tensors are unchanged."""
        return state_sha256(self.module)


def load_model(name: str | ModelSpec, weights: str | os.PathLike | WeightsSource = "random", *, seed: int = 0,
               num_classes: int | None = None, width: float | None = None,
               hidden: int | tuple[int, ...] | None = None,
               dropout: float | None = None, head: str | None = None, init: str | None = None) -> LoadedModel:
    """Build a model and give it weights.

    weights: a WeightsSource, or "random" (seeded with `seed`), "imagenet" or "imagenet:TAG" (torchvision's
    published weights), or a path to a .pth/.pt/.safetensors file. Options left as None come from the file
    when it says them, else from ModelOptions' defaults; options given explicitly must fit the file.
    """
    expect("load_model", "name", name, (str, ModelSpec), "a model name (str) or ModelSpec")
    expect("load_model", "weights", weights, (str, os.PathLike, WeightsSource),
           "random, imagenet[:TAG], a path or a WeightsSource")
    expect("load_model", "seed", seed, int, "an integer")
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"load_model: seed must be in [0, {MAX_SEED}], got {seed}")
    source = parse_weights(weights, seed)
    spec = _spec(name, source) if isinstance(name, str) else name
    requested = {k: v for k, v in dict(num_classes=num_classes, width=width, hidden=hidden, dropout=dropout,
                                       head=head, init=init).items() if v is not None}
    if source.kind == "random":
        options = ModelOptions(**requested)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(source.seed)
            module = build(spec, options)
        return LoadedModel(module.eval(), spec, options, WeightsInfo("random", seed=source.seed))
    if source.kind == "imagenet":
        return _load_imagenet(spec, source.tag, requested)
    return _load_file(spec, source.path, requested)


def _spec(name: str, source: WeightsSource) -> ModelSpec:
    """The spec by name; a custom model that is not registered yet is rebuilt from the layers its file records."""
    try:
        return get_spec(name)
    except UnknownModelError:
        if source.kind != "file" or not source.path.is_file():
            raise
        try:
            record = read_weights_file(source.path)[1].get("spec")
        except WeightsError:
            record = None  # not a file that could say: the unknown name is the error to report
        if not isinstance(record, dict) or str(record.get("name", "")).lower() != str(name).strip().lower():
            raise
        from .custom import register_custom

        return register_custom(**{k: record.get(k) for k in ("name", "layers", "batch_norm")},
                               where=str(source.path))


def _load_file(spec: ModelSpec, path: Path, requested: dict) -> LoadedModel:
    state, meta = read_weights_file(path)
    check_lrn_form(spec, meta, path)
    found = meta.get("options") or infer_options(state)
    if not found:
        raise WeightsError(f"{path} does not hold a VGG state_dict (no features.N.weight / classifier.0/6 "
                           f"keys of VGG shapes); first keys: {', '.join(list(state)[:5])}")
    found = {k: v for k, v in found.items() if k in ModelOptions.__dataclass_fields__}
    options = ModelOptions(**{**found, **requested})
    if expected_shapes(spec, options) != shapes(state):
        try:
            matches = identify(state, ModelOptions(**found))
        except ConfigError:
            matches = []
        raise WeightsError(_mismatch_message(path, spec, options, state, matches, found, requested))
    module = build(spec, options)
    module.load_state_dict(state, strict=True)
    info = WeightsInfo(
        "file", path=str(path), sha256=sha256_file(path),
        mean=tuple(meta.get("mean", IMAGENET_MEAN)), std=tuple(meta.get("std", IMAGENET_STD)),
        image_size=meta.get("image_size"),
        meta={k: v for k, v in meta.items() if k not in ("options", "mean", "std", "image_size")})
    return LoadedModel(module.eval(), spec, options, info)


def _mismatch_message(path, spec, options, state, matches, found, requested) -> str:
    conflicts = {k: v for k, v in requested.items() if k in found and found[k] != v}
    if matches and conflicts:
        wanted = ", ".join(f"{k}={v}" for k, v in conflicts.items())
        return (f"{path} holds a {matches[0]} state_dict with {describe_options(found)}; you asked for "
                f"{spec.name} with {wanted}")
    if matches:
        return f"{path} holds a {' / '.join(matches)} state_dict ({describe_options(found)}); you asked for {spec.name}"
    want, have = expected_shapes(spec, options), shapes(state)
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    wrong = [f"{k} {list(have[k])} vs {list(want[k])}" for k in want if k in have and want[k] != have[k]]
    parts = [f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}" if missing else "",
             f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}" if unexpected else "",
             f"shape (file vs model) {', '.join(wrong[:2])}{' ...' if len(wrong) > 2 else ''}" if wrong else ""]
    return f"{path} does not fit {spec.name} ({describe_options(options.to_dict())}): " + "; ".join(p for p in parts if p)


def _load_imagenet(spec: ModelSpec, tag: str | None, requested: dict) -> LoadedModel:
    weights = imagenet_weights(spec, tag)
    options = ModelOptions(num_classes=len(weights.meta.get("categories") or []) or 1000)
    clashes = {k: v for k, v in requested.items() if k not in ("dropout", "init") and getattr(options, k) != v}
    if clashes:
        raise ConfigError(f"ImageNet weights need the full-width model with the imagenet head and "
                          f"{options.num_classes} classes; drop {', '.join('--' + k.replace('_', '-') for k in clashes)}")
    options = ModelOptions(**{**options.to_dict(), **requested})
    path = hub_cache_path(weights.url)
    if not path.exists():
        download(weights.url, path, spec.name)
    digest = check_published_hash(path, path.name, weights.url)
    state, _ = read_torch(path)
    module = build(spec, options)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError:
        raise WeightsError(f"{path} does not hold {spec.torchvision_name} weights") from None
    transforms = weights.transforms()
    info = WeightsInfo("imagenet", path=str(path), sha256=digest, tag=weights.name,
                       mean=tuple(transforms.mean), std=tuple(transforms.std),
                       image_size=int(transforms.crop_size[0]),
                       meta={"url": weights.url, "acc@1": weights.meta.get("_metrics", {}).get(
                           "ImageNet-1K", {}).get("acc@1"), "dataset": "ImageNet-1K"})
    return LoadedModel(module.eval(), spec, options, info)


# --- saving -------------------------------------------------------------------------------------------

def checkpoint_meta(model: LoadedModel, **extra) -> dict:
    """The metadata vggbench stores beside a state_dict so the file can rebuild its own model."""
    custom = {"spec": model.spec.record()} if model.spec.custom else {}
    lrn = {"lrn": {**LRN_PARAMS, "form": LRN_FORM}} if model.spec.lrn else {}
    return {"format": 1, "model": model.name, "options": model.options.to_dict(), **custom,
            "mean": list(model.weights.mean), "std": list(model.weights.std),
            "image_size": model.weights.image_size, **lrn, **extra}


def check_lrn_form(spec: ModelSpec, meta: dict, path) -> None:
    """Refuse a vggbench file of an LRN model saved before the LRN was Krizhevsky's (no `lrn` record): its weights
    were trained with a normalisation 5x weaker than the model now computes, so they would score differently.
    Files without vggbench metadata are taken as they are."""
    if not spec.lrn or not meta or "format" not in meta:
        return
    lrn = meta.get("lrn")
    if not (isinstance(lrn, dict) and lrn.get("form") == LRN_FORM):
        raise WeightsError(f"{path} holds {spec.name} weights saved by a vggbench whose LRN divided alpha by the "
                           f"window size (5x weaker than Krizhevsky's, which {spec.name} now computes); they would "
                           f"score differently: train again")


def save_weights(model: LoadedModel, path: str | os.PathLike, **extra) -> Path:
    """Write the model's state_dict with its metadata to .safetensors or .pt/.pth, atomically."""
    expect("save_weights", "model", model, LoadedModel, "a LoadedModel (vggbench.load_model)")
    expect_path("save_weights", "path", path)
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.module.state_dict().items()}
    meta = checkpoint_meta(model, **extra)
    if path.suffix.lower() == SAFETENSORS_SUFFIX:
        from safetensors.torch import save_file

        with atomic_file(path) as tmp:
            save_file(state, str(tmp), metadata={"vggbench": json.dumps(meta)})
    elif path.suffix.lower() in CHECKPOINT_SUFFIXES:
        with atomic_stream(path) as f:  # a full disk is then a WriteError, not torch's "unexpected pos"
            torch.save({"vggbench": meta, "model_state_dict": state}, f)
    else:
        raise WeightsError(f"cannot save weights as {path.suffix or 'a file without suffix'}: use "
                           f"{SAFETENSORS_SUFFIX} or {', '.join(CHECKPOINT_SUFFIXES)}")
    return path
