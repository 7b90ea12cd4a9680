"""model.onnx: the integer network as standard ONNX in QDQ form.

Integer weights with per-output-channel scales (BatchNorm folded in), int32 biases, activations quantised and
clipped to their own bit-width; each integer tensor stored in the narrowest type QuantizeLinear /
DequantizeLinear take and onnxruntime runs: INT2/UINT2 (opset 25, used only when a tensor has 2 bits), INT4/UINT4
(3-4 bits, opset 21), else INT8/UINT8; a weight tensor with per-channel bit-widths takes its widest channel's
type. Runs on onnxruntime's CPU provider. Input: NHWC float images.

What onnxruntime makes of it (1.32, CPU, read from its optimised graph): the classifier DQ -> Gemm becomes a
QGemm, but every convolution runs as a float Conv on dequantised weights, because the integer kernels
(QLinearConv, QGemm) take 8-bit tensors with the bias in whole accumulator steps, and here the bias has
fractional bits (``nas.deploy.integer``, ``bias_shift``), a separate Add (``nas.deploy.formats.int8`` is the graph
onnxruntime runs in integer kernels).
"""
from __future__ import annotations

import numpy as np

from nas.deploy import integer
from nas.deploy.formats.base import ExportFormat, onnx_checker, register
from nas.deploy.onnx_graph import OPSET, OPSET_INT2, Graph, conv_attrs, oihw, start, storage
from nas.ops.quant import qrange


def qdq_model(inet: integer.IntegerNetwork):
  """The integer network as a standard ONNX QDQ graph (see the module docstring)."""
  g = Graph()
  f32 = np.float32
  widths = set()

  def q_dq(x, step, bits, signed, prefix):
    qn, qp = qrange(bits, signed)
    dtype, width = storage(bits, signed)
    widths.add(width)
    s, zp = g.const(f"{prefix}/a_scale", f32(step)), g.const(f"{prefix}/a_zero", 0, dtype)
    if bits < width:  # hold the integers in their own range (ONNX's Clip takes no 2- or 4-bit tensors)
      x = g.node("Clip", [x, g.const(f"{prefix}/a_min", f32(-qn * f32(step))),
                          g.const(f"{prefix}/a_max", f32(qp * f32(step)))], prefix)
    return g.node("DequantizeLinear", [g.node("QuantizeLinear", [x, s, zp], prefix), s, zp], prefix)

  x_info, y_info, x = start(g, inet)
  first = inet.layers[0]
  x = q_dq(x, first.in_step, first.in_bits, first.in_signed, first.name + "/input")
  for i, layer in enumerate(inet.layers):
    p = layer.name
    w_scale = (layer.w_step.astype(np.float64) * layer.bn_gain).astype(f32)  # BatchNorm folded in
    conv = layer.kind == "conv"
    w_type, width = storage(int(layer.w_bits.max()), True)  # one type per tensor: its widest channel's
    widths.add(width)
    w = g.const(f"{p}/w_int", oihw(layer.weight) if conv else layer.weight, w_type)
    wz = g.const(f"{p}/w_zero", np.zeros(len(w_scale), np.int64), w_type)
    wdq = g.node("DequantizeLinear", [w, g.const(f"{p}/w_scale", w_scale), wz], p, axis=0 if conv else 1)
    # The bias's scale: input scale x weight scale (what QLinearConv and QGemm assume) / 2^r. With fractional bits
    # (r > 0) it is a separate Add: onnxruntime fuses DQ -> Gemm into QGemm reading a Gemm's int32 bias as if r
    # were 0, whatever its DQ scale says (measured: logits off by 2^r).
    b_scale = f32(layer.in_step) * w_scale / f32(2 ** layer.bias_shift)
    fine = layer.bias_shift > 0
    b_int = layer.bias.astype(np.int32).reshape((-1, 1, 1) if conv and fine else -1)
    bdq = g.node("DequantizeLinear", [g.const(f"{p}/bias_int", b_int), g.const(f"{p}/b_scale", b_scale),
                                      g.const(f"{p}/b_zero", np.zeros(len(w_scale), np.int32))], p, axis=0)
    ins = [x, wdq] if fine else [x, wdq, bdq]
    y = g.node("Conv", ins, p, **conv_attrs(layer)) if conv else g.node("Gemm", ins, p)
    if fine:
      y = g.node("Add", [y, bdq], p)
    if not conv:
      break
    if layer.requant is None:  # flattening classifier: a conv over the whole map
      g.node("Flatten", [y], p)
      break
    if layer.out_bits is None:  # the map before global average pooling is not quantised in the network
      nxt = inet.layers[i + 1]
      y = g.node("GlobalAveragePool", [g.node("Relu", [y], p)], p)
      x = q_dq(g.node("Flatten", [y], p), nxt.in_step, nxt.in_bits, nxt.in_signed, p + "/pool")
    else:  # the saturation (or Clip) at 0 is the ReLU
      x = q_dq(y, layer.out_step, layer.out_bits, False, p + "/out")
  g.nodes[-1].output[0] = "logits"
  opset = OPSET_INT2 if 2 in widths else OPSET
  model = g.model([x_info], [y_info], f"{inet.model}_qdq", [("", opset)])
  model.ir_version = 11 if opset >= OPSET_INT2 else 10
  return model


FORMAT = register(ExportFormat("qdq", "model.onnx", qdq_model, onnx_checker(full_check=True)))
