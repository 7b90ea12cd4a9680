"""Datasets as NumPy arrays (NHWC float32 images, int32 labels), and a mini-batch stream.

The bundled default is scikit-learn's 8x8 digits (no network). CIFAR-10 and MNIST read local folders;
Fashion-MNIST reads the folder of Debian's dataset-fashion-mnist package by default.
"""
from __future__ import annotations

import dataclasses
import gzip
import io
import pathlib
import pickle
import struct
import tarfile
import zlib
from typing import Iterator

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.x_train.shape[1:])


def load_digits(test_fraction: float = 0.3, seed: int = 0, limit: int | None = None) -> Dataset:
  """scikit-learn's 1,797 8x8 digits, pixels scaled to [0, 1], a stratified train/test split fixed by ``seed``.

  Args:
    test_fraction: share of the images held out for the test accuracy.
    seed: the split's seed (keep it fixed across a sweep so every job is scored on the same images).
    limit: keep only this many training and test images each (for debug runs).
  """
  from sklearn.datasets import load_digits as sk_load_digits
  from sklearn.model_selection import train_test_split

  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"dataset.test_fraction={test_fraction} must be in (0, 1).")
  d = sk_load_digits()
  x = (d.images.astype(np.float32) / 16.0)[..., None]
  y = d.target.astype(np.int32)
  x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
  if limit is not None:
    x_tr, y_tr, x_te, y_te = x_tr[:limit], y_tr[:limit], x_te[:limit], y_te[:limit]
  return Dataset("digits", x_tr, y_tr, x_te, y_te, 10)


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Endless shuffled mini-batches of exactly ``batch_size`` (one new permutation per epoch)."""
  n = len(x)
  if n == 0:
    raise ValueError("the training set is empty.")
  batch_size = min(batch_size, n)
  rng = np.random.default_rng(seed)
  while True:
    perm = rng.permutation(n)
    for i in range(0, n - batch_size + 1, batch_size):
      idx = perm[i:i + batch_size]
      yield x[idx], y[idx]


# ------------------------------------------------------------------------------------------------ CIFAR-10
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
# Per-channel (R, G, B) mean and std over all pixels of the 50,000 CIFAR-10 training images scaled to [0, 1]:
# (0.49140, 0.48216, 0.44653) and (0.24703, 0.24349, 0.26159), as recomputed in kuangliu/pytorch-cifar issue 19
# and akamaster/pytorch_resnet_cifar10 issue 9 (not recomputed here: no copy of the data offline). The std
# (0.2023, 0.1994, 0.2010) often copied with this mean is the mean of per-image stds, not the training-set std.
CIFAR10_MEAN = np.asarray([0.4914, 0.4822, 0.4465], np.float32)
CIFAR10_STD = np.asarray([0.2470, 0.2435, 0.2616], np.float32)


class _ArrayUnpickler(pickle.Unpickler):
  """Unpickles plain data and NumPy arrays only: a pickle names functions that loading it calls, so a file
  that names anything else is refused rather than run (the CIFAR batches hold a dict of bytes, lists and one
  uint8 array)."""

  # numpy.core is numpy 1.x's name (the distributed CIFAR files use it); numpy 2 calls it numpy._core.
  ALLOWED = {("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype"),
             ("numpy._core.numeric", "_frombuffer"),  # arrays in protocol 5
             ("_codecs", "encode")}  # bytes in a protocol-2 pickle written by Python 3

  def find_class(self, module, name):
    module = module.replace("numpy.core", "numpy._core", 1) if module.startswith("numpy.core") else module
    if (module, name) not in self.ALLOWED:
      raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only NumPy arrays are expected)")
    return super().find_class(module, name)


def _cifar10_batch(blob: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
  """One pickled batch -> (uint8 images N x 32 x 32 x 3, int32 labels); ``where`` names it in errors."""
  try:
    d = _ArrayUnpickler(io.BytesIO(blob), encoding="bytes").load()
  except Exception as e:  # noqa: BLE001 - any unpickling failure means the file is not a CIFAR batch
    raise ValueError(f"{where}: not a CIFAR-10 python batch ({type(e).__name__}: {e}).") from e
  if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
    raise ValueError(f"{where}: not a CIFAR-10 python batch (expected a dict with b'data' and b'labels').")
  data, labels = np.asarray(d[b"data"]), np.asarray(d[b"labels"])
  if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
    raise ValueError(f"{where}: b'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072).")
  if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{where}: {labels.shape} b'labels' for {len(data)} images.")
  if labels.size and (labels.min() < 0 or labels.max() > 9):
    raise ValueError(f"{where}: labels outside 0..9 (min {labels.min()}, max {labels.max()}).")
  # Each row is the R plane, then G, then B, each 32 x 32 row-major: (N, C, H, W) -> NHWC.
  return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype(np.int32)


def _cifar10_source(root: str) -> pathlib.Path:
  """The batches folder or the archive under ``root``; raises FileNotFoundError naming what was looked for."""
  path = pathlib.Path(root).expanduser()
  names = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)
  if path.is_file() and path.name.endswith(".tar.gz"):
    return path
  for folder in (path, path / CIFAR10_DIR):
    if all((folder / n).is_file() for n in names):
      return folder
  if (path / CIFAR10_ARCHIVE).is_file():
    return path / CIFAR10_ARCHIVE
  raise FileNotFoundError(
      f"CIFAR-10 not found in {path}: expected {', '.join(names)} there or in {path / CIFAR10_DIR}, "
      f"or the archive {path / CIFAR10_ARCHIVE} (as distributed at https://www.cs.toronto.edu/~kriz/cifar.html). "
      f"Point the loader at the folder with dataset.root=/path/to/folder.")


def _read_cifar10_archive(archive: pathlib.Path) -> dict[str, bytes]:
  """The six batches' bytes, read from the .tar.gz in one streaming pass (nothing is extracted to disk)."""
  wanted = {f"{CIFAR10_DIR}/{n}": n for n in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)}
  blobs = {}
  try:
    with tarfile.open(archive, "r|gz") as tar:
      for member in tar:
        name = wanted.get(member.name.removeprefix("./"))
        if name is not None and member.isfile():
          blobs[name] = tar.extractfile(member).read()
  except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
    raise ValueError(f"{archive}: not a readable .tar.gz ({type(e).__name__}: {e}).") from e
  missing = [m for m, n in wanted.items() if n not in blobs]
  if missing:
    raise ValueError(f"{archive}: the archive lacks {', '.join(missing)}.")
  return blobs


def load_cifar10(root: str | None, limit: int | None = None, normalize: bool = True) -> Dataset:
  """CIFAR-10 from a local copy: the standard 50,000 training and 10,000 test 32x32 RGB images, NHWC.

  ``root`` is the extracted ``cifar-10-batches-py`` folder, its parent, the ``cifar-10-python.tar.gz``
  archive, or a folder holding that archive (read in memory in one pass, nothing written to disk; the
  extracted folder is preferred when both are there, as it loads faster). The split is the distributed one,
  so ``test_fraction`` and ``split_seed`` play no part.

  Args:
    root: where the data is (see above). None raises FileNotFoundError.
    limit: keep only the first ``limit`` training and test images each (for debug runs).
    normalize: subtract the per-channel training-set mean and divide by its std (CIFAR10_MEAN, CIFAR10_STD);
      otherwise pixels are scaled to [0, 1].

  Raises:
    FileNotFoundError: root is None or holds neither the batches nor the archive (before reading anything).
    ValueError: a batch or the archive is corrupt (the message names it).

  References: Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009.
  """
  if root is None:
    raise FileNotFoundError(
        f"dataset.root must be set for CIFAR-10: the folder holding {CIFAR10_DIR}/ (data_batch_1..5, "
        f"test_batch) or {CIFAR10_ARCHIVE}, e.g. dataset.root=/path/to/folder.")
  _check_limit(limit)
  source = _cifar10_source(root)
  archived = _read_cifar10_archive(source) if source.is_file() else None

  def batch(name):
    if archived is not None:
      return _cifar10_batch(archived[name], f"{source}:{CIFAR10_DIR}/{name}")
    return _cifar10_batch((source / name).read_bytes(), str(source / name))

  def read(names):
    xs, ys, count = [], [], 0
    for n in names:
      if limit is not None and count >= limit:
        break  # the batches are read in order, so a debug run reads only the first
      x, y = batch(n)
      xs.append(x)
      ys.append(y)
      count += len(x)
    x, y = np.concatenate(xs), np.concatenate(ys)
    return (x, y) if limit is None else (x[:limit], y[:limit])

  (x_tr, y_tr), (x_te, y_te) = read(CIFAR10_TRAIN_FILES), read([CIFAR10_TEST_FILE])
  return Dataset("cifar10", _cifar10_float(x_tr, normalize), y_tr, _cifar10_float(x_te, normalize), y_te, 10)


def _cifar10_float(x: np.ndarray, normalize: bool) -> np.ndarray:
  x = x.astype(np.float32) / np.float32(255.0)
  if normalize:
    x -= CIFAR10_MEAN
    x /= CIFAR10_STD
  return x


# ------------------------------------------------------------------------------------------------ MNIST
MNIST_FILES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
               "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}
IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte data, 3 dimensions (N, rows, cols)
IDX_LABELS_MAGIC = 0x00000801  # unsigned byte data, 1 dimension (N,)


def _read_idx(path: pathlib.Path, magic: int) -> np.ndarray:
  """An IDX file (optionally gzipped) as a uint8 array: big-endian magic, then one big-endian uint32 per dim."""
  try:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
  except (OSError, EOFError, zlib.error) as e:
    raise ValueError(f"{path}: not a readable gzip file ({type(e).__name__}: {e}).") from e
  ndim = magic & 0xFF
  if len(raw) < 4 + 4 * ndim:
    raise ValueError(f"{path}: {len(raw)} bytes, shorter than an IDX header.")
  (found,) = struct.unpack(">I", raw[:4])
  if found != magic:
    raise ValueError(f"{path}: IDX magic number {found:#010x}, expected {magic:#010x}.")
  dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
  size = int(np.prod(dims))
  if len(raw) - 4 - 4 * ndim != size:
    raise ValueError(f"{path}: the header says {dims} = {size} bytes of data, "
                     f"the file holds {len(raw) - 4 - 4 * ndim}.")
  return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_mnist(root: str | None, limit: int | None = None) -> Dataset:
  """MNIST from its four IDX files in ``root`` (each plain or ``.gz``): 60,000 training and 10,000 test
  28x28 grey images, pixels scaled to [0, 1], shape (N, 28, 28, 1). The split is the distributed one.

  Args:
    root: the folder holding the four files. None raises FileNotFoundError.
    limit: keep only the first ``limit`` training and test images each (for debug runs).

  Raises:
    FileNotFoundError: root is None or a file is missing (checked for all four before reading any).
    ValueError: a file is corrupt: wrong magic number, sizes that disagree, labels outside 0..9.

  References: LeCun, Bottou, Bengio, Haffner, Gradient-Based Learning Applied to Document Recognition, 1998.
  """
  expected = ", ".join(f"{n}[.gz]" for n in MNIST_FILES.values())
  if root is None:
    raise FileNotFoundError(f"dataset.root must be set for MNIST: the folder holding {expected}, "
                            f"e.g. dataset.root=/path/to/folder.")
  return _load_idx_dataset("mnist", "MNIST", root, limit,
                           "as distributed by http://yann.lecun.com/exdb/mnist/). Point the loader at the folder "
                           "with dataset.root=/path/to/folder.")


# Where Debian's dataset-fashion-mnist package installs the four IDX files (gzipped).
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"


def load_fashion_mnist(root: str | None = None, limit: int | None = None) -> Dataset:
  """Fashion-MNIST: 60,000 training and 10,000 test 28x28 grey images of 10 kinds of clothing, in MNIST's IDX
  format and file names (plain or ``.gz``), pixels scaled to [0, 1], the distributed split.

  Args:
    root: the folder of the four files; None reads ``FASHION_MNIST_ROOT``, where Debian's
      ``dataset-fashion-mnist`` package puts them.
    limit: keep only the first ``limit`` training and test images each (for debug runs).

  Raises:
    FileNotFoundError: a file is missing: one sentence with the folder and how to install or point to it.
    ValueError: a file is corrupt.

  References: Xiao, Rasul, Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning
  Algorithms", arXiv 1708.07747, 2017.
  """
  folder = root if root is not None else FASHION_MNIST_ROOT
  return _load_idx_dataset(
      "fashion_mnist", "Fashion-MNIST", folder, limit,
      f"install them with `apt-get install dataset-fashion-mnist` (it puts them in {FASHION_MNIST_ROOT}, the "
      f"default), or point to a folder holding them with dataset.root=/path/to/folder).")


def _load_idx_dataset(name: str, title: str, root: str, limit: int | None, how_to_fix: str) -> Dataset:
  """Four MNIST-format IDX files in ``root`` -> Dataset; every file is looked for before any is read."""
  expected = ", ".join(f"{n}[.gz]" for n in MNIST_FILES.values())
  _check_limit(limit)
  folder = pathlib.Path(root).expanduser()
  paths = {}
  for part, fname in MNIST_FILES.items():
    found = [folder / n for n in (fname, f"{fname}.gz") if (folder / n).is_file()]
    paths[part] = found[0] if found else None
  missing = [f"{MNIST_FILES[p]}[.gz]" for p, path in paths.items() if path is None]
  if missing:
    raise FileNotFoundError(
        f"{title} not found in {folder}: expected {expected} there (missing {', '.join(missing)}; {how_to_fix}")

  def split(images_part, labels_part):
    x, y = _read_idx(paths[images_part], IDX_IMAGES_MAGIC), _read_idx(paths[labels_part], IDX_LABELS_MAGIC)
    if x.shape[1:] != (28, 28):
      raise ValueError(f"{paths[images_part]}: images are {x.shape[1]}x{x.shape[2]}, expected 28x28.")
    if len(x) != len(y):
      raise ValueError(f"{paths[images_part]} holds {len(x)} images but {paths[labels_part]} {len(y)} labels.")
    if y.size and y.max() > 9:
      raise ValueError(f"{paths[labels_part]}: label {y.max()} outside 0..9.")
    if limit is not None:
      x, y = x[:limit], y[:limit]
    return (x.astype(np.float32) / np.float32(255.0))[..., None], y.astype(np.int32)

  (x_tr, y_tr), (x_te, y_te) = split("x_train", "y_train"), split("x_test", "y_test")
  return Dataset(name, x_tr, y_tr, x_te, y_te, 10)


def _check_limit(limit: int | None) -> None:
  if limit is not None and limit < 1:
    raise ValueError(f"dataset.limit={limit} must be a positive number of images, or null for all.")
