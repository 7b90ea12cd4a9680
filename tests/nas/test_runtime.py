"""The project's XLA CPU default (nas/runtime.py): when it is added, and that it does what it says."""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from nas import runtime

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_added_to_empty_and_to_the_users_flags():
  assert runtime.xla_defaults({}, "0.10.2") == runtime.CONV_TO_EIGEN
  assert runtime.xla_defaults({"XLA_FLAGS": "--xla_dump_to=/x"}, "0.10.2") == f"--xla_dump_to=/x {runtime.CONV_TO_EIGEN}"


def test_users_own_setting_opt_out_and_untested_jaxlib_leave_flags_alone():
  assert runtime.xla_defaults({"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}, "0.10.2") is None
  assert runtime.xla_defaults({runtime.OPT_OUT: "0"}, "0.10.2") is None
  for version in ("0.10.1", "0.11.0", "0.9.9", "1.0.0"):
    assert runtime.xla_defaults({}, version) is None, version
  assert runtime.xla_defaults({}, "0.10.7.dev20261201") == runtime.CONV_TO_EIGEN


def test_apply_writes_the_given_environment_only():
  env = {"XLA_FLAGS": "--a"}
  added = runtime.apply_xla_defaults(env)
  import jaxlib
  expected = runtime.xla_defaults({"XLA_FLAGS": "--a"}, jaxlib.__version__)
  assert added == (expected is not None)
  assert env["XLA_FLAGS"] == (expected or "--a")


_PROBE = r"""
import os, sys, pathlib
os.environ["XLA_FLAGS"] = "--xla_dump_to=" + sys.argv[1]
import nas  # adds the default before any computation
import jax, jax.numpy as jnp
import numpy as np
from jax import lax
rng = np.random.default_rng(0)
x = rng.standard_normal((8, 16, 16, 32)).astype(np.float32)
w = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
y = jax.jit(lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))(x, w)
np.save(sys.argv[1] + "/y.npy", np.asarray(y)); np.save(sys.argv[1] + "/x.npy", x); np.save(sys.argv[1] + "/w.npy", w)
print(os.environ["XLA_FLAGS"])
"""


def _conv_reference(x, w):
  """SAME 3x3 convolution in NumPy, a loop over the kernel taps."""
  n, h, wd, _ = x.shape
  xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.zeros((n, h, wd, w.shape[-1]))
  for i in range(3):
    for j in range(3):
      out += xp[:, i:i + h, j:j + wd, :] @ w[i, j].astype(np.float64)
  return out


@pytest.mark.parametrize("opt_out", [False, True])
def test_convolutions_leave_ynnpack_and_stay_correct(tmp_path, opt_out):
  import jaxlib
  if runtime.xla_defaults({}, jaxlib.__version__) is None:
    pytest.skip(f"jaxlib {jaxlib.__version__} is outside the versions the default was measured on")
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", runtime.OPT_OUT)}
  if opt_out:
    env[runtime.OPT_OUT] = "0"
  out = subprocess.run([sys.executable, "-c", _PROBE, str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert (runtime.CONV_TO_EIGEN in out.stdout) != opt_out
  hlo = "".join(p.read_text() for p in tmp_path.glob("*after_optimizations.txt"))
  assert "convolution(" in hlo
  # The default takes the convolution out of YNNPACK's fusions; without it jaxlib 0.10.2 puts one of this size
  # (not a tiny one) in a fusion.
  assert ("__ynn_fusion" in hlo) == opt_out
  y, x, w = (np.load(tmp_path / f"{n}.npy") for n in ("y", "x", "w"))
  np.testing.assert_allclose(y, _conv_reference(x, w), rtol=1e-4, atol=1e-4)


def test_jobs_that_fill_the_cores_keep_ynnpack_convolutions():
  env = {"XLA_FLAGS": f"--xla_dump_to=/x {runtime.CONV_TO_EIGEN}", "OTHER": "1"}
  alone = runtime.job_environment(env, jobs_at_once=1, cores=2)
  assert alone == env and alone is not env
  for jobs, cores in ((2, 2), (2, 3), (4, 4), (1, 1)):
    shared = runtime.job_environment(env, jobs_at_once=jobs, cores=cores)
    assert shared["XLA_FLAGS"] == "--xla_dump_to=/x" and shared[runtime.OPT_OUT] == "0" and shared["OTHER"] == "1"
    assert runtime.xla_defaults(shared, "0.10.2") is None  # the job's own import of nas adds nothing back
  assert runtime.job_environment(env, jobs_at_once=2, cores=4) == env
  own = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}
  assert runtime.job_environment(own, 2, 2)["XLA_FLAGS"] == own["XLA_FLAGS"]
  assert env["XLA_FLAGS"].endswith(runtime.CONV_TO_EIGEN)  # the caller's environment is not changed

