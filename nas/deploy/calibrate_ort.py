"""Fit the CPU roofline (:class:`hardware.cpu.SIMDCPU`) to onnxruntime's integer kernels on this host.

Each layer of a grid is exported exactly as ``experiments.export`` writes a network's layer in
``model.int8.onnx`` (``nas.deploy.formats.int8.int8_model``): a convolution as QLinearConv (u8 x s8 -> u8), the one before global
average pooling with the QLinearGlobalAveragePool after it, a dense classifier as QGemm, a flattening classifier
(a convolution over the whole map) as Flatten + QGemm. It runs inside a two-layer network
(the layer, and a classifier after it or a layer before it), in onnxruntime's CPU provider with one intra-op
thread, batch 1, and its time is what ``experiments.export --measure`` reports per layer (``marginal_us``,
``nas.deploy.ort.marginal``): the
end-to-end time of the network cut after the layer minus that of the network cut before it, each the median of
the fastest of 10 interleaved blocks of runs, in each of four passes over the grid (alternately in reverse
order), and the layer's time the median of the four differences: the shared machine has slow phases (whole
blocks up to 1.6x slower) lasting tens of milliseconds and more, so each layer is timed at four moments seconds
apart. Until 2026-12-01 it was the smallest cut-after time less the smallest cut-before time, each over the
passes: unpaired, so one fast pass of the longer cut made a small layer's time negative, and the fit stopped;
the shipped preset's measurements were taken that way (their file records the method). onnxruntime's profiler
adds about 2 us to every node, more than many of these layers take, so it is not used here.

The grid: every layer shape the shipped small models take over the search's width choices (``digits_cnn`` on
8x8 digits, ``fmnist_cnn`` on 28x28 images: conf/model/, the base widths times ``SearchSpace.width_mults``),
plus seeded samples of 1x1 convolutions (stride 1 and 2) and dense layers. The constants are fitted with
``hardware.calibrate``'s code (soft-L1 least squares on log latency, the channel multiples and the few-channel
threshold chosen by fit loss) on a seeded 75 % and reported on the held-out 25 %. Without the few-channel
fallback (XLA's generic loop, ``SIMDCPU.fallback_channels``): onnxruntime's timings show no such cliff (a 1->12
and a 1->16 convolution take the same time), and a fallback would make a narrower layer cost more than a wider
one, which the search's budget repair (moves to cheaper, narrower choices) cannot follow. onnxruntime's CPU integer
kernels are 8-bit: 2- and 4-bit tensors are held and computed in int8 / uint8, so the preset costs every
bit-width as 8 bits (``storage_bits: [8]``).

The transformer kinds (``linear``, ``matmul``, ``softmax``, ``layernorm``: the ViT export's node patterns) are timed
and fitted by ``nas.deploy.calibrate_ort_transformer`` (its docstring: graphs, method, grid) into the same
measurements file and preset, with this fit's ``mem_bw`` and channel multiples held fixed; ``--kinds`` chooses the
grids ``--measure`` times (``cnn`` or ``transformer`` keep the other kinds' records and host from the file).

Usage (measure, then fit; about 20 s for each grid on 2 cores; --force replaces the shipped measurements and
preset):
  python -m nas.deploy.calibrate_ort --measure --out conf/hardware/cpu_ort.yaml --force
  python -m nas.deploy.calibrate_ort --measure --kinds transformer --out conf/hardware/cpu_ort.yaml --force
Fit the shipped measurements only:
  python -m nas.deploy.calibrate_ort --out conf/hardware/cpu_ort.yaml --force
A missing or corrupt measurements file, an ``--out`` that cannot be written, that is the measurements file, or
that exists (without --force; likewise the measurements file --measure writes), or transformer records timed on
another CPU than the CNN ones, stops it before any fitting with one sentence on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import sys
import tempfile
import time
from typing import Dict, List, Tuple

import numpy as np

from hardware import calibrate, host
from hardware.base import LayerSpec
from hardware.cpu import KINDS as CNN_KINDS
from hardware.kinds import SEQUENCE_KINDS
from nas.deploy import calibrate_ort_transformer as sequence

DEFAULT_MEASUREMENTS = os.path.join(os.path.dirname(calibrate.__file__), "data", "cpu_ort_measurements.json")
PRESET = "conf/hardware/cpu_ort.yaml"
# (input size, base widths, strides, classifier) of conf/model/digits_cnn.yaml and fmnist_cnn.yaml.
MODELS = {"digits_cnn": (8, (16, 32, 32), (1, 2, 1), "pool"),
          "fmnist_cnn": (28, (16, 32, 32, 64), (2, 1, 2, 1), "flatten")}
CLASSES = 10
# How each layer runs in model.int8.onnx, by where it sits in the network.
PATHS = {"conv": "QLinearConv", "pool_conv": "QLinearConv + QLinearGlobalAveragePool + Flatten",
         "dense": "QGemm", "flatten_head": "Flatten + QGemm"}


@dataclasses.dataclass(frozen=True)
class GridLayer:
  spec: LayerSpec
  path: str  # a key of PATHS


def default_grid(seed: int = 0, extra_1x1: int = 40, extra_dense: int = 12) -> List[GridLayer]:
  """The models' layers over every width choice, then seeded 1x1 convolutions and dense layers (see above)."""
  from nas.models.space import SearchSpace
  widths = SearchSpace().channels
  out: List[GridLayer] = []
  for hw, bases, strides, classifier in MODELS.values():
    cins = [1]
    for i, (base, stride) in enumerate(zip(bases, strides)):
      last = i == len(bases) - 1
      path = "pool_conv" if last and classifier == "pool" else "conv"
      out.extend(GridLayer(LayerSpec("conv", cin, cout, 3, stride, hw, hw), path)
                 for cin in cins for cout in widths(base))
      cins, hw = widths(base), -(-hw // stride)
    out.extend(GridLayer(LayerSpec("dense", cin, CLASSES), "dense") if classifier == "pool" else
               GridLayer(LayerSpec("conv", cin, CLASSES, hw, hw, hw, hw), "flatten_head") for cin in cins)
  rng = np.random.default_rng(seed)
  channels = (8, 16, 24, 32, 48, 64, 96)
  ones = [LayerSpec("conv", ci, co, 1, s, hw, hw) for hw in (4, 7, 8, 14, 28) for s in (1, 2)
          for ci in channels for co in channels]
  out.extend(GridLayer(ones[i], "conv") for i in sorted(rng.choice(len(ones), extra_1x1, replace=False)))
  dense = [LayerSpec("dense", ci, co) for ci in (64, 96, 128, 256, 512, 1024, 2048) for co in (10, 16, 32, 64)]
  out.extend(GridLayer(dense[i], "dense") for i in sorted(rng.choice(len(dense), extra_dense, replace=False)))
  return [dataclasses.replace(g, spec=dataclasses.replace(g.spec, name=f"o{i}")) for i, g in enumerate(out)]


def tiny_grid() -> List[GridLayer]:
  """One layer per path: a seconds-long run for tests."""
  return [GridLayer(LayerSpec("conv", 8, 16, 3, 1, 8, 8, name="t0"), "conv"),
          GridLayer(LayerSpec("conv", 16, 16, 3, 1, 4, 4, name="t1"), "pool_conv"),
          GridLayer(LayerSpec("dense", 32, 10, name="t2"), "dense"),
          GridLayer(LayerSpec("conv", 16, 10, 7, 7, 7, 7, name="t3"), "flatten_head")]


# --- the layer as exported ---------------------------------------------------------------------------------------

def _int_layer(name: str, spec: LayerSpec, rng, out: str):
  """A synthetic integer layer of ``spec`` (8-bit, random small weights); ``out``: "act" (an 8-bit activation
  follows), "pool" (global average pooling follows) or "logits" (the output layer)."""
  from nas.deploy.integer import IntLayer, Requant
  shape = (spec.cin, spec.cout) if spec.kind == "dense" else (spec.kernel, spec.kernel, spec.cin, spec.cout)
  weight = rng.integers(-8, 8, shape).astype(np.int8)
  n = spec.cout
  requant = None if out == "logits" else Requant(np.zeros(n, np.int32), np.zeros(n, np.int32), 0, 255)
  out_bits, out_step = {"act": (8, 0.05), "pool": (None, 0.05 / 2 ** 8), "logits": (None, None)}[out]
  return IntLayer(name, spec.kind, weight, np.full(n, 8), np.full(n, 0.01, np.float32), spec.kernel, spec.stride,
                  (spec.in_h, spec.in_w), 8, 0.05, False, np.ones(n), rng.normal(0, 0.1, n), 0, np.full(n, 5e-4),
                  np.zeros(n, np.int32), requant, out_bits, out_step)


def network(g: GridLayer, seed: int = 0):
  """A two-layer integer network holding ``g`` as layer "layer", built so that int8_model exports it along ``g.path``."""
  from nas.deploy.integer import IntegerNetwork, Requant
  rng = np.random.default_rng(seed)
  s = g.spec
  if g.path == "conv":  # the layer, then a flattening classifier over its map
    oh = s.out_h
    layers = [_int_layer("layer", s, rng, "act"), _int_layer("head", LayerSpec("conv", s.cout, CLASSES, oh, oh, oh, oh),
                                                             rng, "logits")]
  elif g.path == "pool_conv":  # the layer, pooled, then a dense classifier
    layers = [_int_layer("layer", s, rng, "pool"), _int_layer("head", LayerSpec("dense", s.cout, CLASSES), rng, "logits")]
  elif g.path == "dense":  # a 1x1 conv on a 1x1 map, pooled, then the layer
    layers = [_int_layer("before", LayerSpec("conv", 1, s.cin, 1, 1, 1, 1), rng, "pool"),
              _int_layer("layer", s, rng, "logits")]
  else:  # flatten_head: a 1x1 conv on the map, then the layer over the whole map
    layers = [_int_layer("before", LayerSpec("conv", s.cin, s.cin, 1, 1, s.in_h, s.in_w), rng, "act"),
              _int_layer("layer", s, rng, "logits")]
  cin = layers[0].weight.shape[-2]
  pooled = g.path in ("pool_conv", "dense")
  pool = Requant(np.zeros(1, np.int32), np.zeros(1, np.int32), 0, 255) if pooled else None  # int8_kernels sets it
  return IntegerNetwork("grid", (layers[0].in_hw[0], layers[0].in_hw[1], cin), tuple(layers), pool,
                        -(-layers[0].in_hw[0] // layers[0].stride) ** 2, "pool" if pooled else "flatten")


# --- timing ------------------------------------------------------------------------------------------------------

def host_description(threads: int) -> Dict:
  """The machine and runtime measured: CPU model and kernel flags, cores, load, platform, onnxruntime, date."""
  import onnxruntime as ort
  cpu = host.current_host()
  try:
    load = os.getloadavg()[0]
  except OSError:
    load = None
  return {"cpu": cpu["cpu"], "cpu_flags": cpu["flags"], "cores": os.cpu_count(), "load_avg_1min": load,
          "platform": platform.platform(), "onnxruntime": ort.__version__, "provider": "CPUExecutionProvider",
          "intra_op_threads": threads, "inter_op_threads": 1, "batch": 1,
          "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def measure(grid: List[GridLayer], repeats: int = 400, passes: int = 4, threads: int = 1,
            verbose: bool = False) -> Dict:
  """Time every grid layer as exported (see the module docstring); a JSON-ready ``{"host", "records"}``."""
  from nas.deploy.formats.int8 import int8_model
  from nas.deploy.ort import kernels, marginal
  t0 = time.perf_counter()
  load_before = host_description(threads)["load_avg_1min"]
  nets = [network(g) for g in grid]
  models = [int8_model(net) for net in nets]
  one = [np.random.default_rng(0).uniform(0, 1, (1, *net.input_shape)).astype(np.float32) for net in nets]
  before: List[List[float]] = [[] for _ in grid]  # the graph cut before the layer, then after it
  after: List[List[float]] = [[] for _ in grid]
  inputs: List[List[float]] = [[] for _ in grid]  # the graph cut after the input quantiser: the input stage
  for p in range(passes):
    for i in (range(len(grid)) if p % 2 == 0 else reversed(range(len(grid)))):
      m = marginal(models[i], nets[i], one[i], repeats, threads, layers=["layer"])
      after[i].append(m["layers_us"]["layer"] + m["cut_before_us"]["layer"])
      before[i].append(m["cut_before_us"]["layer"])
      inputs[i].append(m["input_us"])
  records = []
  for g, model, net, b, a, inp in zip(grid, models, nets, before, after, inputs):
    s = g.spec
    op = kernels(model.SerializeToString(), net)["layer"]
    seconds = 1e-6 * float(np.median(np.subtract(a, b)))  # paired: both cuts of one pass ran together
    records.append({"kind": s.kind, "cin": s.cin, "cout": s.cout, "kernel": s.kernel, "stride": s.stride,
                    "in_h": s.in_h, "in_w": s.in_w, "name": s.name, "path": g.path, "op_types": op,
                    "macs": float(s.macs()), "median_s": seconds, "cut_after_us": a, "cut_before_us": b,
                    "input_us": inp, "input_elements": int(np.prod(net.input_shape)), "repeats": repeats})
    if verbose:
      print(f"{s.name}: {s.kind} {s.cin}->{s.cout} k{s.kernel} s{s.stride} {s.in_h}x{s.in_w} ({'+'.join(op)}): "
            f"{seconds * 1e6:.2f} us", flush=True)
  info = host_description(threads)
  info.update(load_avg_1min_before=load_before, runtime_s=round(time.perf_counter() - t0, 1),
              method="per layer: the end-to-end time of its network cut after the layer minus cut before it "
                     "(nas.deploy.ort.marginal: medians of the fastest of 10 interleaved blocks of runs), "
                     "the median over the passes of that difference (nas/deploy/calibrate_ort.py)")
  return {"host": info, "records": records}


def measure_transformer(grid: List[sequence.SequenceLayer], repeats: int = 400, passes: int = 6, threads: int = 1,
                        verbose: bool = False) -> Dict:
  """Time the transformer grid (``calibrate_ort_transformer.measure``); ``{"host", "records"}`` with the host
  described as :func:`measure` describes it."""
  t0 = time.perf_counter()
  load_before = host_description(threads)["load_avg_1min"]
  records = sequence.measure(grid, repeats, passes, threads, verbose)
  info = host_description(threads)
  info.update(load_avg_1min_before=load_before, runtime_s=round(time.perf_counter() - t0, 1), opset=sequence.OPSET,
              method=sequence.METHOD)
  return {"host": info, "records": records}


# --- the preset --------------------------------------------------------------------------------------------------

def _inference_yaml(inference: Dict | None) -> str:
  if inference is None:
    return ("inference_overhead_s: 0.0          # NOT MEASURED (measurements without the input stage; re-run with "
            "--measure): no per-call time\ninput_rate: null                   # (no input stage modelled)")
  fmt = calibrate._fmt
  rate = "null" if inference["input_rate"] is None else fmt(inference["input_rate"])
  return (f"inference_overhead_s: {fmt(inference['overhead_s'])}   # fitted: one call into onnxruntime "
          f"(run_with_iobinding, buffers bound once), outside every layer\n"
          f"input_rate: {rate}             # fitted: input elements quantised per second (float32 -> uint8)\n"
          f"# (the input stage, overhead + elements / input_rate: the graph cut after the input quantiser of the "
          f"{inference['n']} grid networks,\n#  inputs of {inference['elements'][0]}-{inference['elements'][1]} "
          f"elements; median relative error {inference['median_rel_err']:.3f})")


def repo_path(path: str) -> str:
  """``path`` relative to the repository root when it lies inside it (how a preset names a shipped file), else
  absolute."""
  root = pathlib.Path(__file__).resolve().parents[2]
  full = pathlib.Path(path).resolve()
  try:
    return str(full.relative_to(root))
  except ValueError:
    return str(full)


def preset_yaml(p: Dict[str, float], info: Dict, fit_q: Dict, held_q: Dict, measurements: str,
                inference: Dict | None = None, measured_layers: str | None = None,
                transformer: Dict | None = None) -> str:
  """The preset's text; every constant's comment says where it came from. ``transformer``: the transformer fit
  (:func:`fit_transformer`), or None (those kinds not measured)."""
  fmt, bound = calibrate._fmt, calibrate._bound
  load = calibrate._load
  seq = sequence.yaml_lines(transformer)
  return f"""# onnxruntime's CPU integer kernels on THIS HOST (model.int8.onnx of experiments.export), calibrated:
# written by `python -m nas.deploy.calibrate_ort --measure --out {PRESET} --force`.
# Measured on: {info.get('cpu')} ({info.get('cores')} cores), {info.get('platform')},
#   onnxruntime {info.get('onnxruntime')} CPUExecutionProvider, intra-op threads {info.get('intra_op_threads')}, batch 1, {info.get('date')},
#   1-min load average {load(info.get('load_avg_1min_before'))} before / {load(info.get('load_avg_1min'))} after.
# Measurements: {measurements} (per layer, exported as experiments.export exports it: the network cut
#   after the layer minus cut before it, end to end, fastest block of runs; see nas/deploy/calibrate_ort.py).
# Fit: hardware.calibrate's soft-L1 least squares on log latency (no few-channel fallback), {fit_q['n']} layers. Held out {held_q['n']} layers:
#   Spearman {held_q['spearman']:.3f}, median relative error {held_q['median_rel_err']:.3f}
#   (fit set: Spearman {fit_q['spearman']:.3f}, median relative error {fit_q['median_rel_err']:.3f}).
# Bits: onnxruntime's CPU integer kernels (QLinearConv, QLinearGlobalAveragePool, QGemm) are 8-bit; 2- and 4-bit weights and
# activations are held and computed in int8 / uint8, so this preset costs every bit-width as 8 bits
# (storage_bits: [8]): fewer bits buy nothing here, neither compute nor memory traffic.
{seq['header']}_target_: hardware.cpu.SIMDCPU
name: cpu_ort
mac_rate:
  conv: {fmt(p['rate_conv'])}      # fitted effective MAC/s of QLinearConv (u8 x s8 -> int32 -> u8)
  dwconv: {fmt(p['rate_conv'])}    # NOT MEASURED (no depthwise layer in digits_cnn / fmnist_cnn): conv's fitted value
  dense: {fmt(p['rate_dense'])}     # fitted; QGemm at batch 1 (GEMV)
{seq['mac_rate']}mem_bw: {fmt(p['mem_bw'])}          # fitted effective bytes/s (cache-resident small layers)
layer_overhead_s:               # fitted fixed time per layer (its nodes' dispatch inside one InferenceSession.run)
  conv: {fmt(p['overhead_conv'])}      # fitted{bound(p['overhead_conv'])}
  dwconv: {fmt(p['overhead_conv'])}    # NOT MEASURED: conv's fitted value
  dense: {fmt(p['overhead_dense'])}     # fitted{bound(p['overhead_dense'])}
{seq['overhead']}cin_multiple: {int(p['cin_multiple'])}                 # chosen by fit loss among (cin, cout) multiples {list(calibrate.MULTIPLES)}
cout_multiple: {int(p['cout_multiple'])}                # (the channel padding of the kernel's compute)
fallback_channels: 0             # no few-channel path: the timings show no cliff in channels (1->12 and 1->16 convs alike)
fallback_mac_rate: null          # (no few-channel path, so none fitted)
kernel_bits: 8                  # onnxruntime's CPU integer kernels are u8/s8 x s8 -> int32 (MLAS); measured layers are 8-bit
storage_bits: [8]               # model.int8.onnx holds 2- and 4-bit tensors in int8 / uint8: every bit-width costs as 8
e_mac_j: 0.3e-12                # ASSUMPTION, 45 nm proxy: Horowitz ISSCC 2014 int8 mult 0.2 pJ + int32 add 0.1 pJ
e_byte_j: 162.5e-12             # ASSUMPTION (U: unverified figure), 45 nm proxy: Horowitz ISSCC 2014 DRAM read 1.3 nJ per 64 b, /8 B
static_power_w: 12.5            # ASSUMPTION (U): 2 cores' share of a 56-core 350 W Xeon, 350/56 x 2; energy is not measured here
{seq['float_ops']}
nm_weights: dense               # onnxruntime's QLinearConv / QGemm take dense weights (ONNX sparse initializers are densified at load, U): N:M buys nothing
{_inference_yaml(inference)}
measured_layers: {json.dumps(measured_layers) if measured_layers else "null"}  # a layer of a measured shape costs its measured time (batch 1; the roofline elsewhere): nn-Meter-style lookup
fitted_on:                      # the machine timed; hardware.host.host_mismatch warns on any other (hardware/README.md)
  cpu: {json.dumps(str(info.get('cpu')))}  # `host.cpu` of {measurements} (/proc/cpuinfo model name)
  flags: {calibrate._fitted_flags(info)}  # its CPU flags among hardware.host.KERNEL_FLAGS (those that change the int8 kernels)
  recalibrate: "python -m nas.deploy.calibrate_ort --measure --out {PRESET} --force"  # what host_mismatch tells to run elsewhere
"""


def fit_inference(records: List[Dict]) -> Dict | None:
  """The input stage of the grid's networks (the call into onnxruntime and quantising the input: the graph cut
  after the input quantiser, the smallest over the passes) fitted as ``overhead + elements / rate`` by
  non-negative least squares on relative error; with the fit's median relative error and Spearman over the
  networks. None when the measurements hold no input stage (measured before it was recorded)."""
  from scipy import optimize, stats
  rows = [(r["input_elements"], 1e-6 * min(r["input_us"])) for r in records if r.get("input_us")]
  if len(rows) < 3:
    return None
  n, t = (np.asarray(v, np.float64) for v in zip(*rows))
  coef, _ = optimize.nnls(np.stack([np.ones_like(n), n], axis=1) / t[:, None], np.ones_like(t))
  overhead, per_element = (float(c) for c in coef)
  pred = overhead + per_element * n
  return {"overhead_s": overhead, "input_rate": (1.0 / per_element) if per_element > 0 else None,
          "n": len(rows), "elements": [int(n.min()), int(n.max())],
          "median_rel_err": float(np.median(np.abs(pred - t) / t)),
          "spearman": float(stats.spearmanr(pred, t)[0]) if per_element > 0 else None}


def fit_records(data: Dict) -> Tuple[Dict[str, float], Dict, Dict]:
  """(fitted constants, fit-set quality, held-out quality) of a measurements dict's CNN records (kinds
  ``hardware.cpu.KINDS``: ``hardware.calibrate``'s fit; the transformer records do not enter it, nor its split);
  the held-out quality has one entry per layer kind with at least 3 held-out layers as well (``by_kind``)."""
  records = [r for r in data["records"] if r["kind"] in CNN_KINDS]
  layers = [calibrate.layer_of_record(r) for r in records]
  t = np.asarray([r["median_s"] for r in records])
  fit_idx, held_idx = calibrate.split(len(layers))
  p = calibrate.fit([layers[i] for i in fit_idx], t[fit_idx], fallbacks=(0,))
  pred = calibrate.predict(p, layers)
  held = calibrate.fit_quality(t[held_idx], pred[held_idx])
  kinds = {k: [i for i in held_idx if layers[i].kind == k] for k in sorted({l.kind for l in layers})}
  held["by_kind"] = {k: calibrate.fit_quality(t[idx], pred[idx]) for k, idx in kinds.items() if len(idx) >= 3}
  return p, calibrate.fit_quality(t[fit_idx], pred[fit_idx]), held


def transformer_records(data: Dict, redo: str) -> List[Dict]:
  """The transformer records of a measurements dict, checked before any fitting so that their fit cannot fail;
  [] when it holds none.

  Raises:
    calibrate.InputError: they lack their host (``transformer_host``), were timed on another CPU than the CNN
      records, or are too few to fit (``redo``: the fix the message ends with).
  """
  records = [r for r in data["records"] if r["kind"] in SEQUENCE_KINDS]
  if not records:
    return []
  info = data.get("transformer_host")
  if not isinstance(info, dict) or info.get("cpu") != data["host"]["cpu"]:
    where = "no \"transformer_host\" record" if not isinstance(info, dict) else f"CPU {info.get('cpu')!r}"
    raise calibrate.InputError(f"the transformer records of the measurements have {where}, not the CNN records' "
                               f"CPU {data['host']['cpu']!r}: one preset describes one machine; {redo}.")
  fit_idx, _ = calibrate.split(len(records))
  kinds = [records[i]["kind"] for i in fit_idx]
  if len(fit_idx) < len(sequence.PARAMS) or any(kinds.count(k) < 2 for k in SEQUENCE_KINDS):
    raise calibrate.InputError(f"the measurements hold {len(records)} transformer records, too few to fit "
                               f"{len(sequence.PARAMS)} constants with two layers of each of {SEQUENCE_KINDS}; "
                               f"{redo} (its default grid times far more layers).")
  return records


def fit_transformer(data: Dict, records: List[Dict], cnn: Dict[str, float]) -> Dict | None:
  """The transformer fit (``calibrate_ort_transformer.fit_records``, the CNN constants ``cnn`` fixed) of checked
  ``records`` (:func:`transformer_records`) for :func:`preset_yaml`; None when there are none."""
  if not records:
    return None
  params, fit_q, held_q = sequence.fit_records(records, cnn)
  return {"params": params, "fit_q": fit_q, "held_q": held_q, "host": data["transformer_host"], "records": records}


def _measure(args, redo: str) -> Dict:
  """--measure: time the grids ``--kinds`` names; ``cnn`` or ``transformer`` keep the other kinds' records and
  host from the existing measurements file."""
  tiny = args.grid == "tiny"
  old = None
  if args.kinds != "all":
    if not os.path.isfile(args.measurements):
      raise calibrate.InputError(f"--kinds {args.kinds} keeps the other kinds' records of --measurements "
                                 f"{args.measurements}, which does not exist; measure both with --kinds all.")
    old = calibrate.read_measurements(args.measurements, redo=redo)
  if args.kinds == "transformer":
    data = {"host": old["host"], "records": [r for r in old["records"] if r["kind"] in CNN_KINDS]}
  else:
    data = measure(tiny_grid() if tiny else default_grid(), threads=args.threads, verbose=True)
  if args.kinds == "cnn":
    if "transformer_host" in old:
      data["transformer_host"] = old["transformer_host"]
    data["records"] += [r for r in old["records"] if r["kind"] in SEQUENCE_KINDS]
  else:
    timed = measure_transformer(sequence.tiny_grid() if tiny else sequence.default_grid(), threads=args.threads,
                                verbose=True)
    data["transformer_host"] = timed["host"]
    data["records"] += timed["records"]
  return data


def _run(args) -> None:
  redo = (f"measure again with `python -m nas.deploy.calibrate_ort --measure --measurements {args.measurements} "
          f"--out {PRESET} --force`")
  calibrate.check_outputs(args.out, args.measurements, args.measure, args.force, out_example="cpu_ort.yaml",
                          measurements_example="cpu_ort_measurements.json")
  if args.measure:
    data = _measure(args, redo)
    with open(args.measurements, "w") as f:
      json.dump(data, f, indent=1)
  data = calibrate.read_measurements(args.measurements, redo=redo)
  records = transformer_records(data, redo)
  p, fit_q, held_q = fit_records(data)
  inference = fit_inference(data["records"])
  transformer = fit_transformer(data, records, p)
  calibrate.write_preset(args.out, args.measurements,
                         lambda shown: preset_yaml(p, data["host"], fit_q, held_q, shown, inference,
                                                   repo_path(args.measurements), transformer), fit_q, held_q)
  if transformer is not None:
    print(f"transformer kinds: fit set {transformer['fit_q']}\nheld out {transformer['held_q']}")


def main(argv=None) -> None:
  """Command line; an unusable input exits with status 2 and one sentence on stderr, before any fitting."""
  parser = argparse.ArgumentParser(prog="python -m nas.deploy.calibrate_ort", description=__doc__.splitlines()[0])
  parser.add_argument("--measure", action="store_true", help="time the grid on this host first")
  parser.add_argument("--measurements", default=DEFAULT_MEASUREMENTS,
                      help="measurement JSON to read (with --measure: to write)")
  parser.add_argument("--grid", choices=("default", "tiny"), default="default")
  parser.add_argument("--kinds", choices=("all", "cnn", "transformer"), default="all",
                      help="the grids --measure times (cnn or transformer: the other kinds' records are kept)")
  parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (1)")
  parser.add_argument("--out", required=True, help=f"preset YAML to write, e.g. {PRESET}")
  parser.add_argument("--force", action="store_true",
                      help="replace an existing --out (and, with --measure, an existing --measurements file)")
  args = parser.parse_args(argv)
  try:
    _run(args)
  except calibrate.InputError as e:
    print(f"nas.deploy.calibrate_ort: {e}", file=sys.stderr)
    raise SystemExit(2) from None


if __name__ == "__main__":
  main()
