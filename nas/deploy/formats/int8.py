"""model.int8.onnx: the integer network in the QDQ pattern onnxruntime's CPU optimiser fuses into its integer
kernels.

Every integer held in int8 / uint8 within its own bit-width's range, each convolution a QLinearConv (u8 x s8 ->
u8, ReLU folded into the zero point), an activation of fewer than 8 bits clipped by an integer Clip after it,
global average pooling a QLinearGlobalAveragePool, the classifier a QGemm with float logits. What it computes is
``nas.deploy.exact8.int8_kernels``: 8-bit kernels take the bias in whole accumulator steps, so each output
channel's integer weights are shifted left into int8's spare bits (a 2-bit channel by 6: the bias then has 6
fractional bits) and, where a channel's outputs have up to 256 levels, its bias and float multiplier are fitted to
the layer's own output thresholds (the QLinearConv then gives the integer reference's output on every input); the
map before pooling (a wide fixed point in the network) is held in uint8 at the head input's step. Neither this
graph nor model.onnx runs faster below 8 bits: onnxruntime's CPU integer kernels are 8-bit
(conf/hardware/cpu_ort.yaml is fitted to them by ``nas.deploy.calibrate_ort``; the op types and shapes are those
it timed: only the values of the weights, biases and scales changed).
"""
from __future__ import annotations

import numpy as np

from nas.deploy import integer

from nas.deploy import exact8
from nas.deploy.formats.base import ExportFormat, onnx_checker, register
from nas.deploy.onnx_graph import INPUT, OPSET, Graph, conv_attrs, oihw, start
from nas.ops.quant import qrange


def int8_model(inet: integer.IntegerNetwork):
  """The integer network in the QDQ pattern onnxruntime's CPU optimiser fuses into its integer kernels.

  Every integer is held in int8 / uint8 (in its own bit-width's range); per layer
  DQ(uint8 x) + DQ(int8 w, per-channel scale s_w g) + DQ(int32 bias, scale s_x s_w g) -> Conv -> Relu ->
  Q(uint8) becomes one QLinearConv (Relu folded into Q's zero point), DQ -> GlobalAveragePool -> Q a
  QLinearGlobalAveragePool, and DQ -> Gemm a QGemm with float logits. An activation of fewer than 8 bits is
  clipped to its range by an integer Clip on the uint8 tensor after Q (between kernels, so fusion is kept).
  What it computes is :func:`nas.deploy.exact8.int8_kernels` of the network: weights shifted left into int8 (at
  step s_w / 2^e), biases and multipliers fitted to each layer's output thresholds where possible
  (:func:`nas.deploy.exact8.int8_scaled`), the map before pooling in uint8 (requantisation in float by
  onnxruntime: the multiplier it computes from these float32 scales is the one the fit checked).
  """
  from onnx import TensorProto as T
  inet = exact8.int8_kernels(inet)
  g = Graph()
  f32 = np.float32

  def quantize(x, step, bits, signed, prefix):
    """Q to (u)int8, clipped to ``bits`` in integers where narrower."""
    qn, qp = qrange(bits, signed)
    dtype = T.INT8 if signed else T.UINT8
    s, zp = g.const(f"{prefix}/a_scale", f32(step)), g.const(f"{prefix}/a_zero", 0, dtype)
    q = g.node("QuantizeLinear", [x, s, zp], prefix)
    if bits < 8:
      q = g.node("Clip", [q, g.const(f"{prefix}/a_min", -qn, dtype), g.const(f"{prefix}/a_max", qp, dtype)], prefix)
    return q, s, zp

  x_info, y_info, x = start(g, inet)
  first = inet.layers[0]
  q, s, zp = quantize(x, first.in_step, first.in_bits, first.in_signed, INPUT)
  for i, layer in enumerate(inet.layers):
    p = layer.name
    conv, head = layer.kind == "conv", layer.requant is None
    w_scale = (layer.w_step.astype(np.float64) * layer.bn_gain).astype(f32)
    b_scale = f32(layer.in_step) * w_scale
    if conv and head:  # flattening classifier: a conv over the whole map is a Gemm over the flattened map
      q = g.node("Flatten", [q], p)
      weight = np.transpose(_spread(layer), (2, 0, 1, 3)).reshape(-1, layer.weight.shape[-1])  # (C H W, cout)
    else:
      weight = oihw(layer.weight) if conv else layer.weight.reshape(-1, layer.weight.shape[-1])
    axis = 0 if conv and not head else 1
    w = g.node("DequantizeLinear", [g.const(f"{p}/w_int", weight, T.INT8), g.const(f"{p}/w_scale", w_scale),
                                    g.const(f"{p}/w_zero", np.zeros(len(w_scale)), T.INT8)], p, axis=axis)
    b = g.node("DequantizeLinear", [g.const(f"{p}/bias_int", layer.bias), g.const(f"{p}/b_scale", b_scale),
                                    g.const(f"{p}/b_zero", np.zeros(len(w_scale), np.int32))], p, axis=0)
    xd = g.node("DequantizeLinear", [q, s, zp], p)
    if head:
      g.node("Gemm", [xd, w, b], p)
      break
    y = g.node("Relu", [g.node("Conv", [xd, w, b], p, **conv_attrs(layer))], p)
    q, s, zp = quantize(y, layer.out_step, layer.out_bits, False, p + "/out")
    if inet.pool is not None and i == len(inet.layers) - 2:  # global average pooling into the head's input
      nxt = inet.layers[-1]
      y = g.node("GlobalAveragePool", [g.node("DequantizeLinear", [q, s, zp], p)], p)
      q, s, zp = quantize(y, nxt.in_step, nxt.in_bits, nxt.in_signed, p + "/pool")
      q = g.node("Flatten", [q], p)
  g.nodes[-1].output[0] = "logits"
  return g.model([x_info], [y_info], f"{inet.model}_int8", [("", OPSET)])


def _spread(layer) -> np.ndarray:
  """A flattening classifier's HWIO kernel over the map it reads: with dilation d (a skipped strided layer left
  the map unsubsampled) its taps are every d-th pixel and the weights between them zero. A Gemm over the whole
  map (d^2 times the multiply-accumulates) is faster in onnxruntime than slicing the map first (measured on an
  fmnist_cnn network of one conv and the classifier, batch 1, one thread: the classifier 11.7 us through a
  strided Slice, 3.8 us as this Gemm)."""
  d = layer.dilation
  if d == 1:
    return layer.weight
  kh, kw, cin, cout = layer.weight.shape
  full = np.zeros((*layer.in_hw, cin, cout), layer.weight.dtype)
  full[:d * kh:d, :d * kw:d] = layer.weight  # a kernel over the whole map has no padding: tap (i, j) at (d i, d j)
  return full


FORMAT = register(ExportFormat("int8", "model.int8.onnx", int8_model, onnx_checker(full_check=True)))
