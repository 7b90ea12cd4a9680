"""hardware.mcu.MeasuredMCU and the riscv_cv32e40p preset: the kernel counts match the C kernel's loops, the preset
is the fit of its measurements file (refitted without the simulator), the held-out check meets its goal, and
bit-widths the C kernels do not run are refused in one sentence."""
import json
import pathlib

import numpy as np
import pytest

from hardware import mcu
from hardware.base import LayerSpec
from hardware.check import instantiate

ROOT = pathlib.Path(__file__).resolve().parents[2]
PRESET = ROOT / "conf" / "hardware" / "riscv_cv32e40p.yaml"
MEASUREMENTS = ROOT / "hardware" / "data" / "cv32e40p_measurements.json"


def _loops(in_h, in_w, k, step, dil, pad_top, pad_left, out_h, out_w):
  """(positions, valid taps, row calls, tap calls) by walking hw_conv's loops (nas/deploy/c/runtime/hwnas.c)."""
  taps = rows = tap_calls = 0
  for oh in range(out_h):
    ih0 = oh * step - pad_top
    for ow in range(out_w):
      iw0 = ow * step - pad_left
      row = dil == 1 and iw0 >= 0 and iw0 + k <= in_w
      for kh in range(k):
        ih = ih0 + kh * dil
        if ih < 0 or ih >= in_h:
          continue
        if row:
          rows += 1
          taps += k
          continue
        for kw in range(k):
          iw = iw0 + kw * dil
          if 0 <= iw < in_w:
            tap_calls += 1
            taps += 1
  return out_h * out_w, taps, rows, tap_calls


@pytest.mark.parametrize("h,k,s,d", [(8, 3, 1, 1), (7, 3, 2, 1), (16, 1, 2, 1), (28, 3, 2, 1), (8, 3, 1, 2),
                                     (12, 3, 2, 2), (5, 5, 1, 1)])
def test_window_counts_are_the_c_kernels_loop_counts(h, k, s, d):
  from nas.deploy import integer
  from nas.deploy.c.emit import geometry
  w = np.zeros((k, k, 2, 2), np.int8)
  layer = integer.IntLayer("x", "conv", w, np.full(2, 8), np.ones(2), k, s, (h, h), 8, 1.0, False, np.ones(2),
                           np.zeros(2), 0, np.ones(2), np.zeros(2, np.int32), None, None, None, d)
  g = geometry(layer)
  want = _loops(h, h, k, g["step"], d, g["pad_top"], g["pad_left"], g["out_h"], g["out_w"])
  got = mcu.window_counts(h, h, k, s, d, (g["pad_top"], g["pad_left"]), (g["out_h"], g["out_w"]))
  assert got == pytest.approx(want)
  if d == 1:  # a LayerSpec's default geometry is the kernel's
    assert mcu.window_counts(h, h, k, s) == pytest.approx(want)


@pytest.fixture(scope="module")
def preset():
  return instantiate(str(PRESET))


def test_the_preset_is_the_fit_of_its_measurements(preset):
  from nas.deploy.c import calibrate as cal
  meas = json.loads(MEASUREMENTS.read_text())
  fitted = cal.fit(meas, "pulp")
  for t in mcu.TERMS:
    assert preset.coef[t] == pytest.approx(fitted["cycles"][t], rel=1e-5, abs=1e-6), t
  assert preset.inference_cycles == pytest.approx(fitted["inference_cycles"], rel=1e-5)
  assert preset.simd and preset.name == "riscv_cv32e40p"


@pytest.mark.parametrize("variant", ["pulp", "plain"])
def test_held_out_layers_meet_the_goal(variant):
  from nas.deploy.c import calibrate as cal
  meas = json.loads(MEASUREMENTS.read_text())
  h = cal.fit(meas, variant)["held_out"]
  assert h["layers"] >= 15
  assert h["spearman"] >= 0.95 and h["median_abs_rel_err"] <= 0.10, h


def test_bit_widths_without_a_c_kernel_are_refused_in_one_sentence(preset):
  preset.check_bits(np.arange(2, 9), np.arange(1, 9))
  with pytest.raises(ValueError, match=r"^w_bits=\[1\] cannot run on 'riscv_cv32e40p': [^\n]*\.$"):
    preset.check_bits(1, 8)
  with pytest.raises(ValueError, match=r"^a_bits=\[16\] cannot run"):
    preset.cost(LayerSpec("conv", 8, 8, 3, 1, 8, 8), 8, 16, 8, 8)


def test_8_bit_weights_cost_less_than_unpacked_narrower_ones_and_simd_needs_cin_multiple_of_4(preset):
  dense = LayerSpec("dense", 64, 32)
  lat = preset.cost(dense, np.array([2, 4, 8]), 8, 64, 32).latency_s
  assert lat[0] == lat[1] > lat[2]
  assert preset.bits_monotone is False
  conv = LayerSpec("conv", 16, 16, 3, 1, 8, 8)
  per_mac = preset.cost(conv, 8, 8, np.array([15, 16]), 16).latency_s / np.array([15, 16])
  assert per_mac[1] < per_mac[0]  # cin 16 takes the SIMD path
  lat = preset.cost(conv, 8, np.array([2, 8]), 16, 16).latency_s
  assert lat[0] == lat[1]  # activations are bytes: their bits change no cycle
