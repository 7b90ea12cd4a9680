"""A microcontroller core costed by cycle terms fitted to measured (simulated) kernels: ``MeasuredMCU``.

The model follows the structure of the C kernel it was fitted to (``nas/deploy/c/runtime/hwnas.c``: one
convolution kernel for conv and dense layers, weights unpacked one output channel at a time, activations one
per byte), per output channel of a layer:

  cycles/channel = mac x (valid MACs on the scalar path) + mac_simd x (valid MACs on the SIMD path)
                 + call x (dot-product calls on the scalar path) + call_simd x (calls on the SIMD path)
                 + output x (output positions: loop, bias, requantisation, store)
                 + unpack_8 or unpack_sub x (weights of the channel: 8-bit weights are copied, narrower ones
                   bit-extracted and sign-extended)
                 + channel (the unpack call and loop set-up)
  cycles/layer   = cout x cycles/channel + layer
  per inference  = inference (outside every layer)

where the counts come from the layer's geometry ("SAME" padding, dilation 1): taps that fall on the padding
are skipped (not multiplied), a window row whose taps are all inside the map is one dot-product call of
kernel x cin values and a window row that crosses the border one call per valid tap. The SIMD path (4 byte
products per instruction, ``simd: true``) is taken where cin is a multiple of 4. Activation bits change
nothing (activations are bytes); weight bits change only the unpacking (8 bits fast, 2..7 bits the same
bit-extracting loop), so fewer bits do not cost less: ``bits_monotone = False``.

Not measured, extrapolated with the same terms (marked in the preset): ``dwconv`` (a per-channel convolution
of one input channel, on the scalar path), ``linear`` and ``matmul`` (1 x 1 convolutions over ``in_h`` rows;
a matmul's second operand unpacked as 8-bit values), ``softmax`` / ``layernorm`` (``hardware.kinds``
operations at ``elementwise_ops_per_cycle``). N:M weights are costed dense (the C kernel has no sparse path).

Fitted by ``nas/deploy/c/calibrate.py`` from the simulated CV32E40P (``conf/hardware/riscv_cv32e40p.yaml``).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from hardware.base import ELEMENTWISE_KINDS, Cost, LayerSpec, broadcast_choices, require_kind
from hardware.kinds import elementwise_ops

__all__ = ["MeasuredMCU", "TERMS", "window_counts", "features"]

KINDS = ("conv", "dwconv", "dense", "linear", "matmul", "softmax", "layernorm")
TERMS = ("mac", "mac_simd", "call", "call_simd", "output", "unpack_8", "unpack_sub", "channel", "layer")


def _axis(size: int, kernel: int, stride: int, dilation: int, pad: int, out: int):
  """Per output index along one axis: valid taps, and whether the window row is wholly inside the map."""
  o = np.arange(out)[:, None]
  pos = o * stride * dilation - pad + np.arange(kernel)[None, :] * dilation
  valid = ((pos >= 0) & (pos < size)).sum(1)
  start = o[:, 0] * stride * dilation - pad
  inside = (dilation == 1) & (start >= 0) & (start + kernel <= size)
  return valid.astype(np.float64), inside.astype(np.float64)


def same_pad(size: int, kernel: int, stride: int) -> int:
  """The top / left padding of XLA's "SAME" (the odd pixel at the end), as ``nas.deploy.integer.same_pads``."""
  out = -(-size // stride)
  return max((out - 1) * stride + kernel - size, 0) // 2


def window_counts(in_h: int, in_w: int, kernel: int, stride: int, dilation: int = 1,
                  pads: Optional[tuple[int, int]] = None, out: Optional[tuple[int, int]] = None):
  """Per output channel of a convolution: (output positions, valid taps, row calls, tap calls).

  Row calls: window rows wholly inside the map (dilation 1), one dot product of kernel x cin values each; tap
  calls: the valid taps of the other window rows, one dot product of cin values each. ``pads``: (top, left);
  ``out``: (out_h, out_w); defaults: "SAME" padding and the output size of a dilation-1 layer (what a
  ``LayerSpec`` describes)."""
  pad_top, pad_left = pads if pads is not None else (same_pad(in_h, kernel, stride), same_pad(in_w, kernel, stride))
  out_h, out_w = out if out is not None else (-(-in_h // stride), -(-in_w // stride))
  vh, _ = _axis(in_h, kernel, stride, dilation, pad_top, out_h)
  vw, rw = _axis(in_w, kernel, stride, dilation, pad_left, out_w)
  positions = float(out_h * out_w)
  taps = vh.sum() * vw.sum()
  rows = vh.sum() * rw.sum()
  tap_calls = vh.sum() * (vw * (1.0 - rw)).sum()
  return positions, taps, rows, tap_calls


def _geometry(layer: LayerSpec):
  """(kernel view) counts of a LayerSpec; dense, linear and matmul are 1 x 1 convolutions of in_h x in_w."""
  if layer.kind in ("dense",):
    return window_counts(1, 1, 1, 1)
  if layer.kind in ("linear", "matmul"):
    return window_counts(layer.in_h, 1, 1, 1)
  return window_counts(layer.in_h, layer.in_w, layer.kernel, layer.stride)


def features(layer: LayerSpec, w_bits, cin, cout, simd: bool) -> dict[str, np.ndarray]:
  """The count multiplying each of ``TERMS`` for one layer (arrays broadcast over the choices)."""
  w, ci, co = (np.asarray(v, dtype=np.float64) for v in (w_bits, cin, cout))
  positions, taps, rows, tap_calls = _geometry(layer)
  k2 = float(layer.kernel * layer.kernel)
  if layer.kind == "dwconv":  # one input channel per output channel: the scalar path
    ci_eff, fan_in, vec = 1.0 + 0 * ci, k2 + 0 * ci, np.zeros_like(ci)
  else:
    ci_eff, fan_in = ci, k2 * ci
    vec = (np.mod(ci, 4) == 0).astype(np.float64) if simd else np.zeros_like(ci)
  if layer.kind == "matmul":
    w = np.maximum(w, 8.0)  # the second operand is an 8-bit activation: the byte-copy path
  macs = taps * ci_eff
  calls = rows + tap_calls
  eight = (w >= 8).astype(np.float64)
  f = {"mac": macs * (1 - vec), "mac_simd": macs * vec, "call": calls * (1 - vec), "call_simd": calls * vec,
       "output": positions + 0 * ci, "unpack_8": fan_in * eight, "unpack_sub": fan_in * (1 - eight),
       "channel": 1.0 + 0 * ci}
  out = {t: co * np.broadcast_to(v, np.broadcast_shapes(np.shape(v), np.shape(w))) for t, v in f.items()}
  out["layer"] = np.ones(np.broadcast_shapes(w.shape, ci.shape, co.shape))
  return out


class MeasuredMCU:
  """Cycles = the fitted terms over a layer's kernel work (module doc); latency = cycles / freq_hz; energy =
  cycles x energy_per_cycle_j.

  Args:
    name: target name used in results.
    cycles: per-term cycle coefficients, one for each of ``TERMS`` (missing terms are 0).
    inference_cycles: cycles per inference outside every layer.
    simd: whether the core has the 4-way byte dot product (the SIMD terms apply where cin % 4 == 0).
    freq_hz: clock frequency.
    energy_per_cycle_j: energy per clock cycle (core and memory: a constant, not a per-instruction model).
    w_bits / a_bits: the weight and activation bit-widths the kernels run (others raise).
    elementwise_ops_per_cycle: integer ops per cycle of softmax / layernorm (not measured).
    core, memory, fitted_from: descriptions (recorded, not used).
  """

  bits_monotone = False  # 8-bit weights are copied, narrower ones unpacked: fewer bits can cost more cycles

  def __init__(self, name: str, cycles: Mapping[str, float], inference_cycles: float, freq_hz: float,
               energy_per_cycle_j: float, simd: bool = False, w_bits: Sequence[int] = tuple(range(2, 9)),
               a_bits: Sequence[int] = tuple(range(1, 9)), elementwise_ops_per_cycle: float = 1.0,
               core: str = "", memory: str = "", fitted_from: str = ""):
    self.name = name
    unknown = set(cycles) - set(TERMS)
    if unknown:
      raise ValueError(f"cycles of {name!r} has unknown terms {sorted(unknown)}; use {list(TERMS)}.")
    self.coef = {t: float(cycles.get(t, 0.0)) for t in TERMS}
    if any(v < 0 or not np.isfinite(v) for v in self.coef.values()):
      raise ValueError(f"cycles of {name!r} must be finite and >= 0; got {self.coef}.")
    self.inference_cycles = float(inference_cycles)
    self.freq_hz = float(freq_hz)
    self.energy_per_cycle_j = float(energy_per_cycle_j)
    if not (self.freq_hz > 0 and self.energy_per_cycle_j >= 0 and self.inference_cycles >= 0):
      raise ValueError(f"freq_hz of {name!r} must be > 0, energy_per_cycle_j and inference_cycles >= 0.")
    self.simd = bool(simd)
    self.w_bits = tuple(sorted(int(b) for b in w_bits))
    self.a_bits = tuple(sorted(int(b) for b in a_bits))
    self.elementwise_ops_per_cycle = float(elementwise_ops_per_cycle)
    if not self.elementwise_ops_per_cycle > 0:
      raise ValueError(f"elementwise_ops_per_cycle of {name!r} must be > 0.")
    self.core, self.memory, self.fitted_from = str(core), str(memory), str(fitted_from)

  def _check(self, bits, allowed, field: str) -> None:
    b = np.asarray(bits, dtype=np.float64)
    ok = np.isfinite(b) & (b == np.round(b)) & np.isin(np.where(np.isfinite(b), b, -1), allowed)
    if not np.all(ok):
      bad = [int(v) if np.isfinite(v) and v == round(v) else v for v in np.unique(b[~ok]).tolist()]
      raise ValueError(f"{field}={bad} cannot run on {self.name!r}: its C kernels (nas.deploy.c) run "
                       f"{field} in {list(allowed)}; choose candidates among them.")

  def check_bits(self, w_bits, a_bits) -> None:
    self._check(w_bits, self.w_bits, "w_bits")
    self._check(a_bits, self.a_bits, "a_bits")

  def cycles(self, layer: LayerSpec, w_bits, a_bits, cin, cout) -> np.ndarray:
    """Cycles of one layer (one image) at each point of the broadcast grid of choices."""
    require_kind(layer, KINDS, self.name)
    self.check_bits(w_bits, a_bits)
    w, a, ci, co = broadcast_choices(w_bits, a_bits, cin, cout)
    if layer.kind in ELEMENTWISE_KINDS:
      return elementwise_ops(layer, ci) / self.elementwise_ops_per_cycle + self.coef["layer"] + 0.0 * (w + a + co)
    f = features(layer, w, ci, co, self.simd)
    return sum(self.coef[t] * f[t] for t in TERMS) + 0.0 * a

  def cost(self, layer: LayerSpec, w_bits, a_bits, cin, cout) -> Cost:
    c = self.cycles(layer, w_bits, a_bits, cin, cout)
    return Cost(latency_s=c / self.freq_hz, energy_j=c * self.energy_per_cycle_j)

  def inference_cost(self, input_layer: LayerSpec) -> Cost:
    """The cycles outside every layer (the stages' bookkeeping in ``hw_infer``), per image."""
    c = np.float64(self.inference_cycles)
    return Cost(latency_s=c / self.freq_hz, energy_j=c * self.energy_per_cycle_j)
