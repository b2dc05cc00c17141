"""vggbench's fastest CPU path against the runtimes users deploy on, in one run: VGG16 at 224, batch 1 and 8.

    python benchmarks/runtimes_cpu.py [--batch-sizes 1,8] [--min-time 4] [--out benchmarks/results]

Paths, all in this one process, each case warmed up and timed as `vggbench run` times it
(vggbench.core.timing.measure):
- torchvision eager fp32: torchvision.models.vgg16() in eager mode, contiguous, torch.inference_mode.
- onnxruntime defaults: vggbench's verified model.onnx in an InferenceSession with no session options.
- OpenVINO defaults: the same model.onnx compiled with no configuration at all (bf16 on a CPU with bf16
  instructions, f32 elsewhere; the row says which), dynamic batch, no cache.
- OpenVINO fp32: the same, with only INFERENCE_PRECISION_HINT=f32 (and LATENCY, its default hint).
- vggbench: every path of `vggbench run --best` (the best-cpu suite), each checked against eager fp32
  (only those that passed count); and OpenVINO with THROUGHPUT (the batch as single-image requests over
  the plugin's streams, `vggbench run --openvino-hint THROUGHPUT`) at batch sizes above 1.
The competitors are timed before and after vggbench's paths, and each keeps the faster of its two
measurements, so that a quieter minute favours them, not vggbench.

Prints (and writes beside the JSON, as runtimes-cpu-<time>.md) a markdown table of images/s with ratios
to torchvision eager, OpenVINO defaults and onnxruntime defaults, and the targets of issue 15: the
fastest vggbench path that passed parity over the best of {OpenVINO defaults, OpenVINO fp32, onnxruntime
defaults} >= 1.0 and >= 1.2 at each batch size.

--model/--width/--image-size/--min-time make a quick check of the script itself (e.g. --model vgg11
--width 0.0625 --image-size 32 --min-time 0.2); the torchvision baseline is then vggbench's eager fp32,
the same network at that width.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torchvision

import vggbench
from vggbench.backends import (
    OrtSettings,
    OvSettings,
    RunnerOptions,
    eager_runner,
    load_runner,
    resolve_target,
)
from vggbench.backends.openvino import default_precision
from vggbench.bench.cache import ExportCache
from vggbench.core.env import capture
from vggbench.core.fileio import write_json, write_text
from vggbench.core.timing import Timing, measure
from vggbench.data.inputs import random_batch
from vggbench.parity.metrics import compare, tolerance_for

TARGETS = (1.0, 1.2)  # vggbench's fastest passing path over the best competitor


def competitors(export_dir: Path, model: str, width: float, loaded) -> dict[str, object]:
    """name -> runner of each runtime as a user gets it (and the torchvision baseline)."""
    ov_default = default_precision()
    if width == 1 and hasattr(torchvision.models, model):
        baseline = ("torchvision eager fp32", eager_runner(getattr(torchvision.models, model)(weights=None).eval()))
    else:
        baseline = ("torchvision eager fp32 (vggbench's eager, same network)", eager_runner(loaded.module))
    return dict([
        baseline,
        ("onnxruntime defaults fp32", load_runner(export_dir, "onnxruntime", options=RunnerOptions.of(OrtSettings()))),
        (f"OpenVINO defaults ({ov_default})", load_runner(
            export_dir, "openvino", precision=ov_default, options=RunnerOptions.of(OvSettings(defaults=True)))),
        ("OpenVINO fp32 (f32 hint)", load_runner(
            export_dir, "openvino", precision="fp32",
            options=RunnerOptions.of(OvSettings(static_batch=False, cache_dir="")))),
    ])


def time_competitors(runners: dict, sizes: list[int], image_size: int, timing: Timing, reference,
                     rows: dict) -> None:
    for b in sizes:
        x = random_batch(b, image_size, seed=0)
        for name, runner in runners.items():
            m = measure(runner, x, timing)
            ips = b / (m.stats.median_ms / 1e3)
            if (name, b) in rows and rows[name, b]["images_per_s"] >= ips:
                continue
            parity = None
            if not name.startswith("torchvision"):  # same weights as vggbench's reference: compared
                precision = "bf16" if "(bf16)" in name else "fp32"
                result = compare(reference(x[:2]), runner(x[:2]), tolerance_for(precision), backend=name,
                                 device="cpu", precision=precision, memory_format="contiguous", inputs="batch")
                parity = {"max_abs": result.max_abs, "passed": result.passed}
            rows[name, b] = {"kind": "competitor", "median_ms": m.stats.median_ms, "images_per_s": ips,
                             "noisy": m.stats.noisy, "parity": parity, "notes": runner.notes(x)}


def vggbench_rows(run, rows: dict, label: str = "") -> list[dict]:
    skipped = []
    for r in run.results:
        name = f"vggbench {r.backend} {r.precision} {r.memory_format}{label}"
        if r.status != "ok":
            skipped.append({"path": name, "batch_size": r.batch_size, "status": r.status, "reason": r.reason})
            continue
        rows[name, r.batch_size] = {"kind": "vggbench", "median_ms": r.median_ms, "images_per_s": r.images_per_s,
                                    "noisy": r.noisy, "parity": {"max_abs": r.parity_max_abs, "passed": True},
                                    "notes": r.notes}
    return skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--min-time", type=float, default=4.0)
    parser.add_argument("--model", default="vgg16")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--export-cache", default="exports/.cache")
    args = parser.parse_args()
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    timing = Timing(warmup=1, warmup_time_s=1.0, min_time_s=args.min_time, min_iters=5, max_iters=200)
    started = time.perf_counter()
    overrides = dict(models=[args.model], batch_sizes=sizes, min_time_s=args.min_time, image_size=args.image_size,
                     export_cache=args.export_cache, progress=True)
    if args.width != 1:
        overrides["width"] = args.width

    loaded = vggbench.load_model(args.model, "random", seed=0, **({"width": args.width} if args.width != 1 else {}))
    reference = eager_runner(loaded.module)
    cache = ExportCache(args.export_cache, loaded, args.image_size)  # the export the suite's runs use too
    export_dir = cache.folder(resolve_target("onnxruntime", "cpu", "fp32"))
    runners = competitors(export_dir, args.model, args.width, loaded)
    rows: dict[tuple[str, int], dict] = {}
    time_competitors(runners, sizes, args.image_size, timing, reference, rows)

    best = vggbench.benchmark("best-cpu", **overrides)
    skipped = vggbench_rows(best, rows)
    extra = [b for b in sizes if b > 1]
    throughput = None
    if extra:
        throughput = vggbench.benchmark("best-cpu", **{**overrides, "batch_sizes": extra}, backends=["openvino"],
                                        precisions=["fp32", "bf16"], memory_formats=["contiguous"],
                                        openvino_hint="THROUGHPUT")
        skipped += vggbench_rows(throughput, rows, " THROUGHPUT")
    time_competitors(runners, sizes, args.image_size, timing, reference, rows)  # again: each keeps its best

    table, verdicts = [], []
    for b in sizes:
        at = {name: v for (name, bs), v in rows.items() if bs == b}
        base = next(v["images_per_s"] for name, v in at.items() if name.startswith("torchvision"))
        ov_defaults = next(v["images_per_s"] for name, v in at.items() if name.startswith("OpenVINO defaults"))
        ort_defaults = at["onnxruntime defaults fp32"]["images_per_s"]
        rival_name, rival = max(((n, v) for n, v in at.items() if n.startswith(("OpenVINO", "onnxruntime"))),
                                key=lambda nv: nv[1]["images_per_s"])
        ours_name, ours = max(((n, v) for n, v in at.items() if v["kind"] == "vggbench"),
                              key=lambda nv: nv[1]["images_per_s"])
        for name, v in sorted(at.items(), key=lambda nv: -nv[1]["images_per_s"]):
            ips = v["images_per_s"]
            table.append(f"| {b} | {'**' + name + '**' if name == ours_name else name} | {v['median_ms']:.1f} | "
                         f"{ips:.2f} | {ips / base:.2f}x | {ips / ov_defaults:.2f}x | {ips / ort_defaults:.2f}x | "
                         f"{'yes' if v['noisy'] else ''} |")
        ratio = ours["images_per_s"] / rival["images_per_s"]
        verdicts += [{"batch_size": b, "target": f"{ours_name} / {rival_name} >= {t}", "measured": round(ratio, 3),
                      "passed": ratio >= t} for t in TARGETS]

    cpu = best.environment.get("cpu", {})
    header = (f"{args.model} at {args.image_size}, {torch.get_num_threads()} threads, {cpu.get('model', '?')}; "
              f"images/s (median), one run\n\n"
              "| batch | path | median ms | images/s | vs torchvision eager | vs OpenVINO defaults | "
              "vs onnxruntime defaults | noisy |\n|---|---|---|---|---|---|---|---|")
    targets = "| batch | target | measured | |\n|---|---|---|---|\n" + "\n".join(
        f"| {v['batch_size']} | {v['target']} | {v['measured']:.2f} | {'pass' if v['passed'] else 'miss'} |"
        for v in verdicts)
    markdown = f"{header}\n" + "\n".join(table) + "\n\n" + targets + "\n"
    if skipped:
        markdown += "\nnot timed:\n\n" + "\n".join(f"- {s['path']} @{s['batch_size']}: {s['status']}: {s['reason']}"
                                                  for s in skipped) + "\n"
    print("\n" + markdown)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"runtimes-cpu-{time.strftime('%Y%m%d-%H%M%S')}"
    write_text(stem.with_suffix(".md"), markdown)
    write_json(stem.with_suffix(".json"), {
        "kind": "runtimes_cpu", "environment": capture(), "timing": vars(timing), "arguments": vars(args),
        "rows": [{"path": n, "batch_size": b, **v} for (n, b), v in rows.items()], "skipped": skipped,
        "targets": verdicts, "benchmark_run": best.to_dict(),
        "throughput_run": throughput.to_dict() if throughput else None,
        "seconds": round(time.perf_counter() - started, 1)})
    print(f"wrote {stem}.md and .json ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
