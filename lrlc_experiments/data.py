"""Datasets for the paper's experiments (Section 4 and Table Supp. 1), as NCHW float32 arrays.

Every loader returns a `Dataset` with fixed train / validation / test splits and pixel values
in [0, 1]. Nothing is downloaded: the embedded default is scikit-learn's handwritten digits
(1,797 real 8×8 scans shipped inside scikit-learn); MNIST, CIFAR-10 and CelebA are read from
local files in their distributed formats, and every file is checked so that a missing or
malformed one is reported by name. No file is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import struct
from pathlib import Path

import numpy as np

import lrlc_numpy

from .checks import build_dataclass, check_int, check_mapping, check_number, check_type

DATASETS = ("digits", "mnist", "cifar10", "celeba")
# Where `on_canvas` pastes each image: at a uniformly random position, or at the centre.
POSITIONS = ("random", "centre")
# Image side when DataConfig.image_size is None: digits and CelebA are resized to it.
DEFAULT_SIZES = {"digits": 16, "mnist": 28, "cifar10": 32, "celeba": 32}


@dataclasses.dataclass(frozen=True)
class Split:
    """Images (N, C, H, W) float32 in [0, 1] and integer labels (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        if self.images.ndim != 4 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"Split needs images (N, C, H, W) and labels (N,), got shapes "
                f"{self.images.shape} and {self.labels.shape}"
            )

    def __len__(self):
        return self.labels.shape[0]


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        return tuple(self.train.images.shape[1:])


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which dataset to build, and how. Defaults follow the paper where it says.

    name: one of DATASETS. root: the directory holding the dataset's files (unused for digits).
    image_size: the grid digits (default 16) and CelebA's crop (default 32, the paper's) are
    resized to; MNIST and CIFAR-10 keep their own 28² and 32² grids.
    canvas_size: when set, each image is pasted on a canvas of this size filled with uniform
    noise (the paper's Translated CelebA protocol, Section 4.2), at a uniformly random
    position ('random') or at the centre ('centre'), as `position` says. The two positions
    draw the same noise, so a centred and a translated dataset differ only in alignment.
    split_seed: fixes the digits split and the canvas noise and offsets.
    val_fraction, test_fraction: the digits split (MNIST, CIFAR-10 and CelebA use the paper's).
    max_train: keep only the first max_train training examples (None: all), for quick runs.
    """

    name: str = "digits"
    root: str | None = None
    image_size: int | None = None
    canvas_size: int | None = None
    position: str = "random"
    split_seed: int = 0
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    max_train: int | None = None

    def __post_init__(self):
        check_type("DataConfig.name", self.name, str)
        if self.name not in DATASETS:
            raise ValueError(f"DataConfig.name: unknown dataset {self.name!r}; expected {DATASETS}")
        if self.root is not None:
            check_type("DataConfig.root", self.root, str)
        if self.name == "digits" and self.root is not None:
            raise ValueError(
                f"DataConfig.root: the digits are embedded and read no files, got {self.root!r}"
            )
        if self.name != "digits" and self.root is None:
            raise ValueError(
                f"DataConfig.root: dataset {self.name!r} needs the directory of its files"
            )
        for name in ("image_size", "canvas_size", "max_train"):
            if getattr(self, name) is not None:
                check_int(f"DataConfig.{name}", getattr(self, name), minimum=1)
        check_int("DataConfig.split_seed", self.split_seed, minimum=0)
        if self.image_size is not None and self.name in ("mnist", "cifar10"):
            raise ValueError(f"DataConfig.image_size: {self.name} images are not resized")
        if self.position not in POSITIONS:
            raise ValueError(
                f"DataConfig.position: expected one of {POSITIONS}, got {self.position!r}"
            )
        if self.canvas_size is None and self.position != "random":
            raise ValueError(
                f"DataConfig.position={self.position!r} places images on a canvas; "
                "set canvas_size too"
            )
        if self.canvas_size is not None and self.canvas_size < self.grid_size:
            raise ValueError(
                f"DataConfig.canvas_size={self.canvas_size} is smaller than the "
                f"{self.grid_size}×{self.grid_size} {self.name} images"
            )
        for name in ("val_fraction", "test_fraction"):
            check_number(f"DataConfig.{name}", getattr(self, name))
        if not (0 < self.val_fraction < 1 and 0 < self.test_fraction < 1) or (
            self.val_fraction + self.test_fraction >= 1
        ):
            raise ValueError(
                f"DataConfig: val_fraction={self.val_fraction} and test_fraction="
                f"{self.test_fraction} must lie in (0, 1) and sum to less than 1"
            )

    @classmethod
    def from_dict(cls, fields: dict, where: str = "DataConfig") -> DataConfig:
        """From a config file's dict; `where` names the file and key in errors."""
        return build_dataclass(cls, check_mapping(where, fields), where)

    @property
    def grid_size(self) -> int:
        """The side of the images before any canvas: image_size, or the dataset's own."""
        return self.image_size or DEFAULT_SIZES[self.name]

    @property
    def label(self) -> str:
        """Short name used in tables: 'digits', 'digits-centred' or 'digits-translated'."""
        if self.canvas_size is None:
            return self.name
        return self.name + ("-translated" if self.position == "random" else "-centred")


def translation_pairs(configs) -> list[tuple[DataConfig, DataConfig]]:
    """(centred, translated) among `configs`: data that differ only in the images' position
    on the canvas, the translation experiment of Section 4.2."""
    configs = list(configs)
    return [
        (centred, translated)
        for centred in configs
        if centred.canvas_size is not None and centred.position == "centre"
        for translated in configs
        if translated == dataclasses.replace(centred, position="random")
    ]


def load_dataset(config: DataConfig) -> Dataset:
    """Build the dataset `config` describes."""
    if config.name == "digits":
        dataset = load_digits(
            image_size=config.grid_size,
            split_seed=config.split_seed,
            val_fraction=config.val_fraction,
            test_fraction=config.test_fraction,
        )
    elif config.name == "mnist":
        dataset = load_mnist(config.root)
    elif config.name == "cifar10":
        dataset = load_cifar10(config.root)
    else:
        dataset = load_celeba(config.root, image_size=config.grid_size)
    if config.max_train is not None:
        train = Split(
            dataset.train.images[: config.max_train], dataset.train.labels[: config.max_train]
        )
        dataset = dataclasses.replace(dataset, train=train)
    if config.canvas_size is not None:
        dataset = on_canvas(
            dataset, config.canvas_size, position=config.position, seed=config.split_seed
        )
    for part in ("train", "val", "test"):
        if len(getattr(dataset, part)) == 0:
            raise ValueError(f"dataset {config.label!r}: the {part} split holds no images")
    return dataset


# ---------------------------------------------------------------------------------------------
# Embedded default: scikit-learn's digits


def load_digits(
    image_size: int = 16, split_seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2
) -> Dataset:
    """The 1,797 8×8 digit scans, bilinearly resized (aligned corners) to image_size².

    The split is a seeded random permutation: the first test_fraction of it is the test set,
    the next val_fraction the validation set, the rest the training set.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    # Pixel values are counts 0..16 of set bits in 4×4 blocks of the original scans.
    images = bunch.images.astype(np.float64)[..., None] / 16.0
    if image_size != images.shape[1]:
        images = lrlc_numpy.resize_bilinear(images, (image_size, image_size))
    images = images.transpose(0, 3, 1, 2).astype(np.float32)
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(split_seed).permutation(len(labels))
    n_test = round(test_fraction * len(labels))
    n_val = round(val_fraction * len(labels))
    parts = np.split(order, [n_test, n_test + n_val])
    test, val, train = (Split(images[idx], labels[idx]) for idx in parts)
    return Dataset("digits", train, val, test, num_classes=10)


def on_canvas(dataset: Dataset, canvas_size: int, *, position: str, seed: int = 0) -> Dataset:
    """Each image pasted on a canvas of uniform noise in [0, 1], at a uniformly random
    position ('random': the paper's translated dataset) or at the centre ('centre').

    Noise and offsets are drawn from `seed` in the same order for both positions, so with
    one seed the centred and the translated datasets share every canvas's noise field and
    differ only in where the image lies (and so in which noise it covers).
    """
    if position not in POSITIONS:
        raise ValueError(f"on_canvas: position must be one of {POSITIONS}, got {position!r}")
    channels, height, width = dataset.image_shape
    if canvas_size < max(height, width):
        raise ValueError(
            f"on_canvas: canvas_size={canvas_size} is smaller than the images ({height}×{width})"
        )
    rng = np.random.default_rng(seed)

    def place(split: Split) -> Split:
        n = len(split)
        canvas = rng.uniform(0.0, 1.0, size=(n, channels, canvas_size, canvas_size))
        canvas = canvas.astype(np.float32)
        tops = rng.integers(0, canvas_size - height + 1, size=n)
        lefts = rng.integers(0, canvas_size - width + 1, size=n)
        if position == "centre":
            tops = np.full(n, (canvas_size - height) // 2)
            lefts = np.full(n, (canvas_size - width) // 2)
        for i, (top, left) in enumerate(zip(tops, lefts)):
            canvas[i, :, top : top + height, left : left + width] = split.images[i]
        return Split(canvas, split.labels)

    suffix = "-translated" if position == "random" else "-centred"
    return Dataset(
        dataset.name + suffix,
        place(dataset.train),
        place(dataset.val),
        place(dataset.test),
        dataset.num_classes,
    )


def _validation_head(images, labels, fraction) -> tuple[Split, Split]:
    """(train, val) where val is the first `fraction` of the training files (the paper's rule)."""
    n_val = round(fraction * len(labels))
    return Split(images[n_val:], labels[n_val:]), Split(images[:n_val], labels[:n_val])


# ---------------------------------------------------------------------------------------------
# MNIST: the four IDX files


MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _find_file(root: Path, name: str, alternatives=()) -> Path:
    for candidate in (name, *alternatives):
        if (root / candidate).is_file():
            return root / candidate
    tried = ", ".join(str(root / c) for c in (name, *alternatives))
    raise FileNotFoundError(f"dataset file {name!r} not found (looked for {tried})")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX array of unsigned bytes with `ndim` dimensions (plain or gzip-compressed)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            data = stream.read()
    except OSError as err:
        raise ValueError(f"{path}: cannot read IDX file ({err})") from None
    if len(data) < 4:
        raise ValueError(f"{path}: malformed IDX file: {len(data)} bytes, shorter than a header")
    zero, dtype_code, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(
            f"{path}: malformed IDX file: magic {data[:4].hex()}; expected 0000 08 0{ndim} "
            "(unsigned bytes)"
        )
    if dims != ndim:
        raise ValueError(f"{path}: IDX file has {dims} dimensions; expected {ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: malformed IDX file: truncated header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(shape)  # Python integers: a forged header cannot overflow
    if len(data) != expected:
        raise ValueError(
            f"{path}: malformed IDX file: {len(data)} bytes for shape {shape}; expected {expected}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _labelled(images_path, labels_path, num_classes):
    images = read_idx(images_path, 3)
    if images.shape[0] == 0:
        raise ValueError(f"{images_path}: IDX file holds 0 images; expected at least one")
    labels = read_idx(labels_path, 1).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels"
        )
    if labels.size and labels.max() >= num_classes:
        raise ValueError(f"{labels_path}: label {labels.max()} out of range 0..{num_classes - 1}")
    return (images[:, None] / np.float32(255.0)).astype(np.float32), labels


def load_mnist(root, val_fraction: float = 0.08) -> Dataset:
    """MNIST from its four IDX files in `root` (optionally .gz); validation = first 8% of train."""
    root = Path(root)
    paths = {key: _find_file(root, name, (name + ".gz",)) for key, name in MNIST_FILES.items()}
    train_images, train_labels = _labelled(paths["train_images"], paths["train_labels"], 10)
    test_images, test_labels = _labelled(paths["test_images"], paths["test_labels"], 10)
    if test_images.shape[2:] != train_images.shape[2:]:
        raise ValueError(
            f"{paths['test_images']} holds {test_images.shape[2]}×{test_images.shape[3]} images "
            f"but {paths['train_images']} holds {train_images.shape[2]}×{train_images.shape[3]}; "
            "expected one size"
        )
    train, val = _validation_head(train_images, train_labels, val_fraction)
    return Dataset("mnist", train, val, Split(test_images, test_labels), num_classes=10)


# ---------------------------------------------------------------------------------------------
# CIFAR-10: the binary version


CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch.bin"
_CIFAR_RECORD = 1 + 3 * 32 * 32  # label byte, then the red, green and blue 32×32 planes


def read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) float32 in [0, 1] and labels from one binary CIFAR-10 batch."""
    data = Path(path).read_bytes()
    if len(data) == 0 or len(data) % _CIFAR_RECORD:
        raise ValueError(
            f"{path}: malformed CIFAR-10 binary batch: {len(data)} bytes is not a positive "
            f"multiple of the {_CIFAR_RECORD}-byte record"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise ValueError(f"{path}: malformed CIFAR-10 binary batch: label {labels.max()} > 9")
    images = records[:, 1:].reshape(-1, 3, 32, 32) / np.float32(255.0)
    return images.astype(np.float32), labels


def load_cifar10(root, val_fraction: float = 0.1) -> Dataset:
    """CIFAR-10 from the binary batches in `root` or `root/cifar-10-batches-bin`.

    Validation = first 10% of the training batches (the paper's split).
    """
    root = Path(root)
    if not (root / CIFAR10_TEST_FILE).is_file() and (root / "cifar-10-batches-bin").is_dir():
        root = root / "cifar-10-batches-bin"
    if any(root.glob("data_batch_[0-9]")) and not any(root.glob("data_batch_*.bin")):
        raise ValueError(
            f"{root} holds the pickled CIFAR-10 batches, which are never unpickled here; "
            "use the binary version (data_batch_1.bin ... test_batch.bin)"
        )
    batches = [read_cifar10_batch(_find_file(root, name)) for name in CIFAR10_TRAIN_FILES]
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    train, val = _validation_head(images, labels, val_fraction)
    test = Split(*read_cifar10_batch(_find_file(root, CIFAR10_TEST_FILE)))
    return Dataset("cifar10", train, val, test, num_classes=10)


# ---------------------------------------------------------------------------------------------
# CelebA: aligned images, attribute list, partition list


CELEBA_IMAGES = "img_align_celeba"
CELEBA_ATTRIBUTES = "list_attr_celeba.txt"
CELEBA_PARTITION = "list_eval_partition.txt"
CELEBA_LABEL = "Male"
# The paper's crop of the 178×218 aligned images: rows 40..177, columns 20..157.
CELEBA_CROP_ROWS = (40, 178)
CELEBA_CROP_COLS = (20, 158)


def read_celeba_attribute(path: Path, attribute: str = CELEBA_LABEL) -> dict[str, int]:
    """file name → 0/1 for `attribute` from list_attr_celeba.txt (count, names, then ±1 rows)."""
    lines = Path(path).read_text().splitlines()
    if len(lines) < 2:
        raise ValueError(f"{path}: malformed attribute list: fewer than two header lines")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise ValueError(
            f"{path}: malformed attribute list: first line {lines[0]!r} is not an image count"
        ) from None
    names = lines[1].split()
    if attribute not in names:
        raise ValueError(f"{path}: attribute {attribute!r} not in the header {names}")
    column = names.index(attribute)
    rows = [line.split() for line in lines[2:] if line.strip()]
    if len(rows) != count:
        raise ValueError(f"{path}: header announces {count} images but {len(rows)} rows follow")
    labels = {}
    for number, row in enumerate(rows, start=3):
        if len(row) != len(names) + 1 or row[column + 1] not in ("1", "-1"):
            raise ValueError(
                f"{path}, line {number}: expected a file name and {len(names)} values of 1 or "
                f"-1, got {' '.join(row)!r}"
            )
        labels[row[0]] = int(row[column + 1] == "1")
    return labels


def read_celeba_partition(path: Path) -> dict[str, int]:
    """file name → 0 (train), 1 (validation) or 2 (test) from list_eval_partition.txt."""
    partition = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        row = line.split()
        if len(row) != 2 or row[1] not in ("0", "1", "2"):
            raise ValueError(f"{path}, line {number}: expected '<file name> <0|1|2>', got {line!r}")
        partition[row[0]] = int(row[1])
    return partition


def read_celeba_image(path: Path, image_size: int = 32) -> np.ndarray:
    """One aligned CelebA image, cropped as in the paper and resized: (3, size, size) in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"CelebA image {path} not found") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: cannot decode CelebA image ({err})") from None
    width, height = image.size
    if height < CELEBA_CROP_ROWS[1] or width < CELEBA_CROP_COLS[1]:
        raise ValueError(
            f"{path}: image is {width}×{height} (width×height); the crop needs at least "
            f"{CELEBA_CROP_COLS[1]}×{CELEBA_CROP_ROWS[1]}"
        )
    box = (CELEBA_CROP_COLS[0], CELEBA_CROP_ROWS[0], CELEBA_CROP_COLS[1], CELEBA_CROP_ROWS[1])
    image = image.crop(box).resize((image_size, image_size), Image.BILINEAR)
    return (np.asarray(image, dtype=np.float32) / 255.0).transpose(2, 0, 1)


def load_celeba(root, image_size: int = 32) -> Dataset:
    """CelebA 'Male' classification with the official partition (train 0, val 1, test 2)."""
    root = Path(root)
    labels = read_celeba_attribute(_find_file(root, CELEBA_ATTRIBUTES))
    partition = read_celeba_partition(_find_file(root, CELEBA_PARTITION))
    unlabelled = sorted(set(partition) - set(labels))
    if unlabelled:
        raise ValueError(
            f"{root / CELEBA_PARTITION} lists images with no row in {root / CELEBA_ATTRIBUTES}, "
            f"e.g. {unlabelled[:3]}"
        )
    image_dir = root / CELEBA_IMAGES
    if not image_dir.is_dir():
        raise FileNotFoundError(f"CelebA image directory {image_dir} not found")
    splits = []
    for part in (0, 1, 2):
        names = sorted(name for name, p in partition.items() if p == part)
        if not names:
            raise ValueError(f"{root / CELEBA_PARTITION} assigns no image to partition {part}")
        images = np.stack([read_celeba_image(image_dir / n, image_size) for n in names])
        splits.append(Split(images, np.array([labels[n] for n in names], dtype=np.int64)))
    return Dataset("celeba", *splits, num_classes=2)
