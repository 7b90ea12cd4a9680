"""The reports of ``experiments.pareto``: cost units and words, the plot (PNG), the HTML table, atomic writes, and
the aggregate wandb run with the fronts as native charts (``log_to_wandb``)."""
from __future__ import annotations

import collections
import html
import json
import math
import os
import pathlib
import tempfile
from typing import Sequence

import numpy as np

from experiments.tracking import Tracker, WandbConfig

METRICS = ("latency_s", "energy_j", "weight_bytes")
# Baselines get their own colours and markers; searched series take tab10 colours, one per sweep label.
BASELINE_STYLE = {"baseline:uniform": ("#555555", "s"), "baseline:random": ("#b8860b", "^"),
                  "baseline:float": ("#8c564b", "D")}



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
