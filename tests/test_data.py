from __future__ import annotations

import collections

import pytest
import torch
from PIL import Image

from vggbench.core.errors import DataError
from vggbench.core.imagenet import IMAGENET_MEAN, IMAGENET_STD
from vggbench.data.datasets import AUGMENTATIONS, SPLIT_SEED, build_transform, load_data, mean_std, parse_name


def labels_of(dataset) -> list[int]:
    return [int(dataset[i][1]) for i in range(len(dataset))]


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", image_size=32)


def test_digits_split_is_70_15_15_disjoint_stratified_and_fixed(digits):
    assert digits.sizes() == {"train": 1257, "val": 270, "test": 270}
    indices = {split: set(ds.indices) for split, ds in digits.splits.items()}
    assert not indices["train"] & indices["val"] and not indices["train"] & indices["test"]
    assert not indices["val"] & indices["test"]
    assert len(indices["train"] | indices["val"] | indices["test"]) == 1797
    # stratified: every digit has 26 to 28 of the 270 test images (1797 / 10 classes x 15 %)
    counts = collections.Counter(labels_of(digits.splits["test"]))
    assert sorted(counts) == list(range(10)) and min(counts.values()) >= 26 and max(counts.values()) <= 28
    assert digits.classes == tuple("0123456789") and digits.num_classes == 10
    # the split does not depend on anything but SPLIT_SEED: another load, another size, the same images
    again = load_data("digits", image_size=40)
    assert all(again.splits[s].indices == digits.splits[s].indices for s in digits.splits)


def test_digits_are_upscaled_bilinearly_to_three_equal_channels(digits):
    from sklearn.datasets import load_digits

    index = digits.splits["test"].indices[0]
    image, label = digits.splits["test"][0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    original = torch.tensor(load_digits().images[index], dtype=torch.float32)[None, None] / 16
    expected = torch.nn.functional.interpolate(original, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(image[0], expected[0, 0].clamp(0, 1))
    assert label == load_digits().target[index]
    assert image.min() >= 0 and image.max() <= 1
    big = load_data("digits", image_size=64).splits["test"][0][0]
    assert big.shape == (3, 64, 64)


def test_eval_transform_normalises_with_imagenet_mean_and_std(digits):
    raw, _ = digits.splits["val"][3]
    image, _ = digits.dataset("val")[3]
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(image, (raw - mean) / std)


def test_normalize_dataset_uses_the_training_split_statistics():
    data = load_data("digits", normalize="dataset")
    train = torch.stack([data.splits["train"][i][0] for i in range(len(data.splits["train"]))])
    expected_mean = train.double().mean(dim=(0, 2, 3))
    expected_std = train.double().std(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(torch.tensor(data.mean, dtype=torch.float64), expected_mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.tensor(data.std, dtype=torch.float64), expected_std, atol=1e-6, rtol=0)
    normalised = torch.stack([data.dataset("train")[i][0] for i in range(len(data.splits["train"]))])
    assert abs(float(normalised.mean())) < 1e-4 and abs(float(normalised.std()) - 1) < 1e-3
    # digits are grey: all three channels share one mean (about 0.31 of full white)
    assert len(set(data.mean)) == 1 and 0.25 < data.mean[0] < 0.35


def test_mean_std_of_a_known_dataset():
    images = torch.zeros(4, 3, 2, 2)
    images[:, 0] = 0.5
    images[:2, 1] = 1.0
    dataset = torch.utils.data.TensorDataset(images, torch.zeros(4))
    mean, std = mean_std(dataset)
    assert mean == (0.5, 0.5, 0.0) and std == (0.0, 0.5, 0.0)


def test_augmentation_respects_presets_and_mirror_safety():
    image = torch.arange(3 * 32 * 32, dtype=torch.float32).reshape(3, 32, 32) / (3 * 32 * 32)
    plain = build_transform(32, (0, 0, 0), (1, 1, 1), train=True, augment="none")
    assert torch.equal(plain(image), image)
    torch.manual_seed(0)
    paper = build_transform(32, (0, 0, 0), (1, 1, 1), train=True, augment="paper")
    outs = [paper(image) for _ in range(4)]
    assert all(o.shape == (3, 32, 32) for o in outs) and not torch.equal(outs[0], outs[1])
    # digits are not mirror-safe: their train transform never flips
    flips = build_transform(32, (0, 0, 0), (1, 1, 1), train=True, augment="light", mirror_safe=False)
    assert "RandomHorizontalFlip" not in repr(flips)
    assert "RandomHorizontalFlip" in repr(build_transform(32, (0,) * 3, (1,) * 3, train=True, augment="light"))
    assert set(AUGMENTATIONS) == {"none", "light", "paper"}
    assert load_data("digits").augment == "light"  # crops, and no flips


def test_synthetic_is_seeded_balanced_and_in_range():
    a, b = load_data("synthetic"), load_data("synthetic")
    assert a.sizes() == {"train": 512, "val": 128, "test": 128} and a.num_classes == 10
    x, y = a.splits["val"][5]
    assert torch.equal(x, b.splits["val"][5][0]) and y == 5
    assert not torch.equal(x, a.splits["train"][5][0])  # splits hold different images
    assert x.min() >= 0 and x.max() <= 1 and x.shape == (3, 32, 32)
    assert collections.Counter(labels_of(a.splits["train"])) == {c: 51 + (c < 2) for c in range(10)}


def make_images(root, counts: dict[str, int], size=(40, 30)):
    for i, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for j in range(count):
            Image.new("RGB", size, (40 * i, 10 * j, 200)).save(root / name / f"{j}.png")


def test_folder_with_train_and_val_subfolders(tmp_path):
    make_images(tmp_path / "train", {"cat": 3, "dog": 2})
    make_images(tmp_path / "val", {"cat": 1, "dog": 1})
    data = load_data(f"folder:{tmp_path}", image_size=32)
    assert data.classes == ("cat", "dog") and data.sizes() == {"train": 5, "val": 2}
    assert data.augment == "paper"
    image, label = data.dataset("val")[1]
    assert image.shape == (3, 32, 32) and label == 1
    # evaluation resizes the short side to 32 / 0.875 = 37 and centre-crops 32, as ImageNet evaluation does
    assert "Resize(size=[37]" in repr(data.eval_transform) and "CenterCrop(size=(32, 32))" in repr(data.eval_transform)
    image, _ = data.dataset("train", train=True)[0]
    assert image.shape == (3, 32, 32)


def test_folder_split_by_fraction_is_stratified_and_seeded(tmp_path):
    make_images(tmp_path, {"a": 8, "b": 8, "c": 4})
    data = load_data(f"folder:{tmp_path}", val_fraction=0.25)
    assert data.sizes() == {"train": 15, "val": 5} and data.classes == ("a", "b", "c")
    assert sorted(collections.Counter(labels_of(data.splits["val"])).values()) == [1, 2, 2]
    again = load_data(f"folder:{tmp_path}", val_fraction=0.25)
    assert again.splits["val"].indices == data.splits["val"].indices
    assert SPLIT_SEED == 0


@pytest.mark.parametrize("layout,message", [
    ({}, "no images in"),
    ({"cat": 0, "dog": 0}, "no images in"),
])
def test_empty_image_folders_are_data_errors(tmp_path, layout, message):
    for name in layout:
        (tmp_path / name).mkdir()
    with pytest.raises(DataError, match=message):
        load_data(f"folder:{tmp_path}")


def test_folder_errors_name_what_is_missing(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_data(f"folder:{tmp_path / 'nope'}")
    make_images(tmp_path / "test", {"a": 1, "b": 1})
    with pytest.raises(DataError, match="has test/ but no training folder"):
        load_data(f"folder:{tmp_path}")
    with pytest.raises(DataError, match="folder needs a path"):
        load_data("folder")


@pytest.mark.parametrize("name,layout", [
    ("cifar10", "cifar-10-batches-py"),
    ("stl10", "stl10_binary"),
])
def test_missing_torchvision_datasets_name_the_layout_and_never_download(tmp_path, name, layout):
    with pytest.raises(DataError) as err:
        load_data(name, data_dir=tmp_path)
    message = str(err.value)
    assert f"{tmp_path / layout}/" in message and "--download" in message
    assert ("data_batch_1" if name == "cifar10" else "train_X.bin") in message
    assert list(tmp_path.iterdir()) == []  # nothing was fetched or created


def test_unknown_dataset_suggests_close_names():
    with pytest.raises(DataError, match=r"unknown dataset 'cifar'; did you mean cifar10\?"):
        load_data("cifar")
    with pytest.raises(DataError, match="choose digits, cifar10, stl10, synthetic or folder:PATH"):
        parse_name("imagenet")
    with pytest.raises(DataError, match="unknown augmentation"):
        load_data("digits", augment="heavy")
    with pytest.raises(DataError, match="unknown normalisation"):
        load_data("digits", normalize="minmax")


def test_a_constant_channel_is_refused_before_the_full_statistics_pass():
    from vggbench.core.errors import DataError
    from vggbench.data.datasets import CONSTANT_CHECK_IMAGES, dataset_mean_std

    class Counted(torch.utils.data.Dataset):
        """2,000 images whose blue channel is 0 throughout; counts the images read."""

        def __init__(self):
            self.read = 0

        def __len__(self):
            return 2000

        def __getitem__(self, i):
            self.read += 1
            image = torch.rand(3, 2, 2, generator=torch.Generator().manual_seed(i))
            image[2] = 0
            return image, 0

    data = Counted()
    with pytest.raises(DataError, match=r"constant \(over a sample of 256 of them\).*--normalize imagenet"):
        dataset_mean_std(data, "mine")
    assert data.read == CONSTANT_CHECK_IMAGES
    varied = torch.utils.data.TensorDataset(torch.rand(300, 3, 2, 2), torch.zeros(300))
    assert dataset_mean_std(varied, "ok") == mean_std(varied)
