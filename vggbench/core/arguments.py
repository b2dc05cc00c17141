"""The one check that public functions make of their arguments' types, so that `load_model(123)` says what it
wanted instead of failing three calls deeper with an AttributeError.

    expect("load_model", "name", name, (str, ModelSpec), "a model name (str) or ModelSpec")
"""

from __future__ import annotations

import os
from typing import Any

from .errors import ArgumentError

PATH = (str, os.PathLike)  # what a path argument may be


def expect(func: str, name: str, value: Any, types: type | tuple[type, ...], what: str) -> None:
    """An ArgumentError (a TypeError and a ConfigError) unless `value` is one of `types`; bools are never ints."""
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, types) and not (isinstance(value, bool) and bool not in types and int in types):
        return
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise ArgumentError(f"{func}: {name} must be {what}, got {type(value).__name__} {shown}")


def expect_path(func: str, name: str, value: Any) -> None:
    expect(func, name, value, PATH, "a path (str or os.PathLike)")
