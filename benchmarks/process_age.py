"""Does a process that has been running for minutes time a model slower than a fresh one? One process (the "kept"
one, as a sweep's worker) builds the runner once and, pair after pair, times a few calls after one untimed call,
then sits idle while a fresh process builds the same runner, warms up and times as many calls (as a cross-check's
tool does). The order inside a pair alternates, so that a drift of the machine falls on both sides alike.

    python benchmarks/process_age.py [--backend winograd] [--batch 8] [--pairs 20] [--calls 6] [--untimed 1]
        [--out FILE]

Winograd's plan is tuned once in the kept process (as the sweep's worker tunes it) and followed by every fresh one
(as its Timer does), unless --plan gives one to both. Prints each pair's images/s and the kept process's over the
fresh one's, their median with a 95% bootstrap interval over the pairs, and how many pairs the kept one lost.
Writes the pairs as JSON with --out.
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

BACKENDS = {"winograd": "channels_last", "eager": "contiguous"}


def ranged(low: int, high: int):
    """An argparse type: an int from `low` to `high`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"an integer from {low} to {high}, got {text!r}")
        return value
    return parse


def build(backend: str, batch: int, image_size: int, plan: str | None):
    import torch

    from vggbench.backends import make_runner, resolve_target
    from vggbench.zoo.settings import ModelSettings

    module = ModelSettings(seed=0, weights="random").load("vgg16").module.eval()
    runner = make_runner(resolve_target(backend, "cpu", "fp32", BACKENDS[backend]), module)
    x = runner.prepare(torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)))
    if plan:
        runner.follow(tuple(x.shape), plan)
    runner.run(x)  # winograd tunes (or builds the plan) here
    return runner, x


def timed(runner, x, calls: int) -> float:
    """The median ms of `calls` calls."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        runner.run(x)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def layers(runner, x) -> list[tuple[str, object]]:
    """Winograd's built model as its forward pass runs it, layer by layer: features, avgpool, flatten, classifier."""
    import torch

    model = runner._tuned[tuple(x.shape)][0]
    steps = [(f"features.{i}:{type(m).__name__}", m) for i, m in enumerate(model.features)
             if not isinstance(m, torch.nn.Identity)]
    steps += [("avgpool", model.avgpool), ("flatten", lambda t: torch.flatten(t, 1))]
    return steps + [(f"classifier.{i}:{type(m).__name__}", m) for i, m in enumerate(model.classifier)
                    if not isinstance(m, (torch.nn.Identity, torch.nn.Dropout))]


def layer_times(runner, x, calls: int) -> dict[str, float]:
    """The median ms of each layer over `calls` forward passes run layer by layer (what a call does, in order)."""
    import torch

    steps, times = layers(runner, x), {}
    with torch.inference_mode():
        for _ in range(calls):
            y = x
            for name, step in steps:
                start = time.perf_counter()
                y = step(y)
                times.setdefault(name, []).append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(v) for name, v in times.items()}


def fresh(args, plan: str | None) -> None:
    """The fresh process: build, warm up for 2 calls and 2 s, time, print the median ms."""
    runner, x = build(args.backend, args.batch, args.image_size, plan)
    start, warm = time.perf_counter(), 0
    while warm < 2 or time.perf_counter() - start < 2.0:
        runner.run(x)
        warm += 1
    out = {"median_ms": timed(runner, x, args.calls)}
    if args.layers:
        out["layers_ms"] = layer_times(runner, x, args.calls)
    print(json.dumps(out))


def layer_ratios(pairs: list[dict]) -> dict[str, tuple[float, float]]:
    """Per layer: the median over the pairs of the kept process's images/s over the fresh one's (fresh ms over kept
    ms, as the pairs' ratio), and the layer's median share of a fresh pass, in %."""
    names = list(pairs[0]["fresh_layers_ms"])
    out = {}
    for name in names:
        ratios = [p["fresh_layers_ms"][name] / p["kept_layers_ms"][name] for p in pairs]
        shares = [p["fresh_layers_ms"][name] / sum(p["fresh_layers_ms"].values()) * 100 for p in pairs]
        out[name] = (statistics.median(ratios), statistics.median(shares))
    return out


def by_order(pairs: list[dict]) -> dict[str, float]:
    """What ran just before each side, from the alternating order: in a pair the kept process times first, it follows
    itself (the last pair's second side); where the fresh one is first, it follows the last pair's fresh process and
    the kept one follows it. The median ms of each side so, and the pair ratio's median by who went first."""
    def median(key: str, first: str) -> float:
        return statistics.median(p[key] for p in pairs if p["first"] == first)

    return {"kept_first_ratio": median("ratio", "kept"), "fresh_first_ratio": median("ratio", "fresh"),
            "kept_after_kept_ms": median("kept_ms", "kept"), "fresh_after_kept_ms": median("fresh_ms", "kept"),
            "fresh_after_fresh_ms": median("fresh_ms", "fresh"), "kept_after_fresh_ms": median("kept_ms", "fresh")}


def summarize(paths: list[str]) -> None:
    """--summarize: each recorded file's pairs split by order (by_order)."""
    for path in paths:
        pairs = json.loads(Path(path).read_text())["pairs"]
        o = by_order(pairs[1:] if len(pairs) % 2 else pairs)  # whole pairs of pairs: as many of each order
        print(f"{Path(path).name}: kept first {o['kept_first_ratio']:.3f}, fresh first {o['fresh_first_ratio']:.3f}; "
              f"ms: kept after kept {o['kept_after_kept_ms']:.0f}, fresh after kept {o['fresh_after_kept_ms']:.0f}, "
              f"fresh after fresh {o['fresh_after_fresh_ms']:.0f}, kept after fresh {o['kept_after_fresh_ms']:.0f}")


def verdict(pairs: list[dict]) -> tuple[float, float, float, int]:
    """The pairs' ratios: their median, its 95% bootstrap interval, and how many read under 1."""
    from vggbench.bench.confidence import bootstrap_median

    ratios = [p["ratio"] for p in pairs]
    return (statistics.median(ratios), *bootstrap_median(ratios), sum(r < 1 for r in ratios))


def refuse_existing(out: str | None) -> None:
    """One error line and exit 2 where --out names a file that exists (a probe never overwrites a record)."""
    if out and Path(out).exists():
        print(f"error: {out} exists: choose another name", file=sys.stderr)
        sys.exit(2)


def pair_arguments(parser: argparse.ArgumentParser, backends) -> None:
    """What a probe of alternating pairs takes (this one and worker_vs_tool.py): the case, how many pairs, the calls."""
    parser.add_argument("--backend", choices=sorted(backends), default="winograd")
    parser.add_argument("--batch", type=ranged(1, 64), default=8)
    parser.add_argument("--image-size", type=ranged(32, 448), default=224)
    parser.add_argument("--pairs", type=ranged(2, 200), default=20)
    parser.add_argument("--calls", type=ranged(1, 100), default=6, help="timed calls a side, at least")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    pair_arguments(parser, BACKENDS)
    parser.add_argument("--untimed", type=ranged(1, 100), default=1,
                        help="the kept process's untimed calls before each pair's timed ones [default: 1, as a sweep's "
                             "later round opens]")
    parser.add_argument("--threads", type=ranged(1, 1024), help="[default: torch's]")
    parser.add_argument("--plan", help="winograd: the plan both processes follow [default: tuned by the kept one]")
    parser.add_argument("--layers", action="store_true", help="winograd: after the timed calls, as many passes "
                        "layer by layer on both sides, each layer's median ms kept with the pair")
    parser.add_argument("--out", help="a JSON file for the pairs")
    parser.add_argument("--summarize", nargs="+", metavar="FILE", help="print recorded files' pairs split by which "
                        "side went first (what ran just before each), and run nothing")
    parser.add_argument("--fresh", action="store_true", help=argparse.SUPPRESS)  # the fresh process's role
    args = parser.parse_args()
    if args.summarize:
        missing = [p for p in args.summarize if not Path(p).is_file()]
        if missing:
            parser.error(f"no such file: {missing[0]}")
        summarize(args.summarize)
        return
    if args.layers and args.backend != "winograd":
        parser.error("--layers times winograd's built model layer by layer: only with --backend winograd")
    refuse_existing(args.out)

    import torch

    from vggbench.core import allocator

    allocator.apply("steady")
    torch.set_num_threads(args.threads or torch.get_num_threads())
    if args.fresh:
        fresh(args, args.plan)
        return
    threads = torch.get_num_threads()
    runner, x = build(args.backend, args.batch, args.image_size, args.plan)
    plan = args.plan or (runner.notes(x) if args.backend == "winograd" else None)
    for _ in range(3):
        runner.run(x)
    command = [sys.executable, str(Path(__file__).resolve()), "--fresh", "--backend", args.backend,
               "--batch", str(args.batch), "--image-size", str(args.image_size), "--calls", str(args.calls),
               "--threads", str(threads)] + (["--plan", plan] if plan else []) + (["--layers"] if args.layers else [])
    env = allocator.child_environment("steady", os.environ)
    pairs = []
    for i in range(args.pairs):
        sides = {}
        for side in (("kept", "fresh") if i % 2 == 0 else ("fresh", "kept")):
            if side == "kept":
                for _ in range(args.untimed):  # one untimed call, as a sweep's later round opens (REWARM_CALLS)
                    runner.run(x)
                sides["kept"] = timed(runner, x, args.calls)
                if args.layers:
                    sides["kept_layers"] = layer_times(runner, x, args.calls)
            else:
                done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
                fresh_out = json.loads(done.stdout.strip().splitlines()[-1])
                sides["fresh"] = fresh_out["median_ms"]
                if args.layers:
                    sides["fresh_layers"] = fresh_out["layers_ms"]
        ratio = sides["fresh"] / sides["kept"]  # the kept process's images/s over the fresh one's
        pairs.append({"pair": i + 1, "first": "kept" if i % 2 == 0 else "fresh", "kept_ms": sides["kept"],
                      "fresh_ms": sides["fresh"], "ratio": ratio,
                      **({"kept_layers_ms": sides["kept_layers"], "fresh_layers_ms": sides["fresh_layers"]}
                         if args.layers else {})})
        print(f"pair {i + 1:2d}: kept {args.batch / sides['kept'] * 1e3:.3f} images/s, fresh "
              f"{args.batch / sides['fresh'] * 1e3:.3f}, kept/fresh {ratio:.3f}", flush=True)
    median, low, high, lost = verdict(pairs)
    print(f"\n{args.backend} at batch {args.batch}, {threads} threads: kept/fresh median {median:.3f} "
          f"(95% interval {low:.3f}-{high:.3f}), the kept process slower in {lost} of {len(pairs)} pairs")
    order = by_order(pairs)
    print(f"kept first {order['kept_first_ratio']:.3f}, fresh first {order['fresh_first_ratio']:.3f}")
    by_layer = layer_ratios(pairs) if args.layers else None
    for name, (ratio, share) in (by_layer or {}).items():
        print(f"  {name:32s} kept/fresh {ratio:.3f} ({share:4.1f}% of a fresh pass)")
    if args.out:
        from vggbench.core.env import capture
        from vggbench.core.fileio import write_text

        write_text(args.out, json.dumps({"settings": {k: v for k, v in vars(args).items() if k != "fresh"},
                                         "plan": plan, "threads": threads, "environment": capture(),
                                         "pairs": pairs, "median_ratio": median,
                                         "by_order": order,
                                         **({"layers": by_layer} if by_layer else {}),
                                         "interval": [low, high], "kept_slower": lost}, indent=1) + "\n")


if __name__ == "__main__":
    main()
