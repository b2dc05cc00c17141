"""Rendering rows of results as a table, GitHub markdown, CSV or JSON. Never measures anything."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence

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
    """One row per result: group keys, threads, RUN_COLUMNS. speedup is images_per_s over the baseline's
    at the same model, image size, device, threads and batch size."""
    backend, precision, memory_format = parse_baseline(baseline)
    results = [r for r in results if not r.get("scenario")]  # LoadGen's rows have their own table
    base = {(r["model"], r["image_size"], r["device"], r["threads"], r["batch_size"]): r["images_per_s"]
            for r in results if (r["backend"], r["precision"], r["memory_format"]) == (backend, precision, memory_format)
            and r["status"] == "ok"}
    rows = []
    for r in results:
        reference = base.get((r["model"], r["image_size"], r["device"], r["threads"], r["batch_size"]))
        speedup = r["images_per_s"] / reference if reference and r.get("images_per_s") else None
        rows.append({**{k: r[k] for k in (*GROUP_KEYS, "threads")},
                     **{k: r.get(k) for k in RUN_COLUMNS}, "backend": label(r), "speedup": speedup,
                     CROSS_CHECK: (r.get(CROSS_CHECK) or {}).get("ratio"), "status": _status(r, reason_width)})
    return rows


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
                            if c.get("theoretical_gflops_per_s") else "") for c in ceilings)
        return f"{title}; ceilings GFLOP/s: {text}"
    peaks = ", ".join(f"{p['precision']} {p['gflops_per_s']:.1f}" for p in environment.get("gemm_peaks", [])
                      if p["device"] == device)
    return title + (f"; GEMM peak GFLOP/s: {peaks}" if peaks else "")


def _gflops(value) -> str:
    return "-" if value is None else f"{value:.1f}" if value < 1e4 else f"{value:.4g}"


FASTEST_COLUMNS = ("model", "image_size", "device", "threads", "batch_size", "fastest", "images_per_s", "speedup",
                   "fastest_fp32", "fp32_images_per_s", "fp32_speedup")


def fastest_rows(results: list[dict], baseline: str = DEFAULT_BASELINE) -> list[dict]:
    """Per model / image size / device / threads / batch size: the fastest case that ran and passed its
    parity check (status ok), over every precision, and the fastest in fp32 alone."""
    best: dict[tuple, dict] = {}
    for row in run_rows(results, baseline):
        if row["status"] != "ok" or not row.get("images_per_s"):
            continue
        key = (*(row[k] for k in GROUP_KEYS), row["threads"], row["batch_size"])
        entry = best.setdefault(key, {})
        what = f"{row['backend']} {row['precision']} {row['memory_format']}"
        if row["images_per_s"] > entry.get("images_per_s", 0):
            entry.update(fastest=what, images_per_s=row["images_per_s"], speedup=row["speedup"])
        if row["precision"] == "fp32" and row["images_per_s"] > entry.get("fp32_images_per_s", 0):
            entry.update(fastest_fp32=what, fp32_images_per_s=row["images_per_s"], fp32_speedup=row["speedup"])
    return [{**dict(zip((*GROUP_KEYS, "threads", "batch_size"), key, strict=True)), **entry} for key, entry in best.items()]


def render_fastest(data: dict, fmt: str = "table", baseline: str = DEFAULT_BASELINE) -> str:
    rows = fastest_rows(data["results"], baseline)
    if fmt in ("table", "github"):
        rows = [{k: _significant(v) if k in ("images_per_s", "fp32_images_per_s") else v for k, v in r.items()}
                for r in rows]
    floatfmt = [".2f" if c.endswith("speedup") else "g" for c in FASTEST_COLUMNS]
    return render(rows, fmt, FASTEST_COLUMNS, floatfmt)


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
                     "status": status})
    return rows


def _render_scenarios(data: dict, fmt: str) -> str:
    rows = [{k: _significant(v) if k in _SCENARIO_SIGNIFICANT else v for k, v in row.items()}
            for row in scenario_rows(data["results"], REASON_WIDTH)]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in GROUP_KEYS), []).append(row)
    parts = [_section(f"LoadGen scenarios: {group_title(key, group, data.get('environment', {}))}",
                      render(group, fmt, SCENARIO_COLUMNS), fmt) for key, group in groups.items()]
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
                                                [*GROUP_KEYS, "threads", *RUN_COLUMNS]) + "\n" + flat
    if has_scenarios and not has_runs:
        return _render_scenarios(data, fmt)
    if fmt in ("csv", "json"):
        return render(run_rows(data["results"], baseline), fmt, [*GROUP_KEYS, "threads", *RUN_COLUMNS])
    rows = [{k: _significant(v) if k in _SIGNIFICANT else v for k, v in row.items()}
            for row in run_rows(data["results"], baseline, REASON_WIDTH)]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in GROUP_KEYS), []).append(row)
    parts = []
    columns, floatfmt = RUN_COLUMNS, _RUN_FLOATFMT
    checked = [r for r in data["results"] if r.get(CROSS_CHECK)]
    if checked:
        columns, floatfmt = (*RUN_COLUMNS[:-1], CROSS_CHECK, "status"), [*_RUN_FLOATFMT[:-1], ".2f", "g"]
    for key, group in groups.items():
        title = group_title(key, group, data.get("environment", {}))
        parts.append(_section(title, render(group, fmt, columns, floatfmt), fmt))
    backend, precision, memory_format = parse_baseline(baseline)
    noisy = sum(1 for r in rows if r["noisy"])
    notes = [f"speedup: images/s over {backend} {precision} {memory_format} at the same batch size; "
             f"gflops_per_s = 2 x MACs x images/s; peak_pct: share of the measured ceiling of the same device and "
             f"precision (the best of the run's GEMM shapes and rows; files from before 2026-11-26: the one GEMM); "
             f"theoretical_pct: share of the datasheet or cores x clock x FLOPs/cycle ceiling, where known"]
    if checked:
        failed = sum(1 for r in checked if "error" in r[CROSS_CHECK])
        notes.append("cross_check: images/s over the runtime's own tool's, timed in a fresh process (the tool and "
                     "its command are in the results file)" + (f"; {failed} check(s) failed (-)" if failed else ""))
    if noisy:
        notes.append(f"noisy: {noisy} case(s) with an IQR above 10% of the median; rerun on a quiet machine")
    fastest = render_fastest(data, fmt, baseline)
    if fastest.strip():
        parts.append(_section("fastest that ran and passed parity, per batch size (and the fastest fp32)",
                              fastest, fmt))
    scenarios = [_render_scenarios(data, fmt)] if has_scenarios else []
    return "\n\n".join(parts + ["\n".join(notes)] + scenarios)
