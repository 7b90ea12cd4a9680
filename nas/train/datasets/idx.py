"""MNIST and Fashion-MNIST from their IDX files (plain or gzipped) in a local folder."""
from __future__ import annotations

import gzip
import zlib
import pathlib
import struct

import numpy as np

from nas.train.data import Dataset
from nas.train.datasets import register


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


@register("mnist")
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


@register("fashion_mnist")
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
