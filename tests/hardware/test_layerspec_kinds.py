"""The sequence kinds of LayerSpec (token-wise linear, head-batched matmul, softmax, layernorm) and N:M weight
sparsity: counts against hand-worked attention shapes, and one clear error per malformed spec."""
import pytest

from hardware import metrics
from hardware.base import LayerSpec

# One encoder block of a small ViT: T = 17 tokens (16 patches + a class token), H = 4 heads of d = 16.
T, H, D = 17, 4, 16


def test_attention_matmuls_count_what_the_heads_do():
  # Q K^T per head: (T x d) times (d x T). cout = heads x head_cols = 4 x 17.
  qk = LayerSpec("matmul", D, H * T, in_h=T, head_cols=T, name="qk")
  assert float(qk.heads()) == H
  assert float(qk.macs()) == H * T * T * D == 18496
  assert float(qk.input_count()) == T * H * D  # Q: 1088
  assert float(qk.weight_count()) == H * D * T  # K, made at run time
  assert float(qk.output_count()) == H * T * T  # the scores: 1156
  assert float(metrics.weight_bytes(qk, 8)) == 0.0  # nothing stored
  # Attention x V per head: (T x T) times (T x d).
  av = LayerSpec("matmul", T, H * D, in_h=T, head_cols=D, name="av")
  assert float(av.macs()) == H * T * T * D
  assert float(av.input_count()) == H * T * T  # the probabilities
  assert float(av.weight_count()) == H * T * D  # V
  assert float(av.output_count()) == T * H * D
  # Two heads instead of four: every count halves (the heads choice is a choice of cout).
  assert float(qk.macs(cout=2 * T)) == 2 * T * T * D and float(qk.input_count(cout=2 * T)) == T * 2 * D


def test_linear_softmax_layernorm_counts():
  fc = LayerSpec("linear", 64, 128, in_h=T, name="fc1")
  assert float(fc.macs()) == T * 64 * 128 and float(fc.weight_count()) == 64 * 128
  assert float(fc.input_count()) == T * 64 and float(fc.output_count()) == T * 128
  sm = LayerSpec("softmax", H * T, H * T, in_h=T, name="softmax")
  assert float(sm.elements()) == H * T * T and float(sm.macs()) == 0 and float(sm.weight_count()) == 0
  ln = LayerSpec("layernorm", 64, 64, in_h=T, name="ln")
  assert float(ln.elements(cin=48)) == T * 48
  assert float(metrics.weight_bytes(ln, 8)) == 0.0
  assert float(fc.elements()) == 0.0


def test_nm_weight_bytes_count_kept_values_and_their_indices():
  # 64 x 128 = 8192 weights at 4 bits: dense 4096 B; 2:4 keeps 4096 with 2 index bits each: 4096 x 6 / 8 = 3072 B;
  # 1:4 keeps 2048: 1536 B.
  dense = LayerSpec("linear", 64, 128, in_h=T)
  assert float(metrics.weight_bytes(dense, 4)) == 4096.0
  assert float(metrics.weight_bytes(LayerSpec("linear", 64, 128, in_h=T, nm=(2, 4)), 4)) == 3072.0
  assert float(metrics.weight_bytes(LayerSpec("linear", 64, 128, in_h=T, nm=(1, 4)), 4)) == 1536.0
  assert LayerSpec("conv", 16, 32, 3, nm=(2, 4)).density == 0.5 and dense.density == 1.0
  # 1:8 needs 3 index bits: 8192 / 8 x (8 + 3) / 8 = 1408 B at 8 bits.
  assert float(metrics.weight_bytes(LayerSpec("dense", 64, 128, nm=(1, 8)), 8)) == 1408.0


@pytest.mark.parametrize("kwargs, words", [
    (dict(kind="matmul", cin=16, cout=68, in_h=17, head_cols=0), "head_cols >= 1 dividing cout"),
    (dict(kind="matmul", cin=16, cout=68, in_h=17, head_cols=16), "head_cols >= 1 dividing cout"),
    (dict(kind="linear", cin=16, cout=32, in_h=17, head_cols=4), "only a matmul has heads"),
    (dict(kind="linear", cin=16, cout=32, kernel=3, in_h=17), "kernel = stride = in_w = 1"),
    (dict(kind="softmax", cin=16, cout=32, in_h=17), "needs cin == cout"),
    (dict(kind="matmul", cin=16, cout=68, in_h=17, head_cols=17, nm=(2, 4)), "N:M sparsity applies to"),
    (dict(kind="dwconv", cin=16, cout=16, kernel=3, nm=(2, 4)), "N:M sparsity applies to"),
    (dict(kind="linear", cin=16, cout=32, in_h=17, nm=(4, 4)), "1 <= N < M"),
    (dict(kind="linear", cin=16, cout=32, in_h=17, nm=(0, 4)), "1 <= N < M"),
    (dict(kind="attention", cin=16, cout=32), "is unknown"),
])
def test_malformed_specs_raise_naming_the_field(kwargs, words):
  with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
    LayerSpec(**kwargs)


def test_choice_grid_ties_an_elementwise_layers_channels():
  """A softmax over heads x T columns has one channel count: the grid's cout axis has length 1 and follows cin."""
  import numpy as np
  from hardware.base import Cost, choice_grid

  class Counter:  # costs a layer at 1 s per element: independent of the models under test
    name = "counter"

    def check_bits(self, w, a):
      pass

    def cost(self, layer, w, a, cin, cout):
      assert np.array_equal(np.broadcast_to(cin, np.broadcast_shapes(np.shape(cin), np.shape(cout))),
                            np.broadcast_to(cout, np.broadcast_shapes(np.shape(cin), np.shape(cout))))
      e = layer.elements(cin) + 0 * (w + a)
      return Cost(e, e)

  sm = LayerSpec("softmax", H * T, H * T, in_h=T)
  c = choice_grid(Counter(), sm, [8], [8], [2 * T, 4 * T], [999])
  assert c.latency_s.shape == (1, 1, 2, 1)
  assert c.latency_s.ravel().tolist() == [T * 2 * T, T * 4 * T]
  # activation_peak_bytes counts a matmul's first operand at the heads its couts give.
  qk = LayerSpec("matmul", D, H * T, in_h=T, head_cols=T)
  half = metrics.activation_peak_bytes([qk], [8], [8], couts=[2 * T])
  assert float(half) == T * 2 * D + T * 2 * T  # Q of 2 heads in, 2 heads' scores out, at 8 bits
