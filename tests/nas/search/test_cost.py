"""Expected cost of a supernet (nas/search/cost.py) against brute-force enumeration of every discrete network, and
the budget projection / feasibility check of nas/search/loop.py against independently computed costs.

Brute force: for every assignment of choice values, build each layer's LayerSpec BY HAND at its chosen
channels (from the model's topology written out below, not from nas.search.cost's grids), call the RISC-V cost
model directly on it, and weight by the product of the probabilities of the parameters we set (softmax of
the logits; SDQ's interpolation weights for a bit-width parameter beta, computed here in NumPy).
The grid contraction in nas.search.cost must reproduce that sum (the choices are independent, so the product of
marginals is the exact joint).
"""
import dataclasses
import functools
import itertools
import math
import pathlib

import hydra
import jax.numpy as jnp
import numpy as np
import omegaconf
import pytest
from flax import nnx

from hardware import riscv
from hardware.base import LayerSpec
from nas.search import cost
from nas import models
from nas import search
from nas.ops.choices import SDQChoice
from nas.models.base import Supernet
from nas.models.space import SearchSpace

RISCV_YAML = pathlib.Path(__file__).resolve().parents[3] / "conf" / "hardware" / "riscv.yaml"
# MPIC MACs per cycle, rows activation bits 2/4/8, columns weight bits 2/4/8 (Ottavi et al. 2020, via PLiNIO).
MPIC_TABLE = [[6.5, 4.0, 2.2], [3.9, 3.5, 2.1], [2.5, 2.3, 2.1]]


@pytest.fixture(scope="module")
def riscv_model():
  return hydra.utils.instantiate(omegaconf.OmegaConf.load(RISCV_YAML))


# ---------------------------------------------------------------------------------------------- networks
class DepthwiseNet(Supernet):
  """conv3x3 -> depthwise 3x3 stride 2 -> pointwise 1x1 -> dense: exercises the depthwise grid path."""

  name = "dw_test"

  def __init__(self, space, *, rngs):
    self._setup(space, None, rngs)
    w0 = self.width_choice("stem.width", 8)
    self.stem = self.qlayer("stem", "conv", None, 3, w0, 0, 3, 1, (8, 8), first=True)
    self.dw = self.qlayer("dw", "dwconv", w0, 0, None, 0, 3, 2, (8, 8))
    w1 = self.width_choice("pw.width", 16)
    self.pw = self.qlayer("pw", "conv", w0, 0, w1, 0, 1, 1, (4, 4))
    self.head = self.qlayer("head", "dense", w1, 0, None, 10, 1, 1, (1, 1), last=True)


def digits_layers(ch, input_shape, strides):
  """(LayerSpec, w_bits, a_bits) of DigitsCNN for choices ``ch``, written out from its docstring: a skipped
  layer (keep 0) is absent, and its shortcut hands the next layer a map of the same size and channels."""
  h, w, c = input_shape
  out = []
  for i, s in enumerate(strides):
    cout = ch[f"convs.{i}.width"]
    if ch.get(f"convs.{i}.keep", 1) == 1:
      out.append((LayerSpec("conv", c, cout, 3, s, h, w, f"convs.{i}"), ch[f"convs.{i}.w_bits"],
                  ch[f"convs.{i}.a_bits"]))
    h, w, c = -(-h // s), -(-w // s), cout
  out.append((LayerSpec("dense", c, 10, 1, 1, 1, 1, "head"), ch["head.w_bits"], ch["head.a_bits"]))
  return out


def deployed(layers, ch):
  """The same network as the hardware runs it: around a skipped layer only the real channels are exchanged
  (its shortcut passes min(input channels, width) on; the rest is zero padding that nothing reads)."""
  real, out, i = None, [], 0
  specs = {spec.name: (spec, w, a) for spec, w, a in layers}
  prev = None
  for name in [f"convs.{k}" for k in range(len([n for n in ch if n.endswith(".width")]))] + ["head"]:
    width = ch.get(f"{name}.width")
    if name in specs:
      spec, w, a = specs[name]
      cin = spec.cin if real is None else real
      if prev is not None:
        out[prev] = (dataclasses.replace(out[prev][0], cout=cin),) + out[prev][1:]
      out.append((dataclasses.replace(spec, cin=cin), w, a))
      prev, real = len(out) - 1, spec.cout
    else:
      real = min(real, width)
  return out


def dw_layers(ch):
  c0, c1 = ch["stem.width"], ch["pw.width"]
  return [(LayerSpec("conv", 3, c0, 3, 1, 8, 8, "stem"), ch["stem.w_bits"], ch["stem.a_bits"]),
          (LayerSpec("dwconv", c0, c0, 3, 2, 8, 8, "dw"), ch["dw.w_bits"], ch["dw.a_bits"]),
          (LayerSpec("conv", c0, c1, 1, 1, 4, 4, "pw"), ch["pw.w_bits"], ch["pw.a_bits"]),
          (LayerSpec("dense", c1, 10, 1, 1, 1, 1, "head"), ch["head.w_bits"], ch["head.a_bits"])]


def ref_weight_bytes(spec, w_bits):
  """Packed weight bytes, no bias: k*k*cin*cout (k*k*c depthwise, cin*cout dense) * bits / 8."""
  count = {"conv": spec.kernel ** 2 * spec.cin * spec.cout, "dwconv": spec.kernel ** 2 * spec.cout,
           "dense": spec.cin * spec.cout}[spec.kind]
  return count * w_bits / 8


def ref_cost(layers, hw):
  """Latency, energy and weight bytes of one discrete network, the cost model called per layer."""
  total = {"latency_s": 0.0, "energy_j": 0.0, "weight_bytes": 0.0}
  for spec, w, a in layers:
    c = hw.cost(spec, w, a, spec.cin, spec.cout)
    total["latency_s"] += float(c.latency_s)
    total["energy_j"] += float(c.energy_j)
    total["weight_bytes"] += ref_weight_bytes(spec, w)
  return total


CASES = {
    # 6 binary choices (2 fixed head choices): 64 networks.
    "digits_tiny": dict(
        space=SearchSpace(w_bits=(2, 4), a_bits=(4, 8), width_mults=(0.5, 1.0), first_layer_bits=None,
                          last_layer_bits=8),
        kwargs=dict(widths=(4, 8), strides=(1, 2))),
    # 3-way bits and a wide second layer whose 8-bit weights (9*64*128 B = 72 KiB) overflow the 64 KiB L1
    # while its 2-bit ones fit: both branches of the DMA tiling are in the grid. 18^2 = 324 networks.
    "digits_l1": dict(
        space=SearchSpace(w_bits=(2, 4, 8), a_bits=(2, 4, 8), width_mults=(0.5, 1.0), first_layer_bits=8,
                          last_layer_bits=None),
        kwargs=dict(widths=(64, 128), strides=(1, 2), input_shape=(16, 16, 3))),
    # SDQ bit-width choices (beta between adjacent candidates; Gumbel widths): 3*2*2 * 3*2*2 = 144 networks.
    "digits_sdq": dict(
        space=SearchSpace(w_bits=(2, 4, 8), a_bits=(4, 8), width_mults=(0.5, 1.0), first_layer_bits=None,
                          last_layer_bits=8, method="sdq"),
        kwargs=dict(widths=(4, 8), strides=(1, 2))),
    # Skippable layers 1 and 2 (the second strided): a skipped layer costs nothing, its width still sets the
    # next layer's input channels. 2^3 widths x 2^4 bits x 2^2 keeps = 512 networks.
    "digits_skip": dict(
        space=SearchSpace(w_bits=(2, 4), a_bits=(4, 8), width_mults=(0.5, 1.0), first_layer_bits=8,
                          last_layer_bits=8),
        kwargs=dict(widths=(4, 8, 8), strides=(1, 2, 1), skip=(1, 2))),
    # Depthwise layer: its output width follows its input width choice. 3 widths x 3 widths x 2^6 bits = 576.
    "depthwise": dict(
        space=SearchSpace(w_bits=(2, 8), a_bits=(4, 8), width_mults=(0.5, 0.75, 1.0), first_layer_bits=None,
                          last_layer_bits=8),
        kwargs=None),
}


@functools.lru_cache(maxsize=None)
def build(case):
  """The supernet of ``case`` and its hand topology, built once per session (building is the slow part:
  every eager op compiles once per shape). Tests that read probabilities overwrite every logit first."""
  c = CASES[case]
  if c["kwargs"] is None:
    return DepthwiseNet(c["space"], rngs=nnx.Rngs(0)), dw_layers
  kw = c["kwargs"]
  model = models.build_model("digits_cnn", c["space"], **kw)
  return model, lambda ch: digits_layers(ch, kw.get("input_shape", (8, 8, 1)), kw["strides"])


def sdq_probs(values, beta):
  """SDQ (Huang et al., ICML 2022): p = (beta - b_lo) / (b_hi - b_lo) on b_hi, 1 - p on b_lo, the adjacent pair."""
  v = np.asarray(values, np.float64)
  j = min(int(np.searchsorted(v, beta, side="right")) - 1, len(v) - 2)  # v[j] <= beta <= v[j + 1]
  out = np.zeros(len(v))
  out[j + 1] = (beta - v[j]) / (v[j + 1] - v[j])
  out[j] = 1.0 - out[j + 1]
  return out


def set_random_logits(model, seed, bias=0.0):
  """Random logits on every choice (bias > 0 favours larger values), random beta on SDQ choices.

  Returns name -> NumPy probabilities, (channels, candidates) for per-channel choices.
  """
  rng = np.random.default_rng(seed)
  probs = {}
  for name, choice in model.choices.items():
    if isinstance(choice, SDQChoice):
      if choice.fixed:
        probs[name] = np.ones(1)
        continue
      beta = np.float32(rng.uniform(choice.values[0], choice.values[-1]))
      choice.logits[...] = jnp.asarray(beta)
      probs[name] = sdq_probs(choice.values, float(beta))
      continue
    shape = choice.logits[...].shape
    logits = rng.normal(size=shape) + bias * np.arange(shape[-1])
    choice.logits[...] = jnp.asarray(logits, jnp.float32)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    probs[name] = e / e.sum(-1, keepdims=True)
  return probs


def all_assignments(model):
  """Every discrete assignment: (name -> candidate index (a tuple per channel), name -> value)."""
  names = list(model.choices.keys())
  axes = []
  for n in names:
    c = model.choices[n]
    idx = range(len(c.values))
    per_channel = getattr(c, "per_channel", False) and not c.fixed
    axes.append(list(itertools.product(idx, repeat=c.logits[...].shape[0])) if per_channel else list(idx))
  for combo in itertools.product(*axes):
    values = {n: (tuple(model.choices[n].values[i] for i in ix) if isinstance(ix, tuple)
                  else model.choices[n].values[ix]) for n, ix in zip(names, combo)}
    yield dict(zip(names, combo)), values


def assignment_prob(probs, idx):
  p = 1.0
  for name, ix in idx.items():
    p *= math.prod(probs[name][c, i] for c, i in enumerate(ix)) if isinstance(ix, tuple) else probs[name][ix]
  return p


# ---------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("case", sorted(CASES))
def test_expected_cost_equals_brute_force_enumeration(case, riscv_model):
  model, layers_of = build(case)
  probs = set_random_logits(model, seed=len(case))
  tables = cost.build_cost_tables(model, riscv_model)
  brute = {m: 0.0 for m in cost.METRICS}
  n, total_p = 0, 0.0
  for idx, ch in all_assignments(model):
    p = assignment_prob(probs, idx)
    c = ref_cost(layers_of(ch), riscv_model)
    for m in cost.METRICS:
      brute[m] += p * c[m]
    total_p += p
    n += 1
    if n % 7 == 0:  # discrete_costs (used by the budget projection) reads the same grids one-hot
      d = search.discrete_costs(tables, ch, model, cost.METRICS)
      for m in cost.METRICS:
        assert d[m] == pytest.approx(c[m], rel=1e-9), (m, ch)
  assert n == math.prod(len(c.values) for c in model.choices.values()) and n >= 64
  assert total_p == pytest.approx(1.0, rel=1e-12)
  expected = cost.expected_costs(tables, cost.table_arrays(tables, cost.METRICS), model.probs())
  for m in cost.METRICS:
    assert float(expected[m]) == pytest.approx(brute[m], rel=1e-5), m


def test_cheapest_network_with_skippable_layers_is_the_enumerated_minimum(riscv_model):
  model, layers_of = build("digits_skip")
  tables = cost.build_cost_tables(model, riscv_model)
  least = min(ref_cost(layers_of(ch), riscv_model)["latency_s"] for _, ch in all_assignments(model))
  choices, found = search.cheapest_network(model, tables, "latency_s")
  assert found == pytest.approx(least, rel=1e-9) and choices["convs.1.keep"] == choices["convs.2.keep"] == 0
  assert search.cost_lower_bound(tables, ["latency_s"])["latency_s"] <= least * (1 + 1e-9)


def test_fill_budget_leaves_a_skipped_layers_choices_alone(riscv_model):
  """Budget left over buys nothing on a skipped layer: its bits do nothing, and a width above the channels it is
  handed only adds zero channels for the next layer to read (and pay for). Here the search was unsure of layer
  1's width (0.6 / 0.4) and sure it skips the layer: the budget would pay for the wider skipped layer, the
  likeliest move, but goes to keeping the layer instead."""
  model, layers_of = build("digits_skip")
  tables = cost.build_cost_tables(model, riscv_model)
  probs = {n: np.eye(len(c.values))[-1] for n, c in model.choices.items()}  # every choice at its largest...
  for n in ("convs.1.keep", "convs.1.w_bits", "convs.1.a_bits"):  # ...but layer 1: skipped, 2-bit, narrow
    probs[n] = np.eye(len(model.choices[n].values))[0]
  probs["convs.1.width"] = np.asarray([0.6, 0.4])
  choices = {n: model.choices[n].values[int(np.argmax(p))] for n, p in probs.items()}
  lat = lambda ch: ref_cost(layers_of(ch), riscv_model)["latency_s"]
  limit = lat(dict(choices, **{"convs.1.width": 8})) * (1 + 1e-9)  # the skipped layer wider: within the budget
  kept = dict(choices, **{"convs.1.keep": 1})
  assert lat(choices) < lat(kept) < limit < lat(dict(kept, **{"convs.1.width": 8}))
  got, _ = search.fill_budget(model, tables, [search.Constraint("latency_s", limit)], probs, choices)
  assert (got["convs.1.keep"], got["convs.1.width"]) == (1, 4) and lat(got) <= limit  # then its bits grew


def per_channel_groups(layers):
  """A layer with per-channel weight bits runs as one sub-layer per distinct bit-width among its kept
  channels (the first ``cout``), each with that many output channels (depthwise: input channels too)."""
  out = []
  for spec, w, a in layers:
    if not isinstance(w, tuple):
      out.append((spec, w, a))
      continue
    kept = w[:spec.cout]
    for b in sorted(set(kept)):
      n = kept.count(b)
      out.append((LayerSpec(spec.kind, n if spec.kind == "dwconv" else spec.cin, n, spec.kernel, spec.stride,
                            spec.in_h, spec.in_w, spec.name), b, a))
  return out


def test_per_channel_expected_cost_equals_brute_force_on_a_linear_model():
  """Per-channel weight bits: nas.search.cost reads each bit-width's sub-layer cost at the EXPECTED channel count,
  which is exact when cost is linear in the output channels with C(0) = 0: true of the compute-only MPIC
  model (MACs / table, no DMA, no overhead) and of weight bytes. (2 widths * 2^2 bits * 2) * (2 * 2^4 * 2) = 1024 networks."""
  space = SearchSpace(w_bits=(2, 4), a_bits=(4, 8), width_mults=(0.5, 1.0), first_layer_bits=None,
                      last_layer_bits=8, per_channel_w=True)
  model = models.build_model("digits_cnn", space, widths=(2, 4), strides=(1, 2))
  assert model.choices["convs.1.w_bits"].logits[...].shape == (4, 2)
  probs = set_random_logits(model, seed=3)
  hw = compute_only_mpic()
  tables = cost.build_cost_tables(model, hw)
  brute = {m: 0.0 for m in cost.METRICS}
  n = 0
  for idx, ch in all_assignments(model):
    c = ref_cost(per_channel_groups(digits_layers(ch, (8, 8, 1), (1, 2))), hw)
    for m in cost.METRICS:
      brute[m] += assignment_prob(probs, idx) * c[m]
    n += 1
  assert n == 1024
  expected = cost.expected_costs(tables, cost.table_arrays(tables, cost.METRICS), model.probs())
  for m in cost.METRICS:
    assert float(expected[m]) == pytest.approx(brute[m], rel=1e-5), m


@pytest.mark.parametrize("case", sorted(CASES))
def test_architecture_layers_match_hand_topology(case, riscv_model):
  model, layers_of = build(case)
  rng = np.random.default_rng(0)
  for _ in range(5):
    ch = {n: c.values[rng.integers(len(c.values))] for n, c in model.choices.items()}
    hand = deployed(layers_of(ch), ch) if case == "digits_skip" else layers_of(ch)
    got = [(l.spec, l.w_bits, l.a_bits) for l in model.architecture(ch).layers]
    assert got == hand
    assert cost.architecture_cost(model.architecture(ch), riscv_model) == pytest.approx(
        {k: v for k, v in ref_cost(hand, riscv_model).items() if k != "weight_bytes"}, rel=1e-12)


def compute_only_mpic():
  return riscv.MPIC(name="mpic", bits=[2, 4, 8], macs_per_cycle=MPIC_TABLE, freq_hz=250e6, power_w=5.3825e-3)


def test_reference_architecture_cost_by_hand():
  model, _ = build("digits_tiny")
  # Reference: every layer W8A8 at base width. Input 8x8x1, 'SAME' padding.
  #   convs.0: 3x3, 1 -> 4, stride 1, out 8x8:  8*8 * 9 * 1 * 4 = 2304 MACs
  #   convs.1: 3x3, 4 -> 8, stride 2, out 4x4:  4*4 * 9 * 4 * 8 = 4608 MACs
  #   head:    dense 8 -> 10:                   8 * 10         =   80 MACs
  # 6992 MACs at table[a=8][w=8] = 2.1 MACs/cycle, 250 MHz: 6992 / 2.1 / 250e6 = 1.33180952e-5 s.
  latency = 6992 / 2.1 / 250e6
  got = cost.architecture_cost(model.reference_architecture(), compute_only_mpic())
  assert got["latency_s"] == pytest.approx(latency, rel=1e-12)
  assert got["energy_j"] == pytest.approx(latency * 5.3825e-3, rel=1e-12)
  assert cost.architecture_metrics(model.reference_architecture())["macs"] == 6992


def test_mixed_architecture_cost_by_hand():
  """Distinct table cells per layer, so a transposed table (rows weight bits) would not pass."""
  model, _ = build("digits_tiny")
  ch = {"convs.0.width": 2, "convs.0.w_bits": 2, "convs.0.a_bits": 4,
        "convs.1.width": 4, "convs.1.w_bits": 4, "convs.1.a_bits": 8, "head.w_bits": 8, "head.a_bits": 8}
  #   convs.0: 8*8 * 9 * 1 * 2 = 1152 MACs at table[a=4][w=2] = 3.9
  #   convs.1: 4*4 * 9 * 2 * 4 = 1152 MACs at table[a=8][w=4] = 2.3
  #   head:    4 * 10          =   40 MACs at table[a=8][w=8] = 2.1
  # (1152/3.9 + 1152/2.3 + 40/2.1) / 250e6 = (295.3846 + 500.8696 + 19.0476) / 250e6 = 3.2612073e-6 s
  latency = (1152 / 3.9 + 1152 / 2.3 + 40 / 2.1) / 250e6
  got = cost.architecture_cost(model.architecture(ch), compute_only_mpic())
  assert got["latency_s"] == pytest.approx(latency, rel=1e-12)
  assert got["latency_s"] == pytest.approx(3.2612073e-6, rel=1e-7)


def _tiny_with_tables(riscv_model, seed, bias):
  model, _ = build("digits_tiny")
  probs = set_random_logits(model, seed=seed, bias=bias)
  tables = cost.build_cost_tables(model, riscv_model)
  costs = [(ch, ref_cost(digits_layers(ch, (8, 8, 1), (1, 2)), riscv_model)) for _, ch in all_assignments(model)]
  return model, probs, tables, costs


def _argmax(model, probs):
  return {n: c.values[int(np.argmax(probs[n]))] for n, c in model.choices.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_to_budget_moves_nothing_when_argmax_fits(seed, riscv_model):
  model, probs, tables, _ = _tiny_with_tables(riscv_model, seed, bias=1.0)
  argmax = _argmax(model, probs)
  own = ref_cost(digits_layers(argmax, (8, 8, 1), (1, 2)), riscv_model)
  limits = [search.Constraint("latency_s", own["latency_s"] * (1 + 1e-9)),
            search.Constraint("weight_bytes", own["weight_bytes"] * (1 + 1e-9))]
  choices, moves = search.fit_to_budget(model, tables, limits, probs)
  assert moves == 0 and choices == argmax


@pytest.mark.parametrize("seed,fractions", [
    (0, {"latency_s": 0.3}), (1, {"latency_s": 0.6}), (2, {"energy_j": 0.1}), (4, {"weight_bytes": 0.0}),
    (3, {"latency_s": 0.4, "weight_bytes": 0.4}),
    # The second budget is the binding one: a projection that only looked at the first would stop early.
    (5, {"latency_s": 0.9, "weight_bytes": 0.05}),
])
def test_fit_to_budget_result_is_within_budget(seed, fractions, riscv_model):
  model, probs, tables, costs = _tiny_with_tables(riscv_model, seed, bias=2.0)
  argmax = _argmax(model, probs)
  own = ref_cost(digits_layers(argmax, (8, 8, 1), (1, 2)), riscv_model)
  cheapest = {m: min(c[m] for _, c in costs) for m in fractions}
  # Limits between the cheapest network (fraction 0: exactly at it, up to 1e-9) and the argmax network.
  limits = [search.Constraint(m, (cheapest[m] + f * (own[m] - cheapest[m])) * (1 + 1e-9))
            for m, f in fractions.items()]
  assert all(own[c.metric] > c.limit for c in limits)  # the argmax really is over budget
  choices, moves = search.fit_to_budget(model, tables, limits, probs)
  got = ref_cost(digits_layers(choices, (8, 8, 1), (1, 2)), riscv_model)
  for c in limits:
    assert got[c.metric] <= c.limit, (c, got)
  assert moves >= 1
  # Each move takes one choice one candidate down from the argmax: #moves = total candidates stepped down.
  steps = sum(model.choices[n].values.index(argmax[n]) - model.choices[n].values.index(choices[n])
              for n in choices)
  assert all(choices[n] <= argmax[n] for n in choices) and steps == moves


@pytest.mark.parametrize("metric", ["latency_s", "energy_j", "weight_bytes"])
def test_check_feasible_raises_below_cheapest_network(metric, riscv_model):
  model, _, tables, costs = _tiny_with_tables(riscv_model, 0, bias=0.0)
  cheapest = min(c[metric] for _, c in costs)
  search.check_feasible(model, tables, [search.Constraint(metric, cheapest * (1 + 1e-6))])  # does not raise
  with pytest.raises(ValueError, match=r"budget\.fraction") as info:
    search.check_feasible(model, tables, [search.Constraint(metric, cheapest * 0.5)])
  assert metric in str(info.value)


def test_fit_to_budget_steps_over_a_plateau_of_equal_costs():
  """A SIMD target that pads channels to 16 costs widths 24 and 32 alike: one candidate down saves nothing, two do."""
  from hardware.cpu import SIMDCPU
  space = SearchSpace(w_bits=(8,), a_bits=(8,), width_mults=(0.5, 0.75, 1.0), first_layer_bits=None,
                      last_layer_bits=None)
  model = models.build_model("digits_cnn", space, widths=(16, 32), strides=(1, 2))
  hw = SIMDCPU("padded", mac_rate=1e9, mem_bw=1e12, layer_overhead_s=0.0, e_mac_j=0, e_byte_j=0, static_power_w=0,
               storage_bits=[8], cin_multiple=16, cout_multiple=16)
  tables = cost.build_cost_tables(model, hw)
  probs = set_random_logits(model, seed=0, bias=50.0)  # the argmax is every largest candidate
  argmax = _argmax(model, probs)
  assert argmax["convs.1.width"] == 32
  lower = {w: search.discrete_costs(tables, dict(argmax, **{"convs.1.width": w}), model, ["latency_s"])["latency_s"]
           for w in (16, 24, 32)}
  assert lower[24] == lower[32] > lower[16]
  choices, moves = search.fit_to_budget(model, tables, [search.Constraint("latency_s", lower[16] * (1 + 1e-9))], probs)
  assert choices == dict(argmax, **{"convs.1.width": 16}) and moves == 1
