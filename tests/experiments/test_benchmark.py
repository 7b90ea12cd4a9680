"""The protocol runner (experiments/benchmark.py): the jobs it plans from conf/benchmark/fashion.yaml, and a
real two-job protocol on digits (debug=true) through the report, with a failing job and a resume."""
import json
import pathlib
import subprocess
import sys

import pytest
import yaml

from experiments import benchmark

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _overrides(job):
  return dict(o.split("=", 1) for o in job["overrides"])


def test_fashion_protocol_plans_every_family_seed_budget_and_baseline():
  spec = benchmark.load_protocol("fashion", quick=False)
  jobs = benchmark.plan_jobs(spec)
  searched = [j for j in jobs if j["role"] == "searched"]
  baselines = [j for j in jobs if j["role"] == "baseline"]
  # riscv: gumbel-shared (the default) 3 seeds x 8 budgets + gumbel, sdq and per-channel 1 seed x 4 budgets;
  # bitfusion: gumbel-shared 3 x 6.
  assert len(searched) == 24 + 4 + 4 + 4 + 18
  assert all("search.shared=true" in j["overrides"] for j in searched if j["family"] == "gumbel-shared")
  assert {c["default"] for c in spec["comparisons"]} == {"gumbel-shared"}
  for family in ("sdq", "gumbel", "gumbel-per-channel"):
    assert {(j["budget"], j["seed"]) for j in searched if j["family"] == family} == {
        (b, 0) for b in (0.1, 0.15, 0.3, 0.45)}
  # per seed: 9 uniform pairs + 2 pruned pairs x 2 widths + 2 random + 7 same-total-steps = 22; 3 seeds.
  assert len(baselines) == 66
  assert len({j["dir"] for j in jobs}) == len(jobs)  # one folder each
  # Whole seeds first (an interrupted run has complete seeds); within one, baselines then the default search.
  assert [j["seed"] for j in jobs] == sorted(j["seed"] for j in jobs)
  seed0 = [(j["role"], j["family"]) for j in jobs if j["seed"] == 0]
  assert seed0[0][0] == "baseline" and seed0[22] == ("searched", "gumbel-shared")
  assert seed0[-1][1] != "gumbel-shared"
  for j in jobs:  # the protocol's steps reach every job, and every job has its own seed
    o = _overrides(j)
    assert (o["search.steps"], o["finetune.steps"]) == ("800", "2000")
    if j["role"] == "baseline":  # same final training, or fine-tuning + the shared search's 300 steps a network
      assert o["baseline.steps"] == str(j["steps"]) == ("2300" if j["family"] == "same total steps" else "2000")
    assert o["seed"] == str(j["seed"]) and o["dataset"] == "fashion_mnist" and o["model"] == "fmnist_cnn"
  total = {(j["config"], _overrides(j)["baseline.width_mult"]) for j in baselines if j["family"] == "same total steps"}
  assert ("W2A2 ×0.5", "0.5") in total and ("W4A8", "1.0") in total and len(total) == 7
  sdq = [j for j in searched if j["family"] == "sdq"]
  assert all(_overrides(j)["search"] == "sdq" and j["seed"] == 0 for j in sdq)
  energy = [j for j in searched if j["target"] == "bitfusion"]
  assert {_overrides(j)["budget.metric"] for j in energy} == {"energy"} and energy[0]["metric"] == "energy_j"
  pruned = {j["config"] for j in baselines if j["family"] == "uniform-pruned"}
  assert pruned == {"W4A4 ×0.5", "W4A4 ×0.75", "W2A2 ×0.5", "W2A2 ×0.75"}
  rnd = [j for j in baselines if j["family"] == "random"]
  # the same random architecture (arch_seed) is trained with every seed
  assert {(_overrides(j)["baseline.arch_seed"], j["seed"]) for j in rnd} == {(str(k), s) for k in (0, 1)
                                                                            for s in (0, 1, 2)}


def test_quick_variant_is_one_seed_and_fewer_jobs():
  jobs = benchmark.plan_jobs(benchmark.load_protocol("fashion", quick=True))
  assert {j["seed"] for j in jobs} == {0}
  assert [j["family"] for j in jobs if j["role"] == "searched"] == ["gumbel-shared"] * 2
  assert len([j for j in jobs if j["role"] == "baseline"]) == 6


def test_unknown_protocol_names_the_known_ones():
  with pytest.raises(ValueError, match="fashion"):
    benchmark.load_protocol("nope", quick=False)


def _tiny_protocol(tmp_path, extra_baseline=None):
  spec = {
      "name": "tiny", "common": ["debug=true", "wandb.mode=disabled"],
      "steps": {"search": 30, "finetune": 20, "baseline": 20}, "seeds": [0],
      "comparisons": [{"target": "riscv", "metric": "latency", "budgets": [0.5], "default": "gumbel",
                       "families": {"gumbel": {"seeds": 1, "overrides": []}}}],
      "baselines": {"uniform": {"pairs": [[4, 4]], "width": 1.0}},
  }
  path = tmp_path / "tiny.yaml"
  path.write_text(yaml.safe_dump(spec))
  return path


def _run(args, cwd=ROOT):
  return subprocess.run([sys.executable, "-m", "experiments.benchmark", *args], capture_output=True, text=True,
                        cwd=cwd, timeout=600)


def test_a_two_job_protocol_runs_reports_and_resumes(tmp_path):
  out = tmp_path / "bench"
  proc = _run([str(_tiny_protocol(tmp_path)), "--out", str(out), "--workers", "2", "--no-preflight"])
  assert proc.returncode == 0, proc.stderr[-2000:]
  manifest = json.loads((out / "protocol.json").read_text())
  assert [j["role"] for j in manifest["jobs"]] == ["baseline", "searched"]
  for job in manifest["jobs"]:
    assert json.loads((out / job["dir"] / "result.json").read_text())["accuracy"] > 0
  report = (out / "report.md").read_text()
  assert "riscv" in report and (out / "riscv-latency_s.png").stat().st_size > 1000
  # Run again: nothing left to do, same report.
  again = _run([str(_tiny_protocol(tmp_path)), "--out", str(out)])
  assert again.returncode == 0 and "2 already done, 0 to run" in again.stdout


def test_bad_input_stops_before_any_job_with_one_sentence(tmp_path):
  out = tmp_path / "bench"
  proc = _run([str(_tiny_protocol(tmp_path)), "--out", str(out), "--set", "dataset=fashion_mnist",
               "--set", f"dataset.root={tmp_path / 'missing'}"])
  assert proc.returncode == 2
  assert "Traceback" not in proc.stderr
  assert "apt-get install dataset-fashion-mnist" in proc.stderr and str(tmp_path / "missing") in proc.stderr
  assert not (out / "search").exists() and not (out / "baseline").exists()


def test_same_total_steps_default_override_and_bad_value():
  assert benchmark.same_total_steps({"search": 800, "finetune": 2000}) == 2800  # search + fine-tuning
  assert benchmark.same_total_steps({"search": 800, "finetune": 2000, "same_total": 2300}) == 2300
  for bad in (0, -5, 2.5, "2300"):
    with pytest.raises(ValueError, match="steps.same_total must be a positive integer"):
      benchmark.same_total_steps({"search": 800, "finetune": 2000, "same_total": bad})
  spec = benchmark.load_protocol("fashion", quick=False)
  assert benchmark.manifest(spec, [])["steps"]["same_total"] == 2300


def test_uniform_baselines_with_nm_patterns_plan_one_job_per_pattern():
  spec = {"name": "t", "variant": "full", "common": ["model=vit"], "steps": {"search": 10, "finetune": 10,
                                                                            "baseline": 10},
          "seeds": [0], "comparisons": [{"target": "gpu", "metric": "latency", "budgets": [0.5], "default": "g",
                                         "families": {"g": {"seeds": 1, "overrides": []}}}],
          "baselines": {"uniform": {"pairs": [[4, 4]], "width": 1.0, "nm": [None, "2:4"]}}}
  jobs = [j for j in benchmark.plan_jobs(spec) if j["role"] == "baseline"]
  assert [(j["config"], j["dir"]) for j in jobs] == [("W4A4", "baseline/uniform-w4a4-x1-s0"),
                                                     ("W4A4 2:4", "baseline/uniform-w4a4-x1-nm2of4-s0")]
  assert "baseline.nm='2:4'" in jobs[1]["overrides"] and not any("nm" in o for o in jobs[0]["overrides"])


def test_vit_protocol_plans_dense_and_2of4_baselines_on_two_targets():
  jobs = benchmark.plan_jobs(benchmark.load_protocol("fashion_vit", quick=False))
  searched = [j for j in jobs if j["role"] == "searched"]
  assert {(j["target"], j["family"]) for j in searched} == {("gpu_throughput", "gumbel"), ("riscv", "gumbel")}
  assert len(searched) == 2 * 3 * 4
  uniform = {j["config"] for j in jobs if j["family"] == "uniform"}
  assert uniform == {"W8A8", "W8A8 2:4", "W4A4", "W4A4 2:4"}
  assert all("model=vit" in j["overrides"] for j in jobs)
