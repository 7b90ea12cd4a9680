"""Every preset in conf/hardware passes the CostModel suite of hardware/check.py (optax-style shared suite).

The checks themselves live in ``hardware.check`` (also ``python -m hardware.check`` for anyone's preset); this
file runs each of them on each shipped preset, one pytest case per preset, layer and check.
"""
import functools
import pathlib

import pytest

from hardware import check

CONF = pathlib.Path(__file__).resolve().parents[2] / "conf" / "hardware"
PRESETS = sorted(CONF.glob("*.yaml"))
IDS = [p.stem for p in PRESETS]
LAYERS = check.LAYERS + check.TRANSFORMER_LAYERS  # every shipped model costs the transformer kinds
LAYER_IDS = [l.name for l in LAYERS]


@functools.lru_cache(maxsize=None)
def load(path: pathlib.Path):
  return check.instantiate(str(path))


@pytest.mark.parametrize("path", PRESETS, ids=IDS)
def test_instantiates_as_a_cost_model_named_after_its_file(path):
  model = load(path)
  check.check_protocol(model, str(path))
  assert isinstance(getattr(model, "bits_monotone", None), bool), "declare bits_monotone on the shipped class"


@pytest.mark.parametrize("path", PRESETS, ids=IDS)
def test_also_instantiates_without_convert_all(path):
  check.check_convert_all(load(path), str(path))


@pytest.mark.parametrize("path", PRESETS, ids=IDS)
@pytest.mark.parametrize("layer", LAYERS, ids=LAYER_IDS)
def test_grid_is_finite_nonnegative_and_broadcast(path, layer):
  check.check_grid(load(path), layer)


@pytest.mark.parametrize("path", PRESETS, ids=IDS)
@pytest.mark.parametrize("layer", LAYERS, ids=LAYER_IDS)
def test_latency_non_decreasing_in_channels(path, layer):
  check.check_channels(load(path), layer)


@pytest.mark.parametrize("path", PRESETS, ids=IDS)
@pytest.mark.parametrize("layer", LAYERS, ids=LAYER_IDS)
def test_cost_non_increasing_as_bits_go_down_where_the_hardware_gains(path, layer):
  skipped = check.check_bits_monotone(load(path), layer)
  if skipped:
    pytest.skip(skipped)


@pytest.mark.parametrize("path", PRESETS, ids=IDS)
def test_every_shipped_model_costs_the_transformer_kinds(path):
  assert check.transformer_skip(load(path)) is None


@pytest.mark.parametrize("path", PRESETS, ids=IDS)
@pytest.mark.parametrize("layer", check.SPARSE_LAYERS, ids=[l.name for l in check.SPARSE_LAYERS])
def test_nm_sparse_layers_never_cost_more_than_dense(path, layer):
  check.check_sparsity(load(path), layer)


@pytest.mark.parametrize("path", PRESETS, ids=IDS)
def test_unknown_layer_kind_raises_never_costs_zero(path):
  check.check_unknown_kind(load(path))


@pytest.mark.parametrize("path", PRESETS, ids=IDS)
@pytest.mark.parametrize("bad", check.BAD_BITS)
def test_bits_out_of_range_raise_naming_the_field(path, bad):
  check.check_bad_bits(load(path), (bad,))


@pytest.mark.parametrize("path", PRESETS, ids=IDS)
def test_inference_cost_is_finite_scalars_where_defined(path):
  check.check_inference_cost(load(path))


@pytest.mark.parametrize("path", PRESETS, ids=IDS)
def test_every_constant_cites_a_source(path):
  check.check_sources(str(path))


def test_the_suite_runs_every_check_this_file_runs():
  names = {o.check.split("[")[0] for o in check.run_checks(str(CONF / "riscv.yaml"))}
  assert names == {"instantiates", "protocol", "convert_all", "grid", "channels", "bits_monotone", "sparsity",
                   "inference_cost", "unknown_kind", "bad_bits", "sources"}
