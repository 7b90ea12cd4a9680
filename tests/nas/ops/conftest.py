"""Shared checks of the quantised layers' tests."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nas.ops.choices import ArchParam, OneHot


def _loss(model, x, dense):
  """A digits_cnn forward pass with one Gumbel/SDQ draw; ``dense``: every quantiser given the dense weights
  (``OneHot.dense``: quantise at every candidate, then mix), the reference of the one-candidate path."""
  arch = model.mixing_weights("sample", jax.random.key(3), tau=0.7)
  if dense:
    arch = {n: w.dense(len(model.choices[n].values)) if isinstance(w, OneHot) else w for n, w in arch.items()}
  h = x
  for conv, bn, wkey in zip(model.convs, model.bns, model.width_keys):
    h = model.mask(jax.nn.relu(bn(conv(h, arch))), wkey, arch)
  return jnp.sum(model.head(h.mean((1, 2)), arch) ** 2)


def _onehot_matches_full_mix(model, x):
  """The one-candidate path gives the full mix's loss and every gradient (weights, steps, architecture), and the
  architecture parameters do get gradients (the check is not vacuous)."""
  wrt = nnx.DiffState(0, nnx.Any(nnx.Param, ArchParam))
  # Compiled (as in training): op-by-op differentiation of the supernet takes minutes on 2 cores.
  grads = lambda dense: nnx.jit(lambda m: nnx.value_and_grad(lambda m: _loss(m, x, dense), argnums=wrt)(m))(model)
  full, g_full = grads(True)
  fast, g_fast = grads(False)
  assert float(full) > 0
  np.testing.assert_allclose(float(fast), float(full), rtol=1e-6)
  for (path, a), (_, b) in zip(jax.tree.leaves_with_path(g_full), jax.tree.leaves_with_path(g_fast)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))
  assert any(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(g_fast.filter(ArchParam)))


@pytest.fixture
def onehot_matches_full_mix():
  return _onehot_matches_full_mix
