"""Where VGG16's reduced-precision error comes from on this CPU: the per-stage error profile of bf16 (eager bf16
autocast) and int8 (onnxruntime static QDQ), and the int8 mixed-precision plan measured (speed and agreement).

    python benchmarks/layers_vgg16.py [--weights FILE] [--out benchmarks/results/layers-vgg16]
    python benchmarks/layers_vgg16.py --model vgg11 --width 0.0625 --hidden 32 --image-size 32   # a quick check

1. Export the model to ONNX and int8 (into --work, default a temp folder) (calibrated as `vggbench export` does: the training split of the dataset the
   weights were trained on, else crops of two real photos).
2. `vggbench.profile_layers(..., all_stages=True)`: every stage (conv blocks, flatten, fc1..fc3) of eager bf16
   and onnxruntime int8 against eager fp32 on random batches and the photos (int8: the real images only), each
   stage a prefix sub-model exported with the same settings. Prints the tables, writes JSON and a plot.
3. `vggbench.parity.plan.plan_int8`: the fewest layers to keep in fp32 for >= 99% top-1 agreement with fp32 on
   the real images, each plan tried quantized, checked and timed (batch 1, briefly), beside ONNX Runtime fp32.

Weights: there are no ImageNet weights on this machine. With random weights (the default) the profile is still
informative (how error grows with depth, where int8 adds it), but top-1 agreement is nearly meaningless: a random
VGG16's 1000 logits are almost equal, so a tiny error flips the class and the plan may keep many layers in fp32
to hold 4 photos' top-1. Give trained weights (`--weights FILE`, e.g. `imagenet` once its file is in the torch
hub cache, or a file trained with `vggbench train`) for a plan that means something.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from vggbench.core.env import capture
from vggbench.core.fileio import write_json
from vggbench.parity.checked import export
from vggbench.parity.layer_plot import check_plot_path, plot_layers
from vggbench.parity.layers import profile_layers, table_rows
from vggbench.parity.plan import plan_int8
from vggbench.zoo.weights import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16")
    parser.add_argument("--weights", default="random", help="random, imagenet or a weights file")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--width", type=float, default=None)
    parser.add_argument("--hidden", type=int, default=None)
    parser.add_argument("--num-classes", type=int, default=None)
    parser.add_argument("--calibration-images", type=int, default=32)
    parser.add_argument("--no-plan", action="store_true", help="profile only")
    parser.add_argument("--out", default="benchmarks/results/layers-vgg16", help="folder for layers.json and the plot")
    parser.add_argument("--work", default=None, help="folder for the exports and prefix exports (GBs at 224), kept "
                                                     "and reused [default: a temp folder, removed]")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vggbench-layers-") as tmp:
        run(args, Path(args.out), Path(args.work or tmp))


def run(args, out: Path, work: Path) -> None:
    check_plot_path(out / "profile.png")
    start = time.perf_counter()
    model = load_model(args.model, args.weights, width=args.width, hidden=args.hidden, num_classes=args.num_classes)
    folder = work / "export"
    from vggbench.exporters.quantize import QuantConfig

    # not verified here: random weights' int8 fails the export's agreement check, and this script measures it
    export(model, folder, image_size=args.image_size, formats=["onnx", "onnx-int8"], force=True, verify=False,
           quant=QuantConfig(images=args.calibration_images))
    print(f"exported {model.name} ({model.weights.source} weights) in {time.perf_counter() - start:.0f} s")

    report = profile_layers(folder, backends=["eager", "onnxruntime"], precisions=["bf16", "int8"],
                            all_stages=True, reference=model, cache_dir=work / "prefixes")
    for profile in report.profiles:
        first = profile.first_exceeding or "none"
        print(f"\n{profile.label}: {profile.images} images ({', '.join(profile.inputs)}); first stage over the "
              f"{profile.precision} budget: {first}")
        print(tabulate(table_rows(profile), headers="keys", floatfmt=".4g"), flush=True)
    plot_layers(report, out / "profile.png")
    print(f"\nprofile done at {time.perf_counter() - start:.0f} s; plot {out / 'profile.png'}")

    plan = None
    if not args.no_plan:
        plan = plan_int8(folder, reference=model, cache_dir=work / "prefixes")
        print(f"\nint8 plan (target {plan.target:.0%} top-1 agreement on {plan.images} real images: "
              f"{', '.join(plan.inputs)}); onnxruntime fp32: {plan.fp32['images_per_s']:.3g} images/s at batch "
              f"{plan.batch_size}")
        rows = [{"keep_fp32": ",".join(t.keep_fp32) or "(none: all int8)", "top1_agreement": t.top1_agreement,
                 "min_cosine": t.min_cosine, "median_ms": t.median_ms, "images_per_s": t.images_per_s,
                 "vs_fp32": t.images_per_s / plan.fp32["images_per_s"], "reached": t.reached} for t in plan.trials]
        print(tabulate(rows, headers="keys", floatfmt=".4g"))
        print(f"plan: keep {', '.join(plan.keep_fp32) or 'nothing'} in fp32" if plan.keep_fp32 is not None
              else "no plan reached the target")
    write_json(out / "layers.json", {"command": "benchmarks/layers_vgg16.py", "arguments": vars(args),
                                     "environment": capture(), "profile": report.to_dict(),
                                     "plan": plan.to_dict() if plan else None,
                                     "seconds": time.perf_counter() - start})
    print(f"wrote {out / 'layers.json'} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
