"""CIFAR-10 and MNIST loaders (nas/train/data.py) on tiny copies written here in the real distribution formats, and
the crop-and-flip augmentation (nas/train/augment.py) checked against a NumPy reference by exhaustive search.

The formats, as distributed:
  CIFAR-10 python version (https://www.cs.toronto.edu/~kriz/cifar.html): cifar-10-batches-py/data_batch_1..5
    and test_batch, each a pickled dict; b"data" is uint8 (N, 3072), each row the 1,024 red values, then green,
    then blue, each plane 32x32 row-major; b"labels" is a list of N ints in 0..9.
  MNIST IDX (http://yann.lecun.com/exdb/mnist/): big-endian uint32 magic 0x00000803 (images) or 0x00000801
    (labels), one big-endian uint32 per dimension, then the uint8 data row-major.
The expected pixels are computed here from those byte offsets, not with the loader's reshape.
"""
import functools
import gzip
import io
import os
import pathlib
import pickle
import re
import struct
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas.train import datasets as data
from nas.train.datasets import idx
from nas.train.augment import random_crop_flip

CIFAR_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
PER_TRAIN_BATCH, N_TEST = 3, 4
MNIST_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte"]
# (image, row, col, channel, value): pixels set by hand on top of random bytes.
CIFAR_PIXELS = [(0, 0, 0, 0, 11), (0, 0, 31, 1, 222), (1, 5, 7, 2, 3), (2, 31, 0, 0, 255), (2, 13, 29, 1, 0)]


# ------------------------------------------------------------------------------------------------ writers
def cifar_batches(seed: int = 0) -> dict[str, dict]:
  """Six batches in the real dict layout (the real files also carry b"batch_label" and b"filenames")."""
  rng = np.random.default_rng(seed)
  batches = {}
  for name in CIFAR_NAMES:
    n = N_TEST if name == "test_batch" else PER_TRAIN_BATCH
    rows = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    if name == "data_batch_1":
      for i, r, c, k, v in CIFAR_PIXELS:
        rows[i, k * 1024 + r * 32 + c] = v
    batches[name] = {b"batch_label": f"{name} of 6".encode(), b"labels": rng.integers(0, 10, n).tolist(),
                     b"data": rows, b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
  return batches


def write_cifar_folder(parent: pathlib.Path, batches: dict, dumps=pickle.dumps) -> pathlib.Path:
  folder = parent / "cifar-10-batches-py"
  folder.mkdir(parents=True)
  for name, d in batches.items():
    (folder / name).write_bytes(dumps(d))
  (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"] * 10}))
  return folder


def write_cifar_archive(parent: pathlib.Path, batches: dict, skip: str | None = None) -> pathlib.Path:
  archive = parent / "cifar-10-python.tar.gz"
  parent.mkdir(parents=True, exist_ok=True)
  with tarfile.open(archive, "w:gz") as tar:
    def add(name, blob):
      info = tarfile.TarInfo(name)
      info.size = len(blob)
      tar.addfile(info, io.BytesIO(blob))
    folder = tarfile.TarInfo("cifar-10-batches-py")
    folder.type = tarfile.DIRTYPE
    tar.addfile(folder)
    add("cifar-10-batches-py/readme.html", b"<html></html>")
    add("cifar-10-batches-py/batches.meta", pickle.dumps({b"label_names": [b"airplane"] * 10}))
    for name, d in batches.items():
      if name != skip:
        add(f"cifar-10-batches-py/{name}", pickle.dumps(d))
  return archive


def python2_style_dumps(d: dict) -> bytes:
  """Protocol 2 with numpy 1.x's module name, as in the distributed files (pickled by Python 2, numpy 1)."""
  return pickle.dumps(d, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def idx_bytes(magic: int, dims: tuple[int, ...], values: bytes) -> bytes:
  return struct.pack(f">I{len(dims)}I", magic, *dims) + values


def mnist_arrays(seed: int = 0):
  rng = np.random.default_rng(seed)
  return {"train": (rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), rng.integers(0, 10, 5, dtype=np.uint8)),
          "t10k": (rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), rng.integers(0, 10, 3, dtype=np.uint8))}


def write_mnist(folder: pathlib.Path, arrays: dict, gz: tuple[bool, ...] = (False,) * 4) -> pathlib.Path:
  folder.mkdir(parents=True, exist_ok=True)
  blobs = []
  for split in ("train", "t10k"):
    images, labels = arrays[split]
    # Row-major bytes: image i, row r, column c at offset i * 784 + r * 28 + c.
    pixels = bytearray(images.size)
    for i, r, c in np.ndindex(images.shape):
      pixels[i * 784 + r * 28 + c] = images[i, r, c]
    blobs += [idx_bytes(0x803, images.shape, bytes(pixels)), idx_bytes(0x801, labels.shape, labels.tobytes())]
  for name, blob, zipped in zip(MNIST_NAMES, blobs, gz):
    (folder / (name + ".gz" if zipped else name)).write_bytes(gzip.compress(blob) if zipped else blob)
  return folder


# ------------------------------------------------------------------------------------------------ CIFAR-10
def expected_cifar(batches: dict, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
  """(N, 32, 32, 3) uint8 from the byte offsets of the format, and the labels."""
  rows = np.concatenate([batches[n][b"data"] for n in names])
  r, c, k = np.meshgrid(np.arange(32), np.arange(32), np.arange(3), indexing="ij")
  return rows[:, k * 1024 + r * 32 + c], np.concatenate([batches[n][b"labels"] for n in names])


MEAN, STD = np.float32([0.4914, 0.4822, 0.4465]), np.float32([0.2470, 0.2435, 0.2616])  # as stated in nas/train/data.py


def unnormalize(x: np.ndarray) -> np.ndarray:
  """NHWC (or ..., 3) normalised pixels back to 0..255."""
  return (x * STD + MEAN) * 255.0


@pytest.mark.parametrize("at_parent", [False, True])
def test_cifar10_folder_pixels_labels_counts(tmp_path, at_parent):
  batches = cifar_batches()
  folder = write_cifar_folder(tmp_path, batches)
  ds = data.load_cifar10(str(tmp_path if at_parent else folder))
  x_train, y_train = expected_cifar(batches, CIFAR_NAMES[:5])
  x_test, y_test = expected_cifar(batches, ["test_batch"])
  assert (ds.name, ds.num_classes, ds.input_shape) == ("cifar10", 10, (32, 32, 3))
  assert ds.x_train.shape == (5 * PER_TRAIN_BATCH, 32, 32, 3) and ds.x_test.shape == (N_TEST, 32, 32, 3)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
  for i, r, c, k, v in CIFAR_PIXELS:
    assert abs((ds.x_train[i, r, c, k] * STD[k] + MEAN[k]) * 255.0 - v) < 1e-3, (i, r, c, k)
  # Un-normalised float32 pixels are within 1e-3 of the integer bytes; rounding recovers them exactly.
  np.testing.assert_allclose(unnormalize(ds.x_train), x_train, atol=1e-3)
  np.testing.assert_array_equal(np.rint(unnormalize(ds.x_test)), x_test)
  np.testing.assert_array_equal(ds.y_train, y_train)
  np.testing.assert_array_equal(ds.y_test, y_test)


def test_cifar10_normalization_is_the_stated_per_channel_mean_and_std(tmp_path):
  batches = cifar_batches()
  folder = write_cifar_folder(tmp_path, batches)
  raw = data.load_cifar10(str(folder), normalize=False)
  x_train, _ = expected_cifar(batches, CIFAR_NAMES[:5])
  np.testing.assert_array_equal(raw.x_train, x_train.astype(np.float32) / np.float32(255))
  assert raw.x_train.min() >= 0.0 and raw.x_train.max() <= 1.0
  norm = data.load_cifar10(str(folder))
  np.testing.assert_allclose(norm.x_train, (raw.x_train - MEAN) / STD, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("point_at", ["parent", "archive"])
def test_cifar10_archive_matches_folder_and_extracts_nothing(tmp_path, point_at):
  batches = cifar_batches(seed=1)
  from_folder = data.load_cifar10(str(write_cifar_folder(tmp_path / "extracted", batches)))
  archive = write_cifar_archive(tmp_path / "archive", batches)
  before = sorted(os.listdir(archive.parent))
  ds = data.load_cifar10(str(archive.parent if point_at == "parent" else archive))
  assert sorted(os.listdir(archive.parent)) == before
  for field in ("x_train", "y_train", "x_test", "y_test"):
    np.testing.assert_array_equal(getattr(ds, field), getattr(from_folder, field))


@pytest.mark.parametrize("dumps", [python2_style_dumps, functools.partial(pickle.dumps, protocol=5)],
                         ids=["protocol2-numpy1", "protocol5"])
def test_cifar10_reads_pickles_of_other_protocols(tmp_path, dumps):
  batches = cifar_batches(seed=2)
  ds = data.load_cifar10(str(write_cifar_folder(tmp_path, batches, dumps)), normalize=False)
  x_test, y_test = expected_cifar(batches, ["test_batch"])
  np.testing.assert_array_equal(np.rint(ds.x_test * 255), x_test)
  np.testing.assert_array_equal(ds.y_test, y_test)


@pytest.mark.parametrize("limit", [1, 4, 100])
def test_cifar10_limit_keeps_the_first_images(tmp_path, limit):
  batches = cifar_batches()
  full = data.load_cifar10(str(write_cifar_folder(tmp_path, batches)))
  ds = data.load_cifar10(str(tmp_path), limit=limit)
  n_train, n_test = min(limit, 5 * PER_TRAIN_BATCH), min(limit, N_TEST)
  np.testing.assert_array_equal(ds.x_train, full.x_train[:n_train])
  np.testing.assert_array_equal(ds.y_train, full.y_train[:n_train])
  np.testing.assert_array_equal(ds.x_test, full.x_test[:n_test])
  np.testing.assert_array_equal(ds.y_test, full.y_test[:n_test])


def test_cifar10_missing_folder_names_folder_and_files(tmp_path):
  where = tmp_path / "nowhere"
  with pytest.raises(FileNotFoundError) as e:
    data.load_cifar10(str(where))
  message = str(e.value)
  for part in [str(where), "cifar-10-batches-py", "cifar-10-python.tar.gz", "dataset.root=", *CIFAR_NAMES]:
    assert part in message, part
  with pytest.raises(FileNotFoundError, match="dataset.root must be set"):
    data.load_cifar10(None)


def test_cifar10_missing_file_is_reported_before_reading_any(tmp_path):
  folder = write_cifar_folder(tmp_path, cifar_batches())
  (folder / "data_batch_1").write_bytes(b"garbage that would be a ValueError if read")
  (folder / "test_batch").unlink()
  with pytest.raises(FileNotFoundError, match="test_batch"):
    data.load_cifar10(str(folder))


def test_cifar10_corrupt_batches_raise_value_error_naming_the_file(tmp_path):
  batches = cifar_batches()
  folder = write_cifar_folder(tmp_path, batches)
  bad = folder / "data_batch_3"
  cases = [
      pickle.dumps({**batches["data_batch_3"], b"data": batches["data_batch_3"][b"data"][:, :3000]}),
      pickle.dumps({**batches["data_batch_3"], b"labels": [1]}),
      pickle.dumps({**batches["data_batch_3"], b"labels": [1, 2, 10]}),
      pickle.dumps({b"data": batches["data_batch_3"][b"data"]}),
      pickle.dumps(batches["data_batch_3"])[:100],
      pickle.dumps(os.getcwd),  # a pickle that names a function outside NumPy is refused, never called
  ]
  for blob in cases:
    bad.write_bytes(blob)
    with pytest.raises(ValueError, match=re.escape(str(bad))):
      data.load_cifar10(str(folder))


def test_cifar10_corrupt_archive_raises_value_error_naming_it(tmp_path):
  archive = write_cifar_archive(tmp_path / "a", cifar_batches(), skip="data_batch_4")
  with pytest.raises(ValueError, match="data_batch_4"):
    data.load_cifar10(str(archive))
  archive.write_bytes(b"not a gzip stream")
  with pytest.raises(ValueError, match=re.escape(str(archive))):
    data.load_cifar10(str(archive.parent))


# ------------------------------------------------------------------------------------------------ MNIST
@pytest.mark.parametrize("gz", [(False,) * 4, (True,) * 4, (True, False, False, True)])
def test_mnist_pixels_labels_counts(tmp_path, gz):
  arrays = mnist_arrays()
  ds = data.load_mnist(str(write_mnist(tmp_path, arrays, gz)))
  assert (ds.name, ds.num_classes, ds.input_shape) == ("mnist", 10, (28, 28, 1))
  assert ds.x_train.shape == (5, 28, 28, 1) and ds.x_test.shape == (3, 28, 28, 1)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
  for split, x, y in (("train", ds.x_train, ds.y_train), ("t10k", ds.x_test, ds.y_test)):
    images, labels = arrays[split]
    np.testing.assert_array_equal(x[..., 0], images.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(y, labels)
  assert ds.x_train.min() >= 0.0 and ds.x_train.max() <= 1.0
  i, r, c = 2, 3, 27  # one pixel by hand: row 3, column 27 of training image 2
  assert ds.x_train[i, r, c, 0] == np.float32(arrays["train"][0][i, r, c]) / np.float32(255)


def test_mnist_limit(tmp_path):
  arrays = mnist_arrays()
  ds = data.load_mnist(str(write_mnist(tmp_path, arrays)), limit=4)
  assert len(ds.x_train) == len(ds.y_train) == 4 and len(ds.x_test) == len(ds.y_test) == 3
  np.testing.assert_array_equal(ds.y_train, arrays["train"][1][:4])


def test_mnist_missing_names_folder_and_files(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    data.load_mnist(str(tmp_path))
  for part in [str(tmp_path), "dataset.root=", *MNIST_NAMES]:
    assert part in str(e.value), part
  write_mnist(tmp_path, mnist_arrays())
  (tmp_path / "t10k-labels-idx1-ubyte").unlink()
  with pytest.raises(FileNotFoundError, match="missing t10k-labels-idx1-ubyte"):
    data.load_mnist(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="dataset.root must be set"):
    data.load_mnist(None)


@pytest.mark.parametrize("name,blob", [
    ("train-images-idx3-ubyte", idx_bytes(0x801, (5, 28, 28), bytes(5 * 784))),   # the labels' magic
    ("t10k-labels-idx1-ubyte", idx_bytes(0x803, (3,), bytes(3))),                  # the images' magic
    ("train-images-idx3-ubyte", idx_bytes(0x803, (5, 28, 28), bytes(5 * 784 - 1))),  # truncated
    ("train-labels-idx1-ubyte", idx_bytes(0x801, (5,), bytes(6))),                 # trailing bytes
    ("t10k-images-idx3-ubyte", idx_bytes(0x803, (3, 32, 32), bytes(3 * 1024))),    # not 28x28
    ("t10k-labels-idx1-ubyte", idx_bytes(0x801, (3,), bytes([1, 2, 10]))),         # label 10
    ("train-labels-idx1-ubyte", b"\x00\x00"),                                      # shorter than a header
])
def test_mnist_corrupt_file_raises_value_error_naming_it(tmp_path, name, blob):
  write_mnist(tmp_path, mnist_arrays())
  (tmp_path / name).write_bytes(blob)
  with pytest.raises(ValueError, match=name):
    data.load_mnist(str(tmp_path))


def test_mnist_corrupt_gzip_and_count_mismatch(tmp_path):
  write_mnist(tmp_path, mnist_arrays(), gz=(True,) * 4)
  (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(100))[:20])
  with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
    data.load_mnist(str(tmp_path))
  (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(0x803, (4, 28, 28), bytes(4 * 784))))
  with pytest.raises(ValueError, match="4 images but .* 5 labels"):
    data.load_mnist(str(tmp_path))


# ------------------------------------------------------------------------------------------------ augmentation
def np_crop_flip(image: np.ndarray, pad: int, dy: int, dx: int, flipped: bool) -> np.ndarray:
  """Reference: zero-pad an HWC image by ``pad``, crop at (dy, dx) to the original size, maybe mirror."""
  h, w, _ = image.shape
  padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
  out = padded[dy:dy + h, dx:dx + w]
  return out[:, ::-1] if flipped else out


def recover_crops(x: np.ndarray, out: np.ndarray, pad: int) -> np.ndarray:
  """For each image, the (dy, dx, flipped) of the reference that reproduces it exactly, by trying all
  (2 pad + 1)^2 x 2; fails if none or more than one does (random float pixels make the match unique)."""
  found = []
  for image, result in zip(x, out):
    hits = [(dy, dx, f) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1) for f in (False, True)
            if np.array_equal(np_crop_flip(image, pad, dy, dx, f), result)]
    assert len(hits) == 1, hits
    found.append(hits[0])
  return np.asarray(found, np.int64)


def test_augment_shape_dtype_determinism(key, strict_dtypes):
  x = jax.random.normal(key, (6, 32, 32, 3), jnp.float32)
  out = random_crop_flip(key, x)
  assert out.shape == x.shape and out.dtype == x.dtype
  np.testing.assert_array_equal(out, random_crop_flip(key, x))
  assert not np.array_equal(out, random_crop_flip(jax.random.fold_in(key, 1), x))
  # Inside a caller's jit (as in a train step), with a raw uint32 key too.
  step = jax.jit(lambda k, images: random_crop_flip(k, images, pad=2) * 2.0)
  np.testing.assert_allclose(step(key, x), random_crop_flip(key, x, pad=2) * 2.0)
  raw_key = jax.random.PRNGKey(3)
  assert random_crop_flip(raw_key, x).shape == x.shape


def test_augment_pad_zero_without_flip_is_identity(key):
  x = np.random.default_rng(0).normal(size=(5, 9, 7, 2)).astype(np.float32)
  np.testing.assert_array_equal(random_crop_flip(key, jnp.asarray(x), pad=0, flip=False), x)
  # pad=0 with flips: each image is itself or its mirror.
  offsets = recover_crops(x, np.asarray(random_crop_flip(key, jnp.asarray(x), pad=0)), pad=0)
  assert np.all(offsets[:, :2] == 0)


@pytest.mark.parametrize("pad,flip", [(4, True), (2, False), (1, True)])
def test_augment_output_is_a_crop_of_the_padded_input(key, pad, flip):
  x = np.random.default_rng(pad).normal(size=(8, 10, 9, 3)).astype(np.float32)
  out = np.asarray(random_crop_flip(jax.random.fold_in(key, pad), jnp.asarray(x), pad=pad, flip=flip))
  crops = recover_crops(x, out, pad)
  if not flip:
    assert not crops[:, 2].any()


def test_augment_offsets_cover_the_range_and_flip_half(key):
  n, pad = 2000, 2
  x = np.random.default_rng(1).normal(size=(n, 4, 4, 1)).astype(np.float32)
  out = np.asarray(random_crop_flip(key, jnp.asarray(x), pad=pad))
  # Vectorised exhaustive search: out[i] against all 25 offsets x 2 flips of image i.
  padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  windows = np.lib.stride_tricks.sliding_window_view(padded, (4, 4), axis=(1, 2))  # n, dy, dx, C, 4, 4
  windows = np.moveaxis(windows, 3, -1)  # n, dy, dx, 4, 4, C
  candidates = np.stack([windows, windows[..., ::-1, :]], axis=3)  # n, dy, dx, flip, 4, 4, C
  match = np.all(candidates == out[:, None, None, None], axis=(-3, -2, -1))
  assert np.all(match.sum(axis=(1, 2, 3)) == 1)
  i, dy, dx, flipped = np.nonzero(match)
  assert np.array_equal(i, np.arange(n))
  # Every one of the 25 offset pairs occurs: each has p = 1/25, so P(one is missing) <= 25 (24/25)^2000 ~ 1e-34.
  assert len(set(zip(dy.tolist(), dx.tolist()))) == (2 * pad + 1) ** 2
  # Flips ~ Binomial(n, 1/2): |freq - 1/2| <= 4 sigma, sigma = sqrt(1/4 / n) ~ 0.011 (false alarm ~6e-5).
  assert abs(flipped.mean() - 0.5) <= 4 * np.sqrt(0.25 / n), flipped.mean()
  # Offsets uniform on 0..2 pad per axis: each of the 5 values within 4 sigma of n/5.
  for axis in (dy, dx):
    freq = np.bincount(axis, minlength=2 * pad + 1) / n
    assert np.all(np.abs(freq - 0.2) <= 4 * np.sqrt(0.2 * 0.8 / n)), freq


# ------------------------------------------------------------------------------------------ Fashion-MNIST
def test_fashion_mnist_reads_the_idx_files_of_a_folder(tmp_path):
  arrays = mnist_arrays(seed=3)
  ds = data.load_fashion_mnist(str(write_mnist(tmp_path, arrays, gz=(True,) * 4)))
  assert (ds.name, ds.num_classes, ds.input_shape) == ("fashion_mnist", 10, (28, 28, 1))
  np.testing.assert_array_equal(ds.x_train[..., 0], arrays["train"][0].astype(np.float32) / 255.0)
  np.testing.assert_array_equal(ds.y_test, arrays["t10k"][1])


def test_fashion_mnist_default_folder_is_debians_package(monkeypatch, tmp_path):
  assert data.FASHION_MNIST_ROOT == "/usr/share/datasets/fashion-mnist"
  monkeypatch.setattr(idx, "FASHION_MNIST_ROOT", str(write_mnist(tmp_path / "pkg", mnist_arrays())))
  assert len(data.load_fashion_mnist().x_train) == 5  # root=None reads the package folder


def test_fashion_mnist_missing_is_one_sentence_with_the_folder_and_the_apt_command(monkeypatch, tmp_path):
  missing = tmp_path / "nowhere"
  monkeypatch.setattr(idx, "FASHION_MNIST_ROOT", str(missing))
  for root in (None, str(missing)):
    with pytest.raises(FileNotFoundError) as e:
      data.load_fashion_mnist(root)
    text = str(e.value)
    for part in [str(missing), "apt-get install dataset-fashion-mnist", "dataset.root=", *MNIST_NAMES]:
      assert part in text, part
    assert text.count(". ") <= 1 and "\n" not in text


def test_load_shared_loads_once_per_config_and_read_only():
  from nas.train import datasets
  a = datasets.load_shared("digits", test_fraction=0.25, split_seed=0)
  assert datasets.load_shared("digits", split_seed=0, test_fraction=0.25) is a  # the same fields, any order
  assert datasets.load_shared("digits", test_fraction=0.25, split_seed=1) is not a
  with pytest.raises(ValueError, match="read-only"):
    a.x_train[0] = 0
