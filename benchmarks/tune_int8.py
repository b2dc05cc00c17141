"""The tuned int8 plan against onnxruntime's and OpenVINO's default int8, with a digits-trained model (issue 29).

1. Train a small VGG on scikit-learn's digits (real images; `vggbench train MODEL --data digits`), or take
   --weights. int8 is offered only with trained weights: every int8 export is judged by its top-1 agreement with
   fp32 on the digits, and calibrated on the digits training images (QuantConfig's "auto").
2. `vggbench tune` --precision int8 over onnxruntime and OpenVINO, for --goal latency (batch 1) and --goal
   throughput (batch 8): their runtime knobs and the int8 knobs of their records (int8_method: minmax,
   percentile, entropy or nncf; int8_plan: all layers or the mixed plan; onnxruntime's NHWC and NCHWc layouts),
   threads fixed to the cores given to the run; each search begins with both backends' defaults.
3. One sweep, its cases interleaved in rounds: both winners, onnxruntime int8 and OpenVINO int8 with vggbench's
   default settings (minmax, every layer int8), and onnxruntime fp32, at batch 1 and 8; then each int8 row's top-1
   agreement with fp32 on the digits test split (vggbench.verify on the row's own export, its backend and settings).

    python benchmarks/tune_int8.py [--weights best.pt] [--trials 12] [--epochs 8] [--out benchmarks/results]

Prints the search, the comparison and a markdown table; writes the tune and comparison results files under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tune_vgg16 import search  # noqa: E402  (this folder: the script's own)

from vggbench import TrainConfig, load_model, train, verify  # noqa: E402
from vggbench.backends import resolve_target  # noqa: E402
from vggbench.backends.registry import get_backend  # noqa: E402
from vggbench.bench.cache import ExportCache  # noqa: E402
from vggbench.bench.confidence import images_interval  # noqa: E402
from vggbench.bench.report import render_run  # noqa: E402
from vggbench.bench.results import claim_results, read_run  # noqa: E402
from vggbench.bench.suite import Suite  # noqa: E402
from vggbench.bench.sweep import benchmark  # noqa: E402
from vggbench.bench.tune import TuneSettings  # noqa: E402


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg11_bn")
    parser.add_argument("--weights", help="a vggbench checkpoint trained on digits [default: train one here]")
    parser.add_argument("--width", type=float, default=0.125, help="training: the model's width")
    parser.add_argument("--epochs", type=int, default=8, help="training: epochs on digits")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--backends", default="onnxruntime,openvino")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of timed calls per trial")
    parser.add_argument("--compare-time", type=float, default=2.0, help="seconds per case of the comparison")
    parser.add_argument("--export-cache", default="exports/.cache")
    parser.add_argument("--out", default="benchmarks/results")
    return parser.parse_args()


def trained(args, work: Path) -> tuple[str, dict]:
    if args.weights:
        return args.weights, {"weights": args.weights}
    result = train(TrainConfig(model=args.model, width=args.width, head="compact", hidden=256, optimizer="adam",
                               schedule="cosine", data="digits", epochs=args.epochs, device="cpu",
                               out=str(work / "digits"), progress=False))
    return str(result.best_path), {"trained": f"{args.model} width {args.width:g}, compact head (hidden 256), "
                                              f"{args.epochs} epochs on digits at 32x32, adam, cosine",
                                   "fp32_test_top1": result.test.top1 if result.test else None}


def main() -> None:
    args = arguments()
    cores = len(os.sched_getaffinity(0))
    work = Path(tempfile.mkdtemp(prefix="vggbench-tune-int8-"))
    weights, about = trained(args, work)
    print(f"weights: {weights} {json.dumps(about)}", flush=True)
    common = {"image_size": 32, "weights": weights, "min_time_s": args.min_time, "warmup_time_s": 0.3,
              "rounds": 2, "min_iters": 5, "max_iters": 2000}
    winners = {}
    for goal, batch in (("latency", 1), ("throughput", 8)):
        settings = TuneSettings(goal=goal, batch_size=None if goal == "latency" else batch, trials=args.trials,
                                backends=tuple(args.backends.split(",")), precisions=("int8",), threads=(cores,),
                                probe_time_s=0.3)
        winners[goal] = search(args.model, settings, args.out, f"tune-int8-{goal}", args.export_cache, **common)

    matrix = [{"backends": ["onnxruntime"], "precisions": ["fp32"]},
              {"backends": ["onnxruntime"], "precisions": ["int8"]},
              {"backends": ["openvino"], "precisions": ["int8"]}]
    matrix += [{"backends": [w["backend"]], "precisions": ["int8"], "memory_formats": [w["memory_format"]],
                "backend": {w["backend"]: w["settings"]}} for w in winners.values()]
    suite = Suite(name="tuned-int8-vs-defaults", models=(args.model,), batch_sizes=(1, 8), image_size=32,
                  weights=weights, threads=cores, min_time_s=args.compare_time, warmup_time_s=0.5, min_iters=5,
                  max_iters=4000, matrix=tuple(matrix))
    journal = claim_results(args.out, prefix="tuned-int8-vs-defaults")
    before = os.getloadavg()
    compared = benchmark(suite, export_cache=args.export_cache, journal=journal)
    after = os.getloadavg()
    path, _ = journal.finish(compared.to_dict())
    data = read_run(path)
    print(render_run(data), "\n")
    agreement = agreements(data, args, weights)
    print(table(data, winners, agreement))
    loaded = sum(bool(r.get("under_load")) for r in data["results"])
    print(f"\nload average (1, 5, 15 min) before/after the comparison: {before} / {after}; rows under load: "
          f"{loaded} of {len(data['results'])}")
    summary = {"about": about, "comparison": str(path), "winners": winners,
               "agreement": {" ".join(k): v for k, v in agreement.items()},
               "loadavg": {"before": before, "after": after}, "rows_under_load": loaded}
    (Path(path).with_suffix(".summary.json")).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {', '.join(w['results'] for w in winners.values())}, {path}")


def _user(r: dict) -> dict:
    spec = get_backend(r["backend"])
    return {k: v for k, v in (r["backend_settings"] or {}).items() if k in spec.settings.user_fields()}


def agreements(data: dict, args, weights: str) -> dict:
    """(backend, settings) -> top-1 agreement with fp32 on the digits test split and the least cosine, measured by
    vggbench.verify on the int8 export that row ran (found again in the export cache, as the run made it)."""
    model = load_model(args.model, weights)
    cache = ExportCache(args.export_cache, model, 32)
    found = {}
    for r in data["results"]:
        if r["status"] != "ok" or r["precision"] != "int8":  # fp32 is the reference
            continue
        user = _user(r)
        key = (r["backend"], r["precision"], json.dumps(user, sort_keys=True))
        if key in found:
            continue
        spec = get_backend(r["backend"])
        target = resolve_target(r["backend"], "cpu", "int8")
        folder = cache.path(target, spec.settings(**user))
        report = verify(folder, reference=model, backends=[r["backend"]], precisions=["int8"], photos=False,
                        data="digits", backend_settings={r["backend"]: spec.settings(**user)})
        real = [x for x in report.results if x.inputs.startswith("digits")]
        found[key] = {"inputs": real[0].inputs if real else None,
                      "top1_agreement": min(x.top1_agreement for x in real) if real else None,
                      "min_cosine": min(x.min_cosine for x in real) if real else None}
    return found


def table(data: dict, winners: dict, agreement: dict) -> str:
    rows = [r for r in data["results"] if r["status"] == "ok"]
    lines = ["| batch | path | settings changed from the defaults | images/s [95% interval] | vs best default int8 | "
             "top-1 agreement with fp32 (digits test) |", "|---|---|---|---|---|---|"]
    for batch in (1, 8):
        at = [r for r in rows if r["batch_size"] == batch]
        defaults = [r for r in at if r["precision"] == "int8" and _user(r) == _user_default(r)]
        best = max(defaults, key=lambda r: r["images_per_s"]) if defaults else None
        for r in at:
            user, default = _user(r), _user_default(r)
            changed = {k: v for k, v in user.items() if v != default.get(k)}
            won = [goal for goal, w in winners.items() if (r["backend"], r["precision"]) == (w["backend"], w["precision"])
                   and all(user.get(k) == v for k, v in w["settings"].items())]
            name = f"{r['backend']} {r['precision']}" + (" (defaults)" if not changed else "") + \
                (f", the {' and '.join(won)} winner" if won else "")
            low, high = images_interval(r) or (None, None)
            ips = f"{r['images_per_s']:,.0f}" + (f" [{low:,.0f}, {high:,.0f}]" if low is not None else "")
            ratio = f"{r['images_per_s'] / best['images_per_s']:.2f}x" if best and r["precision"] == "int8" else ""
            agree = agreement.get((r["backend"], r["precision"], json.dumps(user, sort_keys=True)), {})
            agree = agree.get("top1_agreement")
            shown = ", ".join(f"{k}={v}" for k, v in changed.items())
            lines.append(f"| {batch} | {name} | {shown} | {ips} | {ratio} | "
                         f"{'' if agree is None else f'{agree:.1%}'} |")
    return "\n".join(lines)


def _user_default(r: dict) -> dict:
    spec = get_backend(r["backend"])
    return {k: v for k, v in spec.settings().to_dict().items() if k in spec.settings.user_fields()}


if __name__ == "__main__":
    main()
