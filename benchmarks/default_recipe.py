"""The default training recipe on digits: test accuracy of every model of the zoo, trained from scratch with
default options (`vggbench train MODEL --data digits --width W --epochs 20`), as a markdown table.

An accuracy benchmark, not a timing one: about 40 minutes for the eleven models on one thread of a loaded 2-core
machine.

    python benchmarks/default_recipe.py                         # every model at width 1/16, 20 epochs, 1 thread
    python benchmarks/default_recipe.py --recipe paper --models vgg11,vgg16
    python benchmarks/default_recipe.py --models vgg16,vgg11 --head compact --seeds 0,1,2 --threads 1,2   # spread
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from vggbench.training.config import TrainConfig
from vggbench.training.loop import train
from vggbench.zoo.specs import list_models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(list_models()), help="comma-separated [default: the zoo]")
    parser.add_argument("--width", type=float, default=1 / 16)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--head", default="imagenet", choices=("imagenet", "compact"),
                        help="the classifier head (compact: 512 x width hidden units, on the 1x1 map) [default: imagenet]")
    parser.add_argument("--dropout", type=float, help="the classifier's dropout [default: the recipe's]")
    parser.add_argument("--recipe", default="default", choices=("default", "paper"))
    parser.add_argument("--seeds", "--seed", default="0", help="comma-separated: one run per seed [default: 0]")
    parser.add_argument("--threads", default="1", help="comma-separated torch thread counts, one run per count "
                                                       "[default: 1, for a shared machine]")
    parser.add_argument("--out", default="benchmarks/results/default-recipe.md", help="the markdown table")
    args = parser.parse_args(argv)
    seeds, threads = [int(v) for v in args.seeds.split(",")], [int(v) for v in args.threads.split(",")]
    header = ("| model | seed | threads | test top-1 | best val top-1 (epoch) | first epoch at >= 90% val | warnings |\n"
              "|---|---|---|---|---|---|---|")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    title = (f"`{' '.join(['python', 'benchmarks/default_recipe.py', *sys.argv[1:]])}`: recipe {args.recipe}, "
             f"width {args.width:g}, {args.head} head, dropout {args.dropout if args.dropout is not None else 'of the recipe'}, 32x32, {args.epochs} epochs on digits, torch {torch.__version__}"
             f"\n\n{header}\n")
    rows: list[str] = []
    print(header, flush=True)
    with tempfile.TemporaryDirectory() as runs:
        for model in args.models.split(","):
            for seed in seeds:
                for count in threads:
                    torch.set_num_threads(count)
                    result = train(TrainConfig(model=model, data="digits", width=args.width, head=args.head,
                                               dropout=args.dropout, image_size=32, epochs=args.epochs, recipe=args.recipe, seed=seed,
                                               device="cpu", progress=False,
                                               out=str(Path(runs) / f"{model}-{seed}-{count}")))
                    first = next((e["epoch"] for e in result.history if e["val_acc"] >= 0.9), None)
                    row = (f"| {model} | {seed} | {count} | {result.test.top1:.1%} | {result.best_val_acc:.1%} "
                           f"({result.best_epoch}) | {first or '-'} | "
                           f"{'chance warning' if result.warnings else '-'} |")
                    rows.append(row)
                    print(row, flush=True)
                    out.write_text(title + "\n".join(rows) + "\n")  # each run as it ends: a long sweep keeps its rows
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
