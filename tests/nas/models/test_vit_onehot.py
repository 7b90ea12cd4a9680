"""The ViT supernet's one-candidate quantiser path (OneHot weights, expanded per group, with a pruned 0-bit
candidate) gives exactly the values and gradients of the full mix, as tests/nas/test_onehot.py checks for the CNN.
Reference: every quantiser given the dense weights (``OneHot.dense``), autodiff of sum_j w_j Q_j(x)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nas.ops.choices import ArchParam, OneHot, SDQChoice
from nas.models import build_model
from nas.models.space import SearchSpace
from nas.train.finetune import calibrate


@pytest.mark.parametrize("method", ["gumbel", "sdq"])
def test_vit_onehot_path_equals_full_mix(method):
  """The whole ViT supernet (group bits with a pruned candidate, heads, N:M, matmul operand bits): one-candidate
  quantisers give the values and gradients of quantising at every candidate and mixing (``OneHot.dense``)."""
  space = SearchSpace(w_bits=(2, 4, 8), a_bits=(4, 8), width_mults=(0.5, 1.0), method=method)
  model = build_model("vit", space, num_classes=3, input_shape=(8, 8, 1), patch=4, embed=16, heads=2, mlp=16,
                      depth=1, mlp_groups=2)
  rng = np.random.default_rng(0)
  for choice in model.choices.values():
    if not choice.fixed:
      shape = choice.logits[...].shape
      sdq = isinstance(choice, SDQChoice)
      choice.logits[...] = jnp.asarray(rng.uniform(0.0, 8.0, shape) if sdq else rng.normal(size=shape), jnp.float32)
  x = jnp.asarray(rng.uniform(0, 1, (4, 8, 8, 1)), jnp.float32)
  calibrate(model, x, mode="expected")

  def loss(m, dense):
    arch = m.mixing_weights("sample", jax.random.key(3), tau=0.7)
    if dense:
      arch = {n: w.dense(len(m.choices[n].values)) if isinstance(w, OneHot) else w for n, w in arch.items()}
    return jnp.sum(m.forward(x, arch) ** 2)

  arch = model.mixing_weights("sample", jax.random.key(3), tau=0.7)
  drawn = arch["blocks.0.mlp.fc1.w_bits"]
  assert isinstance(drawn, OneHot)
  wrt = nnx.DiffState(0, nnx.Any(nnx.Param, ArchParam))
  grads = lambda dense: nnx.jit(lambda m: nnx.value_and_grad(lambda m: loss(m, dense), argnums=wrt)(m))(model)
  full, g_full = grads(True)
  fast, g_fast = grads(False)
  np.testing.assert_allclose(float(fast), float(full), rtol=1e-5)
  for (path, a), (_, b) in zip(jax.tree.leaves_with_path(g_full), jax.tree.leaves_with_path(g_fast)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5, err_msg=jax.tree_util.keystr(path))
  assert any(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(g_fast.filter(ArchParam)))
