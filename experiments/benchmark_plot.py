"""The accuracy-versus-cost plot of one benchmark comparison (experiments.benchmark_report writes it)."""
from __future__ import annotations

import pathlib
from typing import Sequence

from experiments.pareto_report import METRIC_WORDS

PLOT_UNITS = {"latency_s": ((1, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")),
              "energy_j": ((1, "J"), (1e-3, "mJ"), (1e-6, "µJ"), (1e-9, "nJ")),
              "weight_bytes": ((2 ** 20, "MiB"), (2 ** 10, "KiB"), (1, "B"))}
BASELINE_MARKERS = ("s", "^", "D", "v", "P", "X", "*")


def _plot_unit(metric: str, values: Sequence[float]) -> tuple[float, str]:
  scales = PLOT_UNITS.get(metric, ((1, ""),))
  largest = max((abs(v) for v in values), default=1.0)
  return next(((s, u) for s, u in scales if largest >= s), scales[-1])


def plot_comparison(comparison: dict, path: pathlib.Path) -> None:
  """Accuracy (%) vs cost: searched families per budget, baseline configs, faint lines at the budgets."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  c, ref = comparison, comparison["reference"]
  scale, unit = _plot_unit(c["metric"], [p["cost"] for p in c["points"]] + [ref["cost"] or 0.0])
  fig = Figure(figsize=(7.5, 5.0), layout="constrained")
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  searched = sorted({r["family"] for r in c["budgets"]})
  for i, family in enumerate(searched):
    rows = [r for r in c["budgets"] if r["family"] == family]
    seeds = max(len(r["seeds"]) for r in rows)
    ax.errorbar([r["cost"]["mean"] / scale for r in rows], [100 * r["accuracy"]["mean"] for r in rows],
                yerr=[100 * (r["accuracy"]["std"] or 0.0) for r in rows], color=f"C{i}", marker="o", capsize=3,
                label=f"{family} (searched, {seeds} seed{'s' if seeds > 1 else ''})")
  for j, family in enumerate(sorted({b["family"] for b in c["baselines"]}, key=str)):
    rows = [b for b in c["baselines"] if b["family"] == family]
    colour = f"C{(len(searched) + j) % 10}"
    ax.errorbar([b["cost"] / scale for b in rows], [100 * b["accuracy"]["mean"] for b in rows],
                yerr=[100 * (b["accuracy"]["std"] or 0.0) for b in rows], color=colour, linestyle="none",
                marker=BASELINE_MARKERS[j % len(BASELINE_MARKERS)], capsize=2, label=f"{family} (baseline)")
    if family == "uniform":
      for b in rows:
        ax.annotate(str(b["config"]), (b["cost"] / scale, 100 * b["accuracy"]["mean"]), fontsize=7,
                    xytext=(4, -10), textcoords="offset points", color=colour)
  for fraction in sorted({r["fraction"] for r in c["budgets"] if r["fraction"] is not None}):
    value = fraction * ref["cost"] if ref["cost"] is not None else None
    if value is not None:
      ax.axvline(value / scale, color="0.5", alpha=0.25, linewidth=1, zorder=0)
  verdict = (c["hypervolume"].get("verdict") or {}).get("outcome")
  ax.set_title(f"{c['target']} / {c['metric']}" + (f" — {c['default']} {verdict} vs all baselines (HV)"
                                                   if verdict else ""), fontsize=10)
  words = METRIC_WORDS.get(c['metric'], c['metric'])
  ax.set_xlabel(f"{words} on {c['target']} ({unit})" if unit else f"{words} on {c['target']}")
  ax.set_ylabel("test accuracy (%)")
  ax.grid(True, alpha=0.3)
  if c["points"]:
    ax.legend(fontsize=7, loc="lower right")
  fig.savefig(path, dpi=120)
