"""LSQ: fake quantisation with a straight-through estimator and a learned step size.

The parameter is the step s itself: ``round(clip(x / s, -Q_N, Q_P)) * s``; its gradient is
``round(x/s) - x/s`` inside the range, ``-Q_N`` below and ``Q_P`` above, times the gradient scale
1/sqrt(N Q_P). Initial step 2 mean|x| / sqrt(Q_P).

References:
  Esser et al., "Learned Step Size Quantization", ICLR 2020.
"""
from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from nas.ops.quant import STEP_FLOOR, floor_ste, qrange, round_ste, scale_grad
from nas.ops.quantizers.base import register

name = "lsq"
step_decay = False  # LSQ trains its steps without regularisation


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
  return grad_scale(n_elements, qp)


def lsq_init_step(x: jax.Array, bits: int, signed: bool, axis=None) -> jax.Array:
  """LSQ's initial step 2 mean|x| / sqrt(Q_P), over ``axis`` (None: the whole tensor)."""
  _, qp = qrange(bits, signed)
  return 2.0 * jnp.mean(jnp.abs(x), axis=axis) / qp ** 0.5 + STEP_FLOOR


# The Quantizer protocol (nas.ops.quantizers.base).

def init(x: jax.Array, bits: int, signed: bool, axis=None, kind: str = "activation") -> jax.Array:
  """LSQ's initial step, for weights and activations alike."""
  del kind
  return lsq_init_step(x, bits, signed, axis)


quantize = lsq_quantize_range
value = lsq_value


def grad_scale(n_elements: int, qp):
  """1/sqrt(N Q_P): a float (float64 arithmetic) for an int ``qp``; float32 arithmetic for a float32 array
  (a pruned candidate's Q_P of 0 counts as 1). The two forms are what the per-candidate and the one-hot paths
  have always used: a float64 detour in the second would change the last bit of the scale, and with it every
  trajectory."""
  if isinstance(qp, np.ndarray):
    return (1.0 / np.sqrt(max(n_elements, 1) * np.maximum(qp, np.float32(1.0)))).astype(np.float32)
  return float(1.0 / (max(n_elements, 1) * qp) ** 0.5)


def step(param, qn, qp):
  """The step is the parameter, floored."""
  del qn, qp
  return jnp.maximum(param, STEP_FLOOR)


register(sys.modules[__name__])
