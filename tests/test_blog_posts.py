"""Each "From the blog posts" command of the README, run as written on small stand-in data made here in the
dataset's real on-disk format, with only the size shrunk (--epochs 1, a 1/16-width model, 32-pixel images)."""

from __future__ import annotations

import json
import pickle
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd
from click.testing import CliRunner
from PIL import Image

from vggbench.cli import main
from vggbench.core.fileio import sha256_file
from vggbench.zoo import imagenet
from vggbench.zoo.models import build
from vggbench.zoo.specs import get_spec

README = Path(__file__).resolve().parent.parent / "README.md"
# exactly as the README's table has them
POST_000 = ("vggbench train vgg16 --data cifar10 --width 0.5 --head compact --hidden 4096,1000 --mean 0.5 --std 0.5 "
            "--optimizer adam --lr 2e-4 --batch-size 100 --epochs 100")
POST_001 = ("torchrun --standalone --nproc_per_node 2 -m vggbench.cli train vgg16 --data stl10 --image-size 224 "
            "--augment light --color-jitter 0.4 --optimizer sgd --lr 1e-3 --weight-decay 5e-3 --batch-size 24 "
            "--schedule plateau --patience 3 --monitor val_loss --keep-every 10 --epochs 100")
POST_002 = "vggbench train vgg11_bn --weights imagenet --data folder:photos --image-size 224 --lr 1e-4 --epochs 10"
POST_003 = "vggbench train vgg16_bn --data folder:project --image-size 224 --epochs 30"
POST_004 = "vggbench train vgg16 --recipe paper --data folder:photos --image-size 224 --epochs 74"
SMALL = ["--epochs", "1", "--image-size", "32", "--no-progress", "--device", "cpu", "--json"]
TINY = ["--width", "0.0625"]


def run(command: str, *extra: str) -> dict:
    """The README command (`torchrun ... -m vggbench.cli` as one process) with the stand-in sizes appended
    (click takes an option's last value)."""
    assert command in README.read_text(), "the README's table and this test must hold the same command"
    args = shlex.split(command)
    args = args[args.index("vggbench.cli") + 1:] if "torchrun" in args else args[1:]
    result = CliRunner().invoke(main, [*args, *SMALL, *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def photos(root: Path, classes=("cat", "dog"), count=6) -> None:
    for i, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for j in range(count):
            Image.new("RGB", (48, 40), (200 * i, 30 * j, 90)).save(root / name / f"{j}.jpg")


def cifar10(root: Path, per_batch: int = 10) -> None:
    """cifar-10-batches-py as the archive unpacks: pickled dicts of uint8 rows (3072 values) and labels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [i % 10 for i in range(per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8), "labels": labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"]}, f)


def stl10(root: Path, count: int = 20) -> None:
    """stl10_binary as the archive unpacks: raw uint8 96x96 images (column-major) and labels 1..10."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        rng.integers(0, 256, (count, 3, 96, 96), dtype=np.uint8).tofile(folder / f"{split}_X.bin")
        np.array([1 + i % 10 for i in range(count)], dtype=np.uint8).tofile(folder / f"{split}_y.bin")
    (folder / "class_names.txt").write_text("\n".join(["airplane", "bird", "car", "cat", "deer", "dog", "horse",
                                                       "monkey", "ship", "truck"]) + "\n")


@pytest.fixture
def md5_free(monkeypatch):
    """The stand-in files are in the real format but are not the published files: skip torchvision's md5 check."""
    monkeypatch.setattr(tvd.cifar, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(tvd.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tvd.STL10, "_check_integrity", lambda self: True)


@pytest.mark.slow
def test_post_000_vgg16_on_cifar10_with_a_width_multiplier_adam_and_mean_std_one_half(tmp_path, md5_free):
    cifar10(tmp_path / "data")
    result = run(POST_000, *TINY, "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "run"))
    assert result["test"]["images"] == 10 and result["epochs"] == 1
    config = json.loads((tmp_path / "run" / "config.json").read_text())["resolved"]
    assert config["mean"] == [0.5] * 3 and config["std"] == [0.5] * 3 and config["optimizer"] == "adam"
    assert config["options"]["hidden"] == [4096, 1000] and config["batch_size"] == 100 and config["lr"] == 2e-4
    assert config["split_sizes"] == {"train": 45, "val": 5, "test": 10}


def test_post_001_stl10_with_colour_jitter_a_plateau_on_val_loss_and_snapshots(tmp_path, md5_free):
    stl10(tmp_path / "data")
    result = run(POST_001, *TINY, "--data-dir", str(tmp_path / "data"), "--keep-every", "1",
                 "--out", str(tmp_path / "run"))
    assert result["test"]["images"] == 20
    assert sorted(p.name for p in (tmp_path / "run").glob("*.pt")) == ["best.pt", "epoch_1.pt", "last.pt"]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert saved["color_jitter"] == 0.4 and saved["monitor"] == "val_loss" and saved["patience"] == 3


@pytest.mark.slow  # a full-size vgg11_bn (133M parameters)
def test_post_002_fine_tuning_pretrained_vgg11_bn_for_two_classes(tmp_path, monkeypatch):
    photos(Path("photos"))
    # torchvision's vgg11_bn file, as the hub cache holds it (random values in place of the published ones)
    dest = imagenet.hub_cache_path(imagenet.imagenet_weights(get_spec("vgg11_bn")).url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    state = build("vgg11_bn").state_dict()
    torch.save(state, dest)
    digest = sha256_file(dest)
    monkeypatch.setattr(imagenet, "_published_prefix", lambda filename: digest[:8])
    result = run(POST_002, "--out", str(tmp_path / "run"), "--batch-size", "4")
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert best["vggbench"]["options"]["num_classes"] == 2 and best["vggbench"]["classes"] == ["cat", "dog"]
    assert best["model_state_dict"]["classifier.6.weight"].shape == (2, 4096)
    assert result["epochs"] == 1


@pytest.mark.slow
def test_post_003_your_own_photos_in_train_data_and_test_data(tmp_path):
    for split, count in (("train_data", 6), ("test_data", 2)):
        photos(Path("project") / split, count=count)
    (Path("project") / "original_data").mkdir()
    (Path("project") / "model").mkdir()
    result = run(POST_003, *TINY, "--out", str(tmp_path / "run"))
    assert result["test"]["images"] == 4
    assert json.loads((tmp_path / "run" / "config.json").read_text())["resolved"]["classes"] == ["cat", "dog"]


def test_post_004_the_papers_recipe_with_its_random_init(tmp_path):
    photos(Path("photos"))
    run(POST_004, *TINY, "--out", str(tmp_path / "run"))
    config = json.loads((tmp_path / "run" / "config.json").read_text())["resolved"]
    assert (config["optimizer"], config["lr"], config["weight_decay"], config["batch_size"], config["init"],
            config["warmup"]) == ("sgd", 0.01, 5e-4, 256, "paper", 0)
