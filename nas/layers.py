"""Searchable convolution, depthwise convolution and dense layers.

One weight tensor at the widest width is shared by every candidate: each candidate bit-width quantises it
(LSQ, one step per candidate), the quantised tensors are mixed with the choice's weights, and ONE
convolution runs (EdMIPS's weight sharing; by bilinearity this equals mixing the convolutions). Input
activations are mixed the same way. Width candidates are masks over output channels, applied by the model
after the nonlinearity (FBNetV2 channel masking).

When the weights are one-hot forward (hard Gumbel samples, SDQ draws, argmax: a ``OneHot``), only the drawn
candidate is quantised; a custom VJP gives the weights the gradients of the full mix with one pass over the
tensor per other candidate. Values and gradients equal the full mix (tests/nas/test_onehot.py).

References:
  Cai & Vasconcelos, EdMIPS, CVPR 2020. Wan et al., FBNetV2, CVPR 2020. Esser et al., LSQ, ICLR 2020.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hardware.base import LayerSpec
from nas import quant
from nas.choices import OneHot


class QuantStep(nnx.Param):
  """A learned LSQ step size (a Param, trained with the weights, but excluded from weight decay)."""


@jax.custom_vjp
def _weights_tap(weights: jax.Array, out: jax.Array, x: jax.Array, steps: jax.Array, qn: jax.Array,
                 qp: jax.Array, place: jax.Array) -> jax.Array:
  """``out`` unchanged; backward, the mixing weights get their gradients without Q_j(x) in the forward pass.

  In the full mix sum_j w_j Q_j(x), weight j's gradient is a_j = <g, Q_j(x)>. Weights that sum to one
  (softmax, Bernoulli) give every parameter the same gradient from a_j - c as from a_j, for any c; with c the
  drawn candidate's a_d the tap needs the k - 1 sums <g, Q_j(x) - Q_d(x)> of the other candidates, with
  ``out`` standing for Q_d(x) (it is Q_d(x) times the drawn weight, 1 to rounding; the convolution keeps it
  for its own backward pass anyway). Rows 1.. of ``steps``, ``qn`` and ``qp`` are the other candidates (row
  0, the drawn one, is not read); ``place[i - 1]`` one-hot encodes where row i's candidate sits in
  ``weights``' last axis. Per-channel weights (C, k) sum over all axes of x but the last. Only ``weights``
  and ``out`` get gradients.
  """
  del weights, x, steps, qn, qp, place
  return out


def _weights_tap_fwd(weights, out, x, steps, qn, qp, place):
  return out, (weights, out, x, steps, qn, qp, place)


def _weights_tap_bwd(res, g):
  weights, q_drawn, x, steps, qn, qp, place = res

  def others(a):  # rows 1.. of a (k, ...) table, on a leading axis that broadcasts against x[None]
    a = a[1:]
    return a.reshape(a.shape[:1] + (1,) * (x.ndim + 1 - a.ndim) + a.shape[1:])

  # All other candidates in one reduction over a broadcast candidate axis, so that x and g are read once.
  # One reduction per candidate cost 1.5x as much on a CPU, and stacking the candidates' tensors (a
  # concatenate) made XLA write them out. Per-channel weights keep x's last axis.
  axes = tuple(range(1, x.ndim)) if weights.ndim == 2 else tuple(range(1, x.ndim + 1))
  q = quant.lsq_value(x[None], others(steps), others(qn), others(qp))
  diffs = jnp.sum(g[None] * (q - q_drawn[None]), axis=axes)
  # The barrier keeps XLA from sinking the placement below into the reductions (k times the work).
  diffs = jax.lax.optimization_barrier(diffs)
  grads = jnp.sum(place * diffs[..., None], axis=0)
  zeros = jax.tree.map(jnp.zeros_like, (x, steps, qn, qp, place))
  return (grads, g) + zeros


_weights_tap.defvjp(_weights_tap_fwd, _weights_tap_bwd)


def _onehot_quantize(x: jax.Array, steps: jax.Array, bits: tuple[int, ...], signed: bool, n_elements: int,
                     w: OneHot) -> jax.Array:
  """sum_j w_j Q_j(x) for mixing weights that are one-hot forward: the drawn candidate's quantisation only.

  Values equal the full mix exactly, and so do the gradients of x, of the steps and of every parameter the
  weights are a function of: x and the drawn step get theirs through the drawn quantisation (the other
  weights are zero forward), the weights get theirs from the tap. ``steps`` is (n,) per tensor or (n, C) per
  output channel; ``w``'s shapes are OneHot's.
  """
  b = np.asarray(bits, np.float32)
  qp = 2.0 ** (b - 1) - 1 if signed else 2.0 ** b - 1
  qn_all = jnp.asarray(2.0 ** (b - 1) if signed else np.zeros_like(b))
  qp_all = jnp.asarray(qp)
  gs_all = jnp.asarray(1.0 / np.sqrt(max(n_elements, 1) * qp))
  per_channel = w.weights.ndim == 2
  k = w.weights.shape[-1]

  def at(table, idx):  # table[idx]: a scalar or a (C,) row, per tensor; one entry per channel, per channel
    if table.ndim == 1 or not per_channel:
      return table[idx]
    return jnp.take_along_axis(table, idx[None, :], axis=0)[0]

  # Positions in the candidate axis: the drawn one first, then the others.
  positions = [(w.drawn + i) % k for i in range(k)]
  index = [jnp.take_along_axis(w.cands, p[..., None], axis=-1)[..., 0] for p in positions]
  w_drawn = jnp.take_along_axis(w.weights, w.drawn[..., None], axis=-1)[..., 0]  # 1 forward
  q = quant.lsq_quantize_range(x, at(steps, index[0]), qn_all[index[0]], qp_all[index[0]], gs_all[index[0]])
  q = q * jax.lax.stop_gradient(w_drawn)  # w_drawn is 1 (to rounding)
  tap_steps = jax.lax.stop_gradient(jnp.stack([at(steps, i) for i in index]))
  place = jnp.stack([jax.nn.one_hot(p, k, dtype=w.weights.dtype) for p in positions[1:]])
  return _weights_tap(w.weights, q, jax.lax.stop_gradient(x), tap_steps, jnp.stack([qn_all[i] for i in index]),
                      jnp.stack([qp_all[i] for i in index]), place)


def mix(candidates: list[jax.Array], weights: jax.Array) -> jax.Array:
  """Sum of candidates weighted by ``weights[..., i]`` (shape (n,) or (channels, n): per-channel mixing)."""
  if len(candidates) == 1:
    return candidates[0] * weights[..., 0]
  out = candidates[0] * weights[..., 0]
  for i in range(1, len(candidates)):
    out = out + candidates[i] * weights[..., i]
  return out


class WeightQuantizer(nnx.Module):
  """Signed per-output-channel LSQ of a weight tensor (output channels on the last axis), per candidate.

  ``bits=None`` leaves the weights in floating point.
  """

  def __init__(self, bits: tuple[int, ...] | None, kernel: jax.Array):
    self.bits = bits
    if bits is None:
      return
    cout = kernel.shape[-1]
    self.fan = int(np.prod(kernel.shape[:-1]))  # weights one step quantises
    self.step = QuantStep(jnp.ones((len(bits), cout), jnp.float32))
    self.init_from(kernel)

  def init_from(self, kernel: jax.Array) -> None:
    """LSQ initial steps from the weights: 2 mean|w| / sqrt(Q_P) per channel and candidate."""
    if self.bits is None:
      return
    axes = tuple(range(kernel.ndim - 1))
    self.step[...] = jnp.stack([quant.lsq_init_step(kernel, b, True, axes) for b in self.bits])

  def __call__(self, kernel: jax.Array, weights: jax.Array) -> jax.Array:
    if self.bits is None:
      return kernel
    if isinstance(weights, OneHot):
      return _onehot_quantize(kernel, self.step[...], self.bits, True, self.fan, weights)
    qs = [quant.lsq_quantize(kernel, self.step[i], b, True, quant.lsq_grad_scale(self.fan, b, True))
          for i, b in enumerate(self.bits)]
    return mix(qs, weights)


class ActQuantizer(nnx.Module):
  """Per-tensor LSQ of activations, per candidate; unsigned after ReLU, signed otherwise.

  The steps start from the first batch seen in calibration mode (``calibrate(model, x)``).
  """

  def __init__(self, bits: tuple[int, ...] | None, signed: bool):
    self.bits = bits
    self.signed = signed
    self.calibrating = False
    if bits is not None:
      self.step = QuantStep(jnp.ones((len(bits),), jnp.float32))

  def __call__(self, x: jax.Array, weights: jax.Array) -> jax.Array:
    if self.bits is None:
      return x
    if self.calibrating:
      self.step[...] = jnp.stack([quant.lsq_init_step(x, b, self.signed) for b in self.bits])
    n_features = int(np.prod(x.shape[1:]))  # per example: LSQ's N_F must not depend on the batch size
    if isinstance(weights, OneHot):
      return _onehot_quantize(x, self.step[...], self.bits, self.signed, n_features, weights)
    qs = [quant.lsq_quantize(x, self.step[i], b, self.signed, quant.lsq_grad_scale(n_features, b, self.signed))
          for i, b in enumerate(self.bits)]
    return mix(qs, weights)


@dataclasses.dataclass(frozen=True)
class ChoiceKeys:
  """Names of the choices a layer's cost depends on; ``None`` means fixed at the spec's value."""
  w_bits: str
  a_bits: str
  cin: str | None
  cout: str | None


class QLayer(nnx.Module):
  """A quantised conv / depthwise conv / dense layer over choice mixing weights.

  Args:
    spec: the layer at its widest channel counts (what the hardware sees).
    keys: the names of its weight-bit, activation-bit, input-width and output-width choices.
    w_bits: weight bit-width candidates (None: float).
    a_bits: input-activation bit-width candidates (None: float).
    a_signed: whether the input activations are signed (False after ReLU).
    rngs: NNX random streams for the weight init.
  """

  def __init__(self, spec: LayerSpec, keys: ChoiceKeys, w_bits, a_bits, a_signed: bool, *, rngs: nnx.Rngs):
    self.spec = spec
    self.keys = keys
    if spec.kind == "dense":
      shape, fan_in = (spec.cin, spec.cout), spec.cin
    else:
      cin_group = 1 if spec.kind == "dwconv" else spec.cin
      shape, fan_in = (spec.kernel, spec.kernel, cin_group, spec.cout), spec.kernel ** 2 * cin_group
    # He et al. 2015 init, drawn with NumPy from a seed taken off the NNX key: an eager jax.random draw
    # compiles once per kernel shape (about a second each on a small CPU, 15 s for a ResNet-20).
    key = rngs.params()
    scale = np.float32((2.0 / fan_in) ** 0.5)
    if isinstance(key, jax.core.Tracer):  # abstract construction (nnx.eval_shape): no values needed
      init = jax.random.normal(key, shape, jnp.float32) * scale
    else:
      seed = np.asarray(jax.random.key_data(key)).astype(np.uint64).ravel()
      init = jnp.asarray(np.random.default_rng(seed.tolist()).standard_normal(shape).astype(np.float32) * scale)
    self.kernel = nnx.Param(init)
    self.bias = nnx.Param(jnp.zeros((spec.cout,), jnp.float32)) if spec.kind == "dense" else None
    self.wq = WeightQuantizer(w_bits, init)
    self.aq = ActQuantizer(a_bits, a_signed)

  def __call__(self, x: jax.Array, arch: Mapping[str, jax.Array]) -> jax.Array:
    x = self.aq(x, arch[self.keys.a_bits])
    w = self.wq(self.kernel[...], arch[self.keys.w_bits])
    if self.spec.kind == "dense":
      return x @ w + self.bias[...]
    groups = self.spec.cin if self.spec.kind == "dwconv" else 1
    return jax.lax.conv_general_dilated(
        x, w, (self.spec.stride,) * 2, "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups)


def width_mask(values: tuple[int, ...], weights: jax.Array, max_channels: int) -> jax.Array:
  """FBNetV2 mask sum_k g_k 1[c < values_k] over the output channels, shape (max_channels,)."""
  masks = (np.arange(max_channels)[None, :] < np.asarray(values)[:, None]).astype(np.float32)
  return weights @ jnp.asarray(masks)


# BatchNorm's epsilon in every supernet (and the derived networks, the same classes): Keras's 1e-3, not
# PyTorch's 1e-5. A channel whose output is constant over the batch (a low-bit channel whose weights all
# round to zero, for one) makes BatchNorm scale its gradient by 1/sqrt(eps): 316x at 1e-5. The mixing
# weights' gradients <g, Q_j(x) - Q_d(x)> carry that factor into rare spikes 10^5 times the median, which
# fill Adam's second moment (beta2 = 0.999) and freeze those choices undecided for the rest of the search.
# Measured on digits, per-channel search at budget 0.8: mean max prob 0.83 at 1e-5, 0.997 at 1e-3.
BN_EPSILON = 1e-3


def batch_norm(features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
  """The supernets' BatchNorm: momentum 0.9, epsilon ``BN_EPSILON``."""
  return nnx.BatchNorm(features, momentum=0.9, epsilon=BN_EPSILON, rngs=rngs)


def set_calibrating(model: nnx.Module, on: bool) -> None:
  for _, m in model.iter_modules():
    if isinstance(m, ActQuantizer):
      m.calibrating = on
