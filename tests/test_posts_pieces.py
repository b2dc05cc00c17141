"""The pieces the blog posts needed (issue 28): CIFAR-10/STL-10 read by their format, FiveCrop/TenCrop training
views, --crop-scale, --init normal:STD and torch, a recipe batch scaled to the data, --monitor train_loss,
return_features, `data preview`, and the DDP launch options."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from vggbench.cli import main
from vggbench.core.errors import ConfigError, DataError, UnsupportedError
from vggbench.data.datasets import load_data
from vggbench.training import launch, recipe
from vggbench.training.config import TrainConfig
from vggbench.zoo.models import build
from vggbench.zoo.specs import ModelOptions

TINY = ["--width", "0.0625", "--image-size", "32", "--no-progress", "--device", "cpu"]


def cifar10(root: Path, per_batch: int = 6, test: int = 8) -> Path:
    """cifar-10-batches-py in CIFAR-10's own format, with rows whose class can be read back: image i of class c
    has red = 20 c everywhere."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, count in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        labels = [i % 10 for i in range(count)]
        data = np.zeros((count, 3072), dtype=np.uint8)
        data[:, :1024] = np.array(labels, dtype=np.uint8)[:, None] * 20
        data[:, 1024] = 255  # green's first pixel (the top-left corner)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    return folder


def test_cifar10_in_its_own_format_is_read_with_a_note_on_the_md5(tmp_path, capsys):
    cifar10(tmp_path)
    data = load_data("cifar10", data_dir=tmp_path, normalize=((0, 0, 0), (1, 1, 1)))
    assert "md5 differs from the published cifar10 archive's" in capsys.readouterr().err
    assert data.sizes() == {"train": 27, "val": 3, "test": 8} and data.classes[3] == "c3"
    image, label = data.dataset("test")[3]
    assert label == 3 and image.shape == (3, 32, 32)
    assert image[0].mean().item() == pytest.approx(60 / 255) and image[1, 0, 0].item() == 1.0  # rows, channels
    with pytest.raises(DataError, match=r"data_batch_1 and 6 more: md5 differs .*--download"):
        load_data("cifar10", data_dir=tmp_path, verify_md5=True)


def test_a_file_not_in_cifar10s_format_is_named_with_download_and_a_pickle_never_runs_code(tmp_path):
    folder = cifar10(tmp_path)
    (folder / "data_batch_2").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=r"data_batch_2 is not a CIFAR-10 batch .*pass --download") as err:
        load_data("cifar10", data_dir=tmp_path)
    assert "download=True" not in str(err.value)

    class Planted:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "ran",))

    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump({"data": Planted(), "labels": []}, f)
    with pytest.raises(DataError, match=r"data_batch_2 is not a CIFAR-10 batch .*which a CIFAR-10 file never does"):
        load_data("cifar10", data_dir=tmp_path)
    assert not (tmp_path / "ran").exists()


def test_stl10_is_read_column_major_with_labels_from_one(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    images = np.zeros((4, 3, 96, 96), dtype=np.uint8)
    images[:, 0, 0, 5] = 200  # row 0, column 5 in the image ...
    images.transpose(0, 1, 3, 2).copy().tofile(folder / "train_X.bin")  # ... stored column-major
    np.array([1, 2, 1, 2], dtype=np.uint8).tofile(folder / "train_y.bin")
    images[:2].transpose(0, 1, 3, 2).copy().tofile(folder / "test_X.bin")
    np.array([2, 10], dtype=np.uint8).tofile(folder / "test_y.bin")
    (folder / "class_names.txt").write_text("\n".join(f"n{i}" for i in range(10)))
    data = load_data("stl10", data_dir=tmp_path, image_size=96, normalize=((0, 0, 0), (1, 1, 1)), val_fraction=0.25)
    image, label = data.dataset("test")[1]
    assert label == 9 and image[0, 0, 5].item() == pytest.approx(200 / 255) and image[0, 5, 0].item() == 0
    (folder / "test_y.bin").write_bytes(b"\x02")
    with pytest.raises(DataError, match=r"test_X.bin and .*test_y.bin are not an STL-10 split.*--download"):
        load_data("stl10", data_dir=tmp_path)


def test_five_and_ten_crop_views_multiply_the_training_set(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for j in range(5):
            y, x = np.mgrid[0:48, 0:64]  # a gradient: every crop of it differs
            pixels = np.stack([x * 4, y * 5, np.full_like(x, 100 * (c == "b") + j)], -1).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / c / f"{j}.png")
    plain = load_data(f"folder:{tmp_path}", image_size=32, val_fraction=0.2)
    five = load_data(f"folder:{tmp_path}", image_size=32, val_fraction=0.2, train_crops="five")
    ten = load_data(f"folder:{tmp_path}", image_size=32, val_fraction=0.2, train_crops="ten")
    assert len(plain.dataset("train", train=True)) == 8
    assert len(five.dataset("train", train=True)) == 40 and len(ten.dataset("train", train=True)) == 80
    assert len(five.dataset("val")) == 2  # evaluation is not multiplied
    views = [five.dataset("train", train=True)[i] for i in range(5)]
    assert {label for _, label in views} == {views[0][1]} and all(v.shape == (3, 32, 32) for v, _ in views)
    # the corners of a 36-pixel-high resize differ from its centre; ten's 6th view, the mirror image's top-left
    # corner, is the top-right one (five's 2nd) mirrored
    assert not torch.equal(views[0][0], views[4][0])
    torch.testing.assert_close(ten.dataset("train", train=True)[5][0], views[1][0].flip(-1))
    with pytest.raises(DataError, match="use --train-crops five"):
        load_data("digits", train_crops="ten")


def test_crop_scale_reaches_the_random_resized_crop():
    data = load_data("synthetic", image_size=32, augment="light", crop_scale=(0.08, 1.0))
    crop = [t for t in data.train_transform.transforms if type(t).__name__ == "RandomResizedCrop"]
    assert crop[0].scale == (0.08, 1.0)
    none = load_data("synthetic", image_size=32, augment="none", crop_scale=(0.5, 0.5))
    assert [t.scale for t in none.train_transform.transforms if type(t).__name__ == "RandomResizedCrop"] == [(0.5, 0.5)]
    with pytest.raises(ConfigError, match="--crop-scale must be two area fractions"):
        TrainConfig(crop_scale="0.5,0.2")


def test_normal_and_torch_inits():
    torch.manual_seed(0)
    model = build("vgg11", ModelOptions(width=1 / 16, hidden=32, init="normal:1e-4"))
    weights = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, torch.nn.Conv2d)])
    assert weights.std().item() == pytest.approx(1e-4, rel=0.05)
    assert ModelOptions(init="Normal:0.0001").init == "normal:0.0001"
    torch_init = build("vgg11", ModelOptions(width=1 / 16, hidden=32, init="torch"))
    first = torch_init.features[0]
    bound = 1 / (3 * 9) ** 0.5  # kaiming_uniform(a=sqrt(5)) on fan-in 27: U(-1/sqrt(27), 1/sqrt(27))
    assert first.weight.abs().max().item() <= bound and first.weight.abs().max().item() > 0.9 * bound
    assert first.bias.abs().max().item() > 0  # torch's default biases are not zero
    for bad in ("normal:0", "normal:x", "xavier"):
        with pytest.raises(ConfigError, match="normal:STD"):
            TrainConfig(init=bad)


def test_return_features_gives_the_classifiers_input_too():
    torch.manual_seed(0)
    model = build("vgg11", ModelOptions(width=1 / 16, hidden=32, num_classes=2, head="compact"),
                  return_features=True).eval()
    x = torch.randn(3, 3, 32, 32)
    logits, h = model(x)
    assert logits.shape == (3, 2) and h.shape == (3, 32)
    torch.testing.assert_close(model.classifier(h), logits)
    model.return_features = False
    torch.testing.assert_close(model(x), logits)


def test_the_recipe_batch_is_scaled_to_the_data_with_a_note():
    paper = TrainConfig(model="vgg16", recipe="paper")
    batch, note = recipe.batch_for_data(paper, 300)
    assert batch == 32 and "batch 256 gives 2 steps an epoch on 300 training samples" in note
    assert "batches of 32 (10 steps" in note
    assert recipe.batch_for_data(paper, 5000) == (256, None)
    assert recipe.batch_for_data(TrainConfig(model="vgg16", recipe="paper", batch_size=256), 300) == (256, None)
    assert recipe.batch_for_data(paper, 12)[0] == 16  # never below 16
    assert recipe.batch_for_data(TrainConfig(model="vgg16"), 1258) == (32, None)  # digits: the default stays
    assert recipe.batch_for_data(paper, 600, world_size=2)[0] == 32


def test_train_device_lists_mean_ddp_over_those_gpus():
    config = TrainConfig(device="CUDA:0, 1")
    assert config.device == "cuda:0,1" and launch.world_size(config) == 2
    assert launch.world_size(TrainConfig(nproc_per_node=3)) == 3
    for bad in ("cpu:0,1", "cuda:0,0", "cuda:a,1"):
        with pytest.raises(ConfigError, match="cuda:N,M"):
            TrainConfig(device=bad)
    if torch.cuda.device_count() < 2:
        with pytest.raises(UnsupportedError, match=r"--device cuda:0,1: DDP over these GPUs needs CUDA device 1"):
            launch.check_devices(config)
    with pytest.raises(UnsupportedError, match="drop one of them"):
        launch.check_devices(TrainConfig(device="cuda:0,1", nproc_per_node=3))


def test_cli_device_list_without_cuda_is_one_error_line():
    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has the GPUs")
    result = CliRunner().invoke(main, ["train", "vgg11", "--device", "cuda:0,1", "--epochs", "1"])
    assert result.exit_code == 2
    assert [line for line in result.output.splitlines() if line] == [
        line for line in result.output.splitlines() if line.startswith("error: --device cuda:0,1")]


def test_plateau_on_the_training_loss(tmp_path):
    result = CliRunner().invoke(main, ["train", "vgg11", "--data", "synthetic", *TINY, "--epochs", "2",
                                       "--monitor", "train_loss", "--head", "compact", "--out", str(tmp_path / "r"),
                                       "--json"])
    assert result.exit_code == 0, result.output
    history = json.loads((tmp_path / "r" / "history.json").read_text())
    losses = [e["train_loss"] for e in history["epochs"]]
    assert history["monitor"] == "train_loss"
    assert json.loads(result.stdout)["best_epoch"] == 1 + losses.index(min(losses))


def test_data_preview_writes_a_labelled_grid(tmp_path):
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(main, ["data", "preview", "--data", "digits", "--count", "6", "--out", str(out)])
    assert result.exit_code == 0, result.output
    image = Image.open(out)
    assert image.size == (3 * 96, 2 * (96 + 14))
    labels = np.asarray(image.convert("L"))[96:110, :96]
    assert labels.min() < 128  # a label is drawn under the first tile
    bad = CliRunner().invoke(main, ["data", "preview", "--out", str(tmp_path / "grid.jpg")])
    assert bad.exit_code == 2 and "name a .png file" in bad.output


@pytest.mark.slow  # two processes, each importing torch
def test_a_ddp_workers_error_is_one_line_and_its_exit_code(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "vggbench.cli", "train", "vgg11", "--data", "cifar10", "--data-dir",
                           str(tmp_path), "--nproc-per-node", "2", "--device", "cpu", "--epochs", "1"],
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: cifar10 is not in {tmp_path}"), done.stderr
