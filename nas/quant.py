"""Fake quantisation with a straight-through estimator and a learned step size (LSQ).

References:
  Esser et al., "Learned Step Size Quantization", ICLR 2020.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

MIN_BITS, MAX_BITS = 2, 8
STEP_FLOOR = 1e-8  # keeps the step positive (LSQ's step can otherwise cross zero; ZouJiu1/LSQplus#12)


def check_bits(bits, field: str) -> tuple[int, ...]:
  """Validates a candidate list of bit-widths and returns it as a tuple of ints.

  Raises:
    ValueError: naming ``field`` if the list is empty or holds a value outside 2..8.
  """
  values = tuple(bits) if bits is not None else ()
  if not values:
    raise ValueError(f"{field} is empty; give at least one bit-width in {MIN_BITS}..{MAX_BITS}, e.g. [2, 4, 8].")
  for b in values:
    if isinstance(b, bool) or int(b) != b or not MIN_BITS <= int(b) <= MAX_BITS:
      raise ValueError(f"{field} holds {b!r}; bit-widths must be integers in {MIN_BITS}..{MAX_BITS}.")
  if len(set(values)) != len(values):
    raise ValueError(f"{field}={list(values)} repeats a bit-width; list each candidate once.")
  return tuple(sorted(int(b) for b in values))


def qrange(bits: int, signed: bool) -> tuple[int, int]:
  """(Q_N, Q_P): the integer range is [-Q_N, Q_P]. Signed: 2^(b-1), 2^(b-1)-1; unsigned: 0, 2^b-1."""
  if signed:
    return 2 ** (bits - 1), 2 ** (bits - 1) - 1
  return 0, 2 ** bits - 1


def round_ste(v: jax.Array) -> jax.Array:
  """round() forward, identity backward. Rounds half to even (as numpy and torch do)."""
  return v + jax.lax.stop_gradient(jnp.round(v) - v)


def scale_grad(x: jax.Array, scale) -> jax.Array:
  """x forward (exactly); gradient multiplied by ``scale`` backward."""
  x_const = jax.lax.stop_gradient(x)
  return x_const + (x - x_const) * scale


def floor_ste(x: jax.Array, floor: float) -> jax.Array:
  """max(x, floor) forward, identity backward: a step pushed below the floor still gets a gradient back up."""
  x_const = jax.lax.stop_gradient(x)
  return jnp.maximum(x_const, floor) + (x - x_const)  # exact forward (x + (floor - x) can round to 0)


def lsq_quantize(x: jax.Array, step: jax.Array, bits: int, signed: bool, grad_scale) -> jax.Array:
  """LSQ fake quantisation: ``round(clip(x / s, -Q_N, Q_P)) * s``.

  Gradients: straight-through for ``x`` inside the range, zero outside; for ``s``, ``round(x/s) - x/s``
  inside the range, ``-Q_N`` below, ``Q_P`` above, times ``grad_scale`` (LSQ's 1/sqrt(N Q_P)).

  Args:
    x: tensor to quantise.
    step: step size, broadcastable to ``x`` (a scalar or one per output channel on the last axis).
    bits: integer bit-width.
    signed: signed range (weights) or unsigned (post-ReLU activations).
    grad_scale: LSQ gradient scale of the step.
  """
  qn, qp = qrange(bits, signed)
  return lsq_quantize_range(x, step, qn, qp, grad_scale)


def lsq_quantize_range(x: jax.Array, step: jax.Array, qn, qp, grad_scale, out_scale=None) -> jax.Array:
  """``lsq_quantize`` with the integer range [-qn, qp] and the gradient scale given directly; they may be
  traced arrays (broadcastable to ``x``), so the bit-width can be chosen inside a jitted step (SDQ).

  ``out_scale`` (a constant broadcastable to ``step``) multiplies the result, folded into the step's last
  multiply instead of a pass over the output: ``round(clip(x / s)) * (s * out_scale)``.
  """
  s = scale_grad(floor_ste(step, STEP_FLOOR), grad_scale)
  v = jnp.clip(x / s, -qn, qp)
  return round_ste(v) * (s if out_scale is None else s * out_scale)


def lsq_value(x: jax.Array, step: jax.Array, qn, qp) -> jax.Array:
  """The forward value of ``lsq_quantize_range``, with no gradient paths (for hand-written backward passes)."""
  s = jnp.maximum(step, STEP_FLOOR)
  return jnp.round(jnp.clip(x / s, -qn, qp)) * s


def lsq_grad_scale(n_elements: int, bits: int, signed: bool) -> float:
  """LSQ's step-gradient scale 1/sqrt(N * Q_P); N counts the elements one step quantises (per example)."""
  _, qp = qrange(bits, signed)
  return float(1.0 / (max(n_elements, 1) * qp) ** 0.5)


def lsq_init_step(x: jax.Array, bits: int, signed: bool, axis=None) -> jax.Array:
  """LSQ's initial step 2 mean|x| / sqrt(Q_P), over ``axis`` (None: the whole tensor)."""
  _, qp = qrange(bits, signed)
  return 2.0 * jnp.mean(jnp.abs(x), axis=axis) / qp ** 0.5 + STEP_FLOOR
