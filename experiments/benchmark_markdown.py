"""The Markdown of a benchmark report (``experiments.benchmark_report``): per comparison, the hypervolume
table and verdict, the per-budget table, steps and times; then the jobs that have no result."""
from __future__ import annotations

from typing import Sequence

from experiments.pareto_report import format_cost

# Names of the baseline unions in a report (also the keys of its JSON).
ALL_BASELINES = "all baselines"
SAME_TOTAL = "same total steps"  # baselines trained for the searched network's search + fine-tuning steps
WITH_SAME_TOTAL = "all baselines, either step count"  # ALL_BASELINES plus the SAME_TOTAL family


def _share_text(share: dict | None) -> str:
  if share is None:
    return "–"
  return "dense" if not share else ", ".join(f"{k} {100 * v:.0f} %" for k, v in share.items())



def _pm(stats: dict, scale: float = 1.0, fmt: str = ".4g") -> str:
  """``mean ± std``; just the mean when there is no std (one seed)."""
  if stats is None or stats["mean"] is None:
    return "–"
  std_fmt = fmt if fmt.endswith("f") else ".2g"
  return f"{stats['mean'] * scale:{fmt}}" + ("" if stats["std"] is None else f" ± {stats['std'] * scale:{std_fmt}}")


def _cell(text) -> str:
  return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
  return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
          + ["| " + " | ".join(_cell(x) for x in row) + " |" for row in rows] + [""])


def _seconds(x) -> str:
  return "–" if x is None else f"{x:.1f}"


def cheapest_markdown(c: dict) -> list[str]:
  """The target's cheapest precision per MAC (the protocol's ``baselines.cheapest``) and every pair's price;
  nothing when the protocol has no such option."""
  e, m = c.get("cheapest"), c["metric"]
  if not e:
    return []
  w, a = e["pair"]
  least = next(r["cost_per_mac"] for r in e["pairs"] if [r["w_bits"], r["a_bits"]] == e["pair"])
  tie = [f"W{x}A{y}" for x, y in e["tied"] if [x, y] != e["pair"]]
  out = [f"Cheapest precision per MAC on {c['target']} ({m}): W{w}A{a}"
         + (f" (tied with {', '.join(tie)}: the higher precision is taken)" if tie else "")
         + f"; its uniform networks at widths {', '.join(f'×{x:g}' for x in e['widths'])} are baselines. Rule: "
         f"{e['rule']}.", ""]
  rows = [(f"W{r['w_bits']}A{r['a_bits']}", "–", "–", r["error"]) if "error" in r else
          (f"W{r['w_bits']}A{r['a_bits']}", format_cost(m, r["cost"]), format_cost(m, r["cost_per_mac"]),
           f"{r['cost_per_mac'] / least:.3f}") for r in e["pairs"]]
  return out + _table(("pair", "uniform network at base width", "per MAC", f"/ W{w}A{a}"), rows)


def comparison_markdown(c: dict) -> list[str]:
  """The section of one comparison: reference point, hypervolumes and verdict, budgets, baselines, plot.

  Long: one Markdown section written top to bottom, in the order a reader sees it.
  """
  m, ref, hv = c["metric"], c["reference"], c["hypervolume"]
  out = [f"## {c['target']} / {m}", "",
         f"Reference point: accuracy {ref['accuracy']:.4g} ({ref['accuracy_source']}), cost "
         f"{format_cost(m, ref['cost'])} ({ref['cost_source']}).", ""]
  if "skipped" in hv:
    out += [f"Hypervolume: {hv['skipped']}.", ""]
  else:
    box = ref["box"]
    out += [f"Hypervolume as a fraction of the box (1 − r_a) × r_c = {box:.4g}; mean ± sample std over seeds.", ""]
    rows = [(f, h["role"], len(h["seeds"]), _pm(h, 1 / box),
             "–" if h["ratio_to_all_baselines"] is None else f"{h['ratio_to_all_baselines']:.3g}")
            for f, h in hv["families"].items()]
    for name, key in ((ALL_BASELINES, "all_baselines"), (WITH_SAME_TOTAL, "with_same_total")):
      if hv.get(key):
        union = hv["all_baselines"]
        ratio = hv[key]["mean"] / union["mean"] if union and union["mean"] > 0 else None
        rows.append((name, "baseline", len(hv[key]["seeds"]), _pm(hv[key], 1 / box),
                     "–" if not ratio else f"{ratio:.3g}"))
    out += _table(("family", "role", "seeds", "hypervolume", "/ all baselines"), rows)
    for f, h in hv["families"].items():
      if h.get("vs_default"):
        v = h["vs_default"]
        paired = v["paired_ratio"]
        out += ["", f"{f} / {v['family']}: hypervolume ratio {v['ratio']:.4f}"
                + (f" (per seed: {paired['mean']:.4f} ± {paired['std'] or 0:.4f} over {len(h['seeds'])} seeds)"
                   if paired else "") + "."]
    out += [""]
    if hv["verdict"]:
      for v, framing in ((hv["verdict"], "same final training"), (hv.get("verdict_same_total"), "same total steps")):
        if v:
          d = v["paired_difference"]
          out += [f"**{framing.capitalize()}. {v['sentence']}**"
                  + (f" ({'; '.join(v['notes'])}.)" if v["notes"] else ""), "",
                  f"Paired per-seed difference ({v['family']} − {v['against']}, seeds {d['seeds']}): "
                  + _pm(d, 1 / box) + ".", ""]
    else:
      out += [hv["note"].capitalize() + ".", ""]
    for f, vs in (hv.get("other_verdicts") or {}).items():
      for v, framing in ((vs["final"], "same final training"), (vs["same_total"], "same total steps")):
        if v:
          out += [f"{framing.capitalize()}, {f}: {v['sentence']}", ""]
    if hv["best_baseline_family"]:
      best = hv["families"][hv["best_baseline_family"]]
      out += [f"Best single baseline family: {hv['best_baseline_family']} ({_pm(best, 1 / box)}).", ""]
  out += ["### Per budget", "",
          "Best baseline: the most accurate baseline config costing no more than the costliest seed of the "
          "searched network; better / worse when the difference exceeds max(std_s, std_b).", ""]
  rows = []
  for r in c["budgets"]:
    vs = r["vs_baseline"]
    b = vs["baseline"]
    rows.append((r["family"], f"{r['fraction']:g}" if r["fraction"] is not None else "?",
                 format_cost(m, r["budget_value"]), len(r["seeds"]), _pm(r["accuracy"], 100, ".2f") + " %",
                 f"{format_cost(m, r['cost']['mean'])} ({format_cost(m, r['cost']['min'])}–"
                 f"{format_cost(m, r['cost']['max'])})",
                 "–" if r["budget_use"]["mean"] is None else
                 f"{r['budget_use']['mean']:.2f} ({r['budget_use']['max']:.2f})", "; ".join(r["flags"]) or "ok",
                 "–" if b is None else f"{b['family']} {b['config']} ({format_cost(m, b['cost'])})",
                 "–" if b is None else _pm(b["accuracy"], 100, ".2f") + " %",
                 "–" if b is None else f"{100 * vs['difference']:+.2f}", vs["verdict"]))
  out += _table(("family", "budget", "limit", "seeds", "accuracy", "cost mean (min–max)", "cost / limit mean (max)",
                 "flags", "best baseline at ≤ cost", "its accuracy", "Δ points", "verdict"), rows)
  total_rows = [r for r in c["budgets"] if r.get("vs_same_total")]
  if total_rows:
    out += [f"Same total compute: against every baseline, the {SAME_TOTAL} family included (the networks of the "
            "front trained for search + fine-tuning steps).", ""]
    rows = []
    for r in total_rows:
      vs = r["vs_same_total"]
      b = vs["baseline"]
      rows.append((r["family"], f"{r['fraction']:g}" if r["fraction"] is not None else "?",
                   _pm(r["accuracy"], 100, ".2f") + " %",
                   "–" if b is None else f"{b['family']} {b['config']} ({format_cost(m, b['cost'])})",
                   "–" if b is None else _pm(b["accuracy"], 100, ".2f") + " %",
                   "–" if b is None else f"{100 * vs['difference']:+.2f}", vs["verdict"]))
    out += _table(("family", "budget", "accuracy", "best baseline at ≤ cost, either step count", "its accuracy",
                   "Δ points", "verdict"), rows)
  usage = c.get("nm_usage")
  if usage:
    out += [f"N:M sparsity in the searched networks: {100 * usage['any']:.1f} % of their weights on average "
            f"({', '.join(f'{k} {100 * v:.1f} %' for k, v in usage['per_pattern'].items()) or 'none'}); "
            f"{usage['networks_using']} of {usage['networks']} networks use it (shares of stored weights, "
            f"dense counts).", ""]
  out += ["Searched networks (per-channel bits shown as their mean, ~):", ""]
  out += _table(("family", "budget", "seed", "accuracy", "cost", "architecture") + (("N:M share",) if usage else ()),
                [(r["family"], f"{r['fraction']:g}" if r["fraction"] is not None else "?", n["seed"],
                  f"{100 * n['accuracy']:.2f} %", format_cost(m, n["cost"]), n["architecture"] or "–")
                 + ((_share_text(n.get("nm_share")),) if usage else ())
                 for r in c["budgets"] for n in r["networks"]])
  out += ["### Baselines", ""] + cheapest_markdown(c)
  out += _table(("family", "config", "cost", "accuracy", "seeds"),
                [(b["family"], b["config"], format_cost(m, b["cost"]), _pm(b["accuracy"], 100, ".2f") + " %",
                  len(b["seeds"])) for b in c["baselines"]])
  if c["excluded"]:
    out += ["Excluded (no usable cost here): "
            + "; ".join(f"`{e['dir']}`: {e['reason']}" for e in c["excluded"]), ""]
  out += [f"![{c['target']} / {m}]({c['plot']})", ""]
  return out


def report_markdown(report: dict) -> str:
  """The whole report as markdown."""
  p, jobs, t = report["protocol"], report["jobs"], report["time"]
  steps = p.get("steps") or {}
  out = [f"# Benchmark {p.get('name')} ({p.get('variant')})", "",
         f"Dataset {p.get('dataset')}, model {p.get('model')}. Steps: search {steps.get('search')}, fine-tuning "
         f"{steps.get('finetune')}, baseline {steps.get('baseline')}. Jobs: {jobs['done']} of {jobs['total']} "
         f"with a result, {jobs['failed']} failed, {jobs['missing']} missing"
         + (f", {jobs['unreadable']} unreadable" if jobs["unreadable"] else "")
         + f". Wall time summed over jobs: {t['sum_total'] / 3600:.2f} h.", "",
         report["training"]["text"], "", "Mean wall seconds per job:", ""]
  out += _table(("role", "family", "jobs", "shared supernet", "search", "fine-tuning", "total", "sum of totals",
                 "search: sum of wall", "search: sum of steps", "search steps per job"),
                [(r["role"], r["family"], r["jobs"], _seconds(r.get("supernet")), _seconds(r["search"]),
                  _seconds(r["finetune"]), _seconds(r["total"]), _seconds(r["sum_total"]),
                  _seconds(r.get("sum_search")),
                  f"{r['sum_search_steps']:,}" if r.get("sum_search_steps") is not None else "–",
                  f"{r['sum_search_steps'] / r['jobs']:,.0f}" if r.get("sum_search_steps") is not None else "–")
                 for r in t["families"]])
  if any(r.get("supernet") is not None for r in t["families"]):
    out += ["", "Shared supernet (`search.shared=true`): the wall time of training it, waiting for it or loading it; "
            "its steps count once, in the job that trained it. Search steps: supernet training plus each "
            "budget's architecture search.", ""]
  for c in report["comparisons"]:
    out += comparison_markdown(c)
  out += ["## Missing and failed jobs", ""]
  out += [f"- `{a['dir']}` ({a['role']}, {a['family']}): {a['status']}: {_cell(a['error'])}"
          for a in report["absent"]] or ["None."]
  return "\n".join(out) + "\n"
