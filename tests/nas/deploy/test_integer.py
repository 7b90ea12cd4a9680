"""The integer network: a hand-computed example, dyadic requantisation, bit-packing and weights.bin."""
import numpy as np
import pytest

from nas.deploy import integer

from nas.deploy import pack
from nas.deploy.integer import IntegerNetwork, IntLayer, Requant


def _layer(name, weight, bias, bias_shift, acc_scale, requant, in_step=1.0, in_bits=4, out_bits=None):
  w = np.asarray(weight, np.int8)
  cout = w.shape[-1]
  return IntLayer(name, "conv", w, np.full(cout, 4), np.ones(cout, np.float32), 1, 1, (1, 1), in_bits, in_step, False,
                  np.ones(cout), np.zeros(cout), bias_shift, np.asarray(acc_scale, np.float64),
                  np.asarray(bias, np.int32), requant, out_bits, None if out_bits is None else 1.0)


def _hand_network() -> IntegerNetwork:
  # Worked by hand, independent of the code (1x1 convolutions on a 1x1 image: plain vector-matrix products).
  # Input x = [0.625, 1.0], step 0.25, 8-bit unsigned: x / s = [2.5, 4] -> round half to even -> q0 = [2, 4].
  # Layer 1: W1 = [[1, -2, 0], [3, 1, -1]] (cin x cout) -> acc = [2 + 12, -4 + 4, 0 - 4] = [14, 0, -4].
  #   bias shift r = 1: acc << 1 = [28, 0, -8]; int32 bias [-8, 30, 1] -> [20, 30, -7].
  #   multipliers m = [2^30, 3 * 2^29, 2^30], shifts k = [33, 32, 33]: scales 1/8, 3/8, 1/8.
  #   ch0: 20 / 8 = 2.5 -> round half UP -> 3 (half to even would give 2): (20 2^30 + 2^32) >> 33 = 3.
  #   ch1: 30 * 3 / 8 = 11.25 -> 11 -> clipped to the 2-bit maximum 3.
  #   ch2: -7 / 8 = -0.875 -> -1 -> clipped at 0 (the ReLU).       q1 = [3, 3, 0]
  # Layer 2 (output): W2 = [[2, -1], [-1, 1], [5, 5]] -> acc = [6 - 3 + 0, -3 + 3 + 0] = [3, 0];
  #   r = 0, bias [-1, 2] -> [2, 2]; accumulator units [0.5, 0.25] -> logits [1.0, 0.5].
  l1 = _layer("l1", np.asarray([[1, -2, 0], [3, 1, -1]]).reshape(1, 1, 2, 3), [-8, 30, 1], 1, [1, 1, 1],
              Requant(np.asarray([2 ** 30, 3 * 2 ** 29, 2 ** 30], np.int32), np.asarray([33, 32, 33], np.int32),
                      0, 3), in_step=0.25, in_bits=8, out_bits=2)
  l2 = _layer("l2", np.asarray([[2, -1], [-1, 1], [5, 5]]).reshape(1, 1, 3, 2), [-1, 2], 0, [0.5, 0.25], None,
              in_bits=2)
  return IntegerNetwork("hand", (1, 1, 2), (l1, l2), None, 1, "flatten")


def test_integer_reference_matches_the_hand_computed_example():
  net = _hand_network()
  x = np.asarray([0.625, 1.0], np.float32).reshape(1, 1, 1, 2)
  np.testing.assert_array_equal(integer.quantize_input(x, net.layers[0]).ravel(), [2, 4])
  acc, logits = integer.run(net, x)
  assert acc.dtype == np.int32
  np.testing.assert_array_equal(acc, [[2, 2]])
  np.testing.assert_array_equal(logits, [[1.0, 0.5]])


def test_requantize_rounds_half_up_and_clips():
  rq = Requant(np.asarray([2 ** 30], np.int32), np.asarray([31], np.int32), -4, 3)  # scale 1/2
  out = integer.requantize(np.asarray([-9, -3, -1, 1, 3, 5, 99]), rq)
  np.testing.assert_array_equal(out, [-4, -1, 0, 1, 2, 3, 3])  # -1.5 -> -1, -0.5 -> 0, 0.5 -> 1, 1.5 -> 2


def test_requantize_half_even_rounds_ties_to_even():
  rq = Requant(np.asarray([2 ** 30], np.int32), np.asarray([31], np.int32), -4, 3, half_even=True)  # scale 1/2
  out = integer.requantize(np.asarray([-5, -3, -1, 1, 3, 5, 2, 7]), rq)
  np.testing.assert_array_equal(out, [-2, -2, 0, 0, 2, 2, 1, 3])  # -2.5 -> -2, -1.5 -> -2, 0.5 -> 0, 2.5 -> 2


@pytest.mark.parametrize("scale", [1e-6, 0.0123, 0.5, 1.0, 3.75, 700.3, -0.31])
def test_dyadic_multiplier_is_accurate_to_31_bits(scale):
  m, k = integer.dyadic(np.asarray([scale]))
  assert 2 ** 30 <= abs(int(m[0])) < 2 ** 31
  assert abs(int(m[0]) / 2.0 ** int(k[0]) - scale) <= abs(scale) * 2.0 ** -30


def test_same_padding_puts_the_odd_pixel_last():
  assert integer.same_pads(8, 3, 2) == (0, 1)
  assert integer.same_pads(8, 3, 1) == (1, 1)
  assert integer.same_pads(7, 7, 7) == (0, 0)


def test_integer_conv_matches_a_float_convolution():
  import jax
  rng = np.random.default_rng(0)
  q = rng.integers(0, 16, (2, 7, 7, 3))
  w = rng.integers(-8, 8, (3, 3, 3, 5))
  for stride in (1, 2):
    ref = jax.lax.conv_general_dilated(q.astype(np.float32), w.astype(np.float32), (stride, stride), "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_array_equal(integer.conv_int(q, w, stride), np.asarray(ref).astype(np.int64))


@pytest.mark.parametrize("size, kernel, stride, dilation", [
    (14, 3, 1, 2), (14, 3, 2, 2), (13, 3, 1, 2), (12, 3, 2, 3), (14, 7, 7, 2), (9, 3, 1, 1)])
def test_dilated_conv_is_the_conv_of_the_subsampled_map(size, kernel, stride, dilation):
  """A skipped strided layer's subsampling folded into the next layer: by definition, the convolution of
  q[:, ::D, ::D] (checked against a float convolution above)."""
  rng = np.random.default_rng(size + kernel + stride)
  q = rng.integers(0, 16, (2, size, size, 3))
  w = rng.integers(-8, 8, (kernel, kernel, 3, 4))
  np.testing.assert_array_equal(integer.conv_int(q, w, stride, dilation),
                                integer.conv_int(q[:, ::dilation, ::dilation], w, stride))


# --- packing -------------------------------------------------------------------------------------------------

def test_pack_layout_by_hand():
  # 2 bits, LSB first: 1 -> 01, -1 -> 11, 0 -> 00, -2 -> 10: 0b10_00_11_01 = 141, four values in one byte.
  assert pack.pack([1, -1, 0, -2], 2) == bytes([141])
  # 4 bits: 3 -> 0011 (low nibble), -8 -> 1000 (high nibble): 0x83.
  assert pack.pack([3, -8], 4) == bytes([0x83])
  assert pack.pack([-128, 127], 8) == bytes([0x80, 0x7F])


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("n", [1, 7, 64, 1001])
def test_pack_round_trip_and_size(bits, n):
  rng = np.random.default_rng(bits * 1000 + n)
  v = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), n)
  data = pack.pack(v, bits)
  assert len(data) == pack.packed_size(np.full(n, bits)) == -(-n * bits // 8)
  np.testing.assert_array_equal(pack.unpack(data, bits, n), v)


def test_pack_mixed_bit_widths_round_trip():
  rng = np.random.default_rng(1)
  bits = rng.choice([2, 4, 8], 333)
  v = np.asarray([rng.integers(-(2 ** (b - 1)), 2 ** (b - 1)) for b in bits])
  data = pack.pack(v, bits)
  assert len(data) == -(-int(bits.sum()) // 8)
  np.testing.assert_array_equal(pack.unpack(data, bits), v)


def test_pack_rejects_out_of_range_values():
  with pytest.raises(ValueError, match="does not fit 2 signed bits"):
    pack.pack([2], 2)


def test_weights_file_round_trip(tmp_path):
  net = _hand_network()
  sizes = pack.write_weights(tmp_path / "weights.bin", net)
  # l1: 6 weights x 4 bits = 3 bytes; l2: 6 x 4 bits = 3 bytes
  assert sizes["packed_weight_bytes"] == 6 and sizes["layers"] == {"l1": 3, "l2": 3}
  assert sizes["file_bytes"] == (tmp_path / "weights.bin").stat().st_size
  back = pack.read_packed_weights(tmp_path / "weights.bin")
  for layer in net.layers:
    np.testing.assert_array_equal(back[layer.name], pack.channel_major(layer.weight))
