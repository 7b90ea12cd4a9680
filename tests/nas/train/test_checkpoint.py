"""Interrupted search and fine-tuning resume from their Orbax checkpoints onto the same trajectory."""
import pathlib

import jax
import numpy as np
import pytest
from flax import nnx
from hydra.utils import instantiate
from omegaconf import OmegaConf

from nas.search import cost as costlib
from nas.train.datasets import load_digits
from nas.models import build_model
from nas.search import Constraint, SearchConfig, search
from nas.models.space import SearchSpace
from nas.train.finetune import TrainConfig, calibrate, finetune

RISCV = pathlib.Path(__file__).resolve().parents[3] / "conf" / "hardware" / "riscv.yaml"


class Interrupt(Exception):
  pass


def _leaves(model):
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Not(nnx.RngState)))]


def test_search_resumes_to_the_same_result(tmp_path):
  data = load_digits(limit=300)
  hw = instantiate(OmegaConf.load(RISCV), _convert_="all")
  cfg = SearchConfig(steps=60, warmup_steps=15, seed=3)

  def run(ckpt, stop_at=None):
    model = build_model("digits_cnn", SearchSpace(), seed=0, widths=(8, 16), strides=(1, 2))
    limit = 0.5 * costlib.architecture_cost(model.reference_architecture(), hw)["latency_s"]

    def callback(step, record):
      if stop_at is not None and step >= stop_at:
        raise Interrupt()
    return model, search(model, data, costlib.build_cost_tables(model, hw), [Constraint("latency_s", limit)], cfg, callback=callback,
                         checkpoint_dir=ckpt, checkpoint_every=10)

  ref_model, ref = run(tmp_path / "a")
  with pytest.raises(Interrupt):
    run(tmp_path / "b", stop_at=25)  # the callback fires at step 25; the last checkpoint is step 19
  saved = sorted(int(p.name) for p in (tmp_path / "b").iterdir() if p.name.isdigit())
  assert saved and max(saved) < cfg.steps - 1, saved
  model, res = run(tmp_path / "b")
  assert res.choices == ref.choices
  assert res.multipliers == ref.multipliers
  for a, b in zip(_leaves(model), _leaves(ref_model)):
    np.testing.assert_array_equal(a, b)


def test_finetune_resumes_to_the_same_weights(tmp_path):
  data = load_digits(limit=300)
  cfg = TrainConfig(steps=40, seed=1)

  def run(ckpt, stop_at=None):
    model = build_model("digits_cnn", SearchSpace(w_bits=(4,), a_bits=(4,), width_mults=(1.0,)), seed=0,
                        widths=(8, 16), strides=(1, 2))
    calibrate(model, data.x_train[:64], mode="argmax")

    def callback(step, record):
      if stop_at is not None and step >= stop_at:
        raise Interrupt()
    try:
      out = finetune(model, data, cfg, callback=callback, checkpoint_dir=ckpt, checkpoint_every=10)
    except Interrupt:
      return None, None
    return model, out

  ref_model, ref = run(tmp_path / "a")
  assert run(tmp_path / "b", stop_at=20) == (None, None)
  model, out = run(tmp_path / "b")
  assert out["test_accuracy"] == ref["test_accuracy"]
  for a, b in zip(_leaves(model), _leaves(ref_model)):
    np.testing.assert_array_equal(a, b)


def test_saved_network_reloads_into_a_fresh_model_of_its_architecture(tmp_path):
  from nas.train.checkpoint import load_network, save_network
  space = SearchSpace()
  sup = build_model("digits_cnn", space, seed=0, widths=(8, 16), strides=(1, 2))
  arch = sup.architecture({n: max(c.values) for n, c in sup.choices.items()})
  a = build_model("digits_cnn", space, seed=1, arch=arch, widths=(8, 16), strides=(1, 2))
  b = build_model("digits_cnn", space, seed=2, arch=arch, widths=(8, 16), strides=(1, 2))
  assert any(not np.array_equal(x, y) for x, y in zip(_leaves(a), _leaves(b)))  # different seeds differ
  load_network(b, save_network(a, tmp_path / "net.npz"))
  for x, y in zip(_leaves(a), _leaves(b)):
    np.testing.assert_array_equal(x, y)
  narrow = sup.architecture({n: min(c.values) for n, c in sup.choices.items()})
  c = build_model("digits_cnn", space, seed=0, arch=narrow, widths=(8, 16), strides=(1, 2))
  with pytest.raises(ValueError, match="net.npz: .* has shape"):
    load_network(c, tmp_path / "net.npz")
