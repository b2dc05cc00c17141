"""Rendering rows of results as a table, GitHub markdown, CSV or JSON. Never measures anything."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence

from ..core.timing import NOISY_RELATIVE_CI
from .confidence import MIN_SAMPLES, images_interval, median_interval, noisy, plus_minus, ratio_interval

FORMATS = ("table", "github", "csv", "json")


def _cell(value):
    # None stays None (tabulate prints missingval), so that a column of numbers with gaps is still
    # formatted as numbers
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value


def render(rows: Sequence[dict], fmt: str = "table", columns: Sequence[str] | None = None,
           floatfmt: str | Sequence[str] = ".4g") -> str:
    """Rows of dicts as text. `columns` picks and orders keys (default: the first row's keys);
    floatfmt: one format, or one per column (table and github)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    columns = list(columns or (rows[0].keys() if rows else []))
    if fmt == "json":
        return json.dumps([{c: row.get(c) for c in columns} for row in rows], indent=2, default=str)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue().rstrip("\n")
    from tabulate import tabulate

    table = [[_cell(row.get(c)) for c in columns] for row in rows]
    return tabulate(table, headers=columns, tablefmt="github" if fmt == "github" else "simple",
                    floatfmt=floatfmt, intfmt=",", disable_numparse=False, missingval="-")


# --- benchmark results ------------------------------------------------------------------------------------

GROUP_KEYS = ("model", "image_size", "device")
RUN_COLUMNS = ("backend", "precision", "memory_format", "batch_size", "median_ms", "p90_ms", "images_per_s",
               "gflops_per_s", "peak_pct", "theoretical_pct", "speedup", "noisy", "status")
# csv and json also give the intervals' ends (tables print them as value ± the larger side) and the load flag
INTERVAL_COLUMNS = ("median_ci_low_ms", "median_ci_high_ms", "images_per_s_low", "images_per_s_high", "speedup_low",
                    "speedup_high", "under_load")
LOAD_MARK = "*"  # after the backend in tables: the row ran under load
_PCT = ("peak_pct", "theoretical_pct")
DEFAULT_BASELINE = "eager:fp32:contiguous"
REASON_WIDTH = 90  # table and github formats shorten long reasons; csv and json keep them whole
# table and github: 4 significant digits without exponents (numbers are rounded first), 1 decimal for %
_RUN_FLOATFMT = [".1f" if c in _PCT else ".2f" if c == "speedup" else "g" for c in RUN_COLUMNS]
_SIGNIFICANT = ("median_ms", "p90_ms", "images_per_s", "gflops_per_s")
# shown when a row has it (`run --cross-check`): the row's images/s over its runtime's own tool's
CROSS_CHECK = "cross_check"


def _significant(x: float | None, digits: int = 4) -> float | None:
    if not x or not math.isfinite(x):
        return x
    return round(x, digits - 1 - math.floor(math.log10(abs(x))))


def _rounded(row: dict, columns: Sequence[str]) -> dict:
    """The numbers of `columns` to 4 significant digits (those already written as 'value ± half' stay)."""
    return {k: _significant(v) if k in columns and isinstance(v, (int, float)) else v for k, v in row.items()}


def parse_baseline(text: str) -> tuple[str, str, str]:
    """'eager:fp32:contiguous' -> (backend, precision, memory_format); precision and format may be left out."""
    from ..core.errors import ConfigError

    parts = [p.strip() for p in text.split(":")]
    if not 1 <= len(parts) <= 3 or not all(parts):
        raise ConfigError(f"baseline must look like backend[:precision[:memory_format]], e.g. {DEFAULT_BASELINE}; "
                          f"got {text!r}")
    from ..backends import resolve_backend
    from ..backends.target import check_memory_format, check_precision
    from ..core.errors import VggbenchError

    backend, precision, memory_format = parts + DEFAULT_BASELINE.split(":")[len(parts):]
    try:  # names the registry knows, so that a typo is not a baseline that matches nothing
        return resolve_backend(backend), check_precision(precision), check_memory_format(memory_format)
    except VggbenchError as e:
        raise ConfigError(f"--baseline {text}: {e}") from None


def _status(row: dict, width: int | None) -> str:
    if row["status"] == "ok":
        return "ok"
    text = f"{row['status']}: {row.get('reason') or ''}".rstrip(": ")
    return text if width is None or len(text) <= width else text[:width - 3] + "..."


def run_rows(results: list[dict], baseline: str = DEFAULT_BASELINE, reason_width: int | None = None) -> list[dict]:
    """One row per result: group keys, threads, RUN_COLUMNS and INTERVAL_COLUMNS. speedup is images_per_s over the
    baseline's at the same model, image size, device, threads and batch size, with an interval from both rows'
    (confidence.ratio_interval). noisy: from the median's interval and the load (confidence.noisy)."""
    backend, precision, memory_format = parse_baseline(baseline)
    results = [r for r in results if not r.get("scenario")]  # LoadGen's rows have their own table
    # a cluster's rows are compared within their machine kind
    base = {(r.get("machine"), r["model"], r["image_size"], r["device"], r["threads"], r["batch_size"]): r
            for r in results if (r["backend"], r["precision"], r["memory_format"]) == (backend, precision, memory_format)
            and r["status"] == "ok" and r.get("images_per_s")}
    rows = []
    for r in results:
        reference = base.get((r.get("machine"), r["model"], r["image_size"], r["device"], r["threads"],
                              r["batch_size"]))
        speedup = r["images_per_s"] / reference["images_per_s"] if reference and r.get("images_per_s") else None
        ips, ips_ref = images_interval(r), reference and images_interval(reference)
        speed = ((1.0, 1.0) if reference is r else ratio_interval(ips, ips_ref)) if speedup and ips and ips_ref \
            else (None, None)
        ci = median_interval(r) or (None, None)
        check = r.get(CROSS_CHECK) or {}
        rows.append({**{k: r[k] for k in (*GROUP_KEYS, "threads")},
                     **{k: r.get(k) for k in RUN_COLUMNS}, "backend": label(r), "speedup": speedup,
                     "noisy": noisy(r) if r["status"] == "ok" else r.get("noisy"),
                     CROSS_CHECK: check.get("ratio"), f"{CROSS_CHECK}_low": check.get("ratio_low"),
                     f"{CROSS_CHECK}_high": check.get("ratio_high"), "status": _status(r, reason_width),
                     "median_ci_low_ms": ci[0], "median_ci_high_ms": ci[1],
                     "images_per_s_low": ips[0] if ips else None, "images_per_s_high": ips[1] if ips else None,
                     "speedup_low": speed[0], "speedup_high": speed[1], "under_load": r.get("under_load"),
                     "samples": len(r.get("samples_ms") or ()), "machine": r.get("machine"),
                     "deployable": deployable(r["backend"])})
    return rows


def _with_intervals(row: dict, pairs: Sequence[tuple[str, int | None]] = (("images_per_s", None), ("speedup", 2))) \
        -> dict:
    """A table row with its numbers as 'value ± half-width' (the larger side of the interval) where it has one,
    from the unrounded values. pairs: (column, decimals for a value with a zero-width interval; None: 4 significant
    digits)."""
    out = dict(row)
    for column, places in pairs:
        value, low, high = row.get(column), row.get(f"{column}_low"), row.get(f"{column}_high")
        if value is None or low is None or high is None:
            continue
        text = plus_minus(value, low, high)
        if places is not None and low == high:
            text = f"{value:.{places}f} ± 0"
        out[column] = text
    return out


def variant(row: dict) -> str:
    """What sets a row apart from others of its backend, precision and layout: torch.compile's mode, onnxruntime
    with CUDA graphs (its backend settings' variant, recorded with the row); "" for none."""
    return row.get("variant") or ""


def label(row: dict) -> str:
    """The backend as tables show it: with its variant, e.g. "compile max-autotune"."""
    return " ".join(filter(None, (row["backend"], variant(row))))


def group_title(key: tuple, rows: list[dict], environment: dict) -> str:
    model, image_size, device = key
    if device.startswith("cuda"):
        gpus = (environment.get("cuda") or {}).get("devices") or []
        index = int(device.partition(":")[2] or 0)
        where = gpus[index]["name"] if index < len(gpus) else device
    else:
        where = (environment.get("cpu") or {}).get("model") or "cpu"
    threads = sorted({r["threads"] for r in rows})
    title = f"{model} at {image_size}x{image_size} on {device} ({where}), {'/'.join(map(str, threads))} threads"
    ceilings = [c for c in environment.get("ceilings", []) if c["device"] == device]
    if ceilings:  # the measured ceiling (best GEMM or row) and the theoretical one, per precision
        text = ", ".join(f"{c['precision']} {_gflops(c['measured_gflops_per_s'])} measured ({c['measured_source']})"
                         + (f" / {_gflops(c['theoretical_gflops_per_s'])} theoretical"
                            + (" (set aside: a row ran faster)" if c.get("theoretical_set_aside") else "")
                            if c.get("theoretical_gflops_per_s") else "") for c in ceilings)
        return f"{title}; ceilings GFLOP/s: {text}"
    peaks = ", ".join(f"{p['precision']} {p['gflops_per_s']:.1f}" for p in environment.get("gemm_peaks", [])
                      if p["device"] == device)
    return title + (f"; GEMM peak GFLOP/s: {peaks}" if peaks else "")


def _environment_of(data: dict, machine: str | None) -> dict:
    """The environment that a table's title describes: the run's, or for a cluster's rows that of the first node
    that ran one of them (the node's own CPU and ceilings; from a journal, which has no node environments, the CPU
    its rows name)."""
    environment = data.get("environment") or {}
    nodes = [r["node"] for r in data["results"] if r.get("machine") == machine and isinstance(r.get("node"), dict)]
    if not nodes:
        return environment
    found = (environment.get("nodes") or {}).get(nodes[0].get("id"))
    return found if isinstance(found, dict) else {"cpu": {"model": nodes[0].get("cpu")}}


# --- machine kinds side by side (a cluster's run) --------------------------------------------------------------

MACHINE_COLUMNS = ("model", "image_size", "backend", "precision", "memory_format", "batch_size", "machine",
                   "images_per_s", "vs_fastest", "usd_per_hour", "usd_per_million_images")


def machine_rows(results: list[dict], prices: dict[str, float] | None = None) -> list[dict]:
    """Each case that ran on more than one machine kind (or on any, with prices), one row per kind: its images/s,
    that over the fastest kind's for the case, and with a price per hour of the kind, the cost of a million
    images at that rate. Only rows that ran and passed parity (status ok) count."""
    prices = prices or {}
    cases: dict[tuple, list[dict]] = {}
    for r in results:
        if r.get("machine") and r["status"] == "ok" and r.get("images_per_s") and not r.get("scenario"):
            key = (r["model"], r["image_size"], label(r), r["precision"], r["memory_format"], r["batch_size"])
            cases.setdefault(key, []).append(r)
    rows = []
    for key, found in cases.items():
        fastest = max(r["images_per_s"] for r in found)
        for r in found:
            price = prices.get(r["machine"])
            cost = price / 3600 / r["images_per_s"] * 1e6 if price is not None else None
            rows.append({**dict(zip(MACHINE_COLUMNS[:6], key, strict=True)), "machine": r["machine"],
                         "images_per_s": r["images_per_s"], "vs_fastest": r["images_per_s"] / fastest,
                         "usd_per_hour": price, "usd_per_million_images": cost})
    return rows


def render_machines(data: dict, fmt: str = "table", prices: dict[str, float] | None = None) -> str:
    """`report --machines`: the machine kinds of a cluster's run side by side, with their cost given prices."""
    rows = machine_rows(data["results"], prices)
    if not rows:
        return "no rows of a cluster's run (`run --cluster` with machines) that ran: nothing to compare across kinds"
    table = render([_rounded(r, ("images_per_s", "vs_fastest", "usd_per_million_images")) for r in rows]
                   if fmt in ("table", "github") else rows, fmt, MACHINE_COLUMNS)
    if fmt in ("csv", "json"):
        return table
    note = ("vs_fastest: images/s over the fastest kind's for the same case; usd_per_million_images: the kind's price "
            "per hour (--prices) / 3600 / images/s x 1e6")
    return _section("machine kinds side by side", table, fmt) + "\n\n" + note


def read_prices(path: str | os.PathLike) -> dict[str, float]:
    """A price table: TOML, machine kind = price per hour (in any one currency; the view says usd), at the top
    level or in a [prices] table."""
    from pathlib import Path

    from ..core.documents import loads_toml, read_text
    from ..core.errors import ConfigError

    try:
        data = loads_toml(read_text(Path(path)), str(path))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"price table {path} cannot be read: {getattr(e, 'strerror', None) or e}") from None
    except ValueError as e:  # tomllib's TOMLDecodeError
        raise ConfigError(f"price table {path} is not valid TOML: {e}") from None
    table = data.get("prices", data) if isinstance(data.get("prices"), dict) else data
    prices = {}
    for kind, price in table.items():
        if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price) or price < 0:
            raise ConfigError(f"price table {path}: {kind} must be a price per hour (a number at least 0), "
                              f"got {price!r}")
        prices[kind] = float(price)
    return prices


def _gflops(value) -> str:
    return "-" if value is None else f"{value:.1f}" if value < 1e4 else f"{value:.4g}"


FASTEST_COLUMNS = ("model", "image_size", "device", "threads", "batch_size", "fastest", "images_per_s", "speedup",
                   "fastest_deployable", "deployable_images_per_s", "deployable_speedup",
                   "fastest_fp32", "fp32_images_per_s", "fp32_speedup")
# the winners of fastest_rows besides the fastest overall: (key prefix, which rows compete)
_WINNER_PREFIXES = ("", "deployable_", "fp32_")
_FASTEST_INTERVALS = ("images_per_s_low", "images_per_s_high", "speedup_low", "speedup_high")
NO_CLEAR_WINNER = "no clear winner"


def fastest_rows(results: list[dict], baseline: str = DEFAULT_BASELINE) -> list[dict]:
    """Per model / image size / device / threads / batch size: the fastest case that ran and passed its
    parity check (status ok), over every precision; the fastest deployable one (its backend's artifact runs without
    vggbench: what `vggbench deploy` can ship); and the fastest in fp32 alone; or "no clear winner: ..." where the
    numbers cannot tell (see _winner)."""
    groups: dict[tuple, list[dict]] = {}
    for row in run_rows(results, baseline):
        if row["status"] == "ok" and row.get("images_per_s"):
            groups.setdefault((*(row[k] for k in GROUP_KEYS), row["threads"], row["batch_size"], row["machine"]),
                              []).append(row)
    # a cluster's rows: the fastest per machine kind (a column only where there are kinds)
    keys = (*GROUP_KEYS, "threads", "batch_size", "machine")
    return [{**{k: v for k, v in zip(keys, key, strict=True) if k != "machine" or v is not None},
             **_winner(rows, ""), **_winner([r for r in rows if r["deployable"]], "deployable_"),
             **_winner([r for r in rows if r["precision"] == "fp32"], "fp32_")}
            for key, rows in groups.items()]


def deployable(backend: str) -> bool:
    """Whether a backend's artifact runs without vggbench (its registry record says); a backend this vggbench does
    not know (a row of a newer version, a plugin not installed) is not offered as deployable."""
    from ..backends.registry import get_backend
    from ..core.errors import UnsupportedError

    try:
        return get_backend(backend).deployable
    except UnsupportedError:
        return False


def _what(row: dict) -> str:
    return f"{row['backend']} {row['precision']} {row['memory_format']}"


def _names(rows: list[dict]) -> str:
    names = [_what(r) for r in rows]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _winner(rows: list[dict], prefix: str) -> dict:
    """The fastest of `rows` with its images/s and speedup (and their intervals), under keys `prefix`...; no winner
    is named when another row's images/s interval overlaps the fastest's (the order is not known at 95%), or when
    any of them ran under load: a busy machine slows runtimes unequally (onnxruntime's spinning threads lose most
    on oversubscribed cores), so even rows that all ran under load can come out in the wrong order. A load not
    recorded (None) counts as none."""
    if not rows:
        return {}
    column = "fastest" if not prefix else f"fastest_{prefix.rstrip('_')}"
    best = max(rows, key=lambda r: r["images_per_s"])
    low = best["images_per_s_low"] if best["images_per_s_low"] is not None else best["images_per_s"]
    overlap = [r for r in rows if r is not best
               and (r["images_per_s_high"] if r["images_per_s_high"] is not None else r["images_per_s"]) >= low]
    loaded = [r for r in rows if r.get("under_load") is True] if len(rows) > 1 else []
    if overlap or loaded:
        why = ([f"{_names([best, *overlap])} overlap"] if overlap else []) + \
              ([f"{_names(loaded)} ran under load"] if loaded else [])
        return {column: f"{NO_CLEAR_WINNER}: {'; '.join(why)}"}
    return {column: _what(best), **{f"{prefix}{k}": best[k] for k in ("images_per_s", "speedup", *_FASTEST_INTERVALS)}}


def render_fastest(data: dict, fmt: str = "table", baseline: str = DEFAULT_BASELINE) -> str:
    """fastest_rows as a table: images/s and speedup as value ± half-width; csv and json with the intervals' ends."""
    rows = fastest_rows(data["results"], baseline)
    columns = ("machine", *FASTEST_COLUMNS) if any("machine" in r for r in rows) else FASTEST_COLUMNS
    if fmt in ("table", "github"):
        rows = [_rounded(_with_intervals(r, [(f"{p}{c}", places) for p in _WINNER_PREFIXES for c, places in
                                             (("images_per_s", None), ("speedup", 2))]),
                         tuple(f"{p}images_per_s" for p in _WINNER_PREFIXES)) for r in rows]
    else:
        columns = (*columns, *(f"{p}{c}" for p in _WINNER_PREFIXES for c in _FASTEST_INTERVALS))
    floatfmt = [".2f" if c.endswith("speedup") else "g" for c in columns]
    return render(rows, fmt, columns, floatfmt)


# --- a tune's search ---------------------------------------------------------------------------------------

TUNE_COLUMNS = ("trial", "state", "backend", "precision", "memory_format", "batch_size", "threads", "settings", "value",
                "winner", "reason")


def tune_rows(data: dict) -> list[dict]:
    """One row per trial of a `vggbench tune` results file (settings["tune"]): what it tried, how it ended (COMPLETE,
    PRUNED after its probe, FAIL) and its objective; the winner marked."""
    block = (data.get("settings") or {}).get("tune") or {}
    winner = (block.get("winner") or {}).get("trial")
    return [{"trial": t["number"], "state": t["state"], "backend": t["backend"], "precision": t["precision"],
             "memory_format": t["memory_format"], "batch_size": t["batch_size"], "threads": t["threads"],
             "settings": " ".join(f"{k}={json.dumps(v)}" for k, v in (t.get("settings") or {}).items()),
             "value": _significant(t.get("value")), "winner": t["number"] == winner, "reason": t.get("reason", "")}
            for t in block.get("trials", [])]


def render_tune(data: dict, fmt: str = "table") -> str:
    """The search of a tune results file: its goal, every trial and the winner; "" for other results files."""
    block = (data.get("settings") or {}).get("tune")
    if not block:
        return ""
    rows = tune_rows(data)
    if fmt in ("csv", "json"):
        return render(rows, fmt, TUNE_COLUMNS)
    unit = "median ms" if block["goal"] == "latency" else "images/s"
    bound = f" with p99 within {block['bound_ms']:g} ms" if block.get("bound_ms") else ""
    winner = block.get("winner")
    won = (f"winner: trial {winner['trial']} (row {winner['row']}), {_significant(winner['value'])} {unit}"
           if winner else "no trial completed")
    title = (f"tune: goal {block['goal']}{bound} (value: {unit}, {block['direction']}d), {len(rows)} trial(s) by "
             f"Optuna {block.get('optuna', '')} {block.get('sampler', '')} with {block.get('pruner', '')}; {won}")
    notes = [f"left out: {line}" for line in block.get("skipped", [])]
    if block.get("stopped"):
        notes.append(f"stopped: {block['stopped']}")
    return _section(title, render(rows, fmt, TUNE_COLUMNS), fmt) + "".join(f"\n{n}" for n in notes)


def _section(title: str, table: str, fmt: str) -> str:
    """A titled table: the title in bold for github (markdown), plain otherwise."""
    return (f"**{title}**" if fmt == "github" else title) + "\n\n" + table


# --- LoadGen scenarios -------------------------------------------------------------------------------------

SCENARIO_COLUMNS = ("backend", "precision", "memory_format", "scenario", "result", "samples_per_s", "target_qps",
                    "p50_ms", "p90_ms", "p95_ms", "p97_ms", "p99_ms", "p99_9_ms", "queued_p99_ms", "compute_p99_ms",
                    "queries", "search_runs", "max_batch", "workers", "top1", "agreement_top1", "status")
_SCENARIO_SIGNIFICANT = ("samples_per_s", "target_qps", "p50_ms", "p90_ms", "p95_ms", "p97_ms", "p99_ms", "p99_9_ms",
                         "queued_p99_ms", "compute_p99_ms")


def scenario_rows(results: list[dict], reason_width: int | None = None) -> list[dict]:
    """One row per LoadGen scenario result: the target, LoadGen's verdict (and why, in status), throughput, latency
    percentiles, the SUT's own p99s (a sample's time queued, a batch's compute), its batch policy and, in accuracy
    mode, top-1 and agreement with eager fp32."""
    rows = []
    for r in results:
        block = r.get("scenario")
        if not block:
            continue
        accuracy, sut = block.get("accuracy") or {}, block.get("sut") or {}
        status = _status(r, reason_width)
        if r["status"] == "ok" and block.get("reasons"):
            status = "; ".join(block["reasons"])
            if reason_width is not None and len(status) > reason_width:
                status = status[:reason_width - 3] + "..."
        rows.append({**{k: r[k] for k in (*GROUP_KEYS, "threads", "backend", "precision", "memory_format")},
                     "scenario": block["name"], "mode": block["mode"], "result": block.get("result"),
                     **{k: block.get(k) for k in ("samples_per_s", "target_qps", "p50_ms", "p90_ms", "p95_ms",
                                                  "p97_ms", "p99_ms", "p99_9_ms", "queries", "latency_bound_ms")},
                     "queued_p99_ms": (sut.get("queued_ms") or {}).get("p99"),
                     "compute_p99_ms": (sut.get("compute_ms") or {}).get("p99"),
                     "max_batch": sut.get("max_batch"), "workers": sut.get("workers"),
                     "search_runs": (block.get("search") or {}).get("runs"),
                     "top1": accuracy.get("top1"), "agreement_top1": accuracy.get("agreement_top1"),
                     "status": status, "machine": r.get("machine")})
    return rows


def _render_scenarios(data: dict, fmt: str) -> str:
    rows = [{k: _significant(v) if k in _SCENARIO_SIGNIFICANT else v for k, v in row.items()}
            for row in scenario_rows(data["results"], REASON_WIDTH)]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["machine"], *(row[k] for k in GROUP_KEYS)), []).append(row)
    parts = [_section(f"LoadGen scenarios: {f'machine {machine}: ' if machine else ''}"
                      f"{group_title(tuple(key), group, _environment_of(data, machine))}",
                      render(group, fmt, SCENARIO_COLUMNS), fmt) for (machine, *key), group in groups.items()]
    notes = ("result: LoadGen's verdict (status says why when INVALID); latencies are LoadGen's percentiles in ms; "
             "queued/compute: the SUT's own p99 of a sample's wait in its queue and of a batch's compute; "
             "server: target_qps is the highest rate found VALID at the p99 bound; samples_per_s is what completed")
    return "\n\n".join([*parts, notes])


def render_run(data: dict, fmt: str = "table", baseline: str = DEFAULT_BASELINE) -> str:
    """A results file (see vggbench.bench.results) as text: one table per model / image size / device in table and
    github formats, one flat table in csv and json; LoadGen scenario rows in tables of their own."""
    has_runs = any(not r.get("scenario") for r in data["results"])
    has_scenarios = any(r.get("scenario") for r in data["results"])
    if has_scenarios and fmt in ("csv", "json"):
        flat = render(scenario_rows(data["results"]), fmt, [*GROUP_KEYS, "threads", *SCENARIO_COLUMNS[:3], "mode",
                                                            *SCENARIO_COLUMNS[3:], "latency_bound_ms"])
        return flat if not has_runs else render(run_rows(data["results"], baseline), fmt,
                                                [*GROUP_KEYS, "threads", *RUN_COLUMNS, *INTERVAL_COLUMNS]) + "\n" + flat
    if has_scenarios and not has_runs:
        return _render_scenarios(data, fmt)
    if fmt in ("csv", "json"):
        return render(run_rows(data["results"], baseline), fmt, [*GROUP_KEYS, "threads", *RUN_COLUMNS,
                                                                 *INTERVAL_COLUMNS])
    raw = run_rows(data["results"], baseline, REASON_WIDTH)
    mark = "\\" + LOAD_MARK if fmt == "github" else LOAD_MARK  # markdown would read a bare * as emphasis
    # the cross-check's ratio with its interval (over the rounds and the tool's runs) where it has one
    pairs = (("images_per_s", None), ("speedup", 2), (CROSS_CHECK, 2))
    rows = [_rounded(_with_intervals(row, pairs), _SIGNIFICANT)
            | ({"backend": row["backend"] + mark} if row["under_load"] is True else {}) for row in raw]
    for row in rows:  # a column of text beside "1.00 ± 0.07" takes no float format: a ratio without one gets it here
        if isinstance(row[CROSS_CHECK], float):
            row[CROSS_CHECK] = f"{row[CROSS_CHECK]:.2f}"
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["machine"], *(row[k] for k in GROUP_KEYS)), []).append(row)
    parts = []
    columns, floatfmt = RUN_COLUMNS, _RUN_FLOATFMT
    checked = [r for r in data["results"] if r.get(CROSS_CHECK)]
    if checked:
        columns, floatfmt = (*RUN_COLUMNS[:-1], CROSS_CHECK, "status"), [*_RUN_FLOATFMT[:-1], ".2f", "g"]
    for (machine, *key), group in groups.items():
        title = group_title(tuple(key), group, _environment_of(data, machine))
        title = f"machine {machine}: {title}" if machine else title
        parts.append(_section(title, render(group, fmt, columns, floatfmt), fmt))
    backend, precision, memory_format = parse_baseline(baseline)
    noisy_rows = sum(1 for r in raw if r["noisy"])
    loaded = sum(1 for r in raw if r["under_load"] is True)
    few = sum(1 for r in raw if r["status"] == "ok" and 0 < r["samples"] < MIN_SAMPLES)
    notes = [f"speedup: images/s over {backend} {precision} {memory_format} at the same batch size; "
             f"gflops_per_s = 2 x MACs x images/s; peak_pct: share of the measured ceiling of the same device and "
             f"precision (the best of the run's GEMM shapes and rows; files from before 2026-11-26: the one GEMM); "
             f"theoretical_pct: share of the datasheet or cores x clock x FLOPs/cycle ceiling, where known"]
    if any(r["images_per_s_low"] is not None for r in raw):
        notes.append("±: the larger side of the 95% confidence interval of the median time (distribution-free, from "
                     "the order statistics of the samples), as images/s; speedup's from both rows' intervals")
    if few:
        notes.append(f"{few} case(s) timed fewer than {MIN_SAMPLES} calls: no 95% interval of a median exists, their "
                     f"± is min..max (5 calls: 93.75% sure); raise --min-iters or --min-time")
    if noisy_rows:
        notes.append(f"noisy: {noisy_rows} case(s) whose median's 95% interval reaches beyond "
                     f"±{NOISY_RELATIVE_CI * 100:g}% of it or that ran under load (without samples: an IQR above 10% "
                     f"of the median); rerun on a quiet machine")
    if loaded:
        notes.append(f"{LOAD_MARK} ran under load ({loaded} case(s)): the machine was busy meanwhile (CPU pressure, "
                     f"load average; the row's load field says what ran); its numbers are slower by an unknown amount "
                     f"and no fastest is named against it")
    if checked:
        failed = sum(1 for r in checked if "error" in r[CROSS_CHECK])
        notes.append("cross_check: images/s over the runtime's own tool's, timed in a fresh process (the tool and "
                     "its command are in the results file); ± its 95% interval over the rounds and the tool's runs"
                     + (f"; {failed} check(s) failed (-)" if failed else ""))
    fastest = render_fastest(data, fmt, baseline)
    if fastest.strip():
        parts.append(_section("fastest that ran and passed parity, per batch size (and the fastest deployable: "
                              "runs without vggbench; and the fastest fp32)",
                              fastest, fmt))
    scenarios = [_render_scenarios(data, fmt)] if has_scenarios else []
    tuned = render_tune(data, fmt)
    return "\n\n".join(parts + ["\n".join(notes)] + scenarios + ([tuned] if tuned else []))
