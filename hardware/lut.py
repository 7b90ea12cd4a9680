"""A measured (or simulated) per-layer lookup table, interpolated in channel counts.

Table format (as published by APQ for BitFusion): a JSON object, optionally gzipped, whose keys are
``"(Cin, Cout, H, k, stride, pad, groups)-W{w}A{a}"`` and values ``{"latency": .., "energy": ..}``.
H is the square input map, groups == Cin marks a depthwise convolution, and keys that are not in this
form (APQ's ``head``/``tail``) are kept in ``extras`` and not used for layers.

Lookup of ``layer`` at (w_bits, a_bits, cin, cout):

* Shape family = (kind, kernel, stride, input map). A dense layer is looked up as a 1x1 conv on a 1x1 map.
* Bits: each bit-width runs at the next precision the table has (3 -> 4, 5 -> 6); if the family lacks
  that pair (APQ's k=7 depthwise rows have no A4), the available pair above it with the smallest w x a.
* Channels: an exact entry is returned as is; otherwise linear interpolation along a measured line of the
  family: fixed cin with cout between two measured values, fixed cout with cin between two measured
  values, or (depthwise) the channel count between two measured ones.
* Anything else is off the table. ``off_table="error"`` raises ValueError naming the layer and its shape.
  ``off_table="scale"`` uses a non-negative least-squares fit of the table, per layer kind and bit pair,
  on MACs, weights and activations (monotone in cin and cout), scaled by the median table/fit ratio over
  the layer's family when the family is in the table (1 otherwise).

Transformer kinds (the table has none; every lookup below is off the table unless a family matches):

* ``linear`` is looked up as a 1x1 convolution over an in_h x 1 map (a token GEMM is one), so with
  ``off_table="scale"`` it gets the convolution fit; ``matmul`` is heads x that lookup per head (cin in,
  head_cols out): an activation operand costs what a weight operand of the same shape costs (ASSUMPTION U:
  BitFusion streams both from its buffers alike).
* ``softmax`` / ``layernorm``: ``hardware.kinds.OPS_PER_ELEMENT`` ops per value, each costing what one MAC of the
  table's W8A8 depthwise layers costs (median over them of latency / MACs and energy / MACs: the table's least
  reused MAC, ASSUMPTION U: BitFusion has no element-wise unit, so these run at the array's worst per-op rate).
  ``elementwise_latency_s_per_op`` / ``elementwise_energy_j_per_op`` override these.

N:M weights: BitFusion's fusion units are a dense array and the table measured dense layers: an N:M layer
costs as dense (ASSUMPTION: no zero-skipping, weights stored dense).

References:
  Wang et al., "APQ: Joint Search for Network Architecture, Pruning and Quantization Policy", CVPR 2020
  (the BitFusion table, github.com/mit-han-lab/apq lut/BitFusion_new.b1.dict).
  Sharma et al., "Bit Fusion: Bit-Level Dynamically Composable Architecture for Accelerating Deep
  Neural Networks", ISCA 2018.
"""
from __future__ import annotations

import ast
import gzip
import json
import os
import re
from collections import defaultdict
from typing import Dict, Tuple

import numpy as np
from scipy import optimize

from hardware.base import ELEMENTWISE_KINDS, Cost, LayerSpec, broadcast_choices, require_kind, round_up_to_supported
from hardware.kinds import SEQUENCE_KINDS, elementwise_ops

KINDS = ("conv", "dwconv", "dense") + SEQUENCE_KINDS
DATA_DIR = os.path.join(os.path.dirname(__file__), "data")
_KEY = re.compile(r"^(\(.*\))-W(\d+)A(\d+)$")


def load_table(path: str):
  """Parse a table into {family: {(w, a): {(cin, cout): (latency, energy)}}} and the unparsed extras."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt") as f:
    raw = json.load(f)
  families: Dict = defaultdict(lambda: defaultdict(dict))
  extras = {}
  for key, value in raw.items():
    match = _KEY.match(key)
    if not match:
      extras[key] = value
      continue
    cin, cout, h, k, stride, _pad, groups = ast.literal_eval(match.group(1))
    if groups == 1:
      kind = "conv"
    elif groups == cin == cout:
      kind = "dwconv"
    else:
      raise ValueError(f"table {path}: entry {key!r} is a grouped convolution, which LayerSpec cannot describe.")
    bits = (int(match.group(2)), int(match.group(3)))
    families[(kind, k, stride, h, h)][bits][(cin, cout)] = (float(value["latency"]), float(value["energy"]))
  return families, extras


def _features(layer: LayerSpec, ci, co) -> np.ndarray:
  """Non-decreasing in cin and cout: a fit with non-negative weights stays monotone."""
  return np.stack(np.broadcast_arrays(np.ones_like(np.asarray(ci, dtype=np.float64)), layer.macs(ci, co),
                                      layer.weight_count(ci, co), layer.input_count(ci), layer.output_count(co)), -1)


class LUTModel:
  """Latency and energy looked up in a per-layer table and converted with fixed units.

  Args:
    name: target name used in results.
    table: table file; a relative path is taken relative to ``hardware/data/``.
    latency_unit_s: seconds per table latency unit.
    energy_unit_j: joules per table energy unit.
    off_table: ``"error"`` or ``"scale"``: what a layer off the table's measured lines gets (module doc).
    elementwise_latency_s_per_op, elementwise_energy_j_per_op: cost of one softmax / layernorm operation; None
      (the default): the median cost of one W8A8 depthwise MAC in the table (module doc).
  """

  bits_monotone = False  # the BitFusion table itself has 400 entries where fewer bits cost more energy

  def __init__(self, name: str, table: str, latency_unit_s: float, energy_unit_j: float, off_table: str = "error",
               elementwise_latency_s_per_op: float | None = None, elementwise_energy_j_per_op: float | None = None):
    self.name = name
    self.table_path = table if os.path.isabs(table) else os.path.join(DATA_DIR, table)
    if not os.path.exists(self.table_path):
      raise ValueError(f"table={table!r} of {name!r} not found at {self.table_path}; give an absolute path or a "
                       f"file in {DATA_DIR}.")
    if off_table not in ("error", "scale"):
      raise ValueError(f"off_table={off_table!r} of {name!r} must be 'error' or 'scale'.")
    self.latency_unit_s = float(latency_unit_s)
    self.energy_unit_j = float(energy_unit_j)
    if self.latency_unit_s <= 0 or self.energy_unit_j <= 0:
      raise ValueError(f"latency_unit_s and energy_unit_j of {name!r} must be positive.")
    self.off_table = off_table
    self.families, self.extras = load_table(self.table_path)
    self.bits = tuple(sorted({b for fam in self.families.values() for pair in fam for b in pair}))
    self._fits = self._fit_scaling() if off_table == "scale" else {}
    self._memo: Dict[Tuple, Tuple[float, float]] = {}
    per_mac = self._depthwise_per_mac()
    given = (elementwise_latency_s_per_op, elementwise_energy_j_per_op)
    if per_mac is None and None in given:
      raise ValueError(f"table {table!r} of {name!r} has no W8A8 depthwise entries to derive the cost of a softmax / "
                       f"layernorm op from; set elementwise_latency_s_per_op and elementwise_energy_j_per_op.")
    self.elementwise_latency_s_per_op = (per_mac[0] * self.latency_unit_s if given[0] is None else float(given[0]))
    self.elementwise_energy_j_per_op = (per_mac[1] * self.energy_unit_j if given[1] is None else float(given[1]))
    if min(self.elementwise_latency_s_per_op, self.elementwise_energy_j_per_op) < 0:
      raise ValueError(f"elementwise_latency_s_per_op and elementwise_energy_j_per_op of {name!r} must be >= 0.")

  def _depthwise_per_mac(self):
    """Median (latency, energy) per MAC, in table units, over the table's W8A8 depthwise entries; None if none."""
    ratios = []
    for (kind, k, s, h, w), fam in self.families.items():
      if kind != "dwconv" or (8, 8) not in fam:
        continue
      probe = LayerSpec(kind, 8, 8, k, s, h, w)
      ratios += [np.asarray(v) / float(probe.macs(ci, co)) for (ci, co), v in fam[(8, 8)].items()]
    return tuple(float(v) for v in np.median(np.stack(ratios), axis=0)) if ratios else None

  def check_bits(self, w_bits, a_bits) -> None:
    round_up_to_supported(w_bits, self.bits, "w_bits", self.name)
    round_up_to_supported(a_bits, self.bits, "a_bits", self.name)

  @staticmethod
  def family_key(layer: LayerSpec) -> Tuple:
    if layer.kind == "dense":
      return ("conv", 1, 1, 1, 1)
    if layer.kind in ("linear", "matmul"):  # a token GEMM is a 1x1 convolution over an in_h x 1 map
      return ("conv", 1, 1, layer.in_h, 1)
    return (layer.kind, layer.kernel, layer.stride, layer.in_h, layer.in_w)

  def _fit_scaling(self) -> Dict:
    """NNLS per (kind, bit pair) of table value on _features, rows weighted by 1/value (relative error)."""
    rows = defaultdict(list)
    for (kind, k, s, h, w), fam in self.families.items():
      probe = LayerSpec(kind, 8, 8, k, s, h, w)
      for pair, points in fam.items():
        for (ci, co), values in points.items():
          rows[(kind, pair)].append((_features(probe, ci, co), values))
    fits = {}
    for key, items in rows.items():
      x = np.stack([f for f, _ in items])
      y = np.asarray([v for _, v in items])
      fits[key] = np.stack([optimize.nnls(x / y[:, [j]], np.ones(len(y)))[0] for j in (0, 1)], -1)
    return fits

  def _pair(self, fam, kind: str, w: int, a: int) -> Tuple[int, int]:
    available = fam.keys() if fam is not None else [p for (k, p) in self._fits if k == kind]
    above = [p for p in available if p[0] >= w and p[1] >= a]
    if not above:
      raise ValueError(f"{self.name!r} has no entry at or above W{w}A{a} for {kind} layers; widest is {max(available)}.")
    return min(above, key=lambda p: (p[0] * p[1], p))

  def _on_lines(self, kind, points, ci, co):
    """Exact entry or linear interpolation along a measured line; None when off the lines."""
    if (ci, co) in points:
      return np.asarray(points[(ci, co)])
    lines = [(lambda p: p[0] == p[1], lambda p: p[0], ci)] if kind == "dwconv" and ci == co else \
            [(lambda p: p[0] == ci, lambda p: p[1], co), (lambda p: p[1] == co, lambda p: p[0], ci)]
    for on_line, coord, x in lines:
      line = sorted((coord(p), v) for p, v in points.items() if on_line(p))
      if len(line) >= 2 and line[0][0] <= x <= line[-1][0]:
        xs = np.asarray([c for c, _ in line], dtype=np.float64)
        vs = np.asarray([v for _, v in line])
        return np.asarray([np.interp(x, xs, vs[:, j]) for j in (0, 1)])
    return None

  def lookup(self, layer: LayerSpec, w: int, a: int, ci: float, co: float) -> Tuple[float, float]:
    """(latency, energy) in table units for one choice."""
    memo_key = (self.family_key(layer), w, a, ci, co)
    if memo_key in self._memo:
      return self._memo[memo_key]
    key = self.family_key(layer)
    kind = key[0]
    fam = self.families.get(key)
    pair = self._pair(fam, kind, w, a) if fam is not None or self._fits else None
    value = self._on_lines(kind, fam[pair], ci, co) if fam is not None else None
    if value is None:
      shape = f"{layer.kind} k={layer.kernel} stride={layer.stride} {layer.in_h}x{layer.in_w} cin={ci:g} cout={co:g}"
      if self.off_table == "error":
        known = "no entry of this kind, kernel, stride and map size" if fam is None else \
                f"measured (cin, cout) of this family start {sorted(fam[pair])[:4]}"
        raise ValueError(f"layer {layer.name!r} ({shape}) is not in table {self.table_path} ({known}); "
                         f"set off_table: scale in the preset to extrapolate from a fit of the table.")
      coef = self._fits[(kind, pair)]
      probe = LayerSpec(kind, 8, 8, *key[1:])
      value = _features(probe, ci, co) @ coef
      if fam is not None:  # scale the fit to this family's measured entries
        ratios = [np.asarray(v) / (_features(probe, *p) @ coef) for p, v in fam[pair].items()]
        value = value * np.median(np.stack(ratios), axis=0)
    result = (float(value[0]), float(value[1]))
    self._memo[memo_key] = result
    return result

  def cost(self, layer: LayerSpec, w_bits, a_bits, cin, cout) -> Cost:
    require_kind(layer, KINDS, self.name)
    w, a, ci, co = broadcast_choices(w_bits, a_bits, cin, cout)
    if layer.kind in ELEMENTWISE_KINDS:  # bit-widths ignored (module doc)
      ops = elementwise_ops(layer, ci) + 0.0 * (w + a + co)
      return Cost(latency_s=ops * self.elementwise_latency_s_per_op, energy_j=ops * self.elementwise_energy_j_per_op)
    heads = 1.0
    if layer.kind == "matmul":  # heads x one head's GEMM (cin in, head_cols out)
      heads, co = layer.heads(co), np.full_like(co, float(layer.head_cols))
    w_run = round_up_to_supported(w, self.bits, "w_bits", self.name)
    a_run = round_up_to_supported(a, self.bits, "a_bits", self.name)
    if layer.kind == "dwconv":
      ci = co
    combos = np.stack([w_run.ravel(), a_run.ravel(), ci.ravel(), co.ravel()], -1)
    unique, inverse = np.unique(combos, axis=0, return_inverse=True)
    values = np.asarray([self.lookup(layer, int(u[0]), int(u[1]), float(u[2]), float(u[3])) for u in unique])
    values = values.reshape(-1, 2)[inverse.ravel()]
    latency = heads * values[:, 0].reshape(w.shape) * self.latency_unit_s
    energy = heads * values[:, 1].reshape(w.shape) * self.energy_unit_j
    return Cost(latency_s=latency, energy_j=energy)
