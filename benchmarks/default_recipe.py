"""The default training recipe on digits: test accuracy of every model of the zoo, trained from scratch with
default options (`vggbench train MODEL --data digits --width W --epochs 20`), as a markdown table.

An accuracy benchmark, not a timing one: about 40 minutes for the eleven models on one thread of a loaded 2-core
machine.

    python benchmarks/default_recipe.py                         # every model at width 1/16, 20 epochs, 1 thread
    python benchmarks/default_recipe.py --recipe paper --models vgg11,vgg16
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
    parser.add_argument("--recipe", default="default", choices=("default", "paper"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads [default: 1, for a shared machine]")
    parser.add_argument("--out", default="benchmarks/results/default-recipe.md", help="the markdown table")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    header = ("| model | test top-1 | best val top-1 (epoch) | first epoch at >= 90% val | warnings |\n"
              "|---|---|---|---|---|")
    print(header, flush=True)
    with tempfile.TemporaryDirectory() as runs:
        for model in args.models.split(","):
            result = train(TrainConfig(model=model, data="digits", width=args.width, epochs=args.epochs,
                                       recipe=args.recipe, seed=args.seed, device="cpu", progress=False,
                                       out=str(Path(runs) / model)))
            first = next((e["epoch"] for e in result.history if e["val_acc"] >= 0.9), None)
            row = (f"| {model} | {result.test.top1:.1%} | {result.best_val_acc:.1%} ({result.best_epoch}) | "
                   f"{first or '-'} | {'chance warning' if result.warnings else '-'} |")
            rows.append(row)
            print(row, flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"`{' '.join(['python', 'benchmarks/default_recipe.py', *sys.argv[1:]])}`: recipe {args.recipe}, "
                   f"width {args.width:g}, {args.epochs} epochs on digits, seed {args.seed}, "
                   f"{args.threads} torch thread(s), torch {torch.__version__}\n\n{header}\n" + "\n".join(rows) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
