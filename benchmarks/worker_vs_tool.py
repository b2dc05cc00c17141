"""Does vggbench's own machinery time a case slower than the runtime's tool does, both fresh? Pair after pair, one
`vggbench run` of one case in one round (parent, spawned worker, parity check, load samples: everything a sweep
does, in a fresh process) against the exact command `--cross-check` runs for that case (for eager, compile and
winograd: torch.utils.benchmark.Timer in a fresh process), with the same warm-up and budget. The order inside a
pair alternates, so that a drift of the machine falls on both sides alike.

    python benchmarks/worker_vs_tool.py [--backend winograd] [--batch 8] [--pairs 20] [--isolation case] [--out FILE]

A first run with --cross-check gives the tool's command (and, for winograd, the plan it tuned, which every later
run follows with --winograd-plan, as the tool does, unless --plan gives one): it is not counted. Prints each pair's
images/s and vggbench's over the tool's, their median with a 95% bootstrap interval over the pairs, and how many
pairs vggbench lost. Writes the pairs and both commands as JSON with --out.

What it separates: in a full cross-check, the row's worker lives through every round and tool run and tunes its
plan itself; here both sides are fresh and follow the same plan, so a gap that stays is vggbench's machinery or
the statistic, one that goes is the worker's age or its tuning (benchmarks/process_age.py pairs those).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # process_age.py beside it, however this file is loaded
from process_age import pair_arguments, ranged, refuse_existing, verdict  # noqa: E402

MEMORY_FORMATS = {"winograd": "channels_last", "compile": "channels_last", "eager": "contiguous"}


def vggbench_command(args, out: Path, plan: str | None, cross_check: bool) -> list[str]:
    """One case, one round, the cross-check suite's warm-up and a round's share of its budget."""
    command = [sys.executable, "-m", "vggbench", "run", "--models", "vgg16", "--backends", args.backend,
               "--batch-sizes", str(args.batch), "--image-size", str(args.image_size), "--precision", "fp32",
               "--memory-format", MEMORY_FORMATS[args.backend], "--warmup", "2", "--warmup-time", "2",
               "--min-time", str(args.min_time), "--min-iters", str(args.calls), "--max-iters", "400",
               "--rounds", "1", "--isolation", args.isolation, "--no-db", "--no-progress", "--format", "json",
               "--out", str(out)]
    command += ["--threads", str(args.threads)] if args.threads else []
    command += ["--compile-freezing"] if args.backend == "compile" else []
    command += ["--winograd-plan", plan] if plan else []
    return command + (["--cross-check"] if cross_check else [])


def run_case(command: list[str], out: Path) -> dict:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not out.exists():
        raise SystemExit(f"error: vggbench run failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    from vggbench.bench.results import read_run

    (row,) = read_run(out)["results"]
    if row["status"] != "ok":
        raise SystemExit(f"error: the case ended {row['status']}: {row.get('reason')}")
    return row


def run_tool(command: list[str], cwd: str | None) -> float:
    """The tool as the sweep starts it: with the steady allocator's settings in its environment."""
    from vggbench.core import allocator

    env = allocator.child_environment("steady", os.environ)
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env)
    if done.returncode != 0:
        raise SystemExit(f"error: the tool failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    pair_arguments(parser, MEMORY_FORMATS)
    parser.add_argument("--min-time", type=float, default=1.6, help="timed seconds a side, at least (the cross-check "
                        "suite's 8 s over its 5 rounds)")
    parser.add_argument("--threads", type=ranged(1, 1024), help="[default: torch's]")
    parser.add_argument("--isolation", choices=("none", "process", "case"), default="case")
    parser.add_argument("--plan", help="winograd: the plan both sides follow [default: the first run's]")
    parser.add_argument("--out", help="a JSON file for the pairs")
    args = parser.parse_args()
    refuse_existing(args.out)
    if not 0 < args.min_time <= 600:
        print(f"error: --min-time must be in (0, 600], got {args.min_time}", file=sys.stderr)
        sys.exit(2)

    with tempfile.TemporaryDirectory(prefix="worker-vs-tool-") as tmp:
        first = run_case(vggbench_command(args, Path(tmp) / "first.json", args.plan, True), Path(tmp) / "first.json")
        block = first["cross_check"]
        if "error" in block:
            raise SystemExit(f"error: the first run's tool failed: {block['error']}")
        tool = list(block["command"])
        plan = args.plan or (first["notes"] if args.backend == "winograd" else None)
        from vggbench.bench.crosscheck import PACKAGE_ROOT

        cwd = str(PACKAGE_ROOT)  # as the sweep runs it
        print(f"tool: {' '.join(tool)}", flush=True)
        pairs = []
        for i in range(args.pairs):
            sides = {}
            for side in (("vggbench", "tool") if i % 2 == 0 else ("tool", "vggbench")):
                if side == "vggbench":
                    out = Path(tmp) / f"run-{i}.json"
                    row = run_case(vggbench_command(args, out, plan, False), out)
                    sides["vggbench"], sides["calls"] = row["images_per_s"], row["iterations"]
                else:
                    sides["tool"] = run_tool(tool, cwd)
            ratio = sides["vggbench"] / sides["tool"]
            pairs.append({"pair": i + 1, "first": "vggbench" if i % 2 == 0 else "tool", **sides, "ratio": ratio})
            print(f"pair {i + 1:2d}: vggbench {sides['vggbench']:.3f} images/s ({sides['calls']} calls), tool "
                  f"{sides['tool']:.3f}, vggbench/tool {ratio:.3f}", flush=True)
    median, low, high, lost = verdict(pairs)
    print(f"\n{args.backend} at batch {args.batch}, isolation {args.isolation}: vggbench/tool median "
          f"{median:.3f} (95% interval {low:.3f}-{high:.3f}), vggbench slower in {lost} of {len(pairs)} pairs")
    if args.out:
        from vggbench.core.env import capture
        from vggbench.core.fileio import write_text

        write_text(args.out, json.dumps({"settings": vars(args), "plan": plan, "tool": tool,
                                         "vggbench": vggbench_command(args, Path("OUT.json"), plan, False),
                                         "first": {"images_per_s": first["images_per_s"], "cross_check": block},
                                         "environment": capture(), "pairs": pairs,
                                         "median_ratio": median, "interval": [low, high],
                                         "vggbench_slower": lost}, indent=1) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
