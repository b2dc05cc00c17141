"""The tuned deployable winner against the runtimes' defaults, in one run (issue 29).

1. `vggbench tune` VGG16 for --goal latency (batch 1) and --goal throughput (batch 8) over the deployable CPU
   runtimes (onnxruntime and OpenVINO by default), fp32, the threads fixed to the cores given to the run.
2. One `vggbench run`-style sweep, its cases interleaved in rounds: each winner at both batch sizes, onnxruntime
   with no settings, OpenVINO with no configuration at all (`defaults`: its own precision, bf16 on a CPU with bf16
   instructions) and OpenVINO fp32 with vggbench's defaults (LATENCY hint, f32), eager fp32 (the baseline) and
   vggbench's own fast paths (--fast-paths, winograd by default: not deployable, so never a winner's rival, but
   the fastest overall fp32 path is set against the best default too).

    python benchmarks/tune_vgg16.py [--trials 6] [--precisions fp32[,bf16]] [--image-size 224] [--out benchmarks/results]

Prints both searches and the comparison table (speedups over the best default at each batch size, with the
intervals); writes the tune and run results files under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vggbench.backends.openvino import default_precision  # noqa: E402
from vggbench.backends.registry import get_backend  # noqa: E402
from vggbench.bench.confidence import images_interval  # noqa: E402
from vggbench.bench.report import render_run, render_tune  # noqa: E402
from vggbench.bench.results import claim_results, read_run  # noqa: E402
from vggbench.bench.suite import ISOLATIONS, Suite  # noqa: E402
from vggbench.bench.sweep import benchmark  # noqa: E402
from vggbench.bench.tune import TuneSettings, tune  # noqa: E402
from vggbench.core.errors import ConfigError  # noqa: E402


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--backends", default="onnxruntime,openvino")
    parser.add_argument("--precisions", default="fp32",
                        help="comma-separated precisions the searches try (fp32,bf16 on a CPU with bf16 "
                             "instructions: OpenVINO's own default there is bf16)")
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds of timed calls per trial")
    parser.add_argument("--compare-time", type=float, default=4.0, help="seconds per case of the comparison")
    parser.add_argument("--min-iters", type=int, default=5, help="timed calls per case, at least")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of a trial's timed calls (the comparison: 5)")
    parser.add_argument("--fast-paths", default="winograd",
                        help="vggbench's own fp32 paths timed beside them, comma-separated ('' for none): the fastest "
                             "overall path against the best default")
    parser.add_argument("--isolation", default="process", choices=ISOLATIONS,
                        help="the comparison's groups each in a fresh worker process (the cross-check's finding: "
                             "what one backend leaves in a process cannot reach another's rows)")
    parser.add_argument("--export-cache", default="exports/.cache")
    parser.add_argument("--out", default="benchmarks/results")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    cores = len(os.sched_getaffinity(0))
    common = {"image_size": args.image_size, "min_time_s": args.min_time, "warmup_time_s": 0.5,
              "rounds": args.rounds, "min_iters": args.min_iters, "max_iters": 200}
    winners = {}
    for goal, batch in (("latency", 1), ("throughput", 8)):
        settings = TuneSettings(goal=goal, batch_size=None if goal == "latency" else batch, trials=args.trials,
                                backends=tuple(args.backends.split(",")), precisions=tuple(args.precisions.split(",")),
                                threads=(cores,), probe_time_s=0.5)
        winners[goal] = search(args.model, settings, args.out, f"tune-{goal}", args.export_cache, **common)
    ov_default = default_precision()
    matrix = [{"backends": ["eager"], "precisions": ["fp32"]},
              {"backends": ["onnxruntime"], "precisions": ["fp32"]},
              {"backends": ["openvino"], "precisions": ["fp32"]},
              {"backends": ["openvino"], "precisions": [ov_default], "backend": {"openvino": {"defaults": True}}}]
    for backend in filter(None, args.fast_paths.split(",")):
        matrix.append({"backends": [backend], "precisions": ["fp32"], "memory_formats": ["channels_last"]})
    for trial in winners.values():
        matrix.append({"backends": [trial["backend"]], "precisions": [trial["precision"]],
                       "memory_formats": [trial["memory_format"]], "backend": {trial["backend"]: trial["settings"]}})
    suite = Suite(name="tuned-vs-defaults", models=(args.model,), batch_sizes=(1, 8), image_size=args.image_size,
                  threads=cores, min_time_s=args.compare_time, warmup_time_s=1.0, min_iters=args.min_iters, max_iters=200,
                  isolation=args.isolation, matrix=tuple(matrix))
    journal = claim_results(args.out, prefix="tuned-vs-defaults")
    run = benchmark(suite, export_cache=args.export_cache, journal=journal)
    path, _ = journal.finish(run.to_dict())
    data = read_run(path)
    print(render_run(data), "\n")
    print(summary(data, winners, ov_default))
    print(f"\nwrote {path}")


def search(model: str, settings: TuneSettings, out: str, prefix: str, export_cache: str, **common) -> dict:
    """One tune, written under `out`, its trials printed as they end and the search after; returns the winning
    trial, with "results": the file (exits when no trial completed)."""
    journal = claim_results(out, prefix=prefix)
    try:
        run = tune(model, settings, export_cache=export_cache, journal=journal,
                   echo=lambda line: print(line, file=sys.stderr, flush=True), **common)
    except BaseException:  # as `vggbench tune`: the journal goes unless it holds a finished trial
        journal.close()
        raise
    path, _ = journal.finish(run.to_dict())
    data = read_run(path)
    print(render_tune(data), "\n", flush=True)
    block = data["settings"]["tune"]
    if block["winner"] is None:
        sys.exit(f"no {settings.goal} trial completed")
    trial = next(t for t in block["trials"] if t["number"] == block["winner"]["trial"])
    trial["results"] = str(path)
    print(f"{settings.goal} winner: {json.dumps({k: trial[k] for k in ('backend', 'precision', 'settings')})} "
          f"({path})\n", flush=True)
    return trial


def summary(data: dict, winners: dict, ov_default: str) -> str:
    """Each winner over the best default at each batch size, with both rows' 95% intervals of images/s: the best of
    onnxruntime with no settings and OpenVINO with no configuration (its own precision), and the best fp32 one
    (onnxruntime with no settings, OpenVINO asked only for f32 and LATENCY)."""
    rows = [r for r in data["results"] if r["status"] == "ok"]
    lines = []
    for batch in (1, 8):
        at = [r for r in rows if r["batch_size"] == batch]
        ort = [r for r in at if r["backend"] == "onnxruntime" and _untouched(r, _defaults("onnxruntime"))]
        ov = [r for r in at if r["backend"] == "openvino" and r["backend_settings"]["defaults"]]
        ov_f32 = [r for r in at if r["backend"] == "openvino" and r["precision"] == "fp32"
                  and _untouched(r, _defaults("openvino"))]
        fastest = max((r for r in at if r["precision"] == "fp32"), key=lambda r: r["images_per_s"])
        for title, defaults in (("best default", ort + ov), ("best fp32 default", ort + ov_f32)):
            best = max(defaults, key=lambda r: r["images_per_s"])
            lines.append(f"batch {batch}: {title} {_name(best)} {_ips(best)}")
            for goal, trial in winners.items():
                for r in at:
                    if r["backend"] == trial["backend"] and r["precision"] == trial["precision"] and r is not best \
                            and _untouched(r, trial["settings"]):
                        lines.append(f"  {goal} winner {_name(r)} {_ips(r)}: "
                                     f"{r['images_per_s'] / best['images_per_s']:.2f}x the {title}")
            lines.append(f"  the fastest fp32 path {_name(fastest)} {_ips(fastest)}: "
                         f"{fastest['images_per_s'] / best['images_per_s']:.2f}x the {title}")
    lines.append(f"(OpenVINO with no configuration runs {ov_default} on this CPU)")
    return "\n".join(lines)


# settings a run fills in for every row alike (the cores, the cache folder), never a tuned knob
NOT_KNOBS = ("threads", "cache_dir", "tf32")


def _defaults(backend: str) -> dict:
    """Every setting of the backend at its declared default (what a row with no settings ran with)."""
    return {k: v for k, v in get_backend(backend).settings().to_dict().items() if k not in NOT_KNOBS}


def _untouched(r: dict, settings: dict) -> bool:
    """Whether a row ran with these backend settings and every other at its declared default (OpenVINO's "no
    configuration" row, `defaults`, is not the row of a trial that left its knobs at vggbench's defaults). A setting
    the row does not record (a knob added after its file was written) ran at the backend's default."""
    got, declared = r["backend_settings"] or {}, _defaults(r["backend"])
    return all(got.get(k, declared.get(k)) == v for k, v in {**declared, **settings}.items())


def _name(r: dict) -> str:
    """The row's backend, precision and the settings it changed from the backend's defaults."""
    base = _defaults(r["backend"])
    changed = {k: v for k, v in (r["backend_settings"] or {}).items() if k not in NOT_KNOBS and base.get(k) != v}
    return f"{r['backend']} {r['precision']}" + (f" {json.dumps(changed)}" if changed else " (defaults)")


def _ips(r: dict) -> str:
    low, high = images_interval(r) or (None, None)
    return f"{r['images_per_s']:.4g} images/s" + (f" [{low:.4g}, {high:.4g}]" if low is not None else "")


if __name__ == "__main__":
    try:
        main()
    except ConfigError as e:  # bad input (a precision no backend here runs, say): one line, exit 2, as the CLI
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
