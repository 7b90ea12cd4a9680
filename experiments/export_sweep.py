"""Export and time every network of a search sweep on onnxruntime, and compare with the predicted latencies.

  python -m experiments.export_sweep multirun/<date>/<time>-budgets [--repeats 300] [--threads 1]

For every job folder under SWEEP (each ``result.json``), runs ``experiments.export`` with ``--measure`` (its
``export/`` folder: model.int8.onnx, measure.json, ...), then writes ``SWEEP/export_sweep.json`` and prints a
table: per network the budget, the predicted latency on the run's preset, the measured end-to-end latency of
model.int8.onnx (batch 1; the median of the fastest block of runs, and the median of all runs) and measured /
budget, the same without the input stage (the call into onnxruntime and the input's quantisation, which no
layer's cost includes); Spearman(predicted, measured) over the networks; per layer over all layers of all
networks (``marginal_us``: the graph cut after the layer minus cut before it; predicted on the run's preset) the
Spearman and the median relative error |predicted - measured| / measured.

Timing is meaningful only on a quiet machine (other work inflates and scatters it). A folder with no finished
job, or a job that cannot be exported, stops it with one sentence on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np
from scipy import stats

from experiments import export as ex

GOALS = {"measured_over_budget_max": 1.15, "network_spearman_min": 0.9, "layer_spearman_min": 0.9,
         "layer_median_rel_err_max": 0.25}


def _spearman(a, b) -> float | None:
  return float(stats.spearmanr(a, b)[0]) if len(a) >= 3 else None


def sweep(folder, repeats: int = 300, threads: int = 1) -> dict:
  """Export and measure every job of ``folder``; returns (and writes) the summary.

  Raises:
    ExportError: no finished job under ``folder``, or one that cannot be exported.
  """
  folder = pathlib.Path(folder)
  jobs = sorted((p.parent for p in folder.rglob("result.json")), key=str) if folder.is_dir() else []
  if not jobs:
    raise ex.ExportError(f"{folder} holds no finished search job (no result.json below it); pass the folder of a "
                         f"sweep run with `python -m experiments.search -m ...`.")
  rows, layers = [], []
  for job in jobs:
    info = ex.export(job, do_measure=True, repeats=repeats, threads=threads)
    m = json.loads((job / "export" / "measure.json").read_text())
    result = json.loads((job / "result.json").read_text())
    target = result["target"]
    predicted = result["cost"][target]["latency_s"]
    budget = result["budget"]["value"] if result.get("budget", {}).get("metric") == "latency_s" else None
    measured = 1e-6 * m["end_to_end_us"]["best_block_median"]
    pred_layers = (m.get("predicted_layers_s") or {}).get("latency_s", {})
    for row in m["layers"]:
      if row["layer"] in pred_layers:
        layers.append({"job": str(job.relative_to(folder)), "layer": row["layer"], "op_types": row["op_types"],
                       "predicted_s": pred_layers[row["layer"]], "measured_s": 1e-6 * row["marginal_us"],
                       "profiler_s": 1e-6 * row["profiler_us"]})
    rows.append({"job": str(job.relative_to(folder)), "target": target, "budget": result.get("budget"),
                 "budget_s": budget, "predicted_s": predicted, "measured_s": measured,
                 "measured_all_runs_median_s": 1e-6 * m["end_to_end_us"]["median"],
                 "measured_p10_s": 1e-6 * m["end_to_end_us"]["p10"], "measured_p90_s": 1e-6 * m["end_to_end_us"]["p90"],
                 "float_qdq_measured_s": 1e-6 * m["float_qdq"]["end_to_end_us"]["best_block_median"],
                 "input_s": 1e-6 * m["input_us"],
                 "predicted_input_s": (m.get("predicted_layers_s") or {}).get("inference_s"),
                 "layers_marginal_sum_s": 1e-6 * m["layers_marginal_sum_us"],
                 "layers_over_budget": None if budget is None else 1e-6 * m["layers_marginal_sum_us"] / budget,
                 "nodes_sum_s": 1e-6 * m["nodes_sum_us"],
                 "measured_over_budget": None if budget is None else measured / budget,
                 "measured_over_predicted": measured / predicted, "accuracy": result.get("accuracy"),
                 "int8_vs_integer_top1": info["int8"]["agreement"]["vs_integer_top1"],
                 "int8_vs_jax_top1": info["int8"]["agreement"]["vs_jax_top1"],
                 "architecture": [{k: l[k] for k in ("name", "cin", "cout", "w_bits", "a_bits")}
                                  for l in result["architecture"]["layers"]]})
  pl, ml = np.asarray([l["predicted_s"] for l in layers]), np.asarray([l["measured_s"] for l in layers])
  ratios = [r["measured_over_budget"] for r in rows if r["measured_over_budget"] is not None]
  summary = {
      "sweep": str(folder), "jobs": rows, "layers": layers, "goals": GOALS,
      "measured_over_budget_max": max(ratios) if ratios else None,
      "network_spearman": _spearman([r["predicted_s"] for r in rows], [r["measured_s"] for r in rows]),
      "layer_spearman": _spearman(pl, ml) if len(layers) else None,
      "layer_median_rel_err": float(np.median(np.abs(pl - ml) / ml)) if len(layers) else None,
      "onnxruntime": m["onnxruntime"], "intra_op_threads": threads, "repeats": repeats,
      "note": "measured: model.int8.onnx in onnxruntime's CPU provider, batch 1, end to end (InferenceSession.run "
              "from Python, the median of the fastest block of runs; measured_all_runs_median_s: of all runs); "
              "per layer: marginal_us of measure.json (the graph cut after the layer minus cut before it, end to "
              "end; profiler_s: the profiler's sum of the layer's nodes, about 2 us of overhead per node); "
              "predicted: the run's hardware preset (result.json cost, measure.json predicted_layers_s)",
  }
  (folder / "export_sweep.json").write_text(json.dumps(summary, indent=1))
  return summary


def table(s: dict) -> str:
  """The summary as text: one line per network, then the Spearmans and the per-layer error against the goals."""
  us = lambda v: "-" if v is None else f"{1e6 * v:.1f}"
  ratio = lambda v: "-" if v is None else f"{v:.3f}"
  lines = [f"{'job':<8} {'budget us':>9} {'pred us':>8} {'meas us':>8} {'all-runs':>8} {'meas/budget':>11} "
           f"{'input us':>8} {'pred input':>10} {'layers/budget':>13} {'float-QDQ':>9}  accuracy"]
  for r in s["jobs"]:
    acc = "-" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f} %"
    lines.append(f"{r['job']:<8} {us(r['budget_s']):>9} {us(r['predicted_s']):>8} {us(r['measured_s']):>8} "
                 f"{us(r['measured_all_runs_median_s']):>8} {ratio(r['measured_over_budget']):>11} "
                 f"{us(r['input_s']):>8} {us(r.get('predicted_input_s')):>10} {ratio(r['layers_over_budget']):>13} "
                 f"{us(r['float_qdq_measured_s']):>9}  {acc}")
  g = s["goals"]
  lines += [f"measured / budget, largest: {ratio(s['measured_over_budget_max'])} (goal <= {g['measured_over_budget_max']})",
            f"Spearman(predicted, measured) over {len(s['jobs'])} networks: {ratio(s['network_spearman'])} "
            f"(goal >= {g['network_spearman_min']})",
            f"per layer ({len(s['layers'])} layers): Spearman {ratio(s['layer_spearman'])} (goal >= "
            f"{g['layer_spearman_min']}), median relative error {ratio(s['layer_median_rel_err'])} (goal <= "
            f"{g['layer_median_rel_err_max']})"]
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.export_sweep", description=__doc__.split("\n")[0])
  parser.add_argument("sweep", help="a sweep folder (job folders with result.json below it)")
  parser.add_argument("--repeats", type=int, default=300, help="timed runs per network (300)")
  parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (1)")
  args = parser.parse_args(argv)
  try:
    s = sweep(args.sweep, args.repeats, args.threads)
  except (ex.ExportError, ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(table(s))
  print(f"wrote {pathlib.Path(args.sweep) / 'export_sweep.json'}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
