"""Transformer kinds (linear, matmul, softmax, layernorm) and N:M weights on every cost model: golden values
worked by hand from the shipped presets' constants (the arithmetic is in the comments), not from the code."""
import ast
import gzip
import json
import pathlib
import re

import hydra.utils
import numpy as np
import pytest
from omegaconf import OmegaConf

from hardware.base import LayerSpec

CONF = pathlib.Path(__file__).resolve().parents[2] / "conf" / "hardware"
DATA = pathlib.Path(__file__).resolve().parents[2] / "hardware" / "data"

# A small encoder block (17 tokens, 4 heads of 16) and ViT-B/16 shapes (197 tokens, 12 heads of 64).
FC = LayerSpec("linear", 64, 128, in_h=17, name="fc")
QK = LayerSpec("matmul", 16, 4 * 17, in_h=17, head_cols=17, name="qk")
SOFTMAX = LayerSpec("softmax", 4 * 17, 4 * 17, in_h=17, name="softmax")
LN = LayerSpec("layernorm", 64, 64, in_h=17, name="ln")
VIT_FC1 = LayerSpec("linear", 768, 3072, in_h=197, name="vit_fc1")
VIT_QK = LayerSpec("matmul", 64, 12 * 197, in_h=197, head_cols=197, name="vit_qk")
VIT_LN = LayerSpec("layernorm", 768, 768, in_h=197, name="vit_ln")
VIT_SOFTMAX = LayerSpec("softmax", 12 * 197, 12 * 197, in_h=197, name="vit_softmax")
GEMV_LIKE = LayerSpec("linear", 512, 512, in_h=4, name="few_tokens")  # memory-bound on a CPU at 8 bits


def preset(name, **overrides):
  return hydra.utils.instantiate(OmegaConf.load(CONF / f"{name}.yaml"), **overrides)


def cost(model, layer, w, a, cin=None, cout=None):
  c = model.cost(layer, w, a, layer.cin if cin is None else cin, layer.cout if cout is None else cout)
  return float(c.latency_s), float(c.energy_j)


def sparse(layer, nm):
  return LayerSpec(layer.kind, layer.cin, layer.cout, in_h=layer.in_h, name=layer.name, nm=nm)


# ---------------------------------------------------------------- CPU (SIMDCPU), `cpu`: Cortex-A72 preset
# mac_rate conv 24e9 (linear / matmul take it), mem_bw 4.8e9, overhead 20 us (every kind), cin_multiple 8,
# e_mac 0.3 pJ, e_byte 162.5 pJ, static 2.7 W, float_ops_per_s 24e9, e_float_op 2.3 pJ, batch 1.

def test_cpu_linear_by_hand():
  # MACs 17 x 64 x 128 = 139,264 (64 is a multiple of 8: no padding); bytes: weights 8,192 + input 17 x 64 =
  # 1,088 + output 17 x 128 = 2,176 -> 11,456. compute 5.80 us > memory 2.39 us.
  lat, en = cost(preset("cpu"), FC, 8, 8)
  assert lat == pytest.approx(20e-6 + 139264 / 24e9, rel=1e-12)
  assert en == pytest.approx(0.3e-12 * 139264 + 162.5e-12 * 11456 + 2.7 * lat, rel=1e-12)


def test_cpu_matmul_pads_each_head_and_reads_the_second_operand_per_image():
  # cpu_x86_vnni: cin_multiple 4, cout_multiple 16, conv rate 172.8e9, mem_bw 12e9, overhead 5 us, batch 1.
  # 4 heads of 17 x 16 by 16 x 17: each head's 17 columns pad to 32: MACs 4 x 17 x 16 x 32 = 34,816 (unpadded
  # 18,496). Bytes: K 16 x 68 = 1,088 + Q 17 x 16 x 4 = 1,088 + scores 17 x 68 = 1,156 -> 3,332 at 8 bits.
  lat, en = cost(preset("cpu_x86_vnni"), QK, 8, 8)
  assert lat == pytest.approx(5e-6 + max(34816 / 172.8e9, 3332 / 12e9), rel=1e-12)
  assert en == pytest.approx(0.3e-12 * 34816 + 162.5e-12 * 3332 + 7.3 * lat, rel=1e-12)
  # At batch 4 the second operand is still read per image (it is an activation): per-image bytes unchanged,
  # only the 5 us call overhead is shared.
  lat4, _ = cost(preset("cpu_x86_vnni", batch_size=4), QK, 8, 8)
  assert lat4 == pytest.approx(5e-6 / 4 + max(34816 / 172.8e9, 3332 / 12e9), rel=1e-12)


def test_cpu_softmax_is_float32_traffic_and_vector_ops_whatever_the_bits():
  # 17 x 68 = 1,156 values; 14 ops each = 16,184 ops (0.67 us at 24e9); 2 x 1,156 x 4 B = 9,248 B (1.93 us).
  model = preset("cpu")
  lat, en = cost(model, SOFTMAX, 8, 8)
  assert lat == pytest.approx(20e-6 + 9248 / 4.8e9, rel=1e-12)
  assert en == pytest.approx(2.3e-12 * 16184 + 162.5e-12 * 9248 + 2.7 * lat, rel=1e-12)
  assert cost(model, SOFTMAX, 2, 2) == (lat, en)


def test_cpu_nm_buys_only_the_smaller_weight_transfer():
  # 4 tokens x 512 x 512: MACs 1,048,576 -> 43.69 us at 24e9. Dense 8-bit bytes: weights 262,144 + input 2,048
  # + output 2,048 = 266,240 -> 55.47 us: memory-bound. 2:4: weights 262,144 x 0.5 x (8 + 2) / 8 = 163,840 B,
  # total 167,936 B (34.99 us): now compute-bound. 1:4: 262,144 x 0.25 x 10 / 8 = 81,920 B, total 86,016 B.
  model = preset("cpu")
  dense_lat, dense_en = cost(model, GEMV_LIKE, 8, 8)
  assert dense_lat == pytest.approx(20e-6 + 266240 / 4.8e9, rel=1e-12)
  for nm, traffic in (((2, 4), 167936), ((1, 4), 86016)):
    lat, en = cost(model, sparse(GEMV_LIKE, nm), 8, 8)
    assert lat == pytest.approx(20e-6 + 1048576 / 24e9, rel=1e-12), nm  # MACs stay dense
    assert en == pytest.approx(0.3e-12 * 1048576 + 162.5e-12 * traffic + 2.7 * lat, rel=1e-12), nm
  # At 1 bit a 2:4 store would need 0.5 x (1 + 2) = 1.5 bits per weight: the dense 1-bit store is kept.
  assert cost(model, sparse(GEMV_LIKE, (2, 4)), 1, 8) == cost(model, GEMV_LIKE, 1, 8)


def test_cpu_ort_has_no_nm_format_so_nm_changes_nothing():
  model = preset("cpu_ort")
  assert model.nm_weights == "dense"
  for nm in ((2, 4), (1, 4)):
    assert cost(model, sparse(GEMV_LIKE, nm), 8, 8) == cost(model, GEMV_LIKE, 8, 8)


# ---------------------------------------------------------------- GPU (TensorCoreGPU), `gpu`: A100 preset
# INT8 624e12 x 0.119, INT4 1248e12 x 0.112; channels to 16 (INT8) / 32 (INT4); M to 16; CUDA cores 19.5e12;
# 1,555 GB/s; launch 5 us; 400 W; batch 8; sparse tensor cores at INT4 / INT8 / FP16.
A100_INT8 = 624e12 * 0.119


def test_gpu_linear_gemm_m_is_tokens_times_batch():
  # M = 197 x 8 = 1,576 -> 1,584 (99 tiles of 16); K 768, N 3,072 already multiples of 16.
  # padded MACs 1,584 x 768 x 3,072 = 3,737,124,864 -> compute 100.66 us. Bytes: weights 2,359,296 once +
  # 8 x (197 x 768 + 197 x 3,072) = 6,051,840 -> 8,411,136 (5.41 us).
  lat, en = cost(preset("gpu"), VIT_FC1, 8, 8)
  expected = (5e-6 + max(2 * 3737124864 / A100_INT8, 8411136 / 1555e9)) / 8
  assert lat == pytest.approx(expected, rel=1e-12)
  assert en == pytest.approx(400.0 * expected, rel=1e-12)


def test_gpu_matmul_is_one_batched_kernel_padding_each_head():
  # 8 images x 12 heads of (197 x 64) by (64 x 197): rows 197 -> 208 (tile 16), columns 197 -> 208 (INT8: 16),
  # K 64. padded MACs 8 x 12 x 208 x 64 x 208 = 265,814,016 -> 7.16 us. Bytes: 8 x (Q 197 x 64 x 12 = 151,296
  # + K 64 x 2,364 = 151,296 + scores 197 x 2,364 = 465,708) = 6,146,400 (3.95 us). One launch.
  lat, en = cost(preset("gpu"), VIT_QK, 8, 8)
  expected = (5e-6 + max(2 * 265814016 / A100_INT8, 6146400 / 1555e9)) / 8
  assert lat == pytest.approx(expected, rel=1e-12)
  assert en == pytest.approx(400.0 * expected, rel=1e-12)


def test_gpu_layernorm_runs_on_cuda_cores_in_fp16():
  # 197 x 768 = 151,296 values x 6 ops x 8 images = 7,262,208 ops (0.37 us at 19.5e12); bytes 8 x 2 x 151,296
  # x 2 B = 4,841,472 (3.11 us): memory-bound.
  lat, en = cost(preset("gpu"), VIT_LN, 4, 4)
  expected = (5e-6 + max(7262208 / 19.5e12, 4841472 / 1555e9)) / 8
  assert lat == pytest.approx(expected, rel=1e-12)
  assert en == pytest.approx(400.0 * expected, rel=1e-12)


def test_gpu_2to4_doubles_the_tensor_core_rate_on_ampere_and_1to4_runs_as_2to4():
  # Same fc1 at 2:4: compute 100.66 / 2 = 50.33 us; weights stored as 2:4, 0.5 x (8 + 2) / 8 = 0.625 B each:
  # 1,474,560 + 6,051,840 = 7,526,400 B (4.84 us).
  model = preset("gpu")
  expected = (5e-6 + max(2 * 3737124864 / A100_INT8 / 2, 7526400 / 1555e9)) / 8
  for nm in ((2, 4), (1, 4)):
    lat, en = cost(model, sparse(VIT_FC1, nm), 8, 8)
    assert lat == pytest.approx(expected, rel=1e-12), nm
    assert en == pytest.approx(400.0 * expected, rel=1e-12), nm
  # A pattern that does not fit 2:4 (1:3 can put two kept values next to a third within one group of 4) runs
  # on the dense kernel.
  assert cost(model, sparse(VIT_FC1, (1, 3)), 8, 8) == cost(model, VIT_FC1, 8, 8)
  # H100 (sparse INT8 / FP16 cores, no INT4): 4-bit weights run as INT8, still sparse: 1979e12 x 0.119.
  h100 = preset("gpu_h100")
  lat, _ = cost(h100, sparse(VIT_FC1, (2, 4)), 4, 8)
  assert lat == pytest.approx((5e-6 + max(3737124864 / (1979e12 * 0.119), 7526400 / 3350e9)) / 8, rel=1e-12)


def test_gpu_t4_has_no_sparse_tensor_cores():
  model = preset("gpu_t4")
  for nm in ((2, 4), (1, 4)):
    assert cost(model, sparse(VIT_FC1, nm), 8, 8) == cost(model, VIT_FC1, 8, 8)


# ---------------------------------------------------------------- FPGA (DSPPackedFPGA `fpga`, BitSerialFPGA)
# fpga: 2,520 DSPs x 281 MHz, 2 INT8 / 4 INT4 MACs per DSP; efficiency linear / matmul 0.5, softmax /
# layernorm 0.1; buffers 2.05 MB each; DDR 19.2e9; overhead 5 us; 7.9 W; 162.5 pJ per DDR byte; batch 1.
DSP_INT8 = 2520 * 2 * 281e6


def test_fpga_linear_spills_weights_beyond_the_buffer():
  # MACs 197 x 768 x 3,072 = 464,781,312 at 0.5 x 1.41624e12 -> 656.4 us. Weights 2,359,296 B, 309,296 B over
  # the 2.05 MB buffer; activations 197 x (768 + 3,072) = 756,480 B fit.
  lat, en = cost(preset("fpga"), VIT_FC1, 8, 8)
  assert lat == pytest.approx(5e-6 + max(464781312 / (DSP_INT8 * 0.5), 309296 / 19.2e9), rel=1e-12)
  assert en == pytest.approx(7.9 * lat + 162.5e-12 * 309296, rel=1e-12)
  assert cost(preset("fpga"), sparse(VIT_FC1, (2, 4)), 8, 8) == (lat, en)  # dense array: N:M buys nothing


def test_fpga_matmul_keeps_the_second_operand_with_the_activations():
  # act buffer cut to 500 kB. MACs 12 x 197 x 64 x 197 = 29,805,312 at the INT8 mode (max(4, 8)) -> 42.1 us.
  # Activations: Q 151,296 B + K at 4 bits 151,296 / 2 = 75,648 B + scores 465,708 B = 692,652 B; 192,652 B
  # over the buffer, written and read back: 385,304 DDR bytes (20.1 us). Nothing in the weight buffer.
  model = preset("fpga", act_buffer_bytes=5e5, weight_buffer_bytes=0.0)
  lat, en = cost(model, VIT_QK, 4, 8)
  assert lat == pytest.approx(5e-6 + max(29805312 / (DSP_INT8 * 0.5), 385304 / 19.2e9), rel=1e-12)
  assert en == pytest.approx(7.9 * lat + 162.5e-12 * 385304, rel=1e-12)


def test_fpga_softmax_one_16bit_op_per_dsp_per_cycle():
  # 197 x 2,364 = 465,708 values x 14 ops = 6,519,912 ops at 2,520 x 281e6 x 0.1 = 70.81 Gop/s -> 92.1 us;
  # 2 x 465,708 x 2 B = 1,862,832 B fit the activation buffer: no DDR.
  lat, en = cost(preset("fpga"), VIT_SOFTMAX, 8, 8)
  assert lat == pytest.approx(5e-6 + 6519912 / (2520 * 281e6 * 0.1), rel=1e-12)
  assert en == pytest.approx(7.9 * lat, rel=1e-12)


def test_bit_serial_linear_and_layernorm_by_hand():
  # fpga_bismo: 7.7e12 binary MAC/s. fc at W4A8: 139,264 MACs at 7.7e12 / 32 x 0.5; everything fits on chip.
  model = preset("fpga_bismo")
  lat, en = cost(model, FC, 4, 8)
  assert lat == pytest.approx(5e-6 + 139264 / (7.7e12 / 32 * 0.5), rel=1e-12)
  assert en == pytest.approx(7.9 * lat, rel=1e-12)
  # layernorm: 17 x 64 = 1,088 values x 6 ops = 6,528 ops at 16 x 16 bits: 7.7e12 / 256 x 0.1.
  lat, en = cost(model, LN, 8, 8)
  assert lat == pytest.approx(5e-6 + 6528 / (7.7e12 / 256 * 0.1), rel=1e-12)
  assert cost(model, sparse(FC, (1, 4)), 4, 8) == cost(model, FC, 4, 8)


# ---------------------------------------------------------------- RISC-V (MacTableRISCV): `riscv`, `riscv_gap8`
# riscv (MPIC): table[a][w] rows / cols 2, 4, 8; 250 MHz; 5.3825 mW; L1 64 kB; DMA 8 B/cycle; 15 pJ per DMA byte.

def test_riscv_linear_and_its_nm_dma_saving():
  # W4A8: table[8][4] = 2.3 MAC/cycle; 139,264 MACs -> 60,549.6 cycles. DMA: weights 8,192 x 4 / 8 = 4,096 +
  # input 1,088 + output 2,176 = 7,360 B (920 cycles): fits L1, compute-bound.
  model = preset("riscv")
  lat, en = cost(model, FC, 4, 8)
  assert lat == pytest.approx(139264 / 2.3 / 250e6, rel=1e-12)
  assert en == pytest.approx(5.3825e-3 * lat + 15e-12 * 7360, rel=1e-12)
  # 2:4: weights 8,192 x 0.5 x (4 + 2) / 8 = 3,072 B: 1,024 fewer DMA bytes, same cycles.
  lat24, en24 = cost(model, sparse(FC, (2, 4)), 4, 8)
  assert lat24 == lat and en24 == pytest.approx(5.3825e-3 * lat + 15e-12 * 6336, rel=1e-12)
  # PLiNIO's compute-only form (no DMA term): nothing to gain.
  compute_only = preset("riscv", dma_bytes_per_cycle=None)
  assert cost(compute_only, sparse(FC, (2, 4)), 4, 8) == cost(compute_only, FC, 4, 8)


def test_riscv_matmul_moves_keys_like_weights():
  # W8A8: 2.1 MAC/cycle; 18,496 MACs -> 8,807.6 cycles; DMA: K 1,088 + Q 1,088 + scores 1,156 = 3,332 B.
  lat, en = cost(preset("riscv"), QK, 8, 8)
  assert lat == pytest.approx(18496 / 2.1 / 250e6, rel=1e-12)
  assert en == pytest.approx(5.3825e-3 * lat + 15e-12 * 3332, rel=1e-12)


def test_gap8_softmax_in_fixed_point_on_eight_cores():
  # 1,156 values x 14 ops = 16,184 ops / 8 per cycle = 2,023 cycles at 175 MHz; DMA 2 x 1,156 x 2 B = 4,624 B
  # (578 cycles, overlapped). 96 mW.
  lat, en = cost(preset("riscv_gap8"), SOFTMAX, 2, 2)
  assert lat == pytest.approx(2023 / 175e6, rel=1e-12)
  assert en == pytest.approx(96e-3 * lat + 15e-12 * 4624, rel=1e-12)


# ---------------------------------------------------------------- BitFusion table (LUTModel), `bitfusion`

def _median_dw_w8a8_per_mac():
  """Independent of lut.py: parse APQ's keys, keep depthwise (groups == cin == cout) W8A8 entries, divide by
  their MACs (out_h x out_w x k^2 x c, SAME padding), median (latency, energy) in table units."""
  with gzip.open(DATA / "bitfusion_lut.json.gz", "rt") as f:
    raw = json.load(f)
  ratios = []
  for key, v in raw.items():
    m = re.match(r"^(\(.*\))-W8A8$", key)
    if not m:
      continue
    cin, cout, h, k, s, _, groups = ast.literal_eval(m.group(1))
    if groups == cin == cout and groups > 1:
      macs = (-(-h // s)) ** 2 * k * k * cout
      ratios.append((v["latency"] / macs, v["energy"] / macs))
  return np.median(np.asarray(ratios), axis=0)


def test_bitfusion_softmax_costs_depthwise_macs_per_op():
  per_mac = _median_dw_w8a8_per_mac()
  lat, en = cost(preset("bitfusion"), SOFTMAX, 8, 8)
  assert lat == pytest.approx(16184 * per_mac[0] * 1e-3, rel=1e-9)  # 1,156 values x 14 ops, table ms -> s
  assert en == pytest.approx(16184 * per_mac[1] * 1e-3, rel=1e-9)


def test_bitfusion_linear_is_a_1x1_conv_and_matmul_is_heads_times_one_head():
  model = preset("bitfusion")
  as_conv = LayerSpec("conv", 64, 128, 1, 1, 17, 1)
  assert cost(model, FC, 8, 8) == cost(model, as_conv, 8, 8)
  one_head = LayerSpec("linear", 16, 17, in_h=17)
  lat, en = cost(model, one_head, 8, 8)
  assert cost(model, QK, 8, 8) == pytest.approx((4 * lat, 4 * en), rel=1e-12)
  assert cost(model, sparse(FC, (2, 4)), 8, 8) == cost(model, FC, 8, 8)  # dense array


def test_bitfusion_with_off_table_error_refuses_a_linear_layer():
  model = preset("bitfusion", off_table="error")
  with pytest.raises(ValueError, match="'fc' .*linear.*not in table"):
    model.cost(FC, 8, 8, 64, 128)
