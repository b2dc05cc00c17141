"""Does vggbench time what each runtime's own tool times? VGG16 at 224, batch 1 and 8, fp32: eager, compile,
onnxruntime, openvino and winograd, each row timed again in a fresh process by its runtime's own tool with the
row's settings (`vggbench run --cross-check`, suite benchmarks/suites/cross-check.toml).

    python benchmarks/cross_check.py [--min-time 8] [--tolerance 0.05] [--out benchmarks/results]
    python benchmarks/cross_check.py --tiny --out /tmp/x   # the script itself: a 1/16-width VGG11 at 32x32
    python benchmarks/cross_check.py --rejudge FILE        # an earlier run's rows judged again, timing nothing

Prints a markdown table, one line per row: vggbench's images/s (with the 95% interval of its median where the row
has one), the tool's images/s (the median of its runs, one after each round), their ratio (vggbench's over the
tool's) with its 95% interval (a bootstrap over the rounds and the tool's runs: both sides' spread), whether the
ratio is within the tolerance, and whether its interval is sure of it ("within", "outside" or "unsure": too wide
to say); as a diagnostic, the median and range of the pairs (each round's images/s over the tool's run right
after it); and the rounds the row ran (past 5, up to the suite's max_rounds, until its ratio's interval is
narrow). Writes the run (JSON and CSV) and the table (cross-check-<time>.md) under --out. Exits 1 when a row is
outside the tolerance, or did not run, or could not be checked. --rejudge FILE prints the table of a results file written by an earlier run, its
blocks made again from the tool runs it recorded with today's rules (crosscheck.restate and combine: the ratio's
interval, benchmark_app's median), and writes nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields, replace
from pathlib import Path
from types import SimpleNamespace

import torch

import vggbench
from vggbench.bench.crosscheck import combine, restate
from vggbench.bench.results import read_run
from vggbench.bench.rows import BenchResult
from vggbench.bench.suite import ISOLATIONS, resolve_suite
from vggbench.core.errors import ConfigError, ResultsError
from vggbench.core.fileio import write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine_noise  # noqa: E402  (a script beside this one)

SUITE = Path(__file__).resolve().parent / "suites" / "cross-check.toml"
TINY = dict(models=["vgg11"], width=0.0625, hidden=[32], image_size=32, warmup=1, warmup_time_s=0.1,
            min_time_s=0.3, min_iters=5, max_iters=400)


def interval(row) -> tuple[float, float] | None:
    """The 95% interval of the row's images/s, from that of its median (None where the row has none)."""
    low, high = row.median_ci_low_ms, row.median_ci_high_ms
    if not low or not high:
        return None
    return row.batch_size / (high / 1e3), row.batch_size / (low / 1e3)


def sureness(check: dict, tolerance: float) -> str:
    """What the ratio's 95% interval (over the rounds and the tool's runs) says: "within" when it lies inside the
    tolerance, "outside" when it lies beyond it, "unsure" when it reaches across; "-" without one (one round)."""
    low, high = check.get("ratio_low"), check.get("ratio_high")
    if low is None or high is None:
        return "-"
    if 1 - tolerance <= low and high <= 1 + tolerance:
        return "within"
    if high < 1 - tolerance or low > 1 + tolerance:
        return "outside"
    return "unsure"


def verdicts(run, tolerance: float) -> tuple[list[str], int, int]:
    """The table's lines, how many rows fail (outside the tolerance, not ok, or not checked) and how many are sure
    to be within it (their ratio's whole interval)."""
    lines = ["| backend | memory format | batch | vggbench images/s | tool | tool images/s | ratio (95% interval) | "
             f"within ±{tolerance:.0%} | sure | paired (range) | rounds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    failed = sure = 0
    for r in run.results:
        check = r.cross_check or {}
        head = f"| {r.backend} | {r.memory_format} | {r.batch_size} |"
        if r.status != "ok":
            failed += 1
            lines.append(f"{head} {r.status}: {r.reason[:80]} | | | | no | | | |")
            continue
        ci = interval(r)
        ours = f"{r.images_per_s:.4g}" + (f" ({ci[0]:.4g}-{ci[1]:.4g})" if ci else "")
        tool = check.get("tool") or "-"
        if "error" in check or not check.get("images_per_s"):
            failed += 1
            lines.append(f"{head} {ours} | {tool} | {check.get('error', 'no cross-check')[:80]} | | no | | | "
                         f"{r.rounds} |")
            continue
        ratio = check["ratio"]
        within = abs(ratio - 1) <= tolerance
        verdict = sureness(check, tolerance)
        bounds = f" ({check['ratio_low']:.3f}-{check['ratio_high']:.3f})" if verdict != "-" else ""
        pairs = check.get("pairs")
        paired = f"{check['paired_ratio']:.3f} ({min(pairs):.3f}-{max(pairs):.3f})" if pairs else "-"
        failed += not within
        sure += verdict == "within"
        lines.append(f"{head} {ours} | {tool.split(' (')[0]} | {check['images_per_s']:.4g} | {ratio:.3f}{bounds} | "
                     f"{'yes' if within else 'no'} | {verdict} | {paired} | {r.rounds} |")
    return lines, failed, sure


def rejudge(path: str) -> SimpleNamespace:
    """The run in a results file with each row's cross_check block made again from the tool runs it recorded."""
    data = read_run(path)
    names = {f.name for f in fields(BenchResult)}
    rows = []
    for r in data["results"]:
        row = BenchResult(**{k: v for k, v in r.items() if k in names})
        block = r.get("cross_check") or {}
        runs = block.get("runs") or ([block] if block and "error" not in block else [])
        runs = [restate(run, row.batch_size) for run in runs]
        rows.append(combine(replace(row, cross_check=None), runs) if runs else row)
    return SimpleNamespace(results=rows, environment=data.get("environment") or {}, settings=data["settings"])


def render(run, tolerance: float) -> tuple[str, int, int]:
    """The markdown the script prints, with how many rows fail and how many are sure to be within."""
    lines, failed, sure = verdicts(run, tolerance)
    threads = sorted({r.threads for r in run.results})
    cpu = run.environment.get("cpu", {}).get("model", "?")
    model = f"{run.settings['models'][0]} at {run.settings['image_size']}"
    markdown = (f"{model}, {'/'.join(map(str, threads))} threads, {cpu}; vggbench images/s (95% interval of the "
                f"median where the row has one) against the runtime's own tool in a fresh process; ratio = "
                f"vggbench / tool\n\n" + "\n".join(lines) + "\n")
    return markdown, failed, sure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a 1/16-width VGG11 at 32x32 for a fraction of a second "
                                                            "per row: a check of the script, not of vggbench")
    parser.add_argument("--min-time", type=float, help="seconds of timed calls per row [default: the suite's, 8]")
    parser.add_argument("--batch-sizes", help="e.g. 1,8 [default: the suite's]")
    parser.add_argument("--threads", type=int, help="[default: torch's]")
    parser.add_argument("--tolerance", type=float, default=0.05, help="how far a ratio may be from 1")
    parser.add_argument("--out", default="benchmarks/results", help="folder for the run and the table")
    parser.add_argument("--export-cache", default="exports/.cache")
    parser.add_argument("--rounds", type=int, help="[default: the suite's]")
    parser.add_argument("--max-rounds", type=int, help="rounds a row may go on to until its ratio's interval is "
                                                       "narrow [default: the suite's]")
    parser.add_argument("--target-width", type=float, help="how narrow (relative, the larger side) [default: the "
                                                           "suite's]")
    parser.add_argument("--isolation", choices=ISOLATIONS,
                        help="process: each group in a fresh worker (nothing another backend did to the process "
                             "reaches its rows); case: each batch size in its own too, as its tool runs it "
                             "[default: the suite's]")
    parser.add_argument("--noise-seconds", type=machine_noise.seconds, default=5.0,
                        help="seconds a probe of benchmarks/machine_noise.py runs before and after the suite "
                             "(0: none; --tiny runs none)")
    parser.add_argument("--rejudge", metavar="FILE", help="judge the rows of an earlier run's results file again "
                                                          "(today's rules), timing nothing and writing nothing")
    args = parser.parse_args()
    if args.rejudge:
        try:
            run = rejudge(args.rejudge)
        except ResultsError as e:  # missing, not a results file, not JSON: one line, as vggbench's own commands
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        markdown, failed, sure = render(run, args.tolerance)
        print(markdown)
        print(f"{len(run.results) - failed} of {len(run.results)} rows within ±{args.tolerance:.0%} of their tool, "
              f"{sure} sure to be (the ratio's whole 95% interval)")
        sys.exit(1 if failed else 0)
    overrides = dict(TINY) if args.tiny else {}
    if args.min_time is not None:
        overrides["min_time_s"] = args.min_time
    if args.batch_sizes:
        overrides["batch_sizes"] = [int(b) for b in args.batch_sizes.split(",")]
    if args.threads:
        overrides["threads"] = args.threads
    for key in ("rounds", "max_rounds", "target_width", "isolation"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    try:  # --max-rounds under --rounds, a negative --min-time, ...: one line, as vggbench's own, before any probe
        suite = resolve_suite(str(SUITE), cross_check=True, **overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    started = time.perf_counter()
    # how steady the host is for memory-bound and compute-bound work, before and after (benchmarks/machine_noise.py):
    # a neighbour's memory traffic slows rows without showing in the CPU pressure the rows record
    probe = args.noise_seconds if not args.tiny else 0
    noise = {"before": machine_noise.measure(probe, torch.get_num_threads())} if probe else {}
    run = vggbench.benchmark(suite, export_cache=args.export_cache, progress=True)
    json_path, _ = run.write(args.out)  # first: nothing after the suite can lose it
    if noise:
        noise["after"] = machine_noise.measure(probe, torch.get_num_threads())
    markdown, failed, sure = render(run, args.tolerance)
    if noise:
        markdown += f"\nThe host's steadiness (benchmarks/machine_noise.py, {args.noise_seconds:g} s a probe):\n\n"
        markdown += "".join(f"- {when}: {line}\n" for when, data in noise.items()
                            for line in machine_noise.lines(data))
    print("\n" + markdown)
    if noise:
        stem = json_path.stem.replace("run-", "cross-check-noise-", 1)
        machine_noise.write(noise, json_path.with_name(stem + ".json"))
    table = json_path.with_name(json_path.stem.replace("run-", "cross-check-", 1) + ".md")
    write_text(table, markdown)
    print(f"{len(run.results) - failed} of {len(run.results)} rows within ±{args.tolerance:.0%} of their tool, "
          f"{sure} sure to be (the ratio's whole 95% interval); wrote {json_path} and {table} "
          f"({time.perf_counter() - started:.0f} s)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
