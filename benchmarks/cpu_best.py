"""VGG16 at 224 on this CPU: every fast path of vggbench against torchvision's eager VGG16, in one run.

    python benchmarks/cpu_best.py [--batch-sizes 1,8] [--min-time 4] [--out benchmarks/results]

1. `vggbench.benchmark("best-cpu")`: eager fp32 NCHW (vggbench's VGG16, the same network as
   torchvision's) and NHWC, torch.compile + freezing, the winograd backend (per layer the fastest of
   fused direct conv and Winograd F(2x2)/F(4x4)/F(6x6), activations kept between calls), ONNX Runtime fp32,
   bf16 autocast;
   every case's first output checked against eager fp32; the machine's sgemm rate measured in the same run.
2. torchvision.models.vgg16() eager, contiguous fp32, torch.inference_mode, default threads: the baseline,
   with its page faults per call (getrusage), the cost the winograd backend avoids by keeping its tensors.
3. int8 speed: VGG16's ONNX export quantized (static, QDQ, per-channel, calibrated on crops of real photos).
   Random weights have no meaningful class agreement, so this one is speed only.
4. int8 agreement: a VGG11-BN trained here on scikit-learn's digits (real images), exported, quantized on
   digits training images and verified against fp32 on the digits test split (vggbench.verify).

Prints one table of images/s with ratios to torchvision eager and to the sgemm rate, the issue's targets
with pass/fail, and writes everything to a JSON file.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from tabulate import tabulate

import vggbench
from vggbench import TrainConfig, export, train, verify
from vggbench.backends import eager_runner, load_runner
from vggbench.core.env import capture
from vggbench.core.fileio import write_json
from vggbench.core.timing import Timing, measure
from vggbench.data.inputs import random_batch
from vggbench.exporters.quantize import QuantConfig
from vggbench.zoo.profiling import profile

TARGET_SPEEDUP = 1.8  # best fp32 path over torchvision eager
TARGET_PEAK = 0.9  # best fp32 path's GFLOP/s over the measured sgemm rate
TARGET_INT8 = 1.5  # int8 over the best fp32 path
TARGET_AGREEMENT = 0.99  # int8 top-1 agreement with fp32 on real images


def time_runner(runner, batch_size: int, timing: Timing) -> dict:
    x = random_batch(batch_size, 224, seed=0)
    m = measure(runner, x, timing)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        runner(x)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3
    return {"median_ms": m.stats.median_ms, "images_per_s": batch_size / (m.stats.median_ms / 1e3),
            "iterations": len(m.stats.samples_ms), "noisy": m.stats.noisy, "page_faults_per_call": round(faults)}


def int8_agreement(work: Path) -> dict:
    """Train on digits, export with int8, verify on the digits test split: the agreement int8 is offered with."""
    result = train(TrainConfig(model="vgg11_bn", width=0.125, head="compact", hidden=256, optimizer="adam",
                               schedule="cosine", data="digits", epochs=20, device="cpu", out=str(work / "digits"),
                               progress=False))
    model = vggbench.load_model("vgg11_bn", result.best_path)
    export(model, work / "digits-export", image_size=32, formats=["onnx", "onnx-int8"])
    report = verify(work / "digits-export", backends=["onnxruntime"], precisions=["int8"], photos=False)
    real = [r for r in report.results if r.inputs.startswith("digits")]
    return {"fp32_test_top1": result.test.top1 if result.test else None,
            "inputs": [r.inputs for r in real], "top1_agreement": min(r.top1_agreement for r in real),
            "min_cosine": min(r.min_cosine for r in real), "passed": all(r.passed for r in real)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--min-time", type=float, default=4.0)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    timing = Timing(warmup=1, warmup_time_s=1.0, min_time_s=args.min_time, min_iters=5, max_iters=200)
    started = time.perf_counter()

    run = vggbench.benchmark("best-cpu", batch_sizes=sizes, min_time_s=args.min_time, progress=True)
    peak = next(p["gflops_per_s"] for p in run.environment["gemm_peaks"] if p["precision"] == "fp32")
    gflop = 2 * profile("vgg16").gmacs

    rows: dict[tuple[str, int], dict] = {}
    tv = torchvision.models.vgg16(weights=None).eval()
    for b in sizes:
        rows["torchvision eager fp32 contiguous", b] = time_runner(eager_runner(tv), b, timing)
    for r in run.results:
        if r.status == "ok" and r.precision != "int8":
            rows[f"{r.backend} {r.precision} {r.memory_format}", r.batch_size] = {
                "median_ms": r.median_ms, "images_per_s": r.images_per_s, "noisy": r.noisy}
    skipped = {f"{r.backend} {r.precision} {r.memory_format} @{r.batch_size}": f"{r.status}: {r.reason}"
               for r in run.results if r.status != "ok" and r.precision != "int8"}

    with tempfile.TemporaryDirectory(prefix="cpu-best-") as tmp:
        work = Path(tmp)
        fp32_model = vggbench.load_model("vgg16", "random", seed=0)
        # speed only: random weights are not verified for int8 (see int8_agreement for that)
        export(fp32_model, work / "vgg16", formats=["onnx", "onnx-int8"], verify=False,
               quant=QuantConfig(calibration="photos"))
        runner = load_runner(work / "vgg16", "onnxruntime", precision="int8")
        for b in sizes:
            rows["onnxruntime int8 contiguous (speed only)", b] = time_runner(runner, b, timing)
        del runner
        agreement = int8_agreement(work)

    table, verdicts = [], []
    for b in sizes:
        base = rows["torchvision eager fp32 contiguous", b]["images_per_s"]
        fp32 = {k: v for (k, bs), v in rows.items() if bs == b and " fp32 " in f" {k} "}
        best_name, best = max(fp32.items(), key=lambda kv: kv[1]["images_per_s"])
        for (name, bs), v in sorted(rows.items(), key=lambda kv: -kv[1]["images_per_s"]):
            if bs != b:
                continue
            table.append([b, name, f"{v['median_ms']:.0f}", f"{v['images_per_s']:.2f}",
                          f"{v['images_per_s'] / base:.2f}x", f"{v['images_per_s'] * gflop:.0f}",
                          f"{v['images_per_s'] * gflop / peak:.2f}", "yes" if v.get("noisy") else ""])
        int8 = rows["onnxruntime int8 contiguous (speed only)", b]["images_per_s"]
        verdicts += [
            [b, f"best fp32 ({best_name}) / torchvision eager >= {TARGET_SPEEDUP}",
             f"{best['images_per_s'] / base:.2f}", best["images_per_s"] / base >= TARGET_SPEEDUP],
            [b, f"best fp32 GFLOP/s / sgemm >= {TARGET_PEAK}", f"{best['images_per_s'] * gflop / peak:.2f}",
             best["images_per_s"] * gflop / peak >= TARGET_PEAK],
            [b, f"int8 / best fp32 >= {TARGET_INT8}", f"{int8 / best['images_per_s']:.2f}",
             int8 / best["images_per_s"] >= TARGET_INT8]]
    verdicts.append(["-", f"int8 top-1 agreement on real images >= {TARGET_AGREEMENT} ({', '.join(agreement['inputs'])})",
                     f"{agreement['top1_agreement']:.4f}", agreement["top1_agreement"] >= TARGET_AGREEMENT])

    cpu = run.environment.get("cpu", {})
    print(f"\nVGG16 224x224, {torch.get_num_threads()} threads, {cpu.get('model', '?')}; "
          f"sgemm {peak:.0f} GFLOP/s; {gflop:.2f} GFLOP per image\n")
    print(tabulate(table, ["batch", "path", "median_ms", "images/s", "vs torchvision", "GFLOP/s", "of sgemm",
                           "noisy"], disable_numparse=True))
    if skipped:
        print("\nnot timed:\n" + "\n".join(f"  {k}: {v}" for k, v in skipped.items()))
    print("\n" + tabulate([[b, what, value, "PASS" if ok else "miss"] for b, what, value, ok in verdicts],
                          ["batch", "target", "measured", ""], disable_numparse=True))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"cpu-best-{time.strftime('%Y%m%d-%H%M%S')}.json"
    write_json(path, {"kind": "cpu_best", "environment": capture(), "sgemm_gflops_per_s": peak,
                      "gflop_per_image": gflop, "timing": vars(timing),
                      "rows": [{"path": k, "batch_size": b, **v} for (k, b), v in rows.items()],
                      "skipped": skipped, "int8_agreement": agreement,
                      "targets": [{"batch_size": b, "target": w, "measured": m, "passed": ok}
                                  for b, w, m, ok in verdicts],
                      "benchmark_run": run.to_dict(), "seconds": round(time.perf_counter() - started, 1)})
    print(f"\nwrote {path} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
