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

    @property
    def regressions(self) -> list[dict]:
        return [r for r in self.rows if r["verdict"] in ("slower", "failed now")]

    def summary(self) -> str:
        """How many cases were compared, and how many were in one run only."""
        note = [f"{len(self.rows)} cases compared"]
        if self.only_old or self.only_new:
            note.append(f"{len(self.only_old)} only in the old run, {len(self.only_new)} only in the new one")
        return "; ".join(note)

    def check(self) -> None:
        """Raise unless the runs share a case (UnsupportedError) and none regressed (CheckFailed, naming the
        worst)."""
        if not self.rows:
            raise UnsupportedError("the two runs have no case in common (matched on model, image size, device, "
                                   "backend, precision, memory format, batch size, threads)")
        bad = self.regressions
        if bad:
            worst = max(bad, key=lambda r: r["change_pct"] if r["change_pct"] is not None else float("inf"))
            what = f"{worst['change_pct']:+.1f}%" if worst["change_pct"] is not None else worst["verdict"]
            raise CheckFailed(f"{len(bad)} of {len(self.rows)} cases regressed beyond {self.threshold * 100:g}% "
                              f"(worst: {worst['model']} {worst['backend']} {worst['precision']} "
                              f"{worst['memory_format']} batch {worst['batch_size']}: {what})")


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
    # a backend's variants (torch.compile modes, onnxruntime with CUDA graphs) are cases of their own
    old_rows = {(*(r[k] for k in MATCH_KEYS), variant(r)): r for r in old["results"]}
    new_rows = {(*(r[k] for k in MATCH_KEYS), variant(r)): r for r in new["results"]}
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
    return Comparison(rows, threshold, [k for k in old_rows if k not in new_rows],
                      [k for k in new_rows if k not in old_rows], hardware + software)
