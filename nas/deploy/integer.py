"""The integer-only network of a trained derived network, and its NumPy reference inference.

From a fake-quantised network in eval mode (``digits_cnn`` / ``fmnist_cnn``: input quantiser, then per conv layer
conv -> BatchNorm -> ReLU -> the next layer's activation quantiser, then the classifier), every layer becomes

  acc  = (sum(q_in * w_int) << r) + bias          (integers; int32 accumulator, computed in int64 in NumPy
                                                 to prove it never leaves int32)
  q    = clip(round(acc * m / 2^k), lo, hi)      per output channel: dyadic requantisation (HAWQ-V3)

with w_int the integer weights (round(clip(w / s_w, -2^(b-1), 2^(b-1) - 1)) at each output channel's own
bit-width b and step s_w), q_in and q the integer activations (every quantiser of ``nas.ops.quantizers``
quantises to round(clip(x / s)) with a step s: LSQ's parameter, PACT's alpha / Q_P), and BatchNorm and the steps folded:

  g    = gamma / sqrt(var + eps)                       (BatchNorm gain; beta' = beta - mean g)
  unit = s_in s_w g / 2^r                              (real value of one step of the shifted accumulator)
  bias = round(beta' / unit)                           (int32)
  m / 2^k ~ unit / s_out                               (m: int32 with |m| in [2^30, 2^31), k: shift)

so q = clip(round(acc unit / s_out), 0, 2^b_out - 1): the next quantiser's integer (the clip at 0 is the ReLU).
The classifier's logits are acc x unit, dequantised only for the argmax.

``r`` (``IntLayer.bias_shift``) gives the int32 bias fractional bits below one accumulator step. HAWQ-V3 and
onnxruntime's QLinearConv keep the bias in whole accumulator steps (r = 0); that rounds it by up to half a step,
which for low-bit layers is a large part of an output step (0.29 output steps on a 4-bit layer of a digits run:
4 of its 256 test predictions changed; with the error held under 2^-12 steps, 0.1 % of the activations still
differed from the float pass). r is the smallest shift (at most 16) that brings the error under 2^-20 output
steps, limited by (max |acc| << r) + |bias| fitting int32; the output layer takes the largest that fits.

Rounding choices (documented because they cannot all be bit-exact with the float32 fake-quant pass):
  * weights and the input are quantised exactly as the JAX pass does it, in float32 (``x / s``, clip, round half
    to even), so ``w_int`` and the first ``q_in`` are bit-identical to the fake-quant integers;
  * requantisation rounds half up (add 2^(k-1), arithmetic shift right), where the float pass rounds half to
    even a float32 value; they differ only where the exact rational value is within float32 error of a half;
  * the bias is rounded to whole steps of the shifted accumulator (above);
  * the multiplier has 31 significant bits (relative error under 2^-31).
The pooled classifier (``digits_cnn``: global average pool, then the head's quantiser) has no quantiser on the
last conv's output. Here that map is requantised to a wide fixed point, int32 in units of s_head / 2^f (f chosen
so the sum over the map fits int32; each element saturated at 2^f x (H W) x the head's largest integer, which
cannot change the result since every element is >= 0 after the ReLU), summed over the map and requantised
by 1 / (H W 2^f). Agreement with the float pass is measured (``experiments.export``), not claimed.

References:
  Yao et al., "HAWQ-V3: Dyadic Neural Network Quantization", ICML 2021 (dyadic requantisation, BatchNorm
  folded into integer multiplier, shift and int32 bias). Jacob et al., "Quantization and Training of Neural
  Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018. Esser et al., LSQ, ICLR 2020.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from nas.ops import quant
from nas.ops import quantizers

INT32_MAX = 2 ** 31 - 1
EXPORTABLE_MODELS = ("digits_cnn", "fmnist_cnn")


@dataclasses.dataclass(frozen=True)
class Requant:
  """q = clip(round_half_up((acc + bias) * multiplier / 2^shift), lo, hi), per output channel (or one);
  ``half_even``: ties round to the even integer instead (as onnxruntime's float requantisation does)."""
  multiplier: np.ndarray  # int32
  shift: np.ndarray  # int32, 0..62
  lo: int
  hi: int
  half_even: bool = False


@dataclasses.dataclass(frozen=True)
class IntLayer:
  """One integer layer: an NHWC conv ("SAME" padding) or a dense layer, with its requantisation.

  Attributes:
    weight: integer weights, HWIO (conv) or (cin, cout) (dense), each channel in its own bit-width's range.
    w_bits, w_step: per output channel weight bit-width and step.
    in_hw: the input map's (H, W) ((1, 1) for a dense layer).
    in_bits, in_step, in_signed: the input activation's quantiser.
    bn_gain: BatchNorm gain g per output channel (1 where there is no BatchNorm).
    offset: the real bias after BatchNorm, beta - mean g (the classifier's own bias; 0 where it has none).
    bias_shift: r, the bias's fractional bits: the accumulator is shifted left by r before the bias is added.
    acc_scale: real value of one step of the shifted accumulator: in_step * w_step * bn_gain / 2^r.
    bias: int32 bias in steps of the shifted accumulator.
    requant: to the next activation (None: the output layer, logits = (acc + bias) * acc_scale).
    out_bits, out_step: the quantiser ``requant`` produces integers of (None for the output layer; for the wide
      map before pooling, out_bits is None and out_step the fixed-point unit).
  """
  name: str
  kind: str
  weight: np.ndarray
  w_bits: np.ndarray
  w_step: np.ndarray
  kernel: int
  stride: int
  in_hw: tuple[int, int]
  in_bits: int
  in_step: float
  in_signed: bool
  bn_gain: np.ndarray
  offset: np.ndarray
  bias_shift: int
  acc_scale: np.ndarray
  bias: np.ndarray
  requant: Requant | None
  out_bits: int | None
  out_step: float | None
  dilation: int = 1  # > 1: the layer reads a map that skipped strided layers left unsubsampled (see from_network)


@dataclasses.dataclass(frozen=True)
class IntegerNetwork:
  """Input quantiser, integer layers, and (pooled classifiers) the pooling stage before the last layer."""
  model: str
  input_shape: tuple[int, int, int]
  layers: tuple[IntLayer, ...]
  pool: Requant | None  # sum over H, W of the wide map, then this: the head's input integers
  pool_hw: int
  classifier: str

  @property
  def input_layer(self) -> IntLayer:
    return self.layers[0]


def dyadic(scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(m, k) with m / 2^k = ``scale`` to 31 significant bits: |m| in [2^30, 2^31) (0 for a zero scale).

  Raises:
    ValueError: if a scale is 2^31 or more (no such requantisation occurs in these networks).
  """
  s = np.asarray(scale, np.float64)
  frac, exp = np.frexp(s)  # s = frac 2^exp, |frac| in [0.5, 1)
  m = np.round(frac * 2.0 ** 31).astype(np.int64)
  k = 31 - exp.astype(np.int64)
  carry = np.abs(m) == 2 ** 31
  m, k = np.where(carry, m // 2, m), np.where(carry, k - 1, k)
  if np.any(k < 0):
    raise ValueError(f"a requantisation scale of {np.max(np.abs(s)):.3g} is too large for a 31-bit multiplier.")
  tiny = k > 62  # below 2^-32: the product rounds to 0 for any int32 input
  m, k = np.where(tiny | (s == 0), 0, m), np.where(tiny | (s == 0), 0, k)
  return m.astype(np.int32), k.astype(np.int32)


def requantize(acc: np.ndarray, rq: Requant) -> np.ndarray:
  """clip(round_half_up(acc * m / 2^k), lo, hi) in integers only (int64 products of int32 values)."""
  t = acc.astype(np.int64) * rq.multiplier.astype(np.int64)
  k = rq.shift.astype(np.int64)
  half = np.where(k > 0, np.left_shift(np.int64(1), np.maximum(k - 1, 0)), 0)
  q = np.right_shift(t + half, k)
  if rq.half_even:  # an exact tie rounded up to an odd integer goes down to the even one
    tie = (k > 0) & (np.left_shift(q, k) - t == half)
    q = np.where(tie & (q % 2 == 1), q - 1, q)
  return np.clip(q, rq.lo, rq.hi)


def quantize_input(x: np.ndarray, layer: IntLayer) -> np.ndarray:
  """The first quantiser, as the JAX pass computes it (float32 ``x / s``, clip, round half to even)."""
  qn, qp = quant.qrange(layer.in_bits, layer.in_signed)
  s = np.maximum(np.float32(layer.in_step), np.float32(quant.STEP_FLOOR))
  return np.round(np.clip(np.asarray(x, np.float32) / s, -qn, qp)).astype(np.int32)


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """XLA's (and ONNX SAME_UPPER's) padding of one axis: the odd pixel goes at the end."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def dilated_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
  """Padding of one axis for a "SAME" convolution (``same_pads``) of the map subsampled by ``dilation``
  (``x[::dilation]``, ceil(size / dilation) pixels), run on the full map as a convolution of stride
  ``stride * dilation`` and dilation ``dilation``: its taps land exactly on the subsampled pixels and on zeros
  where the subsampled map is padded. ``dilation=1`` is ``same_pads``."""
  sub = -(-size // dilation)
  t, _ = same_pads(sub, kernel, stride)
  out = -(-sub // stride)
  last = dilation * ((out - 1) * stride + kernel - 1 - t)  # the last tap's pixel, relative to pixel 0
  return dilation * t, max(last - (size - 1), 0)


def conv_int(q: np.ndarray, weight: np.ndarray, stride: int, dilation: int = 1) -> np.ndarray:
  """Integer NHWC x HWIO convolution, "SAME" zero padding (the zero point is 0), int64 accumulation; with
  ``dilation`` D > 1, the convolution of ``q[:, ::D, ::D]`` (``dilated_pads``)."""
  kh, kw = weight.shape[:2]
  d = dilation
  (t, b), (l, r) = dilated_pads(q.shape[1], kh, stride, d), dilated_pads(q.shape[2], kw, stride, d)
  qp = np.pad(q.astype(np.int64), ((0, 0), (t, b), (l, r), (0, 0)))
  span = (d * (kh - 1) + 1, d * (kw - 1) + 1)
  win = np.lib.stride_tricks.sliding_window_view(qp, span, axis=(1, 2))[:, ::stride * d, ::stride * d, :, ::d, ::d]
  # win: (N, Ho, Wo, Cin, kh, kw); contract with (kh, kw, Cin, Cout)
  return np.einsum("nhwcij,ijco->nhwo", win, weight.astype(np.int64), optimize=True)


def check_int32(acc: np.ndarray, name: str) -> None:
  """The accumulators must fit int32 (they are computed in int64 here to prove it)."""
  if acc.size and np.max(np.abs(acc)) > INT32_MAX:
    raise OverflowError(f"layer {name}: an accumulator reached {np.max(np.abs(acc))}, beyond int32.")


def run(net: IntegerNetwork, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Integer reference inference of NHWC float images.

  Returns:
    (acc, logits): the output layer's int32 accumulators (bias added), shape (N, classes), and the logits
    dequantised (acc x acc_scale, float64) for the argmax.
  """
  q = quantize_input(x, net.layers[0])
  for i, layer in enumerate(net.layers):
    if layer.kind == "dense":
      if net.pool is not None:
        q = requantize(q.reshape(q.shape[0], -1, q.shape[-1]).sum(axis=1), net.pool)
      acc = q.reshape(q.shape[0], -1).astype(np.int64) @ layer.weight.astype(np.int64)
    else:
      acc = conv_int(q, layer.weight, layer.stride, layer.dilation)
    check_int32(acc, layer.name)
    acc = np.left_shift(acc, layer.bias_shift) + layer.bias.astype(np.int64)
    check_int32(acc, layer.name)
    if layer.requant is None:
      acc = acc.reshape(acc.shape[0], -1)
      return acc.astype(np.int32), acc * layer.acc_scale
    q = requantize(acc, layer.requant)
  raise ValueError("the integer network has no output layer.")


def from_network(net) -> IntegerNetwork:
  """The integer network of a derived (fixed-architecture) ``digits_cnn`` or ``fmnist_cnn`` in eval mode.

  A skipped conv layer (``model.args.skip``) is no integer layer. Its shortcut (``nas.models.digits.shortcut``)
  becomes part of the layers around it, exactly: the layer before it keeps only the output channels the
  shortcut passes on, the layer after it drops the input channels that are the shortcut's zero padding, and a
  strided shortcut's subsampling (``x[::s, ::s]``) becomes that next layer's dilation: a convolution of the
  subsampled map is one of the full map with stride and dilation multiplied by s (``dilated_pads``).

  Raises:
    ValueError: for another model, a supernet, or a float layer, naming the model or layer.
  """
  name = getattr(net, "name", type(net).__name__)
  if name not in EXPORTABLE_MODELS:
    raise ValueError(f"model {name!r} cannot be exported; the integer exporter knows {list(EXPORTABLE_MODELS)}.")
  if net.arch is None:
    raise ValueError("the network is a supernet; export the derived network (built with arch=...).")
  convs, bns, head = list(net.convs), list(net.bns), net.head
  n = len(convs)
  order = [i for i in range(n) if not _skipped(net, i)] + [n]  # the layers that run; n: the head
  qlayer = lambda i: head if i == n else convs[i]
  qz = _quantizer(net)
  a_steps = {i: _act_step(qlayer(i), qz) for i in order}
  reads = _reads(convs, order)
  h, w, _ = _input_hw(convs[0])
  layers = []
  pool, pool_hw = None, 1
  for j, i in enumerate(order[:-1]):
    conv, bn, nxt = convs[i], bns[i], order[j + 1]
    keep = reads[nxt][1]  # the output channels the next running layer reads
    w_int, w_bits, w_step = _weights(net, conv, qz)
    w_int, w_bits, w_step = w_int[:, :, :reads[i][1], :keep], w_bits[:keep], w_step[:keep]
    g = np.asarray(bn.scale[...], np.float64) / np.sqrt(np.asarray(bn.var[...], np.float64) + bn.epsilon)
    beta = np.asarray(bn.bias[...], np.float64) - np.asarray(bn.mean[...], np.float64) * g
    g, beta = g[:keep], beta[:keep]
    s_in, in_bits = a_steps[i]
    unit = float(s_in) * w_step.astype(np.float64) * g
    nxt_step, nxt_bits = a_steps[nxt]
    if nxt == n and net.classifier == "pool":
      if reads[n][0] > 1:
        raise ValueError(f"layer {convs[-1].spec.name}: a skipped strided layer before global average pooling "
                         f"cannot be exported yet; keep it (model.args.skip) or use model.args.classifier=flatten.")
      pool_hw = conv.spec.out_h * conv.spec.out_w
      qp_head = quant.qrange(nxt_bits, False)[1]
      frac = int(np.floor(np.log2(INT32_MAX / (qp_head * pool_hw * pool_hw))))
      frac = min(frac, 16)
      out_step, out_bits, hi = float(nxt_step) / 2 ** frac, None, qp_head * pool_hw * 2 ** frac
      m, k = dyadic(np.asarray([1.0 / (pool_hw * 2 ** frac)]))
      pool = Requant(m, k, 0, qp_head)
    else:
      out_step, out_bits = float(nxt_step), nxt_bits
      hi = quant.qrange(nxt_bits, False)[1]
    real_step = out_step if out_bits is not None else float(nxt_step)  # the step the error is measured in
    r = bias_shift(w_int, in_bits, bool(conv.aq.signed), beta, unit, real_step)
    unit = unit / 2 ** r
    bias = _int_bias(beta, unit, conv.spec.name)
    m, k = dyadic(unit / out_step)
    layers.append(IntLayer(conv.spec.name, "conv", w_int, w_bits, w_step, conv.spec.kernel, conv.spec.stride,
                           (h, w), in_bits, float(s_in), bool(conv.aq.signed), g, beta, r, unit, bias,
                           Requant(m, k, 0, hi), out_bits, out_step, reads[i][0]))
    h, w = conv.spec.out_h, conv.spec.out_w
  w_int, w_bits, w_step = _weights(net, head, qz)
  w_int = w_int[:, :, :reads[n][1], :] if w_int.ndim == 4 else w_int[:reads[n][1]]
  s_in, in_bits = a_steps[n]
  unit = float(s_in) * w_step.astype(np.float64)
  b = np.asarray(head.bias[...], np.float64) if head.bias is not None else np.zeros(len(unit))
  r = bias_shift(w_int, in_bits, bool(head.aq.signed), b, unit, None)
  unit = unit / 2 ** r
  layers.append(IntLayer(head.spec.name, head.spec.kind, w_int, w_bits, w_step, head.spec.kernel,
                         head.spec.stride, (h, w) if head.spec.kind == "conv" else (head.spec.in_h, head.spec.in_w),
                         in_bits, float(s_in), bool(head.aq.signed), np.ones(len(unit)), b, r, unit,
                         _int_bias(b, unit, head.spec.name), None, None, None,
                         reads[n][0] if head.spec.kind == "conv" else 1))
  return IntegerNetwork(name, _input_hw(convs[0]), tuple(layers), pool, pool_hw, net.classifier)


def _reads(convs, order) -> dict[int, tuple[int, int]]:
  """Per running layer (``order``; ``len(convs)``: the head), (the dilation it reads its input with, the input's
  real channels: the first ones, the rest are a skipped layer's zero padding)."""
  n = len(convs)
  reads = {}
  dilation, real = 1, convs[0].spec.cin
  for i in range(n + 1):
    if i in order:
      reads[i] = (dilation, real)
      if i < n:
        dilation, real = 1, convs[i].spec.cout
    else:
      dilation, real = dilation * convs[i].spec.stride, min(real, convs[i].spec.cout)
  return reads


def _skipped(net, i: int) -> bool:
  """Whether the derived network leaves conv layer ``i`` out (its keep choice fixed at 0)."""
  key = getattr(net, "keep_keys", [None] * len(net.convs))[i]
  return key is not None and net.choices[key].values == (0,)


BIAS_ERROR_STEPS = 2.0 ** -20  # largest bias rounding error aimed at, in output steps
MAX_BIAS_SHIFT = 16


def bias_shift(w_int: np.ndarray, in_bits: int, in_signed: bool, offset: np.ndarray, unit: np.ndarray,
               out_step: float | None) -> int:
  """The bias's fractional bits r: the smallest that rounds it within ``BIAS_ERROR_STEPS`` of ``out_step``
  (the largest possible for the output layer, ``out_step=None``) while the shifted accumulator and the bias fit
  int32."""
  qn, qp = quant.qrange(in_bits, in_signed)
  acc_max = float(np.max(np.sum(np.abs(w_int.reshape(-1, w_int.shape[-1]).astype(np.int64)), axis=0))) * max(qn, qp)
  with np.errstate(divide="ignore", invalid="ignore"):
    bias_max = float(np.max(np.abs(np.where(unit != 0, offset / unit, 0.0))))
  r = 0
  while r < MAX_BIAS_SHIFT and (acc_max + bias_max + 1) * 2 ** (r + 1) <= INT32_MAX:
    if out_step is not None and 0.5 * float(np.max(np.abs(unit))) / 2 ** r / out_step <= BIAS_ERROR_STEPS:
      break
    r += 1
  return r


def _input_hw(conv) -> tuple[int, int, int]:
  return conv.spec.in_h, conv.spec.in_w, conv.spec.cin


def _quantizer(net):
  """The network's quantiser (``nas.ops.quantizers``): its space's, else its layers'."""
  name = getattr(getattr(net, "space", None), "quantizer", None) or net.head.aq.quantizer
  return quantizers.get(name)


def _act_step(layer, qz) -> tuple[np.float32, int]:
  """A fixed layer's input activation step (the quantiser's step of its parameter, as the JAX pass computes
  it; LSQ: the parameter floored) and bit-width."""
  if layer.aq.bits is None or len(layer.aq.bits) != 1:
    raise ValueError(f"layer {layer.spec.name}: activations must be quantised at one bit-width to export, "
                     f"got {layer.aq.bits}.")
  qn, qp = quant.qrange(layer.aq.bits[0], layer.aq.signed)
  step = qz.step(np.asarray(layer.aq.step[...], np.float32)[0], np.float32(qn), np.float32(qp))
  return np.float32(np.asarray(step, np.float32)), layer.aq.bits[0]


def _weights(net, layer, qz) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(w_int, bits per output channel, step per output channel) as the eval pass quantises the kernel."""
  if layer.wq.bits is None:
    raise ValueError(f"layer {layer.spec.name} has float weights; only quantised networks can be exported.")
  kernel = np.asarray(layer.kernel[...], np.float32)
  cout = kernel.shape[-1]
  chosen = net.choices[layer.keys.w_bits].derive()
  bits = np.asarray(chosen if isinstance(chosen, tuple) else (chosen,) * cout, np.int64)
  cands = list(layer.wq.bits)
  steps = np.asarray(layer.wq.step[...], np.float32)  # (candidates, cout)
  qn = (2.0 ** (bits - 1)).astype(np.float32)
  step = np.asarray(qz.step(steps[[cands.index(int(b)) for b in bits], np.arange(cout)], qn, qn - 1), np.float32)
  w_int = np.round(np.clip(kernel / step, -qn, qn - 1)).astype(np.int8)  # float32, as the quantiser's value
  return w_int, bits, step


def _int_bias(beta: np.ndarray, unit: np.ndarray, name: str) -> np.ndarray:
  """round(beta / unit) as int32, or a ValueError naming the layer if it does not fit (a BatchNorm gain ~ 0)."""
  with np.errstate(divide="ignore", invalid="ignore"):
    b = np.round(np.where(unit != 0, beta / unit, 0.0))
  if np.any(unit == 0) or np.max(np.abs(b)) > INT32_MAX:
    c = int(np.argmax(np.where(unit == 0, np.inf, np.abs(b))))
    raise ValueError(f"layer {name}, channel {c}: the BatchNorm-folded bias does not fit int32 (gain "
                     f"{unit[c]:.3g} per accumulator step); this channel cannot be exported as an integer layer.")
  return b.astype(np.int32)
