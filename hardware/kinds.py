"""Arithmetic every cost model shares for the transformer kinds and N:M weight patterns.

Element-wise kinds (``softmax``, ``layernorm``) do ``OPS_PER_ELEMENT[kind]`` floating-point (or fixed-point)
vector operations per value and move each value twice (read once, write once) at the target's float width;
a cost model turns these counts into time and energy with its own rates. The op counts follow the kernels'
definitions (``softmax(x)_i = exp(x_i - max x) / sum_j exp(x_j - max x)``; ``layernorm(x) = (x - mean) /
sqrt(var + eps) * gamma + beta``):

* softmax, 14 ops: max pass (1 compare), subtract the max (1), exp (``EXP_OPS`` = 10), accumulate the sum (1),
  scale by the row's reciprocal sum (1). A row of a few KB stays in cache across the passes, so its values
  move once each way. exp's 10 ops are an ASSUMPTION (U): Cephes-style ``expf`` is a range reduction
  (x log2 e, round, subtract n ln 2: 3 ops), a degree-5 polynomial by Horner (5 FMAs) and a scale by 2^n
  (1-2 integer ops).
* layernorm, 6 ops: mean (1 add), variance (subtract, multiply-accumulate: 2), normalise (subtract, multiply
  by 1/std, multiply-add gamma and beta: 3). The per-row square root and the gamma / beta vectors (2 x cin
  values per layer, shared by every row) are left out.

N:M weights: a pattern keeps ``density`` = N / M of the weights, each with ``nm_index_bits`` of position
metadata (``hardware.metrics``). What that buys on a target is the model's to say; ``stored_weight_bits``
is the average bits per (dense) weight of a compressed store, never more than the dense store (a deployment
keeps whichever is smaller: 2:4 at 1 bit would need 1.5 bits per weight compressed).

References:
  Mishra et al., "Accelerating Sparse Deep Neural Networks", arXiv:2104.08378, 2021 (2:4 sparse tensor
  cores: twice the dense math throughput; 2-bit position metadata per kept value).
  Kim et al., "I-BERT: Integer-only BERT Quantization", ICML 2021 (integer-only softmax and layernorm by
  low-order polynomials, for cores without an FPU).
"""
from __future__ import annotations

import numpy as np

from hardware.base import ELEMENTWISE_KINDS, LayerSpec
from hardware.metrics import nm_index_bits

EXP_OPS = 10.0  # ASSUMPTION (U): range reduction + degree-5 polynomial + scale (module doc)
OPS_PER_ELEMENT = {"softmax": 4.0 + EXP_OPS, "layernorm": 6.0}
SEQUENCE_KINDS = ("linear", "matmul") + ELEMENTWISE_KINDS


def elementwise_ops(layer: LayerSpec, ci) -> np.ndarray:
  """Vector operations of an element-wise layer for one image at ``ci`` values per row."""
  return layer.elements(ci) * OPS_PER_ELEMENT[layer.kind]


def elementwise_bytes(layer: LayerSpec, ci, value_bits: float) -> np.ndarray:
  """Bytes an element-wise layer moves for one image: each value read once and written once."""
  return 2.0 * layer.elements(ci) * value_bits / 8.0


def stored_weight_bits(layer: LayerSpec, w_bits) -> np.ndarray:
  """Average stored bits per dense weight of a layer whose N:M weights are kept compressed (kept values plus
  their index bits), or ``w_bits`` itself when dense or when compressing would not shrink the store."""
  w = np.asarray(w_bits, dtype=np.float64)
  if layer.nm is None:
    return w
  return np.minimum(w, layer.density * (w + nm_index_bits(layer.nm)))


def fits_2to4(nm) -> bool:
  """True if an N:M pattern satisfies 2:4 (at most 2 kept in every aligned group of 4), so 2:4 sparse tensor
  cores run it: 2:4 itself, 1:4, 1:2, and N:M with M a multiple of 4 and N <= 2 (e.g. 2:8). It then runs AS
  2:4: a sparser pattern gains nothing more (Mishra et al. 2021: the hardware's format is 2:4)."""
  if nm is None:
    return False
  n, m = nm
  return (m in (2, 4) and n * 4 <= 2 * m) or (m % 4 == 0 and n <= 2)

