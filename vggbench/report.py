"""Rendering rows of results as a table, GitHub markdown, CSV or JSON. Never measures anything."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence

FORMATS = ("table", "github", "csv", "json")


def _cell(value):
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value


def render(rows: Sequence[dict], fmt: str = "table", columns: Sequence[str] | None = None,
           floatfmt: str = ".4g") -> str:
    """Rows of dicts as text. `columns` picks and orders keys (default: the first row's keys)."""
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
                    floatfmt=floatfmt, intfmt=",", missingval="-")
