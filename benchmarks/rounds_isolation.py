"""What interleaved rounds and process isolation cost and change (issue 27), measured on a tiny two-backend suite:

(a) --rounds 1 vs 3 vs 5: each case's median against its median in one round, and the run's wall time; and whether
    the first call of a later round (right after the other runners ran) is slower than the round's other calls,
    which would call for a warm-up at every switch;
(b) --isolation none vs process (one round): the wall time per group and each case's median against the in-process
    one;
(c) a busy neighbour for part of a run (two spinning processes per core, from 3 s after the run starts, for 3 s):
    onnxruntime's speed-up over eager at each batch size with it, against the same without it, for 1, 3 and 5 rounds.

Configurations alternate within each repeat (1 3 5, 1 3 5, ...), so that a change of the machine's load touches
them alike; /proc/pressure/cpu (some avg10) is read before and after each run. Usage:

    python benchmarks/rounds_isolation.py [--repeats 3] [--min-time 1.0] [--only rounds|isolation|burst]
    python benchmarks/rounds_isolation.py --only rounds --set width=1 --set hidden=4096 --set image_size=224 \
        --set models='["vgg16"]' --min-time 3     # the same on VGG16 (a quiet machine: minutes)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import vggbench
import vggbench.bench.sweep as sweep

SUITE = dict(models=["vgg11"], width=1 / 16, hidden=32, image_size=32, backends=["eager", "onnxruntime"],
             memory_formats=["contiguous"], precisions=["fp32"], batch_sizes=[1, 8], threads=1, warmup=1,
             warmup_time_s=0.2, min_iters=5, max_iters=100_000)


BURST = (3.0, 3.0)  # (c): from this many seconds after a run starts, for this long
SPIN = "import sys, time\nend = time.perf_counter() + float(sys.argv[1])\nwhile time.perf_counter() < end: pass\n"


def pressure() -> str:
    try:
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return "n/a"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def one_run(cache: str, min_time: float, **settings) -> dict:
    before = pressure()
    started = time.perf_counter()
    run = vggbench.benchmark(export_cache=cache, progress=False, min_time_s=min_time, **SUITE, **settings)
    wall = time.perf_counter() - started
    rows = {}
    for r in run.results:
        assert r.status == "ok", (r.backend, r.batch_size, r.status, r.reason)
        key = f"{r.backend} b{r.batch_size}"
        rounds = r.sample_rounds or (1,) * len(r.samples_ms)
        # the first three timed calls of each later round (right after the other runners' rounds), over the median
        starts = [i for i in range(1, len(rounds)) if rounds[i - 1] != rounds[i]]
        opening = [[r.samples_ms[i + k] / r.median_ms for k in range(3) if i + k < len(rounds)
                    and rounds[i + k] == rounds[i]] for i in starts]
        rows[key] = {"median_ms": r.median_ms, "iqr_ms": r.iqr_ms, "iterations": r.iterations,
                     "warmup_calls": r.warmup_calls, "load_ms": r.load_ms, "opening": opening}
    return {"settings": settings, "wall_s": wall, "pressure_before": before, "pressure_after": pressure(),
            "groups": len({k.split()[0] for k in rows}), "rows": rows}


def with_burst(cache: str, min_time: float, rounds: int) -> dict:
    """A run with a planted neighbour for part of it: two spinning processes per core, so that no core is left to
    the run alone (with one per core, the scheduler often left the run's thread a core of its own)."""
    spinners = []

    def start():
        spinners.extend(subprocess.Popen([sys.executable, "-c", SPIN, str(BURST[1])])
                        for _ in range(2 * len(os.sched_getaffinity(0))))
    timer = threading.Timer(BURST[0], start)
    timer.start()
    try:
        return one_run(cache, min_time, rounds=rounds)
    finally:
        timer.cancel()
        for spinner in spinners:
            spinner.wait()


def speedups(run: dict) -> dict[int, float]:
    """onnxruntime's speed-up over eager at each batch size (eager's median / onnxruntime's)."""
    rows = run["rows"]
    return {b: rows[f"eager b{b}"]["median_ms"] / rows[f"onnxruntime b{b}"]["median_ms"] for b in SUITE["batch_sizes"]}


def ratios(runs: list[dict], key: str, base: dict) -> list[float]:
    return [r["rows"][key]["median_ms"] / b["rows"][key]["median_ms"] for r, b in zip(runs, base, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=1.0)
    parser.add_argument("--cache", default="exports/.cache")
    parser.add_argument("--out", default="rounds_isolation.json")
    parser.add_argument("--rewarm", type=float, nargs=2, metavar=("CALLS", "SECONDS"),
                        default=(sweep.REWARM_CALLS, sweep.REWARM_S),
                        help="what opens a later round, untimed [default: vggbench's]; 0 0 for nothing")
    parser.add_argument("--only", choices=("rounds", "isolation", "burst"), help="one part only")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="change a key of the suite (its value as JSON), e.g. image_size=224")
    args = parser.parse_args()
    for item in args.set:
        key, _, value = item.partition("=")
        SUITE[key] = json.loads(value)
    sweep.REWARM_CALLS, sweep.REWARM_S = int(args.rewarm[0]), args.rewarm[1]
    print(f"cpu: {cpu_name()}, {len(__import__('os').sched_getaffinity(0))} cores; at start: {pressure()}")
    one_run(args.cache, 0.0)  # exports made, imports done: not part of any configuration's time
    found = {"cpu": cpu_name(), "rounds": {1: [], 3: [], 5: []}, "isolation": {"none": [], "process": []},
             "burst": {1: [], 3: [], 5: []}}
    parts = ("rounds", "isolation", "burst") if args.only is None else (args.only,)
    for repeat in range(args.repeats):
        for n in (1, 3, 5) if "rounds" in parts else ():
            found["rounds"][n].append(one_run(args.cache, args.min_time, rounds=n))
        for mode in ("none", "process") if "isolation" in parts else ():
            found["isolation"][mode].append(one_run(args.cache, args.min_time, isolation=mode, rounds=1))
        for n in (1, 3, 5) if "burst" in parts else ():
            found["burst"][n].append((one_run(args.cache, args.min_time, rounds=n),
                                      with_burst(args.cache, args.min_time, n)))
        print(f"repeat {repeat + 1}: {pressure()}")
    Path(args.out).write_text(json.dumps(found, indent=1))

    if "rounds" in parts:
        rounds_part(found)
    if "isolation" in parts:
        isolation_part(found)
    if "burst" in parts:
        burst_part(found)
    print(f"\nat end: {pressure()}; wrote {args.out}")


def rounds_part(found: dict) -> None:
    keys = list(found["rounds"][1][0]["rows"])
    print("\n(a) rounds: median / median in one round, per repeat; the spread of one-round medians across repeats")
    one = found["rounds"][1]
    for key in keys:
        spread = [r["rows"][key]["median_ms"] for r in one]
        cells = "  ".join(f"{n}: " + " ".join(f"{x:.3f}" for x in ratios(found['rounds'][n], key, one)) for n in (3, 5))
        print(f"  {key:16} one round {statistics.median(spread):.4f} ms (max/min {max(spread) / min(spread):.3f})"
              f"  {cells}")
    for n in (1, 3, 5):
        walls = [r["wall_s"] for r in found["rounds"][n]]
        print(f"  rounds {n}: wall {' '.join(f'{w:.2f}' for w in walls)} s")
    print(f"  the 1st, 2nd and 3rd timed call of a later round / the row's median, after at least "
          f"{sweep.REWARM_CALLS} untimed call(s) for {sweep.REWARM_S:g} s (median over rounds and repeats):")
    for key in keys:
        for n in (3, 5):
            opening = [o for r in found["rounds"][n] for o in r["rows"][key]["opening"]]
            cells = " ".join(f"{statistics.median(o[k] for o in opening if len(o) > k):.3f}" for k in range(3))
            print(f"    {key:16} rounds {n}: {cells} ({len(opening)} rounds)")


def isolation_part(found: dict) -> None:
    none = found["isolation"]["none"]
    keys = list(none[0]["rows"])
    print("\n(b) isolation: median / in-process median per repeat; wall time")
    for key in keys:
        iqr = statistics.median(r["rows"][key]["iqr_ms"] / r["rows"][key]["median_ms"] for r in none)
        print(f"  {key:16} " + " ".join(f"{x:.3f}" for x in ratios(found["isolation"]["process"], key, none))
              + f"   (in-process IQR/median {iqr:.3f})")
    for mode in ("none", "process"):
        runs = found["isolation"][mode]
        walls = " ".join(f"{r['wall_s']:.2f}" for r in runs)
        print(f"  {mode}: wall {walls} s; groups {runs[0]['groups']}")
    extra = [(p["wall_s"] - n["wall_s"]) / p["groups"] for p, n in zip(found["isolation"]["process"], none, strict=True)]
    print(f"  overhead per group: {' '.join(f'{x:.2f}' for x in extra)} s")



def burst_part(found: dict) -> None:
    print(f"\n(c) onnxruntime's speed-up over eager with a busy neighbour ({BURST[1]:g} s from {BURST[0]:g} s) / "
          f"without, per repeat; the mean |log| of that ratio")
    for n in (1, 3, 5):
        pairs = found["burst"][n]
        cells, logs = [], []
        for b in SUITE["batch_sizes"]:
            ratio = [speedups(loaded)[b] / speedups(quiet)[b] for quiet, loaded in pairs]
            logs += [abs(math.log(x)) for x in ratio]
            cells.append(f"b{b}: " + " ".join(f"{x:.3f}" for x in ratio))
        walls = " ".join(f"{q['wall_s']:.1f}/{lo['wall_s']:.1f}" for q, lo in pairs)
        print(f"  rounds {n}: {'   '.join(cells)}   mean |log| {statistics.fmean(logs):.3f}   wall quiet/loaded {walls} s")


if __name__ == "__main__":
    main()
