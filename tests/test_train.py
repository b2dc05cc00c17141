from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import vggbench
import vggbench.training.loop as train_module
from vggbench.cli import main
from vggbench.core.errors import ConfigError, TrainingError, WeightsError
from vggbench.core.imagenet import IMAGENET_MEAN
from vggbench.data.datasets import Transformed
from vggbench.training.loop import EvalConfig, TrainConfig, evaluate, train
from vggbench.training.runs import load_checkpoint
from vggbench.zoo.weights import load_model

ROOT = Path(__file__).resolve().parent.parent
# A tiny VGG that trains in about 0.3 s per digits epoch on 2 CPU cores.
# on the CPU even where a GPU is present: exact resume needs deterministic kernels, which cuDNN's are not
# batch 64, no warm-up and torchvision's init: what these tests were written for, before the default recipe
TINY = dict(model="vgg11_bn", width=1 / 16, head="compact", hidden=32, optimizer="adam", progress=False, device="cpu",
            batch_size=64, warmup=0, init="kaiming")
TINY_ARGS = ["--width", "0.0625", "--head", "compact", "--hidden", "32", "--optimizer", "adam", "--no-progress",
             "--device", "cpu", "--batch-size", "64", "--warmup", "0", "--init", "kaiming"]
BATCHES_PER_EPOCH = 20  # 1257 digits training images in batches of 64


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def assert_same_tensors(a, b, where="") -> None:
    """Exact equality of nested dicts/lists of tensors and numbers."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_tensors(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def without_seconds(history):
    return [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in history]


# --- the acceptance run: a tiny VGG on digits, through the CLI ----------------------------------------

@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "run"
    result = cli("train", "vgg11_bn", "--data", "digits", "--width", "0.125", "--head", "compact", "--hidden", 256,
                 "--optimizer", "adam", "--schedule", "cosine", "--epochs", 20, "--seed", 0, "--out", out,
                 "--batch-size", 64, "--warmup", 0, "--init", "kaiming",
                 "--no-progress", "--json")
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


@pytest.mark.xdist_group("digits_run")  # one worker builds the module fixture
@pytest.mark.slow
def test_tiny_vgg_reaches_95_percent_on_digits(digits_run):
    out, result = digits_run
    assert result["test"]["top1"] >= 0.95, result["test"]
    assert result["test"]["images"] == 270 and result["test"]["split"] == "test"
    assert result["epochs"] == 20 and len(result["history"]) == 20
    val = [epoch["val_acc"] for epoch in result["history"]]
    assert result["best_val_acc"] == max(val) and val[result["best_epoch"] - 1] == max(val)
    assert result["history"][-1]["train_loss"] < result["history"][0]["train_loss"] / 5
    assert Path(result["run_dir"]) == out and result["world_size"] == 1


@pytest.mark.xdist_group("digits_run")  # one worker builds the module fixture
@pytest.mark.slow
def test_eval_reproduces_the_accuracy_training_reported(digits_run):
    out, trained = digits_run
    result = cli("eval", "vgg11_bn", "--weights", out / "best.pt", "--data", "digits", "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["split"] == "test" and row["images"] == 270  # the default split, where there is one
    assert row["top1"] == trained["test"]["top1"] and row["top5"] == trained["test"]["top5"]
    assert math.isclose(row["loss"], trained["test"]["loss"], rel_tol=1e-6)
    val = evaluate(EvalConfig(model="vgg11_bn", weights=str(out / "best.pt"), data="digits", split="val"))
    assert val.top1 == trained["best_val_acc"] and val.images == 270
    table = cli("eval", "vgg11_bn", "--weights", out / "best.pt", "--data", "digits")
    assert table.stdout.splitlines()[0].split() == ["model", "weights", "dataset", "split", "images", "top1",
                                                    "top5", "loss"]


@pytest.mark.xdist_group("digits_run")  # one worker builds the module fixture
@pytest.mark.slow
def test_checkpoint_loads_weights_only_and_with_load_model(digits_run):
    out, trained = digits_run
    raw = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    # best.pt: the weights and their metadata only; the state to resume from is last.pt's
    assert raw.keys() == {"format", "vggbench", "model_state_dict"}
    assert {"model_state_dict", "vggbench", "optimizer", "scheduler", "rng", "epoch", "history"} <= \
        torch.load(out / "last.pt", map_location="cpu", weights_only=True).keys()
    assert (out / "best.pt").stat().st_size < (out / "last.pt").stat().st_size / 2  # no Adam moments
    loaded = load_model("vgg11_bn", weights=out / "best.pt")
    assert loaded.options.num_classes == 10 and loaded.options.width == 0.125 and loaded.options.hidden == 256
    assert loaded.options.head == "compact" and not loaded.module.training
    assert loaded.weights.mean == IMAGENET_MEAN and loaded.weights.image_size == 32
    meta = loaded.weights.meta
    assert meta["dataset"] == "digits" and meta["classes"] == list("0123456789")
    assert meta["epoch"] == trained["best_epoch"] and meta["val_acc"] == trained["best_val_acc"]
    assert_same_tensors(dict(loaded.module.state_dict()), raw["model_state_dict"])
    # a checkpoint of another model is refused by load_model, and so by eval and --resume
    with pytest.raises(WeightsError, match="holds a vgg11_bn state_dict"):
        load_model("vgg13_bn", weights=out / "best.pt")
    result = cli("eval", "vgg16", "--weights", out / "best.pt", "--data", "digits")
    assert result.exit_code == 2 and "error: " in result.output and "vgg11_bn" in result.output
    result = cli("train", "vgg13", "--resume", out / "last.pt")
    assert result.exit_code == 2 and "is a checkpoint of vgg11_bn; it cannot resume vgg13" in result.output
    result = cli("train", "vgg11_bn", "--resume", out / "best.pt")
    assert result.exit_code == 2 and f"best weights only, no training state: resume from {out / 'last.pt'}" \
        in result.output


@pytest.mark.xdist_group("digits_run")  # one worker builds the module fixture
@pytest.mark.slow
def test_run_folder_holds_config_history_plot_and_checkpoints(digits_run):
    out, trained = digits_run
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.json", "history.json", "history.png",
                                                    "last.pt"]
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["optimizer"] == "adam" and config["config"]["epochs"] == 20
    resolved = config["resolved"]
    assert resolved["lr"] == 0.001 and resolved["weight_decay"] == 0.0 and resolved["precision"] == "fp32"
    assert resolved["split_sizes"] == {"train": 1257, "val": 270, "test": 270} and resolved["world_size"] == 1
    assert "flags" in config["environment"] and config["environment"]["flags"]["cudnn_benchmark"] is False
    history = json.loads((out / "history.json").read_text())
    assert history["schema_version"] == 1 and history["best_epoch"] == trained["best_epoch"]
    assert history["test"]["top1"] == trained["test"]["top1"]
    assert without_seconds(history["epochs"]) == without_seconds(trained["history"])
    png = (out / "history.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert load_checkpoint(out / "last.pt")["epoch"] == 20


@pytest.mark.xdist_group("digits_run")  # one worker builds the module fixture
@pytest.mark.slow
def test_fine_tuning_a_checkpoint_on_other_classes_gets_a_new_head(digits_run, tmp_path):
    from PIL import Image

    for i, name in enumerate(("circle", "square", "star")):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for j in range(4):
            Image.new("RGB", (48, 48), (80 * i, 20 * j, 100)).save(tmp_path / "photos" / name / f"{j}.png")
    out, _ = digits_run
    result = train(TrainConfig(model="vgg11_bn", weights=str(out / "best.pt"), data=f"folder:{tmp_path / 'photos'}",
                               val_fraction=0.25, epochs=1, batch_size=4, out=str(tmp_path / "ft"), progress=False))
    assert result.test is None and result.epochs == 1  # a folder without test/ has no test split
    tuned = load_model("vgg11_bn", weights=result.best_path)
    assert tuned.options.num_classes == 3 and tuned.weights.meta["classes"] == ["circle", "square", "star"]
    source = load_model("vgg11_bn", weights=out / "best.pt").module.state_dict()
    assert tuned.module.state_dict()["features.0.weight"].shape == source["features.0.weight"].shape


# --- resume, interrupt, NaN ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """Four epochs in one go: the reference every resumed run must match bit for bit."""
    out = tmp_path_factory.mktemp("straight")
    result = train(TrainConfig(**TINY, epochs=4, out=str(out)))
    return result, load_checkpoint(out / "last.pt")


def assert_same_run(checkpoint: dict, reference: dict) -> None:
    assert_same_tensors(checkpoint["model_state_dict"], reference["model_state_dict"], "model")
    assert_same_tensors(checkpoint["optimizer"], reference["optimizer"], "optimizer")
    assert checkpoint["scheduler"] == reference["scheduler"] and checkpoint["epoch"] == reference["epoch"]
    assert without_seconds(checkpoint["history"]) == without_seconds(reference["history"])


@pytest.mark.xdist_group("straight_run")  # one worker builds the module fixture
@pytest.mark.slow
def test_two_epochs_then_two_resumed_equal_four_straight(straight_run, tmp_path):
    reference_result, reference = straight_run
    torch.manual_seed(123)
    before = torch.rand(3)
    first = train(TrainConfig(**TINY, epochs=2, out=str(tmp_path)))
    assert first.epochs == 2 and load_checkpoint(tmp_path / "last.pt")["epoch"] == 2
    # the CLI resumes with the settings the run was started with: only --epochs is given again
    result = cli("train", "vgg11_bn", "--resume", tmp_path / "last.pt", "--epochs", 4, "--no-progress", "--json")
    assert result.exit_code == 0, result.output
    assert_same_run(load_checkpoint(tmp_path / "last.pt"), reference)
    assert json.loads(result.stdout)["test"] == json.loads(json.dumps(reference_result.test.__dict__))
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), before)  # train() handed the caller's RNG back untouched
    assert reference_result.history[-1]["val_acc"] > 0.2  # and it learned something


@pytest.mark.xdist_group("straight_run")  # one worker builds the module fixture
@pytest.mark.slow
def test_resume_refuses_changed_settings_and_taken_folders(straight_run, tmp_path):
    last = Path(straight_run[0].last_path)
    with pytest.raises(ConfigError, match=r"lr \(saved None, given 0.5\) differ"):
        train(TrainConfig(**TINY, lr=0.5, resume=str(last)))
    with pytest.raises(ConfigError, match="already holds a run"):
        train(TrainConfig(**TINY, out=str(last.parent)))
    plain = tmp_path / "plain.pt"
    torch.save(load_checkpoint(last)["model_state_dict"], plain)
    with pytest.raises(WeightsError, match="not a vggbench training checkpoint"):
        train(TrainConfig(**TINY, resume=str(plain)))


def interrupt_at(monkeypatch, call: int, action) -> None:
    """Make the training loss run `action` at its `call`-th call (1-based)."""
    real, calls = train_module._loss, []

    def loss(*args):
        calls.append(1)
        if len(calls) == call:
            action()
        return real(*args)

    monkeypatch.setattr(train_module, "_loss", loss)


def raise_interrupt():
    raise KeyboardInterrupt


@pytest.mark.xdist_group("straight_run")  # one worker builds the module fixture
@pytest.mark.slow
def test_ctrl_c_mid_epoch_leaves_a_resumable_checkpoint_and_resume_is_exact(straight_run, tmp_path,
                                                                            monkeypatch):
    # Ctrl-C while loading epoch 2's sixth batch (after epoch 1's training and validation images)
    real, calls = Transformed.__getitem__, []

    def getitem(self, index):
        calls.append(1)
        if len(calls) == 1257 + 270 + 5 * 64 + 1:
            raise KeyboardInterrupt
        return real(self, index)

    monkeypatch.setattr(Transformed, "__getitem__", getitem)
    result = cli("train", "vgg11_bn", *TINY_ARGS, "--epochs", 4, "--out", tmp_path)
    assert result.exit_code == 130
    assert f"saved a resumable checkpoint after epoch 1, batch 5: continue with --resume {tmp_path / 'last.pt'}" \
        in result.output and result.output.strip().endswith("interrupted")
    assert temp_files(tmp_path) == []
    saved = load_checkpoint(tmp_path / "last.pt")
    assert saved["epoch"] == 1 and saved["step"] == 5 and saved["vggbench"]["val_acc"] is None
    monkeypatch.undo()
    resumed = train(TrainConfig(model="vgg11_bn", resume=str(tmp_path / "last.pt"), epochs=4, progress=False))
    assert resumed.epochs == 4
    assert_same_run(load_checkpoint(tmp_path / "last.pt"), straight_run[1])


@pytest.mark.xdist_group("straight_run")  # one worker builds the module fixture
@pytest.mark.slow
def test_sigint_stops_after_the_current_batch(straight_run, tmp_path, monkeypatch):
    # a real SIGINT during epoch 1's third batch: that batch is finished, then the run stops
    interrupt_at(monkeypatch, 3, lambda: signal.raise_signal(signal.SIGINT))
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt, match="after epoch 0, batch 3"):
        train(TrainConfig(**TINY, epochs=4, out=str(tmp_path)))
    assert signal.getsignal(signal.SIGINT) is handler  # the handler was put back
    monkeypatch.undo()
    train(TrainConfig(model="vgg11_bn", resume=str(tmp_path / "last.pt"), progress=False))
    assert_same_run(load_checkpoint(tmp_path / "last.pt"), straight_run[1])


def test_interrupt_inside_a_step_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    # an interrupt in the middle of a training step (a second Ctrl-C) cannot save a consistent state
    interrupt_at(monkeypatch, BATCHES_PER_EPOCH + 6, raise_interrupt)
    with pytest.raises(KeyboardInterrupt, match="interrupted while updating the model; .*last.pt was left"):
        train(TrainConfig(**TINY, epochs=4, out=str(tmp_path)))
    kept = load_checkpoint(tmp_path / "last.pt")
    assert kept["epoch"] == 1 and kept["step"] == 0 and temp_files(tmp_path) == []


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real = train_module._loss
    calls = []

    def loss(*args):
        calls.append(1)
        value = real(*args)
        return value * float("nan") if len(calls) > BATCHES_PER_EPOCH + 2 else value

    monkeypatch.setattr(train_module, "_loss", loss)
    with pytest.raises(TrainingError) as err:
        train(TrainConfig(**TINY, epochs=3, out=str(tmp_path)))
    message = str(err.value)
    assert "the training loss became nan in epoch 2" in message
    assert f"the last good checkpoint is {tmp_path / 'last.pt'} (epoch 1)" in message
    kept = load_checkpoint(tmp_path / "last.pt")
    assert kept["epoch"] == 1 and all(torch.isfinite(v).all() for v in kept["model_state_dict"].values())
    assert len(json.loads((tmp_path / "history.json").read_text())["epochs"]) == 1
    assert err.value.exit_code == 1


def test_diverging_lr_through_the_cli_exits_1(tmp_path):
    result = cli("train", "vgg11", "--width", "0.0625", "--head", "compact", "--data", "synthetic", "--lr", "1e6",
                 "--warmup", 0, "--epochs", 2, "--out", tmp_path, "--no-progress")
    assert result.exit_code == 1
    assert result.output.startswith("error: the training loss became nan in epoch 1 (lr 1e+06)")
    assert "no checkpoint had been written yet" in result.output


@pytest.mark.parametrize("args,message", [
    (("--image-size", 16), "image size 16 is too small for vgg11_bn: its 5 max-pools need at least 32x32"),
    (("--data", "cifar100"), "unknown dataset 'cifar100'; did you mean cifar10?"),
    (("--data", "cifar10", "--data-dir", "{tmp}"), "cifar10 is not in"),
    (("--data", "folder:{tmp}"), "no images in"),
    (("--epochs", 0), "--epochs must be a positive integer"),
    (("--weights", "{tmp}/missing.pt"), "weights file {tmp}/missing.pt does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    result = cli("train", "vgg11_bn", *TINY_ARGS, "--out", tmp_path / "run",
                 *[str(a).replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 2, result.output
    message = message.replace("{tmp}", str(tmp_path))
    assert result.output.startswith(f"error: {message}") and len(result.output.strip().splitlines()) == 1


# --- precision, memory format, workers, distributed ---------------------------------------------------

@pytest.mark.parametrize("args,channels_last", [
    (("--memory-format", "channels_last"), True),
    (("--channels-last",), True),  # the older spelling, meaning what it meant
    (("--memory-format", "contiguous"), False),
])
def test_memory_format_option_and_the_older_channels_last(tmp_path, args, channels_last):
    result = cli("train", "vgg11", *TINY_ARGS, "--data", "synthetic", "--epochs", 1, "--out", tmp_path, *args)
    assert result.exit_code == 0, result.output
    # recorded as before: config.json and the checkpoints keep their channels_last key
    assert json.loads((tmp_path / "config.json").read_text())["config"]["channels_last"] is channels_last
    assert load_checkpoint(tmp_path / "last.pt")["config"]["channels_last"] is channels_last


@pytest.mark.slow
def test_bf16_autocast_and_channels_last_on_cpu(tmp_path):
    result = train(TrainConfig(**TINY, data="synthetic", epochs=1, amp=True, channels_last=True,
                               out=str(tmp_path)))
    assert math.isfinite(result.history[0]["train_loss"])
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["resolved"]["precision"] == "bf16 autocast" and config["resolved"]["device"] == "cpu"
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    assert checkpoint["scaler"] is None  # no GradScaler for bf16
    assert all(v.dtype in (torch.float32, torch.int64) for v in checkpoint["model_state_dict"].values())


@pytest.mark.slow
def test_workers_are_seeded_and_dataset_normalisation_travels_with_the_checkpoint(tmp_path):
    runs = [train(TrainConfig(**TINY, data="synthetic", augment="light", normalize="dataset", epochs=1,
                              workers=2, out=str(tmp_path / str(i)))) for i in range(2)]
    a, b = (load_checkpoint(Path(r.last_path))["model_state_dict"] for r in runs)
    assert_same_tensors(a, b)
    meta = torch.load(runs[0].best_path, weights_only=True)["vggbench"]
    expected = vggbench.load_data("synthetic", normalize="dataset")
    assert tuple(meta["mean"]) == expected.mean != IMAGENET_MEAN and tuple(meta["std"]) == expected.std
    # eval takes the mean/std from the checkpoint and so scores it as training did
    scored = evaluate(EvalConfig(model="vgg11_bn", weights=runs[0].best_path, data="synthetic"))
    assert scored.top1 == runs[0].test.top1 and scored.images == 128


@pytest.mark.cuda
def test_fp16_amp_with_grad_scaler_on_cuda(tmp_path):
    first = train(TrainConfig(**{**TINY, "device": "cuda"}, data="synthetic", epochs=1, amp=True, out=str(tmp_path)))
    checkpoint = load_checkpoint(Path(first.last_path))
    assert checkpoint["scaler"] is not None and checkpoint["scaler"]["scale"] > 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["resolved"]["precision"] == "fp16 autocast" and config["resolved"]["device"] == "cuda:0"
    resumed = train(TrainConfig(model="vgg11_bn", resume=first.last_path, epochs=2, progress=False))
    assert resumed.epochs == 2 and math.isfinite(resumed.history[-1]["train_loss"])
    loaded = load_model("vgg11_bn", weights=resumed.best_path)
    assert next(loaded.module.parameters()).device.type == "cpu"


@pytest.mark.slow
def test_two_process_gloo_ddp_run(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "vggbench.cli", "train", "vgg11_bn",
         *TINY_ARGS, "--data", "digits", "--epochs", "1", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("best val acc") == 1 and "on 2 processes" in proc.stdout  # rank 0 prints
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.json", "history.json", "history.png",
                                                    "last.pt"]
    assert json.loads((out / "config.json").read_text())["resolved"]["world_size"] == 2
    history = json.loads((out / "history.json").read_text())
    # metrics were all-reduced over both ranks: a single process scores best.pt exactly the same
    val = evaluate(EvalConfig(model="vgg11_bn", weights=str(out / "best.pt"), data="digits", split="val"))
    assert val.top1 == history["epochs"][0]["val_acc"] and val.images == 270
    assert history["test"]["top1"] == evaluate(EvalConfig(model="vgg11_bn", weights=str(out / "best.pt"))).top1
    assert load_model("vgg11_bn", weights=out / "last.pt").options.num_classes == 10


@pytest.mark.slow  # two processes, each importing torch
def test_two_process_ddp_is_one_process_sgd_on_both_ranks_batches(tmp_path):
    """DDP in 2 processes of batch 12 takes the steps plain PyTorch takes on the union of the ranks' batches (the
    mean of the two ranks' mean losses), the warm-up's included: gradients averaged, not summed; each rank on its
    own shard of DistributedSampler's permutation; the training loss that the plateau follows reduced over all
    images. No batch norm (its statistics are per rank) and no random augmentation, so the weights must agree."""
    from torch.utils.data import DistributedSampler

    from vggbench.data.datasets import load_data
    from vggbench.training import recipe

    config = TrainConfig(model="vgg11", width=1 / 16, head="compact", hidden=32, data="digits", augment="none",
                         optimizer="sgd", lr=1e-2, weight_decay=5e-3, batch_size=12, schedule="plateau", patience=1,
                         monitor="train_loss", epochs=2, progress=False, device="cpu", out=str(tmp_path / "run"))
    result = train(dataclasses.replace(config, nproc_per_node=2))
    model = recipe.make_model(config, 10).module.train()
    dataset = load_data("digits", image_size=32, augment="none").dataset("train", train=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, weight_decay=5e-3)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.1, patience=1)
    for epoch, record in enumerate(result.history):
        shards = []
        for rank in (0, 1):
            sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=config.seed)
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
        steps, summed, images = math.ceil(len(shards[0]) / 12), 0.0, 0
        for step in range(steps):
            if epoch == 0:  # the default recipe's one-epoch warm-up, step by step
                for group in optimizer.param_groups:
                    group["lr"] = 1e-2 * (step + 1) / steps
            losses = []
            for shard in shards:
                batch = [dataset[i] for i in shard[12 * step:12 * step + 12]]
                labels = torch.tensor([label for _, label in batch])
                losses.append(torch.nn.functional.cross_entropy(model(torch.stack([x for x, _ in batch])), labels))
                summed, images = summed + losses[-1].item() * len(labels), images + len(labels)
            optimizer.zero_grad()
            (sum(losses) / 2).backward()
            optimizer.step()
        assert record["train_loss"] == pytest.approx(summed / images, rel=1e-4)
        assert record["lr"] == pytest.approx(optimizer.param_groups[0]["lr"])
        if epoch >= 1:  # the plateau starts after the warm-up
            plateau.step(summed / images)
    trained = load_checkpoint(result.last_path)["model_state_dict"]
    for name, value in model.state_dict().items():
        torch.testing.assert_close(trained[name], value, rtol=1e-4, atol=1e-5)


def test_public_api_names():
    assert vggbench.TrainConfig is TrainConfig and vggbench.train is train
    assert vggbench.evaluate is evaluate and vggbench.TrainConfig is TrainConfig
    assert vggbench.load_data("synthetic").num_classes == 10
    assert shutil.which("torchrun", path=str(Path(sys.executable).parent))


@pytest.mark.parametrize("classes", [2, 5, 6])
def test_top5_only_where_there_are_more_than_five_classes(classes):
    from vggbench.training.evaluation import evaluate_loader

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, classes))
    batches = [(torch.randn(8, 3, 2, 2), torch.randint(0, classes, (8,))) for _ in range(2)]
    result = evaluate_loader(module, batches, torch.device("cpu"), contextlib.nullcontext,
                             torch.contiguous_format, classes)
    # with 5 classes or fewer every label is in the top five: 100% that says nothing, so no figure at all
    assert (result.top5 is None) == (classes <= 5) and 0 <= result.top1 <= 1
    if classes > 5:
        assert result.top1 <= result.top5 <= 1
