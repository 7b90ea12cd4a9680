"""Fit a tensor-core GPU preset to public measured per-layer latencies, and validate it on layers the fit did
not use.

  python -m hardware.fit_gpu                      # the shipped T4 data: fit on ResNet-18, validate on the rest
  python -m hardware.fit_gpu --data my.csv --fit-sources a --validate-sources b,c --base conf/hardware/gpu_t4.yaml

The data (``hardware/data/gpu_t4_tvm_batch8.csv``, its sources in its header) are kernel times of INT4 and
INT8 tensor-core convolutions at one batch size. The fit keeps the datasheet figures of the base preset (peak
ops per precision, bandwidth, channel multiples) and fits what no datasheet gives: the fraction of peak each
precision's kernels reach (``efficiency``) and a fixed time per kernel (``launch_overhead_s``), by least
squares on log latency over a grid. Validation reports, on held-out layers: Spearman rank correlation and
median relative error of predicted vs measured latency, and the error of the INT4/INT8 latency ratio on the
layers measured at both precisions (the quantity a mixed-precision search steers by).
"""
from __future__ import annotations

import argparse
import csv
import pathlib
import sys
from typing import Sequence

import numpy as np
from omegaconf import OmegaConf

from hardware.base import LayerSpec
from hardware.gpu import TensorCoreGPU

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "hardware" / "data" / "gpu_t4_tvm_batch8.csv"
BASE = ROOT / "conf" / "hardware" / "gpu_t4.yaml"
EFFICIENCY_GRID = np.geomspace(0.01, 1.0, 81)
OVERHEAD_GRID_S = np.concatenate([[0.0], np.geomspace(0.5e-6, 50e-6, 61)])


def load_layers(path) -> list[dict]:
  """The CSV's rows (``#`` lines are its header of sources) with numeric fields as numbers."""
  with open(path, newline="") as f:
    rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
  ints = ("in_h", "in_w", "cin", "cout", "kernel", "stride", "bits", "batch")
  return [{**r, **{k: int(r[k]) for k in ints}, "latency_us": float(r["latency_us"])} for r in rows]


def _spec(row) -> LayerSpec:
  return LayerSpec("conv", row["cin"], row["cout"], row["kernel"], row["stride"], row["in_h"], row["in_w"])


def predict_s(gpu: TensorCoreGPU, rows: Sequence[dict]) -> np.ndarray:
  """Predicted kernel time of each row at its own batch (the model's per-image cost times the batch)."""
  out, batch = [], gpu.batch_size
  try:
    for r in rows:
      gpu.batch_size = r["batch"]
      out.append(float(gpu.cost(_spec(r), r["bits"], r["bits"], r["cin"], r["cout"]).latency_s) * r["batch"])
  finally:
    gpu.batch_size = batch  # the caller's preset keeps its own batch size
  return np.asarray(out)


def _terms(base: dict, rows: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
  """Per row: compute seconds at efficiency 1 and memory seconds (the two roofline terms, no overhead)."""
  gpu = TensorCoreGPU(**{**base, "efficiency": 1.0, "launch_overhead_s": 0.0, "mem_bw": 1e30})
  compute = predict_s(gpu, rows)
  gpu = TensorCoreGPU(**{**base, "efficiency": 1.0, "launch_overhead_s": 0.0})
  both = predict_s(gpu, rows)
  memory = np.where(both > compute * (1 + 1e-12), both, 0.0)
  return compute, memory


def fit(base: dict, rows: Sequence[dict]) -> dict:
  """Efficiency per precision in the rows and the per-kernel overhead minimising the mean squared log error."""
  compute, memory = _terms(base, rows)
  measured = np.log(np.array([r["latency_us"] for r in rows]) * 1e-6)
  bits = np.array([r["bits"] for r in rows])
  out = {}
  # Precisions are independent given the overhead: for each overhead, the best efficiency of each precision.
  best = (np.inf, None)
  for overhead in OVERHEAD_GRID_S:
    total, effs = 0.0, {}
    for b in sorted(set(bits.tolist())):
      m = bits == b
      pred = overhead + np.maximum(compute[m][None, :] / EFFICIENCY_GRID[:, None], memory[m][None, :])
      err = ((np.log(pred) - measured[m][None, :]) ** 2).sum(axis=1)
      i = int(np.argmin(err))
      total += err[i]
      effs[b] = float(EFFICIENCY_GRID[i])
    if total < best[0]:
      best = (total, (overhead, effs))
  overhead, effs = best[1]
  out["launch_overhead_s"] = float(overhead)
  out["efficiency"] = {**{p: effs.get(p) for p in base["peak_ops"] if p in effs}}
  out["rms_log_error"] = float(np.sqrt(best[0] / len(rows)))
  return out


def spearman(x, y) -> float:
  """Spearman rank correlation (ranks by argsort; ties are rare in measured latencies)."""
  rx = np.argsort(np.argsort(x)).astype(float)
  ry = np.argsort(np.argsort(y)).astype(float)
  return float(np.corrcoef(rx, ry)[0, 1])


def validate(gpu: TensorCoreGPU, rows: Sequence[dict]) -> dict:
  """Spearman and median relative error over ``rows``; INT4/INT8 ratio error over shapes measured at both."""
  measured = np.array([r["latency_us"] for r in rows]) * 1e-6
  predicted = predict_s(gpu, rows)
  rel = np.abs(predicted - measured) / measured
  key = lambda r: (r["source"], r["in_h"], r["in_w"], r["cin"], r["cout"], r["kernel"], r["stride"], r["batch"])
  by_shape = {}
  for r, m, p in zip(rows, measured, predicted):
    by_shape.setdefault(key(r), {})[r["bits"]] = (m, p)
  pairs = [(v[4][0] / v[8][0], v[4][1] / v[8][1]) for v in by_shape.values() if 4 in v and 8 in v]
  out = {"layers": len(rows), "spearman": spearman(predicted, measured), "median_rel_error": float(np.median(rel)),
         "ratio_pairs": len(pairs)}
  if pairs:
    m, p = np.array(pairs).T
    out.update({"int4_int8_ratio_measured_median": float(np.median(m)),
                "int4_int8_ratio_predicted_median": float(np.median(p)),
                "int4_int8_ratio_median_abs_error": float(np.median(np.abs(p - m))),
                "int4_int8_ratio_spearman": spearman(p, m) if len(pairs) > 2 else None})
  return out


def _base_kwargs(path) -> dict:
  cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
  cfg.pop("_target_", None)
  cfg.pop("batch_size", None)
  return cfg


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m hardware.fit_gpu", description=__doc__.split("\n\n")[0])
  parser.add_argument("--data", default=str(DATA), help="CSV of measured layers (default: the shipped T4 data)")
  parser.add_argument("--base", default=str(BASE), help="preset whose datasheet figures are kept")
  parser.add_argument("--fit-sources", default="hawq-resnet18", help="comma-separated sources to fit on")
  parser.add_argument("--validate-sources", default="hawq-resnet50,tvm6121",
                      help="comma-separated sources to validate on (each reported apart)")
  args = parser.parse_args(argv)
  try:
    rows = load_layers(args.data)
    base = _base_kwargs(args.base)
  except (OSError, KeyError, ValueError) as e:
    print(f"error: cannot read the data or the base preset: {e}", file=sys.stderr)
    return 2
  fit_on = set(args.fit_sources.split(","))
  fit_rows = [r for r in rows if r["source"] in fit_on]
  if not fit_rows:
    print(f"error: no rows of sources {sorted(fit_on)} in {args.data}; use --fit-sources with one of "
          f"{sorted({r['source'] for r in rows})}.", file=sys.stderr)
    return 2
  fitted = fit(base, fit_rows)
  gpu = TensorCoreGPU(**{**base, "efficiency": {**{p: 1.0 for p in base["peak_ops"]}, **fitted["efficiency"]},
                         "launch_overhead_s": fitted["launch_overhead_s"]})
  print(f"fit on {len(fit_rows)} layers ({args.fit_sources}): efficiency {fitted['efficiency']}, "
        f"launch_overhead_s {fitted['launch_overhead_s']:.3g}, rms log error {fitted['rms_log_error']:.3f}")
  report = {"fit": fitted, "fit_sources": sorted(fit_on), "validation": {}}
  for name in ["(fit) " + args.fit_sources] + args.validate_sources.split(","):
    sel = fit_rows if name.startswith("(fit)") else [r for r in rows if r["source"] == name]
    if not sel:
      print(f"{name}: no rows")
      continue
    v = validate(gpu, sel)
    report["validation"][name] = v
    ratio = (f"; INT4/INT8 ratio measured {v['int4_int8_ratio_measured_median']:.2f} vs predicted "
             f"{v['int4_int8_ratio_predicted_median']:.2f} (median), median |error| "
             f"{v['int4_int8_ratio_median_abs_error']:.2f} over {v['ratio_pairs']} shapes"
             if v["ratio_pairs"] else "")
    print(f"{name}: {v['layers']} layers, Spearman {v['spearman']:.3f}, median relative error "
          f"{100 * v['median_rel_error']:.0f} %{ratio}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
