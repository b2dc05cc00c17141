"""Winograd after its tuning: does the model a tuning built run as fast as its plan built afresh?

The winograd backend tunes each input shape on its first call: it builds and times every candidate of every
layer, and keeps the fastest. Three ways to build a plan, each in a fresh process (started one after the
other, in --cycles rounds, so that a slow minute of the machine lands on all of them alike):

- tuned: the model the tuning returned (`winograd_model(module, x)`), as the runner kept it before 2026-12-06;
- runner: `WinogradRunner`, as it runs now: the tuning's model dropped and the plan built again;
- afresh: a process that never tunes: it builds the plan the tuned or runner process chose
  (`WinogradRunner.follow`), as `vggbench run --cross-check`'s timer does; each is set against its own plan.

    python benchmarks/winograd_rebuild.py [--batch-sizes 8] [--cycles 2] [--calls 15] [--image-size 224]
    python benchmarks/winograd_rebuild.py --spread 6 --plan "conv1 direct, conv2 F4-cpp-whole, ..."

--spread N: no tuning; the plan (--plan, or the one a tuning draws) built afresh in N processes one after the
other, then timed in N blocks of --calls calls within one process, --pause seconds apart (about a process's
start and build): how far one plan's speed moves from process to process, and from minute to minute.

Prints each process's images/s (the median of --calls timed calls after two untimed ones) and its ratio
to the same plan built afresh in the same cycle, then the median ratio per way. Threads: the cores given to
the run; the allocator policy: "steady", in every process, as a run sets it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vggbench.core import allocator  # noqa: E402

CHILD = """
import json, statistics, sys, time
import torch
from vggbench.core import allocator
allocator.apply("steady")
torch.set_num_threads(int(sys.argv[5]))
from vggbench.backends import make_runner, resolve_target
from vggbench.backends.winograd.model import winograd_model
from vggbench.zoo.settings import ModelSettings
way, model_name, batch, size, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[6])
module = ModelSettings().load(model_name).module.eval()
x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
x = x.contiguous(memory_format=torch.channels_last)
runner = make_runner(resolve_target("winograd", "cpu", "fp32", "channels_last"), module)
plan = None
def speed(call):
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)
if way == "blocks":
    runner.follow(tuple(x.shape), sys.argv[7])
    for _ in range(3):
        runner.run(x)
    speeds = []
    for block in range(int(sys.argv[8])):
        time.sleep(float(sys.argv[9]) if block else 0)
        speeds.append(speed(lambda: runner.run(x)))
    print(json.dumps({"blocks": speeds}))
    sys.exit()
if way == "tuned":
    model, rows = winograd_model(module, x)
    plan = ", ".join(f"{r['layer']} {r['choice']}" for r in rows)
    def call():
        with torch.inference_mode():
            return model(x)
else:
    if way == "fresh":
        runner.follow(tuple(x.shape), sys.argv[7])
    call = lambda: runner.run(x)
for _ in range(3):  # the first builds (runner, fresh); two more untimed
    call()
print(json.dumps({"images_per_s": speed(call), "plan": plan or runner.notes(x)}))
"""


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < 3600:  # nan fails this too
        raise argparse.ArgumentTypeError(f"must be 0 to 3600 seconds, got {text}")
    return value


def _sizes(text: str) -> list[int]:
    try:
        return [_count(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch sizes are positive integers, e.g. 1,8: got {text!r}") from None


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16")
    parser.add_argument("--image-size", type=_count, default=224)
    parser.add_argument("--batch-sizes", type=_sizes, default=[8])
    parser.add_argument("--cycles", type=_count, default=2)
    parser.add_argument("--calls", type=_count, default=15, help="timed calls per process (per block)")
    parser.add_argument("--spread", type=_count, help="N: one plan in N processes and N blocks of one")
    parser.add_argument("--plan", default="", help="--spread: the plan (a winograd row's notes) [a tuning's]")
    parser.add_argument("--pause", type=_seconds, default=25.0, help="--spread: seconds between blocks")
    return parser.parse_args()


def child(args, way: str, batch: int, plan: str = "", *more: str) -> dict:
    threads = len(os.sched_getaffinity(0))
    done = subprocess.run([sys.executable, "-c", CHILD, way, args.model, str(batch), str(args.image_size),
                           str(threads), str(args.calls), plan, *more], capture_output=True, text=True, cwd=ROOT,
                          env=allocator.child_environment("steady"))
    if done.returncode:
        sys.exit(f"error: the {way} process at batch {batch} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    args = arguments()
    print(f"{args.model} at {args.image_size}, {len(os.sched_getaffinity(0))} threads, {args.calls} timed calls "
          f"a process; {time.strftime('%Y-%m-%d %H:%M')}")
    if args.spread:
        return spread(args)
    print("\n| batch | cycle | tuned | its plan afresh | tuned / afresh | runner | its plan afresh | runner / afresh |")
    print("|---|---|---|---|---|---|---|---|")
    ratios: dict[tuple[int, str], list[float]] = {}
    for batch in args.batch_sizes:
        for cycle in range(1, args.cycles + 1):
            line = [str(batch), str(cycle)]
            for way in ("tuned", "runner"):
                got = child(args, way, batch)
                fresh = child(args, "fresh", batch, got["plan"])  # the same plan: only how it was built differs
                ratio = got["images_per_s"] / fresh["images_per_s"]
                ratios.setdefault((batch, way), []).append(ratio)
                line += [f"{got['images_per_s']:.2f}", f"{fresh['images_per_s']:.2f}", f"{ratio:.3f}"]
            print("| " + " | ".join(line) + " |", flush=True)
    print()
    for (batch, way), values in ratios.items():
        print(f"batch {batch}: {way} / afresh, median of {len(values)}: {statistics.median(values):.3f} "
              f"(range {min(values):.3f}-{max(values):.3f})")


def spread(args) -> None:
    for batch in args.batch_sizes:
        plan = args.plan or child(args, "tuned", batch)["plan"]
        print(f"\nbatch {batch}, plan: {plan}")
        processes = [child(args, "fresh", batch, plan)["images_per_s"] for _ in range(args.spread)]
        blocks = child(args, "blocks", batch, plan, str(args.spread), str(args.pause))["blocks"]
        for name, values in ((f"{args.spread} processes", processes), (f"{args.spread} blocks of one process", blocks)):
            print(f"{name}: {', '.join(f'{v:.2f}' for v in values)} images/s; median {statistics.median(values):.2f}, "
                  f"range {min(values):.2f}-{max(values):.2f} ({max(values) / min(values):.3f}x)")


if __name__ == "__main__":
    main()
