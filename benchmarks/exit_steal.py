"""After a process that held much memory exits, how much CPU does the host take from this VM, and for how long? One
process builds VGG16's runner (winograd at batch 8 by default, as the cross-check times it) and keeps it. For each
condition GIB:WAIT, a child process touches GIB GiB and exits, this process sits idle for WAIT seconds, then times
calls for --window seconds and reads the CPUs' steal over them (/proc/stat: the time the hypervisor gave to others
while a vCPU wanted to run; an idle vCPU shows none, so the window must be busy). The conditions run in turn, their
order reversed every other cycle so that a drift of the host falls on each alike; a child of 0 GiB is the control.

    python benchmarks/exit_steal.py [--backend winograd] [--batch 8] [--plan PLAN]
        [--conditions 3:0,3:10,3:20,0:0] [--cycles 4] [--window 6] [--out FILE]

Prints each condition's steal % (every cycle's, and their median) and the calls' median ms, and whether this
machine's memory balloon reports free pages to its host (vggbench.core.load.reports_free_pages): where it does, the
host reclaims what the child freed, which vggbench's cross-check now waits out after each tool run
(vggbench.core.load.settle_time_s). Writes every window as JSON with --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import process_age  # noqa: E402  (a script beside this one)

HOG = "import sys, time, numpy; a = numpy.ones(int(float(sys.argv[1]) * 2**30 / 8)); time.sleep(1)"


def parse_conditions(text: str) -> list[tuple[float, float]]:
    """"3:0,3:10,0:0" -> [(3.0, 0.0), (3.0, 10.0), (0.0, 0.0)]: GiB the child holds, seconds idle after it exits."""
    out = []
    for item in text.split(","):
        gib, sep, wait = item.strip().partition(":")
        try:
            condition = (float(gib), float(wait))
        except ValueError:
            condition = None
        if not sep or condition is None or not (0 <= condition[0] <= 64 and 0 <= condition[1] <= 600):
            raise argparse.ArgumentTypeError(f"each condition is GIB:WAIT (0-64 GiB, 0-600 s), got {item!r}")
        out.append(condition)
    if not out:
        raise argparse.ArgumentTypeError("no condition given")
    return out


def cpu_ticks(stat: str) -> list[int]:
    """The first line of /proc/stat: user, nice, system, idle, iowait, irq, softirq, steal (in clock ticks)."""
    first = stat.splitlines()[0].split()
    if first[0] != "cpu":
        raise ValueError("not a /proc/stat")
    ticks = [int(v) for v in first[1:9]]
    return ticks + [0] * (8 - len(ticks))


def steal_pct(before: list[int], after: list[int]) -> float | None:
    """The share of the CPUs' ticks between two readings that went to steal, in %."""
    delta = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(delta)
    return round(100 * delta[7] / total, 2) if total > 0 else None


def order(conditions: list, cycle: int) -> list:
    """The conditions in the order of cycle `cycle` (from 0): as given, then reversed, and so on."""
    return list(conditions) if cycle % 2 == 0 else list(reversed(conditions))


def summary(windows: list[dict]) -> list[dict]:
    """Per condition, in the order first met: every window's steal, their median, and the median of the calls'
    median ms."""
    out: dict[tuple, dict] = {}
    for w in windows:
        entry = out.setdefault((w["gib"], w["wait_s"]), {"gib": w["gib"], "wait_s": w["wait_s"], "steal_pct": [],
                                                         "median_ms": []})
        entry["steal_pct"].append(w["steal_pct"])
        entry["median_ms"].append(w["median_ms"])
    rows = []
    for entry in out.values():
        steals = [s for s in entry["steal_pct"] if s is not None]
        rows.append({**entry, "median_steal_pct": statistics.median(steals) if steals else None,
                     "median_of_ms": statistics.median(entry["median_ms"])})
    return rows


def read_stat() -> list[int]:
    return cpu_ticks(Path("/proc/stat").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=sorted(process_age.BACKENDS), default="winograd")
    parser.add_argument("--batch", type=process_age.ranged(1, 64), default=8)
    parser.add_argument("--image-size", type=process_age.ranged(32, 448), default=224)
    parser.add_argument("--plan", help="winograd: the plan to follow [default: tuned here first]")
    parser.add_argument("--conditions", type=parse_conditions, default=parse_conditions("3:0,3:10,3:20,0:0"))
    parser.add_argument("--cycles", type=process_age.ranged(1, 100), default=4)
    parser.add_argument("--window", type=process_age.ranged(1, 600), default=6, help="seconds of calls a window")
    parser.add_argument("--out", help="a JSON file for the windows")
    args = parser.parse_args()
    process_age.refuse_existing(args.out)
    if not Path("/proc/stat").is_file():
        print("error: no /proc/stat here: steal cannot be read", file=sys.stderr)
        sys.exit(2)

    import torch

    from vggbench.core import allocator
    from vggbench.core.env import cpu_info
    from vggbench.core.load import reports_free_pages

    allocator.apply("steady")
    runner, x = process_age.build(args.backend, args.batch, args.image_size, args.plan)
    for _ in range(3):
        runner.run(x)
    reporting = reports_free_pages()
    print(f"{args.backend} batch {args.batch}, {torch.get_num_threads()} threads; free page reporting: {reporting}")
    windows = []
    for cycle in range(args.cycles):
        for gib, wait in order(args.conditions, cycle):
            subprocess.run([sys.executable, "-c", HOG, str(gib)], check=True)
            time.sleep(wait)
            before, start, calls = read_stat(), time.perf_counter(), []
            while time.perf_counter() < start + args.window:
                t = time.perf_counter()
                runner.run(x)
                calls.append((time.perf_counter() - t) * 1e3)
            window = {"cycle": cycle, "gib": gib, "wait_s": wait, "steal_pct": steal_pct(before, read_stat()),
                      "calls": len(calls), "median_ms": statistics.median(calls)}
            windows.append(window)
            print(json.dumps(window), flush=True)
    rows = summary(windows)
    print("\n| child GiB | idle after (s) | steal % (each cycle) | median steal % | calls' median ms |")
    print("|---|---|---|---|---|")
    for r in rows:
        each = ", ".join("-" if s is None else f"{s:.1f}" for s in r["steal_pct"])
        steal = "-" if r["median_steal_pct"] is None else f"{r['median_steal_pct']:.1f}"
        print(f"| {r['gib']:g} | {r['wait_s']:g} | {each} | {steal} | {r['median_of_ms']:.0f} |")
    if args.out:
        from vggbench.core.fileio import write_json

        write_json(Path(args.out), {"settings": vars(args) | {"conditions": args.conditions},
                                    "free_page_reporting": reporting, "threads": torch.get_num_threads(),
                                    "cpu": cpu_info(), "windows": windows, "summary": rows})


if __name__ == "__main__":
    main()
