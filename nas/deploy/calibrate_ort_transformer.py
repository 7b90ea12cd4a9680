"""The transformer kinds of the ``cpu_ort`` preset: onnxruntime's CPU kernels for the ViT export's node patterns.

``nas.deploy.calibrate_ort`` times the CNN layers of ``model.int8.onnx``; this module times the four kinds the ViT
supernet (``nas/models/vit.py``) adds, each as the ONNX node pattern the ViT export writes (``nas/deploy/vit_onnx.py``:
opset 21, a symbolic batch dimension, timed at batch 1; 8-bit activations, so without the float Clip it puts
before the QuantizeLinear of a sub-8-bit one):

* ``linear`` (``path`` "linear"): input float (1, T, cin) -> QuantizeLinear (int8, one scale, zero point 0) ->
  DequantizeLinear -> MatMul with DequantizeLinear(int8 weight initializer (cin, cout), one scale per output
  column, axis=1) -> Add of a float bias.
* ``matmul``: two activations, each QuantizeLinear -> DequantizeLinear, then MatMul, batched over H heads:
  "matmul_qk" Q (1, H, T, d) int8 times K^T (1, H, d, T) int8 (LayerSpec cin = d, cout = H T, head_cols = T),
  "matmul_av" the probabilities (1, H, T, T) uint8 times V (1, H, T, d) int8 (cin = T, cout = H d, head_cols = d).
* ``softmax``: float32 Softmax over the last axis of (1, H, T, T) (LayerSpec cin = cout = H T, in_h = T).
* ``layernorm``: LayerNormalization (epsilon 1e-6, float32 scale and bias) over the last axis of
  (1, T, E) (cin = cout = E, in_h = T).

What onnxruntime 1.32 makes of them (``op_types`` of each record, read from its optimised graph): the linear and
the matmuls fuse into ``MatMulIntegerToFloat`` (u8/s8 x s8 -> int32 -> float, MLAS) after their QuantizeLinear,
the linear's bias staying a float Add. That holds because the graph inputs' batch dimension is symbolic (``BATCH``),
as ``nas/deploy/vit_onnx.py`` writes it, at its opset 21. With a static batch of 1, onnxruntime's
``MatMulAddFusion`` turns the linear's MatMul + Add into Reshape -> Gemm -> Reshape before the QDQ fusions see the
MatMul: a float Gemm on weights dequantised on every call, 4.5-13x slower on the ViT's shapes (2026-12-07, e.g.
64 -> 96 at T = 17: 14.9 us against 3.1 us; at opset 21 that session does not even load). An export with a fixed
batch would need the linear measured again that way.

Method (as ``calibrate_ort`` times the CNN layers): each layer sits in a two-stage graph, a producer stage
("before/": one float Mul by a constant per graph input, a stand-in for the score scaling, residual add or
LayerNorm that makes the layer's input in the ViT graph, which no fusion folds into the layer) then the layer
("layer/"). The graph cut after the layer and the graph cut before it (the producers alone, their outputs the
graph's) are timed interleaved in one onnxruntime CPU session each (one intra-op thread, inputs and outputs bound
once with io_binding, ``run_with_iobinding``), the median of the fastest of ``nas.deploy.ort.BLOCKS`` blocks of
runs each; the layer's time in one pass is cut after minus cut before (so the call into onnxruntime and the
producers cancel), and its recorded time the median of that paired difference over six passes over the grid
(alternately in reverse order), so each layer is timed at six moments seconds apart on a shared machine (six, not
the CNN grid's four: in a trial at load average 7, 3 % of these layers had one or two passes 10-60 % slow, and the
median of six passes absorbs two).

The grid: every shape the ViT space takes at T = 5 (8x8 digits, patch 4, plus a class token) and T = 17 (28x28,
patch 7, plus a class token), embeddings 32, 64 and 128 with head dimension 16 and the search's width multiples
of the heads (E / 16 x 0.5 .. 1.5: 1-12 heads) and of MLP widths 2E and 4E (32-768), plus seeded other shapes
for the fit (T up to 65, channels up to 512, head dimensions 8-64). The constants ``mac_rate.linear``,
``mac_rate.matmul``, ``float_ops_per_s`` and per-kind ``layer_overhead_s`` (``PARAMS``) are fitted by the same
soft-L1 least squares on log latency as ``hardware.calibrate`` (differential evolution, then ``least_squares``) on
a seeded 75 % of these layers, with the CNN fit's ``mem_bw`` and channel multiples held fixed (the CNN constants
are not refitted), and reported on the other 25 %, per kind.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Dict, List, Sequence, Tuple

import numpy as np

from hardware import calibrate
from hardware.base import ELEMENTWISE_KINDS, LayerSpec
from hardware.cpu import KINDS as CNN_KINDS, SIMDCPU
from hardware.kinds import SEQUENCE_KINDS

OPSET = 21  # as nas/deploy/vit_onnx.py writes the ViT (LayerNormalization needs >= 17)
BATCH = "N"  # the graph inputs' batch dimension, symbolic as the ViT export writes it (see the module docstring)
VIT_TOKENS = (5, 17)  # 8x8 digits at patch 4, 28x28 images at patch 7; each plus a class token
VIT_EMBEDS = (32, 64, 128)
HEAD_DIM = 16
# How each grid layer runs, by its path (the node pattern; see the module docstring).
PATHS = {"linear": "QuantizeLinear + DequantizeLinear + MatMul(DequantizeLinear int8 weight, per column) + Add",
         "matmul_qk": "QuantizeLinear x2 (s8, s8) + DequantizeLinear x2 + MatMul",
         "matmul_av": "QuantizeLinear x2 (u8 probabilities, s8) + DequantizeLinear x2 + MatMul",
         "softmax": "Softmax (float32, last axis)", "layernorm": "LayerNormalization (float32, last axis)"}
PARAMS = ("rate_linear", "rate_matmul", "float_ops_per_s", "overhead_linear", "overhead_matmul",
          "overhead_softmax", "overhead_layernorm")


@dataclasses.dataclass(frozen=True)
class SequenceLayer:
  spec: LayerSpec
  path: str  # a key of PATHS


def _qk(t: int, heads: int, d: int) -> SequenceLayer:
  return SequenceLayer(LayerSpec("matmul", d, heads * t, in_h=t, head_cols=t), "matmul_qk")


def _av(t: int, heads: int, d: int) -> SequenceLayer:
  return SequenceLayer(LayerSpec("matmul", t, heads * d, in_h=t, head_cols=d), "matmul_av")


def _linear(t: int, cin: int, cout: int) -> SequenceLayer:
  return SequenceLayer(LayerSpec("linear", cin, cout, in_h=t), "linear")


def _softmax(t: int, heads: int) -> SequenceLayer:
  return SequenceLayer(LayerSpec("softmax", heads * t, heads * t, in_h=t), "softmax")


def _layernorm(t: int, e: int) -> SequenceLayer:
  return SequenceLayer(LayerSpec("layernorm", e, e, in_h=t), "layernorm")


def vit_layers() -> List[SequenceLayer]:
  """Every linear, matmul, softmax and layernorm shape of the ViT space at ``VIT_TOKENS`` and ``VIT_EMBEDS``, once."""
  from nas.models.space import SearchSpace
  space = SearchSpace()
  out: List[SequenceLayer] = []
  for t in VIT_TOKENS:
    all_heads = set()
    for e in VIT_EMBEDS:
      heads = sorted({max(1, int(round(e // HEAD_DIM * m))) for m in space.width_mults})
      all_heads.update(heads)
      mlps = sorted(set(space.channels(2 * e)) | set(space.channels(4 * e)))
      out.extend(_linear(t, e, h * HEAD_DIM) for h in heads)  # q, k, v
      out.extend(_linear(t, h * HEAD_DIM, e) for h in heads)  # the output projection
      out.extend(_linear(t, e, m) for m in mlps)  # fc1
      out.extend(_linear(t, m, e) for m in mlps)  # fc2
      out.append(_layernorm(t, e))
    for h in sorted(all_heads):
      out.extend((_qk(t, h, HEAD_DIM), _softmax(t, h), _av(t, h, HEAD_DIM)))
  return list(dict.fromkeys(out))  # each shape once (64 -> 64 is q, k, v, the projection, fc1 and fc2 at E = 64)


def _sample(rng, pool: list, count: int, taken: set) -> list:
  pool = [g for g in pool if g.spec not in taken]
  return [pool[i] for i in sorted(rng.choice(len(pool), min(count, len(pool)), replace=False))]


def default_grid(seed: int = 0, extra: Tuple[int, int, int, int] = (40, 24, 20, 20)) -> List[SequenceLayer]:
  """The ViT space's layers, then seeded other shapes (``extra``: linear, matmul, softmax, layernorm) for the fit:
  tokens 1-65, channels 16-512 (at most 3 M MACs a layer: none took over 35 us on the measured host), head dims
  8-64."""
  rng = np.random.default_rng(seed)
  out = vit_layers()
  taken = {g.spec for g in out}
  tokens = (1, 9, 17, 33, 50, 65)
  chans = (16, 24, 48, 80, 160, 256, 320, 512)
  lin = [_linear(t, ci, co) for t in tokens for ci in chans for co in chans if t * ci * co <= 3e6]
  mm = [f(t, h, d) for t in tokens[1:] for h in (1, 2, 3, 4, 6, 8) for d in (8, 16, 32, 64) for f in (_qk, _av)
        if h * t * t * d <= 3e6]
  sm = [_softmax(t, h) for t in tokens[1:] for h in (1, 2, 3, 4, 6, 8, 12)]
  ln = [_layernorm(t, e) for t in tokens for e in chans]
  for pool, count in zip((lin, mm, sm, ln), extra):
    out.extend(_sample(rng, pool, count, taken))
  return [dataclasses.replace(g, spec=dataclasses.replace(g.spec, name=f"s{i}")) for i, g in enumerate(out)]


def tiny_grid() -> List[SequenceLayer]:
  """One layer per path (ViT shapes at T = 17, 2 heads): a seconds-long run for tests."""
  grid = [_linear(17, 64, 32), _qk(17, 2, 16), _softmax(17, 2), _av(17, 2, 16), _layernorm(17, 64)]
  return [dataclasses.replace(g, spec=dataclasses.replace(g.spec, name=f"u{i}")) for i, g in enumerate(grid)]


# --- the layer as exported ---------------------------------------------------------------------------------------

def _inputs(g: SequenceLayer) -> List[Tuple[str, Tuple[int, ...]]]:
  """(name, shape) of each graph input of ``g``'s network."""
  s = g.spec
  if g.path.startswith("matmul"):
    heads = int(s.cout // s.head_cols)
    return [("a_in", (1, heads, s.in_h, s.cin)), ("b_in", (1, heads, s.cin, s.head_cols))]
  if g.path == "softmax":
    return [("x_in", (1, s.cin // s.in_h, s.in_h, s.in_h))]
  return [("x_in", (1, s.in_h, s.cin))]  # linear, layernorm


def _qdq(helper, src: str, dst: str, name: str, unsigned: bool = False) -> list:
  """QuantizeLinear -> DequantizeLinear of ``src`` (one scale, zero point 0), as the ViT export quantises an
  activation; the scale and zero point initializers are named after the layer."""
  return [helper.make_node("QuantizeLinear", [src, f"{name}_s", f"{name}_z"], [f"{name}_q"], name=f"layer/{name}/q"),
          helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [dst], name=f"layer/{name}/dq")]


def _layer_nodes(g: SequenceLayer, rng) -> Tuple[list, list, str]:
  """(nodes, initializers, output name) of the layer itself, reading the producers' outputs ``x`` (or ``a``, ``b``)."""
  from onnx import TensorProto, helper, numpy_helper as nh
  s = g.spec
  scalar = lambda v, name: nh.from_array(np.array(v, np.float32), name)
  zero = lambda name, dtype: helper.make_tensor(name, dtype, [], [0])
  if g.path == "linear":
    nodes = _qdq(helper, "x", "x_dq", "x") + [
        helper.make_node("DequantizeLinear", ["w", "w_s", "w_z"], ["w_dq"], axis=1, name="layer/w/dq"),
        helper.make_node("MatMul", ["x_dq", "w_dq"], ["mm"], name="layer/matmul"),
        helper.make_node("Add", ["mm", "bias"], ["y"], name="layer/bias")]
    inits = [scalar(0.05, "x_s"), zero("x_z", TensorProto.INT8),
             nh.from_array(rng.integers(-8, 8, (s.cin, s.cout)).astype(np.int8), "w"),
             nh.from_array(np.full(s.cout, 0.01, np.float32), "w_s"), nh.from_array(np.zeros(s.cout, np.int8), "w_z"),
             nh.from_array(rng.normal(0, 0.1, s.cout).astype(np.float32), "bias")]
  elif g.path.startswith("matmul"):
    nodes = (_qdq(helper, "a", "a_dq", "a") + _qdq(helper, "b", "b_dq", "b")
             + [helper.make_node("MatMul", ["a_dq", "b_dq"], ["y"], name="layer/matmul")])
    first = TensorProto.UINT8 if g.path == "matmul_av" else TensorProto.INT8
    inits = [scalar(1 / 255 if g.path == "matmul_av" else 0.05, "a_s"), zero("a_z", first),
             scalar(0.05, "b_s"), zero("b_z", TensorProto.INT8)]
  elif g.path == "softmax":
    nodes, inits = [helper.make_node("Softmax", ["x"], ["y"], axis=-1, name="layer/softmax")], []
  else:
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-6,
                              name="layer/layernorm")]
    inits = [nh.from_array(rng.normal(1, 0.1, s.cin).astype(np.float32), "gamma"),
             nh.from_array(rng.normal(0, 0.1, s.cin).astype(np.float32), "beta")]
  return nodes, inits, "y"


def network(g: SequenceLayer, seed: int = 0):
  """(graph cut after the layer, graph cut before it, one input per graph input): ONNX models, checked."""
  import onnx
  from onnx import TensorProto, helper, numpy_helper as nh
  rng = np.random.default_rng(seed)
  ins = _inputs(g)
  produced = ["x"] if len(ins) == 1 else ["a", "b"]
  before = [helper.make_node("Mul", [name, "half"], [p], name=f"before/{p}") for (name, _), p in zip(ins, produced)]
  nodes, inits, out = _layer_nodes(g, rng)
  symbolic = lambda shape: [BATCH, *shape[1:]]  # timed at batch 1
  shapes = {p: symbolic(shape) for (_, shape), p in zip(ins, produced)}
  graph_inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, symbolic(shape)) for name, shape in ins]
  half = nh.from_array(np.array(0.5, np.float32), "half")

  def model(node_list, outputs, initializers):
    graph = helper.make_graph(node_list, g.spec.name or g.path, graph_inputs, outputs, initializers)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    onnx.checker.check_model(m, full_check=True)
    return m

  after_out = [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)]
  cut_after = model(before + nodes, after_out, [half] + inits)
  cut_before = model(before, [helper.make_tensor_value_info(p, TensorProto.FLOAT, shapes[p]) for p in produced],
                     [half])
  feeds = {name: rng.normal(0, 1, shape).astype(np.float32) for name, shape in ins}
  return cut_after, cut_before, feeds


def layer_kernels(model) -> List[str]:
  """Op types of the nodes onnxruntime runs for the layer after its graph optimisations (every node of its
  optimised graph not named "before/...")."""
  import pathlib
  import tempfile

  import onnx
  from nas.deploy.ort import ort_session
  with tempfile.TemporaryDirectory() as folder:
    path = pathlib.Path(folder) / "optimized.onnx"
    ort_session(model.SerializeToString(), optimized_path=path)
    return [n.op_type for n in onnx.load(path).graph.node if not n.name.startswith("before/")]


# --- timing ------------------------------------------------------------------------------------------------------

def _bound(sess, feeds: Dict[str, np.ndarray]):
  """``sess``'s inputs and outputs bound once to fixed buffers (as ``nas.deploy.ort`` binds a network's image)."""
  import onnxruntime as ort
  outs = sess.run(None, feeds)
  binding = sess.io_binding()
  for name, value in feeds.items():
    binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value))
  for o, value in zip(sess.get_outputs(), outs):
    binding.bind_ortvalue_output(o.name, ort.OrtValue.ortvalue_from_numpy(np.empty_like(value)))
  return binding


def timed_pair(models: Sequence, feeds: Dict[str, np.ndarray], repeats: int, threads: int = 1) -> List[float]:
  """Per model: the median (us) of the fastest of ``BLOCKS`` blocks of ``repeats`` warm runs of one image, the
  models' blocks interleaved (block b of each, then block b + 1) so a slow phase falls on them alike."""
  from nas.deploy.ort import BLOCKS, WARMUP, ort_session
  sessions = [ort_session(m.SerializeToString(), threads) for m in models]
  bindings = [_bound(s, {i.name: feeds[i.name] for i in s.get_inputs()}) for s in sessions]
  for s, b in zip(sessions, bindings):
    for _ in range(WARMUP):
      s.run_with_iobinding(b)
  blocks = np.array_split(np.arange(repeats), min(BLOCKS, repeats))
  times: List[List[float]] = [[] for _ in sessions]
  for block in blocks:
    for s, b, t in zip(sessions, bindings, times):
      for _ in block:
        t0 = time.perf_counter()
        s.run_with_iobinding(b)
        t.append(time.perf_counter() - t0)
  return [1e6 * min(float(np.median(np.asarray(t)[idx])) for idx in blocks) for t in times]


def record(g: SequenceLayer, op_types: List[str], after: List[float], before: List[float], repeats: int) -> Dict:
  """One measurement record: the fields of ``calibrate_ort``'s CNN records, plus ``head_cols`` and ``elements``."""
  s = g.spec
  return {"kind": s.kind, "cin": s.cin, "cout": s.cout, "kernel": s.kernel, "stride": s.stride, "in_h": s.in_h,
          "in_w": s.in_w, "head_cols": s.head_cols, "name": s.name, "path": g.path, "op_types": op_types,
          "macs": float(s.macs()), "elements": float(s.elements()),
          "median_s": 1e-6 * float(np.median(np.subtract(after, before))), "cut_after_us": after,
          "cut_before_us": before, "repeats": repeats}


METHOD = ("per layer: the end-to-end time of its graph cut after the layer minus cut before it (the producers "
          "alone), medians of the fastest of 10 interleaved blocks of runs, the median over the passes of that paired "
          "difference (nas/deploy/calibrate_ort_transformer.py)")


def measure(grid: List[SequenceLayer], repeats: int = 400, passes: int = 6, threads: int = 1,
            verbose: bool = False) -> List[Dict]:
  """Time every grid layer as the ViT export writes it (``METHOD``, module docstring): one record per layer."""
  nets = [network(g, seed=i) for i, g in enumerate(grid)]
  before: List[List[float]] = [[] for _ in grid]
  after: List[List[float]] = [[] for _ in grid]
  for p in range(passes):
    for i in (range(len(grid)) if p % 2 == 0 else reversed(range(len(grid)))):
      cut_after, cut_before, feeds = nets[i]
      a, b = timed_pair([cut_after, cut_before], feeds, repeats, threads)
      after[i].append(a)
      before[i].append(b)
  records = []
  for g, (cut_after, _, _), a, b in zip(grid, nets, after, before):
    records.append(record(g, layer_kernels(cut_after), a, b, repeats))
    if verbose:
      s = g.spec
      print(f"{s.name}: {g.path} cin {s.cin} cout {s.cout} T {s.in_h} ({'+'.join(records[-1]['op_types'])}): "
            f"{records[-1]['median_s'] * 1e6:.2f} us", flush=True)
  return records


# --- the fit -----------------------------------------------------------------------------------------------------

def model(cnn: Dict[str, float], seq: Dict[str, float], name: str = "fit") -> SIMDCPU:
  """A SIMDCPU with the CNN fit's constants ``cnn`` (``hardware.calibrate``'s names) and the transformer
  constants ``seq`` (``PARAMS``); energy zero."""
  rates = {k: cnn[f"rate_{k}"] for k in CNN_KINDS}
  overheads = {k: cnn[f"overhead_{k}"] for k in CNN_KINDS}
  rates.update(linear=seq["rate_linear"], matmul=seq["rate_matmul"])
  overheads.update({k: seq[f"overhead_{k}"] for k in SEQUENCE_KINDS})
  return SIMDCPU(name=name, mac_rate=rates, mem_bw=cnn["mem_bw"], layer_overhead_s=overheads, e_mac_j=0.0,
                 e_byte_j=0.0, static_power_w=0.0, cin_multiple=int(cnn.get("cin_multiple", 1)),
                 cout_multiple=int(cnn.get("cout_multiple", 1)), float_ops_per_s=seq["float_ops_per_s"])


def predict(cnn: Dict[str, float], seq: Dict[str, float], layers: Sequence[LayerSpec]) -> np.ndarray:
  """Predicted latency (s) of each layer at 8 bits by the roofline (no measured-layer lookup)."""
  m = model(cnn, seq)
  return np.asarray([float(m.cost(l, 8, 8, l.cin, l.cout).latency_s) for l in layers])


def _terms(cnn: Dict[str, float], layers: Sequence[LayerSpec]):
  """Per layer: work (padded MACs, or float ops), bytes, the index of its rate (linear, matmul, float) and of
  its overhead (``SEQUENCE_KINDS``)."""
  m = model(cnn, dict.fromkeys(PARAMS, 1.0))
  rows = [m.elementwise_terms(l, 8, 8, l.cin, l.cout) if l.kind in ELEMENTWISE_KINDS else m.terms(l, 8, 8, l.cin,
                                                                                                   l.cout)
          for l in layers]
  work, traffic = (np.asarray([float(v) for v in col]) for col in zip(*rows))
  rate = np.asarray([{"linear": 0, "matmul": 1}.get(l.kind, 2) for l in layers])
  overhead = np.asarray([SEQUENCE_KINDS.index(l.kind) for l in layers])
  return work, traffic, rate, overhead


def fit_constants(cnn: Dict[str, float], layers: Sequence[LayerSpec], seconds: Sequence[float],
                  seed: int = 0) -> Dict[str, float]:
  """``PARAMS`` fitted to timed transformer layers with ``cnn``'s ``mem_bw`` and channel multiples fixed:
  latency = overhead[kind] + max(work / rate, bytes / mem_bw), soft-L1 least squares on log latency, a seeded
  differential evolution over wide log-bounds then ``least_squares`` (``hardware.calibrate.fit_constants``' way)."""
  from scipy import optimize
  t = np.asarray(seconds, np.float64)
  kinds = {l.kind for l in layers}
  if len(t) != len(layers) or not set(SEQUENCE_KINDS) <= kinds:
    raise ValueError(f"the transformer fit needs one time per layer and layers of each of {SEQUENCE_KINDS}; got "
                     f"{len(layers)} layers of {sorted(kinds)} and {len(t)} times.")
  work, traffic, rate, overhead = _terms(cnn, layers)
  memory_s = traffic / cnn["mem_bw"]

  def residuals(log_p):
    p = np.exp(log_p)
    return np.log(p[3 + overhead] + np.maximum(work / p[rate], memory_s)) - np.log(t)

  def soft_l1(log_p):
    return np.sum(np.sqrt(1.0 + (residuals(log_p) / calibrate._F_SCALE) ** 2) - 1.0)

  lower, upper = np.log([1e6] * 3 + [1e-9] * 4), np.log([1e14] * 3 + [1e-3] * 4)
  coarse = optimize.differential_evolution(soft_l1, list(zip(lower, upper)), seed=seed, tol=1e-8, maxiter=2000,
                                           polish=False)
  res = optimize.least_squares(residuals, coarse.x, bounds=(lower, upper), loss="soft_l1",
                               f_scale=calibrate._F_SCALE)
  return dict(zip(PARAMS, np.exp(res.x).tolist()))


def fit_records(records: List[Dict], cnn: Dict[str, float]) -> Tuple[Dict[str, float], Dict, Dict]:
  """(fitted ``PARAMS``, fit-set quality, held-out quality with ``by_kind``) of the transformer records (a seeded
  75 / 25 split of them, ``hardware.calibrate.split``), the CNN constants ``cnn`` fixed."""
  layers = [calibrate.layer_of_record(r) for r in records]
  t = np.asarray([r["median_s"] for r in records])
  fit_idx, held_idx = calibrate.split(len(layers))
  seq = fit_constants(cnn, [layers[i] for i in fit_idx], t[fit_idx])
  pred = predict(cnn, seq, layers)
  held = calibrate.fit_quality(t[held_idx], pred[held_idx])
  held["by_kind"] = {k: calibrate.fit_quality(t[idx], pred[idx]) for k in SEQUENCE_KINDS
                     if len(idx := [i for i in held_idx if layers[i].kind == k]) >= 3}
  return seq, calibrate.fit_quality(t[fit_idx], pred[fit_idx]), held


# --- the preset's lines ------------------------------------------------------------------------------------------

def kernels_by_path(records: List[Dict]) -> Dict[str, str]:
  """Path -> the op types onnxruntime ran for it ("A + B"; several patterns joined by " | " where shapes differ)."""
  out: Dict[str, List[str]] = {}
  for r in records:
    ops = " + ".join(r.get("op_types") or ["?"])
    if ops not in out.setdefault(r["path"], []):
      out[r["path"]].append(ops)
  return {p: " | ".join(v) for p, v in out.items()}


def _quality(q: Dict) -> str:
  return f"Spearman {q['spearman']:.3f}, median relative error {q['median_rel_err']:.3f} (n {q['n']})"


def yaml_lines(fit: Dict | None) -> Dict[str, str]:
  """The preset's transformer lines: ``header`` (comment lines), ``mac_rate`` and ``overhead`` (entries of those
  mappings) and ``float_ops`` (the ``float_ops_per_s`` line). ``fit``: None (no transformer measurements: the NOT
  MEASURED line, conv's rate for linear / matmul) or ``{"params", "fit_q", "held_q", "host", "records"}``."""
  if fit is None:
    return {"header": "", "mac_rate": "", "overhead": "",
            "float_ops": "float_ops_per_s: null           # NOT MEASURED (softmax / layernorm were not timed): null = "
                         "mac_rate.conv / 4, fp32 lanes 4x int8 (ASSUMPTION U)"}
  fmt, load = calibrate._fmt, calibrate._load
  p, info, held = fit["params"], fit["host"], fit["held_q"]
  ops = kernels_by_path(fit["records"])
  when = (f"onnxruntime {info.get('onnxruntime')}, {info.get('cpu')}, {str(info.get('date'))[:10]}, load "
          f"{load(info.get('load_avg_1min_before'))}/{load(info.get('load_avg_1min'))}")
  by_kind = "\n".join(f"#   {k}: {_quality(q)}" for k, q in held["by_kind"].items())
  header = f"""# Transformer kinds (linear, matmul, softmax, layernorm), timed as the ViT export writes them
#   (nas/deploy/calibrate_ort_transformer.py): {info.get('cpu')} ({info.get('cores')} cores), onnxruntime {info.get('onnxruntime')},
#   intra-op threads {info.get('intra_op_threads')}, batch 1, {info.get('date')}, 1-min load average {load(info.get('load_avg_1min_before'))} before / {load(info.get('load_avg_1min'))} after.
#   onnxruntime runs: linear {ops.get('linear')}; matmul {ops.get('matmul_qk')}.
#   Fitted with mem_bw and the channel multiples above fixed (the CNN constants are not refitted), {fit['fit_q']['n']} layers. Held out
#   {held['n']} layers: {_quality(held)}; per kind:
{by_kind}
"""
  mac_rate = (f"  linear: {fmt(p['rate_linear'])}    # fitted ({when}): the ViT export's QDQ MatMul + Add, run as "
              f"{ops.get('linear')}\n"
              f"  matmul: {fmt(p['rate_matmul'])}    # fitted ({when}): attention's QDQ MatMuls, run as "
              f"{ops.get('matmul_qk')}\n")
  overhead = "".join(f"  {k}: {fmt(p['overhead_' + k])}    # fitted ({when}){calibrate._bound(p['overhead_' + k])}\n"
                     for k in SEQUENCE_KINDS)
  float_ops = (f"float_ops_per_s: {fmt(p['float_ops_per_s'])}     # fitted ({when}): float32 Softmax and "
               f"LayerNormalization at hardware.kinds.OPS_PER_ELEMENT ops per value (14, 6)")
  return {"header": header, "mac_rate": mac_rate, "overhead": overhead, "float_ops": float_ops}
