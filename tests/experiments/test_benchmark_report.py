"""The benchmark report on hand-built benchmark folders; every expected number is worked out by hand below."""
import json
import math
import pathlib

import pytest

from experiments import benchmark_report as report_app
from experiments.benchmark_markdown import report_markdown

REF = 10.0  # r_c: the reference network's cost, the same on every target and metric of these benches
# r_a = 1 / num_classes = 1 / 10 = 0.1 throughout.
SEARCHED_LAYERS = [{"name": "convs.0", "cin": 1, "cout": 16, "w_bits": 8, "a_bits": 8},
                   {"name": "convs.1", "cin": 16, "cout": 24, "w_bits": 4, "a_bits": 4},
                   {"name": "fc", "cin": 24, "cout": 10, "w_bits": 8, "a_bits": 8}]
PER_CHANNEL_LAYERS = [{"name": "convs.0", "cin": 1, "cout": 16, "w_bits": 8, "a_bits": 8},
                      {"name": "convs.1", "cin": 16, "cout": 4, "w_bits": [4, 4, 2, 2], "a_bits": 4},
                      {"name": "fc", "cin": 4, "cout": 10, "w_bits": 8, "a_bits": 8}]


def _result(acc, cost, seed, budget=None, layers=SEARCHED_LAYERS, failing_target=None):
  """A result.json whose cost is ``cost`` on every target and metric (and as weight_bytes)."""
  costs = {t: {"error": "layer kind unsupported"} if t == failing_target else {"latency_s": cost, "energy_j": cost}
           for t in ("riscv", "bitfusion")}
  return {"kind": "searched" if budget else "baseline:uniform", "label": "x", "method": "gumbel",
          "accuracy": acc, "num_classes": 10, "seed": seed, "cost": costs, "weight_bytes": cost, "budget": budget,
          "time_s": {"search": 10.0, "finetune": 20.0, "total": 30.0} if budget else {"finetune": 40.0, "total": 40.0},
          "architecture": {"layers": layers}}


def searched(family, target, metric, fraction, seed, acc, cost, layers=SEARCHED_LAYERS):
  job = {"dir": f"search/{family}-{target}-{metric}-b{fraction}-s{seed}", "role": "searched", "family": family,
         "seed": seed, "target": target, "metric": metric, "budget": fraction}
  budget = {"metric": metric, "fraction": fraction, "value": fraction * REF, "reference": REF}
  return job, _result(acc, cost, seed, budget, layers)


def baseline(family, config, seed, acc, cost, failing_target=None):
  job = {"dir": f"baseline/{family}-{config.replace(' ', '_')}-s{seed}", "role": "baseline", "family": family,
         "config": config, "seed": seed}
  return job, _result(acc, cost, seed, failing_target=failing_target)


# Baselines, the same cost c on every target (latency = energy = weight bytes = c):
#   uniform W8A8 (c 10, acc 0.90): sits on r_c, adds no hypervolume.
#   uniform W4A4 (c 4, acc 0.80 / 0.82 / 0.78 at seeds 0 / 1 / 2): mean 0.80, sample std 0.02.
#   uniform-pruned "W4A4 ×0.5" (c 2, acc 0.70 every seed).
#   random "random #0" (c 6, acc 0.75): dominated by W4A4; its seed-2 cost on bitfusion failed.
W4A4_ACC = {0: 0.80, 1: 0.82, 2: 0.78}
BASELINES = [b for s in (0, 1, 2) for b in (
    baseline("uniform", "W8A8", s, 0.90, 10.0), baseline("uniform", "W4A4", s, W4A4_ACC[s], 4.0),
    baseline("uniform-pruned", "W4A4 ×0.5", s, 0.70, 2.0),
    baseline("random", "random #0", s, 0.75, 6.0, failing_target="bitfusion" if s == 2 else None))]
# All baselines at seed s: front (2, 0.70), (4, a_s); (6, 0.75) is dominated and (10, 0.90) is on r_c:
#   HV_s = (0.70 - 0.1)(10 - 2) + (a_s - 0.70)(10 - 4) = 4.8 + 6 (a_s - 0.70) = 5.40 / 5.52 / 5.28.
#   mean 5.40; deviations 0, +0.12, -0.12: sample std = sqrt((0.0144 + 0.0144) / 2) = 0.12.
HV_ALL_BASELINES = [5.40, 5.52, 5.28]
# Single families: uniform (a_s - 0.1)(10 - 4) = 4.20 / 4.32 / 4.08; uniform-pruned (0.7 - 0.1)(10 - 2) = 4.8;
# random (0.75 - 0.1)(10 - 6) = 2.6. Best single baseline family: uniform-pruned.

# riscv / latency_s, gumbel, budgets 0.2 (limit 2) and 0.5 (limit 5):
#   0.2: costs 1.8 / 1.9 / 2.0 (use 0.90 / 0.95 / 1.00), acc 0.72 / 0.74 / 0.76 (mean 0.74, std 0.02)
#   0.5: costs 3.5 / 4.0 / 4.5 (use 0.70 / 0.80 / 0.90: mean 0.80 < 0.9, flagged), acc 0.85 / 0.86 / 0.87
#   HV seed 0: (0.72 - 0.1)(10 - 1.8) + (0.85 - 0.72)(10 - 3.5) = 5.084 + 0.845 = 5.929
#   HV seed 1: (0.74 - 0.1)(10 - 1.9) + (0.86 - 0.74)(10 - 4.0) = 5.184 + 0.720 = 5.904
#   HV seed 2: (0.76 - 0.1)(10 - 2.0) + (0.87 - 0.76)(10 - 4.5) = 5.280 + 0.605 = 5.885
#   mean 17.718 / 3 = 5.906; deviations +0.023, -0.002, -0.021: var = (0.000529 + 0.000004 + 0.000441) / 2
#   = 0.000487, std = 0.0220681.
#   Verdict: margin 5.906 - 5.40 = 0.506; spread sqrt(0.000487 + 0.0144) = 0.122012; 0.506 > 0.244: wins.
#   Paired differences 0.529, 0.384, 0.605: mean 0.506, var (0.023² + 0.122² + 0.099²) / 2 = 0.012607.
GUMBEL_RISCV = [searched("gumbel", "riscv", "latency_s", f, s, acc, cost)
                for f, costs, accs in ((0.2, (1.8, 1.9, 2.0), (0.72, 0.74, 0.76)),
                                       (0.5, (3.5, 4.0, 4.5), (0.85, 0.86, 0.87)))
                for s, cost, acc in zip((0, 1, 2), costs, accs)]
HV_GUMBEL = [5.929, 5.904, 5.885]
# sdq, one seed: 0.2 at cost 2.1 (use 1.05: over budget), acc 0.60; 0.5 at cost 4.0 (use 0.8), acc 0.81.
#   HV = (0.60 - 0.1)(10 - 2.1) + (0.81 - 0.60)(10 - 4.0) = 3.95 + 1.26 = 5.21, no std.
SDQ_RISCV = [searched("sdq", "riscv", "latency_s", 0.2, 0, 0.60, 2.1),
             searched("sdq", "riscv", "latency_s", 0.5, 0, 0.81, 4.0)]
# gumbel-per-channel, one job at budget 0.1 (limit 1): cost 0.9 (use 0.9, not flagged), no baseline that cheap.
PER_CHANNEL_RISCV = [searched("gumbel-per-channel", "riscv", "latency_s", 0.1, 0, 0.60, 0.9, PER_CHANNEL_LAYERS)]

# bitfusion / energy_j, gumbel at 0.5, seeds 0 and 1: (4, 0.95), (4, 0.99).
#   HV = (0.95 - 0.1)(10 - 4) = 5.10 and (0.99 - 0.1)(10 - 4) = 5.34: mean 5.22, std 0.24 / sqrt(2) = 0.169706.
#   Baselines as on riscv (random seed 2 is excluded, but was dominated): 5.40 ± 0.12.
#   margin -0.18; spread sqrt(0.0288 + 0.0144) = 0.207846; |-0.18| <= 0.4157: tie.
GUMBEL_BITFUSION = [searched("gumbel", "bitfusion", "energy_j", 0.5, 0, 0.95, 4.0),
                    searched("gumbel", "bitfusion", "energy_j", 0.5, 1, 0.99, 4.0)]
# riscv / weight_bytes, gumbel at 0.5, seeds 0-2: (5, 0.5) each: HV (0.5 - 0.1)(10 - 5) = 2.0, std 0.
#   margin 2.0 - 5.4 = -3.4; spread 0.12; -3.4 < -0.24: loses.
GUMBEL_WEIGHTS = [searched("gumbel", "riscv", "weight_bytes", 0.5, s, 0.50, 5.0) for s in (0, 1, 2)]

MISSING = {"dir": "search/gumbel-riscv-latency_s-b0.8-s0", "role": "searched", "family": "gumbel", "seed": 0,
           "target": "riscv", "metric": "latency_s", "budget": 0.8}
FAILED = {"dir": "search/sdq-riscv-latency_s-b0.8-s0", "role": "searched", "family": "sdq", "seed": 0,
          "target": "riscv", "metric": "latency_s", "budget": 0.8}
COMPARISONS = [{"target": "riscv", "metric": "latency_s", "default": "gumbel"},
               {"target": "bitfusion", "metric": "energy_j", "default": "gumbel"},
               {"target": "riscv", "metric": "weight_bytes", "default": "gumbel"}]


def make_bench(root: pathlib.Path, jobs, comparisons=COMPARISONS, extra_jobs=(MISSING, FAILED)) -> pathlib.Path:
  """protocol.json plus one folder per job; the missing job gets no folder, the failed one an error.json."""
  root.mkdir(parents=True)
  manifest = {"name": "tiny", "variant": "full", "dataset": "fashion_mnist", "model": "fmnist_cnn",
              "steps": {"search": 1000, "finetune": 1500, "baseline": 2500}, "comparisons": comparisons,
              "jobs": [job for job, _ in jobs] + list(extra_jobs)}
  (root / "protocol.json").write_text(json.dumps(manifest))
  for job, result in jobs:
    (root / job["dir"]).mkdir(parents=True)
    (root / job["dir"] / "result.json").write_text(json.dumps(result))
  if FAILED in extra_jobs:
    (root / FAILED["dir"]).mkdir(parents=True)
    (root / FAILED["dir"] / "error.json").write_text(json.dumps({"error": "CUDA out of memory",
                                                                 "type": "RuntimeError"}))
  return root


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
  jobs = BASELINES + GUMBEL_RISCV + SDQ_RISCV + PER_CHANNEL_RISCV + GUMBEL_BITFUSION + GUMBEL_WEIGHTS
  root = make_bench(tmp_path_factory.mktemp("bench") / "tiny", jobs)
  return root, report_app.build_report(root)


def _comparison(report, target, metric):
  return next(c for c in report["comparisons"] if (c["target"], c["metric"]) == (target, metric))


def test_reference_point_and_hypervolumes_per_seed(bench):
  _, report = bench
  c = _comparison(report, "riscv", "latency_s")
  assert c["reference"]["accuracy"] == pytest.approx(0.1)
  assert c["reference"]["cost"] == pytest.approx(REF)
  hv = c["hypervolume"]
  gumbel = hv["families"]["gumbel"]
  assert gumbel["seeds"] == [0, 1, 2]
  assert gumbel["per_seed"] == pytest.approx(HV_GUMBEL)
  assert gumbel["mean"] == pytest.approx(5.906)
  assert gumbel["std"] == pytest.approx(math.sqrt(0.000487))
  assert hv["families"]["sdq"]["per_seed"] == pytest.approx([5.21])
  assert hv["families"]["sdq"]["std"] is None
  assert hv["families"]["uniform"]["per_seed"] == pytest.approx([4.20, 4.32, 4.08])
  assert hv["families"]["uniform-pruned"]["mean"] == pytest.approx(4.8)
  assert hv["families"]["random"]["mean"] == pytest.approx(2.6)
  # The all-baselines front is the per-seed union: larger than any single family's.
  assert hv["all_baselines"]["per_seed"] == pytest.approx(HV_ALL_BASELINES)
  assert hv["all_baselines"]["mean"] == pytest.approx(5.40)
  assert hv["all_baselines"]["std"] == pytest.approx(0.12)
  assert hv["best_baseline_family"] == "uniform-pruned"
  assert gumbel["ratio_to_all_baselines"] == pytest.approx(5.906 / 5.40)


def test_hypervolume_verdicts_win_tie_lose(bench):
  _, report = bench
  wins = _comparison(report, "riscv", "latency_s")["hypervolume"]["verdict"]
  assert wins["outcome"] == "wins"
  assert wins["margin"] == pytest.approx(0.506)
  assert wins["spread"] == pytest.approx(math.sqrt(0.000487 + 0.0144))
  assert wins["ratio"] == pytest.approx(5.906 / 5.40)
  assert wins["paired_difference"]["seeds"] == [0, 1, 2]
  assert wins["paired_difference"]["mean"] == pytest.approx(0.506)
  assert wins["paired_difference"]["std"] == pytest.approx(math.sqrt(0.012607))
  assert wins["notes"] == []
  assert wins["sentence"].startswith("Verdict: gumbel wins against all baselines")

  tie = _comparison(report, "bitfusion", "energy_j")["hypervolume"]
  assert tie["families"]["gumbel"]["per_seed"] == pytest.approx([5.10, 5.34])
  assert tie["all_baselines"]["per_seed"] == pytest.approx(HV_ALL_BASELINES)
  assert tie["verdict"]["outcome"] == "tie"
  assert tie["verdict"]["margin"] == pytest.approx(-0.18)
  assert tie["verdict"]["spread"] == pytest.approx(math.sqrt(0.0288 + 0.0144))
  assert tie["verdict"]["paired_difference"]["seeds"] == [0, 1]  # seed 2 has no gumbel result here

  loses = _comparison(report, "riscv", "weight_bytes")["hypervolume"]["verdict"]
  assert loses["outcome"] == "loses"
  assert loses["margin"] == pytest.approx(2.0 - 5.40)
  assert loses["ratio"] == pytest.approx(2.0 / 5.40)


def test_per_budget_best_baseline_at_no_more_cost(bench):
  _, report = bench
  rows = {(r["family"], r["fraction"]): r for r in _comparison(report, "riscv", "latency_s")["budgets"]}
  # gumbel 0.2: max cost 2.0; only uniform-pruned (2, 0.70 ± 0) qualifies. 0.74 - 0.70 = 0.04 > tol 0.02: better.
  r = rows[("gumbel", 0.2)]
  assert r["accuracy"]["mean"] == pytest.approx(0.74) and r["accuracy"]["std"] == pytest.approx(0.02)
  assert (r["cost"]["min"], r["cost"]["max"]) == (1.8, 2.0) and r["cost"]["mean"] == pytest.approx(1.9)
  assert r["budget_value"] == pytest.approx(2.0)
  assert r["budget_use"]["mean"] == pytest.approx(0.95) and r["budget_use"]["max"] == pytest.approx(1.0)
  assert r["flags"] == []
  vs = r["vs_baseline"]
  assert (vs["baseline"]["family"], vs["baseline"]["config"]) == ("uniform-pruned", "W4A4 ×0.5")
  assert vs["difference"] == pytest.approx(0.04) and vs["tolerance"] == pytest.approx(0.02)
  assert vs["verdict"] == "better"
  # gumbel 0.5: max cost 4.5. Qualify: pruned (2, 0.70: cheaper but worse) and W4A4 (4, 0.80 ± 0.02); random
  # (6) and W8A8 (10, 0.90: better but costlier) do not. 0.86 - 0.80 = 0.06 > max(0.01, 0.02): better.
  r = rows[("gumbel", 0.5)]
  assert r["vs_baseline"]["baseline"]["config"] == "W4A4"
  assert r["vs_baseline"]["difference"] == pytest.approx(0.06)
  assert r["vs_baseline"]["verdict"] == "better"
  assert r["budget_use"]["mean"] == pytest.approx(0.8) and r["budget_use"]["max"] == pytest.approx(0.9)
  assert [f.split(" (")[0] for f in r["flags"]] == ["under-used"]  # mean use 0.8 < 0.9
  # sdq 0.5, one seed: 0.81 - 0.80 = 0.01, tol max(none -> 0, 0.02) = 0.02: tie.
  r = rows[("sdq", 0.5)]
  assert r["vs_baseline"]["baseline"]["config"] == "W4A4"
  assert r["vs_baseline"]["tolerance"] == pytest.approx(0.02)
  assert r["vs_baseline"]["verdict"] == "tie"
  # sdq 0.2: cost 2.1 over its limit 2 (use 1.05); pruned 0.70 ± 0 qualifies: 0.60 - 0.70 = -0.10: worse.
  r = rows[("sdq", 0.2)]
  assert r["budget_use"]["max"] == pytest.approx(1.05)
  assert [f.split(" (")[0] for f in r["flags"]] == ["over budget"]
  assert r["vs_baseline"]["difference"] == pytest.approx(-0.10)
  assert r["vs_baseline"]["verdict"] == "worse"
  # gumbel-per-channel 0.1: cost 0.9, below every baseline; use 0.9 exactly is not flagged.
  r = rows[("gumbel-per-channel", 0.1)]
  assert r["vs_baseline"] == {"baseline": None, "verdict": "no cheaper baseline"}
  assert r["flags"] == []
  assert r["networks"][0]["architecture"] == "w 8/~3.0/8 a 8/4/8 ch 16/4/10"  # (4 + 4 + 2 + 2) / 4 = 3
  assert rows[("gumbel", 0.2)]["networks"][0]["architecture"] == "w 8/4/8 a 8/4/8 ch 16/24/10"


def test_baseline_table_errors_missing_and_failed_jobs(bench):
  _, report = bench
  riscv = _comparison(report, "riscv", "latency_s")
  w4a4 = next(b for b in riscv["baselines"] if b["config"] == "W4A4")
  assert (w4a4["family"], w4a4["cost"], w4a4["seeds"]) == ("uniform", 4.0, [0, 1, 2])
  assert w4a4["accuracy"]["mean"] == pytest.approx(0.80) and w4a4["accuracy"]["std"] == pytest.approx(0.02)
  assert len(riscv["baselines"]) == 4 and riscv["excluded"] == []
  # random seed 2 has no cost on bitfusion: excluded there, listed with the reason, counted on riscv.
  bitfusion = _comparison(report, "bitfusion", "energy_j")
  assert [(e["dir"], e["reason"]) for e in bitfusion["excluded"]] == [
      ("baseline/random-random_#0-s2", "cost on 'bitfusion' failed: layer kind unsupported")]
  assert bitfusion["hypervolume"]["families"]["random"]["seeds"] == [0, 1]
  # 12 baselines; 6 + 2 + 1 + 2 + 3 = 14 searched results; 1 missing and 1 failed job.
  assert report["jobs"] == {"total": 12 + 14 + 2, "done": 12 + 14, "failed": 1, "missing": 1, "unreadable": 0}
  absent = {a["dir"]: (a["status"], a["error"]) for a in report["absent"]}
  assert absent[FAILED["dir"]] == ("failed", "CUDA out of memory")
  assert absent[MISSING["dir"]][0] == "missing"


def test_times_and_training_steps(bench):
  _, report = bench
  times = {(r["role"], r["family"]): r for r in report["time"]["families"]}
  # gumbel: 6 riscv-latency + 2 bitfusion-energy + 3 weight-bytes jobs.
  assert (times[("searched", "gumbel")]["jobs"], times[("searched", "gumbel")]["total"]) == (11, 30.0)
  assert times[("searched", "gumbel")]["sum_total"] == 11 * 30.0
  assert times[("baseline", "uniform")]["search"] is None and times[("baseline", "uniform")]["finetune"] == 40.0
  assert report["time"]["sum_total"] == 14 * 30.0 + 12 * 40.0  # 14 searched jobs, 12 baselines
  training = report["training"]
  # 1000 + 1500 = 2500 = baseline steps; fine-tuning 1500 is 1000 fewer than the baselines' 2500.
  assert training["same_total"] is True and training["final_training_equal"] is False
  assert "Baselines train from scratch for 2500 steps; a searched network gets 1000 search steps then 1500 " \
         "fine-tuning steps, with the same recipe." in training["text"]
  assert "1000 + 1500 = 2500 = 2500 baseline steps (equal)" in training["text"]
  assert "1500 fine-tuning steps vs 2500 baseline steps (1000 fewer" in training["text"]


def test_write_report_and_cli(bench, capsys):
  root, report = bench
  paths = report_app.write_report(root, report)
  assert [p.name for p in paths] == ["report.md", "report.json", "riscv-latency_s.png", "bitfusion-energy_j.png",
                                     "riscv-weight_bytes.png"]
  for png in paths[2:]:
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
  assert json.loads((root / "report.json").read_text()) == json.loads(json.dumps(report))
  md = (root / "report.md").read_text()
  for c in report["comparisons"]:
    assert c["hypervolume"]["verdict"]["sentence"] in md
  assert "Verdict: gumbel ties with all baselines" in md and "Verdict: gumbel loses to all baselines" in md
  assert "![riscv / latency_s](riscv-latency_s.png)" in md
  assert f"`{FAILED['dir']}` (searched, sdq): failed: CUDA out of memory" in md
  assert f"`{MISSING['dir']}`" in md
  assert "W4A4 ×0.5" in md and "no cheaper baseline" in md

  assert report_app.main([str(root)]) == 0
  assert capsys.readouterr().out.strip() == str(root / "report.md")
  assert report_app.main([str(root / "nowhere")]) == 2


def test_reference_falls_back_to_w8a8_baseline_then_skips(tmp_path):
  # No searched result: r_c is the W8A8 baseline's mean cost (10 at seeds 0 and 1), HV still computed.
  only_baselines = [b for b in BASELINES if b[0]["seed"] in (0, 1)]
  root = make_bench(tmp_path / "a", only_baselines, COMPARISONS[:1], extra_jobs=(MISSING,))
  c = report_app.build_report(root)["comparisons"][0]
  assert c["reference"]["cost"] == pytest.approx(REF) and "W8A8" in c["reference"]["cost_source"]
  assert c["hypervolume"]["all_baselines"]["per_seed"] == pytest.approx(HV_ALL_BASELINES[:2])
  assert c["hypervolume"]["verdict"] is None and "no gumbel result" in c["hypervolume"]["note"]
  # Nothing gives r_c: hypervolumes are skipped with a note; the report is still written.
  no_reference = [b for b in only_baselines if b[0]["config"] != "W8A8"]
  truncated = {"dir": "baseline/truncated", "role": "baseline", "family": "uniform", "config": "W2A2", "seed": 0}
  root = make_bench(tmp_path / "b", no_reference, COMPARISONS[:1], extra_jobs=(truncated,))
  (root / truncated["dir"]).mkdir()
  (root / truncated["dir"] / "result.json").write_text('{"accuracy": 0.')  # a job killed while writing
  report = report_app.build_report(root)
  assert [(a["dir"], a["status"]) for a in report["absent"]] == [(truncated["dir"], "unreadable")]
  c = report["comparisons"][0]
  assert c["reference"]["cost"] is None and "skipped" in c["hypervolume"]
  assert len(c["baselines"]) == 3
  report_app.write_report(root, report)
  assert "hypervolumes skipped" in (root / "report.md").read_text()


def test_same_total_steps_family_gets_its_own_verdict(tmp_path):
  # Seeds 0 and 1, riscv latency, every cost the same on all targets:
  #   uniform-pruned "W4A4 ×0.5" (2, 0.70) both seeds: HV (0.70 - 0.1)(10 - 2) = 4.8, std 0.
  #   same total steps "W4A4 ×0.5" (2, 0.74) / (2, 0.76): with them the baselines' HV is 0.64·8 = 5.12 /
  #   0.66·8 = 5.28: mean 5.20, std 0.16 / sqrt(2) = 0.113137.
  #   gumbel at 0.2: (2, 0.78) / (2, 0.81): HV 5.44 / 5.68, mean 5.56, std 0.24 / sqrt(2) = 0.169706.
  #   Same final training: margin 0.76 > 2 · sqrt(0.0288 + 0) = 0.3394: wins.
  #   Same total steps: margin 0.36 <= 2 · sqrt(0.0288 + 0.0128) = 0.4079: tie.
  #   Per budget: accuracy 0.795 ± 0.021213; against the pruned baseline (0.70) +0.095, better; against the
  #   same-total one (0.75 ± 0.014142) +0.045 > 0.021213, better.
  jobs = [b for s, a in ((0, 0.74), (1, 0.76)) for b in (
      baseline("uniform-pruned", "W4A4 ×0.5", s, 0.70, 2.0), baseline(report_app.SAME_TOTAL, "W4A4 ×0.5", s, a, 2.0))]
  jobs += [searched("gumbel", "riscv", "latency_s", 0.2, s, a, 2.0) for s, a in ((0, 0.78), (1, 0.81))]
  root = make_bench(tmp_path / "b", jobs, comparisons=COMPARISONS[:1], extra_jobs=())
  report = report_app.build_report(root)
  hv = report["comparisons"][0]["hypervolume"]
  assert hv["all_baselines"]["per_seed"] == pytest.approx([4.8, 4.8])
  assert hv["with_same_total"]["per_seed"] == pytest.approx([5.12, 5.28])
  assert hv["verdict"]["outcome"] == "wins"
  assert hv["verdict"]["margin"] == pytest.approx(0.76)
  same = hv["verdict_same_total"]
  assert (same["outcome"], same["against"]) == ("tie", report_app.WITH_SAME_TOTAL)
  assert same["margin"] == pytest.approx(0.36)
  assert same["spread"] == pytest.approx(math.sqrt(0.0416))
  row = report["comparisons"][0]["budgets"][0]
  assert row["vs_baseline"]["baseline"]["family"] == "uniform-pruned"
  assert row["vs_baseline"]["difference"] == pytest.approx(0.095)
  assert row["vs_same_total"]["baseline"]["family"] == report_app.SAME_TOTAL
  assert row["vs_same_total"]["difference"] == pytest.approx(0.045)
  assert row["vs_same_total"]["verdict"] == "better"
  assert "2 baseline jobs of the 'same total steps' family train for 2500 steps: the same total compute" in \
      report["training"]["text"]
  # A protocol whose default search shares its steps over budgets sets steps.same_total itself: the text says so.
  manifest = json.loads((root / "protocol.json").read_text())
  manifest["steps"]["same_total"] = 1800
  (root / "protocol.json").write_text(json.dumps(manifest))
  text = report_app.build_report(root)["training"]["text"]
  assert "2 baseline jobs of the 'same total steps' family train for 1800 steps (the protocol's " \
         "steps.same_total)" in text and "search steps per network of the default search" in text
  assert "gets 1000 search steps (one search per budget; a shared supernet's steps per job are in the table " \
         "below) then 1500 fine-tuning steps" in text and "Same total steps, one search per budget: 1000 + 1500" in text
  md = report_markdown(report)
  assert "**Same total steps. Verdict: gumbel ties with all baselines, either step count" in md
  assert "**Same final training. Verdict: gumbel wins against all baselines:" in md


def test_protocol_without_same_total_family_has_one_verdict(bench):
  _, report = bench
  hv = _comparison(report, "riscv", "latency_s")["hypervolume"]
  assert hv["with_same_total"] is None and hv["verdict_same_total"] is None
  assert all(r["vs_same_total"] is None for r in _comparison(report, "riscv", "latency_s")["budgets"])


def test_shared_supernet_family_against_the_default_search(tmp_path):
  # gumbel-shared (one supernet per seed), riscv, seeds 0 and 1, budgets 0.2 and 0.5:
  #   seed 0: (1.8, 0.72), (3.5, 0.83): HV = 0.62 x 8.2 + 0.11 x 6.5 = 5.084 + 0.715 = 5.799
  #   seed 1: (2.0, 0.74), (4.0, 0.86): HV = 0.64 x 8.0 + 0.12 x 6.0 = 5.120 + 0.720 = 5.840
  #   mean 5.8195; against gumbel's 5.906: ratio 0.985354; per seed 5.799 / 5.929 = 0.978074 and
  #   5.840 / 5.904 = 0.989160: mean 0.983617, sample std 0.011086 / sqrt(2) = 0.0078391.
  # Steps: the first job of each seed trained the supernet (50 steps) and every job searched 10 steps:
  #   (50 + 10) + 10 per seed = 70, 140 in all; gumbel's 6 riscv jobs take the protocol's 1000 each: 6000.
  shared = []
  for seed, points in ((0, ((0.2, 1.8, 0.72), (0.5, 3.5, 0.83))), (1, ((0.2, 2.0, 0.74), (0.5, 4.0, 0.86)))):
    for i, (fraction, cost, acc) in enumerate(points):
      job, result = searched("gumbel-shared", "riscv", "latency_s", fraction, seed, acc, cost)
      result["search"] = {"steps": {"supernet": 50 if i == 0 else 0, "arch": 10}}
      result["time_s"] = {"supernet": 5.0, "search": 2.0, "finetune": 20.0, "total": 27.0}
      shared.append((job, result))
  comparisons = [c for c in COMPARISONS if c["target"] == "riscv"]
  root = make_bench(tmp_path / "b", BASELINES + GUMBEL_RISCV + shared, comparisons=comparisons, extra_jobs=())
  report = report_app.build_report(root)
  hv = _comparison(report, "riscv", "latency_s")["hypervolume"]["families"]
  assert hv["gumbel-shared"]["per_seed"] == pytest.approx([5.799, 5.840])
  v = hv["gumbel-shared"]["vs_default"]
  assert v["family"] == "gumbel" and v["ratio"] == pytest.approx(5.8195 / 5.906)
  assert v["paired_ratio"]["mean"] == pytest.approx((5.799 / 5.929 + 5.840 / 5.904) / 2)
  assert v["paired_ratio"]["std"] == pytest.approx(abs(5.799 / 5.929 - 5.840 / 5.904) / math.sqrt(2))
  assert "vs_default" not in hv["gumbel"]
  times = {(r["role"], r["family"]): r for r in report["time"]["families"]}
  assert times[("searched", "gumbel-shared")]["sum_search_steps"] == 140
  assert times[("searched", "gumbel-shared")]["sum_search"] == pytest.approx(4 * 7.0)
  assert times[("searched", "gumbel-shared")]["supernet"] == pytest.approx(5.0)
  assert times[("searched", "gumbel")]["sum_search_steps"] == 6000
  paths = report_app.write_report(root, report)
  md = pathlib.Path(paths[0]).read_text()
  assert "gumbel-shared / gumbel: hypervolume ratio 0.9854" in md


def test_other_searched_families_with_seeds_get_verdicts_too(tmp_path):
  # gumbel-shared at seeds 0-2 with gumbel's own points shifted: accuracies +0.01 at every point.
  #   seed s: HV_s(gumbel) + 0.01 x (10 - cheapest cost) = 5.929 + 0.082, 5.904 + 0.081, 5.885 + 0.080
  #   = 6.011, 5.985, 5.965: mean 5.987; against all baselines 5.40 ± 0.12: margin 0.587 > 2 x spread: wins.
  shared = []
  for job, result in GUMBEL_RISCV:
    job = {**job, "dir": job["dir"].replace("gumbel", "gumbel-shared"), "family": "gumbel-shared"}
    shared.append((job, {**result, "accuracy": result["accuracy"] + 0.01}))
  comparisons = [c for c in COMPARISONS if c["target"] == "riscv"]
  root = make_bench(tmp_path / "b", BASELINES + GUMBEL_RISCV + shared, comparisons=comparisons, extra_jobs=())
  hv = _comparison(report_app.build_report(root), "riscv", "latency_s")["hypervolume"]
  assert hv["families"]["gumbel-shared"]["per_seed"] == pytest.approx([6.011, 5.985, 5.965])
  v = hv["other_verdicts"]["gumbel-shared"]
  assert v["final"]["outcome"] == "wins" and v["final"]["margin"] == pytest.approx(5.987 - 5.40)
  assert v["same_total"] is None  # no same-total-steps family in this bench
  assert "gumbel" not in hv["other_verdicts"]


def test_nm_share_of_the_searched_networks(tmp_path):
  # Shares of stored weights by hand: fc1 64 x 128 at 2:4 (8,192), fc2 128 x 64 dense (8,192), head 64 x 10
  # (640); the matmul and the layernorm store none. 2:4 share = 8,192 / 17,024 = 0.481203.
  def layers(nm):
    return [{"kind": "linear", "name": "fc1", "cin": 64, "cout": 128, "kernel": 1, "nm": nm, "w_bits": 8, "a_bits": 8},
            {"kind": "matmul", "name": "qk", "cin": 16, "cout": 68, "kernel": 1, "nm": None},
            {"kind": "layernorm", "name": "ln", "cin": 64, "cout": 64, "kernel": 1, "nm": None},
            {"kind": "linear", "name": "fc2", "cin": 128, "cout": 64, "kernel": 1, "nm": None, "w_bits": 4,
             "a_bits": 4},
            {"kind": "dense", "name": "head", "cin": 64, "cout": 10, "kernel": 1, "nm": None, "w_bits": 8, "a_bits": 8}]
  assert report_app.nm_share({"architecture": {"layers": layers([2, 4])}}) == {"2:4": pytest.approx(8192 / 17024)}
  assert report_app.nm_share({"architecture": {"layers": layers(None)}}) == {}
  assert report_app.nm_share({"architecture": {"layers": SEARCHED_LAYERS}}) is None  # no kinds: nothing to say
  jobs = [searched("gumbel", "riscv", "latency_s", 0.5, 0, 0.85, 4.0, layers([2, 4])),
          searched("gumbel", "riscv", "latency_s", 0.5, 1, 0.86, 4.0, layers(None)),
          baseline("uniform", "W8A8", 0, 0.90, 10.0), baseline("uniform", "W8A8", 1, 0.90, 10.0)]
  root = make_bench(tmp_path / "b", jobs, comparisons=COMPARISONS[:1], extra_jobs=())
  usage = report_app.build_report(root)["comparisons"][0]["nm_usage"]
  # Two searched networks: 0.481203 and 0 -> mean 0.240602; one of them uses N:M.
  assert usage == {"networks": 2, "any": pytest.approx(8192 / 17024 / 2), "networks_using": 1,
                   "per_pattern": {"2:4": pytest.approx(8192 / 17024 / 2)}}
  text = report_markdown(report_app.build_report(root))
  assert "N:M sparsity in the searched networks: 24.1 % of their weights on average (2:4 24.1 %); 1 of 2" in text
  assert "| 2:4 48 % |" in text and "| dense |" in text
  # Without any N:M layer in the comparison the report says nothing about it.
  plain = make_bench(tmp_path / "c", [searched("gumbel", "riscv", "latency_s", 0.5, 0, 0.85, 4.0, layers(None)),
                                      baseline("uniform", "W8A8", 0, 0.90, 10.0)], comparisons=COMPARISONS[:1],
                     extra_jobs=())
  assert report_app.build_report(plain)["comparisons"][0]["nm_usage"] is None


# A searched network that is itself a uniform network. Choices of a three-conv network whose first conv and head
# are fixed at W8A8 by the space; convs.1 and convs.2 carry the searchable bits.
def _choices(w, a, widths=(8, 12, 16), w2=None):
  return {"convs.0.width": widths[0], "convs.0.w_bits": 8, "convs.0.a_bits": 8,
          "convs.1.width": widths[1], "convs.1.w_bits": w, "convs.1.a_bits": a,
          "convs.2.width": widths[2], "convs.2.w_bits": w if w2 is None else w2, "convs.2.a_bits": a,
          "head.w_bits": 8, "head.a_bits": 8}


def _with_choices(job_result, choices, overrides=None):
  job, result = job_result
  result["architecture"] = {"layers": SEARCHED_LAYERS, "choices": choices}
  return ({**job, "overrides": overrides} if overrides else job), result


HALF = (4, 6, 8)  # the widths at x0.5; base widths 8 / 12 / 16


def test_a_searched_uniform_network_is_flagged_and_a_mixed_one_is_not(tmp_path):
  # Uniform baselines (seeds 0, 1): W8A8 and W2A2 at base width, W2A2 x0.5 (its width from its overrides).
  jobs = [b for s in (0, 1) for b in (
      _with_choices(baseline("uniform", "W8A8", s, 0.90, 10.0), _choices(8, 8)),
      _with_choices(baseline("uniform", "W2A2", s, 0.80, 4.0), _choices(2, 2)),
      _with_choices(baseline("uniform-pruned", "W2A2 ×0.5", s, 0.70, 2.0), _choices(2, 2, HALF),
                    ["baseline.kind=uniform", "baseline.width_mult=0.5"]))]
  # At 0.2 both seeds found the W2A2 x0.5 baseline itself; at 0.5 seed 0 a uniform W4A4 x0.5 no baseline trained,
  # seed 1 a mixed network (convs.2 at 8-bit weights); at 0.8 a network of pruned width but W4A4 at base width.
  jobs += [_with_choices(searched("gumbel", "riscv", "latency_s", 0.2, s, acc, 2.0), _choices(2, 2, HALF))
           for s, acc in ((0, 0.74), (1, 0.76))]
  jobs += [_with_choices(searched("gumbel", "riscv", "latency_s", 0.5, 0, 0.84, 4.0), _choices(4, 4, HALF)),
           _with_choices(searched("gumbel", "riscv", "latency_s", 0.5, 1, 0.86, 4.0), _choices(4, 4, HALF, w2=8)),
           _with_choices(searched("gumbel", "riscv", "latency_s", 0.8, 0, 0.88, 7.0), _choices(4, 4, (8, 6, 16)))]
  root = make_bench(tmp_path / "b", jobs, comparisons=COMPARISONS[:1], extra_jobs=())
  report = report_app.build_report(root)
  rows = {r["fraction"]: r for r in report["comparisons"][0]["budgets"]}
  found = "uniform W2A2 ×0.5: the search found a baseline (uniform-pruned W2A2 ×0.5)"
  assert [n["uniform"]["text"] for n in rows[0.2]["networks"]] == [found, found]
  assert rows[0.2]["networks"][0]["uniform"]["baselines"] == ["uniform-pruned W2A2 ×0.5"]  # once, not per seed
  # 0.2's best baseline at <= cost 2 is that very network: the flag says the difference is training.
  vs = rows[0.2]["vs_baseline"]
  assert (vs["baseline"]["config"], vs["verdict"]) == ("W2A2 ×0.5", "better")
  assert rows[0.2]["flags"] == [f"seeds 0, 1: {found}; it is the baseline compared with here: the difference is "
                                "training, not architecture"]
  assert rows[0.5]["networks"][0]["uniform"]["label"] == "uniform W4A4 ×0.5"
  assert rows[0.5]["networks"][0]["uniform"]["baselines"] == []
  assert rows[0.5]["networks"][1]["uniform"] is None  # mixed: convs.2 holds 8-bit weights
  assert [f for f in rows[0.5]["flags"] if "uniform" in f] == [
      "seed 0: uniform W4A4 ×0.5: a uniform network, not among the baselines"]
  assert rows[0.8]["networks"][0]["uniform"] is None and not any("uniform" in f for f in rows[0.8]["flags"])
  md = report_markdown(report)
  assert f"seeds 0, 1: {found}; it is the baseline compared with here" in md
  assert "seed 0: uniform W4A4 ×0.5: a uniform network, not among the baselines" in md
  # The flags are all that changes: without the choices in result.json, the same verdicts and no flag.
  for _, result in jobs:
    result["architecture"].pop("choices")
  plain = make_bench(tmp_path / "c", jobs, comparisons=COMPARISONS[:1], extra_jobs=())
  plain_rows = {r["fraction"]: r for r in report_app.build_report(plain)["comparisons"][0]["budgets"]}
  for fraction, row in rows.items():
    assert plain_rows[fraction]["vs_baseline"] == row["vs_baseline"]
    assert plain_rows[fraction]["flags"] == [f for f in row["flags"] if "uniform" not in f]


def test_per_group_bits_and_fixed_bits_of_uniform_networks():
  from experiments import benchmark_uniform as uniform
  def vit(w, a, heads=4, nm=0):
    return {"blocks.0.heads": heads, "blocks.0.fc1.w_bits": list(w), "blocks.0.fc1.a_bits": a,
            "blocks.0.fc1.nm": nm, "head.w_bits": 8}
  temps = [{"choices": vit((w,) * 4, w), "w_bits": w, "a_bits": w, "width": 1.0, "nm": None,
            "name": f"uniform W{w}A{w}"} for w in (8, 4)]
  fixed = uniform.fixed_bit_keys(temps)
  assert fixed == {"head.w_bits"}
  assert uniform.uniform_network(vit((2,) * 4, 2), temps, fixed)["label"] == "uniform W2A2 ×1"
  assert uniform.uniform_network(vit((4,) * 4, 4), temps, fixed)["baselines"] == ["uniform W4A4"]
  assert uniform.uniform_network(vit((4, 4, 0, 4), 4), temps, fixed) is None  # a pruned group
  assert uniform.uniform_network(vit((4,) * 4, 4, nm=1), temps, fixed) is None  # 2:4 where the baselines are dense
  assert uniform.uniform_network(vit((4,) * 4, 4, heads=2), temps, fixed) is None  # no baseline at these widths
  assert uniform.uniform_network(None, temps, fixed) is None


def test_the_cheapest_precision_of_a_target_is_shown_from_protocol_json(tmp_path):
  jobs = [_with_choices(baseline("uniform", "W8A8", 0, 0.90, 10.0), _choices(8, 8)),
          searched("gumbel", "riscv", "latency_s", 0.5, 0, 0.85, 4.0)]
  root = make_bench(tmp_path / "b", jobs, comparisons=COMPARISONS[:1], extra_jobs=())
  manifest = json.loads((root / "protocol.json").read_text())
  pairs = [{"w_bits": w, "a_bits": a, "cost": c, "macs": 1e6, "cost_per_mac": c / 1e6}
           for w, a, c in ((2, 2, 1e-3), (4, 4, 2e-3), (8, 8, 4e-3))] + [{"w_bits": 8, "a_bits": 2, "error": "no"}]
  manifest["cheapest"] = [{"target": "riscv", "metric": "latency_s", "widths": [0.5, 0.75], "rule": "least",
                           "pair": [2, 2], "tied": [[2, 2]], "pairs": pairs}]
  (root / "protocol.json").write_text(json.dumps(manifest))
  report = report_app.build_report(root)
  assert report["comparisons"][0]["cheapest"]["pair"] == [2, 2]
  md = report_markdown(report)
  assert "Cheapest precision per MAC on riscv (latency_s): W2A2; its uniform networks at widths ×0.5, ×0.75" in md
  assert "| W4A4 | 2 ms | 2 ns | 2.000 |" in md and "| W8A2 | – | – | no |" in md
