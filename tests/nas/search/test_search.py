"""A tiny search: budgets are honoured and a tighter budget gives a cheaper derived network."""
import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from nas.search import cost as costlib
from nas.train.datasets import load_digits
from nas.models import build_model
from nas.search import Constraint, SearchConfig, search
from nas.models.space import SearchSpace

import pathlib

RISCV = pathlib.Path(__file__).resolve().parents[3] / "conf" / "hardware" / "riscv.yaml"


@pytest.fixture(scope="module")
def digits():
  return load_digits(limit=400)


def _search(data, fraction, metric="latency_s", extra=(), penalty="target"):
  hw = instantiate(OmegaConf.load(RISCV), _convert_="all")
  model = build_model("digits_cnn", SearchSpace(), seed=0, widths=(8, 16), strides=(1, 2))
  ref = model.reference_architecture()
  ref_cost = {**costlib.architecture_cost(ref, hw), **costlib.architecture_metrics(ref)}
  constraints = [Constraint(metric, fraction * ref_cost[metric])]
  constraints += [Constraint(m, f * ref_cost[m]) for m, f in extra]
  res = search(model, data, costlib.build_cost_tables(model, hw), constraints, SearchConfig(steps=160, warmup_steps=40, seed=0,
                                                                penalty=penalty))
  arch = model.architecture(res.choices)
  true = {**costlib.architecture_cost(arch, hw), **costlib.architecture_metrics(arch)}
  return res, true, constraints


def test_tight_budget_gives_cheaper_network_and_budgets_hold(digits):
  tight, tight_cost, tight_c = _search(digits, 0.25)
  loose, loose_cost, loose_c = _search(digits, 0.9)
  assert tight_cost["latency_s"] <= tight_c[0].limit * (1 + 1e-9)
  assert loose_cost["latency_s"] <= loose_c[0].limit * (1 + 1e-9)
  assert tight_cost["latency_s"] < loose_cost["latency_s"]
  # The expected cost tracked the budget during search: within 15 % of it (or under it) at the end.
  assert tight.expected_cost["latency_s"] <= 1.15 * tight_c[0].limit


def test_two_metric_budget_holds_both(digits):
  res, true, constraints = _search(digits, 0.8, extra=[("weight_bytes", 0.3)])
  for c in constraints:
    assert true[c.metric] <= c.limit * (1 + 1e-9), (c, true)
  assert set(res.multipliers) == {"latency_s", "weight_bytes"}
  assert res.multipliers["weight_bytes"] >= 0  # an upper bound; the first budget (a target) may go negative


def test_a_target_budget_keeps_the_expected_cost_at_the_budget_an_upper_bound_lets_it_fall(digits):
  """With upper bounds only, the expected cost overshoots under the budget (the multiplier lags, Adam follows
  its sign) and stays there; the target (augmented Lagrangian, multiplier of either sign) brings it back to
  the budget, and the derived network spends at least 90 % of it."""
  target, target_true, c = _search(digits, 0.3, penalty="target")
  upper, _, _ = _search(digits, 0.3, penalty="lagrange")
  limit = c[0].limit
  assert 0.85 * limit <= target.expected_cost["latency_s"] <= 1.15 * limit
  assert upper.expected_cost["latency_s"] < 0.85 * limit
  assert 0.9 * limit <= target_true["latency_s"] <= limit * (1 + 1e-9)


def test_nan_loss_is_reported_with_the_field_to_change(digits):
  hw = instantiate(OmegaConf.load(RISCV), _convert_="all")
  model = build_model("digits_cnn", SearchSpace(), seed=0, widths=(8, 16), strides=(1, 2))
  bad = type(digits)(digits.name, digits.x_train * np.nan, digits.y_train, digits.x_test, digits.y_test, 10)
  with pytest.raises(FloatingPointError, match="search.lr"):
    search(model, bad, costlib.build_cost_tables(model, hw), [Constraint("latency_s", 1.0)], SearchConfig(steps=30, warmup_steps=5))


def test_fill_budget_spends_budget_without_breaking_it():
  from nas.search.derive import _moves
  from nas.search import cheapest_choices, discrete_costs, fill_budget
  hw = instantiate(OmegaConf.load(RISCV), _convert_="all")
  model = build_model("digits_cnn", SearchSpace(), seed=0, widths=(8, 16), strides=(1, 2))
  tables = costlib.build_cost_tables(model, hw)
  ref = costlib.architecture_cost(model.reference_architecture(), hw)["latency_s"]
  constraints = [Constraint("latency_s", 0.6 * ref)]
  rng = np.random.default_rng(0)
  probs = {n: rng.dirichlet(np.ones(len(c.values))) for n, c in model.choices.items()}
  start = cheapest_choices(model)
  filled, moves = fill_budget(model, tables, constraints, probs, start)
  before = discrete_costs(tables, start, model, ["latency_s"])["latency_s"]
  after = discrete_costs(tables, filled, model, ["latency_s"])["latency_s"]
  # Independent check: the true cost of the filled network, layer by layer on the cost model.
  true = costlib.architecture_cost(model.architecture(filled), hw)["latency_s"]
  assert true == pytest.approx(after, rel=1e-9)
  assert moves > 0 and before < after <= constraints[0].limit
  # Maximal: no single further move up fits the budget.
  for trial, _ in _moves(model, filled, probs, +1):
    assert discrete_costs(tables, trial, model, ["latency_s"])["latency_s"] > constraints[0].limit
