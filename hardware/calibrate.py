"""Fit the CPU roofline's constants to layers timed on this host, and write them as a preset YAML.

The fitted constants are the effective MAC rate per layer kind, the memory bandwidth and the per-layer
overhead of :class:`hardware.cpu.SIMDCPU`; they are fitted by least squares on log latency (a soft-L1 loss,
so a few noisy timings do not dominate), on a seeded 75% of the layers. The other 25% are held out and the
written YAML reports the fit on them. Energy constants cannot be measured here and are copied from the
x86 preset's sources (Horowitz 2014, 45 nm proxies).

Usage (measure and fit, about 1 minute on 2 cores):
  python -m hardware.calibrate --measure --out conf/hardware/cpu_host.yaml
Fit existing measurements:
  python -m hardware.calibrate --measurements hardware/data/cpu_host_measurements.json --out conf/hardware/cpu_host.yaml

References:
  Williams, Waterman and Patterson, "Roofline", CACM 2009.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
from scipy import optimize, stats

from hardware.base import LayerSpec
from hardware.cpu import KINDS, SIMDCPU

PARAMS = ("rate_conv", "rate_dwconv", "rate_dense", "mem_bw", "layer_overhead_s")
DEFAULT_MEASUREMENTS = os.path.join(os.path.dirname(__file__), "data", "cpu_host_measurements.json")


def split(n: int, holdout_fraction: float = 0.25, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
  """Seeded split of ``n`` records into (fit, held-out) index arrays; shared with ``hardware.validate``."""
  order = np.random.default_rng(seed).permutation(n)
  n_out = int(round(n * holdout_fraction))
  return np.sort(order[n_out:]), np.sort(order[:n_out])


def model_from_params(p: Dict[str, float], name: str = "fit", bits: int = 8, **energy) -> SIMDCPU:
  """A SIMDCPU with the fitted timing constants (and the given energy constants, zero by default)."""
  energy = {"e_mac_j": 0.0, "e_byte_j": 0.0, "static_power_w": 0.0, **energy}
  rates = {k: p[f"rate_{k}"] for k in KINDS}
  return SIMDCPU(name=name, mac_rate=rates, mem_bw=p["mem_bw"], layer_overhead_s=p["layer_overhead_s"],
                 kernel_bits=bits, **energy)


def predict(p: Dict[str, float], layers: Sequence[LayerSpec], bits: int = 8) -> np.ndarray:
  """Predicted latency of each layer at ``bits`` weights and activations (the measured precision)."""
  model = model_from_params(p, bits=bits)
  return np.asarray([float(model.cost(l, bits, bits, l.cin, l.cout).latency_s) for l in layers])


def _terms(layers: Sequence[LayerSpec], bits: int):
  model = model_from_params({k: 1.0 for k in PARAMS}, bits=bits)
  macs, traffic = zip(*(model.terms(l, bits, bits, l.cin, l.cout) for l in layers))
  kind = np.asarray([KINDS.index(l.kind) for l in layers])
  return np.asarray(macs, dtype=np.float64), np.asarray(traffic, dtype=np.float64), kind


def fit(layers: Sequence[LayerSpec], seconds: Sequence[float], bits: int = 8) -> Dict[str, float]:
  """Least-squares fit of the roofline constants to measured seconds, in log space, from several starts."""
  t = np.asarray(seconds, dtype=np.float64)
  if len(layers) != len(t) or len(t) < len(PARAMS):
    raise ValueError(f"calibrate.fit needs one time per layer and at least {len(PARAMS)} layers; "
                     f"got {len(layers)} layers and {len(t)} times.")
  macs, traffic, kind = _terms(layers, bits)

  def residuals(log_p):
    p = np.exp(log_p)
    compute = macs / p[kind]
    return np.log(p[4] + np.maximum(compute, traffic / p[3])) - np.log(t)

  # Starting points: each kind's best observed MAC rate, a bandwidth between cache and DRAM, a fraction
  # of the fastest layer as overhead; then the same with the bandwidth and overhead moved a decade.
  rate0 = [np.max(macs[kind == k] / t[kind == k]) if np.any(kind == k) else np.max(macs / t) for k in range(3)]
  best = None
  for bw_scale in (0.1, 1.0, 10.0):
    for oh_scale in (0.1, 0.5, 0.9):
      x0 = np.log(np.asarray(rate0 + [np.max(traffic / t) * bw_scale, np.min(t) * oh_scale]))
      res = optimize.least_squares(residuals, x0, loss="soft_l1", f_scale=0.2)
      if best is None or res.cost < best.cost:
        best = res
  return dict(zip(PARAMS, np.exp(best.x).tolist()))


def fit_quality(measured: np.ndarray, predicted: np.ndarray) -> Dict[str, float]:
  """Spearman rank correlation and median relative error |pred - meas| / meas."""
  measured, predicted = np.asarray(measured), np.asarray(predicted)
  rel = np.abs(predicted - measured) / measured
  return {"spearman": float(stats.spearmanr(predicted, measured)[0]), "median_rel_err": float(np.median(rel)),
          "n": int(len(measured))}


def _fmt(x: float) -> str:
  return f"{x:.4e}"  # always has a dot, so YAML reads it as a float


def preset_yaml(p: Dict[str, float], host: Dict, fit_q: Dict, held_q: Dict, measurements_path: str) -> str:
  """The preset's text; every constant's comment says where it came from."""
  return f"""# THIS HOST's CPU as seen by XLA, calibrated: generated by `python -m hardware.calibrate --measure --out ...`.
# Measured on: {host.get('cpu')} ({host.get('cores')} cores), {host.get('platform')}, jax {host.get('jax')},
#   {host.get('date')}; {host.get('dtype')}.
# Measurements: {measurements_path} (median of repeats per layer, dispatch included).
# Fit: least squares on log latency (soft-L1), {fit_q['n']} layers; held out {held_q['n']} layers:
#   Spearman {held_q['spearman']:.3f}, median relative error {held_q['median_rel_err']:.3f}
#   (fit set: Spearman {fit_q['spearman']:.3f}, median relative error {fit_q['median_rel_err']:.3f}).
# Timing constants are fitted to int8 layers; sub-byte choices are predicted by the model (unpack to int8,
# packed memory traffic), not measured: XLA has no sub-byte kernels.
_target_: hardware.cpu.SIMDCPU
name: cpu_host
mac_rate:
  conv: {_fmt(p['rate_conv'])}      # fitted effective int8 MAC/s of XLA convolutions on this host
  dwconv: {_fmt(p['rate_dwconv'])}    # fitted; XLA's CPU depthwise path is far from SIMD peak
  dense: {_fmt(p['rate_dense'])}     # fitted; batch-1 GEMV
mem_bw: {_fmt(p['mem_bw'])}          # fitted effective bytes/s (mostly cache-resident data when timed in a loop)
layer_overhead_s: {_fmt(p['layer_overhead_s'])}  # fitted per-call overhead (dispatch, thread-pool wake-up)
kernel_bits: 8                  # timed kernels are int8 x int8 -> int32 (measure.py)
e_mac_j: 0.3e-12                # ASSUMPTION, 45 nm proxy: Horowitz ISSCC 2014 int8 mult 0.2 pJ + int32 add 0.1 pJ (FACTS.md sec. 5)
e_byte_j: 162.5e-12             # ASSUMPTION (U), 45 nm proxy: Horowitz DRAM read 1.3 nJ per 64 b (FACTS.md sec. 5: U), /8 B
static_power_w: 12.5            # ASSUMPTION (U): 2 of a 56-core 350 W Xeon's cores, 350/56 x 2 (not measured; energy is not measured here)
"""


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--measure", action="store_true", help="time the default grid on this host first")
  parser.add_argument("--measurements", default=DEFAULT_MEASUREMENTS,
                      help="measurement JSON to read (or, with --measure, to write)")
  parser.add_argument("--grid", choices=("default", "tiny"), default="default")
  parser.add_argument("--out", required=True, help="preset YAML to write, e.g. conf/hardware/cpu_host.yaml")
  args = parser.parse_args(argv)
  from hardware import measure
  if args.measure:
    layers = measure.default_grid() if args.grid == "default" else measure.tiny_grid()
    data = measure.measure(layers, verbose=True)
    with open(args.measurements, "w") as f:
      json.dump(data, f, indent=1)
  with open(args.measurements) as f:
    data = json.load(f)
  layers = measure.records_to_layers(data["records"])
  t = np.asarray([r["median_s"] for r in data["records"]])
  fit_idx, held_idx = split(len(layers))
  p = fit([layers[i] for i in fit_idx], t[fit_idx])
  pred = predict(p, layers)
  fit_q, held_q = fit_quality(t[fit_idx], pred[fit_idx]), fit_quality(t[held_idx], pred[held_idx])
  rel = os.path.relpath(args.measurements, os.getcwd())
  with open(args.out, "w") as f:
    f.write(preset_yaml(p, data["host"], fit_q, held_q, rel))
  print(f"fit {fit_q}\nheld out {held_q}\nwrote {args.out}")


if __name__ == "__main__":
  main()
