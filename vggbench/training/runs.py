"""The run folder of a training run: checkpoints, config.json, history.json and its plot.

Every file is written atomically (temp file + rename), so an interrupted run never leaves a half-written
file. Checkpoints hold only tensors and plain Python values, so they load with weights_only=True.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path

import torch

from ..core.errors import ConfigError, WeightsError
from ..core.fileio import atomic_file, atomic_stream, write_json
from ..zoo.specs import get_spec
from ..zoo.weight_files import torch_load
from ..zoo.weights import check_lrn_form
from .config import TrainConfig

BEST, LAST = "best.pt", "last.pt"
CONFIG, HISTORY, PLOT = "config.json", "history.json", "history.png"
CHECKPOINT_FORMAT = "vggbench-train/1"
HISTORY_SCHEMA_VERSION = 1
# Settings a --resume may change: they do not change what the run computes.
RESUME_MAY_CHANGE = ("epochs", "resume", "workers", "progress", "save_every", "keep_every", "data_dir", "download",
                     "device")
# What a training checkpoint holds besides "model_state_dict" and the "vggbench" metadata.
TRAINING_KEYS = ("optimizer", "scheduler", "scaler", "epoch", "step", "partial", "rng", "history", "config")


# --- checkpoints --------------------------------------------------------------------------------------

def save_checkpoint(path: str | os.PathLike, checkpoint: dict) -> Path:
    path = Path(path)
    with atomic_stream(path) as f:  # a full disk is then a WriteError, not torch's "unexpected pos"
        torch.save(checkpoint, f)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A training checkpoint written by `save_checkpoint` (weights-only load; WeightsError otherwise)."""
    checkpoint = torch_load(path)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(f"{path} is not a vggbench training checkpoint (no format {CHECKPOINT_FORMAT!r}); "
                           f"to start from its weights, pass it as --weights instead of --resume")
    missing = [k for k in ("model_state_dict", "vggbench", *TRAINING_KEYS) if k not in checkpoint]
    if missing:
        raise WeightsError(f"{path} is an incomplete training checkpoint: no {', '.join(missing)}")
    return checkpoint


SNAPSHOT = re.compile(r"epoch_\d+\.pt")


def snapshot_name(epoch: int) -> str:
    """The --keep-every snapshot of an epoch, kept beside last.pt and best.pt."""
    return f"epoch_{epoch}.pt"


# --- the run folder and resuming -------------------------------------------------------------------

def resume_config(config: TrainConfig) -> tuple[TrainConfig, dict]:
    """The run's saved settings, with those a resume may change taken from `config`."""
    checkpoint = load_checkpoint(config.resume)
    names = {f.name for f in fields(config)}
    saved = type(config)(**{k: v for k, v in checkpoint["config"].items() if k in names})
    if get_spec(saved.model).name != get_spec(config.model).name:
        raise WeightsError(f"{config.resume} is a checkpoint of {get_spec(saved.model).name}; "
                           f"it cannot resume {get_spec(config.model).name}")
    check_lrn_form(get_spec(saved.model), checkpoint["vggbench"], config.resume)
    defaults = type(config)()
    clashes = [f"{k} (saved {getattr(saved, k)!r}, given {getattr(config, k)!r})" for k in sorted(names)
               if k not in (*RESUME_MAY_CHANGE, "model", "out") and getattr(config, k) != getattr(saved, k)
               and getattr(config, k) != getattr(defaults, k)]
    if clashes:
        raise ConfigError(f"--resume continues {config.resume} with the settings it was started with, but "
                          f"{', '.join(clashes)} differ; drop them, or start a new run with "
                          f"--weights {config.resume} to fine-tune from it")
    folder = Path(config.resume).parent
    if config.out and Path(config.out).resolve() != folder.resolve():
        raise ConfigError(f"a resumed run stays in its folder {folder}; drop --out {config.out}")
    changed = {k: getattr(config, k) for k in RESUME_MAY_CHANGE if getattr(config, k) != getattr(defaults, k)}
    return replace(saved, **changed, out=str(folder)), checkpoint


def run_dir(config: TrainConfig) -> str:
    """The run folder: the resumed run's, --out (a new or empty folder, or one that holds none of the files a run
    writes), or runs/<model>-<data>[-N]."""
    if config.resume:
        _check_history(Path(config.out))
        return config.out
    if config.out:
        out = check_out(config)
        out.mkdir(parents=True, exist_ok=True)
        return str(out)
    stem = f"{get_spec(config.model).name}-{config.data.replace(':', '-').replace('/', '_').strip('-_')}"
    for n in range(1, 10_000):
        out = Path("runs") / (stem if n == 1 else f"{stem}-{n}")
        try:
            out.mkdir(parents=True)
            return str(out)
        except FileExistsError:
            continue
    raise ConfigError(f"runs/{stem}-N: every name is taken; pass --out")


def check_out(config: TrainConfig) -> Path | None:
    """The --out of a new run, or a ConfigError when it holds a run or any file a run writes (the user's own
    config.json or history.json is neither overwritten, nor taken for the run's, nor removed when the run fails)."""
    if config.resume or not config.out:
        return None
    out = Path(config.out)
    taken = [name for name in (LAST, BEST) if (out / name).exists()]
    if taken:
        raise ConfigError(f"{out} already holds a run ({taken[0]}); continue it with --resume "
                          f"{out / taken[0]}, or choose another --out")
    clash = run_files(out)
    if clash:
        raise ConfigError(f"--out {out} already holds {', '.join(clash[:3])}{' ...' if len(clash) > 3 else ''}, "
                          f"which a run writes; choose a new or empty folder")
    return out


def run_files(folder: Path) -> list[str]:
    """The names in `folder` that a run writes (config.json, history.json, history.png, the checkpoints)."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir()
                  if p.name in (CONFIG, HISTORY, PLOT, BEST, LAST) or SNAPSHOT.fullmatch(p.name))


def _check_history(folder: Path) -> None:
    """A resumed run rewrites history.json: only one that a run wrote (a dict with its schema_version and epochs)."""
    path = folder / HISTORY
    if not path.exists():
        return
    try:
        history = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        history = None
    if not (isinstance(history, dict) and history.get("schema_version") == HISTORY_SCHEMA_VERSION
            and isinstance(history.get("epochs"), list)):
        raise ConfigError(f"{path} is not the history of a vggbench run, and resuming would overwrite it; move it "
                          f"away first")


# --- history and plot ---------------------------------------------------------------------------------

def write_history(run_dir: Path, epochs: Sequence[dict], **summary) -> Path:
    """history.json: one record per epoch (loss in nats, accuracy as a fraction) and a summary."""
    return write_json(run_dir / HISTORY, {"schema_version": HISTORY_SCHEMA_VERSION, **summary,
                                          "epochs": list(epochs)})


def plot_history(path: str | os.PathLike, epochs: Sequence[dict], title: str = "",
                 best_epoch: int | None = None) -> Path:
    """Loss and accuracy per epoch, train and validation, as a PNG (no pyplot: no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    x = [e["epoch"] for e in epochs]
    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    loss, acc = fig.subplots(1, 2)
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        loss.plot(x, [e[key] for e in epochs], marker="o", label=label)
    for key, label in (("train_acc", "train"), ("val_acc", "validation")):
        acc.plot(x, [100 * e[key] for e in epochs], marker="o", label=label)
    loss.set(title="Loss", xlabel="epoch", ylabel="cross-entropy (nats)")
    acc.set(title="Top-1 accuracy", xlabel="epoch", ylabel="accuracy (%)")
    for ax in (loss, acc):
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best (epoch {best_epoch})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
