"""Export and time every network of a search sweep on onnxruntime, and compare with the predicted latencies.

  python -m experiments.export_sweep multirun/<date>/<time>-budgets [--repeats 300] [--threads 1] [--force]
  python -m experiments.export_sweep multirun/<date>/<time>-budgets --c [--plain] [--images 1] [--force]

For every job folder under SWEEP (each ``result.json``), runs ``experiments.export`` with ``--measure`` (its
``export/`` folder: model.int8.onnx, measure.json, ...), then writes ``SWEEP/export_sweep.json`` and prints a
table: per network the budget, the predicted latency on the run's preset, the measured end-to-end latency of
model.int8.onnx (batch 1; the median of the fastest block of runs, and the median of all runs) and measured /
budget, the same without the input stage (the call into onnxruntime and the input's quantisation, which no
layer's cost includes); Spearman(predicted, measured) over the networks; per layer over all layers of all
networks (``marginal_us``: the graph cut after the layer minus cut before it; predicted on the run's preset) the
Spearman and the median relative error |predicted - measured| / measured.

With ``--c`` it instead writes every job's C inference (``experiments.export_c``: ``export_c/``), runs it on the
CV32E40P RTL (the PULP SIMD build, the core of the measured preset ``riscv_cv32e40p``; ``--plain``: RV32IMC on the
core without PULP) and writes ``SWEEP/export_sweep_c.json``: per network the measured mcycle count (simulated:
deterministic, so one image is enough), the preset's prediction (by layer name, plus its per-inference term), the
budget in cycles where the run's target is ``riscv_cv32e40p`` (its ``freq_hz``) and measured / budget,
Spearman(predicted, measured) over the networks, and per layer over all networks the Spearman and the median
relative error. Simulated cycles do not depend on the machine's load.

Timing is meaningful only on a quiet machine (other work inflates and scatters it). A folder with no finished
job, or a job that cannot be exported, stops it with one sentence on stderr and exit status 2. Like
``experiments.export`` it deletes and overwrites nothing it did not write: every job's ``export/`` folder and
``SWEEP/export_sweep.json`` are checked before the first export, and replacing an earlier export takes --force.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np
from scipy import stats

from experiments import export as ex
from nas.deploy.export import check_out

GOALS = {"measured_over_budget_max": 1.15, "network_spearman_min": 0.9, "layer_spearman_min": 0.9,
         "layer_median_rel_err_max": 0.25}


def _spearman(a, b) -> float | None:
  return float(stats.spearmanr(a, b)[0]) if len(a) >= 3 else None


def _check_outputs(folder: pathlib.Path, jobs, force: bool) -> None:
  """Raise ExportError before any export if one would delete or overwrite a file the sweep did not write, or
  replace an earlier export without ``force``."""
  for job in jobs:
    check_out(job / "export", job, force)
  summary = folder / "export_sweep.json"
  if summary.exists() and not summary.is_file():
    raise ex.ExportError(f"{summary} exists and is not a file the sweep wrote; move it away.")
  if summary.exists() and not force:
    raise ex.ExportError(f"{summary} exists; pass --force to replace it (and the jobs' earlier exports).")


def _common_row(name: str, result: dict, m: dict) -> dict:
  """A network's row of the summary, what every model has: budget, predicted and measured end to end."""
  target = result["target"]
  predicted = result["cost"][target]["latency_s"]
  budget = result["budget"]["value"] if result.get("budget", {}).get("metric") == "latency_s" else None
  measured = 1e-6 * m["end_to_end_us"]["best_block_median"]
  return {"job": name, "model": result["architecture"].get("model"), "target": target, "budget": result.get("budget"),
          "budget_s": budget, "predicted_s": predicted, "measured_s": measured,
          "measured_all_runs_median_s": 1e-6 * m["end_to_end_us"]["median"],
          "measured_p10_s": 1e-6 * m["end_to_end_us"]["p10"], "measured_p90_s": 1e-6 * m["end_to_end_us"]["p90"],
          "measured_over_budget": None if budget is None else measured / budget,
          "measured_over_predicted": measured / predicted, "accuracy": result.get("accuracy"),
          "input_s": None, "predicted_input_s": None, "layers_over_budget": None, "float_qdq_measured_s": None,
          "architecture": [{k: l[k] for k in ("name", "cin", "cout", "w_bits", "a_bits")}
                           for l in result["architecture"]["layers"]]}


def _cnn_row(row: dict, info: dict, m: dict) -> dict:
  """A CNN's extra fields: model.int8.onnx's input stage, its layers' sum, the float-QDQ graph, agreement."""
  budget = row["budget_s"]
  return {"graph": "model.int8.onnx",
          "float_qdq_measured_s": 1e-6 * m["float_qdq"]["end_to_end_us"]["best_block_median"],
          "input_s": 1e-6 * m["input_us"], "predicted_input_s": (m.get("predicted_layers_s") or {}).get("inference_s"),
          "layers_marginal_sum_s": 1e-6 * m["layers_marginal_sum_us"],
          "layers_over_budget": None if budget is None else 1e-6 * m["layers_marginal_sum_us"] / budget,
          "nodes_sum_s": 1e-6 * m["nodes_sum_us"],
          "int8_vs_integer_top1": info["int8"]["agreement"]["vs_integer_top1"],
          "int8_vs_jax_top1": info["int8"]["agreement"]["vs_jax_top1"]}


def sweep(folder, repeats: int = 300, threads: int = 1, force: bool = False) -> dict:
  """Export and measure every job of ``folder``; returns (and writes) the summary.

  Raises:
    ExportError: no finished job under ``folder``, one that cannot be exported, or an output that exists (without
      ``force``) or was not written by an export.
  """
  folder = pathlib.Path(folder)
  jobs = sorted((p.parent for p in folder.rglob("result.json")), key=str) if folder.is_dir() else []
  if not jobs:
    raise ex.ExportError(f"{folder} holds no finished search job (no result.json below it); pass the folder of a "
                         f"sweep run with `python -m experiments.search -m ...`.")
  _check_outputs(folder, jobs, force)
  rows, layers = [], []
  for job in jobs:
    info = ex.export(job, do_measure=True, repeats=repeats, threads=threads, force=force)
    m = json.loads((job / "export" / "measure.json").read_text())
    result = json.loads((job / "result.json").read_text())
    name = str(job.relative_to(folder))
    row = _common_row(name, result, m)
    if "int8" in info:  # a CNN: model.int8.onnx, its input stage and its layers cut one by one
      row.update(_cnn_row(row, info, m))
      pred_layers = (m.get("predicted_layers_s") or {}).get("latency_s", {})
      layers += [{"job": name, "layer": r["layer"], "op_types": r["op_types"], "predicted_s": pred_layers[r["layer"]],
                  "measured_s": 1e-6 * r["marginal_us"], "profiler_s": 1e-6 * r["profiler_us"]}
                 for r in m["layers"] if r["layer"] in pred_layers]
    else:  # the ViT: model.onnx end to end only (no per-layer cut)
      row.update(graph="model.onnx", identical_top1=info["agreement"]["identical_top1"])
    rows.append(row)
  pl, ml = np.asarray([l["predicted_s"] for l in layers]), np.asarray([l["measured_s"] for l in layers])
  ratios = [r["measured_over_budget"] for r in rows if r["measured_over_budget"] is not None]
  summary = {
      "sweep": str(folder), "jobs": rows, "layers": layers, "goals": GOALS,
      "measured_over_budget_max": max(ratios) if ratios else None,
      "network_spearman": _spearman([r["predicted_s"] for r in rows], [r["measured_s"] for r in rows]),
      "layer_spearman": _spearman(pl, ml) if len(layers) else None,
      "layer_median_rel_err": float(np.median(np.abs(pl - ml) / ml)) if len(layers) else None,
      "onnxruntime": m["onnxruntime"], "intra_op_threads": threads, "repeats": repeats,
      "note": "measured: model.int8.onnx (a CNN; model.onnx for the ViT: int8 matmuls, float softmax / LayerNorm / "
              "GELU) in onnxruntime's CPU provider, batch 1, end to end (InferenceSession.run "
              "from Python, the median of the fastest block of runs; measured_all_runs_median_s: of all runs); "
              "per layer: marginal_us of measure.json (the graph cut after the layer minus cut before it, end to "
              "end; profiler_s: the profiler's sum of the layer's nodes, about 2 us of overhead per node); "
              "predicted: the run's hardware preset (result.json cost, measure.json predicted_layers_s)",
  }
  (folder / "export_sweep.json").write_text(json.dumps(summary, indent=1))
  return summary


C_SUMMARY = "export_sweep_c.json"


def sweep_c(folder, pulp: bool = True, images: int = 1, force: bool = False, log=print) -> dict:
  """C-export and simulate every job of ``folder`` on CV32E40P; returns (and writes) ``export_sweep_c.json``.

  Raises:
    ExportError: no finished job under ``folder``, one that cannot be exported, missing RISC-V tools, or an
      output that exists (without ``force``) or was not written by a C export.
  """
  from experiments import export_c as exc
  from nas.deploy import c as cb
  folder = pathlib.Path(folder)
  jobs = sorted((p.parent for p in folder.rglob("result.json")), key=str) if folder.is_dir() else []
  if not jobs:
    raise ex.ExportError(f"{folder} holds no finished search job (no result.json below it); pass the folder of a "
                         f"sweep run with `python -m experiments.search -m ...`.")
  if cb.missing_tools():
    raise ex.ExportError(f"--c needs {', '.join(cb.missing_tools())}; install with: {cb.INSTALL_HINT}.")
  for job in jobs:
    exc.check_out(job / "export_c", job, force)
  summary_path = folder / C_SUMMARY
  if summary_path.exists() and not (summary_path.is_file() and force):
    raise ex.ExportError(f"{summary_path} exists; pass --force to replace it (and the jobs' earlier C exports).")
  rows, layers = [], []
  for job in jobs:
    info = exc.export_c(job, job / "export_c", images=images, simulate=True, pulp=pulp, force=force,
                        log=lambda *_: None)
    c = info["compare"]
    result = json.loads((job / "result.json").read_text())
    budget = result.get("budget") or {}
    budget_s = budget.get("value") if budget.get("metric") == "latency_s" else None
    on_preset = result.get("target") == c["preset"]
    budget_cycles = budget_s * c["freq_hz"] if (budget_s is not None and on_preset) else None
    for r in c["layers"]:
      if r["predicted_cycles"] is not None:
        layers.append({"job": str(job.relative_to(folder)), **r})
    rows.append({"job": str(job.relative_to(folder)), "target": result.get("target"), "budget": budget or None,
                 "budget_cycles": budget_cycles, "predicted_cycles": c["predicted_cycles"],
                 "measured_cycles": c["measured_cycles"],
                 "result_predicted_cycles": (result["cost"][result["target"]]["latency_s"] * c["freq_hz"]
                                             if on_preset else None),
                 "measured_over_predicted": c["measured_over_predicted"],
                 "measured_over_budget": None if budget_cycles is None else c["measured_cycles"] / budget_cycles,
                 "bit_exact_images": info["simulate"]["bit_exact_images"], "images": info["simulate"]["images"],
                 "memory": c.get("memory"), "accuracy": result.get("accuracy")})
    log(f"{rows[-1]['job']}: measured {c['measured_cycles']:.0f} cycles, predicted {c['predicted_cycles']:.0f}")
  pl = np.asarray([l["predicted_cycles"] for l in layers])
  ml = np.asarray([l["measured_cycles"] for l in layers])
  ratios = [r["measured_over_budget"] for r in rows if r["measured_over_budget"] is not None]
  summary = {"sweep": str(folder), "core": c["core"], "preset": c["preset"], "jobs": rows, "layers": layers,
             "goals": GOALS, "measured_over_budget_max": max(ratios) if ratios else None,
             "network_spearman": _spearman([r["predicted_cycles"] for r in rows], [r["measured_cycles"] for r in rows]),
             "layer_spearman": _spearman(pl, ml) if len(layers) else None,
             "layer_median_rel_err": float(np.median(np.abs(pl - ml) / ml)) if len(layers) else None,
             "note": "measured: mcycle of the CV32E40P RTL (Verilator; single-cycle memory), end to end per image; "
                     "predicted: the preset's per-layer cycles of the run's architecture plus its per-inference "
                     "term; budget_cycles: the run's latency budget x the preset's freq_hz (runs searched on "
                     "riscv_cv32e40p only)"}
  summary_path.write_text(json.dumps(summary, indent=1))
  return summary


def table_c(s: dict) -> str:
  """``sweep_c``'s summary as text."""
  ratio = lambda v: "-" if v is None else f"{v:.3f}"
  cyc = lambda v: "-" if v is None else f"{v:.0f}"
  lines = [f"{s['core']} against {s['preset']}",
           f"{'job':<8} {'budget cyc':>11} {'predicted':>11} {'measured':>11} {'meas/pred':>9} {'meas/budget':>11} "
           f"{'weights B':>9} {'acts B':>7}"]
  for r in s["jobs"]:
    m = r.get("memory") or {}
    lines.append(f"{r['job']:<8} {cyc(r['budget_cycles']):>11} {cyc(r['predicted_cycles']):>11} "
                 f"{cyc(r['measured_cycles']):>11} {ratio(r['measured_over_predicted']):>9} "
                 f"{ratio(r['measured_over_budget']):>11} {m.get('weights_bytes', '-'):>9} {m.get('activation_bytes', '-'):>7}")
  lines += [f"measured / budget, largest: {ratio(s['measured_over_budget_max'])}",
            f"Spearman(predicted, measured) over {len(s['jobs'])} networks: {ratio(s['network_spearman'])}",
            f"per layer ({len(s['layers'])} layers): Spearman {ratio(s['layer_spearman'])}, median relative error "
            f"{ratio(s['layer_median_rel_err'])}"]
  return "\n".join(lines)


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
  parser.add_argument("--force", action="store_true", help="replace the jobs' earlier exports and export_sweep.json")
  parser.add_argument("--c", action="store_true",
                      help="instead: C-export every job and simulate it on the CV32E40P RTL (export_sweep_c.json)")
  parser.add_argument("--plain", action="store_true", help="with --c: the RV32IMC build on the core without PULP")
  parser.add_argument("--images", type=int, default=1, help="with --c: images per simulation (1)")
  args = parser.parse_args(argv)
  try:
    if args.c:
      s = sweep_c(args.sweep, pulp=not args.plain, images=args.images, force=args.force)
      print(table_c(s))
      print(f"wrote {pathlib.Path(args.sweep) / C_SUMMARY}")
      return 0
    s = sweep(args.sweep, args.repeats, args.threads, args.force)
  except (ex.ExportError, ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except PermissionError as e:
    print(f"error: cannot write {e.filename} ({e.strerror}); make the sweep folder writable.", file=sys.stderr)
    return 2
  print(table(s))
  print(f"wrote {pathlib.Path(args.sweep) / 'export_sweep.json'}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
