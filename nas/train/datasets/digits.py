"""scikit-learn's bundled 8x8 digits (no network, no download)."""
from __future__ import annotations


import numpy as np

from nas.train.data import Dataset
from nas.train.datasets import register


@register("digits")
def load_digits(test_fraction: float = 0.3, split_seed: int = 0, limit: int | None = None) -> Dataset:
  """scikit-learn's 1,797 8x8 digits, pixels scaled to [0, 1], a stratified train/test split fixed by ``split_seed``.

  Args:
    test_fraction: share of the images held out for the test accuracy.
    split_seed: the split's seed (keep it fixed across a sweep so every job is scored on the same images).
    limit: keep only this many training and test images each (for debug runs).
  """
  from sklearn.datasets import load_digits as sk_load_digits
  from sklearn.model_selection import train_test_split

  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"dataset.test_fraction={test_fraction} must be in (0, 1).")
  d = sk_load_digits()
  x = (d.images.astype(np.float32) / 16.0)[..., None]
  y = d.target.astype(np.int32)
  x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=split_seed, stratify=y)
  if limit is not None:
    x_tr, y_tr, x_te, y_te = x_tr[:limit], y_tr[:limit], x_te[:limit], y_te[:limit]
  return Dataset("digits", x_tr, y_tr, x_te, y_te, 10)
