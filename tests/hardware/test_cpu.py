"""CPU roofline: golden values by hand from the Cortex-A72 preset's constants."""
import pathlib

import hydra.utils
import pytest
from omegaconf import OmegaConf

from hardware.base import LayerSpec
from hardware.cpu import SIMDCPU, input_read_fraction

CONF = pathlib.Path(__file__).resolve().parents[2] / "conf" / "hardware"


def a72():
  return hydra.utils.instantiate(OmegaConf.load(CONF / "cpu.yaml"))


def test_compute_bound_conv_by_hand():
  layer = LayerSpec("conv", 16, 32, 3, 1, 8, 8)
  c = a72().cost(layer, 8, 8, 16, 32)
  macs = 8 * 8 * 9 * 16 * 32  # cin 16 is already a multiple of 8 lanes
  traffic = 4608 + 1024 + 2048  # weights + input + output bytes at 8 bits
  latency = 20e-6 + max(macs / 24e9, traffic / 4.8e9)
  assert float(c.latency_s) == pytest.approx(latency, rel=1e-12)
  assert float(c.energy_j) == pytest.approx(0.3e-12 * macs + 162.5e-12 * traffic + 2.7 * latency, rel=1e-12)


def test_sub_byte_gains_memory_not_compute():
  model = a72()
  conv = LayerSpec("conv", 16, 32, 3, 1, 8, 8)
  assert float(model.cost(conv, 4, 4, 16, 32).latency_s) == float(model.cost(conv, 8, 8, 16, 32).latency_s)
  fc = LayerSpec("dense", 1024, 1024)  # memory-bound: 1 MiB of weights
  l8 = float(model.cost(fc, 8, 8, 1024, 1024).latency_s)
  l4 = float(model.cost(fc, 4, 8, 1024, 1024).latency_s)
  assert l8 == pytest.approx(20e-6 + (1024 * 1024 + 2048) / 4.8e9, rel=1e-12)
  assert l4 == pytest.approx(20e-6 + (512 * 1024 + 2048) / 4.8e9, rel=1e-12)


def test_lane_padding_and_strided_input_reads():
  model = SIMDCPU("t", {"conv": 1e9, "dwconv": 1e9, "dense": 1e9}, 1e15, 0.0, 0.0, 0.0, 0.0,
                  cin_multiple=8, cout_multiple=16)
  layer = LayerSpec("conv", 12, 20, 1, 1, 4, 4)
  assert float(model.cost(layer, 8, 8, 12, 20).latency_s) == pytest.approx(16 * 16 * 32 / 1e9)
  assert input_read_fraction(LayerSpec("conv", 8, 8, 1, 2, 8, 8)) == 0.25
  assert input_read_fraction(LayerSpec("conv", 8, 8, 3, 2, 8, 8)) == 1.0


def test_bad_constants_raise():
  with pytest.raises(ValueError, match="mac_rate"):
    SIMDCPU("t", {"conv": 1e9}, 1e9, 0.0, 0.0, 0.0, 0.0)
  with pytest.raises(ValueError, match="mem_bw"):
    SIMDCPU("t", 1e9, 0.0, 0.0, 0.0, 0.0, 0.0)


def test_few_channel_convolutions_take_the_fallback_rate():
  model = SIMDCPU("t", {"conv": 1e11, "dwconv": 1e9, "dense": 1e9}, 1e15, 0.0, 0.0, 0.0, 0.0,
                  cin_multiple=64, fallback_channels=16, fallback_mac_rate=4e9)
  layer = LayerSpec("conv", 16, 16, 3, 1, 8, 8)
  macs16 = 64 * 9 * 16 * 16
  assert float(model.cost(layer, 8, 8, 16, 16).latency_s) == pytest.approx(macs16 / 4e9)  # no lane padding
  assert float(model.cost(layer, 8, 8, 16, 24).latency_s) == pytest.approx(64 * 9 * 64 * 24 / 1e11)
  with pytest.raises(ValueError, match="fallback_mac_rate"):
    SIMDCPU("t", 1e9, 1e9, 0.0, 0.0, 0.0, 0.0, fallback_channels=16)


def test_batch_size_shares_overhead_and_weights_by_hand():
  layer = LayerSpec("conv", 16, 32, 3, 1, 8, 8)
  model = hydra.utils.instantiate(OmegaConf.load(CONF / "cpu.yaml"), batch_size=8)
  c = model.cost(layer, 8, 8, 16, 32)
  macs = 8 * 8 * 9 * 16 * 32
  traffic = 4608 / 8 + 1024 + 2048  # weights once per batch of 8, activations per image
  latency = 20e-6 / 8 + max(macs / 24e9, traffic / 4.8e9)
  assert float(c.latency_s) == pytest.approx(latency, rel=1e-12)
  assert float(c.energy_j) == pytest.approx(0.3e-12 * macs + 162.5e-12 * traffic + 2.7 * latency, rel=1e-12)
