"""RISC-V MAC-table model: golden values computed by hand from the MPIC table and the presets' constants."""
import pathlib

import hydra.utils
import numpy as np
import pytest
from omegaconf import OmegaConf

from hardware.base import LayerSpec
from hardware.riscv import MPIC, MacTableRISCV

CONF = pathlib.Path(__file__).resolve().parents[2] / "conf" / "hardware"
CONV = LayerSpec("conv", 16, 32, 3, 1, 8, 8, name="conv")  # MACs = 8*8 * 9 * 16 * 32 = 294,912
TABLE = [[6.5, 4.0, 2.2], [3.9, 3.5, 2.1], [2.5, 2.3, 2.1]]


def preset(name):
  return hydra.utils.instantiate(OmegaConf.load(CONF / f"{name}.yaml"))


def test_compute_only_mpic_matches_plinio_by_hand():
  model = MPIC("mpic", [2, 4, 8], TABLE, 250e6, 5.3825e-3)
  c = model.cost(CONV, 4, 8, 16, 32)
  cycles = 294912 / 2.3  # table[a=8][w=4]
  assert float(c.latency_s) == pytest.approx(cycles / 250e6, rel=1e-12)  # 512.89 us
  assert float(c.energy_j) == pytest.approx(cycles / 250e6 * 5.3825e-3, rel=1e-12)  # 2.7606 uJ
  # 3 bits run on the 4-bit kernel, 5-7 on the 8-bit one.
  assert float(model.cost(CONV, 3, 8, 16, 32).latency_s) == float(c.latency_s)
  assert float(model.cost(CONV, 4, 5, 16, 32).latency_s) == float(c.latency_s)
  assert float(model.cost(CONV, 5, 5, 16, 32).latency_s) == pytest.approx(294912 / 2.1 / 250e6, rel=1e-12)


def test_riscv_preset_w4a8_conv_by_hand():
  c = preset("riscv").cost(CONV, 4, 8, 16, 32)
  compute_cycles = 294912 / 2.3  # 128,222.6
  # DMA: weights 4,608 x 4 b = 2,304 B, input 8*8*16 x 8 b = 1,024 B, output 8*8*32 x 8 b = 2,048 B.
  dma_bytes = 2304 + 1024 + 2048
  assert dma_bytes / 8.0 < compute_cycles  # double-buffered DMA hides behind compute
  latency = compute_cycles / 250e6
  assert float(c.latency_s) == pytest.approx(latency, rel=1e-12)
  assert float(c.energy_j) == pytest.approx(latency * 5.3825e-3 + dma_bytes * 15e-12, rel=1e-12)


def test_memory_makes_energy_and_latency_fronts_differ():
  model = preset("riscv")
  fc = LayerSpec("dense", 1024, 1024, name="fc")
  conv, dense = model.cost(CONV, 8, 8, 16, 32), model.cost(fc, 8, 8, 1024, 1024)
  # Energy per second of latency is higher for the dense layer (1 weight byte per MAC) than for the conv.
  assert float(dense.energy_j / dense.latency_s) > 1.1 * float(conv.energy_j / conv.latency_s)


def test_l1_tiling_restreams_the_input_once_per_weight_tile():
  model = preset("riscv")
  fc = LayerSpec("dense", 1024, 1024, name="fc")
  # 1 MiB of weights in tiles of half of 64 KiB: 32 tiles, each re-reads the 1,024 B input.
  expected = 1024 * 1024 + 1024 + 1024 * 32
  assert float(model.dma_bytes(fc, 8, 8, 1024, 1024)) == expected
  c = model.cost(fc, 8, 8, 1024, 1024)
  latency = max(1024 * 1024 / 2.1, expected / 8.0) / 250e6
  assert float(c.latency_s) == pytest.approx(latency, rel=1e-12)
  assert float(c.energy_j) == pytest.approx(latency * 5.3825e-3 + expected * 15e-12, rel=1e-12)


def test_gap8_unpacks_sub_byte_weights_at_a_cycle_cost():
  model = preset("riscv_gap8")
  c4, c8 = model.cost(CONV, 4, 8, 16, 32), model.cost(CONV, 8, 8, 16, 32)
  unpack = 4608 * 0.25  # every weight unpacked once, 0.25 cluster cycles each
  assert float(c4.latency_s) == pytest.approx((294912 / 15.5 + unpack) / 175e6, rel=1e-12)
  assert float(c8.latency_s) == pytest.approx(294912 / 15.5 / 175e6, rel=1e-12)
  # Fewer DMA bytes at 4 bits, but the unpacking makes the layer slower: no sub-byte gain on GAP8.
  assert float(model.dma_bytes(CONV, 4, 8, 16, 32)) < float(model.dma_bytes(CONV, 8, 8, 16, 32))
  assert float(c4.latency_s) > float(c8.latency_s)


def test_gap8_rejects_nothing_in_the_search_range_and_raises_above_8():
  model = preset("riscv_gap8")
  model.check_bits(np.arange(2, 9), np.arange(2, 9))
  with pytest.raises(ValueError, match="w_bits=\\[9\\]"):
    model.check_bits(9, 8)


def test_bad_constants_raise():
  with pytest.raises(ValueError, match="macs_per_cycle"):
    MacTableRISCV("x", [2, 4, 8], [[1.0, 2.0]], 1e8, 1e-3)
  with pytest.raises(ValueError, match="dma_bytes_per_cycle"):
    MacTableRISCV("x", [8], [[1.0]], 1e8, 1e-3, dma_bytes_per_cycle=0.0)
