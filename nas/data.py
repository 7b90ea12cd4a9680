"""Datasets as NumPy arrays (NHWC float32 images, int32 labels), and a mini-batch stream.

The bundled default is scikit-learn's 8x8 digits (no network). CIFAR-10 and MNIST read local folders.
"""
from __future__ import annotations

import dataclasses
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
