"""Aggregate search sweeps into Pareto fronts, hypervolumes, a plot, an HTML table and one wandb run.

  python -m experiments.pareto multirun/2026-11-24/20-48-43                       # one sweep, budget metric
  python -m experiments.pareto SWEEP_A SWEEP_B --label gumbel --label darts       # two sweeps, one plot
  python -m experiments.pareto SWEEP --target cpu --metric energy_j --out reports/cpu_energy

Every ``result.json`` under each sweep folder (recursively) is one point. A job folder with ``.hydra/`` but no
``result.json`` is a failed job: it is listed (with the message of its ``error.json``) and the front is built
from the others. Points are grouped by (target, metric): by default each result's own target and budget metric;
``--target`` / ``--metric`` read ``result["cost"][target][metric]`` (``result["weight_bytes"]`` for weight_bytes).
Each sweep's searched points form one series; baselines form one series per kind (``baseline:uniform``), or,
when ``--label`` names the sweeps, one per kind and label (``baseline:uniform:uniform-half``), so two baseline
sweeps given their own labels keep their own fronts and hypervolumes.

Hypervolume (nas.search.pareto.hypervolume_2d) uses a reference point fixed by the benchmark, not by the data:
r_a = chance accuracy 1/num_classes, r_c = the reference network's cost (all layers W8A8 at base width, from
``result["budget"]["reference"]``), 1.1 x the largest cost only when no result carries it.
Writes ``pareto.json``, ``pareto.png`` and ``pareto.html`` into ``--out`` (default: the first sweep folder),
and one wandb run (job_type ``aggregate``) under ``<out>/aggregate``: the fronts as native wandb charts (a
``networks`` table, one row per network, and per group a scatter and the families' fronts as lines; see
``log_to_wandb``), beside the PNG. Takes seconds.
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import os
import pathlib
import re
import sys
from typing import Sequence

import numpy as np

from experiments.pareto_report import METRICS  # noqa: F401
from experiments.pareto_report import (_write_json_atomic, format_cost,
                                        log_to_wandb, plot, write_html)
from nas.search.pareto import front_indices, hypervolume_2d

SKIP_DIRS = {"wandb", ".hydra", "aggregate"}


# ---------------------------------------------------------------------------------------------- reading


def _natural_key(path: pathlib.Path) -> list:
  return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def _skipped(path: pathlib.Path, root: pathlib.Path) -> bool:
  return any(part in SKIP_DIRS for part in path.relative_to(root).parts[:-1])


def scan_sweep(sweep_dir: pathlib.Path) -> tuple[list[pathlib.Path], list[dict]]:
  """The ``result.json`` files under a sweep folder, and its failed jobs (``.hydra/`` or ``error.json``, no result)."""
  results = sorted((p for p in sweep_dir.rglob("result.json") if not _skipped(p, sweep_dir)), key=_natural_key)
  done = {p.parent for p in results}
  job_dirs = {p.parent for p in sweep_dir.rglob(".hydra") if p.is_dir() and not _skipped(p, sweep_dir)}
  job_dirs |= {p.parent for p in sweep_dir.rglob("error.json") if not _skipped(p, sweep_dir)}
  failures = []
  for job in sorted(job_dirs - done, key=_natural_key):
    err_path = job / "error.json"
    try:
      err = json.loads(err_path.read_text())
      error, etype = str(err.get("error", "")), str(err.get("type", ""))
    except FileNotFoundError:
      error, etype = "no result.json and no error.json (crashed, killed or still running)", "Missing"
    except (json.JSONDecodeError, AttributeError) as e:
      error, etype = f"unreadable error.json: {e}", "BadErrorFile"
    failures.append({"job": str(job.relative_to(sweep_dir)), "error": error, "type": etype})
  return results, failures


def _cost_of(result: dict, target: str, metric: str) -> float:
  if metric == "weight_bytes":
    value = result.get("weight_bytes", (result.get("metrics") or {}).get("weight_bytes"))
  else:
    entry = (result.get("cost") or {}).get(target)
    if entry is None:
      raise KeyError(f"no cost on target {target!r} (has {sorted(result.get('cost') or {})})")
    if "error" in entry:
      raise KeyError(f"cost on {target!r} failed: {entry['error']}")
    value = entry.get(metric, (result.get("metrics") or {}).get(metric))
  if value is None:
    raise KeyError(f"no {metric!r} for target {target!r}")
  return float(value)


def _arch_summary(result: dict) -> dict:
  layers = (result.get("architecture") or {}).get("layers") or []
  return {"layers": [l.get("name", f"layer{i}") for i, l in enumerate(layers)],
          "w_bits": [l.get("w_bits") for l in layers], "a_bits": [l.get("a_bits") for l in layers],
          "widths": [l.get("cout") for l in layers]}


def _all_costs(result: dict, target: str) -> dict:
  """Every cost metric of ``result`` on ``target`` that it has (None where it has none)."""
  out = {}
  for m in METRICS:
    try:
      out[m] = _cost_of(result, target, m)
    except (KeyError, TypeError, ValueError):
      out[m] = None
  return out


def _finite(x) -> float | None:
  return float(x) if x is not None and math.isfinite(float(x)) else None


def load_points(sweep_dirs: Sequence[pathlib.Path], labels: Sequence[str], metric: str | None,
                target: str | None, label_baselines: bool = False) -> tuple[list[dict], list[dict], list[dict]]:
  """Every readable result as a point; the failed jobs; the results that had no cost for the asked metric.

  Args:
    sweep_dirs: sweep folders.
    labels: one name per sweep.
    metric: cost metric, or None for each result's budget metric.
    target: hardware target, or None for each result's own target.
    label_baselines: baselines form one series per kind and sweep label (the labels were given by the user)
      instead of one per kind across all sweeps.

  Returns:
    The points (each with its ``series``), the failed jobs and the skipped results.
  """
  from rich.progress import track
  points, failures, skipped = [], [], []
  for sweep, label in zip(sweep_dirs, labels):
    files, failed = scan_sweep(sweep)
    failures += [dict(f, sweep=label) for f in failed]
    budget_metrics = collections.Counter()
    loaded = []
    for path in track(files, description=f"reading {label}", disable=len(files) < 32, transient=True):
      job = str(path.parent.relative_to(sweep))
      try:
        result = json.loads(path.read_text())
        acc = float(result["accuracy"])
        kind = str(result["kind"])
      except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        failures.append({"sweep": label, "job": job, "error": f"unreadable result.json: {e!r}", "type": "BadResult"})
        continue
      if (result.get("budget") or {}).get("metric"):
        budget_metrics[result["budget"]["metric"]] += 1
      loaded.append((job, result, acc, kind, str(path.parent)))
    default_metric = budget_metrics.most_common(1)[0][0] if budget_metrics else "latency_s"
    for job, result, acc, kind, run_dir in loaded:
      budget = result.get("budget") or {}
      tgt = target or result.get("target")
      met = metric or budget.get("metric") or default_metric
      try:
        if tgt is None:
          raise KeyError("no target in result.json; pass --target")
        cost = _cost_of(result, tgt, met)
        if not (math.isfinite(acc) and math.isfinite(cost)):
          raise ValueError(f"non-finite accuracy {acc} or cost {cost}")
      except (KeyError, ValueError, TypeError) as e:
        skipped.append({"sweep": label, "job": job, "reason": str(e).strip("'\"")})
        continue
      own_budget = budget.get("metric") == met and result.get("target") == tgt
      ref = budget.get("reference") if (own_budget or (met == "weight_bytes" and budget.get("metric") == met)) \
          else None
      if ref is None and (result.get("target") == tgt or met == "weight_bytes"):
        ref = (result.get("reference") or {}).get(met)  # the search app also writes the full reference cost
      points.append({
          "sweep": label, "job": job, "kind": kind, "series": series_name(kind, label, label_baselines),
          "name": result.get("label"), "target": tgt, "metric": met,
          "accuracy": acc, "cost": cost, "costs": _all_costs(result, tgt), "run": run_dir,
          "num_classes": result.get("num_classes"), "seed": result.get("seed"),
          "method": result.get("method"), "reference_cost": _finite(ref),
          "budget": {"metric": budget.get("metric"), "fraction": budget.get("fraction"),
                     "value": budget.get("value")} if budget.get("fraction") is not None else None,
          "architecture": _arch_summary(result)})
  return points, failures, skipped


# ---------------------------------------------------------------------------------------------- fronts


def series_name(kind: str, sweep_label: str, label_baselines: bool) -> str:
  """Searched points: one series per sweep. Baselines: one per kind, or per kind and sweep if labelled."""
  if kind == "searched":
    return f"searched:{sweep_label}"
  return f"{kind}:{sweep_label}" if label_baselines else kind


def reference_point(points: list[dict]) -> dict:
  """(r_a, r_c) for one group of points, each with where it came from."""
  classes = collections.Counter(p["num_classes"] for p in points if p["num_classes"])
  if classes:
    n = classes.most_common(1)[0][0]
    r_a, a_src = 1.0 / n, f"chance accuracy 1/{n}"
  else:
    r_a, a_src = 0.1, "chance accuracy, num_classes absent: 0.1"
  refs = sorted({p["reference_cost"] for p in points if p["reference_cost"] is not None})
  if refs:
    r_c, c_src = refs[-1], "reference network cost (all W8A8, base width)"
    if refs[0] < refs[-1] * (1 - 1e-6):
      c_src += f"; results disagree ({refs[0]:.6g}..{refs[-1]:.6g}), the largest is used"
  else:
    r_c, c_src = 1.1 * max(p["cost"] for p in points), "1.1 x the largest cost (no reference cost in the results)"
  return {"accuracy": r_a, "cost": r_c, "accuracy_source": a_src, "cost_source": c_src}


def build_group(target: str, metric: str, points: list[dict]) -> dict:
  """Fronts and hypervolumes of one (target, metric) group; marks each point's ``on_front`` (its series' front)."""
  ref = reference_point(points)
  names = sorted({p["series"] for p in points}, key=lambda s: (not s.startswith("searched:"), s))
  series = {}
  for name in names:
    members = [i for i, p in enumerate(points) if p["series"] == name]
    acc = np.array([points[i]["accuracy"] for i in members])
    cost = np.array([points[i]["cost"] for i in members])
    front = [members[j] for j in front_indices(acc, cost)]
    for i in front:
      points[i]["on_front"] = True
    series[name] = {"kind": points[members[0]]["kind"], "points": len(members), "front": front,
                    "hypervolume": hypervolume_2d(acc, cost, ref["accuracy"], ref["cost"])}
  for p in points:
    p.setdefault("on_front", False)
  baselines = {k: s["hypervolume"] for k, s in series.items() if not k.startswith("searched:")}
  best = max(baselines, key=baselines.get) if baselines else None
  ratio = {k: (s["hypervolume"] / baselines[best] if best and baselines[best] > 0 else None)
           for k, s in series.items() if k.startswith("searched:")}
  return {"target": target, "metric": metric, "reference": ref, "points": points, "series": series,
          "best_baseline": best, "ratio": ratio}


# ---------------------------------------------------------------------------------------------- entry points


def _default_labels(sweep_dirs: Sequence[pathlib.Path]) -> list[str]:
  labels = [d.name for d in sweep_dirs]
  if len(set(labels)) < len(labels):  # e.g. two multirun TIME folders of the same name on different days
    labels = ["/".join(d.parts[-2:]) for d in sweep_dirs]
  return [l if labels.count(l) == 1 else f"{l}#{i}" for i, l in enumerate(labels)]


def aggregate(sweep_dirs: Sequence[str | os.PathLike], labels: Sequence[str] | None = None,
              metric: str | None = None, target: str | None = None, out_dir: str | os.PathLike | None = None,
              wandb_mode: str = "offline") -> dict:
  """Read the sweeps, build fronts and hypervolumes, write pareto.json/png/html, log one wandb run.

  Args:
    sweep_dirs: sweep folders (Hydra multirun folders or single run folders).
    labels: one name per sweep (default: the folder names).
    metric: cost metric (default: each result's budget metric).
    target: hardware target whose cost is read (default: each result's own target).
    out_dir: where the reports go (default: the first sweep folder).
    wandb_mode: ``offline``, ``online`` or ``disabled``.

  Returns:
    What ``pareto.json`` holds.
  """
  dirs = [pathlib.Path(d) for d in sweep_dirs]
  for d in dirs:
    if not d.is_dir():
      raise FileNotFoundError(f"sweep folder {d} does not exist.")
  if metric is not None and metric not in METRICS:
    raise ValueError(f"metric={metric!r} is unknown; use one of {METRICS}.")
  label_baselines = bool(labels)
  labels = list(labels) if labels else _default_labels(dirs)
  if len(labels) != len(dirs) or len(set(labels)) != len(labels):
    raise ValueError(f"--label must be given once per sweep folder, all different; got {labels} for {len(dirs)}.")
  points, failures, skipped = load_points(dirs, labels, metric, target, label_baselines)
  if not points:
    first = f"; e.g. {skipped[0]['job']}: {skipped[0]['reason']}" if skipped else ""
    raise ValueError(f"no usable result.json under {', '.join(map(str, dirs))} "
                     f"({len(failures)} failed jobs, {len(skipped)} without the asked cost{first}).")
  by_group = collections.defaultdict(list)
  for p in points:
    by_group[(p["target"], p["metric"])].append(p)
  groups = [build_group(t, m, ps) for (t, m), ps in by_group.items()]
  groups.sort(key=lambda g: (-sum(p["kind"] == "searched" for p in g["points"]), g["target"], g["metric"]))
  report = {
      "sweeps": [{"dir": str(d), "label": l, "results": sum(p["sweep"] == l for p in points),
                  "failed": sum(f["sweep"] == l for f in failures)} for d, l in zip(dirs, labels)],
      "metric": metric, "target": target, "groups": groups, "failures": failures, "skipped": skipped,
      "hypervolume": {f"{g['target']}/{g['metric']}/{k}": s["hypervolume"]
                      for g in groups for k, s in g["series"].items()},
      "hypervolume_ratio": {f"{g['target']}/{g['metric']}/{k}": r for g in groups for k, r in g["ratio"].items()},
  }
  out = pathlib.Path(out_dir) if out_dir is not None else dirs[0]
  out.mkdir(parents=True, exist_ok=True)
  plot(groups, labels, out / "pareto.png")
  write_html(report, out / "pareto.html")
  try:
    report["wandb"] = log_to_wandb(report, out, dirs[0].name, wandb_mode)
  except Exception as e:  # the reports on disk are the product; a tracking failure is reported, not fatal
    report["wandb"] = {"mode": wandb_mode, "error": f"{type(e).__name__}: {e}"}
  _write_json_atomic(out / "pareto.json", report)
  return report


def print_report(report: dict, out: pathlib.Path) -> None:
  for g in report["groups"]:
    ref = g["reference"]
    print(f"\n{g['target']} / {g['metric']}: reference point accuracy {ref['accuracy']:.4g} "
          f"({ref['accuracy_source']}), cost {format_cost(g['metric'], ref['cost'])} ({ref['cost_source']})")
    for name, s in g["series"].items():
      r = g["ratio"].get(name)
      print(f"  {name:<28} {s['points']:>4} points  {len(s['front']):>3} on front  HV {s['hypervolume']:.4g}"
            + (f"  = {r:.3g} x best baseline ({g['best_baseline']})" if r is not None else ""))
  for f in report["failures"]:
    print(f"FAILED {f['sweep']}/{f['job']}: {f['type']}: {f['error']}")
  for s in report["skipped"]:
    print(f"skipped {s['sweep']}/{s['job']}: {s['reason']}")
  if "error" in report.get("wandb", {}):
    print(f"wandb logging failed: {report['wandb']['error']}", file=sys.stderr)
  print(f"-> {out / 'pareto.json'}, {out / 'pareto.png'}, {out / 'pareto.html'}")


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.pareto", description=__doc__.split("\n\n")[0])
  parser.add_argument("sweep_dirs", nargs="+", metavar="SWEEP_DIR")
  parser.add_argument("--label", action="append", help="name of each sweep, once per SWEEP_DIR, in order; "
                      "baselines are then grouped per kind and label")
  parser.add_argument("--metric", choices=METRICS, help="cost metric (default: each result's budget metric)")
  parser.add_argument("--target", help="hardware whose cost is read (default: each result's own target)")
  parser.add_argument("--out", help="output folder (default: the first SWEEP_DIR)")
  parser.add_argument("--wandb-mode", choices=("offline", "disabled", "online"), default="offline")
  args = parser.parse_args(argv)
  try:
    report = aggregate(args.sweep_dirs, args.label, args.metric, args.target, args.out, args.wandb_mode)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except OSError as e:  # an output folder that is read-only, or a full disk
    where = e.filename or args.out or args.sweep_dirs[0]
    print(f"error: cannot write the reports to {where} ({e.strerror or e}); pass a writable --out with free "
          f"space.", file=sys.stderr)
    return 2
  print_report(report, pathlib.Path(args.out or args.sweep_dirs[0]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
