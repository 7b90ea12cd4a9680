"""N:M masks and SR-STE (nas/ops/sparsity.py) against a NumPy reference written from the definition: per output
column, groups of M consecutive reduction rows keep their N largest |w| (ties to the lower row)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas.ops import sparsity


def reference_mask(w: np.ndarray, n: int, m: int) -> np.ndarray:
  flat = np.abs(w.reshape(-1, w.shape[-1]))
  keep = np.zeros_like(flat)
  for col in range(flat.shape[1]):
    for start in range(0, flat.shape[0], m):
      rows = list(range(start, min(start + m, flat.shape[0])))
      ranked = sorted(rows, key=lambda r: (-flat[r, col], r))
      for r in ranked[:n]:
        keep[r, col] = 1.0
  return keep.reshape(w.shape)


@pytest.mark.parametrize("shape, n, m", [((16, 5), 2, 4), ((16, 3), 1, 4), ((10, 4), 2, 4), ((3, 3, 6, 2), 2, 8),
                                         ((7, 2), 3, 4)])
def test_mask_matches_reference_and_keeps_the_largest(shape, n, m):
  w = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  mask = np.asarray(sparsity.nm_mask(jnp.asarray(w), n, m))
  np.testing.assert_array_equal(mask, reference_mask(w, n, m))
  flat, fm = np.abs(w.reshape(-1, shape[-1])), mask.reshape(-1, shape[-1])
  full = flat.shape[0] // m * m
  groups = fm[:full].reshape(-1, m, shape[-1])
  assert (groups.sum(axis=1) == n).all()  # exactly N in every complete group
  g = flat[:full].reshape(-1, m, shape[-1])
  kept_min = np.where(groups == 1, g, np.inf).min(axis=1)
  pruned_max = np.where(groups == 0, g, -np.inf).max(axis=1)
  assert (kept_min >= pruned_max).all()
  if full < flat.shape[0]:  # a partial group of r rows keeps min(N, r)
    r = flat.shape[0] - full
    assert (fm[full:].sum(axis=0) == min(n, r)).all()


def test_partial_last_group_hand_checked():
  # 6 rows, 2:4: rows 0-3 are one group, rows 4-5 a partial group padded to 4 (keeps both: min(2, 2)).
  w = jnp.asarray([[0.1], [-0.9], [0.5], [0.2], [0.3], [-0.05]])
  np.testing.assert_array_equal(np.asarray(sparsity.nm_mask(w, 2, 4))[:, 0], [0, 1, 1, 0, 1, 1])
  # 1:4 in a partial group of 2 keeps the larger one only.
  np.testing.assert_array_equal(np.asarray(sparsity.nm_mask(w, 1, 4))[:, 0], [0, 1, 0, 0, 1, 0])


def test_ties_go_to_the_lower_row():
  w = jnp.asarray([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [0.5, 0.0]])
  mask = np.asarray(sparsity.nm_mask(w, 2, 4))
  np.testing.assert_array_equal(mask[:, 0], [1, 1, 0, 0])  # three equal magnitudes: rows 0 and 1
  np.testing.assert_array_equal(mask[:, 1], [1, 1, 0, 0])  # all zero: the first N


def test_sr_ste_gradient_hand_checked():
  # One column, 2:4. w = [0.1, -0.9, 0.5, 0.2] keeps rows 1, 2. Loss = sum(c * w_sparse), so g = c.
  w = jnp.asarray([[0.1], [-0.9], [0.5], [0.2]])
  c = jnp.asarray([[1.0], [2.0], [3.0], [4.0]])
  lam = 0.5
  out, grad = jax.value_and_grad(lambda w: jnp.sum(c * sparsity.sr_ste(w, 2, 4, lam)))(w)
  assert float(out) == pytest.approx(2.0 * -0.9 + 3.0 * 0.5)
  # kept: g; pruned: g + lambda * w -> [1 + 0.05, 2, 3, 4 + 0.1]
  np.testing.assert_allclose(np.asarray(grad)[:, 0], [1.05, 2.0, 3.0, 4.1], rtol=1e-6)


def test_sr_ste_matches_numpy_on_a_kernel():
  rng = np.random.default_rng(1)
  w = rng.normal(size=(12, 6)).astype(np.float32)
  c = rng.normal(size=(12, 6)).astype(np.float32)
  lam = 2e-4
  mask = reference_mask(w, 2, 4)
  grad = jax.grad(lambda w: jnp.sum(jnp.asarray(c) * sparsity.sr_ste(w, 2, 4, lam)))(jnp.asarray(w))
  np.testing.assert_allclose(np.asarray(grad), c + lam * (1 - mask) * w, rtol=1e-6, atol=1e-7)


def test_mix_patterns_one_hot_and_soft():
  w = jnp.asarray(np.random.default_rng(2).normal(size=(8, 3)).astype(np.float32))
  codes = (sparsity.DENSE, 204, 104)
  np.testing.assert_allclose(np.asarray(sparsity.mix_patterns(w, codes, jnp.asarray([0.0, 1.0, 0.0]))),
                             np.asarray(w) * reference_mask(np.asarray(w), 2, 4))
  soft = jnp.asarray([0.5, 0.3, 0.2])
  expect = np.asarray(w) * (0.5 + 0.3 * reference_mask(np.asarray(w), 2, 4) + 0.2 * reference_mask(np.asarray(w), 1, 4))
  np.testing.assert_allclose(np.asarray(sparsity.mix_patterns(w, codes, soft)), expect, rtol=1e-6)
  # The choice weights get <g, S_s(W)>.
  g = jax.grad(lambda p: jnp.sum(sparsity.mix_patterns(w, codes, p)))(soft)
  np.testing.assert_allclose(np.asarray(g), [float(jnp.sum(w)), float(jnp.sum(w * reference_mask(np.asarray(w), 2, 4))),
                                             float(jnp.sum(w * reference_mask(np.asarray(w), 1, 4)))], rtol=1e-5)


@pytest.mark.parametrize("drawn", [0, 1, 2])
def test_mix_patterns_onehot_matches_the_full_mix(drawn):
  """A OneHot (hard sample) computes only the drawn kernel forward; its values and the gradients of W and of
  every mixing weight are the full mix's, checked against a NumPy reference of the full mix's gradients:
  dL/dW = sum_s p_s (G + lambda (1 - mask_s) W) at one-hot p, dL/dp_s = <G, W mask_s>."""
  from nas.ops.choices import OneHot
  rng = np.random.default_rng(5)
  w = rng.normal(size=(10, 4)).astype(np.float32)  # 10 rows: a partial group of 2
  c = rng.normal(size=(10, 4)).astype(np.float32)  # dL/dW_eff of L = <c, W_eff>
  codes, lam = (104, 204, sparsity.DENSE), 1e-2
  masks = [reference_mask(w, 1, 4), reference_mask(w, 2, 4), np.ones_like(w)]
  logits = jnp.asarray([0.3, -0.2, 0.1])

  def loss(w, logits, onehot):
    y = jax.nn.softmax(logits)  # straight-through one-hot, as a hard Gumbel sample builds it
    y = y + jax.lax.stop_gradient(jax.nn.one_hot(drawn, 3) - y)
    weights = OneHot(jnp.arange(3), jnp.asarray(drawn), y) if onehot else y
    return jnp.sum(jnp.asarray(c) * sparsity.mix_patterns(w, codes, weights, lam))

  for onehot in (False, True):
    value = sparsity.mix_patterns(jnp.asarray(w), codes, OneHot(jnp.arange(3), jnp.asarray(drawn),
                                                                jax.nn.one_hot(drawn, 3)) if onehot else
                                  jax.nn.one_hot(drawn, 3), lam)
    np.testing.assert_allclose(np.asarray(value), w * masks[drawn], rtol=1e-6)
    gw, gl = jax.grad(loss, argnums=(0, 1))(jnp.asarray(w), logits, onehot)
    np.testing.assert_allclose(np.asarray(gw), c + lam * (1 - masks[drawn]) * w, rtol=1e-5, atol=1e-7)
    a = np.asarray([np.sum(c * w * m) for m in masks], np.float64)  # dL/dp_s
    p = np.exp(np.asarray(logits, np.float64)); p /= p.sum()
    np.testing.assert_allclose(np.asarray(gl), p * (a - np.sum(p * a)), rtol=1e-4, atol=1e-6)  # softmax's Jacobian


def test_mask_needs_a_kernel():
  with pytest.raises(ValueError, match="rank >= 2"):
    sparsity.nm_mask(jnp.ones(8), 2, 4)
