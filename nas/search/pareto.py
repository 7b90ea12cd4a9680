"""Pareto fronts and 2-D hypervolume of (accuracy, cost) points: maximise accuracy, minimise cost.

Pure NumPy. A point j dominates a point i when it is at least as accurate and at most as costly, and strictly
better in one of the two. Points equal in both accuracy and cost do not dominate each other, so all copies of a
tied point stay on the front; they add nothing to the hypervolume (a zero-width strip).
Points with a NaN coordinate are never on the front and dominate nothing.
"""
from __future__ import annotations

import numpy as np


def _as_pair(accuracy, cost) -> tuple[np.ndarray, np.ndarray]:
  a = np.asarray(accuracy, dtype=np.float64)
  c = np.asarray(cost, dtype=np.float64)
  if a.ndim != 1 or a.shape != c.shape:
    raise ValueError(f"accuracy and cost must be 1-D of the same length; got shapes {a.shape} and {c.shape}.")
  return a, c


def non_dominated(accuracy, cost) -> np.ndarray:
  """Which points no other point dominates (higher accuracy is better, lower cost is better).

  Exact ties (equal accuracy and equal cost) are all kept: neither copy dominates the other, so the mask does not
  depend on the order of the points. ``pareto_front`` keeps them too; deduplicate afterwards if needed.

  Args:
    accuracy: shape (N,), to maximise.
    cost: shape (N,), to minimise.

  Returns:
    Boolean mask of shape (N,), True for points on the Pareto front. NaN points are False.

  References:
    Deb, "Multi-Objective Optimization using Evolutionary Algorithms", Wiley 2001, ch. 2 (Pareto dominance).
  """
  a, c = _as_pair(accuracy, cost)
  valid = ~(np.isnan(a) | np.isnan(c))
  # O(N^2) pairwise comparison: sweeps hold tens to hundreds of points, not millions.
  ge = a[None, :] >= a[:, None]  # [i, j]: j at least as accurate as i
  le = c[None, :] <= c[:, None]  # [i, j]: j at most as costly as i
  strict = (a[None, :] > a[:, None]) | (c[None, :] < c[:, None])
  dominates_i = ge & le & strict & valid[None, :]
  return valid & ~dominates_i.any(axis=1)


def front_indices(accuracy, cost) -> np.ndarray:
  """Indices of the non-dominated points, sorted by cost ascending (accuracy then ascends too).

  Args:
    accuracy: shape (N,), to maximise.
    cost: shape (N,), to minimise.

  Returns:
    Integer array of indices into the inputs; tied duplicates all appear, in input order.

  References:
    Deb, "Multi-Objective Optimization using Evolutionary Algorithms", Wiley 2001, ch. 2.
  """
  a, c = _as_pair(accuracy, cost)
  idx = np.flatnonzero(non_dominated(a, c))
  # Stable sort by cost, then accuracy descending; on a front equal cost implies equal accuracy anyway.
  order = np.lexsort((-a[idx], c[idx]))
  return idx[order]


def pareto_front(points) -> np.ndarray:
  """The Pareto front of (accuracy, cost) points, sorted by cost ascending.

  Args:
    points: array-like of shape (N, 2), columns (accuracy, cost).

  Returns:
    Array of shape (K, 2), columns (accuracy, cost), the non-dominated points sorted by cost ascending.

  References:
    Deb, "Multi-Objective Optimization using Evolutionary Algorithms", Wiley 2001, ch. 2.
  """
  p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
  return p[front_indices(p[:, 0], p[:, 1])]


def hypervolume_2d(accuracy, cost, ref_accuracy: float, ref_cost: float) -> float:
  """Area dominated by the points and bounded by the reference point (r_a below, r_c to the right).

  Only points with a > r_a and c < r_c count. Their front, sorted by cost ascending, gives
  HV = sum_i (a_i - a_{i-1}) * (r_c - c_i) with a_0 = r_a. Dominated points and points
  beyond the reference contribute nothing; no points give 0.

  Args:
    accuracy: shape (N,), to maximise.
    cost: shape (N,), to minimise.
    ref_accuracy: r_a, e.g. chance accuracy 1 / num_classes.
    ref_cost: r_c, e.g. the cost of the all-8-bit reference network. Fix it before running: a reference
      derived from the data is not comparable across runs.

  Returns:
    The hypervolume, in accuracy x cost units (>= 0).

  References:
    Zitzler & Thiele, "Multiobjective Optimization Using Evolutionary Algorithms - A Comparative Case Study",
    PPSN 1998 (the hypervolume indicator); Ishibuchi et al., "How to specify a reference point in
    hypervolume calculation", 2017 (choosing r).
  """
  a, c = _as_pair(accuracy, cost)
  if not (np.isfinite(ref_accuracy) and np.isfinite(ref_cost)):
    raise ValueError(f"reference point must be finite; got ({ref_accuracy}, {ref_cost}).")
  inside = (a > ref_accuracy) & (c < ref_cost)
  a, c = a[inside], c[inside]
  if a.size == 0:
    return 0.0
  idx = front_indices(a, c)
  a, c = a[idx], c[idx]
  a_prev = np.concatenate([[ref_accuracy], a[:-1]])
  return float(np.sum((a - a_prev) * (ref_cost - c)))
