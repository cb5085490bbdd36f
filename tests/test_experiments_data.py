"""lrlc_experiments.data: the embedded digits, translation, and the MNIST / CIFAR-10 / CelebA
loaders on tiny synthetic files written in their real formats, including malformed ones."""

from __future__ import annotations

import gzip
import math
import struct

import numpy as np
import pytest

from lrlc_experiments import data

# ---------------------------------------------------------------------------------------------
# Embedded digits


def _rows_sorted(images):
    flat = images.reshape(len(images), -1)
    return flat[np.lexsort(flat.T[::-1])]


def test_digits_splits_partition_the_scans():
    sklearn_datasets = pytest.importorskip("sklearn.datasets", reason="digits need scikit-learn")
    original = sklearn_datasets.load_digits()
    dataset = data.load_digits(image_size=8, split_seed=3, val_fraction=0.2, test_fraction=0.25)
    sizes = [len(dataset.train), len(dataset.val), len(dataset.test)]
    assert sum(sizes) == 1797
    assert sizes[1] == round(0.2 * 1797) and sizes[2] == round(0.25 * 1797)
    assert dataset.image_shape == (1, 8, 8) and dataset.num_classes == 10
    # At the native size the images are the scans scaled to [0, 1], each used exactly once.
    ours = np.concatenate([s.images for s in (dataset.train, dataset.val, dataset.test)])
    expected = (original.images / 16.0).astype(np.float32)[:, None]
    np.testing.assert_array_equal(_rows_sorted(ours), _rows_sorted(expected))
    labels = np.concatenate([s.labels for s in (dataset.train, dataset.val, dataset.test)])
    np.testing.assert_array_equal(np.bincount(labels), np.bincount(original.target))


def test_digits_split_is_fixed_by_its_seed_and_resized_with_aligned_corners():
    pytest.importorskip("sklearn", reason="digits need scikit-learn")
    a = data.load_digits(image_size=12, split_seed=1)
    b = data.load_digits(image_size=12, split_seed=1)
    c = data.load_digits(image_size=12, split_seed=2)
    np.testing.assert_array_equal(a.test.images, b.test.images)
    assert not np.array_equal(a.test.labels, c.test.labels)
    native = data.load_digits(image_size=8, split_seed=1)
    assert a.image_shape == (1, 12, 12)
    # Aligned corners: the four corner pixels are copied, and values stay in [0, 1].
    corners = (slice(None), 0, [0, 0, -1, -1], [0, -1, 0, -1])
    np.testing.assert_allclose(a.train.images[corners], native.train.images[corners], atol=1e-6)
    assert a.train.images.min() >= 0 and a.train.images.max() <= 1


def _tiny_dataset(n=6, size=4, channels=1, seed=0):
    rng = np.random.default_rng(seed)

    def split():
        images = rng.uniform(2.0, 3.0, (n, channels, size, size)).astype(np.float32)
        return data.Split(images, rng.integers(0, 3, n))

    return data.Dataset("tiny", split(), split(), split(), num_classes=3)


def test_translate_places_each_image_whole_on_a_noise_canvas():
    dataset = _tiny_dataset()
    moved = data.on_canvas(dataset, 9, position="random", seed=0)
    assert moved.name == "tiny-translated" and moved.image_shape == (1, 9, 9)
    offsets = []
    for original, canvas in zip(dataset.test.images, moved.test.images):
        # The originals lie in [2, 3] and the noise in [0, 1], so the image is found exactly.
        rows, cols = np.nonzero(canvas[0] >= 2.0)
        top, left = rows.min(), cols.min()
        offsets.append((top, left))
        np.testing.assert_array_equal(canvas[:, top : top + 4, left : left + 4], original)
        noise = np.delete(canvas[0].ravel(), np.ravel_multi_index((rows, cols), (9, 9)))
        assert noise.size == 81 - 16 and noise.min() >= 0 and noise.max() <= 1
    assert len(set(offsets)) > 1
    np.testing.assert_array_equal(moved.test.labels, dataset.test.labels)
    np.testing.assert_array_equal(
        data.on_canvas(dataset, 9, position="random", seed=0).train.images, moved.train.images
    )
    with pytest.raises(ValueError, match="canvas_size=3"):
        data.on_canvas(dataset, 3, position="random")


def test_centred_and_translated_canvases_share_images_noise_and_labels():
    """Section 4.2 with a control: the centred and the translated dataset hold the same images
    on the same noise canvases, and differ only in where each image lies."""
    dataset = _tiny_dataset(n=8)
    centred = data.on_canvas(dataset, 9, position="centre", seed=3)
    moved = data.on_canvas(dataset, 9, position="random", seed=3)
    assert centred.name == "tiny-centred" and centred.image_shape == (1, 9, 9)
    for part in ("train", "val", "test"):
        original, a, b = (getattr(d, part) for d in (dataset, centred, moved))
        np.testing.assert_array_equal(a.labels, original.labels)
        np.testing.assert_array_equal(b.labels, original.labels)
        offsets = set()
        for image, on_centre, on_random in zip(original.images, a.images, b.images):
            # (9 - 4) // 2 = 2: the centred image starts at row and column 2.
            np.testing.assert_array_equal(on_centre[:, 2:6, 2:6], image)
            rows, cols = np.nonzero(on_random[0] >= 2.0)
            top, left = rows.min(), cols.min()
            offsets.add((top, left))
            np.testing.assert_array_equal(on_random[:, top : top + 4, left : left + 4], image)
            # Outside both images the canvases hold the same noise.
            outside = np.ones((9, 9), bool)
            outside[2:6, 2:6] = False
            outside[top : top + 4, left : left + 4] = False
            np.testing.assert_array_equal(on_centre[0][outside], on_random[0][outside])
            assert on_centre[0][outside].max() <= 1
        assert len(offsets) > 1
    with pytest.raises(ValueError, match="position must be one of"):
        data.on_canvas(dataset, 9, position="middle")


def test_translation_pairs_match_data_that_differ_only_in_position():
    centred = data.DataConfig(image_size=10, canvas_size=15, position="centre")
    translated = data.DataConfig(image_size=10, canvas_size=15, position="random")
    other = data.DataConfig(image_size=10, canvas_size=16, position="random")
    assert (centred.label, translated.label) == ("digits-centred", "digits-translated")
    configs = [data.DataConfig(), translated, other, centred]
    assert data.translation_pairs(configs) == [(centred, translated)]
    assert data.translation_pairs([centred, other]) == []


def test_data_config_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        data.DataConfig("svhn")
    with pytest.raises(ValueError, match="needs the directory"):
        data.DataConfig("mnist")
    with pytest.raises(ValueError, match="not resized"):
        data.DataConfig("cifar10", root="x", image_size=16)
    with pytest.raises(ValueError, match="sum to less than 1"):
        data.DataConfig(val_fraction=0.5, test_fraction=0.5)


@pytest.mark.parametrize(
    "fields, error, message",
    [
        ({"root": "somewhere"}, ValueError, "the digits are embedded and read no files"),
        ({"position": "middle"}, ValueError, "DataConfig.position: expected one of"),
        ({"position": "centre"}, ValueError, "set canvas_size too"),
        ({"canvas_size": 12}, ValueError, "canvas_size=12 is smaller than the 16×16 digits"),
        ({"image_size": 10, "canvas_size": 9}, ValueError, "canvas_size=9 is smaller"),
        ({"image_size": 0}, ValueError, "DataConfig.image_size must be >= 1, got 0"),
        ({"max_train": 0}, ValueError, "DataConfig.max_train must be >= 1, got 0"),
        ({"image_size": 12.0}, TypeError, "DataConfig.image_size must be an integer"),
        ({"canvas_size": True}, TypeError, "DataConfig.canvas_size must be an integer"),
        ({"split_seed": -1}, ValueError, "DataConfig.split_seed must be >= 0, got -1"),
        ({"val_fraction": "0.2"}, TypeError, "DataConfig.val_fraction must be a number"),
        ({"test_fraction": math.nan}, ValueError, "test_fraction must be a finite number"),
        ({"name": 3}, TypeError, "DataConfig.name must be str"),
    ],
)
def test_data_config_names_each_bad_field(fields, error, message):
    with pytest.raises(error, match=message):
        data.DataConfig(**fields)


def test_data_config_from_a_file_names_unknown_keys():
    with pytest.raises(ValueError, match=r"run.json: data: unknown key\(s\) \['canvas'\]"):
        data.DataConfig.from_dict({"canvas": 24}, "run.json: data")
    with pytest.raises(TypeError, match="run.json: data: expected a JSON object, got list"):
        data.DataConfig.from_dict([], "run.json: data")


# ---------------------------------------------------------------------------------------------
# MNIST (IDX)


def _idx(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_mnist(root, n_train=25, n_test=5, gz=False):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for name, array in arrays.items():
        if gz:
            (root / (name + ".gz")).write_bytes(gzip.compress(_idx(array)))
        else:
            (root / name).write_bytes(_idx(array))
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_idx_with_the_papers_validation_split(tmp_path, gz):
    arrays = _write_mnist(tmp_path, gz=gz)
    dataset = data.load_mnist(tmp_path)
    n_val = round(0.08 * 25)  # validation = first 8% of the training file
    images = arrays["train-images-idx3-ubyte"] / 255.0
    labels = arrays["train-labels-idx1-ubyte"]
    np.testing.assert_allclose(dataset.val.images[:, 0], images[:n_val], rtol=1e-6)
    np.testing.assert_allclose(dataset.train.images[:, 0], images[n_val:], rtol=1e-6)
    np.testing.assert_array_equal(dataset.val.labels, labels[:n_val])
    np.testing.assert_array_equal(dataset.train.labels, labels[n_val:])
    np.testing.assert_array_equal(dataset.test.labels, arrays["t10k-labels-idx1-ubyte"])
    assert dataset.image_shape == (1, 28, 28) and dataset.train.images.dtype == np.float32


def test_mnist_missing_file_is_named(tmp_path):
    _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        data.load_mnist(tmp_path)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda b: b"\x00\x00\x0d" + b[3:], "magic"),  # float data type code
        (lambda b: b[:2] + b"\x08\x02" + b[4:], "2 dimensions; expected 3"),
        (lambda b: b[:-10], "expected"),  # truncated pixels
        (lambda b: b[:2], "shorter than a header"),
    ],
)
def test_mnist_malformed_images_file_is_named(tmp_path, corrupt, message):
    _write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(ValueError, match=message) as info:
        data.load_mnist(tmp_path)
    assert "train-images-idx3-ubyte" in str(info.value)


def test_mnist_header_whose_size_overflows_int64_is_named(tmp_path):
    _write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    # Three dimensions of 2^32 - 1: their product overflows a 64-bit integer.
    header = struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">3I", *(3 * [2**32 - 1]))
    path.write_bytes(header + bytes(100))
    with pytest.raises(ValueError, match="malformed IDX file: 116 bytes for shape") as info:
        data.load_mnist(tmp_path)
    assert str(path) in str(info.value)


def test_mnist_without_images_is_named(tmp_path):
    _write_mnist(tmp_path, n_test=0)
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte: IDX file holds 0 images"):
        data.load_mnist(tmp_path)


def test_mnist_test_images_of_another_size_are_named(tmp_path):
    _write_mnist(tmp_path)
    images = np.zeros((5, 27, 27))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx(images))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte holds 27×27 images but .*28×28"):
        data.load_mnist(tmp_path)


def test_a_split_left_empty_is_named(tmp_path):
    # One training image: the first 8% of it (the validation split) rounds to none.
    _write_mnist(tmp_path, n_train=1)
    config = data.DataConfig("mnist", root=str(tmp_path))
    with pytest.raises(ValueError, match="dataset 'mnist': the val split holds no images"):
        data.load_dataset(config)


def test_mnist_label_problems_are_named(tmp_path):
    _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.arange(4)))
    with pytest.raises(ValueError, match="5 images but .*t10k-labels-idx1-ubyte holds 4 labels"):
        data.load_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.array([1, 2, 10, 3, 4])))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte: label 10 out of range"):
        data.load_mnist(tmp_path)


# ---------------------------------------------------------------------------------------------
# CIFAR-10 (binary version)


def _write_cifar(root, per_batch=4):
    rng = np.random.default_rng(1)
    written = {}
    for name in (*data.CIFAR10_TRAIN_FILES, data.CIFAR10_TEST_FILE):
        labels = rng.integers(0, 10, per_batch)
        pixels = rng.integers(0, 256, (per_batch, 3, 32, 32))
        records = np.concatenate([labels[:, None], pixels.reshape(per_batch, -1)], axis=1)
        (root / name).write_bytes(records.astype(np.uint8).tobytes())
        written[name] = (pixels, labels)
    return written


def test_cifar10_reads_binary_batches_with_the_papers_validation_split(tmp_path):
    root = tmp_path / "cifar-10-batches-bin"
    root.mkdir()
    written = _write_cifar(root)
    dataset = data.load_cifar10(tmp_path)  # finds the standard sub-directory
    pixels = np.concatenate([written[n][0] for n in data.CIFAR10_TRAIN_FILES]) / 255.0
    labels = np.concatenate([written[n][1] for n in data.CIFAR10_TRAIN_FILES])
    n_val = round(0.1 * 20)  # validation = first 10% of the training batches
    np.testing.assert_allclose(dataset.val.images, pixels[:n_val], rtol=1e-6)
    np.testing.assert_allclose(dataset.train.images, pixels[n_val:], rtol=1e-6)
    np.testing.assert_array_equal(dataset.train.labels, labels[n_val:])
    test_pixels, test_labels = written[data.CIFAR10_TEST_FILE]
    np.testing.assert_allclose(dataset.test.images, test_pixels / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(dataset.test.labels, test_labels)
    assert dataset.image_shape == (3, 32, 32)


def test_cifar10_problems_are_named(tmp_path):
    _write_cifar(tmp_path)
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="data_batch_3.bin: malformed CIFAR-10 binary batch"):
        data.load_cifar10(tmp_path)
    path.write_bytes(bytes([10]) + bytes(3072))
    with pytest.raises(ValueError, match="data_batch_3.bin: .*label 10 > 9"):
        data.load_cifar10(tmp_path)
    path.unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3.bin"):
        data.load_cifar10(tmp_path)


def test_cifar10_pickled_version_is_refused_not_unpickled(tmp_path):
    for name in ("data_batch_1", "test_batch"):
        (tmp_path / name).write_bytes(b"not read")
    with pytest.raises(ValueError, match="never unpickled"):
        data.load_cifar10(tmp_path)


# ---------------------------------------------------------------------------------------------
# CelebA


def _attribute_file(rows, names=("Eyeglasses", "Male", "Young")):
    lines = [str(len(rows)), " ".join(names)]
    lines += [f"{name} " + " ".join(values) for name, values in rows]
    return "\n".join(lines) + "\n"


def _write_celeba(root, colours):
    """One 178×218 (width×height) PNG-encoded image per colour: the paper's crop region
    (rows 40..177, columns 20..157) filled with that colour, a 1-pixel frame around it in
    white, the rest black; so a crop off by one pixel changes the result."""
    image_module = pytest.importorskip("PIL.Image", reason="CelebA images are read with Pillow")
    (root / data.CELEBA_IMAGES).mkdir()
    names = [f"{i + 1:06d}.jpg" for i in range(len(colours))]
    for name, colour in zip(names, colours):
        pixels = np.zeros((218, 178, 3), np.uint8)
        pixels[39:179, 19:159] = 255
        pixels[40:178, 20:158] = colour
        # PNG inside a .jpg name: Pillow reads by content, and PNG is lossless.
        image_module.fromarray(pixels).save(root / data.CELEBA_IMAGES / name, format="PNG")
    males = [("1" if i % 2 else "-1") for i in range(len(names))]
    rows = [(n, ["-1", m, "1"]) for n, m in zip(names, males)]
    (root / data.CELEBA_ATTRIBUTES).write_text(_attribute_file(rows))
    parts = [i % 3 for i in range(len(names))]
    (root / data.CELEBA_PARTITION).write_text("".join(f"{n} {p}\n" for n, p in zip(names, parts)))
    return names, [int(m == "1") for m in males], parts


def test_celeba_crop_resize_label_and_partition(tmp_path):
    colours = [(10 * i, 200 - 10 * i, 7 * i) for i in range(7)]
    names, males, parts = _write_celeba(tmp_path, colours)
    dataset = data.load_celeba(tmp_path, image_size=32)
    assert dataset.image_shape == (3, 32, 32) and dataset.num_classes == 2
    for part, split in enumerate((dataset.train, dataset.val, dataset.test)):
        mine = [i for i in range(len(names)) if parts[i] == part]
        np.testing.assert_array_equal(split.labels, [males[i] for i in mine])
        for image, i in zip(split.images, mine):
            # A constant crop stays constant under resizing: no frame pixel leaked in.
            expected = np.array(colours[i], np.float32)[:, None, None] / 255.0
            np.testing.assert_allclose(image, np.broadcast_to(expected, image.shape), atol=1e-6)


def test_celeba_file_problems_are_named(tmp_path):
    names, _, _ = _write_celeba(tmp_path, [(1, 2, 3)] * 3)
    (tmp_path / data.CELEBA_IMAGES / names[1]).write_bytes(b"garbage")
    with pytest.raises(ValueError, match=f"{names[1]}: cannot decode"):
        data.load_celeba(tmp_path)
    (tmp_path / data.CELEBA_IMAGES / names[1]).unlink()
    with pytest.raises(FileNotFoundError, match=names[1]):
        data.load_celeba(tmp_path)
    (tmp_path / data.CELEBA_PARTITION).unlink()
    with pytest.raises(FileNotFoundError, match="list_eval_partition.txt"):
        data.load_celeba(tmp_path)


def test_celeba_small_image_is_named(tmp_path):
    image_module = pytest.importorskip("PIL.Image", reason="CelebA images are read with Pillow")
    names, _, _ = _write_celeba(tmp_path, [(1, 2, 3)] * 3)
    image_module.new("RGB", (150, 170)).save(tmp_path / data.CELEBA_IMAGES / names[0], "PNG")
    with pytest.raises(ValueError, match=f"{names[0]}: image is 150×170"):
        data.load_celeba(tmp_path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("3\nEyeglasses Male Young\n000001.jpg -1 1 1\n", "announces 3 images but 1 rows"),
        ("x\nMale\n", "not an image count"),
        ("1\nEyeglasses Young\n000001.jpg 1 1\n", "attribute 'Male' not in the header"),
        ("1\nEyeglasses Male Young\n000001.jpg -1 0 1\n", "line 3: expected a file name"),
        ("1\nEyeglasses Male Young\n000001.jpg -1 1\n", "line 3: expected a file name"),
    ],
)
def test_celeba_malformed_attribute_list_is_named(tmp_path, text, message):
    path = tmp_path / data.CELEBA_ATTRIBUTES
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        data.read_celeba_attribute(path)
    assert data.CELEBA_ATTRIBUTES in str(info.value)


def test_celeba_malformed_partition_list_is_named(tmp_path):
    path = tmp_path / data.CELEBA_PARTITION
    path.write_text("000001.jpg 0\n000002.jpg 3\n")
    with pytest.raises(ValueError, match="list_eval_partition.txt, line 2"):
        data.read_celeba_partition(path)
