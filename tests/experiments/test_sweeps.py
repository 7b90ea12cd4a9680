"""Sweep presets (conf/sweep/*.yaml, selected with +sweep=NAME) and launcher configs (hydra/launcher=...).

Composition only for the presets and the cluster launchers (SLURM, Ray: nothing to submit to here); two real
sweeps of debug jobs: the basic sweeper on the joblib launcher (two workers, one job failing on purpose), and
the Optuna preset's NSGA-II study with two trials. Plugins that are not installed skip their tests.
"""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from hydra.utils import get_class

from experiments import search as _app  # noqa: F401  (registers the structured schema `app_schema`)

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
PRESETS = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))
HARDWARE = {p.stem for p in (CONF / "hardware").glob("*.yaml")}


def _installed(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:
    return False


needs_optuna = pytest.mark.skipif(not _installed("hydra_plugins.hydra_optuna_sweeper"),
                                  reason='hydra-optuna-sweeper not installed: pip install -e ".[optuna]"')


def _compose(overrides):
  with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
    return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def _jobs(params) -> list[list[str]]:
  """The basic sweeper's job list for these sweeper params (its own cartesian product)."""
  overrides = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
  return BasicSweeper.split_arguments(overrides, max_batch_size=None)[0]


def _run_sweep(args, cwd, timeout=240):
  # cwd is a temporary folder, so relative outputs of the app (checkpoints/, multirun/) stay out of the repo.
  env = dict(os.environ, PYTHONPATH=str(ROOT), WANDB_MODE="disabled")
  return subprocess.run([sys.executable, "-m", "experiments.search", *args, "debug=true", "wandb.mode=disabled"],
                        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# ----------------------------------------------------------------------------------------- presets


def test_presets_exist_and_say_how_to_run_them():
  assert {"budgets", "targets", "baselines", "optuna"} <= set(PRESETS)
  for name in PRESETS:
    text = (CONF / "sweep" / f"{name}.yaml").read_text()
    lines = text.splitlines()
    assert lines[0] == "# @package _global_", name
    header = "\n".join(l for l in lines[1:] if l.startswith("#"))
    # Each preset starts with: the exact command, what it produces, how long it takes.
    assert f"python -m experiments.search +sweep={name}" in header, name
    assert "result.json" in header and ("min" in header or " s " in header), name
    assert yaml.safe_load(text)["hydra"]["mode"] == "MULTIRUN", name


@pytest.mark.parametrize("name, sweep, n_jobs", [
    ("budgets", {"budget.fraction": "0.2,0.4,0.6,0.8"}, 4),
    ("targets", {"hardware": "riscv,riscv_gap8,bitfusion,cpu", "budget.room": "0.25,0.5,0.75"}, 12),
    ("baselines", None, 15),
])
def test_basic_presets_compose(name, sweep, n_jobs):
  cfg = _compose([f"+sweep={name}"])
  assert cfg.hydra.mode == RunMode.MULTIRUN
  assert cfg.hydra.sweeper._target_ == "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
  params = dict(cfg.hydra.sweeper.params)
  if sweep is not None:
    assert params == sweep
  assert len(_jobs(params)) == n_jobs
  assert cfg.hydra.sweep.dir.endswith(f"-{name}")
  # A value given on the command line replaces the preset's (the sweeper keeps the last one per key).
  key = next((k for k in ("budget.fraction", "budget.room") if k in params), None)
  n_budgets = len(params[key].split(",")) if key else 1
  assert len(_jobs({**params, key or "budget.fraction": "0.5"})) == n_jobs // n_budgets


def test_targets_preset_names_existing_hardware_presets():
  targets = dict(_compose(["+sweep=targets"]).hydra.sweeper.params)["hardware"].split(",")
  assert set(targets) <= HARDWARE, set(targets) - HARDWARE
  for target in targets:  # each job composes (the basic sweeper checks this too before launching)
    assert _compose(["+sweep=targets", f"hardware={target}"]).hardware.name == target


def test_baselines_preset_sweeps_bit_pairs_not_their_product():
  params = dict(_compose(["+sweep=baselines"]).hydra.sweeper.params)
  seen = set()
  for job in _jobs(params):
    cfg = _compose(["+sweep=baselines", *job])
    b = cfg.baseline
    seen.add((b.kind, b.w_bits, b.a_bits) if b.kind == "uniform" else (b.kind, cfg.seed))
    assert b.width_mult == 1.0  # the dict is merged into `baseline`, other fields keep their defaults
  assert seen == {("uniform", 8, 8), ("uniform", 4, 8), ("uniform", 4, 4), ("uniform", 2, 2),
                  ("random", 0), ("random", 1), ("random", 2)}


@needs_optuna
def test_optuna_preset_composes():
  cfg = _compose(["+sweep=optuna"])
  s = cfg.hydra.sweeper
  assert cfg.hydra.mode == RunMode.MULTIRUN
  assert s._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
  assert s.sampler._target_ == "optuna.samplers.NSGAIISampler"
  assert list(s.direction) == ["maximize", "minimize"] and list(cfg.objectives) == ["accuracy", "latency_s"]
  assert s.storage is None and s.n_trials == 12 and s.n_jobs == 1
  assert dict(s.params) == {"budget.fraction": "interval(0.1, 1.0)", "search": "choice(gumbel, sdq)"}
  assert s.study_name == "hwnas-riscv"
  assert _compose(["+sweep=optuna", "hydra.sweeper.n_trials=2"]).hydra.sweeper.n_trials == 2


# ---------------------------------------------------------------------------------------- launchers


@pytest.mark.parametrize("launcher, plugin, target", [
    ("joblib", "hydra_plugins.hydra_joblib_launcher", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
    ("submitit_local", "hydra_plugins.hydra_submitit_launcher", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"),
    ("submitit_slurm", "hydra_plugins.hydra_submitit_launcher", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
    ("slurm_gpu", "hydra_plugins.hydra_submitit_launcher", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
    ("ray", "hydra_plugins.hydra_ray_launcher", "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"),
])
def test_launcher_composes(launcher, plugin, target):
  if not _installed(plugin):
    pytest.skip(f"{plugin} not installed (see pyproject.toml extras: cluster, ray)")
  cfg = _compose(["+sweep=targets", f"hydra/launcher={launcher}"])
  assert cfg.hydra.launcher._target_ == target
  assert cfg.hydra.runtime.choices["hydra/launcher"] == launcher
  get_class(target)  # the plugin's launcher class imports
  if launcher == "slurm_gpu":
    assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.timeout_min == 120
    assert _compose(["hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu"]).hydra.launcher.partition == "gpu"


# ------------------------------------------------------------------------------------- real sweeps


def test_joblib_sweep_runs_in_parallel_and_a_failed_job_does_not_sink_it(tmp_path):
  sweep = tmp_path / "sweep"
  p = _run_sweep(["-m", "budget.fraction=0.3,0.6,0.001", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                  f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
  # The sweep finishes every job, then exits non-zero and names the failed one, without a traceback.
  assert p.returncode == 1, p.stderr[-3000:]
  assert "1 job(s) of the sweep" in p.stderr and "job 2: budget " in p.stderr and "on latency_s (0.001 x the reference)" in p.stderr, p.stderr[-3000:]
  assert "Traceback" not in p.stderr
  assert "Joblib.Parallel(n_jobs=2" in p.stdout + p.stderr, (p.stdout + p.stderr)[-3000:]  # Hydra's own log line
  fractions = {}
  for job in ("0", "1"):
    r = json.loads((sweep / job / "result.json").read_text())
    fractions[job] = r["budget"]["fraction"]
    assert not (sweep / job / "error.json").exists()
  assert fractions == {"0": 0.3, "1": 0.6}
  # 0.001 of the reference latency is below the cheapest network of the space: that job fails alone.
  assert not (sweep / "2" / "result.json").exists()
  err = json.loads((sweep / "2" / "error.json").read_text())
  assert err["type"] == "ValueError" and "budget" in err["error"]


@needs_optuna
def test_optuna_preset_runs_a_two_trial_study(tmp_path):
  sweep = tmp_path / "sweep"
  p = _run_sweep(["+sweep=optuna", "hydra.sweeper.n_trials=2", "search=gumbel", f"hydra.sweep.dir={sweep}"],
                 cwd=tmp_path)
  assert p.returncode == 0, p.stderr[-3000:]
  results = [json.loads((sweep / job / "result.json").read_text()) for job in ("0", "1")]
  for r in results:
    assert 0.1 <= r["budget"]["fraction"] <= 1.0 and r["method"] == "gumbel"
  study = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
  assert study["name"] == "optuna" and 1 <= len(study["solutions"]) <= 2
  # The study saw what the jobs wrote: each Pareto solution is one job's [accuracy, latency_s].
  written = {(r["accuracy"], r["cost"][r["target"]]["latency_s"]) for r in results}
  for s in study["solutions"]:
    assert tuple(s["values"]) in written


@needs_optuna
def test_optuna_study_goes_on_when_trials_fail(tmp_path):
  # Budgets far below the cheapest network: every job fails before training and returns the worst values.
  sweep = tmp_path / "sweep"
  p = _run_sweep(["+sweep=optuna", "hydra.sweeper.n_trials=2", "budget.fraction=interval(0.0001, 0.001)",
                  f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
  assert p.returncode == 1 and "2 job(s) of the sweep" in p.stderr, p.stderr[-3000:]  # after the whole study
  for job in ("0", "1"):
    assert json.loads((sweep / job / "error.json").read_text())["type"] == "ValueError"
  study = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
  assert all(s["values"] == [0.0, float("inf")] for s in study["solutions"])
