"""JSON and TOML documents read from user files, parsed with a bound on nesting.

json and tomllib parse nested arrays/tables recursively: a file of 100,000 '[' raises RecursionError (or
worse, exhausts the C stack) instead of a parse error, and a document just under the interpreter's limit
breaks whatever walks it next (repr in an error message, dataclasses.asdict, json.dumps). No file vggbench
reads needs more than a few levels, so a document deeper than MAX_DEPTH is refused as one error line.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from typing import Any, BinaryIO

from .errors import ConfigError, VggbenchError

MAX_DEPTH = 64


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """`path` opened for reading in binary, when it is a regular file (after symlinks). Opened without blocking
    and checked before anything is read: a fifo (or a device) in the place of a file vggbench reads (a manifest, a
    results file, a settings file, an artifact to hash) would otherwise be waited on for a writer, forever. An
    OSError whose strerror says why, for the caller's one line. O_NONBLOCK changes nothing for a regular file."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    f = open(fd, "rb")  # noqa: SIM115 (the caller's with-block closes it; closed here when refused)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
    return f


def read_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of the regular file `path` (open_regular: never waits on a fifo). An OSError whose strerror
    says why (a UnicodeDecodeError for text that is not UTF-8) for the caller's one line."""
    with open_regular(path) as f:
        return f.read().decode("utf-8")


def loads_json(text: str, where: str, error: type[VggbenchError] = ConfigError) -> Any:
    """json.loads, with a document nested deeper than MAX_DEPTH an `error`; a JSONDecodeError passes through."""
    return _bounded(json.loads, text, where, error)


def loads_toml(text: str, where: str, error: type[VggbenchError] = ConfigError) -> Any:
    """tomllib.loads, with a document nested deeper than MAX_DEPTH an `error`; a TOMLDecodeError passes through."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return _bounded(tomllib.loads, text, where, error)


def _bounded(parse, text: str, where: str, error: type[VggbenchError]) -> Any:
    try:
        data = parse(text)
    except RecursionError:
        raise _too_deep(where, error) from None
    check_depth(data, where, error)
    return data


def check_depth(data: Any, where: str, error: type[VggbenchError] = ConfigError, limit: int = MAX_DEPTH) -> None:
    """An `error` when lists/dicts in `data` nest deeper than `limit` (walked without recursion)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, (list, tuple)):
            children = value
        else:
            continue
        if depth > limit:
            raise _too_deep(where, error, limit)
        stack.extend((child, depth + 1) for child in children)


def _too_deep(where: str, error: type[VggbenchError], limit: int = MAX_DEPTH) -> VggbenchError:
    return error(f"{where} nests lists/tables more than {limit} levels deep; no vggbench file does")
