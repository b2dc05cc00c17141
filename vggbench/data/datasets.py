"""Datasets and transforms: digits (scikit-learn, offline), CIFAR-10, STL-10, ImageFolder, synthetic; mean/std."""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..core.errors import DataError, one_line
from ..core.extras import require
from ..core.imagenet import IMAGENET_MEAN, IMAGENET_STD

# The splits mean the same images in every run, whatever the training seed, so that `eval` can find them.
SPLIT_SEED = 0
DIGITS_FRACTIONS = (0.70, 0.15, 0.15)  # train / val / test, stratified
SYNTHETIC_SIZES = {"train": 512, "val": 128, "test": 128}
SYNTHETIC_CLASSES = 10
NORMALIZE = ("imagenet", "dataset")
# Images used to compute a dataset's mean/std (a seeded sample beyond this; the estimate is then within ~1e-3).
STATS_MAX_IMAGES = 10_000
# --normalize dataset looks at this many (seeded) training images for a constant channel before its full pass:
# a channel that does not vary over them cannot be normalised (its std is ~0), and saying so costs a batch,
# not minutes of decoding
CONSTANT_CHECK_IMAGES = 256

# Train-time augmentation presets. crop: RandomResizedCrop's (area scale, aspect ratio) or None.
AUGMENTATIONS = {
    "none": {"crop": None, "flip": False},
    # small images (digits, CIFAR, STL): mild crops, as the usual pad-and-crop recipes do
    "light": {"crop": ((0.64, 1.0), (3 / 4, 4 / 3)), "flip": True},
    # the paper's scale jittering: rescale the image side to S in [256, 512], take a 224 square crop
    # (crop area (224/512)^2 .. (224/256)^2 of the image, aspect kept), flip horizontally
    "paper": {"crop": (((224 / 512) ** 2, (224 / 256) ** 2), (1.0, 1.0)), "flip": True},
}
# RandomResizedCrop's aspect ratios where --crop-scale asks for a crop that the preset does not make
CROP_RATIO = (3 / 4, 4 / 3)
# --train-crops five/ten: post 004's Resize(256) + FiveCrop(224): the crops' side is this fraction of the
# resized image's shorter side, whatever the source's evaluation crop
TRAIN_CROP_FRACTION = 224 / 256
TRAIN_VIEWS = {"none": 1, "five": 5, "ten": 10}


@dataclass(frozen=True)
class Data:
    """A dataset's splits (untransformed), its classes and the transforms that feed a model."""

    name: str
    splits: dict[str, Dataset]  # "train", "val" and, where the dataset has one, "test"
    classes: tuple[str, ...]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str
    train_transform: Callable
    eval_transform: Callable
    notes: tuple[str, ...] = ()  # what reading it skipped (hidden folders, folders reached twice)
    view_transforms: tuple[Callable, ...] = ()  # --train-crops: one transform per view of a training image

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def dataset(self, split: str, train: bool = False) -> Dataset:
        """A split with the training (augmenting) or the evaluation transform."""
        if split not in self.splits:
            raise DataError(f"{self.name} has no {split!r} split; it has {', '.join(self.splits)}")
        if train and self.view_transforms:
            return Views(self.splits[split], self.view_transforms)
        return Transformed(self.splits[split], self.train_transform if train else self.eval_transform)

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.splits.items()}


class Transformed(Dataset):
    """(image, label) pairs of `base` with `transform` applied to the image."""

    def __init__(self, base: Dataset, transform: Callable) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        image, label = self.base[index]
        return self.transform(image), label


class Views(Dataset):
    """Every image of `base` once per transform (FiveCrop/TenCrop training views): sample i is view i % n of
    image i // n."""

    def __init__(self, base: Dataset, transforms: Sequence[Callable]) -> None:
        self.base, self.transforms = base, tuple(transforms)

    def __len__(self) -> int:
        return len(self.base) * len(self.transforms)

    def __getitem__(self, index: int):
        image, label = self.base[index // len(self.transforms)]
        return self.transforms[index % len(self.transforms)](image), label


class _OneCrop:
    """The k-th of torchvision's FiveCrop (k < 5) or TenCrop (k >= 5: the mirrored image's) crops."""

    def __init__(self, size: int, k: int) -> None:
        self.size, self.k = size, k

    def __call__(self, image):
        from torchvision.transforms.v2 import functional as F

        if self.k >= 5:
            return F.ten_crop(image, self.size)[self.k]
        return F.five_crop(image, self.size)[self.k]


class TensorImages(Dataset):
    """Images held in memory as one float tensor (N, 3, H, W) in [0, 1]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index], int(self.labels[index])


class SyntheticImages(Dataset):
    """Seeded random images: a blocky pattern per class plus noise, so a model can learn something."""

    def __init__(self, count: int, image_size: int, offset: int, classes: int = SYNTHETIC_CLASSES) -> None:
        self.count, self.image_size, self.offset = count, image_size, offset
        g = torch.Generator().manual_seed(SPLIT_SEED)
        self.patterns = torch.nn.functional.interpolate(torch.rand(classes, 3, 4, 4, generator=g), size=image_size)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        label = index % len(self.patterns)
        g = torch.Generator().manual_seed(self.offset + index)
        noise = torch.rand(3, self.image_size, self.image_size, generator=g)
        return 0.6 * self.patterns[label] + 0.4 * noise, label


# --- sources: each returns (splits, classes) or (splits, classes, notes) ------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    load: Callable[..., tuple[dict[str, Dataset], tuple[str, ...]]]
    augment: str = "light"  # default preset
    mirror_safe: bool = True  # False where a mirror image changes the class (digits)
    crop_fraction: float = 1.0  # evaluation: resize to image_size / crop_fraction, then centre-crop
    help: str = ""


def _digits(image_size: int, **_) -> tuple[dict[str, Dataset], tuple[str, ...]]:
    load_digits = require("sklearn.datasets", "the digits dataset").load_digits
    train_test_split = require("sklearn.model_selection", "the digits dataset").train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0  # 0..16 grey levels
    images = torch.nn.functional.interpolate(images, size=(image_size, image_size), mode="bilinear",
                                             align_corners=False).clamp(0, 1).expand(-1, 3, -1, -1).contiguous()
    labels = torch.tensor(digits.target, dtype=torch.int64)
    everything = list(range(len(labels)))
    n_test = round(DIGITS_FRACTIONS[2] * len(labels))
    n_val = round(DIGITS_FRACTIONS[1] * len(labels))
    rest, test = train_test_split(everything, test_size=n_test, stratify=digits.target, random_state=SPLIT_SEED)
    train, val = train_test_split(rest, test_size=n_val, stratify=digits.target[rest], random_state=SPLIT_SEED)
    full = TensorImages(images, labels)
    splits = {"train": Subset(full, sorted(train)), "val": Subset(full, sorted(val)),
              "test": Subset(full, sorted(test))}
    return splits, tuple(str(c) for c in digits.target_names)


def _synthetic(image_size: int, **_) -> tuple[dict[str, Dataset], tuple[str, ...]]:
    splits, offset = {}, 0
    for split, count in SYNTHETIC_SIZES.items():
        splits[split] = SyntheticImages(count, image_size, offset)
        offset += count
    return splits, tuple(f"class{i}" for i in range(SYNTHETIC_CLASSES))


# What torchvision expects under --data-dir, named in the error when it is not there.
_LAYOUTS = {
    "cifar10": ("cifar-10-batches-py", ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                                        "data_batch_5", "test_batch", "batches.meta")),
    "stl10": ("stl10_binary", ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "class_names.txt")),
}


# The published archives' md5 sums of the files read (torchvision's lists): a file that differs is read by its
# format with a note (a converted or re-encoded copy), or refused with --verify-md5.
_MD5 = {
    "cifar10": {"data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
                "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e",
                "batches.meta": "5ff9c542aee3614f3951f8cda6e48888"},
    "stl10": {"train_X.bin": "918c2871b30a85fa023e0c44e0bee87f", "train_y.bin": "5a34089d4802c674881badbb80307741",
              "test_X.bin": "7f263ba9f9e0b06b93213547f721ac82", "test_y.bin": "36f9794fa4beb8a2c72628de14fa638e"},
}
CIFAR_SIDE, STL_SIDE = 32, 96


def _torchvision(kind: str, data_dir: str | os.PathLike, download: bool, val_fraction: float,
                 verify_md5: bool = False, **_):
    """CIFAR-10 or STL-10 read from their own file formats (not through torchvision's classes, which refuse any
    file whose md5 is not the published one with "Dataset not found or corrupted")."""
    root = Path(data_dir).expanduser()
    folder, files = _LAYOUTS[kind]
    if download:
        _download(kind, root)
    missing = [f for f in files if not (root / folder / f).exists()]
    for f in set(files) - set(missing):  # a fifo would be opened and waited on for a writer, forever
        if not (root / folder / f).is_file():
            raise DataError(f"{root / folder / f} is not a regular file; put {kind}'s extracted archive there")
    if missing:
        raise DataError(
            f"{kind} is not in {root.resolve()}: expected {root / folder}/ holding {', '.join(files)} "
            f"(missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}); put the extracted "
            f"archive there, or pass --download to fetch it")
    notes = _check_md5(kind, root / folder, verify_md5)
    reader = _read_cifar10 if kind == "cifar10" else _read_stl10
    (train_images, train_labels), (test_images, test_labels), classes = reader(root / folder)
    full = TensorImages(train_images, train_labels)
    train, val = _split(train_labels.tolist(), val_fraction, kind)
    return ({"train": Subset(full, train), "val": Subset(full, val), "test": TensorImages(test_images, test_labels)},
            tuple(classes), notes)


def _download(kind: str, root: Path) -> None:
    import torchvision.datasets as tvd

    try:
        if kind == "cifar10":
            tvd.CIFAR10(str(root), train=True, download=True)
        else:
            tvd.STL10(str(root), split="train", download=True)
    except (RuntimeError, OSError, ValueError) as e:  # URL errors, a bad archive
        raise DataError(f"cannot download {kind} to {root}: {' '.join(str(e).split())}") from None


def _check_md5(kind: str, folder: Path, verify: bool) -> list[str]:
    import hashlib

    differ = []
    for name, md5 in _MD5[kind].items():
        digest = hashlib.md5(usedforsecurity=False)
        with open(folder / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != md5:
            differ.append(name)
    if not differ:
        return []
    where = f"{folder}/{differ[0]}" + (f" and {len(differ) - 1} more" if len(differ) > 1 else "")
    if verify:
        raise DataError(f"{where}: md5 differs from the published {kind} archive's (--verify-md5); put the "
                        f"extracted archive there, or pass --download to fetch it")
    return [f"{where}: md5 differs from the published {kind} archive's (a converted copy?); read by its format "
            f"(--verify-md5 refuses it)"]


class _PlainUnpickler:
    """CIFAR-10's batches are pickles: read with an unpickler that builds dicts, lists, strings and numpy arrays
    only (any other global is refused), so a planted file cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    @classmethod
    def load(cls, path: Path):
        import pickle

        class Restricted(pickle.Unpickler):
            def find_class(self, module, name):
                if (module, name) in cls.ALLOWED:
                    return super().find_class(module, name)
                raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR-10 file never does")

        with open(path, "rb") as f:
            return Restricted(f, encoding="latin1").load()


def _cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np

    expected = ("a pickled dict of 'data' (N rows of 3072 uint8: 1024 red, 1024 green, 1024 blue values of a 32x32 "
                "image) and 'labels' (N integers 0-9)")
    try:
        batch = _PlainUnpickler.load(path)
    except Exception as e:  # noqa: BLE001 - pickle raises UnpicklingError, EOFError, ValueError, ...: not the format
        raise DataError(f"{path} is not a CIFAR-10 batch ({one_line(e)}); expected {expected}; put the extracted "
                        f"archive there, or pass --download to fetch it") from None
    data = batch.get("data") if isinstance(batch, dict) else None
    labels = batch.get("labels") if isinstance(batch, dict) else None
    if (not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * CIFAR_SIDE ** 2
            or not isinstance(labels, list) or len(labels) != data.shape[0]
            or not all(isinstance(v, int) and 0 <= v < 10 for v in labels)):
        raise DataError(f"{path} is not a CIFAR-10 batch: expected {expected}; put the extracted archive there, or "
                        f"pass --download to fetch it")
    images = torch.from_numpy(np.ascontiguousarray(data, dtype=np.uint8)).view(-1, 3, CIFAR_SIDE, CIFAR_SIDE)
    return images, torch.tensor(labels, dtype=torch.int64)


def _read_cifar10(folder: Path):
    parts = [_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    train = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
    meta = folder / "batches.meta"
    try:
        names = _PlainUnpickler.load(meta).get("label_names")
    except Exception as e:  # noqa: BLE001 - as above
        raise DataError(f"{meta} is not CIFAR-10's batches.meta ({one_line(e)}); put the extracted archive there, "
                        f"or pass --download to fetch it") from None
    if not isinstance(names, list) or len(names) != 10 or not all(isinstance(n, str) for n in names):
        raise DataError(f"{meta} is not CIFAR-10's batches.meta: expected a pickled dict whose 'label_names' are 10 "
                        f"class names; put the extracted archive there, or pass --download to fetch it")
    return train, _cifar_batch(folder / "test_batch"), names


def _stl10_split(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np

    x, y = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    image_bytes = 3 * STL_SIDE ** 2
    labels = np.fromfile(y, dtype=np.uint8)
    size = x.stat().st_size
    if size % image_bytes or size // image_bytes != len(labels) or not len(labels):
        raise DataError(f"{x} and {y} are not an STL-10 split: expected {image_bytes} bytes per image (3 x 96 x 96, "
                        f"column-major) and one label byte each, got {size} bytes for {len(labels)} labels; put the "
                        f"extracted archive there, or pass --download to fetch it")
    if labels.min() < 1 or labels.max() > 10:
        raise DataError(f"{y} is not STL-10's labels: expected bytes 1-10, found {int(labels.min())}-"
                        f"{int(labels.max())}; put the extracted archive there, or pass --download to fetch it")
    images = np.fromfile(x, dtype=np.uint8).reshape(-1, 3, STL_SIDE, STL_SIDE).transpose(0, 1, 3, 2)
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64) - 1)


def _read_stl10(folder: Path):
    names = [n.strip() for n in (folder / "class_names.txt").read_text(errors="replace").splitlines() if n.strip()]
    if len(names) != 10:
        raise DataError(f"{folder / 'class_names.txt'} names {len(names)} classes, STL-10 has 10; put the extracted "
                        f"archive there, or pass --download to fetch it")
    return _stl10_split(folder, "train"), _stl10_split(folder, "test"), names


# Folder names taken as splits (not classes) in folder:PATH: PATH/train/ + PATH/val/ (torchvision's ImageFolder
# recipes), PATH/train_data/ + PATH/test_data/ (the blog posts' projects), ...
SPLIT_FOLDERS = {
    "train": ("train", "train_data", "training"),
    "val": ("val", "val_data", "valid", "validation"),
    "test": ("test", "test_data", "testing"),
}
_SPLIT_NAMES = {name for names in SPLIT_FOLDERS.values() for name in names}


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's


class UnreadableImage(DataError):
    """An image file of a folder dataset that cannot be decoded, raised when the DataLoader first reads it.

    A DataLoader worker's exception comes back to the parent as type(e)(text of "Caught ... in DataLoader worker
    process N. Original Traceback ...") (torch's ExceptionWrapper): the message is taken back out of the text's last
    line, so that the error line says what is wrong with which file, without the worker's traceback."""

    def __init__(self, message: str) -> None:
        if message.startswith("Caught ") and "\nOriginal Traceback" in message:
            marker = f"{type(self).__module__}.{type(self).__qualname__}: "
            last = [line for line in message.splitlines() if line.startswith(marker)]
            message = last[-1][len(marker):] if last else message.rstrip().splitlines()[-1]
        super().__init__(message)


class ImageFiles(Dataset):
    """(PIL image, class index) pairs of a folder dataset's image files; `notes` says what the scan skipped."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.classes, self.samples, self.notes = _scan(root)
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return read_image(path), label


def _scan(root: Path) -> tuple[list[str], list[tuple[str, int]], list[str]]:
    """The class folders under root and their image files (in sorted order, subfolders included), and notes on what
    was skipped. Walks are bounded: a folder is entered once, however many symlinks lead to it (its (st_dev, st_ino)
    is remembered), so a symlink loop ends; symlinked folders are followed otherwise, since a dataset often links its
    class folders from elsewhere. Hidden entries (.thumbnails/, .DS_Store) are skipped. A fifo, socket or device
    named like an image is refused here: it is never opened (opening a fifo waits for a writer, forever)."""
    import stat

    visited: set[tuple[int, int]] = set()
    hidden: dict[bool, list[str]] = {True: [], False: []}  # is a folder -> paths
    twice: list[str] = []
    broken: list[str] = []

    def entries(folder: Path) -> list[tuple[os.DirEntry, os.stat_result | None]]:
        """The folder's visible entries, each with its stat (symlinks followed; None when that fails)."""
        found = []
        try:
            with os.scandir(folder) as it:
                listing = sorted(it, key=lambda e: e.name)
        except OSError as e:
            raise DataError(f"cannot list {folder}: {e.strerror or one_line(e)}") from None
        for entry in listing:
            if entry.name.startswith("."):
                hidden[entry.is_dir()].append(os.path.relpath(entry.path, root))
                continue
            try:
                found.append((entry, entry.stat()))
            except OSError:  # a broken symlink, a symlink to itself, no permission
                broken.append(os.path.relpath(entry.path, root))
                found.append((entry, None))
        return found

    def enter(folder: Path, st: os.stat_result) -> bool:
        key = (st.st_dev, st.st_ino)
        if key in visited:
            twice.append(os.path.relpath(folder, root))
            return False
        visited.add(key)
        return True

    enter(root, os.stat(root))
    class_folders = [(Path(e.path), st) for e, st in entries(root) if st is not None and stat.S_ISDIR(st.st_mode)]
    classes, samples = [], []
    for folder, st in class_folders:
        if not enter(folder, st):
            continue
        label, files, stack = len(classes), [], [folder]
        while stack:
            for entry, est in entries(stack.pop()):
                if est is None:
                    continue
                path = Path(entry.path)
                if stat.S_ISDIR(est.st_mode):
                    if enter(path, est):
                        stack.append(path)
                elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
                    if not stat.S_ISREG(est.st_mode):
                        raise DataError(f"{path} is {_file_kind(est.st_mode)}, not an image file; remove it")
                    files.append(str(path))
        classes.append(folder.name)
        samples += [(f, label) for f in sorted(files)]
    notes = []
    for is_dir, kind in ((True, "folder"), (False, "file")):
        if hidden[is_dir]:
            notes.append(f"{root}: ignored {_count(hidden[is_dir], f'hidden {kind}', f'hidden {kind}s')}: "
                         f"{_some(hidden[is_dir])}")
    if twice:
        notes.append(f"{root}: skipped {_count(twice, 'folder', 'folders')} reached again through a symlink (each "
                     f"folder is read once): {_some(twice)}")
    if broken:
        notes.append(f"{root}: skipped {_count(broken, 'entry', 'entries')} that cannot be read (broken symlinks?): "
                     f"{_some(broken)}")
    return classes, samples, notes


def _file_kind(mode: int) -> str:
    import stat

    for test, kind in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device")):
        if test(mode):
            return kind
    return "not a regular file"


def _count(items: list, one: str, many: str) -> str:
    return f"{len(items)} {one if len(items) == 1 else many}"


def _some(items: list[str], shown: int = 3) -> str:
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def _folder(path: str, val_fraction: float, **_):
    root = Path(path).expanduser()
    if not path or not root.is_dir():
        raise DataError(f"image folder {root} does not exist; folder:PATH needs PATH/<class>/<image> files, "
                        f"or PATH/train/<class>/... [+ PATH/val/ and PATH/test/]")
    notes: list[str] = []

    def open_folder(p: Path) -> ImageFiles:
        found = ImageFiles(p)
        notes.extend(found.notes)
        if not found.classes:
            raise DataError(f"no images in {p}: expected {p}/<class name>/<image file> (no class folders found)")
        empty = [c for c in found.classes if c not in {found.classes[label] for label in found.targets}]
        if empty:
            raise DataError(f"no images in {p}: expected {p}/<class name>/<image file> ({', '.join(empty)} "
                            f"{'holds' if len(empty) == 1 else 'hold'} no {'/'.join(IMAGE_EXTENSIONS)} files)")
        splits_as_classes = [c for c in found.classes if c.lower() in _SPLIT_NAMES]
        if splits_as_classes:
            raise DataError(f"{p} has folders named {', '.join(splits_as_classes)}, which would become classes; "
                            f"put the splits directly in {root} (train/ or train_data/, val/, test/ or "
                            f"test_data/), each holding one folder per class")
        return found

    present = {split: [root / n for n in names if (root / n).is_dir()] for split, names in SPLIT_FOLDERS.items()}
    for split, folders in present.items():
        if len(folders) > 1:
            raise DataError(f"{root} has {' and '.join(f.name + '/' for f in folders)}: which is the {split} split? "
                            f"keep one")
    if present["train"]:
        splits = {s: open_folder(folders[0]) for s, folders in present.items() if folders}
        classes = splits["train"].classes
        for name, ds in splits.items():
            if ds.classes != classes:
                raise DataError(f"{present[name][0]} has classes {ds.classes}, {present['train'][0].name}/ has "
                                f"{classes}")
        if "val" not in splits:  # train/ + test/ (or train_data/ + test_data/): val held out of train
            train, val = _split(splits["train"].targets, val_fraction, str(present["train"][0]))
            splits = {"train": Subset(splits["train"], train), "val": Subset(splits["train"], val),
                      **({"test": splits["test"]} if "test" in splits else {})}
        return splits, tuple(classes), notes
    others = [folders[0].name + "/" for folders in present.values() if folders]
    if others:
        raise DataError(f"{root} has {', '.join(others)} but no training folder (train/ or train_data/); "
                        f"add one, or its split folders would become classes")
    full = open_folder(root)
    train, val = _split(full.targets, val_fraction, str(root))
    return {"train": Subset(full, train), "val": Subset(full, val)}, tuple(full.classes), notes


def read_image(path: str):
    """One RGB image of a folder dataset. A file that is not one (truncated, not an image, a decompression bomb, a
    fifo put in its place) is one UnreadableImage line that names it, whenever the DataLoader first reads it."""
    import stat
    import warnings

    from PIL import Image

    try:
        # O_NONBLOCK: a fifo swapped in since the scan opens at once instead of waiting for a writer, then is refused
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise UnreadableImage(f"cannot read image {path}: {e.strerror or one_line(e)}") from None
    with open(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnreadableImage(f"cannot read image {path}: it is {_file_kind(mode)}; remove it")
        try:
            with warnings.catch_warnings():
                # PIL only warns between MAX_IMAGE_PIXELS and twice that, then decodes gigabytes: refuse those too
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(f) as image:
                    return image.convert("RGB")
        except Exception as e:  # noqa: BLE001 - PIL's plugins raise OSError, ValueError, SyntaxError, struct.error,
            # DecompressionBombError (an Exception), IndexError ...: all of them mean this file is not a usable image
            said = one_line(e).replace(repr(f), repr(str(path)))  # PIL names the file object it was given
            raise UnreadableImage(f"cannot read image {path}: {said}; remove or replace the file") from None


def _split(labels: Sequence[int], val_fraction: float, what: str) -> tuple[list[int], list[int]]:
    """Seeded train/val indices, stratified where every class can give the val split an image."""
    train_test_split = require("sklearn.model_selection", "splitting off validation images").train_test_split

    n = len(labels)
    n_val = max(1, round(val_fraction * n))
    if n < 2 or n_val >= n:
        raise DataError(f"{what} has {n} images: too few to hold out a --val-fraction of {val_fraction}")
    counts = torch.bincount(torch.tensor(list(labels)))
    counts = counts[counts > 0]
    # sklearn can stratify only when each split can take one image of every class
    stratify = labels if min(n_val, n - n_val) >= len(counts) and int(counts.min()) >= 2 else None
    train, val = train_test_split(list(range(n)), test_size=n_val, stratify=stratify, random_state=SPLIT_SEED)
    return sorted(train), sorted(val)


SOURCES = {
    "digits": Source(_digits, mirror_safe=False,
                     help="scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), upscaled; offline"),
    "cifar10": Source(lambda **kw: _torchvision("cifar10", **kw),
                      help="CIFAR-10 from --data-dir (torchvision layout; --download fetches it)"),
    "stl10": Source(lambda **kw: _torchvision("stl10", **kw),
                    help="STL-10's labelled images from --data-dir (torchvision layout)"),
    "folder": Source(_folder, augment="paper", crop_fraction=0.875,
                     help="folder:PATH, your own images as PATH/<class>/*.jpg, or split: PATH/train/ (or train_data/) "
                          "[+ val/] [+ test/ or test_data/]"),
    "synthetic": Source(_synthetic, augment="none", help="seeded random images, 10 classes, for smoke tests"),
}


def parse_name(name: str) -> tuple[str, str]:
    """'folder:~/photos' -> ('folder', '~/photos'); unknown names get suggestions."""
    kind, _, arg = str(name).partition(":")
    kind = kind.strip().lower()
    if kind in SOURCES and (kind == "folder") == bool(arg):
        return kind, arg
    if kind == "folder":
        raise DataError("folder needs a path: --data folder:PATH")
    close = difflib.get_close_matches(kind, list(SOURCES), n=2, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise DataError(f"unknown dataset {name!r}{hint} (choose {', '.join(k for k in SOURCES if k != 'folder')} "
                    f"or folder:PATH)")


# --- transforms and normalisation ---------------------------------------------------------------------

def build_transform(image_size: int, mean: Sequence[float], std: Sequence[float], *, train: bool,
                    augment: str = "none", mirror_safe: bool = True, color_jitter: float = 0.0,
                    crop_fraction: float = 1.0, normalize: bool = True,
                    crop_scale: tuple[float, float] | None = None, view: int | None = None):
    """PIL image or [0, 1] tensor -> normalised float tensor (3, image_size, image_size).
    crop_scale: the random crop's area range (RandomResizedCrop's scale) instead of the preset's.
    view: the k-th FiveCrop/TenCrop view of the image resized to image_size / TRAIN_CROP_FRACTION (in place of
    the preset's crop and flip)."""
    from torchvision.transforms import v2

    preset = AUGMENTATIONS[augment] if train and view is None else AUGMENTATIONS["none"]
    steps = [v2.ToImage()]
    if view is not None:
        steps += [v2.Resize(round(image_size / TRAIN_CROP_FRACTION), antialias=True), _OneCrop(image_size, view)]
    elif preset["crop"] or (train and crop_scale):
        scale, ratio = preset["crop"] or (None, CROP_RATIO)
        steps.append(v2.RandomResizedCrop(image_size, scale=crop_scale or scale, ratio=ratio, antialias=True))
    else:
        steps += [v2.Resize(round(image_size / crop_fraction), antialias=True), v2.CenterCrop(image_size)]
    if preset["flip"] and mirror_safe:
        steps.append(v2.RandomHorizontalFlip())
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if train and color_jitter:
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    if normalize:
        steps.append(v2.Normalize(list(mean), list(std)))
    return v2.Compose(steps)


def mean_std(dataset: Dataset, batch_size: int = 256,
             images: int = STATS_MAX_IMAGES) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of a dataset of (3, H, W) tensors (a seeded sample of `images` of larger ones)."""
    if len(dataset) > images:
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(SPLIT_SEED))
        dataset = Subset(dataset, order[:images].tolist())
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    pixels = 0
    for images, _ in DataLoader(dataset, batch_size=batch_size):
        images = images.to(torch.float64)
        total += images.sum(dim=(0, 2, 3))
        squares += (images ** 2).sum(dim=(0, 2, 3))
        pixels += images.numel() // 3
    if not pixels:
        raise DataError("cannot compute mean/std of an empty training split")
    mean = total / pixels
    std = (squares / pixels - mean ** 2).clamp_min(0).sqrt()
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def dataset_mean_std(train: Dataset, name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """--normalize dataset's mean/std of the training images, refused (DataError) for a constant channel: first
    on a seeded sample of CONSTANT_CHECK_IMAGES, so that the refusal comes before the full pass."""
    for images in (CONSTANT_CHECK_IMAGES, STATS_MAX_IMAGES):
        if images == STATS_MAX_IMAGES or len(train) > images:
            mean, std = mean_std(train, images=images)
            if min(std) < 1e-6:
                sample = f" (over a sample of {images} of them)" if len(train) > images else ""
                raise DataError(f"a colour channel of {name}'s training images is constant{sample} (std {std}); "
                                f"normalise with --normalize imagenet or give --mean/--std instead")
    return mean, std


def load_data(name: str, *, image_size: int = 32, data_dir: str | os.PathLike = "data", download: bool = False,
              normalize: str | tuple[Sequence[float], Sequence[float]] = "imagenet", augment: str | None = None,
              color_jitter: float = 0.0, val_fraction: float = 0.1, crop_scale: tuple[float, float] | None = None,
              train_crops: str = "none", verify_md5: bool = False) -> Data:
    """A dataset by name: digits, cifar10, stl10, synthetic or folder:PATH.

    normalize: "imagenet", "dataset" (mean/std of the training split at evaluation transform), or an
    explicit (mean, std) pair, e.g. the one a checkpoint was trained with.
    augment: a key of AUGMENTATIONS; None takes the dataset's default.
    val_fraction: of the training images held out for validation, where the dataset has no val split.
    crop_scale: the training crop's area range (RandomResizedCrop's scale) instead of the preset's.
    train_crops: none, five or ten: FiveCrop/TenCrop views, each a training sample (the split x5 or x10).
    verify_md5: refuse cifar10/stl10 files that are not the published ones (else a note).
    """
    kind, arg = parse_name(name)
    source = SOURCES[kind]
    augment = source.augment if augment is None else augment
    if augment not in AUGMENTATIONS:
        raise DataError(f"unknown augmentation {augment!r}: choose one of {', '.join(AUGMENTATIONS)}")
    if not 0 < val_fraction < 1:
        raise DataError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    if train_crops not in TRAIN_VIEWS:
        raise DataError(f"unknown --train-crops {train_crops!r}: choose {', '.join(TRAIN_VIEWS)}")
    if train_crops == "ten" and not source.mirror_safe:
        raise DataError(f"{name}'s images change class when mirrored: TenCrop's mirrored views would teach wrong "
                        f"labels; use --train-crops five")
    splits, classes, *notes = source.load(image_size=image_size, data_dir=data_dir, download=download,
                                         val_fraction=val_fraction, path=arg, verify_md5=verify_md5)
    notes = tuple(dict.fromkeys(notes[0])) if notes else ()  # a folder read twice (train/ and test/) says it once
    for note in notes:  # said once, as the data is loaded, whichever command loads it
        print(f"note: {note}", file=sys.stderr)
    if len(classes) < 2:
        raise DataError(f"{name} has {len(classes)} class; a classifier needs at least 2")
    if not len(splits["train"]):
        raise DataError(f"{name} has no training images")
    common = dict(mirror_safe=source.mirror_safe, crop_fraction=source.crop_fraction)
    if isinstance(normalize, str):
        if normalize not in NORMALIZE:
            raise DataError(f"unknown normalisation {normalize!r}: choose {' or '.join(NORMALIZE)}")
        if normalize == "imagenet":
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            plain = build_transform(image_size, (), (), train=False, normalize=False, **common)
            mean, std = dataset_mean_std(Transformed(splits["train"], plain), name)
    else:
        mean, std = (tuple(float(v) for v in normalize[0]), tuple(float(v) for v in normalize[1]))
    return Data(
        name=name, splits=splits, classes=tuple(classes), image_size=image_size, mean=tuple(mean),
        std=tuple(std), augment=augment, notes=notes,
        train_transform=build_transform(image_size, mean, std, train=True, augment=augment,
                                        color_jitter=color_jitter, crop_scale=crop_scale, **common),
        view_transforms=tuple(build_transform(image_size, mean, std, train=True, color_jitter=color_jitter, view=k,
                                              **common) for k in range(TRAIN_VIEWS[train_crops]))
        if train_crops != "none" else (),
        eval_transform=build_transform(image_size, mean, std, train=False, **common))
