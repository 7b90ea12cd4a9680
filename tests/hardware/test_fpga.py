"""FPGA models: golden values by hand from the ZCU102 presets."""
import pathlib

import hydra.utils
import pytest
from omegaconf import OmegaConf

from hardware.base import LayerSpec

CONF = pathlib.Path(__file__).resolve().parents[2] / "conf" / "hardware"
CONV = LayerSpec("conv", 64, 64, 3, 1, 28, 28)  # MACs = 784 * 9 * 64 * 64 = 28,901,376


def preset(name):
  return hydra.utils.instantiate(OmegaConf.load(CONF / f"{name}.yaml"))


def test_dsp_packing_by_hand():
  model = preset("fpga")
  macs = 784 * 9 * 64 * 64
  lat8 = 5e-6 + macs / (2520 * 2 * 281e6 * 0.5)  # 36 KB of weights and 98 KB of activations stay on chip
  lat4 = 5e-6 + macs / (2520 * 4 * 281e6 * 0.5)
  c8, c4 = model.cost(CONV, 8, 8, 64, 64), model.cost(CONV, 4, 4, 64, 64)
  assert float(c8.latency_s) == pytest.approx(lat8, rel=1e-12)
  assert float(c8.energy_j) == pytest.approx(7.9 * lat8, rel=1e-12)
  assert float(c4.latency_s) == pytest.approx(lat4, rel=1e-12)
  # Packing precision is max(w, a), and 6 bits run in the 8-bit mode.
  assert float(model.cost(CONV, 4, 8, 64, 64).latency_s) == float(c8.latency_s)
  assert float(model.cost(CONV, 6, 4, 64, 64).latency_s) == float(c8.latency_s)


def test_weights_beyond_bram_spill_to_ddr():
  model = preset("fpga")
  big = LayerSpec("conv", 512, 512, 3, 1, 4, 4)  # 2,359,296 B of int8 weights > 2.05 MB buffer
  spill = 9 * 512 * 512 - 2.05e6
  assert float(model.ddr_bytes(big, 8, 8, 512, 512)) == pytest.approx(spill)
  c = model.cost(big, 8, 8, 512, 512)
  compute = 16 * 9 * 512 * 512 / (2520 * 2 * 281e6 * 0.5)
  latency = 5e-6 + max(compute, spill / 19.2e9)
  assert float(c.latency_s) == pytest.approx(latency, rel=1e-12)
  assert float(c.energy_j) == pytest.approx(7.9 * latency + spill * 162.5e-12, rel=1e-12)
  # At 4 bits the weights fit: no DDR traffic at all.
  assert float(model.ddr_bytes(big, 4, 8, 512, 512)) == 0.0


def test_bit_serial_time_is_proportional_to_w_times_a():
  model = preset("fpga_bismo")
  macs = 784 * 9 * 64 * 64
  for w, a in [(2, 2), (3, 5), (8, 8)]:
    expected = 5e-6 + macs * w * a / (7.7e12 * 0.5)
    assert float(model.cost(CONV, w, a, 64, 64).latency_s) == pytest.approx(expected, rel=1e-12)


def test_batch_size_shares_overhead_and_spills_the_batch_activations():
  model = hydra.utils.instantiate(OmegaConf.load(CONF / "fpga.yaml"), batch_size=32)
  macs = 784 * 9 * 64 * 64
  # 32 images of 2 x 50,176 B activations = 3,211,264 B > 2.05 MB buffer: the excess is written and read back.
  spill = 2 * (32 * 2 * 784 * 64 - 2.05e6) / 32
  assert float(model.ddr_bytes(CONV, 8, 8, 64, 64)) == pytest.approx(spill)
  latency = 5e-6 / 32 + max(macs / (2520 * 2 * 281e6 * 0.5), spill / 19.2e9)
  c = model.cost(CONV, 8, 8, 64, 64)
  assert float(c.latency_s) == pytest.approx(latency, rel=1e-12)
  assert float(c.energy_j) == pytest.approx(7.9 * latency + spill * 162.5e-12, rel=1e-12)
