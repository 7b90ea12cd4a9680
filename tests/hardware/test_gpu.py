"""Tensor-core GPU roofline: golden values by hand from the A100 and H100 presets."""
import pathlib

import hydra.utils
import pytest
from omegaconf import OmegaConf

from hardware.base import LayerSpec

CONF = pathlib.Path(__file__).resolve().parents[2] / "conf" / "hardware"
BIG = LayerSpec("conv", 256, 256, 3, 1, 56, 56)


def preset(name):
  return hydra.utils.instantiate(OmegaConf.load(CONF / f"{name}.yaml"))


def test_a100_int8_conv_by_hand():
  c = preset("gpu").cost(BIG, 8, 8, 256, 256)
  macs = 3136 * 9 * 256 * 256  # M = 56*56 is a multiple of 16, channels of 16: no padding
  traffic = 9 * 256 * 256 + 2 * 56 * 56 * 256  # bytes at INT8
  latency = 5e-6 + max(2 * macs / (624e12 * 0.5), traffic / 1555e9)
  assert float(c.latency_s) == pytest.approx(latency, rel=1e-12)
  assert float(c.energy_j) == pytest.approx(400.0 * latency, rel=1e-12)


def test_precision_falls_back_to_the_next_one_up():
  a100, h100 = preset("gpu"), preset("gpu_h100")
  assert float(a100.precision(4, 4)) == 4 and float(a100.precision(4, 8)) == 8 and float(a100.precision(2, 3)) == 4
  assert float(h100.precision(4, 4)) == 8  # no INT4 tensor cores on H100
  assert float(h100.cost(BIG, 4, 4, 256, 256).latency_s) == float(h100.cost(BIG, 8, 8, 256, 256).latency_s)
  assert float(a100.cost(BIG, 4, 4, 256, 256).latency_s) < float(a100.cost(BIG, 8, 8, 256, 256).latency_s)


def test_channels_pad_to_the_tile():
  model = preset("gpu")
  # Compute-bound layer: cin 17 pays for 32 channels at INT8 (multiple of 16).
  assert float(model.cost(BIG, 8, 8, 17, 256).latency_s) == float(model.cost(BIG, 8, 8, 32, 256).latency_s)
  assert float(model.cost(BIG, 8, 8, 16, 256).latency_s) < float(model.cost(BIG, 8, 8, 17, 256).latency_s)


def test_depthwise_runs_on_cuda_cores():
  layer = LayerSpec("dwconv", 256, 256, 3, 1, 56, 56)
  c = preset("gpu").cost(layer, 8, 8, 256, 256)
  compute = 2 * 3136 * 9 * 256 / 19.5e12
  traffic = 9 * 256 + 2 * 3136 * 256
  assert float(c.latency_s) == pytest.approx(5e-6 + max(compute, traffic / 1555e9), rel=1e-12)
