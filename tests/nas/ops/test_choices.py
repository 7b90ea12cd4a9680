"""Gumbel-softmax sampling and categorical choices (nas/ops/choices.py), checked statistically and against NumPy.

References: Jang, Gu, Poole, Gumbel-Softmax, ICLR 2017 (the Gumbel-max trick: argmax(logits + G) with
G ~ Gumbel(0, 1) is distributed as Categorical(softmax(logits)), whatever the temperature).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats

from nas.ops.choices import ArchParam, CategoricalChoice, SDQChoice, gumbel_softmax, rowwise

LOGITS = np.asarray([1.0, 0.0, -1.0, 0.5, -2.0], np.float32)


def np_softmax(z):
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("tau,hard", [(1.0, False), (0.3, True), (5.0, False)])
def test_argmax_frequencies_match_softmax(key, tau, hard):
  n = 20_000
  logits = jnp.broadcast_to(jnp.asarray(LOGITS), (n, LOGITS.size))
  y = gumbel_softmax(jax.random.fold_in(key, int(tau * 10)), logits, tau, hard)
  counts = np.bincount(np.asarray(jnp.argmax(y, -1)), minlength=LOGITS.size)
  p = np_softmax(LOGITS)
  freq = counts / n
  # Per class, counts ~ Binomial(n, p_k): |freq - p_k| <= 4 sigma, sigma = sqrt(p_k (1 - p_k) / n).
  # Two-sided 4-sigma false-alarm rate ~6.3e-5 per class (normal approximation; the smallest n p_k is ~460).
  sigma = np.sqrt(p * (1 - p) / n)
  assert np.all(np.abs(freq - p) <= 4 * sigma), (freq, p, sigma)
  # Jointly: Pearson chi-square with K - 1 = 4 dof, rejected only above its 1 - 1e-4 quantile (~23.5).
  chi2 = np.sum((counts - n * p) ** 2 / (n * p))
  assert chi2 < stats.chi2.ppf(1 - 1e-4, LOGITS.size - 1), chi2


def test_soft_sample_is_a_distribution(key):
  y = np.asarray(gumbel_softmax(key, jnp.broadcast_to(jnp.asarray(LOGITS), (1000, 5)), 0.7))
  assert np.all(y > 0) and np.all(y < 1)
  np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-6)


def test_hard_forward_is_exactly_one_hot(key):
  n = 2000
  logits = jnp.broadcast_to(jnp.asarray(LOGITS), (n, LOGITS.size))
  soft = np.asarray(gumbel_softmax(key, logits, 2.0, hard=False))
  hard = np.asarray(gumbel_softmax(key, logits, 2.0, hard=True))
  # At tau = 2 many soft winners are below 0.5, where y + (1 - y) is not trivially exact in float32.
  assert (soft.max(-1) < 0.5).mean() > 0.2
  assert set(np.unique(hard).tolist()) == {0.0, 1.0}
  np.testing.assert_array_equal(hard.sum(-1), np.ones(n, np.float32))
  # The same key gives the same noise: the hard sample is the one-hot argmax of the soft one.
  np.testing.assert_array_equal(hard.argmax(-1), soft.argmax(-1))


@pytest.mark.parametrize("tau", [0.5, 1.0, 3.0])
def test_hard_gradient_equals_soft_gradient(key, tau):
  c = jnp.asarray([0.3, -1.0, 2.0, 0.7, -0.4], jnp.float32)  # a fixed downstream linear loss
  logits = jnp.asarray(LOGITS)
  loss = lambda l, hard: jnp.sum(c * gumbel_softmax(key, l, tau, hard))
  g_soft = np.asarray(jax.grad(loss)(logits, False))
  g_hard = np.asarray(jax.grad(loss)(logits, True))
  # Analytic softmax Jacobian from the soft sample y itself: d(c.y)/dl = y * (c - c.y) / tau.
  y = np.asarray(gumbel_softmax(key, logits, tau), np.float64)
  cn = np.asarray(c, np.float64)
  ref = y * (cn - cn @ y) / tau
  assert np.abs(ref).max() > 1e-3  # not a trivially zero gradient
  np.testing.assert_allclose(g_soft, ref, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(g_hard, g_soft, rtol=1e-6, atol=1e-7)


def test_lower_temperature_is_closer_to_one_hot(key):
  n = 4000
  logits = jnp.broadcast_to(jnp.asarray(LOGITS), (n, LOGITS.size))
  taus = (100.0, 5.0, 1.0, 0.2, 0.02)
  # The same key gives every temperature the same Gumbel noise, so the max weight of softmax(z / tau) must
  # fall with tau sample by sample, not just on average (it is non-increasing in tau for any fixed z).
  max_w = np.stack([np.asarray(gumbel_softmax(key, logits, t)).max(-1) for t in taus])
  assert np.all(np.diff(max_w, axis=0) >= -1e-6)
  means = max_w.mean(-1)
  assert np.all(np.diff(means) > 0), means
  assert means[0] < 1 / LOGITS.size + 0.05  # near uniform at tau = 100
  assert means[-1] > 0.95  # near one-hot at tau = 0.02


def test_expected_mode_is_softmax_of_logits():
  choice = CategoricalChoice((2, 4, 8))
  np.testing.assert_allclose(np.asarray(choice.mixing_weights("expected")), np.full(3, 1 / 3), rtol=1e-6)
  logits = np.asarray([0.3, -1.2, 2.0], np.float32)
  choice.logits[...] = jnp.asarray(logits)
  np.testing.assert_allclose(np.asarray(choice.mixing_weights("expected")), np_softmax(logits), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(choice.probs()), np_softmax(logits), rtol=1e-6)


@pytest.mark.parametrize("logits,index", [([0.3, -1.2, 2.0], 2), ([5.0, -1.2, 2.0], 0), ([0.0, 0.1, -0.1], 1)])
def test_argmax_mode_is_one_hot_and_derive_picks_max_logit(logits, index):
  choice = CategoricalChoice((2, 4, 8))
  choice.logits[...] = jnp.asarray(logits, jnp.float32)
  np.testing.assert_array_equal(np.asarray(choice.mixing_weights("argmax")), np.eye(3, dtype=np.float32)[index])
  assert choice.derive() == (2, 4, 8)[index]


@pytest.mark.parametrize("mode", ["sample", "expected", "argmax"])
def test_fixed_choice_weights_are_one(key, mode):
  choice = CategoricalChoice((8,))
  assert choice.fixed
  np.testing.assert_array_equal(np.asarray(choice.mixing_weights(mode, key)), np.ones(1, np.float32))
  assert choice.derive() == 8


@pytest.mark.parametrize("hard", [True, False])
def test_sample_mode_is_a_gumbel_sample(key, hard):
  choice = CategoricalChoice((2, 4, 8), hard=hard)
  w = np.asarray(choice.mixing_weights("sample", key, 1.0))
  assert w.shape == (3,)
  np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
  if hard:
    assert sorted(w.tolist()) == [0.0, 0.0, 1.0]
  else:
    assert np.all((w > 0) & (w < 1))


def test_bad_mode_raises():
  with pytest.raises(ValueError, match="mode='soft'"):
    CategoricalChoice((2, 4)).mixing_weights("soft")


@pytest.mark.parametrize("cls", [CategoricalChoice, SDQChoice])
def test_bad_mode_raises_for_fixed_choice(cls):
  with pytest.raises(ValueError, match="mode='soft'"):
    cls((8,)).mixing_weights("soft")


def test_per_channel_choice_rows_are_independent_categoricals(key):
  choice = CategoricalChoice((2, 4, 8), channels=4)
  logits = np.asarray([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0], [0.1, 0.5, -2.0]], np.float32)
  choice.logits[...] = jnp.asarray(logits)
  np.testing.assert_allclose(np.asarray(choice.probs()), np_softmax(logits), rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(choice.mixing_weights("argmax")), np.eye(3, dtype=np.float32)[[0, 1, 2, 1]])
  assert choice.derive() == (2, 4, 8, 4)
  assert choice.mixing_weights("sample", key).shape == (4, 3)


# SDQ (Huang et al., ICML 2022): beta in [b_min, b_max]; b_lo <= beta <= b_hi adjacent candidates;
# p = (beta - b_lo) / (b_hi - b_lo) on b_hi, 1 - p on b_lo.
@pytest.mark.parametrize("beta,expected", [
    (2.0, [1, 0, 0]), (3.0, [0.5, 0.5, 0]), (4.0, [0, 1, 0]), (6.5, [0, 0.375, 0.625]), (8.0, [0, 0, 1]),
    (11.0, [0, 0, 1]), (0.5, [1, 0, 0]),  # outside [2, 8]: read as clipped
])
def test_sdq_probs_interpolate_between_adjacent_candidates(beta, expected):
  choice = SDQChoice((2, 4, 8))
  choice.logits[...] = jnp.float32(beta)
  np.testing.assert_allclose(np.asarray(choice.probs()), expected, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(np.asarray(choice.mixing_weights("expected")), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("beta,derived", [(2.9, 2), (3.0, 4), (5.9, 4), (6.0, 8), (8.0, 8)])
def test_sdq_derive_and_argmax_take_the_nearer_candidate(beta, derived):
  choice = SDQChoice((2, 4, 8))
  choice.logits[...] = jnp.float32(beta)
  assert choice.derive() == derived
  np.testing.assert_array_equal(np.asarray(choice.mixing_weights("argmax")),
                                np.eye(3, dtype=np.float32)[(2, 4, 8).index(derived)])


def test_sdq_starts_at_the_widest_and_project_clips():
  choice = SDQChoice((2, 4, 8), channels=3)
  np.testing.assert_array_equal(np.asarray(choice.logits[...]), [8.0, 8.0, 8.0])
  choice.logits[...] = jnp.asarray([-1.0, 5.0, 9.5], jnp.float32)
  choice.project()
  np.testing.assert_array_equal(np.asarray(choice.logits[...]), [2.0, 5.0, 8.0])


def test_sdq_sample_frequency_and_straight_through_gradient(key):
  n = 20_000
  choice = SDQChoice((2, 4, 8), channels=n)  # n independent per-channel draws at the same beta
  choice.logits[...] = jnp.full((n,), 6.5, jnp.float32)  # p(8) = 0.625, p(4) = 0.375
  w = np.asarray(choice.mixing_weights("sample", key))
  # Forward: exactly one-hot on 4 or 8 bits.
  assert set(np.unique(w).tolist()) == {0.0, 1.0}
  np.testing.assert_array_equal(w.sum(-1), np.ones(n, np.float32))
  assert w[:, 0].sum() == 0
  # Bernoulli(0.625) over n draws: 4-sigma bound, sigma = sqrt(p (1 - p) / n) ~ 0.0034.
  p = 0.625
  assert abs(w[:, 2].mean() - p) <= 4 * np.sqrt(p * (1 - p) / n)
  # Backward: straight-through around the expectation; d(c . mix)/d beta = (c_hi - c_lo) / (b_hi - b_lo).
  c = jnp.asarray([0.3, -1.0, 2.0], jnp.float32)
  loss = lambda m: jnp.sum(c * m.mixing_weights("sample", key))
  for beta, slope in ((6.5, (2.0 - -1.0) / 4), (3.0, (-1.0 - 0.3) / 2)):
    single = SDQChoice((2, 4, 8))
    single.logits[...] = jnp.float32(beta)
    grads = nnx.grad(loss, argnums=nnx.DiffState(0, ArchParam))(single)
    assert float(grads["logits"][...]) == pytest.approx(slope, rel=1e-6)


def test_rowwise_applies_fn_to_every_array_by_its_last_axis():
  """Arrays of different shapes and candidate counts, stacked per count, give what each gives alone."""
  rng = np.random.default_rng(0)
  shapes = {"a": (3,), "b": (6, 4), "c": (4,), "d": (2, 3), "e": (1,)}
  logits = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
  noise = {k: rng.uniform(0.01, 1.0, size=s).astype(np.float32) for k, s in shapes.items()}
  out = rowwise(lambda z, u: (jax.nn.softmax(z + u, axis=-1), jnp.argmax(z + u, axis=-1)), logits, noise)
  assert set(out) == set(shapes)
  for k, s in shapes.items():
    p, idx = out[k]
    assert p.shape == s and idx.shape == s[:-1]
    np.testing.assert_allclose(p, np_softmax(logits[k] + noise[k]), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(idx, np.argmax(logits[k] + noise[k], -1))


@pytest.mark.parametrize("method", ["gumbel", "sdq"])
def test_supernet_draws_every_choice_as_the_choice_draws_itself(key, method):
  """The supernet's stacked computations (one per group of choices) give each choice the weights, the
  probabilities and the gradients that the choice computes alone from the same noise."""
  from nas.models import build_model
  from nas.models.space import SearchSpace
  from nas.ops.choices import OneHot, uniform_noise
  net = build_model("vit", SearchSpace(method=method), input_shape=(28, 28, 1), num_classes=10)
  for i, c in enumerate(net.choices.values()):
    shift = jax.random.normal(jax.random.fold_in(key, i), c.logits[...].shape)
    c.logits[...] = c.logits[...] + (shift if isinstance(c, CategoricalChoice) else -2.0 * jnp.abs(shift))

  def noise_of(model):  # the noise the supernet draws: one uniform array, cut per searchable choice in order
    shapes = {n: c.noise_shape for n, c in model.choices.items() if not c.fixed}
    flat = uniform_noise(key, (sum(int(np.prod(s)) for s in shapes.values()),))
    ends = np.cumsum([int(np.prod(s)) for s in shapes.values()])
    return {n: flat[e - int(np.prod(s)):e].reshape(s) for (n, s), e in zip(shapes.items(), ends)}

  shapes = {n: c.noise_shape for n, c in net.choices.items() if not c.fixed}
  kinds = {type(c).__name__ for n, c in net.choices.items() if n in shapes}
  assert kinds == ({"CategoricalChoice"} if method == "gumbel" else {"CategoricalChoice", "SDQChoice"})

  def leaves(w):
    return [w.cands, w.drawn, w.weights] if isinstance(w, OneHot) else [w]

  def loss(model, stacked):
    if stacked:
      weights, probs = model.mixing_weights("sample", key, 0.7), model.probs()
    else:
      onehot, noise = set(model._bit_choices) | set(model._onehot_choices), noise_of(model)
      weights = {n: (c.quantizer_weights if n in onehot else c.mixing_weights)("sample", tau=0.7,
                                                                                 uniform=noise.get(n))
                 for n, c in model.choices.items()}
      probs = {n: c.probs() for n, c in model.choices.items()}
    total = sum(jnp.sum(leaves(w)[-1] * jnp.arange(leaves(w)[-1].shape[-1])) for w in weights.values())
    return total + sum(jnp.sum(p ** 2) for p in probs.values()), (weights, probs)

  wrt = nnx.DiffState(0, ArchParam)
  g_stacked, (w_stacked, p_stacked) = nnx.grad(loss, argnums=wrt, has_aux=True)(net, True)
  g_alone, (w_alone, p_alone) = nnx.grad(loss, argnums=wrt, has_aux=True)(net, False)
  assert set(w_stacked) == set(w_alone) == set(net.choices)
  for n in net.choices:
    np.testing.assert_allclose(p_stacked[n], p_alone[n], rtol=1e-6, atol=1e-7)
    assert type(w_stacked[n]) is type(w_alone[n])
    for a, b in zip(leaves(w_stacked[n]), leaves(w_alone[n])):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  flat_s, flat_a = jax.tree.leaves(g_stacked), jax.tree.leaves(g_alone)
  assert len(flat_s) == len(net.choices) and any(np.abs(np.asarray(g)).max() > 0 for g in flat_s)
  for a, b in zip(flat_s, flat_a):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
