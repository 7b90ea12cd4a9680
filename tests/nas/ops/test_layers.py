"""Searchable layers (nas/ops/layers.py) and the search space (nas/models/space.py) against NumPy references.

The reference convolution is written out in NumPy (NHWC input, HWIO kernel, 'SAME' padding with the extra
row/column at the bottom/right as XLA does, stride, depthwise groups), and the reference LSQ quantisation of
weights (signed, one step per output channel) and inputs (one step per tensor) is NumPy too.
"""
import itertools

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hardware.base import LayerSpec
from nas.ops.layers import BN_EPSILON, ChoiceKeys, QLayer, batch_norm, depthwise_conv, width_mask
from nas.models.space import SearchSpace

KEYS = ChoiceKeys(w_bits="w", a_bits="a", cin=None, cout=None)


def ref_quantize(x, s, bits, signed):
  qn, qp = (2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
  x, s = np.asarray(x, np.float32), np.asarray(s, np.float32)
  return (np.round(np.clip(x / s, -qn, qp)) * s).astype(np.float32)


def ref_conv(x, w, stride, depthwise=False):
  """NHWC x HWIO convolution with 'SAME' padding, in float64."""
  x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
  n, h, wd, _ = x.shape
  k, cout = w.shape[0], w.shape[-1]
  oh, ow = -(-h // stride), -(-wd // stride)
  ph, pw = max((oh - 1) * stride + k - h, 0), max((ow - 1) * stride + k - wd, 0)
  xp = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
  out = np.zeros((n, oh, ow, cout))
  for i, j in itertools.product(range(k), range(k)):
    patch = xp[:, i:i + stride * oh:stride, j:j + stride * ow:stride, :]
    out += patch * w[i, j, 0] if depthwise else patch @ w[i, j]
  return out


def make_layer(kind, cin, cout, stride, w_bits, a_bits, a_signed=False, hw=(7, 7), seed=0):
  spec = LayerSpec(kind, cin, cout, 3 if kind != "dense" else 1, stride, *(hw if kind != "dense" else (1, 1)), "l")
  return QLayer(spec, KEYS, w_bits, a_bits, a_signed, rngs=nnx.Rngs(seed))


def test_width_mask_hand_built():
  mask = width_mask((2, 4), jnp.asarray([0.25, 0.75], jnp.float32), 5)
  np.testing.assert_allclose(np.asarray(mask), [1.0, 1.0, 0.75, 0.75, 0.0], rtol=1e-7)


@pytest.mark.parametrize("weights,expected", [
    ([1.0, 0.0, 0.0], [1, 0, 0, 0, 0, 0]),
    ([0.0, 0.0, 1.0], [1, 1, 1, 1, 1, 1]),
    ([0.2, 0.3, 0.5], [1, 0.8, 0.8, 0.5, 0.5, 0.5]),
])
def test_width_mask_three_candidates(weights, expected):
  mask = width_mask((1, 3, 6), jnp.asarray(weights, jnp.float32), 6)
  np.testing.assert_allclose(np.asarray(mask), expected, rtol=1e-6)


@pytest.mark.parametrize("kind,stride,bits,a_signed", [
    ("conv", 1, 8, False), ("conv", 2, 8, True), ("conv", 1, 4, False), ("conv", 2, 2, True),
    ("dwconv", 1, 8, False), ("dwconv", 2, 4, True),
])
def test_single_candidate_matches_reference(kind, stride, bits, a_signed):
  cin, cout = (3, 5) if kind == "conv" else (4, 4)
  layer = make_layer(kind, cin, cout, stride, (bits,), (bits,), a_signed)
  rng = np.random.default_rng(bits + stride)
  # Steps set by hand, small enough that some weights and inputs clip at both edges.
  qp_w = 2 ** (bits - 1) - 1
  kernel = np.asarray(layer.kernel[...])
  w_steps = (np.abs(kernel).max(axis=(0, 1, 2)) / (qp_w + 0.5) * rng.uniform(0.5, 0.9, cout)).astype(np.float32)
  layer.wq.step[...] = jnp.asarray(w_steps[None])
  x = rng.uniform(-1.0 if a_signed else 0.0, 1.0, size=(2, 7, 7, cin)).astype(np.float32)
  qp_a = 2 ** (bits - 1) - 1 if a_signed else 2 ** bits - 1
  a_step = np.float32(0.8 / qp_a)  # clips inputs above 0.8 (and, signed, below about -0.8)
  layer.aq.step[...] = jnp.asarray([a_step])
  one = jnp.ones((1,), jnp.float32)
  out = np.asarray(layer(jnp.asarray(x), {"w": one, "a": one}))

  qw = ref_quantize(kernel, w_steps, bits, True)
  qx = ref_quantize(x, a_step, bits, a_signed)
  assert (np.abs(kernel / w_steps) > qp_w).any() and (x / a_step > qp_a).any()
  ref = ref_conv(qx, qw, stride, depthwise=(kind == "dwconv"))
  assert out.shape == ref.shape == (2, -(-7 // stride), -(-7 // stride), cout)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_dense_single_candidate_matches_reference():
  layer = make_layer("dense", 6, 3, 1, (8,), (8,))
  layer.bias[...] = jnp.asarray([0.1, -0.2, 0.3], jnp.float32)
  x = np.random.default_rng(0).uniform(0, 1, size=(4, 6)).astype(np.float32)
  layer.aq.step[...] = jnp.asarray([0.01], jnp.float32)
  one = jnp.ones((1,), jnp.float32)
  out = np.asarray(layer(jnp.asarray(x), {"w": one, "a": one}))
  kernel, steps = np.asarray(layer.kernel[...]), np.asarray(layer.wq.step[...])[0]
  ref = ref_quantize(x, 0.01, 8, False).astype(np.float64) @ ref_quantize(kernel, steps, 8, True) + [0.1, -0.2, 0.3]
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def _onehot(i, n=2):
  return jnp.asarray(np.eye(n, dtype=np.float32)[i])


@pytest.mark.parametrize("searched", ["w", "a"])
def test_mixing_one_side_is_linear_in_the_weights(searched):
  """With mixing weights (0.3, 0.7) over bits (2, 4) the output is 0.3 out(2-bit) + 0.7 out(4-bit)."""
  w_bits, a_bits = ((2, 4), None) if searched == "w" else (None, (2, 4))
  layer = make_layer("conv", 3, 6, 1, w_bits, a_bits, a_signed=False)
  if a_bits is not None:
    layer.aq.step[...] = jnp.asarray([0.4, 0.08], jnp.float32)  # 2-bit and 4-bit steps
  x = jnp.asarray(np.random.default_rng(1).uniform(0, 1.5, size=(2, 7, 7, 3)).astype(np.float32))
  one = jnp.ones((1,), jnp.float32)
  other = "a" if searched == "w" else "w"
  out = lambda wts: np.asarray(layer(x, {searched: wts, other: one}), np.float64)
  mixed = out(jnp.asarray([0.3, 0.7], jnp.float32))
  out2, out4 = out(_onehot(0)), out(_onehot(1))
  assert np.abs(out2 - out4).max() > 0.05 * np.abs(out4).max()  # the two precisions really differ
  # Each one-hot output is the reference convolution at that candidate's bits and step.
  kernel, xn = np.asarray(layer.kernel[...]), np.asarray(x)
  for i, (bits, got) in enumerate(((2, out2), (4, out4))):
    if searched == "w":
      ref = ref_conv(xn, ref_quantize(kernel, np.asarray(layer.wq.step[...])[i], bits, True), 1)
    else:
      ref = ref_conv(ref_quantize(xn, np.asarray(layer.aq.step[...])[i], bits, False), kernel, 1)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
  np.testing.assert_allclose(mixed, 0.3 * out2 + 0.7 * out4, rtol=1e-5, atol=1e-5 * np.abs(mixed).max())


def test_mixing_both_sides_is_bilinear():
  """EdMIPS: conv(sum_i p_i Q_i(W), sum_j q_j Q_j(x)) = sum_ij p_i q_j conv(Q_i(W), Q_j(x))."""
  layer = make_layer("conv", 3, 6, 2, (2, 4), (2, 4), a_signed=False)
  layer.aq.step[...] = jnp.asarray([0.4, 0.08], jnp.float32)
  x = jnp.asarray(np.random.default_rng(2).uniform(0, 1.5, size=(2, 7, 7, 3)).astype(np.float32))
  p, q = np.asarray([0.3, 0.7]), np.asarray([0.6, 0.4])
  mixed = np.asarray(layer(x, {"w": jnp.asarray(p, jnp.float32), "a": jnp.asarray(q, jnp.float32)}), np.float64)
  expected = sum(p[i] * q[j] * np.asarray(layer(x, {"w": _onehot(i), "a": _onehot(j)}), np.float64)
                 for i in range(2) for j in range(2))
  np.testing.assert_allclose(mixed, expected, rtol=1e-5, atol=1e-5 * np.abs(mixed).max())
  # ...which is not the "diagonal" 0.3 out(2,2) + 0.7 out(4,4): the cross terms matter.
  diagonal = sum(p[i] * np.asarray(layer(x, {"w": _onehot(i), "a": _onehot(i)}), np.float64) for i in range(2))
  assert np.abs(mixed - diagonal).max() > 1e-3 * np.abs(mixed).max()


@pytest.mark.parametrize("stride", [1, 2])
def test_dwconv_shape_and_grouping(stride):
  layer = make_layer("dwconv", 4, 4, stride, None, None, hw=(7, 7))
  assert layer.kernel[...].shape == (3, 3, 1, 4)
  x = np.random.default_rng(3).normal(size=(2, 7, 7, 4)).astype(np.float32)
  arch = {"w": jnp.ones((1,), jnp.float32), "a": jnp.ones((1,), jnp.float32)}
  out = np.asarray(layer(jnp.asarray(x), arch))
  assert out.shape == (2, -(-7 // stride), -(-7 // stride), 4)
  np.testing.assert_allclose(out, ref_conv(x, layer.kernel[...], stride, depthwise=True), rtol=1e-5, atol=1e-5)
  # Grouping: perturbing input channel 1 changes output channel 1 only.
  x2 = x.copy()
  x2[..., 1] += 1.0
  diff = np.abs(np.asarray(layer(jnp.asarray(x2), arch)) - out).max(axis=(0, 1, 2))
  assert diff[1] > 1e-3 and np.all(diff[[0, 2, 3]] == 0)


@pytest.mark.parametrize("size,k,stride", [(8, 3, 1), (8, 3, 2), (7, 3, 2), (6, 5, 1), (9, 5, 2)])
def test_depthwise_conv_matches_numpy_and_the_grouped_convolutions_gradients(size, k, stride):
  """The shifted-slices depthwise convolution against the NumPy reference (forward) and against XLA's grouped
  convolution (the gradients of input and kernel), "SAME" padding at odd and even sizes."""
  import jax
  rng = np.random.default_rng(size * k + stride)
  x = jnp.asarray(rng.normal(size=(2, size, size, 6)).astype(np.float32))
  w = jnp.asarray(rng.normal(size=(k, k, 1, 6)).astype(np.float32))
  out = depthwise_conv(x, w, stride)
  np.testing.assert_allclose(out, ref_conv(x, w, stride, depthwise=True), rtol=1e-5, atol=1e-5)

  def grouped(x, w):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=6)

  g = jnp.asarray(rng.normal(size=out.shape).astype(np.float32))
  ours = jax.vjp(lambda x, w: depthwise_conv(x, w, stride), x, w)[1](g)
  theirs = jax.vjp(grouped, x, w)[1](g)
  for a, b in zip(ours, theirs):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(b))))


@pytest.mark.parametrize("kwargs,field", [
    ({"width_mults": ()}, "search.width_mults"),
    ({"width_mults": (0.0, 1.0)}, "search.width_mults"),
    ({"width_mults": (-0.5, 1.0)}, "search.width_mults"),
    ({"w_bits": ()}, "search.w_bits"),
    ({"w_bits": (1, 4)}, "search.w_bits"),
    ({"a_bits": (4, 9)}, "search.a_bits"),
    ({"first_layer_bits": 16}, "search.first_layer_bits"),
    ({"last_layer_bits": 1}, "search.last_layer_bits"),
    ({"method": "darts"}, "search.method"),
    ({"channel_multiple": 0}, "search.channel_multiple"),
])
def test_search_space_errors_name_the_field(kwargs, field):
  with pytest.raises(ValueError) as info:
    SearchSpace(**kwargs)
  assert field in str(info.value)


def test_search_space_normalises_candidates():
  s = SearchSpace(w_bits=(8, 2, 4), a_bits=[4, 8], width_mults=(1.0, 0.5, 1.0))
  assert s.w_bits == (2, 4, 8) and s.a_bits == (4, 8) and s.width_mults == (0.5, 1.0)


@pytest.mark.parametrize("base,mults,multiple,expected", [
    # 10 x (0.5, 0.75, 1, 1.5) = 5, 7.5, 10, 15; Python rounds 7.5 half to even -> 8.
    (10, (0.5, 0.75, 1.0, 1.5), 1, (5, 8, 10, 15)),
    # 24 x ... = 12, 18, 24, 36 in units of 8: 1.5 -> 2, 2.25 -> 2, 3, 4.5 -> 4 (half to even): 16, 16, 24, 32.
    (24, (0.5, 0.75, 1.0, 1.5), 8, (16, 24, 32)),
    # Never below one multiple: 4 x 0.25 / 8 -> 0 -> 8.
    (4, (0.25, 0.5), 8, (8,)),
    # 3 x (0.1, 0.5, 1) = 0.3 -> 0 -> floor 1, 1.5 -> 2, 3.
    (3, (0.1, 0.5, 1.0), 1, (1, 2, 3)),
])
def test_search_space_channels_rounding(base, mults, multiple, expected):
  assert SearchSpace(width_mults=mults, channel_multiple=multiple).channels(base) == expected


@pytest.mark.parametrize("base,multiple,expected", [(24, 8, 24), (10, 8, 8), (4, 8, 8), (13, 1, 13), (20, 8, 16)])
def test_search_space_base_channels(base, multiple, expected):
  # 20 / 8 = 2.5 rounds half to even -> 2 -> 16.
  assert SearchSpace(channel_multiple=multiple).base_channels(base) == expected


def test_batch_norm_gradient_of_a_batch_constant_channel_is_bounded_by_its_epsilon():
  """Train-mode BatchNorm backward against the NumPy formula dx = (dy - mean dy - xh mean(dy xh)) / sigma.

  A channel constant over the batch (xh = 0) gets (dy - mean dy) / sqrt(eps): the supernets' epsilon bounds
  that factor to 1/sqrt(1e-3) = 31.6 (316 at PyTorch's 1e-5, which let such channels freeze choices).
  """
  rng = np.random.default_rng(0)
  x = np.stack([rng.normal(1.0, 2.0, (6, 3, 3)), np.full((6, 3, 3), 0.7)], axis=-1).astype(np.float32)
  dy = rng.normal(size=x.shape).astype(np.float32)
  bn = batch_norm(2, nnx.Rngs(0))
  dx = nnx.grad(lambda m, v: jnp.sum(m(v) * dy), argnums=1)(bn, jnp.asarray(x))
  axes = (0, 1, 2)
  xd, gd = x.astype(np.float64), dy.astype(np.float64)
  sigma = np.sqrt(xd.var(axes) + BN_EPSILON)
  xh = (xd - xd.mean(axes)) / sigma
  ref = (gd - gd.mean(axes) - xh * (gd * xh).mean(axes)) / sigma
  np.testing.assert_allclose(np.asarray(dx), ref, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(dx)[..., 1], (gd - gd.mean(axes))[..., 1] / np.sqrt(1e-3), rtol=1e-4)
