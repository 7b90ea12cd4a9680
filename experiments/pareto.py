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
import html
import json
import math
import os
import pathlib
import re
import sys
import tempfile
from typing import Sequence

import numpy as np

from experiments.tracking import Tracker, WandbConfig
from nas.search.pareto import front_indices, hypervolume_2d

METRICS = ("latency_s", "energy_j", "weight_bytes")
SKIP_DIRS = {"wandb", ".hydra", "aggregate"}
# Baselines get their own colours and markers; searched series take tab10 colours, one per sweep label.
BASELINE_STYLE = {"baseline:uniform": ("#555555", "s"), "baseline:random": ("#b8860b", "^"),
                  "baseline:float": ("#8c564b", "D")}


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


# ---------------------------------------------------------------------------------------------- reports


COST_UNITS = {"latency_s": ((1, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")),
              "energy_j": ((1, "J"), (1e-3, "mJ"), (1e-6, "µJ"), (1e-9, "nJ")),
              "weight_bytes": ((2 ** 20, "MiB"), (2 ** 10, "KiB"), (1, "B"))}
METRIC_WORDS = {"latency_s": "latency", "energy_j": "energy", "weight_bytes": "weights"}


def cost_unit(metric: str, value: float) -> tuple[float, str]:
  """(scale, unit) that shows ``value`` of ``metric`` readably, e.g. (1e-6, "µs"); (1, "") if unknown."""
  scales = COST_UNITS.get(metric)
  if scales is None:
    return 1.0, ""
  return next(((s, u) for s, u in scales if abs(value) >= s), scales[-1])


def format_cost(metric: str, value: float | None) -> str:
  if value is None:
    return "–"
  if metric not in COST_UNITS:
    return f"{value:.4g}"
  scale, unit = cost_unit(metric, value)
  return f"{value / scale:.4g} {unit}"


def _budget_text(p: dict) -> str:
  b = p["budget"]
  if not b:
    return "–"
  return f"{b['fraction']:.3g} × ref {b['metric']}" + (f" ({format_cost(b['metric'], b['value'])})" if b["value"] else "")


def plot(groups: list[dict], labels: Sequence[str], path: pathlib.Path) -> None:
  """Accuracy vs cost, one panel per (target, metric): every point, each series' front as a step line."""
  from matplotlib.figure import Figure
  from matplotlib.ticker import FuncFormatter
  ncols = min(len(groups), 3)
  nrows = math.ceil(len(groups) / ncols)
  fig = Figure(figsize=(6.4 * ncols, 4.8 * nrows), layout="constrained")
  axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
  colours = {f"searched:{l}": f"C{i % 10}" for i, l in enumerate(labels)}
  # Labelled baselines of one kind (e.g. two uniform sweeps) share its marker but need their own colours.
  baseline_series = sorted({(p["series"], p["kind"]) for g in groups for p in g["points"]
                            if p["kind"] != "searched"})
  baseline_names = [name for name, _ in baseline_series]
  series_per_kind = collections.Counter(kind for _, kind in baseline_series)
  for ax, g in zip(axes, groups):
    pts, ref = g["points"], g["reference"]
    for name, s in g["series"].items():
      if name in colours:
        colour, marker = colours[name], "o"
      else:
        colour, marker = BASELINE_STYLE.get(s["kind"], ("#17becf", "v"))
        if series_per_kind[s["kind"]] > 1:
          colour = f"C{(len(labels) + baseline_names.index(name)) % 10}"
      members = [p for p in pts if p["series"] == name]
      ax.scatter([p["cost"] for p in members], [p["accuracy"] for p in members], color=colour, marker=marker,
                 alpha=0.35, s=22, label="_nolegend_")
      front = [pts[i] for i in s["front"]]
      ax.step([p["cost"] for p in front], [p["accuracy"] for p in front], where="post", color=colour,
              linestyle="-" if name in colours else "--", linewidth=1.8 if name in colours else 1.0)
      ax.scatter([p["cost"] for p in front], [p["accuracy"] for p in front], color=colour, marker=marker, s=46,
                 edgecolors="black", linewidths=0.6, zorder=3,
                 label=f"{name} (HV {s['hypervolume']:.3g})")
      if s["kind"] == "baseline:uniform":
        for p in members:
          if p["name"]:
            ax.annotate(str(p["name"]).split("-")[-1], (p["cost"], p["accuracy"]), fontsize=7,
                        xytext=(3, -9), textcoords="offset points", color=colour)
    ax.axhline(ref["accuracy"], color="0.6", linestyle=":", linewidth=1)
    ax.axvline(ref["cost"], color="0.6", linestyle=":", linewidth=1,
               label=f"reference ({ref['accuracy']:.3g}, {format_cost(g['metric'], ref['cost'])})")
    # Zoom on the points: chance accuracy is usually far below them (its line is then off-screen).
    acc = [p["accuracy"] for p in pts]
    pad = max(0.02, 0.08 * (max(acc) - min(acc)))
    ax.set_ylim(min(acc) - pad, min(max(acc) + pad, 1.0 + pad / 4))
    costs = np.array([p["cost"] for p in pts] + [ref["cost"]])
    if costs.min() > 0 and costs.max() / costs.min() > 10:
      ax.set_xscale("log")
    ratio = ", ".join(f"{k.split(':', 1)[1]}: {v:.3g}" for k, v in g["ratio"].items() if v is not None)
    ax.set_title(f"{g['target']} / {g['metric']}" + (f" — HV / best baseline: {ratio}" if ratio else ""),
                 fontsize=10)
    budgets = sorted({p["budget"]["value"] for p in pts if p.get("budget") and p["budget"].get("value")
                      and p["budget"].get("metric") == g["metric"]})
    for i, b in enumerate(budgets):  # each searched network's budget, where it was searched on this metric
      ax.axvline(b, color="0.45", linestyle="-", linewidth=0.6, alpha=0.5,
                 label="budgets" if i == 0 else "_nolegend_")
    scale, unit = cost_unit(g["metric"], float(np.median(costs)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v / scale:.3g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))
    ax.set_xlabel(f"{METRIC_WORDS.get(g['metric'], g['metric'])} on {g['target']} ({unit})")
    ax.set_ylabel("test accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
  for ax in axes[len(groups):]:
    ax.set_visible(False)
  _write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))


_CSS = ("body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin:0.5em 0 1.5em}"
        "td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px;text-align:right}th{background:#f0f0f0}"
        "td.l{text-align:left}.fail{color:#a00}")


def _td(text, left=False) -> str:
  return f"<td{' class=l' if left else ''}>{text}</td>"


def write_html(report: dict, path: pathlib.Path) -> None:
  """A self-contained page: hypervolumes, then each group's front architectures (per-layer bits and widths)."""
  e = html.escape
  out = [f"<!doctype html><html><head><meta charset='utf-8'><title>Pareto fronts</title><style>{_CSS}</style>"
         "</head><body><h1>Pareto fronts</h1>",
         "<p>Sweeps: " + ", ".join(f"<b>{e(s['label'])}</b> ({e(s['dir'])}: {s['results']} results, "
                                   f"{s['failed']} failed)" for s in report["sweeps"]) + "</p>"]
  for g in report["groups"]:
    ref = g["reference"]
    out.append(f"<h2>{e(g['target'])} / {e(g['metric'])}</h2><p>Reference point: accuracy {ref['accuracy']:.4g} "
               f"({e(ref['accuracy_source'])}), cost {format_cost(g['metric'], ref['cost'])} "
               f"({e(ref['cost_source'])}).</p><table><tr><th>series</th><th>points</th><th>front</th>"
               "<th>hypervolume</th><th>/ best baseline</th></tr>")
    for name, s in g["series"].items():
      r = g["ratio"].get(name)
      out.append("<tr>" + _td(e(name), True) + _td(s["points"]) + _td(len(s["front"])) +
                 _td(f"{s['hypervolume']:.4g}") + _td("–" if r is None else f"{r:.3g}") + "</tr>")
    out.append("</table>")
    rows = [(name, g["points"][i]) for name, s in g["series"].items() for i in s["front"]]
    layers = list(dict.fromkeys(l for _, p in rows for l in p["architecture"]["layers"]))
    out.append("<table><tr><th>series</th><th>job</th><th>name</th><th>accuracy</th><th>cost</th><th>budget</th>"
               + "".join(f"<th>{e(l)}<br>W/A bits, width</th>" for l in layers) + "</tr>")
    for name, p in rows:
      arch = p["architecture"]
      per_layer = {l: (w, a, c) for l, w, a, c in zip(arch["layers"], arch["w_bits"], arch["a_bits"], arch["widths"])}
      cells = "".join(_td(f"W{per_layer[l][0]}A{per_layer[l][1]} · {per_layer[l][2]}" if l in per_layer else "–")
                      for l in layers)
      out.append("<tr>" + _td(e(name), True) + _td(e(f"{p['sweep']}/{p['job']}"), True) +
                 _td(e(str(p["name"] or "")), True) + _td(f"{p['accuracy']:.4f}") +
                 _td(format_cost(g["metric"], p["cost"])) + _td(e(_budget_text(p))) + cells + "</tr>")
    out.append("</table>")
  if report["failures"]:
    out.append("<h2 class=fail>Failed jobs</h2><ul>" + "".join(
        f"<li class=fail>{e(f['sweep'])}/{e(f['job'])}: {e(f['type'])}: {e(f['error'])}</li>"
        for f in report["failures"]) + "</ul>")
  if report["skipped"]:
    out.append("<h2>Results without the asked cost</h2><ul>" + "".join(
        f"<li>{e(s['sweep'])}/{e(s['job'])}: {e(s['reason'])}</li>" for s in report["skipped"]) + "</ul>")
  out.append("</body></html>")
  _write_atomic(path, lambda tmp: tmp.write_text("\n".join(out), encoding="utf-8"))


def _write_atomic(path: pathlib.Path, write) -> None:
  """``write(tmp)`` into a temporary file beside ``path``, then renamed to it: a full disk or a kill leaves the
  previous file (or none), never a truncated one, and no temporary file behind on an error."""
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  os.close(fd)
  try:
    write(pathlib.Path(tmp))
    os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is for reading
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise


def _write_json_atomic(path: pathlib.Path, obj) -> None:
  _write_atomic(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1, allow_nan=False)))


def _bits_text(bits) -> str:
  if isinstance(bits, (list, tuple)):  # per-channel bits: their range
    return f"{min(bits)}-{max(bits)}" if bits else "?"
  return str(bits)


def arch_text(arch: dict) -> str:
  """An architecture in one short line, layer by layer: ``W<weight bits>A<activation bits>:<width>``
  (e.g. ``W4A4:8 W2A4:16``)."""
  return " ".join(f"W{_bits_text(w)}A{_bits_text(a)}:{c}"
                  for w, a, c in zip(arch["w_bits"], arch["a_bits"], arch["widths"]))


# One row per network in the wandb tables (``networks``, and the tables behind the scatter and front charts).
NETWORK_COLUMNS = ["family", "label", "kind", "sweep", "target", "metric", "budget", "budget_value", "accuracy",
                   "cost", *METRICS, "on_front", "architecture", "seed", "run"]


def network_row(p: dict) -> list:
  """The ``NETWORK_COLUMNS`` of one point: its series (family), its network's name, where the cost was read,
  the budget (fraction of the reference cost and its value), accuracy and costs, whether it is on its family's
  front, its architecture as one line, seed and run folder."""
  b = p.get("budget") or {}
  costs = p.get("costs") or {}
  return [p["series"], str(p["name"] or p["job"]), p["kind"], p["sweep"], p["target"], p["metric"],
          b.get("fraction"), b.get("value"), p["accuracy"], p["cost"], *(costs.get(m) for m in METRICS),
          bool(p["on_front"]), arch_text(p["architecture"]), p["seed"], p.get("run", p["job"])]


def chart_keys(groups: list[dict]) -> list[dict]:
  """The wandb keys of each group's charts: the first group (most searched points) logs under ``pareto`` and
  ``pareto_front``, the others under ``pareto/<target>/<metric>`` and ``pareto_front/<target>/<metric>``
  (wandb stores a chart's table under ``<key>_table``)."""
  return [{"scatter": "pareto", "front": "pareto_front"} if n == 0 else
          {"scatter": f"pareto/{g['target']}/{g['metric']}", "front": f"pareto_front/{g['target']}/{g['metric']}"}
          for n, g in enumerate(groups)]


def log_to_wandb(report: dict, out_dir: pathlib.Path, group: str, mode: str) -> dict:
  """One aggregate run, its fronts as native wandb charts a user can explore:

  * ``networks``: a table, one row per network of every group (``NETWORK_COLUMNS``: family, label, target,
    budget, accuracy, costs, on_front, the architecture as one line, seed, run folder); filter it by target,
    and the same key in several aggregate runs compares sweeps;
  * per (target, metric) group, a scatter of accuracy against cost (``pareto``, its table ``pareto_table``)
    with the same columns, so a point's family, front flag and architecture are in its row, and the fronts,
    one line per family (``pareto_front``, a line chart with ``stroke=family`` over the front points, sorted
    by cost; table ``pareto_front_table``); other groups under ``pareto/<target>/<metric>`` and
    ``pareto_front/<target>/<metric>``;
  * ``front_architectures`` (the front networks' per-layer bits and widths), ``pareto_plot`` (the PNG), and
    the hypervolumes in the summary.
  """
  tracker = Tracker(WandbConfig(mode=mode), out_dir / "aggregate", f"pareto-{group}", group, "aggregate",
                    {k: report[k] for k in ("sweeps", "metric", "target")})
  try:
    front_rows, all_rows = [], []
    for g, keys in zip(report["groups"], chart_keys(report["groups"])):
      rows = [network_row(p) for p in g["points"]]
      all_rows += rows
      tracker.scatter(keys["scatter"], NETWORK_COLUMNS, rows, x="cost", y="accuracy",
                      title=f"accuracy vs {g['metric']} on {g['target']}")
      front = [network_row(g["points"][i]) for s in g["series"].values()
               for i in sorted(s["front"], key=lambda i: g["points"][i]["cost"])]
      tracker.line(keys["front"], NETWORK_COLUMNS, front, x="cost", y="accuracy", stroke="family",
                   title=f"Pareto front per family: accuracy vs {g['metric']} on {g['target']}")
      for name, s in g["series"].items():
        for i in s["front"]:
          p, arch = g["points"][i], g["points"][i]["architecture"]
          front_rows.append([g["target"], g["metric"], name, p["job"], str(p["name"] or ""), p["accuracy"],
                             p["cost"], _budget_text(p), "/".join(map(str, arch["w_bits"])),
                             "/".join(map(str, arch["a_bits"])), "/".join(map(str, arch["widths"]))])
    tracker.table("networks", NETWORK_COLUMNS, all_rows)
    tracker.table("front_architectures", ["target", "metric", "series", "job", "name", "accuracy", "cost",
                                          "budget", "w_bits", "a_bits", "widths"], front_rows)
    tracker.image("pareto_plot", out_dir / "pareto.png")
    tracker.summary({**{f"hv/{k}": v for k, v in report["hypervolume"].items()},
                     **{f"hv_ratio/{k}": v for k, v in report["hypervolume_ratio"].items() if v is not None},
                     "failed_jobs": len(report["failures"]), "networks": len(all_rows)})
    tracker.finish()
  except BaseException:
    tracker.finish(exit_code=1)
    raise
  runs = sorted((out_dir / "aggregate" / "wandb").glob("offline-run-*"))
  return {"mode": mode, "run_dir": str(out_dir / "aggregate"), "offline_run": str(runs[-1]) if runs else None}


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
