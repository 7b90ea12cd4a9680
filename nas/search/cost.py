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
from hardware.nm import NM
from hardware.base import ELEMENTWISE_KINDS, CostModel, LayerSpec, choice_grid, inference_cost
from nas.models.arch import Architecture
from nas.ops.layers import PRUNED

HW_METRICS = ("latency_s", "energy_j")
INFERENCE = "(inference)"  # the name of the choice-free table of a model's per-inference cost
METRICS = HW_METRICS + ("weight_bytes",)


@dataclasses.dataclass(frozen=True)
class OpAxes:
  """The choices one costed op depends on: choice names (None: fixed at the spec's value).

  ``cin_scale`` / ``cout_scale``: an axis is the choice's value times this (a heads choice sets heads x
  head_dim columns). ``nm``: the N:M choice (values ``hardware.nm.NM.code``; None: dense). ``w_groups``: the
  weight-bit choice is per group of this many output columns (1: per channel; None: one per layer); a 0-bit
  candidate prunes its columns. ``w_bits`` / ``a_bits`` None: the op has no bit choice (softmax, layernorm).
  ``dead_if``: the op's result is unused when every group of one of these choices takes its 0 candidate (an
  attention's Q, K, V when its output projection is wholly pruned; a CNN layer whose keep choice skips it):
  it then costs nothing, and its expected cost is weighted by P(alive) = prod_k (1 - prod_g p_kg(0)), exact
  because choices are independent and an op's own choices are not its killers'.
  """
  w_bits: str | None
  a_bits: str | None
  cin: str | None = None
  cout: str | None = None
  cin_scale: int = 1
  cout_scale: int = 1
  nm: str | None = None
  w_groups: int | None = None
  dead_if: tuple[tuple[str, int], ...] = ()  # (choice, index of its 0 candidate) pairs


@dataclasses.dataclass(frozen=True)
class LayerCostTable:
  """One op's cost grids and the choices indexing them.

  Per-layer weight bits: grids of shape (nNM, nW, nA, nCin, nCout) over the candidate lists (nNM: the N:M
  patterns, 1 when dense). Per-group weight bits (``per_channel``; per channel when groups have one column):
  grids of shape (nNM, nW, nA, nCin, K+1), the cost of a sub-layer of k = 0..K output columns at each weight
  bit-width (k = 0 and 0 bits cost nothing), read at the expected number of active columns per bit-width by
  linear interpolation in k. ``width_values`` are the column counts of the width choice ``width_key`` (None:
  all K columns always active). ``keys`` None: the network's fixed per-inference cost (scalar grids).
  """
  name: str
  keys: OpAxes | None
  grids: Mapping[str, np.ndarray]
  per_channel: bool = False
  width_values: tuple[int, ...] | None = None
  width_key: str | None = None


def _values(choices, key: str | None, fixed: int, scale: int = 1) -> tuple[int, ...]:
  return (fixed,) if key is None else tuple(int(v) * scale for v in choices[key].values)


def model_ops(model) -> list[tuple[LayerSpec, OpAxes]]:
  """Every costed op of a supernet with the choices driving it: the model's ``cost_layers()`` where it has one
  (ops without weights, heads-scaled widths, per-group bits), else its searchable layers (``qlayers``)."""
  if hasattr(model, "cost_layers"):
    out = []
    for spec, ax in model.cost_layers():
      cin, cout = ax.get("cin"), ax.get("cout")
      dead_if = tuple((k, model.choices[k].values.index(PRUNED)) for k in ax.get("dead_if", ()))
      out.append((spec, OpAxes(ax.get("w_bits"), ax.get("a_bits"), cin[0] if cin else None,
                               cout[0] if cout else None, cin[1] if cin else 1, cout[1] if cout else 1,
                               ax.get("nm"), ax.get("w_groups"), dead_if)))
    return out
  out = []
  for layer in model.qlayers():
    k = layer.keys
    per_channel = getattr(model.choices[k.w_bits], "per_channel", False)
    killers = model.killers.get(layer.spec.name, ())  # a skippable layer: its keep choice at 0 skips it
    dead_if = tuple((c, model.choices[c].values.index(0)) for c in killers)
    out.append((layer.spec, OpAxes(k.w_bits, k.a_bits, k.cin, k.cout, nm=getattr(k, "nm", None),
                                   w_groups=1 if per_channel else None, dead_if=dead_if)))
  return out


class CostModelError(ValueError):
  """A cost model raised something other than a ValueError while its tables were built: a bug in its code."""


class _naming_the_layer:
  """Re-raises an exception other than ValueError from ``cost_model`` as one sentence naming its class, the file
  that defines it, the layer and the exception (a ValueError is the protocol's way to refuse a layer or a
  bit-width, with its own sentence, and passes through)."""

  def __init__(self, cost_model, layer: str):
    self.cost_model, self.layer = cost_model, layer

  def __enter__(self):
    return self

  def __exit__(self, kind, error, tb):
    if error is None or isinstance(error, ValueError) or not isinstance(error, Exception):
      return False
    import inspect
    cls = type(self.cost_model)
    try:
      where = inspect.getsourcefile(cls) or cls.__module__
    except TypeError:  # a class without a source file
      where = cls.__module__
    text = " ".join(str(error).split())
    text = text if len(text) <= 200 else text[:197] + "..."
    raise CostModelError(
        f"the cost model {cls.__module__}.{cls.__qualname__} ({where}) raised {type(error).__name__}"
        f"{': ' + text if text else ''} while costing layer {self.layer!r}; fix its cost() for that layer "
        f"(python -m hardware.check <its preset YAML> runs the protocol's checks).") from error


def build_cost_tables(model, cost_model: CostModel) -> list[LayerCostTable]:
  """Every costed op's grids on ``cost_model``, plus its weight bytes; then, where the model has an
  ``inference_cost`` (a runtime's per-call time, quantising the input), one choice-free table of it."""
  tables = []
  ops = model_ops(model)
  for spec, ax in ops:
    with _naming_the_layer(cost_model, spec.name):
      tables.append(_op_table(model.choices, cost_model, spec, ax))
  if getattr(cost_model, "inference_cost", None) is not None and ops:
    with _naming_the_layer(cost_model, INFERENCE):
      fixed = inference_cost(cost_model, ops[0][0])
    tables.append(LayerCostTable(INFERENCE, None, {"latency_s": np.asarray(fixed.latency_s),
                                                   "energy_j": np.asarray(fixed.energy_j),
                                                   "weight_bytes": np.asarray(0.0)}))
  return tables


def _patterns(choices, ax: OpAxes) -> list:
  if ax.nm is None:
    return [None]
  return [NM.from_code(v) for v in choices[ax.nm].values]


def _op_table(choices, cost_model, spec: LayerSpec, ax: OpAxes) -> LayerCostTable:
  elementwise = spec.kind in ELEMENTWISE_KINDS
  # Ops without a bit choice (float softmax / layernorm) are costed at a bit-width every target runs; their
  # cost models ignore it.
  w = _values(choices, ax.w_bits, 8)
  a = _values(choices, ax.a_bits, 8)
  tied = spec.kind == "dwconv" or elementwise  # one channel count: cout follows cin
  if ax.w_groups is not None:  # per-group (per-channel) weight bits
    if spec.kind == "dwconv":  # sub-layers of a depthwise layer split its (tied) channels
      grid_spec, cin, width_key, scale = dataclasses.replace(spec, cin=spec.cout), (0,), ax.cin, ax.cin_scale
    else:
      grid_spec, width_key, scale = spec, ax.cout, ax.cout_scale
      cin = _values(choices, ax.cin, spec.cin, ax.cin_scale)
    counts = np.arange(grid_spec.cout + 1, dtype=np.float64)
    width_values = None if width_key is None else tuple(int(v) * scale for v in choices[width_key].values)
    grids = [_per_channel_grids(cost_model, dataclasses.replace(grid_spec, nm=nm), w, a, cin, counts)
             for nm in _patterns(choices, ax)]
    stacked = {m: np.stack([g[m] for g in grids]) for m in grids[0]}
    return LayerCostTable(spec.name, ax, stacked, per_channel=True, width_values=width_values,
                          width_key=width_key)
  cin = _values(choices, ax.cin, spec.cin, ax.cin_scale)
  cout = cin if tied else _values(choices, ax.cout, spec.cout, ax.cout_scale)
  grids = [_layer_grids(cost_model, dataclasses.replace(spec, nm=nm), w, a, cin, cout)
           for nm in _patterns(choices, ax)]
  return LayerCostTable(spec.name, ax, {m: np.stack([g[m] for g in grids]) for m in grids[0]})


def _layer_grids(cost_model, spec: LayerSpec, w, a, cin, cout) -> dict[str, np.ndarray]:
  """(nW, nA, nCin, nCout) grids of one op; a 0-bit (pruned) weight candidate costs nothing."""
  wv = np.asarray(w, np.float64)
  live = wv > 0
  tied = spec.kind == "dwconv" or spec.kind in ELEMENTWISE_KINDS
  shape = (len(w), len(a), len(cin), 1 if tied else len(cout))
  out = {m: np.zeros(shape) for m in METRICS}
  if not live.any():
    return out
  c = choice_grid(cost_model, spec, wv[live], a, cin, cout)
  ci = np.asarray(cin, np.float64).reshape(1, 1, -1, 1)
  co = ci if tied else np.asarray(cout, np.float64).reshape(1, 1, 1, -1)
  wb = metrics.weight_bytes(spec, wv[live].reshape(-1, 1, 1, 1), ci, co)
  for m, g in (("latency_s", c.latency_s), ("energy_j", c.energy_j), ("weight_bytes", wb)):
    out[m][live] = np.broadcast_to(g, (int(live.sum()),) + shape[1:])
  return out


def _per_channel_grids(cost_model, spec: LayerSpec, w, a, cin, counts) -> dict[str, np.ndarray]:
  dw = spec.kind == "dwconv"
  k = np.maximum(counts, 1.0)  # k = 0 is zeroed below; evaluate at 1 so the model sees a valid layer
  wv_all = np.asarray(w, np.float64)
  live = wv_all > 0  # 0 bits: the columns are pruned, no sub-layer
  shape = (len(w), len(a), len(cin), len(counts))
  grids = {m: np.zeros(shape) for m in METRICS}
  if not live.any():
    return grids
  wv = wv_all[live].reshape(-1, 1, 1, 1)
  av = np.asarray(a, np.float64).reshape(1, -1, 1, 1)
  kv = k.reshape(1, 1, 1, -1)
  ci = kv if dw else np.asarray(cin, np.float64).reshape(1, 1, -1, 1)
  cost_model.check_bits(wv, av)
  c = cost_model.cost(spec, wv, av, ci, kv)
  sub = (int(live.sum()),) + shape[1:]
  alive = (counts > 0).reshape(1, 1, 1, -1)
  for m, g in (("latency_s", c.latency_s), ("energy_j", c.energy_j),
               ("weight_bytes", metrics.weight_bytes(spec, wv, ci, kv))):
    g = np.broadcast_to(g, sub) * alive
    if not np.all(np.isfinite(g)) or np.any(g < 0):
      raise ValueError(f"cost model {cost_model.name!r} returned a non-finite or negative {m} for {spec.name!r}.")
    grids[m][live] = g
  return grids


def table_arrays(tables: list[LayerCostTable], metric_names) -> list[dict[str, jax.Array]]:
  """The grids of the metrics named, as float32 device arrays (a pytree for the jitted step)."""
  return [{m: jnp.asarray(t.grids[m], jnp.float32) for m in metric_names} for t in tables]


def _interp_last(grid, x, xp):
  """grid[..., x] linearly interpolated at real x in [0, K] (last axis of length K + 1); ``x`` is a scalar,
  or an array that broadcasts against ``grid[..., 0]`` (one point per leading index, in one gather)."""
  kmax = grid.shape[-1] - 1
  x = xp.clip(x, 0.0, float(kmax))
  k0 = xp.clip(xp.floor(x), 0, max(kmax - 1, 0)).astype(np.int32)
  frac = x - k0
  lead = grid.shape[:-1]
  g0 = xp.take_along_axis(grid, xp.broadcast_to(k0, lead)[..., None], axis=-1)[..., 0]
  g1 = xp.take_along_axis(grid, xp.broadcast_to(xp.minimum(k0 + 1, kmax), lead)[..., None], axis=-1)[..., 0]
  return g0 * (1.0 - frac) + g1 * frac


def expected_costs(tables: list[LayerCostTable], arrays: list[dict], probs: Mapping, xp=jnp) -> dict:
  """E[metric] of the whole network under independent choice distributions ``probs`` (name -> array).

  Per-layer choices give the exact expectation. Per-group (per-channel) weight bits use the expected number
  of active columns at each bit-width, E[n_b] = sum_c P(column c kept by the width) p_{group(c)}(b), and read
  the cost at that count (exact for costs linear in the column count). ``xp`` is ``jnp`` inside the jitted
  step and ``numpy`` for discrete checks.
  """
  one = xp.ones((1,), np.float32)
  total = {}

  def p(key, size):  # a choice's probabilities, or 1 for an axis fixed (of length 1 in the grid)
    return probs[key] if (key is not None and size > 1) else one

  def add(m, value, keys):
    for name, pruned in keys.dead_if:  # weighted by P(the op's result is used)
      value = value * (1.0 - xp.prod(probs[name][..., pruned]))
    total[m] = total.get(m, 0.0) + value

  for t, arr in zip(tables, arrays):
    k = t.keys
    if k is None:  # the fixed per-inference cost
      for m, value in arr.items():
        total[m] = total.get(m, 0.0) + value
      continue
    shape = next(iter(arr.values())).shape  # (nNM, nW, nA, nCin, nCout or K + 1)
    pnm, pa, pci = p(k.nm, shape[0]), p(k.a_bits, shape[2]), p(k.cin, shape[3])
    if t.per_channel:
      kmax = shape[4] - 1
      pw = probs[k.w_bits]  # (G, nW): one row per group of w_groups columns
      rows = np.minimum(np.arange(kmax) // max(k.w_groups, 1), pw.shape[0] - 1)
      pw = pw[rows] if pw.shape[0] != kmax or k.w_groups != 1 else pw  # (K, nW), per column
      if t.width_values is not None:
        masks = (np.arange(kmax)[None, :] < np.asarray(t.width_values)[:, None]).astype(np.float32)
        active = probs[t.width_key] @ masks  # P(column c is kept)
      else:
        active = xp.ones((kmax,), np.float32)
      n_b = active @ pw  # expected columns per weight bit-width, (nW,)
      for m, grid in arr.items():
        at = _interp_last(grid, n_b[None, :, None, None], xp)  # (nNM, nW, nA, nCin): n_b[b] for bit-width b
        add(m, xp.einsum("s,a,i,swai->", pnm, pa, pci, at), k)
      continue
    pw, pco = p(k.w_bits, shape[1]), p(k.cout, shape[4])
    for m, grid in arr.items():
      add(m, xp.einsum("s,w,a,i,o,swaio->", pnm, pw, pa, pci, pco, grid), k)
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
