"""Jobs that fill the cores get YNNPACK's one-thread convolutions back: a joblib sweep's workers
(experiments.xla_env.share_cores) and the protocol's jobs (experiments.benchmark.run_job); the measurement is in
docs/speed.md, section 6."""
import sys

from omegaconf import OmegaConf

from experiments import xla_env
from nas import runtime

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def hydra_cfg(target, **launcher):
  return OmegaConf.create({"launcher": {"_target_": target, **launcher}})


def test_jobs_at_once_follow_joblibs_n_jobs():
  assert xla_env.launcher_jobs_at_once(hydra_cfg(BASIC), cores=2) == 1
  assert xla_env.launcher_jobs_at_once(hydra_cfg(JOBLIB, n_jobs=2), cores=8) == 2
  assert xla_env.launcher_jobs_at_once(hydra_cfg(JOBLIB, n_jobs=-1), cores=2) == 2  # the plugin's default: all
  assert xla_env.launcher_jobs_at_once(hydra_cfg(JOBLIB, n_jobs=-2), cores=8) == 7
  assert xla_env.launcher_jobs_at_once(hydra_cfg(JOBLIB, n_jobs=None), cores=4) == 4
  assert xla_env.launcher_jobs_at_once(OmegaConf.create({}), cores=2) == 1


def test_a_worker_that_shares_the_cores_drops_the_default_before_its_first_computation():
  flags = f"--xla_dump_to=/x {runtime.CONV_TO_EIGEN}"
  env = {"XLA_FLAGS": flags}
  assert xla_env.share_cores(hydra_cfg(JOBLIB, n_jobs=2), env, cores=2)
  assert env == {"XLA_FLAGS": "--xla_dump_to=/x", runtime.OPT_OUT: "0"}
  for cfg, cores in ((hydra_cfg(BASIC), 2), (hydra_cfg(JOBLIB, n_jobs=2), 4), (hydra_cfg(JOBLIB, n_jobs=1), 2)):
    env = {"XLA_FLAGS": flags}
    assert not xla_env.share_cores(cfg, env, cores=cores)
    assert env == {"XLA_FLAGS": flags}  # a job with 2 cores or more keeps the default


def test_the_protocol_gives_its_jobs_the_environment(tmp_path, monkeypatch):
  from experiments import benchmark
  seen = []

  class Done:
    returncode = 0

  def fake_run(cmd, env=None, **kw):
    seen.append(env)
    return Done()

  monkeypatch.setattr(benchmark.subprocess, "run", fake_run)
  monkeypatch.setenv("XLA_FLAGS", runtime.CONV_TO_EIGEN)
  monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 1})
  job = {"dir": "baseline/x", "overrides": ["seed=0"]}
  benchmark.run_job(job, tmp_path, sys.executable, jobs_at_once=2)
  benchmark.run_job(job, tmp_path, sys.executable, jobs_at_once=1)
  assert runtime.CONV_TO_EIGEN not in seen[0]["XLA_FLAGS"] and seen[0][runtime.OPT_OUT] == "0"
  assert seen[1]["XLA_FLAGS"] == runtime.CONV_TO_EIGEN and runtime.OPT_OUT not in seen[1]
