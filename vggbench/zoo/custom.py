"""A named layer list of the user's (`--config FILE`, TOML or JSON), checked and registered as a model of the zoo:

    name = "myvgg"
    layers = [64, "M", 128, "M", 256, [256, 1], "M"]   # 3x3 convs, "M" max-pools, "LRN", [channels, 1] 1x1 convs
    batch_norm = false

No torch import here."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..core.documents import loads_json, loads_toml
from ..core.errors import ConfigError, UnknownModelError
from .specs import MAX_HIDDEN, MAX_IMAGE_SIZE, ModelSpec, custom_spec, get_spec, register_model

KEYS = ("name", "layers", "batch_norm")
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
MAX_LAYERS = 256
MAX_POOLS = MAX_IMAGE_SIZE.bit_length() - 1  # each halves the input: 2**12 = 4096 is the largest input


def parse_layers(layers, where: str) -> tuple:
    """The layer list as specs.CONFIGS holds one: ints (3x3 convs), "M", "LRN", (channels, 1) for 1x1 convs."""
    if not isinstance(layers, (list, tuple)) or not layers:
        raise ConfigError(f"{where}: layers must be a non-empty list such as [64, \"M\", 128, \"M\"], got {layers!r}")
    if len(layers) > MAX_LAYERS:
        raise ConfigError(f"{where}: {len(layers)} layers; at most {MAX_LAYERS}")
    parsed = []
    for i, token in enumerate(layers):
        if token in ("M", "LRN"):
            parsed.append(token)
            continue
        conv = tuple(token) if isinstance(token, (list, tuple)) else (token, 3)
        ok = (len(conv) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in conv)
              and 1 <= conv[0] <= MAX_HIDDEN and conv[1] in (1, 3))
        if not ok:
            raise ConfigError(f"{where}: layer {i + 1} is {token!r}; a layer is a conv's channels (1 to "
                              f"{MAX_HIDDEN:,}), \"M\" (max-pool), \"LRN\" or [channels, 1] (a 1x1 conv)")
        parsed.append(conv[0] if conv[1] == 3 else conv)
    if not any(t not in ("M", "LRN") for t in parsed):
        raise ConfigError(f"{where}: layers hold no convolution")
    if parsed.count("M") > MAX_POOLS:
        raise ConfigError(f"{where}: {parsed.count('M')} max-pools need inputs of at least "
                          f"2^{parsed.count('M')} pixels; at most {MAX_POOLS}")
    return tuple(parsed)


def register_custom(name, layers, batch_norm=False, where: str = "config") -> ModelSpec:
    """Check a named layer list and add it to the registry; the same definition again is the spec already there."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(f"{where}: name must be letters, digits, '_', '-' or '.' (starting with a letter), "
                          f"got {name!r}")
    if not isinstance(batch_norm, bool):
        raise ConfigError(f"{where}: batch_norm must be true or false, got {batch_norm!r}")
    spec = custom_spec(name.lower(), parse_layers(layers, where), batch_norm)
    try:
        existing = get_spec(spec.name)
    except UnknownModelError:
        return register_model(spec)
    if existing == spec:
        return existing
    what = "a custom model with other layers" if existing.custom else "a model of the zoo"
    raise ConfigError(f"{where}: name {name!r} is already {what}; choose another name")


def read_config(path: str | os.PathLike) -> ModelSpec:
    """Read a TOML or JSON model file, check it and register its model."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise ConfigError(f"model config {path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            data = loads_json(text, f"model config {path}")
        elif path.suffix.lower() == ".toml":
            data = loads_toml(text, f"model config {path}")
        else:
            raise ConfigError(f"model config {path}: expected a .toml or .json file")
    except (UnicodeDecodeError, OSError) as e:
        raise ConfigError(f"cannot read model config {path}: {e}") from None
    except (json.JSONDecodeError, ValueError) as e:  # tomllib.TOMLDecodeError is a ValueError
        raise ConfigError(f"model config {path} is not valid {path.suffix[1:].upper()}: {' '.join(str(e).split())}") \
            from None
    if not isinstance(data, dict):
        raise ConfigError(f"model config {path} must be a table with {', '.join(KEYS)}")
    from ..core.settings import check_keys

    check_keys(data, KEYS, where)
    missing = [k for k in ("name", "layers") if k not in data]
    if missing:
        raise ConfigError(f"model config {path} has no {' or '.join(missing)}")
    return register_custom(data["name"], data["layers"], data.get("batch_norm", False), where)


def config_path(value) -> str:
    """A setting's parse step: the file read and its model registered, so that the model name works from here on."""
    read_config(value)
    return str(value)
