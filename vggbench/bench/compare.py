"""Comparing two benchmark runs case by case, for regression gates. Never measures anything.

A speed ratio means something only between runs on the same hardware: another CPU model, core count or
GPU changes every number for reasons that have nothing to do with the code. Such comparisons are refused
unless asked for explicitly; different software (torch, onnxruntime, Python) on the same hardware is
what a regression check is for, so it is only pointed out.

Each case is judged from the raw samples of both runs (see `judge`): a few seconds of timing on a shared machine
cannot tell a 15% difference from noise, and two medians compared with a fixed threshold call that noise a
regression.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.errors import CheckFailed, ConfigError, UnsupportedError
from .confidence import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    MIN_SAMPLES,
    bootstrap_ratio,
    mann_whitney_p,
    noisy,
    samples,
)
from .report import label, variant

MATCH_KEYS = ("model", "image_size", "device", "backend", "precision", "memory_format", "batch_size", "threads")
# change: new median / old median - 1 (positive: slower), with its 95% interval and Mann-Whitney U's p-value; why:
# what made a verdict inconclusive, or that a row without samples was judged on its median alone
COMPARE_COLUMNS = (*MATCH_KEYS, "old_median_ms", "new_median_ms", "change_pct", "change_low_pct", "change_high_pct",
                   "p_value", "verdict", "why")
# a case that ran in both: what its interval says against --threshold
CASE_VERDICTS = ("regressed", "improved", "unchanged", "inconclusive")
FAIL_ON = ("regressed", "inconclusive")  # --fail-on: inconclusive fails on both
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
        """Cases that regressed or no longer run, and LoadGen scenarios slower or INVALID now."""
        return [r for r in (*self.rows, *self.scenario_rows)
                if r["verdict"] in ("regressed", "slower", "failed now", "invalid now")]

    @property
    def inconclusive(self) -> list[dict]:
        return [r for r in self.rows if r["verdict"] == "inconclusive"]

    def summary(self) -> str:
        """How many cases were compared with how many of each verdict, and how many were in one run only."""
        verdicts: dict[str, int] = {}
        for r in self.rows:
            verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
        counts = f" ({', '.join(f'{n} {v}' for v, n in verdicts.items())})" if verdicts else ""
        note = [f"{len(self.rows)} cases compared{counts}"]
        if self.scenario_rows:
            note = [f"{len(self.rows)} cases{counts} and {len(self.scenario_rows)} LoadGen scenarios compared"]
        if self.only_old or self.only_new:
            note.append(f"{len(self.only_old)} only in the old run, {len(self.only_new)} only in the new one")
        return "; ".join(note)

    def check(self, fail_on: str = "regressed") -> None:
        """Raise unless the runs share a case (UnsupportedError) and none regressed (CheckFailed, naming the
        worst); with fail_on="inconclusive", an inconclusive case fails too."""
        if not self.rows and not self.scenario_rows:
            raise UnsupportedError("the two runs have no case in common (matched on model, image size, device, "
                                   "backend, precision, memory format, batch size, threads)")
        if fail_on not in FAIL_ON:
            raise ConfigError(f"fail_on must be one of {', '.join(FAIL_ON)}, got {fail_on!r}")
        total = len(self.rows) + len(self.scenario_rows)
        bad = self.regressions
        if bad:
            worst = max(bad, key=lambda r: r["change_pct"] if r["change_pct"] is not None else float("inf"))
            what = f"{worst['change_pct']:+.1f}%" if worst["change_pct"] is not None else worst["verdict"]
            if worst.get("change_low_pct") is not None:
                what += f" [{worst['change_low_pct']:+.1f}%, {worst['change_high_pct']:+.1f}%]"
            raise CheckFailed(f"{len(bad)} of {total} cases regressed beyond {self.threshold * 100:g}% (worst: "
                              f"{_where(worst)}: {what})")
        if fail_on == "inconclusive" and self.inconclusive:
            first = self.inconclusive[0]
            raise CheckFailed(f"{len(self.inconclusive)} of {total} cases inconclusive (--fail-on inconclusive; "
                              f"first: {_where(first)}: {first['why']})")


def _where(row: dict) -> str:
    at = f"batch {row['batch_size']}" if "batch_size" in row else f"{row['scenario']} {row['metric']}"
    return f"{row['model']} {row['backend']} {row['precision']} {row['memory_format']} {at}"


def judge(old: dict, new: dict, threshold: float, resamples: int = BOOTSTRAP_RESAMPLES,
          seed: int = BOOTSTRAP_SEED) -> dict:
    """One case of two runs: change_pct (new median / old median - 1, in %, positive: slower), its 95% interval
    (change_low_pct, change_high_pct: a seeded percentile bootstrap of the ratio of medians over both runs' samples),
    p_value (Mann-Whitney U, two-sided), verdict and why.

    With `threshold` the smallest change that matters: "regressed" when the whole interval lies above +threshold,
    "improved" when below -threshold, "unchanged" when within ±threshold, "inconclusive" otherwise, and whenever
    either row is noisy (its median's interval wider than ±5%), ran under load or has fewer than MIN_SAMPLES
    samples: such a row cannot carry a verdict either way. Rows without samples (written by hand or by other
    tools) are judged on their medians alone, as before the intervals, unless one is flagged noisy. A case that
    ran in one run only: "failed now", "runs now"; in neither: "not run"."""
    out = {"change_pct": None, "change_low_pct": None, "change_high_pct": None, "p_value": None, "why": ""}
    if old["status"] != "ok" or new["status"] != "ok":
        verdict = "not run" if old["status"] != "ok" and new["status"] != "ok" else \
            "failed now" if new["status"] != "ok" else "runs now"
        return {**out, "verdict": verdict}
    change = new["median_ms"] / old["median_ms"] - 1
    out["change_pct"] = change * 100
    doubts = [f"{which} {'ran under load' if row.get('under_load') is True else 'noisy'}"
              for which, row in (("old", old), ("new", new)) if noisy(row)]
    a, b = samples(old), samples(new)
    if not a or not b:
        low = high = change
        why = ["no samples: medians alone"]
    else:
        fewest = min(len(a), len(b))
        if fewest < MIN_SAMPLES:
            doubts.append(f"{fewest} samples (fewer than {MIN_SAMPLES})")
        low, high = (r - 1 for r in bootstrap_ratio(a, b, resamples, seed))
        out.update(change_low_pct=low * 100, change_high_pct=high * 100, p_value=mann_whitney_p(a, b))
        why = []
    if doubts:
        verdict, why = "inconclusive", why + doubts
    elif low > threshold:
        verdict = "regressed"
    elif high < -threshold:
        verdict = "improved"
    elif -threshold <= low and high <= threshold:
        verdict = "unchanged"
    else:
        verdict = "inconclusive"
        why.append(f"interval crosses ±{threshold * 100:g}%")
    return {**out, "verdict": verdict, "why": "; ".join(why)}


def compare_runs(new: dict, old: dict, threshold: float = 0.05, allow_different_machines: bool = False) -> Comparison:
    """Match the cases of two runs on MATCH_KEYS and judge each (see `judge`): "regressed" when the interval of the
    change lies beyond +`threshold`, "failed now" when a case that ran no longer does. Refuses runs from different
    hardware unless `allow_different_machines` (then they are listed in `warnings`)."""
    hardware, software = environment_differences(old, new)
    if hardware and not allow_different_machines:
        raise ConfigError(f"these runs come from different machines ({'; '.join(hardware)}): their speed ratios say "
                          f"nothing about the code. Compare runs made on one machine, or pass "
                          f"--allow-different-machines to compare anyway")
    # a backend's variants (torch.compile modes, onnxruntime with CUDA graphs) are cases of their own; LoadGen's
    # scenario rows are compared by their own metric below
    # a cluster's rows (`run --cluster`) are matched within their machine kind
    old_rows = {(*(r[k] for k in MATCH_KEYS), variant(r), r.get("machine")): r for r in old["results"]
                if not r.get("scenario")}
    new_rows = {(*(r[k] for k in MATCH_KEYS), variant(r), r.get("machine")): r for r in new["results"]
                if not r.get("scenario")}
    rows = []
    for key, n in new_rows.items():
        o = old_rows.get(key)
        if o is None:
            continue
        machine = f" on {n['machine']}" if n.get("machine") else ""
        rows.append({**dict(zip(MATCH_KEYS, key[:len(MATCH_KEYS)], strict=True)), "backend": label(n) + machine,
                     "old_median_ms": o.get("median_ms"), "new_median_ms": n.get("median_ms"),
                     "noisy": noisy(o) or noisy(n), **judge(o, n, threshold)})
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
