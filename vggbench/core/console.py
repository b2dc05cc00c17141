"""What the long commands (export, verify, the int8 plan search) tell the user while they run: progress lines on
stderr, and third-party warnings turned into one-line records (for a manifest or a report) instead of being
printed. The library stays silent unless a caller turns the lines on (`progress_lines`); no torch import here."""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextvars import ContextVar

_SINK: ContextVar[Callable[[str], None] | None] = ContextVar("vggbench_progress", default=None)


@contextlib.contextmanager
def progress_lines(enabled: bool | None = None) -> Iterator[None]:
    """While active, `say` writes its lines to stderr, each with the seconds since the start. enabled: True, False,
    or None for "only when stderr is a terminal" (run's --progress default), so that logs and pipes stay clean."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    start = time.monotonic()

    def write(text: str) -> None:
        sys.stderr.write(f"[{time.monotonic() - start:6.1f} s] {text}\n")
        sys.stderr.flush()

    token = _SINK.set(write if enabled else None)
    try:
        yield
    finally:
        _SINK.reset(token)


def say(text: str) -> None:
    """One progress line, when a caller asked for them (`progress_lines`); nothing otherwise."""
    sink = _SINK.get()
    if sink is not None:
        sink(text)


@contextlib.contextmanager
def recorded_warnings(where: str, into: list[str]) -> Iterator[None]:
    """Every warning raised inside appended to `into` as one line, "WHERE: Category: first line" (each distinct one
    once), instead of printed: torch's deprecation notices would otherwise fill an export's output although the
    manifest records them."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for line in sorted({f"{where}: {w.category.__name__}: {(str(w.message).splitlines() or [''])[0]}"
                                for w in seen}):
                if line not in into:
                    into.append(line)
