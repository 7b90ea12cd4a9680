"""Expected cost of a supernet: per-layer cost grids computed once, contracted with choice probabilities.

A supernet's layer shapes are fixed, so each layer's cost over its grid of choices (weight bits x activation
bits x input width x output width) is a constant computed with NumPy before the search. Inside the jitted
step the expected cost is one small contraction per layer:
E[C] = sum p(w_bits) p(a_bits) p(cin) p(cout) C[w, a, cin, cout].
The choices are sampled independently, so the product of marginals is the exact expectation.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from hardware import metrics
from hardware.base import CostModel, LayerSpec, choice_grid
from nas.arch import Architecture
from nas.layers import ChoiceKeys

HW_METRICS = ("latency_s", "energy_j")
METRICS = HW_METRICS + ("weight_bytes",)


@dataclasses.dataclass(frozen=True)
class LayerCostTable:
  """One layer's cost grids (metric -> array of shape (nW, nA, nCin, nCout)) and the choices indexing them."""
  name: str
  keys: ChoiceKeys
  grids: Mapping[str, np.ndarray]


def _values(choices, key: str | None, fixed: int) -> tuple[int, ...]:
  return (fixed,) if key is None else choices[key].values


def build_cost_tables(model, cost_model: CostModel) -> list[LayerCostTable]:
  """Every searchable layer's cost grid on ``cost_model``, plus its weight bytes."""
  tables = []
  for layer in model.qlayers():
    spec, keys = layer.spec, layer.keys
    w = _values(model.choices, keys.w_bits, 0)
    a = _values(model.choices, keys.a_bits, 0)
    cin = _values(model.choices, keys.cin, spec.cin)
    cout = _values(model.choices, keys.cout if spec.kind != "dwconv" else None, spec.cout)
    c = choice_grid(cost_model, spec, w, a, cin, cout)
    shape = c.latency_s.shape
    wv = np.asarray(w, np.float64).reshape(-1, 1, 1, 1)
    ci = np.asarray(cin, np.float64).reshape(1, 1, -1, 1)
    co = ci if spec.kind == "dwconv" else np.asarray(cout, np.float64).reshape(1, 1, 1, -1)
    wb = np.broadcast_to(metrics.weight_bytes(spec, wv, ci, co), shape)
    tables.append(LayerCostTable(spec.name, keys, {"latency_s": c.latency_s, "energy_j": c.energy_j,
                                                   "weight_bytes": wb}))
  return tables


def table_arrays(tables: list[LayerCostTable], metric_names) -> list[dict[str, jax.Array]]:
  """The grids of the metrics named, as float32 device arrays (a pytree for the jitted step)."""
  return [{m: jnp.asarray(t.grids[m], jnp.float32) for m in metric_names} for t in tables]


def expected_costs(tables: list[LayerCostTable], arrays: list[dict[str, jax.Array]],
                   probs: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """E[metric] of the whole network under independent choice distributions ``probs`` (name -> vector)."""
  one = jnp.ones((1,), jnp.float32)
  total = {}
  for t, arr in zip(tables, arrays):
    k = t.keys
    pw, pa = probs[k.w_bits], probs[k.a_bits]
    pci = probs[k.cin] if k.cin is not None else one
    pco = probs[k.cout] if (k.cout is not None and next(iter(arr.values())).shape[3] > 1) else one
    for m, grid in arr.items():
      value = jnp.einsum("w,a,i,o,waio->", pw, pa, pci, pco, grid)
      total[m] = total.get(m, 0.0) + value
  return total


def architecture_cost(arch: Architecture, cost_model: CostModel) -> dict[str, float]:
  """True latency and energy of a discrete network on ``cost_model``, by direct evaluation per layer."""
  lat = en = 0.0
  for spec, w, a in arch.layer_specs():
    c = cost_model.cost(spec, w, a, spec.cin, spec.cout)
    lat += float(np.asarray(c.latency_s))
    en += float(np.asarray(c.energy_j))
  return {"latency_s": lat, "energy_j": en}


def architecture_metrics(arch: Architecture) -> dict[str, float]:
  """Target-independent metrics of a discrete network: weight bytes, MACs, BOPs, peak activation bytes."""
  wb = macs = bops = peak = 0.0
  for spec, w, a in arch.layer_specs():
    wb += float(metrics.weight_bytes(spec, w))
    macs += float(metrics.macs(spec))
    bops += float(metrics.bops(spec, w, a))
    peak = max(peak, float(metrics.input_bytes(spec, a)))
  return {"weight_bytes": wb, "macs": macs, "bops": bops, "input_peak_bytes": peak}
