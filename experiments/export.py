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
  model.qonnx.onnx  QONNX: ``Quant`` nodes carrying each tensor's exact bit-width (per-channel weight bit-widths as
                    one Quant per bit-width group), float Conv/BatchNorm (Mul, Add)/ReLU between them.
  weights.bin       the packed integer network (layout: ``nas.pack``).
  export.json       per layer bits, scales, shapes; packed bytes against result.json's weight_bytes; agreement of
                    the integer reference, onnxruntime and the JAX network on the run's test set.
  measure.json      (--measure) onnxruntime CPU latency, end to end and per node, beside result.json's costs.

Takes a few seconds on digits (most of it importing JAX and the first compilation). Bad input (no finished
network in the folder, a model the exporter does not know, an output folder that cannot be written) stops with
one sentence on stderr and exit status 2.

What onnxruntime makes of it (1.32, CPU, measured): it fuses the classifier's DQ -> Gemm into QGemm (8 bits), but
runs every convolution as a float Conv on dequantised weights (DequantizeLinear of the constant weights included
in each run), because its integer kernels (QLinearConv, QGemm) take 8-bit tensors with the bias in whole
accumulator steps, and here the bias has fractional bits (``nas.integer``, ``bias_shift``), a separate Add. So
--measure times onnxruntime's float execution of the QDQ graph, not integer arithmetic at the searched widths.
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
  k, s = layer.kernel, layer.stride
  (t, b), (l, r) = integer.same_pads(layer.in_hw[0], k, s), integer.same_pads(layer.in_hw[1], k, s)
  return {"kernel_shape": [k, k], "strides": [s, s], "pads": [t, l, b, r]}


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

def ort_session(model_bytes: bytes, threads: int = 1, profile_prefix: str | None = None):
  """An onnxruntime CPU session with all graph optimisations (QDQ fusion) and ``threads`` intra-op threads."""
  import onnxruntime as ort
  opts = ort.SessionOptions()
  opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
  opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
  if profile_prefix is not None:
    opts.enable_profiling, opts.profile_file_prefix = True, profile_prefix
  return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


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


def measure(model_bytes: bytes, inet: integer.IntegerNetwork, x: np.ndarray, tmp: pathlib.Path,
            repeats: int = 300, threads: int = 1) -> dict:
  """onnxruntime CPU latency of one image, end to end (median of ``repeats`` warm runs) and per node (profiler)."""
  import onnxruntime as ort
  one = np.asarray(x[:1], np.float32)
  sess, times = ort_session(model_bytes, threads), []
  for i in range(20 + repeats):  # 20 warm-up runs
    t0 = time.perf_counter()
    sess.run(None, {"image": one})
    times.append(time.perf_counter() - t0)
  times = times[20:]
  prof = ort_session(model_bytes, threads, str(tmp / "ort_profile"))
  for _ in range(20 + repeats):
    prof.run(None, {"image": one})
  events = json.loads(pathlib.Path(prof.end_profiling()).read_text())
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
  rows = []
  for row in per_node.values():
    d = row.pop("durations_us")[20:] or [0.0]  # the warm-up runs are dropped
    layer = layers.get(row["node"].split("/")[0])
    row.update(layer=None if layer is None else layer.name, measured_us=float(np.median(d)), runs=len(d),
               w_bits=None if layer is None else _bits_summary(layer.w_bits),
               a_bits_in=None if layer is None else layer.in_bits)
    rows.append(row)
  return {"provider": "CPUExecutionProvider", "onnxruntime": ort.__version__, "batch": 1,
          "intra_op_threads": threads, "inter_op_threads": 1, "repeats": repeats, "warmup": 20,
          "end_to_end_us": {"median": 1e6 * float(np.median(times)), "p10": 1e6 * float(np.percentile(times, 10)),
                            "p90": 1e6 * float(np.percentile(times, 90))},
          "nodes_sum_us": float(sum(r["measured_us"] for r in rows)), "nodes": rows,
          "note": "per node: median over the profiled runs after warm-up, from onnxruntime's profiler (whole "
                  "microseconds, profiling overhead included, so nodes_sum_us exceeds end_to_end_us); node names "
                  "start with the layer name (fused nodes keep it); the machine may be shared, see p10/p90"}


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
  _, result, net, data = load_run(run_dir)
  tmp = _staging(out)
  try:
    inet = integer.from_network(net)
    qdq, qonnx = qdq_model(inet), qonnx_model(inet)
    onnx.checker.check_model(qdq, full_check=True)
    onnx.checker.check_model(qonnx)
    qdq_bytes = qdq.SerializeToString()
    (tmp / "model.onnx").write_bytes(qdq_bytes)
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
    weight_bytes = result.get("weight_bytes", result.get("metrics", {}).get("weight_bytes"))
    info = {
        "run": str(run_dir.resolve()), "model": inet.model, "classifier": inet.classifier,
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
    }
    if do_measure:
      m = measure(qdq_bytes, inet, x, tmp, repeats, threads)
      m.update(predicted_cost=result.get("cost"), predicted_target=result.get("target"))
      (tmp / "measure.json").write_text(json.dumps(m, indent=1))
      for f in tmp.glob("ort_profile*.json"):
        f.unlink()
      info["measure"] = {"end_to_end_us": m["end_to_end_us"], "intra_op_threads": m["intra_op_threads"]}
    (tmp / "export.json").write_text(json.dumps(info, indent=1))
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  _commit(tmp, out)
  return info


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
  if "measure" in info:
    lines.append(f"onnxruntime CPU, batch 1, {info['measure']['intra_op_threads']} thread(s): "
                 f"{info['measure']['end_to_end_us']['median']:.1f} us median")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.export", description=__doc__.split("\n")[0])
  parser.add_argument("run_dir", help="a finished run folder (result.json, network.npz, .hydra/config.yaml)")
  parser.add_argument("--out", default=None, help="output folder (default RUN_DIR/export); replaced if present")
  parser.add_argument("--measure", action="store_true", help="time model.onnx in onnxruntime (CPU, batch 1)")
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
