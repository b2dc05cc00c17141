"""The errors vggbench raises for things a user can fix; the CLI prints them as one line."""

from __future__ import annotations

# Exit codes: 1 means "the check ran and failed" (parity, regression), 2 means "bad input".
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2


class VggbenchError(Exception):
    """Base class: a message meant for the user and the exit code the CLI should use."""

    exit_code = EXIT_USAGE


class UnknownModelError(VggbenchError):
    """A model name that is not in the registry."""


class ConfigError(VggbenchError):
    """Model options or image sizes that cannot work (width, num_classes, image size, ...)."""


class WeightsError(VggbenchError):
    """Weights that cannot be had or do not fit: missing, corrupt, refused or mismatched files."""


class UnsupportedError(VggbenchError):
    """A backend/device/precision/format combination that cannot run here."""


class ExportError(VggbenchError):
    """An export that failed; the previous export folder, if any, is left intact."""


class ArtifactError(VggbenchError):
    """An export folder that is incomplete, tampered with or from an unknown format."""


class DataError(VggbenchError):
    """A dataset that cannot be found or read."""


class TrainingError(VggbenchError):
    """A run that cannot go on, e.g. a loss that became NaN; the last good checkpoint is kept."""

    exit_code = EXIT_CHECK_FAILED


class ResultsError(VggbenchError):
    """A benchmark results file that is missing, unreadable or of another schema."""


class WriteError(VggbenchError):
    """A file or folder that could not be written for want of room or rights (disk full, file too large, quota,
    read-only, permission): it names the file that failed, never a temp name, and what was kept (`kept`); nothing
    half-written is left."""

    def __init__(self, path, reason: str, kept: str = "") -> None:
        self.path, self.reason, self.kept = path, reason, kept
        super().__init__(f"cannot write {path}: {reason}" + (f"; {kept}" if kept else ""))

    def keeping(self, kept: str) -> WriteError:
        """The same failure, with what the caller knows was kept added to the message."""
        return WriteError(self.path, self.reason, "; ".join(k for k in (self.kept, kept) if k))


class MachineBusy(VggbenchError):
    """`--require-quiet`: the machine stayed busy (CPU pressure, other processes) for as long as it was asked to
    wait, or its load cannot be read here."""


class ClusterError(VggbenchError):
    """`--cluster`: a Ray cluster that cannot be reached, or whose connection was lost during the run, or that has
    no node of a machine kind the suite names."""


class CheckFailed(VggbenchError):
    """A check that ran and failed: a parity mismatch or a benchmark regression."""

    exit_code = EXIT_CHECK_FAILED


def one_line(e: BaseException) -> str:
    """'Type: first line of the message', for errors from third-party code recorded as data."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


class BenchmarkInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during a benchmark run: `run` is a BenchRun of the cases that finished, so that they can be
    written instead of lost (`vggbench run` does, then exits 130)."""

    def __init__(self, run) -> None:
        super().__init__(f"interrupted after {len(run.results)} case(s)")
        self.run = run


class Terminated(KeyboardInterrupt):
    """SIGTERM (what CI timeouts and `kill` send), raised by the CLI's handler so that it takes the Ctrl-C path:
    finished cases kept, temp folders removed, last.pt saved."""


class ArgumentError(ConfigError, TypeError):
    """A public function called with an argument of the wrong type: a TypeError for Python callers, one line for the
    CLI (see vggbench.core.arguments)."""
