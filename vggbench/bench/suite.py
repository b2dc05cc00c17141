"""Benchmark suites: what to time, as data. A TOML file (or keyword arguments) becomes a validated
`Suite`, which expands into groups of cases.

Every combination of the lists (models x backends x precisions x memory_formats x batch_sizes) is a
case. `[[matrix]]` tables narrow that: each gives its own lists (the others come from the top level)
and the suite is the union of their products, e.g. eager in both memory formats but onnxruntime,
which takes NCHW input only, in one. Options given on the command line replace a key everywhere.
"""

from __future__ import annotations

import difflib
import itertools
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from ..core.errors import ConfigError
from ..zoo.specs import given_options

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PROJECT_SUITES = Path("benchmarks") / "suites"  # relative to the working directory
AXES = ("models", "backends", "precisions", "memory_formats", "batch_sizes")
MATRIX_KEYS = AXES[1:]  # a [[matrix]] table narrows what each model runs
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
ORT_OPTIMIZATIONS = ("disable", "basic", "extended", "all")
CONV_ALGO_SEARCHES = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")


@dataclass(frozen=True)
class Suite:
    """A benchmark suite. The keys of a suite file are these fields."""

    name: str = "custom"
    description: str = ""
    # what to time: every combination of these lists is a case (see `matrix`)
    models: tuple[str, ...] = ("vgg16",)
    backends: tuple[str, ...] = ("eager",)
    precisions: tuple[str, ...] = ("fp32",)
    memory_formats: tuple[str, ...] = ("contiguous",)
    batch_sizes: tuple[int, ...] = (1,)
    matrix: tuple[dict, ...] = ()  # sub-products, each overriding some of the five lists above
    device: str = "cpu"
    image_size: int = 224
    # the model: weights and shape options (None: the defaults of vggbench.load_model)
    weights: str = "random"
    seed: int = 0
    num_classes: int | None = None
    width: float | None = None
    hidden: int | None = None
    dropout: float | None = None
    head: str | None = None
    init: str | None = None
    # threads and numeric flags; None leaves torch's setting as it is (it is recorded either way), except
    # tf32: on CUDA, None is off, so that fp32 is IEEE fp32 (see vggbench.numerics.tf32_flag)
    threads: int | None = None
    tf32: bool | None = None
    cudnn_benchmark: bool | None = None
    # timing: see vggbench.bench.Timing
    warmup: int = 1
    warmup_time_s: float = 1.0
    min_time_s: float = 3.0
    min_iters: int = 5
    max_iters: int = 1000
    # backend settings
    compile_mode: str | None = None
    compile_freezing: bool = False  # inductor freezing: weights become constants, folded and prepacked
    ort_optimization: str = "all"
    cudnn_conv_algo_search: str = "EXHAUSTIVE"

    def override(self, **changes) -> Suite:
        """A copy with `changes` (None values ignored); a list given here replaces it in every matrix too."""
        changes = {k: v for k, v in changes.items() if v is not None}
        _check_keys(changes, f"suite {self.name}")
        matrix = tuple({k: v for k, v in m.items() if k not in changes} for m in self.matrix)
        return validate(replace(self, **_normalise(changes), matrix=matrix))

    def model_options(self) -> dict:
        return given_options(self)

    def groups(self) -> list[tuple[str, str, str, str, tuple[int, ...]]]:
        """(model, backend, precision, memory_format, batch sizes), each combination once, in suite order:
        a runner is built once per group and times every batch size."""
        found: dict[tuple, list[int]] = {}
        for model in self.models:
            for m in self.matrix or ({},):
                axes = {k: m.get(k, getattr(self, k)) for k in MATRIX_KEYS}
                for backend, precision, memory_format in itertools.product(
                        axes["backends"], axes["precisions"], axes["memory_formats"]):
                    sizes = found.setdefault((model, backend, precision, memory_format), [])
                    sizes += [b for b in axes["batch_sizes"] if b not in sizes]
        return [(*key, tuple(sizes)) for key, sizes in found.items()]

    def case_count(self) -> int:
        return sum(len(g[-1]) for g in self.groups())

    def to_dict(self) -> dict:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}


# --- reading -------------------------------------------------------------------------------------------

def _package_suites():
    from importlib.resources import files

    return files("vggbench.bench") / "suites"


def available_suites() -> dict[str, str]:
    """name -> where it is: the suites inside the package, then those in ./benchmarks/suites/."""
    found = {}
    for folder in (_package_suites(), PROJECT_SUITES):
        if folder.is_dir():
            for entry in sorted(folder.iterdir(), key=lambda e: e.name):
                if entry.name.endswith(".toml"):
                    found.setdefault(entry.name.removesuffix(".toml"), str(entry))
    return found


def load_suite(name_or_path: str | os.PathLike) -> Suite:
    """A suite by name (package suites first, then ./benchmarks/suites/) or from a TOML file."""
    text = str(name_or_path)
    if text.endswith(".toml") or os.sep in text or "/" in text:
        path = Path(text)
        if not path.is_file():
            raise ConfigError(f"suite file {path} does not exist")
        return parse_suite(path.read_text(encoding="utf-8"), path.stem, str(path))
    for folder in (_package_suites(), PROJECT_SUITES):
        entry = folder / f"{text}.toml"
        if entry.is_file():
            return parse_suite(entry.read_text(encoding="utf-8"), text, str(entry))
    have = available_suites()
    close = difflib.get_close_matches(text, list(have), n=2)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown suite {text!r}{hint} (suites: {', '.join(have) or 'none'}; or give a .toml file)")


def parse_suite(text: str, name: str = "custom", where: str = "suite") -> Suite:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where} is not valid TOML: {e}") from None
    _check_keys(data, where)
    data.setdefault("name", name)
    return validate(Suite(**_normalise(data)))


def default_suite(device: str | None) -> str:
    """The suite `vggbench run` uses without --suite: cpu, or cuda for a CUDA device."""
    return "cuda" if device and str(device).startswith("cuda") else "cpu"


def resolve_suite(suite: Suite | str | os.PathLike | None = None, **overrides) -> Suite:
    """A Suite from an object, a name or a path (None: the default for overrides' device), then overrides."""
    if not isinstance(suite, Suite):
        suite = load_suite(suite or default_suite(overrides.get("device")))
    return suite.override(**overrides)


# --- validation ----------------------------------------------------------------------------------------

_FIELDS = {f.name for f in fields(Suite)}
_STRINGS = ("name", "description", "device", "weights", "head", "init", "compile_mode", "ort_optimization",
            "cudnn_conv_algo_search")
_INTS = ("image_size", "seed", "num_classes", "hidden", "threads", "warmup", "min_iters", "max_iters")
_FLOATS = ("width", "dropout", "warmup_time_s", "min_time_s")
_BOOLS = ("tf32", "cudnn_benchmark", "compile_freezing")


def _check_keys(data: dict, where: str, allowed=_FIELDS) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f"; did you mean {close[0]}?" if close else f" (keys: {', '.join(sorted(allowed))})"
            raise ConfigError(f"unknown key {key!r} in {where}{hint}")


def _batch_sizes(text: str) -> list[int]:
    """'8' -> [8]; 'A..B' -> A, 2A, 4A, ... up to B (a sweep up to what fits: sizes after an
    out-of-memory one are not tried)."""
    try:
        if ".." not in text:
            return [int(text)]
        low, high = (int(v) for v in text.split(".."))
    except ValueError:
        raise ConfigError(f"batch sizes must be ints or A..B (powers of two from A to B), got {text!r}") from None
    if not 1 <= low <= high:
        raise ConfigError(f"batch size range {text!r} needs 1 <= A <= B")
    sizes = [low]
    while sizes[-1] * 2 <= high:
        sizes.append(sizes[-1] * 2)
    return sizes


def _as_list(key: str, value) -> tuple:
    if isinstance(value, str):  # "vgg11,vgg16" or "1,8", as typed on a command line
        value = [v.strip() for v in value.split(",") if v.strip()]
        if key == "batch_sizes":
            value = [b for v in value for b in _batch_sizes(v)]
    elif isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{key} must be a non-empty list, got {value!r}")
    wanted = int if key == "batch_sizes" else str
    for v in value:
        if not isinstance(v, wanted) or isinstance(v, bool):
            raise ConfigError(f"{key} must be a list of {wanted.__name__}s, got {v!r}")
    return tuple(value)


def _normalise(data: dict) -> dict:
    """Types checked and lists as tuples (a suite is frozen)."""
    out = {}
    for key, value in data.items():
        if key in AXES:
            value = _as_list(key, value)
        elif key == "matrix":
            if not isinstance(value, (list, tuple)) or not all(isinstance(m, dict) and m for m in value):
                raise ConfigError("matrix must be a list of tables ([[matrix]]) of lists")
            for m in value:
                _check_keys(m, "a [[matrix]] table", MATRIX_KEYS)
            value = tuple({k: _as_list(k, v) for k, v in m.items()} for m in value)
        elif value is not None:
            _check_scalar(key, value)
            if key in _FLOATS:
                value = float(value)
        out[key] = value
    return out


def _check_scalar(key: str, value) -> None:
    if key in _BOOLS:
        ok = isinstance(value, bool)
    elif key in _INTS:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif key in _FLOATS:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        kind = "true/false" if key in _BOOLS else "an integer" if key in _INTS else "a number" \
            if key in _FLOATS else "a string"
        raise ConfigError(f"{key} must be {kind}, got {value!r}")


def _choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {key} {value!r}: choose from {', '.join(choices)}")


def validate(suite: Suite) -> Suite:
    """Check every value (names, numbers, model options, image size); names come back canonical."""
    from ..backends import MEMORY_FORMATS, PRECISIONS, resolve_backend
    from ..core.device import parse_device
    from ..core.timing import Timing
    from ..zoo.specs import ModelOptions, check_image_size, get_spec

    def canonical(values, fix):
        return tuple(dict.fromkeys(fix(v) for v in values))

    models = canonical(suite.models, lambda m: get_spec(m).name)
    backends = canonical(suite.backends, resolve_backend)
    matrix = tuple({k: canonical(v, resolve_backend) if k == "backends" else v for k, v in m.items()}
                   for m in suite.matrix)
    for m in (vars(suite), *matrix):
        for p in m.get("precisions", ()):
            _choice("precision", p, PRECISIONS)
        for f in m.get("memory_formats", ()):
            _choice("memory format", f, MEMORY_FORMATS)
        if any(b < 1 for b in m.get("batch_sizes", ())):
            raise ConfigError(f"batch sizes must be at least 1, got {list(m['batch_sizes'])}")
    device = str(parse_device(suite.device))
    if suite.threads is not None and suite.threads < 1:
        raise ConfigError(f"threads must be at least 1, got {suite.threads}")
    if suite.compile_mode is not None:
        _choice("compile mode", suite.compile_mode, COMPILE_MODES)
    _choice("ort_optimization", suite.ort_optimization, ORT_OPTIMIZATIONS)
    _choice("cudnn_conv_algo_search", suite.cudnn_conv_algo_search, CONV_ALGO_SEARCHES)
    Timing(suite.warmup, suite.warmup_time_s, suite.min_time_s, suite.min_iters, suite.max_iters)
    ModelOptions(**suite.model_options())
    for model in models:
        check_image_size(get_spec(model), suite.image_size)
    return replace(suite, models=models, backends=backends, matrix=matrix, device=device)
