"""Where VGG16's time goes on this CPU: the per-layer time of eager, onnxruntime, OpenVINO and winograd side by side,
each from its runtime's own profiler (`vggbench run --profile --suite benchmarks/suites/layer-time.toml`), with each
layer's share of the measured call.

    python benchmarks/layer_time.py [--out benchmarks/results/layer-time-vgg16.json] [--calls 5]
    python benchmarks/layer_time.py --model vgg11 --width 0.0625 --hidden 32 --image-size 32   # a quick check

Prints the CPU kind (its vector flags), /proc/pressure/cpu before and after, the table, and for each backend
whether its layers (and the "other" line) add up to the measured call within 10%. The machine may be shared and
busy: the shares are the point, not the absolute times (profiling adds its own cost as well).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from vggbench.bench.layer_time import profile_run, render_layer_times

SUITE = Path(__file__).parent / "suites" / "layer-time.toml"  # the backends, each in its memory format
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_kind() -> str:
    """The CPU's model name and the vector flags that matter here, from /proc/cpuinfo."""
    model, flags = "?", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "model name":
            model = value
        elif key == "flags":
            flags = set(value.split())
    return f"{model}; flags: {' '.join(f for f in FLAGS if f in flags) or 'none of ' + ' '.join(FLAGS)}"


def pressure() -> str:
    try:
        return " | ".join(Path("/proc/pressure/cpu").read_text().split("\n")[:1])
    except OSError:
        return "unavailable"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--width", type=float, default=None)
    parser.add_argument("--hidden", type=int, default=None)
    parser.add_argument("--calls", type=int, default=5, help="profiled calls per backend, after the warm-up")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--export-cache", default="exports/.cache")
    parser.add_argument("--out", default="benchmarks/results", help="a folder or a .json file")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    model = {k: v for k, v in (("width", args.width), ("hidden", args.hidden)) if v is not None}
    print(f"CPU: {cpu_kind()}")
    print(f"/proc/pressure/cpu before: {pressure()}")
    started = time.perf_counter()
    data, path = profile_run(
        SUITE, models=[args.model], image_size=args.image_size, batch_sizes=[args.batch_size], threads=args.threads,
        min_iters=args.calls, export_cache=args.export_cache, out=args.out, force=args.force,
        command=" ".join(["python", *sys.argv]), echo=lambda line: print(line, file=sys.stderr), **model)
    print(f"/proc/pressure/cpu after: {pressure()}")
    print(render_layer_times(data, "github"))
    within = True
    for entry in data["profiles"]:
        if entry["status"] != "ok":
            within = False
            continue
        cover = entry["coverage"]
        ok = abs(cover - 1) <= 0.10
        within &= ok
        print(f"{entry['backend']}: layers + other = {cover:.1%} of the measured {entry['wall_ms']:.4g} ms/call "
              f"({'within' if ok else 'NOT within'} 10%)")
    print(f"wrote {path} ({time.perf_counter() - started:.0f} s)")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
