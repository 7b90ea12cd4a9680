"""The one-candidate quantiser path (OneHot weights) gives exactly the values and gradients of the full mix.

Reference: the same network with every quantiser given the dense weights (``OneHot.dense``), which quantises at
every candidate and mixes them (sum_j w_j Q_j(x)); autodiff of that sum is the reference gradient.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nas.ops.choices import ArchParam, OneHot
from nas.models import build_model
from nas.models.space import SearchSpace
from nas.train.finetune import calibrate


def _loss(model, x, dense):
  arch = model.mixing_weights("sample", jax.random.key(3), tau=0.7)
  if dense:
    arch = {n: w.dense(len(model.choices[n].values)) if isinstance(w, OneHot) else w for n, w in arch.items()}
  h = x
  for conv, bn, wkey in zip(model.convs, model.bns, model.width_keys):
    h = model.mask(jax.nn.relu(bn(conv(h, arch))), wkey, arch)
  return jnp.sum(model.head(h.mean((1, 2)), arch) ** 2)


@pytest.mark.parametrize("method", ["gumbel", "sdq"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_onehot_path_equals_full_mix(method, per_channel):
  space = SearchSpace(method=method, per_channel_w=per_channel, first_layer_bits=None, w_bits=(2, 3, 4, 8))
  model = build_model("digits_cnn", space, widths=(8, 16), strides=(1, 2))
  rng = np.random.default_rng(0)
  for choice in model.choices.values():  # logits / beta away from their initial values
    if not choice.fixed:
      shape = choice.logits[...].shape
      value = rng.uniform(2.0, 8.0, shape) if method == "sdq" and shape[-1:] != (4,) else rng.normal(size=shape)
      choice.logits[...] = jnp.asarray(value, jnp.float32)
  x = jnp.asarray(rng.uniform(0, 1, (4, 8, 8, 1)), jnp.float32)
  calibrate(model, x, mode="expected")  # LSQ steps from the data: no layer quantises everything to zero
  model.eval()
  arch = model.mixing_weights("sample", jax.random.key(3), tau=0.7)
  assert any(isinstance(w, OneHot) for w in arch.values())  # the fast path is the one under test
  wrt = nnx.DiffState(0, nnx.Any(nnx.Param, ArchParam))
  # Compiled (as in training): op-by-op differentiation of the supernet takes minutes on 2 cores.
  grads = lambda dense: nnx.jit(lambda m: nnx.value_and_grad(lambda m: _loss(m, x, dense), argnums=wrt)(m))(model)
  full, g_full = grads(True)
  fast, g_fast = grads(False)
  assert float(full) > 0
  np.testing.assert_allclose(float(fast), float(full), rtol=1e-6)
  for (path, a), (_, b) in zip(jax.tree.leaves_with_path(g_full), jax.tree.leaves_with_path(g_fast)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))
  # Not vacuous: the architecture parameters and the quantisers' steps do get gradients.
  assert any(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(g_fast.filter(ArchParam)))


def test_onehot_dense_puts_weights_at_their_candidates():
  w = OneHot(jnp.asarray([[1, 2], [0, 1]]), jnp.asarray([1, 0]), jnp.asarray([[0.0, 1.0], [1.0, 0.0]]))
  np.testing.assert_array_equal(np.asarray(w.dense(3)), [[0, 0, 1], [1, 0, 0]])
