"""model.int8.onnx gives the integer reference's predictions on a low-bit network (docs/deploy.md, "Exact
8-bit kernels"): the biases' fractional bits ride on left-shifted int8 weights and each layer's bias and
multiplier are fitted to the layer's own output thresholds, so onnxruntime's QLinearConv computes it exactly."""
import itertools

import numpy as np
import pytest

from nas.deploy import integer

from nas.deploy import exact8
from nas.deploy.formats.int8 import int8_model
from nas.deploy.ort import ort_session
from nas.models import build_model
from nas.models.space import SearchSpace
from nas.train.datasets import load_digits
from nas.train.finetune import calibrate

SPACE = dict(w_bits=(2, 4, 8), a_bits=(2, 4, 8), width_mults=(1.0,), first_layer_bits=8, last_layer_bits=8,
             channel_multiple=1, method="gumbel", hard=True, per_channel_w=True)


@pytest.fixture(scope="module")
def digits():
  return load_digits()


def _w2a2(digits, classifier: str, negative_gain: bool = False) -> integer.IntegerNetwork:
  """A calibrated digits_cnn, W2A2 in every searchable layer (8-bit first-layer weights, head and its input, as
  the uniform baselines have them); optionally one BatchNorm gain of the first layer negative."""
  space = SearchSpace(**SPACE)
  kwargs = dict(widths=(8, 16, 16), strides=(1, 2, 1), classifier=classifier)
  sup = build_model("digits_cnn", space, seed=0, **kwargs)
  choices = {n: min(c.values) if n.endswith(("w_bits", "a_bits")) else max(c.values) for n, c in sup.choices.items()}
  net = build_model("digits_cnn", space, seed=0, arch=sup.architecture(choices), **kwargs)
  calibrate(net, digits.x_train[:256])
  if negative_gain:
    net.bns[0].scale[...] = net.bns[0].scale[...].at[0].multiply(-1.0)
  net.eval()
  inet = integer.from_network(net)
  assert [l.in_bits for l in inet.layers] == [8, 2, 2, 8]
  assert [sorted(set(l.w_bits.tolist())) for l in inet.layers] == [[8], [2], [2], [8]]
  return inet


def test_int8_graph_predicts_as_the_integer_reference(digits):
  # Whole-step biases (before) changed 12 of the 540 predictions of this network.
  inet = _w2a2(digits, "flatten")
  int8 = ort_session(int8_model(inet).SerializeToString()).run(None, {"image": digits.x_test})[0]
  _, ref = integer.run(inet, digits.x_test)
  np.testing.assert_array_equal(int8.argmax(-1), ref.argmax(-1))
  _, kernels = integer.run(exact8.int8_kernels(inet), digits.x_test)  # what the graph computes, modelled
  np.testing.assert_array_equal(int8.argmax(-1), kernels.argmax(-1))
  np.testing.assert_allclose(int8, kernels, rtol=1e-5, atol=1e-5 * np.abs(kernels).max())


def _maps(net: integer.IntegerNetwork, x: np.ndarray) -> list[np.ndarray]:
  """Each conv layer's output integers (the pre-pool map: its requantisation's)."""
  q, out = integer.quantize_input(x, net.layers[0]), []
  for layer in net.layers[:-1]:
    acc = np.left_shift(integer.conv_int(q, layer.weight, layer.stride, layer.dilation), layer.bias_shift)
    q = integer.requantize(acc + layer.bias.astype(np.int64), layer.requant)
    out.append(q)
  return out


def test_fitted_layers_compute_the_reference_integers(digits):
  inet = _w2a2(digits, "pool", negative_gain=True)
  assert inet.layers[0].requant.multiplier[0] < 0
  kernels = exact8.int8_kernels(inet)
  assert all(l.bias_shift == 0 and l.weight.dtype == np.int8 for l in kernels.layers)
  for exact, k in zip(inet.layers[:2], kernels.layers):  # 2-bit outputs: every channel fitted
    e = exact8.weight_headroom(exact)
    assert all(exact8._fit_thresholds(exact, o, int(e[o])) is not None for o in range(len(e)))
    np.testing.assert_array_equal(k.weight, np.left_shift(exact.weight.astype(np.int64), e))
  ref, got = _maps(inet, digits.x_test), _maps(kernels, digits.x_test)
  for i in range(2):
    np.testing.assert_array_equal(got[i], ref[i], err_msg=inet.layers[i].name)
  # on any input too: random 2-bit maps into the second layer, and its most extreme ones (all 0 / all 3)
  layer, klayer = inet.layers[1], kernels.layers[1]
  q = np.random.default_rng(0).integers(0, 4, (256, *layer.in_hw, layer.weight.shape[2]))
  q[0], q[1] = 0, 3
  a = integer.requantize(np.left_shift(integer.conv_int(q, layer.weight, layer.stride), layer.bias_shift)
                         + layer.bias.astype(np.int64), layer.requant)
  b = integer.requantize(integer.conv_int(q, klayer.weight, klayer.stride) + klayer.bias.astype(np.int64),
                         klayer.requant)
  np.testing.assert_array_equal(a, b)


def test_a_fitted_8_bit_layer_is_exact_on_every_input_and_a_fallback_is_whole_step():
  """A 1x1 conv of two 8-bit inputs: all 65,536 inputs. Weights filling int8 leave no headroom (e = 0)."""
  w = np.asarray([[127, -128, 2], [3, 5, -1]], np.int8).reshape(1, 1, 2, 3)
  unit = np.asarray([5e-4, 5e-4, 5e-4]) / 16  # bias_shift 4
  layer = integer.IntLayer("l", "conv", w, np.full(3, 8), np.full(3, 0.01, np.float32), 1, 1, (1, 1), 8, 0.05,
                           False, np.ones(3), np.asarray([0.0013, -0.002, 0.0037]), 4, unit,
                           np.asarray([42, -64, 118], np.int32),
                           integer.Requant(*integer.dyadic(unit / 0.1), 0, 255), 8, 0.1)
  e = exact8.weight_headroom(layer)
  assert e.tolist() == [0, 0, 4]
  k = exact8.int8_scaled(layer)
  np.testing.assert_array_equal(k.weight[..., :2], w[..., :2])
  np.testing.assert_array_equal(k.weight[..., 2], w[..., 2] * 16)
  q = np.asarray(list(itertools.product(range(256), repeat=2))).reshape(-1, 1, 1, 2)
  want = integer.requantize(np.left_shift(integer.conv_int(q, w, 1), 4) + layer.bias.astype(np.int64), layer.requant)
  got = integer.requantize(integer.conv_int(q, k.weight, 1) + k.bias.astype(np.int64), k.requant)
  whole = exact8.whole_step(integer.IntegerNetwork("n", (1, 1, 2), (layer,), None, 1, "flatten")).layers[0]
  for o in range(3):
    if exact8._fit_thresholds(layer, o, int(e[o])) is not None:
      np.testing.assert_array_equal(got[..., o], want[..., o], err_msg=f"channel {o}")
    else:  # the whole-step bias of 8-bit weights
      assert e[o] == 0 and k.bias[o] == whole.bias[o]
      assert np.max(np.abs(got[..., o] - want[..., o])) <= 1
