"""model.qonnx.onnx: the fake-quantised network in QONNX.

``Quant`` nodes carrying each tensor's exact bit-width (per-channel weight bit-widths as one Quant per bit-width
group), float Conv/BatchNorm (Mul, Add)/ReLU between them.
"""
from __future__ import annotations

import numpy as np

from nas.deploy import integer
from nas.deploy.formats.base import ExportFormat, onnx_checker, register
from nas.deploy.onnx_graph import QONNX_DOMAIN, Graph, conv_attrs, oihw, start


def qonnx_model(inet: integer.IntegerNetwork):
  """The fake-quantised network in QONNX: a ``Quant`` node with each tensor's bit-width before every weight and
  activation, float Conv, BatchNorm (Mul, Add), ReLU, pooling and classifier between them."""
  g = Graph()
  f32 = np.float32

  def quant(x, scale, bits, signed, prefix):
    ins = [x, g.const(f"{prefix}/scale_{g.n}", f32(scale) if np.ndim(scale) == 0 else scale.astype(f32)),
           g.const(f"{prefix}/zero_{g.n}", f32(0)), g.const(f"{prefix}/bits_{g.n}", f32(bits))]
    return g.node("Quant", ins, prefix, domain=QONNX_DOMAIN, signed=int(signed), narrow=0, rounding_mode="ROUND")

  def weights(layer, conv):
    """Float weights through one Quant per bit-width group, reassembled in channel order."""
    w = oihw(layer.weight) if conv else layer.weight  # output channels on axis 0 (OIHW) or 1 (cin, cout)
    axis = 0 if conv else 1
    wf = w.astype(f32) * np.expand_dims(layer.w_step, tuple(a for a in range(w.ndim) if a != axis))
    groups, order, shape = [], [], [1] * w.ndim
    for b in np.unique(layer.w_bits):
      idx = np.flatnonzero(layer.w_bits == b)
      shape[axis] = len(idx)
      sub = g.const(f"{layer.name}/w_{b}bit", np.take(wf, idx, axis=axis))
      groups.append(quant(sub, layer.w_step[idx].reshape(shape), int(b), True, f"{layer.name}/w{b}"))
      order.extend(idx)
    if len(groups) == 1:
      return groups[0]
    cat = g.node("Concat", groups, layer.name, axis=axis)
    return g.node("Gather", [cat, g.const(f"{layer.name}/channel_order", np.argsort(order).astype(np.int64))],
                  layer.name, axis=axis)

  x_info, y_info, x = start(g, inet)
  first = inet.layers[0]
  x = quant(x, first.in_step, first.in_bits, first.in_signed, first.name + "/input")
  for i, layer in enumerate(inet.layers):
    p, conv = layer.name, layer.kind == "conv"
    if not conv:
      y = g.node("MatMul", [x, weights(layer, False)], p)
      g.node("Add", [y, g.const(f"{p}/bias", layer.offset.astype(f32))], p)
      break
    y = g.node("Conv", [x, weights(layer, True)], p, **conv_attrs(layer))
    if layer.requant is None:
      g.node("Flatten", [y], p)
      break
    shape = (1, -1, 1, 1)
    y = g.node("Mul", [y, g.const(f"{p}/bn_gain", layer.bn_gain.astype(f32).reshape(shape))], p)
    y = g.node("Relu", [g.node("Add", [y, g.const(f"{p}/bn_offset", layer.offset.astype(f32).reshape(shape))], p)],
               p)
    if layer.out_bits is None:
      nxt = inet.layers[i + 1]
      x = quant(g.node("Flatten", [g.node("GlobalAveragePool", [y], p)], p), nxt.in_step, nxt.in_bits, False,
                p + "/pool")
    else:
      x = quant(y, layer.out_step, layer.out_bits, False, p + "/out")
  g.nodes[-1].output[0] = "logits"
  return g.model([x_info], [y_info], f"{inet.model}_qonnx", [("", 13), (QONNX_DOMAIN, 1)])


FORMAT = register(ExportFormat("qonnx", "model.qonnx.onnx", qonnx_model, onnx_checker(full_check=False)))
