"""Comparing two benchmark runs case by case, for regression gates. Never measures anything.

A speed ratio means something only between runs on the same hardware: another CPU model, core count or
GPU changes every number for reasons that have nothing to do with the code. Such comparisons are refused
unless asked for explicitly; different software (torch, onnxruntime, Python) on the same hardware is
what a regression check is for, so it is only pointed out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.errors import CheckFailed, ConfigError, UnsupportedError
from .report import label, variant

MATCH_KEYS = ("model", "image_size", "device", "backend", "precision", "memory_format", "batch_size", "threads")
COMPARE_COLUMNS = (*MATCH_KEYS, "old_median_ms", "new_median_ms", "change_pct", "noisy", "verdict")
# LoadGen scenario rows: matched on the target and the scenario, judged on the scenario's headline number
SCENARIO_MATCH_KEYS = ("model", "image_size", "device", "backend", "precision", "memory_format", "threads", "scenario")
SCENARIO_COMPARE_COLUMNS = (*SCENARIO_MATCH_KEYS, "metric", "old", "new", "change_pct", "old_result", "new_result",
                            "verdict")
LOWER_IS_BETTER = ("p90_ms", "p99_ms")  # SingleStream's and MultiStream's metrics; the others are rates


def parse_threshold(text: str | float) -> float:
    """'5%' or '5' -> 0.05 (a percentage either way)."""
    raw = str(text).strip()
    try:
        value = float(raw.removesuffix("%"))
    except ValueError:
        raise ConfigError(f"threshold must be a percentage such as 5%, got {text!r}") from None
    if not 0 <= value < 1000:
        raise ConfigError(f"threshold must be between 0% and 1000%, got {text!r}")
    return value / 100


def _hardware(env: dict, cuda: bool) -> dict:
    cpu = env.get("cpu") or {}
    found = {"CPU": cpu.get("model"), "logical cores": cpu.get("logical_cores"),
             "available cores": cpu.get("available_cores")}
    if cuda:
        found["GPUs"] = ", ".join(d["name"] for d in (env.get("cuda") or {}).get("devices", [])) or None
    return found


def _software(env: dict) -> dict:
    return {"torch": (env.get("versions") or {}).get("torch"),
            "onnxruntime": (env.get("onnxruntime") or {}).get("version"), "python": env.get("python")}


def environment_differences(old: dict, new: dict) -> tuple[list[str], list[str]]:
    """(hardware differences, software differences) between the environments of two runs, as lines."""
    cuda = any(str(r["device"]).startswith("cuda") for r in (*old["results"], *new["results"]))

    def diff(a: dict, b: dict) -> list[str]:
        return [f"{k}: {a[k]} (old) vs {b[k]} (new)" for k in a if a[k] != b[k]]

    return (diff(_hardware(old["environment"], cuda), _hardware(new["environment"], cuda)),
            diff(_software(old["environment"]), _software(new["environment"])))


@dataclass
class Comparison:
    rows: list[dict]
    threshold: float
    only_old: list[tuple] = field(default_factory=list)
    only_new: list[tuple] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # environment differences pointed out, not refused
    scenario_rows: list[dict] = field(default_factory=list)  # LoadGen scenarios, judged on their metric

    @property
    def regressions(self) -> list[dict]:
        return [r for r in (*self.rows, *self.scenario_rows) if r["verdict"] in ("slower", "failed now", "invalid now")]

    def summary(self) -> str:
        """How many cases were compared, and how many were in one run only."""
        note = [f"{len(self.rows)} cases compared"]
        if self.scenario_rows:
            note = [f"{len(self.rows)} cases and {len(self.scenario_rows)} LoadGen scenarios compared"]
        if self.only_old or self.only_new:
            note.append(f"{len(self.only_old)} only in the old run, {len(self.only_new)} only in the new one")
        return "; ".join(note)

    def check(self) -> None:
        """Raise unless the runs share a case (UnsupportedError) and none regressed (CheckFailed, naming the
        worst)."""
        if not self.rows and not self.scenario_rows:
            raise UnsupportedError("the two runs have no case in common (matched on model, image size, device, "
                                   "backend, precision, memory format, batch size, threads)")
        bad = self.regressions
        if bad:
            worst = max(bad, key=lambda r: r["change_pct"] if r["change_pct"] is not None else float("inf"))
            what = f"{worst['change_pct']:+.1f}%" if worst["change_pct"] is not None else worst["verdict"]
            at = f"batch {worst['batch_size']}" if "batch_size" in worst else f"{worst['scenario']} {worst['metric']}"
            raise CheckFailed(f"{len(bad)} of {len(self.rows) + len(self.scenario_rows)} cases regressed beyond "
                              f"{self.threshold * 100:g}% (worst: {worst['model']} {worst['backend']} "
                              f"{worst['precision']} {worst['memory_format']} {at}: {what})")


def _verdict(old: dict, new: dict, threshold: float) -> tuple[float | None, str]:
    if old["status"] != "ok" and new["status"] != "ok":
        return None, "not run"
    if new["status"] != "ok":
        return None, "failed now"
    if old["status"] != "ok":
        return None, "runs now"
    change = new["median_ms"] / old["median_ms"] - 1
    if change > threshold:
        return change * 100, "slower"
    return change * 100, "faster" if change < -threshold else "same"


def compare_runs(new: dict, old: dict, threshold: float = 0.05, allow_different_machines: bool = False) -> Comparison:
    """Match the cases of two runs on MATCH_KEYS and judge each: "slower" when the new median is more than
    `threshold` above the old one, "failed now" when a case that ran no longer does. Refuses runs from
    different hardware unless `allow_different_machines` (then they are listed in `warnings`)."""
    hardware, software = environment_differences(old, new)
    if hardware and not allow_different_machines:
        raise ConfigError(f"these runs come from different machines ({'; '.join(hardware)}): their speed ratios say "
                          f"nothing about the code. Compare runs made on one machine, or pass "
                          f"--allow-different-machines to compare anyway")
    # a backend's variants (torch.compile modes, onnxruntime with CUDA graphs) are cases of their own; LoadGen's
    # scenario rows are compared by their own metric below
    old_rows = {(*(r[k] for k in MATCH_KEYS), variant(r)): r for r in old["results"] if not r.get("scenario")}
    new_rows = {(*(r[k] for k in MATCH_KEYS), variant(r)): r for r in new["results"] if not r.get("scenario")}
    rows = []
    for key, n in new_rows.items():
        o = old_rows.get(key)
        if o is None:
            continue
        change, verdict = _verdict(o, n, threshold)
        noisy = bool(o.get("noisy") or n.get("noisy"))
        rows.append({**dict(zip(MATCH_KEYS, key[:-1], strict=True)), "backend": label(n),
                     "old_median_ms": o.get("median_ms"),
                     "new_median_ms": n.get("median_ms"), "change_pct": change, "noisy": noisy, "verdict": verdict})
    old_scenarios, new_scenarios = _scenario_index(old), _scenario_index(new)
    return Comparison(rows, threshold,
                      [k for k in old_rows if k not in new_rows] + [k for k in old_scenarios if k not in new_scenarios],
                      [k for k in new_rows if k not in old_rows] + [k for k in new_scenarios if k not in old_scenarios],
                      hardware + software,
                      [_scenario_row(key, o, new_scenarios[key], threshold) for key, o in old_scenarios.items()
                       if key in new_scenarios])


def _scenario_index(run: dict) -> dict[tuple, dict]:
    return {tuple(r["scenario"]["name"] if k == "scenario" else r[k] for k in SCENARIO_MATCH_KEYS): r
            for r in run["results"] if r.get("scenario")}


def _metric(row: dict) -> float | None:
    """The scenario's headline: SingleStream's p90 and MultiStream's p99 latency, Server's highest VALID rate
    (target_qps), Offline's samples per second."""
    block = row["scenario"]
    if row["status"] != "ok":
        return None
    name = block["name"]
    if name == "server":
        return block.get("target_qps") if block.get("result") == "VALID" else None
    return block.get({"singlestream": "p90_ms", "multistream": "p99_ms"}.get(name, "samples_per_s"))


def _scenario_row(key: tuple, old: dict, new: dict, threshold: float) -> dict:
    name = key[-1]
    metric = {"singlestream": "p90_ms", "multistream": "p99_ms", "server": "target_qps"}.get(name, "samples_per_s")
    a, b = _metric(old), _metric(new)
    old_result, new_result = old["scenario"].get("result"), new["scenario"].get("result")
    change = None
    if old["status"] == "ok" and new["status"] != "ok":
        verdict = "failed now"
    elif old_result == "VALID" and new_result == "INVALID":
        verdict = "invalid now"
    elif a is None or b is None or a <= 0 or b <= 0:
        verdict = "not compared"
    else:
        # positive: worse, whichever way the metric points
        change = (b / a - 1) if metric in LOWER_IS_BETTER else (a / b - 1)
        verdict = "slower" if change > threshold else "faster" if change < -threshold else "same"
        change *= 100
    return {**dict(zip(SCENARIO_MATCH_KEYS, key, strict=True)), "metric": metric, "old": a, "new": b,
            "change_pct": change, "old_result": old_result, "new_result": new_result, "verdict": verdict}
