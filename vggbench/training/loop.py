"""Training: the loop, the paper's optimizer and schedules, AMP, checkpoints with exact resume, and DDP.

Randomness is derived from (seed, epoch, rank) at the start of every epoch: data order, augmentation and
dropout of an epoch do not depend on what ran before, so a resumed run replays exactly what a straight run
would have done. The RNG state saved in a checkpoint carries a run across an interrupted epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..core.arguments import expect
from ..core.errors import TrainingError, WeightsError, WriteError, one_line
from ..core.fileio import exclusive, write_json
from ..core.imagenet import IMAGENET_MEAN, IMAGENET_STD
from ..data.datasets import load_data
from ..zoo.specs import check_fits_memory, check_image_size, get_spec
from ..zoo.weights import checkpoint_meta
from . import distributed, launch, recipe, runs, seeding
from .config import TrainConfig, device_list  # noqa: F401  (TrainConfig: part of this module's public face)
from .evaluation import (  # noqa: F401  (evaluate is part of this module's public face)
    EvalConfig,
    EvalResult,
    autocast_factory,
    eval_loader,
    evaluate,
    evaluate_loader,
    resolve_device,
)
from .seeding import seed_worker

# history.png is redrawn at most this often during a run (drawing takes ~0.2 s), and always at its end.
PLOT_EVERY_S = 30.0


@dataclass(frozen=True)
class TrainResult:
    """What a run achieved. Accuracies are fractions of images, losses mean cross-entropy in nats."""

    run_dir: str
    best_path: str
    last_path: str
    epochs: int  # completed, counting those before a --resume
    best_epoch: int
    best_val_acc: float
    test: EvalResult | None  # best.pt on the test split, where the dataset has one
    seconds: float  # wall time of this call
    world_size: int = 1
    rank: int = 0
    history: tuple[dict, ...] = field(default=(), repr=False)
    warnings: tuple[str, ...] = ()  # e.g. validation accuracy stuck at chance

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def train(config: TrainConfig) -> TrainResult:
    """Train a model as `config` says; the run folder holds the checkpoints, config.json and history."""
    expect("train", "config", config, TrainConfig, "a TrainConfig (vggbench.TrainConfig(model=...))")
    started = time.perf_counter()
    dist = distributed.from_env()
    if not dist.enabled and launch.world_size(config) > 1:
        return launch.launch(config, train)
    gpus = device_list(config.device)  # cuda:I,J,...: this rank's GPU is the list's local_rank-th
    device = resolve_device(f"cuda:{gpus[dist.local_rank]}" if gpus else config.device, dist,
                            pinned=bool(gpus))
    checkpoint = None
    if config.resume:
        config, checkpoint = runs.resume_config(config)
    runs.check_out(config)  # before the data is loaded: an --out that holds the user's files costs nothing
    with (distributed.process_group(dist, device), seeding.caller_rng_kept(),
          _cudnn_benchmark(config.cudnn_benchmark), contextlib.ExitStack() as held):
        run = _Run(config, dist, device, checkpoint, held)
        try:
            return run.fit(started)
        except Exception:
            run.discard_if_unsaved()
            raise


class _Run:
    """One training run's state: model, optimizer, schedule, data and where it stands."""

    def __init__(self, config: TrainConfig, dist: distributed.Dist, device: torch.device,
                 checkpoint: dict | None, held: contextlib.ExitStack) -> None:
        self.config, self.dist, self.device = config, dist, device
        spec = get_spec(config.model)
        check_image_size(spec, config.image_size)
        normalize = config.normalize
        if config.mean is not None or config.std is not None:  # --mean/--std given: they win over --normalize
            mean, std = (IMAGENET_MEAN, IMAGENET_STD) if config.normalize == "imagenet" or (
                config.mean is not None and config.std is not None) else _dataset_stats(config)
            normalize = (config.mean or mean, config.std or std)
        self.data = load_data(config.data, image_size=config.image_size, data_dir=config.data_dir,
                              download=config.download, normalize=normalize, augment=config.augment,
                              color_jitter=config.color_jitter, val_fraction=config.val_fraction,
                              crop_scale=config.crop_scale, train_crops=config.train_crops,
                              verify_md5=config.verify_md5)
        self.batch_size, note = recipe.batch_for_data(config, len(self.data.dataset("train", train=True)),
                                                      dist.world_size)
        if note and dist.is_main:
            print(f"note: {note}", file=sys.stderr, flush=True)
        self.loaded = recipe.make_model(config, self.data.num_classes)
        # a batch's feature maps are allocated at the first step: refuse one that cannot fit before any of it
        check_fits_memory(self.loaded.spec, self.loaded.options, config.image_size, self.batch_size)
        self.module = self.loaded.module.to(device, memory_format=self._memory_format).train()
        self.model = self.module
        if dist.enabled:
            self.model = nn.parallel.DistributedDataParallel(
                self.module, device_ids=[device.index] if device.type == "cuda" else None)
        self.optimizer = recipe.make_optimizer(config, self.module)
        self.scheduler = recipe.make_scheduler(config, self.optimizer)
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.amp and device.type == "cuda")
        self.autocast = autocast_factory(device, config.amp)
        made = not (config.out and Path(config.out).exists())
        self.run_dir = Path(distributed.broadcast_object(runs.run_dir(config) if dist.is_main else None))
        # what a failed run may remove: the files it wrote, and the folder if it made it; nothing that was there
        self.made_dir, self.found = made, set(runs.run_files(self.run_dir))
        if dist.is_main:  # one process writes a run folder: a second `train --out` on it stops here
            held.enter_context(exclusive(self.run_dir))
        self.history: list[dict] = []
        self.best_val_acc, self.best_epoch, self.best_state = -1.0, 0, None
        self.best_score = None  # of the --monitor value at the best epoch
        self.warnings: list[str] = []
        self.steps_per_epoch = 1
        # where the run stands: epochs completed, batches done in the next one, their running sums and the
        # RNG state after the last of them (what an interrupted run saves)
        self.epoch, self.step, self.partial, self.rng = 0, 0, [0.0, 0.0, 0.0], None
        self.busy = False  # changing state: an interrupt now would leave it half-done
        self.saved_epoch = None  # the epoch last.pt holds
        self.plotted = -math.inf  # when history.png was last drawn
        if checkpoint is not None:
            self._restore(checkpoint)
        if dist.is_main and not (self.run_dir / runs.CONFIG).exists():
            write_json(self.run_dir / runs.CONFIG, self._config_record())

    def discard_if_unsaved(self) -> None:
        """A run that failed before its first checkpoint (a bad image in epoch 1, say) leaves no folder that
        holds only its config.json: the files it wrote go, and the folder too when it made it and nothing else is
        in it. Files that were there before the run stay."""
        if not self.dist.is_main or self.saved_epoch is not None or (self.run_dir / runs.BEST).exists():
            return
        for name in (runs.CONFIG, runs.HISTORY, runs.PLOT):
            if name not in self.found:
                (self.run_dir / name).unlink(missing_ok=True)
        if self.made_dir:
            with contextlib.suppress(OSError):  # not empty: files put there meanwhile stay
                self.run_dir.rmdir()

    @property
    def _memory_format(self):
        return torch.channels_last if self.config.channels_last else torch.contiguous_format

    # --- the loop ---------------------------------------------------------------------------------------

    def fit(self, started: float) -> TrainResult:
        config = self.config
        with _DeferredInterrupt() as stop:
            try:
                while self.epoch < config.epochs:
                    self._one_epoch(stop)
                    if stop.requested:
                        raise KeyboardInterrupt
            except KeyboardInterrupt:
                raise KeyboardInterrupt(self._save_on_interrupt()) from None
        test = None
        if "test" in self.data.splits and self.best_state is not None:
            self.module.load_state_dict(self.best_state)
            test = self._evaluate("test")
        if self.dist.is_main:
            self._write_history(test, plot=True)
        return TrainResult(
            run_dir=str(self.run_dir), best_path=str(self.run_dir / runs.BEST),
            last_path=str(self.run_dir / runs.LAST), epochs=self.epoch, best_epoch=self.best_epoch,
            best_val_acc=self.best_val_acc, test=test, seconds=round(time.perf_counter() - started, 3),
            world_size=self.dist.world_size, rank=self.dist.rank, history=tuple(self.history),
            warnings=tuple(self.warnings))

    def _one_epoch(self, stop: _DeferredInterrupt) -> None:
        config, epoch, tic = self.config, self.epoch, time.perf_counter()
        # A resumed epoch continues with the RNG state its checkpoint saved; under DDP that state is rank 0's,
        # so each rank reseeds instead (a mid-epoch resume is exact in a single process only).
        if self.step == 0 or self.dist.enabled:
            seeding.seed_all(seeding.epoch_seed(config.seed, epoch, self.dist.rank))
        loader = self._train_loader(epoch, skip_batches=self.step)
        self.model.train()
        sums = torch.tensor(self.partial, dtype=torch.float64)
        with _progress(loader, f"epoch {epoch + 1}/{config.epochs}", config.progress and self.dist.is_main,
                       initial=self.step) as bar:
            for images, labels in bar:
                self._step(images, labels, sums)
                bar.set_postfix(loss=f"{sums[0] / sums[2]:.4f}", acc=f"{sums[1] / sums[2]:.2%}", refresh=False)
                if stop.requested:
                    raise KeyboardInterrupt
        train_loss, train_acc = _reduced_means(sums, self.device)
        distributed.broadcast_buffers(self.module)
        val = self._evaluate("val")
        if not math.isfinite(val.loss):
            self._diverged(val.loss, "validation loss")
        lr = self.optimizer.param_groups[0]["lr"]
        self.busy = True
        score = {"val_acc": val.top1, "val_loss": val.loss, "train_loss": train_loss}[config.monitor]
        if epoch + 1 > config.warmup_value:  # the schedule starts after the warm-up
            recipe.step_scheduler(self.scheduler, score)
        record = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val.loss,
                  "val_acc": val.top1, "val_top5": val.top5, "lr": lr,
                  "seconds": round(time.perf_counter() - tic, 3)}
        improved = self.best_score is None or (score > self.best_score if config.monitor == "val_acc"
                                               else score < self.best_score)
        if improved:
            self.best_val_acc, self.best_epoch, self.best_score = val.top1, epoch + 1, score
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.module.state_dict().items()}
        self.history.append(record)
        warning = None if self.warnings else recipe.chance_warning(config, self.history, self.data.num_classes)
        if warning:
            self.warnings.append(warning)
        self.epoch, self.step, self.partial, self.rng = epoch + 1, 0, [0.0, 0.0, 0.0], None
        self.busy = False
        if self.dist.is_main:
            with self._saving():
                if improved:
                    runs.save_checkpoint(self.run_dir / runs.BEST, runs.weights_file(self._meta(val.top1),
                                                                                         self.best_state))
                if self.epoch % config.save_every == 0 or self.epoch == config.epochs:
                    runs.save_checkpoint(self.run_dir / runs.LAST, self._checkpoint(val_acc=val.top1))
                    self.saved_epoch = self.epoch
                if config.keep_every and self.epoch % config.keep_every == 0:
                    runs.save_checkpoint(self.run_dir / runs.snapshot_name(self.epoch),
                                         self._checkpoint(val_acc=val.top1))
                self._write_history()
            if warning:
                print(f"warning: {warning}", file=sys.stderr, flush=True)
            if config.progress:
                print(f"epoch {self.epoch}/{config.epochs}  train loss {train_loss:.4f} acc {train_acc:.2%}  "
                      f"val loss {val.loss:.4f} acc {val.top1:.2%}  lr {lr:.3g}  {record['seconds']:.1f} s",
                      file=sys.stderr, flush=True)

    def _step(self, images: torch.Tensor, labels: torch.Tensor, sums: torch.Tensor) -> None:
        """One optimizer step; adds (loss x images, correct, images) to `sums`."""
        images = images.to(self.device, non_blocking=True, memory_format=self._memory_format)
        labels = labels.to(self.device, non_blocking=True)
        self.busy = True  # from here the step changes the model (BatchNorm statistics in the forward pass)
        with self.autocast():
            logits = self.model(images)
            loss = _loss(logits, labels, self.config.label_smoothing)
        value = loss.detach().item()
        if not math.isfinite(value):
            self._diverged(value)
        lr = recipe.warmup_lr(self.config, self.epoch, self.step, self.steps_per_epoch)
        if lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        sums += torch.tensor([value * len(labels), float((logits.argmax(1) == labels).sum()), len(labels)],
                             dtype=torch.float64)
        self.step, self.partial, self.rng = self.step + 1, sums.tolist(), seeding.rng_state()
        self.busy = False

    def _train_loader(self, epoch: int, skip_batches: int) -> DataLoader:
        config = self.config
        dataset = self.data.dataset("train", train=True)
        # One sampler for one process and for DDP: a permutation seeded by (seed, epoch), sharded by rank.
        sampler = DistributedSampler(dataset, num_replicas=self.dist.world_size, rank=self.dist.rank,
                                     shuffle=True, seed=config.seed)
        sampler.set_epoch(epoch)
        self.steps_per_epoch = math.ceil(len(sampler) / self.batch_size)
        indices = list(sampler)[skip_batches * self.batch_size:]
        generator = torch.Generator().manual_seed(seeding.epoch_seed(config.seed, epoch, self.dist.rank))
        return DataLoader(dataset, batch_size=self.batch_size, sampler=indices, num_workers=config.workers,
                          worker_init_fn=seed_worker, generator=generator,
                          pin_memory=self.device.type == "cuda")

    def _evaluate(self, split: str) -> EvalResult:
        loader = eval_loader(self.data.dataset(split), self.batch_size, self.config.workers, self.device,
                             self.dist)
        return evaluate_loader(self.module, loader, self.device, self.autocast, self._memory_format,
                               self.data.num_classes, dataset=self.config.data, split=split)

    # --- files ------------------------------------------------------------------------------------------

    def _meta(self, val_acc: float | None) -> dict:
        """The metadata of every file the run writes: what rebuilds the model and normalises its inputs, the
        data it learnt and, for a net started from net A's layers, which file and layers (--init-from)."""
        config, data = self.config, self.data
        init = {k: self.loaded.weights.meta[k] for k in ("init_from", "init_from_layers")
                if k in self.loaded.weights.meta}
        if config.init_from:  # a resumed run builds no net A: the path is in its settings
            init.setdefault("init_from", str(config.init_from))
        return checkpoint_meta(self.loaded, mean=list(data.mean), std=list(data.std),
                               image_size=config.image_size, dataset=config.data, classes=list(data.classes),
                               val_fraction=config.val_fraction, epoch=self.epoch, val_acc=val_acc, **init)

    def _checkpoint(self, val_acc: float | None) -> dict:
        config = self.config
        return {"format": runs.CHECKPOINT_FORMAT, "vggbench": self._meta(val_acc),
                "model_state_dict": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                "epoch": self.epoch, "step": self.step, "partial": list(self.partial),
                "rng": self.rng or seeding.rng_state(),
                "history": list(self.history), "warnings": list(self.warnings),
                "best": {"epoch": self.best_epoch, "val_acc": self.best_val_acc, "score": self.best_score},
                "config": dataclasses.asdict(config)}

    def _restore(self, checkpoint: dict) -> None:
        # runs.load_checkpoint checked each key's type; what must fit this run's model, optimizer, scheduler and
        # scaler is checked here, all of it before any of it is restored
        path = self.config.resume
        runs.check_optimizer_fits(checkpoint["optimizer"], [g["params"] for g in self.optimizer.param_groups], path)
        restore = [(self.optimizer, checkpoint["optimizer"], "optimizer")]
        for key, part in (("scheduler", self.scheduler), ("scaler", self.scaler if self.scaler.is_enabled() else None)):
            if part is not None and checkpoint[key] is not None:
                runs.check_state_like(part.state_dict(), checkpoint[key], path, key)
                restore.append((part, checkpoint[key], key))
        for part, state, key in restore:
            try:
                part.load_state_dict(state)
            except (ValueError, KeyError, TypeError, RuntimeError) as e:
                raise WeightsError(f"{path}: its {key} state does not fit this run ({one_line(e)})") from None
        self.epoch, self.step, self.partial = checkpoint["epoch"], checkpoint["step"], checkpoint["partial"]
        self.history = list(checkpoint["history"])
        best = checkpoint.get("best") or {}
        self.best_val_acc, self.best_epoch = best.get("val_acc", -1.0), best.get("epoch", 0)
        self.best_score = best.get("score", self.best_val_acc if self.best_epoch else None)
        self.warnings = list(checkpoint.get("warnings", []))
        best_path = self.run_dir / runs.BEST
        if best_path.exists():  # the test split is scored with the best weights, also after a resume
            self.best_state = runs.load_best_state(best_path)
        self.saved_epoch = checkpoint["epoch"]
        self.rng = checkpoint["rng"]
        seeding.set_rng_state(self.rng)

    def _config_record(self) -> dict:
        from ..core.env import capture

        data = self.data
        return {"config": dataclasses.asdict(self.config),
                "resolved": {"model": self.loaded.name, "options": self.loaded.options.to_dict(),
                             "classes": list(data.classes), "split_sizes": data.sizes(), "mean": list(data.mean),
                             "std": list(data.std), "augment": data.augment, "lr": self.config.lr_value,
                             "optimizer": self.config.optimizer_value,
                             "batch_size": self.batch_size, "init": self.loaded.options.init,
                             "warmup": self.config.warmup_value,
                             "weight_decay": self.config.weight_decay_value, "device": str(self.device),
                             "world_size": self.dist.world_size,
                             "precision": (("fp16" if self.device.type == "cuda" else "bf16") + " autocast"
                                           if self.config.amp else "fp32")},
                "environment": capture()}

    def _write_history(self, test: EvalResult | None = None, plot: bool = False) -> None:
        runs.write_history(self.run_dir, self.history, model=self.loaded.name, dataset=self.config.data,
                           best_epoch=self.best_epoch, best_val_acc=self.best_val_acc, monitor=self.config.monitor,
                           warnings=list(self.warnings),
                           test=dataclasses.asdict(test) if test else None)
        if self.history and (plot or time.perf_counter() - self.plotted > PLOT_EVERY_S):
            runs.plot_history(self.run_dir / runs.PLOT, self.history, f"{self.loaded.name} on {self.config.data}",
                              best_epoch=self.best_epoch)
            self.plotted = time.perf_counter()

    def _save_on_interrupt(self) -> str:
        last = self.run_dir / runs.LAST
        if not self.dist.is_main:
            return "interrupted"
        if self.busy:
            return f"interrupted while updating the model; {last} was left as it was"
        with self._saving():
            runs.save_checkpoint(last, self._checkpoint(val_acc=None))
            self._write_history(plot=True)
        return (f"saved a resumable checkpoint after epoch {self.epoch}, batch {self.step}: continue with "
                f"--resume {last}")

    @contextlib.contextmanager
    def _saving(self):
        """A checkpoint or history write that fails for want of room or rights stops the run with one WriteError
        that says which checkpoint is kept and how to go on from it."""
        try:
            yield
        except WriteError as e:
            last = self.run_dir / runs.LAST
            kept = (f"{last} of epoch {self.saved_epoch} is kept: continue with --resume {last} once there is room"
                    if self.saved_epoch is not None else "no checkpoint had been written yet")
            raise WriteError(e.path, e.reason, "; ".join(k for k in (e.kept if e.path != last else "", kept) if k)) \
                from None

    def _diverged(self, value: float, what: str = "training loss") -> None:
        last = self.run_dir / runs.LAST
        kept = (f"the last good checkpoint is {last} (epoch {self.saved_epoch})" if self.saved_epoch is not None
                else "no checkpoint had been written yet")
        raise TrainingError(
            f"the {what} became {value} in epoch {self.epoch + 1} (lr {self.optimizer.param_groups[0]['lr']:g}); "
            f"training stopped and {kept}. Lower --lr (or use --optimizer adam) and start again")


# --- building blocks ----------------------------------------------------------------------------------

def _dataset_stats(config: TrainConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The training split's mean/std (--normalize dataset), for the channels --mean/--std leave out."""
    data = load_data(config.data, image_size=config.image_size, data_dir=config.data_dir, download=config.download,
                     normalize="dataset", val_fraction=config.val_fraction, verify_md5=config.verify_md5)
    return data.mean, data.std


def _loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def _reduced_means(sums: torch.Tensor, device: torch.device) -> tuple[float, float]:
    total = distributed.all_reduce_sum(sums.to(device)).cpu()
    count = max(float(total[2]), 1.0)
    return float(total[0]) / count, float(total[1]) / count


def _progress(loader, desc: str, enabled: bool, initial: int = 0):
    from tqdm import tqdm

    return tqdm(loader, desc=desc, total=initial + len(loader), initial=initial, leave=False,
                # None: shown only when stderr is a terminal
                disable=None if enabled else True, unit="batch", file=sys.stderr,
                dynamic_ncols=True)


@contextlib.contextmanager
def _cudnn_benchmark(enabled: bool):
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


class _DeferredInterrupt:
    """The first Ctrl-C asks the loop to stop after the current batch; a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested, self.previous = False, None

    def __enter__(self) -> _DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self.previous or signal.default_int_handler)

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
