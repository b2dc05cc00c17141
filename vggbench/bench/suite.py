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
from typing import ClassVar, NamedTuple

from ..backends.settings import SettingsMap
from ..core.allocator import DEFAULT_POLICY, POLICIES
from ..core.device import Device, device_text, parse_device
from ..core.documents import loads_toml
from ..core.errors import ConfigError
from ..core.settings import MAX_THREADS, check_keys, coerce, from_mapping, setting
from ..zoo.settings import ModelSettings
from ..zoo.specs import MAX_IMAGE_SIZE

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PROJECT_SUITES = Path("benchmarks") / "suites"  # relative to the working directory
AXES = ("models", "backends", "precisions", "memory_formats", "batch_sizes")
# a [[matrix]] table narrows what each model runs: these lists, and any backend setting (a flat key such as
# compile_mode, or a `backend` table), each distinct value of which makes its own group
MATRIX_KEYS = (*AXES[1:], "backend")
ISOLATIONS = ("none", "process", "case")


def _batch_size_list(value) -> list[int]:
    """'1,8' or '1..256' (as typed), an int or a list of ints -> the list; every size at least 1."""
    if isinstance(value, str):
        value = [b for v in value.split(",") if v.strip() for b in _batch_sizes(v.strip())]
    elif isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, (list, tuple)) and any(isinstance(b, int) and b < 1 for b in value):
        raise ConfigError(f"batch sizes must be at least 1, got {list(value)}")
    return value


_MATRIX_TYPE = "matrix must be a list of tables ([[matrix]]) of lists"


def _matrix(value) -> tuple[dict, ...]:
    """[[matrix]] tables: each narrows some of the lists, checked as the top-level keys are, and may set backend
    settings for its own cases. (A table left empty by an override stands for the whole top-level product.)"""
    from ..backends.registry import backend_settings, flat_keys

    if not isinstance(value, (list, tuple)) or not all(isinstance(m, dict) for m in value):
        raise ConfigError(_MATRIX_TYPE)
    keys = flat_keys()
    tables = []
    for m in value:
        check_keys(m, (*MATRIX_KEYS, *keys), "a [[matrix]] table")
        flat = {k: v for k, v in m.items() if k in keys}
        backend_settings(m.get("backend"), flat, where="[[matrix]] backend")  # every value checked now
        tables.append({k: v if k in keys or k == "backend" else coerce(Suite, k, v) for k, v in m.items()})
    return tuple(tables)


def _backend_tables(value):
    """A suite's [backend.<name>] tables (or settings objects) -> SettingsMap."""
    from ..backends.registry import backend_settings
    from ..backends.settings import SettingsMap

    return value if isinstance(value, SettingsMap) else backend_settings(value, where="backend")


def _settings_of(backend: str, base, table: dict) -> object | None:
    """The settings a [[matrix]] table (or {} for the top level) gives `backend`'s cases: the suite's, changed by
    the table's keys that concern this backend; None for a backend without settings."""
    from ..backends.registry import backend_settings, flat_keys, get_backend

    owner, keys = _owner(backend), flat_keys()
    flat = {k: v for k, v in table.items() if keys.get(k, ("",))[0] == owner}
    tables = {n: t for n, t in (table.get("backend") or {}).items() if _owner(n) == owner}
    settings = backend_settings(tables, flat, base) if flat or tables else base
    if owner in settings:
        return settings[owner]
    cls = get_backend(backend).settings
    return cls() if cls is not None else None


class Group(NamedTuple):
    """Cases that share one runner."""

    model: str
    backend: str
    precision: str
    memory_format: str
    batch_sizes: tuple[int, ...]
    settings: object = None  # the backend's settings (vggbench.backends.settings.BackendSettings), None without


@dataclass(frozen=True, kw_only=True)
class Suite(ModelSettings):
    """A benchmark suite. The keys of a suite file are these fields; `vggbench run` has an option for each
    (model options and weights: see ModelSettings)."""

    _labels: ClassVar[str] = "key"  # messages name the suite file's keys

    name: str = setting("custom", cli=False)
    description: str = setting("", cli=False)
    # what to time: every combination of these lists is a case (see `matrix`)
    models: tuple[str, ...] = setting(("vgg16",), "Comma-separated model names, e.g. vgg11,vgg16.")
    backends: tuple[str, ...] = setting(("eager",), "Comma-separated: {backends}.")
    precisions: tuple[str, ...] = setting(("fp32",), "Comma-separated: {precisions}.",
                                          option="--precision")
    memory_formats: tuple[str, ...] = setting(("contiguous",), "Comma-separated: contiguous, channels_last.",
                                              option="--memory-format")
    batch_sizes: tuple[int, ...] = setting((1,), "Comma-separated, e.g. 1,8,32; A..B is every power of two "
                                                 "from A to B (after an out-of-memory batch, larger ones are not "
                                                 "tried).", parse=_batch_size_list, option="--batch-size",
                                           aliases=("--batch-sizes",),  # the older spelling
                                           # a batch too big to allocate is an "oom" row, not a refusal: only
                                           # what torch's int64 sizes cannot hold is refused here
                                           maximum=2**63 - 1)
    # sub-products, each overriding some of the five lists above
    matrix: tuple[dict, ...] = setting((), parse=_matrix, cli=False)
    device: str = setting("cpu", "cpu, cuda or cuda:N (onnxruntime follows it).", parse=device_text)
    image_size: int = setting(224, "Input size.", minimum=1, maximum=MAX_IMAGE_SIZE)
    dense: bool = setting(False, "Time the paper's dense form (FC layers as convolutions; the exports of `export "
                                 "--dense`) on --image-size inputs; it equals the model at --dense-size.")
    dense_size: int | None = setting(None, "--dense: the size where the dense form equals the model (its first FC "
                                           "became a kernel of that size's feature map) [default: the weights' "
                                           "training size, else 224].", minimum=1, maximum=MAX_IMAGE_SIZE)
    # threads and numeric flags; None leaves torch's setting as it is (it is recorded either way), except
    # tf32: on CUDA, None is off, so that fp32 is IEEE fp32 (see vggbench.core.numerics.tf32_flag)
    threads: int | None = setting(None, "torch intra-op threads for the run (restored afterwards), also given "
                                        "to onnxruntime [default: torch's current setting, recorded].", minimum=1,
                                  maximum=MAX_THREADS)
    tf32: bool | None = setting(None, "CUDA fp32 with TF32 matmuls and convolutions, in torch and onnxruntime; "
                                      "its parity is then judged with the tf32 tolerance [default: off (the "
                                      "suite's tf32 key may turn it on): fp32 is IEEE fp32].")
    cudnn_benchmark: bool | None = setting(None, "cudnn.benchmark for the run [default: as it is, recorded].")
    # timing: see vggbench.core.timing.Timing
    warmup: int = setting(1, "Warm-up calls after the first call, at least.", minimum=0)
    warmup_time_s: float = setting(1.0, "Warm-up seconds, at least.", minimum=0, option="--warmup-time")
    min_time_s: float = setting(3.0, "Seconds of timed calls per case (the budget).", minimum=0,
                                option="--min-time")
    min_iters: int = setting(5, "Timed calls per case, at least.", minimum=1)
    max_iters: int = setting(1000, "Timed calls per case, at most.", minimum=1)
    # 5 by measurement (benchmarks/README.md, "Interleaved rounds and process isolation"): with a busy neighbour for
    # 3 s of a 9 s run, onnxruntime's speed-up over eager moved by a mean 6-17% in one round, 8-17% in 3 and 2.5-7.7%
    # in 5 (at most 1.67x, 1.91x and 1.18x), while on a quiet machine the medians stayed within their run-to-run
    # spread and the run took no longer; a long call pays one untimed call per later round (sweep.REWARM_CALLS)
    rounds: int = setting(5, "Split each case's timed calls (and its budget) into N rounds, run in turn with the "
                             "model's other cases (A B C, A B C, ...), so that a busy neighbour slows every case "
                             "alike; warm-up in the first round (at most max_iters rounds; 1: each case in one go) "
                             "[default: 5].",
                          minimum=1)
    # rounds that go on until the interval is narrow: on a shared host one configuration moved by 25-40% from round
    # to round (2026-12-07, AVX2 EPYC, benchmarks/README.md "Eighth round"), so 5 rounds left every cross-check
    # ratio's interval wider than ±5%; an interval narrows as the square root of the rounds
    max_rounds: int | None = setting(None, "Let a case go on past --rounds, one more round at a time (and with "
                                           "--cross-check, one more run of its tool after each), up to N rounds "
                                           "in all, until its 95% interval reaches no more than --target-width "
                                           "from its value: its cross-check ratio's interval, else that of its "
                                           "images/s, each a bootstrap of whole rounds. It stops on the width "
                                           "alone, never on the value; each added round takes a round's share "
                                           "of the budget again [default: --rounds, no more].", minimum=1)
    target_width: float = setting(0.025, "--max-rounds: how far (relative, the larger side) a case's 95% interval "
                                         "may reach from its value before it stops adding rounds [default: "
                                         "0.025: a ratio near 1 is then sure to within ±5%].", above=0, below=1)
    allocator: str = setting(DEFAULT_POLICY, "steady, or default: glibc's malloc with fixed trim and mmap "
                                             "thresholds and no block mapped on its own, in this process and in "
                                             "every worker and cross-check tool it starts, so that torch's CPU "
                                             "rows measure the steady state "
                                             "whatever ran before them (vggbench.core.allocator); default leaves "
                                             "malloc as it is [default: steady].", choices=POLICIES)
    isolation: str = setting("none", "none; process: each group (a runner and its batch sizes) is built and "
                                     "timed in a fresh worker process; case: each case (a runner at one batch "
                                     "size) in its own, as a runtime's own tool times one model and one shape. A "
                                     "crash or a --worker-timeout becomes an error row and the run goes on.",
                             choices=ISOLATIONS)
    worker_timeout_s: float | None = setting(None, "--isolation process|case: a worker still running after this many "
                                                   "seconds is killed, its unfinished cases error rows [default: "
                                                   "no limit].", above=0, option="--worker-timeout")
    native_only: bool = setting(False, "Skip bf16 on a CPU without bf16 instructions (AVX512-BF16 or AMX), where "
                                       "it runs emulated, several times slower than fp32: a row says so "
                                       "(the best-cpu suite sets it).")
    cross_check: bool = setting(False, "Time each row that ran again with its runtime's own tool in a fresh process "
                                       "(benchmark_app, a bare onnxruntime session, torch.utils.benchmark, "
                                       "trtexec) with the row's settings; the row records the tool's images/s "
                                       "and the ratio.")
    # `--cluster` (vggbench.bench.fleet): every case runs once on each kind, on a node that advertises the kind as
    # a Ray custom resource; a run on this machine ignores it
    machines: tuple[str, ...] = setting((), "Comma-separated machine kinds for --cluster, e.g. cpu-avx2,cpu-avx512: "
                                            "every case runs on a node of each kind (a node advertises its kind as "
                                            "a Ray custom resource, `ray start --resources '{{\"cpu-avx2\": 1}}'`) "
                                            "[default: every node, as one kind].")
    # each backend's settings: a [backend.<name>] table in a suite file (the options --ort-optimization,
    # --compile-mode, ... on the command line; the flat keys ort_optimization, compile_mode, ... in a file too)
    backend: object = setting(SettingsMap(), "", parse=_backend_tables, cli=False)

    def override(self, **changes) -> Suite:
        """A copy with `changes` (None values ignored); a list or a backend setting given here replaces it in every
        matrix too. Backend settings come as flat keys (ort_optimization="basic", as options give them) or as
        backend={"onnxruntime": {...}}."""
        from ..backends.registry import backend_settings, flat_keys

        changes = {k: v for k, v in changes.items() if v is not None}
        keys = flat_keys()
        flat = {k: changes.pop(k) for k in list(changes) if k in keys}
        check_keys(changes, _FIELDS, f"suite {self.name}")
        tables = changes.pop("backend", None)
        if flat or tables:
            changes["backend"] = backend_settings(tables, flat, self.backend)
        # a backend field set here is dropped from the matrix tables, whichever spelling they used
        fields_set = {keys[k] for k in flat} | {(_owner(n), f) for n, t in (tables or {}).items()
                                                if isinstance(t, dict) for f in t}
        matrix = tuple(_without(m, changes, fields_set, keys) for m in self.matrix)
        return validate(replace(self, **changes, matrix=matrix))

    def groups(self) -> list[Group]:
        """(model, backend, precision, memory_format, batch sizes, backend settings), each combination once, in
        suite order: a runner is built once per group and times every batch size. The settings are the backend's
        settings object for those cases: the suite's, changed by the matrix table's keys that concern it."""
        found: dict[tuple, list[int]] = {}
        for model in self.models:
            for m in self.matrix or ({},):
                axes = {k: m.get(k, getattr(self, k)) for k in AXES[1:]}
                for backend, precision, memory_format in itertools.product(
                        axes["backends"], axes["precisions"], axes["memory_formats"]):
                    settings = _settings_of(backend, self.backend, m)
                    sizes = found.setdefault((model, backend, precision, memory_format, settings), [])
                    sizes += [b for b in axes["batch_sizes"] if b not in sizes]
        return [Group(*key[:4], tuple(sizes), key[4]) for key, sizes in found.items()]

    def case_count(self) -> int:
        return sum(len(g.batch_sizes) for g in self.groups())


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
            raise ConfigError(f"suite file {path} {'is not a regular file' if path.exists() else 'does not exist'}")
        return parse_suite(_read_text(path), path.stem, str(path))
    for folder in (_package_suites(), PROJECT_SUITES):
        entry = folder / f"{text}.toml"
        if entry.is_file():
            return parse_suite(_read_text(entry), text, str(entry))
    have = available_suites()
    close = difflib.get_close_matches(text, list(have), n=2)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown suite {text!r}{hint} (suites: {', '.join(have) or 'none'}; or give a .toml file)")


def _read_text(path) -> str:
    from ..core.documents import read_text

    try:
        return read_text(path)
    except UnicodeDecodeError as e:  # TOML is UTF-8 by definition
        raise ConfigError(f"suite file {path} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise ConfigError(f"suite file {path} cannot be read: {e.strerror or e}") from None


def parse_suite(text: str, name: str = "custom", where: str = "suite") -> Suite:
    from ..backends.registry import backend_settings, flat_keys

    try:
        data = loads_toml(text, where)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where} is not valid TOML: {e}") from None
    if isinstance(data.get("matrix"), list) and not all(data["matrix"]):
        raise ConfigError(_MATRIX_TYPE)  # an empty [[matrix]] table is a mistake in a file
    data.setdefault("name", name)
    # flat backend keys (ort_optimization = "basic"), as suites spelled them before [backend.<name>] tables
    flat = {k: data.pop(k) for k in list(data) if k in flat_keys()}
    if flat:
        data["backend"] = backend_settings(data.get("backend"), flat, where="backend")
    return validate(from_mapping(Suite, data, where))


def default_suite(device: Device | None) -> str:
    """The suite `vggbench run` uses without --suite: cpu, or cuda for a CUDA device."""
    return "cuda" if device is not None and device.is_cuda else "cpu"


def resolve_suite(suite: Suite | str | os.PathLike | None = None, **overrides) -> Suite:
    """A Suite from an object, a name or a path (None: the default for overrides' device), then overrides."""
    if not isinstance(suite, Suite):
        device = overrides.get("device")
        suite = load_suite(suite or default_suite(None if device is None else parse_device(device)))
    return suite.override(**overrides)


def _owner(backend: str) -> str:
    """The backend whose settings `backend` reads (ort-tensorrt: onnxruntime)."""
    from ..backends.registry import get_backend

    return get_backend(backend).settings_name


def _without(table: dict, changes: dict, fields_set: set, keys: dict) -> dict:
    """A matrix table without what an override set: its lists, and its keys of the backend fields set."""
    kept = {k: v for k, v in table.items() if k not in changes or k == "backend"}
    kept = {k: v for k, v in kept.items() if k not in keys or keys[k] not in fields_set}
    if isinstance(kept.get("backend"), dict):
        kept["backend"] = {n: {f: v for f, v in t.items() if (_owner(n), f) not in fields_set}
                           for n, t in kept["backend"].items()}
    return kept


# --- validation ----------------------------------------------------------------------------------------

_FIELDS = tuple(f.name for f in fields(Suite))


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


def _choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {key} {value!r}: choose from {', '.join(choices)}")


def validate(suite: Suite) -> Suite:
    """Check what the fields alone cannot (Suite checks types, ranges and choices itself): names against
    the registries, timing and model options as a whole, the image size per model. Names come back
    canonical."""
    from ..backends import MEMORY_FORMATS, PRECISIONS, resolve_backend
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
    Timing(suite.warmup, suite.warmup_time_s, suite.min_time_s, suite.min_iters, suite.max_iters)
    if suite.max_rounds is not None and suite.max_rounds < suite.rounds:
        raise ConfigError(f"max_rounds ({suite.max_rounds}) must be at least rounds ({suite.rounds}): the rounds "
                          f"a case may go on to, past the ones it always runs")
    ModelOptions(**suite.model_options())
    for model in models:
        check_image_size(get_spec(model), suite.image_size)
    return replace(suite, models=models, backends=backends, matrix=matrix)
