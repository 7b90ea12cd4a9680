"""Target-independent metrics of a layer: weight bytes, activation bytes, MACs and BOPs."""
from __future__ import annotations

import numpy as np

from typing import Optional, Sequence

from hardware.base import LayerSpec
from hardware.nm import NM


def nm_index_bits(nm) -> int:
  """Metadata bits per kept weight of an N:M pattern (``hardware.nm.NM.index_bits``); 0 when dense."""
  return 0 if nm is None else NM.parse(nm).index_bits


def weight_bytes(layer: LayerSpec, w_bits, cin=None, cout=None) -> np.ndarray:
  """Bytes of packed weights at ``w_bits`` (no bias, no padding). An N:M layer stores ``density`` of its
  weights, each with its ``nm_index_bits`` of position metadata. A ``matmul``'s second operand is made at run
  time: no stored weights."""
  count = layer.weight_count(cin, cout)
  if layer.kind == "matmul":
    return 0 * count * np.asarray(w_bits, dtype=np.float64)
  bits = np.asarray(w_bits, dtype=np.float64) + nm_index_bits(layer.nm)
  return count * layer.density * bits / 8.0


def input_bytes(layer: LayerSpec, a_bits, cin=None, cout=None) -> np.ndarray:
  """Bytes of one image's packed input activations at ``a_bits`` (``cout`` sets a matmul's heads)."""
  return layer.input_count(cin, cout) * np.asarray(a_bits, dtype=np.float64) / 8.0


def output_bytes(layer: LayerSpec, out_bits, cout=None) -> np.ndarray:
  """Bytes of one image's packed output activations at ``out_bits``."""
  return layer.output_count(cout) * np.asarray(out_bits, dtype=np.float64) / 8.0


def macs(layer: LayerSpec, cin=None, cout=None) -> np.ndarray:
  return layer.macs(cin, cout)


def bops(layer: LayerSpec, w_bits, a_bits, cin=None, cout=None) -> np.ndarray:
  """Bit operations, MACs x w_bits x a_bits (the usual mixed-precision complexity measure, e.g. EdMIPS)."""
  return layer.macs(cin, cout) * np.asarray(w_bits, dtype=np.float64) * np.asarray(a_bits, dtype=np.float64)


def activation_peak_bytes(layers: Sequence[LayerSpec], a_bits: Sequence, out_bits: Optional[Sequence] = None,
                          cins: Optional[Sequence] = None, couts: Optional[Sequence] = None,
                          last_out_bits: float = 8.0) -> np.ndarray:
  """Peak activation memory of a network: max over layers of (input + output bytes) at their bit-widths.

  This is the buffer a layer-by-layer executor needs when a layer's input and output are live together
  and nothing else is (a chain; residual branches that stay live are not counted).

  Args:
    layers: the network's layers in execution order.
    a_bits: per layer, the bit-width of its input activations (scalars or arrays that broadcast).
    out_bits: per layer, the bit-width its output is stored at. Default: the next layer's ``a_bits``
      (the output is requantised for its consumer), and ``last_out_bits`` for the last layer.
    cins: per layer input channels (default: each layer's nominal ``cin``); arrays broadcast.
    couts: per layer output channels (default: each layer's nominal ``cout``).
    last_out_bits: storage precision of the last layer's output when ``out_bits`` is not given.

  Returns:
    The peak bytes (an array of the broadcast shape of the per-layer arguments).

  References:
    The peak-activation-memory constraint of MCU NAS, e.g. Lin et al., "MCUNet", NeurIPS 2020.
  """
  n = len(layers)
  if n == 0:
    raise ValueError("activation_peak_bytes needs at least one layer; got an empty network.")
  for label, seq in (("a_bits", a_bits), ("out_bits", out_bits), ("cins", cins), ("couts", couts)):
    if seq is not None and len(seq) != n:
      raise ValueError(f"activation_peak_bytes: {label} has {len(seq)} entries for {n} layers; give one per layer.")
  if out_bits is None:
    out_bits = list(a_bits[1:]) + [last_out_bits]
  peak = None
  for i, layer in enumerate(layers):
    cin = None if cins is None else cins[i]
    cout = None if couts is None else couts[i]
    if layer.kind == "dwconv" and cout is None:
      cout = cin  # depthwise output channels follow its input channels
    total = input_bytes(layer, a_bits[i], cin, cout) + output_bytes(layer, out_bits[i], cout)
    peak = total if peak is None else np.maximum(peak, total)
  return np.asarray(peak, dtype=np.float64)
