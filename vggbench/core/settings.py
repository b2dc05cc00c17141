"""Settings declared once. A setting is one dataclass field made with `setting(default, help, ...)`; from
those fields come the command-line options (`cli_options`), the reading of a mapping such as a suite
TOML file or a settings JSON (`from_mapping`), and the checks every instance gets in `__post_init__`
(`Settings`): types (an int is not a bool, numbers are finite), choices and ranges, each failure one
ConfigError line that names the setting.

    @dataclass(frozen=True, kw_only=True)
    class Config(Settings):
        epochs: int = setting(10, "Epochs in total.", minimum=1)
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

from .errors import ConfigError

_KEY = "vggbench.setting"
_MISSING = dataclasses.MISSING

# Bounds every command shares. An int setting without a maximum of its own stops at MAX_INT: ints end up in C
# (thread counts, batch sizes, opsets, LoadGen's counts), where a larger one is an OverflowError deep inside.
MAX_INT = 2**31 - 1
# A float setting without a maximum stops at MAX_FLOAT: durations, rates and latency bounds are multiplied into
# int64 nanoseconds/milliseconds for LoadGen and the timers, which 1e300 overflows (1e12 s is 31,700 years).
MAX_FLOAT = 1e12
# numpy seeds its legacy generator (which the training loop and the data loaders use) with 32-bit seeds only
MAX_SEED = 2**32 - 1
# threads, streams and worker processes: more than this only thrashes, and a mistyped 99999999999 would try
# to start them all
MAX_THREADS = max(1024, 4 * (os.cpu_count() or 1))


@dataclasses.dataclass(frozen=True)
class Setting:
    """What a field's metadata holds besides its type and default."""

    help: str = ""
    choices: Sequence | Callable[[], Sequence] | None = None  # a callable is asked when a value is checked
    minimum: float | None = None  # inclusive bounds ...
    maximum: float | None = None
    above: float | None = None  # ... and exclusive ones
    below: float | None = None
    parse: Callable[[Any], Any] | None = None  # applied first: raw value -> value of the field's type
    option: str | None = None  # the option's name(s), e.g. "--min-time"; default: --field-name
    cli: bool = True  # False: never an option (positional arguments, file-only keys)
    aliases: tuple[str, ...] = ()  # other names of the same option (an older spelling kept working)


def setting(default: Any = _MISSING, help: str = "", *, choices: Sequence | Callable[[], Sequence] | None = None,
            minimum: float | None = None, maximum: float | None = None, above: float | None = None,
            below: float | None = None, parse: Callable[[Any], Any] | None = None, option: str | None = None,
            cli: bool = True, aliases: Sequence[str] = ()) -> Any:
    """A dataclass field that is a setting: its default, help text and checks.

    choices: allowed values (of each element, for a tuple); a callable for ones known only later.
    minimum/maximum: inclusive bounds; above/below: exclusive ones (numbers, or each element of a tuple).
    parse: turns a raw value (as typed, or as read from a file) into the field's type; may raise ConfigError.
    option: the command-line name(s) when not --field-name, e.g. "--dynamic-batch/--static-batch".
    aliases: more names of the option, e.g. an older spelling ("--format" of "--formats").
    """
    meta = Setting(help, choices, minimum, maximum, above, below, parse, option, cli, tuple(aliases))
    return dataclasses.field(default=default, metadata={_KEY: meta})


@dataclasses.dataclass(frozen=True)
class _Kind:
    base: type | None  # bool, int, float, str, tuple, another class, or None (anything)
    element: type | None = None  # of a tuple
    optional: bool = False


def _kind(hint) -> _Kind:
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0] if len(args) == 1 else Any
    if typing.get_origin(hint) is tuple:
        element = typing.get_args(hint)[0] if typing.get_args(hint) else None
        return _Kind(tuple, typing.get_origin(element) or element, optional)
    origin = typing.get_origin(hint) or hint
    return _Kind(origin if isinstance(origin, type) else None, None, optional)


@functools.cache
def _fields(cls: type) -> tuple[tuple[dataclasses.Field, Setting, _Kind], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f, f.metadata[_KEY], _kind(hints[f.name])) for f in dataclasses.fields(cls) if _KEY in f.metadata)


def _option_names(f: dataclasses.Field, s: Setting, prefix: str = "") -> str:
    return s.option or "--" + (f"{prefix}_{f.name}" if prefix else f.name).replace("_", "-")


def option_names(cls: type, name: str) -> str | None:
    """The option name a setting of `cls` declares itself (e.g. "--min-time"), or None when it has none."""
    for f, s, _ in _fields(cls):
        if f.name == name:
            return s.option
    raise KeyError(name)


def declared_values(cls: type, name: str) -> tuple | None:
    """The values setting `name` of `cls` declares: its choices, (False, True) for a flag; None when it declares
    none (a number in a range). KeyError for a name that is no setting."""
    for f, s, kind in _fields(cls):
        if f.name == name:
            if s.choices is not None and not callable(s.choices):
                return tuple(s.choices)
            return (False, True) if kind.base is bool else None
    raise KeyError(name)


class Settings:
    """Base of settings dataclasses: `__post_init__` checks every field and stores its canonical value."""

    # how messages name a setting: "option" (--batch-size, for command-line configs) or "key" (batch_size,
    # for configs that are mostly read from files, such as suites)
    _labels: ClassVar[str] = "option"

    def __post_init__(self) -> None:
        check(self)

    @classmethod
    def setting_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f, _, _ in _fields(cls))

    def to_dict(self) -> dict:
        """Field -> value, tuples as lists and values with a to_dict() as what it gives (for JSON)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value


def _label(cls: type, f: dataclasses.Field, s: Setting) -> str:
    if getattr(cls, "_labels", "option") == "key":
        return f.name
    return _option_names(f, s).split("/")[0]


def check(obj) -> None:
    """Check every setting of a (frozen) dataclass instance and store the canonical values."""
    cls = type(obj)
    for f, s, kind in _fields(cls):
        value = getattr(obj, f.name)
        new = _coerce(_label(cls, f, s), f, s, kind, value)
        if new is not value:
            object.__setattr__(obj, f.name, new)


def coerce(cls: type, name: str, value: Any) -> Any:
    """`value` checked and made canonical as field `name` of `cls` would have it."""
    for f, s, kind in _fields(cls):
        if f.name == name:
            return _coerce(_label(cls, f, s), f, s, kind, value)
    raise KeyError(name)


def _coerce(label: str, f: dataclasses.Field, s: Setting, kind: _Kind, value: Any) -> Any:
    if value is None:
        if kind.optional or f.default is None:
            return None
        raise ConfigError(f"{label} must be given")
    if s.parse is not None:
        value = s.parse(value)
    if kind.base is tuple:
        if isinstance(value, str):  # "vgg11,vgg16" as typed on a command line
            value = [v.strip() for v in value.split(",") if v.strip()]
            if kind.element in (int, float):
                try:
                    value = [kind.element(v) for v in value]
                except ValueError:
                    raise ConfigError(f"{label} must be a comma-separated list of numbers, got {value!r}") from None
        elif not isinstance(value, (list, tuple)) and kind.element is not None and isinstance(value, kind.element):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value and f.default != ():
            raise ConfigError(f"{label} must be a non-empty list, got {value!r}")
        kind_name = getattr(kind.element, "__name__", "value")
        values = tuple(_scalar(label, kind.element, v, f"{label} must be a list of {kind_name}s") for v in value)
        for v in values:
            _check_value(label, f, s, v)
        return values
    value = _scalar(label, kind.base, value)
    _check_value(label, f, s, value)
    return value


_WORDS = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}


def _scalar(label: str, wanted: type | None, value: Any, message: str | None = None) -> Any:
    """The value if it has the wanted type (ints taken as floats; bools never as numbers)."""
    if wanted is None:
        return value
    if wanted is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif wanted is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, wanted)
    if not ok:
        raise ConfigError(f"{message or f'{label} must be {_WORDS.get(wanted, wanted.__name__)}'}, got {value!r}")
    if wanted is float:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{label} must be a finite number, got {value!r}")
    return value


def _check_value(label: str, f: dataclasses.Field, s: Setting, value: Any) -> None:
    if s.choices is not None:
        choices = tuple(s.choices() if callable(s.choices) else s.choices)
        if value not in choices:
            raise ConfigError(f"unknown {f.name.replace('_', ' ')} {value!r}: choose from "
                              f"{', '.join(map(str, choices))}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low_ok = (s.minimum is None or value >= s.minimum) and (s.above is None or value > s.above)
        high_ok = (s.maximum is None or value <= s.maximum) and (s.below is None or value < s.below)
        cap = MAX_INT if isinstance(value, int) else MAX_FLOAT
        if s.maximum is None and s.below is None and value > cap:
            s, high_ok = dataclasses.replace(s, maximum=cap), False
        if not (low_ok and high_ok):
            raise ConfigError(f"{label} must be {_range_words(s, isinstance(value, int), label)}, got {value!r}")


def _g(bound: float) -> str:
    """A bound as typed: 1000000, not 1e+06."""
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def _range_words(s: Setting, integer: bool, label: str) -> str:
    low = None if s.minimum is None and s.above is None else ("[", s.minimum) if s.minimum is not None else ("(", s.above)
    high = None if s.maximum is None and s.below is None else (
        ("]", s.maximum) if s.maximum is not None else (")", s.below))
    if low and high:
        return f"in {low[0]}{_g(low[1])}, {_g(high[1])}{high[0]}"
    if high:
        return f"at most {_g(high[1])}" if high[0] == "]" else f"less than {_g(high[1])}"
    bracket, bound = low
    if bracket == "(":
        return "positive" if bound == 0 else f"more than {_g(bound)}"
    if bound == 0:
        return "0 or more"
    if bound == 1 and integer and label.startswith("--"):
        return "a positive integer"
    return f"at least {_g(bound)}"


# --- mappings: suite files, settings JSON --------------------------------------------------------------

def check_keys(data: Iterable[str], allowed: Iterable[str], where: str) -> None:
    """A ConfigError for the first key not in `allowed`, suggesting the closest one."""
    allowed = list(allowed)
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]}?" if close else f" (keys: {', '.join(sorted(allowed))})"
            raise ConfigError(f"unknown key {key!r} in {where}{hint}")


def from_mapping(cls: type, data: Mapping, where: str, **fixed):
    """A settings dataclass from a mapping whose keys are its field names (unknown keys are errors);
    `fixed` values are added as given."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a table of settings, got {type(data).__name__}")
    check_keys(data, [f.name for f in dataclasses.fields(cls)], where)
    return cls(**data, **fixed)


# --- the command line ---------------------------------------------------------------------------------

def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def cli_options(cls: type, *, include: Iterable[str] | None = None, exclude: Iterable[str] = (),
                show_defaults: bool = True, prefix: str = ""):
    """A decorator adding one click option per setting of `cls` (those in `include`, not in `exclude`).

    Every option defaults to None, so that the dataclass default stays the only default: a command passes
    on the values given (`given(kwargs)`) and the dataclass fills in the rest. Bools are --flag/--no-flag
    pairs; tuples are comma-separated text; the help ends with [default: X] unless `show_defaults` is False
    (for settings whose default comes from elsewhere, such as a suite file) or it says its default itself.
    prefix: options --<prefix>-<field> that set the keyword <prefix>_<field> (a backend's settings).
    """
    import click

    params = click_params(cls, include=include, exclude=exclude, show_defaults=show_defaults, prefix=prefix)

    def decorate(command):
        # what click.option does: options go on the function until @command makes it a Command
        if isinstance(command, click.Command):
            command.params.extend(params)
        else:
            command.__dict__.setdefault("__click_params__", []).extend(reversed(params))
        return command

    return decorate


def click_params(cls: type, *, include: Iterable[str] | None = None, exclude: Iterable[str] = (),
                 show_defaults: bool = True, prefix: str = "") -> list:
    """The click.Option of each setting of `cls`, as cli_options adds them (for commands that add options
    when they are asked for them, such as those generated from the backend registry)."""
    import click

    include = None if include is None else set(include)
    exclude = set(exclude)
    chosen = [(f, s, k) for f, s, k in _fields(cls)
              if s.cli and f.name not in exclude and (include is None or f.name in include)]
    if include is not None and (unknown := include - {f.name for f, _, _ in _fields(cls)}):
        raise ValueError(f"{cls.__name__} has no settings {sorted(unknown)}")

    def option(f: dataclasses.Field, s: Setting, kind: _Kind):
        names = _option_names(f, s, prefix)
        if kind.base is bool and "/" not in names:
            names = f"{names}/--no-{names[2:]}"
        help_text = s.help
        if show_defaults and f.default not in (None, _MISSING) and "[default:" not in help_text:
            help_text = f"{help_text} [default: {_shown(f.default)}]".strip()
        kwargs: dict[str, Any] = {"default": None, "help": help_text}
        if kind.base in (int, float):
            kwargs["type"] = click.INT if kind.base is int else click.FLOAT
        if s.choices is not None and not callable(s.choices):
            kwargs["metavar"] = "[" + "|".join(map(str, s.choices)) + "]"
        return click.Option([names, *s.aliases, f"{prefix}_{f.name}" if prefix else f.name], **kwargs)

    return [option(f, s, k) for f, s, k in chosen]


def given(kwargs: Mapping[str, Any]) -> dict:
    """The options given on the command line: those not None."""
    return {k: v for k, v in kwargs.items() if v is not None}
