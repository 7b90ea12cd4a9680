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
from hardware.base import CostModel, LayerSpec, choice_grid, inference_cost
from nas.arch import Architecture
from nas.layers import ChoiceKeys

HW_METRICS = ("latency_s", "energy_j")
INFERENCE = "(inference)"  # the name of the choice-free table of a model's per-inference cost
METRICS = HW_METRICS + ("weight_bytes",)


@dataclasses.dataclass(frozen=True)
class LayerCostTable:
  """One layer's cost grids and the choices indexing them.

  Per-layer weight bits: grids of shape (nW, nA, nCin, nCout) over the candidate lists.
  Per-channel weight bits (``per_channel``): grids of shape (nW, nA, nCin, K+1), the cost of a sub-layer of
  k = 0..K output channels at each weight bit-width (k = 0 costs nothing), read at the expected number of
  active channels per bit-width by linear interpolation in k. ``width_values`` are the output-width
  candidates (None: all K channels always active).
  """
  name: str
  keys: ChoiceKeys | None  # None: the network's fixed per-inference cost (grids are scalars), no choice
  grids: Mapping[str, np.ndarray]
  per_channel: bool = False
  width_values: tuple[int, ...] | None = None


def _values(choices, key: str | None, fixed: int) -> tuple[int, ...]:
  return (fixed,) if key is None else choices[key].values


def build_cost_tables(model, cost_model: CostModel) -> list[LayerCostTable]:
  """Every searchable layer's cost grid on ``cost_model``, plus its weight bytes; then, where the model has
  an ``inference_cost`` (a runtime's per-call time, quantising the input), one choice-free table of it."""
  tables = []
  for layer in model.qlayers():
    spec, keys = layer.spec, layer.keys
    w = _values(model.choices, keys.w_bits, 0)
    a = _values(model.choices, keys.a_bits, 0)
    cin = _values(model.choices, keys.cin, spec.cin)
    per_channel = getattr(model.choices[keys.w_bits], "per_channel", False)
    width_key = keys.cin if spec.kind == "dwconv" else keys.cout
    if per_channel:
      counts = np.arange(spec.cout + 1, dtype=np.float64)
      if spec.kind == "dwconv":  # sub-layers of a depthwise layer split its (tied) channels
        grid_spec, cin = dataclasses.replace(spec, cin=spec.cout), (0,)
      else:
        grid_spec = spec
      tables.append(_per_channel_table(cost_model, grid_spec, keys, w, a, cin, counts,
                                       model.choices[width_key].values if width_key else None))
      continue
    cout = _values(model.choices, keys.cout if spec.kind != "dwconv" else None, spec.cout)
    c = choice_grid(cost_model, spec, w, a, cin, cout)
    shape = c.latency_s.shape
    wv = np.asarray(w, np.float64).reshape(-1, 1, 1, 1)
    ci = np.asarray(cin, np.float64).reshape(1, 1, -1, 1)
    co = ci if spec.kind == "dwconv" else np.asarray(cout, np.float64).reshape(1, 1, 1, -1)
    wb = np.broadcast_to(metrics.weight_bytes(spec, wv, ci, co), shape)
    tables.append(LayerCostTable(spec.name, keys, {"latency_s": c.latency_s, "energy_j": c.energy_j,
                                                   "weight_bytes": wb}))
  if getattr(cost_model, "inference_cost", None) is not None:
    fixed = inference_cost(cost_model, model.qlayers()[0].spec)
    tables.append(LayerCostTable(INFERENCE, None, {"latency_s": np.asarray(fixed.latency_s),
                                                   "energy_j": np.asarray(fixed.energy_j),
                                                   "weight_bytes": np.asarray(0.0)}))
  return tables


def _per_channel_table(cost_model, spec: LayerSpec, keys, w, a, cin, counts, width_values) -> LayerCostTable:
  dw = spec.kind == "dwconv"
  k = np.maximum(counts, 1.0)  # k = 0 is zeroed below; evaluate at 1 so the model sees a valid layer
  wv = np.asarray(w, np.float64).reshape(-1, 1, 1, 1)
  av = np.asarray(a, np.float64).reshape(1, -1, 1, 1)
  kv = k.reshape(1, 1, 1, -1)
  ci = kv if dw else np.asarray(cin, np.float64).reshape(1, 1, -1, 1)
  cost_model.check_bits(wv, av)
  c = cost_model.cost(spec, wv, av, ci, kv)
  shape = np.broadcast_shapes(wv.shape, av.shape, ci.shape, kv.shape)
  alive = (counts > 0).reshape(1, 1, 1, -1)
  grids = {"latency_s": np.broadcast_to(c.latency_s, shape) * alive,
           "energy_j": np.broadcast_to(c.energy_j, shape) * alive,
           "weight_bytes": np.broadcast_to(metrics.weight_bytes(spec, wv, ci, kv), shape) * alive}
  for m, g in grids.items():
    if not np.all(np.isfinite(g)) or np.any(g < 0):
      raise ValueError(f"cost model {cost_model.name!r} returned a non-finite or negative {m} for {spec.name!r}.")
  return LayerCostTable(spec.name, keys, grids, per_channel=True,
                        width_values=tuple(width_values) if width_values else None)


def table_arrays(tables: list[LayerCostTable], metric_names) -> list[dict[str, jax.Array]]:
  """The grids of the metrics named, as float32 device arrays (a pytree for the jitted step)."""
  return [{m: jnp.asarray(t.grids[m], jnp.float32) for m in metric_names} for t in tables]


def _interp_last(grid, x, xp):
  """grid[..., x] linearly interpolated at real x in [0, K] (last axis of length K + 1)."""
  kmax = grid.shape[-1] - 1
  x = xp.clip(x, 0.0, float(kmax))
  k0 = xp.clip(xp.floor(x), 0, max(kmax - 1, 0)).astype(np.int32)
  frac = x - k0
  g0 = xp.take(grid, k0, axis=-1)
  g1 = xp.take(grid, xp.minimum(k0 + 1, kmax), axis=-1)
  return g0 * (1.0 - frac) + g1 * frac


def expected_costs(tables: list[LayerCostTable], arrays: list[dict], probs: Mapping, xp=jnp) -> dict:
  """E[metric] of the whole network under independent choice distributions ``probs`` (name -> array).

  Per-layer choices give the exact expectation. Per-channel weight bits use the expected number of
  active channels at each bit-width, E[n_b] = sum_c P(channel c kept by the width) p_c(b), and read the
  cost at that count (exact for costs linear in the channel count). ``xp`` is ``jnp`` inside the jitted
  step and ``numpy`` for discrete checks.
  """
  one = xp.ones((1,), np.float32)
  total = {}
  for t, arr in zip(tables, arrays):
    k = t.keys
    if k is None:  # the fixed per-inference cost
      for m, value in arr.items():
        total[m] = total.get(m, 0.0) + value
      continue
    pa = probs[k.a_bits]
    has_cin_axis = next(iter(arr.values())).shape[2] > 1
    pci = probs[k.cin] if (k.cin is not None and has_cin_axis) else one
    if t.per_channel:
      pw = probs[k.w_bits]  # (K, nW)
      kmax = pw.shape[0]
      if t.width_values is not None:
        width_key = k.cout if k.cout is not None else k.cin
        masks = (np.arange(kmax)[None, :] < np.asarray(t.width_values)[:, None]).astype(np.float32)
        active = probs[width_key] @ masks  # P(channel c is kept)
      else:
        active = xp.ones((kmax,), np.float32)
      n_b = active @ pw  # expected channels per weight bit-width, (nW,)
      for m, grid in arr.items():
        at = xp.stack([_interp_last(grid[b], n_b[b], xp) for b in range(grid.shape[0])])  # (nW, nA, nCin)
        value = xp.einsum("a,i,wai->", pa, pci, at)
        total[m] = total.get(m, 0.0) + value
      continue
    pw = probs[k.w_bits]
    pco = probs[k.cout] if (k.cout is not None and next(iter(arr.values())).shape[3] > 1) else one
    for m, grid in arr.items():
      value = xp.einsum("w,a,i,o,waio->", pw, pa, pci, pco, grid)
      total[m] = total.get(m, 0.0) + value
  return total


def architecture_cost(arch: Architecture, cost_model: CostModel) -> dict[str, float]:
  """True latency and energy of a discrete network on ``cost_model``, by direct evaluation per layer, plus
  the model's per-inference cost (``hardware.base.inference_cost``, zero where it has none)."""
  specs = arch.layer_specs()
  fixed = inference_cost(cost_model, specs[0][0]) if specs else None
  lat = float(fixed.latency_s) if fixed is not None else 0.0
  en = float(fixed.energy_j) if fixed is not None else 0.0
  for spec, w, a in specs:
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
