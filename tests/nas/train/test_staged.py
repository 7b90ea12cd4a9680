"""StagedStep: the loops' jitted step over flat state computes what nnx.jit's step computes, bit for bit."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from nas.models import build_model
from nas.models.space import SearchSpace
from nas.train import finetune as trainlib
from nas.train.staged import StagedStep


def _leaves(objects):
  out = []
  for v in jax.tree.leaves(nnx.state(objects)):
    out.append(np.asarray(jax.random.key_data(v) if jnp.issubdtype(v.dtype, jax.dtypes.prng_key) else v))
  return out


def _network(x):
  space = SearchSpace()
  arch = build_model("digits_cnn", space, input_shape=(8, 8, 1), num_classes=10).reference_architecture()
  model = build_model("digits_cnn", space, arch=arch, input_shape=(8, 8, 1), num_classes=10)
  trainlib.calibrate(model, x, mode="argmax")
  return model, trainlib.weights_optimizer(model, 1e-2, 1e-4)


def test_staged_step_matches_nnx_jit_bit_for_bit():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(16, 8, 8, 1)).astype(np.float32))
  y = jnp.asarray(rng.integers(0, 10, 16).astype(np.int32))
  m1, o1 = _network(x)
  m2, o2 = _network(x)
  m1.train(), m2.train()
  staged = StagedStep(trainlib._train_step, m2, o2, static_argnames=("augment",))
  for i in range(4):
    key = jax.random.key(i)
    loss1, _ = trainlib._train_step(m1, o1, x, y, key, augment=i % 2 == 1)
    loss2, _ = staged(x, y, key, augment=i % 2 == 1)
    assert float(loss1) == float(loss2)
  staged.sync()
  a, b = _leaves((m1, o1)), _leaves((m2, o2))
  assert len(a) == len(b) > 20
  for p, q in zip(a, b):
    np.testing.assert_array_equal(p, q)
  assert any(not np.array_equal(p, q) for p, q in zip(a, _leaves(_network(x))))  # it did train


def test_objects_cannot_be_read_stale_and_sync_writes_them_back():
  class Counter(nnx.Module):
    def __init__(self):
      self.n = nnx.Variable(jnp.zeros((), jnp.int32))

  def bump(c, k):
    c.n[...] = c.n[...] + k
    return c.n[...]

  c = Counter()
  step = StagedStep(bump, c)
  assert int(step(2)) == 2 and int(step(3)) == 5
  with pytest.raises(RuntimeError, match="deleted|donated"):  # the first call took the object's array
    np.asarray(c.n[...])
  step.sync()
  assert int(c.n[...]) == 5
  assert int(step(1)) == 6  # stepping on after a sync
  step.sync()
  assert int(c.n[...]) == 6


def test_an_optimizer_state_is_carried_through():
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  opt = nnx.Optimizer(model, optax.adam(0.1), wrt=nnx.Param)
  ref = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  ref_opt = nnx.Optimizer(ref, optax.adam(0.1), wrt=nnx.Param)
  x = jnp.ones((4, 3))

  def step(m, o, x):
    loss, g = nnx.value_and_grad(lambda m: jnp.sum(m(x) ** 2))(m)
    o.update(m, g)
    return loss

  staged = StagedStep(step, model, opt)
  for _ in range(3):
    staged(x)
    nnx.jit(step)(ref, ref_opt, x)
  staged.sync()
  np.testing.assert_array_equal(np.asarray(model.kernel[...]), np.asarray(ref.kernel[...]))
  assert int(opt.step[...]) == 3
