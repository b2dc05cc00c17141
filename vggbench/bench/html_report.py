"""`vggbench report RESULTS --html DIR`: one self-contained static page (DIR/index.html) that opens without a
network: CSS and JavaScript inline, matplotlib's plots as PNG data URIs, the history charts as inline SVG.

It holds the run's tables with their 95% intervals, images/s against batch size (log axes, the intervals as bands),
the share of the measured ceiling (roofline), LoadGen's scenarios, the per-layer error of the newest `verify
--layers` profiles in the results database (with each stage's time where a profile timed it), and for each case its
history across commits and dates on the same machine, from the results database, each run judged against the one
before it by the significance gate of `report --compare` (vggbench.bench.compare.judge): regressions are marked.
The folder is written whole or not at all (a temp folder renamed into place) and replaces only a report folder that
vggbench wrote.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from pathlib import Path

from ..core.fileio import atomic_dir, check_replaceable
from .compare import judge
from .confidence import images_interval, plus_minus
from .report import DEFAULT_BASELINE, GROUP_KEYS, group_title, label, run_rows, scenario_rows

MARKER = ".vggbench-report"  # in every folder this module writes: what --force may replace
PAGE = "index.html"
HISTORY_WIDTH, HISTORY_HEIGHT = 640, 220

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;
padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.85em}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right;white-space:nowrap}
th{background:#f4f4f4;cursor:pointer;user-select:none}td.text{text-align:left;white-space:normal;max-width:32em}
tr.bad td{background:#fff0f0}tr.noisy td{color:#777}
div.scroll{overflow-x:auto}img.plot{max-width:100%;height:auto;display:block;margin:.5em 0}
svg.history{background:#fcfcfc;border:1px solid #eee;display:block;margin:.25em 0 1em}
svg.history .point{fill:#1f77b4}svg.history .point.regressed{fill:#d62728}
svg.history .point.improved{fill:#2ca02c}svg.history .line{fill:none;stroke:#1f77b4;stroke-width:1.5}
svg.history .bar{stroke:#9ab;stroke-width:1}svg.history text{font-size:10px;fill:#555}
.note{color:#555;font-size:.85em}.regressed-label{color:#d62728;font-weight:bold}
dl.env{display:grid;grid-template-columns:max-content auto;gap:.2em 1em;font-size:.9em}dl.env dt{font-weight:bold}
"""

# sorts a table by the column clicked (numbers as numbers); nothing is fetched
_JS = """
document.querySelectorAll('table.sortable th').forEach(function (th, _) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], col = th.cellIndex;
    var asc = th.dataset.order !== 'asc';
    th.dataset.order = asc ? 'asc' : 'desc';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v || a.cells[col].textContent, y = b.cells[col].dataset.v || b.cells[col].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
var regressed = document.querySelectorAll('svg.history .point.regressed').length;
var count = document.getElementById('regression-count');
if (count) { count.textContent = regressed ? regressed + ' regression(s) in the history' : 'no regression in the history'; }
"""


def _not_report(folder: Path) -> str | None:
    return None if (folder / MARKER).is_file() else f"it holds no {MARKER} (no vggbench report)"


def check_html_dir(path: str | os.PathLike, force: bool = False) -> Path:
    """`path` unless it exists and may not be replaced: only with `force`, and only a folder a report wrote."""
    check_replaceable(path, force=force, not_ours=_not_report,
                      hint="pass --force to replace the report an earlier `report --html` wrote")
    return Path(path)


def write_html(data: dict, out: str | os.PathLike, *, source: str | os.PathLike | None = None,
               baseline: str = DEFAULT_BASELINE, threshold: float = 0.05, db: str | os.PathLike | None = None,
               use_db: bool = True, force: bool = False) -> Path:
    """Write the page of the results `data` (as read_run returns them) into the folder `out`; the history and the
    per-layer error come from the results database `db` (see vggbench.bench.db) unless `use_db` is False, and a
    database that cannot be read costs those sections, with a note, not the page. Returns the page's path."""
    database, db_note = None, None
    if use_db:
        from .db import Database, DatabaseError

        try:
            database = Database(db)
        except DatabaseError as e:
            db_note = f"no history: {e}"
    try:
        body = _page(data, source, baseline, threshold, database, db_note)
    finally:
        if database is not None:
            database.close()
    with atomic_dir(out, force=force, not_ours=_not_report) as tmp:
        (tmp / PAGE).write_text(body, encoding="utf-8")
        (tmp / MARKER).write_text("written by `vggbench report --html`; --force replaces this folder\n",
                                  encoding="utf-8")
    return Path(out) / PAGE


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _table(rows: list[dict], columns: list[str], cls: str = "sortable", row_class=None) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    lines = []
    for r in rows:
        klass = row_class(r) if row_class else ""
        cells = []
        for c in columns:
            v = r.get(c)
            numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
            sort = f' data-v="{v}"' if numeric else ""
            cells.append(f"<td{sort}{'' if numeric else ' class=text'}>{_e(_fmt(v))}</td>")
        lines.append(f"<tr{f' class={klass!r}' if klass else ''}>{''.join(cells)}</tr>")
    return (f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(lines)}</tbody></table></div>')


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return ('<img class="plot" alt="plot" src="data:image/png;base64,'
            f'{base64.b64encode(buffer.getvalue()).decode()}">')


def _figure(height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _batch_axis(ax, sizes: list[int]) -> None:
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(sizes))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("batch size (images per forward pass)")
    ax.grid(True, which="both", alpha=0.3)


def _lines(rows: list[dict]) -> dict[str, list[dict]]:
    lines: dict[str, list[dict]] = {}
    for r in rows:
        lines.setdefault(f"{label(r)} {r['precision']} {r['memory_format']}", []).append(r)
    for points in lines.values():
        points.sort(key=lambda r: r["batch_size"])
    return lines


def _throughput_plot(rows: list[dict]) -> str:
    """images/s against batch size, log axes, each line's 95% interval as a band."""
    fig = _figure()
    ax = fig.subplots()
    for name, points in _lines(rows).items():
        xs = [r["batch_size"] for r in points]
        (line,) = ax.plot(xs, [r["images_per_s"] for r in points], marker="o", label=name)
        bands = [images_interval(r) for r in points]
        if all(bands):
            ax.fill_between(xs, [b[0] for b in bands], [b[1] for b in bands], color=line.get_color(), alpha=0.2,
                            linewidth=0)
    _batch_axis(ax, sorted({r["batch_size"] for r in rows}))
    ax.set_yscale("log")
    ax.set_ylabel("images/s (median; band: 95% interval)")
    ax.legend(fontsize=8, title="backend precision memory format", title_fontsize=8)
    return _png(fig)


def _roofline_plot(rows: list[dict]) -> str | None:
    """The share of the measured ceiling (peak_pct) against batch size."""
    shares = [r for r in rows if r.get("peak_pct") is not None]
    if not shares:
        return None
    fig = _figure(3.2)
    ax = fig.subplots()
    for name, points in _lines(shares).items():
        ax.plot([r["batch_size"] for r in points], [r["peak_pct"] for r in points], marker="o", label=name)
    _batch_axis(ax, sorted({r["batch_size"] for r in shares}))
    ax.set_ylim(0, max(100.0, max(r["peak_pct"] for r in shares) * 1.05))
    ax.set_ylabel("% of the measured ceiling")
    ax.legend(fontsize=8)
    return _png(fig)


def _layers_plot(profiles: list[dict]) -> str | None:
    fig = _figure(3.6)
    ax = fig.subplots()
    drawn = False
    for p in profiles:
        points = [(i, r["rel_error"]) for i, r in enumerate(p["rows"]) if r.get("rel_error")]
        if points:
            ax.plot([x for x, _ in points], [y for _, y in points], marker="o",
                    label=f"{p['model']} {p['backend']} {p['precision']} {p['memory_format']}")
            drawn = True
    if not drawn:
        return None
    stages = max(profiles, key=lambda p: len(p["rows"]))["rows"]
    ax.set_xticks(range(len(stages)), [r.get("stage", "?") for r in stages], rotation=45, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("relative error vs eager fp32")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _history_svg(points: list[dict], title: str) -> str:
    """A line of images/s per recorded run (oldest first), each point's 95% interval as a bar; a point judged
    regressed (or improved) against the one before it is red (green), its verdict in its tooltip."""
    w, h, left, right, top, bottom = HISTORY_WIDTH, HISTORY_HEIGHT, 60, 40, 20, 45
    values = [p["images_per_s"] for p in points]
    lows = [p["interval"][0] if p["interval"] else p["images_per_s"] for p in points]
    highs = [p["interval"][1] if p["interval"] else p["images_per_s"] for p in points]
    lo, hi = min(lows), max(highs)
    pad = (hi - lo) * 0.1 or abs(hi) * 0.05 or 1.0
    lo, hi = max(0.0, lo - pad), hi + pad

    def x(i):
        return left + (w - left - right) * (0.5 if len(points) == 1 else i / (len(points) - 1))

    def y(v):
        return top + (h - top - bottom) * (1 - (v - lo) / (hi - lo))

    parts = [f'<svg class="history" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
             f'viewBox="0 0 {w} {h}" role="img" aria-label="{_e(title)}" data-points="{len(points)}">',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="#999"/>',
             f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="#999"/>',
             f'<text x="{left - 5}" y="{top + 4}" text-anchor="end">{hi:.4g}</text>',
             f'<text x="{left - 5}" y="{h - bottom}" text-anchor="end">{lo:.4g}</text>',
             f'<text x="{left - 5}" y="{top - 6}" text-anchor="end">images/s</text>']
    if len(points) > 1:
        path = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(f'<polyline class="line" points="{path}"/>')
    step = max(1, math.ceil(len(points) / 8))
    for i, p in enumerate(points):
        parts.append(f'<line class="bar" x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{y(lows[i]):.1f}" '
                     f'y2="{y(highs[i]):.1f}"/>')
        verdict = p.get("verdict") or ""
        klass = "point" + (f" {verdict}" if verdict in ("regressed", "improved") else "")
        tip = (f"{p['created']} {p['commit'] or 'no commit'}: {p['images_per_s']:.4g} images/s"
               + (f" [{lows[i]:.4g}, {highs[i]:.4g}]" if p["interval"] else "")
               + (f"; {verdict} vs the run before" if verdict else "")
               + (f" ({p['change']})" if p.get("change") else "") + (f"; {p['why']}" if p.get("why") else ""))
        radius = 5 if verdict == "regressed" else 3.5
        parts.append(f'<circle class="{klass}" cx="{x(i):.1f}" cy="{y(values[i]):.1f}" r="{radius}" '
                     f'data-run="{p["run"]}"><title>{_e(tip)}</title></circle>')
        if i % step == 0:
            parts.append(f'<text x="{x(i):.1f}" y="{h - bottom + 14}" text-anchor="middle">'
                         f'{_e(str(p["created"])[:10])}</text>'
                         f'<text x="{x(i):.1f}" y="{h - bottom + 27}" text-anchor="middle">'
                         f'{_e((p["commit"] or "-")[:7])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def history_points(rows: list[dict], threshold: float) -> list[dict]:
    """The points of one case's history (rows as Database.case_history returns them, oldest first): each ran row
    with its interval and the verdict of `judge` against the ran row before it."""
    points, previous = [], None
    for r in rows:
        if r.get("status") != "ok" or not r.get("images_per_s"):
            continue
        point = {"run": r["run"], "created": r["created"], "commit": r["commit"], "images_per_s": r["images_per_s"],
                 "interval": images_interval(r), "verdict": None, "change": None, "why": ""}
        if previous is not None:
            j = judge(previous, r, threshold)
            point["verdict"], point["why"] = j["verdict"], j["why"]
            if j["change_pct"] is not None:
                point["change"] = f"time {j['change_pct']:+.1f}%"
        points.append(point)
        previous = r
    return points


def _environment(data: dict, source) -> str:
    from .db import machine_label

    env = data.get("environment") or {}
    settings = data.get("settings") or {}
    items = [("results", source), ("created", data.get("created")), ("command", settings.get("command")),
             ("machine", machine_label(env)), ("commit", env.get("git_commit")), ("vggbench", data.get("vggbench")),
             ("python", env.get("python")), ("platform", env.get("platform")),
             ("versions", ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items() if v)),
             ("onnxruntime", (env.get("onnxruntime") or {}).get("version")),
             ("interrupted", settings.get("interrupted"))]
    return '<dl class="env">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items if v) + "</dl>"


def _page(data: dict, source, baseline: str, threshold: float, database, db_note: str | None) -> str:
    from .db import machine_label

    results = data["results"]
    env = data.get("environment") or {}
    sections = [f"<h1>vggbench report</h1>{_environment(data, source)}",
                '<p class="note"><span id="regression-count"></span></p>']
    rows = run_rows(results, baseline)
    timed = [r for r in results if not r.get("scenario")]
    groups: dict[tuple, list[dict]] = {}
    for r in timed:
        groups.setdefault(tuple(r[k] for k in GROUP_KEYS), []).append(r)
    for key, group in groups.items():
        title = group_title(key, group, env)
        table_rows = [{**r, "images_per_s": plus_minus(r["images_per_s"], r["images_per_s_low"],
                                                       r["images_per_s_high"]) or r["images_per_s"],
                       "median_ms": plus_minus(r["median_ms"], r["median_ci_low_ms"], r["median_ci_high_ms"])
                       or r["median_ms"]}
                      for r in rows if tuple(r[k] for k in GROUP_KEYS) == key]
        columns = ["backend", "precision", "memory_format", "batch_size", "median_ms", "p90_ms", "images_per_s",
                   "speedup", "gflops_per_s", "peak_pct", "parity_max_abs", "noisy", "samples", "status"]
        sections.append(f"<h2>{_e(title)}</h2>")
        sections.append(_table(table_rows, columns, row_class=lambda r: "bad" if r["status"] not in ("ok", "")
                               and not str(r["status"]).startswith(("unsupported", "oom")) else
                               "noisy" if r.get("noisy") else ""))
        ran = [r for r in group if r["status"] == "ok" and r.get("images_per_s")]
        if ran:
            sections.append(f"<h3>images/s against batch size</h3>{_throughput_plot(ran)}")
            roofline = _roofline_plot(ran)
            if roofline:
                sections.append(f"<h3>share of the measured ceiling (roofline)</h3>{roofline}")
    sections.append('<p class="note">±: the larger side of the 95% confidence interval of the median '
                    "(distribution-free, from the samples); speedup against "
                    f"{_e(baseline)}; peak_pct: share of the measured ceiling of the device and precision.</p>")
    scenarios = scenario_rows(results)
    if scenarios:
        columns = ["model", "backend", "precision", "memory_format", "scenario", "mode", "result", "samples_per_s",
                   "target_qps", "p50_ms", "p90_ms", "p99_ms", "queries", "latency_bound_ms", "top1", "status"]
        sections.append(f"<h2>LoadGen scenarios</h2>{_table(scenarios, columns)}")
    row_layers = [(r, key, value) for r in results for key, value in r.items()
                  if "layer" in key and isinstance(value, list) and value and isinstance(value[0], dict)]
    if row_layers:  # per-layer rows a run recorded itself (e.g. per-layer times)
        sections.append("<h2>per-layer rows of this run</h2>")
        for r, key, value in row_layers:
            sections.append(f"<h3>{_e(r['model'])} {_e(label(r))} {_e(r['precision'])} batch {r['batch_size']}: "
                            f"{_e(key)}</h3>{_table(value, list(dict.fromkeys(k for v in value for k in v)))}")
    if database is None:
        sections.append(f"<h2>history</h2><p class=note>{_e(db_note or 'no results database (--no-db)')}</p>")
    else:
        sections.append(_layers_section(database, sorted({r["model"] for r in results})))
        sections.append(_history_section(database, timed, machine_label(env), threshold))
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>vggbench report</title>"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="icon" href="data:,">'
            f"<style>{_CSS}</style></head><body>{''.join(sections)}<script>{_JS}</script></body></html>")


def _layers_section(database, models: list[str]) -> str:
    profiles = database.layer_profiles(models)
    if not profiles:
        return ("<h2>per-layer error</h2><p class=note>no `verify --layers` profile of these models in the results "
                "database</p>")
    parts = ["<h2>per-layer error (newest `verify --layers` profiles in the database)</h2>"]
    plot = _layers_plot(profiles)
    if plot:
        parts.append(plot)
    for p in profiles:
        rows = [{**r, "layers": ",".join(r.get("layers") or [])} for r in p["rows"]]
        columns = ["stage", "layers", "max_abs", "rel_error", "min_cosine", "growth", "within"]
        columns += [c for c in ("time_ms", "median_ms", "ms") if any(c in r for r in rows)]
        parts.append(f"<h3>{_e(p['model'])} {_e(p['backend'])} {_e(p['device'])} {_e(p['precision'])} "
                     f"{_e(p['memory_format'])} ({_e(p['created'])})</h3>{_table(rows, columns)}")
    return "".join(parts)


def _history_section(database, timed: list[dict], machine: str, threshold: float) -> str:
    parts = [f"<h2>history on {_e(machine)}</h2><p class=note>images/s of each case in every run recorded in the "
             f"results database on this machine, oldest first (bars: 95% intervals); a point is judged against the "
             f"run before it as `report --compare` judges (threshold {threshold * 100:g}%): "
             f'<span class="regressed-label">red: regressed</span>, green: improved.</p>']
    seen = set()
    for r in timed:
        key = (*(r.get(k) for k in ("model", "image_size", "batch_size", "backend", "device", "precision",
                                    "memory_format", "threads")), r.get("variant") or "")
        if key in seen or r["status"] != "ok":
            continue
        seen.add(key)
        points = history_points(database.case_history(r, machine), threshold)
        title = (f"{r['model']} {r['image_size']} {label(r)} {r['precision']} {r['memory_format']} "
                 f"batch {r['batch_size']}, {r['threads']} threads on {r['device']}")
        if not points:
            parts.append(f"<h3>{_e(title)}</h3><p class=note>not in the results database</p>")
            continue
        parts.append(f'<h3>{_e(title)}</h3>{_history_svg(points, title)}')
    return "".join(parts)
