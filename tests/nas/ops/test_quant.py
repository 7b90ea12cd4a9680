"""LSQ fake quantisation (nas/ops/quant.py) against a NumPy re-implementation and hand-worked values.

Reference: Esser et al., LSQ, ICLR 2020. Ranges: signed Q_N = 2^(b-1), Q_P = 2^(b-1)-1;
unsigned Q_N = 0, Q_P = 2^b - 1. Forward round(clip(x/s, -Q_N, Q_P)) * s, rounding half to even as NumPy.

Steps in the exact tests are powers of two, so x = v * s is exact in float32 and x / s gives v back exactly.
(The code forms the step as ``s*g + stop_gradient(s - s*g)``, which for an arbitrary float32 s can differ
from s by one ulp; for powers of two it is exact. The random-value tests use an arbitrary step and a
tolerance far below one quantisation step.)
"""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas.ops import quant

BITS = tuple(range(2, 9))
BITS_SIGNED = list(itertools.product(BITS, (True, False)))


def ref_range(bits: int, signed: bool) -> tuple[int, int]:
  """(Q_N, Q_P) written out from the LSQ paper (its section 2), independently of quant.qrange."""
  return (2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)


def ref_quantize(x, s, bits, signed):
  """NumPy LSQ forward in float32 (s broadcasts on the last axis)."""
  qn, qp = ref_range(bits, signed)
  x = np.asarray(x, np.float32)
  s = np.asarray(s, np.float32)
  return (np.round(np.clip(x / s, -qn, qp)) * s).astype(np.float32)


def ref_grads(x, s, u, bits, signed, g):
  """NumPy LSQ gradients of sum(u * q(x, s)) w.r.t. x and s (s per-tensor or per last-axis channel).

  d/dx: u inside the range, 0 outside. d/ds: u * (round(v) - v) inside, u * (-Q_N) below, u * Q_P above,
  summed over every axis s is broadcast along, times g. Only valid away from the exact range edges.
  """
  qn, qp = ref_range(bits, signed)
  x, s, u = (np.asarray(a, np.float64) for a in (x, s, u))
  v = x / s
  below, above = v < -qn, v > qp
  inside = ~below & ~above
  gx = u * inside
  ds = np.where(inside, np.round(v) - v, np.where(below, -qn, qp)) * u
  gs = ds.sum() if s.ndim == 0 else ds.reshape(-1, s.shape[-1]).sum(0)
  return gx, gs * g


def assert_ste_grad(gx, ref_gx):
  """Exactly zero where the reference is zero (clipped); elsewhere equal up to float32 rounding, since the
  straight-through gradient is computed as (1/s) * s."""
  np.testing.assert_array_equal(gx == 0, ref_gx == 0)
  np.testing.assert_allclose(gx, ref_gx, rtol=3e-7, atol=0)


@pytest.mark.parametrize("bits,signed", BITS_SIGNED)
def test_output_covers_exactly_the_integer_range(bits, signed):
  qn, qp = ref_range(bits, signed)
  s = 0.5
  # From 3 steps below -Q_N to 3 above Q_P in quarter steps: every integer level is hit, and both clips.
  v = np.arange(-qn - 3, qp + 3.25, 0.25, dtype=np.float32)
  out = np.asarray(quant.lsq_quantize(jnp.asarray(v * s), jnp.float32(s), bits, signed, 1.0))
  levels = out / s
  np.testing.assert_array_equal(np.unique(levels), np.arange(-qn, qp + 1, dtype=np.float32))
  assert levels.min() == -qn and levels.max() == qp


@pytest.mark.parametrize("bits,signed", [(2, True), (2, False), (3, True), (8, True), (8, False)])
def test_qrange_hand_values(bits, signed):
  expected = {(2, True): (2, 1), (2, False): (0, 3), (3, True): (4, 3), (8, True): (128, 127),
              (8, False): (0, 255)}[(bits, signed)]
  assert quant.qrange(bits, signed) == expected


@pytest.mark.parametrize("bits,signed", BITS_SIGNED)
def test_values_match_numpy_reference(bits, signed):
  qn, qp = ref_range(bits, signed)
  s = np.float32(0.0371)
  rng = np.random.default_rng(bits * 2 + signed)
  # Spread over 1.5x the representable span so both clipping edges are exercised.
  x = rng.uniform(-1.5 * max(qn, 1) * s, 1.5 * qp * s, size=4096).astype(np.float32)
  assert (x / s < -qn).any() and (x / s > qp).any()
  g = quant.lsq_grad_scale(x.size, bits, signed)
  out = np.asarray(quant.lsq_quantize(jnp.asarray(x), jnp.float32(s), bits, signed, g))
  # A disagreement in rounding would be an error of one step s; allow only float noise (< 1e-4 s).
  np.testing.assert_allclose(out, ref_quantize(x, s, bits, signed), rtol=0, atol=1e-4 * s)


@pytest.mark.parametrize("bits,signed", BITS_SIGNED)
def test_rounding_ties_go_to_even(bits, signed):
  qn, qp = ref_range(bits, signed)
  s = 0.25
  v = np.arange(-qn, qp, dtype=np.float32) + 0.5  # every tie k + 0.5 inside the range
  out = np.asarray(quant.lsq_quantize(jnp.asarray(v * s), jnp.float32(s), bits, signed, 1.0)) / s
  # Half to even, written out: of floor(v) and floor(v) + 1, the even one.
  lo = np.floor(v)
  even = np.where(lo % 2 == 0, lo, lo + 1)
  np.testing.assert_array_equal(out, even)


@pytest.mark.parametrize("bits,signed,v,expected", [
    (3, True, [-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5], [-4, -2, -2, 0, 0, 2, 2]),
    (2, False, [0.5, 1.5, 2.5], [0, 2, 2]),
    # Clip happens before rounding: Q_P + 0.5 would round up (Q_P is odd) past the range.
    (3, True, [3.5, -4.5], [3, -4]),
    (2, False, [3.5, -0.5], [3, 0]),
    (8, False, [255.5, 254.5], [255, 254]),
])
def test_rounding_hand_values(bits, signed, v, expected):
  s = 0.5
  x = jnp.asarray(np.asarray(v, np.float32) * s)
  out = np.asarray(quant.lsq_quantize(x, jnp.float32(s), bits, signed, 1.0)) / s
  np.testing.assert_array_equal(out, np.asarray(expected, np.float32))


@pytest.mark.parametrize("bits,signed", BITS_SIGNED)
def test_values_exactly_at_range_edges_are_kept(bits, signed):
  qn, qp = ref_range(bits, signed)
  s = 0.125
  x = np.asarray([-qn * s, qp * s, (-qn - 1) * s, (qp + 1) * s], np.float32)
  out = np.asarray(quant.lsq_quantize(jnp.asarray(x), jnp.float32(s), bits, signed, 1.0))
  np.testing.assert_array_equal(out, np.asarray([-qn * s, qp * s, -qn * s, qp * s], np.float32))


@pytest.mark.parametrize("bits,signed", BITS_SIGNED)
def test_gradients_match_numpy_reference(bits, signed):
  qn, qp = ref_range(bits, signed)
  s = np.float32(0.0371)
  rng = np.random.default_rng(100 + bits * 2 + signed)
  x = rng.uniform(-1.5 * max(qn, 1) * s, 1.5 * qp * s, size=2048).astype(np.float32)
  u = rng.normal(size=x.shape).astype(np.float32)  # upstream cotangent
  g = quant.lsq_grad_scale(x.size, bits, signed)
  _, vjp = jax.vjp(lambda x, s: quant.lsq_quantize(x, s, bits, signed, g), jnp.asarray(x), jnp.float32(s))
  gx, gs = vjp(jnp.asarray(u))
  ref_gx, ref_gs = ref_grads(x, s, u, bits, signed, g)
  assert_ste_grad(np.asarray(gx), ref_gx)
  # Sum of 2048 float32 terms of size <= Q_P: relative error well under 1e-4.
  np.testing.assert_allclose(float(gs), ref_gs, rtol=1e-4, atol=1e-5 * qp * g)


@pytest.mark.parametrize("n,bits,signed,expected", [
    (27, 8, True, 1 / np.sqrt(27 * 127)),
    (64, 2, False, 1 / np.sqrt(64 * 3)),
    (9, 4, True, 1 / np.sqrt(9 * 7)),
])
def test_grad_scale_is_one_over_sqrt_n_qp(n, bits, signed, expected):
  assert quant.lsq_grad_scale(n, bits, signed) == pytest.approx(expected, rel=1e-12)


def test_step_gradient_hand_values():
  # 4-bit signed, s = 0.5, g = 0.1: Q_N = 8, Q_P = 7.
  # x = 1.2 -> v = 2.4, inside: round(v) - v = -0.4 ; x = -5 -> v = -10 below: -8 ; x = 4 -> v = 8 above: 7.
  x = jnp.asarray([1.2, -5.0, 4.0], jnp.float32)
  gs = jax.vmap(jax.grad(lambda x, s: quant.lsq_quantize(x, s, 4, True, 0.1), 1), (0, None))(x, jnp.float32(0.5))
  np.testing.assert_allclose(np.asarray(gs), [-0.04, -0.8, 0.7], rtol=1e-5)


@pytest.mark.parametrize("signed", [True, False])
def test_gradient_exactly_at_range_edge_is_half(signed):
  """Documents JAX's behaviour AT the clip boundary (a measure-zero set for continuous inputs).

  jnp.clip is maximum(lo, minimum(hi, x)) and JAX's max/min JVP splits a tie evenly, so where x/s equals
  -Q_N or Q_P exactly, d/dx = 0.5 (not 1 or 0), and d/ds = 0.5*(round(v)-v) + 0.5*(edge) = edge/2 (LSQ's
  Eq. 3 puts the edge in the clipped branch: -Q_N or Q_P). With unsigned ranges this hits x == 0 exactly,
  e.g. post-ReLU zeros; the ReLU's own zero gradient at 0 makes it harmless there.
  """
  bits, s = 4, 0.5
  qn, qp = ref_range(bits, signed)
  x = jnp.asarray([-qn * s, qp * s], jnp.float32)
  f = lambda x, s: quant.lsq_quantize(x, s, bits, signed, 1.0)
  gx = jax.vmap(jax.grad(f, 0), (0, None))(x, jnp.float32(s))
  gs = jax.vmap(jax.grad(f, 1), (0, None))(x, jnp.float32(s))
  np.testing.assert_array_equal(np.asarray(gx), [0.5, 0.5])
  np.testing.assert_array_equal(np.asarray(gs), [-qn / 2, qp / 2])


@pytest.mark.parametrize("bits,signed", [(2, True), (4, False), (8, True)])
def test_per_channel_steps_broadcast_on_last_axis(bits, signed):
  qn, qp = ref_range(bits, signed)
  rng = np.random.default_rng(bits)
  steps = np.asarray([0.011, 0.07, 0.3, 0.0213], np.float32)
  x = (rng.normal(size=(3, 3, 2, 4)) * steps * qp).astype(np.float32)  # some channels clip, scaled per channel
  u = rng.normal(size=x.shape).astype(np.float32)
  g = quant.lsq_grad_scale(18, bits, signed)
  out, vjp = jax.vjp(lambda x, s: quant.lsq_quantize(x, s, bits, signed, g), jnp.asarray(x), jnp.asarray(steps))
  np.testing.assert_allclose(np.asarray(out), ref_quantize(x, steps, bits, signed), rtol=0,
                             atol=1e-4 * steps.min())
  gx, gs = vjp(jnp.asarray(u))
  ref_gx, ref_gs = ref_grads(x, steps, u, bits, signed, g)
  assert gs.shape == (4,)
  assert_ste_grad(np.asarray(gx), ref_gx)
  np.testing.assert_allclose(np.asarray(gs), ref_gs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("bits,signed", BITS_SIGNED)
def test_init_step_is_two_mean_abs_over_sqrt_qp(bits, signed):
  _, qp = ref_range(bits, signed)
  rng = np.random.default_rng(7)
  x = rng.normal(size=(3, 3, 5, 6)).astype(np.float32)
  np.testing.assert_allclose(float(quant.lsq_init_step(jnp.asarray(x), bits, signed)),
                             2 * np.abs(x.astype(np.float64)).mean() / np.sqrt(qp), rtol=1e-5)
  per_channel = np.asarray(quant.lsq_init_step(jnp.asarray(x), bits, signed, axis=(0, 1, 2)))
  np.testing.assert_allclose(per_channel, 2 * np.abs(x.astype(np.float64)).mean(axis=(0, 1, 2)) / np.sqrt(qp),
                             rtol=1e-5)


def test_init_step_of_all_zero_tensor_is_positive():
  assert float(quant.lsq_init_step(jnp.zeros((4, 4), jnp.float32), 8, True)) > 0


@pytest.mark.parametrize("bits,match", [
    ([], "is empty"),
    (None, "is empty"),
    ([1], "holds 1"),
    ([9], "holds 9"),
    ([2, 2.5], "holds 2.5"),
    ([True], "holds True"),
    ([4, 2, 4], "repeats"),
])
def test_check_bits_errors_name_the_field(bits, match):
  with pytest.raises(ValueError, match=match) as info:
    quant.check_bits(bits, "search.w_bits")
  assert "search.w_bits" in str(info.value)


def test_check_bits_returns_sorted_ints():
  out = quant.check_bits([8, 2, 4.0, np.int64(3)], "search.a_bits")
  assert out == (2, 3, 4, 8) and all(type(b) is int for b in out)


@pytest.mark.parametrize("step", [0.0, -1.0, -1e-30, 1e-12])
def test_non_positive_step_is_floored_without_nan(step):
  x = jnp.asarray([-3.0, -1e-9, 0.0, 1e-9, 0.7, 5.0], jnp.float32)
  out, vjp = jax.vjp(lambda x, s: quant.lsq_quantize(x, s, 8, True, 0.05), x, jnp.float32(step))
  gx, gs = vjp(jnp.ones_like(x))
  for arr in (out, gx, gs):
    assert np.all(np.isfinite(np.asarray(arr)))
  # The floor replaces the step: the result is the reference quantisation at step = the floor.
  np.testing.assert_allclose(np.asarray(out), ref_quantize(np.asarray(x), quant.STEP_FLOOR, 8, True),
                             rtol=1e-6, atol=0)
