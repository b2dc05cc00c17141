"""Reading what LoadGen writes: mlperf_log_summary.txt (the verdict, its reasons, throughput, latency percentiles,
the parameters used), counts from mlperf_log_detail.txt and mlperf_log_accuracy.json (each sample's response
bytes)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.documents import loads_json
from ..core.errors import ResultsError

_LINE = re.compile(r"^\s*(?P<key>[^:]+?)\s*:\s*(?P<value>.*?)\s*$")
_PERCENTILE = re.compile(r"^(?P<p>\d+(?:\.\d+)?) percentile latency \(ns\)$")
_HEADLINE = re.compile(r"^(?P<p>\d+(?:\.\d+)?)th percentile latency \(ns\)$")
_ESTIMATE = re.compile(r"Early stopping (?P<p>\d+(?:\.\d+)?)th percentile estimate: (?P<ns>\d+)")
_MORE = re.compile(r"Would need to run at least (?P<n>\d+) more queries")
# LoadGen's "X satisfied : Yes/NO" lines, as reasons when they say NO
_CONSTRAINTS = ("Performance constraints satisfied", "Min duration satisfied", "Min queries satisfied",
                "Early stopping satisfied")


@dataclass
class Summary:
    """The fields of one mlperf_log_summary.txt that vggbench keeps."""

    scenario: str  # as LoadGen names it: SingleStream, MultiStream, Server, Offline
    mode: str  # PerformanceOnly, AccuracyOnly
    result: str | None = None  # VALID | INVALID (performance runs)
    constraints: dict[str, bool] = field(default_factory=dict)  # "Min duration satisfied" -> True, ...
    recommendations: list[str] = field(default_factory=list)
    early_stopping: list[str] = field(default_factory=list)
    early_stopping_ms: float | None = None  # the estimate of the scenario's percentile
    headline_ms: float | None = None  # SingleStream's p90, MultiStream's p99
    samples_per_s: float | None = None  # Offline: samples/s; Server: completed samples/s; SingleStream: QPS
    scheduled_per_s: float | None = None  # Server: the rate LoadGen scheduled
    percentiles_ms: dict[str, float] = field(default_factory=dict)  # "50" -> ms, ..., "99.9"
    min_ms: float | None = None
    max_ms: float | None = None
    mean_ms: float | None = None
    parameters: dict[str, str] = field(default_factory=dict)  # "Test Parameters Used", as written
    errors: bool = False

    @property
    def valid(self) -> bool | None:
        return None if self.result is None else self.result == "VALID"

    @property
    def latency_ok(self) -> bool | None:
        """LoadGen's own latency check (Server: p99 within the bound); None where it makes none."""
        return self.constraints.get("Performance constraints satisfied")

    def reasons(self) -> list[str]:
        """Why a run is INVALID: each constraint not met, then LoadGen's recommendations."""
        unmet = [f"{name.replace(' satisfied', '').lower()} not satisfied" for name, ok in self.constraints.items()
                 if not ok]
        return unmet + self.recommendations

    @property
    def more_queries(self) -> int | None:
        """How many more queries LoadGen's early stopping said it needs to accept the run, if it said so."""
        for line in self.early_stopping:
            if m := _MORE.search(line):
                return int(m["n"])
        return None

    def percentile(self, p: str) -> float | None:
        return self.percentiles_ms.get(p)

    def parameter(self, name: str, kind=float):
        value = self.parameters.get(name)
        try:
            return None if value is None else kind(value)
        except ValueError:
            return None


def _ms(ns: str) -> float:
    return float(ns) / 1e6


def parse_summary(text: str) -> Summary:
    """A Summary from the text of mlperf_log_summary.txt, or a ResultsError when it is not one."""
    lines = text.splitlines()
    fields: dict[str, str] = {}
    section, bullets, current = "", {"Recommendations": [], "Early Stopping Result": []}, None
    for raw in lines:
        line = raw.rstrip()
        if not line.strip() or line.startswith("===="):
            current = None
            continue
        if line.strip() in ("Recommendations:", "Early Stopping Result:"):
            current = bullets[line.strip().rstrip(":")]
            continue
        if current is not None and line.lstrip().startswith("*"):
            current.append(line.lstrip()[1:].strip())
            continue
        if current is not None and current and raw.startswith(" ") and ":" not in line:  # a bullet's next line
            current[-1] += " " + line.strip()
            continue
        current = None
        if line.strip() in ("MLPerf Results Summary", "Additional Stats", "Test Parameters Used"):
            section = line.strip()
            continue
        match = _LINE.match(line)
        if match:
            key = match["key"]
            fields[f"{section}/{key}" if section == "Test Parameters Used" else key] = match["value"]
    if "Scenario" not in fields or "Mode" not in fields:
        raise ResultsError("not a LoadGen summary (no Scenario and Mode lines)")
    summary = Summary(fields["Scenario"], fields["Mode"], fields.get("Result is"))
    for name in _CONSTRAINTS:
        if name in fields:
            summary.constraints[name] = fields[name].lower() == "yes"
    summary.recommendations = bullets["Recommendations"]
    summary.early_stopping = bullets["Early Stopping Result"]
    for line in summary.early_stopping:
        if m := _ESTIMATE.search(line):
            summary.early_stopping_ms = _ms(m["ns"])
            break
    for key, value in fields.items():
        if m := _PERCENTILE.match(key):
            summary.percentiles_ms[f"{float(m['p']):g}"] = _ms(value)
        elif _HEADLINE.match(key):
            summary.headline_ms = _ms(value)
        elif key.startswith("Test Parameters Used/"):
            summary.parameters[key.split("/", 1)[1]] = value
    for key in ("Samples per second", "Completed samples per second", "QPS w/ loadgen overhead"):
        if key in fields:
            summary.samples_per_s = float(fields[key])
            break
    if "Scheduled samples per second" in fields:
        summary.scheduled_per_s = float(fields["Scheduled samples per second"])
    for attr, key in (("min_ms", "Min latency (ns)"), ("max_ms", "Max latency (ns)"), ("mean_ms", "Mean latency (ns)")):
        if key in fields:
            setattr(summary, attr, _ms(fields[key]))
    summary.errors = "No errors encountered during test." not in text
    return summary


def read_summary(folder: str | os.PathLike) -> Summary:
    path = Path(folder) / "mlperf_log_summary.txt"
    if not path.is_file():
        raise ResultsError(f"LoadGen wrote no summary in {folder}")
    try:
        return parse_summary(path.read_text(encoding="utf-8"))
    except ResultsError as e:
        raise ResultsError(f"{path}: {e}") from None


def read_detail_ints(folder: str | os.PathLike | None, *keys: str) -> dict[str, int | None]:
    """Counts from LoadGen's detail log, read once: result_query_count (the queries it counted),
    result_overlatency_query_count (those over the latency bound); None for a key it does not hold, and for
    every key without a folder."""
    found: dict[str, int | None] = dict.fromkeys(keys)
    if folder is None:
        return found
    for line in (Path(folder) / "mlperf_log_detail.txt").read_text(encoding="utf-8").splitlines():
        for key in keys:
            if f'"key": "{key}"' in line:
                found[key] = int(json.loads(line.split(":::MLLOG", 1)[1])["value"])
    return found


def read_accuracy_log(folder: str | os.PathLike, width: int) -> dict[int, np.ndarray]:
    """qsl index -> the float32 vector of `width` values the SUT returned, from mlperf_log_accuracy.json."""
    path = Path(folder) / "mlperf_log_accuracy.json"
    try:
        entries = loads_json(path.read_text(encoding="utf-8"), str(path), ResultsError)
    except (OSError, json.JSONDecodeError) as e:
        raise ResultsError(f"cannot read LoadGen's accuracy log {path}: {e}") from None
    found = {}
    for entry in entries:
        data = np.frombuffer(bytes.fromhex(entry["data"]), dtype=np.float32)
        if data.size != width:
            raise ResultsError(f"{path}: sample {entry['qsl_idx']} has {data.size} values, expected {width}")
        found[int(entry["qsl_idx"])] = data
    return found
