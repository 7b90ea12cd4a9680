"""A cost model's per-inference cost (``inference_cost``: the runtime's call, quantising the input) against
hand-worked figures, and its place in every network cost: expected cost, discrete cost, the reference and the
budget, and the conformance check."""
import numpy as np
import pytest

from hardware import check
from hardware.base import Cost, LayerSpec, inference_cost
from hardware.cpu import SIMDCPU

from nas.search import cost

from nas import models

from nas import search
from nas.models.space import SearchSpace

CPU = dict(name="t", mac_rate={"conv": 1e10, "dwconv": 5e9, "dense": 2e9}, mem_bw=1e10,
           layer_overhead_s=1e-6, e_mac_j=1e-12, e_byte_j=1e-10, static_power_w=2.0)


def test_simd_cpu_inference_cost_by_hand():
  # A 28x28x1 input: 784 elements at 392e6 elements/s = 2.0 us of quantising, plus 2.0 us per call.
  first = LayerSpec("conv", 1, 16, 3, 2, 28, 28, "convs.0")
  m = SIMDCPU(**CPU, inference_overhead_s=2e-6, input_rate=392e6)
  c = m.inference_cost(first)
  assert float(c.latency_s) == pytest.approx(4.0e-6, rel=1e-12)
  # energy: 784 elements x 5 bytes (float32 read, int8 written) x 1e-10 J + 2 W x 4 us = 3.92e-7 + 8e-6
  assert float(c.energy_j) == pytest.approx(784 * 5 * 1e-10 + 2.0 * 4.0e-6, rel=1e-12)
  # At batch 4 the call is shared by four images; the input of each is still quantised.
  c4 = SIMDCPU(**CPU, inference_overhead_s=2e-6, input_rate=392e6, batch_size=4).inference_cost(first)
  assert float(c4.latency_s) == pytest.approx(0.5e-6 + 2.0e-6, rel=1e-12)
  # Defaults: nothing outside the layers.
  zero = SIMDCPU(**CPU).inference_cost(first)
  assert float(zero.latency_s) == 0.0 and float(zero.energy_j) == 0.0


@pytest.mark.parametrize("field, value", [("inference_overhead_s", -1e-6), ("input_rate", 0.0),
                                          ("input_rate", -5.0)])
def test_bad_inference_fields_name_the_field(field, value):
  with pytest.raises(ValueError, match=field):
    SIMDCPU(**CPU, **{field: value})


class _Broken:
  name = "broken"

  def inference_cost(self, layer):
    return Cost(np.float64(np.nan), np.float64(0.0))


def test_non_finite_inference_cost_is_an_error_naming_it():
  with pytest.raises(ValueError, match="inference_cost"):
    inference_cost(_Broken(), LayerSpec("conv", 1, 8, 3, 1, 8, 8))
  with pytest.raises(check.CheckFailed, match="inference_cost"):
    check.check_inference_cost(_Broken())


@pytest.mark.parametrize("model_name, input_elements", [("digits_cnn", 64), ("fmnist_cnn", 784)])
def test_every_network_cost_carries_the_constant_once(model_name, input_elements):
  """The same CPU with and without the per-inference term: every cost differs by exactly the hand-computed
  constant, whatever the choice probabilities; the reference cost too, so budget fractions include it."""
  overhead, rate = 3.0e-6, 1.0e8
  constant = overhead + input_elements / rate
  plain, with_call = SIMDCPU(**CPU), SIMDCPU(**CPU, inference_overhead_s=overhead, input_rate=rate)
  net = models.build_model(model_name, SearchSpace(), seed=0)
  rng = np.random.default_rng(0)
  for c in net.choices.values():  # random architecture distributions
    if not c.fixed:
      c.logits[...] = rng.normal(size=c.logits.shape).astype(np.float32)
  probs = net.probs()
  tables = {k: cost.build_cost_tables(net, m) for k, m in (("plain", plain), ("call", with_call))}
  # One choice-free table at the end (zero for the plain model); the layers' grids are the same.
  assert [t.name for t in tables["call"]][-1] == cost.INFERENCE and tables["call"][-1].keys is None
  assert float(tables["call"][-1].grids["latency_s"]) == pytest.approx(constant, rel=1e-12)
  assert float(tables["plain"][-1].grids["latency_s"]) == 0.0
  exp = {k: cost.expected_costs(t, cost.table_arrays(t, cost.METRICS), probs) for k, t in tables.items()}
  assert float(exp["call"]["latency_s"]) - float(exp["plain"]["latency_s"]) == pytest.approx(constant, rel=1e-4)
  assert float(exp["call"]["weight_bytes"]) == pytest.approx(float(exp["plain"]["weight_bytes"]), rel=1e-6)
  ref = net.reference_architecture()
  ref_costs = {k: cost.architecture_cost(ref, m) for k, m in (("plain", plain), ("call", with_call))}
  assert ref_costs["call"]["latency_s"] - ref_costs["plain"]["latency_s"] == pytest.approx(constant, rel=1e-9)
  # The budget projection reads the same tables one-hot: the reference network costs the direct evaluation.
  d = search.discrete_costs(tables["call"], net.reference, net, ["latency_s"])
  assert d["latency_s"] == pytest.approx(ref_costs["call"]["latency_s"], rel=1e-9)
  # The cheapest network too carries it: its fraction of the reference is (layers + c) / (reference + c).
  _, cheapest = search.cheapest_network(net, tables["call"], "latency_s")
  _, cheapest_plain = search.cheapest_network(net, tables["plain"], "latency_s")
  assert cheapest == pytest.approx(cheapest_plain + constant, rel=1e-9)


def test_models_without_the_method_cost_nothing_outside_layers():
  import hydra
  import omegaconf
  import pathlib
  preset = pathlib.Path(__file__).resolve().parents[2] / "conf" / "hardware" / "riscv.yaml"
  riscv = hydra.utils.instantiate(omegaconf.OmegaConf.load(preset))
  c = inference_cost(riscv, LayerSpec("conv", 1, 8, 3, 1, 8, 8))
  assert float(c.latency_s) == 0.0 and float(c.energy_j) == 0.0
  net = models.build_model("digits_cnn", SearchSpace(), seed=0)
  assert cost.INFERENCE not in [t.name for t in cost.build_cost_tables(net, riscv)]


def test_measured_layers_cost_their_measured_time_monotone_in_channels(tmp_path):
  """A measured shape costs its measured time (never less than a narrower measured one of the same shape); an
  unmeasured shape, a batch above 1 and an N:M layer cost the roofline."""
  import json
  rec = lambda cin, cout, t: {"kind": "conv", "cin": cin, "cout": cout, "kernel": 3, "stride": 2, "in_h": 28,
                              "in_w": 28, "median_s": t}
  f = tmp_path / "m.json"
  f.write_text(json.dumps({"records": [rec(1, 8, 5.0e-6), rec(1, 16, 4.5e-6), rec(1, 24, 6.0e-6)]}))
  plain = SIMDCPU(**CPU)
  lut = SIMDCPU(**CPU, measured_layers=str(f))
  first = LayerSpec("conv", 1, 24, 3, 2, 28, 28)
  got = lut.cost(first, 8, 8, np.array([1, 1, 1, 1]), np.array([8, 16, 24, 12])).latency_s
  roof12 = float(plain.cost(first, 8, 8, 1, 12).latency_s)
  # 1->16 measured 4.5 us, below 1->8's 5.0 us: a wider layer costs at least a narrower measured one: 5.0 us.
  assert got.tolist() == [5.0e-6, 5.0e-6, 6.0e-6, roof12]
  other = LayerSpec("conv", 1, 24, 3, 1, 28, 28)  # stride 1: not measured
  assert float(lut.cost(other, 8, 8, 1, 16).latency_s) == float(plain.cost(other, 8, 8, 1, 16).latency_s)
  batch2 = SIMDCPU(**{**CPU, "batch_size": 2}, measured_layers=str(f))
  assert float(batch2.cost(first, 8, 8, 1, 16).latency_s) == float(
      SIMDCPU(**{**CPU, "batch_size": 2}).cost(first, 8, 8, 1, 16).latency_s)
  with pytest.raises(ValueError, match="measured_layers="):
    SIMDCPU(**CPU, measured_layers=str(tmp_path / "missing.json"))
