"""mean_max_prob: the one-hot-ness of the choices the derived network uses (hand-computed values)."""
import jax.numpy as jnp
import numpy as np
import pytest

from nas.models import build_model
from nas.models.space import SearchSpace


def test_per_channel_choice_counts_only_the_channels_the_derived_width_keeps():
  model = build_model("digits_cnn", SearchSpace(per_channel_w=True), widths=(8, 16), strides=(1, 2))
  assert model.choices["convs.0.width"].values == (4, 6, 8, 12)
  assert model.choices["convs.1.width"].values == (8, 12, 16, 24)
  one_hot = lambda n, i: jnp.asarray(np.eye(n, dtype=np.float32)[i] * 1e4)
  model.choices["convs.0.width"].logits[...] = one_hot(4, 0)  # 4 channels
  model.choices["convs.1.width"].logits[...] = one_hot(4, 0)  # 8 channels kept of 24
  model.choices["convs.1.a_bits"].logits[...] = one_hot(3, 2)
  w_bits = np.zeros((24, 3), np.float32)  # pruned channels 8..23 stay uniform (max prob 1/3)
  w_bits[:8, 1] = 1e4
  model.choices["convs.1.w_bits"].logits[...] = jnp.asarray(w_bits)
  searchable = [n for n, c in model.choices.items() if not c.fixed]
  assert sorted(searchable) == ["convs.0.width", "convs.1.a_bits", "convs.1.w_bits", "convs.1.width"]
  assert model.mean_max_prob() == pytest.approx(1.0)  # counting all 24 channels would give 0.889
  w_bits[0] = 0.0  # a kept channel undecided: (7 + 1/3) / 8 for that choice
  model.choices["convs.1.w_bits"].logits[...] = jnp.asarray(w_bits)
  assert model.mean_max_prob() == pytest.approx((3 + (7 + 1 / 3) / 8) / 4, rel=1e-6)


def test_max_probs_names_each_undecided_choice():
  model = build_model("digits_cnn", SearchSpace(per_channel_w=True), widths=(8, 16), strides=(1, 2))
  for name in ("convs.0.width", "convs.1.width", "convs.1.a_bits"):
    n = len(model.choices[name].values)
    model.choices[name].logits[...] = jnp.asarray(np.eye(n, dtype=np.float32)[0] * 1e4)
  model.choices["convs.1.a_bits"].logits[...] = jnp.log(jnp.asarray([0.5, 0.3, 0.2]))  # undecided
  w_bits = np.zeros((24, 3), np.float32)
  w_bits[:8, 2] = 1e4
  w_bits[3] = np.log([0.1, 0.1, 0.8])  # one kept channel at 0.8
  model.choices["convs.1.w_bits"].logits[...] = jnp.asarray(w_bits)
  got = model.max_probs()
  assert set(got) == {"convs.0.width", "convs.1.width", "convs.1.a_bits", "convs.1.w_bits"}
  assert got["convs.0.width"] == pytest.approx(1.0)
  assert got["convs.1.a_bits"] == pytest.approx(0.5, rel=1e-6)
  assert got["convs.1.w_bits"] == pytest.approx((7 + 0.8) / 8, rel=1e-6)
  assert model.mean_max_prob() == pytest.approx((1 + 1 + 0.5 + 7.8 / 8) / 4, rel=1e-6)
