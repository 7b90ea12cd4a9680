"""PACT: a learned clipping level alpha, uniform quantisation below it.

Activations (unsigned, after ReLU):

  y = round(clip(x, 0, alpha) (2^b - 1) / alpha) alpha / (2^b - 1)

computed in the integer form every quantiser shares, ``round(clip(x / s, 0, Q_P)) * s`` with the step
s = alpha / Q_P (Q_P = 2^b - 1), so the integer export reads it as it reads an LSQ step. Gradients are PACT's
straight-through estimator: to x, 1 for 0 <= x < alpha and 0 elsewhere; to alpha, 1 where x >= alpha and 0
inside (the rounding is passed straight through).

Signed tensors use the same grid on [-Q_N, Q_P] (symmetric about 0, the lower clip at -alpha Q_N / Q_P); the
gradient to alpha is then -Q_N / Q_P below the range.

Choices (the paper leaves these to the implementation, or its choice does not fit this code base):
  * Initial alpha 8.0 for activations: the default of Intel Distiller's ``PACTQuantizer``
    (``act_clip_init_val``), the reference implementation in PyTorch. The paper initialises alpha to a
    large value and lets the L2 term pull it down.
  * L2 on alpha (the paper's lambda_alpha), at the recipe's weight decay: Distiller's default
    (``act_clip_decay=None``: the optimiser's weight decay). With alpha above every activation, the task
    gradient to alpha is 0 and only this term moves it. Coupled (added to the gradient), as in the paper's SGD
    and Distiller; here the steps train with Adam in the log domain (``nas.train.finetune.log_domain``), so
    while nothing is clipped alpha shrinks by about the learning rate (relative) per update.
  * Weights: the paper (and Distiller) use DoReFa's weight quantiser, w_q = 2 quantize_b(tanh(w) /
    (2 max|tanh w|) + 1/2) - 1. Its levels are odd multiples of 1 / (2^b - 1), with no zero: as integers on
    a symmetric grid they need b + 1 bits, and the integer weights are a non-linear function of the kernel, not
    the kernel over a step. That fits neither the cost model (b-bit weights) nor the integer export
    (``nas.deploy.integer``: ``round(clip(w / s))``). So weights use PACT's own clipping, symmetric, per output
    channel, on the b-bit grid [-2^(b-1), 2^(b-1) - 1], with alpha initialised to max |w| per channel
    (DoReFa's normaliser, max|tanh w| without the tanh) and regularised like the activations' alpha.
  * No gradient scale (1.0): PACT has none.

References:
  Choi et al., "PACT: Parameterized Clipping Activation for Quantized Neural Networks", arXiv:1805.06085, 2018.
  Zhou et al., "DoReFa-Net: Training Low Bitwidth Convolutional Neural Networks with Low Bitwidth
  Gradients", arXiv:1606.06160, 2016. Intel Distiller, ``distiller/quantization/clipped_linear.py``.
"""
from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from nas.ops.quant import STEP_FLOOR, floor_ste, scale_grad
from nas.ops.quantizers.base import register

name = "pact"
step_decay = True
ALPHA_INIT = 8.0  # Distiller's act_clip_init_val


def init(x: jax.Array, bits: int, signed: bool, axis=None, kind: str = "activation") -> jax.Array:
  """Activations: alpha = ``ALPHA_INIT`` (not read from the data); weights: alpha = max |w| over ``axis``."""
  del bits, signed
  if kind == "weight":
    return jnp.max(jnp.abs(x), axis=axis) + STEP_FLOOR
  return jnp.zeros(jnp.shape(jnp.sum(x, axis=axis)), jnp.float32) + jnp.float32(ALPHA_INIT)


def step(param, qn, qp):
  """s = alpha / Q_P (alpha floored; a pruned candidate's Q_P of 0 counts as 1: its range is [0, 0])."""
  del qn
  return jnp.maximum(param, STEP_FLOOR) / jnp.maximum(qp, 1)


def value(x: jax.Array, param: jax.Array, qn, qp) -> jax.Array:
  s = step(param, qn, qp)
  return jnp.round(jnp.clip(x / s, -qn, qp)) * s


def quantize(x: jax.Array, param: jax.Array, qn, qp, grad_scale, out_scale=None) -> jax.Array:
  """``value`` forward (times ``out_scale``); backward, PACT's estimator through
  ``clip(x, -Q_N s, Q_P s)``: 1 to x inside [-Q_N s, alpha), to alpha 1 above and -Q_N / Q_P below."""
  alpha = scale_grad(floor_ste(param, STEP_FLOOR), grad_scale)
  s = alpha / jnp.maximum(qp, 1)
  lo, hi = -qn * s, qp * s  # hi is alpha (0 for a pruned candidate): d hi / d alpha = Q_P / Q_P
  clipped = jnp.where(x < lo, lo, jnp.where(x >= hi, hi, x))
  s0 = jax.lax.stop_gradient(s)
  out = jnp.round(jnp.clip(x / s0, -qn, qp)) * (s0 if out_scale is None else s0 * out_scale)
  surrogate = clipped - jax.lax.stop_gradient(clipped)  # 0 forward, exactly
  return out + (surrogate if out_scale is None else surrogate * out_scale)


def grad_scale(n_elements: int, qp):
  del n_elements
  if isinstance(qp, np.ndarray):
    return np.ones_like(qp, np.float32)
  return 1.0


register(sys.modules[__name__])
