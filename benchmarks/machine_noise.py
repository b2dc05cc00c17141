"""How steady is this machine for memory-bound work against compute-bound work? A copy of 256 MiB (memory
bandwidth) and 40 products of 512x512 matrices (in cache: the cores alone), each timed over and over for --seconds;
for each, the median call, the spread of the calls (p95 - p5 over the median) and the spread of the medians of
1-second windows (max - min, and their coefficient of variation).

    python benchmarks/machine_noise.py [--seconds 20] [--threads 2] [--out benchmarks/results]

Why: on a shared host the neighbours' memory traffic is invisible to /proc/pressure/cpu and to the load average,
and slows memory-bound code (Winograd's large transforms) far more than compute-bound code: a row whose calls
stream gigabytes can drift by 20% while a GEMM-bound one stays within a few per cent. Writes the figures as JSON
(machine-noise-<time>.json) under --out with the load (CPU pressure, load average, busy processes) before
and after.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from vggbench.core.env import capture
from vggbench.core.fileio import write_text
from vggbench.core.load import LoadSampler

MAX_SECONDS = 3600.0


def seconds(text: str) -> float:
    """--seconds: finite, 0 to an hour (inf would never end, nan never ends a probe either way)."""
    value = float(text)
    if not math.isfinite(value) or not 0 <= value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text}: not a number of seconds from 0 to {MAX_SECONDS:g}")
    return value


def threads(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"{text}: not a thread count from 1 to 1024")
    return value


def spread(seconds: float, call) -> dict:
    call()
    times, end = [], time.perf_counter() + seconds
    while not times or time.perf_counter() < end:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    windows, current, elapsed = [], [], 0.0
    for t in times:
        current.append(t)
        elapsed += t
        if elapsed >= 1.0:
            windows.append(statistics.median(current))
            current, elapsed = [], 0.0
    median = statistics.median(times)
    q = statistics.quantiles(times, n=20) if len(times) > 1 else None
    return {"calls": len(times), "median_ms": median * 1e3,
            "calls_p5_p95_pct": (q[-1] - q[0]) / median * 100 if q else None,
            "windows": len(windows),
            "windows_range_pct": (max(windows) - min(windows)) / statistics.median(windows) * 100 if windows else None,
            "windows_cv_pct": statistics.pstdev(windows) / statistics.mean(windows) * 100 if len(windows) > 1
            else None}


def measure(seconds: float, threads: int) -> dict:
    """Both probes, with the load before and after, as the JSON this script writes."""
    torch.set_num_threads(threads)
    source = torch.ones(64 * 2**20)  # 256 MiB
    target = torch.empty_like(source)
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    sampler = LoadSampler()
    before = sampler.sample()
    probes = {"copy 256 MiB (memory-bound)": spread(seconds, lambda: target.copy_(source)),
              "40 GEMMs 512x512 (in cache)": spread(seconds, lambda: [a @ b for _ in range(40)])}
    return {"seconds": seconds, "threads": threads, "load_before": before, "load_after": sampler.sample(),
            "probes": probes, "cpu": capture().get("cpu"), "torch": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def lines(data: dict) -> list[str]:
    """A line per probe, as the script prints it ("-" where too few calls or windows say nothing)."""
    return [f"{name}: {p['calls']} calls, median {p['median_ms']:.2f} ms, p5-p95 {_pct(p['calls_p5_p95_pct'])} of it; "
            f"{p['windows']} 1 s windows: range {_pct(p['windows_range_pct'])}, cv {_pct(p['windows_cv_pct'])}"
            for name, p in data["probes"].items()]


def write(data: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(data, indent=2) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=seconds, default=20.0, help="seconds of calls per probe")
    parser.add_argument("--threads", type=threads, default=2)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    data = measure(args.seconds, args.threads)
    print("\n".join(lines(data)))
    path = write(data, Path(args.out) / f"machine-noise-{time.strftime('%Y%m%d-%H%M%S')}.json")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
