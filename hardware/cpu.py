"""CPU with integer SIMD: a roofline of compute and memory traffic plus a fixed per-layer overhead.

Sub-byte weights and activations are unpacked to the SIMD kernel's precision (int8 on Arm NEON and x86
VNNI), so going below 8 bits buys no compute speed-up; tensors are read and written at their packed size,
so it does cut memory traffic. Depthwise and dense (GEMV at batch 1) layers use the SIMD units far less well
than convolutions, hence one effective MAC rate per layer kind.

Transformer kinds: ``linear`` is a GEMM over the layer's ``in_h`` tokens (weights read once per call) and ``matmul``
a batch of per-head GEMMs whose second operand (keys / values) is an activation read at ``w_bits`` for every
image; by default both run at the ``conv`` rate and overhead (a GEMM, like an im2col convolution; a preset may
give ``linear`` / ``matmul`` their own entries), each head's reduction padded to ``cin_multiple`` and its columns
to ``cout_multiple``. ``softmax`` and ``layernorm`` are float32 vector work: ``hardware.kinds.OPS_PER_ELEMENT``
operations per value at ``float_ops_per_s`` and each value read and written at 32 bits, in the same roofline,
at the ``dense`` overhead by default (a library call without im2col set-up).

N:M weights: compute is unchanged (a CPU SIMD kernel multiplies the dense tile; no N:M instruction exists on
these cores); with ``nm_weights="compressed"`` the weights move at their compressed size (kept values plus
index bits, ``hardware.kinds.stored_weight_bits``), with ``"dense"`` (a runtime without an N:M format) they
move dense and the pattern buys nothing.

Batch size: the cost is per image at batch ``batch_size``: one library call runs the whole batch, so its
fixed overhead and its weight traffic are shared by the B images (a fitted preset was measured at batch 1;
its per-MAC rates are then assumed to hold at batch B).

References:
  Williams, Waterman and Patterson, "Roofline: An Insightful Visual Performance Model", CACM 2009.
  Horowitz, "Computing's Energy Problem (and what we can do about it)", ISSCC 2014 (energy per op / byte).
  Won et al., "ULPPACK", MLSys 2022 (sub-byte CPU kernels; unpacking to int8 is the common baseline).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import numpy as np

from hardware import host
from hardware.base import (ELEMENTWISE_KINDS, Cost, LayerSpec, broadcast_choices, check_batch_size, require_kind,
                           round_up_to_supported)
from hardware.kinds import SEQUENCE_KINDS, elementwise_bytes, elementwise_ops, stored_weight_bits

KINDS = ("conv", "dwconv", "dense")  # the kinds a preset must give rates for (the calibrated ones)
ALL_KINDS = KINDS + SEQUENCE_KINDS
# Kinds a preset may leave out, and the kind whose value they take: a token GEMM runs like an im2col convolution;
# an element-wise library call has no im2col set-up, like a dense layer's.
DEFAULT_FROM = {"linear": "conv", "matmul": "conv", "softmax": "dense", "layernorm": "dense"}
FLOAT_BITS = 32  # ASSUMPTION (U): CPU softmax / layernorm kernels take and return float32 (onnxruntime's, XLA's)
E_FLOAT_OP_J = 2.3e-12  # 45 nm PROXY, U: mean of Horowitz ISSCC 2014 fp32 add 0.9 pJ and fp32 multiply 3.7 pJ
NM_WEIGHTS = ("compressed", "dense")


def load_measured_layers(path: str, model: str) -> dict:
  """``{(kind, kernel, stride, in_h, in_w, head_cols): {(cin, cout): seconds}}`` from a measurements JSON (see
  ``SIMDCPU``'s ``measured_layers``; ``head_cols`` 0 where a record has none: every kind but ``matmul``); one
  ValueError naming the field if it cannot be read."""
  import json
  import pathlib
  file = pathlib.Path(path)
  if not file.is_absolute():
    file = pathlib.Path(__file__).resolve().parent.parent / file
  try:
    records = json.loads(file.read_text())["records"]
    table: dict = {}
    for r in records:
      key = (str(r["kind"]), int(r["kernel"]), int(r["stride"]), int(r["in_h"]), int(r["in_w"]),
             int(r.get("head_cols", 0)))
      table.setdefault(key, {})[(int(r["cin"]), int(r["cout"]))] = float(r["median_s"])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f"measured_layers={path!r} of {model!r} cannot be read ({type(e).__name__}: {e}); give a "
                     f"measurements file of `python -m nas.deploy.calibrate_ort --measure`, or null.") from None
  return table


def _pad(channels: np.ndarray, multiple: int) -> np.ndarray:
  return np.ceil(channels / multiple) * multiple


def _per_kind(value, field: str, model: str, optional: Sequence[str] = ()) -> dict:
  """A per-kind mapping from a mapping or from one number that holds for every kind; each ``optional`` kind
  left out takes the value of its ``DEFAULT_FROM`` kind."""
  if isinstance(value, Mapping):
    out = {str(k): float(v) for k, v in dict(value).items()}
  else:
    out = {k: float(value) for k in KINDS}
  missing = [k for k in KINDS if k not in out]
  if missing:
    raise ValueError(f"{field} of {model!r} needs a value for each of {KINDS}; missing {missing}.")
  for kind in optional:
    out.setdefault(kind, out[DEFAULT_FROM[kind]])
  return out


def input_read_fraction(layer: LayerSpec) -> float:
  """Share of the input a layer reads: a 1x1 kernel at stride 2 touches one pixel in four."""
  return min(1.0, (layer.kernel / layer.stride) ** 2)


class SIMDCPU:
  """Latency = overhead + max(MACs / mac_rate[kind], bytes / mem_bw); energy = per-MAC + per-byte + static.

  At batch B = ``batch_size`` one call runs B images: per image, latency = (overhead + max(B x MACs / rate,
  (weight bytes + B x activation bytes) / mem_bw)) / B.

  Args:
    name: target name used in results.
    mac_rate: effective MACs per second at the kernel precision, per layer kind (``conv``, ``dwconv``,
      ``dense``; optionally ``linear`` and ``matmul``, else conv's): peak SIMD rate times the fraction a real
      kernel reaches.
    mem_bw: effective memory bandwidth in bytes per second.
    layer_overhead_s: fixed time per layer (kernel dispatch, im2col set-up, thread wake-up): one number,
      or one per layer kind (a library convolution call costs more than an inlined small GEMV); ``linear`` and
      ``matmul`` default to conv's, ``softmax`` and ``layernorm`` to dense's.
    e_mac_j: energy per MAC at the kernel precision.
    e_byte_j: energy per byte of memory traffic.
    static_power_w: power drawn regardless of activity, charged over the layer's latency.
    kernel_bits: the SIMD kernel precision; bit-widths above it raise, below it are unpacked to it.
    storage_bits: precisions tensors can be stored at (default: every integer 1..kernel_bits, bit-packed).
    cin_multiple: SIMD reduction width the input channels are padded to in the compute term (4 for
      VNNI's 4-wide dot products, 64 for an AMX tile row of int8).
    cout_multiple: SIMD lane count the output channels are padded to in the compute term.
    fallback_channels: convolutions with max(cin, cout) <= this run on a generic loop instead of the SIMD
      library kernel (XLA's CPU backend does this for <= 16 channels, ~100x slower); 0 disables it. This
      is the one place a wider layer can be faster than a narrower one.
    fallback_mac_rate: MACs per second of that generic loop.
    fitted_on: for a preset calibrated on one machine, that machine (``cpu`` model name and kernel-relevant
      ``flags``, written by ``hardware.calibrate``); :func:`hardware.host.host_mismatch` compares it with the
      machine running. None for a preset that describes a CPU rather than a measurement of one.
    batch_size: images per call; costs are per image at this batch (default 1).
    inference_overhead_s: fixed time of one call into the runtime (e.g. onnxruntime's ``InferenceSession.run``
      from Python), outside every layer; shared by the batch. 0 (the default): not modelled.
    input_rate: input elements per second the runtime quantises (float32 in, 8-bit out) before the first
      layer. None (the default): no input stage is modelled.
    float_ops_per_s: float32 vector operations per second of softmax / layernorm kernels. None (the default):
      ``mac_rate["conv"] / 4`` (ASSUMPTION: a float32 lane is 4x an int8 lane, so a vector instruction does a
      quarter as many float ops as int8 MACs).
    e_float_op_j: energy per float32 operation (default 2.3 pJ, a 45 nm proxy: the mean of Horowitz's fp32
      add 0.9 pJ and multiply 3.7 pJ, U).
    nm_weights: how N:M-sparse weights are stored: ``"compressed"`` (the default: kept values plus index bits,
      decompressed in the kernel) or ``"dense"`` (the runtime has no N:M format: the pattern buys nothing).

    measured_layers: a measurements file (``nas.deploy.calibrate_ort``'s JSON: records of kind, cin, cout, kernel,
      stride, in_h, in_w and median_s, timed at batch 1; a path relative to the repository root, or absolute).
      A dense layer whose shape it holds (or an N:M one with ``nm_weights="dense"``, which runs as the dense
      one) costs its measured time at batch 1 (non-decreasing in channels), any other the roofline: a
      kernel-level lookup table before the fitted model, as nn-Meter predicts (Zhang et al., MobiSys 2021). Every
      kind (the transformer kinds too; a matmul's shape includes its ``head_cols``). None (the default): the
      roofline everywhere.

  References:
    Mishra et al., "Accelerating Sparse Deep Neural Networks", arXiv:2104.08378, 2021 (the compressed N:M
    format: kept values plus 2-bit positions for 2:4).
    Zhang et al., "nn-Meter: Towards Accurate Latency Prediction of Deep-Learning Model Inference on Diverse
    Edge Devices", MobiSys 2021 (kernel-level measured latencies).
  """

  bits_monotone = True  # compute unpacks to the kernel precision (same time), packed memory traffic shrinks

  def __init__(self, name: str, mac_rate: Mapping[str, float], mem_bw: float,
               layer_overhead_s: Union[float, Mapping[str, float]],
               e_mac_j: float, e_byte_j: float, static_power_w: float, kernel_bits: int = 8,
               storage_bits: Optional[Sequence[int]] = None, cin_multiple: int = 1, cout_multiple: int = 1,
               fallback_channels: int = 0, fallback_mac_rate: Optional[float] = None,
               fitted_on: Optional[Mapping] = None, batch_size: int = 1, inference_overhead_s: float = 0.0,
               input_rate: Optional[float] = None, float_ops_per_s: Optional[float] = None,
               e_float_op_j: float = E_FLOAT_OP_J, nm_weights: str = "compressed",
               measured_layers: Optional[str] = None):
    self.name = name
    self.fitted_on = host.machine_record(fitted_on, name)
    self.mac_rate = _per_kind(mac_rate, "mac_rate", name, optional=("linear", "matmul"))
    if any(v <= 0 for v in self.mac_rate.values()):
      raise ValueError(f"mac_rate of {name!r} must be positive MAC/s for each kind; got {self.mac_rate}.")
    self.mem_bw = float(mem_bw)
    if self.mem_bw <= 0:
      raise ValueError(f"mem_bw of {name!r} must be positive (bytes/s); got {mem_bw}.")
    self.layer_overhead_s = _per_kind(layer_overhead_s, "layer_overhead_s", name, optional=tuple(DEFAULT_FROM))
    self.e_mac_j = float(e_mac_j)
    self.e_byte_j = float(e_byte_j)
    self.static_power_w = float(static_power_w)
    if min(*self.layer_overhead_s.values(), self.e_mac_j, self.e_byte_j, self.static_power_w) < 0:
      raise ValueError(f"layer_overhead_s, e_mac_j, e_byte_j and static_power_w of {name!r} must be >= 0.")
    self.kernel_bits = int(kernel_bits)
    self.storage_bits = tuple(sorted(int(b) for b in (storage_bits or range(1, self.kernel_bits + 1))))
    if self.storage_bits[-1] != self.kernel_bits:
      raise ValueError(f"storage_bits of {name!r} must end at kernel_bits={self.kernel_bits}.")
    self.cin_multiple = int(cin_multiple)
    self.cout_multiple = int(cout_multiple)
    if min(self.cin_multiple, self.cout_multiple) < 1:
      raise ValueError(f"cin_multiple and cout_multiple of {name!r} must be >= 1.")
    self.batch_size = check_batch_size(batch_size, name)
    self.inference_overhead_s = float(inference_overhead_s)
    if not self.inference_overhead_s >= 0:
      raise ValueError(f"inference_overhead_s={inference_overhead_s} of {name!r} must be >= 0 seconds (0: no "
                       f"per-call time).")
    self.input_rate = None if input_rate is None else float(input_rate)
    if self.input_rate is not None and not self.input_rate > 0:
      raise ValueError(f"input_rate={input_rate} of {name!r} must be > 0 elements/s, or null (no input stage).")
    self.float_ops_per_s = self.mac_rate["conv"] / 4.0 if float_ops_per_s is None else float(float_ops_per_s)
    self.e_float_op_j = float(e_float_op_j)
    if not (self.float_ops_per_s > 0 and self.e_float_op_j >= 0):
      raise ValueError(f"float_ops_per_s={float_ops_per_s} and e_float_op_j={e_float_op_j} of {name!r} must be > 0 "
                       f"ops/s and >= 0 J (float_ops_per_s: null derives it from mac_rate.conv).")
    if nm_weights not in NM_WEIGHTS:
      raise ValueError(f"nm_weights={nm_weights!r} of {name!r} must be one of {NM_WEIGHTS}: 'compressed' if the "
                       f"runtime stores N:M weights as kept values plus indices, 'dense' if it has no N:M format.")
    self.nm_weights = nm_weights
    self.measured = None if measured_layers is None else load_measured_layers(measured_layers, name)
    self.fallback_channels = int(fallback_channels)
    self.fallback_mac_rate = None if fallback_mac_rate is None else float(fallback_mac_rate)
    if self.fallback_channels > 0 and not (self.fallback_mac_rate or 0) > 0:
      raise ValueError(f"fallback_channels={self.fallback_channels} of {name!r} needs a positive fallback_mac_rate.")

  def check_bits(self, w_bits, a_bits) -> None:
    round_up_to_supported(w_bits, self.storage_bits, "w_bits", self.name)
    round_up_to_supported(a_bits, self.storage_bits, "a_bits", self.name)

  def terms(self, layer: LayerSpec, w_bits, a_bits, cin, cout):
    """The roofline's inputs per image: (MACs as computed after lane padding, bytes of memory traffic, the
    weights' share read once per batch). Not for the element-wise kinds (``elementwise_terms``)."""
    require_kind(layer, tuple(k for k in ALL_KINDS if k not in ELEMENTWISE_KINDS), self.name)
    w, a, ci, co = broadcast_choices(w_bits, a_bits, cin, cout)
    w_store = round_up_to_supported(w, self.storage_bits, "w_bits", self.name)
    a_store = round_up_to_supported(a, self.storage_bits, "a_bits", self.name)
    if layer.kind == "dwconv":
      ci = co  # depthwise: one channel count
    if layer.kind == "matmul":
      # Per head: in_h rows x cin reduction x head_cols columns, each head's operands padded to the lanes.
      macs = layer.heads(co) * layer.in_h * _pad(ci, self.cin_multiple) * _pad(layer.head_cols, self.cout_multiple)
      # The second operand is an activation of this image (not shared by the batch), read at w_bits.
      traffic = (layer.weight_count(ci, co) * w_store
                 + (layer.input_count(ci, co) + layer.output_count(co)) * a_store) / 8.0
      return macs, traffic
    # Lanes a partial vector leaves idle still take cycles (and energy).
    macs = layer.macs(_pad(ci, self.cin_multiple), _pad(co, self.cout_multiple))
    if layer.nm is not None and self.nm_weights == "compressed":
      w_store = stored_weight_bits(layer, w_store)  # kept values plus index bits; compute stays dense
    # Weights read at their packed size, input read and output written at the activation precision.
    inputs = layer.input_count(ci) * input_read_fraction(layer)
    traffic = (layer.weight_count(ci, co) * w_store / self.batch_size
               + (inputs + layer.output_count(co)) * a_store) / 8.0
    return macs, traffic

  def elementwise_terms(self, layer: LayerSpec, w_bits, a_bits, cin, cout):
    """softmax / layernorm per image: (float32 vector operations, bytes moved); the bit-widths are ignored."""
    require_kind(layer, ELEMENTWISE_KINDS, self.name)
    w, a, ci, co = broadcast_choices(w_bits, a_bits, cin, cout)
    zero = 0.0 * (w + a + co)  # broadcast to the grid's shape
    return elementwise_ops(layer, ci) + zero, elementwise_bytes(layer, ci, FLOAT_BITS) + zero

  def cost(self, layer: LayerSpec, w_bits, a_bits, cin, cout) -> Cost:
    require_kind(layer, ALL_KINDS, self.name)
    if layer.kind in ELEMENTWISE_KINDS:
      ops, traffic = self.elementwise_terms(layer, w_bits, a_bits, cin, cout)
      latency = (self.layer_overhead_s[layer.kind] / self.batch_size
                 + np.maximum(ops / self.float_ops_per_s, traffic / self.mem_bw))
      if self.measured is not None and self.batch_size == 1:
        latency = self._measured_latency(layer, w_bits, a_bits, cin, cout, latency)
      energy = self.e_float_op_j * ops + self.e_byte_j * traffic + self.static_power_w * latency
      return Cost(latency_s=latency, energy_j=energy)
    macs, traffic = self.terms(layer, w_bits, a_bits, cin, cout)
    compute_s = macs / self.mac_rate[layer.kind]
    if layer.kind == "conv" and self.fallback_channels > 0:
      _, _, ci, co = broadcast_choices(w_bits, a_bits, cin, cout)
      generic = np.maximum(ci, co) <= self.fallback_channels  # the generic loop does not pad to SIMD lanes
      macs = np.where(generic, layer.macs(ci, co), macs)
      compute_s = np.where(generic, macs / self.fallback_mac_rate, compute_s)
    memory_s = traffic / self.mem_bw
    latency = self.layer_overhead_s[layer.kind] / self.batch_size + np.maximum(compute_s, memory_s)
    # An N:M layer stored dense (nm_weights "dense": the pattern buys nothing) runs as the dense one measured.
    if self.measured is not None and self.batch_size == 1 and (layer.nm is None or self.nm_weights == "dense"):
      latency = self._measured_latency(layer, w_bits, a_bits, cin, cout, latency)
    energy = self.e_mac_j * macs + self.e_byte_j * traffic + self.static_power_w * latency
    return Cost(latency_s=latency, energy_j=energy)

  def _measured_latency(self, layer: LayerSpec, w_bits, a_bits, cin, cout, roofline):
    """Where this layer's shape was measured (``measured_layers``), its measured time, made non-decreasing in
    channels (the largest measured time of the same shape at no more input and output channels); the roofline
    elsewhere. For the transformer kinds the roofline between measured channel counts of the shape is clipped
    into their bracket (at least the monotone measured time at no more channels, at most the one at no fewer), so
    latency never falls as channels grow, the roofline's misses against the measurements notwithstanding (the CNN
    kinds keep the rule their published results were costed with)."""
    table = self.measured.get((layer.kind, layer.kernel, layer.stride, layer.in_h, layer.in_w, layer.head_cols))
    if not table:
      return roofline
    w, a, ci, co = broadcast_choices(w_bits, a_bits, cin, cout)
    if layer.kind == "dwconv":
      ci = co
    elif layer.kind in ELEMENTWISE_KINDS:
      co = ci  # one channel count, as elementwise_terms reads it
    below = lambda c_in, c_out: [t for (i, o), t in table.items() if i <= c_in and o <= c_out]
    monotone = {key: max(below(*key)) for key in table}
    clip = layer.kind in SEQUENCE_KINDS
    out = np.array(np.broadcast_to(roofline, ci.shape), dtype=np.float64)
    for idx in np.ndindex(ci.shape):
      key = (int(ci[idx]), int(co[idx]))
      if key in table:
        out[idx] = monotone[key]
      elif clip:
        low = max((t for (i, o), t in monotone.items() if i <= key[0] and o <= key[1]), default=0.0)
        high = min((t for (i, o), t in monotone.items() if i >= key[0] and o >= key[1]), default=np.inf)
        out[idx] = min(max(out[idx], low), high)
    return out

  def inference_cost(self, input_layer: LayerSpec) -> Cost:
    """Per image, outside every layer: the runtime call's fixed time shared by the batch, plus quantising the
    network's input (``input_layer``'s input, float32 read, int8 written) at ``input_rate`` elements/s."""
    n = float(input_layer.input_count())
    latency = self.inference_overhead_s / self.batch_size + (n / self.input_rate if self.input_rate else 0.0)
    energy = self.e_byte_j * n * 5.0 + self.static_power_w * latency if latency > 0 else 0.0
    return Cost(latency_s=np.float64(latency), energy_j=np.float64(energy))
