"""What every ONNX graph of the integer network shares: a node and initializer collector, the image input and
logits output, a convolution's attributes and weight layout, and the storage type of an integer tensor."""
from __future__ import annotations

import numpy as np

from nas.deploy import integer

OPSET = 21  # QuantizeLinear / DequantizeLinear with INT4 / UINT4
OPSET_INT2 = 25  # ... and INT2 / UINT2 (used only when a tensor has 2 bits)
QONNX_DOMAIN = "qonnx.custom_op.general"
INPUT = "input"  # the name prefix of model.int8.onnx's input quantiser
# The producer recorded in every file; unchanged since the exporter lived in experiments/export.py, so that a
# re-export is byte-identical to an earlier one.
PRODUCER = "hwnas.experiments.export"


class Graph:
  """Collects nodes and initializers with unique names."""

  def __init__(self):
    from onnx import helper, numpy_helper
    self.h, self.nh = helper, numpy_helper
    self.nodes, self.inits, self.n = [], [], 0

  def const(self, name: str, value: np.ndarray, dtype: int | None = None) -> str:
    """An initializer; ``dtype`` (a TensorProto type) stores integers in it, e.g. INT4 (packed by onnx)."""
    value = np.asarray(value)
    if dtype is not None:  # raw data; 2- and 4-bit types through ml_dtypes, packed by onnx
      value = value.astype(np.int64).astype(self.h.tensor_dtype_to_np_dtype(dtype))
    self.inits.append(self.nh.from_array(value, name))
    return name

  def node(self, op: str, inputs, prefix: str, domain: str = "", **attrs) -> str:
    self.n += 1
    out = f"{prefix}/{op}_{self.n}"
    self.nodes.append(self.h.make_node(op, list(inputs), [out], name=out, domain=domain, **attrs))
    return out

  def model(self, inputs, outputs, name: str, opsets):
    graph = self.h.make_graph(self.nodes, name, inputs, outputs, self.inits)
    m = self.h.make_model(graph, opset_imports=[self.h.make_opsetid(d, v) for d, v in opsets],
                          producer_name=PRODUCER)
    m.ir_version = 10
    return m


def start(g: Graph, inet: integer.IntegerNetwork):
  """The graph's input (NHWC float images) and output (logits) and the input transposed to NCHW."""
  from onnx import TensorProto
  h, w, c = inet.input_shape
  x = g.h.make_tensor_value_info("image", TensorProto.FLOAT, ["N", h, w, c])
  y = g.h.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", inet.layers[-1].weight.shape[-1]])
  return x, y, g.node("Transpose", ["image"], "input", perm=[0, 3, 1, 2])


def conv_attrs(layer) -> dict:
  k, s, d = layer.kernel, layer.stride, layer.dilation
  (t, b), (l, r) = (integer.dilated_pads(n, k, s, d) for n in layer.in_hw)
  return {"kernel_shape": [k, k], "strides": [s * d, s * d], "pads": [t, l, b, r], "dilations": [d, d]}


def oihw(weight: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(np.transpose(weight, (3, 2, 0, 1)))


def storage(bits: int, signed: bool) -> tuple[int, int]:
  """(ONNX TensorProto type, its width): the narrowest integer type holding ``bits``-bit values that QuantizeLinear
  and DequantizeLinear take (INT2/UINT2 from opset 25, INT4/UINT4 from opset 21, else 8 bits)."""
  from onnx import TensorProto as T
  if bits <= 2:
    return (T.INT2 if signed else T.UINT2), 2
  if bits <= 4:
    return (T.INT4 if signed else T.UINT4), 4
  return (T.INT8 if signed else T.UINT8), 8


def storage_table(model) -> dict[str, str]:
  """Integer initializers (weights, biases) of a QDQ graph -> their ONNX storage type."""
  from onnx import TensorProto
  return {i.name: TensorProto.DataType.Name(i.data_type) for i in model.graph.initializer
          if i.name.endswith(("/w_int", "/bias_int"))}
