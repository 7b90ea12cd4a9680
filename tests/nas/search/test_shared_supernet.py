"""One supernet for every budget (search.shared): budget-agnostic training, then architecture-only searches on
its frozen weights; both phases resume onto the uninterrupted trajectory."""
import dataclasses
import pathlib

import jax
import numpy as np
import pytest
from flax import nnx
from hydra.utils import instantiate
from omegaconf import OmegaConf

from nas.search import cost as costlib
from nas.ops.choices import ArchParam
from nas.train.datasets import load_digits
from nas.models import build_model
from nas.search import Constraint, SearchConfig, search, train_supernet
from nas.models.space import SearchSpace

RISCV = pathlib.Path(__file__).resolve().parents[3] / "conf" / "hardware" / "riscv.yaml"


class Interrupt(Exception):
  pass


def _weights(model):
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def _all(model):
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Not(nnx.RngState)))]


def _model():
  return build_model("digits_cnn", SearchSpace(), seed=0, widths=(8, 16), strides=(1, 2))


def _stop_at(step_limit):
  def callback(step, record):
    if step_limit is not None and step >= step_limit:
      raise Interrupt()
  return callback


@pytest.fixture(scope="module")
def data():
  return load_digits(limit=300)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
  """A supernet trained for 30 steps, checkpointed: each test loads it into a fresh model."""
  folder = tmp_path_factory.mktemp("supernet")
  train_supernet(_model(), data, SearchConfig(seed=0), 30, checkpoint_dir=folder, checkpoint_every=30)
  return folder


def test_supernet_training_touches_weights_only_and_resumes(tmp_path, data):
  cfg = SearchConfig(seed=2)

  def run(ckpt, stop=None):
    model = _model()
    arch = [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, ArchParam))]
    out = train_supernet(model, data, cfg, 30, callback=_stop_at(stop), checkpoint_dir=ckpt, checkpoint_every=10)
    # the architecture parameters stay at their uniform start: every sub-network is sampled alike
    for a, b in zip(arch, jax.tree.leaves(nnx.state(model, ArchParam))):
      np.testing.assert_array_equal(a, np.asarray(b))
    return model, out

  ref, out = run(tmp_path / "a")
  assert out["start"] == 0 and out["steps"] == 30 and len(out["history"]) == 3  # steps 0, 25, 29
  before = _weights(_model())
  assert any(not np.array_equal(a, b) for a, b in zip(before, _weights(ref)))  # the weights did train
  with pytest.raises(Interrupt):
    run(tmp_path / "b", stop=25)
  model, out = run(tmp_path / "b")
  assert 0 < out["start"] < 30
  for a, b in zip(_all(model), _all(ref)):
    np.testing.assert_array_equal(a, b)
  # A finished supernet is loaded, not trained again.
  again, out = run(tmp_path / "a")
  assert out["start"] == 30 and out["history"] == []
  for a, b in zip(_all(again), _all(ref)):
    np.testing.assert_array_equal(a, b)


def test_frozen_searches_keep_the_weights_and_order_by_budget(data, trained):
  hw = instantiate(OmegaConf.load(RISCV), _convert_="all")
  cfg = SearchConfig(steps=30, warmup_steps=0, arch_lr=0.1, seed=0)
  costs = {}
  for fraction in (0.2, 0.7):
    model = _model()
    train_supernet(model, data, cfg, 30, checkpoint_dir=trained)  # loads it
    weights = _weights(model)
    ref = costlib.architecture_cost(model.reference_architecture(), hw)["latency_s"]
    res = search(model, data, costlib.build_cost_tables(model, hw), [Constraint("latency_s", fraction * ref)], dataclasses.replace(cfg, frozen_weights=True))
    for a, b in zip(weights, _weights(model)):
      np.testing.assert_array_equal(a, b)  # only the architecture trained
    costs[fraction] = costlib.architecture_cost(model.architecture(res.choices), hw)["latency_s"]
    assert costs[fraction] <= fraction * ref * (1 + 1e-9)
  assert costs[0.2] < costs[0.7]


def test_frozen_search_resumes_to_the_same_result(tmp_path, data, trained):
  hw = instantiate(OmegaConf.load(RISCV), _convert_="all")
  cfg = SearchConfig(steps=30, warmup_steps=0, arch_lr=0.1, seed=1)

  def run(ckpt, stop=None):
    model = _model()
    train_supernet(model, data, cfg, 30, checkpoint_dir=trained)
    limit = 0.4 * costlib.architecture_cost(model.reference_architecture(), hw)["latency_s"]
    return model, search(model, data, costlib.build_cost_tables(model, hw), [Constraint("latency_s", limit)],
                         dataclasses.replace(cfg, frozen_weights=True), callback=_stop_at(stop),
                         checkpoint_dir=ckpt, checkpoint_every=10)

  ref_model, ref = run(tmp_path / "a")
  with pytest.raises(Interrupt):
    run(tmp_path / "b", stop=15)
  model, res = run(tmp_path / "b")
  assert res.choices == ref.choices and res.multipliers == ref.multipliers
  for a, b in zip(_all(model), _all(ref_model)):
    np.testing.assert_array_equal(a, b)
