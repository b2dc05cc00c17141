"""The backend registry: each backend module registers one `Backend` (its capabilities and its factory).

Adding a backend is one new module that calls `register(...)` and one line in `BUILTIN` below; nothing else
names backends.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from ..core.errors import ConfigError, UnsupportedError
from .settings import SettingsMap

# the modules that register the backends vggbench ships, imported on first use of the registry
BUILTIN = ("eager", "compile", "torchscript", "pt2", "winograd.runner", "onnxruntime", "tensorrt", "openvino")


@dataclass(frozen=True)
class Knob:
    """A setting of a backend that a tuner may turn (`vggbench tune`): a field of its settings class, the values to
    try (None: the field's declared choices; (False, True) for a flag), the devices and the precisions where it
    means anything (None: all of the backend's). The run's own knobs (threads, memory format) every backend has;
    see vggbench.bench.tune."""

    field: str
    choices: tuple | None = None
    devices: tuple[str, ...] | None = None
    precisions: tuple[str, ...] | None = None

    def values(self, settings: type) -> tuple:
        """The values to try, checked against the settings class (a knob of a field it lacks is a bug)."""
        from ..core.settings import declared_values

        try:
            declared = declared_values(settings, self.field)
        except KeyError:
            raise ValueError(f"{settings.__name__} has no setting {self.field!r} to tune") from None
        values = self.choices if self.choices is not None else declared
        if values is None:
            raise ValueError(f"knob {self.field} of {settings.__name__} needs its values (the setting declares none)")
        return tuple(values)


@dataclass(frozen=True)
class Backend:
    """What a backend can do, checked once per target before anything is built, and how to build its runner.

    factory: module backends are called as factory(module, target, options); artifact backends as
    factory(path, target, options, artifact_precision), with `path` the artifact's main file, already checked
    against the manifest's sha256.
    """

    name: str
    artifact: str | None  # the export format it loads, or None for backends that run the module itself
    devices: tuple[str, ...]
    precisions: tuple[str, ...]
    memory_formats: tuple[str, ...]
    factory: Callable
    aliases: tuple[str, ...] = ()
    # its settings: a vggbench.core.settings.Settings dataclass. Its fields are the backend's command-line
    # options (--<option_prefix>-<field>), its suite table ([backend.<name>]), the settings its result rows
    # record and what is validated; None for a backend without settings. Several backends may share one class
    # (ort-tensorrt runs onnxruntime's settings): `settings_of` names the backend whose table they are read from
    settings: type | None = None
    option_prefix: str = ""  # the command-line options' prefix: "ort" makes --ort-optimization
    settings_of: str | None = None
    # builds every precision itself from the fp32 artifact (TensorRT: fp16, int8 calibrated on images passed
    # in RunnerOptions, fp8), so int8 and fp16 load the fp32 export rather than onnx-int8 or an fp16 export;
    # it then needs calibration images for int8 and fp8
    builds_precisions: bool = False
    # computes fewer multiplications than a direct convolution (Winograd): its GFLOP/s, counted with the direct
    # convolution's FLOPs, is an effective rate that may pass the hardware's theoretical peak
    fewer_flops: bool = False
    # its runner may be called from several threads at once (one session or module, no per-call state): LoadGen's
    # SUT with --workers > 1 runs only these
    thread_safe: bool = False
    # warm-up calls a case takes at least, whatever the suite says (torch.compile's CUDA graphs record on the
    # 2nd-3rd call)
    min_warmup: int = 0
    # its artifact runs without vggbench (a plain runtime loads the file as exported); False for backends that
    # run vggbench's own code (winograd) or the Python module itself (eager, compile)
    deployable: bool = True
    # called after each of its runners is dropped (torch.compile: torch._dynamo.reset(), so that later runners
    # do not hit the recompile limit)
    close: Callable[[], None] | None = None
    # what a run's environment record says of it, {key: value} (winograd: how its C++ kernels are built); it
    # builds and runs nothing
    environment: Callable[[], dict] | None = None
    # the runtime's own per-op timings (`vggbench run --profile`): profiler(runner, batch, calls) runs `calls`
    # calls of one of its runners (warmed up) under its profiler and returns a
    # vggbench.backends.profiling.OpProfile; None for a backend without one (its cases are skipped)
    profiler: Callable | None = None
    # the optional package (an extra of the install, vggbench.core.extras) its runner imports: a run that names
    # the backend checks it first; None for the backends of the default install
    package: str | None = None
    # what `vggbench tune` may turn: knobs over fields of `settings` (see Knob)
    knobs: tuple[Knob, ...] = ()
    # `vggbench deploy`: the package whose runtime loads the artifact alone (what the deploy folder's run.py imports
    # and its requirements.txt names), the precisions run.py reproduces, and deploy_config(settings, row) -> the
    # runtime's configuration as JSON (settings: the row's settings object, None without; row: the result row)
    runtime: str | None = None
    deploy_precisions: tuple[str, ...] = ()
    deploy_config: Callable[[object, dict], dict] | None = None

    def knob_space(self, device_kind: str, precision: str | None = None) -> dict[str, tuple]:
        """field -> the values to try, for the knobs that mean something on this kind of device (cpu, cuda) and,
        given one, at this precision."""
        if self.settings is None:
            return {}
        return {k.field: k.values(self.settings) for k in self.knobs
                if (k.devices is None or device_kind in k.devices)
                and (precision is None or k.precisions is None or precision in k.precisions)}

    @property
    def calibrates(self) -> bool:
        """It calibrates int8 and fp8 itself, on images passed in RunnerOptions (TensorRT)."""
        return self.builds_precisions and any(p in self.precisions for p in ("int8", "fp8"))

    @property
    def settings_name(self) -> str:
        """The backend whose settings table (and options) this backend reads."""
        return self.settings_of or self.name


_BACKENDS: dict[str, Backend] = {}
_ALIASES: dict[str, str] = {}
_loaded = False


def register(backend: Backend) -> Backend:
    """Add a backend; a name or alias that is taken raises (two modules claiming one name is a bug)."""
    for name in (backend.name, *backend.aliases):
        if name in _BACKENDS or name in _ALIASES:
            raise ValueError(f"backend name {name!r} is already registered")
    _BACKENDS[backend.name] = backend
    _ALIASES.update(dict.fromkeys(backend.aliases, backend.name))
    return backend


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN:
            importlib.import_module(f"{__package__}.{module}")


def _order(backend: Backend) -> int:
    """Built-in backends in BUILTIN's order (whichever module was imported first), then the others."""
    module = backend.factory.__module__.removeprefix(f"{__package__}.")
    return BUILTIN.index(module) if module in BUILTIN else len(BUILTIN)


def backend_names() -> list[str]:
    _load()
    return sorted(_BACKENDS, key=lambda name: _order(_BACKENDS[name]))


def get_backend(name: str) -> Backend:
    """A backend by name or alias (case-insensitive: onnx, ort, ts, trt, export, ...)."""
    _load()
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key in _BACKENDS:
        return _BACKENDS[key]
    close = difflib.get_close_matches(key, [*_BACKENDS, *_ALIASES], n=1)
    hint = f"; did you mean {_ALIASES.get(close[0], close[0])}?" if close else ""
    raise UnsupportedError(f"unknown backend {name!r}{hint} (choose from {', '.join(backend_names())})")


def require_packages(names) -> None:
    """Raise MissingExtra (one line that names the extra to install) for the first backend of `names` whose
    optional package is not installed: for backends named on the command line, which should stop the run before
    it starts rather than become rows that say why (those of a suite do)."""
    from ..core.extras import require

    for name in names:
        backend = get_backend(name)
        if backend.package is not None:
            require(backend.package, f"the {backend.name} backend")


def resolve_backend(name: str) -> str:
    """The canonical name of a backend given by name or alias."""
    return get_backend(name).name


def artifact_backends(fmt: str) -> list[str]:
    """The backends that run an export format, in registry order."""
    return [name for name in backend_names() if _BACKENDS[name].artifact == fmt]


# --- the backends' settings: options, suite tables and result fields all come from these ----------------------

@dataclass(frozen=True)
class SettingsTable:
    """One backend's settings as the CLI and suites see them: `[backend.<backend>]` in a suite, options
    --<prefix>-<field> (or the field's own option name) on the command line."""

    backend: str  # the backend that owns them (ort-tensorrt reads onnxruntime's)
    cls: type
    prefix: str

    def keys(self) -> dict[str, str]:
        """Flat key -> field: `<prefix>_<field>` (what the command-line option sets, and what suites before the
        [backend.*] tables spelled), and the option's own name where a field has one (--cudnn-conv-algo-search)."""
        from ..core.settings import option_names

        keys = {}
        for name in self.cls.user_fields():
            keys[f"{self.prefix}_{name}" if self.prefix else name] = name
            own = option_names(self.cls, name)
            if own is not None:
                keys[own.split("/")[0].removeprefix("--").replace("-", "_")] = name
        return keys


def settings_tables() -> dict[str, SettingsTable]:
    """backend -> its settings table, for the backends that own settings, in registry order."""
    _load()
    return {name: SettingsTable(name, b.settings, b.option_prefix or name.replace("-", "_"))
            for name in backend_names() if (b := _BACKENDS[name]).settings is not None and b.settings_of is None}


def settings_owner(cls: type) -> str:
    """The backend that owns a settings class."""
    for name, table in settings_tables().items():
        if table.cls is cls:
            return name
    raise ValueError(f"no backend owns {cls.__name__}")


def environment() -> dict:
    """What the backends add to a run's environment record (see Backend.environment)."""
    found = {}
    for name in backend_names():
        if _BACKENDS[name].environment is not None:
            found.update(_BACKENDS[name].environment())
    return found


def flat_keys() -> dict[str, tuple[str, str]]:
    """Flat key (ort_optimization, compile_mode, ...) -> (backend, field), for every backend's settings."""
    return {key: (table.backend, field) for table in settings_tables().values() for key, field in table.keys().items()}


def backend_settings(tables: Mapping | None = None, flat: Mapping | None = None, base: Mapping | None = None,
                     where: str = "backend") -> SettingsMap:
    """Each backend's settings: those of `base`, changed by `tables` ({backend: {field: value}} as a suite's
    [backend.<name>] tables hold them, or {backend: settings object}), then by `flat` keys (ort_optimization=...,
    as options give them). Every value is checked; a ConfigError names the table or key."""
    from ..core.settings import check_keys

    owned = settings_tables()
    result, changes = dict(base or {}), {}
    for name, table in (tables or {}).items():
        try:
            owner = get_backend(name).settings_name
        except UnsupportedError as e:
            raise ConfigError(f"{where}: {e}") from None
        if owner not in owned:
            raise ConfigError(f"{where}: backend {owner} has no settings (backends with settings: "
                              f"{', '.join(owned)})")
        if isinstance(table, owned[owner].cls):
            result[owner] = table
            continue
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}.{name} must be a table of settings, got {type(table).__name__}")
        check_keys(table, owned[owner].cls.user_fields(), f"{where}.{name}")
        changes.setdefault(owner, {}).update(table)
    keys = flat_keys()
    for key, value in (flat or {}).items():
        if key not in keys:
            raise ConfigError(f"unknown backend setting {key!r} (known: {', '.join(keys)})")
        owner, field = keys[key]
        changes.setdefault(owner, {})[field] = value
    for owner, fields in changes.items():
        current = result.get(owner)
        try:
            result[owner] = replace(current, **fields) if current is not None else owned[owner].cls(**fields)
        except ConfigError as e:
            raise ConfigError(f"{owner}: {e}") from None
    return SettingsMap(result)
