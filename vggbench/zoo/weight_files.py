"""Reading weights files safely: .pth/.pt (weights-only unpickling) and .safetensors, with every failure one
line; the metadata and tensors checked; a VGG state_dict recognised by its shapes."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
from pathlib import Path

import torch

from ..core.documents import loads_json
from ..core.errors import ConfigError, WeightsError, one_line
from .models import build
from .specs import HEADS, ModelOptions, ModelSpec, get_spec, list_models, scale

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"
# Keys under which training scripts commonly nest the model's state_dict, in order of preference.
STATE_DICT_KEYS = ("model_state_dict", "state_dict", "model")
# Prefixes that wrappers add: DistributedDataParallel and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def check_weights_path(path: str | os.PathLike) -> Path:
    """The path, or a WeightsError when there is no weights file there (missing, or a folder)."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file {path} does not exist")
    if path.is_dir():
        raise WeightsError(f"weights path {path} is a folder; give a .pth, .pt or .safetensors file")
    return path


def read_weights_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """The state_dict in a .pth/.pt/.safetensors file and the vggbench metadata it carries (or {})."""
    path = check_weights_path(path)
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        state, meta = _read_safetensors(path)
    elif suffix in CHECKPOINT_SUFFIXES:
        state, meta = read_torch(path)
    else:
        raise WeightsError(f"cannot read weights from {path}: expected a "
                           f"{', '.join(CHECKPOINT_SUFFIXES)} or {SAFETENSORS_SUFFIX} file")
    _check_tensors(state, path)
    return _strip_prefixes(state), _check_meta(meta, path)


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
            raw = (f.metadata() or {}).get("vggbench")
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path} is not a readable safetensors file (corrupt or truncated?): {e}") from None
    try:
        meta = loads_json(raw, f"{path}'s vggbench metadata", WeightsError) if raw else {}
    except json.JSONDecodeError:
        raise WeightsError(f"{path} has unreadable vggbench metadata") from None
    return state, meta


def _check_meta(meta, path: Path) -> dict:
    """The vggbench metadata of a file, with every field that is used checked: one line per problem."""
    if not isinstance(meta, dict):
        raise WeightsError(f"{path} has unreadable vggbench metadata (a {type(meta).__name__}, not an object)")
    if not isinstance(meta.get("options", {}), dict):
        raise WeightsError(f"{path}: vggbench metadata 'options' must be an object, got {meta['options']!r}")
    for key in ("mean", "std"):
        value = meta.get(key)
        if value is None:
            continue
        ok = (isinstance(value, (list, tuple)) and len(value) == 3
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))
        if not ok or (key == "std" and min(value) <= 0):
            raise WeightsError(f"{path}: vggbench metadata {key!r} must be three finite numbers"
                               f"{' above 0' if key == 'std' else ''}, got {value!r}")
    size = meta.get("image_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 65536):
        raise WeightsError(f"{path}: vggbench metadata 'image_size' must be a positive integer, got {size!r}")
    return meta


def _check_tensors(state: dict, path: Path) -> None:
    """Weights are finite floating-point tensors (BatchNorm's step counter aside); name the first that is not."""
    for name, tensor in state.items():
        if name.endswith("num_batches_tracked"):
            continue
        if not tensor.is_floating_point():
            raise WeightsError(f"{path}: tensor {name} is {str(tensor.dtype).removeprefix('torch.')}, not floating "
                               f"point: not VGG weights")
        if not torch.isfinite(tensor).all():
            raise WeightsError(f"{path}: tensor {name} holds NaN or Inf")


def torch_load(path: str | os.PathLike):
    """torch.load with weights_only=True onto the CPU; unreadable or refused files raise a WeightsError.

    Any bytes may arrive here, and torch's unpickler raises whatever its parser meets (KeyError, IndexError,
    struct.error, ...): every failure becomes one line, and none of them advises weights_only=False."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = _refused_global(str(e))
        if refused:
            raise WeightsError(
                f"refused to load {path}: it asks to run or build {refused}, which a weights-only load does "
                f"not do (only tensors and plain Python values are loaded). Do not load this file with "
                f"pickle; if it is yours, re-save it with torch.save(model.state_dict(), path)") from None
        raise WeightsError(f"{path} is not a readable PyTorch file (corrupt or truncated?): "
                           f"{_unpickler_reason(str(e))}") from None
    except Exception as e:  # a parser fed arbitrary bytes: never a traceback
        raise WeightsError(f"{path} is not a readable PyTorch file (corrupt or truncated?): {one_line(e)}") from None


_REFUSED = (re.compile(r"unsupported GLOBAL ([\w.]+)"), re.compile(r"Unsupported global: GLOBAL ([\w.]+)"),
            re.compile(r"Trying to call reduce for callable ([\w.]+)"))


def _refused_global(message: str) -> str | None:
    """The global a weights-only load refused (e.g. posix.system), as torch's message names it."""
    for pattern in _REFUSED:
        match = pattern.search(message)
        if match:
            return match.group(1)
    return None


def read_torch(path: Path) -> tuple[dict, dict]:
    obj = torch_load(path)
    if not isinstance(obj, dict):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state_dict or checkpoint dict")
    meta = obj.get("vggbench", {})
    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, meta
    for key in STATE_DICT_KEYS:
        inner = obj.get(key)
        if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner, meta
    raise WeightsError(f"{path} is a checkpoint without a state_dict: looked for a dict of tensors at the top "
                       f"level or under {', '.join(repr(k) for k in STATE_DICT_KEYS)}; "
                       f"found keys {', '.join(map(repr, list(obj)[:8]))}")


def _unpickler_reason(message: str) -> str:
    """The one informative line of torch's long weights-only error, never its advice to load unsafely."""
    _, _, tail = message.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (tail or message).splitlines()
             if line.strip() and "weights_only" not in line and "Weights only load failed" not in line]
    return lines[0] if lines else "refused by the weights-only unpickler"


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def infer_options(state: dict[str, torch.Tensor]) -> dict | None:
    """num_classes, width, hidden and head read off a VGG state_dict's shapes (None if it is no VGG)."""
    convs = sorted((int(k.split(".")[1]), v) for k, v in state.items()
                   if re.fullmatch(r"features\.\d+\.weight", k) and v.ndim == 4)
    # the classifier's Linears: classifier.0, .3, ... (Linear, ReLU, Dropout per hidden layer), then the last
    fc = sorted((int(k.split(".")[1]), v) for k, v in state.items()
                if re.fullmatch(r"classifier\.\d+\.weight", k))
    if (not convs or len(fc) < 2 or any(w.ndim != 2 for _, w in fc)
            or [i for i, _ in fc] != list(range(0, 3 * len(fc), 3))):
        return None
    width = convs[0][1].shape[0] / 64
    last = convs[-1][1].shape[0]
    fc_in = fc[0][1].shape[1]
    hidden = tuple(int(w.shape[0]) for _, w in fc[:-1])
    heads = [h for h, cfg in HEADS.items() if fc_in == last * cfg["pool"] ** 2]
    if not heads:
        return None
    options = {"num_classes": int(fc[-1][1].shape[0]), "width": width, "head": heads[0]}
    if len(hidden) != 2 or hidden[0] != hidden[1]:
        options["hidden"] = hidden
    elif hidden[0] != scale(HEADS[heads[0]]["hidden"], width):
        options["hidden"] = hidden[0]
    return options


def shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in state.items()}


def expected_shapes(spec: ModelSpec, options: ModelOptions) -> dict[str, tuple]:
    with torch.device("meta"):
        return shapes(build(spec, options).state_dict())


def identify(state: dict[str, torch.Tensor], options: ModelOptions | None = None) -> list[str]:
    """The registered models whose state_dict a file fits exactly, with the given (or inferred) options."""
    if options is None:
        found = infer_options(state)
        if found is None:
            return []
        try:
            options = ModelOptions(**found)
        except ConfigError:
            return []
    have = shapes(state)
    return [n for n in list_models() if expected_shapes(get_spec(n), options) == have]


def describe_options(options: dict) -> str:
    """The options that shape a state_dict, as k=v pairs."""
    keep = ("num_classes", "width", "hidden", "head")
    def shown(value) -> str:
        if isinstance(value, float):
            return f"{value:g}"
        return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)

    return ", ".join(f"{k}={shown(options[k])}" for k in keep if options.get(k) is not None)
