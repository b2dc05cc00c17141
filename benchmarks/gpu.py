"""The GPU figures of issue 15 on one CUDA GPU (an H100 for the issue's targets), in stages, each writing its JSON
under --out; a stage that fails is recorded and the next one runs.

    python benchmarks/gpu.py --plan                 # on any machine: check every stage's suite and targets, no GPU
    python benchmarks/gpu.py                        # every stage (about 25-35 min on an H100, engine builds first)
    python benchmarks/gpu.py --stages headline,parity --out benchmarks/results/h100

Stages:
  headline  VGG16 224, batch 256: eager and torch.compile bf16/AMP channels_last, TensorRT fp16 (suite
            benchmarks/suites/gpu-headline.toml, parity-checked against eager fp32); then TensorRT int8 (calibrated on
            crops of real photos) and fp8, speed only: random weights have no class agreement to keep
  int8      top-1 agreement of TensorRT int8 (and fp16) with fp32 on real images: a VGG11-BN trained on scikit-learn's
            digits here, exported, and verified on the digits test split (vggbench.verify, target >= 99%)
  best      `vggbench run --best --device cuda` (suite best-cuda) at batch 1 and 256
  sweep     eager AMP channels_last, batch 1..4096 (sizes after an out-of-memory one are not tried), and its plot
  parity    onnxruntime CUDA fp32 (TF32 off) against eager fp32 on the CPU, VGG16 224 (vggbench.verify)

Issue 15's targets at batch 256 on an H100: best fp16/bf16 path >= 16,000 images/s, best int8/fp8 path >= 24,000.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import traceback
from pathlib import Path

import vggbench
from vggbench.backends import RunnerOptions, make_runner, resolve_target
from vggbench.backends.tensorrt import TrtSettings
from vggbench.bench.suite import load_suite
from vggbench.core.fileio import write_json

HERE = Path(__file__).resolve().parent
HEADLINE = HERE / "suites" / "gpu-headline.toml"
STAGES = ("headline", "int8", "best", "sweep", "parity")
TARGET_FP16 = 16_000  # images/s, VGG16 224 batch 256, best fp16/bf16 path on an H100
TARGET_INT8 = 24_000  # best int8/fp8 path


def _run(suite, out: Path, name: str, cache: Path, **overrides) -> dict:
    result = vggbench.benchmark(suite, export_cache=cache, progress=False, **overrides)
    json_path, _ = result.write(out / f"{name}.json")
    data = vggbench.read_run(json_path)
    from vggbench.bench.report import render_run

    print(render_run(data))
    return data


def headline(out: Path, cache: Path) -> dict:
    import torch

    from vggbench.core.imagenet import IMAGENET_MEAN, IMAGENET_STD
    from vggbench.core.timing import Timing, measure
    from vggbench.data.inputs import photo_crops, random_batch

    data = _run(HEADLINE, out, "headline", cache)
    rows = [r for r in data["results"] if r["status"] == "ok"]
    best = max(rows, key=lambda r: r["images_per_s"], default=None)
    found = {"fp16_bf16_best": best and {k: best[k] for k in ("backend", "precision", "variant", "images_per_s")}}
    # int8 and fp8 speed on the same VGG16 (random weights: speed only; agreement is the int8 stage)
    folder = out / "vgg16-export"
    if not (folder / "manifest.json").exists():
        vggbench.export(vggbench.load_model("vgg16"), folder, formats=["onnx"], image_size=224, force=True)
    images = photo_crops(32, 224, IMAGENET_MEAN, IMAGENET_STD)
    batch = random_batch(256, 224)
    for precision in ("int8", "fp8"):
        try:
            runner = make_runner(resolve_target("tensorrt", "cuda", precision), export_dir=folder,
                                 options=RunnerOptions.of(TrtSettings(max_batch=256), calibration=images))
            m = measure(runner, batch, Timing(warmup=10, warmup_time_s=2.0, min_time_s=3.0, min_iters=20))
            found[f"tensorrt_{precision}"] = {"images_per_s": 256 / (m.stats.median_ms / 1e3),
                                              "median_ms": m.stats.median_ms, "noisy": m.stats.noisy,
                                              "notes": runner.notes(batch)}
            del runner
            torch.cuda.empty_cache()
        except vggbench.VggbenchError as e:
            found[f"tensorrt_{precision}"] = {"status": type(e).__name__, "reason": str(e)}
    speeds = [v["images_per_s"] for k, v in found.items() if k.startswith("tensorrt_") and "images_per_s" in v]
    found["targets"] = {"fp16_bf16 >= 16000": bool(best) and best["images_per_s"] >= TARGET_FP16,
                        "int8_fp8 >= 24000 (speed)": bool(speeds) and max(speeds) >= TARGET_INT8}
    write_json(out / "headline-int8-fp8.json", found)
    print(json.dumps(found, indent=2))
    return found


def int8_agreement(out: Path, cache: Path) -> dict:
    work = out / "digits"
    result = vggbench.train(vggbench.TrainConfig(
        model="vgg11_bn", width=0.125, head="compact", hidden=256, optimizer="adam", schedule="cosine", data="digits",
        epochs=20, device="cuda", amp=True, out=str(work / "train"), progress=False))
    model = vggbench.load_model("vgg11_bn", result.best_path)
    vggbench.export(model, work / "export", image_size=32, formats=["onnx"], force=True)
    report = vggbench.verify(work / "export", backends=["tensorrt"], precisions=["fp32", "fp16", "int8", "fp8"],
                             device="cuda")
    found = {"fp32_test_top1": result.test.top1 if result.test else None, "skipped": report.skipped,
             "results": [r.to_dict() for r in report.results]}
    write_json(out / "int8-agreement.json", found)
    for r in report.results:
        print(f"{r.backend} {r.precision} on {r.inputs}: top-1 agreement {r.top1_agreement:.4f}, "
              f"{'passed' if r.passed else 'FAILED: ' + r.reason}")
    return found


def best(out: Path, cache: Path) -> dict:
    return _run("best-cuda", out, "best-cuda", cache, batch_sizes=[1, 256])


def sweep(out: Path, cache: Path) -> dict:
    from vggbench.bench.plot import plot_run

    data = _run("cuda", out, "sweep", cache, backends=["eager"], precisions=["amp"], memory_formats=["channels_last"],
                batch_sizes="1..4096", min_time_s=1.0)
    print(f"wrote {plot_run(data, out / 'sweep.png')}")
    return data


def parity(out: Path, cache: Path) -> dict:
    folder = out / "vgg16-export"
    if not (folder / "manifest.json").exists():
        vggbench.export(vggbench.load_model("vgg16"), folder, formats=["onnx"], image_size=224, force=True)
    report = vggbench.verify(folder, backends=["onnxruntime"], precisions=["fp32"], device="cuda")
    write_json(out / "ort-cuda-parity.json", report.to_dict())
    for r in report.results:
        print(f"onnxruntime cuda fp32 on {r.inputs}: max |diff| {r.max_abs:.3g}, {'passed' if r.passed else r.reason}")
    return report.to_dict()


def plan() -> None:
    """What each stage would run, checked on this machine without a GPU: suites parse, every target resolves."""
    checks = {"headline": load_suite(HEADLINE).groups(), "best": load_suite("best-cuda").override(
        batch_sizes=[1, 256]).groups(), "sweep": load_suite("cuda").override(
        backends=["eager"], precisions=["amp"], memory_formats=["channels_last"], batch_sizes="1..4096").groups()}
    for stage, groups in checks.items():
        for g in groups:
            resolve_target(g.backend, "cuda", g.precision, g.memory_format, available=False)
        cases = sum(len(g.batch_sizes) for g in groups)
        print(f"{stage}: {cases} cases in {len(groups)} groups: " + "; ".join(
            f"{g.backend}{' ' + str(dict(g.settings)) if g.settings else ''} {g.precision} {g.memory_format} "
            f"batch {','.join(map(str, g.batch_sizes))}" for g in groups))
    for precision in ("fp32", "fp16", "int8", "fp8"):
        resolve_target("tensorrt", "cuda", precision, available=False)
    resolve_target("onnxruntime", "cuda", "fp32", available=False)
    print("int8: train vgg11_bn on digits (20 epochs), export onnx, verify tensorrt fp32/fp16/int8/fp8 on cuda")
    print("parity: export vgg16 224 onnx, verify onnxruntime fp32 on cuda")
    print("plan ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", action="store_true", help="Check the stages without running them (no GPU needed).")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"Comma-separated, from {', '.join(STAGES)}.")
    parser.add_argument("--out", default="benchmarks/results/gpu")
    parser.add_argument("--export-cache", default=None, help="[default: a temporary folder]")
    args = parser.parse_args()
    if args.plan:
        plan()
        return
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}: choose from {', '.join(STAGES)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    functions = {"headline": headline, "int8": int8_agreement, "best": best, "sweep": sweep, "parity": parity}
    with tempfile.TemporaryDirectory(prefix="vggbench-gpu-") as tmp:
        cache = Path(args.export_cache or tmp)
        status = {}
        for stage in stages:
            started = time.perf_counter()
            print(f"== {stage}", flush=True)
            try:
                functions[stage](out, cache)
                status[stage] = "ok"
            except Exception as e:  # the record says which stage failed and why; the next stage runs
                traceback.print_exc()
                status[stage] = f"failed: {type(e).__name__}: {e}"
            print(f"== {stage}: {status[stage]} in {time.perf_counter() - started:.0f} s", flush=True)
    write_json(out / "stages.json", status)


if __name__ == "__main__":
    main()
