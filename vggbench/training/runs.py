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

from ..core.documents import read_text
from ..core.errors import ConfigError, WeightsError
from ..core.fileio import atomic_file, atomic_stream, write_json
from ..zoo.specs import get_spec
from ..zoo.weight_files import torch_load
from ..zoo.weights import check_lrn_form
from .config import TrainConfig

BEST, LAST = "best.pt", "last.pt"
CONFIG, HISTORY, PLOT = "config.json", "history.json", "history.png"
CHECKPOINT_FORMAT = "vggbench-train/1"
# best.pt: the best epoch's weights and metadata, nothing to resume from (the optimizer state would double the
# file: 1.5 GB for a fine-tuned VGG11-BN with Adam), which last.pt holds
WEIGHTS_FORMAT = "vggbench-weights/1"
HISTORY_SCHEMA_VERSION = 1
# Settings a --resume may change: they do not change what the run computes.
RESUME_MAY_CHANGE = ("epochs", "resume", "workers", "progress", "save_every", "keep_every", "data_dir", "download",
                     "device")
# What a training checkpoint holds besides "model_state_dict" and the "vggbench" metadata.
# What every record of a run's history holds (plots and the chance warning read them).
HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")
TRAINING_KEYS = ("optimizer", "scheduler", "scaler", "epoch", "step", "partial", "rng", "history", "config")


# --- checkpoints --------------------------------------------------------------------------------------

def save_checkpoint(path: str | os.PathLike, checkpoint: dict) -> Path:
    path = Path(path)
    with atomic_stream(path) as f:  # a full disk is then a WriteError, not torch's "unexpected pos"
        torch.save(checkpoint, f)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A training checkpoint written by `save_checkpoint` (weights-only load; WeightsError otherwise), its
    contents checked against CHECKPOINT_SCHEMA."""
    checkpoint = torch_load(path)
    if isinstance(checkpoint, dict) and checkpoint.get("format") == WEIGHTS_FORMAT:
        raise WeightsError(f"{path} holds a run's best weights only, no training state: resume from "
                           f"{Path(path).with_name(LAST)}, or start a new run with --weights {path}")
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(f"{path} is not a vggbench training checkpoint (no format {CHECKPOINT_FORMAT!r}); "
                           f"to start from its weights, pass it as --weights instead of --resume")
    missing = [k for k in ("model_state_dict", "vggbench", *TRAINING_KEYS) if k not in checkpoint]
    if missing:
        raise WeightsError(f"{path} is an incomplete training checkpoint: no {', '.join(missing)}")
    check_checkpoint(checkpoint, path)
    return checkpoint


def weights_file(meta: dict, state: dict) -> dict:
    """What best.pt holds: the weights and their metadata (`vggbench.load_model` and every --weights read it)."""
    return {"format": WEIGHTS_FORMAT, "vggbench": meta, "model_state_dict": state}


def load_best_state(path: str | os.PathLike) -> dict:
    """The state_dict of a run's best.pt: a weights file, or a training checkpoint as older runs wrote it."""
    saved = torch_load(path)
    if not isinstance(saved, dict) or saved.get("format") not in (WEIGHTS_FORMAT, CHECKPOINT_FORMAT):
        raise WeightsError(f"{path} is not the best.pt of a vggbench run")
    key = "model_state_dict"
    ok, what = CHECKPOINT_SCHEMA[key]
    if not ok(saved.get(key)):
        raise WeightsError(f"{path}: key {key!r} must be {what}, found {_found(saved.get(key))}")
    return saved[key]


# --- what a checkpoint holds ---------------------------------------------------------------------------
# A checkpoint may be crafted or mixed up, and the loop restores it piece by piece into torch, numpy and random,
# each of which fails in its own way (or not at all, until the next step). So every key is checked here, before
# anything is restored: key -> (check, what it must be). What depends on the model being built (the optimizer's
# tensors, the scheduler's and scaler's fields) is checked against it by `check_state_like`.

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _optimizer_state(v) -> bool:
    return (isinstance(v, dict) and isinstance(v.get("state"), dict) and isinstance(v.get("param_groups"), list)
            and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in v["param_groups"])
            and all(_is_int(k) and isinstance(s, dict) for k, s in v["state"].items()))


def _rng(v) -> bool:
    if not (isinstance(v, dict) and {"python", "numpy", "torch", "cuda"} <= set(v)):
        return False
    py, np_state = v["python"], v["numpy"]
    return (isinstance(py, (tuple, list)) and len(py) == 3 and isinstance(py[1], (tuple, list))
            and isinstance(np_state, (tuple, list)) and len(np_state) == 5 and isinstance(np_state[0], str)
            and isinstance(np_state[1], torch.Tensor)
            and isinstance(v["torch"], torch.Tensor) and v["torch"].dtype == torch.uint8
            and isinstance(v["cuda"], (list, tuple)) and all(isinstance(t, torch.Tensor) for t in v["cuda"]))


def _best(v) -> bool:
    return v is None or (isinstance(v, dict) and _is_int(v.get("epoch", 0)) and _is_number(v.get("val_acc", 0.0))
                         and (v.get("score") is None or _is_number(v.get("score"))))


CHECKPOINT_SCHEMA = {
    "model_state_dict": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(t, torch.Tensor)
                                                                for k, t in v.items()), "a dict of name -> tensor"),
    "vggbench": (lambda v: isinstance(v, dict), "a dict of metadata"),
    "config": (lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v), "a dict of training settings"),
    "optimizer": (_optimizer_state, "an optimizer state_dict (state: index -> dict, param_groups: list of dicts "
                                    "with params)"),
    "scheduler": (lambda v: v is None or isinstance(v, dict), "a scheduler state_dict or None"),
    "scaler": (lambda v: v is None or isinstance(v, dict), "a GradScaler state_dict or None"),
    "epoch": (lambda v: _is_int(v) and v >= 0, "an integer, 0 or more"),
    "step": (lambda v: _is_int(v) and v >= 0, "an integer, 0 or more"),
    "partial": (lambda v: isinstance(v, (list, tuple)) and len(v) == 3 and all(map(_is_number, v)),
                "three numbers (loss x images, correct, images)"),
    "rng": (_rng, "an RNG state with python, numpy, torch (a uint8 tensor) and cuda parts"),
    "history": (lambda v: isinstance(v, (list, tuple)) and all(
        isinstance(e, dict) and all(_is_number(e.get(k)) for k in HISTORY_KEYS) for e in v),
                "a list of per-epoch dicts, each with numbers " + ", ".join(HISTORY_KEYS)),
    # optional: older checkpoints lack them
    "warnings": (lambda v: isinstance(v, (list, tuple)) and all(isinstance(w, str) for w in v), "a list of strings"),
    "best": (_best, "a dict of epoch (int), val_acc and score (numbers)"),
}


def _found(v) -> str:
    if isinstance(v, torch.Tensor):
        return f"a {v.dtype} tensor of shape {tuple(v.shape)}"
    if isinstance(v, dict):
        return f"a dict with keys {', '.join(map(repr, list(v)[:6]))}{', ...' if len(v) > 6 else ''}" if v \
            else "an empty dict"
    shown = repr(v)
    return f"{type(v).__name__} {shown if len(shown) <= 60 else shown[:57] + '...'}"


def check_checkpoint(checkpoint: dict, path) -> None:
    """One WeightsError naming the first key of `checkpoint` that is not what CHECKPOINT_SCHEMA says, the RNG state
    tried on a copy of the generators (python, numpy and torch each accept only their own state), and the
    history's depth bounded."""
    from ..core.documents import check_depth
    from .seeding import caller_rng_kept, set_rng_state

    for key, (ok, what) in CHECKPOINT_SCHEMA.items():
        if key in checkpoint and not ok(checkpoint[key]):
            raise WeightsError(f"{path}: checkpoint key {key!r} must be {what}, found {_found(checkpoint[key])}")
    for key in ("history", "config", "vggbench", "best"):
        check_depth(checkpoint.get(key), f"{path}: checkpoint key {key!r}", WeightsError)
    try:
        with caller_rng_kept():
            set_rng_state(checkpoint["rng"])
    except Exception as e:  # each generator's own complaint (TypeError, ValueError, RuntimeError, ...)
        raise WeightsError(f"{path}: checkpoint key 'rng' is not an RNG state these generators accept "
                           f"({' '.join(str(e).split())[:200]})") from None


def check_state_like(template, state, path, key: str) -> None:
    """A WeightsError unless `state` (a scheduler's or scaler's state_dict from a checkpoint) has the fields of
    `template` (the state_dict of the one built for this run), each of the same kind."""
    if not isinstance(state, dict) or set(state) != set(template):
        raise WeightsError(f"{path}: checkpoint key {key!r} must have the fields {sorted(map(str, template))}, "
                           f"found {_found(state)}")
    for name, expected in template.items():
        value = state[name]
        kinds = [(bool, lambda v: isinstance(v, bool)), ((int, float), _is_number),
                 (str, lambda v: isinstance(v, str)), ((list, tuple), lambda v: isinstance(v, (list, tuple))),
                 (dict, lambda v: isinstance(v, dict)), (torch.Tensor, lambda v: isinstance(v, torch.Tensor))]
        for kind, matches in kinds:
            if expected is not None and isinstance(expected, kind):
                if not matches(value) or (isinstance(expected, (list, tuple)) and len(value) != len(expected)):
                    raise WeightsError(f"{path}: checkpoint key {key!r}: {name} must be like {_found(expected)}, "
                                       f"found {_found(value)}")
                break


def check_optimizer_fits(state: dict, params: list[list[torch.Tensor]], path) -> None:
    """A WeightsError unless the optimizer state's groups and tensors fit this run's parameters (a state saved
    for a wider model loads into torch's optimizer without a word, and fails at the first step)."""
    groups = state["param_groups"]
    if len(groups) != len(params) or any(len(g["params"]) != len(p) for g, p in zip(groups, params, strict=False)):
        raise WeightsError(f"{path}: the optimizer state has {len(groups)} group(s) of "
                           f"{[len(g['params']) for g in groups]} parameters; this model's optimizer has "
                           f"{[len(p) for p in params]}")
    by_index = {i: p for g, ps in zip(groups, params, strict=True) for i, p in zip(g["params"], ps, strict=True)}
    for index, entries in state["state"].items():
        param = by_index.get(index)
        if param is None:
            raise WeightsError(f"{path}: the optimizer state holds parameter {index}, which this model has not")
        for name, value in entries.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                raise WeightsError(f"{path}: the optimizer's {name} of parameter {index} has shape "
                                   f"{tuple(value.shape)}, this model's parameter {tuple(param.shape)}: the state "
                                   f"of another (wider?) model")
            if not isinstance(value, (torch.Tensor, int, float)) or isinstance(value, bool):
                raise WeightsError(f"{path}: the optimizer's {name} of parameter {index} must be a tensor or a "
                                   f"number, found {_found(value)}")


SNAPSHOT = re.compile(r"epoch_\d+\.pt")


def snapshot_name(epoch: int) -> str:
    """The --keep-every snapshot of an epoch, kept beside last.pt and best.pt."""
    return f"epoch_{epoch}.pt"


# --- the run folder and resuming -------------------------------------------------------------------

def resume_config(config: TrainConfig) -> tuple[TrainConfig, dict]:
    """The run's saved settings, with those a resume may change taken from `config`."""
    checkpoint = load_checkpoint(config.resume)
    names = {f.name for f in fields(config)}
    try:
        saved = type(config)(**{k: v for k, v in checkpoint["config"].items() if k in names})
    except ConfigError as e:
        raise WeightsError(f"{config.resume}: the settings saved in it are not valid ({e})") from None
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
        history = json.loads(read_text(path))
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
