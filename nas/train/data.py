"""A dataset as NumPy arrays (NHWC float32 images, int32 labels), and a mini-batch stream.

The loaders live in ``nas.train.datasets``, one module each, registered by name.
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
