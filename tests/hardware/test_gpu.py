"""Tensor-core GPU roofline: golden values by hand from the A100 and H100 presets."""
import pathlib

import hydra.utils
import pytest
from omegaconf import OmegaConf

from hardware.base import LayerSpec
from hardware.gpu import TensorCoreGPU

CONF = pathlib.Path(__file__).resolve().parents[2] / "conf" / "hardware"
BIG = LayerSpec("conv", 256, 256, 3, 1, 56, 56)


def preset(name):
  return hydra.utils.instantiate(OmegaConf.load(CONF / f"{name}.yaml"))


def test_a100_int8_conv_by_hand():
  # The preset: INT8 at 0.119 of 624 TOPS, batch 8 per kernel; cost per image.
  c = preset("gpu").cost(BIG, 8, 8, 256, 256)
  macs = 8 * 3136 * 9 * 256 * 256  # M = 8 * 56 * 56 is a multiple of 16, channels of 16: no padding
  traffic = 9 * 256 * 256 + 8 * 2 * 56 * 56 * 256  # bytes at INT8, weights once per batch
  latency = (5e-6 + max(2 * macs / (624e12 * 0.119), traffic / 1555e9)) / 8
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
  c = preset("gpu").cost(layer, 8, 8, 256, 256)  # batch 8: 8 images per kernel, cost per image
  compute = 8 * 2 * 3136 * 9 * 256 / 19.5e12
  traffic = 9 * 256 + 8 * 2 * 3136 * 256
  assert float(c.latency_s) == pytest.approx((5e-6 + max(compute, traffic / 1555e9)) / 8, rel=1e-12)


def test_batch_size_shares_launch_and_weights_by_hand():
  # A100 preset at batch 4: M = 4 * 56 * 56 = 12,544 (a multiple of 16); weights read once, activations 4x.
  model = hydra.utils.instantiate(OmegaConf.load(CONF / "gpu.yaml"), batch_size=4)
  c = model.cost(BIG, 8, 8, 256, 256)
  macs = 4 * 3136 * 9 * 256 * 256
  traffic = 9 * 256 * 256 + 4 * 2 * 56 * 56 * 256
  per_image = (5e-6 + max(2 * macs / (624e12 * 0.119), traffic / 1555e9)) / 4
  assert float(c.latency_s) == pytest.approx(per_image, rel=1e-12)
  assert float(c.energy_j) == pytest.approx(400.0 * per_image, rel=1e-12)
  # A launch-bound tiny layer: per-image cost falls almost 4x.
  tiny = LayerSpec("conv", 16, 16, 3, 1, 8, 8)
  one = float(hydra.utils.instantiate(OmegaConf.load(CONF / "gpu.yaml"), batch_size=1).cost(tiny, 8, 8, 16, 16).latency_s)
  assert float(model.cost(tiny, 8, 8, 16, 16).latency_s) == pytest.approx(one / 4, rel=0.01)


def test_per_precision_efficiency_and_bad_batch():
  cfg = OmegaConf.load(CONF / "gpu.yaml")
  model = hydra.utils.instantiate(cfg, efficiency={4: 0.25, 8: 0.5, 16: 0.5}, batch_size=1)
  macs = 3136 * 9 * 256 * 256
  assert float(model.cost(BIG, 4, 4, 256, 256).latency_s) == pytest.approx(
      5e-6 + max(2 * macs / (1248e12 * 0.25), (9 * 256 * 256 + 2 * 3136 * 256) * 0.5 / 1555e9), rel=1e-12)
  kwargs = {k: v for k, v in OmegaConf.to_container(cfg).items() if k != "_target_"}
  with pytest.raises(ValueError, match="efficiency of 'gpu' needs an entry for each precision"):
    TensorCoreGPU(**{**kwargs, "efficiency": {4: 0.25, 8: 0.5}})
  for bad in (0, 2.5, -1):
    with pytest.raises(ValueError, match=r"batch_size=.* must be an integer >= 1 .*hardware.batch_size=1"):
      TensorCoreGPU(**{**kwargs, "batch_size": bad})


def test_t4_fit_validates_on_layers_it_did_not_see():
  # The shipped public T4 measurements (HAWQ-V3's TVM logs, apache/tvm PR #6121): fitted on ResNet-18's
  # layers, the preset must rank ResNet-50's held-out layers well and predict their INT4/INT8 ratio.
  from hardware import fit_gpu
  rows = fit_gpu.load_layers(fit_gpu.DATA)
  base = fit_gpu._base_kwargs(fit_gpu.BASE)
  fitted = fit_gpu.fit(base, [r for r in rows if r["source"] == "hawq-resnet18"])
  shipped = preset("gpu_t4")
  # The preset holds what the fit gives (3 significant digits).
  assert shipped.efficiency[4] == pytest.approx(fitted["efficiency"][4], rel=5e-3)
  assert shipped.efficiency[8] == pytest.approx(fitted["efficiency"][8], rel=5e-3)
  assert shipped.launch_overhead_s == pytest.approx(fitted["launch_overhead_s"], rel=5e-3)
  held_out = fit_gpu.validate(shipped, [r for r in rows if r["source"] == "hawq-resnet50"])
  assert held_out["layers"] == 51 and held_out["ratio_pairs"] == 25
  assert held_out["spearman"] > 0.85 and held_out["median_rel_error"] < 0.25
  assert held_out["int4_int8_ratio_median_abs_error"] < 0.1


def test_spearman_against_a_hand_ranked_example():
  from hardware.fit_gpu import spearman
  # ranks x: 0 1 2 3, y: 0 2 1 3 -> d = 0, 1, 1, 0: rho = 1 - 6 * 2 / (4 * 15) = 0.8
  assert spearman([1.0, 2.0, 3.0, 4.0], [10.0, 30.0, 20.0, 40.0]) == pytest.approx(0.8)


def test_throughput_preset_is_the_a100_preset_at_batch_4096():
  # gpu_throughput.yaml copies gpu.yaml's constants (flat presets): any drift between the two fails here.
  base = OmegaConf.to_container(OmegaConf.load(CONF / "gpu.yaml"))
  wide = OmegaConf.to_container(OmegaConf.load(CONF / "gpu_throughput.yaml"))
  assert (wide.pop("name"), wide.pop("batch_size")) == ("gpu_throughput", 4096)
  assert (base.pop("name"), base.pop("batch_size")) == ("gpu", 8)
  assert wide == base
  # Per image at batch 4,096 a launch costs 5 us / 4,096; the INT8 GEMM of a token-wise linear by hand.
  layer = LayerSpec("linear", 64, 128, in_h=17, name="fc1")
  m = 17 * 4096  # rows: tokens x batch, a multiple of the 16-row tile
  compute = 2 * m * 64 * 128 / (624e12 * 0.119)
  traffic = 64 * 128 + 4096 * 17 * (64 + 128)  # INT8 bytes: weights once, inputs and outputs per image
  expected = (5e-6 + max(compute, traffic / 1555e9)) / 4096
  assert float(preset("gpu_throughput").cost(layer, 8, 8, 64, 128).latency_s) == pytest.approx(expected, rel=1e-12)
