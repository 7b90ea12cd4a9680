"""Sub-group weight bit-widths with prunable groups (AQ-BERT) and N:M choices in a token-wise linear QLayer,
against a NumPy re-implementation: per output column c of group g = c // group_size, signed LSQ at the group's
bit-width b (round(clip(w / s_c, -2^(b-1), 2^(b-1) - 1)) s_c), or zeros and no bias when b = 0."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hardware.base import LayerSpec
from nas.ops.choices import CategoricalChoice, OneHot, SDQChoice, gumbel_softmax
from nas.ops.layers import PRUNED, ChoiceKeys, QLayer, expand_groups

BITS = (PRUNED, 2, 4)
CIN, COUT, GROUP, T = 8, 12, 4, 5  # 3 groups of 4 columns


def make_layer(bits=BITS, nm_codes=(), nm_key=None):
  spec = LayerSpec("linear", CIN, COUT, in_h=T, name="fc")
  layer = QLayer(spec, ChoiceKeys("w", "a", None, None, nm=nm_key), bits, None, True, rngs=nnx.Rngs(0),
                 group_size=GROUP, nm_codes=nm_codes)
  layer.bias[...] = jnp.asarray(np.linspace(-1, 1, COUT), jnp.float32)
  return layer


def np_quantize_columns(w, steps, bits, col_bits):
  """steps: (live candidates, cout) in the order of the non-zero ``bits``; col_bits: bits per column."""
  live = [b for b in bits if b != 0]
  out = np.zeros_like(w)
  for c, b in enumerate(col_bits):
    if b == 0:
      continue
    s = steps[live.index(b), c]
    out[:, c] = np.round(np.clip(w[:, c] / s, -2.0 ** (b - 1), 2.0 ** (b - 1) - 1)) * s
  return out


def np_forward(layer, x, group_probs):
  """sum_j p[g, j] Q_j(W) per column, bias times (1 - p[g, PRUNED]); ``group_probs`` (G, len(BITS))."""
  w = np.asarray(layer.kernel[...])
  steps = np.asarray(layer.wq.step[...])
  wq = np.zeros_like(w)
  keep = np.zeros(COUT, np.float32)
  for j, b in enumerate(BITS):
    col_p = np.repeat(group_probs[:, j], GROUP)[:COUT]
    wq += col_p * np_quantize_columns(w, steps, BITS, [b] * COUT)
    if b != 0:
      keep += col_p
  return x @ wq + np.asarray(layer.bias[...]) * keep


def arch_of(weights):
  return {"w": weights, "a": jnp.ones((1,), jnp.float32)}


def test_hard_group_bits_and_a_pruned_group_match_numpy():
  layer = make_layer()
  x = np.random.default_rng(0).normal(size=(2, T, CIN)).astype(np.float32)
  idx = np.asarray([2, 0, 1])  # groups at 4 bits, pruned, 2 bits
  onehot = np.eye(len(BITS), dtype=np.float32)[idx]
  expect = np_forward(layer, x, onehot)
  assert np.all(expect[..., GROUP:2 * GROUP] == 0)  # the pruned group: zero output, bias included
  dense = np.asarray(layer(jnp.asarray(x), arch_of(jnp.asarray(onehot))))
  fast = np.asarray(layer(jnp.asarray(x), arch_of(OneHot(jnp.broadcast_to(jnp.arange(3), (3, 3)), jnp.asarray(idx),
                                                           jnp.asarray(onehot)))))
  np.testing.assert_allclose(dense, expect, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(fast, expect, rtol=1e-5, atol=1e-6)
  assert np.all(fast[..., GROUP:2 * GROUP] == 0)


def test_soft_group_mix_matches_numpy():
  layer = make_layer()
  x = np.random.default_rng(1).normal(size=(2, T, CIN)).astype(np.float32)
  p = np.random.default_rng(2).dirichlet(np.ones(len(BITS)), size=3).astype(np.float32)
  out = np.asarray(layer(jnp.asarray(x), arch_of(jnp.asarray(p))))
  np.testing.assert_allclose(out, np_forward(layer, x, p), rtol=1e-5, atol=1e-6)


def test_pruned_candidate_has_no_step():
  layer = make_layer()
  assert layer.wq.step[...].shape == (2, COUT)  # 2 and 4 bits only


@pytest.mark.parametrize("nm", [False, True])
def test_onehot_path_gradients_equal_the_full_mix(nm):
  """Hard Gumbel group samples: the one-candidate path gives the full mix's values and gradients (kernel,
  bias, steps, logits), with a pruned candidate among them."""
  codes = (0, 204, 104) if nm else ()
  layer = make_layer(nm_codes=codes, nm_key="nm" if nm else None)
  x = jnp.asarray(np.random.default_rng(3).normal(size=(2, T, CIN)).astype(np.float32))
  logits = np.random.default_rng(4).normal(size=(3, len(BITS))).astype(np.float32)
  logits[1, 0] += 20.0  # group 1 drawn pruned, the others not
  logits[[0, 2], 0] -= 20.0
  logits = jnp.asarray(logits)
  nm_w = jnp.asarray([0.0, 1.0, 0.0]) if nm else None

  graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

  def loss(params, logits, dense):
    m = nnx.merge(graphdef, params, rest)
    y = gumbel_softmax(jax.random.key(5), logits, 0.7, hard=True)
    w = y if dense else OneHot(jnp.broadcast_to(jnp.arange(3), (3, 3)), jnp.argmax(y, -1), y)
    arch = {**arch_of(w), "nm": nm_w}
    return jnp.sum(m(x, arch) ** 2)

  full = jax.value_and_grad(loss, argnums=(0, 1))(params, logits, True)
  fast = jax.value_and_grad(loss, argnums=(0, 1))(params, logits, False)
  np.testing.assert_allclose(float(fast[0]), float(full[0]), rtol=1e-6)
  for a, b in zip(jax.tree.leaves(full[1]), jax.tree.leaves(fast[1])):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-5, atol=1e-6)
  assert float(jnp.max(jnp.abs(fast[1][1]))) > 0


def test_sdq_group_choice_with_a_pruned_candidate():
  """SDQ over (0, 2, 4): beta between 0 and 2 draws 'pruned' or 2 bits; the drawn bits per group match NumPy."""
  layer = make_layer()
  choice = SDQChoice(BITS, channels=3)
  choice.logits[...] = jnp.asarray([0.5, 3.0, 4.0])
  w = choice.quantizer_weights("sample", jax.random.key(0))
  drawn_bits = [BITS[int(c[d])] for c, d in zip(np.asarray(w.cands), np.asarray(w.drawn))]
  x = np.random.default_rng(6).normal(size=(2, T, CIN)).astype(np.float32)
  out = np.asarray(layer(jnp.asarray(x), arch_of(w)))
  col_bits = np.repeat(drawn_bits, GROUP)
  expect = x @ np_quantize_columns(np.asarray(layer.kernel[...]), np.asarray(layer.wq.step[...]), BITS, col_bits)
  expect = expect + np.asarray(layer.bias[...]) * (col_bits != 0)
  np.testing.assert_allclose(out, expect, rtol=1e-5, atol=1e-6)
  assert drawn_bits[2] == 4


def test_expand_groups_cuts_the_last_group():
  w = jnp.asarray([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
  np.testing.assert_array_equal(np.asarray(expand_groups(w, 2, 5))[:, 0], [1, 1, 0, 0, 0.5])
  assert expand_groups(jnp.ones(3), 2, 5).shape == (3,)  # per tensor: unchanged


def test_derived_fixed_groups():
  """A derived network's per-group bits are an assigned choice: all groups fixed, one at 0 (pruned)."""
  choice = CategoricalChoice.assigned((4, 0, 2))
  layer = QLayer(LayerSpec("linear", CIN, COUT, in_h=T), ChoiceKeys("w", "a", None, None), choice.values, None,
                 True, rngs=nnx.Rngs(0), group_size=GROUP)
  x = np.random.default_rng(7).normal(size=(2, T, CIN)).astype(np.float32)
  out = np.asarray(layer(jnp.asarray(x), arch_of(choice.quantizer_weights("argmax"))))
  col_bits = np.repeat([4, 0, 2], GROUP)
  expect = x @ np_quantize_columns(np.asarray(layer.kernel[...]), np.asarray(layer.wq.step[...]), (0, 2, 4), col_bits)
  np.testing.assert_allclose(out, expect, rtol=1e-5, atol=1e-6)


def test_bad_group_size_raises():
  with pytest.raises(ValueError, match="group_size=0 must be >= 1"):
    QLayer(LayerSpec("linear", CIN, COUT, in_h=T), ChoiceKeys("w", "a", None, None), BITS, None, True,
           rngs=nnx.Rngs(0), group_size=0)

