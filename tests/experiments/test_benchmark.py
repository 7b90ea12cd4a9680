"""The protocol runner (experiments/benchmark.py): the jobs it plans from conf/benchmark/fashion.yaml, the
baselines at each target's cheapest precision per MAC (experiments/benchmark_cheapest.py) against a hand
computation, and a real two-job protocol on digits (debug=true) through the report, with a failing job and a
resume."""
import gzip
import json
import pathlib
import struct
import subprocess
import sys

import pytest
import yaml

from experiments import benchmark
from experiments import benchmark_cheapest as cheapest_app

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _overrides(job):
  return dict(o.split("=", 1) for o in job["overrides"])


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
  """Overrides that let the Fashion-MNIST protocols be planned here: none where Debian's dataset-fashion-mnist is
  installed, else dataset.root of a one-image stand-in (28x28, 10 classes): planning prices each target's cheapest
  precision on the network's shapes, all it reads of the data."""
  from nas.train.datasets import FASHION_MNIST_ROOT
  if (pathlib.Path(FASHION_MNIST_ROOT) / "t10k-labels-idx1-ubyte.gz").is_file():
    return []
  folder = tmp_path_factory.mktemp("fashion")
  for part in ("train", "t10k"):
    (folder / f"{part}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, 1, 28, 28) + bytes(784))
    (folder / f"{part}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, 1) + bytes(1))
  return [f"dataset.root={folder}"]


def test_fashion_protocol_plans_every_family_seed_budget_and_baseline(fashion):
  spec = benchmark.load_protocol("fashion", quick=False, extra=fashion)
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
  # per seed: 9 uniform pairs + 2 pruned pairs x 2 widths + 2 random + 7 same-total-steps = 22; 3 seeds. The
  # cheapest precisions (riscv W2A2, bitfusion W4A4) at x0.5 and x0.75 are pruned baselines already: marked, no job.
  assert len(baselines) == 66
  assert {(j["config"], tuple(j["cheapest_for"])) for j in baselines if j.get("cheapest_for")} == {
      ("W2A2 ×0.5", ("riscv/latency_s",)), ("W2A2 ×0.75", ("riscv/latency_s",)),
      ("W4A4 ×0.5", ("bitfusion/energy_j",)), ("W4A4 ×0.75", ("bitfusion/energy_j",))}
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


def test_quick_variant_is_one_seed_and_fewer_jobs(fashion):
  jobs = benchmark.plan_jobs(benchmark.load_protocol("fashion", quick=True, extra=fashion))
  assert {j["seed"] for j in jobs} == {0}
  assert [j["family"] for j in jobs if j["role"] == "searched"] == ["gumbel-shared"] * 2
  # 3 uniform, 2 pruned, 1 random, and riscv's cheapest precision W2A2 at x0.75 (its x0.5 is a pruned baseline)
  assert len([j for j in jobs if j["role"] == "baseline"]) == 7
  assert [(j["dir"], j["config"]) for j in jobs if j["family"] == cheapest_app.FAMILY] == [
      ("baseline/uniform-w2a2-x0.75-s0", "W2A2 ×0.75")]


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


def test_same_total_steps_default_override_and_bad_value(fashion):
  assert benchmark.same_total_steps({"search": 800, "finetune": 2000}) == 2800  # search + fine-tuning
  assert benchmark.same_total_steps({"search": 800, "finetune": 2000, "same_total": 2300}) == 2300
  for bad in (0, -5, 2.5, "2300"):
    with pytest.raises(ValueError, match="steps.same_total must be a positive integer"):
      benchmark.same_total_steps({"search": 800, "finetune": 2000, "same_total": bad})
  spec = benchmark.load_protocol("fashion", quick=False, extra=fashion)
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


def test_vit_protocol_plans_dense_and_2of4_baselines_on_two_targets(fashion):
  spec = benchmark.load_protocol("fashion_vit", quick=False, extra=fashion)
  jobs = benchmark.plan_jobs(spec)
  searched = [j for j in jobs if j["role"] == "searched"]
  assert {(j["target"], j["family"]) for j in searched} == {("gpu_throughput", "gumbel"), ("riscv", "gumbel")}
  assert len(searched) == 2 * 3 * 4
  uniform = {j["config"] for j in jobs if j["family"] == "uniform"}
  assert uniform == {"W8A8", "W8A8 2:4", "W4A4", "W4A4 2:4"}
  assert all("model=vit" in j["overrides"] for j in jobs)
  # Every network, searched and baseline, is distilled from a float teacher trained as long as its own training.
  for job in jobs:
    o = _overrides(job)
    assert o["finetune.kd_alpha"] == "0.5" and o["finetune.teacher_steps"] == o["finetune.steps"] == "3000"
  # Cheapest per MAC: W4A4 on gpu_throughput (2-bit runs as 4-bit: a tie, the higher precision), W2A2 on riscv;
  # W4A4 x0.5 is the pruned baseline, the other three are new jobs of every seed: 42 + 9 jobs.
  table = {e["target"]: e for e in benchmark.manifest(spec, jobs)["cheapest"]}
  assert table["gpu_throughput"]["pair"] == [4, 4] and table["riscv"]["pair"] == [2, 2]
  assert sorted(table["gpu_throughput"]["tied"]) == [[2, 2], [2, 4], [4, 2], [4, 4]]
  added = [j for j in jobs if j["family"] == cheapest_app.FAMILY]
  assert sorted({j["config"] for j in added}) == ["W2A2 ×0.5", "W2A2 ×0.75", "W4A4 ×0.75"] and len(added) == 9
  assert len(jobs) == 51


# ------------------------------------------------------------------------- the cheapest precision per MAC

def _two_target_spec(**baselines):
  """digits (bundled) with the default digits_cnn, priced on riscv (latency) and bitfusion (energy)."""
  return {"name": "t", "variant": "full", "common": ["wandb.mode=disabled"],
          "steps": {"search": 10, "finetune": 10, "baseline": 20}, "seeds": [0, 1],
          "comparisons": [{"target": t, "metric": m, "budgets": [0.5], "default": "g",
                           "families": {"g": {"seeds": 1, "overrides": []}}}
                          for t, m in (("riscv", "latency"), ("bitfusion", "energy"))],
          "baselines": {"cheapest": {"widths": [0.5, 0.75]}, **baselines}}


def _higher_precision_of_least(per_mac: dict) -> tuple[tuple, list]:
  least = min(per_mac.values())
  tied = sorted(p for p, v in per_mac.items() if v <= least * (1 + 1e-9))
  return max(tied, key=lambda p: (p[0] + p[1], p[0])), tied


def test_cheapest_pair_of_riscv_and_bitfusion_against_a_hand_computation():
  table = {e["target"]: e for e in cheapest_app.cheapest_table(_two_target_spec())}
  # riscv (conf/hardware/riscv.yaml): one layer at (w, a) computes macs_per_cycle[a][w] MACs a cycle at freq_hz,
  # so a MAC takes 1 / (macs_per_cycle · freq) s: W2A2 1 / (6.5 · 250e6) = 0.615 ns, the least (W8A8 1.905 ns).
  hw = yaml.safe_load((ROOT / "conf" / "hardware" / "riscv.yaml").read_text())
  bits, freq = hw["bits"], float(hw["freq_hz"])  # PyYAML reads 250.0e6 as a string
  hand = {(w, a): 1.0 / (hw["macs_per_cycle"][bits.index(a)][bits.index(w)] * freq) for w in bits for a in bits}
  pair, tied = _higher_precision_of_least(hand)
  assert pair == (2, 2) and tied == [(2, 2)]
  riscv = table["riscv"]
  assert (tuple(riscv["pair"]), riscv["tied"], riscv["metric"]) == (pair, [[2, 2]], "latency_s")
  code = {(r["w_bits"], r["a_bits"]): r["cost_per_mac"] for r in riscv["pairs"]}
  assert len(code) == 9
  # The whole network's price per MAC lies between that layer's and W8A8's: its first and last layers stay at 8 bits.
  assert hand[2, 2] < code[2, 2] < hand[8, 8]
  # bitfusion: the APQ table (hardware/data/bitfusion_lut.json.gz) at one measured 1x1 conv, 96 -> 456 channels on a
  # 14x14 map (MACs 96 · 456 · 14²); bits below 4 run at 4 (conf/hardware/bitfusion.yaml). W4A4 0.10688 mJ is the
  # least (W4A8 0.10992, W8A4 0.11735, W8A8 0.13420): W2A2, W2A4, W4A2 and W4A4 tie, W4A4 is the higher precision.
  lut = json.loads(gzip.decompress((ROOT / "hardware" / "data" / "bitfusion_lut.json.gz").read_bytes()))
  run = {2: 4, 4: 4, 8: 8}
  hand = {(w, a): lut[f"(96, 456, 14, 1, 1, 0, 1)-W{run[w]}A{run[a]}"]["energy"] / (96 * 456 * 14 ** 2)
          for w in (2, 4, 8) for a in (2, 4, 8)}
  pair, tied = _higher_precision_of_least(hand)
  assert pair == (4, 4) and tied == [(2, 2), (2, 4), (4, 2), (4, 4)]
  bitfusion = table["bitfusion"]
  assert tuple(bitfusion["pair"]) == pair and sorted(map(tuple, bitfusion["tied"])) == tied
  assert bitfusion["metric"] == "energy_j" and bitfusion["widths"] == [0.5, 0.75]


def test_a_tie_takes_the_higher_precision_and_unrunnable_pairs_are_left_out():
  rows = [{"w_bits": w, "a_bits": a, "macs": 10.0, "energy_j": e}
          for (w, a), e in (((2, 2), 1.0), ((2, 8), 1.0), ((4, 4), 1.0), ((8, 8), 2.0))]
  rows.append({"w_bits": 8, "a_bits": 2, "error": "2-bit activations are not supported"})
  chosen = cheapest_app.choose(rows, "energy_j")
  assert chosen["pair"] == [2, 8] and chosen["tied"] == [[2, 2], [2, 8], [4, 4]]  # 10 bits beat 8 and 4
  assert chosen["pairs"][0]["cost_per_mac"] == pytest.approx(0.1) and "error" in chosen["pairs"][-1]
  with pytest.raises(ValueError, match="runs no"):
    cheapest_app.choose(rows[-1:], "energy_j")


def test_cheapest_baselines_are_planned_once_marked_where_listed_and_resume(tmp_path):
  old = _two_target_spec(uniform={"pairs": [[8, 8]], "width": 1.0}, pruned={"pairs": [[2, 2]], "widths": [0.5]})
  old["baselines"].pop("cheapest")
  spec = _two_target_spec(uniform={"pairs": [[8, 8]], "width": 1.0}, pruned={"pairs": [[2, 2]], "widths": [0.5]})
  jobs = benchmark.plan_jobs(spec)
  # Per seed: W8A8, the pruned W2A2 x0.5 (riscv's cheapest: marked), and new riscv W2A2 x0.75 and bitfusion W4A4
  # x0.5 and x0.75; one search per target.
  added = {(j["config"], j["seed"], tuple(j["cheapest_for"])) for j in jobs if j["family"] == cheapest_app.FAMILY}
  assert added == {(c, s, t) for s in (0, 1) for c, t in (("W2A2 ×0.75", ("riscv/latency_s",)),
                                                           ("W4A4 ×0.5", ("bitfusion/energy_j",)),
                                                           ("W4A4 ×0.75", ("bitfusion/energy_j",)))}
  assert {j["dir"] for j in jobs if j.get("cheapest_for") and j["family"] == "uniform-pruned"} == {
      "baseline/uniform-w2a2-x0.5-s0", "baseline/uniform-w2a2-x0.5-s1"}
  job = next(j for j in jobs if j["dir"] == "baseline/uniform-w4a4-x0.75-s1")
  o = _overrides(job)
  assert (o["baseline.kind"], o["baseline.w_bits"], o["baseline.a_bits"], o["baseline.width_mult"]) == (
      "uniform", "4", "4", "0.75")
  assert (o["baseline.steps"], o["seed"], o["hardware"]) == ("20", "1", "riscv")  # as every other baseline
  assert len({j["dir"] for j in jobs}) == len({tuple(j["overrides"]) for j in jobs}) == len(jobs) == 2 * 5 + 2
  # Stable ids: the same plan again, and a folder of the protocol run before the option keeps its every job.
  assert benchmark.plan_jobs(spec) == jobs
  before = {j["dir"]: j["overrides"] for j in benchmark.plan_jobs(old)}
  assert {d: j["overrides"] for d, j in ((j["dir"], j) for j in jobs) if d in before} == before
  # Resume: every job done (a stand-in result.json each): nothing to run, protocol.json keeps the choice.
  out = tmp_path / "bench"
  for j in jobs:
    (out / j["dir"]).mkdir(parents=True)
    (out / j["dir"] / "result.json").write_text(json.dumps({"accuracy": 0.5, "num_classes": 10}))
  assert benchmark.run_protocol(spec, out, check_first=False) == 0
  manifest = json.loads((out / "protocol.json").read_text())
  assert [j["dir"] for j in manifest["jobs"]] == [j["dir"] for j in jobs]
  assert [(e["target"], e["pair"]) for e in manifest["cheapest"]] == [("riscv", [2, 2]), ("bitfusion", [4, 4])]
  assert len(manifest["cheapest"][0]["pairs"]) == 9


def test_a_bad_cheapest_option_is_one_sentence(tmp_path):
  spec = _two_target_spec()
  spec["baselines"]["cheapest"] = {"widths": []}
  path = tmp_path / "bad.yaml"
  path.write_text(yaml.safe_dump(spec))
  with pytest.raises(ValueError, match=r"baselines.cheapest=.*non-empty list of positive width multiples"):
    benchmark.load_protocol(str(path), quick=False)


def test_a_finished_job_of_an_edited_protocol_is_not_taken_as_done(tmp_path):
  """A job folder whose .hydra/overrides.yaml differs from what the protocol now gives it stops the run before
  any job (mixing recipes in one report); the same overrides, or a folder without the record, pass."""
  job = {"dir": "baseline/uniform-w8a8-x1-s0", "overrides": ["model=vit", "seed=0", "finetune.kd_alpha=0.5"]}
  folder = tmp_path / job["dir"]
  (folder / ".hydra").mkdir(parents=True)
  (folder / "result.json").write_text("{}")
  benchmark.check_done_jobs([job], tmp_path)  # no record: a trimmed published folder is taken as it is
  ran = ["seed=0", "model=vit", f"hydra.run.dir={folder}", "checkpoint.dir=ck", "hydra.output_subdir=.hydra"]
  (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(ran))
  with pytest.raises(ValueError, match=r"now also \['finetune.kd_alpha=0.5'\]; no longer nothing.*--out"):
    benchmark.check_done_jobs([job], tmp_path)
  (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(ran + ["finetune.kd_alpha=0.5"]))
  benchmark.check_done_jobs([job], tmp_path)  # the same overrides in another order: done
