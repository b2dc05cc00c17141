"""A benchmark run as stored: one JSON envelope (settings, environment, one row per case) plus a CSV
of the rows, written atomically under a name claimed exclusively; the journal that holds the rows while the run
goes on; and reading either back, with its schema checked."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import math
import os
import re
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.arguments import expect_path
from ..core.documents import loads_json, open_regular, read_text
from ..core.errors import CheckFailed, ResultsError, WriteError
from ..core.fileio import check_replaceable, write_json, write_text
from .confidence import fill_interval
from .rows import STATUSES, BenchResult, ScenarioResult
from .scenarios import SCENARIOS, VERDICTS

if TYPE_CHECKING:  # the [pandas] extra: imported where a DataFrame is made
    import pandas

# 2: a row's backend settings are one `backend_settings` object and a `variant`, the run's settings a `backend`
# table (1 had compile_mode/compile_options/ort_settings/trt_settings/openvino_settings and flat suite keys)
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1 is read as version 2 (see _upgrade)
KIND = "vggbench-run"
JOURNAL_KIND = "vggbench-run-journal"
DEFAULT_RESULTS_DIR = Path("benchmarks") / "results"
# the CSV has every field of a row except the raw samples (they stay in the JSON), then ENV_COLUMNS
CSV_COLUMNS = [f.name for f in fields(BenchResult) if f.name != "samples_ms"]
# the machine and versions a row was measured with, from the run's environment record, in every CSV row and
# DataFrame row: a reader of the CSV (or of many runs' rows in one table) keeps where each number came from
ENV_COLUMNS = ["env_created", "env_vggbench", "env_git_commit", "env_python", "env_platform", "env_cpu",
               "env_cpu_capability", "env_cpu_cores", "env_gpu", "env_cuda", "env_cuda_driver", "env_torch",
               "env_torchvision", "env_numpy", "env_onnx", "env_onnxscript", "env_onnxruntime", "env_openvino",
               "env_nncf"]
# statuses of a case that should have run and did not: a run that has one exits 1 (its rows written first).
# "unsupported" (a combination that cannot run here) and "oom" (a batch beyond the device's memory: what a batch
# sweep looks for) are outcomes, not failures.
FAILED_STATUSES = ("parity_failed", "export_failed", "error")
FAILED_WORDS = {"parity_failed": "parity", "export_failed": "to export", "error": "with an error"}
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
        """'16 cases (14 ok, 2 unsupported) in 12 s', then '; 3 of 14 rows ran under load' where the load was
        judged."""
        counts = ", ".join(f"{n} {status}" for status, n in self.status_counts().items())
        judged = [r.under_load for r in self.results if r.under_load is not None]
        load = f"; {sum(judged)} of {len(judged)} rows ran under load" if judged else ""
        return f"{len(self.results)} cases ({counts}) in {self.wall_s:.0f} s{load}"

    def check(self) -> None:
        """Raise CheckFailed (exit 1) when a case failed: parity (its timing is of a model that computes something
        else), its export, or with an error (nothing was measured). Rows that could not run by design (unsupported)
        or ran out of memory (oom: the end of a batch sweep) are no failed check."""
        failed = [r for r in self.results if r.status in FAILED_STATUSES]
        if failed:
            counts = {s: sum(r.status == s for r in failed) for s in FAILED_STATUSES}
            kinds = [s for s, n in counts.items() if n]
            r = failed[0]
            what = (FAILED_WORDS[kinds[0]] if len(kinds) == 1
                    else f"({', '.join(f'{counts[s]} {s}' for s in kinds)})")
            first = "" if len(kinds) == 1 else f" ({r.status})"
            raise CheckFailed(f"{len(failed)} of {len(self.results)} cases failed {what}, first {r.model} "
                              f"{r.backend} {r.precision} {r.memory_format} batch {r.batch_size}{first}: {r.reason}")

    def to_dataframe(self, samples: bool = False) -> pandas.DataFrame:
        """The rows as a pandas DataFrame (the [pandas] extra): one row per result, its fields as columns (objects
        such as backend_settings as JSON text, as in the CSV), then ENV_COLUMNS; with `samples`, the raw times as
        a list column, samples_ms. See also vggbench.results_frame, which reads a results file."""
        return frame(self.to_dict(), samples=samples)

    def write(self, out: str | os.PathLike | None = None, force: bool = False) -> tuple[Path, Path]:
        """Write run-<time>.json and .csv into `out` (a folder, default benchmarks/results/; a name another
        run holds gets a suffix -2, -3, ...) or to `out` itself when it ends in .json (an existing one only with
        `force`, and only the results of an earlier run). Returns both paths."""
        return write_run(self.to_dict(), out, force=force)


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


def env_columns(environment: dict | None, device: str | None = None) -> dict:
    """ENV_COLUMNS of a row measured on `device` ("cuda:1": env_gpu names that GPU) in a run whose environment
    record is `environment`; None for what the record lacks (an older file, or a package not installed)."""
    env = environment if isinstance(environment, dict) else {}

    def part(key: str) -> dict:
        value = env.get(key)
        return value if isinstance(value, dict) else {}

    versions, cpu, cuda, ort = part("versions"), part("cpu"), part("cuda"), part("onnxruntime")
    gpu = None
    if device and str(device).startswith("cuda"):
        index = int(str(device).partition(":")[2] or 0)
        names = {d.get("index"): d.get("name") for d in cuda.get("devices") or [] if isinstance(d, dict)}
        gpu = names.get(index)
    return {"env_created": env.get("created"), "env_vggbench": env.get("vggbench"),
            "env_git_commit": env.get("git_commit"), "env_python": env.get("python"),
            "env_platform": env.get("platform"), "env_cpu": cpu.get("model"),
            "env_cpu_capability": cpu.get("capability"), "env_cpu_cores": cpu.get("logical_cores"),
            "env_gpu": gpu, "env_cuda": cuda.get("runtime"), "env_cuda_driver": cuda.get("driver"),
            **{f"env_{name}": versions.get(name) for name in ("torch", "torchvision", "numpy", "onnx", "onnxscript")},
            "env_onnxruntime": ort.get("version"),
            **{f"env_{name}": versions.get(name) for name in ("openvino", "nncf")}}


def _flat_rows(data: dict, samples: bool = False) -> list[dict]:
    """A run envelope's rows with ENV_COLUMNS added and objects as JSON text (as the CSV and DataFrames have
    them); the raw samples dropped unless `samples`."""
    out = []
    for row in data["results"]:
        flat = {k: json.dumps(v, sort_keys=True) if isinstance(v, dict) else v for k, v in row.items()
                if k in CSV_COLUMNS or (samples and k == "samples_ms")}
        out.append({**flat, **env_columns(data.get("environment"), row.get("device"))})
    return out


def csv_text(data: dict) -> str:
    """A run envelope's rows as CSV: CSV_COLUMNS (dict values such as backend settings as JSON text), then
    ENV_COLUMNS."""
    from .report import render

    return render(_flat_rows(data), "csv", CSV_COLUMNS + ENV_COLUMNS) + "\n"


def frame(data: dict, samples: bool = False) -> pandas.DataFrame:
    """A run envelope (as read_run returns it) as a pandas DataFrame: see BenchRun.to_dataframe."""
    from ..core.extras import require

    pd = require("pandas", "DataFrames of results")
    columns = CSV_COLUMNS + (["samples_ms"] if samples else []) + ENV_COLUMNS
    return pd.DataFrame(_flat_rows(data, samples=samples), columns=columns)


def results_frame(path: str | os.PathLike, samples: bool = False) -> pandas.DataFrame:
    """A results file (or the .jsonl journal of a run that did not finish) as a pandas DataFrame, one row per
    result with the run's machine and versions as env_* columns (see BenchRun.to_dataframe). pandas.read_json
    cannot read the file as it is (the rows sit in the envelope's "results"): this is the reader for it."""
    return frame(read_run(path), samples=samples)


def write_run(data: dict, out: str | os.PathLike | None = None, force: bool = False) -> tuple[Path, Path]:
    """Write a run's envelope as JSON and CSV under a name no other run holds (see claim_results)."""
    return claim_results(out, data["created"], force=force).finish(data)


def claim_results(out: str | os.PathLike | None = None, created: str | None = None, *,
                  command: str | None = None, prefix: str = "run", force: bool = False,
                  logs: bool = False) -> Journal:
    """Check that results can be written to `out` and claim their names, before anything is measured.

    out: a folder (default benchmarks/results/), where the results are run-<time>.json/.csv, or a .json file
    (the .csv beside it). The claim is the journal, run-<time>.jsonl, created exclusively (O_EXCL): two runs
    that start in the same second get run-<time> and run-<time>-2, never the same name. A folder that cannot
    be made or written is a ResultsError now, not after the run. command: recorded in the journal's settings.
    prefix: of the names in a folder (`vggbench loadgen` writes loadgen-<time>.json).
    A named .json that exists (or its .csv) is never taken silently: a ResultsError, or with `force` it is replaced,
    and only when it holds the results of an earlier run (never a file vggbench did not write). logs: the NAME.logs/
    folder beside the results (`vggbench loadgen`'s) is checked the same way.
    """
    out = Path(out) if out is not None else DEFAULT_RESULTS_DIR
    named = out.suffix.lower() == ".json"
    folder = out.parent if named else out
    made = _make_folder(folder, out)
    try:
        return _claim(out, named, folder, created, command, prefix, force, logs, made)
    except BaseException:
        _remove_empty(made)  # a claim refused leaves no folder behind either
        raise


def _remove_empty(folders: tuple[Path, ...]) -> None:
    """Removes the folders a claim made, the deepest first, while they are empty (a file in one keeps it)."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:
            return


def _claim(out: Path, named: bool, folder: Path, created: str | None, command: str | None, prefix: str, force: bool,
           logs: bool, made: tuple[Path, ...]) -> Journal:
    if named:
        for path in (out, out.with_suffix(".csv")):
            if path.is_dir():
                raise ResultsError(f"cannot write the results to {path}: it is a folder")
        hint = "pass another --out, or --force to replace the results of an earlier run"
        check_replaceable(out, force=force, not_ours=_not_results, what="file", hint=hint)
        check_replaceable(out.with_suffix(".csv"), force=force, not_ours=_not_results_csv, what="file", hint=hint)
        if logs:
            check_replaceable(logs_folder(out), force=force, not_ours=not_loadgen_logs, hint=hint)
    stamp = dt.datetime.fromisoformat(created or _now()).astimezone().strftime("%Y%m%d-%H%M%S")
    for n in itertools.count(1):
        stem = (out.stem if named else f"{prefix}-{stamp}") + (f"-{n}" if n > 1 else "")
        journal = folder / f"{stem}.jsonl"
        json_path = out if named else journal.with_suffix(".json")
        if not named and _taken(json_path, logs):
            continue
        try:
            fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as e:
            raise ResultsError(f"cannot write results into {folder}: {e.strerror}") from None
        # a run that held this name may have finished (results written, then its journal removed) in between
        if not named and _taken(json_path, logs):
            os.close(fd)
            journal.unlink()
            continue
        return Journal(journal, json_path, json_path.with_suffix(".csv"), os.fdopen(fd, "w", encoding="utf-8"),
                       command, made)


def _taken(json_path: Path, logs: bool = False) -> bool:
    return (json_path.exists() or json_path.with_suffix(".csv").exists()
            or (logs and os.path.lexists(logs_folder(json_path))))


def logs_folder(json_path: Path) -> Path:
    """NAME.logs beside NAME.json: where `vggbench loadgen` keeps LoadGen's logs."""
    return json_path.with_name(json_path.stem + ".logs")


def _not_results(path: Path) -> str | None:
    """Why `path` is not a results file of vggbench (None when it is: its envelope, kind and schema_version)."""
    try:
        data = json.loads(read_text(path))
    except (OSError, ValueError):
        return "it is not a vggbench results file (not JSON)"
    if not (isinstance(data, dict) and data.get("kind") == KIND and data.get("schema_version") in READABLE_VERSIONS
            and isinstance(data.get("results"), list)):
        return f"it is not a vggbench results file (no \"kind\": \"{KIND}\", schema_version {SCHEMA_VERSION})"
    return None


def _not_results_csv(path: Path) -> str | None:
    """Why `path` is not the CSV of a run (None when its header is vggbench's: model,image_size,batch_size,...)."""
    try:
        with open_regular(path) as f:
            header = f.readline(4096).decode("utf-8")
    except (OSError, ValueError):
        header = ""
    return None if header.startswith(",".join(CSV_COLUMNS[:6])) else "it is not the CSV of a vggbench run"


def not_loadgen_logs(folder: Path) -> str | None:
    """Why `folder` is not a folder of LoadGen logs that vggbench kept (None when every file in it is mlperf_log_*)."""
    if not folder.is_dir():
        return "it is not a folder"
    foreign = [p for p in folder.rglob("*") if p.is_symlink() or (not p.is_dir() and not p.name.startswith("mlperf_log_"))]
    return f"it holds {foreign[0].relative_to(folder)}, which is no LoadGen log" if foreign else None


def _make_folder(folder: Path, out: Path) -> tuple[Path, ...]:
    """Makes `folder` and the parents it lacks; returns those it made, the deepest first."""
    made = tuple(p for p in (folder, *folder.parents) if not os.path.lexists(p))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return made
    except OSError as e:
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file" if blocker else e.strerror
        raise ResultsError(f"cannot write results to {out}: {why}") from None


class Journal:
    """The rows of a run as they are measured: JSON Lines (a header with the settings and the environment, then
    one row per line, each flushed to disk) beside the results, so a kill, a crash or a failed final write keeps
    every finished case; `read_run` reads a journal back. `finish` writes the results and removes it."""

    def __init__(self, path: Path, json_path: Path, csv_path: Path, file, command: str | None = None,
                 made: tuple[Path, ...] = ()) -> None:
        self.path, self.json_path, self.csv_path, self._file = path, json_path, csv_path, file
        self.command, self.rows = command, 0
        self._made = made  # the folders the claim made: a run that writes nothing leaves them out too

    def start(self, settings: dict, environment: dict, created: str) -> None:
        """The header line: what read_run needs besides the rows."""
        from ..core.env import package_version

        if self.command:
            settings = {**settings, "command": self.command}
        self._line({"schema_version": SCHEMA_VERSION, "kind": JOURNAL_KIND, "vggbench": package_version("vggbench"),
                    "created": created, "settings": settings, "environment": environment})

    def append(self, row: BenchResult) -> None:
        self._line(_finite(asdict(row)))  # the same rule as the final JSON: no bare NaN
        self.rows += 1

    def _line(self, data: dict) -> None:
        try:
            self._file.write(json.dumps(data, default=str) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as e:
            kept = self._kept() if self.rows else "no case had finished"
            raise WriteError(self.path, e.strerror or str(e), kept) from None

    def finish(self, data: dict) -> tuple[Path, Path]:
        """Write the envelope `data` to the claimed .json and .csv, then remove the journal. Returns both paths."""
        written = []
        try:
            write_json(self.json_path, data)
            written.append(self.json_path)
            write_text(self.csv_path, csv_text(data))
        except (WriteError, OSError) as e:
            self.close()
            failed = e.path if isinstance(e, WriteError) else self.csv_path if written else self.json_path
            reason = e.reason if isinstance(e, WriteError) else e.strerror or str(e)
            kept = [e.kept] if isinstance(e, WriteError) and e.kept else []  # the old file, where there was one
            kept += [f"the results are in {written[0]}"] if written else []
            kept += [self._kept()] if self.rows else []
            raise WriteError(failed, reason, "; ".join(kept)) from None
        self._file.close()
        self.path.unlink(missing_ok=True)  # after the results: a name is never free while neither exists
        return self.json_path, self.csv_path

    def close(self) -> None:
        """Stop writing: the journal stays when it holds a row, and goes when it holds none (with the folders the
        claim made for it, while they are empty)."""
        with contextlib.suppress(OSError):  # a line a full disk refused is still buffered: left out, as by a kill
            self._file.close()
        if not self.rows:
            self.path.unlink(missing_ok=True)
            _remove_empty(self._made)

    def _kept(self) -> str:
        return (f"the {self.rows} finished case(s) are kept in {self.path} "
                f"(`vggbench report {self.path}` reads it)")


def read_journal(path: str | os.PathLike) -> dict:
    """A journal as a results envelope (schema_version 1). A last line cut short by a kill is left out."""
    path = Path(path)
    try:
        lines = read_text(path).splitlines()
    except UnicodeDecodeError as e:
        raise ResultsError(f"{path} is not a vggbench journal ({e})") from None
    except OSError as e:
        raise ResultsError(f"cannot read {path}: {e.strerror or e}") from None
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(loads_json(line, f"{path}: line {i + 1}", ResultsError))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1 and i > 0:  # the row being written when the process died
                break
            raise ResultsError(f"{path}: line {i + 1} is not valid JSON ({e})") from None
    if not records or not isinstance(records[0], dict) or records[0].get("kind") != JOURNAL_KIND:
        raise ResultsError(f"{path} is not a vggbench journal (no \"kind\": \"{JOURNAL_KIND}\" on its first line)")
    header, rows = records[0], records[1:]
    settings = header.get("settings") if isinstance(header.get("settings"), dict) else {}
    settings.setdefault("interrupted", f"the run did not finish; {len(rows)} case(s) read from its journal")
    return {"schema_version": header.get("schema_version"), "kind": KIND, "vggbench": header.get("vggbench"),
            "created": header.get("created"), "wall_s": 0.0, "settings": settings,
            "environment": header.get("environment"), "results": rows}


def read_run(path: str | os.PathLike) -> dict:
    """A results file written by `vggbench run` (or the .jsonl journal of a run that did not finish), or a
    ResultsError that says what is wrong with it. A row that ran and lacks the 95% interval of its median gets it
    from its samples."""
    expect_path("read_run", "path", path)
    path = Path(path)
    if not path.is_file():
        if path.exists():
            raise ResultsError(f"results file {path} is not a regular file")
        raise ResultsError(f"results file {path} does not exist (`vggbench run` writes them to "
                           f"{DEFAULT_RESULTS_DIR}/)")
    if path.suffix.lower() == ".jsonl":
        data = read_journal(path)
    else:
        try:
            data = loads_json(read_text(path), str(path), ResultsError)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ResultsError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise ResultsError(f"{path} is not a vggbench results file (no \"kind\": \"{KIND}\")")
    if data.get("schema_version") not in READABLE_VERSIONS:
        raise ResultsError(f"{path} has schema_version {data.get('schema_version')!r}; this vggbench reads "
                           f"{', '.join(map(str, READABLE_VERSIONS))}")
    rows = data.get("results")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ResultsError(f"{path} has no list of results")
    if not isinstance(data.get("settings", {}), dict):
        raise ResultsError(f"{path}: settings must be an object, got {data['settings']!r}"[:300])
    if data["schema_version"] == 1:
        _upgrade(data)
    for i, row in enumerate(rows):
        missing = [k for k in REQUIRED_ROW_KEYS if k not in row]
        if missing:
            raise ResultsError(f"{path}: result {i} lacks {', '.join(missing)}")
        _check_row(path, i, row)
        fill_interval(row)  # files and journals from before the intervals: from the samples they kept
    if not isinstance(data.get("environment"), dict):
        raise ResultsError(f"{path} has no environment")
    _check_environment(path, data["environment"])
    return data


# --- version 1 read as version 2 ------------------------------------------------------------------------------

# version 1's flat suite keys -> (backend, field) of version 2's settings["backend"] tables
_V1_SUITE_KEYS = {"compile_mode": ("compile", "mode"), "compile_freezing": ("compile", "freezing"),
                  "ort_optimization": ("onnxruntime", "optimization"),
                  "cudnn_conv_algo_search": ("onnxruntime", "cudnn_conv_algo_search"),
                  "ort_cuda_graph": ("onnxruntime", "cuda_graph"), "trt_max_batch": ("tensorrt", "max_batch"),
                  "openvino_hint": ("openvino", "hint"), "openvino_streams": ("openvino", "streams"),
                  "openvino_defaults": ("openvino", "defaults")}
_V1_ROW_KEYS = ("compile_mode", "compile_options", "ort_settings", "trt_settings", "openvino_settings")


def _upgrade(data: dict) -> None:
    """A version 1 results envelope made version 2 in place: each row's backend settings in `backend_settings`
    with its `variant`, the run's flat backend keys in settings["backend"]."""
    settings = data.get("settings")
    if isinstance(settings, dict):
        tables: dict = {}
        for key, (backend, name) in _V1_SUITE_KEYS.items():
            if key in settings:
                tables.setdefault(backend, {})[name] = settings.pop(key)
        settings.setdefault("backend", tables)
    for row in data["results"]:
        old = {k: row.pop(k, None) for k in _V1_ROW_KEYS}
        ort = old["ort_settings"] if isinstance(old["ort_settings"], dict) else None
        if row.get("backend") == "compile":
            options = old["compile_options"] if isinstance(old["compile_options"], dict) else {}
            row["backend_settings"] = {"mode": old["compile_mode"], "freezing": bool(options.get("freezing"))}
        else:
            row["backend_settings"] = ort or old["trt_settings"] or old["openvino_settings"]
        parts = [old["compile_mode"] if isinstance(old["compile_mode"], str) else "",
                 "cuda-graph" if ort and ort.get("cuda_graph") else ""]
        row["variant"] = " ".join(p for p in parts if p)
    data["schema_version"] = SCHEMA_VERSION


# --- the checks of a file that may have been edited by hand: every field that report, compare and plot read
# has its type, so that they never fail on it; the message names the file and the field

_ROW_HINTS = typing.get_type_hints(BenchResult)
_SCENARIO_HINTS = typing.get_type_hints(ScenarioResult)
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
    if row.get("scenario") is not None:
        _check_scenario(path, i, row["scenario"])
    median = row.get("median_ms")
    # a LoadGen accuracy run alone has no latencies: its row holds the accuracy in its scenario block
    timed = not (row.get("scenario") and row["scenario"].get("result") is None)
    if row["status"] == "ok" and timed and (not isinstance(median, (int, float)) or median <= 0):
        # a case that ran has its median: comparisons divide by it
        raise ResultsError(f"{path}: results[{i}].median_ms must be a positive number for a case with status ok, "
                           f"got {median!r}")


def _check_scenario(path: Path, i: int, block: dict) -> None:
    """A row's LoadGen block (files from before it have none): every field that report and compare read."""
    where = f"{path}: results[{i}].scenario"
    for name in ("name", "mode"):
        if name not in block:
            raise ResultsError(f"{where} lacks {name}")
    for name, value in block.items():
        hint = _SCENARIO_HINTS.get(name)
        if hint is not None and not _fits(value, hint):
            raise ResultsError(f"{where}.{name} must be {_words(hint)}, got {value!r}")
    if block["name"] not in SCENARIOS:
        raise ResultsError(f"{where}.name must be one of {', '.join(SCENARIOS)}, got {block['name']!r}")
    if block.get("result") is not None and block["result"] not in VERDICTS:
        raise ResultsError(f"{where}.result must be VALID, INVALID or null, got {block['result']!r}")
    accuracy = block.get("accuracy") or {}
    for name in ("top1", "agreement_top1", "max_abs"):
        if accuracy.get(name) is not None and not _fits(accuracy[name], float):
            raise ResultsError(f"{where}.accuracy.{name} must be a finite number, got {accuracy[name]!r}")


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
    ceilings = env.get("ceilings", [])  # since 2026-11: absent from older files
    if not isinstance(ceilings, list) or not all(
            isinstance(c, dict) and isinstance(c.get("device"), str) and isinstance(c.get("precision"), str)
            and _fits(c.get("measured_gflops_per_s"), float | None) and isinstance(c.get("measured_source"), str | None)
            and _fits(c.get("theoretical_gflops_per_s"), float | None) for c in ceilings):
        raise ResultsError(f"{path}: environment.ceilings must be a list of objects with device, precision, "
                           f"measured_gflops_per_s and theoretical_gflops_per_s")
