"""Measure the C kernels on the CV32E40P RTL over a grid of layers and fit ``hardware.mcu.MeasuredMCU``.

  python -m nas.deploy.c.calibrate --out conf/hardware/riscv_cv32e40p.yaml [--force] [--refit] [--jobs 2]

Measures (``measure``): small random integer networks ("chains" of 3 convolutions, global average pooling and
a dense head, or of 3 dense layers), each compiled by ``nas.deploy.c.write_c`` with one input image and run by
``nas.deploy.c.simulate`` on the CV32E40P RTL, plain RV32IMC and PULP SIMD (``cv.sdotusp.b``), with the logits
checked bit-exact against ``nas.deploy.integer.run``; each stage's mcycle count is one measured layer (several
layers per ELF). The grid: 1x1 and 3x3 convolutions, strides 1 and 2, dilation 2 (a layer after a skipped
strided one), dense layers, 2-, 4-, 8-bit and mixed per-channel weights, 2-, 4-, 8-bit activations, channels
1..48 and maps 2..28 as in ``digits_cnn`` / ``fmnist_cnn``; the held-out chains use map sizes and dense widths
that no fitted chain has. The measurements go to ``hardware/data/cv32e40p_measurements.json``; ``--refit``
refits from that file without the simulator.

Fits (``fit``): non-negative least squares of the relative error (each layer's row divided by its measured
cycles) of ``hardware.mcu.TERMS``, the features computed from the layer's ``LayerSpec`` as the search sees it
(a dilated layer as the strided layer of the subsampled map; per-channel weight bits as one sub-layer per
bit-width, as ``nas.models.arch.LayerChoice.groups`` splits it). Held-out check: Spearman and the median
|relative error| per layer over the held-out chains (``hardware/data/cv32e40p_report.json``).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

from hardware.base import LayerSpec
from hardware.mcu import TERMS, MeasuredMCU, features
from nas.deploy import integer
from nas.deploy.integer import IntegerNetwork, IntLayer, Requant

REPO = pathlib.Path(__file__).resolve().parents[3]
MEASUREMENTS = REPO / "hardware" / "data" / "cv32e40p_measurements.json"
REPORT = REPO / "hardware" / "data" / "cv32e40p_report.json"
PRESET = REPO / "conf" / "hardware" / "riscv_cv32e40p.yaml"
VARIANTS = {"plain": False, "pulp": True}
# Clock and energy: Gautschi et al., "Near-Threshold RISC-V Core With DSP Extensions for Scalable IoT Endpoint
# Devices", IEEE TVLSI 25(10), 2017, abstract (p. 1): the 4-core RI5CY cluster in 28 nm FD-SOI at its peak
# efficiency, 193 MOPS/mW at 40 MHz and 1 mW. Per core: 1 mW / 40 MHz / 4 cores = 6.25 pJ per cycle (an even
# split of the cluster's power, memories included: an ASSUMPTION). Not measured here.
FREQ_HZ = 40.0e6
ENERGY_PER_CYCLE_J = 1.0e-3 / 40.0e6 / 4


# --- the grid --------------------------------------------------------------------------------------------------------

def _w_bits(rng, cout: int) -> list[int]:
  r = rng.random()
  if r < 0.2:  # mixed per-channel bits, as the search's per-channel choices make them
    return [[2, 4, 8][(i + int(rng.integers(3))) % 3] for i in range(cout)]
  return [int(rng.choice([2, 4, 8]))] * cout


def chains(split: str, seed: int = 0) -> list[dict]:
  """The layer chains of one split ("fit" or "held_out"): conv chains (3 convs, pooling, a dense head) and dense
  chains. Each layer: kind, in_h, in_w, cin, cout, kernel, stride, dilation, w_bits (per channel), a_bits."""
  rng = np.random.default_rng(seed + (0 if split == "fit" else 1000))
  if split == "fit":
    maps, cin0s, denses = (8, 16, 28, 8, 16, 8, 16, 28, 8, 16, 8, 16), (1, 3, 4, 1), (32, 64, 96, 48)
  else:
    maps, cin0s, denses = (10, 12, 20, 6, 12), (1, 2, 4), (40, 72)
  couts = (4, 6, 8, 12, 16, 20, 24, 32, 48)
  out = []
  for ci, h in enumerate(maps):
    cin, a = int(rng.choice(cin0s)), 8
    layers = []
    for j in range(3):
      k = 3 if (j == 0 or rng.random() < 0.7) else 1
      stride = 2 if (h >= 8 and rng.random() < 0.4) else 1
      dil = 2 if (stride == 1 and j > 0 and h >= 8 and rng.random() < 0.25) else 1
      cout = int(rng.choice(couts))
      out_h = -(-(-(-h // dil)) // stride)
      while cout > 4 and out_h * out_h * k * k * cin * cout > 250_000:  # keep each layer a few M cycles
        cout = couts[couts.index(cout) - 1] if cout in couts else 4
      layers.append(dict(kind="conv", in_h=h, in_w=h, cin=cin, cout=cout, kernel=k, stride=stride, dilation=dil,
                         w_bits=_w_bits(rng, cout), a_bits=a))
      h, cin, a = out_h, cout, int(rng.choice([2, 4, 8]))
    layers.append(dict(kind="dense", in_h=1, in_w=1, cin=cin, cout=10, kernel=1, stride=1, dilation=1,
                       w_bits=_w_bits(rng, 10), a_bits=a))
    out.append({"name": f"{split}-conv{ci}", "layers": layers, "pool": True, "signed": bool(rng.random() < 0.2)})
  for di, d in enumerate(denses):
    cin, a, layers = d, 8, []
    for j, cout in enumerate((int(rng.choice((16, 24, 32, 40))), int(rng.choice((12, 16, 20))), 10)):
      layers.append(dict(kind="dense", in_h=1, in_w=1, cin=cin, cout=cout, kernel=1, stride=1, dilation=1,
                         w_bits=_w_bits(rng, cout), a_bits=a))
      cin, a = cout, int(rng.choice([2, 4, 8]))
    out.append({"name": f"{split}-dense{di}", "layers": layers, "pool": False, "signed": False})
  return out


def network(chain: dict, seed: int = 0) -> IntegerNetwork:
  """The integer network of a chain: random weights in each channel's range, requantisation to the next
  layer's activation bits (a scale that keeps the outputs spread over the range)."""
  rng = np.random.default_rng(seed)
  layers = []
  specs = chain["layers"]
  for i, s in enumerate(specs):
    last = i == len(specs) - 1
    bits = np.asarray(s["w_bits"])
    lim = 2 ** (bits - 1)
    shape = (s["cin"], s["cout"]) if s["kind"] == "dense" else (s["kernel"], s["kernel"], s["cin"], s["cout"])
    w = np.floor(rng.random(shape) * (2 * lim) - lim).astype(np.int64).clip(-lim, lim - 1).astype(np.int8)
    signed = chain["signed"] and i == 0
    a_max = 2 ** s["a_bits"] - 1
    fan_in = s["cin"] * s["kernel"] ** 2
    ones = np.ones(s["cout"])
    rq, out_bits = None, None
    if not last:
      ob = specs[i + 1]["a_bits"]
      scale = (2 ** ob) / (a_max * np.max(lim) * np.sqrt(fan_in) + 1.0)
      m, k = integer.dyadic(np.full(s["cout"], scale))
      rq, out_bits = Requant(m, k, 0, 2 ** ob - 1, bool(i % 2)), ob
    bias = rng.integers(-64, 64, s["cout"]).astype(np.int32)
    layers.append(IntLayer(f"l{i}", s["kind"], w, bits.astype(np.int64), ones.astype(np.float32), s["kernel"],
                           s["stride"], (s["in_h"], s["in_w"]), s["a_bits"], 1.0, signed, ones, np.zeros(s["cout"]),
                           0, ones, bias, rq, out_bits, 1.0 if out_bits else None, s["dilation"]))
  pool = None
  first = specs[0]
  pool_hw = 1
  if chain["pool"]:
    last_conv = specs[-2]
    g = _out_hw(last_conv)
    pool_hw = g * g
    m, k = integer.dyadic(np.full(1, 1.0 / pool_hw))
    pool = Requant(m, k, 0, 2 ** specs[-1]["a_bits"] - 1)
  return IntegerNetwork(chain["name"], (first["in_h"], first["in_w"], first["cin"]), tuple(layers), pool, pool_hw,
                        "pool" if chain["pool"] else "flatten")


def _out_hw(s: dict) -> int:
  return -(-(-(-s["in_h"] // s["dilation"])) // s["stride"])


def spec_of(s: dict, name: str = "") -> LayerSpec:
  """The layer as the search sees it: a dilated layer reads the map its skipped strided layer would have made
  (``ceil(in / dilation)``), with its own stride."""
  if s["kind"] == "dense":
    return LayerSpec("dense", s["cin"], s["cout"], name=name)
  h = -(-s["in_h"] // s["dilation"])
  w = -(-s["in_w"] // s["dilation"])
  return LayerSpec("conv", s["cin"], s["cout"], s["kernel"], s["stride"], h, w, name=name)


def groups(w_bits) -> list[tuple[int, int]]:
  """(bits, channels) per distinct weight bit-width, as ``LayerChoice.groups`` splits a layer."""
  b = np.asarray(w_bits)
  return [(int(v), int((b == v).sum())) for v in sorted(set(b.tolist()))]


# --- measuring -------------------------------------------------------------------------------------------------------

def _measure_chain(chain: dict, pulp: bool, work: str) -> dict:
  from nas.deploy import c as cb
  inet = network(chain)
  first = chain["layers"][0]
  rng = np.random.default_rng(1)
  lo, hi = (-(2 ** (first["a_bits"] - 1)), 2 ** (first["a_bits"] - 1) - 1) if chain["signed"] else (
      0, 2 ** first["a_bits"] - 1)
  x = rng.integers(lo, hi + 1, (1, first["in_h"], first["in_w"], first["cin"])).astype(np.float32)
  out = pathlib.Path(tempfile.mkdtemp(prefix=f"{chain['name']}-{int(pulp)}-", dir=work))
  cb.write_c(inet, out, images=x)
  r = cb.simulate(out, pulp=pulp)
  acc, _ = integer.run(inet, x)
  if not np.array_equal(r["logits"], acc):
    raise AssertionError(f"chain {chain['name']}: the simulated logits differ from the integer reference.")
  return {"stages": r["stages"], "cycles": r["cycles"][0].tolist(), "total": int(r["total"][0]),
          "core": r["core"]}


def measure(jobs: int = 2, seed: int = 0, log=print) -> dict:
  """Simulates every chain of both splits on both cores; returns the measurements (MEASUREMENTS' content)."""
  from nas.deploy import c as cb
  missing = cb.missing_tools()
  if missing:
    raise RuntimeError(f"{', '.join(missing)} not found; install with: {cb.INSTALL_HINT}.")
  for pulp in VARIANTS.values():
    cb.verilator_model(pulp)  # built once, before the workers race for it
  all_chains = [(split, c) for split in ("fit", "held_out") for c in chains(split, seed)]
  t0 = time.time()
  results = {}
  with tempfile.TemporaryDirectory(prefix="hwnas-cv32e40p-cal-") as work, \
      cf.ThreadPoolExecutor(max_workers=jobs) as pool:
    futs = {pool.submit(_measure_chain, c, pulp, work): (c["name"], v)
            for _, c in all_chains for v, pulp in VARIANTS.items()}
    for f in cf.as_completed(futs):
      results[futs[f]] = f.result()
      log(f"  {futs[f][0]:<16} {futs[f][1]:<5} {results[futs[f]]['total']:>10} cycles  ({time.time() - t0:.0f} s)")
  rows, nets = [], []
  for split, c in all_chains:
    for v in VARIANTS:
      assert results[(c["name"], v)]["stages"][-1] == f"l{len(c['layers']) - 1}"
    stage_idx = {n: i for i, n in enumerate(results[(c["name"], "plain")]["stages"])}
    for i, s in enumerate(c["layers"]):
      rows.append({"chain": c["name"], "split": split, "stage": f"l{i}", **{k: s[k] for k in (
          "kind", "in_h", "in_w", "cin", "cout", "kernel", "stride", "dilation", "a_bits")},
          "w_bits": groups(s["w_bits"]), "signed_input": bool(c["signed"] and i == 0),
          **{f"cycles_{v}": results[(c["name"], v)]["cycles"][stage_idx[f"l{i}"]] for v in VARIANTS}})
    nets.append({"chain": c["name"], "split": split,
                 "pool_values": (_out_hw(c["layers"][-2]) ** 2 * c["layers"][-2]["cout"]) if c["pool"] else 0,
                 **{f"pool_cycles_{v}": (results[(c["name"], v)]["cycles"][stage_idx["pool"]] if c["pool"] else 0)
                    for v in VARIANTS},
                 **{f"total_{v}": results[(c["name"], v)]["total"] for v in VARIANTS},
                 **{f"stages_sum_{v}": int(sum(results[(c["name"], v)]["cycles"])) for v in VARIANTS}})
  return {"what": "mcycle counts of the C kernels (nas/deploy/c) on the CV32E40P RTL (pythondata-cpu-cv32e40p, "
                  "Verilator), zero-wait-state memory on both OBI ports (single-cycle SRAM, no caches, no DMA); "
                  "one input image per chain, logits bit-exact with nas.deploy.integer.run; plain: RV32IMC build on "
                  "the core with COREV_PULP=0; pulp: the SIMD build (cv.sdotusp.b / cv.sdotsp.b) on COREV_PULP=1",
          "written_by": "python -m nas.deploy.c.calibrate", "seed": seed, "tools": _tools(),
          "simulation_wall_s": round(time.time() - t0, 1), "layers": rows, "networks": nets}


def _tools() -> dict:
  out = {}
  for name, cmd in (("gcc", ["riscv64-unknown-elf-gcc", "--version"]), ("verilator", ["verilator", "--version"])):
    try:
      out[name] = subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
      out[name] = None
  try:
    from importlib.metadata import version
    out["pythondata-cpu-cv32e40p"] = version("pythondata-cpu-cv32e40p")
  except Exception:
    out["pythondata-cpu-cv32e40p"] = None
  return out


# --- fitting ---------------------------------------------------------------------------------------------------------

def row_features(row: dict, simd: bool) -> np.ndarray:
  """The ``TERMS`` counts of one measured layer, summed over its weight bit-width groups (the search's view)."""
  spec = spec_of(row)
  f = np.zeros(len(TERMS))
  for bits, n in row["w_bits"]:
    g = features(spec, bits, spec.cin, n, simd)
    f += np.asarray([float(g[t]) for t in TERMS])
  return f


def fit(meas: dict, variant: str) -> dict:
  """NNLS of the relative error over the fit split; returns the coefficients, the inference term and the
  per-layer errors of both splits."""
  from scipy import optimize, stats
  simd = VARIANTS[variant]
  rows = meas["layers"]
  X = np.asarray([row_features(r, simd) for r in rows])
  y = np.asarray([float(r[f"cycles_{variant}"]) for r in rows])
  used = X.any(0)  # a term no row exercises (the SIMD terms on the plain core) stays 0
  fit_rows = np.asarray([r["split"] == "fit" for r in rows])
  A = X[fit_rows][:, used] / y[fit_rows, None]
  coef_used, _ = optimize.nnls(A, np.ones(int(fit_rows.sum())))
  coef = np.zeros(len(TERMS))
  coef[used] = coef_used
  pred = X @ coef
  nets = meas["networks"]
  inference = float(np.median([n[f"total_{variant}"] - n[f"stages_sum_{variant}"] for n in nets]))
  pools = [n for n in nets if n["pool_values"]]
  pool_per_value = float(np.median([n[f"pool_cycles_{variant}"] / n["pool_values"] for n in pools])) if pools else 0.0

  def score(mask):
    err = (pred[mask] - y[mask]) / y[mask]
    return {"layers": int(mask.sum()), "spearman": float(stats.spearmanr(pred[mask], y[mask])[0]),
            "median_abs_rel_err": float(np.median(np.abs(err))), "max_abs_rel_err": float(np.max(np.abs(err))),
            "p90_abs_rel_err": float(np.quantile(np.abs(err), 0.9))}

  fit_keys = {_shape_key(r) for r, f in zip(rows, fit_rows) if f}
  unseen = np.asarray([(not f) and _shape_key(r) not in fit_keys for r, f in zip(rows, fit_rows)])
  # network level: the sum of the predicted layers plus the inference term against the measured end to end
  by_chain: dict[str, float] = {}
  for r, p in zip(rows, pred):
    by_chain[r["chain"]] = by_chain.get(r["chain"], 0.0) + float(p)
  net_pred = np.asarray([by_chain[n["chain"]] + inference for n in nets])
  net_meas = np.asarray([float(n[f"total_{variant}"]) for n in nets])
  return {"variant": variant, "simd": simd, "cycles": {t: float(c) for t, c in zip(TERMS, coef)},
          "inference_cycles": inference, "pool_cycles_per_value": pool_per_value,
          "fit": score(fit_rows), "held_out": score(unseen),
          "networks": {"spearman": float(stats.spearmanr(net_pred, net_meas)[0]),
                       "median_abs_rel_err": float(np.median(np.abs(net_pred - net_meas) / net_meas)),
                       "note": "end to end, pooling stage unmodelled (in the measured count)"},
          "per_layer": [{"chain": r["chain"], "stage": r["stage"], "split": r["split"], "measured": float(m),
                         "predicted": float(p)} for r, m, p in zip(rows, y, pred)]}


def _shape_key(r: dict) -> tuple:
  return (r["kind"], r["in_h"], r["in_w"], r["cin"], r["cout"], r["kernel"], r["stride"], r["dilation"])


def model(fitted: dict, name: str = "riscv_cv32e40p") -> MeasuredMCU:
  """The cost model of a fit (``fit``'s result)."""
  return MeasuredMCU(name, fitted["cycles"], fitted["inference_cycles"], FREQ_HZ, ENERGY_PER_CYCLE_J,
                     simd=fitted["simd"])


def preset_model(pulp: bool) -> MeasuredMCU:
  """The measured preset (``conf/hardware/riscv_cv32e40p.yaml``, the PULP SIMD core) with ``pulp``; without, the
  plain-core fit of the measurements file (no preset of its own)."""
  if pulp and PRESET.is_file():
    from hardware.check import instantiate
    return instantiate(str(PRESET))
  return model(fit(json.loads(MEASUREMENTS.read_text()), "pulp" if pulp else "plain"),
               "riscv_cv32e40p" + ("" if pulp else "_rv32imc"))


def predict_architecture(hw, arch) -> dict:
  """Per layer predicted cycles of an ``Architecture`` (summed over its bit-width groups, as the search costs
  it) and the end-to-end total (the layers plus the per-inference term), in cycles of ``hw.freq_hz``."""
  from hardware.base import inference_cost
  layers: dict[str, float] = {}
  for layer in arch.layers:
    for spec, w in layer.groups():
      c = hw.cost(spec, w, layer.a_bits, spec.cin, spec.cout)
      layers[layer.spec.name] = layers.get(layer.spec.name, 0.0) + float(np.asarray(c.latency_s)) * hw.freq_hz
  inference = float(inference_cost(hw, arch.layers[0].spec).latency_s) * hw.freq_hz if arch.layers else 0.0
  return {"layers": layers, "inference": inference, "total": sum(layers.values()) + inference}


def memory_report(elf, arch=None) -> dict:
  """The ELF's memory from its symbols: packed weights (``L*_w``, .rodata), the other per-layer parameters
  (bits, biases, requantisation), the activation buffers (``hw_buf0``, ``hw_buf1``, ``hw_wbuf``: .bss), code;
  with ``arch``, beside the predicted weight bytes (``hardware.metrics.weight_bytes``) and peak activation bytes
  (``hardware.metrics.activation_peak_bytes`` at the bits, and at one byte per value as the kernels store)."""
  from nas.deploy.c import RISCV_PREFIX, _symbols
  sym = _symbols(pathlib.Path(elf))
  weights = sum(s for n, (_, s) in sym.items() if n.startswith("L") and n.endswith("_w"))
  params = sum(s for n, (_, s) in sym.items() if n.startswith("L") and n.split("_")[-1] in (
      "w", "bits", "bias", "mult", "shift")) + sum(s for n, (_, s) in sym.items() if n.startswith("L") and "_" not in n)
  acts = sum(sym.get(n, (0, 0))[1] for n in ("hw_buf0", "hw_buf1"))
  wbuf = sym.get("hw_wbuf", (0, 0))[1]
  p = subprocess.run([RISCV_PREFIX + "size", "-A", str(elf)], capture_output=True, text=True, check=True)
  sections = {l.split()[0]: int(l.split()[1]) for l in p.stdout.splitlines()[2:] if len(l.split()) >= 2
              and l.split()[1].isdigit()}
  out = {"weights_bytes": int(weights), "parameter_bytes": int(params), "activation_bytes": int(acts),
         "weight_scratch_bytes": int(wbuf), "images_bytes": int(sym.get("hw_images", (0, 0))[1]),
         "sections": {k: v for k, v in sections.items() if k in (".text", ".rodata", ".data", ".bss", ".sdata",
                                                                ".sbss", ".srodata")}}
  if arch is not None:
    from hardware import metrics
    wb = 0.0
    for layer in arch.layers:
      for spec, w in layer.groups():
        wb += float(metrics.weight_bytes(spec, w))
    specs = [l.spec for l in arch.layers]
    a_bits = [l.a_bits for l in arch.layers]
    out["predicted_weight_bytes"] = wb
    out["predicted_activation_peak_bytes"] = float(metrics.activation_peak_bytes(specs, [8] * len(specs)))
    out["predicted_activation_peak_bytes_at_bits"] = float(metrics.activation_peak_bytes(specs, a_bits))
    out["note"] = ("weights_bytes: the packed weight arrays (one padding byte per layer); predicted_weight_bytes: "
                   "hardware.metrics.weight_bytes of the architecture; activation_bytes: the two ping-pong buffers, "
                   "each sized to the largest map it holds at one byte per value (int32 for the map before "
                   "pooling), against hardware.metrics.activation_peak_bytes at 8 bits (and at the chosen bits: "
                   "the kernels do not pack activations); weight_scratch_bytes: one output channel's unpacked "
                   "weights")
  return out


# --- the preset ------------------------------------------------------------------------------------------------------

def preset_yaml(fitted: dict, other: dict, meas: dict) -> str:
  """The YAML of ``conf/hardware/riscv_cv32e40p.yaml`` for the PULP SIMD fit (``other``: the plain core's)."""
  c = fitted["cycles"]
  h, f = fitted["held_out"], fitted["fit"]
  oh = other["held_out"]
  n = sum(1 for r in meas["layers"] if r["split"] == "fit")
  desc = {"mac": "per valid MAC on the scalar path (cin % 4 != 0)",
          "mac_simd": "per valid MAC on the SIMD path (cv.sdotusp.b, cin % 4 == 0)",
          "call": "per dot-product call on the scalar path (a window row, or a border tap)",
          "call_simd": "per dot-product call on the SIMD path",
          "output": "per output value (loop, bias, int64 requantisation, clip, store)",
          "unpack_8": "per 8-bit weight unpacked (byte copy), once per inference",
          "unpack_sub": "per 2..7-bit weight unpacked (bit extract, sign extend)",
          "channel": "per output channel (unpack call, loop set-up)",
          "layer": "per layer (call, set-up); the search adds it once per weight bit-width group"}
  lines = [
      "# CV32E40P (OpenHW Group RTL, pythondata-cpu-cv32e40p) with COREV_PULP=1, running the C kernels of nas.deploy.c",
      "# built with the PULP SIMD dot products (cv.sdotusp.b / cv.sdotsp.b), MEASURED: mcycle of the RTL simulated cycle by",
      "# cycle in Verilator; the logits bit-exact with nas.deploy.integer.run. Memory is IDEAL: single-cycle SRAM on both",
      "# OBI ports (grant in the request's cycle), no caches, no DMA, no bus contention; code and data in one 4 MiB RAM.",
      "# Written by `python -m nas.deploy.c.calibrate --out conf/hardware/riscv_cv32e40p.yaml --force` (or --refit: from",
      "#   hardware/data/cv32e40p_measurements.json, without the simulator); " + f"{meas['tools'].get('gcc')};",
      f"#   {meas['tools'].get('verilator')}; pythondata-cpu-cv32e40p {meas['tools'].get('pythondata-cpu-cv32e40p')}.",
      f"# Fit: NNLS of the relative error over {n} layers (1x1 / 3x3 convs, strides 1 / 2, dilation 2, dense; 2/4/8-bit and",
      "#   mixed per-channel weights; 2/4/8-bit activations; hardware/mcu.py for the terms). Fit set: Spearman "
      f"{f['spearman']:.3f},",
      f"#   median |relative error| {f['median_abs_rel_err']:.3f}. HELD OUT ({h['layers']} layers of shapes never in the fit): "
      f"Spearman {h['spearman']:.3f},",
      f"#   median |relative error| {h['median_abs_rel_err']:.3f}, 90th percentile {h['p90_abs_rel_err']:.3f}, largest "
      f"{h['max_abs_rel_err']:.3f} (goal: Spearman >= 0.95, median <= 0.10).",
      f"#   The plain RV32IMC core (COREV_PULP=0) fits as well (held out: Spearman {oh['spearman']:.3f}, median "
      f"{oh['median_abs_rel_err']:.3f}); its",
      "#   coefficients are in hardware/data/cv32e40p_report.json (no preset of its own).",
      "# Not measured, extrapolated with the same terms: dwconv, linear, matmul, softmax / layernorm (no C kernel), N:M",
      "# weights (costed dense: the kernel has none), the global average pooling stage (no LayerSpec; ~"
      f"{fitted['pool_cycles_per_value']:.1f} cycles per pooled value).",
      "# Bit-widths: the C kernels unpack 2..8-bit weights and store 1..8-bit activations one per byte, so activation bits",
      "# change no cycle and fewer weight bits cost MORE than 8 (unpacking): bits_monotone false.",
      "_target_: hardware.mcu.MeasuredMCU",
      "name: riscv_cv32e40p",
      "cycles:                     # fitted cycle coefficients (MEASURED: nas/deploy/c/calibrate.py, NNLS)"]
  for t in TERMS:
    lines.append(f"  {t}: {c[t]:.6g}".ljust(28) + f"# {desc[t]}")
  lines += [
      f"inference_cycles: {fitted['inference_cycles']:.6g}   # MEASURED: end to end minus the stages (hw_infer's bookkeeping), median",
      "simd: true                  # the COREV_PULP=1 core with the SIMD build: 4 byte products per instruction where cin % 4 == 0",
      f"freq_hz: {FREQ_HZ:.4g}             # NOT MEASURED: Gautschi et al., IEEE TVLSI 2017, abstract (p. 1): RI5CY cluster, 28 nm FD-SOI, 193 MOPS/mW at 40 MHz, 1 mW",
      f"energy_per_cycle_j: {ENERGY_PER_CYCLE_J:.4g}   # NOT MEASURED, ASSUMPTION: that 1 mW / 40 MHz split evenly over its 4 cores (memories included)",
      "w_bits: [2, 3, 4, 5, 6, 7, 8]   # weight bit-widths the C kernels unpack (nas/deploy/c/emit.py W_BITS); 1 bit is refused",
      "a_bits: [1, 2, 3, 4, 5, 6, 7, 8]  # activation bit-widths the C kernels store (one per byte)",
      "elementwise_ops_per_cycle: 1.0  # NOT MEASURED, ASSUMPTION (U): softmax / layernorm in fixed point, one ALU op per cycle (single issue)",
      "core: \"CV32E40P COREV_PULP=1, C kernels of nas.deploy.c built with PULP SIMD\"  # the simulated core (description)",
      "memory: \"ideal: single-cycle SRAM, no caches, no DMA\"  # the simulated memory (description)",
      "fitted_from: \"hardware/data/cv32e40p_measurements.json\"  # the measurements (description)",
      ""]
  return "\n".join(lines)


def report(meas: dict) -> dict:
  fits = {v: fit(meas, v) for v in VARIANTS}
  return {"what": "fits of hardware.mcu.MeasuredMCU to hardware/data/cv32e40p_measurements.json "
                  "(python -m nas.deploy.c.calibrate)", "fits": fits, "paper_models": paper_models(meas)}


def paper_models(meas: dict) -> dict:
  """Spearman of the paper presets' (``riscv``: MPIC, ``riscv_gap8``) per-layer latency with the measured cycles
  over the grid (both splits), per core."""
  from scipy import stats
  from hardware.check import instantiate
  out = {}
  rows = meas["layers"]
  for preset in ("riscv", "riscv_gap8"):
    hw = instantiate(str(REPO / "conf" / "hardware" / f"{preset}.yaml"))
    pred = []
    for r in rows:
      spec = spec_of(r)
      pred.append(sum(float(hw.cost(dataclasses.replace(spec, cout=n), b, r["a_bits"], spec.cin, n).latency_s)
                      for b, n in r["w_bits"]))
    out[preset] = {f"layer_spearman_{v}": float(stats.spearmanr(pred, [r[f"cycles_{v}"] for r in rows])[0])
                   for v in VARIANTS}
    ratio = np.asarray([r["cycles_pulp"] for r in rows]) / (np.asarray(pred) * hw.freq_hz)
    out[preset]["measured_pulp_over_predicted_cycles_median"] = float(np.median(ratio))
    out[preset]["measured_pulp_over_predicted_cycles_range"] = [float(ratio.min()), float(ratio.max())]
    by_chain: dict[str, float] = {}
    for r, p in zip(rows, pred):
      by_chain[r["chain"]] = by_chain.get(r["chain"], 0.0) + p
    nets = meas["networks"]
    for v in VARIANTS:
      out[preset][f"network_spearman_{v}"] = float(stats.spearmanr(
          [by_chain[n["chain"]] for n in nets], [n[f"total_{v}"] for n in nets])[0])
    out[preset]["networks"] = len(nets)
  return out


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog="python -m nas.deploy.c.calibrate", description=__doc__.split("\n\n")[0])
  ap.add_argument("--out", type=pathlib.Path, default=PRESET, help="the preset YAML to write")
  ap.add_argument("--force", action="store_true", help="replace an existing preset / measurements file")
  ap.add_argument("--refit", action="store_true", help="refit from the measurements file, no simulation")
  ap.add_argument("--jobs", type=int, default=2, help="simulations in parallel (2)")
  ap.add_argument("--measurements", type=pathlib.Path, default=MEASUREMENTS)
  args = ap.parse_args(argv)
  if args.out.exists() and not args.force:
    print(f"error: {args.out} exists; pass --force to replace it.", file=sys.stderr)
    return 2
  if args.refit:
    if not args.measurements.is_file():
      print(f"error: {args.measurements} is missing; run without --refit to measure.", file=sys.stderr)
      return 2
    meas = json.loads(args.measurements.read_text())
  else:
    try:
      meas = measure(args.jobs)
    except RuntimeError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    args.measurements.write_text(json.dumps(meas, indent=1))
    print(f"wrote {args.measurements} ({len(meas['layers'])} layers, {meas['simulation_wall_s']} s)")
  rep = report(meas)
  REPORT.write_text(json.dumps(rep, indent=1))
  args.out.write_text(preset_yaml(rep["fits"]["pulp"], rep["fits"]["plain"], meas))
  for v, f in rep["fits"].items():
    print(f"{v}: fit {f['fit']}  held out {f['held_out']}  networks {f['networks']}")
    print(f"  cycles {json.dumps({k: round(x, 3) for k, x in f['cycles'].items()})} inference {f['inference_cycles']}")
  print(f"paper models: {rep['paper_models']}")
  print(f"wrote {args.out} and {REPORT}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
