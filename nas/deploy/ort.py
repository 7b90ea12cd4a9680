"""onnxruntime on the exported graphs: CPU sessions, the kernels it runs per layer, and latency of one image.

Latency (``measure``, what ``experiments.export --measure`` writes as measure.json): onnxruntime CPU latency of
one image (batch 1, one intra-op thread, inputs and outputs bound once: io_binding) of model.int8.onnx: end to
end; per layer the graph cut after the layer minus the graph cut before it (``marginal``; with the input stage
they add up to the end to end); per node and layer from onnxruntime's profiler (which adds about 2 us to each
node); and model.onnx's end to end (``float_qdq``). Each time is the median of the fastest of ``BLOCKS`` blocks of
runs (a shared machine has slow phases); medians over all runs are kept too.
"""
from __future__ import annotations

import json
import pathlib
import tempfile
import time

import numpy as np

from nas.deploy import integer
from nas.deploy.onnx_graph import INPUT


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
