"""BitFusion lookup table: exact entries at measured points, linear between them, documented fallbacks."""
import functools
import gzip
import json
import pathlib

import hydra.utils
import numpy as np
import pytest
from omegaconf import OmegaConf

from hardware.base import LayerSpec
from hardware.lut import DATA_DIR, LUTModel

CONF = pathlib.Path(__file__).resolve().parents[2] / "conf" / "hardware"
PW14 = LayerSpec("conv", 96, 456, 1, 1, 14, 14, name="pw14")


@functools.lru_cache(maxsize=None)
def raw():
  with gzip.open(pathlib.Path(DATA_DIR) / "bitfusion_lut.json.gz", "rt") as f:
    return json.load(f)


@functools.lru_cache(maxsize=None)
def strict():
  return LUTModel("bitfusion_strict", "bitfusion_lut.json.gz", 1e-3, 1e-3, off_table="error")


@functools.lru_cache(maxsize=None)
def scaled():
  return hydra.utils.instantiate(OmegaConf.load(CONF / "bitfusion.yaml"))


def entry(key):
  v = raw()[key]
  return v["latency"] * 1e-3, v["energy"] * 1e-3


def test_documented_example_entries():
  # APQ's BitFusion table (mit-han-lab/apq, lut/BitFusion_new.b1.dict; hardware/data/README.md): 1x1 conv 96->456 on 14x14, W4A4 0.0622 / 0.1069, W8A8 0.0741 / 0.1342.
  c = strict().cost(PW14, np.array([4, 8]), np.array([4, 8]), 96, 456)
  np.testing.assert_allclose(c.latency_s, [0.062192e-3, 0.074136e-3], rtol=1e-12)
  np.testing.assert_allclose(c.energy_j, [0.10688197403091196e-3, 0.1342e-3], rtol=1e-3)


@pytest.mark.parametrize("model", [strict, scaled], ids=["error", "scale"])
def test_every_sampled_entry_is_returned_exactly(model):
  keys = [k for k in raw() if k.startswith("(")]
  rng = np.random.default_rng(0)
  for key in rng.choice(keys, size=150, replace=False):
    shape, bits = key.rsplit("-", 1)
    ci, co, h, k, s, _, g = (int(v) for v in shape.strip("()").split(","))
    layer = LayerSpec("dwconv" if g > 1 else "conv", ci, co, k, s, h, h)
    w, a = int(bits[1]), int(bits[3])
    c = model().cost(layer, w, a, ci, co)
    lat, en = entry(key)
    assert float(c.latency_s) == pytest.approx(lat, rel=1e-12), key
    assert float(c.energy_j) == pytest.approx(en, rel=1e-12), key


def test_linear_between_measured_channel_counts():
  # Along cout at cin = 96 (456 and 464 measured).
  c = strict().cost(PW14, 4, 4, 96, 460)
  lo, hi = entry("(96, 456, 14, 1, 1, 0, 1)-W4A4"), entry("(96, 464, 14, 1, 1, 0, 1)-W4A4")
  assert float(c.latency_s) == pytest.approx((lo[0] + hi[0]) / 2, rel=1e-12)
  assert float(c.energy_j) == pytest.approx((lo[1] + hi[1]) / 2, rel=1e-12)
  # Along cin at cout = 96, a quarter of the way from 320 to 328.
  c = strict().cost(PW14, 8, 8, 322, 96)
  lo, hi = entry("(320, 96, 14, 1, 1, 0, 1)-W8A8"), entry("(328, 96, 14, 1, 1, 0, 1)-W8A8")
  assert float(c.latency_s) == pytest.approx(0.75 * lo[0] + 0.25 * hi[0], rel=1e-12)
  # Depthwise: one channel count.
  dw = LayerSpec("dwconv", 320, 320, 3, 1, 14, 14)
  c = strict().cost(dw, 6, 6, 324, 324)
  lo, hi = entry("(320, 320, 14, 3, 1, 1, 320)-W6A6"), entry("(328, 328, 14, 3, 1, 1, 328)-W6A6")
  assert float(c.latency_s) == pytest.approx((lo[0] + hi[0]) / 2, rel=1e-12)


def test_bits_run_at_the_next_precision_the_table_has():
  m = strict()
  assert float(m.cost(PW14, 3, 5, 96, 456).latency_s) == pytest.approx(entry("(96, 456, 14, 1, 1, 0, 1)-W4A6")[0])
  assert float(m.cost(PW14, 7, 2, 96, 456).latency_s) == pytest.approx(entry("(96, 456, 14, 1, 1, 0, 1)-W8A4")[0])
  # k=7 depthwise rows have no A4: W4A4 runs as W4A6.
  dw7 = LayerSpec("dwconv", 320, 320, 7, 1, 14, 14)
  assert "(320, 320, 14, 7, 1, 3, 320)-W4A4" not in raw()
  assert float(m.cost(dw7, 4, 4, 320, 320).latency_s) == pytest.approx(entry("(320, 320, 14, 7, 1, 3, 320)-W4A6")[0])
  with pytest.raises(ValueError, match="w_bits"):
    m.check_bits(9, 8)


def test_off_table_raises_naming_the_layer_in_error_mode():
  with pytest.raises(ValueError, match="'tiny'.*not in table"):
    strict().cost(LayerSpec("conv", 16, 32, 3, 1, 8, 8, name="tiny"), 8, 8, 16, 32)
  with pytest.raises(ValueError, match="'pw14'.*cin=100 cout=400"):
    strict().cost(PW14, 8, 8, 100, 400)  # family known, but off its measured lines


def test_scale_mode_extrapolates_smoothly():
  m = scaled()
  # Off the lines but inside a measured family: close to its neighbours on the line (within 15%).
  near = float(m.cost(PW14, 8, 8, 100, 456).latency_s)
  assert near == pytest.approx(entry("(96, 456, 14, 1, 1, 0, 1)-W8A8")[0], rel=0.15)
  # Unknown family: positive, finite, larger with more channels.
  tiny = LayerSpec("conv", 16, 32, 3, 1, 8, 8)
  lat = m.cost(tiny, 8, 8, np.array([[8], [16]]), np.array([[16, 32]])).latency_s
  assert np.all(lat > 0) and lat[0, 0] < lat[1, 1]


def test_missing_table_file_raises():
  with pytest.raises(ValueError, match="not found"):
    LUTModel("x", "no_such_table.json", 1e-3, 1e-3)
