"""GPU with tensor cores: a per-precision roofline with kernel launch overhead and tile padding.

A layer runs on the tensor-core path of the narrowest precision the part has that holds both operands
(INT4, INT8, FP16; a precision the part lacks runs at the next one up, e.g. INT4 on an H100 runs as
INT8). Convolutions and dense layers are implicit GEMMs whose M (output pixels), N (output channels) and
K (input channels) are padded to the MMA tile and the 128-bit alignment of that precision, so an odd
channel count pays for the padding. Depthwise convolutions have no channel reduction for a tensor core to
use and run on the CUDA cores. Batch 1 leaves most small layers bound by memory or launch overhead.

Batch size: GPUs are deployed at batch B > 1, so the cost is per image at batch ``batch_size``: one kernel
runs the whole batch (M grows B-fold before padding to the tile), its launch and weight traffic are shared
by the B images, and the per-image cost is the kernel's time over B (throughput, not the batch's latency).

Transformer kinds: ``linear`` is the same GEMM with M = tokens (``in_h``) x batch, weights read once per
kernel. ``matmul`` is one batched GEMM kernel over batch x heads problems of in_h x cin by cin x head_cols:
each problem pads its own M (``in_h``) to the tile and its K (``cin``) and N (``head_cols``) to the channel
multiple, and both operands are activations of each image (nothing shared by the batch). ``softmax`` and
``layernorm`` run on the CUDA cores (``cuda_core_ops``, their float rate) with ``hardware.kinds.OPS_PER_ELEMENT``
operations per value, reading and writing each value at 16 bits (ASSUMPTION U: FP16 activations around these
kernels in an integer transformer, math in FP32), one kernel launch each.

N:M weights: a part with 2:4 sparse tensor cores at precision p (``sparse_precisions``) runs a layer whose
pattern fits 2:4 (2:4, 1:4, 1:2, 2:8; ``hardware.kinds.fits_2to4``) at twice p's dense rate, its weights
stored as 2:4 (half the values plus 2-bit positions); a sparser pattern runs AS 2:4 and gains nothing more.
Every other case (a part without sparse tensor cores, e.g. Turing; a precision not in the list; a pattern that
does not fit 2:4) costs the layer dense: the kernel is the dense one.

Energy = power x latency, with the board power at its TDP while the layer runs (an upper bound: a small
layer does not draw TDP). This makes energy proportional to latency on a GPU preset; per-op energies for
these parts were not found.

References:
  NVIDIA A100 / H100 / T4 / Jetson Orin datasheets (peak dense tensor-core throughput, bandwidth, TDP).
  NVIDIA/cutlass issue #75 (128-bit alignment of tensor-op operands); apache/tvm PR #6121 (channel
  multiples of INT8/INT4 tensor-core convolution).
  NVIDIA A100 Tensor Core GPU Architecture whitepaper, 2020, and Mishra et al., "Accelerating Sparse Deep
  Neural Networks", arXiv:2104.08378, 2021 (2:4 sparse tensor cores since Ampere: twice the dense math rate).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from hardware.base import (ELEMENTWISE_KINDS, Cost, LayerSpec, broadcast_choices, check_batch_size, require_kind,
                           round_up_to_supported)
from hardware.kinds import SEQUENCE_KINDS, elementwise_bytes, elementwise_ops, fits_2to4
from hardware.metrics import nm_index_bits

KINDS = ("conv", "dwconv", "dense") + SEQUENCE_KINDS
ELEMENTWISE_BITS = 16  # ASSUMPTION (U): FP16 values in and out of softmax / layernorm kernels


def _pad(x: np.ndarray, multiple) -> np.ndarray:
  return np.ceil(x / multiple) * multiple


class TensorCoreGPU:
  """Latency per image = (launch + max(padded MACs x 2 / (peak_ops[p] x efficiency), bytes at p / mem_bw)) / B
  for a kernel over a batch of B = ``batch_size`` images.

  Args:
    name: target name used in results.
    peak_ops: dense tensor-core operations per second (2 per MAC) per precision in bits, e.g.
      ``{4: 1248e12, 8: 624e12, 16: 312e12}``; the widest key is the widest precision the part runs.
    channel_multiple: per precision, the multiple input and output channels are padded to.
    tile_m: MMA tile rows; the output pixels (M) are padded to it.
    efficiency: fraction of peak a real kernel reaches on tensor cores: one number, or one per precision of
      ``peak_ops`` (``python -m hardware.fit_gpu`` fits them to measured layers).
    cuda_core_ops: operations per second of the CUDA cores (depthwise convolutions).
    mem_bw: DRAM bandwidth in bytes per second.
    launch_overhead_s: fixed time per layer (kernel launch).
    power_w: board power charged over the latency (TDP).
    batch_size: images per kernel; costs are per image at this batch (default 1).
    sparse_precisions: precisions (keys of ``peak_ops``) whose tensor cores run 2:4 structured sparsity at
      twice the dense rate; empty (the default): no sparse tensor cores, N:M layers cost as dense.
  """

  # Fewer bits never cost more when channels are multiples of 32 (a narrower MMA is faster and moves fewer
  # bytes); with fewer channels INT4's 32-channel padding can outweigh its 2x rate.
  bits_monotone = True

  def __init__(self, name: str, peak_ops: Mapping[int, float], channel_multiple: Mapping[int, int],
               tile_m: int, efficiency: float | Mapping[int, float], cuda_core_ops: float, mem_bw: float,
               launch_overhead_s: float, power_w: float, batch_size: int = 1, sparse_precisions: Sequence[int] = ()):
    self.name = name
    self.peak_ops = {int(k): float(v) for k, v in dict(peak_ops).items()}
    self.precisions = tuple(sorted(self.peak_ops))
    multiples = {int(k): int(v) for k, v in dict(channel_multiple).items()}
    missing = [p for p in self.precisions if p not in multiples]
    if missing:
      raise ValueError(f"channel_multiple of {name!r} needs an entry for each precision of peak_ops; missing {missing}.")
    self.channel_multiple = multiples
    self.tile_m = int(tile_m)
    if isinstance(efficiency, Mapping):
      self.efficiency = {int(k): float(v) for k, v in dict(efficiency).items()}
      missing = [p for p in self.precisions if p not in self.efficiency]
      if missing:
        raise ValueError(f"efficiency of {name!r} needs an entry for each precision of peak_ops; missing {missing} "
                         "(or give one number for all).")
    else:
      self.efficiency = {p: float(efficiency) for p in self.precisions}
    self.cuda_core_ops = float(cuda_core_ops)
    self.mem_bw = float(mem_bw)
    self.launch_overhead_s = float(launch_overhead_s)
    self.power_w = float(power_w)
    self.batch_size = check_batch_size(batch_size, name)
    self.sparse_precisions = tuple(sorted(int(p) for p in (sparse_precisions or ())))
    unknown = [p for p in self.sparse_precisions if p not in self.peak_ops]
    if unknown:
      raise ValueError(f"sparse_precisions={list(self.sparse_precisions)} of {name!r} names {unknown}, which peak_ops "
                       f"lacks; list only precisions the part runs, e.g. [4, 8] (or [] for no sparse tensor cores).")
    positive = (min(self.peak_ops.values()), self.tile_m, min(self.efficiency.values()), self.cuda_core_ops,
                self.mem_bw, self.power_w)
    if min(positive) <= 0 or max(self.efficiency.values()) > 1 or self.launch_overhead_s < 0:
      raise ValueError(f"{name!r}: peak_ops, tile_m, cuda_core_ops, mem_bw, power_w must be positive, "
                       f"efficiency in (0, 1] and launch_overhead_s >= 0.")

  def check_bits(self, w_bits, a_bits) -> None:
    round_up_to_supported(w_bits, self.precisions, "w_bits", self.name)
    round_up_to_supported(a_bits, self.precisions, "a_bits", self.name)

  def precision(self, w_bits, a_bits) -> np.ndarray:
    """The tensor-core precision a (w_bits, a_bits) layer runs at: both operands share one MMA type."""
    w = round_up_to_supported(w_bits, self.precisions, "w_bits", self.name)
    a = round_up_to_supported(a_bits, self.precisions, "a_bits", self.name)
    return np.maximum(w, a)

  def sparse(self, layer: LayerSpec, p) -> np.ndarray:
    """True where the layer runs on 2:4 sparse tensor cores at precision ``p`` (an array)."""
    if not fits_2to4(layer.nm) or not self.sparse_precisions:
      return np.zeros(np.shape(p), dtype=bool)
    return np.isin(p, self.sparse_precisions)

  def cost(self, layer: LayerSpec, w_bits, a_bits, cin, cout) -> Cost:
    require_kind(layer, KINDS, self.name)
    if layer.kind in ELEMENTWISE_KINDS:
      return self._elementwise_cost(layer, w_bits, a_bits, cin, cout)
    w, a, ci, co = broadcast_choices(w_bits, a_bits, cin, cout)
    p = self.precision(w, a)
    mult = np.vectorize(self.channel_multiple.get, otypes=[np.float64])(p)
    peak = np.vectorize(lambda q: self.peak_ops[q] * self.efficiency[q], otypes=[np.float64])(p)
    b = self.batch_size
    pixels = layer.out_h * layer.out_w * b  # the batch's output pixels are the GEMM's M
    if layer.kind == "dwconv":
      # One channel per filter: no reduction over channels for an MMA, so CUDA cores at their own rate.
      compute_s = 2.0 * b * layer.macs(co, co) / self.cuda_core_ops
      weights, ci = layer.weight_count(co, co), co
    elif layer.kind == "matmul":
      # One batched kernel over b x heads GEMMs; each pads its own rows, reduction and columns.
      padded_macs = (b * layer.heads(co) * _pad(layer.in_h, self.tile_m) * _pad(ci, mult)
                     * _pad(layer.head_cols, mult))
      compute_s = 2.0 * padded_macs / peak
      # Both operands and the output are this image's activations, at the kernel precision p.
      traffic = b * (layer.input_count(ci, co) + layer.weight_count(ci, co) + layer.output_count(co)) * p / 8.0
      latency = (self.launch_overhead_s + np.maximum(compute_s, traffic / self.mem_bw)) / b
      return Cost(latency_s=latency, energy_j=latency * self.power_w)
    else:
      padded_macs = (_pad(pixels, self.tile_m) * layer.kernel * layer.kernel * _pad(ci, mult) * _pad(co, mult))
      compute_s = 2.0 * padded_macs / peak
      weights = layer.weight_count(ci, co)
    # Both operands and the requantised output move at the kernel precision p; weights once per batch.
    traffic = (weights + b * (layer.input_count(ci) + layer.output_count(co))) * p / 8.0
    if layer.nm is not None:
      sparse = self.sparse(layer, p)
      compute_s = np.where(sparse, compute_s / 2.0, compute_s)  # 2:4 sparse MMA: twice the dense rate
      # Stored as 2:4: half the values at p bits plus a 2-bit position each, instead of every value at p bits.
      saved = weights * (p - 0.5 * (p + nm_index_bits((2, 4)))) / 8.0
      traffic = np.where(sparse, traffic - saved, traffic)
    latency = (self.launch_overhead_s + np.maximum(compute_s, traffic / self.mem_bw)) / b
    return Cost(latency_s=latency, energy_j=latency * self.power_w)

  def _elementwise_cost(self, layer: LayerSpec, w_bits, a_bits, cin, cout) -> Cost:
    """softmax / layernorm on the CUDA cores: one kernel over the batch, FP16 values in and out."""
    w, a, ci, co = broadcast_choices(w_bits, a_bits, cin, cout)
    b = self.batch_size
    compute_s = b * elementwise_ops(layer, ci) / self.cuda_core_ops
    traffic = b * elementwise_bytes(layer, ci, ELEMENTWISE_BITS)
    latency = (self.launch_overhead_s + np.maximum(compute_s, traffic / self.mem_bw)) + 0.0 * (w + a + co)
    latency = latency / b
    return Cost(latency_s=latency, energy_j=latency * self.power_w)
