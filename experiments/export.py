"""Deploy what a search found: integer network, packed weights, ONNX (QDQ) and QONNX files, agreement, timing.

  python -m experiments.export RUN_DIR [--out DIR] [--measure]      # writes RUN_DIR/export (or DIR)

Reads a finished run folder (``result.json``, ``.hydra/config.yaml``, ``network.npz``), rebuilds the fine-tuned
network and writes, through a temporary folder renamed at the end (nothing half-written on failure):

  model.onnx        standard ONNX in QDQ form: integer weights with per-output-channel scales (BatchNorm folded
                    in), int32 biases, activations quantised and clipped to their own bit-width; each integer
                    tensor stored in the narrowest type QuantizeLinear / DequantizeLinear take and onnxruntime
                    runs: INT2/UINT2 (opset 25, used only when a tensor has 2 bits), INT4/UINT4 (3-4 bits,
                    opset 21), else INT8/UINT8; a weight tensor with per-channel bit-widths takes its widest
                    channel's type. Runs on onnxruntime's CPU provider. Input: NHWC float images.
  model.int8.onnx   the same integer network in the QDQ pattern onnxruntime's CPU optimiser fuses into its integer
                    kernels (``int8_model``): every integer held in int8 / uint8 within its own bit-width's range,
                    each convolution a QLinearConv (u8 x s8 -> u8, ReLU folded into the zero point), an activation
                    of fewer than 8 bits clipped by an integer Clip after it, global average pooling a
                    QLinearGlobalAveragePool, the classifier a QGemm with float logits. Two deviations, as 8-bit
                    kernels need (``nas.integer.int8_kernels``): the bias is rounded to whole accumulator steps,
                    and the map before pooling (a wide fixed point in the network) is held in uint8 at the head
                    input's step. export.json ``int8`` gives the largest bias rounding per layer in output steps
                    and the measured top-1 agreement with the integer reference and JAX.
  model.qonnx.onnx  QONNX: ``Quant`` nodes carrying each tensor's exact bit-width (per-channel weight bit-widths as
                    one Quant per bit-width group), float Conv/BatchNorm (Mul, Add)/ReLU between them.
  weights.bin       the packed integer network (layout: ``nas.pack``).
  export.json       per layer bits, scales, shapes; packed bytes against result.json's weight_bytes; agreement of
                    the integer reference, onnxruntime and the JAX network on the run's test set; for
                    model.int8.onnx the kernels onnxruntime runs per layer (read from its optimised graph) and
                    its agreement with the integer reference and JAX.
  measure.json      (--measure) onnxruntime CPU latency of one image (batch 1, one intra-op thread, inputs and
                    outputs bound once: io_binding) of model.int8.onnx: end to end; per layer the graph cut after
                    the layer minus the graph cut before it (``marginal``; with the input stage they add up to
                    the end to end); per node and layer from onnxruntime's profiler (which adds about 2 us to
                    each node); beside result.json's costs and the run's preset's per-layer prediction; and
                    model.onnx's end to end (``float_qdq``). Each time is the median of the fastest of 10
                    blocks of runs (a shared machine has slow phases); medians over all runs are kept too.

Takes a few seconds on digits (most of it importing JAX and the first compilation). Bad input (no finished
network in the folder, a model the exporter does not know, an output folder that cannot be written) stops with
one sentence on stderr and exit status 2.

What onnxruntime makes of them (1.32, CPU, read from its optimised graph): model.onnx's classifier DQ -> Gemm
becomes a QGemm, but every convolution runs as a float Conv on dequantised weights, because the integer kernels
(QLinearConv, QGemm) take 8-bit tensors with the bias in whole accumulator steps, and there the bias has
fractional bits (``nas.integer``, ``bias_shift``), a separate Add. model.int8.onnx runs every convolution as a
QLinearConv and the classifier as a QGemm, which is what --measure times (digits networks: about 2x faster than
model.onnx). Neither runs faster below 8 bits: onnxruntime's CPU integer kernels are 8-bit
(conf/hardware/cpu_ort.yaml is fitted to them; ``experiments.export_sweep`` compares a sweep with it).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np

from nas import integer, pack
from nas.quant import qrange

OPSET = 21  # QuantizeLinear / DequantizeLinear with INT4 / UINT4
OPSET_INT2 = 25  # ... and INT2 / UINT2 (used only when a tensor has 2 bits)
QONNX_DOMAIN = "qonnx.custom_op.general"


class ExportError(Exception):
  """Bad input to the exporter: the message is the one sentence printed."""


# --- loading a run ----------------------------------------------------------------------------------------------

def load_run(run_dir: pathlib.Path):
  """(config, result, network in eval mode, dataset) of a finished run folder.

  Raises:
    ExportError: if the folder holds no finished network or the model is not exportable.
  """
  for name in ("result.json", "network.npz", ".hydra/config.yaml"):
    if not (run_dir / name).is_file():
      raise ExportError(f"{run_dir} holds no finished network: {name} is missing; export a run folder written "
                        f"by a finished `python -m experiments.search` job.")
  result = json.loads((run_dir / "result.json").read_text())
  model = (result.get("architecture") or {}).get("model")
  if model not in integer.EXPORTABLE_MODELS:
    raise ExportError(f"{run_dir}: model {model!r} cannot be exported; the exporter knows "
                      f"{list(integer.EXPORTABLE_MODELS)}.")
  from omegaconf import OmegaConf
  from experiments.search import _model_args, apply_debug, load_dataset, search_space
  from nas.arch import Architecture
  from nas.checkpoint import load_network
  from nas.models import build_model
  cfg = OmegaConf.load(run_dir / ".hydra/config.yaml")
  if cfg.get("debug"):
    apply_debug(cfg)
  data = load_dataset(cfg)
  net = build_model(model, search_space(cfg), seed=cfg.seed, arch=Architecture.from_dict(result["architecture"]),
                    **_model_args(cfg, data))
  load_network(net, run_dir / "network.npz")
  net.eval()
  return cfg, result, net, data


# --- ONNX graphs -------------------------------------------------------------------------------------------------

class _Graph:
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
                          producer_name="hwnas.experiments.export")
    m.ir_version = 10
    return m


def _start(g: _Graph, inet: integer.IntegerNetwork):
  """The graph's input (NHWC float images) and output (logits) and the input transposed to NCHW."""
  from onnx import TensorProto
  h, w, c = inet.input_shape
  x = g.h.make_tensor_value_info("image", TensorProto.FLOAT, ["N", h, w, c])
  y = g.h.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", inet.layers[-1].weight.shape[-1]])
  return x, y, g.node("Transpose", ["image"], "input", perm=[0, 3, 1, 2])


def _conv_attrs(layer) -> dict:
  k, s, d = layer.kernel, layer.stride, layer.dilation
  (t, b), (l, r) = (integer.dilated_pads(n, k, s, d) for n in layer.in_hw)
  return {"kernel_shape": [k, k], "strides": [s * d, s * d], "pads": [t, l, b, r], "dilations": [d, d]}


def _oihw(weight: np.ndarray) -> np.ndarray:
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


def qdq_model(inet: integer.IntegerNetwork):
  """The integer network as a standard ONNX QDQ graph (see the module docstring)."""
  g = _Graph()
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

  x_info, y_info, x = _start(g, inet)
  first = inet.layers[0]
  x = q_dq(x, first.in_step, first.in_bits, first.in_signed, first.name + "/input")
  for i, layer in enumerate(inet.layers):
    p = layer.name
    w_scale = (layer.w_step.astype(np.float64) * layer.bn_gain).astype(f32)  # BatchNorm folded in
    conv = layer.kind == "conv"
    w_type, width = storage(int(layer.w_bits.max()), True)  # one type per tensor: its widest channel's
    widths.add(width)
    w = g.const(f"{p}/w_int", _oihw(layer.weight) if conv else layer.weight, w_type)
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
    y = g.node("Conv", ins, p, **_conv_attrs(layer)) if conv else g.node("Gemm", ins, p)
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


def int8_model(inet: integer.IntegerNetwork):
  """The integer network in the QDQ pattern onnxruntime's CPU optimiser fuses into its integer kernels.

  Every integer is held in int8 / uint8 (in its own bit-width's range); per layer
  DQ(uint8 x) + DQ(int8 w, per-channel scale s_w g) + DQ(int32 bias, scale s_x s_w g) -> Conv -> Relu ->
  Q(uint8) becomes one QLinearConv (Relu folded into Q's zero point), DQ -> GlobalAveragePool -> Q a
  QLinearGlobalAveragePool, and DQ -> Gemm a QGemm with float logits. An activation of fewer than 8 bits is
  clipped to its range by an integer Clip on the uint8 tensor after Q (between kernels, so fusion is kept).
  What it computes is :func:`nas.integer.int8_kernels` of the network: biases in whole accumulator steps, the
  map before pooling in uint8 (requantisation in float by onnxruntime).
  """
  from onnx import TensorProto as T
  inet = integer.int8_kernels(inet)
  g = _Graph()
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

  x_info, y_info, x = _start(g, inet)
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
      weight = _oihw(layer.weight) if conv else layer.weight.reshape(-1, layer.weight.shape[-1])
    axis = 0 if conv and not head else 1
    w = g.node("DequantizeLinear", [g.const(f"{p}/w_int", weight, T.INT8), g.const(f"{p}/w_scale", w_scale),
                                    g.const(f"{p}/w_zero", np.zeros(len(w_scale)), T.INT8)], p, axis=axis)
    b = g.node("DequantizeLinear", [g.const(f"{p}/bias_int", layer.bias), g.const(f"{p}/b_scale", b_scale),
                                    g.const(f"{p}/b_zero", np.zeros(len(w_scale), np.int32))], p, axis=0)
    xd = g.node("DequantizeLinear", [q, s, zp], p)
    if head:
      g.node("Gemm", [xd, w, b], p)
      break
    y = g.node("Relu", [g.node("Conv", [xd, w, b], p, **_conv_attrs(layer))], p)
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


def qonnx_model(inet: integer.IntegerNetwork):
  """The fake-quantised network in QONNX: a ``Quant`` node with each tensor's bit-width before every weight and
  activation, float Conv, BatchNorm (Mul, Add), ReLU, pooling and classifier between them."""
  g = _Graph()
  f32 = np.float32

  def quant(x, scale, bits, signed, prefix):
    ins = [x, g.const(f"{prefix}/scale_{g.n}", f32(scale) if np.ndim(scale) == 0 else scale.astype(f32)),
           g.const(f"{prefix}/zero_{g.n}", f32(0)), g.const(f"{prefix}/bits_{g.n}", f32(bits))]
    return g.node("Quant", ins, prefix, domain=QONNX_DOMAIN, signed=int(signed), narrow=0, rounding_mode="ROUND")

  def weights(layer, conv):
    """Float weights through one Quant per bit-width group, reassembled in channel order."""
    w = _oihw(layer.weight) if conv else layer.weight  # output channels on axis 0 (OIHW) or 1 (cin, cout)
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

  x_info, y_info, x = _start(g, inet)
  first = inet.layers[0]
  x = quant(x, first.in_step, first.in_bits, first.in_signed, first.name + "/input")
  for i, layer in enumerate(inet.layers):
    p, conv = layer.name, layer.kind == "conv"
    if not conv:
      y = g.node("MatMul", [x, weights(layer, False)], p)
      g.node("Add", [y, g.const(f"{p}/bias", layer.offset.astype(f32))], p)
      break
    y = g.node("Conv", [x, weights(layer, True)], p, **_conv_attrs(layer))
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


# --- running and comparing ---------------------------------------------------------------------------------------

def ort_session(model_bytes: bytes, threads: int = 1, profile_prefix: str | None = None,
                optimized_path: pathlib.Path | None = None):
  """An onnxruntime CPU session with all graph optimisations (QDQ fusion) and ``threads`` intra-op threads;
  ``optimized_path``: where onnxruntime writes the graph it runs (after fusion)."""
  import onnxruntime as ort
  opts = ort.SessionOptions()
  opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
  opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
  if profile_prefix is not None:
    opts.enable_profiling, opts.profile_file_prefix = True, profile_prefix
  if optimized_path is not None:  # its warning that the file suits this machine only is expected here
    opts.optimized_model_filepath, opts.log_severity_level = str(optimized_path), 3
  return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


INPUT = "input"  # the name prefix of model.int8.onnx's input quantiser
INTEGER_KERNELS = ("QLinearConv", "ConvInteger", "QGemm", "MatMulInteger", "QLinearMatMul")


def kernels(model_bytes: bytes, inet: integer.IntegerNetwork) -> dict[str, list[str]]:
  """Layer name -> op types of the nodes onnxruntime runs for it after its optimisations (fused nodes keep the
  layer's name as prefix); nodes of no layer (input quantiser, layout transposes) under ``""``."""
  import onnx
  names = [l.name for l in inet.layers]
  with tempfile.TemporaryDirectory() as folder:
    path = pathlib.Path(folder) / "optimized.onnx"
    ort_session(model_bytes, optimized_path=path)
    nodes = onnx.load(path).graph.node
  out: dict[str, list[str]] = {}
  for n in nodes:
    out.setdefault(_layer_of(n.name, names) or "", []).append(n.op_type)
  return out


def _layer_of(node: str, names) -> str | None:
  return next((n for n in names if node.startswith(n + "/")), None)


def jax_logits(net, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
  """The fake-quantised JAX network's eval-mode logits (BatchNorm running statistics, argmax choices)."""
  import jax.numpy as jnp
  from nas.train import _eval_logits
  net.eval()
  return np.concatenate([np.asarray(_eval_logits(net, jnp.asarray(x[i:i + batch_size]), "argmax"))
                         for i in range(0, len(x), batch_size)])


def qonnx_logits(model, x: np.ndarray) -> np.ndarray:
  """Logits from qonnx's own executor (node by node; its Quant implementation)."""
  from qonnx.core.modelwrapper import ModelWrapper
  from qonnx.core.onnx_exec import execute_onnx
  from qonnx.transformation.infer_shapes import InferShapes
  fixed = type(model)()
  fixed.CopyFrom(model)
  for value in list(fixed.graph.input) + list(fixed.graph.output):  # its executor wants a fixed batch
    value.type.tensor_type.shape.dim[0].dim_value = len(x)
  wrapper = ModelWrapper(fixed).transform(InferShapes())
  return execute_onnx(wrapper, {"image": np.asarray(x, np.float32)})["logits"]


def agreement(preds: dict[str, np.ndarray], labels: np.ndarray) -> dict:
  """Accuracies of each runner and the fraction of images where all give the same top-1 class."""
  first = next(iter(preds.values()))
  same = np.all([p == first for p in preds.values()], axis=0)
  acc = {n: float(np.mean(p == labels)) for n, p in preds.items()}
  spread = max(acc.values()) - min(acc.values())
  return {"images": int(len(labels)), "identical_top1": float(np.mean(same)), "accuracy": acc,
          "accuracy_spread_points": 100 * spread,
          "meets_target": bool(np.mean(same) >= 0.995 and 100 * spread <= 0.2),
          "target": "identical top-1 on >= 99.5 % of images, accuracies within 0.2 points"}


def layer_table(inet: integer.IntegerNetwork, packed: dict) -> list[dict]:
  """export.json's per-layer rows: shapes, bits (a list where per channel), steps and the integer parameters."""
  return [{"name": l.name, "kind": l.kind, "weight_shape": list(l.weight.shape),
           "w_bits": l.w_bits.tolist() if len(set(l.w_bits.tolist())) > 1 else int(l.w_bits[0]),
           "a_bits_in": l.in_bits, "a_step_in": l.in_step, "out_bits": l.out_bits, "out_step": l.out_step,
           "w_steps": l.w_step.tolist(), "bn_gain": l.bn_gain.tolist(), "bias_int32": l.bias.tolist(),
           "bias_shift": l.bias_shift, "multiplier": None if l.requant is None else l.requant.multiplier.tolist(),
           "shift": None if l.requant is None else l.requant.shift.tolist(), "weights": int(l.weight.size),
           "packed_bytes": packed["layers"][l.name]} for l in inet.layers]


WARMUP = 20
BLOCKS = 10  # consecutive blocks of the timed runs; the fastest block's median is the headline figure


def _blocks(n: int) -> list[np.ndarray]:
  return np.array_split(np.arange(n), min(BLOCKS, n))


def _bound(sess, one: np.ndarray):
  """``sess``'s input and output bound once to fixed buffers (io_binding), as a deployed program keeps them: a
  run then pays no conversion from and to NumPy (about 4 us per call of ``sess.run`` here)."""
  import onnxruntime as ort
  out = sess.run(None, {"image": one})[0]
  binding = sess.io_binding()
  binding.bind_ortvalue_input("image", ort.OrtValue.ortvalue_from_numpy(one))
  binding.bind_ortvalue_output(sess.get_outputs()[0].name, ort.OrtValue.ortvalue_from_numpy(np.empty_like(out)))
  return binding


def _timed(sessions, one: np.ndarray, repeats: int) -> list[np.ndarray]:
  """Wall times (us) of ``repeats`` warm runs on one image for each session (``run_with_iobinding``, buffers
  bound once: :func:`_bound`), interleaved in ``BLOCKS`` blocks (block b of every session, then block b + 1),
  so that a slow phase of a shared machine falls on all sessions alike."""
  bindings = [_bound(sess, one) for sess in sessions]
  for sess, b in zip(sessions, bindings):
    for _ in range(WARMUP):
      sess.run_with_iobinding(b)
  times = [[] for _ in sessions]
  for block in _blocks(repeats):
    for sess, b, t in zip(sessions, bindings, times):
      for _ in block:
        t0 = time.perf_counter()
        sess.run_with_iobinding(b)
        t.append(time.perf_counter() - t0)
  return [1e6 * np.asarray(t) for t in times]


def _stats(t: np.ndarray) -> dict:
  """``best_block_median``: the median of the fastest block of runs (a shared machine has slow phases, seen here
  as whole blocks up to 1.6x slower), the headline figure; median, p10, p90 over all runs."""
  return {"best_block_median": float(min(np.median(t[b]) for b in _blocks(len(t)))), "median": float(np.median(t)),
          "p10": float(np.percentile(t, 10)), "p90": float(np.percentile(t, 90)), "blocks": len(_blocks(len(t)))}


def prefix_models(model, names) -> list:
  """The graph cut after the input quantiser, then after each layer of ``names`` in turn (its output the layer's
  last tensor; nodes are in network order and named after their layer): the last is the whole graph."""
  import onnx
  inferred = onnx.shape_inference.infer_shapes(model)
  types = {v.name: v.type for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
  nodes = list(model.graph.node)
  out = []
  for name in [INPUT, *names]:
    last = max(i for i, n in enumerate(nodes) if n.name.startswith(name + "/"))
    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    del cut.graph.node[last + 1:]
    used = {i for n in cut.graph.node for i in n.input}
    keep = [i for i in cut.graph.initializer if i.name in used]
    del cut.graph.initializer[:]
    cut.graph.initializer.extend(keep)
    del cut.graph.output[:]
    tensor = nodes[last].output[0]
    cut.graph.output.append(onnx.helper.make_value_info(tensor, types[tensor]))
    out.append(cut)
  return out


def marginal(model, inet: integer.IntegerNetwork, one: np.ndarray, repeats: int, threads: int = 1,
             layers=None) -> dict:
  """Each layer's marginal latency in its network, without the profiler's overhead: the end-to-end time of the
  graph cut after the layer minus that of the graph cut before it (:func:`prefix_models`, timed interleaved,
  fastest block each), so the layers' times and ``input_us`` (the graph cut after the input quantiser: the call
  into onnxruntime and the input's quantisation) add up to the whole graph's. ``layers``: only these (default
  all). Returns ``{"input_us", "layers_us": {name: us}, "cut_before_us": {name: us}, "end_to_end": stats of the
  whole graph or None}``."""
  names = [l.name for l in inet.layers]
  wanted = names if layers is None else list(layers)
  cuts = prefix_models(model, names)
  needed = sorted({0} | {names.index(n) + 1 for n in wanted} | {names.index(n) for n in wanted})
  sessions = [ort_session(cuts[i].SerializeToString(), threads) for i in needed]
  times = dict(zip(needed, _timed(sessions, one, repeats)))
  best = {i: _stats(t)["best_block_median"] for i, t in times.items()}
  return {"input_us": best[0], "layers_us": {n: best[names.index(n) + 1] - best[names.index(n)] for n in wanted},
          "cut_before_us": {n: best[names.index(n)] for n in wanted},
          "end_to_end": _stats(times[len(names)]) if len(names) in times else None}


def measure(int8_model_proto, qdq_bytes: bytes, inet: integer.IntegerNetwork, x: np.ndarray, tmp: pathlib.Path,
            repeats: int = 300, threads: int = 1) -> dict:
  """onnxruntime CPU latency of one image of the integer-kernel graph (model.int8.onnx): end to end, per layer
  (:func:`marginal`) and per node (profiler); and the float-QDQ graph's (model.onnx) end to end."""
  import onnxruntime as ort
  one = np.asarray(x[:1], np.float32)
  int8_bytes = int8_model_proto.SerializeToString()
  m = marginal(int8_model_proto, inet, one, repeats, threads)
  float_e2e = _stats(_timed([ort_session(qdq_bytes, threads)], one, repeats)[0])
  rows, per_layer = profile(int8_bytes, inet, one, tmp, repeats, threads)
  for row in per_layer:
    row["marginal_us"] = m["layers_us"][row["layer"]]
  return {"graph": "model.int8.onnx", "provider": "CPUExecutionProvider", "onnxruntime": ort.__version__,
          "batch": 1, "intra_op_threads": threads, "inter_op_threads": 1, "repeats": repeats, "warmup": WARMUP,
          "end_to_end_us": m["end_to_end"], "input_us": m["input_us"],
          "layers_marginal_sum_us": float(sum(m["layers_us"].values())),
          "nodes_sum_us": float(sum(r["measured_us"] for r in rows)), "nodes": rows, "layers": per_layer,
          "float_qdq": {"graph": "model.onnx", "end_to_end_us": float_e2e,
                        "note": "the float-Conv QDQ graph (onnxruntime runs its convolutions in float on "
                                "dequantised weights), timed the same way, end to end only"},
          "note": "end_to_end_us: wall time of InferenceSession.run_with_iobinding on one image from Python (input "
                  "and output bound once to fixed buffers), best_block_median "
                  "the headline (the median of the fastest of consecutive blocks of runs: a shared machine has "
                  "slow phases), median/p10/p90 over all runs. Per layer: marginal_us, the graph cut after the "
                  "layer minus the graph cut before it (end to end, fastest block each; input_us: the graph cut "
                  "after the input quantiser, i.e. the call into onnxruntime and the input's quantisation; input_us "
                  "+ the layers' marginal_us = end to end); profiler_us, the sum of the layer's nodes in "
                  "onnxruntime's profiler (whole microseconds, its overhead of about 2 us per node included; node "
                  "names start with the layer name, fused nodes keep it), fastest block. Per node: the profiler."}


def profile(model_bytes: bytes, inet: integer.IntegerNetwork, one: np.ndarray, tmp: pathlib.Path, repeats: int,
            threads: int = 1) -> tuple[list[dict], list[dict]]:
  """Per node and per layer latency of one image from onnxruntime's profiler: (node rows, layer rows); a node's
  ``measured_us`` is its median over the runs of the fastest of ``BLOCKS`` consecutive blocks of the ``repeats``
  runs after warm-up (the block whose nodes' medians sum least; ``median_all_us``: over all runs), a layer's the
  sum of its nodes'."""
  prof = ort_session(model_bytes, threads, str(tmp / "ort_profile"))
  for _ in range(WARMUP + repeats):
    prof.run(None, {"image": one})
  path = pathlib.Path(prof.end_profiling())
  events = json.loads(path.read_text())
  path.unlink()
  layers = {l.name: l for l in inet.layers}
  per_node: dict[str, dict] = {}
  for e in events:
    if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
      continue
    name, args = e["name"][:-len("_kernel_time")], e.get("args", {})
    row = per_node.setdefault(name, {"node": name, "op_type": args.get("op_name"), "durations_us": [],
                                     "input_shapes": args.get("input_type_shape"),
                                     "output_shapes": args.get("output_type_shape")})
    row["durations_us"].append(float(e["dur"]))
  runs = np.asarray([row.pop("durations_us")[WARMUP:] for row in per_node.values()])  # (nodes, runs)
  medians = np.asarray([np.median(runs[:, b], axis=1) for b in _blocks(runs.shape[1])])  # (blocks, nodes)
  best = medians[int(np.argmin(medians.sum(axis=1)))]
  rows = []
  for row, d, fast in zip(per_node.values(), runs, best):
    layer = layers.get(_layer_of(row["node"], layers) or "")
    row.update(layer=None if layer is None else layer.name, measured_us=float(fast),
               median_all_us=float(np.median(d)), runs=len(d),
               w_bits=None if layer is None else _bits_summary(layer.w_bits),
               a_bits_in=None if layer is None else layer.in_bits)
    rows.append(row)
  per_layer = [{"layer": l.name, "op_types": [r["op_type"] for r in rows if r["layer"] == l.name],
                "profiler_us": float(sum(r["measured_us"] for r in rows if r["layer"] == l.name))}
               for l in inet.layers]
  return rows, per_layer


def _bits_summary(bits: np.ndarray):
  values = bits.tolist()
  return values[0] if len(set(values)) == 1 else {str(b): values.count(b) for b in sorted(set(values))}


# --- the command -------------------------------------------------------------------------------------------------

def _staging(out: pathlib.Path) -> pathlib.Path:
  """A temporary folder beside ``out`` (renamed to it at the end), or an ExportError if it cannot be written."""
  parent = out.parent
  if not parent.is_dir():
    raise ExportError(f"cannot write {out}: its parent {parent} is not an existing folder; pass another --out.")
  if out.exists() and not out.is_dir():
    raise ExportError(f"cannot write {out}: it exists and is not a folder; pass another --out.")
  try:
    tmp = pathlib.Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}.tmp-"))
    tmp.chmod(0o755)  # mkdtemp's 0700 would carry over to the export folder
    return tmp
  except OSError as e:
    raise ExportError(f"cannot write into {parent} ({e.strerror}); pass a writable --out.") from None


def _commit(tmp: pathlib.Path, out: pathlib.Path) -> None:
  """Replaces ``out`` with ``tmp`` (an old export is moved aside first and removed after the rename)."""
  old = None
  if out.exists():
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    out.rename(old)
  tmp.rename(out)
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


def export(run_dir, out=None, do_measure: bool = False, repeats: int = 300, threads: int = 1) -> dict:
  """Writes the export of ``run_dir`` into ``out`` (default ``run_dir/export``) and returns export.json's content.

  Raises:
    ExportError: bad input (see the module docstring), before anything is written.
  """
  import onnx
  run_dir = pathlib.Path(run_dir)
  out = pathlib.Path(out) if out is not None else run_dir / "export"
  if not run_dir.is_dir():
    raise ExportError(f"{run_dir} is not a folder; pass the run folder of a finished search job.")
  for name, value in (("--repeats", repeats), ("--threads", threads)):
    if int(value) != value or value < 1:
      raise ExportError(f"{name}={value} must be a whole number >= 1.")
  cfg, result, net, data = load_run(run_dir)
  tmp = _staging(out)
  try:
    inet = integer.from_network(net)
    qdq, qonnx, int8 = qdq_model(inet), qonnx_model(inet), int8_model(inet)
    onnx.checker.check_model(qdq, full_check=True)
    onnx.checker.check_model(qonnx)
    onnx.checker.check_model(int8, full_check=True)
    qdq_bytes, int8_bytes = qdq.SerializeToString(), int8.SerializeToString()
    (tmp / "model.onnx").write_bytes(qdq_bytes)
    (tmp / "model.int8.onnx").write_bytes(int8_bytes)
    onnx.save(qonnx, tmp / "model.qonnx.onnx")
    packed = pack.write_weights(tmp / "weights.bin", inet)

    x, y = data.x_test, data.y_test
    _, int_logits = integer.run(inet, x)
    ort_out = ort_session(qdq_bytes).run(None, {"image": np.asarray(x, np.float32)})[0]
    preds = {"integer": int_logits.argmax(-1), "onnxruntime": ort_out.argmax(-1),
             "jax_fake_quant": jax_logits(net, x).argmax(-1)}
    check = agreement(preds, y)
    check.update(qonnx_executor_vs_jax_identical_top1=float(np.mean(
        qonnx_logits(qonnx, x).argmax(-1) == preds["jax_fake_quant"])), result_json_accuracy=result.get("accuracy"))
    int8_info = int8_check(int8_bytes, inet, x, y, preds)
    weight_bytes = result.get("weight_bytes", result.get("metrics", {}).get("weight_bytes"))
    info = {
        "run": str(run_dir), "model": inet.model, "classifier": inet.classifier,
        "input": {"layout": "NHWC float32", "shape": list(inet.input_shape), "step": inet.layers[0].in_step,
                  "bits": inet.layers[0].in_bits, "signed": inet.layers[0].in_signed},
        "pool": None if inet.pool is None else {"hw": inet.pool_hw, "multiplier": int(inet.pool.multiplier[0]),
                                                 "shift": int(inet.pool.shift[0])},
        "layers": layer_table(inet, packed),
        "sizes": {"packed_weight_bytes": packed["packed_weight_bytes"], "result_weight_bytes": weight_bytes,
                  "packed_minus_weight_bytes": None if weight_bytes is None
                  else packed["packed_weight_bytes"] - weight_bytes,
                  "weights_bin_bytes": packed["file_bytes"], "overhead_bytes": packed["overhead_bytes"],
                  "overhead_note": "header, names, per-channel bits, steps, int32 biases, float64 accumulator "
                                   "units, int32 multipliers and u8 shifts (nas/pack.py); packed weights are "
                                   "padded to a whole byte per layer",
                  "model_onnx_bytes": len(qdq_bytes)},
        "agreement": check,
        "onnx": {"opset": qdq.opset_import[0].version, "storage": _storage_table(qdq)},
        "int8": int8_info,
    }
    if do_measure:
      m = measure(int8, qdq_bytes, inet, x, tmp, repeats, threads)
      m.update(predicted_cost=result.get("cost"), predicted_target=result.get("target"),
               predicted_layers_s=predicted_layers(cfg, result))
      (tmp / "measure.json").write_text(json.dumps(m, indent=1))
      info["measure"] = {"graph": m["graph"], "end_to_end_us": m["end_to_end_us"], "input_us": m["input_us"],
                         "float_qdq_end_to_end_us": m["float_qdq"]["end_to_end_us"],
                         "intra_op_threads": m["intra_op_threads"]}
    (tmp / "export.json").write_text(json.dumps(info, indent=1))
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  _commit(tmp, out)
  return info


def int8_check(int8_bytes: bytes, inet: integer.IntegerNetwork, x: np.ndarray, y: np.ndarray, preds: dict) -> dict:
  """export.json's ``int8`` block: the kernels onnxruntime runs per layer, the bias rounding, and the top-1
  agreement of model.int8.onnx with the integer reference, its whole-step-bias variant and the JAX network."""
  ops = kernels(int8_bytes, inet)
  int8_pred = ort_session(int8_bytes).run(None, {"image": np.asarray(x, np.float32)})[0].argmax(-1)
  whole = integer.whole_step(inet)
  kernel_pred = integer.run(integer.int8_kernels(inet), x)[1].argmax(-1)
  check = agreement({"integer": preds["integer"], "onnxruntime_int8": int8_pred,
                     "jax_fake_quant": preds["jax_fake_quant"]}, y)
  check.update(vs_integer_top1=float(np.mean(int8_pred == preds["integer"])),
               vs_jax_top1=float(np.mean(int8_pred == preds["jax_fake_quant"])),
               vs_integer_int8_kernels_top1=float(np.mean(int8_pred == kernel_pred)),
               integer_int8_kernels_vs_integer_top1=float(np.mean(kernel_pred == preds["integer"])),
               note="integer_int8_kernels: the integer reference with the deviations of 8-bit kernels "
                    "(nas.integer.int8_kernels: biases in whole accumulator steps, the map before pooling in "
                    "uint8), which model.int8.onnx computes")
  rounding = {}
  for i, (exact, l) in enumerate(zip(inet.layers, whole.layers)):
    err = np.abs(l.bias.astype(np.float64) * l.acc_scale - exact.bias * exact.acc_scale)  # real units
    step = l.acc_scale if l.requant is None else inet.layers[i + 1].in_step if l.out_bits is None else l.out_step
    rounding[l.name] = float(np.max(err / step))
  convs = [l.name for l in inet.layers if l.kind == "conv"]
  return {"file": "model.int8.onnx", "kernels": ops,
          "integer_kernels": all(any(o in INTEGER_KERNELS for o in ops.get(n, [])) for n in convs + [inet.layers[-1].name]),
          "bias_rounding_max": rounding,
          "bias_rounding_note": "largest |whole-step bias - exact bias| per layer, in output steps (the next "
                                "activation's step, for the map before pooling the head input's; accumulator "
                                "steps for the output layer): onnxruntime's integer kernels take the bias in whole accumulator steps",
          "agreement": check}


def predicted_layers(cfg, result: dict) -> dict | None:
  """Per layer predicted latency (seconds) on the run's own hardware preset (sum over a layer's bit-width groups),
  or None if the preset cannot be built here."""
  from nas.arch import Architecture
  try:
    from experiments.search import instantiate_hardware
    hw = instantiate_hardware(cfg.hardware)
  except Exception:  # a user's preset whose module is not importable here: nothing to compare with
    return None
  from hardware.base import inference_cost
  out: dict[str, float] = {}
  arch = Architecture.from_dict(result["architecture"])
  for layer in arch.layers:
    for spec, w in layer.groups():
      cost = hw.cost(spec, w, layer.a_bits, spec.cin, spec.cout)
      out[layer.spec.name] = out.get(layer.spec.name, 0.0) + float(np.asarray(cost.latency_s))
  # The preset's per-inference cost (the runtime call, quantising the input): measured as input_us.
  inference = float(inference_cost(hw, arch.layers[0].spec).latency_s) if arch.layers else 0.0
  return {"target": hw.name, "latency_s": out, "inference_s": inference}


def _storage_table(model) -> dict[str, str]:
  """Integer initializers (weights, biases) of the QDQ graph -> their ONNX storage type."""
  from onnx import TensorProto
  return {i.name: TensorProto.DataType.Name(i.data_type) for i in model.graph.initializer
          if i.name.endswith(("/w_int", "/bias_int"))}


def summary(info: dict) -> str:
  a, s = info["agreement"], info["sizes"]
  acc = ", ".join(f"{k} {100 * v:.2f} %" for k, v in a["accuracy"].items())
  lines = [f"identical top-1 (integer, onnxruntime, JAX): {100 * a['identical_top1']:.2f} % of {a['images']} "
           f"test images; accuracy {acc}; {'meets' if a['meets_target'] else 'MISSES'} the target",
           f"packed weights {s['packed_weight_bytes']} B against result.json weight_bytes {s['result_weight_bytes']} "
           f"B; weights.bin {s['weights_bin_bytes']} B ({s['overhead_bytes']} B scales, biases, header)"]
  i8 = info["int8"]
  lines.append(f"model.int8.onnx ({'integer kernels' if i8['integer_kernels'] else 'NOT all integer kernels'}: "
               f"{', '.join(sorted({o for ops in i8['kernels'].values() for o in ops if o in INTEGER_KERNELS}))}): "
               f"top-1 identical to the integer reference on {100 * i8['agreement']['vs_integer_top1']:.2f} %, to "
               f"JAX on {100 * i8['agreement']['vs_jax_top1']:.2f} % (8-bit kernels' deviations: nas.integer.int8_kernels)")
  if "measure" in info:
    m = info["measure"]
    lines.append(f"onnxruntime CPU, batch 1, {m['intra_op_threads']} thread(s): model.int8.onnx "
                 f"{m['end_to_end_us']['best_block_median']:.1f} us (median of the fastest block of runs; all runs "
                 f"{m['end_to_end_us']['median']:.1f} us; the input stage {m['input_us']:.1f} us), float-QDQ "
                 f"model.onnx {m['float_qdq_end_to_end_us']['best_block_median']:.1f} us")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.export", description=__doc__.split("\n")[0])
  parser.add_argument("run_dir", help="a finished run folder (result.json, network.npz, .hydra/config.yaml)")
  parser.add_argument("--out", default=None, help="output folder (default RUN_DIR/export); replaced if present")
  parser.add_argument("--measure", action="store_true",
                      help="time model.int8.onnx (and model.onnx end to end) in onnxruntime (CPU, batch 1)")
  parser.add_argument("--repeats", type=int, default=300, help="timed runs for --measure (300)")
  parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads for --measure (1)")
  args = parser.parse_args(argv)
  try:
    info = export(args.run_dir, args.out, args.measure, args.repeats, args.threads)
  except (ExportError, ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(summary(info))
  print(f"wrote {pathlib.Path(args.out) if args.out else pathlib.Path(args.run_dir) / 'export'}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
