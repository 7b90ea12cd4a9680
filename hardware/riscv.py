"""RISC-V cores with a MAC-per-cycle table per precision and an L2 -> L1 DMA memory hierarchy.

Compute follows the MPIC table (MACs per cycle for each activation x weight precision). Data movement
follows the PULP/DORY execution scheme: weights and activations live in L2 at their packed bit-width and a
DMA copies them into the L1 scratchpad, double-buffered so that transfers overlap compute. Energy is the
core's average power over the layer's latency plus an energy per byte moved by the DMA, so a layer with
little data reuse (1x1, dense) costs relatively more energy than latency and the two fronts differ.

A core without sub-byte SIMD (GAP8) is the same model with an int8-only table: sub-byte data is stored
packed in L2 (fewer DMA bytes) and unpacked in L1 at a cost of cycles per element, so going below 8 bits
saves transfers but no compute.

Transformer kinds: ``linear`` is the MAC loop over ``in_h`` tokens; ``matmul``'s second operand (keys /
values, at ``w_bits``) lives in L2 like a weight tensor (it was written there by the layer that made it) and
is DMA'd and tiled the same way, at the table's (a_bits, w_bits) rate. ``softmax`` and ``layernorm`` are
integer (fixed-point) vector work, ``hardware.kinds.OPS_PER_ELEMENT`` ops per value at
``elementwise_ops_per_cycle`` (I-BERT-style polynomial exp and integer square root: these cores have no
floating-point SIMD path assumed), each value moved L2 -> L1 and back at 16 bits (ASSUMPTION U).

N:M weights: compute is unchanged (the MAC table is for dense kernels; no N:M kernel is assumed); where the
model has a memory term (``dma_bytes_per_cycle``), the weights move L2 -> L1 at their compressed size (kept
values plus index bits, ``hardware.kinds.stored_weight_bits``): fewer DMA bytes and DMA energy, and a
smaller L1 footprint. Without a memory term (PLiNIO's compute-only MPIC) the pattern buys nothing.

References:
  Kim et al., "I-BERT: Integer-only BERT Quantization", ICML 2021 (integer-only softmax and layernorm).
  Ottavi et al., "A Mixed-Precision RISC-V Processor for Extreme-Edge DNN Inference", ISVLSI 2020
  (arXiv 2010.04073); the MAC/cycle table as used by PLiNIO's ``plinio/cost/mpic_latency.py`` (commit 3d6b5e0).
  Burrello et al., "DORY: Automatic End-to-End Deployment of Real-World DNNs on Low-Cost IoT MCUs",
  IEEE TC 2021 (L2 -> L1 tiling with double-buffered DMA).
  Garofalo et al., "PULP-NN", Phil. Trans. R. Soc. A 2020 (int8 MACs/cycle on the GAP8 cluster).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from hardware.base import ELEMENTWISE_KINDS, Cost, LayerSpec, broadcast_choices, require_kind, round_up_to_supported
from hardware.kinds import SEQUENCE_KINDS, elementwise_bytes, elementwise_ops, stored_weight_bits

__all__ = ["MacTableRISCV", "MPIC", "round_up_to_supported"]

KINDS = ("conv", "dwconv", "dense") + SEQUENCE_KINDS
ELEMENTWISE_BITS = 16  # ASSUMPTION (U): 16-bit fixed-point values in and out of softmax / layernorm


class MacTableRISCV:
  """Latency = overhead + max(compute, DMA) cycles / f; energy = latency x power + DMA bytes x energy/byte.

  compute cycles = MACs / table[a][w] + unpack cycles (sub-byte data stored below the kernel precision).
  DMA bytes = weights + input + output at their storage precision; when they do not fit L1, weights are
  tiled into half of L1 and the input is re-streamed once per weight tile (DORY-style, an assumption).
  Bit-widths between table entries run on the next wider kernel (3 bits on the 4-bit kernel). Without
  ``dma_bytes_per_cycle`` the model is PLiNIO's compute-only MPIC model (energy proportional to latency).

  Args:
    name: target name used in results.
    bits: the precisions of the table's rows (activations) and columns (weights).
    macs_per_cycle: table[a][w] of MACs per cycle.
    freq_hz: clock frequency.
    power_w: average power while running a layer (compute or waiting on the DMA).
    storage_bits: precisions data can be stored at in L2 (default: ``bits``); a bit-width is stored at the
      smallest one >= it and unpacked if that is below the kernel precision.
    l1_bytes: L1 scratchpad capacity (None: every layer fits).
    dma_bytes_per_cycle: L2 -> L1 DMA bandwidth (None: no memory term).
    e_dma_byte_j: energy per byte moved L2 -> L1 (read L2 + write L1).
    unpack_cycles_per_element: cycles to unpack one sub-byte element (weights once, inputs per im2col use).
    layer_overhead_cycles: fixed cycles per layer (kernel call, DMA set-up).
    overlap_dma: True for double-buffered DMA (max of compute and DMA), False to add them.
    elementwise_ops_per_cycle: integer vector ops per cycle of softmax / layernorm (default 1: one
      single-issue core).
  """

  def __init__(self, name: str, bits: Sequence[int], macs_per_cycle: Sequence[Sequence[float]],
               freq_hz: float, power_w: float, storage_bits: Optional[Sequence[int]] = None,
               l1_bytes: Optional[float] = None, dma_bytes_per_cycle: Optional[float] = None,
               e_dma_byte_j: float = 0.0, unpack_cycles_per_element: float = 0.0,
               layer_overhead_cycles: float = 0.0, overlap_dma: bool = True,
               elementwise_ops_per_cycle: float = 1.0):
    self.name = name
    self.bits = tuple(int(b) for b in bits)
    self.table = np.asarray([[float(v) for v in row] for row in macs_per_cycle], dtype=np.float64)
    if self.table.shape != (len(self.bits), len(self.bits)):
      raise ValueError(f"macs_per_cycle of {name!r} must be {len(self.bits)}x{len(self.bits)} "
                       f"(rows: activation bits, cols: weight bits {self.bits}); got shape {self.table.shape}.")
    if np.any(self.table <= 0):
      raise ValueError(f"macs_per_cycle of {name!r} must be positive.")
    self.freq_hz = float(freq_hz)
    self.power_w = float(power_w)
    if self.freq_hz <= 0 or self.power_w <= 0:
      raise ValueError(f"freq_hz and power_w of {name!r} must be positive.")
    self.storage_bits = tuple(sorted(int(b) for b in (storage_bits or self.bits)))
    if self.storage_bits[-1] < self.bits[-1]:
      raise ValueError(f"storage_bits of {name!r} must reach the widest kernel precision {self.bits[-1]}.")
    self.l1_bytes = None if l1_bytes is None else float(l1_bytes)
    self.dma_bytes_per_cycle = None if dma_bytes_per_cycle is None else float(dma_bytes_per_cycle)
    for field in ("l1_bytes", "dma_bytes_per_cycle"):
      if getattr(self, field) is not None and getattr(self, field) <= 0:
        raise ValueError(f"{field} of {name!r} must be positive or null.")
    self.e_dma_byte_j = float(e_dma_byte_j)
    self.unpack_cycles_per_element = float(unpack_cycles_per_element)
    self.layer_overhead_cycles = float(layer_overhead_cycles)
    if min(self.e_dma_byte_j, self.unpack_cycles_per_element, self.layer_overhead_cycles) < 0:
      raise ValueError(f"e_dma_byte_j, unpack_cycles_per_element and layer_overhead_cycles of {name!r} "
                       "must be >= 0.")
    self.overlap_dma = bool(overlap_dma)
    self.elementwise_ops_per_cycle = float(elementwise_ops_per_cycle)
    if not self.elementwise_ops_per_cycle > 0:
      raise ValueError(f"elementwise_ops_per_cycle={elementwise_ops_per_cycle} of {name!r} must be > 0 (e.g. 1 for "
                       f"one single-issue core, the core count for a cluster).")

  @property
  def bits_monotone(self) -> bool:
    """Fewer bits never cost more on a core that runs packed data natively (MPIC: its table rises as bits
    fall), but not on one that unpacks sub-byte data (GAP8): unpacking costs cycles."""
    return self.unpack_cycles_per_element == 0

  def check_bits(self, w_bits, a_bits) -> None:
    round_up_to_supported(w_bits, self.bits, "w_bits", self.name)
    round_up_to_supported(a_bits, self.bits, "a_bits", self.name)

  def _precisions(self, w, a):
    w_run = round_up_to_supported(w, self.bits, "w_bits", self.name)
    a_run = round_up_to_supported(a, self.bits, "a_bits", self.name)
    w_store = round_up_to_supported(w, self.storage_bits, "w_bits", self.name)
    a_store = round_up_to_supported(a, self.storage_bits, "a_bits", self.name)
    return w_run, a_run, np.minimum(w_store, w_run), np.minimum(a_store, a_run)

  def compute_cycles(self, layer: LayerSpec, w_bits, a_bits, cin, cout) -> np.ndarray:
    """Cycles of the MAC loop plus unpacking of sub-byte data (no DMA, no overhead)."""
    require_kind(layer, KINDS, self.name)
    w, a, ci, co = broadcast_choices(w_bits, a_bits, cin, cout)
    if layer.kind in ELEMENTWISE_KINDS:  # bit-widths ignored: fixed-point vector work
      return elementwise_ops(layer, ci) / self.elementwise_ops_per_cycle + 0.0 * (w + a + co)
    w_run, a_run, w_store, a_store = self._precisions(w, a)
    wi = np.searchsorted(self.bits, w_run)
    ai = np.searchsorted(self.bits, a_run)
    cycles = layer.macs(ci, co) / self.table[ai, wi]
    if self.unpack_cycles_per_element > 0:
      # Weights are unpacked once; each input element is unpacked every time im2col reads it (k^2 / s^2).
      reuse = layer.kernel * layer.kernel / float(layer.stride * layer.stride)
      unpacked = (layer.weight_count(ci, co) * (w_store < w_run)
                  + layer.input_count(ci, co) * reuse * (a_store < a_run))
      cycles = cycles + self.unpack_cycles_per_element * unpacked
    return cycles

  def dma_bytes(self, layer: LayerSpec, w_bits, a_bits, cin, cout) -> np.ndarray:
    """Bytes the DMA moves between L2 and L1 for one image, at the storage precision."""
    require_kind(layer, KINDS, self.name)
    w, a, ci, co = broadcast_choices(w_bits, a_bits, cin, cout)
    if layer.kind in ELEMENTWISE_KINDS:  # rows stream through L1 in tiles: each value moves once each way
      return elementwise_bytes(layer, ci, ELEMENTWISE_BITS) + 0.0 * (w + a + co)
    _, _, w_store, a_store = self._precisions(w, a)
    if layer.nm is not None:
      w_store = stored_weight_bits(layer, w_store)  # kept values plus index bits; compute stays dense
    weights = layer.weight_count(ci, co) * w_store / 8.0
    inputs = layer.input_count(ci, co) * a_store / 8.0
    outputs = layer.output_count(co) * a_store / 8.0  # requantised to this layer's activation precision
    if self.l1_bytes is None:
      return weights + inputs + outputs
    weight_tiles = np.maximum(1.0, np.ceil(weights / (self.l1_bytes / 2.0)))
    fits = weights + inputs + outputs <= self.l1_bytes
    return weights + outputs + inputs * np.where(fits, 1.0, weight_tiles)

  def cycles(self, layer: LayerSpec, w_bits, a_bits, cin, cout) -> np.ndarray:
    """Total cycles of the layer: overhead plus compute and DMA (overlapped or added)."""
    compute = self.compute_cycles(layer, w_bits, a_bits, cin, cout)
    if self.dma_bytes_per_cycle is None:
      return compute + self.layer_overhead_cycles
    dma = self.dma_bytes(layer, w_bits, a_bits, cin, cout) / self.dma_bytes_per_cycle
    busy = np.maximum(compute, dma) if self.overlap_dma else compute + dma
    return busy + self.layer_overhead_cycles

  def cost(self, layer: LayerSpec, w_bits, a_bits, cin, cout) -> Cost:
    latency = self.cycles(layer, w_bits, a_bits, cin, cout) / self.freq_hz
    energy = latency * self.power_w
    if self.dma_bytes_per_cycle is not None and self.e_dma_byte_j > 0:
      energy = energy + self.dma_bytes(layer, w_bits, a_bits, cin, cout) * self.e_dma_byte_j
    return Cost(latency_s=latency, energy_j=energy)


# The class name the `riscv` preset has always used; MPIC is this model with the MPIC table.
MPIC = MacTableRISCV
