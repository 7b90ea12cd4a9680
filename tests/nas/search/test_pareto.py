"""Pareto dominance and 2-D hypervolume against hand-computed examples."""
import numpy as np
import pytest

from nas.search.pareto import front_indices, hypervolume_2d, non_dominated, pareto_front


def test_non_dominated_small_example_with_ties():
  #          0     1     2     3     4     5     6
  acc = [0.90, 0.95, 0.93, 0.95, 0.80, 0.97, 0.97]
  cost = [1.0, 2.0, 3.0, 2.0, 1.0, 4.0, 5.0]
  # 2 is dominated by 1 (less accurate, dearer); 4 by 0 (same cost, less accurate); 6 by 5 (same accuracy,
  # dearer). 1 and 3 are exact ties: neither dominates the other, both are kept.
  mask = non_dominated(acc, cost)
  np.testing.assert_array_equal(mask, [True, True, False, True, False, True, False])


def test_non_dominated_nan_is_never_on_the_front_and_dominates_nothing():
  mask = non_dominated([0.9, np.nan, 0.5], [1.0, 0.5, np.nan])
  np.testing.assert_array_equal(mask, [True, False, False])


def test_non_dominated_rejects_mismatched_shapes():
  with pytest.raises(ValueError, match="same length"):
    non_dominated([0.9, 0.8], [1.0])


def test_pareto_front_is_sorted_by_cost():
  pts = [(0.97, 4.0), (0.90, 1.0), (0.93, 3.0), (0.95, 2.0)]
  np.testing.assert_array_equal(pareto_front(pts), [[0.90, 1.0], [0.95, 2.0], [0.97, 4.0]])
  np.testing.assert_array_equal(front_indices([0.97, 0.90, 0.93, 0.95], [4.0, 1.0, 3.0, 2.0]), [1, 3, 0])


def test_hypervolume_three_point_front():
  # r = (r_a, r_c) = (0.1, 5.0). Front sorted by cost: (a, c) = (0.5, 1), (0.7, 2), (0.9, 4).
  # HV = (0.5 - 0.1) * (5 - 1) + (0.7 - 0.5) * (5 - 2) + (0.9 - 0.7) * (5 - 4)
  #    = 0.4 * 4 + 0.2 * 3 + 0.2 * 1 = 1.6 + 0.6 + 0.2 = 2.4
  acc = [0.7, 0.5, 0.9]
  cost = [2.0, 1.0, 4.0]
  assert hypervolume_2d(acc, cost, 0.1, 5.0) == pytest.approx(2.4)


def test_hypervolume_ignores_dominated_points_and_points_beyond_the_reference():
  acc = [0.5, 0.7, 0.9]
  cost = [1.0, 2.0, 4.0]
  extra_acc = acc + [0.6, 0.05, 0.99, 0.99, 0.7]
  # (0.6, 3) is dominated by (0.7, 2); (0.05, 0.5) is below r_a; (0.99, 5) sits on r_c, (0.99, 9) beyond it;
  # (0.7, 2) again is an exact tie.
  extra_cost = cost + [3.0, 0.5, 5.0, 9.0, 2.0]
  assert hypervolume_2d(extra_acc, extra_cost, 0.1, 5.0) == pytest.approx(2.4)


def test_hypervolume_single_point_and_empty():
  assert hypervolume_2d([0.6], [2.0], 0.1, 5.0) == pytest.approx(0.5 * 3.0)
  assert hypervolume_2d([], [], 0.1, 5.0) == 0.0
  assert hypervolume_2d([0.05], [1.0], 0.1, 5.0) == 0.0  # only a point below chance


def test_hypervolume_a_dominating_point_never_lowers_it():
  rng = np.random.default_rng(0)
  acc, cost = rng.uniform(0.1, 1.0, 20), rng.uniform(0.0, 1.0, 20)
  hv = hypervolume_2d(acc, cost, 0.1, 1.0)
  assert hv > 0
  assert hypervolume_2d(np.append(acc, 0.99), np.append(cost, 0.01), 0.1, 1.0) >= hv
  assert hypervolume_2d(acc, cost, 0.1, 1.0) <= (1.0 - 0.1) * (1.0 - 0.0)  # bounded by the box


def test_hypervolume_rejects_a_non_finite_reference():
  with pytest.raises(ValueError, match="finite"):
    hypervolume_2d([0.5], [1.0], 0.1, np.inf)
