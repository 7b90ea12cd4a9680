"""Data-parallel training over two (emulated) CPU devices matches single-device training."""
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[3]

SCRIPT = r"""
import jax, numpy as np
from flax import nnx
from nas.train.datasets import load_digits
from nas.models import build_model
from nas.models.space import SearchSpace
from nas.train.finetune import TrainConfig, calibrate, finetune
print("devices", jax.local_device_count())
data = load_digits(limit=256)
# A float network: the check is about sharding, and LSQ rounding would turn reduction-order noise into
# flipped roundings that then compound over steps.
model = build_model("digits_cnn", SearchSpace(quantize=False, width_mults=(1.0,)), seed=0,
                    widths=(8, 16), strides=(1, 2))
calibrate(model, data.x_train[:64], mode="argmax")
out = finetune(model, data, TrainConfig(steps=10, batch_size=64, seed=0))
leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
np.savez(OUT, *[np.asarray(x) for x in leaves])
print("sharding", leaves[0].sharding)
"""


def _run(tmp_path, devices):
  out = tmp_path / f"params{devices}.npz"
  env = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu")
  p = subprocess.run([sys.executable, "-c", f"OUT = {str(out)!r}\n" + SCRIPT], env=env, cwd=ROOT,
                     capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-2000:]
  assert f"devices {devices}" in p.stdout
  return p.stdout, np.load(out)


import numpy as np  # noqa: E402


def test_two_devices_match_one(tmp_path):
  _, one = _run(tmp_path, 1)
  log, two = _run(tmp_path, 2)
  assert "NamedSharding" in log or "PositionalSharding" in log or "GSPMDSharding" in log, log
  for k in one.files:
    # Same maths, different reduction order across devices: equal to float32 rounding.
    np.testing.assert_allclose(one[k], two[k], rtol=1e-4, atol=1e-6)
