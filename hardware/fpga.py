"""FPGA accelerators: DSP-packed or bit-serial MAC arrays with on-chip BRAM and off-chip DDR spill.

Two compute schemes, one memory model:

* :class:`DSPPackedFPGA`: each DSP slice does several low-bit MACs per cycle by packing operands into its
  wide multiplier (2 INT8 MACs sharing one operand per DSP48E2, Xilinx WP486; more at <= 4 bits). A
  precision between packing modes runs on the next wider one.
* :class:`BitSerialFPGA`: an integer matmul is w_bits x a_bits binary matmuls (BISMO), so time is
  proportional to w x a and every precision 1..max_bits runs natively.

Memory: each layer may keep ``weight_buffer_bytes`` of weights and ``act_buffer_bytes`` of activations in
BRAM; what does not fit streams from DDR once per image (weights) or is written and read back
(activations). Latency = overhead + max(compute, DDR time): the DDR stream overlaps compute. Energy =
board power x latency + DDR bytes x energy per byte, so layers that spill cost more energy than their
latency alone says.

Transformer kinds: ``linear`` is a GEMM over ``in_h`` tokens on the MAC array (weights in the weight buffer,
read once per batch); ``matmul`` is the same array with both operands activations: the second one (keys /
values, at ``w_bits``) is held with the activations, never in the weight buffer. ``softmax`` and ``layernorm``
run as 16-bit fixed-point vector operations (``hardware.kinds.OPS_PER_ELEMENT`` per value) on the fabric beside
the array at ``elementwise_ops_per_s`` (default: DSPPackedFPGA one op per DSP per cycle, dsp_count x freq_hz;
BitSerialFPGA the overlay's own rate at 16 x 16 bits, binary_macs_per_s / 256), each value read and written at
16 bits in the activation buffer. Efficiencies of kinds a preset leaves out: ``linear`` / ``matmul`` take
``conv``'s (a GEMM reusing each weight over the rows, like a convolution's pixels), ``softmax`` / ``layernorm``
``dense``'s (no reuse). All ASSUMPTIONS (U): no FPGA transformer measurement is used.

N:M weights: ASSUMPTION, both arrays are dense (no zero-skipping in the MAC array, no N:M decompressor in front
of the weight buffer), so an N:M layer costs exactly the dense one: its zeros are multiplied and stored.

Batch size: a layer-serial overlay can run each layer over B = ``batch_size`` images before the next
(weights loaded once, instructions fetched once): the cost is per image at batch B, the overhead and the
weights' DDR traffic shared by the B images, the batch's activations held in (or spilling from) the buffer.

References:
  Fu et al., "Deep Learning with INT8 Optimization on Xilinx Devices", Xilinx WP486, 2017.
  Umuroglu, Rasnayake and Själander, "BISMO: A Scalable Bit-Serial Matrix Multiplication Overlay for
  Reconfigurable Computing", FPL 2018.
  Horowitz, "Computing's Energy Problem", ISSCC 2014 (DRAM energy per access, 45 nm).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from hardware.base import (ELEMENTWISE_KINDS, Cost, LayerSpec, broadcast_choices, check_batch_size, require_kind,
                           round_up_to_supported)
from hardware.kinds import SEQUENCE_KINDS, elementwise_bytes, elementwise_ops

KINDS = ("conv", "dwconv", "dense")  # the kinds a preset must give an efficiency for
ALL_KINDS = KINDS + SEQUENCE_KINDS
DEFAULT_FROM = {"linear": "conv", "matmul": "conv", "softmax": "dense", "layernorm": "dense"}
ELEMENTWISE_BITS = 16  # ASSUMPTION (U): 16-bit fixed-point values in and out of softmax / layernorm


class _OnChipMemory:
  """The BRAM/DDR part shared by both compute schemes; subclasses set ``precisions`` and define
  ``macs_per_second``."""

  def check_bits(self, w_bits, a_bits) -> None:
    round_up_to_supported(w_bits, self.precisions, "w_bits", self.name)
    round_up_to_supported(a_bits, self.precisions, "a_bits", self.name)

  def _init_memory(self, efficiency, weight_buffer_bytes, act_buffer_bytes, ddr_bw, layer_overhead_s,
                   power_w, e_ddr_byte_j, batch_size=1, elementwise_ops_per_s=None):
    self.batch_size = check_batch_size(batch_size, self.name)
    self.efficiency = {k: float(v) for k, v in dict(efficiency).items()}
    missing = [k for k in KINDS if k not in self.efficiency]
    if missing or any(not 0 < v <= 1 for v in self.efficiency.values()):
      raise ValueError(f"efficiency of {self.name!r} needs a value in (0, 1] for each of {KINDS}; missing {missing}.")
    for kind, source in DEFAULT_FROM.items():
      self.efficiency.setdefault(kind, self.efficiency[source])
    self.elementwise_ops_per_s = (self.default_elementwise_ops_per_s() if elementwise_ops_per_s is None
                                  else float(elementwise_ops_per_s))
    if not self.elementwise_ops_per_s > 0:
      raise ValueError(f"elementwise_ops_per_s={elementwise_ops_per_s} of {self.name!r} must be > 0 ops/s, or null "
                       f"for the default from the array's own rate.")
    self.weight_buffer_bytes = float(weight_buffer_bytes)
    self.act_buffer_bytes = float(act_buffer_bytes)
    self.ddr_bw = float(ddr_bw)
    self.layer_overhead_s = float(layer_overhead_s)
    self.power_w = float(power_w)
    self.e_ddr_byte_j = float(e_ddr_byte_j)
    if self.ddr_bw <= 0 or self.power_w <= 0:
      raise ValueError(f"ddr_bw and power_w of {self.name!r} must be positive.")
    if min(self.weight_buffer_bytes, self.act_buffer_bytes, self.layer_overhead_s, self.e_ddr_byte_j) < 0:
      raise ValueError(f"buffers, layer_overhead_s and e_ddr_byte_j of {self.name!r} must be >= 0.")

  def ddr_bytes(self, layer: LayerSpec, w_store, a_store, ci, co) -> np.ndarray:
    """Bytes moved to or from DDR per image: weights beyond the weight buffer (once per batch), the batch's
    activations beyond theirs."""
    b = self.batch_size
    if layer.kind == "matmul":  # the second operand is an activation of each image, never in the weight buffer
      weights = 0.0
      acts = b * (layer.input_count(ci, co) * a_store + layer.weight_count(ci, co) * w_store
                  + layer.output_count(co) * a_store) / 8.0
    else:
      weights = layer.weight_count(ci, co) * w_store / 8.0
      acts = b * (layer.input_count(ci) + layer.output_count(co)) * a_store / 8.0
    # Spilled activations are written by the producer and read by this layer: both count.
    return (np.maximum(weights - self.weight_buffer_bytes, 0.0)
            + 2.0 * np.maximum(acts - self.act_buffer_bytes, 0.0)) / b

  def cost(self, layer: LayerSpec, w_bits, a_bits, cin, cout) -> Cost:
    require_kind(layer, ALL_KINDS, self.name)
    w, a, ci, co = broadcast_choices(w_bits, a_bits, cin, cout)
    if layer.kind == "dwconv":
      ci = co
    if layer.kind in ELEMENTWISE_KINDS:  # bit-widths ignored: fixed-point vector work beside the array
      zero = 0.0 * (w + a + co)
      compute_s = elementwise_ops(layer, ci) / (self.elementwise_ops_per_s * self.efficiency[layer.kind]) + zero
      acts = self.batch_size * elementwise_bytes(layer, ci, ELEMENTWISE_BITS) + zero
      ddr = 2.0 * np.maximum(acts - self.act_buffer_bytes, 0.0) / self.batch_size
    else:  # N:M layers cost as dense (module doc)
      rate, w_store, a_store = self.macs_per_second(w, a)
      compute_s = layer.macs(ci, co) / (rate * self.efficiency[layer.kind])
      ddr = self.ddr_bytes(layer, w_store, a_store, ci, co)
    latency = self.layer_overhead_s / self.batch_size + np.maximum(compute_s, ddr / self.ddr_bw)
    return Cost(latency_s=latency, energy_j=latency * self.power_w + ddr * self.e_ddr_byte_j)


class DSPPackedFPGA(_OnChipMemory):
  """MAC array of DSP slices, each doing ``macs_per_dsp[p]`` MACs per cycle at precision p = max(w, a).

  Args:
    name: target name used in results.
    dsp_count: DSP slices used by the MAC array.
    freq_hz: clock of the MAC array.
    macs_per_dsp: MACs per DSP per cycle for each packing precision in bits (e.g. ``{4: 4, 8: 2}``).
    efficiency: per layer kind, fraction of the array's peak reached (tiling, depthwise under-use).
    weight_buffer_bytes: BRAM for one layer's weights; more spills to DDR.
    act_buffer_bytes: BRAM for one layer's input plus output activations; more spills to DDR.
    ddr_bw: DDR bandwidth in bytes per second.
    layer_overhead_s: fixed time per layer (instruction fetch, pipeline fill).
    power_w: board power charged over the latency.
    e_ddr_byte_j: energy per byte of DDR traffic.
    batch_size: images each layer runs before the next; costs are per image at this batch (default 1).
    elementwise_ops_per_s: 16-bit fixed-point ops per second of softmax / layernorm; None (the default):
      ``dsp_count x freq_hz`` (ASSUMPTION: one op per DSP48E2 per cycle, its one wide multiplier-ALU, WP486).
  """

  bits_monotone = True  # fewer bits: as many or more MACs per DSP, fewer DDR bytes

  def __init__(self, name: str, dsp_count: int, freq_hz: float, macs_per_dsp: Mapping[int, float],
               efficiency: Mapping[str, float], weight_buffer_bytes: float, act_buffer_bytes: float,
               ddr_bw: float, layer_overhead_s: float, power_w: float, e_ddr_byte_j: float, batch_size: int = 1,
               elementwise_ops_per_s: float | None = None):
    self.name = name
    self.dsp_count = int(dsp_count)
    self.freq_hz = float(freq_hz)
    self.macs_per_dsp = {int(k): float(v) for k, v in dict(macs_per_dsp).items()}
    self.precisions = tuple(sorted(self.macs_per_dsp))
    if self.dsp_count <= 0 or self.freq_hz <= 0 or min(self.macs_per_dsp.values()) <= 0:
      raise ValueError(f"dsp_count, freq_hz and macs_per_dsp of {name!r} must be positive.")
    self._init_memory(efficiency, weight_buffer_bytes, act_buffer_bytes, ddr_bw, layer_overhead_s,
                      power_w, e_ddr_byte_j, batch_size, elementwise_ops_per_s)

  def default_elementwise_ops_per_s(self) -> float:
    return self.dsp_count * self.freq_hz

  def macs_per_second(self, w, a):
    w_run = round_up_to_supported(w, self.precisions, "w_bits", self.name)
    a_run = round_up_to_supported(a, self.precisions, "a_bits", self.name)
    p = np.maximum(w_run, a_run)  # packed operands share one DSP mode
    per_dsp = np.vectorize(self.macs_per_dsp.get, otypes=[np.float64])(p)
    return self.dsp_count * per_dsp * self.freq_hz, w_run, a_run


class BitSerialFPGA(_OnChipMemory):
  """Bit-serial MAC array: ``binary_macs_per_s / (w_bits x a_bits)`` MACs per second, any precision 1..max_bits.

  Args:
    name: target name used in results.
    binary_macs_per_s: peak binary (1 x 1 bit) MACs per second of the array.
    max_bits: widest precision the overlay is built for.
    efficiency, weight_buffer_bytes, act_buffer_bytes, ddr_bw, layer_overhead_s, power_w, e_ddr_byte_j,
      batch_size: as in :class:`DSPPackedFPGA`.
    elementwise_ops_per_s: 16-bit ops per second of softmax / layernorm; None (the default): the overlay's
      own rate at 16 x 16 bits, ``binary_macs_per_s / 256`` (ASSUMPTION U: no separate vector unit).
  """

  bits_monotone = True  # time ~ w x a

  def __init__(self, name: str, binary_macs_per_s: float, max_bits: int, efficiency: Mapping[str, float],
               weight_buffer_bytes: float, act_buffer_bytes: float, ddr_bw: float, layer_overhead_s: float,
               power_w: float, e_ddr_byte_j: float, batch_size: int = 1,
               elementwise_ops_per_s: float | None = None):
    self.name = name
    self.binary_macs_per_s = float(binary_macs_per_s)
    self.precisions = tuple(range(1, int(max_bits) + 1))
    if self.binary_macs_per_s <= 0 or int(max_bits) < 1:
      raise ValueError(f"binary_macs_per_s and max_bits of {name!r} must be positive.")
    self._init_memory(efficiency, weight_buffer_bytes, act_buffer_bytes, ddr_bw, layer_overhead_s,
                      power_w, e_ddr_byte_j, batch_size, elementwise_ops_per_s)

  def default_elementwise_ops_per_s(self) -> float:
    return self.binary_macs_per_s / (ELEMENTWISE_BITS * ELEMENTWISE_BITS)

  def macs_per_second(self, w, a):
    w_run = round_up_to_supported(w, self.precisions, "w_bits", self.name)
    a_run = round_up_to_supported(a, self.precisions, "a_bits", self.name)
    return self.binary_macs_per_s / (w_run * a_run), w_run, a_run
