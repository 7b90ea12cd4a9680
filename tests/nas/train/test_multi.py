"""nas.train.multi: K masked networks trained by one vmapped step equal K separate masked trainings."""
import numpy as np
import optax
import pytest
from flax import nnx

from nas.models import build_model
from nas.models.space import SearchSpace
from nas.train import finetune as trainlib
from nas.train import multi

SPACE = SearchSpace(w_bits=(2, 4, 8), a_bits=(4, 8), width_mults=(0.5, 1.0))
KW = dict(input_shape=(8, 8, 1), num_classes=10, widths=(8, 16), strides=(1, 2))


def _build(k):
  return build_model("digits_cnn", SPACE, seed=k, **KW)


def _archs():
  model = _build(0)
  rng = np.random.default_rng(3)
  archs = [{n: c.values[int(rng.integers(len(c.values)))] for n, c in model.choices.items()} for _ in range(1)]
  archs.append({n: (max(c.values) if n.endswith(".width") else c.values[-1]) for n, c in model.choices.items()})
  return archs


def test_vmapped_training_equals_separate_masked_trainings():
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(96, 8, 8, 1)).astype(np.float32)
  y = rng.integers(0, 10, size=96).astype(np.int32)
  archs, steps, batch = _archs(), 4, 16
  schedule = optax.cosine_decay_schedule(3e-3, steps)
  streams = multi.index_streams(len(x), batch, seeds=[0, 1])
  idx = [next(streams) for _ in range(steps)]
  x_calib = np.stack([x[i] for i in idx[0]])

  trainer = multi.MultiTrainer(_build, archs, x_calib, schedule, 1e-4)
  losses = [trainer.step(x, y, i)[0] for i in idx]

  for k, choices in enumerate(archs):
    model = _build(k)
    multi.pin(model, choices)
    trainlib.calibrate(model, x_calib[k], mode="argmax")
    opt = trainlib.weights_optimizer(model, schedule, 1e-4)
    model.train()
    for s, i in enumerate(idx):
      loss, _ = trainlib._train_step(model, opt, x[i[k]], y[i[k]])
      np.testing.assert_allclose(float(loss), float(losses[s][k]), rtol=1e-5, atol=1e-6)
    got, _ = trainer.network(k)
    want = dict(nnx.to_flat_state(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))))
    for path, var in nnx.to_flat_state(nnx.state(got, nnx.Any(nnx.Param, nnx.BatchStat))):
      np.testing.assert_allclose(np.asarray(var[...]), np.asarray(want[path][...]), rtol=1e-4, atol=1e-5,
                                 err_msg=f"network {k}, {path}")


def test_pinned_supernet_computes_the_chosen_network():
  """The masked form's argmax forward uses the pinned choices (derive() reads them back)."""
  archs = _archs()
  model = _build(0)
  multi.pin(model, archs[0])
  assert model.derive() == archs[0]


def test_pin_needs_every_choice():
  model = _build(0)
  with pytest.raises(ValueError, match="no value"):
    multi.pin(model, {})


def test_index_streams_follow_the_batches_order():
  from nas.train.data import batches
  x = np.arange(20, dtype=np.float32)[:, None]
  want = batches(x, x[:, 0].astype(np.int32), 4, seed=5)
  got = multi.index_streams(20, 4, seeds=[5, 6])
  for _ in range(7):
    xb, _ = next(want)
    np.testing.assert_array_equal(x[next(got)[0]], xb)


def test_train_many_trains_every_network_with_the_finetune_recipe():
  rng = np.random.default_rng(1)
  x = rng.uniform(size=(32, 8, 8, 1)).astype(np.float32)
  y = rng.integers(0, 10, size=32).astype(np.int32)
  archs = _archs()
  trainer = multi.train_many(_build, archs, x, y, trainlib.TrainConfig(steps=2, batch_size=8))
  for k in range(len(archs)):
    model, _ = trainer.network(k)
    assert model.derive() == archs[k]
    assert 0.0 <= trainlib.evaluate(model, x, y) <= 1.0
  with pytest.raises(ValueError, match="distillation"):
    multi.train_many(_build, archs, x, y, trainlib.TrainConfig(steps=1, kd_alpha=0.5))
