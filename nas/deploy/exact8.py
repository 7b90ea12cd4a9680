"""The integer network that 8-bit integer kernels run (``model.int8.onnx``: onnxruntime's QLinearConv, QGemm,
QLinearGlobalAveragePool), and how it is made to compute what the integer reference computes.

8-bit kernels take an int32 bias in whole accumulator steps and hold the map before global pooling in uint8.
:func:`int8_kernels` shifts each channel's weights into int8's spare bits (the bias then carries that many
fractional bits) and fits each channel's bias and multiplier so that the kernel's output steps fall where the
integer reference's do (``_fit_thresholds``); :func:`whole_step_kernels` is the graph before that fit (whole-step
biases), kept for comparison. ``verify.int8_check`` measures what each gives.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from nas.deploy.integer import IntegerNetwork, IntLayer, Requant, _int_bias, dyadic
from nas.ops import quant


def whole_step(net: IntegerNetwork) -> IntegerNetwork:
  """The network with every bias in whole accumulator steps (``bias_shift`` 0), as onnxruntime's QLinearConv
  and QGemm take it: bias = round(offset / (s_in s_w g)), the requantisation rescaled to match. The rounding
  moves each output by up to half an accumulator step (of s_in s_w g), the deviation documented above; its
  effect on predictions is measured (``experiments.export``, ``model.int8.onnx``)."""
  layers = []
  for l in net.layers:
    unit = l.acc_scale * 2.0 ** l.bias_shift
    requant = None
    if l.requant is not None:
      m, k = dyadic(unit / l.out_step)
      requant = Requant(m, k, l.requant.lo, l.requant.hi)
    layers.append(dataclasses.replace(l, bias_shift=0, acc_scale=unit, bias=_int_bias(l.offset, unit, l.name),
                                      requant=requant))
  return dataclasses.replace(net, layers=tuple(layers))


def weight_headroom(layer: IntLayer) -> np.ndarray:
  """Per output channel, e: the most left shifts (at most ``bias_shift``) that keep the layer's integer weights
  in int8 ([-128, 127]): at least 8 - b for a b-bit channel, more where its weights do not reach its range's ends
  (all-zero channels: ``bias_shift``)."""
  w = layer.weight.reshape(-1, layer.weight.shape[-1]).astype(np.int64)
  hi, lo = w.max(axis=0), w.min(axis=0)
  e = np.zeros(len(hi), np.int64)
  for s in range(1, layer.bias_shift + 1):  # the condition is monotone in s
    e = np.where((np.left_shift(hi, s) <= 127) & (np.left_shift(lo, s) >= -128), s, e)
  return e


def int8_scaled(layer: IntLayer) -> IntLayer:
  """The layer as one 8-bit integer kernel runs it (onnxruntime's QLinearConv / QGemm: int8 weights, an int32
  bias in whole accumulator steps, requantisation by one float32 multiplier per output channel), as close to the
  layer as those allow, per output channel:

  * the integer weights are shifted left by e = :func:`weight_headroom` (still int8, at step s_w / 2^e), so an
    accumulator step is 2^-e of the layer's unshifted one and the whole-step bias keeps e fractional bits;
  * where the output has at most ``FIT_LEVELS`` + 1 levels (every 2-, 4- and 8-bit activation: 3, 15 and 255
    thresholds on the accumulator) the bias and the multiplier are fitted to the layer's own thresholds
    (:func:`_fit_thresholds`): the kernel's output then equals the layer's for every accumulator the layer's
    inputs and weights can produce, with a margin of at least ``FIT_MARGIN`` output steps from every rounding
    tie (so float32 requantisation rounds it the same). Low-bit outputs nearly always fit; 8-bit outputs of
    8-bit weights (little or no headroom, 255 thresholds) seldom do;
  * elsewhere (the output layer, a channel no fit is found for) the bias is round(offset / step): an error of at
    most 2^-(e+1) accumulator steps (e = 0 for weights using all of int8: :func:`whole_step`'s bias).

  The multiplier is the float32 one onnxruntime computes (x_scale w_scale / y_scale, ``ort_multiplier``), held
  exactly as the dyadic requantisation; a shifted channel's weights are held as 8 bits. ``bias_shift`` is 0."""
  return _kernel_layer(layer)[0]


def _kernel_layer(layer: IntLayer) -> tuple[IntLayer, np.ndarray]:
  """:func:`int8_scaled` of the layer and which of its output channels were fitted (bool per channel)."""
  unit = layer.acc_scale * 2.0 ** layer.bias_shift  # s_in s_w g: one step of the unshifted accumulator
  e = weight_headroom(layer)
  acc_scale = unit / 2.0 ** e
  bias = _int_bias(layer.offset, acc_scale, layer.name).astype(np.int64)
  weight = np.left_shift(layer.weight.astype(np.int64), e).astype(np.int8)  # e per output channel (last axis)
  fitted = np.zeros(len(e), bool)
  if layer.requant is not None and layer.requant.hi - layer.requant.lo <= FIT_LEVELS:
    for o in range(len(e)):
      fit = _fit_thresholds(layer, o, int(e[o]))
      if fit is not None:
        (bias[o], acc_scale[o]), fitted[o] = fit, True
  w_step = acc_scale / (float(layer.in_step) * layer.bn_gain)  # w_step g = the kernel's w_scale
  scaled = dataclasses.replace(layer, weight=weight, w_bits=np.where(e > 0, 8, layer.w_bits), w_step=w_step,
                               bias_shift=0, acc_scale=acc_scale, bias=bias.astype(np.int32))
  if layer.requant is None:
    return scaled, fitted
  m, k = dyadic(ort_multiplier(scaled))
  return dataclasses.replace(scaled, requant=Requant(m, k, layer.requant.lo, layer.requant.hi)), fitted


FIT_LEVELS = 255  # fit the thresholds of outputs of up to this many levels above the lowest (all 8-bit ones)
FIT_MARGIN = 1e-4  # least distance of a fitted kernel's value from a rounding tie, in output steps


def ort_multiplier(layer: IntLayer) -> np.ndarray:
  """The requantisation multiplier onnxruntime's QLinearConv computes from model.int8.onnx's float32 scales:
  x_scale w_scale / y_scale in float32 (w_scale = float32(w_step g), as ``nas.deploy.formats.int8`` writes it)."""
  f32 = np.float32
  w_scale = (layer.w_step.astype(np.float64) * layer.bn_gain).astype(f32)
  return ((f32(layer.in_step) * w_scale) / f32(layer.out_step)).astype(np.float64)


def _acc_range(layer: IntLayer, o: int) -> tuple[int, int]:
  """The least and largest unshifted accumulator output channel ``o`` can reach (zero padding included)."""
  qn, qp = quant.qrange(layer.in_bits, layer.in_signed)
  w = layer.weight[..., o].astype(np.int64).ravel()
  return int(np.sum(np.minimum(w * -qn, w * qp))), int(np.sum(np.maximum(w * -qn, w * qp)))


def _fit_thresholds(layer: IntLayer, o: int, e: int) -> tuple[int, float] | None:
  """(int32 bias, accumulator scale) of output channel ``o`` of the layer with weights shifted left by ``e``
  for which the kernel's requantisation clip(round((A 2^e + bias) x_scale w_scale / y_scale)) gives the layer's
  output on every reachable unshifted accumulator A; None where none is found.

  The layer's output is a monotone step function of A: at most ``hi - lo`` thresholds t_n (the least A whose
  output is >= n; the integers are exact: Python integers). The kernel's are theta_n = (n - 1/2) lam - b with
  b = bias / 2^e and lam = 1 / (multiplier 2^e): any (b, lam) with t_n - 1 < theta_n < t_n for every threshold
  within the reachable range of A (a threshold outside it only has to stay outside it) reproduces the layer
  there. A negative multiplier (a negative BatchNorm gain) is the same problem in -A. Candidate biases are tried
  nearest the exact one first; lam is the middle of its feasible interval; the float32 multiplier onnxruntime
  will compute from it is checked against every threshold with ``FIT_MARGIN``."""
  rq = layer.requant
  m, k, r = int(rq.multiplier[o]), int(rq.shift[o]), layer.bias_shift
  if m == 0 or rq.lo < 0:
    return None
  sign = 1 if m > 0 else -1
  a_lo, a_hi = _acc_range(layer, o)
  if sign < 0:  # in A' = -A the output rises with A'
    a_lo, a_hi = -a_hi, -a_lo
  half = 1 << (k - 1) if k > 0 else 0
  b_ref = int(layer.bias[o])
  levels = np.arange(rq.lo + 1, rq.hi + 1)
  lower, upper = [], []  # bounds on theta_n (in A' units)
  for n in levels:  # the layer: output >= n  iff  ((A << r) + B) m + half >= n 2^k
    num, den = (int(n) << k) - half - b_ref * m, m << r
    t = -((-num) // den) if sign > 0 else -(num // den)  # least A' with output >= n
    if t <= a_lo:
      lower.append(-np.inf); upper.append(a_lo)
    elif t > a_hi:
      lower.append(a_hi); upper.append(np.inf)
    else:
      lower.append(t - 1); upper.append(t)
  lower, upper, c = np.asarray(lower, float), np.asarray(upper, float), levels - 0.5
  unit = float(layer.acc_scale[o]) * 2.0 ** r  # real value of one unshifted accumulator step
  exact = sign * float(layer.offset[o]) / unit * 2 ** e  # the exact bias in steps of the shifted accumulator
  lam_ref = abs(float(layer.out_step) / unit)  # the layer's own lam
  f32 = np.float32
  for j in sorted(range(int(np.floor(exact)) - 2 ** e - 1, int(np.ceil(exact)) + 2 ** e + 2),
                  key=lambda j: abs(j - exact)):
    b = j / 2 ** e
    with np.errstate(invalid="ignore"):
      lo = np.max((lower + b) / c)
      hi = np.min((upper + b) / c)
    lo = max(lo, 0.0)
    if not lo < hi:
      continue
    lam = (lo + hi) / 2 if np.isfinite(hi) else max(lam_ref, 2 * lo)
    acc_scale = sign * float(layer.out_step) / (lam * 2 ** e)
    # the multiplier onnxruntime computes from the float32 scales this gives (see ort_multiplier)
    w_scale = f32(acc_scale / (float(layer.in_step) * float(layer.bn_gain[o])) * float(layer.bn_gain[o]))
    mult = float((f32(layer.in_step) * w_scale) / f32(layer.out_step))
    theta = (c * abs(1.0 / (mult * 2 ** e))) - b  # its thresholds, in A' units
    slack = np.minimum(theta - lower, upper - theta) * abs(mult) * 2 ** e  # in output steps
    if np.min(slack) >= FIT_MARGIN:
      return sign * j, acc_scale
  return None


def int8_kernels(net: IntegerNetwork) -> IntegerNetwork:
  """The network as 8-bit integer kernels (onnxruntime's QLinearConv, QGemm) run it, what model.int8.onnx
  computes: every layer :func:`int8_scaled`; in a pooled classifier the map before global average pooling held in
  uint8 at the head input's step (saturating at 255 steps: only an element over 255 head steps is changed, in a
  map whose mean the head then clips at its own maximum) instead of the wide fixed point, that layer's thresholds
  fitted to the uint8 map of its exact bias; the pooling averages it (sum x 1 / (H W), ties to even as
  onnxruntime's QLinearGlobalAveragePool rounds) into the head's input. A finer step for that map was measured
  worse (trained digits_cnn networks: elements over 255 / 2^f head steps are common; docs/deploy.md)."""
  targets = _int8_targets(net)
  net = dataclasses.replace(net, layers=tuple(int8_scaled(l) for l in targets))
  if net.pool is None:
    return net
  pool = Requant(*dyadic(np.asarray([1.0 / net.pool_hw])), 0, quant.qrange(net.layers[-1].in_bits, False)[1],
                 half_even=True)
  return dataclasses.replace(net, pool=pool)


def whole_step_kernels(net: IntegerNetwork) -> IntegerNetwork:
  """What model.int8.onnx computed before :func:`int8_scaled`: :func:`whole_step` biases (rounded by up to half an
  accumulator step) and, in a pooled classifier, the map before pooling in uint8 at the head input's step. Kept to
  measure the difference (``nas.deploy.verify.int8_check``)."""
  net = whole_step(net)
  if net.pool is None:
    return net
  *body, last, head = net.layers
  m, k = dyadic(last.acc_scale / head.in_step)
  last = dataclasses.replace(last, requant=Requant(m, k, 0, 255), out_bits=8, out_step=head.in_step)
  pool = Requant(*dyadic(np.asarray([1.0 / net.pool_hw])), 0, quant.qrange(head.in_bits, False)[1], half_even=True)
  return dataclasses.replace(net, layers=(*body, last, head), pool=pool)


def _int8_targets(net: IntegerNetwork) -> list[IntLayer]:
  """The layers :func:`int8_kernels` reproduces: the network's, the one before pooling requantised to uint8 at the
  head input's step (from its exact accumulator)."""
  layers = list(net.layers)
  if net.pool is not None:
    last, head = layers[-2:]
    m, k = dyadic(last.acc_scale / head.in_step)
    layers[-2] = dataclasses.replace(last, requant=Requant(m, k, 0, 255), out_bits=8, out_step=head.in_step)
  return layers


def int8_report(net: IntegerNetwork) -> dict[str, dict]:
  """Per layer of :func:`int8_kernels`: its output channels, how many are fitted (exact: :func:`int8_scaled`),
  and the largest bias rounding of the others, |kernel bias - exact bias|, in output steps (the next activation's;
  for the output layer, steps of its unshifted accumulator, s_in s_w; 0 where all are fitted), beside that of a
  whole-step bias (:func:`whole_step`, what model.int8.onnx had before)."""
  out = {}
  for target in _int8_targets(net):
    k, fitted = _kernel_layer(target)
    unit = target.acc_scale * 2.0 ** target.bias_shift
    err = np.abs(k.bias * k.acc_scale - target.offset)  # real units; the exact bias is offset
    step = unit if k.requant is None else np.full(len(err), k.out_step)
    err = np.where(fitted, 0.0, err / np.abs(step))
    out[target.name] = {"channels": int(len(fitted)), "fitted": int(fitted.sum()),
                        "weight_shift": sorted(set(weight_headroom(target).tolist())),
                        "bias_rounding_max": float(err.max()),
                        "whole_step_bias_rounding_max": float(np.max(np.abs(
                            np.round(target.offset / unit) * unit - target.offset) / np.abs(
                            unit if k.requant is None else target.out_step)))}
  return out
