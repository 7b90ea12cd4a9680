"""Reproduce the accuracy figures of hardware/README.md.

1. Host CPU: the calibrated preset (``conf/hardware/cpu_host.yaml``) against the layers it was NOT fitted
   on (the seeded held-out 25% of ``hardware/data/cpu_host_measurements.json``, same split as calibrate):
   Spearman rank correlation and median relative error of latency.
2. BitFusion table: how well analytic models rank its 6,567 layer x bit-pair entries (Spearman over all
   entries, latency and energy), and how well they rank the bit pairs within one layer (mean Spearman
   over layers). MACs and BOPs (MACs x w x a) are shown as model-free baselines.

Usage:
  python -m hardware.validate [--conf conf/hardware] [--measurements hardware/data/cpu_host_measurements.json]
"""
from __future__ import annotations

import argparse
import importlib
import os
from typing import Dict, List

import numpy as np
from omegaconf import OmegaConf
from scipy import stats

from hardware import calibrate, metrics
from hardware.base import LayerSpec
from hardware.lut import DATA_DIR, load_table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANALYTIC = ("fpga", "fpga_bismo", "gpu", "cpu", "riscv")


def load_preset(path: str):
  """Instantiate a preset YAML's ``_target_`` with its keys (what Hydra does, without Hydra).

  OmegaConf's loader, not plain PyYAML: YAML 1.1 reads ``250.0e6`` (no exponent sign) as a string.
  """
  cfg = OmegaConf.to_container(OmegaConf.load(path))
  module, _, cls = cfg.pop("_target_").rpartition(".")
  return getattr(importlib.import_module(module), cls)(**cfg)


def host_cpu(conf_dir: str, measurements: str) -> Dict:
  """Held-out (and per-kind) Spearman and median relative error of the calibrated host preset."""
  import json
  from hardware.measure import records_to_layers
  with open(measurements) as f:
    records = json.load(f)["records"]
  layers = records_to_layers(records)
  t = np.asarray([r["median_s"] for r in records])
  model = load_preset(os.path.join(conf_dir, "cpu_host.yaml"))
  pred = np.asarray([float(model.cost(l, 8, 8, l.cin, l.cout).latency_s) for l in layers])
  fit_idx, held_idx = calibrate.split(len(layers))
  out = {"held_out": calibrate.fit_quality(t[held_idx], pred[held_idx]),
         "fit_set": calibrate.fit_quality(t[fit_idx], pred[fit_idx])}
  for kind in ("conv", "dwconv", "dense"):
    idx = [i for i in held_idx if layers[i].kind == kind]
    out[f"held_out_{kind}"] = calibrate.fit_quality(t[idx], pred[idx])
  return out


def bitfusion_entries(table: str = os.path.join(DATA_DIR, "bitfusion_lut.json.gz")):
  """(layers, w, a, latency, energy): one row per table entry (a LayerSpec per row)."""
  families, _ = load_table(table)
  layers: List[LayerSpec] = []
  w, a, lat, en = [], [], [], []
  for (kind, k, s, h, hw), fam in sorted(families.items()):
    for (wb, ab), points in sorted(fam.items()):
      for (ci, co), (lv, ev) in sorted(points.items()):
        layers.append(LayerSpec(kind, ci, co, k, s, h, hw))
        w.append(wb), a.append(ab), lat.append(lv), en.append(ev)
  return layers, np.asarray(w, float), np.asarray(a, float), np.asarray(lat), np.asarray(en)


def _per_layer_spearman(layers, pred, truth) -> float:
  """Mean over layers (with >= 6 bit pairs) of the Spearman correlation across that layer's bit pairs."""
  groups: Dict = {}
  for i, l in enumerate(layers):
    groups.setdefault(l, []).append(i)
  values = []
  for idx in groups.values():
    if len(idx) >= 6 and np.ptp(pred[idx]) > 0 and np.ptp(truth[idx]) > 0:
      values.append(stats.spearmanr(pred[idx], truth[idx])[0])
  return float(np.mean(values)) if values else float("nan")  # nan: the model gives every bit pair one cost


def bitfusion(conf_dir: str) -> Dict[str, Dict[str, float]]:
  layers, w, a, lat, en = bitfusion_entries()
  predictions = {
      "MACs (baseline)": (np.asarray([float(l.macs()) for l in layers]),) * 2,
      "BOPs (baseline)": (np.asarray([float(metrics.bops(l, wi, ai)) for l, wi, ai in zip(layers, w, a)]),) * 2,
  }
  for preset in ANALYTIC:
    model = load_preset(os.path.join(conf_dir, f"{preset}.yaml"))
    costs = [model.cost(l, wi, ai, l.cin, l.cout) for l, wi, ai in zip(layers, w, a)]
    predictions[preset] = (np.asarray([float(c.latency_s) for c in costs]),
                           np.asarray([float(c.energy_j) for c in costs]))
  kinds = np.asarray([l.kind for l in layers])
  out = {}
  for label, (p_lat, p_en) in predictions.items():
    out[label] = {"latency_all": float(stats.spearmanr(p_lat, lat)[0]),
                  "energy_all": float(stats.spearmanr(p_en, en)[0]),
                  "latency_conv": float(stats.spearmanr(p_lat[kinds == "conv"], lat[kinds == "conv"])[0]),
                  "latency_dwconv": float(stats.spearmanr(p_lat[kinds == "dwconv"], lat[kinds == "dwconv"])[0]),
                  "latency_bit_pairs": _per_layer_spearman(layers, p_lat, lat),
                  "energy_bit_pairs": _per_layer_spearman(layers, p_en, en)}
  out["_n"] = {"entries": len(layers), "layers": len(set(layers))}
  return out


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--conf", default=os.path.join(REPO, "conf", "hardware"))
  parser.add_argument("--measurements", default=calibrate.DEFAULT_MEASUREMENTS)
  args = parser.parse_args(argv)
  cpu = host_cpu(args.conf, args.measurements)
  print("Host CPU, calibrated preset vs measured latency")
  for key, q in cpu.items():
    print(f"  {key:16s} n={q['n']:4d}  Spearman {q['spearman']:.3f}  median rel. error {q['median_rel_err']:.3f}")
  bf = bitfusion(args.conf)
  n = bf.pop("_n")
  print(f"\nBitFusion table ({n['entries']} entries, {n['layers']} layers): Spearman vs table")
  columns = [("latency_all", "lat all"), ("energy_all", "energy all"), ("latency_conv", "lat conv"),
             ("latency_dwconv", "lat dw"), ("latency_bit_pairs", "lat bits"), ("energy_bit_pairs", "energy bits")]
  print(f"  {'model':16s}" + "".join(f"{title:>12s}" for _, title in columns))
  for label, q in bf.items():
    print(f"  {label:16s}" + "".join(f"{q[key]:12.3f}" for key, _ in columns))
  print("  (all: every entry; conv/dw: entries of that kind; bits: mean over layers of the rank of their bit pairs)")


if __name__ == "__main__":
  main()
