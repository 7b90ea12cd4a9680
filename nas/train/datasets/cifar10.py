"""CIFAR-10 from a local copy (the extracted folder or the distributed archive)."""
from __future__ import annotations

import io
import pathlib
import pickle
import tarfile
import zlib

import numpy as np

from nas.train.data import Dataset
from nas.train.datasets import register
from nas.train.datasets.idx import _check_limit


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


@register("cifar10")
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
