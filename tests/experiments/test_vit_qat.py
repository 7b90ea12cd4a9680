"""The ViT QAT ablation (experiments.vit_qat): its variants change what they say, and only that."""
import numpy as np
import jax.numpy as jnp

from experiments import vit_qat
from nas.models import build_model
from nas.models.space import SearchSpace


def _w8a8():
  space = SearchSpace(w_bits=(8,), a_bits=(8,), width_mults=(1.0,))
  return build_model("vit", space, seed=0, input_shape=(8, 8, 1), num_classes=3, patch=4, embed=16, heads=2,
                     mlp=16, depth=1, mlp_groups=2, nm_patterns=())


def test_float_attention_leaves_only_the_named_operands_unquantised():
  x = np.random.default_rng(0).standard_normal((4, 8, 8, 1)).astype(np.float32)
  ref = _w8a8()
  nets = {}
  for which in ("all", "probs"):
    net = _w8a8()
    vit_qat._float_attention(net, which)
    nets[which] = net
  attn = nets["probs"].blocks[0].attn
  assert attn.p_act.bits is None and attn.q_act.bits == (8,) and attn.k_act.bits == (8,) and attn.v_act.bits == (8,)
  attn = nets["all"].blocks[0].attn
  assert all(getattr(attn, n).bits is None for n in ("q_act", "k_act", "p_act", "v_act"))
  # The linears stay quantised: the float-attention network's Q projection output equals the W8A8 one's.
  y = jnp.asarray(np.random.default_rng(1).standard_normal((4, 5, 16)).astype(np.float32))
  arch = ref.mixing_weights("argmax", None, 1.0)
  np.testing.assert_array_equal(np.asarray(ref.blocks[0].attn.q(y, arch)),
                                np.asarray(nets["all"].blocks[0].attn.q(y, nets["all"].mixing_weights("argmax", None, 1.0))))


def test_table_reports_means_and_differences_against_a_hand_computation():
  results = {"float/s0": {"accuracy": 0.88, "steps": 10}, "float/s1": {"accuracy": 0.86, "steps": 10},
             "w8a8/s0": {"accuracy": 0.85, "steps": 10}, "w8a8/s1": {"accuracy": 0.85, "steps": 10},
             "w8a8-kd/s0": {"accuracy": 0.90, "steps": 20}}
  text = vit_qat.table(results, 10)
  assert "| float | 2 | 87.00 +- 1.41 % | 88.00, 86.00 | +2.00 |  |" in text
  assert "| w8a8 | 2 | 85.00 +- 0.00 % | 85.00, 85.00 |  | -2.00 |" in text
  assert "w8a8-kd" not in text  # another step count is another table
