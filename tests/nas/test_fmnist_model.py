"""fmnist_cnn (nas/models/digits.py, FashionCNN): shapes and cost by hand, and the flattening classifier
against a NumPy dense layer over the flattened map."""
import jax.numpy as jnp
import numpy as np

from nas import cost
from nas.models import build_model
from nas.space import SearchSpace


def test_reference_macs_and_weight_bytes_by_hand():
  # 28x28x1 -> conv 3x3/2, 16 ch (14x14) -> conv 3x3, 32 (14x14) -> conv 3x3/2, 32 (7x7) -> conv 3x3, 64 (7x7)
  # -> classifier over the flattened 7x7x64 map (a 7x7 kernel, stride 7: one output position), 10 classes.
  macs = [14 * 14 * 9 * 1 * 16, 14 * 14 * 9 * 16 * 32, 7 * 7 * 9 * 32 * 32, 7 * 7 * 9 * 32 * 64, 7 * 7 * 64 * 10]
  assert macs == [28_224, 903_168, 451_584, 903_168, 31_360]
  # Weights at 8 bits (reference: every layer W8A8): one byte each.
  weights = [9 * 1 * 16, 9 * 16 * 32, 9 * 32 * 32, 9 * 32 * 64, 49 * 64 * 10]
  net = build_model("fmnist_cnn", SearchSpace(), seed=0)
  ref = net.reference_architecture()
  assert [float(l.spec.macs()) for l in ref.layers] == macs
  m = cost.architecture_metrics(ref)
  assert m["macs"] == sum(macs) == 2_317_504
  assert m["weight_bytes"] == sum(weights) == 63_760


def test_flatten_classifier_is_a_dense_layer_over_the_flattened_map():
  space = SearchSpace(quantize=False, width_mults=(1.0,))
  net = build_model("fmnist_cnn", space, seed=0)
  x = jnp.asarray(np.random.default_rng(0).random((3, 7, 7, 64), np.float32))
  arch = net.mixing_weights("argmax")
  out = np.asarray(net.head(x, arch))
  assert out.shape == (3, 1, 1, 10)
  kernel = np.asarray(net.head.kernel[...])  # (7, 7, 64, 10), HWIO
  ref = np.asarray(x).reshape(3, -1) @ kernel.reshape(-1, 10)  # row-major (h, w, c) on both sides
  np.testing.assert_allclose(out[:, 0, 0], ref, rtol=1e-5, atol=1e-5)
  logits = net(jnp.zeros((2, 28, 28, 1)), mode="argmax")
  assert logits.shape == (2, 10)
