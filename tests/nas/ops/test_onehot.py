"""The one-candidate quantiser path (OneHot weights) gives exactly the values and gradients of the full mix.

Reference: the same network with every quantiser given the dense weights (``OneHot.dense``), which quantises at
every candidate and mixes them (sum_j w_j Q_j(x)); autodiff of that sum is the reference gradient.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas.ops.choices import OneHot
from nas.models import build_model
from nas.models.space import SearchSpace
from nas.train.finetune import calibrate


@pytest.mark.parametrize("method", ["gumbel", "sdq"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_onehot_path_equals_full_mix(method, per_channel, onehot_matches_full_mix):
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
  onehot_matches_full_mix(model, x)


def test_onehot_dense_puts_weights_at_their_candidates():
  w = OneHot(jnp.asarray([[1, 2], [0, 1]]), jnp.asarray([1, 0]), jnp.asarray([[0.0, 1.0], [1.0, 0.0]]))
  np.testing.assert_array_equal(np.asarray(w.dense(3)), [[0, 0, 1], [1, 0, 0]])
