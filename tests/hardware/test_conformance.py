"""Every preset in conf/hardware obeys the CostModel protocol (optax-style shared suite).

Monotonicity in bits is asserted only where the hardware gains from fewer bits (see BITS_MONOTONE).
Latency is non-decreasing in channel counts for every model, except across a CPU's few-channel fallback
(``fallback_channels`` of cpu_host: XLA runs convolutions with <= 16 channels on a slower generic loop),
where it is checked on each side.
"""
import dataclasses
import functools
import pathlib
import re

import hydra.utils
import numpy as np
import pytest
from omegaconf import OmegaConf

from hardware.base import CostModel, LayerSpec, choice_grid

CONF = pathlib.Path(__file__).resolve().parents[2] / "conf" / "hardware"
PRESETS = sorted(CONF.glob("*.yaml"))
IDS = [p.stem for p in PRESETS]

LAYERS = [
    LayerSpec("conv", 16, 32, 3, 1, 8, 8, name="conv3x3"),
    LayerSpec("conv", 64, 128, 1, 2, 16, 16, name="pw_stride2"),
    LayerSpec("dwconv", 64, 64, 3, 2, 16, 16, name="dw3x3"),
    LayerSpec("dense", 256, 10, name="fc"),
]
BITS = [2, 3, 4, 5, 6, 7, 8]
CIN = [8, 16, 24, 32, 64]
COUT = [8, 16, 32, 48, 64]

# Why a model is or is not monotone in bits (latency and energy never rise as bits go down):
BITS_MONOTONE = {
    "SIMDCPU": "yes: compute unpacks to int8 (equal), packed memory traffic shrinks",
    "TensorCoreGPU": "yes when channels are multiples of 32: a narrower MMA is faster and moves fewer bytes "
                     "(with fewer channels INT4's 32-channel padding can outweigh its 2x rate)",
    "DSPPackedFPGA": "yes: more MACs per DSP and fewer DDR bytes",
    "BitSerialFPGA": "yes: time ~ w x a",
    "MacTableRISCV": "yes for MPIC (the table rises as bits fall); NO for a core that unpacks sub-byte data "
                     "(GAP8): unpacking costs cycles",
    "LUTModel": "no: the BitFusion table itself has 400 entries where fewer bits cost more energy",
}


@functools.lru_cache(maxsize=None)
def load(path: pathlib.Path):
  return hydra.utils.instantiate(OmegaConf.load(path))


def channel_values(model):
  """Channel counts along which latency must not fall: one side of a CPU's few-channel fallback path."""
  fallback = getattr(model, "fallback_channels", 0)
  if fallback:  # XLA's generic loop for <= fallback channels is slower than the library kernel above it
    return [c for c in CIN if c > fallback] or [fallback + 8, fallback + 16], \
           [c for c in COUT if c > fallback] or [fallback + 8, fallback + 16]
  return CIN, COUT


def bits_monotone(model) -> bool:
  cls = type(model).__name__
  if cls == "MacTableRISCV":
    return model.unpack_cycles_per_element == 0
  return cls in ("SIMDCPU", "TensorCoreGPU", "DSPPackedFPGA", "BitSerialFPGA")


@pytest.mark.parametrize("path", PRESETS, ids=IDS)
def test_instantiates_as_a_cost_model_named_after_its_file(path):
  model = load(path)
  assert isinstance(model, CostModel)
  assert model.name == path.stem
  assert type(model).__name__ in BITS_MONOTONE, "state the new model's bit monotonicity in BITS_MONOTONE"


@pytest.mark.parametrize("path", PRESETS, ids=IDS)
def test_also_instantiates_with_convert_all(path):
  # experiments/search.py instantiates with _convert_="all" (plain dicts and lists).
  model = hydra.utils.instantiate(OmegaConf.load(path), _convert_="all")
  layer = LAYERS[0]
  a, b = model.cost(layer, 8, 8, 16, 32), load(path).cost(layer, 8, 8, 16, 32)
  assert float(a.latency_s) == float(b.latency_s) and float(a.energy_j) == float(b.energy_j)


@pytest.mark.parametrize("path", PRESETS, ids=IDS)
@pytest.mark.parametrize("layer", LAYERS, ids=[l.name for l in LAYERS])
def test_grid_is_finite_nonnegative_and_broadcast(path, layer):
  model = load(path)
  c = choice_grid(model, layer, BITS, BITS, CIN, COUT)
  n_out = 1 if layer.kind == "dwconv" else len(COUT)
  assert c.latency_s.shape == c.energy_j.shape == (len(BITS), len(BITS), len(CIN), n_out)
  for arr in (c.latency_s, c.energy_j):
    assert np.all(np.isfinite(arr)) and np.all(arr > 0)
  # Direct call with mixed shapes: (3, 1) x (1, 2) x scalar x scalar -> (3, 2), same values as the grid.
  d = model.cost(layer, np.array([[2], [4], [8]]), np.array([[4, 8]]), 16, 16 if layer.kind == "dwconv" else 32)
  assert np.shape(d.latency_s) == np.shape(d.energy_j) == (3, 2)
  single = model.cost(layer, 4, 8, 16, 16 if layer.kind == "dwconv" else 32)
  np.testing.assert_allclose(np.asarray(d.latency_s)[1, 1], single.latency_s, rtol=1e-12)


@pytest.mark.parametrize("path", PRESETS, ids=IDS)
@pytest.mark.parametrize("layer", LAYERS, ids=[l.name for l in LAYERS])
def test_latency_non_decreasing_in_channels(path, layer):
  model = load(path)
  cin, cout = channel_values(model)
  c = choice_grid(model, layer, [4, 8], [4, 8], cin, cout)
  lat = c.latency_s
  assert np.all(np.diff(lat, axis=2) >= -1e-12 * lat[:, :, 1:, :])
  assert np.all(np.diff(lat, axis=3) >= -1e-12 * lat[:, :, :, 1:])


@pytest.mark.parametrize("path", PRESETS, ids=IDS)
@pytest.mark.parametrize("layer", LAYERS, ids=[l.name for l in LAYERS])
def test_cost_non_increasing_as_bits_go_down_where_the_hardware_gains(path, layer):
  model = load(path)
  if not bits_monotone(model):
    pytest.skip(f"{type(model).__name__}: {BITS_MONOTONE[type(model).__name__]}")
  c = choice_grid(model, layer, BITS, BITS, [32, 64], [32, 64])
  for arr in (c.latency_s, c.energy_j):
    assert np.all(np.diff(arr, axis=0) >= -1e-12 * arr[1:]), "cost fell as weight bits rose"
    assert np.all(np.diff(arr, axis=1) >= -1e-12 * arr[:, 1:]), "cost fell as activation bits rose"


@pytest.mark.parametrize("path", PRESETS, ids=IDS)
def test_unknown_layer_kind_raises_never_costs_zero(path):
  model = load(path)
  bad = object.__new__(LayerSpec)
  for field in dataclasses.fields(LayerSpec):
    object.__setattr__(bad, field.name, getattr(LAYERS[0], field.name))
  object.__setattr__(bad, "kind", "pool")
  with pytest.raises(ValueError, match="pool"):
    model.cost(bad, 8, 8, 16, 32)
  with pytest.raises(ValueError, match="pool"):
    choice_grid(model, bad, [8], [8], [16], [32])


@pytest.mark.parametrize("path", PRESETS, ids=IDS)
@pytest.mark.parametrize("bad", [0, 2.5, 33])
def test_bits_out_of_range_raise_naming_the_field(path, bad):
  model = load(path)
  with pytest.raises(ValueError, match=r"w_bits=.*choose"):
    model.check_bits(bad, 8)
  with pytest.raises(ValueError, match=r"a_bits=.*choose"):
    model.check_bits(8, bad)
  with pytest.raises(ValueError, match="w_bits"):
    model.cost(LAYERS[0], bad, 8, 16, 32)
  model.check_bits(np.array(BITS), np.array(BITS))  # the search's range runs everywhere


@pytest.mark.parametrize("path", PRESETS, ids=IDS)
def test_every_constant_cites_a_source(path):
  """Each top-level key has a comment on its line, the line above, or one of its child lines."""
  lines = path.read_text().splitlines()
  for i, line in enumerate(lines):
    match = re.match(r"^([A-Za-z_]\w*):", line)
    if not match or match.group(1) in ("_target_", "name"):
      continue
    block = [line]
    for nxt in lines[i + 1:]:
      if nxt and not nxt.startswith((" ", "-")):
        break
      block.append(nxt)
    above = lines[i - 1] if i else ""
    assert "#" in "".join(block) or above.lstrip().startswith("#"), f"{path.name}: {match.group(1)} has no source"
