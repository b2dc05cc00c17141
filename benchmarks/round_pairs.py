"""Do a row's later rounds read differently from its first? Over cross-check results files (`vggbench run
--cross-check --rounds N`), per backend and batch size: the ratio of each round to the tool run after it (the row's
`cross_check.pairs`), its first round's against its later rounds', pooled over the files, with a Mann-Whitney U
test of the two; the row's own later rounds' median time over its first round's; and the tool's later runs' images/s
over its first run's.

    python benchmarks/round_pairs.py benchmarks/results/*cross-check*.json [--json]

A row's first round comes after its first call and full warm-up in a fresh worker; each later one after the tool's
run, the other cases' rounds and one untimed call (REWARM_CALLS). A pair below 1 is a row slower than its tool.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def rows_of(path: Path) -> list[dict]:
    """The rows of a vggbench results file (read_run: any schema it reads); none from another file, such as the
    noise probe's beside them."""
    from vggbench.bench.results import read_run
    from vggbench.core.errors import VggbenchError

    try:
        return read_run(path)["results"]
    except VggbenchError:
        return []


def gather(paths: list[Path]) -> dict[tuple[str, int], dict[str, list[float]]]:
    out: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path in paths:
        for row in rows_of(path):
            block = row.get("cross_check") or {}
            pairs, runs = block.get("pairs") or [], block.get("runs") or []
            key = (row.get("backend"), row.get("batch_size"))
            if len(pairs) >= 3:
                out[key]["first_pair"].append(pairs[0])
                out[key]["later_pairs"] += pairs[1:]
            by_round = defaultdict(list)
            for ms, k in zip(row.get("samples_ms") or [], row.get("sample_rounds") or [], strict=False):
                by_round[k].append(ms)
            if len(by_round) >= 3 and 1 in by_round:
                later = statistics.median(statistics.median(v) for k, v in by_round.items() if k > 1)
                out[key]["row_later_over_first_ms"].append(later / statistics.median(by_round[1]))
            speeds = [run.get("images_per_s") for run in runs]
            if len(speeds) >= 3 and all(isinstance(s, (int, float)) and s > 0 for s in speeds):
                out[key]["tool_later_over_first"].append(statistics.median(speeds[1:]) / speeds[0])
    return out


def summary(found: dict) -> list[dict]:
    from scipy.stats import mannwhitneyu

    lines = []
    for (backend, batch), d in sorted(found.items(), key=lambda kv: (str(kv[0][0]), kv[0][1] or 0)):
        first, later = d.get("first_pair", []), d.get("later_pairs", [])
        line = {"backend": backend, "batch_size": batch, "files": len(first),
                "first_pair": statistics.median(first) if first else None,
                "later_pairs": statistics.median(later) if later else None, "later_count": len(later),
                "p_value": float(mannwhitneyu(first, later).pvalue) if len(first) >= 3 and len(later) >= 3 else None}
        for name in ("row_later_over_first_ms", "tool_later_over_first"):
            line[name] = statistics.median(d[name]) if d.get(name) else None
        lines.append(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--json", action="store_true", help="one JSON object a line instead of the table")
    args = parser.parse_args()
    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        print(f"error: no such file: {missing[0]}", file=sys.stderr)
        sys.exit(2)
    lines = summary(gather(args.files))
    if args.json:
        print("\n".join(json.dumps(line) for line in lines))
        return

    def f(v) -> str:
        return "-" if v is None else f"{v:.3f}"

    print(f"{'backend':12} {'batch':>5} {'rows':>4} {'1st pair':>8} {'later':>6} {'n':>4} {'p (U)':>6} "
          f"{'row later/1st ms':>16} {'tool later/1st':>14}")
    for x in lines:
        print(f"{x['backend']:12} {x['batch_size']:5d} {x['files']:4d} {f(x['first_pair']):>8} {f(x['later_pairs']):>6} "
              f"{x['later_count']:4d} {f(x['p_value']):>6} {f(x['row_later_over_first_ms']):>16} "
              f"{f(x['tool_later_over_first']):>14}")


if __name__ == "__main__":
    main()
