"""SDQ's two-candidate path (Pair) gives exactly the values and gradients of mixing every candidate."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nas.choices import ArchParam
from nas.models import build_model
from nas.space import SearchSpace


def _loss(model, x, use_pair):
  arch = {}
  names = list(model.choices.keys())
  for name, key in zip(names, jax.random.split(jax.random.key(3), len(names))):
    choice = model.choices[name]
    pair = use_pair and hasattr(choice, "pair_weights")
    arch[name] = choice.pair_weights("sample", key) if pair else choice.mixing_weights("sample", key)
  h = x
  for conv, bn, wkey in zip(model.convs, model.bns, model.width_keys):
    h = model.mask(jax.nn.relu(bn(conv(h, arch))), wkey, arch)
  return jnp.sum(model.head(h.mean((1, 2)), arch) ** 2)


@pytest.mark.parametrize("per_channel", [False, True])
def test_pair_path_equals_full_mix(per_channel):
  model = build_model("digits_cnn", SearchSpace(method="sdq", per_channel_w=per_channel), widths=(8, 16),
                      strides=(1, 2))
  rng = np.random.default_rng(0)
  for choice in model.choices.values():
    if hasattr(choice, "pair_weights") and not choice.fixed:  # beta strictly between candidates
      choice.logits[...] = jnp.asarray(rng.uniform(2.0, 8.0, choice.logits[...].shape), jnp.float32)
  model.eval()
  x = jnp.asarray(rng.uniform(0, 1, (4, 8, 8, 1)), jnp.float32)
  wrt = nnx.DiffState(0, nnx.Any(nnx.Param, ArchParam))
  full, g_full = nnx.value_and_grad(lambda m: _loss(m, x, False), argnums=wrt)(model)
  pair, g_pair = nnx.value_and_grad(lambda m: _loss(m, x, True), argnums=wrt)(model)
  assert float(full) == float(pair)
  for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_pair)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  # Not vacuous: the architecture parameters do get a gradient.
  assert any(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(g_pair.filter(ArchParam)))
