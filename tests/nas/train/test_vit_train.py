"""A few optimiser steps of the ViT supernet (nas/models/vit.py) on random data lower the loss, for Gumbel and
SDQ bit choices, and reach every kind of architecture parameter. Tiny shapes; one compiled step per method."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from nas.ops.choices import ArchParam
from nas.models import build_model
from nas.models.space import SearchSpace
from nas.train.finetune import calibrate, cross_entropy

# As in test_vit.py: 8x8 images, patch 4 (5 tokens), embed 16, 2 heads, MLP 32, one block.
TINY = dict(num_classes=4, input_shape=(8, 8, 1), patch=4, embed=16, heads=2, mlp=32, depth=1, mlp_groups=4)


@pytest.mark.parametrize("method", ["gumbel", "sdq"])
def test_a_few_steps_lower_the_loss_and_reach_the_arch_params(method):
  """Adam on the weights, one sampled architecture (a fixed key) on one batch: the loss falls; the same
  backward pass gives every architecture parameter a finite gradient, not all zero."""
  space = SearchSpace(w_bits=(2, 4, 8), a_bits=(4, 8), width_mults=(0.5, 1.0), method=method)
  model = build_model("vit", space, **TINY)
  x = jnp.asarray(np.random.default_rng(1).uniform(0, 1, (16, 8, 8, 1)), jnp.float32)
  y = jnp.asarray(np.arange(16) % 4)
  calibrate(model, x, mode="expected")  # LSQ activation steps from the data, as the search starts
  opt = nnx.Optimizer(model, optax.adam(5e-3), wrt=nnx.Param)
  wrt = nnx.DiffState(0, nnx.Any(nnx.Param, ArchParam))

  @nnx.jit
  def step(model, opt):
    def loss_fn(model):
      return cross_entropy(model(x, mode="sample", key=jax.random.key(3)), y)
    loss, grads = nnx.value_and_grad(loss_fn, argnums=wrt)(model)
    opt.update(model, grads.filter(nnx.Param))
    return loss, grads.filter(ArchParam)

  losses = []
  for _ in range(25):
    loss, arch_grads = step(model, opt)
    losses.append(float(loss))
  assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.1, losses
  leaves = jax.tree.leaves(arch_grads)
  assert leaves and all(bool(jnp.all(jnp.isfinite(l))) for l in leaves)
  assert sum(float(jnp.sum(jnp.abs(l))) for l in leaves) > 0
