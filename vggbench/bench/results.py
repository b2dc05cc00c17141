"""A benchmark run as stored: one JSON envelope (settings, environment, one row per case) plus a CSV
of the rows, written atomically; and reading it back, with its schema checked."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..core.errors import ResultsError
from ..core.fileio import write_json, write_text
from .rows import STATUSES, BenchResult

SCHEMA_VERSION = 1
KIND = "vggbench-run"
DEFAULT_RESULTS_DIR = Path("benchmarks") / "results"
# the CSV has every field of a row except the raw samples (they stay in the JSON)
CSV_COLUMNS = [f.name for f in fields(BenchResult) if f.name != "samples_ms"]
REQUIRED_ROW_KEYS = ("model", "image_size", "batch_size", "backend", "device", "precision", "memory_format",
                     "threads", "status")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class BenchRun:
    """What vggbench.benchmark returns: the resolved suite, the environment (with the measured GEMM peaks)
    and one BenchResult per case."""

    settings: dict
    environment: dict
    results: list[BenchResult]
    wall_s: float = 0.0
    created: str = field(default_factory=_now)

    def to_dict(self) -> dict:
        from ..core.env import package_version

        return {"schema_version": SCHEMA_VERSION, "kind": KIND, "vggbench": package_version("vggbench"),
                "created": self.created, "wall_s": round(self.wall_s, 1), "settings": self.settings,
                "environment": self.environment, "results": [_finite(asdict(r)) for r in self.results]}

    def status_counts(self) -> dict[str, int]:
        """status -> how many cases ended with it, in the order first seen."""
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r.status] = counts.get(r.status, 0) + 1
        return counts

    def summary(self) -> str:
        """'16 cases (14 ok, 2 unsupported) in 12 s'."""
        counts = ", ".join(f"{n} {status}" for status, n in self.status_counts().items())
        return f"{len(self.results)} cases ({counts}) in {self.wall_s:.0f} s"

    def write(self, out: str | os.PathLike | None = None) -> tuple[Path, Path]:
        """Write run-<time>.json and .csv into `out` (a folder, default benchmarks/results/) or to `out`
        itself when it ends in .json. Returns both paths."""
        return write_run(self.to_dict(), out)


def _finite(value):
    """`value` with NaN and infinities as None: JSON has no such numbers (Python would write bare NaN, which
    other readers refuse), and a row that has one says why in its status and reason."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def output_paths(out: str | os.PathLike | None, created: str) -> tuple[Path, Path]:
    out = Path(out) if out is not None else DEFAULT_RESULTS_DIR
    if out.suffix.lower() == ".json":
        return out, out.with_suffix(".csv")
    stamp = dt.datetime.fromisoformat(created).astimezone().strftime("%Y%m%d-%H%M%S")
    path = out / f"run-{stamp}.json"
    n = 1
    while path.exists() or path.with_suffix(".csv").exists():
        n += 1
        path = out / f"run-{stamp}-{n}.json"
    return path, path.with_suffix(".csv")


def csv_text(rows: list[dict]) -> str:
    """The rows as CSV; dict values (onnxruntime settings) as JSON text."""
    from .report import render

    flat = [{k: json.dumps(v, sort_keys=True) if isinstance(v, dict) else v for k, v in row.items()} for row in rows]
    return render(flat, "csv", CSV_COLUMNS) + "\n"


def write_run(data: dict, out: str | os.PathLike | None = None) -> tuple[Path, Path]:
    json_path, csv_path = output_paths(out, data["created"])
    write_json(json_path, data)
    write_text(csv_path, csv_text(data["results"]))
    return json_path, csv_path


def read_run(path: str | os.PathLike) -> dict:
    """A results file written by `vggbench run`, or a ResultsError that says what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"results file {path} does not exist (`vggbench run` writes them to "
                           f"{DEFAULT_RESULTS_DIR}/)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise ResultsError(f"{path} is not a vggbench results file (no \"kind\": \"{KIND}\")")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ResultsError(f"{path} has schema_version {data.get('schema_version')!r}; this vggbench reads "
                           f"{SCHEMA_VERSION}")
    rows = data.get("results")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ResultsError(f"{path} has no list of results")
    for i, row in enumerate(rows):
        missing = [k for k in REQUIRED_ROW_KEYS if k not in row]
        if missing:
            raise ResultsError(f"{path}: result {i} lacks {', '.join(missing)}")
        _check_row(path, i, row)
    if not isinstance(data.get("environment"), dict):
        raise ResultsError(f"{path} has no environment")
    _check_environment(path, data["environment"])
    return data


# --- the checks of a file that may have been edited by hand: every field that report, compare and plot read
# has its type, so that they never fail on it; the message names the file and the field

_ROW_HINTS = typing.get_type_hints(BenchResult)
_DEVICE = re.compile(r"[a-z]+(:\d+)?")


def _fits(value, hint) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is tuple:
        return isinstance(value, list) and all(_fits(v, typing.get_args(hint)[0]) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typing.get_origin(hint) or hint)


def _words(hint) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_words(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return f"a list of {_words(typing.get_args(hint)[0]).removeprefix('a ')}s"
    return {float: "a finite number", int: "an integer", str: "a string", bool: "true or false", dict: "an object",
            type(None): "null"}.get(hint, str(hint))


def _check_row(path: Path, i: int, row: dict) -> None:
    for name, value in row.items():
        hint = _ROW_HINTS.get(name)
        if hint is not None and not _fits(value, hint):
            raise ResultsError(f"{path}: results[{i}].{name} must be {_words(hint)}, got {value!r}")
    if not _DEVICE.fullmatch(row["device"]):
        raise ResultsError(f"{path}: results[{i}].device must be a device such as cpu or cuda:0, got {row['device']!r}")
    if row["status"] not in STATUSES:
        raise ResultsError(f"{path}: results[{i}].status must be one of {', '.join(STATUSES)}, got {row['status']!r}")
    median = row.get("median_ms")
    if row["status"] == "ok" and (not isinstance(median, (int, float)) or median <= 0):
        # a case that ran has its median: comparisons divide by it
        raise ResultsError(f"{path}: results[{i}].median_ms must be a positive number for a case with status ok, "
                           f"got {median!r}")


def _check_environment(path: Path, env: dict) -> None:
    for key in ("cpu", "cuda", "versions", "onnxruntime"):
        if env.get(key) is not None and not isinstance(env[key], dict):
            raise ResultsError(f"{path}: environment.{key} must be an object, got {env[key]!r}")
    devices = (env.get("cuda") or {}).get("devices", [])
    if not isinstance(devices, list) or not all(isinstance(d, dict) and isinstance(d.get("name"), str)
                                                for d in devices):
        raise ResultsError(f"{path}: environment.cuda.devices must be a list of objects with a name")
    peaks = env.get("gemm_peaks", [])
    if not isinstance(peaks, list) or not all(
            isinstance(p, dict) and isinstance(p.get("device"), str) and isinstance(p.get("precision"), str)
            and _fits(p.get("gflops_per_s"), float) for p in peaks):
        raise ResultsError(f"{path}: environment.gemm_peaks must be a list of objects with device, precision and "
                           f"gflops_per_s")
