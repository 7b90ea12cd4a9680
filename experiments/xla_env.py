"""The XLA settings of a job started by a Hydra launcher: a joblib sweep whose jobs fill the cores gives each
worker YNNPACK's one-thread convolutions back (``nas.runtime``; measured in docs/speed.md, section 6)."""
from __future__ import annotations

import os

from omegaconf import OmegaConf

from nas import runtime


def launcher_jobs_at_once(hc, cores: int | None = None) -> int:
  """The jobs Hydra's joblib launcher runs at once (joblib's n_jobs: -1 all cores, -2 all but one, ...); 1 for
  any other launcher, which runs one job per process on its own (basic) or per machine (SLURM)."""
  launcher = OmegaConf.select(hc, "launcher") or {}
  if "joblib" not in str(launcher.get("_target_", "")).lower():
    return 1
  cores = cores if cores is not None else len(os.sched_getaffinity(0))
  n = launcher.get("n_jobs")
  n = -1 if n is None else int(n)
  return max(1, n if n > 0 else cores + 1 + n)


def share_cores(hc, environ=os.environ, cores: int | None = None) -> bool:
  """In a joblib sweep whose jobs fill the cores, takes the Eigen-convolution default of ``nas.runtime`` out
  of this worker's XLA flags before its first computation (measured slower when jobs share the cores); True
  if it did."""
  env = runtime.job_environment(environ, launcher_jobs_at_once(hc, cores), cores)
  if env.get(runtime.OPT_OUT) != "0" or environ.get(runtime.OPT_OUT) == "0":
    return False
  environ["XLA_FLAGS"], environ[runtime.OPT_OUT] = env["XLA_FLAGS"], "0"
  return True
