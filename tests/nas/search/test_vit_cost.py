"""Expected cost of the ViT supernet (nas/search/cost.py over ``ViT.cost_layers``) against brute-force enumeration of
its discrete networks, each costed op by op from its derived architecture.

The cost model here is written for the test and is linear in every channel count: latency = MACs x w x a x 1 ps
x N:M density + values of the element-wise ops x 1 ns. Per-group weight bits are read at the expected number of
active columns per bit-width, which is exact for such a model (nas/search/cost.py), so the contraction must equal the
enumeration whatever the probabilities. Choices outside the enumerated subset are one-hot at random values
(pruned groups among them), so every op kind and both kinds of width (heads, MLP) take part.
"""
import itertools
import pathlib

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hardware.base import ELEMENTWISE_KINDS, Cost, broadcast_choices, require_kind
from hardware import metrics
from hardware.nm import NM
from nas.search import cost
from nas import models
from nas.ops import sparsity
from nas.search import Constraint, discrete_costs, fill_budget
from nas.models.space import SearchSpace

CONF_HW = pathlib.Path(__file__).resolve().parents[3] / "conf" / "hardware"


class LinearCounter:
  """Latency linear in every count (independent of the repository's cost models)."""
  name = "linear_counter"

  def check_bits(self, w, a):
    pass

  def cost(self, layer, w_bits, a_bits, cin, cout):
    require_kind(layer, ("conv", "dense", "linear", "matmul", "softmax", "layernorm"), self.name)
    w, a, ci, co = broadcast_choices(w_bits, a_bits, cin, cout)
    if layer.kind in ELEMENTWISE_KINDS:
      t = layer.elements(ci) * 1e-9 + 0 * (w + a + co)
    else:
      t = layer.macs(ci, co) * w * a * 1e-12 * layer.density
    return Cost(t, 2.0 * t)


def tiny_vit():
  space = SearchSpace(w_bits=(4, 8), a_bits=(4, 8), width_mults=(0.5, 1.0))
  return models.build_model("vit", space, seed=0, input_shape=(4, 4, 1), num_classes=3, patch=2, embed=8,
                            heads=2, mlp=8, depth=1, mlp_groups=2)


def _enumerate_and_compare(enumerate_over, count, seed):
  net = tiny_vit()
  rng = np.random.default_rng(seed)
  names = [n for n, c in net.choices.items() if not c.fixed]
  assert set(enumerate_over) <= set(names), sorted(names)
  fixed_value = {}
  for n in names:
    c = net.choices[n]
    shape = c.logits[...].shape
    if n in enumerate_over:
      c.logits[...] = rng.normal(size=shape).astype(np.float32)
    else:  # one-hot at a random candidate (per group for per-group bits)
      idx = rng.integers(0, shape[-1], size=shape[:-1])
      c.logits[...] = (np.eye(shape[-1], dtype=np.float32)[idx] * 1e4)
      fixed_value[n] = (tuple(c.values[i] for i in idx) if len(shape) == 2 else c.values[int(idx)])
  probs = {n: np.asarray(p, np.float64) for n, p in net.probs().items()}

  # Every assignment of the enumerated choices (per-group choices: every combination over groups).
  axes = []
  for n in enumerate_over:
    c, p = net.choices[n], probs[n]
    if p.ndim == 2:
      combos = list(itertools.product(range(p.shape[1]), repeat=p.shape[0]))
      axes.append([(n, tuple(c.values[i] for i in combo), float(np.prod([p[g, i] for g, i in enumerate(combo)])))
                   for combo in combos])
    else:
      axes.append([(n, c.values[i], float(p[i])) for i in range(len(c.values))])
  model = LinearCounter()
  brute = {"latency_s": 0.0, "weight_bytes": 0.0}
  total_p = 0.0
  fixed_choices = {n: c.values[0] for n, c in net.choices.items() if c.fixed}
  layer_counts = set()
  for assignment in itertools.product(*axes):
    choices = {**fixed_choices, **fixed_value, **{n: v for n, v, _ in assignment}}
    prob = float(np.prod([q for _, _, q in assignment]))
    arch = net.architecture(choices)
    layer_counts.add(len(arch.layers))
    brute["latency_s"] += prob * cost.architecture_cost(arch, model)["latency_s"]
    wb = sum(float(metrics.weight_bytes(spec, w)) for spec, w, _ in arch.layer_specs())
    brute["weight_bytes"] += prob * wb
    total_p += prob
  assert total_p == pytest.approx(1.0, rel=1e-6)  # float32 softmax
  assert len(list(itertools.product(*axes))) == count

  tables = cost.build_cost_tables(net, model)
  expected = cost.expected_costs(tables, cost.table_arrays(tables, cost.METRICS), net.probs())
  assert float(expected["latency_s"]) == pytest.approx(brute["latency_s"], rel=2e-4)
  assert float(expected["weight_bytes"]) == pytest.approx(brute["weight_bytes"], rel=2e-4)
  return tables, layer_counts


def test_expected_cost_equals_enumeration():
  tables, _ = _enumerate_and_compare(
      ["blocks.0.attn.heads", "blocks.0.mlp.width", "blocks.0.attn.q.w_bits", "blocks.0.attn.q.nm",
       "blocks.0.attn.qk.a_bits", "blocks.0.mlp.fc1.w_bits"], 2 * 2 * 9 * 3 * 2 * 9, seed=7)
  kinds = {t.name: t for t in tables}
  assert kinds["blocks.0.attn.softmax"].grids["latency_s"].shape[-1] == 1  # one channel axis (heads x T)
  assert kinds["blocks.0.attn.q"].per_channel and kinds["blocks.0.attn.q"].grids["latency_s"].shape[0] == 3


def test_expected_cost_of_skippable_sub_blocks_equals_enumeration():
  """Where every group of the output projection (of fc2) is pruned, the derived network leaves out the whole
  attention (the MLP's LayerNorm and fc1): enumerating both killers' groups, and the widths and bits of the ops
  they kill, the expected cost (each op weighted by P(alive)) still equals the enumeration."""
  _, layer_counts = _enumerate_and_compare(
      ["blocks.0.attn.proj.w_bits", "blocks.0.mlp.fc2.w_bits", "blocks.0.attn.heads", "blocks.0.mlp.width",
       "blocks.0.attn.v.nm", "blocks.0.mlp.fc1.a_bits"], 9 * 9 * 2 * 2 * 3 * 2, seed=3)
  # Ops in a derived network: patch, 7 of the attention, proj, 3 of the MLP, norm, head, less what is pruned.
  full = 1 + 7 + 1 + 3 + 2
  assert max(layer_counts) <= full and full - 7 - 1 - 3 in layer_counts  # some networks skip both sub-blocks


def test_skipped_sub_blocks_leave_the_derived_architecture():
  net = tiny_vit()
  choices = dict(net.reference)
  choices.update({"blocks.0.attn.proj.w_bits": (0, 0), "blocks.0.mlp.fc2.w_bits": (0, 4)})
  names = [l.spec.name for l in net.architecture(choices).layers]
  assert names == ["patch", "blocks.0.ln2", "blocks.0.mlp.fc1", "blocks.0.mlp.fc2", "norm", "head"]
  choices.update({"blocks.0.attn.proj.w_bits": (8, 0), "blocks.0.mlp.fc2.w_bits": (0, 0)})
  names = [l.spec.name for l in net.architecture(choices).layers]
  assert names == ["patch", "blocks.0.ln1", "blocks.0.attn.q", "blocks.0.attn.k", "blocks.0.attn.v",
                   "blocks.0.attn.qk", "blocks.0.attn.softmax", "blocks.0.attn.av", "blocks.0.attn.proj", "norm",
                   "head"]


def test_reference_and_one_hot_costs_read_from_the_grids_equal_direct_evaluation():
  from nas import search
  net = tiny_vit()
  model = LinearCounter()
  tables = cost.build_cost_tables(net, model)
  for choices in (net.reference, {**net.reference, "blocks.0.attn.heads": 1, "blocks.0.attn.q.nm": 204}):
    direct = cost.architecture_cost(net.architecture(choices), model)["latency_s"]
    grid = search.discrete_costs(tables, choices, net, ["latency_s"])["latency_s"]
    assert grid == pytest.approx(direct, rel=1e-9)
  # The reference is dense W8A8 at base widths: its latency is the hand count of MACs x 64 ps plus the
  # element-wise values x 1 ns. Tokens T = 4 patches + 1 class token = 5; embed 8; 2 heads of 4; MLP 8.
  t, e, h, d, m = 5, 8, 2, 4, 8
  macs = (4 * 4 * 1 * e  # patch: a 2x2 conv, stride 2, 1 -> 8 channels on 4x4 (4 positions x 4 x 1 x 8)
          + 4 * t * e * e  # q, k, v, proj: 5 tokens x 8 x 8
          + 2 * h * t * t * d  # QK^T and AV
          + 2 * t * e * m  # fc1, fc2
          + e * 3)  # head
  values = 3 * t * e + h * t * t  # three layernorms, one softmax over 2 heads x 5 x 5
  ref = cost.architecture_cost(net.reference_architecture(), model)["latency_s"]
  assert ref == pytest.approx(macs * 64e-12 + values * 1e-9, rel=1e-12)


@pytest.mark.parametrize("target", ["riscv", "gpu_throughput"])
def test_budget_filling_takes_nm_to_dense_only_where_it_costs_nothing(target):
  # N:M candidates ascend in density, dense last (like bits and widths): "up" is more network. The filling
  # densifies a pattern only where that costs nothing: on riscv (a pattern costs what dense costs) every linear
  # goes dense; on the A100 at batch 4,096 (2:4 halves the tensor-core time) none does, budget or not.
  net = models.build_model("vit", SearchSpace(w_bits=(4, 8), a_bits=(8,), width_mults=(1.0,)), num_classes=10,
                    input_shape=(28, 28, 1), depth=1, nm_patterns=[[2, 4], [1, 4]])
  two4, one4 = NM(2, 4).code, NM(1, 4).code
  nm_names = [n for n in net.choices if n.endswith(".nm")]
  assert nm_names and all(net.choices[n].values == (one4, two4, sparsity.DENSE) for n in nm_names)
  hw = instantiate(OmegaConf.load(CONF_HW / f"{target}.yaml"), _convert_="all")
  tables = cost.build_cost_tables(net, hw)
  top = {n: (c.values[-1],) * c.logits[...].shape[0] if getattr(c, "per_channel", False) else c.values[-1]
         for n, c in net.choices.items()}  # 8-bit groups, widest, dense
  start = dict(top, **{n: two4 for n in nm_names})  # the same network at 2:4 everywhere
  own = discrete_costs(tables, start, net, ["latency_s"])["latency_s"]
  probs = {n: np.full(np.shape(c.logits[...]), 1.0 / len(c.values)) for n, c in net.choices.items()}
  # Budget: the network's own cost on riscv (nothing to spend); 1.5 x on the GPU, where dense would fit but
  # costs more than the 2:4 the network has, so the filling leaves it.
  limit = own if target == "riscv" else 1.5 * own
  filled, _ = fill_budget(net, tables, [Constraint("latency_s", limit)], probs, start)
  dense = [n for n in nm_names if filled[n] == sparsity.DENSE]
  if target == "riscv":
    assert dense == nm_names and discrete_costs(tables, filled, net, ["latency_s"])["latency_s"] == pytest.approx(own)
  else:
    assert dense == [] and all(filled[n] == two4 for n in nm_names)
