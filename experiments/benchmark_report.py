"""Turn a benchmark folder into a report: hypervolumes over seeds, verdicts, per-budget tables, one plot each.

  python -m experiments.benchmark_report BENCH_DIR     # writes report.md, report.json, <target>-<metric>.png

A benchmark folder holds ``protocol.json`` (the manifest: name, steps, comparisons, jobs) and one folder per job
with ``result.json`` when the job finished, ``error.json`` when it failed, or nothing yet. The report is built
from the results that exist; the others are listed. Per comparison (target, metric):

- Reference point: r_a = 1/num_classes (chance), r_c = the reference network's cost (``budget.reference`` of
  the searched jobs; else the cost of the uniform W8A8 baseline at base width, the reference by definition).
- Hypervolume (nas.search.pareto.hypervolume_2d) per family and seed, mean ± sample std (ddof=1) over seeds; the
  "all baselines" front is, per seed, the union of every baseline family's points at that seed.
- Verdict of the default searched family against all baselines: margin = mean_s − mean_b,
  spread = sqrt(std_s² + std_b²); it wins if margin > 2·spread, ties if |margin| ≤ 2·spread, loses otherwise.
- Per budget: the searched accuracy against the most accurate baseline config costing no more than the
  costliest seed of the searched network; better / tie / worse by more than max(std_s, std_b). A searched network
  that is itself a uniform network is flagged there (``experiments.benchmark_uniform``); verdicts are unchanged.
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import pathlib
import sys
from typing import Sequence

import numpy as np

from experiments import benchmark_uniform as uniform
from experiments.benchmark_markdown import ALL_BASELINES, SAME_TOTAL, WITH_SAME_TOTAL, report_markdown
from experiments.benchmark_plot import plot_comparison
from experiments.pareto import _cost_of
from experiments.pareto_report import _write_json_atomic
from nas.search.pareto import hypervolume_2d

REFERENCE_CONFIG = ("uniform", "W8A8")  # (family, config) of the reference network: every layer W8A8, width 1
UNDER_USE = 0.9  # mean cost / budget below this is flagged: the derived network leaves budget unused
OVER_USE_TOL = 1e-9  # cost / budget above 1 + this is flagged; below it is float rounding of cost == budget


# ---------------------------------------------------------------------------------------------- reading


def read_jobs(bench_dir: pathlib.Path, manifest: dict) -> tuple[list[dict], list[dict]]:
  """The manifest's jobs with a readable result (each with ``result``), and the others with their status."""
  done, absent = [], []
  for job in manifest.get("jobs", []):
    folder = bench_dir / job["dir"]
    entry = {k: job.get(k) for k in ("dir", "role", "family", "config", "seed", "target", "metric", "budget")}
    if (folder / "result.json").exists():
      try:
        result = json.loads((folder / "result.json").read_text())
        if not isinstance(result, dict):
          raise ValueError("not a JSON object")
        done.append({**job, "result": result})
      except (OSError, ValueError) as e:
        absent.append({**entry, "status": "unreadable", "error": f"unreadable result.json: {e}"})
    elif (folder / "error.json").exists():
      try:
        error = str(json.loads((folder / "error.json").read_text()).get("error", ""))
      except (OSError, ValueError, AttributeError) as e:
        error = f"unreadable error.json: {e}"
      absent.append({**entry, "status": "failed", "error": error})
    else:
      absent.append({**entry, "status": "missing", "error": "no result.json yet (not run, running or killed)"})
  return done, absent


def cost_on(result: dict, target: str, metric: str) -> float:
  """The network's cost on one target and metric (experiments.pareto's reading of result.json); ValueError
  saying why when it has none."""
  try:
    value = _cost_of(result, target, metric)
  except KeyError as e:
    raise ValueError(str(e).strip("'\"")) from e
  if not math.isfinite(value):
    raise ValueError(f"no finite {metric!r} on {target!r}: {value!r}")
  return float(value)


def _bits_text(bits) -> str:
  if isinstance(bits, list):  # per-channel bit-widths: their mean, marked with ~
    return f"~{np.mean(bits):.1f}" if bits else "?"
  return str(bits)


def architecture_text(result: dict) -> str | None:
  """Per-layer weight bits, activation bits and widths, e.g. ``w 8/4/2 a 8/4/8 ch 16/32/10``."""
  layers = (result.get("architecture") or {}).get("layers") or []
  if not layers:
    return None
  return (" ".join(["w", "/".join(_bits_text(l.get("w_bits")) for l in layers),
                    "a", "/".join(_bits_text(l.get("a_bits")) for l in layers),
                    "ch", "/".join(str(l.get("cout")) for l in layers)]))


WEIGHTED_KINDS = ("conv", "dwconv", "dense", "linear")  # layer kinds with stored weights (N:M applies to them)


def nm_share(result: dict) -> dict[str, float] | None:
  """The share of the network's stored weights (dense count: kernel² · cin · cout, kernel² · cout for a
  depthwise layer) under each N:M pattern, e.g. {"2:4": 0.31}; {} when every layer is dense, None without
  weighted layers in its architecture. Shares weigh layers by size, so a few small layers at 2:4 count little."""
  layers = [l for l in (result.get("architecture") or {}).get("layers") or [] if l.get("kind") in WEIGHTED_KINDS]
  counts = [int(l.get("kernel", 1)) ** 2 * (1 if l["kind"] == "dwconv" else int(l["cin"])) * int(l["cout"])
            for l in layers]
  total = sum(counts)
  if not total:
    return None
  share = collections.Counter()
  for l, n in zip(layers, counts):
    if l.get("nm"):
      share[f"{l['nm'][0]}:{l['nm'][1]}"] += n / total
  return dict(sorted(share.items()))


def nm_usage(points: list[dict]) -> dict | None:
  """Mean N:M share of the searched networks' weights, per pattern and in all (``nm_share``); None when no
  network of the comparison, baseline or searched, has an N:M layer (nothing to say)."""
  if not any(p.get("nm_share") for p in points):
    return None
  searched = [p["nm_share"] or {} for p in points if p["role"] == "searched" and p.get("nm_share") is not None]
  if not searched:
    return None
  patterns = sorted({k for s in searched for k in s})
  return {"networks": len(searched), "any": float(np.mean([sum(s.values()) for s in searched])),
          "per_pattern": {k: float(np.mean([s.get(k, 0.0) for s in searched])) for k in patterns},
          "networks_using": int(sum(bool(s) for s in searched))}


def comparison_points(jobs: list[dict], target: str, metric: str) -> tuple[list[dict], list[dict]]:
  """The points of one comparison (its searched jobs and every baseline), and those excluded with why; a
  searched point's ``uniform`` says which uniform network it is, if it is one (``benchmark_uniform``)."""
  points, excluded = [], []
  temps = uniform.templates(jobs)
  fixed = uniform.fixed_bit_keys(temps)
  for job in jobs:
    searched = job.get("role") == "searched"
    if searched and (job.get("target"), job.get("metric")) != (target, metric):
      continue
    if not searched and job.get("role") != "baseline":
      continue
    result = job["result"]
    budget = result.get("budget") or {}
    own_budget = budget.get("metric") == metric
    try:
      accuracy = float(result["accuracy"])
      if not math.isfinite(accuracy):
        raise ValueError(f"non-finite accuracy {accuracy}")
      cost = cost_on(result, target, metric)
    except (KeyError, TypeError, ValueError) as e:
      excluded.append({"dir": job["dir"], "family": job.get("family"), "reason": str(e).strip("'\"")})
      continue
    points.append({
        "dir": job["dir"], "role": job["role"], "family": job.get("family"), "config": job.get("config"),
        "seed": job.get("seed", result.get("seed")), "accuracy": accuracy, "cost": cost,
        "num_classes": result.get("num_classes"),
        "fraction": job.get("budget", budget.get("fraction")) if searched else None,
        "budget_value": budget.get("value") if searched and own_budget else None,
        "reference": budget.get("reference") if searched and own_budget else None,
        "architecture": architecture_text(result) if searched else None, "nm_share": nm_share(result),
        **({"uniform": uniform.uniform_network((result.get("architecture") or {}).get("choices"), temps, fixed)}
           if searched else {})})
  return points, excluded


# ---------------------------------------------------------------------------------------------- statistics


def mean_std(values: Sequence[float]) -> dict:
  """Mean and sample standard deviation (ddof=1; None with fewer than two values)."""
  v = np.asarray(values, dtype=np.float64)
  return {"mean": float(v.mean()) if v.size else None, "std": float(v.std(ddof=1)) if v.size > 1 else None,
          "n": int(v.size)}


def reference_point(points: list[dict]) -> dict:
  """(r_a, r_c) of one comparison, each with where it came from; r_c None when nothing gives it yet."""
  classes = collections.Counter(p["num_classes"] for p in points if p["num_classes"])
  n = classes.most_common(1)[0][0] if classes else None
  ref = {"accuracy": 1.0 / n if n else 0.1,
         "accuracy_source": f"chance accuracy 1/{n}" if n else "chance accuracy, num_classes absent: 0.1"}
  refs = [float(p["reference"]) for p in points if p["role"] == "searched" and p["reference"] is not None]
  w8a8 = [p["cost"] for p in points if p["role"] == "baseline"
          and (p["family"], str(p["config"] or "").replace(" ", "").upper()) == REFERENCE_CONFIG]
  if refs:
    ref["cost"], ref["cost_source"] = max(refs), "budget.reference of the searched jobs (reference network cost)"
    if min(refs) < max(refs) * (1 - 1e-6):
      ref["cost_source"] += f"; they disagree ({min(refs):.6g}..{max(refs):.6g}), the largest is used"
  elif w8a8:
    ref["cost"] = float(np.mean(w8a8))
    ref["cost_source"] = "cost of the uniform W8A8 baseline at base width (the reference network); no searched result"
  else:
    ref["cost"], ref["cost_source"] = None, "unknown: no searched result and no uniform W8A8 baseline yet"
  ref["box"] = (1.0 - ref["accuracy"]) * ref["cost"] if ref["cost"] is not None else None
  return ref


def _hypervolume_over_seeds(points: list[dict], ref: dict) -> dict:
  by_seed = collections.defaultdict(list)
  for p in points:
    by_seed[p["seed"]].append(p)
  seeds = sorted(by_seed, key=str)
  per_seed = [hypervolume_2d([p["accuracy"] for p in by_seed[s]], [p["cost"] for p in by_seed[s]],
                             ref["accuracy"], ref["cost"]) for s in seeds]
  return {"seeds": seeds, "per_seed": per_seed, **mean_std(per_seed)}


def hypervolume_verdict(family: str, searched: dict, baselines: dict, box: float,
                        against: str = ALL_BASELINES) -> dict:
  """Whether the searched family's mean hypervolume beats the baselines' (``against`` names them) by more than
  twice the spread."""
  notes = [f"the std of {name} (one seed) is treated as 0" for name, hv in ((family, searched),
                                                                         (against, baselines))
           if hv["std"] is None]
  spread = math.hypot(searched["std"] or 0.0, baselines["std"] or 0.0)
  margin = searched["mean"] - baselines["mean"]
  outcome = "wins" if margin > 2 * spread else "tie" if abs(margin) <= 2 * spread else "loses"
  ratio = searched["mean"] / baselines["mean"] if baselines["mean"] > 0 else None
  b_seeds = dict(zip(baselines["seeds"], baselines["per_seed"]))
  diffs = [hv - b_seeds[s] for s, hv in zip(searched["seeds"], searched["per_seed"]) if s in b_seeds]
  paired = {**mean_std(diffs), "seeds": [s for s in searched["seeds"] if s in b_seeds]}
  pm = lambda hv: f"{hv['mean'] / box:.4g}" + (" (one seed)" if hv["std"] is None else f" ± {hv['std'] / box:.2g}")
  verb = {"wins": "wins against", "tie": "ties with", "loses": "loses to"}[outcome]
  sentence = (f"Verdict: {family} {verb} {against}: normalised "
              f"hypervolume {pm(searched)} vs {pm(baselines)}"
              + (f" (ratio {ratio:.3g})" if ratio is not None else "")
              + f"; margin {margin / box:+.3g}, 2 × spread {2 * spread / box:.3g}.")
  return {"family": family, "against": against, "outcome": outcome, "margin": margin, "spread": spread,
          "ratio": ratio,
          "paired_difference": paired, "notes": notes, "sentence": sentence}


def hypervolumes(points: list[dict], ref: dict, default: str) -> dict:
  """Per-family and all-baselines hypervolumes over seeds, the best baseline family and the verdict."""
  if ref["cost"] is None:
    return {"skipped": "no reference cost yet (no searched result, no W8A8 baseline): hypervolumes skipped"}
  families = {}
  for role in ("searched", "baseline"):
    for family in sorted({p["family"] for p in points if p["role"] == role}):
      families[family] = {"role": role, **_hypervolume_over_seeds([p for p in points if p["family"] == family
                                                                  and p["role"] == role], ref)}
  # Same final training: every baseline trained for the baseline steps. Same total compute: those plus the
  # SAME_TOTAL family (networks of the front retrained for search + fine-tuning steps), when the protocol has it.
  baseline_points = [p for p in points if p["role"] == "baseline" and p["family"] != SAME_TOTAL]
  union = _hypervolume_over_seeds(baseline_points, ref) if baseline_points else None
  with_total = [p for p in points if p["role"] == "baseline"]
  union_total = (_hypervolume_over_seeds(with_total, ref) if len(with_total) > len(baseline_points) else None)
  baseline_families = [f for f, hv in families.items() if hv["role"] == "baseline"]
  best = max(baseline_families, key=lambda f: families[f]["mean"]) if baseline_families else None
  for hv in families.values():
    hv["ratio_to_all_baselines"] = hv["mean"] / union["mean"] if union and union["mean"] > 0 else None
  # Another search variant against the default search (e.g. one shared supernet against one search per budget):
  # the ratio of means, and the per-seed ratios of the seeds both have.
  base = families.get(default)
  for family, hv in families.items():
    if hv["role"] != "searched" or family == default or base is None or not base["mean"] > 0:
      continue
    own = dict(zip(base["seeds"], base["per_seed"]))
    paired = [v / own[s] for s, v in zip(hv["seeds"], hv["per_seed"]) if s in own and own[s] > 0]
    hv["vs_default"] = {"family": default, "ratio": hv["mean"] / base["mean"],
                        "paired_ratio": mean_std(paired) if paired else None}
  out = {"families": families, "all_baselines": union, "with_same_total": union_total,
         "best_baseline_family": best, "verdict": None, "verdict_same_total": None}
  if default in families and union is not None:
    out["verdict"] = hypervolume_verdict(default, families[default], union, ref["box"])
  if default in families and union_total is not None:
    out["verdict_same_total"] = hypervolume_verdict(default, families[default], union_total, ref["box"],
                                                    WITH_SAME_TOTAL)
  else:
    out["note"] = f"no verdict: {'no ' + default + ' result' if default not in families else 'no baseline'} yet"
  # The same two verdicts for every other searched family with several seeds (e.g. the shared supernet).
  out["other_verdicts"] = {
      f: {"final": hypervolume_verdict(f, hv, union, ref["box"]) if union else None,
          "same_total": hypervolume_verdict(f, hv, union_total, ref["box"], WITH_SAME_TOTAL) if union_total else None}
      for f, hv in families.items() if hv["role"] == "searched" and f != default and len(hv["seeds"]) > 1}
  return out


def baseline_configs(points: list[dict]) -> list[dict]:
  """One row per baseline (family, config): mean cost, accuracy mean ± std over its seeds."""
  groups = collections.defaultdict(list)
  for p in points:
    if p["role"] == "baseline":
      groups[(p["family"], p["config"])].append(p)
  rows = [{"family": f, "config": c, "cost": float(np.mean([p["cost"] for p in ps])),
           "accuracy": mean_std([p["accuracy"] for p in ps]), "seeds": sorted((p["seed"] for p in ps), key=str)}
          for (f, c), ps in groups.items()]
  return sorted(rows, key=lambda r: (str(r["family"]), r["cost"]))


def compare_to_baseline(accuracy: dict, max_cost: float, configs: list[dict]) -> dict:
  """The most accurate baseline config costing at most ``max_cost``, and better / tie / worse against it."""
  eligible = [c for c in configs if c["cost"] <= max_cost]
  if not eligible:
    return {"baseline": None, "verdict": "no cheaper baseline"}
  best = max(eligible, key=lambda c: (c["accuracy"]["mean"], -c["cost"]))
  diff = accuracy["mean"] - best["accuracy"]["mean"]
  tol = max(accuracy["std"] or 0.0, best["accuracy"]["std"] or 0.0)
  verdict = "better" if diff > tol else "worse" if diff < -tol else "tie"
  return {"baseline": best, "difference": diff, "tolerance": tol, "verdict": verdict}


def budget_rows(points: list[dict], configs: list[dict], ref: dict) -> list[dict]:
  """One row per searched family and budget fraction: accuracy, cost, budget use and the baseline it beats
  (``vs_baseline``: baselines with the same final training; ``vs_same_total``: any baseline, the SAME_TOTAL
  family included, None when the protocol has none)."""
  final_configs = [c for c in configs if c["family"] != SAME_TOTAL]
  groups = collections.defaultdict(list)
  for p in points:
    if p["role"] == "searched":
      groups[(p["family"], p["fraction"])].append(p)
  rows = []
  for (family, fraction), ps in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
    costs = [p["cost"] for p in ps]
    limits = [p["budget_value"] if p["budget_value"] is not None
              else (fraction * ref["cost"] if fraction is not None and ref["cost"] is not None else None)
              for p in ps]
    use = [c / v for c, v in zip(costs, limits) if v]
    use_stats = {"mean": float(np.mean(use)), "max": float(max(use))} if use else {"mean": None, "max": None}
    flags = ([f"over budget (max {use_stats['max']:.3f} > 1)"] if use and use_stats["max"] > 1 + OVER_USE_TOL
             else []) + ([f"under-used (mean {use_stats['mean']:.2f} < {UNDER_USE})"]
                         if use and use_stats["mean"] < UNDER_USE else [])
    accuracy = mean_std([p["accuracy"] for p in ps])
    networks = [{"seed": p["seed"], "accuracy": p["accuracy"], "cost": p["cost"], "architecture": p["architecture"],
                 "nm_share": p.get("nm_share"), "uniform": p.get("uniform")}
                for p in sorted(ps, key=lambda p: str(p["seed"]))]
    vs = compare_to_baseline(accuracy, max(costs), final_configs)
    best = vs["baseline"]
    # The search found a uniform network: which one, whether a baseline, whether the one compared with.
    flags += uniform.row_flags(networks, f"{best['family']} {best['config']}" if best else None)
    rows.append({"family": family, "fraction": fraction,
                 "budget_value": float(np.mean([v for v in limits if v])) if any(limits) else None,
                 "seeds": sorted((p["seed"] for p in ps), key=str), "accuracy": accuracy,
                 "cost": {"mean": float(np.mean(costs)), "min": min(costs), "max": max(costs)},
                 "budget_use": use_stats, "flags": flags,
                 "vs_baseline": vs,
                 "vs_same_total": (compare_to_baseline(accuracy, max(costs), configs)
                                   if len(final_configs) < len(configs) else None),
                 "networks": networks})
  return rows


def build_comparison(spec: dict, jobs: list[dict], cheapest: dict | None = None) -> dict:
  """Everything the report says about one (target, metric) comparison; ``cheapest``: the manifest's cheapest
  precision per MAC on its target (``experiments.benchmark_cheapest``), when the protocol has one."""
  target, metric = spec["target"], spec["metric"]
  points, excluded = comparison_points(jobs, target, metric)
  ref = reference_point(points)
  configs = baseline_configs(points)
  return {"target": target, "metric": metric, "default": spec.get("default", "gumbel"), "reference": ref,
          "hypervolume": hypervolumes(points, ref, spec.get("default", "gumbel")),
          "budgets": budget_rows(points, configs, ref), "baselines": configs, "points": points,
          "nm_usage": nm_usage(points), **({"cheapest": cheapest} if cheapest else {}),
          "excluded": excluded, "plot": f"{target}-{metric}.png".replace("/", "_")}


def training_steps(steps: dict, same_total_jobs: int = 0) -> dict:
  """The step counts and both framings of the comparison: same total steps, and final training
  (``same_total_jobs``: how many baselines of the SAME_TOTAL family the protocol has)."""
  search, finetune, baseline = (steps.get(k) for k in ("search", "finetune", "baseline"))
  shared = "same_total" in steps and steps["same_total"] != (search or 0) + (finetune or 0)
  text = (f"Baselines train from scratch for {baseline} steps; a searched network gets {search} search steps "
          + ("(one search per budget; a shared supernet's steps per job are in the table below) " if shared else "")
          + f"then {finetune} fine-tuning steps, with the same recipe.")
  if None in (search, finetune, baseline):
    return {**steps, "same_total": None, "final_training_equal": None,
            "text": text + " (step counts incomplete in protocol.json: no framing computed)"}
  total = search + finetune
  same_total = total == baseline
  final_equal = finetune == baseline
  text += (f" Same total steps" + (", one search per budget" if shared else "") + f": {search} + {finetune} = {total} "
           + ("= " if same_total else f"{'>' if total > baseline else '<'} ") + f"{baseline} baseline steps"
           + (" (equal)." if same_total else f" ({abs(total - baseline)} {'more' if total > baseline else 'fewer'} "
                                              "for the searched network).")
           + f" Final training: {finetune} fine-tuning steps vs {baseline} baseline steps"
           + (" (equal)." if final_equal else f" ({abs(finetune - baseline)} "
                                               f"{'more' if finetune > baseline else 'fewer'} for the searched network)."))
  if same_total_jobs:
    matched = steps.get("same_total", total)
    text += (f" The {same_total_jobs} baseline jobs of the '{SAME_TOTAL}' family train for {matched} steps"
             + (": the same total compute as a searched network." if matched == total else
                f" (the protocol's steps.same_total): fine-tuning plus the search steps per network of the "
                f"default search, which shares its supernet over budgets; the table below gives each family's "
                f"search steps per job."))
  return {**steps, "same_total": same_total, "final_training_equal": final_equal, "text": text}


def search_steps(result: dict, default: int | None) -> int | None:
  """Search steps a job ran: its shared supernet's training where it trained it, plus its architecture search
  (``search.steps`` in result.json, ``search.shared``), else the protocol's search steps."""
  steps = (result.get("search") or {}).get("steps")
  return int(steps["supernet"] + steps["arch"]) if steps else default


def time_summary(jobs: list[dict], protocol_steps: dict | None = None) -> dict:
  """Per family: mean wall seconds per job of supernet (shared mode) / search / finetune / total, and the sums
  over its jobs of total wall time, search wall time (supernet + search) and search steps."""
  by_family = collections.defaultdict(list)
  for job in jobs:
    by_family[(job.get("role"), job.get("family"))].append(job["result"])
  default = (protocol_steps or {}).get("search")
  families = []
  for (role, family), results in sorted(by_family.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
    times = [r.get("time_s") or {} for r in results]
    row = {"role": role, "family": family, "jobs": len(times)}
    for part in ("supernet", "search", "finetune", "total"):
      values = [t[part] for t in times if t.get(part) is not None]
      row[part] = float(np.mean(values)) if values else None
    row["sum_total"] = float(sum(t.get("total") or 0.0 for t in times))
    if role == "searched":
      row["sum_search"] = float(sum((t.get("supernet") or 0.0) + (t.get("search") or 0.0) for t in times))
      steps = [search_steps(r, default) for r in results]
      row["sum_search_steps"] = int(sum(steps)) if all(s is not None for s in steps) else None
    families.append(row)
  return {"families": families, "sum_total": float(sum(r["sum_total"] for r in families))}


def build_report(bench_dir) -> dict:
  """Read ``protocol.json`` and every job's ``result.json`` under ``bench_dir``; compute the report.

  Args:
    bench_dir: the benchmark folder.

  Returns:
    A JSON-serialisable dict: protocol, job counts, training steps, times, one entry per comparison and the
    jobs without a result (missing, failed with error.json's message, or unreadable).

  References:
    Zitzler & Thiele, PPSN 1998 (hypervolume indicator); Ishibuchi et al., "How to specify a reference point in hypervolume calculation", 2017.
  """
  bench = pathlib.Path(bench_dir)
  manifest_path = bench / "protocol.json"
  if not manifest_path.exists():
    raise FileNotFoundError(f"no protocol.json in {bench}.")
  manifest = json.loads(manifest_path.read_text())
  jobs, absent = read_jobs(bench, manifest)
  status = collections.Counter(a["status"] for a in absent)
  cheapest = {(e["target"], e["metric"]): e for e in manifest.get("cheapest") or []}
  return {
      "bench_dir": str(bench),
      "protocol": {k: manifest.get(k) for k in ("name", "variant", "dataset", "model", "steps")},
      "jobs": {"total": len(manifest.get("jobs", [])), "done": len(jobs), "failed": status["failed"],
               "missing": status["missing"], "unreadable": status["unreadable"]},
      "training": training_steps(manifest.get("steps") or {},
                                 sum(j.get("family") == SAME_TOTAL for j in manifest.get("jobs", []))),
      "time": time_summary(jobs, manifest.get("steps") or {}),
      "comparisons": [build_comparison(spec, jobs, cheapest.get((spec["target"], spec["metric"])))
                      for spec in manifest.get("comparisons", [])],
      "absent": absent,
  }


def write_report(bench_dir, report: dict) -> list[pathlib.Path]:
  """Write report.md, report.json (atomically) and one ``<target>-<metric>.png`` per comparison.

  Args:
    bench_dir: the benchmark folder (the files go there).
    report: what ``build_report`` returned.

  Returns:
    The paths written: report.md, report.json, then the plots.
  """
  bench = pathlib.Path(bench_dir)
  plots = []
  for c in report["comparisons"]:
    plot_comparison(c, bench / c["plot"])
    plots.append(bench / c["plot"])
  (bench / "report.md").write_text(report_markdown(report), encoding="utf-8")
  _write_json_atomic(bench / "report.json", report)
  return [bench / "report.md", bench / "report.json", *plots]


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.benchmark_report",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("bench_dir", metavar="BENCH_DIR", help="folder holding protocol.json and the job folders")
  args = parser.parse_args(argv)
  try:
    report = build_report(args.bench_dir)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  paths = write_report(args.bench_dir, report)
  print(paths[0])
  return 0


if __name__ == "__main__":
  sys.exit(main())
